//! `weft path` over IPv6 in a dual-stack VXLAN lab (root): two nodes with weft's flanneld
//! (`-debug-dataplane`, `flannel-v6.1` on each), two pods per node. IPv6 pod → IPv6 pod on the
//! other node is `reachable` through `flannel-v6.1` (neighbour, FDB to the peer's PublicIPv6,
//! the remote `flannel-v6.1`); same-node pods by netns path with `--family 6`; `doctor` exit 0.
//! The peer's IPv6 FDB entry deleted: `path` names `FDB_MISSING` on the `fdb` hop of
//! `flannel-v6.1` and `doctor` names it too; a flanneld restart repairs it → reachable.
//! flanneld runs with a one-hour reconcile period so the break holds. Namespaces: `wtW6`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_broken, assert_reachable, wait_reachable, weft};
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
    let (code, d, run) = doctor(&lab);
    assert_eq!(code, Some(1), "{run}");
    let n0 = lab.node(0).unwrap().ip().to_string();
    assert_eq!(common::error_findings(&d), vec![("FDB_MISSING".to_string(), vec![n0])], "{run}");
    assert_eq!(d["findings"][0]["family"], "ipv6", "{run}");

    // Repaired by flanneld → reachable again.
    lab.restart_flanneld(0).unwrap();
    wait_reachable(&lab, 0, &src, &dst);
}
