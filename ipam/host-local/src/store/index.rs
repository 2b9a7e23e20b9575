//! A cache of reservation owners so an ADD need not read every reservation file
//! (docs/cni.md §8.8, §11). The per-address files stay the only source of truth.
//!
//! The cache lives outside the network directory, in `<dataDir>/.weft-host-local-index/<network>`
//! (no network can be named with a leading `.`), so the reference's layout is untouched. It
//! records the directory's inode and mtime as of the end of the last weft operation, and every
//! entry's `(name, inode)`. It is trusted only while the directory's mtime is unchanged — any
//! create or delete by anyone else (the Go plugin included) bumps it and forces a full re-read.
//! Even when trusted, the current listing is compared entry by entry: an entry that is new, or
//! whose inode differs, is read from disk; a cached entry no longer listed is dropped. Only
//! DEL-then-recreate of one name on one inode within one timestamp tick could go unnoticed, and
//! only ADD's duplicate check uses the cache: DEL, CHECK and GC always read every file.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use weft_common::fs::overwrite;

/// Directory (under the data dir) holding one cache file per network.
pub const INDEX_DIR: &str = ".weft-host-local-index";
const HEADER: &str = "weft-host-local owner index v1";
const TRAILER: &str = "end";

/// Entry name → (inode, trimmed owner record).
pub type Owners = BTreeMap<String, (u64, String)>;

/// Identity and modification time of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirStamp {
    ino: u64,
    mtime_sec: i64,
    mtime_nsec: i64,
}

impl DirStamp {
    /// Stats `dir`.
    pub fn of(dir: &Path) -> Option<DirStamp> {
        let m = fs::metadata(dir).ok()?;
        Some(DirStamp { ino: m.ino(), mtime_sec: m.mtime(), mtime_nsec: m.mtime_nsec() })
    }
}

/// Where the cache for `network_dir` is kept.
pub fn index_path(network_dir: &Path) -> Option<PathBuf> {
    let name = network_dir.file_name()?;
    Some(network_dir.parent()?.join(INDEX_DIR).join(name))
}

/// The cached owners, if the cache describes `network_dir` exactly as it is now.
pub fn load(network_dir: &Path) -> Option<Owners> {
    let text = fs::read_to_string(index_path(network_dir)?).ok()?;
    let mut lines = text.split('\n');
    if lines.next()? != HEADER || lines.next()? != escape(&network_dir.to_string_lossy()) {
        return None;
    }
    let stamp: Vec<&str> = lines.next()?.split(' ').collect();
    let [ino, sec, nsec] = stamp.as_slice() else { return None };
    let cached =
        DirStamp { ino: ino.parse().ok()?, mtime_sec: sec.parse().ok()?, mtime_nsec: nsec.parse().ok()? };
    if Some(cached) != DirStamp::of(network_dir) {
        return None;
    }
    let mut owners = Owners::new();
    let mut complete = false;
    for line in lines {
        if line == TRAILER {
            complete = true;
            break;
        }
        let mut fields = line.splitn(3, '\t');
        let (ino, name, owner) = (fields.next()?, fields.next()?, fields.next()?);
        owners.insert(name.to_string(), (ino.parse().ok()?, unescape(owner)?));
    }
    // A torn write (crash while saving) lacks the trailer and is not trusted.
    complete.then_some(owners)
}

/// Records `owners` as the state of `network_dir` now (call under the lock, after the last
/// change). Failures only cost the next ADD a full read.
pub fn save(network_dir: &Path, owners: &Owners) {
    let (Some(path), Some(stamp)) = (index_path(network_dir), DirStamp::of(network_dir)) else { return };
    let mut text = String::with_capacity(64 + owners.len() * 48);
    text.push_str(HEADER);
    text.push('\n');
    text.push_str(&escape(&network_dir.to_string_lossy()));
    text.push('\n');
    text.push_str(&format!("{} {} {}\n", stamp.ino, stamp.mtime_sec, stamp.mtime_nsec));
    for (name, (ino, owner)) in owners {
        text.push_str(&format!("{ino}\t{name}\t{}\n", escape(owner)));
    }
    text.push_str(TRAILER);
    // No fsync: a cache lost or torn by a crash is simply not trusted (no trailer, or a stamp
    // that does not match). Overwritten in place, not truncated or replaced (see `overwrite`).
    let written = path
        .parent()
        .map(fs::create_dir_all)
        .unwrap_or(Ok(()))
        .and_then(|()| overwrite(&path, text.as_bytes(), 0o644));
    if let Err(e) = written {
        tracing::debug!(path = %path.display(), error = %e, "cannot save the owner index");
    }
}

/// Escapes `\`, CR, LF and TAB so a record fits in one tab-separated line.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            'r' => '\r',
            'n' => '\n',
            't' => '\t',
            _ => return None,
        });
    }
    Some(out)
}

/// Removes a cache that can no longer be trusted (after a failed operation).
pub fn discard(network_dir: &Path) {
    if let Some(path) = index_path(network_dir) {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        for s in ["ctr1\r\neth0", "a\\b\tc\n", "", "plain"] {
            assert_eq!(unescape(&escape(s)).as_deref(), Some(s));
            assert!(!escape(s).contains(['\n', '\r', '\t']));
        }
        assert_eq!(unescape("bad\\x"), None);
    }

    #[test]
    fn torn_or_foreign_files_are_not_trusted() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("n");
        fs::create_dir(&dir).unwrap();
        let mut owners = Owners::new();
        owners.insert("10.0.0.2".into(), (7, "a\r\neth0".into()));
        save(&dir, &owners);
        assert_eq!(load(&dir), Some(owners));
        let path = index_path(&dir).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.trim_end_matches(TRAILER)).unwrap();
        assert_eq!(load(&dir), None);
    }
}
