//! The reference paths of the data-path benchmark, built by hand with `ip` in a bare weft-lab
//! (two node namespaces on the same veth + bridge underlay as a flannel lab, no etcd, no
//! flanneld): a kernel VXLAN between the nodes with a "pod" behind a bridge on each side, and
//! the nodes' underlay addresses themselves (the floor).
//!
//! On node i (underlay U_i, peer U_j) the hand-built path mirrors what flanneld and the flannel
//! CNI make (docs/flannel.md §8.1–§8.5; the pod side as the bridge plugin builds it, docs/cni.md
//! §7.3):
//! - `vx0`: `ip link add vx0 type vxlan id 1 local U_i remote U_j dstport 8472 dev eth0
//!   nolearning`, MTU = underlay MTU − 50 (§8.4), address `10.99.i.0/32`; the peer is reached by
//!   `remote` instead of a per-peer FDB entry;
//! - route `10.99.j.0/24 via 10.99.j.0 dev vx0 onlink` and a permanent neighbour `10.99.j.0`
//!   with the peer's `vx0` MAC (§8.5), so no ARP crosses the tunnel;
//! - bridge `hb0` with `10.99.i.1/24`, a veth into the pod namespace `<lab id>h<i>` whose `eth0`
//!   has `10.99.i.2/24`, the device's MTU, and a default route via `10.99.i.1`;
//! - `net.ipv4.ip_forward=1` inside the node namespace.
//!
//! Built plain, there are no firewall rules; built `with_rules`, each node also gets the
//! masquerade and forward rules flanneld installs with `--ip-masq` (docs/flannel.md §9.1, §9.2),
//! so every packet passes conntrack as on weft's path.

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::Ipv4Network;
use serde_json::Value;
use weft_common::netns::NetNs;
use weft_dataplane::firewall::{apply_rules, FirewallMode, FlannelRules};
use weft_lab::lab::NODE_IFACE;
use weft_lab::ns::Netns;
use weft_lab::{Lab, LabError, Result};

/// The hand-built VXLAN device.
const DEV: &str = "vx0";
/// The bridge the hand-built pod hangs off.
const BRIDGE: &str = "hb0";
/// The node side of the pod's veth.
const VETH_NODE: &str = "hbv0";
/// VXLAN overhead over an IPv4 underlay: docs/flannel.md §8.4.
const VXLAN_OVERHEAD: u32 = 50;
/// VXLAN's UDP port as flannel uses it: docs/flannel.md §3.4.
const VXLAN_PORT: &str = "8472";
/// The hand-built cluster network (every node's pod subnet is a /24 in it).
const CLUSTER: &str = "10.99.0.0/16";

/// A bare lab with the hand-built VXLAN and its two pods.
pub struct HandBuilt {
    /// The pod namespaces, index = node; deleted (with their veths) before the lab.
    pub(crate) pods: Vec<Netns>,
    pub(crate) lab: Lab,
}

/// The client and server ends of one measured path.
pub struct Ends {
    pub client_ns: String,
    pub server_ns: String,
    pub server_ip: IpAddr,
    /// MTU of the sender's interface.
    pub mtu: u32,
}

pub(crate) fn pod_subnet_base(i: usize) -> Result<Ipv4Addr> {
    let third = u8::try_from(i).map_err(|_| LabError::Invalid(format!("node {i} out of range")))?;
    Ok(Ipv4Addr::new(10, 99, third, 0))
}

fn with_last(a: Ipv4Addr, last: u8) -> Ipv4Addr {
    let [a0, a1, a2, _] = a.octets();
    Ipv4Addr::new(a0, a1, a2, last)
}

/// MTU of `dev` in `ns`, from `ip -j link`.
pub fn link_mtu(ns: &Netns, dev: &str) -> Result<u32> {
    let v = ns.try_ip_json(&["link", "show", "dev", dev])?;
    v.pointer("/0/mtu")
        .and_then(Value::as_u64)
        .and_then(|m| u32::try_from(m).ok())
        .ok_or_else(|| LabError::parse("ip link mtu", v.to_string()))
}

/// The MTU of a VXLAN device over `ns`'s underlay: its MTU less `overhead`.
pub(crate) fn vxlan_mtu(ns: &Netns, overhead: u32) -> Result<u32> {
    let under_mtu = link_mtu(ns, NODE_IFACE)?;
    under_mtu
        .checked_sub(overhead)
        .ok_or_else(|| LabError::Invalid(format!("underlay MTU {under_mtu} is below the VXLAN overhead")))
}

pub(crate) fn link_mac(ns: &Netns, dev: &str) -> Result<String> {
    let v = ns.try_ip_json(&["link", "show", "dev", dev])?;
    v.pointer("/0/address")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| LabError::parse("ip link address", v.to_string()))
}

impl HandBuilt {
    /// Builds the two nodes, the VXLAN between them and a pod on each; `with_rules` adds
    /// flanneld's firewall rules on both nodes (`add_rules`); `ipv6` also gives the nodes
    /// IPv6 underlay addresses and builds the IPv6 VXLAN of `datapath_handbuilt_v6`.
    pub fn build(prefix: &str, with_rules: bool, ipv6: bool) -> Result<HandBuilt> {
        let mut lab = Lab::new(prefix)?;
        lab.set_dual_stack(ipv6);
        for _ in 0..2 {
            lab.add_node()?;
        }
        let mut hb = HandBuilt { pods: Vec::new(), lab };
        for i in 0..2 {
            hb.build_node(i)?;
        }
        for i in 0..2 {
            hb.route_to_peer(i, 1 - i)?;
        }
        if ipv6 {
            for i in 0..2 {
                hb.build_node_v6(i)?;
            }
            for i in 0..2 {
                hb.route_to_peer_v6(i, 1 - i)?;
            }
        }
        if with_rules {
            for i in 0..2 {
                hb.add_rules(i, ipv6)?;
            }
        }
        Ok(hb)
    }

    fn build_node(&mut self, i: usize) -> Result<()> {
        weft_lab::signals::check()?;
        let peer_ip = self.lab.node(1 - i)?.ip().to_string();
        let node = self.lab.node(i)?;
        let ns = node.ns();
        let mtu = vxlan_mtu(ns, VXLAN_OVERHEAD)?.to_string();
        let local = node.ip().to_string();
        let base = pod_subnet_base(i)?;
        // Every word is a name, number or address: no spaces to split wrongly.
        let add_vxlan = format!(
            "ip link add {DEV} mtu {mtu} type vxlan id 1 local {local} remote {peer_ip} \
             dstport {VXLAN_PORT} dev {NODE_IFACE} nolearning"
        );
        ns.run(&add_vxlan.split_whitespace().collect::<Vec<_>>())?;
        ns.run(&["ip", "addr", "add", &format!("{base}/32"), "dev", DEV])?;
        ns.run(&["ip", "link", "set", DEV, "up"])?;
        ns.run(&["ip", "link", "add", BRIDGE, "mtu", &mtu, "type", "bridge"])?;
        ns.run(&["ip", "addr", "add", &format!("{}/24", with_last(base, 1)), "dev", BRIDGE])?;
        ns.run(&["ip", "link", "set", BRIDGE, "up"])?;
        ns.run(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
        let node_ns = ns.name().to_string();
        let pod = Netns::try_create(&format!("{}h{i}", self.lab.id()))?;
        let add_veth =
            format!("ip link add eth0 mtu {mtu} type veth peer name {VETH_NODE} mtu {mtu} netns {node_ns}");
        pod.run(&add_veth.split_whitespace().collect::<Vec<_>>())?;
        pod.run(&["ip", "addr", "add", &format!("{}/24", with_last(base, 2)), "dev", "eth0"])?;
        pod.run(&["ip", "link", "set", "eth0", "up"])?;
        pod.run(&["ip", "route", "add", "default", "via", &with_last(base, 1).to_string()])?;
        self.pods.push(pod);
        let ns = self.lab.node(i)?.ns();
        ns.run(&["ip", "link", "set", VETH_NODE, "master", BRIDGE])?;
        ns.run(&["ip", "link", "set", VETH_NODE, "up"])?;
        Ok(())
    }

    fn route_to_peer(&self, i: usize, j: usize) -> Result<()> {
        let peer_mac = link_mac(self.lab.node(j)?.ns(), DEV)?;
        let gw = pod_subnet_base(j)?.to_string();
        let ns = self.lab.node(i)?.ns();
        ns.run(&["ip", "neigh", "replace", &gw, "lladdr", &peer_mac, "dev", DEV, "nud", "permanent"])?;
        ns.run(&["ip", "route", "add", &format!("{gw}/24"), "via", &gw, "dev", DEV, "onlink"])?;
        Ok(())
    }

    /// flanneld's masquerade and forward rules (docs/flannel.md §9.1, §9.2), installed by
    /// flanneld's own code (`weft_dataplane::firewall`, the iptables layout, as `--ip-masq`
    /// does) in node `i`'s namespace, for the hand-built IPv4 network and, with `ipv6`, the
    /// IPv6 one: the rules on this path are exactly weft's.
    fn add_rules(&self, i: usize, ipv6: bool) -> Result<()> {
        let bad = |what: &str| LabError::Invalid(format!("hand-built network {what}"));
        let network: Ipv4Network = CLUSTER.parse().map_err(|_| bad(CLUSTER))?;
        let subnet = Ipv4Network::new(pod_subnet_base(i)?, 24).map_err(|_| bad("of node"))?;
        let ipv6 = if ipv6 { Some(crate::datapath_handbuilt_v6::rules_side(i)?) } else { None };
        let rules = FlannelRules {
            network,
            subnet,
            ip_masq: true,
            forward: true,
            fully_random: true,
            mode: FirewallMode::Iptables,
            ipv6,
        };
        let path = self.lab.node(i)?.ns().path();
        // The tools run as children of a thread that entered the node's namespace.
        let applied = std::thread::spawn(move || -> std::result::Result<(), String> {
            let target = NetNs::open(&path).map_err(|e| e.to_string())?;
            let _inside = target.enter().map_err(|e| e.to_string())?;
            apply_rules(&rules).map_err(|e| e.to_string())
        })
        .join();
        match applied {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(LabError::Invalid(format!("flanneld's rules on hand-built node {i}: {e}"))),
            Err(_) => {
                Err(LabError::Invalid(format!("flanneld's rules on hand-built node {i}: thread panicked")))
            }
        }
    }

    /// `ip -d link show` of node 0's device, for the record.
    pub fn device_details(&self) -> Result<String> {
        Ok(self.lab.node(0)?.ns().run(&["ip", "-d", "link", "show", "dev", DEV])?.stdout)
    }

    /// Pod on node 0 → pod on node 1 over `vx0`.
    pub fn vxlan_ends(&self) -> Result<Ends> {
        let client = self.pods.first().ok_or_else(|| LabError::Invalid("no hand-built pod 0".into()))?;
        let server = self.pods.get(1).ok_or_else(|| LabError::Invalid("no hand-built pod 1".into()))?;
        Ok(Ends {
            client_ns: client.name().to_string(),
            server_ns: server.name().to_string(),
            server_ip: IpAddr::V4(with_last(pod_subnet_base(1)?, 2)),
            mtu: link_mtu(client, "eth0")?,
        })
    }

    /// Node 0 → node 1 on their underlay addresses.
    pub fn underlay_ends(&self) -> Result<Ends> {
        let (a, b) = (self.lab.node(0)?, self.lab.node(1)?);
        Ok(Ends {
            client_ns: a.ns().name().to_string(),
            server_ns: b.ns().name().to_string(),
            server_ip: IpAddr::V4(b.ip()),
            mtu: link_mtu(a.ns(), NODE_IFACE)?,
        })
    }

    /// The lab, to run iperf3 in.
    pub fn lab_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }
}
