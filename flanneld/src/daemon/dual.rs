//! The IPv6 side of a dual-stack node. VXLAN (docs/flannel.md §8.1–8.5): the `flannel-v6.<VNI>`
//! device and, per peer lease with an IPv6 part, its neighbour, FDB entry and route on it.
//! host-gw (docs/flannel.md §4.2; upstream `pkg/backend/hostgw/hostgw.go`): per peer lease with
//! an IPv6 part the plain route `S6 via PublicIPv6`, when that address is on-link on the
//! external interface (else reported like an IPv4 peer off the L2 segment).
//!
//! Peers are keyed by their lease's IPv4 subnet (the lease identity, as in `desired`), so a
//! lease that loses or gains its IPv6 part, or goes, is followed from the same changes as the
//! IPv4 side. A lease whose IPv6 part is missing or malformed has no IPv6 peer
//! (`peers::RemotePeer::ipv6` is `None`): its IPv4 side is programmed as before. The IPv6 ops
//! go through the same `Dataplane::apply` (each op reaches the device of its family) and are
//! checked by the same ownership rule, over the IPv6 network and leases.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::{IpNetwork, Ipv6Network};
use tracing::info;
use weft_dataplane::lookup::RouteLookup;
use weft_dataplane::own::Ownership;
use weft_dataplane::plan::{plan_add, plan_reconcile, plan_remove, Peer, Reconcile};
use weft_dataplane::{Dataplane, KernelState, NetOp, VxlanSpec};

use crate::network::BackendKind;
use crate::peers::RemotePeer;
use crate::registry::Registry;

use super::{Daemon, DaemonError, VXLAN_OVERHEAD_V6};

impl<R: Registry, D: Dataplane> Daemon<R, D> {
    /// Dual-stack VXLAN: `EnableIPv6` with the vxlan backend (IPv6-only is refused with the
    /// config, `network::parse_config`).
    pub(super) fn dual_stack(&self) -> bool {
        self.spec.ipv6.is_some() && self.spec.backend_type == BackendKind::Vxlan
    }

    /// `flannel-v6.<VNI>` for our IPv6 subnet `subnet`: local `PublicIPv6`, MTU underlay − 70
    /// unless configured (§8.4), address `<subnet network>/128`.
    fn vxlan_spec_v6(&self, subnet: Ipv6Network) -> Option<VxlanSpec> {
        let (v6, local) = (self.spec.ipv6.as_ref()?, self.cfg.public_ipv6?);
        let b = &self.spec.backend;
        let underlay = b.mtu.unwrap_or(self.cfg.underlay_mtu);
        Some(VxlanSpec {
            name: format!("flannel-v6.{}", b.vni),
            vni: b.vni,
            port: b.port,
            gbp: b.gbp,
            learning: b.learning,
            local: local.into(),
            underlay_index: self.cfg.underlay_index,
            mtu: underlay.saturating_sub(VXLAN_OVERHEAD_V6),
            address: Ipv6Network::new(subnet.network(), 128).unwrap_or(subnet).into(),
            network: v6.network.into(),
        })
    }

    /// Creates or adopts `flannel-v6.<VNI>` for our IPv6 subnet (after the IPv4 device), with
    /// the MAC published in `BackendV6Data` (`Daemon::ensure_vxlan`).
    pub(super) async fn ensure_device_v6(&mut self) -> Result<(), DaemonError> {
        if !self.dual_stack() {
            return Ok(());
        }
        let subnet = self.own.as_ref().and_then(|o| o.key.ipv6).or(self.last_subnet_v6);
        let Some(spec) = subnet.and_then(|s| self.vxlan_spec_v6(s)) else { return Ok(()) };
        let info = self.ensure_vxlan(&spec).await?;
        self.device_v6 = Some(info);
        Ok(())
    }

    /// IPv6 peers are programmed: dual-stack VXLAN, or dual-stack host-gw (`S6 via P6`, no
    /// device; upstream `pkg/backend/hostgw/hostgw.go` `GetV6Route`).
    pub(super) fn ipv6_peers(&self) -> bool {
        self.spec.ipv6.is_some()
    }

    /// Dual-stack host-gw.
    pub(super) fn host_gw_v6(&self) -> bool {
        self.spec.ipv6.is_some() && self.spec.backend_type == BackendKind::HostGw
    }

    /// Whether the PublicIPv6 of `p` is on-link according to `routes` (a dump with the IPv6
    /// routes): with host-gw on the external interface, with DirectRouting on any; `None`
    /// without them or without an IPv6 side.
    pub(super) fn onlink_v6(&self, p: &RemotePeer, routes: Option<&RouteLookup>) -> Option<bool> {
        let ip = IpAddr::V6(p.ipv6.as_ref()?.public_ipv6);
        if self.host_gw_v6() {
            return routes.map(|r| r.is_onlink_on(ip, self.cfg.underlay_index));
        }
        routes.map(|r| r.is_onlink(ip))
    }

    /// Records the IPv6 peer of the lease `p` and returns the ops that program it (or remove
    /// what its lease had before, when its IPv6 part went). `onlink`: whether its PublicIPv6
    /// is on-link (`None`: unknown). VXLAN: with DirectRouting an on-link peer gets only a
    /// route `S6 via P6` (upstream `vxlan_network.go` does the same per family), otherwise
    /// VXLAN entries. host-gw: the plain route `S6 via P6`, skipped and remembered as
    /// off-link when `P6` is not on-link on the external interface; when that is unknown it
    /// is tried, as for IPv4. `create_new`: the caller does not read the routes, so a new
    /// peer's route is created exclusively ([`NetOp::CreateRoute`]: a route at its
    /// destination is reported, never overwritten) and a known peer's unchanged route is not
    /// re-added (the reconciliation heals it from a dump); only a changed route is replaced,
    /// after the caller's guard against foreign routes (`plan_guard`).
    pub(super) fn upsert_v6(&mut self, p: &RemotePeer, onlink: Option<bool>, create_new: bool) -> Vec<NetOp> {
        let key = p.subnet();
        let v6 = p.ipv6.as_ref().filter(|_| self.ipv6_peers());
        let host_gw = self.host_gw_v6();
        let new = v6.and_then(|v6| {
            let public_ip = v6.public_ipv6.into();
            self.held_v6.insert((v6.subnet.into(), public_ip));
            if host_gw && onlink == Some(false) {
                self.off_link_v6.insert(key, (v6.subnet.into(), public_ip));
                return None;
            }
            self.off_link_v6.remove(&key);
            let direct = host_gw || (self.spec.backend.direct_routing && onlink == Some(true));
            Some(Peer { subnet: v6.subnet.into(), public_ip, vtep_mac: v6.vtep_mac, direct })
        });
        if v6.is_none() {
            self.off_link_v6.remove(&key);
        }
        let old = self.desired_v6.get(&key);
        let ops = match (&new, old) {
            (Some(n), None) if create_new => plan_add(None, n).into_iter().map(exclusive).collect(),
            (Some(n), Some(old)) if create_new && old.route() == n.route() => {
                let unchanged = n.route();
                plan_add(Some(old), n).into_iter().filter(|op| *op != unchanged).collect()
            }
            (Some(n), old) => plan_add(old, n),
            (None, Some(old)) => plan_remove(old),
            (None, None) => Vec::new(),
        };
        match new {
            // Logged by the caller for a lease event (a listing's peers are not listed).
            Some(n) => {
                self.desired_v6.insert(key, n);
            }
            None => {
                if let Some(old) = self.desired_v6.remove(&key) {
                    info!(subnet = %old.subnet, "IPv6 side of a peer lease gone or not routed");
                }
            }
        }
        ops
    }

    /// The ops that remove the IPv6 peer of the lease with IPv4 subnet `key`.
    pub(super) fn remove_v6(&mut self, key: &ipnetwork::Ipv4Network) -> Vec<NetOp> {
        self.off_link_v6.remove(key);
        match self.desired_v6.remove(key) {
            Some(old) => {
                info!(subnet = %old.subnet, public_ip = %old.public_ip, "IPv6 peer removed");
                plan_remove(&old)
            }
            None => Vec::new(),
        }
    }

    /// What flanneld may change on the IPv6 side: `IPv6Network`, `IPv6SubnetLen`, the IPv6
    /// parts of the leases seen.
    pub(super) fn ownership_v6(&self) -> Option<Ownership> {
        let v6 = self.spec.ipv6.as_ref()?;
        Some(Ownership {
            network: IpNetwork::V6(v6.network),
            subnet_len: v6.subnet_len,
            leases: self.held_v6.clone(),
            // host-gw's IPv6 routes have DirectRouting's shape: `S6 via P6`.
            direct: self.host_gw_v6() || self.spec.backend.direct_routing || self.direct_cleanup,
        })
    }

    /// The IPv6 reconciliation against `actual` (a full dump), `None` without dual stack or
    /// (VXLAN) before the device exists.
    pub(super) fn reconcile_v6(&self, actual: &KernelState) -> Option<Reconcile> {
        if !self.host_gw_v6() && (!self.dual_stack() || self.device_v6.is_none()) {
            return None;
        }
        let owner = self.ownership_v6()?;
        let desired: Vec<Peer> = self.desired_v6.values().cloned().collect();
        Some(plan_reconcile(&desired, &actual.family(true), &owner))
    }

    /// Forgets removed IPv6 leases no route of ours may still point at (after a clean pass).
    pub(super) fn forget_held_v6(&mut self, actual: &KernelState) {
        // A set: this runs after every clean reconciliation, and a list made it quadratic
        // (~12 ms at 5,000 dual-stack peers).
        let wanted: BTreeSet<(IpNetwork, IpAddr)> =
            self.desired_v6.values().map(|p| (p.subnet, p.public_ip)).collect();
        self.held_v6.retain(|(s, ip)| {
            wanted.contains(&(*s, *ip))
                || actual
                    .routes
                    .iter()
                    .any(|r| r.dst.network() == s.network() && r.dst.prefix() == s.prefix())
        });
    }

    /// IPv6 peers whose entries are all programmed (as far as the last plan knows).
    pub(super) fn programmed_v6(&self) -> usize {
        let blocked = self.conflicts.keys().filter(|d| d.is_ipv6()).count();
        self.desired_v6.len().saturating_sub(blocked)
    }
}

/// `op` with a route add made exclusive: [`NetOp::CreateRoute`] never overwrites a route at
/// its destination (the kernel reports EEXIST, and the caller reconciles from a dump).
pub(super) fn exclusive(op: NetOp) -> NetOp {
    match op {
        NetOp::AddRoute { dst, gw, onlink } => NetOp::CreateRoute { dst, gw, onlink },
        other => other,
    }
}

/// Where the IPv6 device's VTEP MAC is persisted: next to the IPv4 one, `<mac file>-v6`.
pub(super) fn mac_file_v6(mac_file: &std::path::Path) -> std::path::PathBuf {
    let mut name = mac_file.as_os_str().to_os_string();
    name.push("-v6");
    std::path::PathBuf::from(name)
}
