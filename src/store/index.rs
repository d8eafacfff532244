//! The index: which record is each key's newest, in three layers.
//!
//! - `recent`: changes since the newest merge started, in memory;
//! - `frozen`: the changes a merge running now is writing into a table;
//! - `table`: the mapped table of the last merge (`journal::table`).
//!
//! A read takes the first layer that knows the key. Only the writer thread
//! changes the layers: it inserts into `recent`, freezes `recent` when a
//! merge starts and installs the merged table (dropping `frozen`) when it
//! ends. Either side of an install answers the same, since the new table
//! holds what `frozen` held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::hash::Map;
use crate::journal::table::{self, Damaged, Slot, Table};
use crate::journal::Loc;

struct Layers {
    recent: Arc<Map<Loc>>,
    frozen: Option<Arc<Map<Loc>>>,
    table: Arc<Table>,
}

pub struct Index {
    seed: u64,
    layers: RwLock<Layers>,
    /// Distinct keys in all layers together.
    keys: AtomicU64,
}

/// What a merge works from: the previous table and the frozen changes.
pub struct Frozen {
    pub table: Arc<Table>,
    pub changes: Arc<Map<Loc>>,
}

impl Index {
    pub fn new(seed: u64) -> Index {
        let layers = Layers { recent: Arc::new(Map::default()), frozen: None, table: Arc::new(Table::empty()) };
        Index { seed, layers: RwLock::new(layers), keys: AtomicU64::new(0) }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn hash(&self, key: &str) -> u64 {
        table::hash_key(self.seed, key.as_bytes())
    }

    /// The newest location of `key`; `is_key(loc)` says whether the record
    /// at a table's candidate location carries `key`.
    pub fn get(&self, key: &str, is_key: impl Fn(Loc) -> bool) -> Result<Option<Loc>, Damaged> {
        let l = self.layers.read();
        if let Some(loc) = l.recent.get(key) {
            return Ok(Some(*loc));
        }
        if let Some(loc) = l.frozen.as_ref().and_then(|f| f.get(key).map(|l| *l)) {
            return Ok(Some(loc));
        }
        l.table.find(self.hash(key), |s| is_key(s.loc).then_some(s.loc))
    }

    /// `key`'s location if the layers in memory (not the table) hold it.
    pub fn in_memory_loc(&self, key: &str) -> Option<Loc> {
        let l = self.layers.read();
        l.recent.get(key).map(|l| *l).or_else(|| l.frozen.as_ref().and_then(|f| f.get(key).map(|l| *l)))
    }

    /// The click total the table holds for `key` (0 if none).
    pub fn table_clicks(&self, key: &str, is_key: impl Fn(Loc) -> bool) -> Result<u64, Damaged> {
        let table = self.layers.read().table.clone();
        Ok(table.find(self.hash(key), |s: Slot| is_key(s.loc).then_some(s.clicks))?.unwrap_or(0))
    }

    /// Sets `key`'s newest location (the writer and start-up only);
    /// `new_key` when the index did not hold the key.
    pub fn set(&self, key: compact_str::CompactString, loc: Loc, new_key: bool) {
        self.layers.read().recent.insert(key, loc);
        if new_key {
            self.keys.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn len(&self) -> u64 {
        self.keys.load(Ordering::Relaxed)
    }

    /// Keys filed outside the layers (a bulk load's table).
    pub fn add_keys(&self, n: u64) {
        self.keys.fetch_add(n, Ordering::Relaxed);
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries in memory (the layers a merge has not written yet).
    pub fn in_memory(&self) -> usize {
        let l = self.layers.read();
        l.recent.len() + l.frozen.as_ref().map_or(0, |f| f.len())
    }

    pub fn table(&self) -> Arc<Table> {
        self.layers.read().table.clone()
    }

    /// Start-up: the table a snapshot names, with its key count.
    pub fn install_loaded(&self, table: Table) {
        self.keys.store(table.len(), Ordering::Relaxed);
        self.layers.write().table = Arc::new(table);
    }

    /// Moves `recent` aside for a merge. A frozen layer left by a merge
    /// that failed goes back under `recent` first (recent is newer).
    pub fn freeze(&self) -> Frozen {
        let mut l = self.layers.write();
        if let Some(old) = l.frozen.take() {
            for e in old.iter() {
                if !l.recent.contains_key(e.key()) {
                    l.recent.insert(e.key().clone(), *e.value());
                }
            }
        }
        let changes = std::mem::replace(&mut l.recent, Arc::new(Map::default()));
        l.frozen = Some(changes.clone());
        Frozen { table: l.table.clone(), changes }
    }

    /// A merge finished: its table replaces the old one and the frozen layer.
    pub fn install(&self, table: Table) {
        let mut l = self.layers.write();
        l.table = Arc::new(table);
        l.frozen = None;
    }

    /// Every entry of every layer, newest layer first (a key can show up
    /// once per layer); `Err` at a damaged table block.
    pub fn for_each(&self, mut f: impl FnMut(Option<&str>, Loc)) -> Result<(), Damaged> {
        let (recent, frozen, table) = {
            let l = self.layers.read();
            (l.recent.clone(), l.frozen.clone(), l.table.clone())
        };
        for e in recent.iter() {
            f(Some(e.key()), *e.value());
        }
        for e in frozen.iter().flat_map(|f| f.iter()) {
            f(Some(e.key()), *e.value());
        }
        table.for_each(|s| f(None, s.loc))
    }

    /// Throws every layer away and starts over from `recent` (a rebuild
    /// after table damage, or a start that gave up on a snapshot).
    pub fn replace_all(&self, recent: Map<Loc>) {
        let mut l = self.layers.write();
        self.keys.store(recent.len() as u64, Ordering::Relaxed);
        *l = Layers { recent: Arc::new(recent), frozen: None, table: Arc::new(Table::empty()) };
    }

    /// Keeps only the entries of `recent` for which `keep` holds (start-up
    /// with --repair, before any table is installed).
    pub fn retain_recent(&self, keep: impl Fn(&Loc) -> bool) {
        let l = self.layers.read();
        let before = l.recent.len();
        l.recent.retain(|_, loc| keep(loc));
        self.keys.fetch_sub((before - l.recent.len()) as u64, Ordering::Relaxed);
    }

    /// Inserts many entries at once from several threads (start-up).
    pub fn load(&self, entries: &mut [(compact_str::CompactString, Loc)]) {
        let recent = self.layers.read().recent.clone();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
        let chunk = entries.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for part in entries.chunks_mut(chunk) {
                let recent = &recent;
                scope.spawn(move || {
                    for (key, loc) in part.iter_mut() {
                        recent.insert(std::mem::take(key), *loc);
                    }
                });
            }
        });
        self.keys.store(self.layers.read().table.len() + recent.len() as u64, Ordering::Relaxed);
    }
}
