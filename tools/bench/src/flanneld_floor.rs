//! The floors of the flanneld benchmark, each in a fresh namespace, for the same N peers'
//! entries (with dual stack both families', `flannel.1` and `flannel-v6.1`, docs/flannel.md
//! §8.5):
//! - the `ip -batch` floor: how long `ip -batch` (and, for VXLAN's FDB entries, `bridge
//!   -batch`) takes to install them, the tools an operator would use;
//! - the netlink floor: the same entries as flanneld's own requests, sent from this process
//!   256 per `sendmsg` with only each datagram's last one acked (`Netlink::batch`), timed from
//!   the first send to the last answer: no process start, no parsing, the fewest system calls;
//!   what the kernel alone takes.
//!
//! - the new-lease netlink floor: one more peer's requests (its neighbour, FDB entry and route,
//!   per family) sent the same way into the namespace that already holds the N peers, timed
//!   to the kernel's answer; the median over the latency samples' peers.
//!
//! weft's start → all-routes figure is printed beside the first two with the ratios; its new
//! lease → route latency beside the last, plus etcd's own put → watch event
//! (`flanneld::etcd_watch_floor`).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use weft_common::mac::parse_mac;
use weft_common::netlink::{BatchOutcome, Netlink};
use weft_common::netns::NetNs;
use weft_dataplane::netlink::{op_request, WINDOW};
use weft_dataplane::plan::{plan_add, Peer};
use weft_dataplane::NetOp;
use weft_lab::ns::Netns;

use crate::flanneld_peers::{
    add_underlay, public_ip, subnet, vtep_mac, Backend, Mode, FIRST_SAMPLE, NODE_IP, UNDERLAY,
};
use crate::flanneld_peers_v6::{
    add_underlay_v6, public_ipv6, subnet_v6, vtep_mac_v6, NODE_IPV6, SUBNET_LEN_V6,
};
use crate::stats::median;

/// The VXLAN devices the floor makes by hand (flanneld's are `flannel.1` and, with dual stack,
/// `flannel-v6.1`: VNI 1, port 8472).
const VXLAN_DEV: &str = "flannel.1";
const VXLAN_DEV_V6: &str = "flannel-v6.1";

/// The batch files for N peers: `ip -batch` lines, and `bridge -batch` lines (VXLAN's FDB).
/// Per VXLAN peer and family, in flanneld's order: neighbour, FDB entry, route.
fn batches(mode: Mode, peers: u32) -> (String, String) {
    let (mut ip, mut bridge) = (String::new(), String::new());
    for i in 1..=peers {
        let (net, gw) = (subnet(i), public_ip(mode.backend, i));
        // Writing to a String cannot fail.
        match mode.backend {
            Backend::Vxlan => {
                let mac = vtep_mac(i);
                let _ = writeln!(ip, "neigh add {net} lladdr {mac} dev {VXLAN_DEV} nud permanent");
                let _ = writeln!(bridge, "fdb add {mac} dev {VXLAN_DEV} dst {gw} self permanent");
                let _ = writeln!(ip, "route add {net}/24 via {net} dev {VXLAN_DEV} onlink");
                if mode.dual_stack {
                    let (net6, gw6, mac6) = (subnet_v6(i), public_ipv6(i), vtep_mac_v6(i));
                    let _ = writeln!(ip, "neigh add {net6} lladdr {mac6} dev {VXLAN_DEV_V6} nud permanent");
                    let _ = writeln!(bridge, "fdb add {mac6} dev {VXLAN_DEV_V6} dst {gw6} self permanent");
                    let _ =
                        writeln!(ip, "route add {net6}/{SUBNET_LEN_V6} via {net6} dev {VXLAN_DEV_V6} onlink");
                }
            }
            Backend::HostGw => {
                let _ = writeln!(ip, "route add {net}/24 via {gw} dev {UNDERLAY}");
                if mode.dual_stack {
                    let (net6, gw6) = (subnet_v6(i), public_ipv6(i));
                    let _ = writeln!(ip, "route add {net6}/{SUBNET_LEN_V6} via {gw6} dev {UNDERLAY}");
                }
            }
        }
    }
    (ip, bridge)
}

/// `ip link add <name> type vxlan id 1 local <local> dev under0 dstport 8472 nolearning`, up.
fn add_vxlan(node: &Netns, name: &str, local: &str) {
    node.exec(&[
        "ip",
        "link",
        "add",
        name,
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        local,
        "dev",
        UNDERLAY,
        "dstport",
        "8472",
        "nolearning",
    ])
    .expect_ok();
    node.exec(&["ip", "link", "set", name, "up"]).expect_ok();
}

/// Runs `tool -batch file` in the calling thread's namespace and returns its wall time.
fn timed_batch(tool: &str, file: &Path) -> Result<Duration, String> {
    let start = Instant::now();
    let out = Command::new(tool)
        .arg("-batch")
        .arg(file)
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("run {tool} -batch: {e}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(format!("{tool} -batch failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(took)
}

/// flanneld's ops for N peers, each with whether it is an IPv6 one (sent to `flannel-v6.1`):
/// per VXLAN peer and family a neighbour, an FDB entry and an onlink route (`plan_add`); per
/// host-gw peer and family a plain route via its PublicIP.
fn ops(mode: Mode, peers: impl IntoIterator<Item = u32>) -> Result<Vec<(NetOp, bool)>, String> {
    let mut out = Vec::new();
    for i in peers {
        let direct = mode.backend == Backend::HostGw;
        let mac = parse_mac(&vtep_mac(i)).ok_or("bad synthetic MAC")?;
        let v4 = Peer {
            subnet: IpNetwork::new(subnet(i).into(), 24).map_err(|e| e.to_string())?,
            public_ip: public_ip(mode.backend, i).into(),
            vtep_mac: mac,
            direct,
        };
        out.extend(plan_add(None, &v4).into_iter().map(|op| (op, false)));
        if mode.dual_stack {
            let v6 = Peer {
                subnet: IpNetwork::new(subnet_v6(i).into(), SUBNET_LEN_V6).map_err(|e| e.to_string())?,
                public_ip: public_ipv6(i).into(),
                vtep_mac: parse_mac(&vtep_mac_v6(i)).ok_or("bad synthetic MAC")?,
                direct,
            };
            out.extend(plan_add(None, &v6).into_iter().map(|op| (op, true)));
        }
    }
    Ok(out)
}

/// The floors for N peers.
#[derive(Debug, Clone, Copy)]
pub struct Floors {
    /// `ip -batch` (+ `bridge -batch`).
    pub ip_batch: Duration,
    /// flanneld's requests, batched, from this process.
    pub netlink: Duration,
    /// One more peer's requests on top of the N, median over the samples' peers.
    pub netlink_one: Duration,
}

/// A fresh namespace (named from `netns_prefix`) with the same veth underlay (with dual stack
/// also its IPv6 address) and, for VXLAN, a hand-made `flannel.1` (with dual stack also
/// `flannel-v6.1` over the IPv6 underlay address).
fn prepare(netns_prefix: &str, mode: Mode) -> Netns {
    let node = Netns::unique(netns_prefix);
    add_underlay(&node);
    if mode.dual_stack {
        add_underlay_v6(&node);
    }
    if mode.backend == Backend::Vxlan {
        add_vxlan(&node, VXLAN_DEV, &NODE_IP.to_string());
        if mode.dual_stack {
            add_vxlan(&node, VXLAN_DEV_V6, &NODE_IPV6.to_string());
        }
    }
    node
}

/// Runs `f` on a thread of its own inside `node` (so the caller's thread stays where it
/// was; tools it starts inherit the namespace without an `ip netns exec` in the timing).
fn inside<T: Send>(node: &Netns, f: impl FnOnce() -> Result<T, String> + Send) -> Result<T, String> {
    let ns = NetNs::open(node.path()).map_err(|e| e.to_string())?;
    std::thread::scope(|s| {
        s.spawn(|| {
            let _inside = ns.enter().map_err(|e| e.to_string())?;
            f()
        })
        .join()
        .map_err(|_| "floor thread panicked".to_string())?
    })
}

/// The floors for N peers (and `samples` new ones, one at a time), each in a namespace of its
/// own, removed on return.
pub fn measure(netns_prefix: &str, mode: Mode, peers: u32, samples: u32) -> Result<Floors, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (ip, bridge) = batches(mode, peers);
    let (ip_file, bridge_file) = (dir.path().join("ip.batch"), dir.path().join("bridge.batch"));
    std::fs::write(&ip_file, ip).map_err(|e| e.to_string())?;
    std::fs::write(&bridge_file, &bridge).map_err(|e| e.to_string())?;
    let ip_batch = {
        let node = prepare(netns_prefix, mode);
        inside(&node, || {
            let mut took = timed_batch("ip", &ip_file)?;
            if !bridge.is_empty() {
                took += timed_batch("bridge", &bridge_file)?;
            }
            Ok(took)
        })?
    };
    let sample_ops =
        (FIRST_SAMPLE..FIRST_SAMPLE + samples).map(|i| ops(mode, [i])).collect::<Result<Vec<_>, _>>()?;
    let ops = ops(mode, 1..=peers)?;
    let node = prepare(netns_prefix, mode);
    let (netlink, netlink_one) = inside(&node, || {
        let mut nl = Netlink::open().map_err(|e| e.to_string())?;
        nl.set_receive_buffer(8 << 20);
        let mut index = |name: &str| nl.link_by_name(name).map(|l| l.index).map_err(|e| e.to_string());
        let (v4, v6) = match mode.backend {
            Backend::HostGw => (0, 0),
            Backend::Vxlan if mode.dual_stack => (index(VXLAN_DEV)?, index(VXLAN_DEV_V6)?),
            Backend::Vxlan => (index(VXLAN_DEV)?, 0),
        };
        let mut send = |ops: &[(NetOp, bool)]| {
            let requests: Vec<_> =
                ops.iter().map(|(op, is_v6)| op_request(if *is_v6 { v6 } else { v4 }, op)).collect();
            let start = Instant::now();
            let out = nl.batch(requests, WINDOW).map_err(|e| e.to_string())?;
            let took = start.elapsed();
            match out.iter().find(|o| **o != BatchOutcome::Done) {
                Some(o) => Err(format!("netlink floor: a request was not applied: {o:?}")),
                None => Ok(took),
            }
        };
        let all = send(&ops)?;
        let one = sample_ops.iter().map(|ops| send(ops)).collect::<Result<Vec<_>, _>>()?;
        Ok((all, median(&one)))
    })?;
    Ok(Floors { ip_batch, netlink, netlink_one })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dual_stack_batches_hold_both_families() {
        let (ip, bridge) = batches(Mode { backend: Backend::Vxlan, dual_stack: true }, 2);
        assert_eq!(
            ip,
            "neigh add 10.0.1.0 lladdr 0e:00:00:00:00:01 dev flannel.1 nud permanent\n\
             route add 10.0.1.0/24 via 10.0.1.0 dev flannel.1 onlink\n\
             neigh add fd10:0:0:1:: lladdr 0e:00:06:00:00:01 dev flannel-v6.1 nud permanent\n\
             route add fd10:0:0:1::/64 via fd10:0:0:1:: dev flannel-v6.1 onlink\n\
             neigh add 10.0.2.0 lladdr 0e:00:00:00:00:02 dev flannel.1 nud permanent\n\
             route add 10.0.2.0/24 via 10.0.2.0 dev flannel.1 onlink\n\
             neigh add fd10:0:0:2:: lladdr 0e:00:06:00:00:02 dev flannel-v6.1 nud permanent\n\
             route add fd10:0:0:2::/64 via fd10:0:0:2:: dev flannel-v6.1 onlink\n"
        );
        assert_eq!(
            bridge,
            "fdb add 0e:00:00:00:00:01 dev flannel.1 dst 198.19.0.1 self permanent\n\
             fdb add 0e:00:06:00:00:01 dev flannel-v6.1 dst 2001:2:0:1::1 self permanent\n\
             fdb add 0e:00:00:00:00:02 dev flannel.1 dst 198.19.0.2 self permanent\n\
             fdb add 0e:00:06:00:00:02 dev flannel-v6.1 dst 2001:2:0:1::2 self permanent\n"
        );
    }

    #[test]
    fn single_stack_batches_have_no_ipv6() {
        let (ip, bridge) = batches(Mode { backend: Backend::Vxlan, dual_stack: false }, 3);
        assert_eq!((ip.lines().count(), bridge.lines().count()), (6, 3));
        assert!(!ip.contains("flannel-v6") && !bridge.contains("flannel-v6"));
        let (ip, bridge) = batches(Mode { backend: Backend::HostGw, dual_stack: false }, 1);
        assert_eq!(ip, "route add 10.0.1.0/24 via 198.18.1.1 dev under0\n");
        assert!(bridge.is_empty());
    }

    #[test]
    fn dual_stack_host_gw_batches_route_both_families_via_the_public_ips() {
        let (ip, bridge) = batches(Mode { backend: Backend::HostGw, dual_stack: true }, 1);
        assert_eq!(
            ip,
            "route add 10.0.1.0/24 via 198.18.1.1 dev under0\n\
             route add fd10:0:0:1::/64 via 2001:2:0:1::1 dev under0\n"
        );
        assert!(bridge.is_empty());
        let ops = ops(Mode { backend: Backend::HostGw, dual_stack: true }, [1]).unwrap();
        assert_eq!(ops.iter().map(|(_, v6)| *v6).collect::<Vec<_>>(), vec![false, true]);
    }
}
