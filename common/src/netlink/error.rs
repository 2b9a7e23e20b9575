//! The netlink error: which operation on which object failed, with the kernel's errno.

use std::io;

/// A failed netlink operation. The cause is an [`io::Error`] that carries the errno when
/// the kernel (or the socket) reported one; callers branch on [`Error::is_exists`] and
/// [`Error::is_not_found`], never on the text.
#[derive(Debug, thiserror::Error)]
#[error("{op} {object}: {source}{}", .kernel_msg.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
pub struct Error {
    /// What was being done (`create veth`, `add address`, ...).
    pub op: &'static str,
    /// What it was done to (`veth1234abcd`, `10.0.0.1/24 on cni0`, ...).
    pub object: String,
    #[source]
    pub source: io::Error,
    /// The kernel's extended-ack explanation, when it gave one (`Invalid VLAN ID`, ...).
    pub kernel_msg: Option<String>,
}

impl Error {
    pub(crate) fn new(op: &'static str, object: impl Into<String>, source: io::Error) -> Error {
        Error { op, object: object.into(), source, kernel_msg: None }
    }

    pub(crate) fn errno(op: &'static str, object: impl Into<String>, errno: i32) -> Error {
        Error::new(op, object, io::Error::from_raw_os_error(errno))
    }

    pub(crate) fn decode(op: &'static str, object: impl Into<String>, why: impl std::fmt::Display) -> Error {
        Error::new(op, object, io::Error::new(io::ErrorKind::InvalidData, why.to_string()))
    }

    pub(crate) fn with_kernel_msg(mut self, msg: Option<String>) -> Error {
        self.kernel_msg = msg.filter(|m| !m.is_empty());
        self
    }

    /// The kernel's errno, if the failure came with one.
    pub fn raw_errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// The object already exists (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        self.raw_errno() == Some(libc::EEXIST)
    }

    /// The object does not exist: no such device (`ENODEV`), address (`EADDRNOTAVAIL`),
    /// route (`ESRCH`) or entry (`ENOENT`).
    pub fn is_not_found(&self) -> bool {
        matches!(self.raw_errno(), Some(libc::ENODEV | libc::EADDRNOTAVAIL | libc::ESRCH | libc::ENOENT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_errno() {
        assert!(Error::errno("create bridge", "cni0", libc::EEXIST).is_exists());
        for e in [libc::ENODEV, libc::EADDRNOTAVAIL, libc::ESRCH, libc::ENOENT] {
            let err = Error::errno("get link", "x", e);
            assert!(err.is_not_found());
            assert!(!err.is_exists());
        }
        let err = Error::errno("add route", "0.0.0.0/0", libc::EEXIST);
        assert!(err.to_string().starts_with("add route 0.0.0.0/0: "), "{err}");
        assert!(err.to_string().contains("os error 17"), "{err}");
        assert_eq!(Error::decode("dump", "links", "short").raw_errno(), None);
        let e = Error::errno("add bridge vlan", "vid 5", libc::EINVAL)
            .with_kernel_msg(Some("Invalid VLAN".into()));
        assert!(e.to_string().ends_with("(Invalid VLAN)"), "{e}");
    }
}
