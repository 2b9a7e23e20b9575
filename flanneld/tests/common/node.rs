//! The daemon fixture: one node's state directory, registry, fake kernel and config, the
//! daemon started on them, and readers of the fake kernel in the daemon's terms.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::IpNetwork;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weft_dataplane::fake::{test_spec, SharedFake};
use weft_dataplane::{DeviceInfo, KernelRoute, Mac, VxlanSpec, RTN_UNICAST, RTPROT_BOOT, RT_TABLE_MAIN};
use weft_flanneld::daemon::{self, DaemonConfig, DaemonError};
use weft_flanneld::health::Health;
use weft_flanneld::metrics::Metrics;
use weft_flanneld::registry::memory::MemoryRegistry;
use weft_flanneld::registry::Registry;

use super::upstream_value;

pub const PREFIX: &str = "/coreos.com/network";
/// The network config of most tests: `10.5.0.0/16`, VXLAN with upstream's defaults.
pub const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
/// The node's public address.
pub const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The node's public IPv6 address (dual stack; the benchmarking range).
pub const ME6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
/// A dual-stack network config: [`CONFIG`] plus `fd00:5::/48` (lease size /64).
pub const DUAL_CONFIG: &str =
    r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;
/// The underlay device's ifindex (`eth0`).
pub const UNDERLAY: u32 = 2;

/// `<prefix>/subnets/<name>`.
pub fn key(name: &str) -> String {
    format!("{PREFIX}/subnets/{name}")
}

/// The subnet file a node starts with unless a test writes its own: the previous subnets
/// `10.5.240.0/24` and `fd00:5:0:f0::/64`, taken again when free (docs/flannel.md §5.2). Without
/// it the node picks one of the first 100 free subnets at random, where the tests' peers live.
pub const OWN_SUBNET_ENV: &str = "FLANNEL_SUBNET=10.5.240.1/24\nFLANNEL_IPV6_SUBNET=fd00:5:0:f0::1/64\n";

/// The daemon's config for a node at `public_ip` keeping its files in `dir`: no firewall
/// (never touch the host's), a 30 s reconcile period, no blackhole route. Unless `dir` already
/// has a subnet file, it gets [`OWN_SUBNET_ENV`]: the node never takes a random subnet that a
/// peer lease the test publishes later could land on (that lease would be the node's own, lost
/// to another node, not a peer). Keep `dir` for the node's life.
pub fn daemon_config(dir: &Path, public_ip: Ipv4Addr) -> DaemonConfig {
    let subnet_file = dir.join("subnet.env");
    if !subnet_file.exists() {
        std::fs::write(&subnet_file, OWN_SUBNET_ENV).unwrap();
    }
    DaemonConfig {
        etcd_prefix: PREFIX.into(),
        public_ip,
        public_ipv6: None,
        underlay_index: UNDERLAY,
        underlay_mtu: 1500,
        subnet_file,
        mac_file: dir.join("weft-vtep-mac"),
        renew_margin: Duration::from_secs(3600),
        ip_masq: false,
        reconcile_interval: Duration::from_secs(30),
        health: Health::new(),
        metrics: Arc::new(Metrics::new()),
        firewall: None,
        blackhole_every: None,
    }
}

/// A daemon running as a local task (inside a `LocalSet`).
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<Result<(), DaemonError>>,
}

impl Running {
    /// Asks the daemon to stop and expects a clean exit.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.handle.await.unwrap().unwrap();
    }
}

/// Starts `daemon::run` on `reg` and `dp` (a local task: call inside a `LocalSet`).
pub fn start<R: Registry>(cfg: DaemonConfig, reg: R, dp: SharedFake) -> Running {
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::task::spawn_local(daemon::run(cfg, reg, dp, async {
        let _ = rx.await;
    }));
    Running { stop: Some(tx), handle }
}

/// One node: its state directory, a memory registry holding the network config, a fake
/// kernel and the daemon config. Clones of `reg`, `dp` and `cfg` share their state.
pub struct Node {
    pub dir: TempDir,
    pub reg: MemoryRegistry,
    pub dp: SharedFake,
    pub cfg: DaemonConfig,
}

impl Node {
    /// A node with [`CONFIG`] in the registry.
    pub fn new() -> Node {
        Node::with_network_config(CONFIG.as_bytes())
    }

    /// A node with `config` as the registry's network config.
    pub fn with_network_config(config: &[u8]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let reg = MemoryRegistry::new();
        reg.put_raw(&format!("{PREFIX}/config"), config, 0);
        let cfg = daemon_config(dir.path(), ME);
        Node { dir, reg, dp: SharedFake::new(), cfg }
    }

    pub fn health(&self) -> Arc<Health> {
        self.cfg.health.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.cfg.metrics.clone()
    }

    /// A dual-stack node: [`DUAL_CONFIG`] in the registry, `PublicIPv6` [`ME6`].
    pub fn dual() -> Node {
        let mut node = Node::with_network_config(DUAL_CONFIG.as_bytes());
        node.cfg.public_ipv6 = Some(ME6);
        node
    }

    /// Publishes a dual-stack peer's lease (key form, `10.5.7.0-24&fd00:5:0:7::-64`) with the
    /// bytes an upstream dual-stack node writes (docs/flannel.md §4.2).
    pub fn put_dual_peer(&self, name: &str, public_ip: &str, mac: &str, public_ipv6: &str, mac6: &str) {
        let value = format!(
            r#"{{"PublicIP":"{public_ip}","PublicIPv6":"{public_ipv6}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}},"BackendV6Data":{{"VNI":1,"VtepMAC":"{mac6}"}}}}"#
        );
        self.reg.put_raw(&key(name), value.as_bytes(), 0);
    }

    /// Publishes a peer's lease `<subnet>` (key form, `10.5.7.0-24`) as upstream writes it.
    pub fn put_peer(&self, subnet: &str, public_ip: &str, mac: &str) {
        self.reg.put_raw(&key(subnet), upstream_value(public_ip, mac).as_bytes(), 0);
    }

    /// Starts the daemon on this node's registry, fake kernel and config.
    pub fn start(&self) -> Running {
        start(self.cfg.clone(), self.reg.clone(), self.dp.clone())
    }

    /// Puts `flannel.1` in the kernel as a previous run left it (for `subnet`, with `mac`), to
    /// be adopted; returns its ifindex.
    pub fn preexisting_device(&self, subnet: &str, mac: Mac) -> u32 {
        let spec = VxlanSpec { local: ME.into(), address: subnet.parse().unwrap(), ..test_spec(UNDERLAY) };
        self.dp.with(|k| {
            let index = weft_dataplane::fake::FAKE_DEVICE_INDEX + k.created;
            k.created += 1;
            k.device = Some((spec, DeviceInfo { index, mac, mtu: 1450 }));
            index
        })
    }
}

/// The fake kernel read in the daemon's terms.
pub trait Kernel {
    /// Routes of flanneld's shape (main table, proto boot, unicast, metric 0, with a
    /// gateway) as `destination → gateway`.
    fn routes(&self) -> BTreeMap<String, String>;
    /// The route of flanneld's shape to `dst`: `(gateway, onlink)`.
    fn route(&self, dst: &str) -> Option<(IpAddr, bool)>;
    /// Removes the main-table routes to `dst` (an operator's `ip route del`).
    fn del_route(&self, dst: &str);
    /// The neighbour of `ip` on the VXLAN device.
    fn neigh(&self, ip: &str) -> Option<Mac>;
    /// Whether the VXLAN device has the FDB entry `mac → dst`.
    fn has_fdb(&self, mac: Mac, dst: &str) -> bool;
    /// The device (spec and info), if any.
    fn device(&self) -> Option<(VxlanSpec, DeviceInfo)>;
    /// The `flannel-v6` device (spec and info), if any.
    fn device_v6(&self) -> Option<(VxlanSpec, DeviceInfo)>;
    /// On `flannel-v6`: the gateway of the route of flanneld's IPv6 shape (onlink, metric
    /// 1024) to `dst`.
    fn route6(&self, dst: &str) -> Option<IpAddr>;
    /// On `flannel-v6`: the MAC of the neighbour `ip`.
    fn neigh6(&self, ip: &str) -> Option<Mac>;
    /// On `flannel-v6`: the FDB entries (MAC, destination).
    fn fdb6(&self) -> Vec<(Mac, IpAddr)>;
}

fn flanneld_shaped(r: &KernelRoute) -> bool {
    r.table == RT_TABLE_MAIN
        && r.protocol == RTPROT_BOOT
        && r.kind == RTN_UNICAST
        && r.metric == 0
        && r.gw.is_some()
}

fn device_index(k: &weft_dataplane::fake::FakeDataplane) -> Option<u32> {
    k.device.as_ref().map(|(_, i)| i.index)
}

impl Kernel for SharedFake {
    fn routes(&self) -> BTreeMap<String, String> {
        self.with(|k| {
            k.routes
                .iter()
                .filter(|r| flanneld_shaped(r))
                .filter_map(|r| Some((r.dst.to_string(), r.gw?.to_string())))
                .collect()
        })
    }

    fn route(&self, dst: &str) -> Option<(IpAddr, bool)> {
        let dst: IpNetwork = dst.parse().unwrap();
        self.with(|k| {
            k.routes
                .iter()
                .filter(|r| flanneld_shaped(r) && r.dst == dst)
                .find_map(|r| Some((r.gw?, r.onlink)))
        })
    }

    fn del_route(&self, dst: &str) {
        let dst: IpNetwork = dst.parse().unwrap();
        self.with(|k| k.routes.retain(|r| !(r.table == RT_TABLE_MAIN && r.dst == dst)));
    }

    fn neigh(&self, ip: &str) -> Option<Mac> {
        let ip: IpAddr = ip.parse().unwrap();
        self.with(|k| {
            let dev = device_index(k)?;
            k.neighs.iter().find(|n| n.ifindex == dev && n.ip == ip).map(|n| n.mac)
        })
    }

    fn has_fdb(&self, mac: Mac, dst: &str) -> bool {
        let dst: IpAddr = dst.parse().unwrap();
        self.with(|k| {
            let dev = device_index(k);
            k.fdb.iter().any(|e| Some(e.ifindex) == dev && e.mac == mac && e.dst == dst)
        })
    }

    fn device(&self) -> Option<(VxlanSpec, DeviceInfo)> {
        self.with(|k| k.device.clone())
    }

    fn device_v6(&self) -> Option<(VxlanSpec, DeviceInfo)> {
        self.with(|k| k.device_v6.clone())
    }

    fn route6(&self, dst: &str) -> Option<IpAddr> {
        let dst: IpNetwork = dst.parse().unwrap();
        self.with(|k| {
            let dev = k.device_v6.as_ref()?.1.index;
            let made =
                |r: &&KernelRoute| r.gw.is_some_and(|gw| KernelRoute::made(dst, gw, true, Some(dev)) == **r);
            k.routes.iter().find(made).and_then(|r| r.gw)
        })
    }

    fn neigh6(&self, ip: &str) -> Option<Mac> {
        let ip: IpAddr = ip.parse().unwrap();
        self.with(|k| {
            let dev = k.device_v6.as_ref()?.1.index;
            k.neighs.iter().find(|n| n.ifindex == dev && n.ip == ip).map(|n| n.mac)
        })
    }

    fn fdb6(&self) -> Vec<(Mac, IpAddr)> {
        self.with(|k| {
            let dev = k.device_v6.as_ref().map(|d| d.1.index);
            k.fdb.iter().filter(|e| Some(e.ifindex) == dev).map(|e| (e.mac, e.dst)).collect()
        })
    }
}
