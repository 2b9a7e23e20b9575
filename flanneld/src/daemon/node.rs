//! The local node: the VXLAN device (created or adopted, re-checked) or, with host-gw, none
//! (a stale one of a vxlan run deleted), the firewall rules and subnet.env.

use ipnetwork::Ipv4Network;
use tokio::task::{JoinError, JoinHandle};
use tracing::{error, info, warn};
use weft_dataplane::firewall::{
    apply_rules, check_drift, FirewallError, FirewallMode, FlannelRules, Ipv6Side,
};
use weft_dataplane::view::{DeviceSpecView, LeaseView};
use weft_dataplane::{Dataplane, DeviceInfo, VxlanSpec};

use crate::acquire::OwnLease;
use crate::lease::{format_mac, LeaseAttrs};
use crate::network::BackendKind;
use crate::registry::Registry;
use crate::state;

use super::{Daemon, DaemonError, BR_NETFILTER, VXLAN_OVERHEAD};

impl<R: Registry, D: Dataplane> Daemon<R, D> {
    pub(super) fn vxlan_spec(&self, subnet: Ipv4Network) -> VxlanSpec {
        let b = &self.spec.backend;
        let underlay = b.mtu.unwrap_or(self.cfg.underlay_mtu);
        VxlanSpec {
            name: format!("flannel.{}", b.vni),
            vni: b.vni,
            port: b.port,
            gbp: b.gbp,
            learning: b.learning,
            local: self.cfg.public_ip.into(),
            underlay_index: self.cfg.underlay_index,
            mtu: underlay.saturating_sub(VXLAN_OVERHEAD),
            address: Ipv4Network::new(subnet.network(), 32).unwrap_or(subnet).into(),
            network: self.spec.network.into(),
        }
    }

    /// Creates or adopts the device for our current subnet. If it came up with another MAC
    /// than the one we published, the lease is republished with the real one. With host-gw:
    /// [`Daemon::ensure_no_device`].
    pub(super) async fn ensure_device(&mut self) -> Result<(), DaemonError> {
        if self.spec.backend_type == BackendKind::HostGw {
            return self.ensure_no_device().await;
        }
        let Some(subnet) = self.own.as_ref().map(OwnLease::subnet).or(self.last_subnet) else {
            return Ok(());
        };
        let spec = self.vxlan_spec(subnet);
        let info = self.ensure_vxlan(&spec).await?;
        self.device = Some(info);
        self.publish_facts();
        self.ensure_device_v6().await
    }

    /// Creates or adopts the device of `spec` (`flannel.<VNI>`, or `flannel-v6.<VNI>` for an
    /// IPv6 spec) with the MAC published for it. If it came up with another MAC, that one is
    /// persisted and the lease republished with it.
    pub(super) async fn ensure_vxlan(&mut self, spec: &VxlanSpec) -> Result<DeviceInfo, DaemonError> {
        let v6 = spec.is_v6();
        let published = if v6 { self.mac_v6 } else { self.mac };
        let info = match self.dp.ensure_device(spec, Some(published)).await {
            Ok(i) => i,
            Err(source) => {
                self.cfg.metrics.netlink_errors.inc();
                return Err(DaemonError::Device { name: spec.name.clone(), source });
            }
        };
        let old = if v6 { &self.device_v6 } else { &self.device };
        if old.as_ref().is_some_and(|old| old.index != info.index) {
            warn!(device = %spec.name, "VXLAN device was recreated, replaying all peers");
        }
        if info.mac != published {
            warn!(
                device = %spec.name,
                published = %crate::lease::format_mac(&published),
                actual = %crate::lease::format_mac(&info.mac),
                "VXLAN device has another MAC than published, republishing the lease"
            );
            let path =
                if v6 { super::dual::mac_file_v6(&self.cfg.mac_file) } else { self.cfg.mac_file.clone() };
            if v6 {
                self.mac_v6 = info.mac;
            } else {
                self.mac = info.mac;
            }
            if let Err(e) = state::save_mac(&path, &info.mac) {
                warn!(path = %path.display(), error = %e, "cannot persist VTEP MAC");
            }
            self.republish().await;
        }
        Ok(info)
    }

    /// host-gw has no device. A `flannel.<N>` VXLAN device left by a vxlan run (a cluster
    /// switched backends) is deleted with its neighbours, FDB entries and routes: upstream
    /// leaves it behind, stale and unused. Then the PublicIP must be the external interface's
    /// own address, as upstream requires (no NAT).
    async fn ensure_no_device(&mut self) -> Result<(), DaemonError> {
        let removed = match self.dp.ensure_no_device(self.cfg.underlay_index).await {
            Ok(r) => r,
            Err(source) => {
                self.cfg.metrics.netlink_errors.inc();
                return Err(DaemonError::Device { name: "(host-gw: none)".into(), source });
            }
        };
        for name in removed {
            warn!(device = %name, "deleted the VXLAN device of a previous vxlan run: the backend is host-gw");
        }
        let routes = self.dp.dump_routes().await.map_err(|e| {
            self.cfg.metrics.netlink_errors.inc();
            DaemonError::HostGwRoutes(e)
        })?;
        if !routes.is_local_on(self.cfg.public_ip, self.cfg.underlay_index) {
            return Err(DaemonError::HostGwNat { public_ip: self.cfg.public_ip });
        }
        if self.device.is_none() {
            info!(
                underlay = self.cfg.underlay_index,
                mtu = self.cfg.underlay_mtu,
                "host-gw: no device, peer routes via the external interface"
            );
        }
        self.device = Some(DeviceInfo { index: 0, mac: [0; 6], mtu: self.cfg.underlay_mtu });
        self.publish_facts();
        Ok(())
    }

    /// The MTU pods get (subnet.env): the device's with VXLAN; with host-gw the external
    /// interface's, no overhead (upstream `pkg/backend/hostgw/hostgw.go`, docs/flannel.md §4.2).
    pub(super) fn pod_mtu(&self) -> u32 {
        match self.spec.backend_type {
            // With IPv6 the MTU that fits both families: an IPv6 underlay costs 70 bytes
            // (docs/flannel.md §8.4, §15).
            BackendKind::Vxlan => {
                let underlay = self.spec.backend.mtu.unwrap_or(self.cfg.underlay_mtu);
                state::subnet_env_mtu(underlay, self.spec.ipv6.is_some())
            }
            BackendKind::HostGw => self.cfg.underlay_mtu,
        }
    }

    /// Publishes what the daemon holds for `/debug/dataplane`: the config as it applies to
    /// this node, the device it wants and the own lease exactly as written to etcd.
    pub(super) fn publish_facts(&self) {
        let subnet = self.own.as_ref().map(OwnLease::subnet).or(self.last_subnet);
        let vxlan = self.spec.backend_type == BackendKind::Vxlan;
        let expected = subnet.filter(|_| vxlan).and_then(|s| DeviceSpecView::of(&self.vxlan_spec(s)));
        let lease = self.own.as_ref().map(|o| {
            let written = LeaseAttrs::parse(&o.value).ok();
            let data = written.as_ref().and_then(|a| a.vxlan_data().ok());
            LeaseView {
                key: o.path.clone(),
                subnet: o.subnet(),
                public_ip: written.as_ref().map_or(self.cfg.public_ip, |a| a.public_ip),
                // host-gw publishes no BackendData: no MAC, no VNI.
                vtep_mac: if vxlan {
                    format_mac(&data.as_ref().map_or(self.mac, |d| d.vtep_mac))
                } else {
                    String::new()
                },
                vni: if vxlan { data.as_ref().map_or(self.spec.backend.vni, |d| d.vni) } else { 0 },
                etcd_revision: o.revision,
                etcd_lease: o.etcd_lease,
            }
        });
        self.cfg.health.update_facts(|f| {
            f.public_ip = Some(self.cfg.public_ip);
            f.underlay_index = Some(self.cfg.underlay_index);
            f.subnet_file = Some(self.cfg.subnet_file.clone());
            f.network = Some(self.spec.network);
            f.direct_routing = self.spec.backend.direct_routing;
            f.public_ipv6 = self.cfg.public_ipv6.filter(|_| self.ipv6_peers());
            f.network_v6 = self.spec.ipv6.as_ref().map(|v6| v6.network).filter(|_| self.ipv6_peers());
            f.expected_device = expected;
            f.lease = lease;
        });
    }

    pub(super) fn firewall_rules(&self) -> Option<FlannelRules> {
        let fw = self.cfg.firewall.as_ref()?;
        let subnet = self.own.as_ref().map(OwnLease::subnet).or(self.last_subnet)?;
        // The IPv6 side (docs/flannel.md §9.1, §9.4) needs both the config's IPv6Network and
        // an IPv6 subnet of the same lease the IPv4 subnet comes from.
        let subnet_v6 = match &self.own {
            Some(own) => own.key.ipv6,
            None => self.last_subnet_v6,
        };
        let ipv6 = self
            .spec
            .ipv6
            .as_ref()
            .zip(subnet_v6)
            .map(|(v6, subnet)| Ipv6Side { network: v6.network, subnet });
        Some(FlannelRules {
            network: self.spec.network,
            subnet,
            ip_masq: self.cfg.ip_masq,
            forward: fw.forward,
            fully_random: fw.fully_random,
            mode: if self.spec.enable_nftables { FirewallMode::Nftables } else { FirewallMode::Iptables },
            ipv6,
        })
    }

    /// Starts installing the firewall rules (`-ip-masq`, `-iptables-forward-rules`) on a
    /// blocking thread (the tools are child processes); [`Daemon::finish_firewall`] takes its
    /// outcome. `None`: no rules to install.
    pub(super) fn start_firewall(&self) -> Option<JoinHandle<Result<(), FirewallError>>> {
        let rules = self.firewall_rules()?;
        if rules.mode == FirewallMode::Iptables && !std::path::Path::new(BR_NETFILTER).exists() {
            // Upstream refuses to start here (§2 step 4); bridged pod traffic would bypass
            // iptables. We only warn: the overlay itself does not depend on it.
            warn!(path = BR_NETFILTER, "br_netfilter is not loaded; bridged traffic bypasses iptables");
        }
        Some(tokio::task::spawn_blocking(move || apply_rules(&rules)))
    }

    /// The outcome of the rules [`Daemon::start_firewall`] installed; their failure is fatal
    /// at start, as upstream's.
    pub(super) fn finish_firewall(
        &self,
        done: Result<Result<(), FirewallError>, JoinError>,
    ) -> Result<(), DaemonError> {
        done.map_err(DaemonError::FirewallTask)?.map_err(DaemonError::Firewall)?;
        info!("firewall rules installed");
        Ok(())
    }

    /// Writes subnet.env and says so: `/readyz`, the log, systemd's `READY=1`.
    pub(super) fn become_ready(&self) -> Result<(), DaemonError> {
        self.write_subnet_file()?;
        self.cfg.health.update(|h| h.ready = true);
        info!("flanneld is ready");
        if let Err(e) = crate::sdnotify::notify("READY=1") {
            warn!(error = %e, "systemd notification failed");
        }
        Ok(())
    }

    /// Re-installs the rules when some are missing or changed.
    pub(super) async fn check_firewall(&self) {
        let Some(rules) = self.firewall_rules() else { return };
        let check = tokio::task::spawn_blocking(move || match check_drift(&rules) {
            Ok(false) => Ok(false),
            Ok(true) => apply_rules(&rules).map(|()| true),
            Err(e) => Err(e),
        })
        .await;
        match check {
            Ok(Ok(true)) => warn!("firewall rules had drifted, re-installed"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => error!(error = %e, "firewall check failed"),
            Err(e) => error!(error = %e, "firewall check task failed"),
        }
    }

    /// `--ip-blackhole-route`: the own subnet's blackhole route, added when missing (§8.9).
    /// With the bridge plugin's `cni0` route for the same prefix the kernel refuses it (EEXIST),
    /// as it does upstream's; that is logged once, not every period.
    pub(super) async fn ensure_blackhole(&mut self) {
        let Some(own) = &self.own else { return };
        let subnet = own.subnet();
        match self.dp.ensure_blackhole(subnet).await {
            Ok(added) => {
                if added {
                    info!(subnet = %subnet, "added blackhole route for the own subnet");
                }
                self.blackhole_failing = None;
            }
            Err(e) => {
                let msg = e.to_string();
                if self.blackhole_failing.as_deref() != Some(msg.as_str()) {
                    error!(subnet = %subnet, error = %msg, "failed to set up blackhole route");
                    self.blackhole_failing = Some(msg);
                }
            }
        }
    }

    pub(super) fn write_subnet_file(&self) -> Result<(), DaemonError> {
        let Some(own) = &self.own else { return Ok(()) };
        let mtu = self.pod_mtu();
        let text = state::render_subnet_env(&self.spec, &own.key, mtu, self.cfg.ip_masq);
        state::write_subnet_env(&self.cfg.subnet_file, &text)
            .map_err(|source| DaemonError::File { path: self.cfg.subnet_file.clone(), source })
    }

    /// Whether a VXLAN device is down or gone (`ip link set flannel.1 down`: the kernel then
    /// drops its IPv6 address and routes, and without peers no op fails to show it), so the
    /// device check runs now and sets it up (docs/flannel.md §8.1–8.3: created or adopted,
    /// then up). A failed look is counted and logged, and left to the regular check.
    pub(super) async fn device_down(&mut self) -> bool {
        match self.dp.devices_up().await {
            Ok(true) => false,
            Ok(false) => {
                warn!("a VXLAN device is down or gone, bringing it up");
                true
            }
            Err(e) => {
                self.cfg.metrics.netlink_errors.inc();
                error!(error = %e, "reading the VXLAN devices failed");
                false
            }
        }
    }

    pub(super) async fn check_device(&mut self) {
        self.device_suspect = false;
        if let Err(e) = self.ensure_device().await {
            error!(error = %e, "device check failed");
        }
    }
}
