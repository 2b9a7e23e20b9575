//! An in-memory [`Dataplane`] for tests without root: it records every call and keeps a
//! kernel-like state with the same keys and replace/delete semantics as the real one
//! (neighbours by device and address, FDB entries by device and MAC, routes by the kernel's
//! replace key), including entries of other devices, tables and protocols that flanneld must
//! leave alone.

use ipnetwork::Ipv4Network;

use crate::{
    ApplyReport, Dataplane, DataplaneError, DeviceInfo, KernelFdb, KernelNeigh, KernelRoute, KernelState,
    Mac, NetOp, VxlanSpec, RTN_UNICAST, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN,
};

/// The ifindex a created device gets.
pub const FAKE_DEVICE_INDEX: u32 = 1000;

/// host-gw (`ensure_no_device`): the fake then holds a placeholder "device" of this index
/// (no device) whose spec carries only the underlay index, so that `apply` and `dump` work and
/// plain routes get the underlay as their device, as the kernel resolves them.
pub const NO_DEVICE_INDEX: u32 = 0;

/// The fake kernel. All fields are public so tests can inspect and tamper (e.g. delete a route
/// behind the daemon's back, add an operator's route, or make ops fail).
#[derive(Debug, Default, Clone)]
pub struct FakeDataplane {
    /// The device after `ensure_device`, with the spec it was made from.
    pub device: Option<(VxlanSpec, DeviceInfo)>,
    /// Neighbours of every device.
    pub neighs: Vec<KernelNeigh>,
    /// FDB entries of every device (a replace rewrites the destination of a MAC, like the kernel).
    pub fdb: Vec<KernelFdb>,
    /// IPv4 routes of every table.
    pub routes: Vec<KernelRoute>,
    /// Every op passed to `apply`, in order (batches concatenated).
    pub applied: Vec<NetOp>,
    /// Number of `apply` calls.
    pub batches: usize,
    /// Number of `ensure_device` calls.
    pub ensure_calls: usize,
    /// Ops in this list fail with the given message when applied (they stay here).
    pub fail: Vec<(NetOp, String)>,
    /// When set, the next `apply` applies everything but reports `overrun` (then clears it).
    pub overrun_next: bool,
    /// The MAC a newly created device gets when no hint is given.
    pub next_mac: Mac,
    /// Blackhole routes (`ensure_blackhole`), in the order they were added.
    pub blackholes: Vec<Ipv4Network>,
    /// When set, `ensure_blackhole` fails with this message (as the kernel's EEXIST would).
    pub blackhole_error: Option<String>,
}

impl FakeDataplane {
    /// An empty fake whose created device gets MAC `02:00:00:00:00:01` unless hinted.
    pub fn new() -> Self {
        FakeDataplane { next_mac: [2, 0, 0, 0, 0, 1], ..FakeDataplane::default() }
    }

    fn index(&self) -> u32 {
        self.device.as_ref().map_or(0, |(_, i)| i.index)
    }

    fn underlay(&self) -> u32 {
        self.device.as_ref().map_or(0, |(s, _)| s.underlay_index)
    }

    /// The current state as [`Dataplane::dump`] reports it (each list sorted).
    pub fn state(&self) -> KernelState {
        let mut k = KernelState {
            device: self.index(),
            neighs: self.neighs.clone(),
            fdb: self.fdb.clone(),
            routes: self.routes.clone(),
        };
        k.neighs.sort();
        k.fdb.sort();
        k.routes.sort();
        k
    }

    /// Simulates the device disappearing (e.g. deleted by an operator): its entries go with it.
    pub fn remove_device(&mut self) {
        let dev = self.index();
        self.device = None;
        self.neighs.retain(|n| n.ifindex != dev);
        self.fdb.retain(|e| e.ifindex != dev);
        self.routes.retain(|r| r.oif != Some(dev));
    }

    fn exec(&mut self, op: &NetOp) {
        let dev = self.index();
        match op {
            NetOp::AddNeigh { ip, mac } => {
                let new = KernelNeigh { ifindex: dev, ip: *ip, mac: *mac, permanent: true };
                match self.neighs.iter_mut().find(|n| n.ifindex == dev && n.ip == *ip) {
                    Some(n) => *n = new,
                    None => self.neighs.push(new),
                }
            }
            NetOp::DelNeigh { ip, .. } => self.neighs.retain(|n| !(n.ifindex == dev && n.ip == *ip)),
            NetOp::AddFdb { mac, dst } => {
                let new = KernelFdb { ifindex: dev, mac: *mac, dst: *dst, permanent: true, self_: true };
                match self.fdb.iter_mut().find(|e| e.ifindex == dev && e.mac == *mac && e.self_) {
                    Some(e) => *e = new,
                    None => self.fdb.push(new),
                }
            }
            NetOp::DelFdb { mac, dst } => {
                // The kernel deletes only the entry with that destination.
                self.fdb.retain(|e| !(e.ifindex == dev && e.mac == *mac && e.dst == *dst && e.self_))
            }
            NetOp::AddRoute { dst, gw, onlink } | NetOp::CreateRoute { dst, gw, onlink } => {
                let oif = if *onlink { dev } else { self.underlay() };
                let new = KernelRoute::made(*dst, *gw, *onlink, Some(oif));
                // create+replace: the first route with the same table, destination, tos and
                // priority is replaced, whatever its protocol or type.
                let key = |r: &KernelRoute| {
                    r.table == RT_TABLE_MAIN && r.dst == *dst && r.tos == 0 && r.metric == 0
                };
                match self.routes.iter_mut().find(|r| key(r)) {
                    Some(r) => *r = new,
                    None => self.routes.push(new),
                }
            }
            NetOp::DelRoute { dst, gw, onlink } => {
                // The kernel matches what the request gives (table, protocol, type, scope,
                // gateway, device with onlink) and any metric.
                let hit = self.routes.iter().position(|r| {
                    r.table == RT_TABLE_MAIN
                        && r.dst == *dst
                        && r.tos == 0
                        && r.protocol == RTPROT_BOOT
                        && r.kind == RTN_UNICAST
                        && r.scope == RT_SCOPE_UNIVERSE
                        && r.gw == Some(*gw)
                        && (!*onlink || r.oif == Some(dev))
                });
                if let Some(i) = hit {
                    self.routes.remove(i);
                }
            }
        }
    }
}

impl FakeDataplane {
    /// A real VXLAN device exists (not host-gw's placeholder).
    pub fn has_vxlan_device(&self) -> bool {
        self.device.as_ref().is_some_and(|(_, i)| i.index != NO_DEVICE_INDEX)
    }
}

impl Dataplane for FakeDataplane {
    async fn ensure_no_device(&mut self, underlay_index: u32) -> Result<Vec<String>, DataplaneError> {
        let mut removed = Vec::new();
        if let Some((spec, _)) = self.device.clone().filter(|_| self.has_vxlan_device()) {
            self.remove_device();
            removed.push(spec.name);
        }
        let any: Ipv4Network = Ipv4Network::from(std::net::Ipv4Addr::UNSPECIFIED);
        let placeholder = VxlanSpec {
            name: String::new(),
            vni: 0,
            port: 0,
            gbp: false,
            learning: false,
            local: std::net::Ipv4Addr::UNSPECIFIED,
            underlay_index,
            mtu: 0,
            address: any,
            network: any,
        };
        self.device = Some((placeholder, DeviceInfo { index: NO_DEVICE_INDEX, mac: [0; 6], mtu: 0 }));
        Ok(removed)
    }

    async fn ensure_device(
        &mut self,
        spec: &VxlanSpec,
        mac_hint: Option<Mac>,
    ) -> Result<DeviceInfo, DataplaneError> {
        self.ensure_calls += 1;
        if let Some((old, info)) = &self.device {
            let compatible = old.vni == spec.vni
                && old.local == spec.local
                && old.underlay_index == spec.underlay_index
                && old.gbp == spec.gbp
                && (old.port == spec.port || old.port == 0 || spec.port == 0);
            if compatible {
                let info = info.clone();
                self.device = Some((spec.clone(), info.clone()));
                return Ok(info);
            }
            self.remove_device();
        }
        let info =
            DeviceInfo { index: FAKE_DEVICE_INDEX, mac: mac_hint.unwrap_or(self.next_mac), mtu: spec.mtu };
        self.device = Some((spec.clone(), info.clone()));
        Ok(info)
    }

    async fn apply(&mut self, ops: &[NetOp]) -> Result<ApplyReport, DataplaneError> {
        if self.device.is_none() {
            return Err(DataplaneError::Other("no VXLAN device yet: call ensure_device first".into()));
        }
        self.batches += 1;
        let mut report = ApplyReport::default();
        for op in ops {
            self.applied.push(op.clone());
            if let Some((_, why)) = self.fail.iter().find(|(f, _)| f == op) {
                report.failed.push((op.clone(), why.clone()));
                continue;
            }
            if let NetOp::CreateRoute { dst, .. } = op {
                if self
                    .routes
                    .iter()
                    .any(|r| r.table == RT_TABLE_MAIN && r.dst == *dst && r.tos == 0 && r.metric == 0)
                {
                    report.exists.push(op.clone());
                    continue;
                }
            }
            self.exec(op);
            report.applied += 1;
        }
        if self.overrun_next {
            self.overrun_next = false;
            report.overrun = true;
        }
        Ok(report)
    }

    async fn dump(&mut self) -> Result<KernelState, DataplaneError> {
        if self.device.is_none() {
            return Err(DataplaneError::Other("no VXLAN device yet: call ensure_device first".into()));
        }
        Ok(self.state())
    }

    async fn dump_routes(&mut self) -> Result<KernelState, DataplaneError> {
        let mut k = self.dump().await?;
        k.neighs.clear();
        k.fdb.clear();
        Ok(k)
    }

    async fn ensure_blackhole(&mut self, dst: Ipv4Network) -> Result<bool, DataplaneError> {
        if let Some(e) = &self.blackhole_error {
            return Err(DataplaneError::Other(e.clone()));
        }
        if self.blackholes.contains(&dst) {
            return Ok(false);
        }
        self.blackholes.push(dst);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::own::Ownership;
    use crate::plan::{plan_add, plan_guard, plan_reconcile, plan_remove, Peer};

    fn owner(peers: &[Peer]) -> Ownership {
        Ownership::of_peers("10.5.0.0/16".parse().unwrap(), 24, peers, true)
    }

    fn spec() -> VxlanSpec {
        VxlanSpec {
            name: "flannel.1".into(),
            vni: 1,
            port: 0,
            gbp: false,
            learning: false,
            local: "198.18.0.2".parse().unwrap(),
            underlay_index: 2,
            mtu: 1450,
            address: "10.5.72.0/32".parse().unwrap(),
            network: "10.5.0.0/16".parse().unwrap(),
        }
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn add_change_remove_round_trip() {
        block(async {
            let mut dp = FakeDataplane::new();
            assert!(dp.apply(&[]).await.is_err(), "no device yet");
            let info = dp.ensure_device(&spec(), Some([2, 9, 9, 9, 9, 9])).await.unwrap();
            assert_eq!(info.mac, [2, 9, 9, 9, 9, 9]);
            let p = Peer {
                subnet: "10.5.71.0/24".parse().unwrap(),
                public_ip: "198.18.0.3".parse().unwrap(),
                vtep_mac: [6; 6],
                direct: false,
            };
            dp.apply(&plan_add(None, &p)).await.unwrap();
            let mut p2 = p.clone();
            p2.vtep_mac = [7; 6];
            dp.apply(&plan_add(Some(&p), &p2)).await.unwrap();
            assert_eq!(dp.fdb.len(), 1, "old MAC's FDB entry removed");
            let o = owner(&[p.clone(), p2.clone()]);
            assert_eq!(plan_reconcile(&[p2.clone()], &dp.dump().await.unwrap(), &o).ops, vec![]);
            let r = dp.apply(&plan_remove(&p2)).await.unwrap();
            assert_eq!(r.applied, 3);
            assert_eq!(dp.state(), KernelState { device: FAKE_DEVICE_INDEX, ..KernelState::default() });
            assert_eq!(dp.batches, 3);
        });
    }

    #[test]
    fn adoption_keeps_mac_and_incompatible_spec_recreates() {
        block(async {
            let mut dp = FakeDataplane::new();
            let a = dp.ensure_device(&spec(), None).await.unwrap();
            let b = dp.ensure_device(&spec(), Some([2, 5, 5, 5, 5, 5])).await.unwrap();
            assert_eq!(a, b);
            let mut s = spec();
            s.vni = 2;
            let c = dp.ensure_device(&s, Some([2, 5, 5, 5, 5, 5])).await.unwrap();
            assert_eq!(c.mac, [2, 5, 5, 5, 5, 5]);
        });
    }

    #[test]
    fn failures_and_overrun_are_reported() {
        block(async {
            let mut dp = FakeDataplane::new();
            dp.ensure_device(&spec(), None).await.unwrap();
            let op = NetOp::AddNeigh { ip: "10.5.1.0".parse().unwrap(), mac: [1; 6] };
            dp.fail.push((op.clone(), "EPERM".into()));
            dp.overrun_next = true;
            let r = dp.apply(std::slice::from_ref(&op)).await.unwrap();
            assert_eq!(r.failed.len(), 1);
            assert!(r.overrun);
            assert!(dp.neighs.is_empty());
        });
    }

    mod props {
        use std::collections::BTreeSet;
        use std::net::{IpAddr, Ipv4Addr};

        use ipnetwork::IpNetwork;
        use proptest::prelude::*;

        use super::*;

        /// Up to 12 peers on distinct subnets `10.5.<i>.0/24` with distinct MACs.
        fn peers() -> impl Strategy<Value = Vec<Peer>> {
            proptest::collection::btree_map(0u8..40, (1u8..6, any::<bool>()), 0..12).prop_map(|m| {
                m.into_iter()
                    .map(|(i, (host, direct))| Peer {
                        subnet: format!("10.5.{i}.0/24").parse().unwrap(),
                        public_ip: format!("198.18.0.{host}").parse().unwrap(),
                        vtep_mac: [2, 0, 0, 0, host, i],
                        direct,
                    })
                    .collect()
            })
        }

        fn programmed(peers: &[Peer]) -> KernelState {
            block(async {
                let mut dp = FakeDataplane::new();
                dp.ensure_device(&spec(), None).await.unwrap();
                for p in peers {
                    dp.apply(&plan_add(None, p)).await.unwrap();
                }
                dp.state()
            })
        }

        /// Any IPv4 route near the cluster network: every table, protocol, type, device,
        /// metric and gateway flanneld could meet, its own shapes included by chance.
        fn route() -> impl Strategy<Value = KernelRoute> {
            (
                (0u8..40, prop::sample::select(vec![16u8, 24, 25, 32]), any::<bool>()),
                prop::sample::select(vec![None, Some(0u8), Some(1), Some(3), Some(7), Some(99)]),
                prop::sample::select(vec![FAKE_DEVICE_INDEX, 2, 3]),
                prop::sample::select(vec![RT_TABLE_MAIN, 100]),
                prop::sample::select(vec![2u8, RTPROT_BOOT, 4]),
                prop::sample::select(vec![RTN_UNICAST, 6]),
                prop::sample::select(vec![0u32, 100]),
                any::<bool>(),
            )
                .prop_map(
                    |((third, len, outside), gw, oif, table, protocol, kind, metric, onlink)| {
                        let base: Ipv4Addr =
                            if outside { [10, 6, third, 0] } else { [10, 5, third, 0] }.into();
                        let dst = Ipv4Network::new(base, len).unwrap();
                        let dst = IpNetwork::V4(Ipv4Network::new(dst.network(), len).unwrap());
                        let gw = gw.map(|h| -> IpAddr {
                            if h == 0 {
                                IpAddr::V4(dst.network().to_string().parse().unwrap())
                            } else {
                                format!("198.18.0.{h}").parse().unwrap()
                            }
                        });
                        KernelRoute {
                            dst,
                            gw,
                            oif: Some(oif),
                            table,
                            protocol,
                            kind,
                            scope: RT_SCOPE_UNIVERSE,
                            tos: 0,
                            metric,
                            onlink,
                            multipath: false,
                        }
                    },
                )
        }

        fn neigh() -> impl Strategy<Value = KernelNeigh> {
            (prop::sample::select(vec![FAKE_DEVICE_INDEX, 3]), 0u8..40, any::<u8>(), any::<bool>()).prop_map(
                |(ifindex, third, m, permanent)| KernelNeigh {
                    ifindex,
                    ip: format!("10.5.{third}.0").parse().unwrap(),
                    mac: [2, 0, 0, 0, m, third],
                    permanent,
                },
            )
        }

        fn fdb() -> impl Strategy<Value = KernelFdb> {
            (
                prop::sample::select(vec![FAKE_DEVICE_INDEX, 3]),
                1u8..8,
                any::<u8>(),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(|(ifindex, h, m, permanent, self_)| KernelFdb {
                    ifindex,
                    mac: [2, 0, 0, 0, h, m],
                    dst: format!("198.18.0.{h}").parse().unwrap(),
                    permanent,
                    self_,
                })
        }

        /// A kernel with the device, the entries flanneld programmed for `old`, and `extra`
        /// entries of any kind (the kernel's key rules applied: one neighbour per device and
        /// address, one `self` FDB entry per device and MAC).
        fn kernel(
            old: &[Peer],
            routes: Vec<KernelRoute>,
            neighs: Vec<KernelNeigh>,
            fdb: Vec<KernelFdb>,
        ) -> FakeDataplane {
            block(async {
                let mut dp = FakeDataplane::new();
                dp.ensure_device(&spec(), None).await.unwrap();
                for p in old {
                    dp.apply(&plan_add(None, p)).await.unwrap();
                }
                dp.routes.extend(routes);
                for n in neighs {
                    if !dp.neighs.iter().any(|o| o.ifindex == n.ifindex && o.ip == n.ip) {
                        dp.neighs.push(n);
                    }
                }
                for e in fdb {
                    if !dp.fdb.iter().any(|o| o.ifindex == e.ifindex && o.mac == e.mac && o.self_ == e.self_)
                    {
                        dp.fdb.push(e);
                    }
                }
                dp
            })
        }

        proptest! {
            /// Whatever was programmed before, one reconcile round yields exactly the desired state.
            #[test]
            fn reconcile_converges_in_one_round(old in peers(), new in peers()) {
                let got = block(async {
                    let mut dp = FakeDataplane::new();
                    dp.ensure_device(&spec(), None).await.unwrap();
                    for p in &old {
                        dp.apply(&plan_add(None, p)).await.unwrap();
                    }
                    let all: Vec<Peer> = old.iter().chain(&new).cloned().collect();
                    let plan = plan_reconcile(&new, &dp.dump().await.unwrap(), &owner(&all));
                    dp.apply(&plan.ops).await.unwrap();
                    dp.state()
                });
                prop_assert_eq!(got, programmed(&new));
            }

            /// A change of a peer (MAC, public IP, direct) leaves exactly the new peer's entries.
            #[test]
            fn change_leaves_only_new_entries(a in peers(), b in peers()) {
                for (old, new) in a.iter().zip(b.iter()) {
                    let mut new = new.clone();
                    new.subnet = old.subnet;
                    let got = block(async {
                        let mut dp = FakeDataplane::new();
                        dp.ensure_device(&spec(), None).await.unwrap();
                        dp.apply(&plan_add(None, old)).await.unwrap();
                        dp.apply(&plan_add(Some(old), &new)).await.unwrap();
                        dp.state()
                    });
                    prop_assert_eq!(got, programmed(std::slice::from_ref(&new)));
                }
            }

            /// Issue 13: over random kernels (foreign routes of every table, protocol, device,
            /// metric and shape; neighbours and FDB entries on other devices), with
            /// DirectRouting on or off, the reconcile plan deletes only entries the ownership
            /// rule gives flanneld, never adds a route over a foreign one, and after applying
            /// it every entry flanneld does not own (routes; neighbours and FDB entries of
            /// other devices) is exactly as it was. Every other needed entry is programmed.
            #[test]
            fn reconcile_never_touches_what_flanneld_does_not_own(
                old in peers(),
                new in peers(),
                routes in proptest::collection::vec(route(), 0..16),
                neighs in proptest::collection::vec(neigh(), 0..8),
                fdb in proptest::collection::vec(fdb(), 0..8),
                direct in any::<bool>(),
            ) {
                let new: Vec<Peer> = new.into_iter().map(|p| Peer { direct: p.direct && direct, ..p }).collect();
                let mut dp = kernel(&old, routes, neighs, fdb);
                let before = dp.state();
                let dev = before.device;
                let all: Vec<Peer> = old.iter().chain(&new).cloned().collect();
                let o = Ownership::of_peers("10.5.0.0/16".parse().unwrap(), 24, &all, direct);
                let plan = plan_reconcile(&new, &before, &o);
                for op in &plan.ops {
                    match op {
                        NetOp::DelRoute { dst, gw, onlink } => prop_assert!(
                            before.routes.iter().any(|r| r.dst == *dst && r.gw == Some(*gw) && r.onlink == *onlink && o.owns_route(dev, r)),
                            "delete of a route flanneld does not own: {:?}", op),
                        NetOp::DelNeigh { ip, mac } => prop_assert!(
                            before.neighs.iter().any(|n| n.ip == *ip && n.mac == *mac && o.owns_neigh(dev, n)), "{:?}", op),
                        NetOp::DelFdb { mac, dst } => prop_assert!(
                            before.fdb.iter().any(|e| e.mac == *mac && e.dst == *dst && o.owns_fdb(dev, e)), "{:?}", op),
                        NetOp::AddRoute { dst, .. } => prop_assert!(
                            !before.routes.iter().any(|r| o.blocks(dev, r, dst)), "add over a foreign route: {:?}", op),
                        _ => {}
                    }
                }
                block(dp.apply(&plan.ops)).unwrap();
                let after = dp.state();
                for r in before.routes.iter().filter(|r| !o.owns_route(dev, r)) {
                    prop_assert!(after.routes.contains(r), "foreign route changed: {}", r);
                }
                // The same, against the words rather than the rule's code: whatever
                // went or changed was a main-table, proto boot, metric 0 route, either on the
                // device as `S via S.0 onlink` or (DirectRouting) `S via P` of a known lease.
                for r in before.routes.iter().filter(|r| !after.routes.contains(r)) {
                    let vxlan = r.oif == Some(dev) && r.onlink && r.gw == Some(r.dst.network()) && r.dst.prefix() == 24;
                    let dr = direct && !r.onlink && all.iter().any(|p| IpNetwork::V4(p.subnet) == r.dst && r.gw == Some(IpAddr::V4(p.public_ip)));
                    prop_assert!(r.table == RT_TABLE_MAIN && r.protocol == RTPROT_BOOT && r.metric == 0 && r.kind == RTN_UNICAST && (vxlan || dr),
                        "changed a route flanneld does not make: {}", r);
                }
                for n in before.neighs.iter().filter(|n| n.ifindex != dev) {
                    prop_assert!(after.neighs.contains(n), "{:?}", n);
                }
                for e in before.fdb.iter().filter(|e| e.ifindex != dev) {
                    prop_assert!(after.fdb.contains(e), "{:?}", e);
                }
                // Converged: a second pass has nothing to do but report the same conflicts.
                let again = plan_reconcile(&new, &after, &o);
                prop_assert_eq!(again.ops, vec![]);
                let blocked: BTreeSet<IpNetwork> = plan.conflicts.iter().map(|c| c.dst).collect();
                prop_assert_eq!(blocked, again.conflicts.iter().map(|c| c.dst).collect::<BTreeSet<_>>());
            }

            /// The same for ops planned from lease events: after [`plan_guard`] they never
            /// delete or overwrite a route flanneld does not own.
            #[test]
            fn guarded_event_ops_never_touch_foreign_routes(
                old in peers(),
                new in peers(),
                routes in proptest::collection::vec(route(), 0..16),
            ) {
                let mut dp = kernel(&old, routes, vec![], vec![]);
                let before = dp.state();
                let all: Vec<Peer> = old.iter().chain(&new).cloned().collect();
                let o = owner(&all);
                let mut ops: Vec<NetOp> = old.iter().flat_map(plan_remove).collect();
                ops.extend(new.iter().flat_map(|p| plan_add(None, p)));
                let guarded = plan_guard(ops, &before, &o);
                let mut exclusive = dp.clone();
                block(dp.apply(&guarded.ops)).unwrap();
                let after = dp.state();
                for r in before.routes.iter().filter(|r| !o.owns_route(before.device, r)) {
                    prop_assert!(after.routes.contains(r), "foreign route changed: {}", r);
                }
                // New peers' routes created exclusively, unguarded: nothing that was there changes.
                let create: Vec<NetOp> = new
                    .iter()
                    .flat_map(|p| plan_add(None, p))
                    .map(|op| match op {
                        NetOp::AddRoute { dst, gw, onlink } => NetOp::CreateRoute { dst, gw, onlink },
                        other => other,
                    })
                    .collect();
                let report = block(exclusive.apply(&create)).unwrap();
                let after = exclusive.state();
                for r in &before.routes {
                    prop_assert!(after.routes.contains(r), "route changed by an exclusive create: {}", r);
                }
                for op in &report.exists {
                    let NetOp::CreateRoute { dst, .. } = op else { unreachable!() };
                    prop_assert!(before.routes.iter().any(|r| r.dst == *dst && r.table == RT_TABLE_MAIN));
                }
            }
        }
    }
}
