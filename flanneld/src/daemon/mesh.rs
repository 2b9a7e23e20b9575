//! The mesh: lease events and snapshots → peer changes → kernel ops, applied in batches, and
//! reconciliation of the kernel against the desired peers (dump, compare, correct).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use weft_dataplane::plan::{plan_add, plan_reconcile, plan_remove, Peer};
use weft_dataplane::{Dataplane, NetOp};

use crate::peers::{Change, RemotePeer};
use crate::registry::{Record, Registry, WatchEvent};
use crate::watch::WatchMsg;

use super::{Daemon, BATCH, DEVICE_CHECK_EVERY};

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
        let others: Vec<Record> =
            records.iter().filter(|r| Some(&r.key) != own_path.as_ref()).cloned().collect();
        let changes = self.peers.snapshot(&others);
        for change in changes {
            match change {
                Change::Upsert(p) => {
                    let peer = self.peer_for(&p).await;
                    self.desired.insert(p.subnet(), peer);
                }
                Change::Remove(s) => {
                    self.desired.remove(&s);
                }
            }
        }
        // The snapshot may follow an outage or a restart: compare with the kernel directly.
        self.reconcile().await;
    }

    pub(super) async fn on_events(&mut self, events: &[WatchEvent]) {
        let mut ops = Vec::new();
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
            let changes = match ev {
                WatchEvent::Put(r) => self.peers.put(r),
                WatchEvent::Delete { key, .. } => self.peers.delete(key),
            };
            for change in changes {
                match change {
                    Change::Upsert(p) => {
                        let new = self.peer_for(&p).await;
                        info!(subnet = %new.subnet, public_ip = %new.public_ip, direct = new.direct, "peer added");
                        ops.extend(plan_add(self.desired.get(&new.subnet), &new));
                        self.desired.insert(new.subnet, new);
                    }
                    Change::Remove(s) => {
                        if let Some(old) = self.desired.remove(&s) {
                            info!(subnet = %s, public_ip = %old.public_ip, "peer removed");
                            ops.extend(plan_remove(&old));
                        }
                    }
                }
            }
        }
        self.update_lease_gauge();
        if !ops.is_empty() {
            let clean = self.apply(&ops).await;
            if clean {
                self.cfg.metrics.peers_programmed.set(gauge(self.desired.len()));
            }
        }
    }

    pub(super) fn update_lease_gauge(&self) {
        self.cfg.metrics.leases_known.set(gauge(self.known_keys.len()));
    }

    pub(super) async fn peer_for(&mut self, p: &RemotePeer) -> Peer {
        let direct = if self.spec.backend.direct_routing {
            match self.dp.is_onlink(p.public_ip).await {
                Ok(d) => d,
                Err(e) => {
                    self.cfg.metrics.netlink_errors.inc();
                    warn!(public_ip = %p.public_ip, error = %e, "route lookup failed, using VXLAN");
                    false
                }
            }
        } else {
            false
        };
        Peer { subnet: p.subnet(), public_ip: p.public_ip, vtep_mac: p.vtep_mac, direct }
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
    /// device exists (it may have been deleted; failing ops trigger this check at once).
    pub(super) async fn periodic(&mut self) {
        self.until_device_check = self.until_device_check.saturating_sub(1);
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
        let desired: Vec<Peer> = self.desired.values().cloned().collect();
        let ops = plan_reconcile(&desired, &actual);
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
            self.cfg.metrics.peers_programmed.set(gauge(desired.len()));
            self.cfg.health.update(|h| h.mesh_programmed = true);
            if !self.mesh_done {
                self.mesh_done = true;
                let secs = self.started.elapsed().as_secs_f64();
                self.cfg.metrics.time_to_full_mesh_seconds.set(secs);
                info!(peers = desired.len(), seconds = secs, "full mesh programmed");
            }
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
