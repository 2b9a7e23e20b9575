//! A dual-stack lab switched from vxlan to host-gw by a network config change and a restart of
//! each node's flanneld (issue 12, docs/flannel.md §4.2): afterwards no node has a
//! `flannel.<N>` / `flannel-v6.<N>` device, nor any route or neighbour on one (IPv4 or IPv6);
//! every node routes every other node's subnets via its addresses on eth0, keeps its subnets,
//! publishes upstream's dual-stack host-gw lease, and pods keep reaching each other over both
//! families. Kernel state is read back with `ip -j`. Needs root and the built binaries.

// Test helpers outside #[test] fns panic on broken invariants on purpose.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)] // helpers shared by the lab tests; this one uses a few
mod common;

use std::time::Duration;

use serde_json::Value;
use weft_lab::dual::node_ip6;
use weft_lab::ns::require_root;
use weft_lab::{Backend, FlannelSpec, Lab, Result};

const PREFIX: &str = "wtSW";
const NODES: usize = 2;

/// `ip -j <args>` on node `i` as a list (empty when the kernel lists nothing).
fn list(lab: &Lab, i: usize, args: &[&str]) -> Result<Vec<Value>> {
    Ok(lab.node(i)?.ns().try_ip_json(args)?.as_array().cloned().unwrap_or_default())
}

/// Entries of `ip -j <args>` on node `i` on a flannel VXLAN device (`flannel.*`, `flannel-v6.*`).
fn on_flannel_devices(lab: &Lab, i: usize, args: &[&str]) -> Result<Vec<Value>> {
    Ok(list(lab, i, args)?
        .into_iter()
        .filter(|e| e["dev"].as_str().is_some_and(|d| d.starts_with("flannel")))
        .collect())
}

/// Whether node `on` routes node `peer`'s subnets of both families via its addresses on eth0.
fn routed_both(lab: &Lab, on: usize, peer: usize) -> Result<bool> {
    let via = |family: &str, dst: String, gw: String| -> Result<bool> {
        Ok(list(lab, on, &[family, "route", "show", &dst])?
            .iter()
            .any(|r| r["gateway"].as_str() == Some(gw.as_str()) && r["dev"] == "eth0"))
    };
    let ip6 = node_ip6(peer).expect("lab node").to_string();
    Ok(via("-4", lab.node_subnet(peer)?.to_string(), lab.node(peer)?.ip().to_string())?
        && via("-6", lab.node_subnet6(peer)?.to_string(), ip6)?)
}

#[test]
fn switching_a_dual_stack_vxlan_lab_to_host_gw_leaves_no_vxlan_state_and_pods_keep_talking() -> Result<()> {
    require_root();
    let spec = FlannelSpec { nodes: NODES, pods_per_node: 1, etcd_members: 1 };
    let mut lab = Lab::flannel_dual_stack(PREFIX, spec, &["--reconcile-interval=2"])?;
    for i in 0..NODES {
        assert_eq!(
            list(&lab, i, &["-d", "link", "show", "type", "vxlan"])?.len(),
            2,
            "node {i}: both devices"
        );
        assert!(
            !on_flannel_devices(&lab, i, &["-6", "route", "show"])?.is_empty(),
            "node {i}: IPv6 VXLAN routes"
        );
    }
    assert_eq!(lab.pods().len(), NODES);
    for p in lab.pods() {
        assert!(p.ip6().is_some(), "{} has an IPv6 address", p.ns().name());
    }
    common::ping_both(&lab, "over vxlan")?;
    let subnets: Vec<_> =
        (0..NODES).map(|i| Ok((lab.node_subnet(i)?, lab.node_subnet6(i)?))).collect::<Result<_>>()?;

    lab.set_backend(Backend::HostGw);
    lab.put_network_config()?;
    for i in 0..NODES {
        lab.stop_flanneld(i)?;
        lab.start_flanneld(i)?;
        lab.wait_subnet_env(i)?;
    }
    lab.wait_converged()?;
    for on in 0..NODES {
        for peer in (0..NODES).filter(|&p| p != on) {
            let what = format!("node {on} routes node {peer} over both families");
            weft_lab::wait::until_true(&what, Duration::from_secs(30), || routed_both(&lab, on, peer))?;
        }
    }
    for (i, (subnet, subnet6)) in subnets.iter().enumerate() {
        let links = list(&lab, i, &["-d", "link", "show", "type", "vxlan"])?;
        assert!(links.is_empty(), "node {i}: VXLAN devices left: {links:?}");
        for args in [
            ["-4", "route", "show"],
            ["-6", "route", "show"],
            ["-4", "neigh", "show"],
            ["-6", "neigh", "show"],
        ] {
            let left = on_flannel_devices(&lab, i, &args)?;
            assert!(left.is_empty(), "node {i}: `ip {}` left on a VXLAN device: {left:?}", args.join(" "));
        }
        assert_eq!(
            (lab.node_subnet(i)?, lab.node_subnet6(i)?),
            (*subnet, *subnet6),
            "node {i} kept its subnets"
        );
        assert_eq!(lab.subnet_env(i)?.expect("subnet.env").mtu, 1500);
        let (ip, ip6) = (lab.node(i)?.ip(), node_ip6(i).expect("lab node"));
        assert_eq!(
            lab.lease(i)?.expect("lease").raw,
            format!(r#"{{"PublicIP":"{ip}","PublicIPv6":"{ip6}","BackendType":"host-gw"}}"#)
        );
    }
    common::ping_both(&lab, "after the switch to host-gw")?;
    common::tcp_both(&mut lab, "after the switch to host-gw")
}
