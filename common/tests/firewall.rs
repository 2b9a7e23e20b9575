//! Masquerade rules in real network namespaces (root): exact layouts read back with the system
//! tools, teardown with and without addresses, idempotence, and interop with the reference bridge
//! plugin (Debian v1.1.1, iptables) in both directions, and the in-process nftables transaction
//! against the `nft` tool, and the in-process iptables-nft ADD against `iptables-restore`. Every
//! namespace is named `wtfw…`, `wtnx…`, `wtny…`, `wtnd…` or `wtix…` and deleted on drop, also
//! when a test panics.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;

use ipnetwork::IpNetwork;
use weft_common::firewall::{
    chain_name, iptables_comment, nft_comment, nftables_masquerade_comments, setup_masquerade,
    teardown_masquerade, BackendChoice, MasqTarget,
};
use weft_common::netns::NetNs;
use weft_lab::ns::{require_root, Netns};

const NET: &str = "wtfwnet";

fn addrs(list: &[&str]) -> Vec<IpNetwork> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn nat_rules(ns: &Netns, tool: &str) -> Vec<String> {
    let out = ns.exec(&[tool, "-t", "nat"]).expect_ok().stdout;
    out.lines().filter(|l| l.contains("CNI-")).map(str::to_string).collect()
}

fn nft_json(ns: &Netns) -> Option<serde_json::Value> {
    let run = ns.exec(&["nft", "-j", "list", "table", "inet", "cni_plugins_masquerade"]);
    run.ok().then(|| serde_json::from_str(&run.stdout).unwrap())
}

/// Rules of `chain` as (comment, [expr…]) pairs.
fn nft_rules(ns: &Netns, chain: &str) -> Vec<(Option<String>, serde_json::Value)> {
    let Some(v) = nft_json(ns) else { return Vec::new() };
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["chain"] == chain)
        .map(|r| (r["comment"].as_str().map(str::to_string), r["expr"].clone()))
        .collect()
}

fn expected_iptables(cid: &str, v4: bool) -> Vec<String> {
    let chain = chain_name(NET, cid);
    let c = format!("\"name: \\\"{NET}\\\" id: \\\"{cid}\\\"\"");
    let (host, subnet, mcast) = if v4 {
        ("198.19.1.2/32", "198.19.1.0/24", "224.0.0.0/4")
    } else {
        ("fd00:77::2/128", "fd00:77::/64", "ff00::/8")
    };
    vec![
        format!(":{chain} - [0:0]"),
        format!("-A POSTROUTING -s {host} -m comment --comment {c} -j {chain}"),
        format!("-A {chain} -d {subnet} -m comment --comment {c} -j ACCEPT"),
        format!("-A {chain} ! -d {mcast} -m comment --comment {c} -j MASQUERADE"),
    ]
}

#[test]
fn child_process_inherits_entered_netns() {
    require_root();
    let lab = Netns::unique("wtfw");
    let target = std::fs::metadata(lab.path()).unwrap().ino();
    let _guard = NetNs::open(lab.path()).unwrap().enter().unwrap();
    let out = std::process::Command::new("readlink").arg("/proc/self/ns/net").output().unwrap();
    let link = String::from_utf8(out.stdout).unwrap();
    assert_eq!(link.trim(), format!("net:[{target}]"));
}

#[test]
fn iptables_dual_stack_layout_and_teardown() {
    require_root();
    let lab = Netns::unique("wtfw");
    let ns = NetNs::open(lab.path()).unwrap();
    let dual = addrs(&["198.19.1.2/24", "fd00:77::2/64"]);
    let t = MasqTarget { network: NET, container_id: "ctr1", ifname: "eth0" };
    assert_eq!(iptables_comment(NET, "ctr1"), format!("name: \"{NET}\" id: \"ctr1\""));

    // Twice: a repeated ADD appends nothing.
    for _ in 0..2 {
        ns.run(|| setup_masquerade(BackendChoice::Iptables, &t, &dual)).unwrap().unwrap();
        assert_eq!(nat_rules(&lab, "iptables-save"), expected_iptables("ctr1", true));
        assert_eq!(nat_rules(&lab, "ip6tables-save"), expected_iptables("ctr1", false));
    }
    assert!(nft_json(&lab).is_none(), "iptables choice must not create the nftables table");

    // With addresses, then without (idempotent).
    ns.run(|| teardown_masquerade(&t, &dual)).unwrap().unwrap();
    assert!(nat_rules(&lab, "iptables-save").is_empty());
    assert!(nat_rules(&lab, "ip6tables-save").is_empty());
    ns.run(|| teardown_masquerade(&t, &[])).unwrap().unwrap();

    // Without addresses (interface gone), including the legacy `-s ip/prefix` jump form.
    ns.run(|| setup_masquerade(BackendChoice::Auto, &t, &dual)).unwrap().unwrap();
    let chain = chain_name(NET, "ctr1");
    lab.exec(&["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "198.19.1.2/24", "-j", &chain])
        .expect_ok();
    ns.run(|| teardown_masquerade(&t, &[])).unwrap().unwrap();
    assert!(nat_rules(&lab, "iptables-save").is_empty());
    assert!(nat_rules(&lab, "ip6tables-save").is_empty());
    ns.run(|| teardown_masquerade(&t, &[])).unwrap().unwrap();
}

#[test]
fn nftables_dual_stack_layout_and_teardown() {
    require_root();
    let lab = Netns::unique("wtfw");
    let ns = NetNs::open(lab.path()).unwrap();
    let dual = addrs(&["198.19.1.2/24", "fd00:77::2/64"]);
    let t = MasqTarget { network: NET, container_id: "ctr1", ifname: "eth0" };
    let other = MasqTarget { network: NET, container_id: "ctr2", ifname: "eth0" };
    let comment = nft_comment(NET, "eth0", "ctr1");

    for _ in 0..2 {
        ns.run(|| setup_masquerade(BackendChoice::Nftables, &t, &dual)).unwrap().unwrap();
        let rules = nft_rules(&lab, "masq_checks");
        assert_eq!(rules.len(), 2, "stale rules replaced, not duplicated: {rules:?}");
        for (c, _) in &rules {
            assert_eq!(c.as_deref(), Some(comment.as_str()));
        }
        let expr = serde_json::to_string(&rules[0].1).unwrap();
        assert!(expr.contains(r#""right":"198.19.1.2""#) && expr.contains(r#""addr":"198.19.1.0","len":24"#));
        assert!(expr.contains(r#""op":"!=""#) && expr.contains("masquerade"));
        let expr6 = serde_json::to_string(&rules[1].1).unwrap();
        assert!(expr6.contains(r#""protocol":"ip6""#) && expr6.contains(r#""addr":"fd00:77::","len":64"#));
        assert_eq!(nft_rules(&lab, "postrouting").len(), 3);
    }
    // Table and chain comments and the base chain (text listing: nft 1.0's JSON omits comments).
    let text = lab.exec(&["nft", "list", "table", "inet", "cni_plugins_masquerade"]).expect_ok().stdout;
    assert!(
        text.contains(r#"comment "Masquerading for plugins from github.com/containernetworking/plugins""#)
    );
    assert!(text.contains(
        r#"comment "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet""#
    ));
    assert!(text.contains("type nat hook postrouting priority srcnat; policy accept;"), "{text}");
    assert!(text.contains("ip daddr 224.0.0.0/4 return") && text.contains("ip6 daddr ff00::/8 return"));
    assert!(text.contains("goto masq_checks"));
    assert!(nat_rules(&lab, "iptables-save").is_empty(), "nftables choice must not touch iptables");

    // Another container's rule survives our teardown.
    ns.run(|| setup_masquerade(BackendChoice::Nftables, &other, &addrs(&["198.19.1.3/24"])))
        .unwrap()
        .unwrap();
    ns.run(|| teardown_masquerade(&t, &[])).unwrap().unwrap();
    let left = nft_rules(&lab, "masq_checks");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0.as_deref(), Some(nft_comment(NET, "eth0", "ctr2").as_str()));
    ns.run(|| teardown_masquerade(&t, &dual)).unwrap().unwrap();
    ns.run(|| teardown_masquerade(&other, &addrs(&["198.19.1.3/24"]))).unwrap().unwrap();
    assert!(nft_rules(&lab, "masq_checks").is_empty());
}

/// The reference's nft script for one dual-stack ADD (cni.md §7.4), written independently of the
/// code under test: `nft -f` of it is the golden ruleset.
fn reference_script(comment: &str) -> String {
    let t = "inet cni_plugins_masquerade";
    [
        format!(
            "add table {t} {{ comment \"Masquerading for plugins from github.com/containernetworking/plugins\" ; }}"
        ),
        format!(
            "add chain {t} masq_checks {{ comment \"Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet\" ; }}"
        ),
        format!("add chain {t} postrouting {{ type nat hook postrouting priority srcnat ; }}"),
        format!("flush chain {t} postrouting"),
        format!("add rule {t} postrouting ip daddr == 224.0.0.0/4 return"),
        format!("add rule {t} postrouting ip6 daddr == ff00::/8 return"),
        format!("add rule {t} postrouting goto masq_checks"),
        format!("add rule {t} masq_checks ip saddr == 198.19.1.2 ip daddr != 198.19.1.0/20 masquerade comment \"{comment}\""),
        format!("add rule {t} masq_checks ip6 saddr == fd00:77::2 ip6 daddr != fd00:77::/64 masquerade comment \"{comment}\""),
    ]
    .join("\n")
        + "\n"
}

/// A JSON listing with every `handle` removed.
fn without_handles(json: &str) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("handle");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    strip(&mut v);
    v
}

fn listing(ns: &Netns, args: &[&str]) -> String {
    let mut argv = vec!["nft"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["list", "table", "inet", "cni_plugins_masquerade"]);
    ns.exec(&argv).expect_ok().stdout
}

/// The in-process transaction builds exactly what `nft -f` builds from the reference's text: same
/// text and JSON listing, and the same kernel expressions and comment user data (`--debug=netlink`
/// prints each rule's expressions and raw user data). A /20 exercises the masked-prefix form.
#[test]
fn nftables_in_process_matches_nft_tool() {
    require_root();
    let ours = Netns::unique("wtnx");
    let golden = Netns::unique("wtnx");
    let dual = addrs(&["198.19.1.2/20", "fd00:77::2/64"]);
    let t = MasqTarget { network: NET, container_id: "ctr1", ifname: "eth0" };
    let comment = nft_comment(NET, "eth0", "ctr1");

    let ns = NetNs::open(ours.path()).unwrap();
    ns.run(|| setup_masquerade(BackendChoice::Nftables, &t, &dual)).unwrap().unwrap();
    golden.exec_with(&["nft", "-f", "-"], &[], reference_script(&comment).as_bytes()).expect_ok();

    let text = listing(&ours, &[]);
    assert_eq!(text, listing(&golden, &[]));
    assert!(text.contains(&format!("ip daddr != 198.19.0.0/20 masquerade comment \"{comment}\"")), "{text}");
    assert_eq!(listing(&ours, &["-j"]), listing(&golden, &["-j"]));
    assert_eq!(listing(&ours, &["-a", "--debug=netlink"]), listing(&golden, &["-a", "--debug=netlink"]));

    // A repeated ADD (table, chains and the three postrouting rules exist, so only the attachment's
    // rules are replaced) gives the same ruleset as the reference's script run again after its
    // stale rules are deleted — the same rules and kernel expressions; only handles differ, because
    // the reference also flushes and refills postrouting.
    let postrouting_handles = |ns: &Netns| -> Vec<u64> {
        let v = nft_json(ns).unwrap();
        let rules = v["nftables"].as_array().unwrap().iter().filter_map(|o| o.get("rule"));
        rules.filter(|r| r["chain"] == "postrouting").filter_map(|r| r["handle"].as_u64()).collect()
    };
    let before = postrouting_handles(&ours);
    ns.run(|| setup_masquerade(BackendChoice::Nftables, &t, &dual)).unwrap().unwrap();
    assert_eq!(postrouting_handles(&ours), before, "a correct postrouting is left as it is");
    golden.exec(&["nft", "flush", "chain", "inet", "cni_plugins_masquerade", "masq_checks"]).expect_ok();
    golden.exec_with(&["nft", "-f", "-"], &[], reference_script(&comment).as_bytes()).expect_ok();
    assert_eq!(listing(&ours, &[]), listing(&golden, &[]));
    assert_eq!(without_handles(&listing(&ours, &["-j"])), without_handles(&listing(&golden, &["-j"])));
    // `--debug=netlink` heads each rule with `<family> <table> <chain> <handle> [<position>]`.
    let expressions = |ns: &Netns| -> Vec<String> {
        let text = listing(ns, &["--debug=netlink"]);
        text.lines()
            .map(|l| match l.strip_prefix("inet cni_plugins_masquerade ") {
                Some(rest) => rest.split_whitespace().next().unwrap_or_default().to_string(),
                None => l.to_string(),
            })
            .collect()
    };
    assert_eq!(expressions(&ours), expressions(&golden));

    // Teardown empties masq_checks and keeps the shared table, chains and comments.
    ns.run(|| teardown_masquerade(&t, &[])).unwrap().unwrap();
    assert!(nft_rules(&ours, "masq_checks").is_empty());
    assert_eq!(nft_rules(&ours, "postrouting").len(), 3);
    let after = listing(&ours, &[]);
    assert!(after.contains("Masquerade traffic from certain IPs"), "{after}");
}

/// A namespace for our dual-stack ADD (`add` runs it there) and the listing the reference's
/// script gives in a fresh one: what every ADD must leave behind.
fn ours_and_golden(prefix: &str) -> (Netns, String, impl Fn()) {
    require_root();
    let ours = Netns::unique(prefix);
    let golden = Netns::unique(prefix);
    let comment = nft_comment(NET, "eth0", "ctr1");
    golden.exec_with(&["nft", "-f", "-"], &[], reference_script(&comment).as_bytes()).expect_ok();
    let want = listing(&golden, &[]);
    let ns = NetNs::open(ours.path()).unwrap();
    let add = move || {
        let dual = addrs(&["198.19.1.2/20", "fd00:77::2/64"]);
        let t = MasqTarget { network: NET, container_id: "ctr1", ifname: "eth0" };
        ns.run(|| setup_masquerade(BackendChoice::Nftables, &t, &dual)).unwrap().unwrap();
    };
    (ours, want, add)
}

/// ADD after the table, or only one chain, was deleted by someone else recreates exactly the layout
/// a first ADD builds (the reference's script in a fresh namespace).
#[test]
fn nftables_add_recreates_deleted_table_and_chain() {
    let (ours, want, add) = ours_and_golden("wtnx");

    add();
    assert_eq!(listing(&ours, &[]), want);
    ours.exec(&["nft", "delete", "table", "inet", "cni_plugins_masquerade"]).expect_ok();
    assert!(nft_json(&ours).is_none());
    add();
    assert_eq!(listing(&ours, &[]), want);

    // Only the base chain gone: it is recreated and refilled; masq_checks keeps one rule per address.
    ours.exec(&["nft", "delete", "chain", "inet", "cni_plugins_masquerade", "postrouting"]).expect_ok();
    add();
    assert_eq!(listing(&ours, &[]), want);

    // An empty table (both chains gone): table kept, both chains recreated.
    for chain in ["postrouting", "masq_checks"] {
        ours.exec(&["nft", "delete", "chain", "inet", "cni_plugins_masquerade", chain]).expect_ok();
    }
    add();
    assert_eq!(listing(&ours, &[]), want);
}

/// ADD refills a postrouting chain someone changed (an extra rule, an altered one) and keeps the
/// rules the `nft` tool writes from the reference's text, which read as already filled.
#[test]
fn nftables_add_refills_a_changed_postrouting_chain() {
    let (ours, want, add) = ours_and_golden("wtny");
    let postrouting = |multicast: &str| {
        let tbl = "inet cni_plugins_masquerade";
        format!(
            "flush chain {tbl} postrouting\n\
             add rule {tbl} postrouting ip daddr == {multicast} return\n\
             add rule {tbl} postrouting ip6 daddr == ff00::/8 return\n\
             add rule {tbl} postrouting goto masq_checks\n"
        )
    };

    add();
    assert_eq!(listing(&ours, &[]), want);
    // The chain as the tool writes it from the reference's text.
    ours.exec_with(&["nft", "-f", "-"], &[], postrouting("224.0.0.0/4").as_bytes()).expect_ok();
    add();
    assert_eq!(listing(&ours, &[]), want);
    // An extra rule.
    ours.exec(&["nft", "add", "rule", "inet", "cni_plugins_masquerade", "postrouting", "counter"])
        .expect_ok();
    assert_ne!(listing(&ours, &[]), want);
    add();
    assert_eq!(listing(&ours, &[]), want);
    // An altered rule.
    ours.exec_with(&["nft", "-f", "-"], &[], postrouting("224.0.0.0/8").as_bytes()).expect_ok();
    assert_ne!(listing(&ours, &[]), want);
    add();
    assert_eq!(listing(&ours, &[]), want);
}

/// A listing taken while other attachments' rules are being deleted still holds every rule
/// that stays: the kernel resumes a multi-part dump by position, so without the restart of an
/// interrupted dump a concurrent delete made a DEL miss its own rule.
#[test]
fn nftables_listing_during_concurrent_dels_misses_nothing() {
    require_root();
    let lab = Netns::unique("wtnd");
    fn target(id: &str) -> MasqTarget<'_> {
        MasqTarget { network: "wtndnet", container_id: id, ifname: "eth0" }
    }
    let ids: Vec<String> = (0..300).map(|i| format!("c{i}")).collect();
    let addr = |i: usize| -> IpNetwork { format!("198.19.{}.{}/16", i / 200, i % 200 + 2).parse().unwrap() };
    let ns = NetNs::open(lab.path()).unwrap();
    ns.run(|| {
        for (i, id) in ids.iter().enumerate() {
            setup_masquerade(BackendChoice::Nftables, &target(id), &[addr(i)]).unwrap();
        }
    })
    .unwrap();
    let odd = |c: &Option<String>| {
        c.as_deref().is_some_and(|c| {
            let id = c.rsplit("id: ").next().unwrap_or("");
            id.trim_start_matches('c').parse::<usize>().is_ok_and(|n| n % 2 == 1)
        })
    };
    // The even attachments are deleted one by one in another thread; the odd ones stay.
    let listings = std::thread::scope(|scope| {
        let deleter = scope.spawn(|| {
            let ns = NetNs::open(lab.path()).unwrap();
            ns.run(|| {
                for (i, id) in ids.iter().enumerate().step_by(2).take(100) {
                    teardown_masquerade(&target(id), &[addr(i)]).unwrap();
                }
            })
            .unwrap()
        });
        let mut listings = 0;
        while !deleter.is_finished() {
            let comments = ns.run(nftables_masquerade_comments).unwrap().unwrap();
            let kept = comments.iter().filter(|c| odd(c)).count();
            assert_eq!(kept, ids.len() / 2, "a listing missed a rule that was never deleted");
            listings += 1;
        }
        listings
    });
    assert!(listings > 0);
    assert_eq!(nft_rules(&lab, "masq_checks").len(), 200, "100 of 300 deleted");
}

/// A transaction the kernel rejects applies nothing and reports the rejected operation and errno.
#[test]
fn nftables_rejected_transaction_names_op_and_applies_nothing() {
    require_root();
    let lab = Netns::unique("wtnx");
    let ns = NetNs::open(lab.path()).unwrap();
    // A `postrouting` of another type: our `add chain` for it must fail.
    let conflict = "add table inet cni_plugins_masquerade\n\
        add chain inet cni_plugins_masquerade postrouting { type filter hook postrouting priority 0 ; }\n";
    lab.exec_with(&["nft", "-f", "-"], &[], conflict.as_bytes()).expect_ok();
    let t = MasqTarget { network: NET, container_id: "ctr1", ifname: "eth0" };
    let err = ns.run(|| setup_masquerade(BackendChoice::Nftables, &t, &addrs(&["198.19.1.2/24"]))).unwrap();
    let err = err.unwrap_err().to_string();
    assert!(err.contains("add chain postrouting") && err.contains("os error"), "{err}");
    let text = listing(&lab, &[]);
    assert!(!text.contains("masq_checks") && !text.contains("comment"), "nothing applied: {text}");
}

/// A host namespace and a container namespace, and the reference bridge plugin run in the host one.
struct RefLab {
    host: Netns,
    ctr: Netns,
    data: tempfile::TempDir,
}

impl RefLab {
    fn new() -> RefLab {
        RefLab { host: Netns::unique("wtfw"), ctr: Netns::unique("wtfw"), data: tempfile::tempdir().unwrap() }
    }

    fn bridge(&self, cmd: &str, cid: &str) -> weft_lab::cmd::Run {
        let conf = serde_json::json!({
            "cniVersion": "0.4.0", "name": NET, "type": "bridge", "bridge": "wtfwbr0",
            "isGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "dataDir": self.data.path(),
                     "ranges": [[{"subnet": "198.19.1.0/24"}], [{"subnet": "fd00:77::/64"}]]}
        });
        let ctr_path = self.ctr.path();
        let env = [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", ctr_path.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        self.host.exec_with(&["/usr/lib/cni/bridge"], &env, conf.to_string().as_bytes())
    }
}

#[test]
fn reference_rules_removed_by_ours_and_ours_by_reference() {
    require_root();
    let lab = RefLab::new();
    let host = NetNs::open(lab.host.path()).unwrap();
    let t = MasqTarget { network: NET, container_id: "ctr1", ifname: "eth0" };

    let add = lab.bridge("ADD", "ctr1").expect_ok();
    let result: serde_json::Value = serde_json::from_str(&add.stdout).unwrap();
    let ips: Vec<IpNetwork> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["address"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ips.len(), 2, "{result}");
    let reference_v4 = nat_rules(&lab.host, "iptables-save");
    let reference_v6 = nat_rules(&lab.host, "ip6tables-save");
    assert_eq!(reference_v4.len(), 4, "{reference_v4:?}");
    assert_eq!(reference_v6.len(), 4, "{reference_v6:?}");

    // Our DEL without addresses (interface already gone) removes the reference's rules.
    host.run(|| teardown_masquerade(&t, &[])).unwrap().unwrap();
    assert!(nat_rules(&lab.host, "iptables-save").is_empty());
    assert!(nat_rules(&lab.host, "ip6tables-save").is_empty());

    // Our ADD produces exactly the reference's rules, and the reference's DEL removes them.
    host.run(|| setup_masquerade(BackendChoice::Iptables, &t, &ips)).unwrap().unwrap();
    assert_eq!(nat_rules(&lab.host, "iptables-save"), reference_v4);
    assert_eq!(nat_rules(&lab.host, "ip6tables-save"), reference_v6);
    lab.bridge("DEL", "ctr1").expect_ok();
    assert!(nat_rules(&lab.host, "iptables-save").is_empty());
    assert!(nat_rules(&lab.host, "ip6tables-save").is_empty());
}

/// An unrelated iptables-nft rule, so that `table ip nat` and its POSTROUTING exist (a fresh
/// namespace has no nat table; `iptables -t nat -S` does not create one).
const PRIME: &str = "*nat\n-A POSTROUTING -s 198.18.0.9/32 -j RETURN\nCOMMIT\n";

/// One family's tools and names, for the tests that run for both.
struct XtFam {
    tool: &'static str,
    save: &'static str,
    restore: &'static str,
    /// The nft family of its tables.
    nft: &'static str,
    /// A rule that makes the family's nat table and POSTROUTING exist (as [`PRIME`]).
    prime: &'static str,
    mcast: &'static str,
}

const IPV4: XtFam = XtFam {
    tool: "iptables",
    save: "iptables-save",
    restore: "iptables-restore",
    nft: "ip",
    prime: PRIME,
    mcast: "224.0.0.0/4",
};

const IPV6: XtFam = XtFam {
    tool: "ip6tables",
    save: "ip6tables-save",
    restore: "ip6tables-restore",
    nft: "ip6",
    prime: "*nat\n-A POSTROUTING -s fd00:ffff::9/128 -j RETURN\nCOMMIT\n",
    mcast: "ff00::/8",
};

/// The reference's rules of one attachment as an `iptables-restore` script (cni.md §7.4), written
/// independently of the code under test; `mcast` is the family's multicast range.
fn reference_restore_script(cid: &str, host: &str, subnet: &str, mcast: &str) -> String {
    let chain = chain_name(NET, cid);
    let c = format!("\"name: \\\"{NET}\\\" id: \\\"{cid}\\\"\"");
    format!(
        "*nat\n-N {chain}\n\
         -A {chain} -d {subnet} -m comment --comment {c} -j ACCEPT\n\
         -A {chain} ! -d {mcast} -m comment --comment {c} -j MASQUERADE\n\
         -A POSTROUTING -s {host} -m comment --comment {c} -j {chain}\nCOMMIT\n"
    )
}

/// `iptables-save -t nat` without its `#` lines and with every `[packets:bytes]` counter zeroed.
fn saved_nat(ns: &Netns) -> String {
    saved_nat_of(ns, &IPV4)
}

fn saved_nat_of(ns: &Netns, fam: &XtFam) -> String {
    let out = ns.exec(&[fam.save, "-t", "nat"]).expect_ok().stdout;
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.find(" ["), l.ends_with(']')) {
            (Some(i), true) => format!("{} [0:0]", &l[..i]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `nft --debug=netlink list table ip nat` (`ip6 nat`): every rule's kernel expressions, then the
/// listing. The `ip nat <chain> <handle> [<position>]` head of each rule is cut to the chain.
fn nat_netlink(ns: &Netns, fam: &XtFam) -> String {
    let out = ns.exec(&["nft", "--debug=netlink", "list", "table", fam.nft, "nat"]).expect_ok().stdout;
    let head = format!("{} nat ", fam.nft);
    out.lines()
        .map(|l| match l.strip_prefix(&head) {
            Some(rest) => format!("{head}{}", rest.split_whitespace().next().unwrap_or_default()),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn try_in_process(ns: &NetNs, cid: &str, list: &[&str]) -> bool {
    let (chain, comment) = (chain_name(NET, cid), iptables_comment(NET, cid));
    ns.run(|| weft_common::firewall::iptables_nft::try_add(&chain, &comment, &addrs(list))).unwrap()
}

/// The in-process ADD builds exactly what `iptables-restore` of the reference's rules builds:
/// same `iptables-save`, same kernel expressions (`nft --debug=netlink`), the reference's `-C`
/// checks find the rules, and its DEL commands (`-D`, `-F`, `-X`) remove them completely. IPv4
/// with a /24 (byte-aligned: 3-byte compare) and a /20 (masked) subnet.
#[test]
fn iptables_nft_in_process_add_matches_iptables_restore() {
    in_process_add_matches_the_tool(
        &IPV4,
        &[
            ("ctr1", "198.19.1.2/24", "198.19.1.2/32", "198.19.1.0/24"),
            ("ctr2", "198.19.17.3/20", "198.19.17.3/32", "198.19.16.0/20"),
        ],
    );
}

/// The same for IPv6 and `ip6tables-restore`: a /64 (8-byte compare) and a /60 (masked).
#[test]
fn ip6tables_nft_in_process_add_matches_ip6tables_restore() {
    in_process_add_matches_the_tool(
        &IPV6,
        &[
            ("ctr1", "fd00:19:1::2/64", "fd00:19:1::2/128", "fd00:19:1::/64"),
            ("ctr2", "fd00:19:17:a::3/60", "fd00:19:17:a::3/128", "fd00:19:17::/60"),
        ],
    );
}

/// `attachments`: (container ID, address, `-s` host, `-d` subnet as iptables-save prints them).
fn in_process_add_matches_the_tool(fam: &XtFam, attachments: &[(&str, &str, &str, &str)]) {
    require_root();
    let ours = Netns::unique("wtix");
    let golden = Netns::unique("wtix");
    for lab in [&ours, &golden] {
        lab.exec_with(&[fam.restore, "--noflush", "-w"], &[], fam.prime.as_bytes()).expect_ok();
    }
    let primed = (saved_nat_of(&ours, fam), nat_netlink(&ours, fam));
    let ns = NetNs::open(ours.path()).unwrap();
    for (cid, addr, host, subnet) in attachments {
        assert!(try_in_process(&ns, cid, &[addr]), "in-process path taken for {cid}");
        let script = reference_restore_script(cid, host, subnet, fam.mcast);
        golden.exec_with(&[fam.restore, "--noflush", "-w"], &[], script.as_bytes()).expect_ok();
    }
    let saved = saved_nat_of(&ours, fam);
    assert_eq!(saved, saved_nat_of(&golden, fam));
    let (_, _, _, last_subnet) = attachments[attachments.len() - 1];
    let last_chain = chain_name(NET, attachments[attachments.len() - 1].0);
    assert!(saved.contains(&format!("-A {last_chain} -d {last_subnet} -m comment")), "{saved}");
    let netlink = nat_netlink(&ours, fam);
    assert_eq!(netlink, nat_netlink(&golden, fam));
    assert!(netlink.contains("[ match name comment rev 0 ]") && netlink.contains("target name MASQUERADE"));

    // The reference's check (go-iptables `Exists` = `-C`) and DEL (`-D` jump, `-F`, `-X` chain).
    for (cid, _, host, subnet) in attachments {
        let chain = chain_name(NET, cid);
        let comment = iptables_comment(NET, cid);
        let rules: [Vec<&str>; 3] = [
            vec!["POSTROUTING", "-s", host, "-m", "comment", "--comment", &comment, "-j", &chain],
            vec![&chain, "-d", subnet, "-m", "comment", "--comment", &comment, "-j", "ACCEPT"],
            vec![&chain, "!", "-d", fam.mcast, "-m", "comment", "--comment", &comment, "-j", "MASQUERADE"],
        ];
        for rule in &rules {
            let mut argv = vec![fam.tool, "-w", "-t", "nat", "-C"];
            argv.extend_from_slice(rule);
            ours.exec(&argv).expect_ok();
        }
        let mut del = vec![fam.tool, "-w", "-t", "nat", "-D"];
        del.extend_from_slice(&rules[0]);
        ours.exec(&del).expect_ok();
        ours.exec(&[fam.tool, "-w", "-t", "nat", "-F", &chain]).expect_ok();
        ours.exec(&[fam.tool, "-w", "-t", "nat", "-X", &chain]).expect_ok();
    }
    assert_eq!((saved_nat_of(&ours, fam), nat_netlink(&ours, fam)), primed, "DEL leaves the table as it was");
}

/// When the in-process ADD does not apply, the process path does the ADD, unchanged: the host's
/// first ADD (no nat table yet), a repeated ADD (the chain exists: the transaction fails as a
/// whole, nothing is duplicated), the first IPv6 ADD, mixed families, a nat table that is not iptables-nft's, legacy iptables.
#[test]
fn iptables_nft_falls_back_to_the_tools() {
    require_root();
    let lab = Netns::unique("wtix");
    let ns = NetNs::open(lab.path()).unwrap();
    let v4 = addrs(&["198.19.1.2/24"]);
    let t = MasqTarget { network: NET, container_id: "ctr1", ifname: "eth0" };
    let t2 = MasqTarget { network: NET, container_id: "ctr2", ifname: "eth0" };

    // First ADD: no table, so iptables-restore creates it.
    assert!(!try_in_process(&ns, "ctr1", &["198.19.1.2/24"]));
    assert!(lab.exec(&["nft", "list", "table", "ip", "nat"]).status != Some(0), "nothing created");
    ns.run(|| setup_masquerade(BackendChoice::Iptables, &t, &v4)).unwrap().unwrap();
    assert_eq!(nat_rules(&lab, "iptables-save"), expected_iptables("ctr1", true));
    // The table is iptables-nft's now: the next attachment goes in-process.
    assert!(try_in_process(&ns, "ctr2", &["198.19.1.3/24"]));

    // Repeated ADD: the chain exists, the batch fails whole, the tools find nothing missing.
    let before = saved_nat(&lab);
    assert!(!try_in_process(&ns, "ctr1", &["198.19.1.2/24"]));
    assert_eq!(saved_nat(&lab), before, "a failed batch applies nothing");
    for _ in 0..2 {
        ns.run(|| setup_masquerade(BackendChoice::Iptables, &t, &v4)).unwrap().unwrap();
        ns.run(|| setup_masquerade(BackendChoice::Iptables, &t2, &addrs(&["198.19.1.3/24"])))
            .unwrap()
            .unwrap();
        assert_eq!(saved_nat(&lab), before, "exactly one set of rules");
    }
    // IPv6 here: no `table ip6 nat` yet (the first IPv6 ADD), so ip6tables-restore does it.
    assert!(!try_in_process(&ns, "ctr3", &["fd00:77::2/64"]));
    assert!(lab.exec(&["nft", "list", "table", "ip6", "nat"]).status != Some(0), "nothing created");
    // A mix of families is never one in-process batch.
    assert!(!try_in_process(&ns, "ctr4", &["198.19.1.4/24", "fd00:77::4/64"]));

    // A nat table made with nft (a comment: not iptables-nft's).
    let foreign = Netns::unique("wtix");
    let script = "add table ip nat { comment \"wtix\" ; }\n\
        add chain ip nat POSTROUTING { type nat hook postrouting priority 100 ; }\n";
    foreign.exec_with(&["nft", "-f", "-"], &[], script.as_bytes()).expect_ok();
    assert!(!try_in_process(&NetNs::open(foreign.path()).unwrap(), "ctr1", &["198.19.1.2/24"]));
    // A table without POSTROUTING (only a user chain).
    let bare = Netns::unique("wtix");
    bare.exec(&["iptables", "-w", "-t", "nat", "-N", "wtixuser"]).expect_ok();
    assert!(!try_in_process(&NetNs::open(bare.path()).unwrap(), "ctr1", &["198.19.1.2/24"]));

    // Legacy iptables owns nat in this namespace (x_tables lists it): never nf_tables.
    let legacy = Netns::unique("wtix");
    legacy.exec_with(&["iptables-restore", "--noflush", "-w"], &[], PRIME.as_bytes()).expect_ok();
    legacy.exec(&["iptables-legacy", "-w", "-t", "nat", "-S"]).expect_ok();
    assert!(!try_in_process(&NetNs::open(legacy.path()).unwrap(), "ctr1", &["198.19.1.2/24"]));
}

/// The in-process DEL removes exactly one attachment's iptables rules and chain, both families in
/// one transaction: afterwards `iptables-save`, `ip6tables-save` and the kernel's expressions are
/// those of a namespace that only ever held the other attachment. Nothing there: nothing to do.
/// Legacy iptables: the tools are used.
#[test]
fn iptables_nft_in_process_del_removes_only_its_attachment() {
    require_root();
    let lab = Netns::unique("wtix");
    let golden = Netns::unique("wtix");
    let attach = |ns: &Netns, cid: &str, n: u8| {
        let v4 = reference_restore_script(
            cid,
            &format!("198.19.{n}.2/32"),
            &format!("198.19.{n}.0/24"),
            IPV4.mcast,
        );
        let v6 = reference_restore_script(
            cid,
            &format!("fd00:19:{n}::2/128"),
            &format!("fd00:19:{n}::/64"),
            IPV6.mcast,
        );
        ns.exec_with(&[IPV4.restore, "--noflush", "-w"], &[], v4.as_bytes()).expect_ok();
        ns.exec_with(&[IPV6.restore, "--noflush", "-w"], &[], v6.as_bytes()).expect_ok();
    };
    for ns in [&lab, &golden] {
        for fam in [&IPV4, &IPV6] {
            ns.exec_with(&[fam.restore, "--noflush", "-w"], &[], fam.prime.as_bytes()).expect_ok();
        }
    }
    attach(&lab, "ctr1", 1);
    attach(&lab, "ctr2", 2);
    attach(&golden, "ctr2", 2);
    let ns = NetNs::open(lab.path()).unwrap();
    let chain = chain_name(NET, "ctr1");
    assert!(ns.run(|| weft_common::firewall::iptables_nft::try_del(&chain, true, true)).unwrap());
    for fam in [&IPV4, &IPV6] {
        assert_eq!(saved_nat_of(&lab, fam), saved_nat_of(&golden, fam), "{}", fam.save);
        assert_eq!(nat_netlink(&lab, fam), nat_netlink(&golden, fam), "{}", fam.nft);
    }
    // Again: nothing left, nothing to do.
    assert!(ns.run(|| weft_common::firewall::iptables_nft::try_del(&chain, true, true)).unwrap());
    // A namespace without any nat table.
    let empty = Netns::unique("wtix");
    let empty_ns = NetNs::open(empty.path()).unwrap();
    assert!(empty_ns.run(|| weft_common::firewall::iptables_nft::try_del(&chain, true, true)).unwrap());
    // Legacy iptables owns nat here: its rules are invisible to nf_tables, so the tools must run.
    let legacy = Netns::unique("wtix");
    legacy.exec(&["iptables-legacy", "-w", "-t", "nat", "-S"]).expect_ok();
    let legacy_ns = NetNs::open(legacy.path()).unwrap();
    assert!(!legacy_ns.run(|| weft_common::firewall::iptables_nft::try_del(&chain, true, false)).unwrap());
}
