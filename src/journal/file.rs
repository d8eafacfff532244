//! Putting a whole file in place so that a crash leaves the old file or the
//! new one, never part of one: written under a temporary name, synced,
//! renamed over the real name, and the directory synced (only then is the
//! rename itself durable).
//!
//! Every file of a data directory that is not appended record by record
//! (segments being made, snapshots, index tables, the code key, the Raft
//! id, a replica's clean-stop marker, a group's snapshot) goes through
//! here, so the order of those four steps is written once.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Makes `path` hold `parts`, one after another, atomically and durably.
/// Returns the new file, open for reading and writing.
pub fn write_atomic(path: &Path, parts: &[&[u8]]) -> io::Result<File> {
    write_with_mode(path, parts, 0o666)
}

/// `write_atomic` for a secret: the file is readable by its owner only.
pub fn write_atomic_private(path: &Path, parts: &[&[u8]]) -> io::Result<File> {
    write_with_mode(path, parts, 0o600)
}

fn write_with_mode(path: &Path, parts: &[&[u8]], mode: u32) -> io::Result<File> {
    let tmp = temporary(path);
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    for part in parts {
        f.write_all(part)?;
    }
    f.sync_all()?;
    rename_durably(&tmp, path)?;
    Ok(f)
}

/// Renames `from` (a file or a directory, synced already) to `to` and
/// syncs the directory that holds `to`.
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    sync_dir(to.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

/// Makes the entries of `dir` (files created, renamed or removed) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `path` with `.tmp` after its whole name.
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_file_written_atomically_holds_its_parts_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("code.key");
        std::fs::write(&path, b"old").unwrap();
        write_atomic_private(&path, &[b"ab", b"cd"]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abcd");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["code.key"]);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
