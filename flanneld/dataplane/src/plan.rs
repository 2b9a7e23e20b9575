//! Pure planning: which [`NetOp`]s bring the VXLAN device's neighbours, FDB and routes from
//! what they are (or were) to what the peer set says they must be. No I/O here.
//!
//! Per peer (docs/flannel.md §8.5) the neighbour and the FDB entry come before the route,
//! so the kernel never tries to resolve the gateway `S.0` itself on a device without learning.
//! Cleanup of a peer's previous entries (old MAC, old public IP) comes *after* the new entries:
//! make before break, no window without forwarding state. Deleting stale FDB entries and
//! reconciling against a dump are safe divergences from upstream (§15); both touch only what
//! [`Ownership`] says flanneld made.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::own::{Conflict, Ownership};
use crate::{KernelRoute, KernelState, Mac, NetOp};

/// One remote node as the dataplane needs it, for one address family: the IPv4 side
/// (`subnet` of `Network`, `PublicIP`, the `VtepMAC` of `BackendData`) or the IPv6 side of a
/// dual-stack lease (`IPv6` subnet, `PublicIPv6`, the `VtepMAC` of `BackendV6Data`; §8.5).
/// Both fields are of the same family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's lease subnet `S` (e.g. `10.5.71.0/24`, or `fd00:5:0:47::/64`).
    pub subnet: IpNetwork,
    /// The peer's `PublicIP` `P` (VXLAN destination, or gateway with DirectRouting).
    pub public_ip: IpAddr,
    /// The peer's `VtepMAC` `M`.
    pub vtep_mac: Mac,
    /// DirectRouting decided the peer is on-link: only a plain route `S via P` (§8.6).
    pub direct: bool,
}

impl Peer {
    /// The subnet as a network value with host bits cleared (`S/len`).
    fn dst(&self) -> IpNetwork {
        // IpNetwork::new only fails for a prefix longer than the family's, which
        // `self.subnet` already excludes.
        IpNetwork::new(self.subnet.network(), self.subnet.prefix()).unwrap_or(self.subnet)
    }

    /// `S.0` (IPv6 `S6::`): neighbour address and onlink gateway of a VXLAN peer.
    fn gw(&self) -> IpAddr {
        self.subnet.network()
    }

    fn public(&self) -> IpAddr {
        self.public_ip
    }

    /// The route add for this peer (`S via P`, or `S via S.0 onlink` on the VXLAN device).
    pub fn route(&self) -> NetOp {
        if self.direct {
            NetOp::AddRoute { dst: self.dst(), gw: self.public(), onlink: false }
        } else {
            NetOp::AddRoute { dst: self.dst(), gw: self.gw(), onlink: true }
        }
    }

    fn neigh(&self) -> NetOp {
        NetOp::AddNeigh { ip: self.gw(), mac: self.vtep_mac }
    }

    fn fdb(&self) -> NetOp {
        NetOp::AddFdb { mac: self.vtep_mac, dst: self.public() }
    }
}

/// Ops that make the kernel match `new`, given that `old` (the last-known attributes of the
/// same subnet, if any) was programmed before.
///
/// - VXLAN peer: neighbour, FDB, route (all create+replace), then cleanup: with a changed MAC the
///   old FDB entry (and the old neighbour if its address differs; with the same address the
///   replace already rewrote it, and deleting it first would open a window without one); with a
///   changed public IP the FDB entry with the old destination (usually already rewritten by the
///   replace, then the delete is a harmless "not found").
/// - Direct peer: only `S via P`; when switching from VXLAN the old neighbour/FDB are removed.
pub fn plan_add(old: Option<&Peer>, new: &Peer) -> Vec<NetOp> {
    let mut ops = Vec::new();
    if !new.direct {
        ops.push(new.neigh());
        ops.push(new.fdb());
    }
    ops.push(new.route());
    let Some(old) = old else {
        return ops;
    };
    if old.direct {
        // The replace of the route already switched a direct route to the onlink one (same
        // destination), or rewrote the gateway. A moved subnet: a dual-stack peer whose IPv6
        // side now comes from another lease key for the same IPv4 subnet.
        if old.dst() != new.dst() {
            ops.push(del_route(&old.route()));
        }
        return ops;
    }
    let old_neigh = NetOp::DelNeigh { ip: old.gw(), mac: old.vtep_mac };
    let old_fdb = NetOp::DelFdb { mac: old.vtep_mac, dst: old.public() };
    if new.direct {
        ops.push(old_fdb);
        ops.push(old_neigh);
    } else {
        if old.vtep_mac != new.vtep_mac || old.public_ip != new.public_ip {
            ops.push(old_fdb);
        }
        if old.gw() != new.gw() {
            ops.push(old_neigh);
        }
    }
    if old.dst() != new.dst() {
        ops.push(del_route(&old.route()));
    }
    ops
}

fn del_route(add: &NetOp) -> NetOp {
    match add {
        NetOp::AddRoute { dst, gw, onlink } => NetOp::DelRoute { dst: *dst, gw: *gw, onlink: *onlink },
        other => other.clone(),
    }
}

/// Ops that remove everything programmed for `p`. The route goes first so no packet is sent
/// towards a gateway whose neighbour entry is already gone (upstream deletes it last; the end
/// state is the same).
pub fn plan_remove(p: &Peer) -> Vec<NetOp> {
    if p.direct {
        return vec![del_route(&p.route())];
    }
    vec![
        del_route(&p.route()),
        NetOp::DelNeigh { ip: p.gw(), mac: p.vtep_mac },
        NetOp::DelFdb { mac: p.vtep_mac, dst: p.public() },
    ]
}

/// The outcome of [`plan_reconcile`] or [`plan_guard`]: the ops to apply and the routes
/// flanneld needs but may not program because a route it does not own holds the destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconcile {
    pub ops: Vec<NetOp>,
    pub conflicts: Vec<Conflict>,
}

/// Ops that turn `actual` (a dump, see [`crate::Dataplane::dump`]) into exactly the entries
/// `desired` needs, touching only what `owner` says is flanneld's: missing or different entries
/// are (re)added (neighbours and FDB first, routes after), owned entries nobody needs are
/// removed, including stale FDB entries of a MAC whose destination changed. A needed route
/// whose destination is held by a route flanneld does not own is not added (the add would
/// replace it): it is reported in [`Reconcile::conflicts`] instead.
pub fn plan_reconcile(desired: &[Peer], actual: &KernelState, owner: &Ownership) -> Reconcile {
    let dev = actual.device;
    let mut want_neigh: BTreeMap<IpAddr, Mac> = BTreeMap::new();
    let mut want_fdb: BTreeSet<(Mac, IpAddr)> = BTreeSet::new();
    let mut want_route: BTreeMap<IpNetwork, (IpAddr, bool)> = BTreeMap::new();
    for p in desired {
        if !p.direct {
            want_neigh.insert(p.gw(), p.vtep_mac);
            want_fdb.insert((p.vtep_mac, p.public()));
        }
        if let NetOp::AddRoute { dst, gw, onlink } = p.route() {
            want_route.insert(dst, (gw, onlink));
        }
    }
    let neighs: Vec<(IpAddr, Mac)> =
        actual.neighs.iter().filter(|n| owner.owns_neigh(dev, n)).map(|n| (n.ip, n.mac)).collect();
    let fdb: Vec<(Mac, IpAddr)> =
        actual.fdb.iter().filter(|e| owner.owns_fdb(dev, e)).map(|e| (e.mac, e.dst)).collect();
    let routes: Vec<(IpNetwork, IpAddr, bool)> = actual
        .routes
        .iter()
        .filter(|r| owner.owns_route(dev, r))
        .filter_map(|r| r.gw.map(|gw| (r.dst, gw, r.onlink)))
        .collect();
    let have_neigh: BTreeMap<IpAddr, Mac> = neighs.iter().copied().collect();
    let have_fdb: BTreeSet<(Mac, IpAddr)> = fdb.iter().copied().collect();
    // Every wanted route is looked up among the kernel's: indexed, not scanned (a scan per
    // peer took ~35 ms at 5,000 peers, each periodic reconciliation).
    let have_route: BTreeSet<(IpNetwork, IpAddr, bool)> = routes.iter().copied().collect();
    let by_dst = routes_by_dst(&actual.routes);

    let mut adds = Vec::new();
    for (ip, mac) in &want_neigh {
        if have_neigh.get(ip) != Some(mac) {
            adds.push(NetOp::AddNeigh { ip: *ip, mac: *mac });
        }
    }
    for (mac, dst) in &want_fdb {
        if !have_fdb.contains(&(*mac, *dst)) {
            adds.push(NetOp::AddFdb { mac: *mac, dst: *dst });
        }
    }
    let mut conflicts = Vec::new();
    let mut route_adds = Vec::new();
    for (dst, (gw, onlink)) in &want_route {
        if let Some(r) = blocker(&by_dst, owner, dev, dst) {
            conflicts.push(Conflict { dst: *dst, route: r.clone() });
            continue;
        }
        if !have_route.contains(&(*dst, *gw, *onlink)) {
            route_adds.push(NetOp::AddRoute { dst: *dst, gw: *gw, onlink: *onlink });
        }
    }

    let mut dels = Vec::new();
    for (dst, gw, onlink) in &routes {
        // An owned route for a wanted destination with other attributes is rewritten by the
        // replace; where a conflict stops the replace, it is deleted instead.
        let stale = match want_route.get(dst) {
            None => true,
            Some(want) => want != &(*gw, *onlink) && conflicts.iter().any(|c| c.dst == *dst),
        };
        if stale {
            dels.push(NetOp::DelRoute { dst: *dst, gw: *gw, onlink: *onlink });
        }
    }
    for (ip, mac) in &neighs {
        if !want_neigh.contains_key(ip) {
            dels.push(NetOp::DelNeigh { ip: *ip, mac: *mac });
        }
    }
    for (mac, dst) in &fdb {
        // Stale: a MAC nobody has any more, or a wanted MAC with an old destination.
        if !want_fdb.contains(&(*mac, *dst)) {
            dels.push(NetOp::DelFdb { mac: *mac, dst: *dst });
        }
    }
    // Route deletions after the additions of what replaces them; the FDB deletions after the
    // FDB replaces, which may already have rewritten a stale destination.
    adds.extend(route_adds);
    adds.extend(dels);
    Reconcile { ops: adds, conflicts }
}

/// The kernel's routes by destination, each destination's in dump order.
fn routes_by_dst(routes: &[KernelRoute]) -> BTreeMap<IpNetwork, Vec<&KernelRoute>> {
    let mut by_dst: BTreeMap<IpNetwork, Vec<&KernelRoute>> = BTreeMap::new();
    for r in routes {
        by_dst.entry(r.dst).or_default().push(r);
    }
    by_dst
}

/// The first route flanneld does not own that a route add to `dst` would overwrite.
fn blocker<'a>(
    by_dst: &BTreeMap<IpNetwork, Vec<&'a KernelRoute>>,
    owner: &Ownership,
    dev: u32,
    dst: &IpNetwork,
) -> Option<&'a KernelRoute> {
    by_dst.get(dst)?.iter().copied().find(|r| owner.blocks(dev, r, dst))
}

/// Checks ops planned from lease events ([`plan_add`], [`plan_remove`]) against the routes of
/// `actual` (a fresh [`crate::Dataplane::dump_routes`]): a route add whose destination is held
/// by a route flanneld does not own is dropped and reported as a conflict (the replace would
/// overwrite it), and a route delete that matches no route flanneld owns (in `actual`, or
/// added by an earlier op of the same list) is dropped: there is nothing of flanneld's to
/// delete, and the kernel's delete matches loosely (any metric). Neighbour and FDB ops only
/// ever address the device's own entries and pass unchanged.
pub fn plan_guard(ops: Vec<NetOp>, actual: &KernelState, owner: &Ownership) -> Reconcile {
    let dev = actual.device;
    let mut out = Reconcile::default();
    let mut added: BTreeSet<(IpNetwork, IpAddr, bool)> = BTreeSet::new();
    let by_dst = routes_by_dst(&actual.routes);
    for op in ops {
        match &op {
            NetOp::AddRoute { dst, gw, onlink } | NetOp::CreateRoute { dst, gw, onlink } => {
                if let Some(r) = blocker(&by_dst, owner, dev, dst) {
                    out.conflicts.push(Conflict { dst: *dst, route: r.clone() });
                    continue;
                }
                added.insert((*dst, *gw, *onlink));
            }
            NetOp::DelRoute { dst, gw, onlink } => {
                let owned = by_dst.get(dst).is_some_and(|rs| {
                    rs.iter().any(|r| r.gw == Some(*gw) && r.onlink == *onlink && owner.owns_route(dev, r))
                });
                if !owned && !added.contains(&(*dst, *gw, *onlink)) {
                    continue;
                }
            }
            _ => {}
        }
        out.ops.push(op);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{KernelFdb, KernelNeigh, KernelRoute};

    const M1: Mac = [0x6e, 0xaa, 0xbb, 0xcc, 0xdd, 0x01];
    const M2: Mac = [0x6e, 0xaa, 0xbb, 0xcc, 0xdd, 0x02];

    fn peer(subnet: &str, public: &str, mac: Mac, direct: bool) -> Peer {
        Peer { subnet: subnet.parse().unwrap(), public_ip: public.parse().unwrap(), vtep_mac: mac, direct }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn add_new_vxlan_peer_is_neigh_fdb_route_in_upstream_order() {
        let p = peer("10.5.71.0/24", "198.18.0.3", M1, false);
        assert_eq!(
            plan_add(None, &p),
            vec![
                NetOp::AddNeigh { ip: ip("10.5.71.0"), mac: M1 },
                NetOp::AddFdb { mac: M1, dst: ip("198.18.0.3") },
                NetOp::AddRoute { dst: net("10.5.71.0/24"), gw: ip("10.5.71.0"), onlink: true },
            ]
        );
    }

    #[test]
    fn add_direct_peer_is_plain_route_via_public_ip() {
        let p = peer("10.5.71.0/24", "198.18.0.3", M1, true);
        assert_eq!(
            plan_add(None, &p),
            vec![NetOp::AddRoute { dst: net("10.5.71.0/24"), gw: ip("198.18.0.3"), onlink: false }]
        );
    }

    #[test]
    fn unchanged_peer_only_reasserts() {
        let p = peer("10.5.71.0/24", "198.18.0.3", M1, false);
        assert_eq!(plan_add(Some(&p), &p), plan_add(None, &p));
    }

    #[test]
    fn mac_change_removes_old_fdb_after_adding_new() {
        let old = peer("10.5.71.0/24", "198.18.0.3", M1, false);
        let new = peer("10.5.71.0/24", "198.18.0.3", M2, false);
        assert_eq!(
            plan_add(Some(&old), &new),
            vec![
                NetOp::AddNeigh { ip: ip("10.5.71.0"), mac: M2 },
                NetOp::AddFdb { mac: M2, dst: ip("198.18.0.3") },
                NetOp::AddRoute { dst: net("10.5.71.0/24"), gw: ip("10.5.71.0"), onlink: true },
                NetOp::DelFdb { mac: M1, dst: ip("198.18.0.3") },
            ]
        );
    }

    #[test]
    fn public_ip_change_deletes_fdb_with_old_dst() {
        let old = peer("10.5.71.0/24", "198.18.0.3", M1, false);
        let new = peer("10.5.71.0/24", "198.18.0.9", M1, false);
        let ops = plan_add(Some(&old), &new);
        assert_eq!(ops.last(), Some(&NetOp::DelFdb { mac: M1, dst: ip("198.18.0.3") }));
        assert!(ops.contains(&NetOp::AddFdb { mac: M1, dst: ip("198.18.0.9") }));
        assert_eq!(ops.len(), 4);
    }

    #[test]
    fn vxlan_to_direct_replaces_route_and_cleans_neigh_and_fdb() {
        let old = peer("10.5.71.0/24", "198.18.0.3", M1, false);
        let new = peer("10.5.71.0/24", "198.18.0.3", M1, true);
        assert_eq!(
            plan_add(Some(&old), &new),
            vec![
                NetOp::AddRoute { dst: net("10.5.71.0/24"), gw: ip("198.18.0.3"), onlink: false },
                NetOp::DelFdb { mac: M1, dst: ip("198.18.0.3") },
                NetOp::DelNeigh { ip: ip("10.5.71.0"), mac: M1 },
            ]
        );
    }

    #[test]
    fn direct_to_vxlan_is_a_plain_add() {
        let old = peer("10.5.71.0/24", "198.18.0.3", M1, true);
        let new = peer("10.5.71.0/24", "198.18.0.3", M1, false);
        assert_eq!(plan_add(Some(&old), &new), plan_add(None, &new));
    }

    #[test]
    fn subnet_host_bits_are_cleared() {
        let p = peer("10.5.71.7/24", "198.18.0.3", M1, false);
        assert_eq!(
            plan_add(None, &p)[2],
            NetOp::AddRoute { dst: net("10.5.71.0/24"), gw: ip("10.5.71.0"), onlink: true }
        );
    }

    #[test]
    fn remove_vxlan_and_direct() {
        let p = peer("10.5.71.0/24", "198.18.0.3", M1, false);
        assert_eq!(
            plan_remove(&p),
            vec![
                NetOp::DelRoute { dst: net("10.5.71.0/24"), gw: ip("10.5.71.0"), onlink: true },
                NetOp::DelNeigh { ip: ip("10.5.71.0"), mac: M1 },
                NetOp::DelFdb { mac: M1, dst: ip("198.18.0.3") },
            ]
        );
        let d = peer("10.5.71.0/24", "198.18.0.3", M1, true);
        assert_eq!(
            plan_remove(&d),
            vec![NetOp::DelRoute { dst: net("10.5.71.0/24"), gw: ip("198.18.0.3"), onlink: false }]
        );
    }

    const DEV: u32 = 7;

    /// The kernel after `plan_add(None, p)` for every peer (DirectRouting routes on `eth0`, #2).
    pub(crate) fn state_of(peers: &[Peer]) -> KernelState {
        let mut k = KernelState { device: DEV, ..KernelState::default() };
        for p in peers {
            for op in plan_add(None, p) {
                match op {
                    NetOp::AddNeigh { ip, mac } => {
                        k.neighs.push(KernelNeigh { ifindex: DEV, ip, mac, permanent: true })
                    }
                    NetOp::AddFdb { mac, dst } => {
                        k.fdb.push(KernelFdb { ifindex: DEV, mac, dst, permanent: true, self_: true })
                    }
                    NetOp::AddRoute { dst, gw, onlink } => {
                        k.routes.push(KernelRoute::made(dst, gw, onlink, Some(if onlink { DEV } else { 2 })))
                    }
                    _ => unreachable!(),
                }
            }
        }
        k
    }

    fn owner(peers: &[Peer]) -> Ownership {
        Ownership::of_peers("10.5.0.0/16".parse().unwrap(), 24, peers, true)
    }

    /// `plan_reconcile` with the ownership of `peers` plus the peers of `before`, ops only.
    fn reconcile(peers: &[Peer], before: &[Peer], k: &KernelState) -> Vec<NetOp> {
        let all: Vec<Peer> = peers.iter().chain(before).cloned().collect();
        let r = plan_reconcile(peers, k, &owner(&all));
        assert!(r.conflicts.is_empty(), "{:?}", r.conflicts);
        r.ops
    }

    #[test]
    fn reconcile_of_matching_state_is_empty() {
        let peers =
            vec![peer("10.5.71.0/24", "198.18.0.3", M1, false), peer("10.5.72.0/24", "198.18.0.4", M2, true)];
        assert_eq!(reconcile(&peers, &[], &state_of(&peers)), vec![]);
    }

    #[test]
    fn reconcile_from_empty_adds_all_routes_last() {
        let peers = vec![
            peer("10.5.71.0/24", "198.18.0.3", M1, false),
            peer("10.5.73.0/24", "198.18.0.5", M2, false),
        ];
        let ops = reconcile(&peers, &[], &KernelState::default());
        assert_eq!(ops.len(), 6);
        let first_route = ops.iter().position(|o| matches!(o, NetOp::AddRoute { .. })).unwrap();
        assert!(ops[first_route..].iter().all(|o| matches!(o, NetOp::AddRoute { .. })));
    }

    #[test]
    fn reconcile_heals_missing_route_and_removes_extras() {
        let peers = vec![peer("10.5.71.0/24", "198.18.0.3", M1, false)];
        let mut k = state_of(&peers);
        k.routes.clear();
        k.routes.push(KernelRoute::made(net("10.5.99.0/24"), ip("10.5.99.0"), true, Some(DEV)));
        k.neighs.push(KernelNeigh { ifindex: DEV, ip: ip("10.5.99.0"), mac: M2, permanent: true });
        k.fdb.push(KernelFdb { ifindex: DEV, mac: M2, dst: ip("198.18.0.99"), permanent: true, self_: true });
        assert_eq!(
            reconcile(&peers, &[], &k),
            vec![
                NetOp::AddRoute { dst: net("10.5.71.0/24"), gw: ip("10.5.71.0"), onlink: true },
                NetOp::DelRoute { dst: net("10.5.99.0/24"), gw: ip("10.5.99.0"), onlink: true },
                NetOp::DelNeigh { ip: ip("10.5.99.0"), mac: M2 },
                NetOp::DelFdb { mac: M2, dst: ip("198.18.0.99") },
            ]
        );
    }

    #[test]
    fn reconcile_removes_stale_fdb_and_rewrites_wrong_entries() {
        let peers = vec![peer("10.5.71.0/24", "198.18.0.3", M2, false)];
        let mut k = state_of(&[peer("10.5.71.0/24", "198.18.0.3", M1, false)]);
        k.fdb.push(KernelFdb { ifindex: DEV, mac: M2, dst: ip("198.18.0.7"), permanent: true, self_: true });
        let ops = reconcile(&peers, &[], &k);
        assert_eq!(
            ops,
            vec![
                NetOp::AddNeigh { ip: ip("10.5.71.0"), mac: M2 },
                NetOp::AddFdb { mac: M2, dst: ip("198.18.0.3") },
                NetOp::DelFdb { mac: M1, dst: ip("198.18.0.3") },
                NetOp::DelFdb { mac: M2, dst: ip("198.18.0.7") },
            ]
        );
    }

    #[test]
    fn reconcile_switches_route_kind_by_replace() {
        let peers = vec![peer("10.5.71.0/24", "198.18.0.3", M1, true)];
        let k = state_of(&[peer("10.5.71.0/24", "198.18.0.3", M1, false)]);
        let ops = reconcile(&peers, &[], &k);
        assert_eq!(
            ops,
            vec![
                NetOp::AddRoute { dst: net("10.5.71.0/24"), gw: ip("198.18.0.3"), onlink: false },
                NetOp::DelNeigh { ip: ip("10.5.71.0"), mac: M1 },
                NetOp::DelFdb { mac: M1, dst: ip("198.18.0.3") },
            ]
        );
    }
    #[test]
    fn foreign_route_in_the_way_is_a_conflict_not_replaced_and_ours_there_goes() {
        let peers = vec![peer("10.5.71.0/24", "198.18.0.3", M1, false)];
        // Our old DirectRouting route for it, and an operator's route with the replace key.
        let mut k = state_of(&[peer("10.5.71.0/24", "198.18.0.3", M1, true)]);
        let theirs = KernelRoute {
            protocol: 4,
            ..KernelRoute::made(net("10.5.71.0/24"), ip("198.18.0.50"), false, Some(2))
        };
        k.routes.push(theirs.clone());
        let r = plan_reconcile(&peers, &k, &owner(&peers));
        assert_eq!(r.conflicts, vec![Conflict { dst: net("10.5.71.0/24"), route: theirs }]);
        assert_eq!(
            r.ops,
            vec![
                NetOp::AddNeigh { ip: ip("10.5.71.0"), mac: M1 },
                NetOp::AddFdb { mac: M1, dst: ip("198.18.0.3") },
                NetOp::DelRoute { dst: net("10.5.71.0/24"), gw: ip("198.18.0.3"), onlink: false },
            ]
        );
    }

    #[test]
    fn issue_13_routes_are_left_alone_with_direct_routing_off_and_on() {
        let peers = vec![peer("10.5.71.0/24", "198.18.0.11", M1, false)];
        let mut k = state_of(&peers);
        let operator = vec![
            KernelRoute::made(net("10.5.200.7/32"), ip("198.18.0.11"), false, Some(2)),
            KernelRoute {
                protocol: 4,
                ..KernelRoute::made(net("10.5.201.0/24"), ip("198.18.0.11"), false, Some(2))
            },
            KernelRoute::made(net("10.5.202.0/24"), ip("198.18.0.99"), false, Some(2)),
            KernelRoute {
                table: 100,
                ..KernelRoute::made(net("10.5.203.0/24"), ip("198.18.0.11"), false, Some(2))
            },
        ];
        k.routes.extend(operator);
        for direct in [false, true] {
            let o = Ownership::of_peers("10.5.0.0/16".parse().unwrap(), 24, &peers, direct);
            assert_eq!(plan_reconcile(&peers, &k, &o), Reconcile::default(), "direct routing {direct}");
        }
    }

    #[test]
    fn guard_drops_adds_over_foreign_routes_and_deletes_of_routes_not_ours() {
        let p = peer("10.5.71.0/24", "198.18.0.3", M1, false);
        let q = peer("10.5.72.0/24", "198.18.0.4", M2, true);
        let mut k = KernelState { device: DEV, ..KernelState::default() };
        let theirs = KernelRoute {
            protocol: 4,
            ..KernelRoute::made(net("10.5.71.0/24"), ip("198.18.0.50"), false, Some(2))
        };
        k.routes.push(theirs.clone());
        // `q`'s route is not in the kernel: its delete is dropped (nothing of ours to delete).
        let mut ops = plan_add(None, &p);
        ops.extend(plan_remove(&q));
        let g = plan_guard(ops, &k, &owner(&[p.clone(), q.clone()]));
        assert_eq!(g.conflicts, vec![Conflict { dst: net("10.5.71.0/24"), route: theirs }]);
        assert_eq!(
            g.ops,
            vec![
                NetOp::AddNeigh { ip: ip("10.5.71.0"), mac: M1 },
                NetOp::AddFdb { mac: M1, dst: ip("198.18.0.3") }
            ]
        );
        // A lease put and deleted in one batch: the delete of the route just added stays.
        let mut ops = plan_add(None, &p);
        ops.extend(plan_remove(&p));
        let empty = KernelState { device: DEV, ..KernelState::default() };
        assert_eq!(plan_guard(ops.clone(), &empty, &owner(std::slice::from_ref(&p))).ops, ops);
        let k = state_of(std::slice::from_ref(&q));
        assert_eq!(plan_guard(plan_remove(&q), &k, &owner(std::slice::from_ref(&q))).ops, plan_remove(&q));
    }
}
