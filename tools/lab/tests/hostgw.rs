//! The lab with weft's flanneld on the host-gw backend: every pod reaches every pod over plain
//! routes `S via <node> dev eth0`, membership changes, a deleted route healed, a crash, a
//! cluster switched from vxlan, and a peer that is not on the L2 segment. Kernel state is read
//! back with `ip -j`. Needs root and the built binaries (a missing one fails the test).

// Test helpers outside #[test] fns panic on broken invariants on purpose.
#![allow(clippy::unwrap_used)]

mod common;

use common::ping_all;

use std::time::Duration;

use weft_lab::ns::require_root;
use weft_lab::{Backend, FlannelSpec, Lab, LabError, Result};

const PREFIX: &str = "wtHG";

fn spec(nodes: usize, pods_per_node: usize) -> FlannelSpec {
    FlannelSpec { nodes, pods_per_node, etcd_members: 1 }
}

/// A host-gw lab; a short reconcile period so healing is seen within seconds.
fn host_gw_lab(nodes: usize, pods: usize) -> Result<Lab> {
    Lab::flannel_backend(PREFIX, spec(nodes, pods), Backend::HostGw, &["--reconcile-interval=2"])
}

/// Node `on` routes node `peer`'s subnet via `peer`'s underlay address on eth0 (`ip -j`).
fn assert_routed(lab: &Lab, on: usize, peer: usize) -> Result<()> {
    let subnet = lab.node_subnet(peer)?;
    let via = lab.node(peer)?.ip();
    let routes = lab.host_gw_routes(on)?;
    assert!(routes.contains(&(subnet, via)), "node {on} lacks {subnet} via {via}: {routes:?}");
    Ok(())
}

#[test]
fn every_pod_pings_every_pod_over_host_gw_routes() -> Result<()> {
    require_root();
    let mut lab = host_gw_lab(3, 2)?;
    for i in 0..3 {
        assert!(!lab.has_vxlan_device(i)?, "host-gw creates no flannel.1 on node {i}");
        let env = lab.subnet_env(i)?.expect("subnet.env");
        assert_eq!(env.mtu, 1500, "the interface MTU, no overhead");
        let lease = lab.lease(i)?.expect("lease");
        // Exactly what an upstream host-gw node writes: no BackendData key at all.
        assert_eq!(
            lease.raw,
            format!(r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"host-gw"}}"#, lab.node(i)?.ip())
        );
        for peer in (0..3).filter(|&p| p != i) {
            assert_routed(&lab, i, peer)?;
        }
        assert_eq!(lab.flanneld_http(i, "/healthz")?.0, 200, "node {i} healthy");
    }
    for p in lab.pods() {
        assert_eq!(p.mtu()?, 1500);
    }
    ping_all(&lab)?;
    common::tcp_all(&mut lab, "over host-gw routes")?;

    // A node joins, gets routed by everyone, its pod talks; then it leaves and its routes go.
    let new = lab.add_node()?;
    lab.start_flanneld(new)?;
    lab.wait_subnet_env(new)?;
    lab.wait_converged()?;
    lab.use_flannel_cni(new)?;
    let pod = lab.add_pod(new)?;
    ping_all(&lab)?;
    for on in 0..3 {
        assert_routed(&lab, on, new)?;
    }
    let subnet = lab.node_subnet(new)?;
    let pod_ip = lab.pod(pod)?.ip();
    assert_eq!(lab.stop_flanneld(new)?, Some(0));
    lab.delete_lease(new)?;
    for on in 0..3 {
        lab.wait_route(on, subnet, false, Duration::from_secs(30))?;
    }
    assert!(!lab.pod(0)?.ping_once(pod_ip, None));
    Ok(())
}

#[test]
fn a_deleted_route_is_healed_and_a_killed_flanneld_keeps_its_subnet() -> Result<()> {
    require_root();
    let mut lab = host_gw_lab(2, 1)?;
    let subnet1 = lab.node_subnet(1)?.to_string();
    lab.node(0)?.ns().run(&["ip", "route", "del", &subnet1])?;
    lab.wait_route(0, lab.node_subnet(1)?, true, Duration::from_secs(30))?;
    assert_routed(&lab, 0, 1)?;

    common::crash_and_restart_keeps_subnet(&mut lab, 0, 1)?;
    assert_routed(&lab, 0, 1)?;
    assert_routed(&lab, 1, 0)?;
    ping_all(&lab)
}

#[test]
fn switching_a_vxlan_lab_to_host_gw_by_config_and_restarts_leaves_no_vxlan_state() -> Result<()> {
    require_root();
    let mut lab = Lab::flannel(PREFIX, spec(2, 1))?;
    let subnets: Vec<_> = (0..2).map(|i| lab.node_subnet(i)).collect::<Result<_>>()?;
    assert!(lab.has_vxlan_device(0)? && lab.has_vxlan_device(1)?);
    lab.set_backend(Backend::HostGw);
    lab.put_network_config()?;
    for i in 0..2 {
        lab.stop_flanneld(i)?;
        lab.start_flanneld(i)?;
        lab.wait_subnet_env(i)?;
    }
    lab.wait_converged()?;
    for (i, subnet) in subnets.iter().enumerate() {
        assert!(!lab.has_vxlan_device(i)?, "flannel.1 left behind on node {i}");
        let links = lab.node(i)?.ns().try_ip_json(&["-d", "link", "show", "type", "vxlan"])?;
        assert_eq!(links.as_array().map(Vec::len), Some(0), "node {i}: {links}");
        assert_eq!(lab.node_subnet(i)?, *subnet, "node {i} kept its subnet");
        assert_eq!(lab.subnet_env(i)?.expect("subnet.env").mtu, 1500);
        assert_eq!(lab.lease(i)?.expect("lease").attrs["BackendType"], "host-gw");
    }
    assert_routed(&lab, 0, 1)?;
    assert_routed(&lab, 1, 0)?;
    ping_all(&lab)
}

#[test]
fn a_peer_not_on_the_l2_segment_is_reported_in_healthz_and_skipped() -> Result<()> {
    require_root();
    let lab = host_gw_lab(2, 1)?;
    // A host-gw lease whose node sits behind a router: no on-link route to it on eth0.
    let key = format!("{}/subnets/10.244.200.0-24", lab.etcd_prefix());
    let value = r#"{"PublicIP":"203.0.113.9","PublicIPv6":null,"BackendType":"host-gw"}"#;
    lab.etcd()?.put(&key, value)?;
    let (code, body) = weft_lab::wait::until(
        "off-link peer reported",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let r = lab.flanneld_http(0, "/healthz")?;
            Ok((r.0 == 503).then_some(r))
        },
    )?;
    assert_eq!(code, 503);
    assert!(
        body.contains("not on the same L2 segment") && body.contains("10.244.200.0/24 via 203.0.113.9"),
        "{body}"
    );
    let routes = lab.host_gw_routes(0)?;
    assert!(!routes.iter().any(|(d, _)| d.to_string() == "10.244.200.0/24"), "{routes:?}");
    let log = lab.node(0)?.flanneld_log();
    assert!(log.contains("not on the same L2 segment"), "no WARN in the log:\n{log}");
    // The real peers are unaffected; once the lease goes, the node is healthy again.
    assert_routed(&lab, 0, 1)?;
    lab.etcd()?.del(&key)?;
    weft_lab::wait::until_true("healthy again", Duration::from_secs(30), || {
        Ok(lab.flanneld_http(0, "/healthz")?.0 == 200)
    })
    .map_err(|e| LabError::Invalid(format!("{e}\n{}", lab.diagnostics())))?;
    ping_all(&lab)
}
