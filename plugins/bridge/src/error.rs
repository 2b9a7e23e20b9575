//! The plugin's errors and their one mapping to CNI error codes.

use weft_common::cni::error::{CniError, ErrorCode};
use weft_common::firewall::FirewallError;
use weft_common::netlink;
use weft_common::netns::NetnsError;

/// Everything that can go wrong after the configuration was validated.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Already a CNI error: validation (codes 2, 4, 7) or a delegate's own error.
    #[error("{0}")]
    Cni(CniError),
    #[error("failed to open netns: {0}")]
    Netns(#[source] NetnsError),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: netlink::Error,
    },
    #[error("failed to set sysctl {key}: {source}")]
    Sysctl {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Firewall {
        what: &'static str,
        #[source]
        source: FirewallError,
    },
    #[error("{0:?} already exists but is not a bridge")]
    NotABridge(String),
    #[error("container veth name ({0:?}) already exists")]
    InterfaceExists(String),
    #[error("{bridge:?} already has an IP address different from {wanted}")]
    AddressConflict { bridge: String, wanted: String },
    #[error("IPAM plugin returned missing IP config")]
    NoIpConfig,
    #[error("bridge port in error state: {0}")]
    PortNotUp(String),
    #[error("IPv6 duplicate address detection: {0}")]
    Dad(String),
    #[error("{0}")]
    Check(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps a netlink error with what was being done.
    pub fn netlink(what: impl Into<String>) -> impl FnOnce(netlink::Error) -> Error {
        let what = what.into();
        move |source| Error::Netlink { what, source }
    }
}

impl From<CniError> for Error {
    fn from(e: CniError) -> Self {
        Error::Cni(e)
    }
}

impl From<Error> for CniError {
    fn from(e: Error) -> CniError {
        let internal = |e: &Error| CniError::new(ErrorCode::Internal, e.to_string(), "");
        match e {
            Error::Cni(c) => c,
            Error::Netns(ref n) => CniError::invalid_env("CNI_NETNS", n.to_string()),
            Error::Firewall { source: FirewallError::InvalidBackend { ref value }, .. } => {
                CniError::invalid_config("ipMasqBackend", format!("{value:?} is not iptables or nftables"))
            }
            Error::Netlink { .. }
            | Error::Sysctl { .. }
            | Error::Firewall { .. }
            | Error::NotABridge(_)
            | Error::InterfaceExists(_)
            | Error::AddressConflict { .. }
            | Error::NoIpConfig
            | Error::PortNotUp(_)
            | Error::Dad(_)
            | Error::Check(_)
            | Error::Internal(_) => internal(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let c: CniError = Error::Cni(CniError::invalid_config("vlan", "x")).into();
        assert_eq!(c.code, 7);
        let c: CniError = Error::InterfaceExists("eth0".into()).into();
        assert_eq!(c.code, 999);
        assert!(c.msg.contains("eth0"));
        let c: CniError = Error::Netns(weft_common::netns::NetNs::open("/nonexistent").unwrap_err()).into();
        assert_eq!(c.code, 4);
    }
}
