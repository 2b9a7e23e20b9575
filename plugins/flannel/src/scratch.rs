//! The saved delegate configs: `<dataDir>/<containerID>` (docs/flannel.md §12.4).
//!
//! ADD saves the exact bytes sent to the delegate before running it, so that DEL can replay
//! them even if the config or `subnet.env` changed since (or flanneld is gone). The file is
//! the only state this plugin keeps; upstream reads and writes the same path, so a node can
//! switch between upstream flannel and weft with containers running.

use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Errors of the scratch directory; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    #[error("failed to create data directory {}", .path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("failed to save delegate config {}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("failed to read saved delegate config {}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("failed to remove saved delegate config {}", .path.display())]
    Remove { path: PathBuf, source: std::io::Error },
}

/// The data directory holding one file per container.
#[derive(Debug, Clone)]
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub fn new(dir: &Path) -> Scratch {
        Scratch { dir: dir.to_path_buf() }
    }

    /// Where the config of `container_id` lives. The skel has validated the ID
    /// (`[A-Za-z0-9][A-Za-z0-9_.-]*`), so it is a plain file name.
    pub fn path(&self, container_id: &str) -> PathBuf {
        self.dir.join(container_id)
    }

    /// Saves `bytes` for `container_id`: directory 0700, file 0600, written atomically (tmp +
    /// rename), so a killed plugin never leaves a truncated config that DEL could not replay.
    /// Not fsynced, as upstream: after a power loss the pods it describes are gone anyway.
    pub fn save(&self, container_id: &str, bytes: &[u8]) -> Result<PathBuf, ScratchError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| ScratchError::CreateDir { path: self.dir.clone(), source })?;
        let path = self.path(container_id);
        weft_common::fs::write_replace(&path, bytes, 0o600)
            .map_err(|source| ScratchError::Write { path: path.clone(), source })?;
        Ok(path)
    }

    /// The saved bytes, or `None` when nothing was saved for `container_id`.
    pub fn load(&self, container_id: &str) -> Result<Option<Vec<u8>>, ScratchError> {
        let path = self.path(container_id);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ScratchError::Read { path, source }),
        }
    }

    /// Removes the saved config; already gone is success.
    pub fn remove(&self, container_id: &str) -> Result<(), ScratchError> {
        let path = self.path(container_id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ScratchError::Remove { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn save_load_remove_with_modes() {
        let d = tempfile::tempdir().unwrap();
        let s = Scratch::new(&d.path().join("a/flannel"));
        assert_eq!(s.load("c1").unwrap(), None);
        let p = s.save("c1", b"{}").unwrap();
        assert_eq!(s.load("c1").unwrap().as_deref(), Some(&b"{}"[..]));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(&d.path().join("a/flannel")), 0o700);
        s.remove("c1").unwrap();
        s.remove("c1").unwrap();
        assert!(!p.exists());
    }
}
