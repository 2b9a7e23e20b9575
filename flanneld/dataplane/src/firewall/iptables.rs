//! iptables layout (§9.1–9.3): chain `FLANNEL-POSTRTG` in `nat` jumped to from POSTROUTING,
//! chain `FLANNEL-FWD` in `filter` jumped to from FORWARD, with upstream's comments. A family's
//! tables are read with one `iptables-save` and written with one `iptables-restore --noflush
//! --wait`; declaring the chain in the payload flushes it, so the chain is rebuilt in order
//! atomically. Rules are kept in `iptables-save` form so the same strings serve for writing and
//! for the drift check. The IPv6 side is the same chains and rules written with
//! `ip6tables-save`/`ip6tables-restore` (§9.1).

use ipnetwork::IpNetwork;

use weft_common::process::{self, ToolError};

use super::{multicast, FirewallError, FlannelRules, Nets};

const MASQ_COMMENT: &str = "-m comment --comment \"flanneld masq\"";
const FWD_COMMENT: &str = "-m comment --comment \"flanneld forward\"";

/// One flannel chain and where it hangs.
struct Chain {
    table: &'static str,
    builtin: &'static str,
    name: &'static str,
    comment: &'static str,
}

const POSTRTG: Chain =
    Chain { table: "nat", builtin: "POSTROUTING", name: "FLANNEL-POSTRTG", comment: MASQ_COMMENT };
const FWD: Chain = Chain { table: "filter", builtin: "FORWARD", name: "FLANNEL-FWD", comment: FWD_COMMENT };

impl Chain {
    fn jump(&self) -> String {
        format!("-A {} {} -j {}", self.builtin, self.comment, self.name)
    }

    /// Jump rules to this chain in any form (also from older or foreign writers).
    fn jumps<'a>(&self, saved: &'a str) -> Vec<&'a str> {
        let prefix = format!("-A {} ", self.builtin);
        let suffix = format!("-j {}", self.name);
        saved.lines().filter(|l| l.starts_with(&prefix) && l.trim_end().ends_with(&suffix)).collect()
    }

    fn exists(&self, saved: &str) -> bool {
        let decl = format!(":{} ", self.name);
        saved.lines().any(|l| l.starts_with(&decl))
    }

    fn rules<'a>(&self, saved: &'a str) -> Vec<&'a str> {
        let prefix = format!("-A {} ", self.name);
        saved.lines().filter(|l| l.starts_with(&prefix)).map(str::trim_end).collect()
    }
}

/// The save/restore pair of one address family.
#[derive(Debug, Clone, Copy)]
struct Tools {
    save: &'static str,
    restore: &'static str,
}

const IPV4: Tools = Tools { save: "iptables-save", restore: "iptables-restore" };
const IPV6: Tools = Tools { save: "ip6tables-save", restore: "ip6tables-restore" };

/// Upstream's masquerade rules (§9.1) in `iptables-save` form, for `c`'s family (the multicast
/// exclusion is `224.0.0.0/4` or `ff00::/8`); the MASQUERADE targets carry `--random-fully`
/// unless `fully_random` is off (`--ip-masq-fully-random-disable`).
fn masq_rules(c: impl Into<IpNetwork>, l: impl Into<IpNetwork>, fully_random: bool) -> Vec<String> {
    let (c, l) = (c.into(), l.into());
    let mc = multicast(c);
    let ch = POSTRTG.name;
    let m = MASQ_COMMENT;
    let masq = if fully_random { "MASQUERADE --random-fully" } else { "MASQUERADE" };
    vec![
        format!("-A {ch} -m mark --mark 0x4000/0x4000 {m} -j RETURN"),
        format!("-A {ch} -s {l} -d {c} {m} -j RETURN"),
        format!("-A {ch} -s {c} -d {l} {m} -j RETURN"),
        format!("-A {ch} ! -s {c} -d {l} {m} -j RETURN"),
        format!("-A {ch} -s {c} ! -d {mc} {m} -j {masq}"),
        format!("-A {ch} ! -s {c} -d {c} {m} -j {masq}"),
    ]
}

/// Upstream's forward rules (§9.2).
fn fwd_rules(c: IpNetwork) -> Vec<String> {
    let ch = FWD.name;
    vec![format!("-A {ch} -s {c} {FWD_COMMENT} -j ACCEPT"), format!("-A {ch} -d {c} {FWD_COMMENT} -j ACCEPT")]
}

/// Every table of one family, as one `iptables-save` prints them: one process for both of our
/// tables (each tool run costs milliseconds, and `apply` is on the way to ready).
fn save(tools: Tools) -> Result<String, ToolError> {
    process::run(tools.save, &[], "")
}

/// The section of `name` in a full `iptables-save` output, from its `*name` line to its
/// `COMMIT`; empty when the table is not there (then nothing of ours is in it). Chains such as
/// POSTROUTING exist in several tables, so every lookup is confined to its table.
fn table<'a>(saved: &'a str, name: &str) -> &'a str {
    let header = format!("*{name}");
    let mut offset = 0;
    let mut start = None;
    for line in saved.split_inclusive('\n') {
        match start {
            None if line.trim_end() == header => start = Some(offset),
            Some(s) if line.trim_end() == "COMMIT" => return &saved[s..offset + line.len()],
            _ => {}
        }
        offset += line.len();
    }
    start.map_or("", |s| &saved[s..])
}

/// The payloads of `chains` (each against its table in `saved`), as one restore input.
fn payloads<'c>(
    saved: &str,
    chains: impl IntoIterator<Item = (&'c Chain, bool, &'c [String])>,
) -> Option<String> {
    let p: String = chains
        .into_iter()
        .filter_map(|(chain, want, rules)| payload(chain, table(saved, chain.table), want, rules))
        .collect();
    (!p.is_empty()).then_some(p)
}

fn restore(tools: Tools, payload: &str) -> Result<(), FirewallError> {
    process::run(tools.restore, &["--noflush", "--wait"], payload)?;
    Ok(())
}

/// The restore payload that makes `chain` hold exactly `rules` with one jump to it (`want`), or
/// removes chain and jumps (`!want`); `None` when nothing is to be done.
fn payload(chain: &Chain, saved: &str, want: bool, rules: &[String]) -> Option<String> {
    let jumps = chain.jumps(saved);
    let mut p = format!("*{}\n", chain.table);
    if want {
        // The declaration creates the chain or flushes it.
        p.push_str(&format!(":{} - [0:0]\n", chain.name));
        let jump = chain.jump();
        if jumps != [jump.as_str()] {
            for j in &jumps {
                p.push_str(&format!("-D{}\n", j.trim_start_matches("-A")));
            }
            p.push_str(&format!("{jump}\n"));
        }
        for r in rules {
            p.push_str(&format!("{r}\n"));
        }
    } else {
        if jumps.is_empty() && !chain.exists(saved) {
            return None;
        }
        for j in &jumps {
            p.push_str(&format!("-D{}\n", j.trim_start_matches("-A")));
        }
        if chain.exists(saved) {
            p.push_str(&format!(":{} - [0:0]\n-X {}\n", chain.name, chain.name));
        }
    }
    p.push_str("COMMIT\n");
    Some(p)
}

/// Each chain of one family with whether it is wanted and its rules.
fn wanted(r: &FlannelRules, n: Nets) -> [(&'static Chain, bool, Vec<String>); 2] {
    [(&POSTRTG, r.ip_masq, masq_rules(n.c, n.l, r.fully_random)), (&FWD, r.forward, fwd_rules(n.c))]
}

/// The families `r` programs with their tools: IPv4 always, IPv6 when given.
fn families(r: &FlannelRules) -> Vec<(Tools, Nets)> {
    std::iter::once((IPV4, r.v4())).chain(r.v6().map(|n| (IPV6, n))).collect()
}

pub(super) fn apply(r: &FlannelRules) -> Result<(), FirewallError> {
    for (tools, n) in families(r) {
        let saved = save(tools)?;
        let chains = wanted(r, n);
        if let Some(p) = payloads(&saved, chains.iter().map(|(c, want, rules)| (*c, *want, rules.as_slice())))
        {
            restore(tools, &p)?;
        }
    }
    if r.v6().is_none() {
        // Dual stack switched off: the IPv6 chains an earlier run made are flanneld's and go.
        remove_family(IPV6)?;
    }
    Ok(())
}

/// Removes both flannel chains and their jumps of both families (nftables mode).
pub(super) fn remove_all() -> Result<(), FirewallError> {
    remove_family(IPV4)?;
    remove_family(IPV6)
}

/// Removes both flannel chains and their jumps of one family. Without the family's tools there
/// is nothing we could remove there, which is not an error.
fn remove_family(tools: Tools) -> Result<(), FirewallError> {
    let saved = match save(tools) {
        Err(e) if e.is_not_found() => return Ok(()),
        other => other?,
    };
    if let Some(p) = payloads(&saved, [&POSTRTG, &FWD].map(|c| (c, false, &[][..]))) {
        restore(tools, &p)?;
    }
    Ok(())
}

/// True when one of `tools`' flannel chains or jumps is still there.
fn family_left(tools: Tools) -> Result<bool, FirewallError> {
    let saved = match save(tools) {
        Err(e) if e.is_not_found() => return Ok(false),
        other => other?,
    };
    Ok([&POSTRTG, &FWD].iter().any(|chain| {
        let t = table(&saved, chain.table);
        chain.exists(t) || !chain.jumps(t).is_empty()
    }))
}

pub(super) fn drift(r: &FlannelRules) -> Result<bool, FirewallError> {
    for (tools, n) in families(r) {
        let saved = save(tools)?;
        for (chain, want, rules) in wanted(r, n) {
            let t = table(&saved, chain.table);
            let ok = if want {
                let jump = chain.jump();
                chain.exists(t) && chain.jumps(t) == [jump.as_str()] && chain.rules(t) == rules
            } else {
                !chain.exists(t) && chain.jumps(t).is_empty()
            };
            if !ok {
                return Ok(true);
            }
        }
    }
    if r.v6().is_none() {
        return family_left(IPV6);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnetwork::{Ipv4Network, Ipv6Network};

    const SAVED: &str = "*nat\n:POSTROUTING ACCEPT [0:0]\n:FLANNEL-POSTRTG - [0:0]\n\
        -A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n\
        -A POSTROUTING -s 10.0.0.0/8 -j FLANNEL-POSTRTG\n\
        -A FLANNEL-POSTRTG -j RETURN\nCOMMIT\n";

    fn nets() -> (Ipv4Network, Ipv4Network) {
        ("10.5.0.0/16".parse().unwrap(), "10.5.72.0/24".parse().unwrap())
    }

    #[test]
    fn fresh_payload_declares_chain_adds_jump_and_rules() {
        let (c, l) = nets();
        let p = payload(&POSTRTG, "*nat\nCOMMIT\n", true, &masq_rules(c, l, true)).unwrap();
        assert!(p.starts_with("*nat\n:FLANNEL-POSTRTG - [0:0]\n-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n"));
        assert!(p.contains("-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.72.0/24 -m comment --comment \"flanneld masq\" -j RETURN\n"));
        assert!(p.ends_with("COMMIT\n"));
    }

    #[test]
    fn duplicate_or_foreign_jumps_are_replaced_by_one() {
        let (c, l) = nets();
        let p = payload(&POSTRTG, SAVED, true, &masq_rules(c, l, true)).unwrap();
        assert!(p.contains("-D POSTROUTING -s 10.0.0.0/8 -j FLANNEL-POSTRTG\n"));
        assert!(p.contains("-D POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n"));
        assert_eq!(p.matches("-A POSTROUTING").count(), 1);
    }

    #[test]
    fn one_save_and_one_restore_per_family_each_chain_in_its_own_table() {
        let saved = "*mangle\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j FLANNEL-POSTRTG\nCOMMIT\n\
            *nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:FORWARD ACCEPT [0:0]\n:FLANNEL-FWD - [0:0]\nCOMMIT\n";
        assert_eq!(table(saved, "nat"), "*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n");
        assert_eq!(table(saved, "raw"), "");
        // mangle's look-alike line is not a jump of ours.
        assert!(POSTRTG.jumps(table(saved, "nat")).is_empty());
        let removal = payloads(saved, [&POSTRTG, &FWD].map(|c| (c, false, &[][..]))).unwrap();
        assert_eq!(removal, "*filter\n:FLANNEL-FWD - [0:0]\n-X FLANNEL-FWD\nCOMMIT\n");
        assert_eq!(payloads("*nat\nCOMMIT\n", [&POSTRTG, &FWD].map(|c| (c, false, &[][..]))), None);
        let (c, l) = nets();
        let (masq, fwd) = (masq_rules(c, l, true), fwd_rules(c.into()));
        let both =
            payloads(saved, [(&POSTRTG, true, masq.as_slice()), (&FWD, true, fwd.as_slice())]).unwrap();
        assert!(both.starts_with("*nat\n:FLANNEL-POSTRTG - [0:0]\n"), "{both}");
        assert!(
            both.contains("COMMIT\n*filter\n:FLANNEL-FWD - [0:0]\n") && both.ends_with("COMMIT\n"),
            "{both}"
        );
        // A section without its COMMIT (cut short) runs to the end.
        assert_eq!(table("*nat\n-A X\n", "nat"), "*nat\n-A X\n");
    }

    #[test]
    fn removal_payload_and_nothing_when_absent() {
        let p = payload(&POSTRTG, SAVED, false, &[]).unwrap();
        assert!(p.contains(":FLANNEL-POSTRTG - [0:0]\n-X FLANNEL-POSTRTG\n"));
        assert_eq!(payload(&FWD, "*filter\nCOMMIT\n", false, &[]), None);
    }

    #[test]
    fn masquerade_targets_follow_fully_random() {
        let (c, l) = nets();
        let m = "-m comment --comment \"flanneld masq\"";
        let on = masq_rules(c, l, true);
        assert_eq!(
            on[4],
            format!("-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 {m} -j MASQUERADE --random-fully")
        );
        assert_eq!(
            on[5],
            format!("-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 {m} -j MASQUERADE --random-fully")
        );
        let off = masq_rules(c, l, false);
        assert_eq!(off[4], format!("-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 {m} -j MASQUERADE"));
        assert_eq!(off[5], format!("-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 {m} -j MASQUERADE"));
        // Only the two MASQUERADE rules differ; the RETURN rules are the same.
        assert_eq!(on[..4], off[..4]);
        assert_eq!(on.len(), 6);
        assert!(!off.iter().any(|r| r.contains("random")));
        let p = payload(&POSTRTG, "*nat\nCOMMIT\n", true, &off).unwrap();
        assert!(!p.contains("--random-fully"), "{p}");
        assert_eq!(p.matches("-j MASQUERADE\n").count(), 2, "{p}");
    }

    #[test]
    fn ipv6_rules_are_upstreams_with_ff00() {
        let c: Ipv6Network = "fd00:10::/56".parse().unwrap();
        let l: Ipv6Network = "fd00:10:0:48::/64".parse().unwrap();
        let m = "-m comment --comment \"flanneld masq\"";
        let ch = "-A FLANNEL-POSTRTG";
        assert_eq!(
            masq_rules(c, l, true),
            vec![
                format!("{ch} -m mark --mark 0x4000/0x4000 {m} -j RETURN"),
                format!("{ch} -s fd00:10:0:48::/64 -d fd00:10::/56 {m} -j RETURN"),
                format!("{ch} -s fd00:10::/56 -d fd00:10:0:48::/64 {m} -j RETURN"),
                format!("{ch} ! -s fd00:10::/56 -d fd00:10:0:48::/64 {m} -j RETURN"),
                format!("{ch} -s fd00:10::/56 ! -d ff00::/8 {m} -j MASQUERADE --random-fully"),
                format!("{ch} ! -s fd00:10::/56 -d fd00:10::/56 {m} -j MASQUERADE --random-fully"),
            ]
        );
        let f = "-m comment --comment \"flanneld forward\"";
        assert_eq!(
            fwd_rules(c.into()),
            vec![
                format!("-A FLANNEL-FWD -s fd00:10::/56 {f} -j ACCEPT"),
                format!("-A FLANNEL-FWD -d fd00:10::/56 {f} -j ACCEPT")
            ]
        );
    }

    #[test]
    fn ipv6_side_adds_the_ip6tables_family() {
        let v4 = FlannelRules {
            network: "10.5.0.0/16".parse().unwrap(),
            subnet: "10.5.72.0/24".parse().unwrap(),
            ip_masq: true,
            forward: true,
            fully_random: true,
            mode: crate::firewall::FirewallMode::Iptables,
            ipv6: None,
        };
        let fams = families(&v4);
        assert_eq!(fams.len(), 1);
        assert_eq!(fams[0].0.save, "iptables-save");
        let side = crate::firewall::Ipv6Side {
            network: "fd00:10::/56".parse().unwrap(),
            subnet: "fd00:10:0:48::1/64".parse().unwrap(),
        };
        let dual = FlannelRules { ipv6: Some(side), ..v4 };
        let fams = families(&dual);
        assert_eq!(fams.len(), 2);
        assert_eq!((fams[1].0.save, fams[1].0.restore), ("ip6tables-save", "ip6tables-restore"));
        // Host bits of the own subnet are cleared, as ip6tables-save prints it.
        assert_eq!(fams[1].1.l.to_string(), "fd00:10:0:48::/64");
    }
}
