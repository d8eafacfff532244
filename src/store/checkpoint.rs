//! A copy of a store directory that stays as it is while the store goes
//! on: what a checkpoint (`Store::checkpoint`), a Raft snapshot's files
//! and a restore are made of.

/// Makes `into` a copy of the store directory `from` (a live store's, or a
/// checkpoint made by `Store::checkpoint`), which stays as it is: the
/// newest segment, which a store writes to, is copied; every other file is
/// immutable once in place (sealed segments, index tables, snapshots, the
/// code key), so it is hard-linked. Temporary files and the lock are left
/// out; whatever was in `into` goes.
pub fn copy_checkpoint(from: &std::path::Path, into: &std::path::Path) -> std::io::Result<()> {
    use crate::journal::file::sync_dir;
    use crate::journal::segment::segment_number;
    match std::fs::remove_dir_all(into) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(into)?;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        match entry.file_name().into_string() {
            Ok(n) if !n.ends_with(".tmp") && n != "lock" && entry.file_type()?.is_file() => names.push(n),
            _ => {}
        }
    }
    let newest = names.iter().filter_map(|n| segment_number(n)).max();
    for name in &names {
        let segment = segment_number(name);
        if segment.is_some() && segment == newest {
            std::fs::copy(from.join(name), into.join(name))?;
            std::fs::File::open(into.join(name))?.sync_data()?;
        } else {
            std::fs::hard_link(from.join(name), into.join(name))?;
        }
    }
    sync_dir(into)
}
