//! `weft doctor` on a dual-stack VXLAN lab (root): two nodes with weft's flanneld
//! (`-debug-dataplane`), `flannel-v6.1` on each. Healthy first (exit 0); then node 1's IPv6 FDB
//! entry deleted on node 0: `FDB_MISSING` on node 0 with `"family": "ipv6"` and the re-add in
//! the dry run (exit 1); a flanneld restart repairs it. flanneld runs with a one-hour reconcile
//! period so the break holds while doctor looks. Lab namespaces start with `wtW6`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;
use weft_lab::ns::require_root;
use weft_lab::scenario::FlannelSpec;
use weft_lab::{Lab, Result};

const PREFIX: &str = "wtW6";
const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn doctor(lab: &Lab) -> (Option<i32>, Value, String) {
    let eps = lab.etcd().unwrap().endpoints();
    let argv = [WEFT, "doctor", "--json", "--etcd-endpoints", &eps, "--etcd-prefix", lab.etcd_prefix()];
    let r = lab.node(0).unwrap().ns().exec(&argv);
    let v = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
    (r.status, v, format!("{r}"))
}

fn wait_healthy(lab: &Lab) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, v, run) = doctor(lab);
        if code == Some(0) {
            assert!(v["dry_run"].as_array().is_some_and(|a| a.is_empty()), "{run}");
            return;
        }
        assert!(Instant::now() < deadline, "never healthy: {run}\n{}", lab.diagnostics());
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn dual_stack_healthy_then_a_deleted_ipv6_fdb_entry_is_named_and_healed() -> Result<()> {
    require_root();
    let spec = FlannelSpec { nodes: 2, pods_per_node: 1, etcd_members: 1 };
    let mut lab = Lab::flannel_dual_stack(PREFIX, spec, &["--reconcile-interval=3600"])?;
    wait_healthy(&lab);
    let (_, v, run) = doctor(&lab);
    assert!(v["nodes"].as_array().unwrap().iter().all(|n| !n["ipv6_device"].is_null()), "{run}");

    let lease = lab.lease(1)?.unwrap();
    let mac6 = lease.attrs["BackendV6Data"]["VtepMAC"].as_str().unwrap().to_string();
    let p6 = lease.attrs["PublicIPv6"].as_str().unwrap().to_string();
    lab.node(0)?.ns().run(&["bridge", "fdb", "del", &mac6, "dev", "flannel-v6.1", "dst", &p6, "self"])?;

    let (code, v, run) = doctor(&lab);
    assert_eq!(code, Some(1), "{run}");
    let (n0, n1) = (lab.node(0)?.ip().to_string(), lab.node(1)?.ip().to_string());
    let errors = common::error_findings(&v);
    assert_eq!(errors, vec![("FDB_MISSING".to_string(), vec![n0.clone()])], "{run}");
    let f = &v["findings"][0];
    assert_eq!((f["family"].as_str(), f["peer"].as_str()), (Some("ipv6"), Some(n1.as_str())), "{run}");
    assert_eq!(
        v["dry_run"],
        serde_json::json!([{"node": n0, "ops": [format!("add fdb {mac6} dst {p6}")]}]),
        "{run}"
    );

    lab.restart_flanneld(0)?;
    wait_healthy(&lab);
    Ok(())
}
