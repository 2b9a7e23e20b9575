//! nftables layout (§9.4): table `ip flannel-ipv4` with chains `forward` (filter/forward/0) and
//! `postrtg` (nat/postrouting/srcnat), and the same chains in table `ip6 flannel-ipv6` for the
//! IPv6 side, written in one `nft -f -` transaction; drift is read back with `nft -j list table`
//! and compared expression by expression.

use std::collections::HashMap;

use ipnetwork::IpNetwork;
use serde_json::{json, Value};

use weft_common::firewall::listing::Listing;
use weft_common::process::{self, ToolError};

use super::{multicast, FirewallError, FlannelRules, Nets};

const TABLE: &str = "flannel-ipv4";
const TABLE6: &str = "flannel-ipv6";
const FORWARD_DECL: &str = "{ type filter hook forward priority filter ; }";
const POSTRTG_DECL: &str = "{ type nat hook postrouting priority srcnat ; }";

/// nft's family keyword for `n` (table family and payload protocol alike).
fn family(n: IpNetwork) -> &'static str {
    if n.is_ipv6() {
        "ip6"
    } else {
        "ip"
    }
}

/// The flannel table of `n`'s family.
fn table(n: IpNetwork) -> &'static str {
    if n.is_ipv6() {
        TABLE6
    } else {
        TABLE
    }
}

/// The rule bodies of chain `forward`, in order, as `nft` syntax.
fn forward_rules(c: IpNetwork) -> Vec<String> {
    let f = family(c);
    vec![format!("{f} saddr {c} accept"), format!("{f} daddr {c} accept")]
}

/// The rule bodies of chain `postrtg`. The fourth rule is upstream's (`!= L`, not `!= C`);
/// `masquerade` carries `fully-random` unless `fully_random` is off (§9.4).
fn postrtg_rules(n: Nets, fully_random: bool) -> Vec<String> {
    let (c, l, f, mc) = (n.c, n.l, family(n.c), multicast(n.c));
    let masq = if fully_random { "masquerade fully-random" } else { "masquerade" };
    vec![
        "meta mark 0x4000 return".to_string(),
        format!("{f} saddr {l} {f} daddr {c} return"),
        format!("{f} saddr {c} {f} daddr {l} return"),
        format!("{f} saddr != {l} {f} daddr {c} return"),
        format!("{f} saddr {c} {f} daddr != {mc} {masq}"),
        format!("{f} saddr != {c} {f} daddr {c} {masq}"),
    ]
}

/// Lines that make `chain` of `fam`'s `table` hold exactly `rules` (or disappear when `want`
/// is false).
fn chain_lines(
    out: &mut String,
    (fam, table): (&str, &str),
    chain: &str,
    decl: &str,
    want: bool,
    rules: &[String],
) {
    // Adding an existing chain is a no-op, so flush/delete never fail on a missing one.
    out.push_str(&format!("add chain {fam} {table} {chain} {decl}\nflush chain {fam} {table} {chain}\n"));
    if want {
        for r in rules {
            out.push_str(&format!("add rule {fam} {table} {chain} {r}\n"));
        }
    } else {
        out.push_str(&format!("delete chain {fam} {table} {chain}\n"));
    }
}

/// The chains of one family's table.
fn family_lines(out: &mut String, r: &FlannelRules, n: Nets) {
    let t = (family(n.c), table(n.c));
    chain_lines(out, t, "forward", FORWARD_DECL, r.forward, &forward_rules(n.c));
    chain_lines(out, t, "postrtg", POSTRTG_DECL, r.ip_masq, &postrtg_rules(n, r.fully_random));
}

/// The whole transaction for `r`.
pub(super) fn script(r: &FlannelRules) -> String {
    let mut s = String::new();
    s.push_str(&format!("add table ip {TABLE} {{ comment \"rules for {TABLE}\" ; }}\n"));
    s.push_str(&format!("add table ip6 {TABLE6} {{ comment \"rules for {TABLE6}\" ; }}\n"));
    family_lines(&mut s, r, r.v4());
    match r.v6() {
        Some(v6) => family_lines(&mut s, r, v6),
        // No IPv6 side (dual stack switched off, or never on): the IPv6 chains an earlier run
        // made are flanneld's and go; the empty table stays, as upstream leaves it.
        None => {
            let t = ("ip6", TABLE6);
            chain_lines(&mut s, t, "forward", FORWARD_DECL, false, &[]);
            chain_lines(&mut s, t, "postrtg", POSTRTG_DECL, false, &[]);
        }
    }
    s
}

pub(super) fn apply(r: &FlannelRules) -> Result<(), FirewallError> {
    process::run("nft", &["-f", "-"], &script(r))?;
    Ok(())
}

/// Deletes both flannel tables (iptables mode). Without the `nft` binary there is nothing to
/// delete that we could see, so that is not an error. The tables are read in-process first and
/// only those there are deleted: any `nft` write costs ~10 ms here even when it changes nothing,
/// and in iptables mode there is usually nothing to delete. When they cannot be read (no
/// nf_tables in this kernel, say), both are deleted blindly, as before.
pub(super) fn remove_all() -> Result<(), FirewallError> {
    let s = match Listing::read_tables() {
        Ok(listing) => deletions(&listing),
        Err(_) => format!(
            "add table ip {TABLE}\ndelete table ip {TABLE}\nadd table ip6 {TABLE6}\ndelete table ip6 {TABLE6}\n"
        ),
    };
    if s.is_empty() {
        return Ok(());
    }
    match process::run("nft", &["-f", "-"], &s) {
        Err(e) if e.is_not_found() => Ok(()),
        other => other.map(|_| ()).map_err(FirewallError::from),
    }
}

/// The `delete table` lines for the flannel tables in `listing`.
fn deletions(listing: &Listing) -> String {
    [("ip", TABLE), ("ip6", TABLE6)]
        .into_iter()
        .filter(|(family, name)| listing.tables.iter().any(|t| t.family_name() == *family && t.name == *name))
        .map(|(family, name)| format!("delete table {family} {name}\n"))
        .collect()
}

/// A network as `nft -j` lists it: a bare address for a full-length prefix.
fn addr(n: IpNetwork) -> Value {
    let full = if n.is_ipv6() { 128 } else { 32 };
    if n.prefix() == full {
        json!(n.ip().to_string())
    } else {
        json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix()}})
    }
}

fn ip_match(field: &str, op: &str, n: IpNetwork) -> Value {
    json!({"match": {"op": op, "left": {"payload": {"protocol": family(n), "field": field}}, "right": addr(n)}})
}

/// The expressions `nft -j` lists for the rules of [`forward_rules`] / [`postrtg_rules`].
pub(super) fn expected_exprs(n: Nets, fully_random: bool) -> (Vec<Value>, Vec<Value>) {
    let (c, l, mc) = (n.c, n.l, multicast(n.c));
    let accept = json!({"accept": null});
    let ret = json!({"return": null});
    // `nft -j` lists a flag-less masquerade statement as `null`.
    let masq = if fully_random {
        json!({"masquerade": {"flags": "fully-random"}})
    } else {
        json!({"masquerade": null})
    };
    let forward =
        vec![json!([ip_match("saddr", "==", c), accept]), json!([ip_match("daddr", "==", c), accept])];
    let postrtg = vec![
        json!([{"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 0x4000}}, ret]),
        json!([ip_match("saddr", "==", l), ip_match("daddr", "==", c), ret]),
        json!([ip_match("saddr", "==", c), ip_match("daddr", "==", l), ret]),
        json!([ip_match("saddr", "!=", l), ip_match("daddr", "==", c), ret]),
        json!([ip_match("saddr", "==", c), ip_match("daddr", "!=", mc), masq]),
        json!([ip_match("saddr", "!=", c), ip_match("daddr", "==", c), masq]),
    ];
    (forward, postrtg)
}

/// A chain as listed: (type, hook, prio) and its rules' expressions in order.
#[derive(Debug, Default)]
struct Listed {
    decl: Option<(String, String, i64)>,
    rules: Vec<Value>,
}

fn listed(json_text: &str) -> Result<HashMap<String, Listed>, FirewallError> {
    let v: Value = serde_json::from_str(json_text).map_err(FirewallError::Listing)?;
    let mut chains: HashMap<String, Listed> = HashMap::new();
    let items = v.get("nftables").and_then(Value::as_array).cloned().unwrap_or_default();
    for item in items {
        if let Some(ch) = item.get("chain") {
            let name = ch.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let decl = (
                ch.get("type").and_then(Value::as_str).unwrap_or_default().to_string(),
                ch.get("hook").and_then(Value::as_str).unwrap_or_default().to_string(),
                ch.get("prio").and_then(Value::as_i64).unwrap_or(i64::MIN),
            );
            chains.entry(name).or_default().decl = Some(decl);
        } else if let Some(rule) = item.get("rule") {
            let name = rule.get("chain").and_then(Value::as_str).unwrap_or_default().to_string();
            let expr = rule.get("expr").cloned().unwrap_or(Value::Null);
            chains.entry(name).or_default().rules.push(expr);
        }
    }
    Ok(chains)
}

fn chain_ok(
    chains: &HashMap<String, Listed>,
    name: &str,
    want: bool,
    decl: (&str, &str, i64),
    rules: &[Value],
) -> bool {
    match chains.get(name) {
        None => !want,
        Some(ch) => {
            want && ch.decl.as_ref().is_some_and(|(t, h, p)| t == decl.0 && h == decl.1 && *p == decl.2)
                && ch.rules == rules
        }
    }
}

/// True when one family's table is missing or its chains differ from what `r` wants.
fn family_drift(r: &FlannelRules, n: Nets) -> Result<bool, FirewallError> {
    let listing = match process::run("nft", &["-j", "list", "table", family(n.c), table(n.c)], "") {
        // The table is gone (or unreadable): re-applying recreates it.
        Err(ToolError::Failed { .. }) => return Ok(true),
        other => other?,
    };
    let chains = listed(&listing)?;
    let (forward, postrtg) = expected_exprs(n, r.fully_random);
    let ok = chain_ok(&chains, "forward", r.forward, ("filter", "forward", 0), &forward)
        && chain_ok(&chains, "postrtg", r.ip_masq, ("nat", "postrouting", 100), &postrtg);
    Ok(!ok)
}

pub(super) fn drift(r: &FlannelRules) -> Result<bool, FirewallError> {
    if family_drift(r, r.v4())? {
        return Ok(true);
    }
    match r.v6() {
        Some(v6) => family_drift(r, v6),
        None => ipv6_chains_left(),
    }
}

/// Without an IPv6 side: true when the `ip6` table still holds a flannel chain.
fn ipv6_chains_left() -> Result<bool, FirewallError> {
    let listing = match process::run("nft", &["-j", "list", "table", "ip6", TABLE6], "") {
        // No table, no chains.
        Err(ToolError::Failed { .. }) => return Ok(false),
        other => other?,
    };
    let chains = listed(&listing)?;
    Ok(chains.contains_key("forward") || chains.contains_key("postrtg"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::{FirewallMode, Ipv6Side};
    use weft_common::firewall::listing::Table;

    /// A listing of `nft list tables`' lines (`table <family> <name>`).
    fn tables_of(lines: &str) -> Listing {
        let family = |f: &str| match f {
            "ip" => 2,
            "ip6" => 10,
            _ => 1,
        };
        let tables = lines
            .lines()
            .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                ["table", f, name] => {
                    Some(Table { family: family(f), name: name.into(), chains: Vec::new() })
                }
                _ => None,
            })
            .collect();
        Listing { tables }
    }

    #[test]
    fn only_the_flannel_tables_listed_are_deleted() {
        assert_eq!(deletions(&tables_of("")), "");
        assert_eq!(deletions(&tables_of("table inet filter\ntable ip nat\ntable ip flannel-ipv4x\n")), "");
        assert_eq!(deletions(&tables_of("table ip6 flannel-ipv6\n")), "delete table ip6 flannel-ipv6\n");
        assert_eq!(
            deletions(&tables_of("table inet filter\ntable ip flannel-ipv4\ntable ip6 flannel-ipv6\n")),
            "delete table ip flannel-ipv4\ndelete table ip6 flannel-ipv6\n"
        );
        // The name in the other family is not ours.
        assert_eq!(deletions(&tables_of("table ip6 flannel-ipv4\ntable inet flannel-ipv6\n")), "");
    }

    fn rules(masq: bool, forward: bool) -> FlannelRules {
        FlannelRules {
            network: "10.5.0.0/16".parse().unwrap(),
            subnet: "10.5.72.1/24".parse().unwrap(),
            ip_masq: masq,
            forward,
            fully_random: true,
            mode: FirewallMode::Nftables,
            ipv6: None,
        }
    }

    fn dual(masq: bool, forward: bool) -> FlannelRules {
        let ipv6 = Ipv6Side {
            network: "fd00:10::/56".parse().unwrap(),
            subnet: "fd00:10:0:48::1/64".parse().unwrap(),
        };
        FlannelRules { ipv6: Some(ipv6), ..rules(masq, forward) }
    }

    #[test]
    fn script_has_upstream_rules_with_networks_normalised() {
        let s = script(&rules(true, true));
        assert!(s.contains(
            "add rule ip flannel-ipv4 postrtg ip saddr != 10.5.72.0/24 ip daddr 10.5.0.0/16 return\n"
        ));
        assert!(s.contains("add rule ip flannel-ipv4 forward ip daddr 10.5.0.0/16 accept\n"));
        assert!(s.contains("add table ip6 flannel-ipv6 { comment \"rules for flannel-ipv6\" ; }\n"));
        assert!(!s.contains("delete chain ip flannel-ipv4"));
        // Without an IPv6 side, IPv6 chains of an earlier dual-stack run are deleted.
        assert!(s.ends_with(
            "add chain ip6 flannel-ipv6 postrtg { type nat hook postrouting priority srcnat ; }\n\
             flush chain ip6 flannel-ipv6 postrtg\ndelete chain ip6 flannel-ipv6 postrtg\n"
        ));
        assert!(s.contains("flush chain ip6 flannel-ipv6 forward\ndelete chain ip6 flannel-ipv6 forward\n"));
    }

    #[test]
    fn disabled_chains_are_deleted_in_the_same_transaction() {
        let s = script(&rules(false, true));
        assert!(s.contains("flush chain ip flannel-ipv4 postrtg\ndelete chain ip flannel-ipv4 postrtg\n"));
        assert!(!s.contains("masquerade"));
    }

    #[test]
    fn listing_parser_matches_expected() {
        let r = rules(true, false);
        let (_, postrtg) = expected_exprs(r.v4(), r.fully_random);
        let mut items = vec![
            json!({"table": {"family": "ip", "name": TABLE}}),
            json!({"chain": {"name": "postrtg", "type": "nat", "hook": "postrouting", "prio": 100}}),
        ];
        for e in &postrtg {
            items.push(json!({"rule": {"chain": "postrtg", "expr": e}}));
        }
        let chains = listed(&json!({"nftables": items}).to_string()).unwrap();
        assert!(chain_ok(&chains, "postrtg", true, ("nat", "postrouting", 100), &postrtg));
        assert!(chain_ok(&chains, "forward", false, ("filter", "forward", 0), &[]));
        assert!(!chain_ok(&chains, "postrtg", true, ("nat", "postrouting", 100), &postrtg[1..]));
    }

    #[test]
    fn masquerade_follows_fully_random() {
        let p = "add rule ip flannel-ipv4 postrtg";
        let on = script(&rules(true, true));
        assert!(on.contains(&format!(
            "{p} ip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random\n"
        )));
        assert!(on.contains(&format!(
            "{p} ip saddr != 10.5.0.0/16 ip daddr 10.5.0.0/16 masquerade fully-random\n"
        )));
        let off_rules = FlannelRules { fully_random: false, ..rules(true, true) };
        let off = script(&off_rules);
        assert!(off.contains(&format!("{p} ip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade\n")));
        assert!(off.contains(&format!("{p} ip saddr != 10.5.0.0/16 ip daddr 10.5.0.0/16 masquerade\n")));
        assert!(!off.contains("fully-random"), "{off}");
        // Everything else is the same script.
        assert_eq!(on.replace(" fully-random", ""), off);
        // The drift check expects the matching listing, so switching the flag is drift.
        let (_, exp_on) = expected_exprs(rules(true, true).v4(), true);
        let (_, exp_off) = expected_exprs(off_rules.v4(), false);
        assert_eq!(exp_off[4][2], json!({"masquerade": null}));
        assert_eq!(exp_on[5][2], json!({"masquerade": {"flags": "fully-random"}}));
        assert_eq!(exp_on[..4], exp_off[..4]);
        assert_ne!(exp_on, exp_off);
    }

    #[test]
    fn ipv6_side_adds_the_same_chains_to_the_ip6_table() {
        let v4_script = script(&rules(true, true));
        // The IPv4 part: everything before the (here: deleting) IPv6 chain lines.
        let v4_only = &v4_script[..v4_script.find("add chain ip6").unwrap()];
        let s = script(&dual(true, true));
        // The IPv4 part is unchanged; the IPv6 chains follow it.
        assert!(s.starts_with(v4_only), "{s}");
        let p = "add rule ip6 flannel-ipv6";
        let expected = [
            "add chain ip6 flannel-ipv6 forward { type filter hook forward priority filter ; }".to_string(),
            "flush chain ip6 flannel-ipv6 forward".to_string(),
            format!("{p} forward ip6 saddr fd00:10::/56 accept"),
            format!("{p} forward ip6 daddr fd00:10::/56 accept"),
            "add chain ip6 flannel-ipv6 postrtg { type nat hook postrouting priority srcnat ; }".to_string(),
            "flush chain ip6 flannel-ipv6 postrtg".to_string(),
            format!("{p} postrtg meta mark 0x4000 return"),
            format!("{p} postrtg ip6 saddr fd00:10:0:48::/64 ip6 daddr fd00:10::/56 return"),
            format!("{p} postrtg ip6 saddr fd00:10::/56 ip6 daddr fd00:10:0:48::/64 return"),
            format!("{p} postrtg ip6 saddr != fd00:10:0:48::/64 ip6 daddr fd00:10::/56 return"),
            format!("{p} postrtg ip6 saddr fd00:10::/56 ip6 daddr != ff00::/8 masquerade fully-random"),
            format!("{p} postrtg ip6 saddr != fd00:10::/56 ip6 daddr fd00:10::/56 masquerade fully-random"),
        ];
        assert_eq!(s[v4_only.len()..].lines().collect::<Vec<_>>(), expected);
        // Without masquerade the IPv6 postrtg chain is deleted too.
        let s = script(&dual(false, true));
        assert!(
            s.ends_with("flush chain ip6 flannel-ipv6 postrtg\ndelete chain ip6 flannel-ipv6 postrtg\n"),
            "{s}"
        );
    }

    #[test]
    fn ipv6_expressions_use_the_ip6_payload_and_ff00() {
        let r = dual(true, true);
        let (forward, postrtg) = expected_exprs(r.v6().unwrap(), true);
        assert_eq!(
            forward[0][0],
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}},
                "right": {"prefix": {"addr": "fd00:10::", "len": 56}}}})
        );
        assert_eq!(postrtg[4][1]["match"]["right"], json!({"prefix": {"addr": "ff00::", "len": 8}}));
        assert_eq!(postrtg[1][0]["match"]["right"], json!({"prefix": {"addr": "fd00:10:0:48::", "len": 64}}));
        // A /128 is listed as a bare address.
        assert_eq!(addr("fd00::5/128".parse().unwrap()), json!("fd00::5"));
    }
}
