//! The flanneld benchmark: time to program N peers from start, new-lease-to-route latency,
//! peak RSS, for the VXLAN or the host-gw backend, beside the kernel floor (the same entries
//! installed by `ip -batch`, see `flanneld_floor`). One namespace holds a veth underlay, etcd on
//! its own 127.0.0.1 and flanneld; routes are observed through a netlink route monitor opened
//! inside that namespace.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use weft_common::netns::NetNs;
use weft_lab::ns::{require_root, Netns};

use crate::flanneld_peers::{
    add_underlay, lease_value, network_config, public_ip, subnet, Backend, NODE_IP, UNDERLAY,
};
use crate::stats::{median, ms, percentile};

const PREFIX: &str = "/coreos.com/network";
const RTMGRP_IPV4_ROUTE: u32 = 0x40;

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
    /// The backend in the network config and the synthetic leases: vxlan or host-gw.
    #[arg(long, default_value = "vxlan")]
    backend: Backend,
}

/// A child process killed (by PID) when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn key(i: u32) -> String {
    format!("{PREFIX}/subnets/{}-24", subnet(i))
}

/// A new /24 route in 10.0.0.0/8 as the monitor saw it.
struct SeenRoute {
    dst: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
    oif: Option<u32>,
    at: Instant,
}

/// What a programmed peer's route looks like: VXLAN `<subnet> via <subnet> dev flannel.1
/// onlink` (flannel.1 does not exist before flanneld starts, so its index is not checked),
/// host-gw `<subnet> via <PublicIP> dev under0`.
struct Expect {
    backend: Backend,
    underlay_index: u32,
}

impl Expect {
    fn gateway(&self, i: u32) -> Ipv4Addr {
        match self.backend {
            Backend::Vxlan => subnet(i),
            Backend::HostGw => public_ip(self.backend, i),
        }
    }

    fn matches(&self, route: &SeenRoute, gateway: Ipv4Addr) -> bool {
        route.gateway == Some(gateway)
            && (self.backend == Backend::Vxlan || route.oif == Some(self.underlay_index))
    }
}

/// Route monitor: sends every new /24 route in 10.0.0.0/8 with its gateway, output interface
/// and the time it was seen.
fn spawn_monitor() -> Result<mpsc::Receiver<SeenRoute>, String> {
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| e.to_string())?;
    sock.bind(&SocketAddr::new(0, RTMGRP_IPV4_ROUTE)).map_err(|e| e.to_string())?;
    // A burst of thousands of routes would overrun the default buffer.
    let _ = sock.set_rx_buf_sz(64 * 1024 * 1024);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match sock.recv(&mut &mut buf[..], 0) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("route monitor: {e}");
                    return;
                }
            };
            let now = Instant::now();
            let mut off = 0;
            while off < n {
                let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..n]) else { break };
                let len = msg.header.length as usize;
                if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) = msg.payload {
                    if route.header.destination_prefix_length == 24 {
                        let (mut dst, mut gateway, mut oif) = (None, None, None);
                        for attr in &route.attributes {
                            match attr {
                                RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(*a),
                                RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(*a),
                                RouteAttribute::Oif(i) => oif = Some(*i),
                                _ => {}
                            }
                        }
                        if let Some(dst) = dst.filter(|d| d.octets()[0] == 10) {
                            if tx.send(SeenRoute { dst, gateway, oif, at: now }).is_err() {
                                return;
                            }
                        }
                    }
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    });
    Ok(rx)
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

struct Figures {
    peers: u32,
    floor: Duration,
    full_mesh: Duration,
    lat_median: Duration,
    lat_p99: Duration,
    rss_kib: u64,
}

fn underlay_index(node: &Netns) -> Result<u32, String> {
    let links = node.ip_json(&["link", "show", "dev", UNDERLAY]);
    links[0]["ifindex"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| format!("no ifindex for {UNDERLAY} in {links}"))
}

fn measure(flanneld: &PathBuf, backend: Backend, peers: u32, samples: u32) -> Result<Figures, String> {
    let node = Netns::unique("wbf");
    add_underlay(&node);
    let config = network_config(backend)?;
    let expect = Expect { backend, underlay_index: underlay_index(&node)? };
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
                .put(key(i), lease_value(backend, i), Some(PutOptions::new().with_lease(lease)))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    })?;

    let events = spawn_monitor()?;
    let start = Instant::now();
    let daemon = Proc(
        Command::new(flanneld)
            .args([
                &format!("--etcd-endpoints={endpoint}"),
                &format!("--iface={UNDERLAY}"),
                &format!("--public-ip={NODE_IP}"),
                &format!("--subnet-file={}", dir.path().join("subnet.env").display()),
            ])
            .env("WEFT_STATE_DIR", dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("flanneld.log")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("start flanneld: {e}"))?,
    );
    let wanted: HashMap<Ipv4Addr, Ipv4Addr> = (1..=peers).map(|i| (subnet(i), expect.gateway(i))).collect();
    let mut seen = HashSet::new();
    let deadline = start + Duration::from_secs(120);
    let mut full_mesh = None;
    while full_mesh.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let route = events.recv_timeout(left).map_err(|_| {
            let log = std::fs::read_to_string(dir.path().join("flanneld.log")).unwrap_or_default();
            format!(
                "only {} of {peers} peer routes after 120 s; flanneld log tail:\n{}",
                seen.len(),
                tail(&log)
            )
        })?;
        let programmed = wanted.get(&route.dst).is_some_and(|gw| expect.matches(&route, *gw));
        if programmed && seen.insert(route.dst) && seen.len() == wanted.len() {
            full_mesh = Some(route.at - start);
        }
    }

    let mut latencies = Vec::new();
    rt.block_on(async {
        let lease = client.lease_grant(86_400, None).await.map_err(|e| e.to_string())?.id();
        for s in 0..samples {
            let i = 60_000 + s;
            let (dst, gw) = (subnet(i), expect.gateway(i));
            let before = Instant::now();
            client
                .put(key(i), lease_value(backend, i), Some(PutOptions::new().with_lease(lease)))
                .await
                .map_err(|e| e.to_string())?;
            loop {
                let route = events
                    .recv_timeout(Duration::from_secs(10))
                    .map_err(|_| format!("route for new lease {dst}/24 did not appear within 10 s"))?;
                if route.dst == dst && expect.matches(&route, gw) {
                    latencies.push(route.at - before);
                    break;
                }
            }
        }
        Ok::<(), String>(())
    })?;
    let rss_kib = peak_rss_kib(daemon.0.id());
    drop(daemon);
    drop(etcd);
    // After weft's run, so that removing the floor's namespace (N entries torn down by the
    // kernel) does not overlap it.
    let floor = crate::flanneld_floor::measure(backend, peers)?;
    Ok(Figures {
        peers,
        floor,
        full_mesh: full_mesh.unwrap_or_default(),
        lat_median: median(&latencies),
        lat_p99: percentile(&latencies, 99.0),
        rss_kib,
    })
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Runs the benchmark for each peer count and prints the table.
pub fn run(opts: &Options) -> Result<(), String> {
    require_root();
    let flanneld = opts.flanneld.clone().unwrap_or_else(|| weft_lab::bins::bin_dir().join("flanneld"));
    if !flanneld.is_file() {
        return Err(format!("{} is missing", flanneld.display()));
    }
    let mut rows = Vec::new();
    for &n in &opts.peers {
        rows.push(measure(&flanneld, opts.backend, n, opts.samples)?);
    }
    let floor_what = match opts.backend {
        Backend::Vxlan => "`ip -batch` neigh + route, `bridge -batch` fdb",
        Backend::HostGw => "`ip -batch` route",
    };
    println!(
        "| flanneld ({}), N synthetic peer leases | start → all N routes | kernel floor ({floor_what}) | ratio | new lease → route, median | p99 | peak RSS |",
        opts.backend.type_name()
    );
    println!("|---|---|---|---|---|---|---|");
    for f in rows {
        println!(
            "| N = {} | {} | {} | {:.2}× | {} | {} | {:.1} MB |",
            f.peers,
            ms(f.full_mesh),
            ms(f.floor),
            f.full_mesh.as_secs_f64() / f.floor.as_secs_f64().max(1e-9),
            ms(f.lat_median),
            ms(f.lat_p99),
            f.rss_kib as f64 / 1024.0
        );
    }
    Ok(())
}
