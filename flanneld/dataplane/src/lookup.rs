//! Longest-prefix lookups in one route dump, indexed once: the on-link questions of a whole
//! snapshot or reconciliation (one per peer) are asked of the same dump, and scanning every
//! route per question made them quadratic (50 ms at 5,000 host-gw peers, every periodic
//! reconciliation).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::{KernelRoute, KernelState, RTN_UNICAST, RT_TABLE_MAIN};

/// The main-table routes (tos 0) of a dump, by destination, for the route the kernel would
/// pick: longest prefix, then lowest metric (the first in dump order among equals). Policy
/// routing rules are not followed (see [`KernelState::is_onlink`]).
#[derive(Debug, Clone, Default)]
pub struct RouteLookup<'a> {
    /// The prefix lengths present per family (IPv4, IPv6), longest first.
    lens: [Vec<u8>; 2],
    /// The chosen route per `(prefix length, network address)`.
    best: BTreeMap<(u8, IpAddr), &'a KernelRoute>,
}

impl<'a> RouteLookup<'a> {
    pub fn new(state: &'a KernelState) -> RouteLookup<'a> {
        let mut l = RouteLookup::default();
        for r in state.routes.iter().filter(|r| r.table == RT_TABLE_MAIN && r.tos == 0) {
            let key = (r.dst.prefix(), r.dst.network());
            match l.best.get(&key) {
                Some(kept) if kept.metric <= r.metric => {}
                _ => {
                    l.best.insert(key, r);
                }
            }
        }
        for (len, net) in l.best.keys() {
            let lens = &mut l.lens[usize::from(net.is_ipv6())];
            if !lens.contains(len) {
                lens.push(*len);
            }
        }
        for lens in &mut l.lens {
            lens.sort_unstable_by(|a, b| b.cmp(a));
        }
        l
    }

    /// The route the kernel would pick for `dst`.
    pub fn best_route(&self, dst: IpAddr) -> Option<&'a KernelRoute> {
        self.lens[usize::from(dst.is_ipv6())].iter().find_map(|&len| {
            let net = IpNetwork::new(dst, len).ok()?.network();
            self.best.get(&(len, net)).copied()
        })
    }

    /// DirectRouting's on-link test: the route picked for `dst` is a unicast route without a
    /// gateway.
    pub fn is_onlink(&self, dst: IpAddr) -> bool {
        self.best_route(dst).is_some_and(|r| r.kind == RTN_UNICAST && r.gw.is_none() && !r.multipath)
    }

    /// host-gw's test: on-link, and through the interface `oif`.
    pub fn is_onlink_on(&self, dst: IpAddr, oif: u32) -> bool {
        self.best_route(dst)
            .is_some_and(|r| r.kind == RTN_UNICAST && r.gw.is_none() && !r.multipath && r.oif == Some(oif))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn route(dst: &str, gw: Option<&str>, metric: u32, oif: u32) -> KernelRoute {
        KernelRoute {
            gw: gw.map(|g| g.parse().unwrap()),
            metric,
            ..KernelRoute::made(dst.parse().unwrap(), "0.0.0.0".parse().unwrap(), false, Some(oif))
        }
    }

    /// The answer of a scan of every route, as the kernel orders them (the reference).
    fn scanned(k: &KernelState, dst: IpAddr) -> Option<&KernelRoute> {
        k.routes
            .iter()
            .filter(|r| r.table == RT_TABLE_MAIN && r.tos == 0)
            .filter(|r| r.dst.is_ipv6() == dst.is_ipv6() && r.dst.contains(dst))
            .min_by_key(|r| (std::cmp::Reverse(r.dst.prefix()), r.metric))
    }

    #[test]
    fn the_index_picks_what_a_scan_of_every_route_picks() {
        let mut local = route("198.18.0.1/32", None, 0, 2);
        local.table = crate::RT_TABLE_LOCAL;
        let mut tos = route("198.18.7.0/24", None, 0, 9);
        tos.tos = 4;
        let k = KernelState {
            routes: vec![
                route("0.0.0.0/0", Some("198.18.0.254"), 0, 2),
                route("198.18.0.0/16", None, 100, 2),
                route("198.18.0.0/16", None, 50, 3),
                route("198.18.0.0/16", None, 50, 4),
                route("198.18.5.0/24", Some("198.18.0.9"), 0, 2),
                route("10.5.0.0/16", None, 0, 5),
                local,
                tos,
                route("2001:2::/64", None, 256, 2),
                route("::/0", Some("fe80::1"), 1024, 2),
            ],
            ..KernelState::default()
        };
        let l = RouteLookup::new(&k);
        for dst in [
            "198.18.0.1",
            "198.18.5.7",
            "198.18.7.1",
            "198.18.200.3",
            "10.5.1.1",
            "8.8.8.8",
            "2001:2::3",
            "2001:db8::1",
            "::1",
        ] {
            let dst: IpAddr = dst.parse().unwrap();
            assert_eq!(l.best_route(dst), scanned(&k, dst), "{dst}");
        }
        // Of the two /16 with the lowest metric, the first in dump order.
        assert_eq!(l.best_route("198.18.9.9".parse().unwrap()).unwrap().oif, Some(3));
        assert!(l.is_onlink_on("198.18.9.9".parse().unwrap(), 3));
        assert!(!l.is_onlink_on("198.18.9.9".parse().unwrap(), 2));
        assert!(!l.is_onlink("198.18.5.7".parse().unwrap()), "via a gateway");
        assert!(!l.is_onlink("8.8.8.8".parse().unwrap()), "the default route has a gateway");
        assert!(RouteLookup::new(&KernelState::default()).best_route("10.0.0.1".parse().unwrap()).is_none());
    }
}
