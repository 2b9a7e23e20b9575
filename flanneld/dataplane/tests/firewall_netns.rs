//! flanneld's firewall rules in a namespace per test (prefix `wtdp`): exact readback with
//! `nft -j list` / `iptables-save`, drift detection, mode switching. Needs root.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use serde_json::Value;
use weft_dataplane::firewall::{apply_rules, check_drift, FirewallMode, FlannelRules};
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
    }
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
    out(ns, &["nft", "list", "chain", "ip", "flannel-ipv4", chain])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with("table") && !l.starts_with("chain") && l != "}")
        .collect()
}

fn ipt_lines(ns: &Netns, table: &str, pat: &str) -> Vec<String> {
    out(ns, &["iptables-save", "-t", table]).lines().filter(|l| l.contains(pat)).map(str::to_string).collect()
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
    let m = "-m comment --comment \"flanneld masq\"";
    let expected_nat: Vec<String> = vec![
        ":FLANNEL-POSTRTG - [0:0]".into(),
        format!("-A POSTROUTING {m} -j FLANNEL-POSTRTG"),
        format!("-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {m} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s 10.5.72.0/24 -d 10.5.0.0/16 {m} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s 10.5.0.0/16 -d 10.5.72.0/24 {m} -j RETURN"),
        format!("-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.72.0/24 {m} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 {m} -j MASQUERADE --random-fully"),
        format!("-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 {m} -j MASQUERADE --random-fully"),
    ];
    assert_eq!(ipt_lines(&ns, "nat", "FLANNEL"), expected_nat);
    let f = "-m comment --comment \"flanneld forward\"";
    assert_eq!(
        ipt_lines(&ns, "filter", "FLANNEL"),
        vec![
            ":FLANNEL-FWD - [0:0]".to_string(),
            format!("-A FORWARD {f} -j FLANNEL-FWD"),
            format!("-A FLANNEL-FWD -s 10.5.0.0/16 {f} -j ACCEPT"),
            format!("-A FLANNEL-FWD -d 10.5.0.0/16 {f} -j ACCEPT"),
        ]
    );
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
