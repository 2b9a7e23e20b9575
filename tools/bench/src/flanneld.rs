//! The flanneld benchmark: time to program N peers from start, new-lease-to-route latency,
//! peak RSS, for the VXLAN or the host-gw backend, beside the kernel floors (the same entries
//! installed by `ip -batch`, and as flanneld's own requests batched from this process, see
//! `flanneld_floor`) and the etcd floor (the reads and writes a
//! lease acquisition makes, timed from this process). One namespace holds a veth underlay, etcd on
//! its own 127.0.0.1 and flanneld; routes are observed through a netlink route monitor opened
//! inside that namespace.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use weft_common::netns::NetNs;
use weft_lab::ns::{require_root, Netns};

use crate::flanneld_monitor::{spawn_monitor, SeenRoute};
use crate::flanneld_peers::{
    add_underlay, check_counts, public_ip, subnet, Backend, Mode, FIRST_SAMPLE, NODE_IP, PREFIX, UNDERLAY,
};
use crate::flanneld_peers_v6::{add_underlay_v6, public_ipv6, subnet_v6, NODE_IPV6};
use crate::stats::{median, ms, percentile};

/// Options of `weft-bench flanneld`.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// The flanneld binary (default: $WEFT_BIN_DIR/flanneld).
    #[arg(long)]
    flanneld: Option<PathBuf>,
    /// Peer counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    peers: Vec<u32>,
    /// New-lease latency samples.
    #[arg(long, default_value_t = 100)]
    samples: u32,
    /// Runs per peer count, each a fresh etcd, flanneld and floor namespace; the table shows
    /// the medians (start-up on this 2-core VM varies by a few ms from run to run).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// The backend in the network config and the synthetic leases: vxlan or host-gw.
    #[arg(long, default_value = "vxlan")]
    backend: Backend,
    /// Dual stack: `EnableIPv6` in the config, leases with an IPv6 side, and both families'
    /// routes counted (VXLAN: on `flannel.1` and `flannel-v6.1`; host-gw: via the PublicIP and
    /// the PublicIPv6 on the underlay).
    #[arg(long)]
    dual_stack: bool,
    /// Prefix of the network namespaces the benchmark creates (a unique suffix is added).
    #[arg(long, default_value = "wbf")]
    netns_prefix: String,
}

/// A child process killed (by PID) when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a programmed peer's routes look like: VXLAN `<subnet> via <subnet> dev flannel.1
/// onlink` (flannel.1 does not exist before flanneld starts, so its index is not checked), and
/// with dual stack also `<subnet6> via <subnet6> dev flannel-v6.1 onlink`; host-gw
/// `<subnet> via <PublicIP> dev under0`, with dual stack also `<subnet6> via <PublicIPv6> dev
/// under0`.
struct Expect {
    mode: Mode,
    underlay_index: u32,
}

impl Expect {
    /// Peer `i`'s routes: (destination, gateway), one per family.
    fn routes(&self, i: u32) -> Vec<(IpAddr, IpAddr)> {
        let v4 = match self.mode.backend {
            Backend::Vxlan => (subnet(i).into(), subnet(i).into()),
            Backend::HostGw => (subnet(i).into(), public_ip(Backend::HostGw, i).into()),
        };
        let mut out = vec![v4];
        if self.mode.dual_stack {
            out.push(match self.mode.backend {
                Backend::Vxlan => (subnet_v6(i).into(), subnet_v6(i).into()),
                Backend::HostGw => (subnet_v6(i).into(), public_ipv6(i).into()),
            });
        }
        out
    }

    fn matches(&self, route: &SeenRoute, gateway: IpAddr) -> bool {
        route.gateway == Some(gateway)
            && (self.mode.backend == Backend::Vxlan || route.oif == Some(self.underlay_index))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(23790)
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:").and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            })
        })
        .unwrap_or(0)
}

#[derive(Clone)]
struct Figures {
    peers: u32,
    /// `ip -batch` of the same entries.
    floor: Duration,
    /// flanneld's requests for the same entries, batched, from the benchmark itself.
    netlink_floor: Duration,
    /// What etcd alone takes for a lease acquisition's calls (see [`etcd_floor`]).
    etcd: Duration,
    full_mesh: Duration,
    /// Start → subnet.env written (ready: the firewall rules are in, installed meanwhile).
    ready: Duration,
    lat_median: Duration,
    lat_p99: Duration,
    /// The new-lease floor: etcd's put → watch event plus one peer's requests.
    lat_floor: Duration,
    rss_kib: u64,
}

fn underlay_index(node: &Netns) -> Result<u32, String> {
    let links = node.ip_json(&["link", "show", "dev", UNDERLAY]);
    links[0]["ifindex"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| format!("no ifindex for {UNDERLAY} in {links}"))
}

fn measure(flanneld: &PathBuf, opts: &Options, mode: Mode, peers: u32) -> Result<Figures, String> {
    let node = Netns::unique(&opts.netns_prefix);
    add_underlay(&node);
    if mode.dual_stack {
        add_underlay_v6(&node);
    }
    let config = mode.network_config()?;
    let expect = Expect { mode, underlay_index: underlay_index(&node)? };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ns = NetNs::open(node.path()).map_err(|e| e.to_string())?;
    let _inside = ns.enter().map_err(|e| e.to_string())?;
    // Ports are chosen inside the namespace, where nothing else listens.
    let (client_port, peer_port) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client_port}");
    let etcd = Proc(
        Command::new("etcd")
            .args([
                "--name=bench",
                &format!("--data-dir={}", dir.path().join("etcd").display()),
                &format!("--listen-client-urls={endpoint}"),
                &format!("--advertise-client-urls={endpoint}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
                &format!("--initial-cluster=bench=http://127.0.0.1:{peer_port}"),
                "--log-level=error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start etcd: {e}"))?,
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let mut client = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = Client::connect([endpoint.as_str()], None).await {
                if c.status().await.is_ok() {
                    return Ok(c);
                }
            }
            if Instant::now() > deadline {
                return Err("etcd did not become ready".to_string());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })?;
    rt.block_on(async {
        client.put(format!("{PREFIX}/config"), config, None).await.map_err(|e| e.to_string())?;
        let lease = client.lease_grant(86_400, None).await.map_err(|e| e.to_string())?.id();
        for i in 1..=peers {
            client
                .put(mode.key(i), mode.lease_value(i), Some(PutOptions::new().with_lease(lease)))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    })?;

    let etcd_floor = rt.block_on(etcd_floor(&mut client))?;

    let events = spawn_monitor(mode.dual_stack)?;
    let mut args = vec![
        format!("--etcd-endpoints={endpoint}"),
        format!("--iface={UNDERLAY}"),
        format!("--public-ip={NODE_IP}"),
        format!("--subnet-file={}", dir.path().join("subnet.env").display()),
    ];
    if mode.dual_stack {
        args.push(format!("--public-ipv6={NODE_IPV6}"));
    }
    let start = Instant::now();
    let daemon = Proc(
        Command::new(flanneld)
            .args(&args)
            .env("WEFT_STATE_DIR", dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("flanneld.log")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("start flanneld: {e}"))?,
    );
    let wanted: HashMap<IpAddr, IpAddr> = (1..=peers).flat_map(|i| expect.routes(i)).collect();
    let mut seen = HashSet::new();
    let deadline = start + Duration::from_secs(120);
    let mut full_mesh = None;
    while full_mesh.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let route = events.recv_timeout(left).map_err(|_| {
            let log = std::fs::read_to_string(dir.path().join("flanneld.log")).unwrap_or_default();
            format!(
                "only {} of {} peer routes after 120 s; flanneld log tail:\n{}",
                seen.len(),
                wanted.len(),
                tail(&log)
            )
        })?;
        let programmed = wanted.get(&route.dst).is_some_and(|gw| expect.matches(&route, *gw));
        if programmed && seen.insert(route.dst) && seen.len() == wanted.len() {
            full_mesh = Some(route.at - start);
        }
    }
    // New leases are timed from ready on: flanneld installs its firewall rules while it
    // programs the listing's peers, so the mesh can be complete before it is ready, and a lease
    // arriving meanwhile competes with the firewall tools for the CPU (not the steady state).
    let subnet_env = dir.path().join("subnet.env");
    while !subnet_env.exists() {
        if Instant::now() > deadline {
            return Err(format!("flanneld not ready (no {}) after 120 s", subnet_env.display()));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let ready = start.elapsed();

    let mut latencies = Vec::new();
    rt.block_on(async {
        let lease = client.lease_grant(86_400, None).await.map_err(|e| e.to_string())?.id();
        for s in 0..opts.samples {
            let i = FIRST_SAMPLE + s;
            // The lease counts as programmed when the last of its routes (one per family) is.
            let mut left: HashMap<IpAddr, IpAddr> = expect.routes(i).into_iter().collect();
            let before = Instant::now();
            client
                .put(mode.key(i), mode.lease_value(i), Some(PutOptions::new().with_lease(lease)))
                .await
                .map_err(|e| e.to_string())?;
            while !left.is_empty() {
                let route = events.recv_timeout(Duration::from_secs(10)).map_err(|_| {
                    format!("routes for new lease {} did not appear within 10 s", mode.key(i))
                })?;
                if left.get(&route.dst).is_some_and(|gw| expect.matches(&route, *gw)) {
                    left.remove(&route.dst);
                    if left.is_empty() {
                        latencies.push(route.at - before);
                    }
                }
            }
        }
        Ok::<(), String>(())
    })?;
    let rss_kib = peak_rss_kib(daemon.0.id());
    drop(daemon);
    let watch_floor = rt.block_on(etcd_watch_floor(&mut client, mode, opts.samples))?;
    drop(etcd);
    // After weft's run, so that removing the floor's namespace (N entries torn down by the
    // kernel) does not overlap it.
    let floors = crate::flanneld_floor::measure(&opts.netns_prefix, mode, peers, opts.samples)?;
    Ok(Figures {
        peers,
        floor: floors.ip_batch,
        netlink_floor: floors.netlink,
        etcd: etcd_floor,
        full_mesh: full_mesh.unwrap_or_default(),
        ready,
        lat_median: median(&latencies),
        lat_p99: percentile(&latencies, 99.0),
        lat_floor: watch_floor + floors.netlink_one,
        rss_kib,
    })
}

/// etcd's part of a new lease's way, timed from this process on the same etcd (median over
/// `samples`): a put of a sample lease's bytes until a watch on its prefix delivers the event,
/// what flanneld's watch waits for before it programs a peer. Its keys live outside the prefix
/// flanneld reads; flanneld has ended by then, so the two do not compete for the CPU.
async fn etcd_watch_floor(client: &mut Client, mode: Mode, samples: u32) -> Result<Duration, String> {
    const FLOOR_PREFIX: &str = "/weft-bench-watch-floor/";
    let stream = client
        .watch(FLOOR_PREFIX, Some(WatchOptions::new().with_prefix()))
        .await
        .map_err(|e| e.to_string())?;
    // Dropping the request half would end the watch.
    let (_sender, mut responses) = stream.split();
    let mut took = Vec::new();
    for s in 0..samples {
        let i = FIRST_SAMPLE + s;
        let start = Instant::now();
        client
            .put(format!("{FLOOR_PREFIX}{i}"), mode.lease_value(i), None)
            .await
            .map_err(|e| e.to_string())?;
        // The watch's first response (its creation) carries no event.
        loop {
            let resp = responses.message().await.map_err(|e| e.to_string())?.ok_or("watch ended")?;
            if !resp.events().is_empty() {
                break;
            }
        }
        took.push(start.elapsed());
    }
    Ok(median(&took))
}

/// The part of flanneld's start that is etcd's own work, timed from this process on the same
/// etcd (median of 5): the range read of every lease under the prefix, a lease grant and a
/// conditional create (`create_revision == 0`), the calls a lease acquisition makes, one after
/// the other (docs/flannel.md §5.2). Its keys live outside the prefix flanneld reads.
async fn etcd_floor(client: &mut Client) -> Result<Duration, String> {
    let mut samples = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        let listed = client
            .get(format!("{PREFIX}/subnets/"), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| e.to_string())?;
        let lease = client.lease_grant(86_400, None).await.map_err(|e| e.to_string())?.id();
        let key = format!("/weft-bench-etcd-floor/{i}");
        let create = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, "x", Some(PutOptions::new().with_lease(lease)))]);
        let done = client.txn(create).await.map_err(|e| e.to_string())?;
        samples.push(t.elapsed());
        if listed.kvs().is_empty() || !done.succeeded() {
            return Err("etcd floor: the leases were not listed or the create failed".into());
        }
    }
    Ok(median(&samples))
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Runs the benchmark for each peer count and prints the table.
pub fn run(opts: &Options) -> Result<(), String> {
    require_root();
    let mode = Mode { backend: opts.backend, dual_stack: opts.dual_stack };
    check_counts(&opts.peers, opts.samples)?;
    let flanneld = opts.flanneld.clone().unwrap_or_else(|| weft_lab::bins::bin_dir().join("flanneld"));
    if !flanneld.is_file() {
        return Err(format!("{} is missing", flanneld.display()));
    }
    if opts.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let mut rows = Vec::new();
    for &n in &opts.peers {
        let runs =
            (0..opts.runs).map(|_| measure(&flanneld, opts, mode, n)).collect::<Result<Vec<_>, _>>()?;
        rows.push(combine(&runs));
    }
    print!("{}", table(mode, &rows));
    Ok(())
}

/// One row from several runs of the same peer count: the median of each time (the ratios are
/// taken of these medians; the latency column is the median of the runs' medians), the worst
/// p99 and the largest peak RSS.
fn combine(runs: &[Figures]) -> Figures {
    let med = |f: fn(&Figures) -> Duration| median(&runs.iter().map(f).collect::<Vec<_>>());
    Figures {
        peers: runs.first().map_or(0, |r| r.peers),
        floor: med(|r| r.floor),
        netlink_floor: med(|r| r.netlink_floor),
        etcd: med(|r| r.etcd),
        full_mesh: med(|r| r.full_mesh),
        ready: med(|r| r.ready),
        lat_median: med(|r| r.lat_median),
        lat_p99: runs.iter().map(|r| r.lat_p99).max().unwrap_or_default(),
        lat_floor: med(|r| r.lat_floor),
        rss_kib: runs.iter().map(|r| r.rss_kib).max().unwrap_or(0),
    }
}

/// The markdown table of the measured rows.
fn table(mode: Mode, rows: &[Figures]) -> String {
    let floor_what = match (mode.backend, mode.dual_stack) {
        (Backend::Vxlan, false) => "`ip -batch` neigh + route, `bridge -batch` fdb",
        (Backend::Vxlan, true) => "`ip -batch` neigh + route, `bridge -batch` fdb, IPv4 + IPv6",
        (Backend::HostGw, false) => "`ip -batch` route",
        (Backend::HostGw, true) => "`ip -batch` route, IPv4 + IPv6",
    };
    let mut out = format!(
        "| flanneld ({}), N synthetic peer leases | start → all N routes | kernel floor ({floor_what}) | ratio | netlink floor (the same requests, 256 per sendmsg) | ratio | etcd floor (list + grant + create) | ratio to netlink + etcd floors | start → ready | new lease → route, median | p99 | new-lease floor (etcd put → watch event + one peer's requests) | ratio | peak RSS |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        mode.label()
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    for f in rows {
        out.push_str(&format!(
            "| N = {} | {} | {} | {:.2}× | {} | {:.2}× | {} | {:.2}× | {} | {} | {} | {} | {:.2}× | {:.1} MB |\n",
            f.peers,
            ms(f.full_mesh),
            ms(f.floor),
            ratio(f.full_mesh, f.floor),
            ms(f.netlink_floor),
            ratio(f.full_mesh, f.netlink_floor),
            ms(f.etcd),
            ratio(f.full_mesh, f.netlink_floor + f.etcd),
            ms(f.ready),
            ms(f.lat_median),
            ms(f.lat_p99),
            ms(f.lat_floor),
            ratio(f.lat_median, f.lat_floor),
            f.rss_kib as f64 / 1024.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(peers: u32, full_ms: u64, floor_ms: u64) -> Figures {
        Figures {
            peers,
            floor: Duration::from_millis(floor_ms),
            netlink_floor: Duration::from_millis(floor_ms / 4),
            etcd: Duration::from_millis(10),
            full_mesh: Duration::from_millis(full_ms),
            ready: Duration::from_millis(full_ms + 5),
            lat_median: Duration::from_micros(800),
            lat_p99: Duration::from_micros(1_550),
            lat_floor: Duration::from_micros(400),
            rss_kib: 14_131,
        }
    }

    #[test]
    fn table_shape_per_mode() {
        let dual = table(Mode { backend: Backend::Vxlan, dual_stack: true }, &[row(1000, 60, 40)]);
        assert_eq!(
            dual,
            "| flanneld (vxlan, dual stack), N synthetic peer leases | start → all N routes | kernel floor (`ip -batch` neigh + route, `bridge -batch` fdb, IPv4 + IPv6) | ratio | netlink floor (the same requests, 256 per sendmsg) | ratio | etcd floor (list + grant + create) | ratio to netlink + etcd floors | start → ready | new lease → route, median | p99 | new-lease floor (etcd put → watch event + one peer's requests) | ratio | peak RSS |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
             | N = 1000 | 60.00 ms | 40.00 ms | 1.50× | 10.00 ms | 6.00× | 10.00 ms | 3.00× | 65.00 ms | 0.80 ms | 1.55 ms | 0.40 ms | 2.00× | 13.8 MB |\n"
        );
        let vxlan = table(Mode { backend: Backend::Vxlan, dual_stack: false }, &[row(5000, 286, 220)]);
        assert!(vxlan.starts_with("| flanneld (vxlan), N synthetic peer leases | start → all N routes | kernel floor (`ip -batch` neigh + route, `bridge -batch` fdb) |"));
        assert!(vxlan.contains("| N = 5000 | 286.00 ms | 220.00 ms | 1.30× |"));
        let hg = table(Mode { backend: Backend::HostGw, dual_stack: false }, &[]);
        assert!(hg.starts_with("| flanneld (host-gw), N synthetic peer leases |"));
        assert!(hg.contains("kernel floor (`ip -batch` route)"));
        assert_eq!(hg.lines().count(), 2);
    }

    #[test]
    fn runs_combine_into_medians_and_worst_cases() {
        let mut slow = row(1000, 40, 20);
        slow.rss_kib = 15_000;
        slow.lat_p99 = Duration::from_millis(9);
        let c = combine(&[row(1000, 30, 22), slow, row(1000, 25, 21)]);
        assert_eq!(
            (c.peers, c.full_mesh, c.floor),
            (1000, Duration::from_millis(30), Duration::from_millis(21))
        );
        assert_eq!((c.lat_p99, c.rss_kib), (Duration::from_millis(9), 15_000));
    }

    #[test]
    fn dual_stack_expects_both_families() {
        let e = Expect { mode: Mode { backend: Backend::Vxlan, dual_stack: true }, underlay_index: 2 };
        let r = e.routes(258);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], ("10.1.2.0".parse().unwrap(), "10.1.2.0".parse().unwrap()));
        assert_eq!(r[1], ("fd10:0:0:102::".parse().unwrap(), "fd10:0:0:102::".parse().unwrap()));
        let hg = Expect { mode: Mode { backend: Backend::HostGw, dual_stack: false }, underlay_index: 2 };
        assert_eq!(hg.routes(1), vec![("10.0.1.0".parse().unwrap(), "198.18.1.1".parse().unwrap())]);
    }
}
