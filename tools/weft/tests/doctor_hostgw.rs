//! `weft doctor` on a three-node host-gw lab: the underlay neighbour entries of the external
//! interface, from each node's view (`underlay_neighbours`), against the peers' interface MACs
//! (from their views). Node 0's entry for node 2 with a wrong MAC is `UNDERLAY_NEIGH_MAC_STALE`
//! on node 0; node 2 not answering node 0's ARP (an nftables `arp` rule on node 2) is
//! `UNDERLAY_NEIGH_FAILED` on node 0. doctor runs on node 1, which still reaches both views.
//! Needs root and the built binaries; never skipped. Lab namespaces start with `wtVH`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{error_findings, on, Findings};
use serde_json::Value;
use weft_lab::ns::require_root;
use weft_lab::{Backend, FlannelSpec, Lab};

const PREFIX: &str = "wtVH";

/// `weft doctor --json` on node 1: (exit status, error findings, output).
fn findings(lab: &Lab) -> (Option<i32>, Findings, String) {
    let eps = lab.etcd().unwrap().endpoints();
    let argv = [
        env!("CARGO_BIN_EXE_weft"),
        "doctor",
        "--json",
        "--etcd-endpoints",
        &eps,
        "--etcd-prefix",
        lab.etcd_prefix(),
    ];
    let r = lab.node(1).unwrap().ns().exec(&argv);
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
    (r.status, error_findings(&v), format!("{}\n{}", r.stdout, r.stderr))
}

#[test]
fn doctor_names_failed_and_stale_underlay_neighbours_on_host_gw() {
    require_root();
    let spec = FlannelSpec { nodes: 3, pods_per_node: 1, etcd_members: 1 };
    let lab = Lab::flannel_backend(PREFIX, spec, Backend::HostGw, &[]).unwrap();
    let n0 = lab.node(0).unwrap().ip().to_string();
    let n2 = lab.node(2).unwrap().ip().to_string();
    let (code, list, all) = findings(&lab);
    assert_eq!(code, Some(0), "{all}");
    assert!(list.is_empty(), "{all}");

    // A hand-made entry for node 2 on node 0 with another MAC than node 2's eth0.
    let wrong =
        ["ip", "neigh", "replace", &n2, "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "permanent"];
    on(&lab, 0, &wrong);
    let (code, list, all) = findings(&lab);
    assert_eq!(code, Some(1), "{all}");
    assert_eq!(list, vec![("UNDERLAY_NEIGH_MAC_STALE".to_string(), vec![n0.clone()])], "{all}");
    assert!(all.contains(&format!("holds MAC 02:00:00:00:00:99 for node {n2}")), "{all}");
    on(&lab, 0, &["ip", "neigh", "del", &n2, "dev", "eth0"]);
    let (code, _, all) = findings(&lab);
    assert_eq!(code, Some(0), "{all}");

    // Node 2 ignores ARP from node 0: node 0's entry for it fails once traffic asks for it.
    let table = "wtVHarp";
    on(&lab, 2, &["nft", "add", "table", "arp", table]);
    on(&lab, 2, &["nft", "add", "chain", "arp", table, "in", "{ type filter hook input priority 0 ; }"]);
    on(&lab, 2, &["nft", "add", "rule", "arp", table, "in", "arp", "saddr", "ip", &n0, "drop"]);
    on(&lab, 0, &["ip", "neigh", "flush", "dev", "eth0", "to", &n2]);
    let _ = lab.node(0).unwrap().ns().exec(&["ping", "-c", "1", "-W", "3", &n2]);
    let (code, list, all) = findings(&lab);
    assert_eq!(code, Some(1), "{all}");
    assert!(list.contains(&("UNDERLAY_NEIGH_FAILED".to_string(), vec![n0.clone()])), "{all}");
    assert!(all.contains(&format!("cannot resolve node {n2} on the underlay")), "{all}");
    on(&lab, 2, &["nft", "delete", "table", "arp", table]);
    on(&lab, 0, &["ip", "neigh", "flush", "dev", "eth0", "to", &n2]);
    let (code, _, all) = findings(&lab);
    assert_eq!(code, Some(0), "{all}");
}
