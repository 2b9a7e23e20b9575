//! flanneld's masquerade and forward rules (docs/flannel.md §9), in the nftables or the
//! iptables layout of upstream, applied with one transaction per table and checked for drift.
//!
//! The tools run as child processes and inherit the calling thread's network namespace. IPv4
//! only (this daemon programs no IPv6 network); in nftables mode the empty `flannel-ipv6` table
//! is still created, as upstream does.
//!
//! Divergences (safe, §15): the nftables objects are written in one atomic `nft -f -`
//! transaction instead of several; in iptables mode an existing jump rule is left in place
//! instead of being deleted and appended again; switching `ip_masq`/`forward` off removes the
//! corresponding chain.

mod iptables;
mod nft;

use ipnetwork::Ipv4Network;
use weft_common::process::ToolError;

/// A firewall operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// A tool (`iptables-save`, `iptables-restore`, `nft`) could not run or failed; a failed
    /// one's message ends with the script it was given.
    #[error("{source}{}", script_of(source))]
    Tool {
        #[from]
        source: ToolError,
    },
    /// `nft -j` printed something that is not its JSON.
    #[error("parse the nft -j listing: {0}")]
    Listing(#[source] serde_json::Error),
}

fn script_of(e: &ToolError) -> String {
    match e {
        ToolError::Failed { stdin, .. } if !stdin.is_empty() => format!("\ninput:\n{stdin}"),
        _ => String::new(),
    }
}

/// Which firewall layout to use (`EnableNFTables` in the network config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallMode {
    Nftables,
    Iptables,
}

/// The rules flanneld wants for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlannelRules {
    /// The cluster network `C`.
    pub network: Ipv4Network,
    /// The node's own lease subnet `L`.
    pub subnet: Ipv4Network,
    /// `--ip-masq`: install the masquerade chain.
    pub ip_masq: bool,
    /// Install the forward-accept chain (upstream default on).
    pub forward: bool,
    /// Masquerade with fully random source ports (`--random-fully` / `fully-random`); upstream
    /// uses it unless `--ip-masq-fully-random-disable` is given (§9.1, §9.4).
    pub fully_random: bool,
    pub mode: FirewallMode,
}

impl FlannelRules {
    /// `C` and `L` with host bits cleared, as the tools print them.
    fn nets(&self) -> (Ipv4Network, Ipv4Network) {
        let norm = |n: Ipv4Network| Ipv4Network::new(n.network(), n.prefix()).unwrap_or(n);
        (norm(self.network), norm(self.subnet))
    }
}

/// Installs the rules of `rules.mode` and removes the other mode's objects. Idempotent: the
/// flannel chains are rebuilt in place (flushed and refilled in the same transaction).
pub fn apply_rules(rules: &FlannelRules) -> Result<(), FirewallError> {
    match rules.mode {
        FirewallMode::Nftables => {
            iptables::remove_all()?;
            nft::apply(rules)
        }
        FirewallMode::Iptables => {
            nft::remove_all()?;
            iptables::apply(rules)
        }
    }
}

/// True when any wanted rule or chain is missing or different (or an unwanted flannel chain
/// exists) in the active mode; the caller then calls [`apply_rules`] again.
pub fn check_drift(rules: &FlannelRules) -> Result<bool, FirewallError> {
    match rules.mode {
        FirewallMode::Nftables => nft::drift(rules),
        FirewallMode::Iptables => iptables::drift(rules),
    }
}
