//! The reference host-local's on-disk format (docs/cni.md §8.4), byte for byte.
//!
//! `<dataDir>/<network>/` holds one file per reserved address, named by the address's canonical
//! text and containing `<containerID>\r\n<ifname>` (no trailing newline), `last_reserved_ip.<N>`
//! holding the last address reserved in range set `N`, and an empty `lock` file guarded with
//! `flock(LOCK_EX)` — the same lock the Go plugin takes, so both may run on one node.
//!
//! Unlike the reference (`O_EXCL` create, then write), a reservation is written to a temporary
//! file, then `link(2)`ed to its name: `EEXIST` means taken, exactly like `O_EXCL`, and a plugin
//! killed at any point never leaves an empty reservation behind. Like the reference, nothing is
//! fsynced (see `weft_common::fs`): that would cost about a millisecond per ADD on ext4, for
//! state that a power loss makes stale anyway (GC releases it).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use weft_common::cni::conf::is_valid_id;
use weft_common::fs::{overwrite, FileLock};

use super::index::{self, Owners};
use super::{owner_record, Allocation, Store, StoreError};

/// Name of the lock file (never removed).
pub const LOCK_FILE: &str = "lock";
/// Prefix of the per-range-set "last reserved address" files.
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// Temporary file a reservation is written to before being linked (only exists under the lock).
const RESERVE_TMP: &str = ".weft-reserve.tmp";
/// Mode of reservation and last-reserved files (the reference's current mode).
const FILE_MODE: u32 = 0o600;

/// The reservations of one network.
#[derive(Debug, Clone)]
pub struct DiskStore {
    dir: PathBuf,
    /// Verified owners as of the last `allocations` plus this operation's changes; `None` when
    /// unknown (then `flush` discards the cache instead of saving it).
    owners: Option<Owners>,
}

impl DiskStore {
    /// Opens (creating with parents, mode 0755) `<data_dir>/<network>`. The network name is
    /// re-checked here although skel validated it: it becomes a path component.
    pub fn open(data_dir: &Path, network: &str) -> Result<DiskStore, StoreError> {
        if !is_valid_id(network) {
            return Err(StoreError::InvalidName { what: "network name", value: network.to_string() });
        }
        let dir = data_dir.join(network);
        DirBuilder::new().recursive(true).mode(0o755).create(&dir).map_err(|source| StoreError::Io {
            op: "create directory",
            path: dir.clone(),
            source,
        })?;
        Ok(DiskStore { dir, owners: None })
    }

    /// The network's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, op: &'static str, path: PathBuf) -> impl FnOnce(std::io::Error) -> StoreError {
        move |source| StoreError::Io { op, path, source }
    }

    fn last_path(&self, set: usize) -> PathBuf {
        self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"))
    }

    /// Writes the record to the temporary file (complete before it gets a name).
    fn write_tmp(&self, tmp: &Path, record: &str) -> std::io::Result<u64> {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(tmp)?;
        // open()'s mode is filtered by the umask; the reference's files are exactly 0600.
        f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        f.write_all(record.as_bytes())?;
        // The inode the reservation will have once linked (for the owner index).
        Ok(f.metadata()?.ino())
    }
}

impl Store for DiskStore {
    type Guard = FileLock;

    fn lock(&self) -> Result<FileLock, StoreError> {
        let path = self.dir.join(LOCK_FILE);
        FileLock::acquire(&path, 0o600).map_err(self.io("lock", path))
    }

    fn allocations(&mut self, fresh: bool) -> Result<Vec<Allocation>, StoreError> {
        let cached = if fresh { None } else { index::load(&self.dir) };
        let entries = fs::read_dir(&self.dir).map_err(self.io("read directory", self.dir.clone()))?;
        let mut owners = Owners::new();
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(self.io("read directory", self.dir.clone()))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            let Ok(ip) = name.parse::<IpAddr>() else { continue };
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(true) {
                continue;
            }
            let ino = entry.ino();
            let known = cached.as_ref().and_then(|c| c.get(&name)).filter(|(i, _)| *i == ino);
            let owner = match known {
                Some((_, owner)) => owner.clone(),
                None => match fs::read(entry.path()) {
                    Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    // Like the reference, an unreadable entry owns nothing (but still blocks its
                    // address); it is not cached, so it is retried next time.
                    Err(e) => {
                        tracing::warn!(path = %entry.path().display(), error = %e, "unreadable reservation");
                        out.push(Allocation { ip: ip.to_canonical(), name, owner: String::new() });
                        continue;
                    }
                },
            };
            out.push(Allocation { ip: ip.to_canonical(), name: name.clone(), owner: owner.clone() });
            owners.insert(name, (ino, owner));
        }
        self.owners = Some(owners);
        Ok(out)
    }

    fn reserve(&mut self, ip: IpAddr, id: &str, ifname: &str, set: usize) -> Result<bool, StoreError> {
        if !is_valid_id(id.trim()) {
            return Err(StoreError::InvalidName { what: "container ID", value: id.to_string() });
        }
        let name = ip.to_string();
        let path = self.dir.join(&name);
        let tmp = self.dir.join(RESERVE_TMP);
        let record = owner_record(id, ifname);
        let ino = match self.write_tmp(&tmp, &record) {
            Ok(ino) => ino,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(StoreError::Io { op: "write reservation", path: tmp, source: e });
            }
        };
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => {
                self.owners = None;
                return Err(StoreError::Io { op: "create reservation", path, source: e });
            }
        }
        let last = self.last_path(set);
        if let Err(e) = overwrite(&last, name.as_bytes(), FILE_MODE) {
            // Keep the store consistent: a reservation is only reported when fully recorded.
            let _ = fs::remove_file(&path);
            self.owners = None;
            return Err(StoreError::Io { op: "write", path: last, source: e });
        }
        if let Some(owners) = &mut self.owners {
            owners.insert(name, (ino, record.trim().to_string()));
        }
        Ok(true)
    }

    fn last_reserved(&self, set: usize) -> Result<Option<IpAddr>, StoreError> {
        let path = self.last_path(set);
        match fs::read(&path) {
            Ok(bytes) => {
                Ok(String::from_utf8_lossy(&bytes).trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical()))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io { op: "read", path, source: e }),
        }
    }

    fn release(&mut self, name: &str) -> Result<bool, StoreError> {
        // Only address-named entries are ever released: never `lock` or `last_reserved_ip.*`.
        if name.parse::<IpAddr>().is_err() {
            return Ok(false);
        }
        let path = self.dir.join(name);
        let removed = match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => {
                self.owners = None;
                return Err(StoreError::Io { op: "remove", path, source: e });
            }
        };
        if let Some(owners) = &mut self.owners {
            owners.remove(name);
        }
        removed
    }

    fn flush(&mut self) {
        match self.owners.take() {
            Some(owners) => index::save(&self.dir, &owners),
            None => index::discard(&self.dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn writes_the_reference_format_exactly() {
        let d = tempfile::tempdir().unwrap();
        let mut s = DiskStore::open(d.path(), "hl").unwrap();
        let _g = s.lock().unwrap();
        assert!(s.reserve("10.9.0.2".parse().unwrap(), "ctr1", "eth0", 0).unwrap());
        assert!(s.reserve("fd00:9::2".parse().unwrap(), " ctr1 ", "eth0", 1).unwrap());
        let dir = d.path().join("hl");
        assert_eq!(
            names(&dir),
            ["10.9.0.2", "fd00:9::2", "last_reserved_ip.0", "last_reserved_ip.1", "lock"]
        );
        assert_eq!(fs::read(dir.join("10.9.0.2")).unwrap(), b"ctr1\r\neth0");
        assert_eq!(fs::read(dir.join("fd00:9::2")).unwrap(), b"ctr1\r\neth0");
        assert_eq!(fs::read(dir.join("last_reserved_ip.0")).unwrap(), b"10.9.0.2");
        assert_eq!(fs::read(dir.join("last_reserved_ip.1")).unwrap(), b"fd00:9::2");
        assert_eq!(fs::read(dir.join("lock")).unwrap(), b"");
        assert_eq!(fs::metadata(dir.join("10.9.0.2")).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o755);
        assert_eq!(fs::metadata(dir.join("10.9.0.2")).unwrap().nlink(), 1);
    }

    #[test]
    fn taken_address_is_refused_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let mut s = DiskStore::open(d.path(), "n").unwrap();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        assert!(s.reserve(ip, "a", "eth0", 0).unwrap());
        assert!(!s.reserve(ip, "b", "eth0", 0).unwrap());
        assert_eq!(fs::read(s.dir().join("10.0.0.5")).unwrap(), b"a\r\neth0");
        assert!(!s.dir().join(RESERVE_TMP).exists());
    }

    #[test]
    fn reads_reference_files_including_legacy() {
        let d = tempfile::tempdir().unwrap();
        let mut s = DiskStore::open(d.path(), "n").unwrap();
        fs::write(s.dir().join("10.0.0.2"), b"ctr1\r\neth0").unwrap();
        fs::write(s.dir().join("10.0.0.3"), b"old-ctr\n").unwrap();
        fs::write(s.dir().join("last_reserved_ip.0"), b"10.0.0.3").unwrap();
        fs::write(s.dir().join("lock"), b"").unwrap();
        fs::create_dir(s.dir().join("10.0.0.9")).unwrap();
        let mut a = s.allocations(true).unwrap();
        a.sort_by_key(|x| x.ip);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].owner, "ctr1\r\neth0");
        assert_eq!(a[1].owner, "old-ctr");
        assert_eq!(s.last_reserved(0).unwrap(), Some("10.0.0.3".parse().unwrap()));
        assert_eq!(s.last_reserved(1).unwrap(), None);
    }

    #[test]
    fn release_never_touches_bookkeeping_files() {
        let d = tempfile::tempdir().unwrap();
        let mut s = DiskStore::open(d.path(), "n").unwrap();
        assert!(s.reserve("10.0.0.2".parse().unwrap(), "c", "eth0", 0).unwrap());
        let _g = s.lock().unwrap();
        assert!(!s.release("lock").unwrap());
        assert!(!s.release("last_reserved_ip.0").unwrap());
        assert!(s.release("10.0.0.2").unwrap());
        assert!(!s.release("10.0.0.2").unwrap());
        assert_eq!(names(s.dir()), ["last_reserved_ip.0", "lock"]);
    }

    #[test]
    fn refuses_escaping_names() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["..", "../x", "a/b", ".", ""] {
            assert!(matches!(DiskStore::open(d.path(), bad), Err(StoreError::InvalidName { .. })), "{bad}");
        }
        let mut s = DiskStore::open(d.path(), "n").unwrap();
        assert!(s.reserve("10.0.0.2".parse().unwrap(), "../../etc", "eth0", 0).is_err());
        assert_eq!(names(s.dir()), Vec::<String>::new());
    }

    fn owner_of(s: &mut DiskStore, fresh: bool, name: &str) -> Option<String> {
        s.allocations(fresh).unwrap().into_iter().find(|a| a.name == name).map(|a| a.owner)
    }

    #[test]
    fn owner_index_is_used_only_while_the_directory_is_unchanged() {
        let d = tempfile::tempdir().unwrap();
        let mut s = DiskStore::open(d.path(), "n").unwrap();
        s.allocations(true).unwrap();
        assert!(s.reserve("10.0.0.2".parse().unwrap(), "a", "eth0", 0).unwrap());
        s.flush();
        // the cache is outside the network directory
        assert_eq!(names(s.dir()), ["10.0.0.2", "last_reserved_ip.0"]);
        assert!(d.path().join(index::INDEX_DIR).join("n").exists());

        // rewriting a file in place does not touch the directory: the cache answers (this is
        // how the test sees that it is used); a fresh read sees the file
        fs::write(s.dir().join("10.0.0.2"), b"changed\r\neth0").unwrap();
        assert_eq!(owner_of(&mut s, false, "10.0.0.2").as_deref(), Some("a\r\neth0"));
        assert_eq!(owner_of(&mut s, true, "10.0.0.2").as_deref(), Some("changed\r\neth0"));
        s.flush();
        assert_eq!(owner_of(&mut s, false, "10.0.0.2").as_deref(), Some("changed\r\neth0"));

        // a foreign create bumps the mtime: everything is re-read
        s.flush();
        fs::write(s.dir().join("10.0.0.2"), b"again\r\neth0").unwrap();
        fs::write(s.dir().join("10.0.0.3"), b"b\r\neth0").unwrap();
        assert_eq!(owner_of(&mut s, false, "10.0.0.2").as_deref(), Some("again\r\neth0"));
        assert_eq!(owner_of(&mut s, false, "10.0.0.3").as_deref(), Some("b\r\neth0"));

        // a foreign delete + recreate (new inode) is re-read even without a cache miss on mtime
        s.flush();
        fs::remove_file(s.dir().join("10.0.0.3")).unwrap();
        fs::write(s.dir().join("10.0.0.4"), b"keep-inode").unwrap();
        fs::write(s.dir().join("10.0.0.3"), b"c\r\neth0").unwrap();
        assert_eq!(owner_of(&mut s, false, "10.0.0.3").as_deref(), Some("c\r\neth0"));
        fs::remove_file(s.dir().join("10.0.0.4")).unwrap();
        assert_eq!(owner_of(&mut s, false, "10.0.0.4"), None);

        // releases are reflected; a failed operation discards the cache
        s.flush();
        s.allocations(false).unwrap();
        assert!(s.release("10.0.0.3").unwrap());
        s.flush();
        assert_eq!(owner_of(&mut s, false, "10.0.0.3"), None);
        s.owners = None;
        s.flush();
        assert!(!d.path().join(index::INDEX_DIR).join("n").exists());
    }
}
