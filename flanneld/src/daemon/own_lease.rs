//! The daemon's own lease: acquisition at startup, renewal, republishing changed attributes,
//! and re-acquisition (preferring the same subnet) when the key is lost. Never exits for it.

use std::time::Duration;

use ipnetwork::Ipv4Network;
use tokio::time::{sleep, Instant};
use tracing::{error, info, warn};
use weft_dataplane::Dataplane;

use crate::acquire::{acquire_once, renew, AcquireError, Acquired, OwnLease, Renewal, Want};
use crate::lease::{LeaseAttrs, LeaseKey, LEASE_TTL_SECS};
use crate::network::BackendKind;
use crate::peers::Change;
use crate::registry::Registry;

use super::{unix_now, Daemon};

impl<R: Registry, D: Dataplane> Daemon<R, D> {
    pub(super) fn attrs(&self) -> LeaseAttrs {
        match self.spec.backend_type {
            BackendKind::Vxlan => {
                let attrs = LeaseAttrs::vxlan(self.cfg.public_ip, self.spec.backend.vni, self.mac);
                // Dual stack: `PublicIPv6` and `BackendV6Data` of `flannel-v6` (§4.2).
                match self.cfg.public_ipv6.filter(|_| self.dual_stack()) {
                    Some(ip6) => attrs.with_vxlan_v6(ip6, self.spec.backend.vni, self.mac_v6),
                    None => attrs,
                }
            }
            BackendKind::HostGw => {
                // Dual stack: `PublicIPv6` and no `BackendV6Data`, as upstream's host-gw
                // publishes (`pkg/backend/hostgw/hostgw.go`, docs/flannel.md §4.2).
                let mut attrs = LeaseAttrs::host_gw(self.cfg.public_ip);
                attrs.public_ipv6 = self.cfg.public_ipv6.filter(|_| self.host_gw_v6());
                attrs
            }
        }
    }

    /// What an acquisition asks for: our attributes, preferring the subnet we last held.
    fn want<'a>(&'a self, attrs: &'a LeaseAttrs) -> Want<'a> {
        Want {
            prefix: &self.cfg.etcd_prefix,
            spec: &self.spec,
            public_ip: self.cfg.public_ip,
            attrs,
            previous: self.last_subnet.map(|ipv4| LeaseKey { ipv4, ipv6: self.last_subnet_v6 }),
        }
    }

    pub(super) fn renew_delay(&self) -> Duration {
        Duration::from_secs(u64::try_from(LEASE_TTL_SECS).unwrap_or(86_400))
            .saturating_sub(self.cfg.renew_margin)
    }

    pub(super) fn etcd_error(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.cfg.metrics.etcd_errors.inc();
        if self.etcd_ok {
            error!(error = %e, "{what} failed: etcd unreachable, will retry");
        }
        self.set_etcd_ok(false);
    }

    pub(super) fn set_etcd_ok(&mut self, ok: bool) {
        if ok && !self.etcd_ok {
            info!("etcd reachable again");
        }
        self.etcd_ok = ok;
        self.cfg.health.update(|h| h.etcd_reachable = ok);
    }

    /// Startup acquisition: retried (lost races at once, other failures with back-off).
    pub(super) async fn acquire_until_done(&mut self) -> Acquired {
        let mut backoff = Duration::from_millis(200);
        let mut last_err = String::new();
        loop {
            let attrs = self.attrs();
            let want = self.want(&attrs);
            match acquire_once(&self.registry, &want).await {
                Ok(a) => {
                    self.set_etcd_ok(true);
                    return a;
                }
                Err(AcquireError::LostRace(_)) => continue,
                Err(e) => {
                    if let AcquireError::Registry(r) = &e {
                        self.etcd_error("lease acquisition", r);
                    } else if e.to_string() != last_err {
                        error!(error = %e, "cannot acquire a subnet lease, retrying");
                    }
                    last_err = e.to_string();
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    pub(super) fn take_lease(&mut self, a: Acquired) {
        let subnet = a.lease.subnet();
        for change in self.peers.set_own(a.lease.key) {
            match change {
                Change::Remove(s) => {
                    self.desired.remove(&s);
                    self.desired_v6.remove(&s);
                }
                // A peer's IPv6 side held back by (or given back with) our IPv6 subnet: the
                // next reconciliation programs what `desired_v6` now says.
                Change::Upsert(p) => {
                    let on6 = self.onlink_v6(&p, None);
                    self.upsert_v6(&p, on6, false);
                }
            }
        }
        self.last_subnet_v6 = a.lease.key.ipv6;
        self.own = Some(a.lease);
        self.last_subnet = Some(subnet);
        self.renew_at = Some(Instant::now() + self.renew_delay());
        self.reacquire_at = None;
        self.reacquire_backoff = Duration::from_secs(1);
        self.cfg.metrics.last_renewal_timestamp_seconds.set(unix_now());
        self.cfg.health.update(|h| h.lease_held = true);
        self.publish_facts();
    }

    /// Puts our key with the current attributes (a renewal with new contents).
    pub(super) async fn republish(&mut self) {
        let value = self.attrs().render();
        let Some(mut own) = self.own.take() else { return };
        match renew(&self.registry, &mut own, &value).await {
            Ok(Renewal::Renewed) => {
                self.own = Some(own);
                self.publish_facts();
                self.renew_at = Some(Instant::now() + self.renew_delay());
                self.cfg.metrics.last_renewal_timestamp_seconds.set(unix_now());
            }
            Ok(Renewal::Lost) => self.lost_lease("key no longer ours when republishing", own.subnet()),
            Err(e) => {
                self.etcd_error("lease republish", &e);
                // Retried as a renewal soon; the renewal carries our current attributes.
                self.own = Some(own);
                self.renew_at = Some(Instant::now() + Duration::from_secs(10));
            }
        }
    }

    pub(super) async fn renew(&mut self) {
        self.renew_at = None;
        self.republish().await;
        if self.own.is_some() && self.renew_at.is_some() && self.etcd_ok {
            info!("lease renewed");
        }
    }

    pub(super) fn lost_lease(&mut self, why: &str, subnet: Ipv4Network) {
        warn!(subnet = %subnet, reason = why, "own lease lost, re-acquiring (preferring the same subnet)");
        self.own = None;
        self.last_subnet = Some(subnet);
        self.renew_at = None;
        self.reacquire_at = Some(Instant::now());
        self.cfg.health.update(|h| h.lease_held = false);
        self.publish_facts();
    }

    pub(super) async fn reacquire(&mut self) {
        self.reacquire_at = None;
        let attrs = self.attrs();
        let want = self.want(&attrs);
        match acquire_once(&self.registry, &want).await {
            Ok(a) => {
                self.set_etcd_ok(true);
                let old = self.last_subnet;
                self.take_lease(a);
                let new = self.own.as_ref().map(OwnLease::subnet);
                if old != new {
                    error!(
                        old = ?old.map(|s| s.to_string()),
                        new = ?new.map(|s| s.to_string()),
                        "own subnet changed: local pods keep old addresses until recreated"
                    );
                    if let Err(e) = self.ensure_device().await {
                        error!(error = %e, "cannot move the device to the new subnet");
                    }
                    let firewall = match self.start_firewall() {
                        Some(task) => self.finish_firewall(task.await),
                        None => Ok(()),
                    };
                    if let Err(e) = firewall {
                        error!(error = %e, "cannot update firewall rules for the new subnet");
                    }
                    if let Err(e) = self.write_subnet_file() {
                        error!(error = %e, "cannot rewrite the subnet file");
                    }
                    // Records at our old subnet were ignored as our own; re-list so whoever
                    // holds it now becomes a peer (the snapshot also reconciles).
                    match self.registry.list(&self.dir).await {
                        Ok((records, revision)) => self.on_snapshot(&records, revision).await,
                        Err(e) => {
                            self.etcd_error("re-list after moving subnets", &e);
                            self.reconcile().await;
                        }
                    }
                }
            }
            Err(e) => {
                match &e {
                    AcquireError::Registry(r) => self.etcd_error("lease re-acquisition", r),
                    AcquireError::LostRace(_) => {}
                    other => error!(error = %other, "cannot re-acquire a subnet lease"),
                }
                let delay = if matches!(e, AcquireError::LostRace(_)) {
                    Duration::ZERO
                } else {
                    let d = self.reacquire_backoff;
                    self.reacquire_backoff = (d * 2).min(Duration::from_secs(30));
                    d
                };
                self.reacquire_at = Some(Instant::now() + delay);
            }
        }
    }
}
