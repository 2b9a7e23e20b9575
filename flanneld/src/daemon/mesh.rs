//! The mesh: lease events and snapshots → peer changes → kernel ops, applied in batches, and
//! reconciliation of the kernel against the desired peers (dump, compare, correct).
//!
//! Both paths change only what the ownership rule (`weft_dataplane::own`) gives flanneld: route
//! ops from lease events are checked against a fresh route dump first (`plan_guard`), and a
//! route in the way of a peer route is reported as a conflict (log, `/healthz`, metric), never
//! replaced.
//!
//! host-gw (docs/flannel.md §4.2; upstream `pkg/backend/route_network.go`): each peer is a
//! plain route `S via P` (the DirectRouting route), created and reconciled by the same code.
//! A peer whose PublicIP is not on the same L2 segment (no on-link route to it on the
//! external interface, where upstream's route add just fails) is skipped and reported (WARN
//! log, `/healthz`, metric); every reconciliation looks again. Dual stack: the same for the
//! IPv6 side, `S6 via P6` (`dual.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnetwork::{IpNetwork, Ipv4Network};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use weft_dataplane::lookup::RouteLookup;
use weft_dataplane::own::{Conflict, Ownership};
use weft_dataplane::plan::{plan_add, plan_guard, plan_reconcile, plan_remove, Peer};
use weft_dataplane::{Dataplane, KernelState, NetOp, RT_TABLE_MAIN};

use crate::network::BackendKind;
use crate::peers::{Change, RemotePeer};
use crate::registry::{Record, Registry, WatchEvent};
use crate::watch::WatchMsg;

use super::{Daemon, BATCH, DEVICE_CHECK_EVERY};

/// host-gw: a batch of lease events with at most this many new PublicIPs is checked with one
/// route lookup each; more read one route dump (3–4 ms at 5,000 routes, where a lookup costs
/// tens of microseconds).
const LOOKUP_MAX: usize = 16;

impl<R: Registry, D: Dataplane> Daemon<R, D> {
    pub(super) async fn on_watch(&mut self, msg: WatchMsg) {
        match msg {
            WatchMsg::Etcd(Some(e)) => self.etcd_error("lease watch", &e),
            WatchMsg::Etcd(None) => self.set_etcd_ok(true),
            WatchMsg::Snapshot { records, revision } => self.on_snapshot(&records, revision).await,
            WatchMsg::Events(events) => self.on_events(&events).await,
        }
    }

    pub(super) async fn on_snapshot(&mut self, records: &[Record], revision: i64) {
        self.known_keys = records.iter().map(|r| r.key.clone()).collect();
        self.update_lease_gauge();
        if let Some(own) = &self.own {
            if let Some(why) = own.lost_because(records.iter().find(|r| r.key == own.path), revision) {
                self.lost_lease(why, own.subnet());
            }
        }
        let own_path = self.own.as_ref().map(|o| o.path.clone());
        let changes = self.peers.snapshot(records.iter().filter(|r| Some(&r.key) != own_path.as_ref()));
        // DirectRouting and host-gw: one route dump answers every peer's on-link question.
        let upserts = changes.iter().any(|c| matches!(c, Change::Upsert(_)));
        let dump = if upserts && self.route_lookup() { self.routes().await.ok() } else { None };
        let routes = dump.as_ref().map(RouteLookup::new);
        for change in changes {
            match change {
                Change::Upsert(p) => {
                    let peer = self.peer_for(&p, routes.as_ref());
                    self.place(&p, peer);
                    // Programmed by the reconciliation below.
                    let on6 = self.onlink_v6(&p, routes.as_ref());
                    self.upsert_v6(&p, on6, false);
                }
                Change::Remove(s) => {
                    self.off_link.remove(&s);
                    self.desired.remove(&s);
                    self.remove_v6(&s);
                }
            }
        }
        // The snapshot may follow an outage or a restart: compare with the kernel directly.
        self.reconcile().await;
    }

    pub(super) async fn on_events(&mut self, events: &[WatchEvent]) {
        let mut changes = Vec::new();
        for ev in events {
            let key = match ev {
                WatchEvent::Put(r) => &r.key,
                WatchEvent::Delete { key, .. } => key,
            };
            match ev {
                WatchEvent::Put(_) => self.known_keys.insert(key.clone()),
                WatchEvent::Delete { .. } => self.known_keys.remove(key),
            };
            if let Some(own) = &self.own {
                if *key == own.path {
                    let current = match ev {
                        WatchEvent::Put(r) => Some(r),
                        WatchEvent::Delete { .. } => None,
                    };
                    if let Some(why) = own.lost_because(current, ev.revision()) {
                        self.lost_lease(why, own.subnet());
                    }
                    continue;
                }
            }
            changes.extend(match ev {
                WatchEvent::Put(r) => self.peers.put(r),
                WatchEvent::Delete { key, .. } => self.peers.delete(key),
            });
        }
        self.update_lease_gauge();
        if changes.is_empty() {
            return;
        }
        let off_link_before = (self.off_link.clone(), self.off_link_v6.clone());
        // DirectRouting and host-gw: one route dump answers every on-link question of the
        // batch (and guards its route ops below). host-gw with few new addresses asks the
        // kernel once per address instead (`Dataplane::route_to`, as upstream's route add
        // consults the kernel per lease): new routes are then created exclusively, so that
        // no route is overwritten unseen, and only replacing or deleting one reads the dump.
        let direct_routing = self.route_lookup();
        let onlink_asked = self.ask_onlink(&changes).await;
        let lookups = onlink_asked.is_some();
        let answers = onlink_asked.unwrap_or_default();
        let mut routes = if direct_routing && !lookups { Some(self.routes().await) } else { None };
        let underlay = self.cfg.underlay_index;
        let mut ops: Vec<NetOp> = Vec::new();
        // The IPv6 side (dual stack), guarded against the IPv6 routes on its own.
        let mut ops6: Vec<NetOp> = Vec::new();
        let index = routes.as_ref().and_then(|r| r.as_ref().ok()).map(RouteLookup::new);
        for change in changes {
            match change {
                Change::Upsert(p) => {
                    let seen = index.as_ref();
                    let onlink = |ip: IpAddr| match seen {
                        Some(r) => Some(r.is_onlink_on(ip, underlay)),
                        None => answers.get(&ip).copied(),
                    };
                    let on6 = match lookups {
                        true => p.ipv6.as_ref().and_then(|v6| onlink(v6.public_ipv6.into())),
                        false => self.onlink_v6(&p, seen),
                    };
                    // Routes not read (lookups, or VXLAN without DirectRouting, whose route
                    // `S6 via S6:: onlink` does not depend on the lease): new ones are created
                    // exclusively, as on the IPv4 side below, so no dump is needed.
                    let before6 = self.desired_v6.get(&p.subnet()).cloned();
                    ops6.extend(self.upsert_v6(&p, on6, lookups || !direct_routing));
                    if let Some(n) = self.desired_v6.get(&p.subnet()).filter(|n| Some(*n) != before6.as_ref())
                    {
                        info!(subnet = %n.subnet, public_ip = %n.public_ip, "IPv6 peer added");
                    }
                    let peer = if self.spec.backend_type == BackendKind::HostGw {
                        self.host_gw_peer(&p, onlink(p.public_ip.into()))
                    } else {
                        self.peer_for(&p, seen)
                    };
                    let Some(new) = peer else {
                        // host-gw, not on-link: what a previous PublicIP of it had goes.
                        if let Some(old) = self.place(&p, None) {
                            ops.extend(plan_remove(&old));
                        }
                        continue;
                    };
                    self.off_link.remove(&p.subnet());
                    info!(subnet = %new.subnet, public_ip = %new.public_ip, direct = new.direct, "peer added");
                    let old = self.desired.get(&p.subnet());
                    let mut add = plan_add(old, &new);
                    if lookups && old.is_none() {
                        // Not looked at: created exclusively (see above).
                        add = add.into_iter().map(super::dual::exclusive).collect();
                    } else if !direct_routing {
                        // Without DirectRouting a known peer's route never changes (`S via
                        // S.0`); a new one is created exclusively: an existing route at its
                        // destination is reported, not overwritten, and looked at below.
                        let known = old.is_some();
                        add = add
                            .into_iter()
                            .filter_map(|op| match op {
                                NetOp::AddRoute { .. } if known => None,
                                NetOp::AddRoute { dst, gw, onlink } => {
                                    Some(NetOp::CreateRoute { dst, gw, onlink })
                                }
                                other => Some(other),
                            })
                            .collect();
                    }
                    ops.extend(add);
                    self.desired.insert(p.subnet(), new);
                }
                Change::Remove(s) => {
                    self.off_link.remove(&s);
                    ops6.extend(self.remove_v6(&s));
                    if let Some(old) = self.desired.remove(&s) {
                        info!(subnet = %s, public_ip = %old.public_ip, "peer removed");
                        ops.extend(plan_remove(&old));
                    }
                }
            }
        }
        if (&self.off_link, &self.off_link_v6) != (&off_link_before.0, &off_link_before.1) {
            self.note_off_link();
        }
        if ops.is_empty() && ops6.is_empty() {
            return;
        }
        let v6_routes = !ops6.is_empty();
        // Replacing and deleting routes needs a look at them first: never replace or delete a
        // route flanneld does not own.
        let replaces = |o: &NetOp| matches!(o, NetOp::AddRoute { .. } | NetOp::DelRoute { .. });
        if ops.iter().chain(&ops6).any(replaces) {
            if routes.is_none() {
                routes = Some(self.routes().await);
            }
            let Some(Ok(seen)) = &routes else {
                // `desired` is up to date: the reconciliation programs it from a full dump.
                self.device_suspect = true;
                self.reconcile_retry.get_or_insert(Instant::now() + self.retry_backoff);
                self.cfg.health.update(|h| h.mesh_programmed = false);
                return;
            };
            let guarded = plan_guard(ops, &seen.family(false), &self.ownership());
            ops = guarded.ops;
            let mut conflicts = guarded.conflicts;
            if let Some(owner) = self.ownership_v6().filter(|_| v6_routes) {
                let guarded6 = plan_guard(std::mem::take(&mut ops6), &seen.family(true), &owner);
                ops.extend(guarded6.ops);
                conflicts.extend(guarded6.conflicts);
            }
            self.note_conflicts(conflicts, false);
        } else {
            ops.append(&mut ops6);
            self.note_conflicts(Vec::new(), false);
        }
        let clean = self.apply(&ops).await;
        if std::mem::take(&mut self.routes_in_the_way) {
            // A new peer's destination already had a route: decide from a full dump now.
            self.reconcile().await;
        } else if clean {
            self.cfg.metrics.peers_programmed.set(gauge(self.programmed()));
            self.cfg.metrics.peers_programmed_v6.set(gauge(self.programmed_v6()));
        }
    }

    /// The kernel's routes; a failure is counted and logged (ERROR) here.
    async fn routes(&mut self) -> Result<KernelState, ()> {
        self.dp.dump_routes().await.map_err(|e| {
            self.cfg.metrics.netlink_errors.inc();
            error!(error = %e, "reading routes failed, will reconcile");
        })
    }

    /// What flanneld may change in the kernel now.
    pub(super) fn ownership(&self) -> Ownership {
        Ownership {
            network: self.spec.network.into(),
            subnet_len: self.spec.subnet_len,
            leases: self.peers.held().iter().map(|(s, ip)| ((*s).into(), (*ip).into())).collect(),
            // host-gw routes have DirectRouting's shape: `S via P` of a lease S held by P.
            direct: self.route_lookup() || self.direct_cleanup,
        }
    }

    /// Peers whose entries are all programmed (as far as the last plan knows).
    fn programmed(&self) -> usize {
        let blocked = self.conflicts.keys().filter(|d| d.is_ipv4()).count();
        self.desired.len().saturating_sub(blocked)
    }

    /// Records route conflicts: `found` replaces the known ones (`full`, a reconciliation) or
    /// is added to them (lease events); only destinations a peer still needs are kept. Each
    /// new conflict is logged once, and `/healthz` and the metric follow.
    fn note_conflicts(&mut self, found: Vec<Conflict>, full: bool) {
        let mut next = if full { BTreeMap::new() } else { self.conflicts.clone() };
        next.extend(found.into_iter().map(|c| (c.dst, c.route)));
        // Built only when there is a conflict to check: every lease event comes here, and a
        // set of every peer's destination cost ~0.7 ms per event at 5,000 dual-stack peers.
        if !next.is_empty() {
            let mut needed: BTreeSet<IpNetwork> = self.desired.keys().map(|s| route_dst(*s)).collect();
            needed.extend(self.desired_v6.values().map(|p| route_dst_v6(p.subnet)));
            next.retain(|dst, _| needed.contains(dst));
        }
        for (dst, route) in &next {
            if self.conflicts.get(dst) != Some(route) {
                warn!(subnet = %dst, route = %route,
                    "a route flanneld did not make holds a peer subnet; leaving it, the peer's route is not programmed");
            }
        }
        for dst in self.conflicts.keys().filter(|d| !next.contains_key(d)) {
            info!(subnet = %dst, "route conflict gone");
        }
        self.conflicts = next;
        self.cfg.metrics.route_conflicts.set(gauge(self.conflicts.len()));
        let list: Vec<String> = self.conflicts.keys().map(ToString::to_string).collect();
        self.cfg.health.update(|h| {
            if !list.is_empty() {
                h.mesh_programmed = false;
            }
            h.route_conflicts = list;
        });
    }

    pub(super) fn update_lease_gauge(&self) {
        self.cfg.metrics.leases_known.set(gauge(self.known_keys.len()));
    }

    /// Peers need a route dump to be planned: DirectRouting, or host-gw.
    fn route_lookup(&self) -> bool {
        self.spec.backend.direct_routing || self.spec.backend_type == BackendKind::HostGw
    }

    /// The peer to program for `p`. With DirectRouting, `routes` (one dump for many peers)
    /// says whether its PublicIP is on-link; without them (the dump failed, logged once by
    /// the caller) it gets VXLAN, as upstream does when its route lookup fails. With host-gw
    /// it is always a plain route `S via P`, and `None` (skip it) when `routes` show `P` is not
    /// on-link on the external interface; without routes it is tried (the kernel refuses an
    /// unreachable gateway, and the reconciliation looks again).
    pub(super) fn peer_for(&self, p: &RemotePeer, routes: Option<&RouteLookup>) -> Option<Peer> {
        let (subnet, vtep_mac) = (p.subnet().into(), p.vtep_mac);
        let public_ip = p.public_ip;
        if self.spec.backend_type == BackendKind::HostGw {
            let onlink = routes.map(|r| r.is_onlink_on(public_ip.into(), self.cfg.underlay_index));
            return self.host_gw_peer(p, onlink);
        }
        let direct =
            self.spec.backend.direct_routing && routes.is_some_and(|r| r.is_onlink(public_ip.into()));
        Some(Peer { subnet, public_ip: public_ip.into(), vtep_mac, direct })
    }

    /// host-gw: the plain route `S via P` for `p`, or `None` (skip it) when `onlink` says `P`
    /// is not on-link on the external interface; when that is unknown it is tried.
    fn host_gw_peer(&self, p: &RemotePeer, onlink: Option<bool>) -> Option<Peer> {
        if onlink == Some(false) {
            return None;
        }
        Some(Peer {
            subnet: p.subnet().into(),
            public_ip: p.public_ip.into(),
            vtep_mac: p.vtep_mac,
            direct: true,
        })
    }

    /// host-gw with at most [`LOOKUP_MAX`] PublicIPs (both families) among the batch's
    /// upserts: each one's on-link answer from one `RTM_GETROUTE` (`Dataplane::route_to`;
    /// a failed lookup is left out: that peer is tried). `None`: read a dump instead.
    async fn ask_onlink(&mut self, changes: &[Change]) -> Option<BTreeMap<IpAddr, bool>> {
        if self.spec.backend_type != BackendKind::HostGw {
            return None;
        }
        let v6 = self.host_gw_v6();
        let mut ips = BTreeSet::new();
        for c in changes {
            if let Change::Upsert(p) = c {
                ips.insert(IpAddr::V4(p.public_ip));
                ips.extend(p.ipv6.as_ref().filter(|_| v6).map(|s| IpAddr::V6(s.public_ipv6)));
            }
        }
        if ips.is_empty() || ips.len() > LOOKUP_MAX {
            return None;
        }
        let mut answers = BTreeMap::new();
        for ip in ips {
            match self.dp.route_to(ip).await {
                Ok(r) => {
                    answers.insert(ip, r.is_some_and(|r| r.reaches_onlink(self.cfg.underlay_index)));
                }
                Err(e) => {
                    self.cfg.metrics.netlink_errors.inc();
                    error!(error = %e, address = %ip, "route lookup failed, trying the peer route");
                }
            }
        }
        Some(answers)
    }

    /// host-gw: decides again from a full dump which peers are on-link (an address or route
    /// of the external interface may have changed since their lease came).
    fn refresh_host_gw(&mut self, actual: &KernelState) {
        let peers: Vec<RemotePeer> = self.peers.iter().cloned().collect();
        let routes = RouteLookup::new(actual);
        for p in &peers {
            let peer = self.peer_for(p, Some(&routes));
            self.place(p, peer);
            // The IPv6 side's ops come from the reconciliation's plan.
            let on6 = self.onlink_v6(p, Some(&routes));
            self.upsert_v6(p, on6, false);
        }
    }

    /// Records what to program for `p`: `peer`, or (`None`, a host-gw peer off the L2
    /// segment) nothing, remembered as off-link. Returns what was desired for it before.
    fn place(&mut self, p: &RemotePeer, peer: Option<Peer>) -> Option<Peer> {
        match peer {
            Some(peer) => {
                self.off_link.remove(&p.subnet());
                self.desired.insert(p.subnet(), peer)
            }
            None => {
                self.off_link.insert(p.subnet(), p.public_ip);
                self.desired.remove(&p.subnet())
            }
        }
    }

    /// Reports the host-gw peers skipped as not on the same L2 segment: each newly skipped one
    /// is logged once (WARN, as upstream's failing route add is), and `/healthz` and the
    /// metric follow.
    fn note_off_link(&mut self) {
        let v4 = self.off_link.iter().map(|(s, ip)| (IpNetwork::V4(*s), IpAddr::V4(*ip)));
        let entries: Vec<(IpNetwork, IpAddr)> = v4.chain(self.off_link_v6.values().copied()).collect();
        let list: Vec<String> = entries.iter().map(|(s, ip)| format!("{s} via {ip}")).collect();
        let reported = self.cfg.health.get().peers_off_link;
        for (line, (subnet, ip)) in list.iter().zip(&entries) {
            if !reported.contains(line) {
                warn!(subnet = %subnet, public_ip = %ip, underlay = self.cfg.underlay_index,
                    "host-gw peer is not on the same L2 segment (no on-link route to its PublicIP on the external interface), not routed");
            }
        }
        for line in reported.iter().filter(|l| !list.contains(l)) {
            info!(peer = %line, "host-gw peer reachable on-link again, or gone");
        }
        self.cfg.metrics.peers_off_link.set(gauge(entries.len()));
        self.cfg.health.update(|h| h.peers_off_link = list);
    }

    /// Applies ops in batches; returns whether everything applied. Failures or an overrun
    /// schedule a reconciliation (re-dump and correct) with back-off.
    pub(super) async fn apply(&mut self, ops: &[NetOp]) -> bool {
        let mut clean = true;
        let mut failing = BTreeSet::new();
        for chunk in ops.chunks(BATCH) {
            debug!(ops = chunk.len(), "applying kernel ops");
            match self.dp.apply(chunk).await {
                Ok(report) => {
                    // Log each failing op once per state change, not on every retry.
                    for (op, why) in &report.failed {
                        if failing.insert(op.clone()) && !self.failing.contains(op) {
                            error!(error = %why, "kernel op failed, will retry");
                        } else {
                            debug!(error = %why, "kernel op still failing");
                        }
                    }
                    self.cfg.metrics.netlink_errors.inc_by(u64::try_from(report.failed.len()).unwrap_or(0));
                    if !report.exists.is_empty() {
                        debug!(routes = report.exists.len(), "route destinations already taken");
                        self.routes_in_the_way = true;
                    }
                    if !report.failed.is_empty() {
                        // ENODEV and friends: the device may be gone; the next pass re-checks it.
                        self.device_suspect = true;
                        clean = false;
                    }
                    if report.overrun {
                        // The kernel may have applied more than reported: re-dump and reconcile.
                        clean = false;
                    }
                }
                Err(e) => {
                    self.cfg.metrics.netlink_errors.inc();
                    error!(error = %e, "applying kernel ops failed, will reconcile");
                    self.device_suspect = true;
                    clean = false;
                }
            }
        }
        for op in ops {
            if !failing.contains(op) {
                self.failing.remove(op);
            }
        }
        self.failing.extend(failing);
        if clean {
            self.retry_backoff = Duration::from_secs(1);
        } else {
            let delay = self.retry_backoff;
            self.retry_backoff = (delay * 2).min(self.cfg.reconcile_interval.max(Duration::from_secs(1)));
            self.reconcile_retry.get_or_insert(Instant::now() + delay);
            self.cfg.health.update(|h| h.mesh_programmed = false);
        }
        clean
    }

    /// Periodic work: reconcile; every [`DEVICE_CHECK_EVERY`]th time also make sure the
    /// device exists (it may have been deleted; failing ops trigger this check at once, and
    /// so does a device found down, `Daemon::device_down`).
    pub(super) async fn periodic(&mut self) {
        self.until_device_check = self.until_device_check.saturating_sub(1);
        if !self.device_suspect && self.device_down().await {
            self.device_suspect = true;
        }
        if self.device_suspect || self.until_device_check == 0 {
            self.until_device_check = DEVICE_CHECK_EVERY;
            self.check_device().await;
        }
        self.reconcile().await;
    }

    /// Dumps the kernel, compares with the desired peers and corrects the difference.
    pub(super) async fn reconcile(&mut self) {
        let actual = match self.dp.dump().await {
            Ok(a) => a,
            Err(e) => {
                self.cfg.metrics.netlink_errors.inc();
                error!(error = %e, "dumping kernel state failed, will retry");
                self.device_suspect = true;
                self.reconcile_retry.get_or_insert(Instant::now() + self.retry_backoff);
                self.cfg.health.update(|h| h.mesh_programmed = false);
                return;
            }
        };
        if self.spec.backend_type == BackendKind::HostGw {
            self.refresh_host_gw(&actual);
            self.note_off_link();
        }
        let desired: Vec<Peer> = self.desired.values().cloned().collect();
        let plan = plan_reconcile(&desired, &actual.family(false), &self.ownership());
        let (mut ops, mut conflicts) = (plan.ops, plan.conflicts);
        if let Some(plan6) = self.reconcile_v6(&actual) {
            ops.extend(plan6.ops);
            conflicts.extend(plan6.conflicts);
        }
        self.note_conflicts(conflicts, true);
        if !ops.is_empty() {
            if self.mesh_done {
                info!(corrections = ops.len(), "reconciliation found kernel drift, correcting");
                self.cfg.metrics.reconcile_corrections.inc_by(u64::try_from(ops.len()).unwrap_or(0));
            } else {
                info!(ops = ops.len(), peers = desired.len(), "programming peers");
            }
        }
        let clean = ops.is_empty() || self.apply(&ops).await;
        if clean {
            self.reconcile_retry = None;
            self.direct_cleanup = false;
            // A removed lease is remembered while a route to its subnet may still be ours.
            self.peers.forget_held(|s, _| {
                actual.routes.iter().any(|r| r.table == RT_TABLE_MAIN && r.dst == route_dst(*s))
            });
            self.forget_held_v6(&actual);
            self.cfg.metrics.peers_programmed.set(gauge(self.programmed()));
            self.cfg.metrics.peers_programmed_v6.set(gauge(self.programmed_v6()));
            let full = self.conflicts.is_empty();
            self.cfg.health.update(|h| h.mesh_programmed = full);
            if full && !self.mesh_done {
                self.mesh_done = true;
                let secs = self.started.elapsed().as_secs_f64();
                self.cfg.metrics.time_to_full_mesh_seconds.set(secs);
                info!(peers = desired.len(), seconds = secs, "full mesh programmed");
            }
        }
    }
}

/// The destination of a peer route for `subnet` (host bits cleared).
fn route_dst(subnet: Ipv4Network) -> IpNetwork {
    IpNetwork::V4(Ipv4Network::new(subnet.network(), subnet.prefix()).unwrap_or(subnet))
}

/// The destination of an IPv6 peer route (host bits cleared).
fn route_dst_v6(subnet: IpNetwork) -> IpNetwork {
    IpNetwork::new(subnet.network(), subnet.prefix()).unwrap_or(subnet)
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
