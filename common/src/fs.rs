//! File helpers: atomic replacement (tmp + rename, optionally fsynced), in-place overwrite of
//! small lock-protected files, and whole-file `flock`.
//!
//! Plugins use [`write_replace`]: a reader or a killed writer never sees a partial file, but
//! nothing is forced to disk — an fsync costs ~0.2–0.5 ms each on ext4 and a CNI plugin's state
//! (reservations, saved configs, result caches) describes pods that a power loss ends anyway;
//! the reference plugins do not fsync either. The daemon's few, rare writes use the durable
//! [`write_atomic`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// Writes `data` to `path` atomically with `mode`: a reader sees the old or the new file,
/// never a partial one, and a crash leaves no truncated file.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    replace(path, data, mode, true)
}

/// Like [`write_atomic`] (readers see the old or the new file, never a partial one, also when
/// the writer is killed), without forcing anything to disk.
pub fn write_replace(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    replace(path, data, mode, false)
}

fn replace(path: &Path, data: &[u8], mode: u32, durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        // The mode given to open() is filtered by the umask; set it explicitly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if durable {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `data` over the file at `path` in place (created with `mode` if missing), for small
/// files rewritten on every operation and read only under a lock (host-local's
/// `last_reserved_ip.<N>`, which the reference also rewrites in place). Neither truncating to
/// zero nor replacing by rename: on ext4 both make the kernel write the data out at once
/// (`auto_da_alloc`, ~0.4 ms here), and a replaced file's blocks are freed, which on a
/// filesystem mounted with `discard` waits for the device. A crash may leave the file torn.
pub fn overwrite(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new().write(true).create(true).truncate(false).mode(mode).open(path)?;
    // The mode given to open() is filtered by the umask; set it explicitly.
    if f.metadata()?.permissions().mode() & 0o7777 != mode {
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    f.write_all_at(data, 0)?;
    f.set_len(data.len() as u64)
}

/// An exclusive `flock(2)` on a file, released when dropped. `flock`, not `fcntl`: the
/// reference host-local uses `flock` and the two kinds do not exclude each other on Linux.
pub struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    /// Opens (creating with `mode` if needed) and locks `path`, blocking until it is free.
    pub fn acquire(path: &Path, mode: u32) -> std::io::Result<FileLock> {
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(mode).open(path)?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| std::io::Error::from(e))?;
        Ok(FileLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn overwrite_leaves_exactly_the_new_bytes() {
        // A reader parses the whole file: nothing of a longer old content may remain.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("last_reserved_ip.0");
        for data in [&b"10.97.0.10"[..], b"10.97.0.9", b"", b"fd00:99::1234"] {
            overwrite(&p, data, 0o600).unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), data);
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        overwrite(&p, b"10.0.0.1", 0o600).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn lock_excludes_second_holder() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let held = FileLock::acquire(&p, 0o600).unwrap();
        let f = File::open(&p).unwrap();
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err());
        drop(held);
        let f = File::open(&p).unwrap();
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok());
    }
}
