//! The plugin's failures and their CNI codes, mapped in one place.

use std::path::PathBuf;

use weft_common::cni::{CniError, ErrorCode};
use weft_common::flannel::SubnetEnvError;

use crate::scratch::ScratchError;

/// Everything that can go wrong in the flannel plugin.
#[derive(Debug, thiserror::Error)]
pub enum FlannelError {
    /// The request config is invalid (already a code 7 error naming the field).
    #[error("{0}")]
    Config(CniError),
    /// `subnet.env` does not exist yet: flanneld has not acquired a lease on this node.
    #[error("{} not found: flanneld has not written it yet (is flanneld running on this node?)", .path.display())]
    SubnetEnvMissing { path: PathBuf },
    /// `subnet.env` exists but cannot be read.
    #[error("failed to read {}", .path.display())]
    SubnetEnvRead { path: PathBuf, source: std::io::Error },
    /// `subnet.env` is malformed (a key is missing or has a bad value).
    #[error("failed to load flannel 'subnet.env' file: {0}")]
    SubnetEnvInvalid(#[source] SubnetEnvError),
    /// The data directory could not be used.
    #[error(transparent)]
    Scratch(#[from] ScratchError),
    /// CHECK for a container that has no saved delegate config.
    #[error("no saved delegate config {}: ADD has not run for this container", .path.display())]
    NotAdded { path: PathBuf },
    /// The saved delegate config is not a JSON object (CHECK only; DEL tolerates it).
    #[error("saved delegate config {} is not a JSON object", .path.display())]
    SavedCorrupt { path: PathBuf, details: String },
    /// The delegate failed: its own error passes through unchanged.
    #[error("{0}")]
    Delegate(CniError),
}

impl From<FlannelError> for CniError {
    fn from(e: FlannelError) -> CniError {
        let msg = e.to_string();
        match e {
            FlannelError::Config(err) | FlannelError::Delegate(err) => err,
            FlannelError::SubnetEnvMissing { .. } => CniError::new(
                ErrorCode::TryAgainLater,
                msg,
                "the plugin retries nothing itself; the runtime retries the ADD later",
            ),
            FlannelError::SubnetEnvRead { source: s, .. } => CniError::new(ErrorCode::Io, msg, s.to_string()),
            FlannelError::SubnetEnvInvalid(_) => {
                CniError::new(ErrorCode::Internal, msg, "check the flanneld log on this node")
            }
            FlannelError::Scratch(s) => {
                let details = std::error::Error::source(&s).map(|c| c.to_string()).unwrap_or_default();
                CniError::new(ErrorCode::Io, msg, details)
            }
            FlannelError::NotAdded { .. } => CniError::new(ErrorCode::Io, msg, ""),
            FlannelError::SavedCorrupt { details, .. } => CniError::new(ErrorCode::Decode, msg, details),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let e: CniError = FlannelError::SubnetEnvMissing { path: "/run/flannel/subnet.env".into() }.into();
        assert_eq!(e.code, 11);
        assert_eq!(
            e.msg,
            "/run/flannel/subnet.env not found: flanneld has not written it yet \
             (is flanneld running on this node?)"
        );
        let bad = weft_common::flannel::SubnetEnv::parse("FLANNEL_MTU=x\n", "/s.env").unwrap_err();
        let e: CniError = FlannelError::SubnetEnvInvalid(bad).into();
        assert_eq!(e.code, 999);
        assert!(e.msg.contains("FLANNEL_MTU"), "{}", e.msg);
        let delegate = CniError::new(ErrorCode::TryAgainLater, "busy", "");
        assert_eq!(CniError::from(FlannelError::Delegate(delegate.clone())), delegate);
    }
}
