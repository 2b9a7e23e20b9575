//! The lab with weft's flanneld on every node: overlay connectivity, membership changes,
//! crashes, etcd outages and failover, reconciliation, and a TCP stream at the overlay MTU.
//! Needs root and the built binaries (`flanneld`, `flannel`, `bridge`, `host-local`): a missing
//! one fails the test with its name, it is never skipped.

// Test helpers outside #[test] fns panic on broken invariants on purpose.
#![allow(clippy::unwrap_used)]

mod common;

use common::ping_all;

use std::time::Duration;

use weft_lab::flannel::VXLAN_DEV;
use weft_lab::ns::require_root;
use weft_lab::{FlannelSpec, Lab, LabError, Result};

const PREFIX: &str = "wtlab";

fn spec(nodes: usize, pods_per_node: usize) -> FlannelSpec {
    FlannelSpec { nodes, pods_per_node, etcd_members: 1 }
}

/// Node `on` carries exactly the §8.5 triple for node `peer`: route `S via S.0 dev flannel.1
/// onlink`, neighbour `S.0 → VtepMAC`, FDB `VtepMAC dst PublicIP`.
fn assert_programmed(lab: &Lab, on: usize, peer: usize) -> Result<()> {
    let lease = lab.lease(peer)?.ok_or_else(|| LabError::Invalid(format!("node {peer} has no lease")))?;
    let mac = lease.attrs["BackendData"]["VtepMAC"].as_str().unwrap_or_default().to_lowercase();
    let gw = lease.subnet.network().to_string();
    let routes = lab.show_routes(on)?;
    // `ip route show dev X` omits the device: `S via S.0 [proto …] onlink`.
    let want = format!("{} via {gw} ", lease.subnet);
    let found = routes.lines().any(|l| l.starts_with(&want) && l.split_whitespace().any(|w| w == "onlink"));
    assert!(found, "node {on} routes lack `{want}… onlink`:\n{routes}");
    let neigh = lab.show_neighbours(on)?;
    assert!(neigh.contains(&format!("{gw} lladdr {mac} PERMANENT")), "node {on} neighbours:\n{neigh}");
    let fdb = lab.show_fdb(on)?;
    let peer_ip = lab.node(peer)?.ip();
    assert!(fdb.contains(&format!("{mac} dst {peer_ip} self permanent")), "node {on} fdb:\n{fdb}");
    Ok(())
}

#[test]
fn every_pod_pings_every_pod_across_three_nodes() -> Result<()> {
    require_root();
    let lab = Lab::flannel(PREFIX, spec(3, 2))?;
    assert_eq!(lab.pods().len(), 6);
    let mut subnets = Vec::new();
    for i in 0..3 {
        let env = lab.subnet_env(i)?.expect("subnet.env");
        assert_eq!(env.mtu, 1450, "underlay 1500 − 50");
        assert!(env.ipmasq, "started with --ip-masq");
        let subnet = lab.node_subnet(i)?;
        let lease = lab.lease(i)?.expect("lease in etcd");
        assert_eq!(lease.subnet, subnet, "subnet.env and etcd agree for node {i}");
        assert_eq!(lab.vxlan_address(i)?, Some(subnet.network()));
        subnets.push(subnet);
    }
    subnets.sort();
    subnets.dedup();
    assert_eq!(subnets.len(), 3, "distinct subnets");
    for p in lab.pods() {
        assert!(lab.node_subnet(p.node())?.contains(p.ip()), "pod {} ip {}", p.ns().name(), p.ip());
        assert_eq!(p.mtu()?, 1450);
    }
    for on in 0..3 {
        for peer in (0..3).filter(|&p| p != on) {
            assert_programmed(&lab, on, peer)?;
        }
        assert_eq!(lab.flanneld_http(on, "/readyz")?.0, 200, "node {on} ready after subnet.env");
        assert_eq!(lab.flanneld_http(on, "/healthz")?.0, 200, "node {on} healthy");
    }
    ping_all(&lab)
}

#[test]
fn a_joining_node_appears_and_a_leaving_node_vanishes_on_the_others() -> Result<()> {
    require_root();
    let mut lab = Lab::flannel(PREFIX, spec(2, 1))?;
    let new = lab.add_node()?;
    lab.start_flanneld(new)?;
    lab.wait_subnet_env(new)?;
    let subnet = lab.node_subnet(new)?;
    for on in 0..2 {
        lab.wait_route(on, subnet, true, Duration::from_secs(30))?;
    }
    lab.wait_converged()?;
    lab.use_flannel_cni(new)?;
    let pod = lab.add_pod(new)?;
    ping_all(&lab)?;
    assert_programmed(&lab, 0, new)?;

    // Leaving: a clean stop (exit 0 on SIGTERM), then its lease goes (upstream keeps the key
    // on shutdown, so the operator deletes it; if our flanneld removed it itself, fine too).
    let pod_ip = lab.pod(pod)?.ip();
    assert_eq!(lab.stop_flanneld(new)?, Some(0), "flanneld exit status on SIGTERM");
    lab.delete_lease(new)?;
    assert!(lab.lease(new)?.is_none());
    for on in 0..2 {
        lab.wait_route(on, subnet, false, Duration::from_secs(30))?;
        let neigh = lab.show_neighbours(on)?;
        assert!(!neigh.contains(&format!("{} lladdr", subnet.network())), "stale neighbour:\n{neigh}");
        let fdb = lab.show_fdb(on)?;
        let ip = lab.node(new)?.ip();
        assert!(!fdb.contains(&format!("dst {ip} ")), "stale fdb:\n{fdb}");
    }
    assert!(!lab.pod(0)?.ping_once(pod_ip, None));
    Ok(())
}

#[test]
fn flanneld_killed_and_restarted_keeps_its_subnet_and_pods_keep_talking() -> Result<()> {
    require_root();
    let mut lab = Lab::flannel(PREFIX, spec(2, 1))?;
    common::crash_and_restart_keeps_subnet(&mut lab, 0, 1)?;
    assert_programmed(&lab, 1, 0)?;
    assert_programmed(&lab, 0, 1)?;
    ping_all(&lab)
}

#[test]
fn etcd_down_for_thirty_seconds_leaves_the_dataplane_alone_and_daemons_recover() -> Result<()> {
    require_root();
    let mut lab = Lab::flannel(PREFIX, spec(2, 1))?;
    let (a, b) = (lab.pod(0)?.ip(), lab.pod(1)?.ip());
    lab.etcd_mut()?.stop();
    for _ in 0..3 {
        weft_lab::wait::hold(Duration::from_secs(10))?;
        lab.wait_ping(0, b, Duration::from_secs(3))?;
        lab.wait_ping(1, a, Duration::from_secs(3))?;
        for i in 0..2 {
            assert!(
                lab.flanneld_running(i)?,
                "flanneld on node {i} died while etcd was down:\n{}",
                lab.diagnostics()
            );
        }
    }
    lab.etcd_mut()?.restart()?;
    // Recovered daemons see a node that joins after the outage.
    let new = lab.add_node()?;
    lab.start_flanneld(new)?;
    lab.wait_converged()?;
    assert_programmed(&lab, 0, new)?;
    assert_programmed(&lab, 1, new)?;
    ping_all(&lab)
}

#[test]
fn killing_the_etcd_leader_of_three_loses_nothing() -> Result<()> {
    require_root();
    let mut lab = Lab::flannel(PREFIX, FlannelSpec { nodes: 2, pods_per_node: 1, etcd_members: 3 })?;
    let before: Vec<String> = lab.leases()?.into_iter().map(|l| l.key).collect();
    let etcd = lab.etcd_mut()?;
    let leader = etcd.leader()?;
    etcd.kill_member(leader)?;
    etcd.wait_healthy()?;
    let after: Vec<String> = lab.leases()?.into_iter().map(|l| l.key).collect();
    assert_eq!(before, after);
    assert!(lab.etcd()?.get("/coreos.com/network/config")?.is_some());
    // Daemons fail over to the surviving members: a new node is seen by both.
    let new = lab.add_node()?;
    lab.start_flanneld(new)?;
    lab.wait_converged()?;
    lab.use_flannel_cni(new)?;
    lab.add_pod(new)?;
    ping_all(&lab)
}

#[test]
fn a_deleted_route_on_flannel_1_is_restored() -> Result<()> {
    require_root();
    let lab = Lab::flannel(PREFIX, spec(2, 1))?;
    let peer = lab.node_subnet(1)?;
    lab.node(0)?.ns().run(&["ip", "route", "del", &peer.to_string(), "dev", VXLAN_DEV])?;
    assert!(!lab.flannel_routes(0)?.contains(&peer));
    lab.wait_route(0, peer, true, Duration::from_secs(60))?;
    assert_programmed(&lab, 0, 1)?;
    ping_all(&lab)
}

#[test]
fn tcp_stream_between_pods_on_two_nodes_is_not_hurt_by_fragmentation() -> Result<()> {
    require_root();
    let mut lab = Lab::flannel(PREFIX, spec(2, 1))?;
    let (a, b) = (0, 1);
    assert_eq!(lab.pod(a)?.mtu()?, 1450);
    let to = lab.pod(b)?.ip();
    lab.wait_ping(a, to, Duration::from_secs(10))?;
    // A full-size unfragmentable packet crosses the overlay; a larger one is refused locally.
    assert!(lab.pod(a)?.ping_once(to, Some(1450 - 28)));
    assert!(!lab.pod(a)?.ping_once(to, Some(1450 - 27)));
    let report = lab.iperf(a, b, 3)?;
    assert!(report.bytes_received > 10_000_000, "{report:?}");
    assert!(report.bits_per_second > 50e6, "{report:?}");
    Ok(())
}

#[test]
fn the_demo_command_passes_and_leaves_nothing_behind() {
    require_root();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft-lab"))
        .args(["demo", "--nodes", "2", "--pods", "2", "--prefix", PREFIX])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("all 12 pairs answered"), "{stdout}");
    // `weft path` for a cross-node pair (reachable, then broken at the deleted FDB entry, then
    // healed by flanneld) and `weft doctor` before and after.
    assert_eq!(stdout.matches("$ weft path ").count(), 3, "{stdout}");
    assert_eq!(stdout.matches("$ weft doctor ").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("\nhealthy\n").count(), 2, "{stdout}");
    assert!(stdout.contains("$ bridge fdb del ") && stdout.contains("broken FDB_MISSING"), "{stdout}");
    assert!(stdout.contains("healed after "), "{stdout}");
    let id = stdout.lines().find_map(|l| l.strip_prefix("lab ")?.split(' ').next()).unwrap();
    assert!(id.starts_with(PREFIX), "{id}");
    let left: Vec<String> =
        weft_lab::cleanup::netns_names().unwrap().into_iter().filter(|n| n.starts_with(id)).collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(!std::env::temp_dir().join("weft-lab").join(id).exists());
}
