//! A Raft group's snapshot as files, on disk and on the wire.
//!
//! `DATA_DIR/raft/group-N.snap` holds a checked header, the snapshot's
//! meta and its image: the metadata group's state, or a partition's
//! idempotency claims. A partition's records are not in it: they are the
//! partition store itself, checkpointed (`Store::checkpoint`) into
//! `DATA_DIR/raft/group-N-ID/` (ID being the snapshot's id). Those files are
//! immutable, so a snapshot costs a sync, one segment's copy and hard links,
//! whatever the partition's size, and sending it is sending them.
//!
//! On the wire each file goes first, in chunks of at most `CHUNK` bytes
//! (`/internal/v1/raft/chunk`), into `group-N-ID.incoming/`; then the
//! snapshot message itself: the length of a JSON head (vote, meta, and the
//! length and xxh3 of the image and of each file), the head, and the image.
//! The receiver checks every xxh3 against what arrived and syncs the files
//! before it hands the snapshot to openraft. Neither side holds more than a
//! chunk of the files in memory.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{BasicNode, SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::journal::file::{self, sync_dir};

pub type Meta = SnapshotMeta<u64, BasicNode>;

/// A snapshot as openraft holds it: handles, not bytes.
#[derive(Clone)]
pub struct SnapshotData {
    pub image: Image,
    /// A partition's store at the snapshot (`group-N-ID/`).
    pub files: Option<PathBuf>,
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "snapshot ({:?})", self.files)
    }
}

/// The image: in the snapshot file, held open so that a newer snapshot
/// renamed over the path leaves what an older handle reads as it was; or
/// received from a leader, already checked.
#[derive(Clone)]
pub enum Image {
    File { file: Arc<File>, at: u64, len: u64, sum: u64 },
    Received(Vec<u8>),
}

impl Image {
    /// The image's bytes, checked against the checksum they were written with.
    pub fn bytes(&self) -> io::Result<Vec<u8>> {
        match self {
            Image::Received(b) => Ok(b.clone()),
            Image::File { file, at, len, sum } => {
                let mut data = vec![0; *len as usize];
                file.read_exact_at(&mut data, *at)?;
                if xxh3_64(&data) != *sum {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "the snapshot's image fails its checksum"));
                }
                Ok(data)
            }
        }
    }
}

/// Where a partition's snapshot `id` keeps its store's files.
pub fn files_dir(raft_dir: &Path, group: u32, id: &str) -> PathBuf {
    raft_dir.join(format!("group-{group}-{id}"))
}

/// Snapshot ids name directories: what openraft makes of a log id
/// (`term-node-index`), nothing else.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Removes what of `group`'s snapshots is not snapshot `keep`: older
/// files, and leftovers of checkpoints or transfers cut short.
pub fn tidy(raft_dir: &Path, group: u32, keep: Option<&str>) {
    let prefix = format!("group-{group}-");
    let kept = keep.map(|id| format!("{prefix}{id}"));
    for entry in std::fs::read_dir(raft_dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&prefix) && Some(name) != kept.as_deref() {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove an old snapshot");
            }
        }
    }
}

/// `group-N.snap`: this header, the meta's JSON, then the image. The
/// header's own checksum covers it and the meta, so a start reads only
/// these; the image is checked when it is read.
const MAGIC: &[u8; 8] = b"shortdS1";
const HEADER: usize = 36;

/// What a snapshot file holds.
pub enum Read {
    Current(Meta, Image),
    /// The layout before 2026-12-02: checksum, then the JSON of the meta and
    /// of an image with every record of the partition.
    Old(Meta, Vec<u8>),
}

/// The snapshot in `path`, if there is one.
pub fn read(path: &Path) -> Result<Option<Read>, String> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let damaged = || format!("{}: damaged snapshot (checksum); remove it and let the group's leader send a new one", path.display());
    let io_err = |e: io::Error| format!("{}: {e}", path.display());
    let mut h = [0u8; HEADER];
    if file.read_exact(&mut h).is_err() || &h[..8] != MAGIC {
        #[derive(Deserialize)]
        struct Old {
            meta: Meta,
            data: Vec<u8>,
        }
        let bytes = std::fs::read(path).map_err(io_err)?;
        if bytes.len() < 8 || u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) != xxh3_64(&bytes[8..]) {
            return Err(damaged());
        }
        let old: Old = serde_json::from_slice(&bytes[8..]).map_err(|_| damaged())?;
        return Ok(Some(Read::Old(old.meta, old.data)));
    }
    let meta_len = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes")) as usize;
    let len = u64::from_le_bytes(h[12..20].try_into().expect("8 bytes"));
    let sum = u64::from_le_bytes(h[20..28].try_into().expect("8 bytes"));
    let at = (HEADER + meta_len) as u64;
    if file.metadata().map_err(io_err)?.len() != at + len {
        return Err(damaged());
    }
    let mut meta_json = vec![0; meta_len];
    file.read_exact(&mut meta_json).map_err(io_err)?;
    if u64::from_le_bytes(h[28..].try_into().expect("8 bytes")) != xxh3_64(&[&h[..28], &meta_json[..]].concat()) {
        return Err(damaged());
    }
    let meta: Meta = serde_json::from_slice(&meta_json).map_err(|_| damaged())?;
    Ok(Some(Read::Current(meta, Image::File { file: Arc::new(file), at, len, sum })))
}

/// Writes a snapshot file (temporary file, sync, rename, directory sync)
/// and returns a handle to its image.
pub fn write(path: &Path, meta: &Meta, image: &[u8]) -> io::Result<Image> {
    let meta_json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&(meta_json.len() as u32).to_le_bytes());
    h[12..20].copy_from_slice(&(image.len() as u64).to_le_bytes());
    h[20..28].copy_from_slice(&xxh3_64(image).to_le_bytes());
    let head_sum = xxh3_64(&[&h[..28], &meta_json[..]].concat());
    h[28..].copy_from_slice(&head_sum.to_le_bytes());
    let f = file::write_atomic(path, &[&h, &meta_json, image])?;
    let (at, len) = ((HEADER + meta_json.len()) as u64, image.len() as u64);
    Ok(Image::File { file: Arc::new(f), at, len, sum: xxh3_64(image) })
}

/// Most bytes of a snapshot file sent in one request.
pub const CHUNK: usize = 8 << 20;

#[derive(Serialize, Deserialize)]
struct Head {
    vote: Vote<u64>,
    meta: Meta,
    /// (length, xxh3)
    image: (u64, u64),
    /// (name, length, xxh3) of each file sent before.
    files: Vec<(String, u64, u64)>,
}

/// Names of the files of a partition's snapshot, in the order they are sent.
pub fn file_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
    names.sort();
    Ok(names)
}

/// Up to `CHUNK` bytes of `dir/name` from `offset`; fewer only at the end.
pub fn read_chunk(dir: &Path, name: &str, offset: u64) -> io::Result<Vec<u8>> {
    let file = File::open(dir.join(name))?;
    let mut chunk = vec![0; CHUNK];
    let mut filled = 0;
    while filled < CHUNK {
        match file.read_at(&mut chunk[filled..], offset + filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    chunk.truncate(filled);
    Ok(chunk)
}

/// The snapshot message, once its files (`files`, as sent) are there.
pub fn message(vote: Vote<u64>, meta: Meta, image: &[u8], files: Vec<(String, u64, u64)>) -> io::Result<Vec<u8>> {
    let head = Head { vote, meta, image: (image.len() as u64, xxh3_64(image)), files };
    let head = serde_json::to_vec(&head).map_err(io::Error::other)?;
    let mut body = Vec::with_capacity(4 + head.len() + image.len());
    body.extend_from_slice(&(head.len() as u32).to_le_bytes());
    body.extend_from_slice(&head);
    body.extend_from_slice(image);
    Ok(body)
}

fn valid_name(name: &str) -> bool {
    valid_id(name.replace('.', "_").as_str()) && !name.starts_with('.')
}

fn incoming_dir(raft_dir: &Path, group: u32, id: &str) -> PathBuf {
    files_dir(raft_dir, group, id).with_extension("incoming")
}

/// Writes a chunk of file `name` of snapshot `id` as it arrives (blocking).
/// A chunk at offset 0 starts the file again: a new attempt.
pub fn receive_chunk(raft_dir: &Path, group: u32, id: &str, name: &str, offset: u64, bytes: &[u8]) -> Result<(), String> {
    if !valid_id(id) || !valid_name(name) {
        return Err(format!("snapshot chunk: {id:?}/{name:?} is not a snapshot file"));
    }
    let incoming = incoming_dir(raft_dir, group, id);
    let io_err = |e: io::Error| format!("snapshot chunk into {}: {e}", incoming.display());
    std::fs::create_dir_all(&incoming).map_err(io_err)?;
    let file = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(incoming.join(name)).map_err(io_err)?;
    if offset == 0 {
        file.set_len(0).map_err(io_err)?;
    }
    file.write_all_at(bytes, offset).map_err(io_err)
}

/// A snapshot message received for `group`: its files, sent before, checked
/// against it, synced and put in place under `raft_dir` (blocking).
pub fn decode(body: &[u8], raft_dir: &Path, group: u32) -> Result<(Vote<u64>, Meta, SnapshotData), String> {
    let cut = || "snapshot: cut short".to_string();
    let head_len = body.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize).ok_or_else(cut)?;
    let head: Head = serde_json::from_slice(body.get(4..4 + head_len).ok_or_else(cut)?).map_err(|e| format!("snapshot: {e}"))?;
    let id = head.meta.snapshot_id.clone();
    if !valid_id(&id) {
        return Err(format!("snapshot: {id:?} is not a snapshot id"));
    }
    let image = &body[4 + head_len..];
    if (image.len() as u64, xxh3_64(image)) != head.image {
        return Err("snapshot: the image is cut short or fails its checksum".into());
    }
    let files = if head.files.is_empty() {
        None
    } else {
        let dest = files_dir(raft_dir, group, &id);
        let incoming = incoming_dir(raft_dir, group, &id);
        let io_err = |e: io::Error| format!("snapshot in {}: {e}", incoming.display());
        for (name, len, sum) in &head.files {
            if !valid_name(name) {
                return Err(format!("snapshot: {name:?} is not a file name"));
            }
            let (mut hasher, mut at) = (xxhash_rust::xxh3::Xxh3::new(), 0u64);
            loop {
                let chunk = read_chunk(&incoming, name, at).map_err(io_err)?;
                hasher.update(&chunk);
                at += chunk.len() as u64;
                if chunk.len() < CHUNK {
                    break;
                }
            }
            if (at, hasher.digest()) != (*len, *sum) {
                let _ = std::fs::remove_dir_all(&incoming);
                return Err(format!("snapshot: {name} arrived cut short or damaged; it is sent again"));
            }
            File::open(incoming.join(name)).and_then(|f| f.sync_all()).map_err(io_err)?;
        }
        // Anything else there is of another attempt.
        for name in file_names(&incoming).map_err(io_err)? {
            if !head.files.iter().any(|(n, _, _)| *n == name) {
                std::fs::remove_file(incoming.join(&name)).map_err(io_err)?;
            }
        }
        sync_dir(&incoming).map_err(io_err)?;
        // A snapshot of the same id holds the same state: keep the one here.
        if dest.exists() {
            let _ = std::fs::remove_dir_all(&incoming);
        } else {
            file::rename_durably(&incoming, &dest).map_err(io_err)?;
        }
        Some(dest)
    };
    Ok((head.vote, head.meta, SnapshotData { image: Image::Received(image.to_vec()), files }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, StoredMembership};

    fn meta(index: u64) -> Meta {
        let log_id = LogId::new(CommittedLeaderId::new(2, 7), index);
        Meta { last_log_id: Some(log_id), last_membership: StoredMembership::default(), snapshot_id: format!("2-7-{index}") }
    }

    fn flip(path: &Path, at: u64) {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[at as usize] ^= 1;
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_snapshot_file_reads_back_and_damage_to_either_part_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group-0.snap");
        write(&path, &meta(9), b"{\"claims\":1}").unwrap();
        let Some(Read::Current(m, image)) = read(&path).unwrap() else { panic!("not read back") };
        assert_eq!(m.snapshot_id, "2-7-9");
        assert_eq!(image.bytes().unwrap(), b"{\"claims\":1}");

        // A flipped image byte is caught when the image is read, even by a
        // handle opened before.
        let len = std::fs::metadata(&path).unwrap().len();
        flip(&path, len - 1);
        assert!(image.bytes().is_err());
        let Some(Read::Current(_, fresh)) = read(&path).unwrap() else { panic!("the header is intact") };
        assert!(fresh.bytes().is_err());

        // A flipped meta byte fails the header.
        write(&path, &meta(9), b"x").unwrap();
        flip(&path, HEADER as u64 + 3);
        assert!(read(&path).is_err());
        // Cut short.
        write(&path, &meta(9), b"xyz").unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(f.metadata().unwrap().len() - 1).unwrap();
        assert!(read(&path).is_err());
    }

    /// What a sender does: each file in chunks, then the message.
    fn send(data: &SnapshotData, to: &Path, damage: Option<usize>) -> Result<(Vote<u64>, Meta, SnapshotData), String> {
        let dir = data.files.as_ref().unwrap();
        let mut sent = Vec::new();
        for name in file_names(dir).unwrap() {
            let (mut offset, mut hasher) = (0u64, xxhash_rust::xxh3::Xxh3::new());
            loop {
                let mut chunk = read_chunk(dir, &name, offset).unwrap();
                hasher.update(&chunk);
                if let Some(at) = damage.filter(|&at| at < chunk.len() && name.ends_with(".log")) {
                    chunk[at] ^= 1;
                }
                receive_chunk(to, 3, "2-7-40", &name, offset, &chunk)?;
                offset += chunk.len() as u64;
                if chunk.len() < CHUNK {
                    break;
                }
            }
            sent.push((name, offset, hasher.digest()));
        }
        let body = message(Vote::new(2, 7), meta(40), &data.image.bytes().unwrap(), sent).unwrap();
        decode(&body, to, 3)
    }

    #[test]
    fn a_sent_snapshot_arrives_as_the_same_files_and_a_damaged_one_is_refused() {
        let from = tempfile::tempdir().unwrap();
        let files = from.path().join("group-3-2-7-40");
        std::fs::create_dir(&files).unwrap();
        let big: Vec<u8> = (0..CHUNK + 10_000).map(|i| (i % 251) as u8).collect();
        std::fs::write(files.join("00000001.log"), &big).unwrap();
        std::fs::write(files.join("code.key"), b"key").unwrap();
        std::fs::write(files.join("empty.idx"), b"").unwrap();
        let image = write(&from.path().join("group-3.snap"), &meta(40), b"{}").unwrap();
        let data = SnapshotData { image, files: Some(files.clone()) };

        let to = tempfile::tempdir().unwrap();
        let (v, m, got) = send(&data, to.path(), None).unwrap();
        assert_eq!((v, m.snapshot_id.as_str()), (Vote::new(2, 7), "2-7-40"));
        assert_eq!(got.image.bytes().unwrap(), b"{}");
        let dest = got.files.unwrap();
        assert_eq!(dest, files_dir(to.path(), 3, "2-7-40"));
        assert_eq!(std::fs::read(dest.join("00000001.log")).unwrap(), big);
        assert_eq!(std::fs::read(dest.join("code.key")).unwrap(), b"key");
        assert_eq!(file_names(&dest).unwrap(), ["00000001.log", "code.key", "empty.idx"]);

        // One flipped byte on the way: refused, and nothing put in place.
        let to = tempfile::tempdir().unwrap();
        assert!(send(&data, to.path(), Some(100)).unwrap_err().contains("damaged"));
        assert!(!files_dir(to.path(), 3, "2-7-40").exists());
        // A file name that leaves the directory is refused.
        assert!(receive_chunk(to.path(), 3, "2-7-40", "../x", 0, b"x").is_err());
        assert!(receive_chunk(to.path(), 3, "../2", "x", 0, b"x").is_err());
    }

    #[test]
    fn tidying_keeps_only_the_named_snapshot_of_the_group() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["group-1-2-7-10", "group-1-2-7-20", "group-1-2-7-30.tmp", "group-1-2-7-40.incoming", "group-10-2-7-5"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        tidy(dir.path(), 1, Some("2-7-20"));
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["group-1-2-7-20", "group-10-2-7-5"]);
    }
}
