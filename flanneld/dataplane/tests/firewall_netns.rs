//! flanneld's firewall rules in a namespace per test (prefixes `wtdp`, `wtfx`, `wtF6`): exact
//! readback with `nft -j list` / `iptables-save` / `ip6tables-save`, drift detection, mode
//! switching, for IPv4 and the IPv6 side. Needs root.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use serde_json::Value;
use weft_dataplane::firewall::{apply_rules, check_drift, FirewallMode, FlannelRules, Ipv6Side};
use weft_lab::ns::{require_root, Netns};

/// Runs `f` on a thread inside `ns`; the tools it starts inherit the namespace.
fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = ns.path();
    std::thread::spawn(move || {
        let target = weft_common::netns::NetNs::open(&path).unwrap();
        let _guard = target.enter().unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn rules(mode: FirewallMode, ip_masq: bool) -> FlannelRules {
    FlannelRules {
        network: "10.5.0.0/16".parse().unwrap(),
        subnet: "10.5.72.0/24".parse().unwrap(),
        ip_masq,
        forward: true,
        fully_random: true,
        mode,
        ipv6: None,
    }
}

/// [`rules`] with the IPv6 side (cluster `fd00:10::/56`, own subnet `fd00:10:0:48::/64`).
fn dual(mode: FirewallMode, ip_masq: bool) -> FlannelRules {
    let side =
        Ipv6Side { network: "fd00:10::/56".parse().unwrap(), subnet: "fd00:10:0:48::/64".parse().unwrap() };
    FlannelRules { ipv6: Some(side), ..rules(mode, ip_masq) }
}

fn apply(ns: &Netns, r: FlannelRules) {
    in_ns(ns, move || apply_rules(&r)).unwrap();
}

fn drift(ns: &Netns, r: FlannelRules) -> bool {
    in_ns(ns, move || check_drift(&r)).unwrap()
}

fn out(ns: &Netns, argv: &[&str]) -> String {
    ns.exec(argv).expect_ok().stdout
}

/// `nft list chain` bodies without the header/footer, trimmed.
fn nft_chain(ns: &Netns, chain: &str) -> Vec<String> {
    nft_chain_of(ns, "ip", "flannel-ipv4", chain)
}

fn nft_chain_of(ns: &Netns, family: &str, table: &str, chain: &str) -> Vec<String> {
    out(ns, &["nft", "list", "chain", family, table, chain])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with("table") && !l.starts_with("chain") && l != "}")
        .collect()
}

fn ipt_lines(ns: &Netns, table: &str, pat: &str) -> Vec<String> {
    save_lines(ns, "iptables-save", table, pat)
}

fn ip6t_lines(ns: &Netns, table: &str, pat: &str) -> Vec<String> {
    save_lines(ns, "ip6tables-save", table, pat)
}

fn save_lines(ns: &Netns, tool: &str, table: &str, pat: &str) -> Vec<String> {
    out(ns, &[tool, "-t", table]).lines().filter(|l| l.contains(pat)).map(str::to_string).collect()
}

/// Upstream's iptables layout (docs/flannel.md §9.1, §9.2) for cluster `c`, own subnet `l`
/// and multicast range `mc`, as `iptables-save`/`ip6tables-save` print the flannel lines of
/// tables `nat` and `filter`.
fn expected_save(c: &str, l: &str, mc: &str) -> (Vec<String>, Vec<String>) {
    let m = "-m comment --comment \"flanneld masq\"";
    let nat = vec![
        ":FLANNEL-POSTRTG - [0:0]".into(),
        format!("-A POSTROUTING {m} -j FLANNEL-POSTRTG"),
        format!("-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {m} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {l} -d {c} {m} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {c} -d {l} {m} -j RETURN"),
        format!("-A FLANNEL-POSTRTG ! -s {c} -d {l} {m} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {c} ! -d {mc} {m} -j MASQUERADE --random-fully"),
        format!("-A FLANNEL-POSTRTG ! -s {c} -d {c} {m} -j MASQUERADE --random-fully"),
    ];
    let f = "-m comment --comment \"flanneld forward\"";
    let filter = vec![
        ":FLANNEL-FWD - [0:0]".into(),
        format!("-A FORWARD {f} -j FLANNEL-FWD"),
        format!("-A FLANNEL-FWD -s {c} {f} -j ACCEPT"),
        format!("-A FLANNEL-FWD -d {c} {f} -j ACCEPT"),
    ];
    (nat, filter)
}

/// The rules of an nft table as `nft -j` lists them: (chain, handle) in order.
fn nft_rules(ns: &Netns, family: &str, table: &str) -> Vec<(String, u64)> {
    let listed: Value =
        serde_json::from_str(&out(ns, &["nft", "-j", "list", "table", family, table])).unwrap();
    listed["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("rule"))
        .map(|r| (r["chain"].as_str().unwrap().to_string(), r["handle"].as_u64().unwrap()))
        .collect()
}

#[test]
fn nftables_rules_read_back_exactly_and_drift_is_detected() {
    require_root();
    let ns = Netns::unique("wtdp");
    let r = rules(FirewallMode::Nftables, true);
    apply(&ns, r.clone());
    assert_eq!(
        nft_chain(&ns, "postrtg"),
        vec![
            "type nat hook postrouting priority srcnat; policy accept;",
            "meta mark 0x00004000 return",
            "ip saddr 10.5.72.0/24 ip daddr 10.5.0.0/16 return",
            "ip saddr 10.5.0.0/16 ip daddr 10.5.72.0/24 return",
            "ip saddr != 10.5.72.0/24 ip daddr 10.5.0.0/16 return",
            "ip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
            "ip saddr != 10.5.0.0/16 ip daddr 10.5.0.0/16 masquerade fully-random",
        ]
    );
    assert_eq!(
        nft_chain(&ns, "forward"),
        vec![
            "type filter hook forward priority filter; policy accept;",
            "ip saddr 10.5.0.0/16 accept",
            "ip daddr 10.5.0.0/16 accept",
        ]
    );
    let table = out(&ns, &["nft", "list", "table", "ip", "flannel-ipv4"]);
    assert!(table.contains("comment \"rules for flannel-ipv4\""), "{table}");
    assert!(out(&ns, &["nft", "list", "tables"]).contains("table ip6 flannel-ipv6"));
    assert!(!drift(&ns, r.clone()));

    // Idempotent: a second apply leaves the same number of rules.
    apply(&ns, r.clone());
    let listed: Value =
        serde_json::from_str(&out(&ns, &["nft", "-j", "list", "table", "ip", "flannel-ipv4"])).unwrap();
    let rule_count =
        listed["nftables"].as_array().unwrap().iter().filter(|i| i.get("rule").is_some()).count();
    assert_eq!(rule_count, 8);

    // A deleted rule is drift; re-applying heals it.
    let handle = listed["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("rule"))
        .find(|r| r["chain"] == "postrtg")
        .map(|r| r["handle"].as_u64().unwrap())
        .unwrap()
        .to_string();
    ns.exec(&["nft", "delete", "rule", "ip", "flannel-ipv4", "postrtg", "handle", &handle]).expect_ok();
    assert!(drift(&ns, r.clone()));
    apply(&ns, r.clone());
    assert!(!drift(&ns, r.clone()));
    ns.exec(&["nft", "flush", "chain", "ip", "flannel-ipv4", "forward"]).expect_ok();
    assert!(drift(&ns, r.clone()));
    ns.exec(&["nft", "delete", "table", "ip", "flannel-ipv4"]).expect_ok();
    assert!(drift(&ns, r.clone()));
    apply(&ns, r.clone());
    assert!(!drift(&ns, r.clone()));

    // Masquerade switched off: the chain goes away in the same transaction.
    let no_masq = rules(FirewallMode::Nftables, false);
    assert!(drift(&ns, no_masq.clone()));
    apply(&ns, no_masq.clone());
    assert!(!out(&ns, &["nft", "list", "table", "ip", "flannel-ipv4"]).contains("postrtg"));
    assert!(!drift(&ns, no_masq));
}

#[test]
fn iptables_rules_read_back_exactly_and_modes_clean_up_each_other() {
    require_root();
    let ns = Netns::unique("wtdp");
    // Start in nftables mode, then switch: the nft tables must go.
    apply(&ns, rules(FirewallMode::Nftables, true));
    let r = rules(FirewallMode::Iptables, true);
    apply(&ns, r.clone());
    assert!(!out(&ns, &["nft", "list", "tables"]).contains("flannel-ipv"), "nft tables removed");
    let (expected_nat, expected_filter) = expected_save("10.5.0.0/16", "10.5.72.0/24", "224.0.0.0/4");
    assert_eq!(ipt_lines(&ns, "nat", "FLANNEL"), expected_nat);
    assert_eq!(ipt_lines(&ns, "filter", "FLANNEL"), expected_filter);
    assert!(!drift(&ns, r.clone()));
    apply(&ns, r.clone());
    assert_eq!(ipt_lines(&ns, "nat", "FLANNEL"), expected_nat, "re-apply is idempotent (one jump)");

    ns.exec(&["iptables", "-t", "nat", "-D", "FLANNEL-POSTRTG", "3"]).expect_ok();
    assert!(drift(&ns, r.clone()));
    apply(&ns, r.clone());
    assert!(!drift(&ns, r.clone()));
    ns.exec(&["iptables", "-t", "filter", "-D", "FORWARD", "1"]).expect_ok();
    assert!(drift(&ns, r.clone()));
    apply(&ns, r.clone());
    assert_eq!(ipt_lines(&ns, "filter", "-A FORWARD").len(), 1);
    assert!(!drift(&ns, r));

    // Back to nftables: the iptables chains and jumps are removed from both tables.
    apply(&ns, rules(FirewallMode::Nftables, true));
    assert_eq!(ipt_lines(&ns, "nat", "FLANNEL"), Vec::<String>::new());
    assert_eq!(ipt_lines(&ns, "filter", "FLANNEL"), Vec::<String>::new());
    assert!(!drift(&ns, rules(FirewallMode::Nftables, true)));
}

/// `--ip-masq-fully-random-disable`: plain masquerade in both modes, read back from the kernel,
/// and switching the setting either way is drift that a re-apply heals.
#[test]
fn fully_random_disabled_gives_plain_masquerade_in_both_modes() {
    require_root();
    let ns = Netns::unique("wtfx");
    let on = rules(FirewallMode::Nftables, true);
    let off = FlannelRules { fully_random: false, ..on.clone() };
    apply(&ns, off.clone());
    let postrtg = nft_chain(&ns, "postrtg");
    assert_eq!(
        postrtg[5..],
        [
            "ip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade",
            "ip saddr != 10.5.0.0/16 ip daddr 10.5.0.0/16 masquerade",
        ],
        "{postrtg:?}"
    );
    assert!(!drift(&ns, off.clone()));
    assert!(drift(&ns, on.clone()), "fully-random wanted but absent");
    apply(&ns, on.clone());
    assert!(nft_chain(&ns, "postrtg")[5].ends_with("masquerade fully-random"));
    assert!(!drift(&ns, on));
    assert!(drift(&ns, off.clone()), "fully-random present but disabled");

    let on = rules(FirewallMode::Iptables, true);
    let off = FlannelRules { fully_random: false, ..on.clone() };
    apply(&ns, off.clone());
    let m = "-m comment --comment \"flanneld masq\"";
    assert_eq!(
        ipt_lines(&ns, "nat", "-j MASQUERADE"),
        vec![
            format!("-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 {m} -j MASQUERADE"),
            format!("-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 {m} -j MASQUERADE"),
        ]
    );
    assert!(!drift(&ns, off.clone()));
    assert!(drift(&ns, on.clone()));
    apply(&ns, on.clone());
    assert_eq!(ipt_lines(&ns, "nat", "--random-fully").len(), 2);
    assert!(!drift(&ns, on));
    assert!(drift(&ns, off));
}

const V6_POSTRTG_NFT: [&str; 7] = [
    "type nat hook postrouting priority srcnat; policy accept;",
    "meta mark 0x00004000 return",
    "ip6 saddr fd00:10:0:48::/64 ip6 daddr fd00:10::/56 return",
    "ip6 saddr fd00:10::/56 ip6 daddr fd00:10:0:48::/64 return",
    "ip6 saddr != fd00:10:0:48::/64 ip6 daddr fd00:10::/56 return",
    "ip6 saddr fd00:10::/56 ip6 daddr != ff00::/8 masquerade fully-random",
    "ip6 saddr != fd00:10::/56 ip6 daddr fd00:10::/56 masquerade fully-random",
];

const V6_FORWARD_NFT: [&str; 3] = [
    "type filter hook forward priority filter; policy accept;",
    "ip6 saddr fd00:10::/56 accept",
    "ip6 daddr fd00:10::/56 accept",
];

/// The IPv6 side in nftables mode: the `flannel-ipv6` table's chains read back exactly, beside
/// the unchanged IPv4 table; re-apply adds nothing; a deleted or flushed IPv6 rule is drift that
/// a re-apply heals; masquerade off deletes the IPv6 `postrtg` chain too.
#[test]
fn nftables_ipv6_rules_read_back_exactly_and_drift_is_detected() {
    require_root();
    let ns = Netns::unique("wtF6");
    let r = dual(FirewallMode::Nftables, true);
    apply(&ns, r.clone());
    assert_eq!(nft_chain_of(&ns, "ip6", "flannel-ipv6", "postrtg"), V6_POSTRTG_NFT);
    assert_eq!(nft_chain_of(&ns, "ip6", "flannel-ipv6", "forward"), V6_FORWARD_NFT);
    let table = out(&ns, &["nft", "list", "table", "ip6", "flannel-ipv6"]);
    assert!(table.contains("comment \"rules for flannel-ipv6\""), "{table}");
    assert_eq!(nft_chain(&ns, "forward")[1], "ip saddr 10.5.0.0/16 accept", "IPv4 side still there");
    assert_eq!(nft_rules(&ns, "ip", "flannel-ipv4").len(), 8);
    assert!(!drift(&ns, r.clone()));

    // Idempotent: a second apply leaves the same rules, no duplicates.
    apply(&ns, r.clone());
    let v6 = nft_rules(&ns, "ip6", "flannel-ipv6");
    assert_eq!(v6.len(), 8, "{v6:?}");
    assert_eq!(nft_chain_of(&ns, "ip6", "flannel-ipv6", "postrtg"), V6_POSTRTG_NFT);
    assert_eq!(nft_rules(&ns, "ip", "flannel-ipv4").len(), 8);
    assert!(!drift(&ns, r.clone()));

    // One deleted IPv6 rule is drift (the IPv4 table is intact); re-applying heals it.
    let (_, handle) = v6.iter().find(|(chain, _)| chain == "postrtg").unwrap().clone();
    ns.exec(&["nft", "delete", "rule", "ip6", "flannel-ipv6", "postrtg", "handle", &handle.to_string()])
        .expect_ok();
    assert!(drift(&ns, r.clone()));
    assert_eq!(nft_rules(&ns, "ip", "flannel-ipv4").len(), 8, "the IPv4 side is intact");
    apply(&ns, r.clone());
    assert!(!drift(&ns, r.clone()));
    assert_eq!(nft_chain_of(&ns, "ip6", "flannel-ipv6", "postrtg"), V6_POSTRTG_NFT);
    ns.exec(&["nft", "flush", "chain", "ip6", "flannel-ipv6", "forward"]).expect_ok();
    assert!(drift(&ns, r.clone()));
    apply(&ns, r.clone());
    assert_eq!(nft_chain_of(&ns, "ip6", "flannel-ipv6", "forward"), V6_FORWARD_NFT);
    assert!(!drift(&ns, r.clone()));

    // Masquerade switched off: the IPv6 postrtg chain goes as well.
    let no_masq = dual(FirewallMode::Nftables, false);
    assert!(drift(&ns, no_masq.clone()));
    apply(&ns, no_masq.clone());
    assert!(!out(&ns, &["nft", "list", "table", "ip6", "flannel-ipv6"]).contains("postrtg"));
    assert_eq!(nft_chain_of(&ns, "ip6", "flannel-ipv6", "forward"), V6_FORWARD_NFT);
    assert!(!drift(&ns, no_masq));
}

/// The IPv6 side in iptables mode: `ip6tables-save` shows upstream's chains and jumps exactly;
/// re-apply keeps one jump and no duplicate rule; a deleted IPv6 rule or jump is drift that a
/// re-apply heals; switching modes either way removes the other mode's IPv6 objects.
#[test]
fn iptables_ipv6_rules_read_back_exactly_and_modes_clean_up_each_other() {
    require_root();
    let ns = Netns::unique("wtF6");
    apply(&ns, dual(FirewallMode::Nftables, true));
    let r = dual(FirewallMode::Iptables, true);
    apply(&ns, r.clone());
    assert!(!out(&ns, &["nft", "list", "tables"]).contains("flannel-ipv"), "nft tables removed");
    let (expected_nat, expected_filter) = expected_save("fd00:10::/56", "fd00:10:0:48::/64", "ff00::/8");
    assert_eq!(ip6t_lines(&ns, "nat", "FLANNEL"), expected_nat);
    assert_eq!(ip6t_lines(&ns, "filter", "FLANNEL"), expected_filter);
    assert_eq!(ipt_lines(&ns, "nat", "FLANNEL").len(), 8, "the IPv4 side is installed too");
    assert!(!drift(&ns, r.clone()));
    apply(&ns, r.clone());
    assert_eq!(ip6t_lines(&ns, "nat", "FLANNEL"), expected_nat, "re-apply is idempotent (one jump)");
    assert_eq!(ip6t_lines(&ns, "filter", "FLANNEL"), expected_filter);

    ns.exec(&["ip6tables", "-t", "nat", "-D", "FLANNEL-POSTRTG", "3"]).expect_ok();
    assert!(drift(&ns, r.clone()));
    assert_eq!(ipt_lines(&ns, "nat", "FLANNEL").len(), 8, "the IPv4 side is intact");
    apply(&ns, r.clone());
    assert_eq!(ip6t_lines(&ns, "nat", "FLANNEL"), expected_nat);
    assert!(!drift(&ns, r.clone()));
    ns.exec(&["ip6tables", "-t", "filter", "-D", "FORWARD", "1"]).expect_ok();
    assert!(drift(&ns, r.clone()));
    apply(&ns, r.clone());
    assert_eq!(ip6t_lines(&ns, "filter", "FLANNEL"), expected_filter);
    assert!(!drift(&ns, r));

    // Back to nftables (even without the IPv6 side): the ip6tables chains and jumps go too.
    apply(&ns, rules(FirewallMode::Nftables, true));
    assert_eq!(ip6t_lines(&ns, "nat", "FLANNEL"), Vec::<String>::new());
    assert_eq!(ip6t_lines(&ns, "filter", "FLANNEL"), Vec::<String>::new());
    assert_eq!(ipt_lines(&ns, "nat", "FLANNEL"), Vec::<String>::new());
}

/// Without the IPv6 side nothing IPv6 is created beyond today's empty `flannel-ipv6` table in
/// nftables mode, and nothing at all in iptables mode.
#[test]
fn without_ipv6_side_no_ipv6_rules_are_created() {
    require_root();
    let ns = Netns::unique("wtF6");
    apply(&ns, rules(FirewallMode::Nftables, true));
    assert_eq!(nft_rules(&ns, "ip6", "flannel-ipv6"), Vec::<(String, u64)>::new());
    let table = out(&ns, &["nft", "list", "table", "ip6", "flannel-ipv6"]);
    assert!(!table.contains("chain"), "{table}");
    apply(&ns, rules(FirewallMode::Iptables, true));
    assert_eq!(ip6t_lines(&ns, "nat", "FLANNEL"), Vec::<String>::new());
    assert_eq!(ip6t_lines(&ns, "filter", "FLANNEL"), Vec::<String>::new());
    assert_eq!(ipt_lines(&ns, "nat", "FLANNEL").len(), 8);
}

/// Dual stack switched off: the next apply removes the IPv6 chains an earlier run made (they
/// are flanneld's), a drift check sees them while they are there, and the IPv4 side stays.
#[test]
fn ipv6_side_switched_off_removes_the_ipv6_chains_in_both_modes() {
    require_root();
    let ns = Netns::unique("wtF6");
    apply(&ns, dual(FirewallMode::Nftables, true));
    assert_eq!(nft_rules(&ns, "ip6", "flannel-ipv6").len(), 8);
    assert!(drift(&ns, rules(FirewallMode::Nftables, true)), "leftover IPv6 chains are drift");
    apply(&ns, rules(FirewallMode::Nftables, true));
    let table = out(&ns, &["nft", "list", "table", "ip6", "flannel-ipv6"]);
    assert!(!table.contains("chain"), "{table}");
    assert_eq!(nft_rules(&ns, "ip", "flannel-ipv4").len(), 8, "the IPv4 side stays");
    assert!(!drift(&ns, rules(FirewallMode::Nftables, true)));

    apply(&ns, dual(FirewallMode::Iptables, true));
    assert!(!ip6t_lines(&ns, "nat", "FLANNEL").is_empty());
    assert!(drift(&ns, rules(FirewallMode::Iptables, true)), "leftover ip6tables chains are drift");
    apply(&ns, rules(FirewallMode::Iptables, true));
    assert_eq!(ip6t_lines(&ns, "nat", "FLANNEL"), Vec::<String>::new());
    assert_eq!(ip6t_lines(&ns, "filter", "FLANNEL"), Vec::<String>::new());
    assert_eq!(ipt_lines(&ns, "nat", "FLANNEL").len(), 8, "the IPv4 side stays");
    assert!(!drift(&ns, rules(FirewallMode::Iptables, true)));
}
