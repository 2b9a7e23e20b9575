//! `weft`'s in-process firewall read gives the same verdicts as reading with the tools
//! (`iptables-save`, `ip6tables-save`, `nft -j list ruleset`), in a real network namespace
//! (root; `wtFR…`, deleted on drop): for a ruleset with flanneld's and the bridge plugin's
//! chains, operator rules of every shape weft evaluates and some it does not (conntrack, limit,
//! set lookups), iptables-nft and native nftables tables of both families, every packet of a
//! grid of sources, destinations and interfaces gets the same FORWARD and POSTROUTING verdict,
//! the same deciding rule (or none) and the same number of skipped rules.

#![allow(clippy::unwrap_used)]

use weft_cli::firewall::{Packet, Ruleset};
use weft_common::netns::NetNs;
use weft_lab::ns::{require_root, Netns};

const IPV4: &str = r#"*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:FLANNEL-FWD - [0:0]
:OPS - [0:0]
:OPS-END - [0:0]
-A FORWARD -j OPS
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A OPS -s 10.244.1.7/32 -d 10.244.2.0/24 -j DROP
-A OPS -i cni+ -o eth9 -j REJECT --reject-with icmp-host-prohibited
-A OPS -p tcp -m tcp --dport 22 -j DROP
-A OPS -m limit --limit 1/sec -j LOG
-A OPS ! -s 10.244.0.0/16 -g OPS-END
-A OPS-END -d 198.18.0.0/15 -j ACCEPT
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
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
COMMIT
"#;

const IPV6: &str = r#"*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -s fd00:5:0:1::7/128 -d fd00:5:0:2::/64 -j DROP
-A FORWARD -s fd00:5::/56 -m comment --comment "flanneld forward" -j ACCEPT
-A FORWARD -d fd00:5::/56 -m comment --comment "flanneld forward" -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s fd00:5:0:1::/64 -d fd00:5::/56 -j RETURN
-A POSTROUTING -s fd00:5::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
"#;

const NFT: &str = r#"
table inet wtfr_guard {
    chain forward_chk {
        type filter hook forward priority 10; policy accept;
        iifname "flannel*" ip saddr 10.244.3.0/24 drop
        ip6 daddr fd00:5:0:3::/64 drop
        ip daddr { 10.244.2.9, 10.244.2.10 } drop
        oifname "eth9" jump more
    }
    chain more {
        ip daddr 198.18.0.9 reject
    }
}
table ip wtfr_nat {
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 10.250.0.0/16 oifname "eth0" masquerade
    }
}
"#;

#[test]
fn in_process_read_walks_like_the_tools() {
    require_root();
    let ns = Netns::unique("wtFR");
    ns.exec_with(&["iptables-restore"], &[], IPV4.as_bytes()).expect_ok();
    ns.exec_with(&["ip6tables-restore"], &[], IPV6.as_bytes()).expect_ok();
    ns.exec_with(&["nft", "-f", "-"], &[], NFT.as_bytes()).expect_ok();
    let netns = NetNs::open(ns.path()).unwrap();
    let ours = netns.run(Ruleset::read).unwrap();
    let tools = netns.run(|| Ruleset::read_with_tools(true)).unwrap();
    assert!(ours.filter.is_some() && ours.nat6.is_some() && ours.nft.is_some(), "{ours:?}");

    let v4 = ["10.244.1.2", "10.244.1.7", "10.244.3.4", "10.250.1.1", "198.18.0.9", "192.0.2.1"];
    let v4_dst = ["10.244.2.3", "10.244.2.9", "198.18.0.9", "198.18.0.10", "224.0.0.5", "192.0.2.7"];
    let v6 = ["fd00:5:0:1::2", "fd00:5:0:1::7", "2001:db8::1"];
    let v6_dst = ["fd00:5:0:2::3", "fd00:5:0:3::3", "2001:db8::9", "ff02::1"];
    let ifaces = [None, Some("cni0"), Some("flannel.1"), Some("eth0"), Some("eth9")];
    let mut checked = 0;
    let pairs = v4.iter().flat_map(|s| v4_dst.iter().map(move |d| (*s, *d)));
    let pairs6 = v6.iter().flat_map(|s| v6_dst.iter().map(move |d| (*s, *d)));
    for (src, dst) in pairs.chain(pairs6) {
        for iif in ifaces {
            for oif in ifaces {
                let p = Packet { src: src.parse().unwrap(), dst: dst.parse().unwrap(), iif, oif };
                for (hook, a, b) in [
                    ("forward", ours.forward(&p), tools.forward(&p)),
                    ("postrouting", ours.postrouting(&p), tools.postrouting(&p)),
                ] {
                    let what = format!("{hook} {src} -> {dst} iif {iif:?} oif {oif:?}");
                    assert_eq!(a.verdict, b.verdict, "{what}: {a:?} / {b:?}");
                    assert_eq!(a.rule.is_some(), b.rule.is_some(), "{what}: {a:?} / {b:?}");
                    assert_eq!(a.skipped.len(), b.skipped.len(), "{what}: {a:?} / {b:?}");
                    // iptables' deciding rules read the same, word for word.
                    if let (Some(x), Some(y)) = (&a.rule, &b.rule) {
                        if x.starts_with("-A ") {
                            assert_eq!(x, y, "{what}");
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, (36 + 12) * 25 * 2);

    // The grid holds every kind of answer, not only the default.
    let pkt = |src: &str, dst: &str, iif, oif| Packet {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        iif,
        oif,
    };
    let fwd = |p: &Packet| (ours.forward(p).verdict, ours.forward(p).rule.unwrap_or_default());
    let (v, rule) = fwd(&pkt("10.244.1.7", "10.244.2.3", Some("cni0"), Some("flannel.1")));
    assert_eq!((v.as_str(), rule.as_str()), ("DROP", "-A OPS -s 10.244.1.7/32 -d 10.244.2.0/24 -j DROP"));
    let (v, rule) = fwd(&pkt("10.244.1.2", "10.244.2.3", Some("cni0"), Some("eth9")));
    assert_eq!(
        (v.as_str(), rule.as_str()),
        ("REJECT", "-A OPS -i cni+ -o eth9 -j REJECT --reject-with icmp-host-prohibited")
    );
    let (v, rule) = fwd(&pkt("10.244.3.4", "10.244.1.2", Some("flannel.1"), Some("cni0")));
    assert!(v == "DROP" && rule.starts_with("inet wtfr_guard forward_chk"), "{v} {rule}");
    let (v, _) = fwd(&pkt("192.0.2.1", "192.0.2.7", Some("eth0"), Some("eth0")));
    assert_eq!(v, "policy DROP");
    assert_eq!(fwd(&pkt("10.244.1.2", "10.244.2.3", Some("cni0"), Some("flannel.1"))).0, "ACCEPT");
    let out = pkt("10.244.1.2", "198.18.0.10", None, Some("eth0"));
    assert_eq!(ours.postrouting(&out).verdict, "MASQUERADE");
    let out6 = pkt("fd00:5:0:1::2", "2001:db8::9", None, Some("eth0"));
    let v = ours.postrouting(&out6);
    assert_eq!(
        (v.verdict.as_str(), v.rule.unwrap_or_default().as_str()),
        ("MASQUERADE", "-A POSTROUTING -s fd00:5::/56 ! -d ff00::/8 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully")
    );
}

/// A family whose rules the legacy x_tables backend holds (`iptables-legacy`) is read with
/// `iptables-legacy-save`: `iptables-save` (nft) would only warn that they exist.
#[test]
fn legacy_rules_are_read_with_the_legacy_tool() {
    require_root();
    let ns = Netns::unique("wtFR");
    ns.exec(&["iptables-legacy", "-P", "FORWARD", "DROP"]).expect_ok();
    ns.exec(&["iptables-legacy", "-A", "FORWARD", "-s", "10.244.0.0/16", "-j", "ACCEPT"]).expect_ok();
    let rules = NetNs::open(ns.path()).unwrap().run(|| Ruleset::read_families(false)).unwrap();
    let pkt = |src: &str| Packet {
        src: src.parse().unwrap(),
        dst: "10.244.2.3".parse().unwrap(),
        iif: Some("cni0"),
        oif: Some("flannel.1"),
    };
    let v = rules.forward(&pkt("10.244.1.2"));
    assert_eq!(
        (v.verdict.as_str(), v.rule.as_deref()),
        ("ACCEPT", Some("-A FORWARD -s 10.244.0.0/16 -j ACCEPT"))
    );
    assert_eq!(rules.forward(&pkt("192.0.2.1")).verdict, "policy DROP");
}
