//! Network namespaces: open one by path, and enter it for a scope.
//!
//! Hazard (see containernetworking/plugins `pkg/ns/README.md`): `setns` changes the calling
//! *thread* only. Enter a namespace only through [`NetnsGuard`], on the thread that does the
//! work, and never spawn threads or processes while inside: they would not reliably inherit
//! it. Prefer opening a netlink socket inside once and driving it from the host namespace.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::fstatfs;

const NSFS_MAGIC: i64 = 0x6e73_6673;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// Errors opening or entering a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("failed to open netns {}: {source}", .path.display())]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{} is not a network namespace (filesystem magic {magic:#x})", .path.display())]
    NotNamespace { path: PathBuf, magic: i64 },
    #[error("failed to enter netns {}: {source}", .path.display())]
    Enter { path: PathBuf, source: nix::Error },
}

impl NetnsError {
    /// True when the path does not exist (DEL treats that as "already gone").
    pub fn is_not_found(&self) -> bool {
        matches!(self, NetnsError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the namespace at `path` (a bind mount under `/run/netns` or `/proc/<pid>/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| NetnsError::Open { path: path.clone(), source })?;
        let magic = fstatfs(file.as_fd())
            .map_err(|e| NetnsError::Open { path: path.clone(), source: e.into() })?
            .filesystem_type()
            .0 as i64;
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
            return Err(NetnsError::NotNamespace { path, magic });
        }
        Ok(NetNs { file, path })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<NetNs, NetnsError> {
        let path = PathBuf::from(format!("/proc/self/task/{}/ns/net", nix::unistd::gettid()));
        let file = File::open(&path).map_err(|source| NetnsError::Open { path: path.clone(), source })?;
        Ok(NetNs { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Device and inode of the namespace file: equal for two handles on the same namespace.
    pub fn id(&self) -> std::io::Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().map(|m| (m.dev(), m.ino()))
    }

    /// Moves the calling thread into this namespace until the guard is dropped.
    pub fn enter(&self) -> Result<NetnsGuard, NetnsError> {
        let original = NetNs::current()?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|source| NetnsError::Enter { path: self.path.clone(), source })?;
        Ok(NetnsGuard { original })
    }

    /// Runs `f` inside this namespace and comes back.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        let _guard = self.enter()?;
        Ok(f())
    }
}

/// Restores the thread's original namespace when dropped.
#[derive(Debug)]
pub struct NetnsGuard {
    original: NetNs,
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // Failing to return would leave the thread in the container's namespace; the
        // process is short-lived and this cannot fail for a namespace we were just in.
        if let Err(e) = setns(self.original.file.as_fd(), CloneFlags::CLONE_NEWNET) {
            tracing::error!(error = %e, "failed to return to the original network namespace");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_path_is_not_found() {
        let e = NetNs::open("/nonexistent/netns").unwrap_err();
        assert!(e.is_not_found());
    }

    #[test]
    fn regular_file_is_not_a_namespace() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(NetNs::open(f.path()).unwrap_err(), NetnsError::NotNamespace { .. }));
    }
}
