//! Per-container masquerade (bridge `ipMasq`), with the exact rule layouts of the reference plugins
//! (cni.md §7.4) so that either implementation removes the other's rules after an upgrade or
//! downgrade. Two backends: iptables (`nat` table, chain `CNI-<hash>`) and nftables (table
//! `inet cni_plugins_masquerade`). iptables rules are written by the system tools, in as few
//! processes as possible: one transaction per family per call, reads done once. nftables spawns no
//! process: it reads and writes over netlink in-process, one transaction per call.
//!
//! Tools run as child processes and, like the netlink sockets, use the calling thread's network
//! namespace.

mod iptables;
pub mod iptables_nft;
pub mod listing;
mod naming;
mod nfnl;
mod nfnl_batch;
mod nfnl_expr;
mod nft_abi;
mod nftables;
mod rule_render;
pub mod rule_terms;

use ipnetwork::IpNetwork;

use crate::process::ToolError;
use iptables::Family;
pub use naming::{chain_name, iptables_comment, nft_comment, nft_instance_hash, nft_network_hash};
pub use nftables::{MASQ_CHAIN as NFT_MASQ_CHAIN, TABLE as NFT_TABLE};

/// Which backend ADD uses (bridge config `ipMasqBackend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Iptables,
    Nftables,
    /// The reference's default: iptables if usable, else nftables if usable.
    Auto,
}

impl BackendChoice {
    /// Parses `ipMasqBackend`: `"iptables"`, `"nftables"`, or absent (auto).
    pub fn parse(value: Option<&str>) -> Result<BackendChoice, FirewallError> {
        match value {
            None => Ok(BackendChoice::Auto),
            Some("iptables") => Ok(BackendChoice::Iptables),
            Some("nftables") => Ok(BackendChoice::Nftables),
            Some(other) => Err(FirewallError::InvalidBackend { value: other.to_string() }),
        }
    }
}

/// The attachment whose rules are set up or torn down.
#[derive(Debug, Clone, Copy)]
pub struct MasqTarget<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    /// Part of nftables comments only (the iptables chain is shared by a container's interfaces).
    pub ifname: &'a str,
}

/// Masquerade failures.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// Bad `ipMasqBackend` value (invalid configuration, field `ipMasqBackend`).
    #[error("invalid ipMasqBackend {value:?}: must be \"iptables\" or \"nftables\"")]
    InvalidBackend { value: String },
    /// A tool (`iptables-restore`, ...) could not run or failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{op}: {source}")]
    Netlink { op: &'static str, source: std::io::Error },
    #[error("no usable {backend} backend")]
    Unavailable { backend: &'static str },
    /// Teardown keeps going and reports every failure.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Several(Vec<FirewallError>),
}

impl FirewallError {
    /// The config field at fault, for errors that are invalid configuration (CNI code 7).
    pub fn config_field(&self) -> Option<&'static str> {
        match self {
            FirewallError::InvalidBackend { .. } => Some("ipMasqBackend"),
            _ => None,
        }
    }

    /// True when the backend's tool is not installed / the kernel interface is missing.
    fn is_unavailable(&self) -> bool {
        match self {
            FirewallError::Tool(e) => e.is_not_found(),
            FirewallError::Netlink { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::EPROTONOSUPPORT) | Some(libc::EAFNOSUPPORT))
            }
            FirewallError::Unavailable { .. } => true,
            _ => false,
        }
    }
}

fn split(addrs: &[IpNetwork]) -> (Vec<IpNetwork>, Vec<IpNetwork>) {
    addrs.iter().partition(|a| a.is_ipv4())
}

/// ADD: masquerade traffic from each address (with prefix, e.g. `10.244.1.2/24`; its subnet is the
/// network part) leaving that subnet. iptables: one transaction per family (one process each for a
/// new attachment); nftables: one in-process read and one in-process netlink transaction.
///
/// `Auto` follows the reference's choice (iptables unless it is unusable and nftables is usable),
/// without its probe processes: iptables is tried and nftables used when the iptables tools are
/// not installed.
pub fn setup_masquerade(
    choice: BackendChoice,
    t: &MasqTarget,
    addrs: &[IpNetwork],
) -> Result<(), FirewallError> {
    match choice {
        BackendChoice::Nftables => nftables::setup(t, addrs),
        BackendChoice::Iptables => setup_iptables(t, addrs),
        BackendChoice::Auto => match setup_iptables(t, addrs) {
            Err(e) if e.is_unavailable() => {
                tracing::debug!(error = %e, "iptables unusable, masquerading with nftables");
                nftables::setup(t, addrs)
            }
            other => other,
        },
    }
}

fn setup_iptables(t: &MasqTarget, addrs: &[IpNetwork]) -> Result<(), FirewallError> {
    let (v4, v6) = split(addrs);
    iptables::setup(Family::V4, t, &v4)?;
    iptables::setup(Family::V6, t, &v6)
}

/// The comments of the rules in nftables' `masq_checks` chain (`None` for a rule without one),
/// in chain order, from one in-process listing that is consistent even while other processes
/// change the ruleset (an interrupted dump is restarted). Empty when the table or chain is
/// missing. In the calling thread's namespace. For tests and diagnostics.
pub fn nftables_masquerade_comments() -> Result<Vec<Option<String>>, FirewallError> {
    nftables::rule_comments()
}

/// DEL: removes this attachment's rules from BOTH backends; works with `addrs` empty (interface
/// already gone). iptables: every POSTROUTING jump to `CNI-<hash>` (whatever its `-s` form) and the
/// chain, for both families (only the families of `addrs` when it is non-empty); nftables: the
/// `masq_checks` rules whose comment starts with the instance hash. Missing rules, chains, tables,
/// or a backend whose tools are not installed = success.
pub fn teardown_masquerade(t: &MasqTarget, addrs: &[IpNetwork]) -> Result<(), FirewallError> {
    let families: Vec<Family> = if addrs.is_empty() {
        vec![Family::V4, Family::V6]
    } else {
        let mut f: Vec<Family> = addrs.iter().map(Family::of).collect();
        f.dedup();
        if f.len() > 1 {
            f = vec![Family::V4, Family::V6];
        }
        f
    };
    let mut errors = Vec::new();
    // iptables first (one in-process transaction for all families, or the tools), then the
    // nftables teardown, not on a thread of its own: every rule-deleting commit holds nf_tables'
    // per-namespace commit mutex through its wait, so two at once only queue (and a commit that
    // overlaps a device unregistration delays it: see the bridge's DEL).
    teardown_iptables(t, &families, &mut errors);
    match nftables::teardown(t) {
        Err(e) if e.is_unavailable() => tracing::debug!(error = %e, "nftables not available"),
        Err(e) => errors.push(e),
        Ok(()) => {}
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(FirewallError::Several(errors)),
    }
}

/// The iptables half of [`teardown_masquerade`]; errors other than "tools not installed" are
/// collected in `errors`.
fn teardown_iptables(t: &MasqTarget, families: &[Family], errors: &mut Vec<FirewallError>) {
    let skip = |e: FirewallError, errors: &mut Vec<FirewallError>| {
        if e.is_unavailable() {
            tracing::debug!(error = %e, "iptables not installed");
        } else {
            errors.push(e);
        }
    };
    // Fastest path: an iptables-nft host, every family in one in-process transaction.
    let (v4, v6) = (families.contains(&Family::V4), families.contains(&Family::V6));
    if iptables_nft::try_del(&naming::chain_name(t.network, t.container_id), v4, v6) {
        return;
    }
    let reads: Vec<_> = families.iter().map(|&f| (f, iptables::start_read(f))).collect();
    let mut writes = Vec::new();
    for (family, read) in reads {
        match read.and_then(|read| iptables::start_teardown(family, t, read)) {
            Ok(Some(write)) => writes.push((family, write)),
            Ok(None) => {}
            Err(e) => skip(e, errors),
        }
    }
    for (family, write) in writes {
        if let Err(e) = iptables::finish_teardown(family, t, write) {
            skip(e, errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_parse() {
        assert_eq!(BackendChoice::parse(None).unwrap(), BackendChoice::Auto);
        assert_eq!(BackendChoice::parse(Some("iptables")).unwrap(), BackendChoice::Iptables);
        assert_eq!(BackendChoice::parse(Some("nftables")).unwrap(), BackendChoice::Nftables);
        let e = BackendChoice::parse(Some("ebtables")).unwrap_err();
        assert_eq!(e.config_field(), Some("ipMasqBackend"));
        assert!(e.to_string().contains("ipMasqBackend"));
    }
}
