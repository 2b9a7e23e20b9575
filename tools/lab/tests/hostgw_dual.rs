//! The lab dual stack on the host-gw backend with weft's flanneld: no VXLAN device; every node
//! routes every other node's IPv4 subnet via its IPv4 address and its IPv6 subnet via its IPv6
//! address on eth0 (upstream `pkg/backend/hostgw/hostgw.go`), every pod reaches every pod over
//! both families, an `ip -6 route del` of a peer route is healed by the reconciliation, and a
//! SIGKILLed flanneld restarts with both subnets.
//! Kernel state is read back with `ip -j`. Needs root and the built binaries.

// Test helpers outside #[test] fns panic on broken invariants on purpose.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv6Addr;
use std::time::Duration;

use ipnetwork::Ipv6Network;
use weft_lab::dual::node_ip6;
use weft_lab::ns::require_root;
use weft_lab::{Backend, FlannelSpec, Lab, Result};

const PREFIX: &str = "wtHD";

/// A dual-stack host-gw lab of `nodes` nodes with `pods` pods each, attached once every node
/// routes every other node over both families (so each pod gets both addresses).
fn dual_host_gw_lab(nodes: usize, pods: usize) -> Result<Lab> {
    let spec = FlannelSpec { nodes, pods_per_node: pods, etcd_members: 1 };
    Lab::flannel_dual_stack_backend(PREFIX, spec, Backend::HostGw, &["--reconcile-interval=2"])
}

/// Node `on`'s route `<peer's IPv6 subnet> via <peer's IPv6 address>`.
fn route6_of(lab: &Lab, peer: usize) -> Result<(Ipv6Network, Ipv6Addr)> {
    Ok((lab.node_subnet6(peer)?, node_ip6(peer).expect("lab node")))
}

/// Waits until node `on` has (`present`) or no longer has the IPv6 route to node `peer`.
fn wait_route6(lab: &Lab, on: usize, peer: usize, present: bool) -> Result<()> {
    let want = route6_of(lab, peer)?;
    let what = format!("IPv6 route {} via {} on node {on} present={present}", want.0, want.1);
    weft_lab::wait::until_true(&what, Duration::from_secs(30), || {
        Ok(lab.host_gw_routes6(on)?.contains(&want) == present)
    })
}

#[test]
fn every_pod_pings_every_pod_over_ipv4_and_ipv6_host_gw_routes_and_a_deleted_v6_route_heals() -> Result<()> {
    require_root();
    let mut lab = dual_host_gw_lab(3, 1)?;
    for i in 0..3 {
        assert!(!lab.has_vxlan_device(i)?, "host-gw creates no VXLAN device on node {i}");
        let links = lab.node(i)?.ns().try_ip_json(&["-d", "link", "show", "type", "vxlan"])?;
        assert_eq!(links.as_array().map(Vec::len), Some(0), "node {i}: {links}");
        let env = lab.subnet_env(i)?.expect("subnet.env");
        assert_eq!(env.mtu, 1500, "the interface MTU, no overhead");
        // What upstream's host-gw writes dual stack: PublicIPv6, no BackendData/BackendV6Data.
        let lease = lab.lease(i)?.expect("lease");
        let (ip, ip6) = (lab.node(i)?.ip(), node_ip6(i).expect("lab node"));
        assert_eq!(
            lease.raw,
            format!(r#"{{"PublicIP":"{ip}","PublicIPv6":"{ip6}","BackendType":"host-gw"}}"#)
        );
        assert!(lease.key.contains('&'), "dual-stack key: {}", lease.key);
        let have = lab.host_gw_routes6(i)?;
        for peer in (0..3).filter(|&p| p != i) {
            let want = route6_of(&lab, peer)?;
            assert!(have.contains(&want), "node {i} lacks {} via {}: {have:?}", want.0, want.1);
        }
        assert_eq!(have.len(), 2, "node {i}: only its peers' routes: {have:?}");
        assert_eq!(lab.flanneld_http(i, "/healthz")?.0, 200, "node {i} healthy");
    }
    for p in lab.pods() {
        assert!(p.ip6().is_some(), "{} has an IPv6 address", p.ns().name());
    }
    common::ping_both(&lab, "at start")?;
    common::tcp_both(&mut lab, "at start")?;

    // `ip -6 route del` of a peer route on node 0: the reconciliation puts it back.
    let (subnet, via) = route6_of(&lab, 1)?;
    lab.node(0)?.ns().run(&["ip", "-6", "route", "del", &subnet.to_string(), "via", &via.to_string()])?;
    assert!(!lab.host_gw_routes6(0)?.contains(&(subnet, via)));
    wait_route6(&lab, 0, 1, true)?;
    let to = lab.pods().iter().find(|p| p.node() == 1).and_then(|p| p.ip6()).expect("a pod on node 1");
    let from = lab.pods().iter().position(|p| p.node() == 0).expect("a pod on node 0");
    weft_lab::wait::until_true("IPv6 ping after healing", Duration::from_secs(10), || {
        Ok(lab.pod(from)?.ping_once_ip(to.into(), None))
    })?;

    // flanneld on node 2 SIGKILLed and restarted keeps both subnets (its peers' IPv6 routes
    // to it never change); both families keep talking.
    let before: Vec<_> = (0..2).map(|on| lab.host_gw_routes6(on)).collect::<Result<_>>()?;
    common::crash_and_restart_keeps_subnet(&mut lab, 2, 0)?;
    for (on, routes) in before.iter().enumerate() {
        assert_eq!(lab.host_gw_routes6(on)?, *routes, "node {on}'s IPv6 routes");
        wait_route6(&lab, 2, on, true)?;
    }
    common::ping_both(&lab, "after the restart")
}

#[test]
fn a_dual_stack_host_gw_node_joins_and_leaves() -> Result<()> {
    require_root();
    let mut lab = dual_host_gw_lab(2, 1)?;
    // A node joins: every other node routes both of its subnets, and its pod talks both ways.
    let new = lab.add_node()?;
    lab.start_flanneld(new)?;
    lab.wait_subnet_env(new)?;
    lab.wait_converged()?;
    for on in 0..2 {
        wait_route6(&lab, on, new, true)?;
        wait_route6(&lab, new, on, true)?;
    }
    lab.use_flannel_cni(new)?;
    let pod = lab.add_pod(new)?;
    common::ping_both(&lab, "with the new node")?;

    // It leaves: both of its routes go from the others, its pod is unreachable over IPv6.
    let subnet = lab.node_subnet(new)?;
    let route6 = route6_of(&lab, new)?;
    let pod6 = lab.pod(pod)?.ip6().expect("IPv6 address");
    assert_eq!(lab.stop_flanneld(new)?, Some(0));
    lab.delete_lease(new)?;
    for on in 0..2 {
        weft_lab::wait::until_true(
            "the leaving node's IPv6 route to vanish",
            Duration::from_secs(30),
            || Ok(!lab.host_gw_routes6(on)?.contains(&route6)),
        )?;
        lab.wait_route(on, subnet, false, Duration::from_secs(30))?;
        assert_eq!(lab.host_gw_routes6(on)?.len(), 1, "node {on}: only the remaining peer's IPv6 route");
    }
    assert!(!lab.pod(0)?.ping_once_ip(pod6.into(), None));
    Ok(())
}
