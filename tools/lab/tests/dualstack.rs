//! The lab dual stack (IPv4 + IPv6 VXLAN) with weft's flanneld: `flannel-v6.1` on every node,
//! every pod reaches every pod over both families, a deleted IPv6 peer route is healed by the
//! reconciliation, an iperf3 TCP stream crosses nodes over each family, and a pod reaches an
//! outside IPv6 host masqueraded behind its node (the chain removed, and restored by the
//! firewall resync). Kernel state is read back with `ip -j`. Needs root and the built binaries.

// Test helpers outside #[test] fns panic on broken invariants on purpose.
#![allow(clippy::unwrap_used)]

mod common;

use common::ping_all;

use std::time::Duration;

use weft_lab::dual::{node_ip6, VXLAN6_DEV};
use weft_lab::flannel::VXLAN_DEV;
use weft_lab::ns::require_root;
use weft_lab::{FlannelSpec, Lab, Result};

const PREFIX: &str = "wtDS";
/// Prefix of the TCP and masquerade tests.
const PREFIX_L6: &str = "wtL6";

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
        let (code, body) = lab.flanneld_http(i, "/healthz")?;
        assert_eq!(code, 200, "node {i} healthy: {body}\n{}", lab.diagnostics());
    }
    for p in lab.pods() {
        assert!(p.ip6().is_some(), "{} has an IPv6 address", p.ns().name());
        assert_eq!(p.mtu()?, 1430);
    }
    ping_all(&lab)?;
    let m6 = lab.ping_matrix6()?;
    assert!(m6.all_ok(), "IPv6 ping matrix:\n{m6}\n{}", lab.diagnostics());
    common::tcp_both(&mut lab, "at start")?;

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

/// A dual-stack lab of 2 nodes with one pod each (pod `i` on node `i`), flanneld with `args`.
fn two_node_lab(args: &[&str]) -> Result<Lab> {
    require_root();
    Lab::flannel_dual_stack(PREFIX_L6, FlannelSpec { nodes: 2, pods_per_node: 1, etcd_members: 1 }, args)
}

/// Bytes node `i` has sent through `dev` (`ip -s link`, `stats64.tx.bytes`).
fn tx_bytes(lab: &Lab, i: usize, dev: &str) -> Result<u64> {
    let v = lab.node(i)?.ns().try_ip_json(&["-s", "link", "show", "dev", dev])?;
    Ok(v[0]["stats64"]["tx"]["bytes"].as_u64().expect("tx bytes"))
}

#[test]
fn tcp_streams_between_nodes_over_ipv4_and_ipv6() -> Result<()> {
    let mut lab = two_node_lab(&[])?;
    let (client, server) = (0, 1);
    assert_ne!(lab.pod(client)?.node(), lab.pod(server)?.node(), "the pods are on different nodes");
    for (family, dev) in [("IPv4", VXLAN_DEV), ("IPv6", VXLAN6_DEV)] {
        let before = tx_bytes(&lab, 0, dev)?;
        let report =
            if family == "IPv4" { lab.iperf(client, server, 2)? } else { lab.iperf6(client, server, 2)? };
        // A report with receiver totals is a completed stream (iperf3 reports errors instead).
        assert!(report.bytes_received > 0, "{family}: {report:?}\n{}", lab.diagnostics());
        let sent = tx_bytes(&lab, 0, dev)? - before;
        assert!(
            sent >= report.bytes_received,
            "{family}: the stream went through {dev} on node 0 ({sent} bytes sent there, {report:?})"
        );
    }
    Ok(())
}

/// SIGSTOPs flanneld on a node until dropped (then SIGCONT), so a change made meanwhile is
/// observed before its resync can undo it.
struct Freeze(i32);

impl Freeze {
    fn new(lab: &Lab, i: usize) -> Result<Freeze> {
        let pid = lab.node(i)?.flanneld_pid().expect("flanneld runs");
        let pid = i32::try_from(pid).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGSTOP).unwrap();
        Ok(Freeze(pid))
    }
}

impl Drop for Freeze {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGCONT);
    }
}

/// flanneld's firewall layout (`EnableNFTables` in the network config, docs/flannel.md §9).
#[derive(Debug, Clone, Copy)]
enum FirewallMode {
    Iptables,
    Nftables,
}

/// True when node `i` has flanneld's IPv6 masquerade chain in `mode`'s layout: iptables'
/// `FLANNEL-POSTRTG` in the `nat` table jumped to from POSTROUTING (§9.1), or nftables' chain
/// `postrtg` of table `ip6 flannel-ipv6` on the postrouting hook (§9.4), with MASQUERADE rules.
fn ip6_masq_chain_present(lab: &Lab, i: usize, mode: FirewallMode) -> Result<bool> {
    let ns = lab.node(i)?.ns();
    Ok(match mode {
        FirewallMode::Iptables => {
            let saved = ns.run(&["ip6tables-save", "-t", "nat"])?.stdout;
            saved.lines().any(|l| l.starts_with(":FLANNEL-POSTRTG "))
                && saved
                    .lines()
                    .any(|l| l.starts_with("-A POSTROUTING ") && l.ends_with("-j FLANNEL-POSTRTG"))
                && saved.lines().any(|l| l.starts_with("-A FLANNEL-POSTRTG ") && l.contains("-j MASQUERADE"))
        }
        FirewallMode::Nftables => {
            let r = ns.exec(&["nft", "list", "chain", "ip6", "flannel-ipv6", "postrtg"]);
            r.ok() && r.stdout.contains("hook postrouting") && r.stdout.contains("masquerade")
        }
    })
}

/// Removes flanneld's IPv6 masquerade chain on node `i` as an operator would.
fn remove_ip6_masq_chain(lab: &Lab, i: usize, mode: FirewallMode) -> Result<()> {
    let ns = lab.node(i)?.ns();
    match mode {
        FirewallMode::Iptables => {
            let jump =
                ["-D", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq", "-j", "FLANNEL-POSTRTG"];
            for step in [&jump[..], &["-F", "FLANNEL-POSTRTG"], &["-X", "FLANNEL-POSTRTG"]] {
                ns.run(&[&["ip6tables", "-t", "nat"][..], step].concat())?;
            }
        }
        FirewallMode::Nftables => {
            for step in ["flush", "delete"] {
                ns.run(&["nft", step, "chain", "ip6", "flannel-ipv6", "postrtg"])?;
            }
        }
    }
    assert!(!ip6_masq_chain_present(lab, i, mode)?, "{mode:?}: chain removed");
    Ok(())
}

/// Pod on node 0 → the outside host over IPv6: masqueraded to node 0's underlay address (ping
/// and TCP); with the chain removed (flanneld frozen so its resync cannot race the check) the
/// request leaves with the pod's own address, which the outside host cannot answer; flanneld's
/// firewall resync puts the chain back and masquerade works again.
fn masquerade_to_outside_and_resync(lab: &mut Lab, mode: FirewallMode) -> Result<()> {
    let outside = lab.add_outside6()?;
    let routes = outside.routes6()?;
    assert!(
        routes.iter().all(|r| r == "2001:2::/64" || r == "fe80::/64"),
        "the outside host has no route back to the pods: {routes:?}"
    );
    let pod = lab.pods().iter().position(|p| p.node() == 0).expect("a pod on node 0");
    let pod_ip6 = lab.pod(pod)?.ip6().expect("pod IPv6");
    let node_ip = node_ip6(0).expect("node 0 IPv6");
    assert!(ip6_masq_chain_present(lab, 0, mode)?, "{mode:?}: flanneld installed the IPv6 masquerade chain");

    let (replied, src) = lab.echo_source6(pod, &outside)?;
    assert_eq!(src, Some(node_ip.into()), "{mode:?}: source seen outside\n{}", lab.diagnostics());
    assert!(replied, "{mode:?}: ping -6 to the outside host answered");
    let pod_ns = lab.pod(pod)?.ns().name().to_string();
    let report = lab.iperf_between(&pod_ns, outside.ns().name(), outside.ip6().into(), 1)?;
    assert!(report.bytes_received > 0, "{mode:?}: TCP over IPv6 to the outside host: {report:?}");

    {
        let _frozen = Freeze::new(lab, 0)?;
        remove_ip6_masq_chain(lab, 0, mode)?;
        let (replied, src) = lab.echo_source6(pod, &outside)?;
        assert_eq!(src, Some(pod_ip6.into()), "{mode:?}: unmasqueraded source seen outside");
        assert!(!replied, "{mode:?}: no reply reaches the pod without masquerade");
    }

    weft_lab::wait::until_true(
        "IPv6 masquerade chain restored by the resync",
        Duration::from_secs(20),
        || ip6_masq_chain_present(lab, 0, mode),
    )?;
    let (replied, src) = lab.echo_source6(pod, &outside)?;
    assert_eq!(src, Some(node_ip.into()), "{mode:?}: source seen outside after the resync");
    assert!(replied, "{mode:?}: ping -6 to the outside host answered after the resync");
    Ok(())
}

#[test]
fn ipv6_masquerade_to_an_outside_host_and_its_resync() -> Result<()> {
    let mut lab = two_node_lab(&["--iptables-resync=1"])?;
    masquerade_to_outside_and_resync(&mut lab, FirewallMode::Iptables)
}

#[test]
fn ipv6_masquerade_in_nftables_mode_after_a_config_switch_and_restarts() -> Result<()> {
    let mut lab = two_node_lab(&["--iptables-resync=1"])?;
    let mut config: serde_json::Value = serde_json::from_str(&lab.put_network_config()?).unwrap();
    config["EnableNFTables"] = serde_json::Value::Bool(true);
    lab.put_network_config_json(&config.to_string())?;
    for i in 0..2 {
        lab.restart_flanneld(i)?;
    }
    lab.wait_converged6()?;
    // subnet.env is kept across the restart, so waiting for it does not mean the new flanneld
    // has applied its rules yet: wait for the nftables chain, then for the iptables layout of
    // the earlier run to be gone from both families.
    let iptables_left = |lab: &Lab| -> Result<Vec<String>> {
        let mut left = Vec::new();
        for save in ["iptables-save", "ip6tables-save"] {
            let saved = lab.node(0)?.ns().run(&[save])?.stdout;
            left.extend(saved.lines().filter(|l| l.contains("FLANNEL-")).map(|l| format!("{save}: {l}")));
        }
        Ok(left)
    };
    weft_lab::wait::until_true("node 0 in the nftables layout", Duration::from_secs(20), || {
        Ok(ip6_masq_chain_present(&lab, 0, FirewallMode::Nftables)? && iptables_left(&lab)?.is_empty())
    })
    .map_err(|e| weft_lab::LabError::Invalid(format!("{e}\niptables left: {:?}", iptables_left(&lab))))?;
    masquerade_to_outside_and_resync(&mut lab, FirewallMode::Nftables)
}
