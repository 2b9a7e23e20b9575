//! nftables layout (§9.4): table `ip flannel-ipv4` with chains `forward` (filter/forward/0) and
//! `postrtg` (nat/postrouting/srcnat), written in one `nft -f -` transaction; drift is read back
//! with `nft -j list table` and compared expression by expression.

use ipnetwork::Ipv4Network;
use serde_json::{json, Value};

use weft_common::process::{self, ToolError};

use super::{FirewallError, FlannelRules};

const TABLE: &str = "flannel-ipv4";
const TABLE6: &str = "flannel-ipv6";
const FORWARD_DECL: &str = "{ type filter hook forward priority filter ; }";
const POSTRTG_DECL: &str = "{ type nat hook postrouting priority srcnat ; }";

/// The rule bodies of chain `forward`, in order, as `nft` syntax.
fn forward_rules(c: Ipv4Network) -> Vec<String> {
    vec![format!("ip saddr {c} accept"), format!("ip daddr {c} accept")]
}

/// The rule bodies of chain `postrtg`. The fourth rule is upstream's (`!= L`, not `!= C`);
/// `masquerade` carries `fully-random` unless `fully_random` is off (§9.4).
fn postrtg_rules(c: Ipv4Network, l: Ipv4Network, fully_random: bool) -> Vec<String> {
    let masq = if fully_random { "masquerade fully-random" } else { "masquerade" };
    vec![
        "meta mark 0x4000 return".to_string(),
        format!("ip saddr {l} ip daddr {c} return"),
        format!("ip saddr {c} ip daddr {l} return"),
        format!("ip saddr != {l} ip daddr {c} return"),
        format!("ip saddr {c} ip daddr != 224.0.0.0/4 {masq}"),
        format!("ip saddr != {c} ip daddr {c} {masq}"),
    ]
}

/// Lines that make `chain` hold exactly `rules` (or disappear when `want` is false).
fn chain_lines(out: &mut String, chain: &str, decl: &str, want: bool, rules: &[String]) {
    // Adding an existing chain is a no-op, so flush/delete never fail on a missing one.
    out.push_str(&format!("add chain ip {TABLE} {chain} {decl}\nflush chain ip {TABLE} {chain}\n"));
    if want {
        for r in rules {
            out.push_str(&format!("add rule ip {TABLE} {chain} {r}\n"));
        }
    } else {
        out.push_str(&format!("delete chain ip {TABLE} {chain}\n"));
    }
}

/// The whole transaction for `r`.
pub(super) fn script(r: &FlannelRules) -> String {
    let (c, l) = r.nets();
    let mut s = String::new();
    s.push_str(&format!("add table ip {TABLE} {{ comment \"rules for {TABLE}\" ; }}\n"));
    s.push_str(&format!("add table ip6 {TABLE6} {{ comment \"rules for {TABLE6}\" ; }}\n"));
    chain_lines(&mut s, "forward", FORWARD_DECL, r.forward, &forward_rules(c));
    chain_lines(&mut s, "postrtg", POSTRTG_DECL, r.ip_masq, &postrtg_rules(c, l, r.fully_random));
    s
}

pub(super) fn apply(r: &FlannelRules) -> Result<(), FirewallError> {
    process::run("nft", &["-f", "-"], &script(r))?;
    Ok(())
}

/// Deletes both flannel tables (iptables mode). Without the `nft` binary there is nothing to
/// delete that we could see, so that is not an error.
pub(super) fn remove_all() -> Result<(), FirewallError> {
    let s = format!(
        "add table ip {TABLE}\ndelete table ip {TABLE}\nadd table ip6 {TABLE6}\ndelete table ip6 {TABLE6}\n"
    );
    match process::run("nft", &["-f", "-"], &s) {
        Err(e) if e.is_not_found() => Ok(()),
        other => other.map(|_| ()).map_err(FirewallError::from),
    }
}

fn addr(n: Ipv4Network) -> Value {
    if n.prefix() == 32 {
        json!(n.ip().to_string())
    } else {
        json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix()}})
    }
}

fn ip_match(field: &str, op: &str, n: Ipv4Network) -> Value {
    json!({"match": {"op": op, "left": {"payload": {"protocol": "ip", "field": field}}, "right": addr(n)}})
}

/// The expressions `nft -j` lists for the rules of [`forward_rules`] / [`postrtg_rules`].
pub(super) fn expected_exprs(r: &FlannelRules) -> (Vec<Value>, Vec<Value>) {
    let (c, l) = r.nets();
    let mc: Ipv4Network = Ipv4Network::new(std::net::Ipv4Addr::new(224, 0, 0, 0), 4).unwrap_or(c);
    let accept = json!({"accept": null});
    let ret = json!({"return": null});
    // `nft -j` lists a flag-less masquerade statement as `null`.
    let masq = if r.fully_random {
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

fn listed(json_text: &str) -> Result<std::collections::HashMap<String, Listed>, FirewallError> {
    let v: Value = serde_json::from_str(json_text).map_err(FirewallError::Listing)?;
    let mut chains: std::collections::HashMap<String, Listed> = std::collections::HashMap::new();
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
    chains: &std::collections::HashMap<String, Listed>,
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

pub(super) fn drift(r: &FlannelRules) -> Result<bool, FirewallError> {
    let listing = match process::run("nft", &["-j", "list", "table", "ip", TABLE], "") {
        // The table is gone (or unreadable): re-applying recreates it.
        Err(ToolError::Failed { .. }) => return Ok(true),
        other => other?,
    };
    let chains = listed(&listing)?;
    let (forward, postrtg) = expected_exprs(r);
    let ok = chain_ok(&chains, "forward", r.forward, ("filter", "forward", 0), &forward)
        && chain_ok(&chains, "postrtg", r.ip_masq, ("nat", "postrouting", 100), &postrtg);
    Ok(!ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::FirewallMode;

    fn rules(masq: bool, forward: bool) -> FlannelRules {
        FlannelRules {
            network: "10.5.0.0/16".parse().unwrap(),
            subnet: "10.5.72.1/24".parse().unwrap(),
            ip_masq: masq,
            forward,
            fully_random: true,
            mode: FirewallMode::Nftables,
        }
    }

    #[test]
    fn script_has_upstream_rules_with_networks_normalised() {
        let s = script(&rules(true, true));
        assert!(s.contains(
            "add rule ip flannel-ipv4 postrtg ip saddr != 10.5.72.0/24 ip daddr 10.5.0.0/16 return\n"
        ));
        assert!(s.contains("add rule ip flannel-ipv4 forward ip daddr 10.5.0.0/16 accept\n"));
        assert!(s.contains("add table ip6 flannel-ipv6 { comment \"rules for flannel-ipv6\" ; }\n"));
        assert!(!s.contains("delete chain"));
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
        let (_, postrtg) = expected_exprs(&r);
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
        let (_, exp_on) = expected_exprs(&rules(true, true));
        let (_, exp_off) = expected_exprs(&off_rules);
        assert_eq!(exp_off[4][2], json!({"masquerade": null}));
        assert_eq!(exp_on[5][2], json!({"masquerade": {"flags": "fully-random"}}));
        assert_eq!(exp_on[..4], exp_off[..4]);
        assert_ne!(exp_on, exp_off);
    }
}
