//! `weft path` and `weft pods` with bad input and unreadable state: exit 2, a message that
//! names what is wrong, never a panic. Orphans left by interrupted or skipped CNI calls are
//! listed by `weft pods`. Needs root (a lab); never skipped.

#![allow(clippy::unwrap_used)]

mod common;

use common::{on, path, weft, PREFIX};
use serde_json::Value;
use weft_lab::ns::require_root;
use weft_lab::{FlannelSpec, Lab};

fn assert_error(run: &weft_lab::cmd::Run, needle: &str) {
    assert_eq!(run.status, Some(2), "want exit 2: {}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(needle), "stderr should name {needle:?}: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn bad_input_is_exit_2_with_a_clear_error_and_orphans_are_listed() {
    require_root();
    let mut lab = Lab::flannel(PREFIX, FlannelSpec { nodes: 2, pods_per_node: 2, etcd_members: 1 }).unwrap();
    let src = lab.pod(0).unwrap().ip().to_string();
    let dst = lab.pod(2).unwrap().ip().to_string();

    assert_error(&weft(&lab, 0, "path", &["10.244.250.250", &dst]), "no pod with that address on this node");
    // A pod of another node is not a SRC here.
    assert_error(&weft(&lab, 0, "path", &[&dst, &src]), "POD_NOT_FOUND");
    assert_error(&weft(&lab, 0, "path", &["10.244.1.300", &dst]), "malformed address");
    assert_error(&weft(&lab, 0, "path", &[&src, "10.244.x"]), "malformed address");
    assert_error(&weft(&lab, 0, "path", &["/run/netns/wtsp-no-such-ns", &dst]), "netns path does not exist");
    assert_error(&weft(&lab, 0, "path", &["no-such-container", &dst]), "no pod with that container ID");
    // etcd unreachable.
    assert_error(&weft(&lab, 0, "path", &["--etcd-endpoints", "http://127.0.0.1:9", &src, &dst]), "etcd");
    // Endpoint unreachable: the wrong port.
    let (code, v, run) = {
        let r = weft(&lab, 0, "path", &["--remote-port", "9", "--json", &src, &dst]);
        (r.status, serde_json::from_str::<Value>(&r.stdout).unwrap_or(Value::Null), r)
    };
    assert_eq!(code, Some(2), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(v["cause"], "REMOTE_VIEW_UNAVAILABLE");
    assert!(run.stderr.contains(":9/debug/dataplane"), "{}", run.stderr);
    // Sanity: the same path is fine with the right port.
    assert_eq!(path(&lab, 0, &src, &dst).0, 0);

    // Orphans. A veth left on cni0 whose peer is in no pod (an ADD killed mid-way).
    on(&lab, 0, &["ip", "link", "add", "wtspleft0", "type", "veth", "peer", "name", "wtspleft1"]);
    on(&lab, 0, &["ip", "link", "set", "wtspleft0", "master", "cni0"]);
    // A reservation with no interface.
    let ipam = lab.node(0).unwrap().cni_dirs().ipam_data.join("cbr0");
    let subnet = lab.node_subnet(0).unwrap();
    let stray = std::net::Ipv4Addr::from(u32::from(subnet.network()) + 200);
    std::fs::write(ipam.join(stray.to_string()), "ctr-gone\r\neth0").unwrap();
    // A pod namespace deleted without DEL: its reservation and cache entry stay behind.
    let gone = lab.pod(1).unwrap();
    let gone_ip = gone.ip().to_string();
    let gone_ns = gone.ns().path();
    let gone_name = gone.ns().name().to_string();
    assert!(weft_lab::cmd::sh(&["ip", "netns", "delete", &gone_name]).ok());

    let run = weft(&lab, 0, "pods", &["--json"]);
    assert_eq!(run.status, Some(1), "orphans make pods exit 1: {}\n{}", run.stdout, run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["pods"].as_array().unwrap().len(), 1, "{}", run.stdout);
    let orphans = v["orphans"].as_array().unwrap();
    let has = |pred: &dyn Fn(&Value) -> bool| orphans.iter().any(pred);
    assert!(
        has(&|o| o["kind"] == "veth" && o["name"] == "wtspleft0" && o["bridge"] == "cni0"),
        "{}",
        run.stdout
    );
    assert!(has(&|o| o["kind"] == "reservation" && o["ip"] == stray.to_string().as_str()), "{}", run.stdout);
    assert!(has(&|o| o["kind"] == "reservation" && o["ip"] == gone_ip.as_str()), "{}", run.stdout);
    assert!(
        has(&|o| o["kind"] == "cache" && o["netns"] == gone_ns.as_str() && o["netns_exists"] == false),
        "{}",
        run.stdout
    );
    let table = weft(&lab, 0, "pods", &[]);
    assert!(table.stdout.contains("orphans:") && table.stdout.contains("wtspleft0"), "{}", table.stdout);
    // A DST netns path that is gone.
    assert_error(&weft(&lab, 0, "path", &[&src, &gone_ns]), "netns path does not exist");
    on(&lab, 0, &["ip", "link", "del", "wtspleft0"]);
    let _ = lab.stop_flanneld(1);
}
