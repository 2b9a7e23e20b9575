//! The cause vocabulary: one stable code per broken link `weft path` and `weft doctor` can name.
//!
//! Codes are part of the fixed interface (scripts match on them): serialised as
//! `SCREAMING_SNAKE_CASE`, never renamed, only added. Each carries a one-line fix hint and, where
//! it has one, the flannel failure mode it belongs to (F1–F13 in the README's cause table).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a link of the data path is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Cause {
    /// No route for the destination (peer route via flannel.<VNI> missing, or the kernel has none).
    NoRoute,
    /// A route via flannel.<VNI> for a subnet no live lease holds, or shadowing the local subnet.
    RouteStale,
    /// The route leaves by another device or gateway than the lease says.
    RouteWrongDev,
    /// No neighbour entry for the peer's gateway on flannel.<VNI>.
    NeighMissing,
    /// The neighbour entry's MAC is not the peer's VtepMAC.
    NeighMacStale,
    /// No FDB entry for the peer's VTEP MAC.
    FdbMissing,
    /// The FDB entry sends the VTEP MAC to another address than the lease's PublicIP.
    FdbWrongDst,
    /// An FDB entry for a MAC no lease holds.
    FdbDeadMac,
    /// flannel.<VNI> exists but is down.
    VtepDown,
    /// flannel.<VNI> does not exist.
    VtepMissing,
    /// flannel.<VNI>'s VXLAN attributes (VNI, port, local, dev) differ from the config.
    VtepAttrMismatch,
    /// The remote flannel.<VNI> MAC differs from its lease's VtepMAC / our neighbour MAC.
    VtepMacMismatch,
    /// The lease's VtepMAC is not the MAC its node's flannel.<VNI> has.
    LeaseVtepMacStale,
    /// The lease's PublicIP is not an address of its node (or not the VXLAN local address).
    PublicIpNotLocal,
    /// Two leases overlap (the same subnet held twice).
    LeaseOverlap,
    /// No lease covers the destination's subnet.
    LeaseMissing,
    /// An MTU along the chain is larger than the next hop can carry.
    MtuMismatch,
    /// Reverse-path filtering rejects the packet (the kernel's own lookup fails).
    RpFilter,
    /// The FORWARD chain drops pod traffic.
    ForwardDrop,
    /// net.ipv4.ip_forward is 0.
    IpForwardOff,
    /// bridge-nf-call-iptables is off (or br_netfilter missing) where rules need it.
    BridgeNfOff,
    /// The pod's host veth (bridge port) is down or not forwarding.
    BridgePortDown,
    /// The pod's host veth is not a port of the bridge.
    BridgePortNotEnslaved,
    /// Hairpin mode is off on a port that needs it.
    HairpinOff,
    /// The bridge's address is not the lease subnet's gateway.
    Cni0AddrMismatch,
    /// ipMasq is on but no masquerade rule covers the pod's traffic to outside.
    MasqMissing,
    /// Encapsulated packets leave this node but never arrive at the peer.
    UnderlayLoss,
    /// No underlay route to the peer's PublicIP (or it leaves by another device).
    UnderlayNoRoute,
    /// Checksum offload on flannel.<VNI> is suspect (broken VXLAN checksums).
    CsumOffloadSuspect,
    /// The remote node's kernel view could not be read (endpoint off or unreachable).
    RemoteViewUnavailable,
    /// The pod (IP, container ID or netns) is not on this node.
    PodNotFound,
    /// host-gw: the peer's PublicIP is not on-link on the external interface (not on the same
    /// L2 segment), so no `S via P` route can reach it.
    PeerNotOnLink,
    /// host-gw: the underlay neighbour (ARP) entry of the peer's PublicIP is FAILED or
    /// INCOMPLETE: the peer does not answer on the L2 segment.
    UnderlayNeighFailed,
    /// host-gw: the underlay neighbour entry of the peer's PublicIP has another MAC than the
    /// peer's external interface.
    UnderlayNeighMacStale,
}

impl Cause {
    /// Every code, in declaration order (for docs and tests).
    pub const ALL: &'static [Cause] = &[
        Cause::NoRoute,
        Cause::RouteStale,
        Cause::RouteWrongDev,
        Cause::NeighMissing,
        Cause::NeighMacStale,
        Cause::FdbMissing,
        Cause::FdbWrongDst,
        Cause::FdbDeadMac,
        Cause::VtepDown,
        Cause::VtepMissing,
        Cause::VtepAttrMismatch,
        Cause::VtepMacMismatch,
        Cause::LeaseVtepMacStale,
        Cause::PublicIpNotLocal,
        Cause::LeaseOverlap,
        Cause::LeaseMissing,
        Cause::MtuMismatch,
        Cause::RpFilter,
        Cause::ForwardDrop,
        Cause::IpForwardOff,
        Cause::BridgeNfOff,
        Cause::BridgePortDown,
        Cause::BridgePortNotEnslaved,
        Cause::HairpinOff,
        Cause::Cni0AddrMismatch,
        Cause::MasqMissing,
        Cause::UnderlayLoss,
        Cause::UnderlayNoRoute,
        Cause::CsumOffloadSuspect,
        Cause::RemoteViewUnavailable,
        Cause::PodNotFound,
        Cause::PeerNotOnLink,
        Cause::UnderlayNeighFailed,
        Cause::UnderlayNeighMacStale,
    ];

    /// The stable code, as serialised (`"NO_ROUTE"`).
    pub fn code(&self) -> &'static str {
        match self {
            Cause::NoRoute => "NO_ROUTE",
            Cause::RouteStale => "ROUTE_STALE",
            Cause::RouteWrongDev => "ROUTE_WRONG_DEV",
            Cause::NeighMissing => "NEIGH_MISSING",
            Cause::NeighMacStale => "NEIGH_MAC_STALE",
            Cause::FdbMissing => "FDB_MISSING",
            Cause::FdbWrongDst => "FDB_WRONG_DST",
            Cause::FdbDeadMac => "FDB_DEAD_MAC",
            Cause::VtepDown => "VTEP_DOWN",
            Cause::VtepMissing => "VTEP_MISSING",
            Cause::VtepAttrMismatch => "VTEP_ATTR_MISMATCH",
            Cause::VtepMacMismatch => "VTEP_MAC_MISMATCH",
            Cause::LeaseVtepMacStale => "LEASE_VTEP_MAC_STALE",
            Cause::PublicIpNotLocal => "PUBLIC_IP_NOT_LOCAL",
            Cause::LeaseOverlap => "LEASE_OVERLAP",
            Cause::LeaseMissing => "LEASE_MISSING",
            Cause::MtuMismatch => "MTU_MISMATCH",
            Cause::RpFilter => "RP_FILTER",
            Cause::ForwardDrop => "FORWARD_DROP",
            Cause::IpForwardOff => "IP_FORWARD_OFF",
            Cause::BridgeNfOff => "BRIDGE_NF_OFF",
            Cause::BridgePortDown => "BRIDGE_PORT_DOWN",
            Cause::BridgePortNotEnslaved => "BRIDGE_PORT_NOT_ENSLAVED",
            Cause::HairpinOff => "HAIRPIN_OFF",
            Cause::Cni0AddrMismatch => "CNI0_ADDR_MISMATCH",
            Cause::MasqMissing => "MASQ_MISSING",
            Cause::UnderlayLoss => "UNDERLAY_LOSS",
            Cause::UnderlayNoRoute => "UNDERLAY_NO_ROUTE",
            Cause::CsumOffloadSuspect => "CSUM_OFFLOAD_SUSPECT",
            Cause::RemoteViewUnavailable => "REMOTE_VIEW_UNAVAILABLE",
            Cause::PodNotFound => "POD_NOT_FOUND",
            Cause::PeerNotOnLink => "PEER_NOT_ON_LINK",
            Cause::UnderlayNeighFailed => "UNDERLAY_NEIGH_FAILED",
            Cause::UnderlayNeighMacStale => "UNDERLAY_NEIGH_MAC_STALE",
        }
    }

    /// A one-line fix hint for an operator.
    pub fn hint(&self) -> &'static str {
        match self {
            Cause::NoRoute => {
                "add the peer route (vxlan: <subnet> via <subnet>.0 dev flannel.<VNI> onlink; host-gw: <subnet> via <PublicIP> dev <iface>) or restart flanneld so it re-adds its peers"
            }
            Cause::RouteStale => {
                "delete the route: no live lease holds that subnet (or it shadows the local cni0 subnet)"
            }
            Cause::RouteWrongDev => {
                "the route leaves by the wrong device or gateway: replace it with the one the lease implies"
            }
            Cause::NeighMissing => {
                "add the PERMANENT neighbour <peer gw> lladdr <peer VtepMAC> dev flannel.<VNI> (flanneld adds it per lease)"
            }
            Cause::NeighMacStale => {
                "replace the neighbour entry's MAC with the peer lease's VtepMAC (ip neigh replace ... nud permanent)"
            }
            Cause::FdbMissing => {
                "add the FDB entry <peer VtepMAC> dst <peer PublicIP> dev flannel.<VNI> (flanneld adds it per lease)"
            }
            Cause::FdbWrongDst => {
                "replace the FDB entry so the VTEP MAC goes to the lease's PublicIP"
            }
            Cause::FdbDeadMac => "delete the FDB entry: no lease holds that MAC any more",
            Cause::VtepDown => "bring flannel.<VNI> up (ip link set flannel.<VNI> up)",
            Cause::VtepMissing => "flannel.<VNI> is gone: restart flanneld so it recreates the VXLAN device",
            Cause::VtepAttrMismatch => {
                "flannel.<VNI>'s VNI/port/local/dev differ from the config: delete it and restart flanneld"
            }
            Cause::VtepMacMismatch => {
                "the remote flannel.<VNI> MAC differs from its lease: restart the remote flanneld so it republishes its VtepMAC"
            }
            Cause::LeaseVtepMacStale => {
                "the lease's VtepMAC is out of date: restart that node's flanneld (it rewrites the lease with the device's MAC)"
            }
            Cause::PublicIpNotLocal => {
                "the lease's PublicIP is not on its node: fix -public-ip/-iface and restart flanneld"
            }
            Cause::LeaseOverlap => "two leases hold the same subnet: delete the stale one from etcd",
            Cause::LeaseMissing => "no lease covers the destination: check that the remote flanneld is running",
            Cause::MtuMismatch => {
                "lower the MTU: pod eth0 <= cni0 <= flannel.<VNI> <= underlay - encapsulation overhead"
            }
            Cause::RpFilter => {
                "strict rp_filter rejects the return path: set net.ipv4.conf.{all,<dev>}.rp_filter to 2 (loose) or 0"
            }
            Cause::ForwardDrop => {
                "the FORWARD chain drops pod traffic: accept the pod network (flanneld -iptables-forward-rules) or change the policy"
            }
            Cause::IpForwardOff => "set net.ipv4.ip_forward=1 (IPv6: net.ipv6.conf.all.forwarding=1)",
            Cause::BridgeNfOff => "load br_netfilter and set net.bridge.bridge-nf-call-iptables=1",
            Cause::BridgePortDown => "bring the pod's host veth up (ip link set <veth> up)",
            Cause::BridgePortNotEnslaved => "attach the pod's host veth to the bridge (ip link set <veth> master cni0)",
            Cause::HairpinOff => "enable hairpin mode on the port (bridge link set dev <veth> hairpin on)",
            Cause::Cni0AddrMismatch => {
                "the bridge address differs from the lease's gateway: delete the bridge (pods re-attach) or fix the lease"
            }
            Cause::MasqMissing => "ipMasq is on but no masquerade rule: restart flanneld (-ip-masq) or re-ADD the pod",
            Cause::UnderlayLoss => {
                "encapsulated packets are lost on the underlay: allow UDP to the VXLAN port between the nodes"
            }
            Cause::UnderlayNoRoute => {
                "no underlay route to the peer's PublicIP, or it leaves by another device than flannel.<VNI>'s"
            }
            Cause::CsumOffloadSuspect => {
                "disable tx checksum offload on flannel.<VNI> (ethtool -K flannel.<VNI> tx-checksum-ip-generic off)"
            }
            Cause::RemoteViewUnavailable => {
                "start the remote flanneld with -debug-dataplane and a reachable -healthz-ip/-healthz-port"
            }
            Cause::PodNotFound => "no such pod on this node: check the IP, container ID or netns path",
            Cause::PeerNotOnLink => {
                "host-gw needs every node on one L2 segment: put the peer's PublicIP on the external interface's subnet, or use the vxlan backend"
            }
            Cause::UnderlayNeighFailed => {
                "the peer does not answer ARP on the underlay: check that it is up and on this L2 segment (ip neigh show <PublicIP>)"
            }
            Cause::UnderlayNeighMacStale => {
                "delete the wrong neighbour entry so ARP resolves the peer again (ip neigh del <PublicIP> dev <iface>)"
            }
        }
    }

    /// The flannel failure mode (README cause table) this code belongs to, if any.
    pub fn failure_mode(&self) -> Option<&'static str> {
        match self {
            Cause::NoRoute => Some("F1"),
            Cause::RouteStale | Cause::RouteWrongDev => Some("F2"),
            Cause::NeighMissing
            | Cause::NeighMacStale
            | Cause::FdbMissing
            | Cause::FdbWrongDst
            | Cause::FdbDeadMac
            | Cause::VtepMacMismatch
            | Cause::LeaseVtepMacStale => Some("F3"),
            Cause::VtepDown | Cause::VtepMissing | Cause::VtepAttrMismatch => Some("F4"),
            Cause::PublicIpNotLocal
            | Cause::UnderlayNoRoute
            | Cause::PeerNotOnLink
            | Cause::UnderlayNeighFailed
            | Cause::UnderlayNeighMacStale => Some("F5"),
            Cause::UnderlayLoss => Some("F6"),
            Cause::ForwardDrop => Some("F7"),
            Cause::MtuMismatch => Some("F8"),
            Cause::CsumOffloadSuspect => Some("F9"),
            Cause::RpFilter => Some("F10"),
            Cause::IpForwardOff
            | Cause::BridgeNfOff
            | Cause::HairpinOff
            | Cause::BridgePortDown
            | Cause::BridgePortNotEnslaved => Some("F11"),
            Cause::Cni0AddrMismatch => Some("F12"),
            Cause::LeaseOverlap => Some("F13"),
            Cause::MasqMissing | Cause::LeaseMissing | Cause::RemoteViewUnavailable | Cause::PodNotFound => {
                None
            }
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_is_the_serde_name() {
        for c in Cause::ALL {
            let json = serde_json::to_string(c).expect("serialise");
            assert_eq!(json, format!("\"{}\"", c.code()));
            let back: Cause = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, *c);
            assert!(!c.hint().is_empty());
        }
        let mut codes: Vec<_> = Cause::ALL.iter().map(|c| c.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Cause::ALL.len());
    }
}
