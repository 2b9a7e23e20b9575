//! flanneld's masquerade and forward rules (docs/flannel.md §9), in the nftables or the
//! iptables layout of upstream, applied with one transaction per table and checked for drift.
//!
//! The tools run as child processes and inherit the calling thread's network namespace. IPv4
//! always; IPv6 (family `ip6`, `ip6tables`) when [`FlannelRules::ipv6`] is given, with the same
//! chains and rules and `ff00::/8` as the multicast exclusion (§9.1, §9.4). In nftables mode the
//! `flannel-ipv6` table is created even without the IPv6 side (then empty), as upstream does.
//!
//! Divergences (safe, §15): the nftables objects are written in one atomic `nft -f -`
//! transaction instead of several; in iptables mode an existing jump rule is left in place
//! instead of being deleted and appended again; switching `ip_masq`/`forward` off removes the
//! corresponding chain, and dropping the IPv6 side (dual stack switched off) removes the IPv6
//! chains an earlier run made.

mod iptables;
mod nft;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
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
    /// The IPv6 side (dual stack): `None` installs IPv4 rules only.
    pub ipv6: Option<Ipv6Side>,
}

/// The IPv6 networks of a dual-stack node: upstream installs the same masquerade and forward
/// chains for them in the `ip6` family (`ip6tables`, nft table `flannel-ipv6`), §9.1 and §9.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Side {
    /// The cluster's `IPv6Network`.
    pub network: Ipv6Network,
    /// The node's own IPv6 lease subnet.
    pub subnet: Ipv6Network,
}

/// One address family's cluster network `C` and own subnet `L`, host bits cleared as the tools
/// print them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Nets {
    c: IpNetwork,
    l: IpNetwork,
}

impl Nets {
    fn new(c: impl Into<IpNetwork>, l: impl Into<IpNetwork>) -> Nets {
        let norm = |n: IpNetwork| IpNetwork::new(n.network(), n.prefix()).unwrap_or(n);
        Nets { c: norm(c.into()), l: norm(l.into()) }
    }
}

/// The multicast range upstream never masquerades to, in `c`'s family (§9.1, §9.4).
fn multicast(c: IpNetwork) -> IpNetwork {
    let (addr, len): (std::net::IpAddr, u8) = match c {
        IpNetwork::V4(_) => (std::net::Ipv4Addr::new(224, 0, 0, 0).into(), 4),
        IpNetwork::V6(_) => (std::net::Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0).into(), 8),
    };
    IpNetwork::new(addr, len).unwrap_or(c)
}

impl FlannelRules {
    /// IPv4's `C` and `L`.
    fn v4(&self) -> Nets {
        Nets::new(self.network, self.subnet)
    }

    /// IPv6's `C` and `L`, when the IPv6 side is given.
    fn v6(&self) -> Option<Nets> {
        self.ipv6.map(|s| Nets::new(s.network, s.subnet))
    }
}

/// Installs the rules of `rules.mode` and removes the other mode's objects (of both families).
/// Idempotent: the
/// flannel chains are rebuilt in place (flushed and refilled in the same transaction).
pub fn apply_rules(rules: &FlannelRules) -> Result<(), FirewallError> {
    match rules.mode {
        FirewallMode::Nftables => {
            iptables::remove_all()?;
            // A restarted node usually finds its rules in place: reading them (~0.7 ms) spares
            // the `nft` write (~10 ms here even when it changes nothing).
            if nft::drift(rules)? {
                nft::apply(rules)
            } else {
                Ok(())
            }
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
