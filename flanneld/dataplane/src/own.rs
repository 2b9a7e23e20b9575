//! The ownership rule (pure): which kernel entries are flanneld's to change or delete.
//!
//! One [`Ownership`] is for one address family (one device): its network's. The IPv6 side of a
//! dual-stack node has its own, over the IPv6 network and leases (docs/flannel.md §8.5).
//!
//! flanneld changes only what it makes, in exactly the shape it makes it (see `netlink::msg`):
//! - neighbours on the VXLAN device (`flannel.<VNI>`) that are permanent, and FDB entries on it
//!   that are permanent `self` entries with a destination;
//! - routes on the device of the shape of a VXLAN peer route, `S via S.0 dev flannel.<VNI>
//!   onlink` (IPv6: `S6 via S6:: dev flannel-v6.<VNI> onlink`): main table, protocol boot,
//!   unicast, scope universe, tos 0, no metric given (0, IPv6 1024: `crate::default_metric`), `S` a
//!   subnet-aligned destination inside the cluster network of the lease size (or the subnet of
//!   a lease the node has seen);
//! - while DirectRouting is in use (and on the pass that cleans up after it was switched off):
//!   routes `S via P` of the same table, protocol, type, scope, tos and metric, without
//!   `onlink`, where `S` is a lease subnet and `P` the PublicIP of a node that holds or held
//!   that lease (`leases`).
//!
//! Nothing else is ever changed, whatever its protocol, device or table. Upstream flannel
//! reconciles nothing, so it never deletes a foreign route; weft's reconciliation must not
//! either. A route flanneld does not own that its create+replace would overwrite (main table,
//! the same destination, tos 0, no metric: the kernel's replace key) is a [`Conflict`]: the
//! route flanneld needs is not programmed and the conflict is reported instead.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use crate::plan::Peer;
use crate::view::inside;
use crate::{
    default_metric, KernelFdb, KernelNeigh, KernelRoute, KernelState, RTN_UNICAST, RTPROT_BOOT,
    RT_SCOPE_UNIVERSE, RT_TABLE_MAIN,
};

/// What flanneld owns, given the network and what it knows about leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// The cluster network (`Network`, or `IPv6Network` for the IPv6 side).
    pub network: IpNetwork,
    /// The lease size (`SubnetLen` / `IPv6SubnetLen`).
    pub subnet_len: u8,
    /// `(subnet, PublicIP)` of every peer lease seen (current and removed), of the family of
    /// `network`.
    pub leases: BTreeSet<(IpNetwork, IpAddr)>,
    /// DirectRouting routes are flanneld's: DirectRouting is on, or this is the clean-up after
    /// it was switched off.
    pub direct: bool,
}

/// A route flanneld needs whose destination is held by a route it does not own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The destination flanneld needs.
    pub dst: IpNetwork,
    /// The route in the way (left unchanged).
    pub route: KernelRoute,
}

impl Ownership {
    /// The rule for `peers` (their subnets and public IPs as the known leases).
    pub fn of_peers(network: IpNetwork, subnet_len: u8, peers: &[Peer], direct: bool) -> Ownership {
        Ownership {
            network,
            subnet_len,
            leases: peers.iter().map(|p| (p.subnet, p.public_ip)).collect(),
            direct,
        }
    }

    /// A permanent neighbour on the device `device`.
    pub fn owns_neigh(&self, device: u32, n: &KernelNeigh) -> bool {
        n.ifindex == device && n.permanent
    }

    /// A permanent `self` FDB entry on the device `device`.
    pub fn owns_fdb(&self, device: u32, e: &KernelFdb) -> bool {
        e.ifindex == device && e.permanent && e.self_
    }

    /// A route of exactly a shape flanneld creates (see the module docs).
    pub fn owns_route(&self, device: u32, r: &KernelRoute) -> bool {
        let Some(gw) = r.gw else { return false };
        let dst = r.dst;
        let made = r.table == RT_TABLE_MAIN
            && r.protocol == RTPROT_BOOT
            && r.kind == RTN_UNICAST
            && r.scope == RT_SCOPE_UNIVERSE
            && r.tos == 0
            && r.metric == default_metric(&dst)
            && !r.multipath
            && gw.is_ipv6() == dst.is_ipv6();
        if !made || dst.ip() != dst.network() || !inside(&dst, &self.network) {
            return false;
        }
        if r.onlink {
            r.oif == Some(device)
                && gw == dst.network()
                && (dst.prefix() == self.subnet_len || self.known_subnet(&dst))
        } else {
            self.direct && r.oif != Some(device) && self.leases.contains(&(dst, gw))
        }
    }

    fn known_subnet(&self, dst: &IpNetwork) -> bool {
        // `IpAddr` orders every IPv4 address before every IPv6 one.
        let lo = (*dst, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let hi = (*dst, IpAddr::V6(Ipv6Addr::from(u128::MAX)));
        self.leases.range(lo..=hi).next().is_some()
    }

    /// True when `r` is not flanneld's and a create+replace of a route to `dst` would
    /// overwrite it: main table, the same destination, tos 0, the family's default metric, any
    /// type or protocol.
    pub fn blocks(&self, device: u32, r: &KernelRoute, dst: &IpNetwork) -> bool {
        r.table == RT_TABLE_MAIN
            && r.dst == *dst
            && r.tos == 0
            && r.metric == default_metric(dst)
            && !self.owns_route(device, r)
    }

    /// Only the entries of `state` that are flanneld's.
    pub fn owned(&self, state: &KernelState) -> KernelState {
        let d = state.device;
        KernelState {
            device: d,
            device_v6: state.device_v6,
            neighs: state.neighs.iter().filter(|n| self.owns_neigh(d, n)).cloned().collect(),
            fdb: state.fdb.iter().filter(|e| self.owns_fdb(d, e)).cloned().collect(),
            routes: state.routes.iter().filter(|r| self.owns_route(d, r)).cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: u32 = 7;
    const ETH0: u32 = 2;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn owner(direct: bool) -> Ownership {
        let mut leases = BTreeSet::new();
        leases.insert(("10.244.5.0/24".parse().unwrap(), "198.18.0.11".parse().unwrap()));
        // A removed lease whose node had another address then.
        leases.insert(("10.244.6.0/24".parse().unwrap(), "198.18.0.12".parse().unwrap()));
        Ownership { network: "10.244.0.0/16".parse().unwrap(), subnet_len: 24, leases, direct }
    }

    fn onlink(dst: &str) -> KernelRoute {
        let d = net(dst);
        KernelRoute::made(d, d.network(), true, Some(DEV))
    }

    fn direct(dst: &str, gw: &str) -> KernelRoute {
        KernelRoute::made(net(dst), ip(gw), false, Some(ETH0))
    }

    #[test]
    fn vxlan_peer_route_shape_is_owned_only_exactly() {
        let o = owner(false);
        assert!(o.owns_route(DEV, &onlink("10.244.77.0/24")), "any lease-sized subnet of the network");
        for (why, r) in [
            ("other device", KernelRoute { oif: Some(ETH0), ..onlink("10.244.77.0/24") }),
            ("proto static", KernelRoute { protocol: 4, ..onlink("10.244.77.0/24") }),
            ("other table", KernelRoute { table: 100, ..onlink("10.244.77.0/24") }),
            ("metric", KernelRoute { metric: 10, ..onlink("10.244.77.0/24") }),
            ("blackhole", KernelRoute { kind: 6, ..onlink("10.244.77.0/24") }),
            ("scope link", KernelRoute { scope: 253, ..onlink("10.244.77.0/24") }),
            ("gateway not S.0", KernelRoute { gw: Some(ip("10.244.77.9")), ..onlink("10.244.77.0/24") }),
            ("/32", onlink("10.244.200.7/32")),
            ("outside the network", onlink("10.99.1.0/24")),
            ("no gateway", KernelRoute { gw: None, ..onlink("10.244.77.0/24") }),
        ] {
            assert!(!o.owns_route(DEV, &r), "{why}: {r}");
        }
        // A known lease of another size (a network config change) is still recognised.
        let mut o2 = o.clone();
        o2.leases.insert(("10.244.8.0/25".parse().unwrap(), "198.18.0.13".parse().unwrap()));
        assert!(o2.owns_route(DEV, &onlink("10.244.8.0/25")));
        assert!(!o.owns_route(DEV, &onlink("10.244.8.0/25")));
    }

    #[test]
    fn direct_routes_are_owned_only_for_known_leases_while_direct_routing_is_in_use() {
        let on = owner(true);
        assert!(on.owns_route(DEV, &direct("10.244.5.0/24", "198.18.0.11")));
        assert!(on.owns_route(DEV, &direct("10.244.6.0/24", "198.18.0.12")), "a lease it held");
        for (why, r) in [
            ("issue 13: a /32 via a peer", direct("10.244.200.7/32", "198.18.0.11")),
            ("proto static", KernelRoute { protocol: 4, ..direct("10.244.5.0/24", "198.18.0.11") }),
            ("not that lease's address", direct("10.244.5.0/24", "198.18.0.12")),
            ("no peer's address", direct("10.244.9.0/24", "198.18.0.99")),
            ("other table", KernelRoute { table: 100, ..direct("10.244.5.0/24", "198.18.0.11") }),
            (
                "onlink on another device",
                KernelRoute { onlink: true, ..direct("10.244.5.0/24", "198.18.0.11") },
            ),
        ] {
            assert!(!on.owns_route(DEV, &r), "{why}: {r}");
        }
        assert!(!owner(false).owns_route(DEV, &direct("10.244.5.0/24", "198.18.0.11")), "DirectRouting off");
    }

    #[test]
    fn only_permanent_entries_on_the_device_are_owned() {
        let o = owner(false);
        let n = KernelNeigh { ifindex: DEV, ip: ip("10.244.5.0"), mac: [2; 6], permanent: true };
        assert!(o.owns_neigh(DEV, &n));
        assert!(!o.owns_neigh(DEV, &KernelNeigh { ifindex: ETH0, ..n.clone() }));
        assert!(!o.owns_neigh(DEV, &KernelNeigh { permanent: false, ..n }));
        let e = KernelFdb { ifindex: DEV, mac: [2; 6], dst: ip("198.18.0.11"), permanent: true, self_: true };
        assert!(o.owns_fdb(DEV, &e));
        assert!(!o.owns_fdb(DEV, &KernelFdb { ifindex: ETH0, ..e.clone() }));
        assert!(!o.owns_fdb(DEV, &KernelFdb { self_: false, ..e }));
    }

    #[test]
    fn blocking_is_the_kernels_replace_key_for_foreign_routes() {
        let o = owner(false);
        let dst = net("10.244.5.0/24");
        let static_route = KernelRoute { protocol: 4, ..direct("10.244.5.0/24", "198.18.0.11") };
        assert!(o.blocks(DEV, &static_route, &dst));
        let blackhole = KernelRoute { kind: 6, gw: None, oif: None, ..static_route.clone() };
        assert!(o.blocks(DEV, &blackhole, &dst));
        assert!(!o.blocks(DEV, &KernelRoute { metric: 100, ..static_route.clone() }, &dst));
        assert!(!o.blocks(DEV, &KernelRoute { table: 100, ..static_route.clone() }, &dst));
        assert!(!o.blocks(DEV, &static_route, &net("10.244.6.0/24")));
        assert!(!o.blocks(DEV, &onlink("10.244.5.0/24"), &dst), "its own route");
    }

    #[test]
    fn v6_peer_route_shape_is_owned_with_the_kernels_default_metric() {
        let mut leases = BTreeSet::new();
        leases.insert((net("fd00:5:0:5::/64"), ip("2001:2::11")));
        let o = Ownership { network: net("fd00:5::/48"), subnet_len: 64, leases, direct: false };
        let r = onlink("fd00:5:0:77::/64");
        assert_eq!(r.metric, crate::IP6_RT_PRIO_USER);
        assert!(o.owns_route(DEV, &r));
        for (why, r) in [
            (
                "metric 0 is not what the kernel gives an IPv6 route",
                KernelRoute { metric: 0, ..onlink("fd00:5:0:77::/64") },
            ),
            ("proto static", KernelRoute { protocol: 4, ..onlink("fd00:5:0:77::/64") }),
            ("outside the network", onlink("fd00:6:0:77::/64")),
            ("an IPv4 route", onlink("10.244.77.0/24")),
            ("/128", onlink("fd00:5:0:77::9/128")),
        ] {
            assert!(!o.owns_route(DEV, &r), "{why}: {r}");
        }
        // The IPv4 rule never owns an IPv6 route.
        assert!(!owner(false).owns_route(DEV, &onlink("fd00:5:0:77::/64")));
        let foreign = KernelRoute { protocol: 4, ..onlink("fd00:5:0:77::/64") };
        assert!(o.blocks(DEV, &foreign, &net("fd00:5:0:77::/64")));
        assert!(!o.blocks(DEV, &KernelRoute { metric: 100, ..foreign }, &net("fd00:5:0:77::/64")));
    }
}
