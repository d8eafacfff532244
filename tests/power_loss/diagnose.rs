//! Explains a failing crash state: reads its snapshots (format in
//! docs/storage.md) and reports the locations they hold that do not point at
//! that code's record in the state, with where the trace wrote and synced
//! those bytes.

use xxhash_rust::xxh3::xxh3_64;

use crate::model::{History, State};

struct Loc {
    key: String,
    seg: u32,
    off: u32,
}

struct Snap {
    name: String,
    replay_seg: u32,
    replay_off: u64,
    next_id: u64,
    locs: Vec<Loc>,
}

fn parse_snapshot(name: &str, b: &[u8]) -> Option<Snap> {
    if b.len() < 48 + 17 || &b[..8] != b"SHORTDSN" {
        return None;
    }
    let sum = u64::from_le_bytes(b[b.len() - 8..].try_into().ok()?);
    if xxh3_64(&b[..b.len() - 8]) != sum {
        return None;
    }
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let mut s = Snap { name: name.to_string(), replay_seg: u32_at(12), replay_off: u64_at(16), next_id: u64_at(24), locs: Vec::new() };
    let mut at = 48;
    loop {
        let tag = *b.get(at)?;
        at += 1;
        match tag {
            1 => {
                let kl = b[at] as usize;
                let key = String::from_utf8_lossy(&b[at + 1..at + 1 + kl]).into_owned();
                at += 1 + kl;
                s.locs.push(Loc { key, seg: u32_at(at), off: u32_at(at + 4) });
                at += 9;
            }
            2 => at += 1 + b[at] as usize + 8,
            3 => {
                at += 1 + b[at] as usize + 16;
                at += 1 + b[at] as usize;
            }
            4 => at += 12,
            255 => return Some(s),
            _ => return None,
        }
    }
}

/// Is the record of `key` intact at `off` of `seg`?
fn record_of(seg: &[u8], off: usize, key: &str) -> Result<(), &'static str> {
    if off + 32 > seg.len() {
        return Err("past the end of the segment");
    }
    let len = u32::from_le_bytes(seg[off + 8..off + 12].try_into().unwrap()) as usize;
    if seg[off..off + 16].iter().all(|&b| b == 0) {
        return Err("zeros (end of data)");
    }
    if len < 32 || off + len > seg.len() {
        return Err("a bad length");
    }
    let sum = u64::from_le_bytes(seg[off..off + 8].try_into().unwrap());
    if xxh3_64(&seg[off + 8..off + len]) != sum {
        return Err("bytes that fail the checksum");
    }
    let kind = seg[off + 12];
    let kl = u16::from_le_bytes(seg[off + 14..off + 16].try_into().unwrap()) as usize;
    let at = off + 32 + if kind == 1 { 40 } else { 0 };
    if at + kl > off + len || &seg[at..at + kl] != key.as_bytes() {
        return Err("another code's record");
    }
    Ok(())
}

/// Lines explaining `state` at crash point `k`, and how many locations of
/// the snapshot a start loads point at no record of their code: (at or past
/// its replay position, before it).
pub fn explain(h: &History, k: usize, state: &State) -> (Vec<String>, (usize, usize)) {
    let mut out = Vec::new();
    let mut snaps: Vec<Snap> = state.iter().filter(|(n, _)| n.ends_with(".snap")).filter_map(|(n, b)| parse_snapshot(n, b)).collect();
    snaps.sort_by(|a, b| b.name.cmp(&a.name));
    // The newest sound snapshot is the one a start loads.
    let Some(s) = snaps.first() else { return (out, (0, 0)) };
    // Locations at or past the replay position (the image is fuzzy: the
    // index changed while it was written) and before it (records the
    // snapshot claims are in the log).
    let mut bad_past = Vec::new();
    let mut bad_before = Vec::new();
    let mut past = 0;
    for l in &s.locs {
        let is_past = (l.seg, u64::from(l.off)) >= (s.replay_seg, s.replay_off);
        if is_past {
            past += 1;
        }
        let file = format!("{:08}.log", l.seg);
        let why = match state.get(&file) {
            None => Err("a segment that is not there"),
            Some(seg) => record_of(seg, l.off as usize, &l.key),
        };
        if let Err(why) = why {
            let when = match h.write_covering(&file, u64::from(l.off), k) {
                Some((w, Some(sy))) if sy < k => format!("written at op {w}, synced by op {sy}"),
                Some((w, Some(sy))) => format!("written at op {w}, first synced by op {sy}, after the crash"),
                Some((w, None)) => format!("written at op {w}, never synced"),
                None => "never written".into(),
            };
            let line = format!("{} -> {file}:{} holds {why} ({when})", l.key, l.off);
            if is_past {
                bad_past.push(line);
            } else {
                bad_before.push(line);
            }
        }
    }
    let made = h.renamed_to(&s.name).map_or(String::new(), |p| format!(", renamed into place at op {p}"));
    let show = |v: &[String]| {
        let mut t = v.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 4 {
            t.push_str(&format!(", and {} more", v.len() - 4));
        }
        t
    };
    out.push(format!(
        "{} (replay from {:08}.log:{}, next_id {}{made}): {} of {} locations at or past the replay position point at no record of their code{}{}; {} of {} before it do{}{}",
        s.name,
        s.replay_seg,
        s.replay_off,
        s.next_id,
        bad_past.len(),
        past,
        if bad_past.is_empty() { "" } else { ": " },
        show(&bad_past),
        bad_before.len(),
        s.locs.len() - past,
        if bad_before.is_empty() { "" } else { ": " },
        show(&bad_before),
    ));
    let bad = (bad_past.len(), bad_before.len());
    (out, bad)
}
