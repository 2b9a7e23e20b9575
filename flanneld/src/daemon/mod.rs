//! The daemon: one loop owns all state (network config, own lease, peer set, what the kernel
//! should hold); the watch task only sends it messages (docs/flannel.md §2, §5, §6, §8).
//!
//! Startup: config (retried every second), VTEP MAC (persisted), lease, device, subnet.env,
//! then the loop. Decide, then do: lease records → [`PeerSet`] changes (pure) →
//! `weft_dataplane::plan` ops (pure) → `Dataplane::apply` in batches. A periodic reconciliation
//! (and one after every snapshot) dumps the kernel and corrects drift, changing only what
//! `weft_dataplane::own::Ownership` says flanneld made. Losing the own lease
//! re-acquires it, preferring the same subnet; the daemon never exits for it. etcd outages
//! keep the kernel state as it is.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{error, info};
use weft_dataplane::firewall::FirewallError;
use weft_dataplane::plan::Peer;
use weft_dataplane::{Dataplane, DataplaneError, DeviceInfo, KernelRoute, Mac, NetOp};

use crate::acquire::OwnLease;
use crate::health::Health;
use crate::lease::{config_key, subnets_dir};
use crate::metrics::Metrics;
use crate::network::{parse_config, BackendKind, ConfigError, NetworkSpec};
use crate::peers::PeerSet;
use crate::registry::Registry;
use crate::state;
use crate::watch;

mod dual;
mod mesh;
mod node;
mod own_lease;

/// Kernel ops per `Dataplane::apply` call.
pub const BATCH: usize = 256;
/// Present when br_netfilter is loaded (upstream requires it in iptables mode).
const BR_NETFILTER: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
/// Every how many periodic reconciliations the device itself is re-checked.
pub const DEVICE_CHECK_EVERY: u64 = 10;
/// VXLAN encapsulation overhead subtracted from the underlay MTU (§8.4).
pub const VXLAN_OVERHEAD: u32 = 50;
/// VXLAN encapsulation overhead over an IPv6 underlay: the kernel caps such a device at the
/// lower device's MTU − 70 (§8.4).
pub const VXLAN_OVERHEAD_V6: u32 = 70;

/// Everything the daemon needs that is not etcd or the kernel.
#[derive(Clone)]
pub struct DaemonConfig {
    pub etcd_prefix: String,
    /// Published as `PublicIP` and used as the device's `local`.
    pub public_ip: Ipv4Addr,
    /// Dual stack: published as `PublicIPv6` and used as `flannel-v6`'s `local` (`-public-ipv6`
    /// or the external interface's IPv6 address); `None` when there is none.
    pub public_ipv6: Option<Ipv6Addr>,
    /// The external interface.
    pub underlay_index: u32,
    pub underlay_mtu: u32,
    pub subnet_file: PathBuf,
    /// Where the VTEP MAC is persisted.
    pub mac_file: PathBuf,
    /// Renew this long before the 24 h etcd lease expires.
    pub renew_margin: Duration,
    pub ip_masq: bool,
    /// Period of kernel reconciliation.
    pub reconcile_interval: Duration,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    /// Manage the masquerade/forward rules (§9); `None` leaves the firewall alone (tests).
    pub firewall: Option<FirewallOpts>,
    /// `--ip-blackhole-route`: every this long (`--iptables-resync`; first after one period)
    /// make sure the own subnet has a blackhole route (§8.9). `None`: off.
    pub blackhole_every: Option<Duration>,
}

/// Firewall settings.
#[derive(Debug, Clone)]
pub struct FirewallOpts {
    /// `--iptables-forward-rules`.
    pub forward: bool,
    /// Masquerade with fully random ports: the negation of `--ip-masq-fully-random-disable`.
    pub fully_random: bool,
    /// `--iptables-resync`: period of the drift check.
    pub resync: Duration,
}

/// Fatal startup errors (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("create or adopt VXLAN device {name}")]
    Device {
        name: String,
        #[source]
        source: DataplaneError,
    },
    /// The message includes the tool's (not a `source`: it is also logged on its own).
    #[error("install firewall rules: {0}")]
    Firewall(FirewallError),
    /// host-gw cannot work behind NAT: peers route to our PublicIP as an on-link gateway
    /// (upstream `pkg/backend/hostgw/hostgw.go` refuses the same way).
    #[error("your PublicIP {public_ip} is not an address of the external interface, meaning that probably you're on a NAT, which is not supported by host-gw backend")]
    HostGwNat { public_ip: Ipv4Addr },
    /// Reading the routes for the host-gw NAT check failed.
    #[error("read routes for the host-gw checks")]
    HostGwRoutes(#[source] DataplaneError),
    #[error("firewall task ended: {0}")]
    FirewallTask(tokio::task::JoinError),
    #[error("VTEP MAC task ended: {0}")]
    MacTask(tokio::task::JoinError),
    /// The lease watch task ended on its own, which only a panic in it does: exiting non-zero
    /// lets the supervisor restart flanneld, instead of running on blind to peer changes.
    #[error("the lease watch task ended unexpectedly (a bug; see the panic message above)")]
    WatchEnded,
    /// `EnableIPv6` needs an IPv6 address to publish (upstream exits the same way).
    #[error("EnableIPv6 is true but the external interface has no usable IPv6 address and --public-ipv6 is not set")]
    NoPublicIpv6,
    #[error("write {}", .path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The result of a started blocking task; pending while there is none.
async fn join_started<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, JoinError> {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

/// Runs until `shutdown` completes. Returns an error only for startup failures that upstream
/// also treats as fatal (device, files), and when the lease watch task died
/// ([`DaemonError::WatchEnded`]).
pub async fn run<R: Registry, D: Dataplane>(
    config: DaemonConfig,
    registry: R,
    dataplane: D,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    tokio::pin!(shutdown);
    let started = Instant::now();
    // The VTEP MAC is read, or on a node's first start made and written durably (the file and
    // its directory synced: 1-2 ms here), on a blocking thread: VXLAN waits for it after the
    // network config is read, host-gw (which publishes no MAC; the file keeps the node's MAC
    // for a later switch to VXLAN) after the listing's peers are programmed. A MAC that cannot
    // be persisted ends the start whenever that shows.
    let mac_file = config.mac_file.clone();
    let mut mac_task = Some(tokio::task::spawn_blocking(move || {
        state::load_or_create_mac(&mac_file).map_err(|source| DaemonError::File { path: mac_file, source })
    }));
    let mut mac = None;
    let previous = state::read_previous_subnets(&config.subnet_file);
    if let Some(p) = previous {
        info!(subnet = %p.ipv4, ipv6_subnet = ?p.ipv6.map(|n| n.to_string()), "previous subnet from subnet file");
    }

    let spec = {
        let config_read = load_config(&registry, &config);
        tokio::pin!(config_read);
        loop {
            tokio::select! {
                spec = &mut config_read => break spec,
                done = join_started(&mut mac_task) => {
                    mac_task = None;
                    mac = Some(done.map_err(DaemonError::MacTask)??);
                }
                _ = &mut shutdown => return Ok(()),
            }
        }
    };
    match spec.backend_type {
        BackendKind::Vxlan => {
            info!(network = %spec.network, subnet_len = spec.subnet_len, vni = spec.backend.vni, "network config")
        }
        BackendKind::HostGw => {
            info!(network = %spec.network, subnet_len = spec.subnet_len, backend = "host-gw", "network config")
        }
    }

    // Dual stack, either backend: the PublicIPv6 is published and peers route to it.
    if spec.ipv6.is_some() && config.public_ipv6.is_none() {
        return Err(DaemonError::NoPublicIpv6);
    }
    let dual = spec.ipv6.is_some() && spec.backend_type == BackendKind::Vxlan;
    // The IPv6 device's MAC, published as `BackendV6Data`'s `VtepMAC`, persisted beside the
    // IPv4 one.
    let mac_v6 = if dual {
        let path = dual::mac_file_v6(&config.mac_file);
        state::load_or_create_mac(&path).map_err(|source| DaemonError::File { path, source })?
    } else {
        [0; 6]
    };
    let mac = match (mac, mac_task.take()) {
        (Some(m), _) => m,
        (None, Some(task)) if spec.backend_type == BackendKind::Vxlan => {
            task.await.map_err(DaemonError::MacTask)??
        }
        // host-gw: set when the task is done (below).
        (None, task) => {
            mac_task = task;
            [0; 6]
        }
    };
    let mut d = Daemon {
        dir: subnets_dir(&config.etcd_prefix),
        peers: PeerSet::for_backend(&subnets_dir(&config.etcd_prefix), spec.backend_type),
        cfg: config,
        registry,
        dp: dataplane,
        spec,
        mac,
        mac_v6,
        own: None,
        last_subnet: previous.map(|p| p.ipv4),
        last_subnet_v6: previous.and_then(|p| p.ipv6),
        device: None,
        device_v6: None,
        desired: BTreeMap::new(),
        desired_v6: BTreeMap::new(),
        held_v6: BTreeSet::new(),
        known_keys: BTreeSet::new(),
        started,
        mesh_done: false,
        renew_at: None,
        reacquire_at: None,
        reacquire_backoff: Duration::from_secs(1),
        reconcile_retry: None,
        retry_backoff: Duration::from_secs(1),
        etcd_ok: true,
        until_device_check: DEVICE_CHECK_EVERY,
        failing: BTreeSet::new(),
        device_suspect: false,
        blackhole_failing: None,
        direct_cleanup: false,
        conflicts: BTreeMap::new(),
        routes_in_the_way: false,
        off_link: BTreeMap::new(),
        off_link_v6: BTreeMap::new(),
    };
    // Started with DirectRouting off: the first clean reconciliation also removes the
    // DirectRouting routes a previous run may have made (then never again).
    d.direct_cleanup = !d.spec.backend.direct_routing;

    let acquired = tokio::select! {
        a = d.acquire_until_done() => Some(a),
        _ = &mut shutdown => None,
    };
    let Some(acquired) = acquired else { return Ok(()) };
    let (records, list_revision) = (acquired.records.clone(), acquired.list_revision);
    let watch_from = watch_start(list_revision, acquired.lease.revision);
    d.take_lease(acquired);
    d.ensure_device().await?;
    // The firewall tools run on a thread of their own while the listing's peers are
    // programmed: neither depends on the rules, and starting the tools is most of the
    // firewall's time (with 1,000 peers, about a third of start → full mesh). Ready
    // (subnet.env, `/readyz`, systemd) comes after both: the rules, as upstream's, and the
    // listing's peers (upstream writes subnet.env before programming them), so that a ready
    // node has the mesh it was started with.
    let mut firewall = d.start_firewall();
    let (tx, mut rx) = mpsc::channel(64);
    let watcher = tokio::spawn(watch::follow(d.registry.clone(), d.dir.clone(), watch_from, tx));
    d.on_snapshot(&records, list_revision).await;
    if let Some(task) = mac_task {
        match task.await.map_err(DaemonError::MacTask) {
            Ok(Ok(m)) => d.mac = m,
            Ok(Err(e)) | Err(e) => {
                watcher.abort();
                return Err(e);
            }
        }
    }
    if firewall.is_none() {
        if let Err(e) = d.become_ready() {
            watcher.abort();
            return Err(e);
        }
    }
    let mut next_reconcile = Instant::now() + d.cfg.reconcile_interval;
    let fw_period = d.cfg.firewall.as_ref().map(|f| f.resync.max(Duration::from_secs(1)));
    let mut next_fw = Instant::now() + fw_period.unwrap_or(Duration::from_secs(86_400));
    let blackhole_period = d.cfg.blackhole_every.map(|p| p.max(Duration::from_secs(1)));
    let mut next_blackhole = Instant::now() + blackhole_period.unwrap_or(Duration::from_secs(86_400));
    loop {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let renew_at = d.renew_at.unwrap_or(far);
        let reacquire_at = d.reacquire_at.unwrap_or(far);
        let retry_at = d.reconcile_retry.unwrap_or(far);
        tokio::select! {
            _ = &mut shutdown => break,
            done = join_started(&mut firewall), if firewall.is_some() => {
                firewall = None;
                if let Err(e) = d.finish_firewall(done).and_then(|()| d.become_ready()) {
                    watcher.abort();
                    return Err(e);
                }
            }
            msg = rx.recv() => match msg {
                Some(m) => d.on_watch(m).await,
                None => {
                    error!("lease watch task ended unexpectedly; exiting");
                    return Err(DaemonError::WatchEnded);
                }
            },
            _ = sleep_until(next_reconcile) => {
                next_reconcile = Instant::now() + d.cfg.reconcile_interval;
                d.periodic().await;
            }
            _ = sleep_until(retry_at), if d.reconcile_retry.is_some() => {
                d.reconcile_retry = None;
                // Failures may mean the device is gone (ENODEV): recreate it first.
                if d.device_suspect {
                    d.check_device().await;
                }
                d.reconcile().await;
            }
            _ = sleep_until(next_fw), if fw_period.is_some() && firewall.is_none() => {
                next_fw = Instant::now() + fw_period.unwrap_or_default();
                d.check_firewall().await;
            }
            _ = sleep_until(next_blackhole), if blackhole_period.is_some() => {
                next_blackhole = Instant::now() + blackhole_period.unwrap_or_default();
                d.ensure_blackhole().await;
            }
            _ = sleep_until(renew_at), if d.renew_at.is_some() => d.renew().await,
            _ = sleep_until(reacquire_at), if d.reacquire_at.is_some() => d.reacquire().await,
        }
    }
    watcher.abort();
    info!("shutting down; kernel state, subnet file and lease are left in place");
    Ok(())
}

/// The revision the lease watch follows from (it watches `revision + 1` on): the listing's, or
/// our own write's when that came right after it. etcd serves a watch that starts at a
/// revision it has passed from a catch-up loop that runs every 100 ms, and our own write has
/// passed the listing's; a watch that starts after our write is served at once, so the first
/// new leases after start reach the kernel without that wait. Nothing is skipped but our own
/// write: revisions are cluster-wide, so with nothing in between, no other change happened
/// (a re-listed acquisition's listing is newer than our write: kept).
fn watch_start(list_revision: i64, own_write: i64) -> i64 {
    if own_write == list_revision + 1 {
        own_write
    } else {
        list_revision
    }
}

/// Reads `<prefix>/config` until it is valid, every second (not fatal, §1.4). Each distinct
/// problem is logged once.
async fn load_config<R: Registry>(registry: &R, cfg: &DaemonConfig) -> NetworkSpec {
    let key = config_key(&cfg.etcd_prefix);
    let mut last: Option<String> = None;
    loop {
        let got = registry.get(&key).await;
        cfg.health.update(|h| h.etcd_reachable = got.is_ok());
        let outcome = match got {
            Ok(Some(bytes)) => parse_config(&bytes).map_err(|e| e.to_string()),
            Ok(None) => Err(ConfigError::NotFound.to_string()),
            Err(e) => {
                cfg.metrics.etcd_errors.inc();
                Err(format!("read {key}: {e}"))
            }
        };
        match outcome {
            Ok(spec) => return spec,
            Err(why) => {
                if last.as_deref() != Some(&why) {
                    error!(key = %key, error = %why, "network config not usable, retrying every second");
                    last = Some(why);
                }
            }
        }
        sleep(Duration::from_secs(1)).await;
    }
}

struct Daemon<R, D> {
    cfg: DaemonConfig,
    registry: R,
    dp: D,
    dir: String,
    spec: NetworkSpec,
    mac: Mac,
    /// The `flannel-v6` device's MAC (dual stack).
    mac_v6: Mac,
    own: Option<OwnLease>,
    /// Our subnet before the lease was lost (preferred when re-acquiring).
    last_subnet: Option<Ipv4Network>,
    /// Our IPv6 subnet along with `last_subnet` (dual stack).
    last_subnet_v6: Option<Ipv6Network>,
    device: Option<DeviceInfo>,
    /// The `flannel-v6` device (dual stack).
    device_v6: Option<DeviceInfo>,
    peers: PeerSet,
    /// What the kernel must hold per peer subnet (last-known attributes, used for removal).
    desired: BTreeMap<Ipv4Network, Peer>,
    /// The IPv6 side of each dual-stack peer, keyed by its lease's IPv4 subnet.
    desired_v6: BTreeMap<Ipv4Network, Peer>,
    /// `(IPv6 subnet, PublicIPv6)` of every IPv6 peer seen, while a route of ours may point at
    /// it (the IPv6 ownership rule's leases).
    held_v6: BTreeSet<(IpNetwork, IpAddr)>,
    /// Keys under `<prefix>/subnets/` (metrics).
    known_keys: BTreeSet<String>,
    started: Instant,
    mesh_done: bool,
    renew_at: Option<Instant>,
    reacquire_at: Option<Instant>,
    reacquire_backoff: Duration,
    reconcile_retry: Option<Instant>,
    retry_backoff: Duration,
    etcd_ok: bool,
    until_device_check: u64,
    /// Ops that failed last time (for logging once per state change).
    failing: BTreeSet<NetOp>,
    /// An op failed since the device was last checked.
    device_suspect: bool,
    /// The last blackhole-route failure (logged once per distinct message).
    blackhole_failing: Option<String>,
    /// DirectRouting is off and its routes of a previous run are still to be removed (until the
    /// first clean reconciliation).
    direct_cleanup: bool,
    /// Peer routes not programmed because a route flanneld does not own holds the destination
    /// (destination → that route), as last reported.
    conflicts: BTreeMap<IpNetwork, KernelRoute>,
    /// A `CreateRoute` found its destination taken (set by `apply`; the caller reconciles).
    routes_in_the_way: bool,
    /// host-gw peers not programmed because their PublicIP is not on-link on the external
    /// interface (subnet → PublicIP), as last reported.
    off_link: BTreeMap<Ipv4Network, Ipv4Addr>,
    /// Likewise the IPv6 sides of dual-stack host-gw peers (lease's IPv4 subnet → its IPv6
    /// subnet and PublicIPv6).
    off_link_v6: BTreeMap<Ipv4Network, (IpNetwork, IpAddr)>,
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(0)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::watch_start;

    #[test]
    fn the_watch_skips_only_our_own_write() {
        assert_eq!(watch_start(41, 42), 42, "our write right after the listing");
        assert_eq!(watch_start(41, 44), 41, "other changes in between: from the listing");
        assert_eq!(watch_start(50, 42), 50, "a listing newer than our write");
    }
}
