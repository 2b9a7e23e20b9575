//! `weft path`, `weft path --probe` and `weft doctor` on a host-gw lab (two nodes, two pods
//! each, weft's flanneld with `-debug-dataplane` and a 2 s reconcile period): a healthy lab
//! (the host-gw hop chain, `reachable`, doctor exit 0, its graph), then one break at a time,
//! each named by its cause code: a deleted peer route (healed by flanneld's reconcile), a
//! route via the wrong gateway, an underlay neighbour with a wrong MAC and one that fails ARP.
//! Needs root and the built binaries; never skipped. Lab namespaces start with `wtHP`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    assert_broken, assert_host_gw_probe_hops, assert_reachable, error_findings, on, path, wait_reachable,
    weft, Findings, Freeze,
};
use serde_json::Value;
use weft_lab::ns::require_root;
use weft_lab::{Backend, FlannelSpec, Lab};

const PREFIX: &str = "wtHP";

fn lab() -> Lab {
    require_root();
    let spec = FlannelSpec { nodes: 2, pods_per_node: 2, etcd_members: 1 };
    Lab::flannel_backend(PREFIX, spec, Backend::HostGw, &["--reconcile-interval=2"]).unwrap()
}

/// `weft doctor <extra>` on node 0 against the lab's etcd: (exit status, stdout, both streams).
fn doctor(lab: &Lab, extra: &[&str]) -> (Option<i32>, String, String) {
    doctor_on(lab, 0, extra)
}

/// `weft doctor <extra>` on node `i`.
fn doctor_on(lab: &Lab, i: usize, extra: &[&str]) -> (Option<i32>, String, String) {
    let eps = lab.etcd().unwrap().endpoints();
    let mut argv = vec![
        env!("CARGO_BIN_EXE_weft"),
        "doctor",
        "--etcd-endpoints",
        &eps,
        "--etcd-prefix",
        lab.etcd_prefix(),
    ];
    argv.extend_from_slice(extra);
    let r = lab.node(i).unwrap().ns().exec(&argv);
    (r.status, r.stdout.clone(), format!("{}\n{}", r.stdout, r.stderr))
}

/// The error findings of `weft doctor --json`, with its exit status and output.
fn findings(lab: &Lab) -> (Option<i32>, Findings, String) {
    findings_on(lab, 0)
}

/// The same, run on node `i`.
fn findings_on(lab: &Lab, i: usize) -> (Option<i32>, Findings, String) {
    let (code, out, all) = doctor_on(lab, i, &["--json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    (code, error_findings(&v), all)
}

/// Node `i`'s `/debug/dataplane` as its flanneld serves it, read from inside node `i`.
fn view_of(lab: &Lab, i: usize) -> Value {
    let ip = lab.node(i).unwrap().ip().to_string();
    let script = format!(
        "exec 3<>/dev/tcp/{ip}/10256 && printf 'GET /debug/dataplane HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    );
    let out = on(lab, i, &["bash", "-c", &script]);
    serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or(Value::Null)
}

fn steps(v: &Value) -> Vec<String> {
    v["hops"].as_array().unwrap().iter().map(|h| h["step"].as_str().unwrap().to_string()).collect()
}

#[test]
fn healthy_host_gw_lab_path_probe_and_doctor() {
    let lab = lab();
    let src = lab.pod(0).unwrap().ip().to_string();
    let local_dst = lab.pod(1).unwrap().ip().to_string();
    let dst = lab.pod(2).unwrap().ip().to_string();
    let n1 = lab.node(1).unwrap().ip().to_string();
    let lease1 = lab.lease(1).unwrap().unwrap();

    // Cross node: the host-gw chain, no VTEP hop; the remote hops are node 1's.
    let (code, v, run) = path(&lab, 0, &src, &dst);
    assert_eq!(code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(v["verdict"], "reachable");
    assert!(v["cause"].is_null());
    assert_eq!(
        steps(&v),
        [
            "pod",
            "pod-route",
            "veth",
            "bridge",
            "host-route",
            "forward",
            "underlay",
            "neighbour",
            "remote-node",
            "remote-route",
            "remote-firewall",
            "dst-pod"
        ]
    );
    let hop = |s: &str| v["hops"].as_array().unwrap().iter().find(|h| h["step"] == s).unwrap().clone();
    let route = hop("host-route");
    let subnet1 = lease1.subnet.to_string();
    assert!(
        route["object"].as_str().unwrap().contains(&format!("route {subnet1} via {n1} dev eth0")),
        "{route}"
    );
    // Without etcd the lease is the one node 1's flanneld holds, with its key and revision.
    let source = route["source"].as_str().unwrap();
    assert!(source.contains(&lease1.key) && source.contains("rev ") && source.contains(&n1), "{source}");
    assert!(
        hop("underlay")["object"].as_str().unwrap().contains(&format!("{n1} on-link")),
        "{}",
        hop("underlay")
    );
    for s in ["remote-node", "remote-route", "remote-firewall", "dst-pod"] {
        assert_eq!(hop(s)["node"], n1.as_str(), "{s}");
    }
    // The same with the leases read from etcd.
    let ep = lab.etcd().unwrap().endpoints();
    let r = weft(&lab, 0, "path", &["--etcd-endpoints", &ep, "--json", &src, &dst]);
    assert_eq!(r.status, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains(&lease1.key) && r.stdout.contains(&format!("etcd {ep}")), "{}", r.stdout);
    // The minimal text form.
    let brief = weft(&lab, 0, "path", &["--brief", &src, &dst]);
    assert_eq!(
        brief.stdout,
        "✓ pod\n✓ pod-route\n✓ veth\n✓ bridge\n✓ host-route\n✓ forward\n✓ underlay\n✓ neighbour\n\
         ✓ remote-node remote\n✓ remote-route remote\n✓ remote-firewall remote\n✓ dst-pod remote\nreachable\n"
    );
    // Same node, and the other direction.
    assert_reachable(&lab, 0, &src, &local_dst);
    assert_reachable(&lab, 1, &dst, &src);

    // The probe: seen on each uplink and on node 1's bridge and the destination's veth.
    let run = weft(&lab, 0, "path", &["--probe", "--json", &src, &dst]);
    assert_eq!(run.status, Some(0), "{}\n{}", run.stdout, run.stderr);
    let p: Value = serde_json::from_str(&run.stdout).unwrap();
    let p = &p["probe"];
    assert_eq!(p["answered"], true, "{p}");
    assert_eq!(p["remote_watched"], true, "{p}");
    assert_eq!(p["df_answered"], true, "a DF echo at the pod MTU (1500) fits the underlay: {p}");
    assert_host_gw_probe_hops(p, &n1);
    // Node 1's FORWARD chain drops pod traffic arriving on its uplink: the static chain walks
    // node 1's rules from its view and names the drop at node 1's `remote-firewall` hop.
    let rule = ["FORWARD", "-i", "eth0", "-p", "icmp", "-j", "DROP"];
    on(&lab, 1, &[&["iptables", "-I"][..], &rule[..]].concat());
    let v = assert_broken(&lab, 0, &src, &dst, "remote-firewall", "FORWARD_DROP");
    on(&lab, 1, &[&["iptables", "-D"][..], &rule[..]].concat());
    let failing = v["hops"].as_array().unwrap().iter().find(|h| h["ok"] == false).unwrap();
    assert_eq!(failing["node"], n1.as_str(), "{failing}");
    assert!(failing["object"].as_str().unwrap().contains("FORWARD eth0 → cni0"), "{failing}");
    assert_reachable(&lab, 0, &src, &dst);
    // A drop rule with a match the walker does not evaluate (`-m length`) is skipped by the
    // static chain; the probe sees the packet reach node 1's eth0, never its cni0.
    let rule = ["FORWARD", "-i", "eth0", "-p", "icmp", "-m", "length", "--length", "0:65535", "-j", "DROP"];
    on(&lab, 1, &[&["iptables", "-I"][..], &rule[..]].concat());
    let (code, _, run) = path(&lab, 0, &src, &dst);
    assert_eq!(code, 0, "static chain skips the rule:\n{}", run.stdout);
    let run = weft(&lab, 0, "path", &["--probe", "--json", &src, &dst]);
    on(&lab, 1, &[&["iptables", "-D"][..], &rule[..]].concat());
    assert_eq!(run.status, Some(1), "{}\n{}", run.stdout, run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["cause"], "FORWARD_DROP", "{}", run.stdout);
    assert_eq!(v["probe"]["last_seen"], format!("underlay (eth0) of {n1}"), "{}", run.stdout);
    let failing = v["hops"].as_array().unwrap().iter().find(|h| h["ok"] == false).unwrap();
    assert!(
        failing["detail"].as_str().unwrap().contains(&format!("reached {n1}'s eth0 but never its cni0")),
        "{failing}"
    );
    assert_reachable(&lab, 0, &src, &dst);

    // The view of a host-gw node: no device and no error for it; the external interface's
    // neighbours (node 1 resolved by the traffic above) and the filter rules.
    let view = view_of(&lab, 0);
    assert!(view["device"].is_null(), "{view}");
    assert_eq!(view["errors"], serde_json::json!([]), "{view}");
    let neighs = view["underlay_neighbours"].as_array().unwrap();
    assert!(neighs.iter().any(|n| n["ip"] == n1.as_str() && n["mac"].is_string()), "{view}");
    assert!(view["firewall"]["iptables_filter"].as_str().unwrap().contains("FORWARD"), "{view}");

    // doctor: healthy, the backend named, and the graph renders.
    let (code, list, all) = findings(&lab);
    assert_eq!(code, Some(0), "{all}");
    assert!(list.is_empty(), "{all}");
    let (code, text, all) = doctor(&lab, &[]);
    assert_eq!(code, Some(0), "{all}");
    assert!(text.contains("(host-gw), 2 node(s)") && text.trim_end().ends_with("healthy"), "{text}");
    let (code, dot, all) = doctor(&lab, &["--dot"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(dot.starts_with("digraph weft {") && dot.contains("host-gw") && !dot.contains("red"), "{dot}");
}

#[test]
fn host_gw_breaks_are_named_and_healed() {
    let mut lab = lab();
    let src = lab.pod(0).unwrap().ip().to_string();
    let dst = lab.pod(2).unwrap().ip().to_string();
    let (n0, n1) = (lab.node(0).unwrap().ip().to_string(), lab.node(1).unwrap().ip().to_string());
    let subnet1 = lab.node_subnet(1).unwrap().to_string();
    let ep = lab.etcd().unwrap().endpoints();
    assert_reachable(&lab, 0, &src, &dst);

    // F1: the peer route deleted on node 0 (its flanneld paused so the break holds): path
    // names it, then flanneld's reconcile puts it back.
    {
        let freeze = Freeze::new(&lab, &[0]);
        on(&lab, 0, &["ip", "route", "del", &subnet1]);
        let v = assert_broken(&lab, 0, &src, &dst, "host-route", "NO_ROUTE");
        assert!(v["hint"].as_str().unwrap().contains("host-gw"), "{v}");
        let r = weft(&lab, 0, "path", &["--etcd-endpoints", &ep, "--json", &src, &dst]);
        assert_eq!(r.status, Some(1), "{}", r.stdout);
        let key1 = lab.lease(1).unwrap().unwrap().key;
        assert!(r.stdout.contains("\"cause\": \"NO_ROUTE\"") && r.stdout.contains(&key1), "{}", r.stdout);
        drop(freeze);
        wait_reachable(&lab, 0, &src, &dst);
    }
    // The same for doctor, which reads node 0's view from its (running) flanneld: node 0's
    // flanneld restarted with a long reconcile period so the break holds, then with the short
    // one again (its start-up reconcile heals it).
    {
        lab.set_flanneld_args(&["--reconcile-interval=3600"]);
        lab.stop_flanneld(0).unwrap();
        lab.start_flanneld(0).unwrap();
        lab.wait_converged().unwrap();
        on(&lab, 0, &["ip", "route", "del", &subnet1]);
        let (code, list, all) = findings(&lab);
        assert_eq!(code, Some(1), "{all}");
        assert_eq!(list, vec![("NO_ROUTE".to_string(), vec![n0.clone()])], "{all}");
        let (_, text, _) = doctor(&lab, &[]);
        assert!(text.contains(&format!("add route {subnet1} via {n1}")), "the dry run re-adds it: {text}");
        lab.set_flanneld_args(&["--reconcile-interval=2"]);
        lab.stop_flanneld(0).unwrap();
        lab.start_flanneld(0).unwrap();
        lab.wait_converged().unwrap();
        wait_reachable(&lab, 0, &src, &dst);
        let (code, _, all) = findings(&lab);
        assert_eq!(code, Some(0), "{all}");
    }
    // F2: the peer's route replaced by one via another address of the segment (a route
    // flanneld did not make: it leaves it alone and reports it, so no pause is needed).
    {
        on(&lab, 0, &["ip", "route", "replace", &subnet1, "via", "198.18.0.99", "dev", "eth0"]);
        let r = weft(&lab, 0, "path", &["--etcd-endpoints", &ep, "--brief", &src, &dst]);
        assert_eq!(r.status, Some(1), "{}", r.stdout);
        assert!(r.stdout.contains("✗ host-route") && r.stdout.contains("ROUTE_WRONG_DEV"), "{}", r.stdout);
        let j = weft(&lab, 0, "path", &["--etcd-endpoints", &ep, "--json", &src, &dst]);
        assert!(
            j.stdout.contains(&format!("gateway 198.18.0.99, the lease's PublicIP is {n1}")),
            "{}",
            j.stdout
        );
        // Without etcd the lease is asked of the gateway, where nobody answers, not even ARP.
        let (code, v, run) = path(&lab, 0, &src, &dst);
        assert_eq!(code, 1, "{}\n{}", run.stdout, run.stderr);
        assert_eq!(v["cause"], "UNDERLAY_NEIGH_FAILED", "{}", run.stdout);
        assert!(run.stdout.contains("198.18.0.99 does not answer ARP on eth0"), "{}", run.stdout);
        let (code, list, all) = findings(&lab);
        assert_eq!(code, Some(1), "{all}");
        assert_eq!(list, vec![("ROUTE_WRONG_DEV".to_string(), vec![n0.clone()])], "{all}");
        on(&lab, 0, &["ip", "route", "replace", &subnet1, "via", &n1, "dev", "eth0"]);
        assert_reachable(&lab, 0, &src, &dst);
    }
    // The underlay neighbour of node 1 with another MAC than node 1's eth0.
    {
        on(
            &lab,
            0,
            &[
                "ip",
                "neigh",
                "replace",
                &n1,
                "lladdr",
                "02:00:00:00:00:99",
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        );
        let v = assert_broken(&lab, 0, &src, &dst, "neighbour", "UNDERLAY_NEIGH_MAC_STALE");
        assert_eq!(v["failure_mode"], "F5");
        // (doctor's side of it: tests/doctor_hostgw.rs, where a third node can still read both
        // views.)
        on(&lab, 0, &["ip", "neigh", "del", &n1, "dev", "eth0"]);
        wait_reachable(&lab, 0, &src, &dst);
    }
    // Node 1 stops answering ARP: node 0's neighbour entry for it fails.
    {
        assert!(lab.node(1).unwrap().ns().exec(&["ip", "link", "set", "eth0", "arp", "off"]).ok());
        on(&lab, 0, &["ip", "neigh", "flush", "dev", "eth0", "to", &n1]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let v = loop {
            // Traffic toward node 1 makes the kernel resolve it (and fail).
            let _ = lab.node(0).unwrap().ns().exec(&["ping", "-c", "1", "-W", "1", &n1]);
            let (_, v, _) = path(&lab, 0, &src, &dst);
            if v["cause"] == "UNDERLAY_NEIGH_FAILED" {
                break v;
            }
            assert!(std::time::Instant::now() < deadline, "never UNDERLAY_NEIGH_FAILED: {v}");
        };
        let failing = v["hops"].as_array().unwrap().iter().find(|h| h["ok"] == false).unwrap();
        assert_eq!(failing["step"], "neighbour", "{v}");
        // doctor names node 0's failed entry (node 1's view cannot be read meanwhile: no ARP).
        let (code, list, all) = findings(&lab);
        assert_eq!(code, Some(1), "{all}");
        assert!(list.contains(&("UNDERLAY_NEIGH_FAILED".to_string(), vec![n0.clone()])), "{all}");
        assert!(lab.node(1).unwrap().ns().exec(&["ip", "link", "set", "eth0", "arp", "on"]).ok());
        on(&lab, 0, &["ip", "neigh", "flush", "dev", "eth0", "to", &n1]);
        wait_reachable(&lab, 0, &src, &dst);
    }
    let (code, _, all) = findings(&lab);
    assert_eq!(code, Some(0), "{all}");
}
