//! nftables masquerade backend, the reference's layout (cni.md §7.4): table
//! `inet cni_plugins_masquerade`, chain `masq_checks`, base chain `postrouting` refilled on each ADD,
//! one commented rule per address. Existing rules are read in-process ([`super::nfnl`]); each ADD
//! or DEL is then ONE `nft -f -` process running one transaction.
//!
//! The script is nft's text syntax, as the reference's knftables writes it: nft 1.0.x's JSON input
//! silently drops table and chain comments, which the layout requires.

use ipnetwork::IpNetwork;

use super::nfnl::{self, RuleInfo};
use super::{exec, naming, FirewallError, MasqTarget};

/// The table every reference plugin shares.
pub const TABLE: &str = "cni_plugins_masquerade";
/// The regular chain holding one rule per masqueraded address.
pub const MASQ_CHAIN: &str = "masq_checks";
const TABLE_COMMENT: &str = "Masquerading for plugins from github.com/containernetworking/plugins";
const CHAIN_COMMENT: &str =
    "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet";

/// The rules of `masq_checks` whose comment starts with `prefix` (an instance hash).
fn find_rules(prefix: &str) -> Result<Vec<RuleInfo>, FirewallError> {
    let rules = nfnl::list_rules(TABLE, MASQ_CHAIN)
        .map_err(|source| FirewallError::Netlink { op: "list nftables rules", source })?;
    Ok(rules.into_iter().filter(|r| r.comment.as_deref().is_some_and(|c| c.starts_with(prefix))).collect())
}

/// The ADD transaction: ensure table and chains, refill `postrouting`, drop `stale` rules, add one
/// rule per address.
pub(crate) fn plan_setup(t: &MasqTarget, addrs: &[IpNetwork], stale: &[RuleInfo]) -> String {
    let mut s = String::new();
    s.push_str(&format!("add table inet {TABLE} {{ comment \"{TABLE_COMMENT}\" ; }}\n"));
    s.push_str(&format!("add chain inet {TABLE} {MASQ_CHAIN} {{ comment \"{CHAIN_COMMENT}\" ; }}\n"));
    // After masq_checks exists, so the goto below resolves.
    s.push_str(&format!(
        "add chain inet {TABLE} postrouting {{ type nat hook postrouting priority srcnat ; }}\n"
    ));
    s.push_str(&format!("flush chain inet {TABLE} postrouting\n"));
    s.push_str(&format!("add rule inet {TABLE} postrouting ip daddr == 224.0.0.0/4 return\n"));
    s.push_str(&format!("add rule inet {TABLE} postrouting ip6 daddr == ff00::/8 return\n"));
    s.push_str(&format!("add rule inet {TABLE} postrouting goto {MASQ_CHAIN}\n"));
    for rule in stale {
        s.push_str(&format!("delete rule inet {TABLE} {MASQ_CHAIN} handle {}\n", rule.handle));
    }
    let comment = nft_quote(&naming::nft_comment(t.network, t.ifname, t.container_id));
    for addr in addrs {
        let proto = if addr.is_ipv4() { "ip" } else { "ip6" };
        s.push_str(&format!(
            "add rule inet {TABLE} {MASQ_CHAIN} {proto} saddr == {} {proto} daddr != {}/{} masquerade comment {comment}\n",
            addr.ip(),
            addr.network(),
            addr.prefix()
        ));
    }
    s
}

/// The DEL transaction for `rules`; `None` when there is nothing to delete.
pub(crate) fn plan_teardown(rules: &[RuleInfo]) -> Option<String> {
    if rules.is_empty() {
        return None;
    }
    Some(
        rules
            .iter()
            .map(|r| format!("delete rule inet {TABLE} {MASQ_CHAIN} handle {}\n", r.handle))
            .collect(),
    )
}

/// A comment as an nft string literal. nft strings cannot escape `"` (the reference strips it
/// already); control characters would end the statement, so they become spaces.
fn nft_quote(s: &str) -> String {
    let clean: String = s.chars().map(|c| if c.is_control() || c == '"' { ' ' } else { c }).collect();
    format!("\"{clean}\"")
}

/// ADD: one read, one transaction. Retried once if a stale rule vanished in between (concurrent DEL).
pub(crate) fn setup(t: &MasqTarget, addrs: &[IpNetwork]) -> Result<(), FirewallError> {
    let prefix = naming::nft_instance_hash(t.network, t.ifname, t.container_id);
    let mut last = None;
    for _ in 0..2 {
        let stale = find_rules(&prefix)?;
        let script = plan_setup(t, addrs, &stale);
        match exec::run("nft", &["-f", "-"], &script) {
            Ok(_) => return Ok(()),
            Err(e @ FirewallError::Spawn { .. }) => return Err(e),
            Err(e) if stale.is_empty() => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(FirewallError::Unavailable { backend: "nftables" }))
}

/// DEL by comment prefix; no process at all when the attachment has no rule.
pub(crate) fn teardown(t: &MasqTarget) -> Result<(), FirewallError> {
    let prefix = naming::nft_instance_hash(t.network, t.ifname, t.container_id);
    let mut last = None;
    for _ in 0..2 {
        let Some(script) = plan_teardown(&find_rules(&prefix)?) else { return Ok(()) };
        match exec::run("nft", &["-f", "-"], &script) {
            Ok(_) => return Ok(()),
            Err(e @ FirewallError::Spawn { .. }) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(FirewallError::Unavailable { backend: "nftables" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_script_has_reference_layout() {
        let t = MasqTarget { network: "cbr0", container_id: "ctr1", ifname: "eth0" };
        let addrs: Vec<IpNetwork> = vec!["10.244.1.2/24".parse().unwrap(), "fd00:1::5/64".parse().unwrap()];
        let s = plan_setup(&t, &addrs, &[RuleInfo { handle: 7, comment: None }]);
        let c = naming::nft_comment("cbr0", "eth0", "ctr1");
        assert!(s.contains("flush chain inet cni_plugins_masquerade postrouting\n"));
        assert!(s.contains("delete rule inet cni_plugins_masquerade masq_checks handle 7\n"));
        assert!(s.contains(&format!(
            "masq_checks ip saddr == 10.244.1.2 ip daddr != 10.244.1.0/24 masquerade comment \"{c}\"\n"
        )));
        assert!(s.contains(&format!(
            "masq_checks ip6 saddr == fd00:1::5 ip6 daddr != fd00:1::/64 masquerade comment \"{c}\"\n"
        )));
        assert_eq!(plan_teardown(&[]), None);
        assert_eq!(nft_quote("a\"b\nc"), "\"a b c\"");
    }
}
