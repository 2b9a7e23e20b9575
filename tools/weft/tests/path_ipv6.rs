//! `weft path` over IPv6 in a dual-stack VXLAN lab (root): two nodes with weft's flanneld
//! (`-debug-dataplane`, `flannel-v6.1` on each), two pods per node. IPv6 pod → IPv6 pod on the
//! other node is `reachable` through `flannel-v6.1` (neighbour, FDB to the peer's PublicIPv6,
//! the remote `flannel-v6.1`); same-node pods by netns path with `--family 6`; `doctor` exit 0.
//! The peer's IPv6 FDB entry deleted: `path` names `FDB_MISSING` on the `fdb` hop of
//! `flannel-v6.1` and `doctor` names it too; a flanneld restart repairs it → reachable.
//! Then the same over dual-stack host-gw (one pod per node): `S6 via P6 dev eth0`, `P6`
//! on-link, its NDISC entry; `--probe` sees the ICMPv6 echoes on both uplinks, node 1's bridge
//! and the destination's veth, answered, the DF echo at the pod MTU too; the route deleted →
//! `NO_ROUTE` from `path` and `doctor`; repaired.
//! flanneld runs with a one-hour reconcile period so the break holds. Namespaces: `wtW6`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_broken, assert_host_gw_probe_hops, assert_reachable, probe, wait_reachable, weft};
use serde_json::Value;
use weft_lab::ns::require_root;
use weft_lab::{FlannelSpec, Lab};

const PREFIX: &str = "wtW6";

fn ip6(lab: &Lab, p: usize) -> String {
    lab.pod(p).unwrap().ip6().unwrap().to_string()
}

fn hop<'a>(v: &'a Value, step: &str) -> &'a Value {
    v["hops"].as_array().unwrap().iter().find(|h| h["step"] == step).unwrap_or(&Value::Null)
}

fn doctor(lab: &Lab) -> (Option<i32>, Value, String) {
    let eps = lab.etcd().unwrap().endpoints();
    let weft = env!("CARGO_BIN_EXE_weft");
    let argv = [weft, "doctor", "--json", "--etcd-endpoints", &eps, "--etcd-prefix", lab.etcd_prefix()];
    let r = lab.node(0).unwrap().ns().exec(&argv);
    (r.status, serde_json::from_str(&r.stdout).unwrap_or(Value::Null), format!("{r}"))
}

/// `doctor` exits 1 with exactly one error: `cause` on node 0, on the IPv6 side.
fn assert_doctor_names(lab: &Lab, cause: &str) {
    let (code, d, run) = doctor(lab);
    assert_eq!(code, Some(1), "{run}");
    let n0 = lab.node(0).unwrap().ip().to_string();
    assert_eq!(common::error_findings(&d), vec![(cause.to_string(), vec![n0])], "{run}");
    assert_eq!(d["findings"][0]["family"], "ipv6", "{run}");
}

#[test]
fn ipv6_pod_to_pod_across_nodes_then_a_deleted_ipv6_fdb_entry() {
    require_root();
    let spec = FlannelSpec { nodes: 2, pods_per_node: 2, etcd_members: 1 };
    let mut lab = Lab::flannel_dual_stack(PREFIX, spec, &["--reconcile-interval=3600"]).unwrap();
    let on =
        |n: usize| (0..lab.pods().len()).filter(|p| lab.pod(*p).unwrap().node() == n).collect::<Vec<_>>();
    let (a, a2, b) = (on(0)[0], on(0)[1], on(1)[0]);
    let (src, dst) = (ip6(&lab, a), ip6(&lab, b));

    // Cross node over flannel-v6.1, every hop asked of the kernel and the remote view.
    assert_reachable(&lab, 0, &src, &dst);
    let run = weft(&lab, 0, "path", &["--json", &src, &dst]);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let lease = lab.lease(1).unwrap().unwrap();
    let mac6 = lease.attrs["BackendV6Data"]["VtepMAC"].as_str().unwrap().to_string();
    let p6 = lease.attrs["PublicIPv6"].as_str().unwrap().to_string();
    let fdb = hop(&v, "fdb")["object"].as_str().unwrap_or_default();
    assert_eq!(fdb, format!("{mac6} dst {p6} dev flannel-v6.1"), "{}", run.stdout);
    assert!(
        hop(&v, "vtep")["object"].as_str().unwrap_or_default().starts_with("flannel-v6.1@"),
        "{}",
        run.stdout
    );
    let remote = hop(&v, "remote-vtep");
    assert_eq!(remote["node"], lab.node(1).unwrap().ip().to_string(), "{}", run.stdout);
    assert!(remote["object"].as_str().unwrap_or_default().starts_with(&format!("flannel-v6.1 mac {mac6}")));
    assert!(hop(&v, "remote-route")["ok"] == true && hop(&v, "dst-pod")["ok"] == true, "{}", run.stdout);

    // Same node by netns path: the family comes from --family.
    let (na, na2) = (lab.pod(a).unwrap().ns().path(), lab.pod(a2).unwrap().ns().path());
    let run = weft(&lab, 0, "path", &["--json", "--family", "6", &na, &na2]);
    assert_eq!(run.status, Some(0), "{}\n{}", run.stdout, run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let dst_pod = hop(&v, "dst-pod")["object"].as_str().unwrap_or_default().to_string();
    assert!(dst_pod.contains(&ip6(&lab, a2)), "{}", run.stdout);
    // An IPv4 SRC with an IPv6 DST is bad input.
    let mixed = weft(&lab, 0, "path", &[&lab.pod(a).unwrap().ip().to_string(), &dst]);
    assert_eq!(mixed.status, Some(2), "{}", mixed.stdout);

    let (code, _, run) = doctor(&lab);
    assert_eq!(code, Some(0), "{run}");

    // Break: node 1's IPv6 FDB entry deleted on node 0.
    lab.node(0)
        .unwrap()
        .ns()
        .run(&["bridge", "fdb", "del", &mac6, "dev", "flannel-v6.1", "dst", &p6, "self"])
        .unwrap();
    let v = assert_broken(&lab, 0, &src, &dst, "fdb", "FDB_MISSING");
    assert!(hop(&v, "fdb")["object"].as_str().unwrap_or_default().contains("flannel-v6.1"), "{v}");
    assert_doctor_names(&lab, "FDB_MISSING");

    // Repaired by flanneld → reachable again.
    lab.restart_flanneld(0).unwrap();
    wait_reachable(&lab, 0, &src, &dst);
}

/// The lease's IPv6 subnet from its key (`<v4>-<len>&<v6>-<len6>`), as `ip -6 route` takes it.
fn subnet6_of(key: &str) -> String {
    let v6 = key.rsplit('&').next().unwrap();
    let (ip, len) = v6.rsplit_once('-').unwrap();
    format!("{ip}/{len}")
}

#[test]
fn ipv6_over_host_gw_then_a_deleted_ipv6_peer_route() {
    require_root();
    let mut lab = Lab::new(PREFIX).unwrap();
    lab.set_backend(weft_lab::Backend::HostGw);
    lab.set_dual_stack(true);
    lab.set_flanneld_args(&["--reconcile-interval=3600"]);
    for _ in 0..2 {
        lab.add_node().unwrap();
    }
    lab.start_etcd(1).unwrap();
    lab.put_network_config().unwrap();
    for i in 0..2 {
        lab.start_flanneld(i).unwrap();
    }
    lab.wait_converged().unwrap();
    // Each node routes the other's IPv6 subnet via its PublicIPv6 on eth0 (`ip -6 route`).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for i in 0..2 {
        loop {
            let r =
                lab.node(i).unwrap().ns().ip_json(&["-6", "route", "show", "proto", "boot", "dev", "eth0"]);
            if r.as_array().is_some_and(|a| a.iter().any(|r| r["gateway"].is_string())) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no IPv6 peer route on node {i}: {r}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    for i in 0..2 {
        lab.use_flannel_cni(i).unwrap();
        lab.add_pod(i).unwrap();
    }
    let (a, b) = (0, 1);
    assert_eq!((lab.pod(a).unwrap().node(), lab.pod(b).unwrap().node()), (0, 1));
    let (src, dst) = (ip6(&lab, a), ip6(&lab, b));
    let lease = lab.lease(1).unwrap().unwrap();
    let p6 = lease.attrs["PublicIPv6"].as_str().unwrap().to_string();

    assert_reachable(&lab, 0, &src, &dst);
    let run = weft(&lab, 0, "path", &["--json", &src, &dst]);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let route = hop(&v, "host-route")["object"].as_str().unwrap_or_default().to_string();
    assert!(route.contains(&format!("via {p6} dev eth0")), "{}", run.stdout);
    let underlay = hop(&v, "underlay")["object"].as_str().unwrap_or_default().to_string();
    assert!(underlay.contains(&format!("{p6} on-link")), "{}", run.stdout);
    assert!(
        hop(&v, "neighbour")["source"].as_str().unwrap_or_default().starts_with("NDISC"),
        "{}",
        run.stdout
    );
    assert_eq!(hop(&v, "remote-node")["node"], lab.node(1).unwrap().ip().to_string(), "{}", run.stdout);
    let (code, _, run) = doctor(&lab);
    assert_eq!(code, Some(0), "{run}");

    // The probe over IPv6 host-gw: the inner ICMPv6 echo seen on each node's uplink, node 1's
    // bridge and the destination pod's veth, and answered.
    let (code, v, out) = probe(&lab, &src, &dst, &[]);
    assert_eq!(code, Some(0), "{out}");
    let p = &v["probe"];
    assert_eq!(
        (&p["answered"], &p["remote_watched"], &p["df_answered"]),
        (&Value::Bool(true), &Value::Bool(true), &Value::Bool(true)),
        "{p}"
    );
    let n1 = lab.node(1).unwrap().ip().to_string();
    assert_host_gw_probe_hops(p, &n1);

    // Break: the peer route `S6 via P6` deleted on node 0.
    let s6 = subnet6_of(&lease.key);
    lab.node(0).unwrap().ns().run(&["ip", "-6", "route", "del", &s6]).unwrap();
    assert_broken(&lab, 0, &src, &dst, "host-route", "NO_ROUTE");
    assert_doctor_names(&lab, "NO_ROUTE");

    lab.restart_flanneld(0).unwrap();
    wait_reachable(&lab, 0, &src, &dst);
}
