//! `weft path` judges the IPv6 FORWARD chain and IPv6 forwarding, in a dual-stack VXLAN lab
//! (root): two nodes with weft's flanneld (`-debug-dataplane`, `flannel-v6.1` on each), one pod
//! per node. On the remote node, `ip6tables -I FORWARD -s <src6> -d <dst6> -j DROP` →
//! `FORWARD_DROP` on the `remote-firewall` hop for the IPv6 pair (read from its view's
//! `ip6tables_filter`) while the IPv4 pair stays reachable; the rule deleted → reachable.
//! `net.ipv6.conf.all.forwarding=0` on the remote node → `IP_FORWARD_OFF` on `remote-forward`
//! (its view's `ipv6_forwarding`); on the own node → `IP_FORWARD_OFF` on `host-route`; each
//! set back → reachable. The same DROP rule on the own node → `FORWARD_DROP` on `forward`.
//! Each break is also checked against the kernel: an IPv6 ping of the pair fails while broken.
//! Masquerade: an outside IPv6 host on the underlay is masqueraded (`FLANNEL-POSTRTG` in
//! `ip6tables-save -t nat`); the chain flushed (flanneld frozen) → `MASQ_MISSING`; restored.
//! `weft pods` reports the pod's IPv6 masquerade (`masquerade_v6`) beside the IPv4 one, and
//! names the flushed chain as a problem (exit 1).
//! flanneld runs with a one-hour reconcile period. Namespaces: `wtFV`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_broken, assert_reachable, path, wait_reachable, weft, Freeze};
use std::time::Duration;

use serde_json::Value;
use weft_lab::ns::require_root;
use weft_lab::{FlannelSpec, Lab};

const PREFIX: &str = "wtFV";

/// Runs `argv` in node `n`'s namespace; panics with its output when it fails.
fn on_node(lab: &Lab, n: usize, argv: &[&str]) {
    lab.node(n).unwrap().ns().run(argv).unwrap();
}

/// Whether one ICMPv6 echo from pod `p` to `dst` is answered (the kernel's own verdict).
fn ping6(lab: &Lab, p: usize, dst: &str) -> bool {
    lab.pod(p).unwrap().ping_once_ip(dst.parse().unwrap(), None)
}

/// Waits until the IPv6 pair answers pings (neighbour discovery settles after a repair).
fn wait_ping6(lab: &Lab, p: usize, dst: &str) {
    let what = format!("IPv6 ping to {dst}");
    weft_lab::wait::until_true(&what, Duration::from_secs(20), || Ok(ping6(lab, p, dst)))
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.diagnostics()));
}

/// The dual-stack VXLAN lab (two nodes, one pod each, 1 h reconcile period) and its pods on
/// node 0 and node 1.
fn dual_stack_lab() -> (Lab, usize, usize) {
    require_root();
    let spec = FlannelSpec { nodes: 2, pods_per_node: 1, etcd_members: 1 };
    let lab = Lab::flannel_dual_stack(PREFIX, spec, &["--reconcile-interval=3600"]).unwrap();
    lab.wait_converged6().unwrap();
    let on = |n: usize| (0..lab.pods().len()).find(|p| lab.pod(*p).unwrap().node() == n).unwrap();
    let (a, b) = (on(0), on(1));
    (lab, a, b)
}

#[test]
fn ipv6_forward_chain_and_forwarding_judged_on_both_nodes() {
    let (lab, a, b) = dual_stack_lab();
    let (src6, dst6) =
        (lab.pod(a).unwrap().ip6().unwrap().to_string(), lab.pod(b).unwrap().ip6().unwrap().to_string());
    let (src4, dst4) = (lab.pod(a).unwrap().ip().to_string(), lab.pod(b).unwrap().ip().to_string());
    let remote = lab.node(1).unwrap().ip().to_string();

    assert_reachable(&lab, 0, &src6, &dst6);
    assert_reachable(&lab, 0, &src4, &dst4);
    wait_ping6(&lab, a, &dst6);

    // The remote node's IPv6 FORWARD chain drops the pair.
    let rule = ["FORWARD", "-s", &src6, "-d", &dst6, "-j", "DROP"];
    let insert: Vec<&str> = ["ip6tables", "-I"].iter().copied().chain(rule).collect();
    let delete: Vec<&str> = ["ip6tables", "-D"].iter().copied().chain(rule).collect();
    on_node(&lab, 1, &insert);
    let v = assert_broken(&lab, 0, &src6, &dst6, "remote-firewall", "FORWARD_DROP");
    let hop = v["hops"].as_array().unwrap().iter().find(|h| h["step"] == "remote-firewall").unwrap();
    assert_eq!(hop["node"], Value::from(remote.clone()), "{v}");
    let object = hop["object"].as_str().unwrap_or_default();
    assert!(object.contains("DROP") && object.contains(&src6) && object.contains(&dst6), "{v}");
    assert!(hop["detail"].as_str().unwrap_or_default().contains("IPv6 FORWARD chain"), "{v}");
    assert!(!ping6(&lab, a, &dst6), "the kernel forwarded {src6} → {dst6} despite the DROP rule");
    // The IPv4 pair is judged by the IPv4 rules: still reachable.
    assert_reachable(&lab, 0, &src4, &dst4);
    on_node(&lab, 1, &delete);
    wait_reachable(&lab, 0, &src6, &dst6);
    wait_ping6(&lab, a, &dst6);

    // The remote node does not forward IPv6.
    on_node(&lab, 1, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"]);
    let v = assert_broken(&lab, 0, &src6, &dst6, "remote-forward", "IP_FORWARD_OFF");
    let hop = v["hops"].as_array().unwrap().iter().find(|h| h["step"] == "remote-forward").unwrap();
    assert_eq!(hop["object"], Value::from(format!("net.ipv6.conf.all.forwarding=0 on {remote}")), "{v}");
    assert!(!ping6(&lab, a, &dst6), "node 1 forwarded IPv6 with forwarding off");
    assert_reachable(&lab, 0, &src4, &dst4);
    on_node(&lab, 1, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    wait_reachable(&lab, 0, &src6, &dst6);

    // The own node's IPv6 FORWARD chain drops the pair.
    on_node(&lab, 0, &insert);
    assert_broken(&lab, 0, &src6, &dst6, "forward", "FORWARD_DROP");
    assert!(!ping6(&lab, a, &dst6), "node 0 forwarded {src6} → {dst6} despite the DROP rule");
    assert_reachable(&lab, 0, &src4, &dst4);
    on_node(&lab, 0, &delete);
    wait_reachable(&lab, 0, &src6, &dst6);

    // The own node does not forward IPv6.
    on_node(&lab, 0, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"]);
    assert_broken(&lab, 0, &src6, &dst6, "host-route", "IP_FORWARD_OFF");
    assert!(!ping6(&lab, a, &dst6), "node 0 forwarded IPv6 with forwarding off");
    on_node(&lab, 0, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    wait_reachable(&lab, 0, &src6, &dst6);
    wait_ping6(&lab, a, &dst6);
}

#[test]
fn ipv6_masquerade_to_an_outside_address_judged_from_ip6tables() {
    let (lab, a, _) = dual_stack_lab();
    let src6 = lab.pod(a).unwrap().ip6().unwrap().to_string();
    let outside = lab.add_outside6().unwrap().ip6().to_string();

    // flanneld's IPv6 masquerade chain (`-ip-masq`) applies to an outside IPv6 address.
    let (code, v, run) = path(&lab, 0, &src6, &outside);
    assert_eq!(code, 0, "{}\n{}", run.stdout, run.stderr);
    let masq = v["hops"].as_array().unwrap().iter().find(|h| h["step"] == "masquerade").unwrap();
    assert!(masq["object"].as_str().unwrap_or_default().contains("MASQUERADE"), "{masq}");
    assert!(masq["object"].as_str().unwrap_or_default().contains("FLANNEL-POSTRTG"), "{masq}");
    let pod_masq = |expect_code: i32| {
        let run = weft(&lab, 0, "pods", &["--json"]);
        assert_eq!(run.status, Some(expect_code), "{}\n{}", run.stdout, run.stderr);
        let v: Value = serde_json::from_str(&run.stdout).unwrap();
        let pod = v["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["addresses"].to_string().contains(&src6))
            .cloned();
        let pod = pod.unwrap_or_else(|| panic!("{src6} not in {v}"));
        assert_eq!(pod["masquerade"]["present"], true, "{pod}");
        assert_eq!(pod["masquerade_v6"]["expected_by"], "flanneld", "{pod}");
        pod
    };
    let pod = pod_masq(0);
    assert_eq!(pod["masquerade_v6"]["present"], true, "{pod}");
    assert!(pod["masquerade_v6"]["rule"].as_str().unwrap_or_default().contains("FLANNEL-POSTRTG"), "{pod}");

    // The IPv6 chain flushed (flanneld frozen so its resync does not restore it): named; the
    // IPv4 nat table, untouched, does not answer for IPv6.
    let _f = Freeze::new(&lab, &[0]);
    let node0 = lab.node(0).unwrap().ns();
    let saved = node0.run(&["ip6tables-save", "-t", "nat"]).unwrap().stdout;
    on_node(&lab, 0, &["ip6tables", "-t", "nat", "-F", "FLANNEL-POSTRTG"]);
    let v = assert_broken(&lab, 0, &src6, &outside, "masquerade", "MASQ_MISSING");
    let masq = v["hops"].as_array().unwrap().iter().find(|h| h["step"] == "masquerade").unwrap();
    assert!(masq["detail"].as_str().unwrap_or_default().contains("IPv6 POSTROUTING"), "{masq}");
    let pod = pod_masq(1);
    assert_eq!(pod["masquerade_v6"]["present"], false, "{pod}");
    assert!(pod["problems"].to_string().contains("IPv6 masquerade expected (by flanneld)"), "{pod}");
    let r = node0.exec_with(&["ip6tables-restore"], &[], saved.as_bytes());
    assert!(r.ok(), "{}", r.stderr);
    assert_reachable(&lab, 0, &src6, &outside);
}
