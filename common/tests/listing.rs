//! The in-process ruleset read (`weft_common::firewall::listing`) against the tools, in real
//! network namespaces (root; named `wtls…`, deleted on drop): iptables-nft's tables rendered
//! line for line as `iptables-save`/`ip6tables-save` print them, for the rule shapes flannel,
//! the CNI plugins and operators write, and native nftables tables with their hooks and policies
//! as `nft -j list ruleset` lists them.

#![allow(clippy::unwrap_used)]

use weft_common::firewall::listing::Listing;
use weft_common::netns::NetNs;
use weft_lab::ns::{require_root, Netns};

fn read(ns: &Netns) -> Listing {
    NetNs::open(ns.path()).unwrap().run(Listing::read).unwrap().unwrap()
}

/// The tool's dump without its `#` comment lines.
fn saved(ns: &Netns, tool: &str) -> String {
    saved_argv(ns, &[tool])
}

fn saved_argv(ns: &Netns, argv: &[&str]) -> String {
    let out = ns.exec(argv).expect_ok().stdout;
    out.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect()
}

const IPV4_RULES: &str = r#"*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:FLANNEL-FWD - [0:0]
:FLANNEL-FWD-END - [0:0]
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -s 10.9.8.7/32 -d 10.244.3.0/24 -j DROP
-A FORWARD -i cni+ ! -o eth0 -p icmp -j REJECT --reject-with icmp-port-unreachable
-A FORWARD -s 10.0.0.0/13 -p tcp -m tcp --dport 8080 -j REJECT --reject-with tcp-reset
-A FORWARD -i eth0 -p udp -m udp --sport 53 -j ACCEPT
-A FORWARD -m mark --mark 0x1 -j ACCEPT
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD ! -s 10.244.0.0/17 -g FLANNEL-FWD-END
-A FLANNEL-FWD -m comment --comment plain_word-1 -j RETURN
-A FLANNEL-FWD-END -m limit --limit 3/min -j LOG
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-0123456789abcdef01234567 - [0:0]
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A POSTROUTING -s 10.244.1.2/32 -m comment --comment "name: \"cbr0\" id: \"abc\"" -j CNI-0123456789abcdef01234567
-A CNI-0123456789abcdef01234567 -d 10.244.1.0/24 -m comment --comment "name: \"cbr0\" id: \"abc\"" -j ACCEPT
-A CNI-0123456789abcdef01234567 ! -d 224.0.0.0/4 -m comment --comment "name: \"cbr0\" id: \"abc\"" -j MASQUERADE
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG -s 10.245.0.0/16 -p tcp -j MASQUERADE --to-ports 1024-2048 --random
COMMIT
"#;

const IPV6_RULES: &str = r#"*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -s fd00:5::/56 -m comment --comment "flanneld forward" -j ACCEPT
-A FORWARD -s fd00:5:0:1::2/128 -d fd00:5:0:2::3/128 -j DROP
-A FORWARD -i flannel-v6.1 -p ipv6-icmp -j REJECT --reject-with icmp6-adm-prohibited
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s fd00:5::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
"#;

/// Every line `iptables-save` prints, in each table, and in the same order within a chain.
#[test]
fn iptables_nft_tables_read_back_as_iptables_save_prints_them() {
    require_root();
    let ns = Netns::unique("wtls");
    ns.exec_with(&["iptables-restore"], &[], IPV4_RULES.as_bytes()).expect_ok();
    ns.exec_with(&["ip6tables-restore"], &[], IPV6_RULES.as_bytes()).expect_ok();
    let listing = read(&ns);
    for (v6, tool) in [(false, "iptables-save"), (true, "ip6tables-save")] {
        let ours = listing.iptables_save(v6, None);
        // A match weft does not read (`limit`) is named without its options.
        let theirs = saved(&ns, tool).replace("-m limit --limit 3/min -j LOG", "-m limit -j LOG");
        assert_same_tables(&ours, &theirs);
        // One table alone, as `-t nat` gives it.
        let nat = listing.iptables_save(v6, Some("nat"));
        assert!(nat.starts_with("*nat\n") && !nat.contains("*filter"), "{nat}");
    }
    // No iptables tables at all: empty, as the tools print nothing; `-t <table>` prints the
    // table's built-in chains all the same.
    let empty = Netns::unique("wtls");
    let listing = read(&empty);
    assert_eq!(listing.iptables_save(false, None), "");
    assert_eq!(listing.tables, Vec::new());
    assert_eq!(
        listing.iptables_save(true, Some("filter")),
        saved_argv(&empty, &["ip6tables-save", "-t", "filter"])
    );
    assert_eq!(
        listing.iptables_save(false, Some("nat")),
        saved_argv(&empty, &["iptables-save", "-t", "nat"])
    );
    // `iptables -A` creates only the chains it needs; the tool still shows every built-in one.
    empty.exec(&["iptables", "-P", "FORWARD", "DROP"]).expect_ok();
    empty
        .exec(&["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.1.0.0/16", "-j", "MASQUERADE"])
        .expect_ok();
    let listing = read(&empty);
    assert_eq!(listing.iptables_save(false, None), saved(&empty, "iptables-save"));
}

/// Same tables, same chain declarations, and for every chain the same `-A` lines in order.
fn assert_same_tables(ours: &str, theirs: &str) {
    let tables =
        |t: &str| -> Vec<String> { t.lines().filter(|l| l.starts_with('*')).map(String::from).collect() };
    assert_eq!(tables(ours), tables(theirs), "ours:\n{ours}\ntheirs:\n{theirs}");
    let sorted = |t: &str, p: &str| -> Vec<String> {
        let mut v: Vec<String> = t.lines().filter(|l| l.starts_with(p)).map(String::from).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(ours, ":"), sorted(theirs, ":"), "ours:\n{ours}\ntheirs:\n{theirs}");
    let chains: Vec<String> = theirs
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect();
    for chain in chains {
        let lines = |t: &str| -> Vec<String> {
            t.lines().filter(|l| l.starts_with(&format!("-A {chain} "))).map(String::from).collect()
        };
        assert_eq!(lines(ours), lines(theirs), "chain {chain}");
    }
}

/// Native tables (`nft -f`): families, hooks, priorities and policies as `nft -j list ruleset`
/// gives them, and each rule's matches and verdict in nft's JSON vocabulary.
#[test]
fn native_tables_read_back_in_nft_json_shape() {
    require_root();
    let ns = Netns::unique("wtls");
    let script = r#"
table inet wtls_filter {
    chain fwd_chk {
        type filter hook forward priority 10; policy drop;
        iifname "cni*" oifname != "eth0" accept
        ip saddr 10.244.0.0/16 ip daddr 10.9.0.1 drop
        ip6 daddr fd00:5:0:2::/64 counter drop
        ct state established,related accept
        meta mark 0x00000010 jump more
        ip daddr { 10.1.0.1, 10.1.0.2 } drop
    }
    chain more {
        tcp dport 22 return
    }
}
table ip wtls_nat {
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade comment "pods out"
    }
}
"#;
    ns.exec_with(&["nft", "-f", "-"], &[], script.as_bytes()).expect_ok();
    let ours = read(&ns).nft_json(true);
    let theirs: serde_json::Value =
        serde_json::from_str(&ns.exec(&["nft", "-j", "list", "ruleset"]).expect_ok().stdout).unwrap();
    let pick = |v: &serde_json::Value, kind: &str, fields: &[&str]| -> Vec<Vec<serde_json::Value>> {
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i.get(kind))
            .map(|o| fields.iter().map(|f| o.get(*f).cloned().unwrap_or_default()).collect())
            .collect()
    };
    let chain_fields = ["family", "table", "name", "type", "hook", "prio", "policy"];
    assert_eq!(pick(&ours, "chain", &chain_fields), pick(&theirs, "chain", &chain_fields));
    let rule_fields = ["family", "table", "chain", "comment"];
    assert_eq!(pick(&ours, "rule", &rule_fields), pick(&theirs, "rule", &rule_fields));
    // The matches weft evaluates read as nft writes them; the verdicts too.
    let exprs = |v: &serde_json::Value| -> Vec<String> {
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i.get("rule"))
            .map(|r| r["expr"].to_string())
            .collect()
    };
    let ours = exprs(&ours);
    let theirs = exprs(&theirs);
    assert_eq!(ours.len(), 8);
    assert_eq!(ours[0], theirs[0], "iifname/oifname");
    assert_eq!(ours[1], theirs[1], "ip saddr prefix, ip daddr address");
    assert!(ours[2].contains(r#"{"match":{"left":{"payload":{"field":"daddr","protocol":"ip6"}},"op":"==","right":{"prefix":{"addr":"fd00:5:0:2::","len":64}}}}"#), "{}", ours[2]);
    assert!(ours[2].ends_with(r#"{"counter":null},{"drop":null}]"#), "{}", ours[2]);
    assert!(
        ours[3].contains(r#""ct":{"key":"state"}"#) && ours[3].ends_with(r#"{"accept":null}]"#),
        "{}",
        ours[3]
    );
    assert!(ours[4].contains(r#"{"jump":{"target":"more"}}"#), "{}", ours[4]);
    // A set lookup is a match weft does not read: it is named, not dropped.
    assert!(ours[5].contains(r#"{"lookup":null}"#), "{}", ours[5]);
    assert!(
        ours[6].contains(r#"{"payload":{"field":"dport","protocol":"th"}}"#)
            && ours[6].ends_with(r#"{"return":null}]"#),
        "{}",
        ours[6]
    );
    assert_eq!(ours[7], theirs[7], "masquerade");
}
