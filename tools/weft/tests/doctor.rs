//! `weft doctor` against a real lab (root): three nodes with weft's flanneld (`-debug-dataplane`),
//! a real etcd and a pod per node. Healthy first (exit 0), then one break at a time: the finding
//! names its cause and nodes (exit 1), then the repair (restarting the node's flanneld, as an
//! operator would) makes it healthy again. flanneld runs with a one-hour reconcile period so a
//! break holds while doctor looks at it. Lab namespaces start with `wtsd`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;
use weft_lab::ns::require_root;
use weft_lab::{Lab, Result};

const PREFIX: &str = "wtsd";
const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A 3-node lab whose breaks are not healed behind the test's back.
fn lab(nodes: usize) -> Result<Lab> {
    let mut lab = Lab::new(PREFIX)?;
    for _ in 0..nodes {
        lab.add_node()?;
    }
    lab.start_etcd(1)?;
    lab.put_network_config()?;
    lab.set_flanneld_args(&["--reconcile-interval=3600"]);
    for i in 0..nodes {
        lab.start_flanneld(i)?;
    }
    lab.wait_converged()?;
    for i in 0..nodes {
        lab.use_flannel_cni(i)?;
        lab.add_pod(i)?;
    }
    Ok(lab)
}

/// `weft doctor --json` run on node 0 (any node reaches etcd and the others over the underlay).
fn doctor(lab: &Lab, extra: &[&str]) -> (Option<i32>, Value, String) {
    let eps = lab.etcd().unwrap().endpoints();
    let mut argv =
        vec![WEFT, "doctor", "--json", "--etcd-endpoints", &eps, "--etcd-prefix", lab.etcd_prefix()];
    argv.extend_from_slice(extra);
    let r = lab.node(0).unwrap().ns().exec(&argv);
    let v = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
    (r.status, v, format!("{r}"))
}

fn ip(lab: &Lab, i: usize) -> String {
    lab.node(i).unwrap().ip().to_string()
}

/// The findings with `cause`, as (cause, nodes).
fn findings(v: &Value) -> Vec<(String, Vec<String>)> {
    common::error_findings(v)
}

fn assert_finding(lab: &Lab, cause: &str, nodes: &[usize]) -> Value {
    let (code, v, run) = doctor(lab, &[]);
    assert_eq!(code, Some(1), "{run}");
    let want: Vec<String> = nodes.iter().map(|i| ip(lab, *i)).collect();
    let got = findings(&v);
    assert!(
        got.iter().any(|(c, n)| c == cause && *n == want),
        "want {cause} on {want:?}, got {got:?}\n{run}"
    );
    v
}

fn wait_healthy(lab: &Lab) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, v, run) = doctor(lab, &[]);
        if code == Some(0) {
            assert_eq!(v["healthy"], true);
            assert!(v["dry_run"].as_array().is_some_and(|a| a.is_empty()), "{run}");
            return;
        }
        assert!(Instant::now() < deadline, "never healthy again: {run}\n{}", lab.diagnostics());
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Restarts node `i`'s flanneld (SIGKILL, start, subnet.env): it re-reads etcd and reconciles.
fn restart(lab: &mut Lab, i: usize) {
    lab.restart_flanneld(i).unwrap();
}

#[test]
fn healthy_lab_then_each_f3_break_is_named_and_healed() -> Result<()> {
    require_root();
    let mut lab = lab(3)?;
    let (code, v, run) = doctor(&lab, &[]);
    assert_eq!(code, Some(0), "{run}");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(3), "{run}");
    assert!(findings(&v).is_empty(), "{run}");

    // A peer's FDB entry deleted on node 0: FDB_MISSING on node 0 about node 1, and the dry run
    // is exactly the re-add.
    let mac1 = lab.lease(1)?.unwrap().attrs["BackendData"]["VtepMAC"].as_str().unwrap().to_string();
    let ip1 = ip(&lab, 1);
    lab.node(0)?.ns().run(&["bridge", "fdb", "del", &mac1, "dev", "flannel.1", "dst", &ip1, "self"])?;
    let v = assert_finding(&lab, "FDB_MISSING", &[0]);
    let f = v["findings"].as_array().unwrap().iter().find(|f| f["cause"] == "FDB_MISSING").unwrap();
    assert_eq!(f["peer"], ip1.as_str());
    assert_eq!(f["failure_mode"], "F3");
    assert_eq!(
        v["dry_run"],
        serde_json::json!([{"node": ip(&lab, 0), "ops": [format!("add fdb {mac1} dst {ip1}")]}])
    );
    restart(&mut lab, 0);
    wait_healthy(&lab);

    // A peer route deleted on node 2: NO_ROUTE.
    let s0 = lab.node_subnet(0)?.to_string();
    lab.node(2)?.ns().run(&["ip", "route", "del", &s0])?;
    assert_finding(&lab, "NO_ROUTE", &[2]);
    restart(&mut lab, 2);
    wait_healthy(&lab);

    // Node 1's flannel.1 MAC changed behind flanneld's back, lease not updated.
    lab.node(1)?.ns().run(&["ip", "link", "set", "dev", "flannel.1", "address", "02:11:22:33:44:55"])?;
    let v = assert_finding(&lab, "VTEP_MAC_MISMATCH", &[1]);
    let f = v["findings"].as_array().unwrap().iter().find(|f| f["cause"] == "VTEP_MAC_MISMATCH").unwrap();
    assert!(f["message"].as_str().unwrap().contains("2 nodes send to"), "{f}");
    // flanneld adopts the device, publishes its real MAC, the peers follow.
    restart(&mut lab, 1);
    wait_healthy(&lab);

    // Node 2's lease rewritten in etcd with an old VtepMAC (same etcd lease, so flanneld does
    // not take it as lost): the peers follow etcd, node 2's device does not.
    let lease = lab.lease(2)?.unwrap();
    let real = lease.attrs["BackendData"]["VtepMAC"].as_str().unwrap().to_string();
    let stale = lease.raw.replace(&real, "02:de:ad:be:ef:02");
    let got = lab.etcd()?.ctl(&["get", &lease.key, "-w", "json"]);
    let id: Value = serde_json::from_str(&got.stdout).unwrap();
    let etcd_lease = format!("{:x}", id["kvs"][0]["lease"].as_i64().unwrap());
    lab.etcd()?.ctl(&["put", &lease.key, &stale, &format!("--lease={etcd_lease}")]).expect_ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lab.show_neighbours(0)?.contains("02:de:ad:be:ef:02") {
        assert!(Instant::now() < deadline, "peers never took the stale MAC: {}", lab.show_neighbours(0)?);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_finding(&lab, "LEASE_VTEP_MAC_STALE", &[2]);
    restart(&mut lab, 2);
    wait_healthy(&lab);
    Ok(())
}

#[test]
fn duplicate_lease_stopped_flanneld_and_etcd_down() -> Result<()> {
    require_root();
    let mut lab = lab(3)?;
    wait_healthy(&lab);

    // A second key for node 1's subnet in upstream's dual-stack format, held by a node that
    // does not exist: LEASE_OVERLAP naming both PublicIPs, and the phantom's view unavailable.
    let s1 = lab.node_subnet(1)?;
    let key = format!("{}/subnets/{}-{}&fd00:5::-64", lab.etcd_prefix(), s1.network(), s1.prefix());
    let value = r#"{"PublicIP":"198.18.0.250","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:fa"}}"#;
    lab.etcd()?.put(&key, value)?;
    let (code, v, run) = doctor(&lab, &[]);
    assert_eq!(code, Some(1), "{run}");
    let got = findings(&v);
    assert!(
        got.iter().any(|(c, n)| c == "LEASE_OVERLAP" && *n == [ip(&lab, 1), "198.18.0.250".to_string()]),
        "{got:?}\n{run}"
    );
    assert!(got.iter().any(|(c, n)| c == "REMOTE_VIEW_UNAVAILABLE" && *n == ["198.18.0.250"]), "{got:?}");
    lab.etcd()?.del(&key)?;
    // Deleting the duplicate made the peers drop node 1 (the key names its subnet): a restart
    // re-reads etcd.
    restart(&mut lab, 0);
    restart(&mut lab, 2);
    wait_healthy(&lab);

    // Node 2's flanneld stopped: its view is unavailable, nothing else is claimed about it.
    lab.stop_flanneld(2)?;
    let (code, v, run) = doctor(&lab, &["--timeout-ms=1000"]);
    assert_eq!(code, Some(1), "{run}");
    assert_eq!(findings(&v), vec![("REMOTE_VIEW_UNAVAILABLE".to_string(), vec![ip(&lab, 2)])], "{run}");
    lab.start_flanneld(2)?;
    lab.wait_subnet_env(2)?;
    wait_healthy(&lab);

    // Text and picture outputs of a healthy lab.
    let eps = lab.etcd()?.endpoints();
    let r = lab.node(0)?.ns().exec(&[WEFT, "doctor", "--dot", "-etcd-endpoints", &eps]);
    assert_eq!(r.status, Some(0), "{r}");
    assert!(r.stdout.starts_with("digraph weft {") && r.stdout.contains("darkgreen"), "{r}");
    let r = lab.node(0)?.ns().exec_with(&[WEFT, "doctor"], &[("FLANNELD_ETCD_ENDPOINTS", eps.as_str())], b"");
    assert_eq!(r.status, Some(0), "{r}");
    assert!(r.stdout.contains("\nhealthy"), "{r}");

    // etcd down: exit 2 naming what could not be read, no panic.
    lab.etcd_mut()?.stop();
    let (code, _, run) = doctor(&lab, &[]);
    assert_eq!(code, Some(2), "{run}");
    assert!(run.contains("cannot read etcd at") && !run.contains("panicked"), "{run}");
    Ok(())
}
