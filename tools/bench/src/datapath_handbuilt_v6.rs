//! The IPv6 side of the hand-built reference path (`datapath_handbuilt`), the counterpart of
//! flanneld's `flannel-v6.1` (docs/flannel.md §8.1, §8.4, §8.5). On node i (IPv6 underlay
//! U6_i from weft-lab's dual stack, peer U6_j):
//! - `vx6`: `ip link add vx6 type vxlan id 1 local U6_i remote U6_j dstport 8472 dev eth0
//!   nolearning`, MTU = underlay MTU − 70 (VXLAN over IPv6, §8.4), address `fd99:0:0:i::/128`;
//! - route `fd99:0:0:j::/64 via fd99:0:0:j:: dev vx6 onlink` and a permanent neighbour
//!   `fd99:0:0:j::` with the peer's `vx6` MAC (§8.5);
//! - the pod behind the same bridge `hb0` as the IPv4 path: `fd99:0:0:i::1/64` on the bridge,
//!   `fd99:0:0:i::2/64` on the pod's `eth0` with a default route via the bridge address; the
//!   IPv6 MTU of both (`net.ipv6.conf.<dev>.mtu`) is the device's, as weft's dual-stack pods get
//!   the MTU that fits both families;
//! - `net.ipv6.conf.all.forwarding=1` inside the node namespace.
//!
//! Addresses are added with `nodad`: nothing else is on these links, and duplicate address
//! detection would leave them tentative (unusable) for a second.

use std::net::{IpAddr, Ipv6Addr};

use weft_lab::dual::node_ip6;
use weft_lab::lab::NODE_IFACE;
use weft_lab::{LabError, Result};

use ipnetwork::Ipv6Network;
use weft_dataplane::firewall::Ipv6Side;

use crate::datapath_handbuilt::{link_mac, vxlan_mtu, Ends, HandBuilt};

/// The hand-built IPv6 VXLAN device.
const DEV6: &str = "vx6";
/// The bridge and pod interface the IPv4 path already made (`datapath_handbuilt`).
const BRIDGE: &str = "hb0";
/// The hand-built IPv6 cluster network (every node's pod subnet is a /64 in it).
const CLUSTER6: &str = "fd99::/48";
/// VXLAN overhead over an IPv6 underlay: docs/flannel.md §8.4.
const VXLAN_OVERHEAD_V6: u32 = 70;

/// Node `i`'s hand-built IPv6 pod subnet (network address of a /64): `fd99:0:0:<i>::`.
pub fn pod_subnet6(i: usize) -> Result<Ipv6Addr> {
    let group = u16::try_from(i).map_err(|_| LabError::Invalid(format!("node {i} out of range")))?;
    Ok(Ipv6Addr::new(0xfd99, 0, 0, group, 0, 0, 0, 0))
}

fn with_last6(a: Ipv6Addr, last: u16) -> Ipv6Addr {
    let mut s = a.segments();
    s[7] = last;
    Ipv6Addr::from(s)
}

/// The IPv6 side of flanneld's rules on node `i`: the hand-built IPv6 cluster network and the
/// node's /64.
pub(crate) fn rules_side(i: usize) -> Result<Ipv6Side> {
    let bad = |what: &str| LabError::Invalid(format!("hand-built IPv6 network {what}"));
    let network: Ipv6Network = CLUSTER6.parse().map_err(|_| bad(CLUSTER6))?;
    let subnet = Ipv6Network::new(pod_subnet6(i)?, 64).map_err(|_| bad("of node"))?;
    Ok(Ipv6Side { network, subnet })
}

fn underlay6(i: usize) -> Result<Ipv6Addr> {
    node_ip6(i).ok_or_else(|| LabError::Invalid(format!("node {i} has no IPv6 underlay address")))
}

impl HandBuilt {
    pub(crate) fn build_node_v6(&mut self, i: usize) -> Result<()> {
        weft_lab::signals::check()?;
        let (local, remote) = (underlay6(i)?.to_string(), underlay6(1 - i)?.to_string());
        let ns = self.lab.node(i)?.ns();
        let mtu = vxlan_mtu(ns, VXLAN_OVERHEAD_V6)?.to_string();
        let base = pod_subnet6(i)?;
        // Every word is a name, number or address: no spaces to split wrongly.
        let add_vxlan = format!(
            "ip link add {DEV6} mtu {mtu} type vxlan id 1 local {local} remote {remote} \
             dstport 8472 dev {NODE_IFACE} nolearning"
        );
        ns.run(&add_vxlan.split_whitespace().collect::<Vec<_>>())?;
        ns.run(&["ip", "-6", "addr", "add", &format!("{base}/128"), "dev", DEV6, "nodad"])?;
        ns.run(&["ip", "link", "set", DEV6, "up"])?;
        ns.run(&["ip", "-6", "addr", "add", &format!("{}/64", with_last6(base, 1)), "dev", BRIDGE, "nodad"])?;
        ns.run(&["sysctl", "-q", "-w", &format!("net.ipv6.conf.{BRIDGE}.mtu={mtu}")])?;
        ns.run(&["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])?;
        let pod = self.pods.get(i).ok_or_else(|| LabError::Invalid(format!("no hand-built pod {i}")))?;
        pod.run(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{}/64", with_last6(base, 2)),
            "dev",
            "eth0",
            "nodad",
        ])?;
        pod.run(&["sysctl", "-q", "-w", &format!("net.ipv6.conf.eth0.mtu={mtu}")])?;
        pod.run(&["ip", "-6", "route", "add", "default", "via", &with_last6(base, 1).to_string()])?;
        Ok(())
    }

    pub(crate) fn route_to_peer_v6(&self, i: usize, j: usize) -> Result<()> {
        let peer_mac = link_mac(self.lab.node(j)?.ns(), DEV6)?;
        let gw = pod_subnet6(j)?.to_string();
        let ns = self.lab.node(i)?.ns();
        ns.run(&["ip", "-6", "neigh", "replace", &gw, "lladdr", &peer_mac, "dev", DEV6, "nud", "permanent"])?;
        ns.run(&["ip", "-6", "route", "add", &format!("{gw}/64"), "via", &gw, "dev", DEV6, "onlink"])?;
        Ok(())
    }

    /// Pod on node 0 → pod on node 1 over `vx6`; the MTU is the pod's IPv6 MTU.
    pub fn vxlan6_ends(&self) -> Result<Ends> {
        let client = self.pods.first().ok_or_else(|| LabError::Invalid("no hand-built pod 0".into()))?;
        let server = self.pods.get(1).ok_or_else(|| LabError::Invalid("no hand-built pod 1".into()))?;
        let mtu = client.run(&["sysctl", "-n", "net.ipv6.conf.eth0.mtu"])?;
        let mtu =
            mtu.stdout.trim().parse().map_err(|_| LabError::parse("IPv6 MTU of eth0", mtu.stdout.clone()))?;
        Ok(Ends {
            client_ns: client.name().to_string(),
            server_ns: server.name().to_string(),
            server_ip: IpAddr::V6(with_last6(pod_subnet6(1)?, 2)),
            mtu,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_addresses() {
        assert_eq!(pod_subnet6(1).unwrap().to_string(), "fd99:0:0:1::");
        assert_eq!(with_last6(pod_subnet6(0).unwrap(), 2).to_string(), "fd99::2");
        assert_eq!(with_last6(pod_subnet6(1).unwrap(), 1).to_string(), "fd99:0:0:1::1");
        let side = rules_side(1).unwrap();
        assert_eq!(
            (side.network.to_string(), side.subnet.to_string()),
            ("fd99::/48".into(), "fd99:0:0:1::/64".into())
        );
    }
}
