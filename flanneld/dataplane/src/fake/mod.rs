//! An in-memory [`Dataplane`] for tests without root, and the only fake of the kernel: the
//! daemon tests drive it through [`SharedFake`], the planning tests directly.
//!
//! It keeps a kernel-like state with the same keys and replace/delete semantics as the real
//! kernel (neighbours by device and address, FDB entries by device and MAC, routes by the
//! kernel's replace key; a delete removes only the entry it names), including entries of other
//! devices, tables and protocols that flanneld must leave alone. It behaves as
//! [`crate::netlink::NetlinkDataplane`] does around the device: `apply` and `dump` before
//! `ensure_device` are errors; the device's ifindex is remembered from `ensure_device`, so after
//! the device is deleted behind its back ([`FakeDataplane::remove_device`], an operator's
//! `ip link del`) every op that needs it fails with ENODEV until `ensure_device` creates a new
//! one (with a new ifindex). Deleting or replacing the device drops its neighbours, FDB entries
//! and the routes through it, as the kernel does.
//!
//! Dual stack: a second device, `flannel-v6` ([`FakeDataplane::device_v6`], ensured from an
//! IPv6 [`VxlanSpec`]), takes the IPv6 ops, as the real dataplane sends them; without it an IPv6
//! op fails with ENODEV and dumps hold no IPv6 neighbours or routes. With host-gw
//! ([`Dataplane::ensure_no_device`]) plain IPv6 routes `S6 via P6` need no device and dumps
//! hold the IPv6 routes, as in the real one. IPv6 routes get the
//! kernel's default metric 1024 (`crate::default_metric`), part of their replace key.
//!
//! Recording hooks for the tests: every op applied, batch sizes, call counts, injected
//! failures (per op or by predicate), an overrun on the next batch, a refused blackhole route.

mod shared;

pub use shared::SharedFake;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use crate::{
    default_metric, ApplyReport, Dataplane, DataplaneError, DeviceInfo, KernelFdb, KernelNeigh, KernelRoute,
    KernelState, Mac, NetOp, VxlanSpec, RTN_UNICAST, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN,
};

/// The ifindex the first created device gets; each later creation gets the next one, as the
/// kernel never reuses an index soon.
pub const FAKE_DEVICE_INDEX: u32 = 1000;

/// host-gw ([`Dataplane::ensure_no_device`]): the fake then holds a placeholder "device" of this
/// index (index 0 is no device) whose spec carries only the underlay index, so that `apply` and
/// `dump` work and plain routes get the underlay as their device, as the kernel resolves them.
pub const NO_DEVICE_INDEX: u32 = 0;

/// The message of an op that needs the device after the device is gone (the kernel's ENODEV).
pub const ENODEV_MESSAGE: &str = "No such device (errno 19)";

/// The device spec of a typical test node: `flannel.1`, VNI 1, default port, local
/// `198.18.0.2` on the underlay `underlay_index`, MTU 1450, address `10.5.72.0/32` in the
/// network `10.5.0.0/16`. Tests change what they need with struct update syntax.
pub fn test_spec(underlay_index: u32) -> VxlanSpec {
    VxlanSpec {
        name: "flannel.1".into(),
        vni: 1,
        port: 0,
        gbp: false,
        learning: false,
        local: std::net::Ipv4Addr::new(198, 18, 0, 2).into(),
        underlay_index,
        mtu: 1450,
        address: Ipv4Network::from(std::net::Ipv4Addr::new(10, 5, 72, 0)).into(),
        network: Ipv4Network::new(std::net::Ipv4Addr::new(10, 5, 0, 0), 16)
            .expect("16 is a valid IPv4 prefix")
            .into(),
    }
}

/// The `flannel-v6.1` spec of the same test node: local `2001:2::2` (the benchmarking range)
/// on the underlay `underlay_index`, MTU 1430 (1500 − 70, docs/flannel.md §8.4), address
/// `fd00:5:0:48::/128` in the network `fd00:5::/48` (lease size /64).
pub fn test_spec_v6(underlay_index: u32) -> VxlanSpec {
    let ip = |s: &str| s.parse::<std::net::Ipv6Addr>().expect("a literal IPv6 address");
    VxlanSpec {
        name: "flannel-v6.1".into(),
        local: ip("2001:2::2").into(),
        mtu: 1430,
        address: Ipv6Network::from(ip("fd00:5:0:48::")).into(),
        network: Ipv6Network::new(ip("fd00:5::"), 48).expect("48 is a valid IPv6 prefix").into(),
        ..test_spec(underlay_index)
    }
}

/// The fake kernel. All fields are public so tests can inspect and tamper (e.g. delete a route
/// behind the daemon's back, add an operator's route, or make ops fail).
#[derive(Debug, Default, Clone)]
pub struct FakeDataplane {
    /// The device in the kernel, with the spec it was made from (tests may put one here before
    /// the first `ensure_device`: a device left by a previous run, to be adopted).
    pub device: Option<(VxlanSpec, DeviceInfo)>,
    /// The `flannel-v6` device, likewise (dual stack).
    pub device_v6: Option<(VxlanSpec, DeviceInfo)>,
    /// Neighbours of every device.
    pub neighs: Vec<KernelNeigh>,
    /// FDB entries of every device (a replace rewrites the destination of a MAC, like the kernel).
    pub fdb: Vec<KernelFdb>,
    /// IPv4 and IPv6 routes of every table.
    pub routes: Vec<KernelRoute>,
    /// Every op passed to `apply`, in order (batches concatenated), failed ones included.
    pub applied: Vec<NetOp>,
    /// Number of `apply` calls.
    pub batches: usize,
    /// The number of ops of each `apply` call, in order.
    pub batch_sizes: Vec<usize>,
    /// Number of `ensure_device` calls.
    pub ensure_calls: usize,
    /// Number of `dump` calls.
    pub dumps: usize,
    /// Number of route dumps: `dump_routes` calls and the route part of every `dump`.
    pub route_dumps: usize,
    /// Number of `route_to` calls (single route lookups).
    pub route_gets: usize,
    /// Ops in this list fail with the given message when applied (they stay here).
    pub fail: Vec<(NetOp, String)>,
    /// Ops this predicate accepts fail too (message "injected failure"), left undone.
    pub fail_when: Option<fn(&NetOp) -> bool>,
    /// When set, the next `apply` applies everything but reports `overrun` (then clears it).
    pub overrun_next: bool,
    /// The MAC a newly created device gets when no hint is given.
    pub next_mac: Mac,
    /// The ifindex `ensure_device` last returned, as the real dataplane remembers it (`None`
    /// before the first call).
    pub ensured: Option<u32>,
    /// The ifindex the last `ensure_device` of an IPv6 spec returned.
    pub ensured_v6: Option<u32>,
    /// Devices created so far (each gets `FAKE_DEVICE_INDEX + created` before counting it).
    pub created: u32,
    /// Blackhole routes (`ensure_blackhole`), in the order they were added.
    pub blackholes: Vec<Ipv4Network>,
    /// Every `ensure_blackhole` call's destination, in order.
    pub blackhole_calls: Vec<Ipv4Network>,
    /// The devices were set down behind the dataplane's back (`ip link set … down`): every
    /// `ensure_device` sets them up again (clears this), as the real one does.
    pub devices_down: bool,
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

    fn index_v6(&self) -> u32 {
        self.device_v6.as_ref().map_or(0, |(_, i)| i.index)
    }

    /// The ifindex of the device `op` goes to in the kernel now.
    fn index_for(&self, op: &NetOp) -> u32 {
        if op.is_v6() {
            self.index_v6()
        } else {
            self.index()
        }
    }

    fn underlay(&self) -> u32 {
        self.device.as_ref().map_or(0, |(s, _)| s.underlay_index)
    }

    /// The current state as [`Dataplane::dump`] reports it (each list sorted).
    pub fn state(&self) -> KernelState {
        let mut k = KernelState {
            device: self.index(),
            device_v6: self.index_v6(),
            neighs: self.neighs.clone(),
            fdb: self.fdb.clone(),
            routes: self.routes.clone(),
        };
        k.neighs.sort();
        k.fdb.sort();
        k.routes.sort();
        k
    }

    /// Simulates the device disappearing (e.g. `ip link del` by an operator): its neighbours,
    /// FDB entries and the routes through it go with it, as in the kernel. The dataplane still
    /// holds the old ifindex: ops on the device fail with ENODEV until `ensure_device`.
    pub fn remove_device(&mut self) {
        let dev = self.index();
        self.device = None;
        self.drop_entries_of(dev);
    }

    /// [`FakeDataplane::remove_device`] for the `flannel-v6` device.
    pub fn remove_device_v6(&mut self) {
        let dev = self.index_v6();
        self.device_v6 = None;
        self.drop_entries_of(dev);
    }

    /// What the kernel drops with a device: its neighbours, FDB entries and routes through it.
    fn drop_entries_of(&mut self, dev: u32) {
        self.neighs.retain(|n| n.ifindex != dev);
        self.fdb.retain(|e| e.ifindex != dev);
        self.routes.retain(|r| r.oif != Some(dev));
    }

    /// Adds the route the kernel makes for an address on the underlay: `<ip>/32 dev
    /// <underlay> proto kernel scope link`, which makes `ip` on-link for DirectRouting.
    pub fn add_onlink(&mut self, ip: std::net::IpAddr, underlay_index: u32) {
        self.routes.push(KernelRoute {
            gw: None,
            protocol: 2,
            scope: 253,
            ..KernelRoute::made(IpNetwork::from(ip), ip, false, Some(underlay_index))
        });
    }

    /// Whether `op` goes through the device (neighbours, FDB entries, onlink routes), so
    /// fails when the remembered device is gone.
    fn needs_device(op: &NetOp) -> bool {
        match op {
            NetOp::AddNeigh { .. } | NetOp::DelNeigh { .. } | NetOp::AddFdb { .. } | NetOp::DelFdb { .. } => {
                true
            }
            NetOp::AddRoute { onlink, .. }
            | NetOp::DelRoute { onlink, .. }
            | NetOp::CreateRoute { onlink, .. } => *onlink,
        }
    }

    fn exec(&mut self, op: &NetOp) {
        let dev = self.index_for(op);
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
                match self.routes.iter_mut().find(|r| holds(r, dst)) {
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

    fn no_device() -> DataplaneError {
        DataplaneError::Other("no VXLAN device yet: call ensure_device first".into())
    }

    pub(crate) fn ensure_device_now(
        &mut self,
        spec: &VxlanSpec,
        mac_hint: Option<Mac>,
    ) -> Result<DeviceInfo, DataplaneError> {
        self.ensure_calls += 1;
        self.devices_down = false;
        if spec.is_v6() {
            // The same adoption rules on the second device: swap it in, ensure, swap back.
            std::mem::swap(&mut self.device, &mut self.device_v6);
            std::mem::swap(&mut self.ensured, &mut self.ensured_v6);
            let out = self.ensure_device_v4(spec, mac_hint);
            std::mem::swap(&mut self.device, &mut self.device_v6);
            std::mem::swap(&mut self.ensured, &mut self.ensured_v6);
            return out;
        }
        self.ensure_device_v4(spec, mac_hint)
    }

    fn ensure_device_v4(
        &mut self,
        spec: &VxlanSpec,
        mac_hint: Option<Mac>,
    ) -> Result<DeviceInfo, DataplaneError> {
        if let Some((old, info)) = &self.device {
            let compatible = old.vni == spec.vni
                && old.local == spec.local
                && old.underlay_index == spec.underlay_index
                && old.gbp == spec.gbp
                && (old.port == spec.port || old.port == 0 || spec.port == 0);
            if compatible {
                // Adopted: it keeps its ifindex and MAC (the hint is for a new device only).
                let info = DeviceInfo { mtu: spec.mtu, ..info.clone() };
                self.device = Some((spec.clone(), info.clone()));
                self.ensured = Some(info.index);
                return Ok(info);
            }
            self.remove_device();
        }
        let index = FAKE_DEVICE_INDEX + self.created;
        self.created += 1;
        let info = DeviceInfo { index, mac: mac_hint.unwrap_or(self.next_mac), mtu: spec.mtu };
        self.device = Some((spec.clone(), info.clone()));
        self.ensured = Some(index);
        Ok(info)
    }

    /// A real VXLAN device exists (not host-gw's placeholder).
    pub fn has_vxlan_device(&self) -> bool {
        self.device.as_ref().is_some_and(|(_, i)| i.index != NO_DEVICE_INDEX)
    }

    pub(crate) fn ensure_no_device_now(&mut self, underlay_index: u32) -> Vec<String> {
        let mut removed = Vec::new();
        if let Some((spec, _)) = self.device.clone().filter(|_| self.has_vxlan_device()) {
            self.remove_device();
            removed.push(spec.name);
        }
        if let Some((spec, _)) = self.device_v6.clone() {
            self.remove_device_v6();
            removed.push(spec.name);
        }
        self.ensured_v6 = None;
        let any = Ipv4Network::from(std::net::Ipv4Addr::UNSPECIFIED);
        let placeholder = VxlanSpec {
            name: String::new(),
            vni: 0,
            port: 0,
            gbp: false,
            learning: false,
            local: std::net::Ipv4Addr::UNSPECIFIED.into(),
            underlay_index,
            mtu: 0,
            address: any.into(),
            network: any.into(),
        };
        self.device = Some((placeholder, DeviceInfo { index: NO_DEVICE_INDEX, mac: [0; 6], mtu: 0 }));
        self.ensured = Some(NO_DEVICE_INDEX);
        removed
    }

    pub(crate) fn apply_now(&mut self, ops: &[NetOp]) -> Result<ApplyReport, DataplaneError> {
        let Some(ensured) = self.ensured else { return Err(Self::no_device()) };
        self.batches += 1;
        self.batch_sizes.push(ops.len());
        let device_there = self.device.is_some() && self.index() == ensured;
        let v6_there = self.device_v6.is_some() && Some(self.index_v6()) == self.ensured_v6;
        let mut report = ApplyReport::default();
        for op in ops {
            let device_there = if op.is_v6() { v6_there } else { device_there };
            self.applied.push(op.clone());
            if let Some((_, why)) = self.fail.iter().find(|(f, _)| f == op) {
                report.failed.push((op.clone(), why.clone()));
                continue;
            }
            if self.fail_when.is_some_and(|f| f(op)) {
                report.failed.push((op.clone(), "injected failure".into()));
                continue;
            }
            // The real dataplane has nowhere to send an IPv6 op without `flannel-v6`, unless
            // host-gw's plain routes.
            let no_v6 = op.is_v6() && self.ensured_v6.is_none() && ensured != NO_DEVICE_INDEX;
            if no_v6 || (!device_there && Self::needs_device(op)) {
                report.failed.push((op.clone(), ENODEV_MESSAGE.into()));
                continue;
            }
            if let NetOp::CreateRoute { dst, .. } = op {
                if self.routes.iter().any(|r| holds(r, dst)) {
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

    pub(crate) fn dump_now(&mut self) -> Result<KernelState, DataplaneError> {
        let Some(ensured) = self.ensured else { return Err(Self::no_device()) };
        self.dumps += 1;
        self.route_dumps += 1;
        // Reported against the ifindex the dataplane holds: once that device is gone nothing
        // is on it, and the reconciliation re-adds everything (which then fails with ENODEV).
        Ok(self.without_v6(KernelState {
            device: ensured,
            device_v6: self.ensured_v6.unwrap_or(0),
            ..self.state()
        }))
    }

    /// What a dump holds: IPv6 neighbours and routes only once a `flannel-v6` device was
    /// ensured or with host-gw (the real dataplane dumps the IPv6 family only then).
    fn without_v6(&self, mut k: KernelState) -> KernelState {
        if self.ensured_v6.is_none() && self.ensured != Some(NO_DEVICE_INDEX) {
            k.neighs.retain(|n| !n.ip.is_ipv6());
            k.routes.retain(|r| !r.dst.is_ipv6());
        }
        k
    }

    pub(crate) fn dump_routes_now(&mut self) -> KernelState {
        self.route_dumps += 1;
        self.routes_seen()
    }

    /// The routes a dump reads now (not counted).
    fn routes_seen(&self) -> KernelState {
        let mut routes = self.routes.clone();
        routes.sort();
        // Without a device yet, nothing is on it (index 0 is no device), as in the real one.
        self.without_v6(KernelState {
            device: self.ensured.unwrap_or(0),
            device_v6: self.ensured_v6.unwrap_or(0),
            routes,
            ..KernelState::default()
        })
    }

    /// [`Dataplane::route_to`] as the kernel answers it from the main table: the route it
    /// would pick (longest prefix, then lowest metric), for a host prefix of `dst`; `None`
    /// without one, or for a non-unicast one (the kernel answers an error). Families the
    /// dumps do not read yet are not looked at either (a route lookup is not limited like
    /// that in the kernel, but the daemon asks only about families it routes).
    pub(crate) fn route_to_now(&mut self, dst: std::net::IpAddr) -> Option<KernelRoute> {
        self.route_gets += 1;
        let k = self.routes_seen();
        let best = k.best_route(dst).filter(|r| r.kind == crate::RTN_UNICAST)?;
        Some(KernelRoute { dst: IpNetwork::from(dst), tos: 0, ..best.clone() })
    }

    pub(crate) fn ensure_blackhole_now(&mut self, dst: Ipv4Network) -> Result<bool, DataplaneError> {
        self.blackhole_calls.push(dst);
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

/// Whether `r` holds `dst` by the kernel's replace key: main table, same prefix, tos 0,
/// the priority a route without one gets (IPv4 0, IPv6 1024).
fn holds(r: &KernelRoute, dst: &IpNetwork) -> bool {
    r.table == RT_TABLE_MAIN && r.dst == *dst && r.tos == 0 && r.metric == default_metric(dst)
}

impl Dataplane for FakeDataplane {
    async fn ensure_device(
        &mut self,
        spec: &VxlanSpec,
        mac_hint: Option<Mac>,
    ) -> Result<DeviceInfo, DataplaneError> {
        self.ensure_device_now(spec, mac_hint)
    }

    async fn apply(&mut self, ops: &[NetOp]) -> Result<ApplyReport, DataplaneError> {
        self.apply_now(ops)
    }

    async fn dump(&mut self) -> Result<KernelState, DataplaneError> {
        self.dump_now()
    }

    async fn dump_routes(&mut self) -> Result<KernelState, DataplaneError> {
        Ok(self.dump_routes_now())
    }

    async fn route_to(&mut self, dst: std::net::IpAddr) -> Result<Option<KernelRoute>, DataplaneError> {
        Ok(self.route_to_now(dst))
    }

    async fn ensure_blackhole(&mut self, dst: Ipv4Network) -> Result<bool, DataplaneError> {
        self.ensure_blackhole_now(dst)
    }

    async fn ensure_no_device(&mut self, underlay_index: u32) -> Result<Vec<String>, DataplaneError> {
        Ok(self.ensure_no_device_now(underlay_index))
    }

    async fn devices_up(&mut self) -> Result<bool, DataplaneError> {
        Ok(!self.devices_down)
    }
}

#[cfg(test)]
mod tests;
