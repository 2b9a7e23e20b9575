//! The lab dual stack (IPv4 + IPv6 VXLAN) with weft's flanneld: `flannel-v6.1` on every node,
//! every pod reaches every pod over both families, a deleted IPv6 peer route is healed by the
//! reconciliation. Kernel state is read back with `ip -j`. Needs root and the built binaries.

// Test helpers outside #[test] fns panic on broken invariants on purpose.
#![allow(clippy::unwrap_used)]

mod common;

use common::ping_all;

use std::time::Duration;

use weft_lab::dual::{node_ip6, VXLAN6_DEV};
use weft_lab::ns::require_root;
use weft_lab::{FlannelSpec, Lab, Result};

const PREFIX: &str = "wtDS";

#[test]
fn every_pod_pings_every_pod_over_ipv4_and_ipv6_and_a_deleted_v6_route_heals() -> Result<()> {
    require_root();
    let spec = FlannelSpec { nodes: 3, pods_per_node: 1, etcd_members: 1 };
    let mut lab = Lab::flannel_dual_stack(PREFIX, spec, &["--reconcile-interval=2"])?;
    for i in 0..3 {
        let ns = lab.node(i)?.ns();
        let link = ns.try_ip_json(&["-d", "link", "show", "dev", VXLAN6_DEV])?;
        let d = &link[0]["linkinfo"]["info_data"];
        assert_eq!(d["local6"].as_str(), node_ip6(i).map(|a| a.to_string()).as_deref(), "node {i}: {link}");
        assert_eq!(link[0]["mtu"], 1430, "underlay 1500 − 70");
        let env = lab.subnet_env(i)?.expect("subnet.env");
        assert_eq!(env.mtu, 1430, "the MTU that fits both families");
        let lease = lab.lease(i)?.expect("lease");
        assert_eq!(lease.attrs["PublicIPv6"].as_str(), node_ip6(i).map(|a| a.to_string()).as_deref());
        assert!(lease.attrs["BackendV6Data"]["VtepMAC"].is_string(), "{}", lease.raw);
        assert_eq!(lab.flanneld_http(i, "/healthz")?.0, 200, "node {i} healthy");
    }
    for p in lab.pods() {
        assert!(p.ip6().is_some(), "{} has an IPv6 address", p.ns().name());
        assert_eq!(p.mtu()?, 1430);
    }
    ping_all(&lab)?;
    let m6 = lab.ping_matrix6()?;
    assert!(m6.all_ok(), "IPv6 ping matrix:\n{m6}\n{}", lab.diagnostics());

    // `ip -6 route del` of a peer route on node 0: the reconciliation puts it back.
    let peer = lab.node_subnet6(1)?;
    lab.node(0)?.ns().run(&["ip", "-6", "route", "del", &peer.to_string(), "dev", VXLAN6_DEV])?;
    assert!(!lab.flannel6_routes(0)?.contains(&peer));
    weft_lab::wait::until_true("IPv6 peer route healed", Duration::from_secs(30), || {
        Ok(lab.flannel6_routes(0)?.contains(&peer))
    })?;
    let to = lab.pods().iter().find(|p| p.node() == 1).and_then(|p| p.ip6()).expect("a pod on node 1");
    let from = lab.pods().iter().position(|p| p.node() == 0).expect("a pod on node 0");
    weft_lab::wait::until_true("IPv6 ping after healing", Duration::from_secs(10), || {
        Ok(lab.pod(from)?.ping_once_ip(to.into(), None))
    })?;

    // flanneld SIGKILLed and restarted keeps both subnets; both families keep talking.
    let subnet6 = lab.node_subnet6(0)?;
    common::crash_and_restart_keeps_subnet(&mut lab, 0, 1)?;
    assert_eq!(lab.node_subnet6(0)?, subnet6, "IPv6 subnet kept");
    lab.wait_converged6()?;
    ping_all(&lab)?;
    let m6 = lab.ping_matrix6()?;
    assert!(m6.all_ok(), "IPv6 ping matrix after the restart:\n{m6}\n{}", lab.diagnostics());
    Ok(())
}

#[test]
fn a_dual_stack_node_joins_and_leaves() -> Result<()> {
    require_root();
    let spec = FlannelSpec { nodes: 2, pods_per_node: 1, etcd_members: 1 };
    let mut lab = Lab::flannel_dual_stack(PREFIX, spec, &["--reconcile-interval=2"])?;
    let new = lab.add_node()?;
    lab.start_flanneld(new)?;
    lab.wait_subnet_env(new)?;
    lab.wait_converged()?;
    lab.wait_converged6()?;
    lab.use_flannel_cni(new)?;
    let pod = lab.add_pod(new)?;
    ping_all(&lab)?;
    let m6 = lab.ping_matrix6()?;
    assert!(m6.all_ok(), "IPv6 ping matrix with the new node:\n{m6}\n{}", lab.diagnostics());

    // It leaves: its IPv6 routes go from the others, its pod is unreachable over IPv6.
    let subnet6 = lab.node_subnet6(new)?;
    let pod6 = lab.pod(pod)?.ip6().expect("IPv6 address");
    assert_eq!(lab.stop_flanneld(new)?, Some(0));
    lab.delete_lease(new)?;
    for on in 0..2 {
        weft_lab::wait::until_true(
            "IPv6 route of the leaving node to vanish",
            Duration::from_secs(30),
            || Ok(!lab.flannel6_routes(on)?.contains(&subnet6)),
        )?;
        let neighs = lab.node(on)?.ns().try_ip_json(&[
            "-6",
            "neigh",
            "show",
            "dev",
            VXLAN6_DEV,
            "nud",
            "permanent",
        ])?;
        let gw = subnet6.network().to_string();
        assert!(!neighs.to_string().contains(&gw), "node {on} keeps the neighbour {gw}: {neighs}");
    }
    assert!(!lab.pod(0)?.ping_once_ip(pod6.into(), None));
    Ok(())
}
