//! `weft-bench see`: how long `weft path` and `weft doctor` take, beside the `ip`/`bridge`/
//! `etcdctl` commands an operator runs by hand for the same answer, measured in the same run.
//!
//! 1. A 3-node lab (weft-lab: real etcd, weft's flanneld with `-debug-dataplane` per node, one
//!    pod per node). Every command, weft's and the by-hand ones, is started the same way: a
//!    process spawned directly inside the node's namespace (as an operator logged on the node
//!    runs it), one after the other.
//! 2. 100 nodes: one namespace with a real etcd holding 100 leases and one real flanneld (node 0,
//!    99 peers programmed in its kernel); the other 99 nodes' `/debug/dataplane` endpoints are a
//!    stub in this process serving node 0's real view rewritten for each of them (its own MAC,
//!    addresses, lease, and the peer entries it would hold). `weft doctor` runs inside the
//!    namespace against all 100. The by-hand figure is `etcdctl` once plus 100 times the
//!    per-node command set measured on the real node (extrapolated: no human does it faster).
//! 3. Busy nodes, emulated (more veths on `cni0`): `weft path` again in the lab with them, and
//!    flanneld's view collection on such a node beside one full link dump of it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnetwork::{IpNetwork, Ipv4Network};
use weft_common::firewall::listing::Listing;
use weft_common::netns::NetNs;
use weft_dataplane::netlink::{collect_view, ViewInput};
use weft_dataplane::view::{
    DataplaneView, DeviceSpecView, FdbView, FlanneldFacts, LeaseView, NeighView, RouteView, PROTO_BOOT,
    TABLE_MAIN,
};
use weft_lab::ns::{require_root, Netns};
use weft_lab::{FlannelSpec, Lab};

use crate::stats::{median, ms};

const PREFIX: &str = "/coreos.com/network";
const PORT: u16 = 10256;

/// Options of `weft-bench see`.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Runs of `weft path` (the median is reported).
    #[arg(long, default_value_t = 50)]
    path_runs: usize,
    /// Runs of `weft doctor` and of each by-hand sequence.
    #[arg(long, default_value_t = 20)]
    doctor_runs: usize,
    /// Emulated nodes for the large doctor run.
    #[arg(long, default_value_t = 100)]
    nodes: u32,
    /// Pods of the emulated busy node (one veth each on `cni0`), where flanneld's view
    /// collection is timed.
    #[arg(long, default_value_t = 100)]
    busy_pods: u32,
    /// Start of every namespace name (1-5 ASCII alphanumerics): the lab is `<prefix>n…`, the
    /// large run's namespace `<prefix>l…`, the busy node's `<prefix>b…` (its pods' ends in
    /// `<prefix>q…`); `weft-lab cleanup <prefix>` removes leftovers.
    #[arg(long, default_value = "wsdb")]
    ns_prefix: String,
}

struct Row {
    what: String,
    weft: Duration,
    by_hand: Duration,
    commands: String,
}

fn time(mut f: impl FnMut() -> Result<(), String>, runs: usize) -> Result<Duration, String> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed());
    }
    Ok(median(&samples))
}

/// Runs `argv` inside the namespace at `ns` (entered by this thread, so the child starts in
/// it; nothing reads `/sys`, which would still be the host's), checking its exit status.
fn exec_in(ns: &NetNs, argv: &[&str]) -> Result<(), String> {
    let _inside = ns.enter().map_err(|e| e.to_string())?;
    run_ok(argv)
}

/// Runs every `argv` at once inside the namespace at `ns` and waits for all of them, checking
/// their exit status.
fn exec_side_by_side(ns: &NetNs, argvs: &[&[&str]]) -> Result<(), String> {
    let _inside = ns.enter().map_err(|e| e.to_string())?;
    let mut children = Vec::with_capacity(argvs.len());
    for argv in argvs {
        let (cmd, args) = argv.split_first().ok_or("no command")?;
        let child = Command::new(cmd)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{cmd}: {e}"))?;
        children.push((argv, child));
    }
    for (argv, mut child) in children {
        let st = child.wait().map_err(|e| format!("{argv:?}: {e}"))?;
        if !st.success() {
            return Err(format!("{argv:?} failed: {st}"));
        }
    }
    Ok(())
}

/// What bounds `weft path` from below: one start of the `weft` binary (`--help`), and the
/// in-process nf_tables read its firewall walk needs (three netlink dumps,
/// `weft_common::firewall::listing`) on the local node and, for the remote view, on the
/// remote node, each timed here inside that namespace. Beside them, what the same reads cost
/// with the tools both used to start (`iptables-save` and `nft -j list ruleset` side by side).
fn path_floor(
    opts: &Options,
    remote: &NetNs,
    local: &NetNs,
    weft: &str,
) -> Result<Vec<(String, Duration)>, String> {
    let read_in = |ns: &NetNs| -> Result<(), String> {
        ns.run(Listing::read).map_err(|e| e.to_string())?.map(|_| ()).map_err(|e| e.to_string())
    };
    let own_read = time(|| read_in(local), opts.path_runs)?;
    let remote_read = time(|| read_in(remote), opts.path_runs)?;
    let start = time(|| exec_in(local, &[weft, "--help"]), opts.path_runs)?;
    let own: [&[&str]; 2] = [&["iptables-save"], &["nft", "-j", "list", "ruleset"]];
    let own_fw = time(|| exec_side_by_side(local, &own), opts.path_runs)?;
    Ok(vec![
        ("`weft --help` (the binary's process start-up)".into(), start),
        ("the in-process nf_tables read on the local node (`weft path`'s own)".into(), own_read),
        ("the same read on the remote node (its flanneld's, for the view)".into(), remote_read),
        ("for comparison, the tools `weft path` used to start: `iptables-save` and `nft -j list ruleset` side by side on the local node".into(), own_fw),
    ])
}

/// `ip -batch` of `batch` inside `ns`.
fn ip_batch(ns: &Netns, batch: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("links.batch");
    std::fs::write(&file, batch).map_err(|e| e.to_string())?;
    let made = ns.exec(&["ip", "-batch", &file.display().to_string()]);
    if !made.ok() {
        return Err(format!("ip -batch in {}: {}", ns.name(), made.stderr.trim()));
    }
    Ok(())
}

/// A node with many pods, emulated: a namespace with `cni0` and one veth per pod on it (the
/// pod ends in a second namespace). Times flanneld's view collection there (in-process, as its
/// `/debug/dataplane` handler runs it, with facts naming `flannel.1`) beside one full link dump
/// of the namespace, parsed: what the view read before it asked for its links by name and
/// index, and still the lower bound of anything that lists every link.
fn busy_node(opts: &Options) -> Result<Vec<(String, Duration)>, String> {
    let node = Netns::unique(&format!("{}b", opts.ns_prefix));
    let pods = Netns::unique(&format!("{}q", opts.ns_prefix));
    let mut batch = String::from("link add cni0 type bridge\nlink set cni0 up\n");
    for i in 0..opts.busy_pods {
        batch.push_str(&format!(
            "link add veth{i} type veth peer name eth{i} netns {}\nlink set veth{i} master cni0 up\n",
            pods.name()
        ));
    }
    ip_batch(&node, &batch)?;
    let ns = NetNs::open(node.path()).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let facts = FlanneldFacts {
        network: "10.244.0.0/16".parse().ok(),
        expected_device: Some(DeviceSpecView {
            name: "flannel.1".into(),
            vni: 1,
            port: 0,
            local: Ipv4Addr::new(198, 18, 0, 1),
            underlay_index: 0,
            mtu: 1450,
            gbp: false,
            learning: false,
            address: Ipv4Network::new(Ipv4Addr::new(10, 244, 1, 0), 32).map_err(|e| e.to_string())?,
        }),
        ..FlanneldFacts::default()
    };
    let input = ViewInput { facts: Some(facts), firewall: true, ..ViewInput::default() };
    let view = time(
        || ns.run(|| rt.block_on(collect_view(&input))).map(|_| ()).map_err(|e| e.to_string()),
        opts.path_runs,
    )?;
    let dump = time(
        || {
            let links = ns.run(|| weft_common::netlink::Netlink::open().and_then(|mut nl| nl.links()));
            links.map_err(|e| e.to_string())?.map(|_| ()).map_err(|e| e.to_string())
        },
        opts.path_runs,
    )?;
    let n = opts.busy_pods;
    Ok(vec![
        (
            format!("flanneld's view collection (`/debug/dataplane`, in-process) on a node with {n} pods"),
            view,
        ),
        (
            format!("one full link dump of that node ({} links), parsed: what the view read before", n + 2),
            dump,
        ),
    ])
}

/// The 3-node lab rows, the floor of the `path` row, and `path` again with busy nodes.
type LabRows = (Vec<Row>, Vec<(String, Duration)>, (String, Duration));

/// The 3-node lab rows.
fn lab_rows(opts: &Options, weft: &Path) -> Result<LabRows, String> {
    let lab = Lab::flannel(
        &format!("{}n", opts.ns_prefix),
        FlannelSpec { nodes: 3, pods_per_node: 1, etcd_members: 1 },
    )
    .map_err(|e| e.to_string())?;
    let e = |e: weft_lab::LabError| e.to_string();
    let open = |path: String| NetNs::open(path).map_err(|e| e.to_string());
    let (src, dst) = (lab.pods()[0].ip().to_string(), lab.pods()[1].ip().to_string());
    let pod_ns = open(lab.pods()[0].ns().path())?;
    let n0 = lab.node(0).map_err(e)?;
    let (ns0, ns1) = (open(n0.ns().path())?, open(lab.node(1).map_err(e)?.ns().path())?);
    let peer_ip = lab.node(1).map_err(e)?.ip().to_string();
    let lease_key = lab.lease(1).map_err(e)?.ok_or("node 1 has no lease")?.key;
    let eps = lab.etcd().map_err(e)?.endpoints();
    let etcd_ep = format!("--endpoints={eps}");
    let weft_s = weft.display().to_string();
    let dirs = n0.cni_dirs();
    let (cache, ipam, subnet_file) = (
        dirs.cache.display().to_string(),
        dirs.ipam_data.display().to_string(),
        dirs.subnet_file.display().to_string(),
    );
    let path_argv = [
        weft_s.as_str(),
        "path",
        "--cni-cache-dir",
        &cache,
        "--ipam-data-dir",
        &ipam,
        "--subnet-file",
        &subnet_file,
        &src,
        &dst,
    ];
    exec_in(&ns0, &path_argv).map_err(|e| format!("weft path is not reachable in the healthy lab: {e}"))?;
    let path = time(|| exec_in(&ns0, &path_argv), opts.path_runs)?;
    let floor = path_floor(opts, &ns1, &ns0, &weft_s)?;
    let busy_path = {
        // Node 0 and node 1 (the remote view's) made busy: `--busy-pods` more veths on each
        // `cni0`, their other ends in a namespace of their own (no pod state: neither `weft
        // path` nor the view should read them).
        let ends = Netns::unique(&format!("{}q", opts.ns_prefix));
        for k in 0..2 {
            let mut batch = String::new();
            for i in 0..opts.busy_pods {
                batch.push_str(&format!(
                    "link add bx{k}n{i} type veth peer name by{k}n{i} netns {}\nlink set bx{k}n{i} master cni0 up\n",
                    ends.name()
                ));
            }
            ip_batch(lab.node(k).map_err(e)?.ns(), &batch)?;
        }
        let t = time(|| exec_in(&ns0, &path_argv), opts.path_runs)?;
        let n = opts.busy_pods;
        (
            format!(
                "`weft path` in the same lab with {n} more veths on both nodes' `cni0` (without them: {})",
                ms(path)
            ),
            t,
        )
    };
    // What an operator runs for the same answer (the walk of "where is it broken?"): the
    // pod's peer ifindex, the host veth and its bridge port, the route the kernel takes, the
    // neighbour and FDB entries, the device, the underlay route, the forward rules (iptables and
    // nftables), forwarding and rp_filter, subnet.env, the peer's lease, and on the remote node
    // its device, route to the pod and bridge. `weft path` answers each of these.
    let path_by_hand: Vec<(&NetNs, Vec<&str>)> = vec![
        (&pod_ns, vec!["ip", "-o", "link", "show", "eth0"]),
        (&ns0, vec!["ip", "-o", "link", "show"]),
        (&ns0, vec!["bridge", "link", "show"]),
        (&ns0, vec!["ip", "route", "get", &dst, "from", &src, "iif", "cni0"]),
        (&ns0, vec!["ip", "neigh", "show", "dev", "flannel.1"]),
        (&ns0, vec!["bridge", "fdb", "show", "dev", "flannel.1"]),
        (&ns0, vec!["ip", "-d", "link", "show", "flannel.1"]),
        (&ns0, vec!["ip", "route", "get", &peer_ip]),
        (&ns0, vec!["iptables-save", "-t", "filter"]),
        (&ns0, vec!["nft", "list", "ruleset"]),
        (
            &ns0,
            vec![
                "sysctl",
                "-e",
                "net.ipv4.ip_forward",
                "net.ipv4.conf.all.rp_filter",
                "net.ipv4.conf.cni0.rp_filter",
            ],
        ),
        (&ns0, vec!["cat", &subnet_file]),
        (&ns0, vec!["etcdctl", &etcd_ep, "get", &lease_key]),
        (&ns1, vec!["ip", "-d", "link", "show", "flannel.1"]),
        (&ns1, vec!["ip", "route", "get", &dst]),
        (&ns1, vec!["ip", "addr", "show", "cni0"]),
    ];
    let path_hand =
        time(|| path_by_hand.iter().try_for_each(|(ns, argv)| exec_in(ns, argv)), opts.doctor_runs.min(10))?;
    let doctor_argv = [weft_s.as_str(), "doctor", "--etcd-endpoints", &eps];
    exec_in(&ns0, &doctor_argv).map_err(|e| format!("weft doctor is not healthy in the lab: {e}"))?;
    let doctor = time(|| exec_in(&ns0, &doctor_argv), opts.doctor_runs)?;
    let mut per_node: Vec<(NetNs, String)> = Vec::new();
    for i in 0..3 {
        let n = lab.node(i).map_err(e)?;
        per_node.push((open(n.ns().path())?, n.subnet_file().display().to_string()));
    }
    let config = format!("{PREFIX}/config");
    let subnets = format!("{PREFIX}/subnets/");
    let doctor_hand = time(
        || {
            exec_in(&ns0, &["etcdctl", &etcd_ep, "get", &config])?;
            exec_in(&ns0, &["etcdctl", &etcd_ep, "get", "--prefix", &subnets])?;
            for (ns, file) in &per_node {
                for argv in per_node_commands(file, "eth0") {
                    exec_in(ns, &argv)?;
                }
            }
            Ok(())
        },
        opts.doctor_runs.min(10),
    )?;
    let rows = vec![
        Row {
            what: format!("`weft path` pod → pod across nodes, 3-node lab (median of {})", opts.path_runs),
            weft: path,
            by_hand: path_hand,
            commands: format!("{} commands on both nodes, `etcdctl get` included", path_by_hand.len()),
        },
        Row {
            what: format!("`weft doctor`, 3-node lab (median of {})", opts.doctor_runs),
            weft: doctor,
            by_hand: doctor_hand,
            commands: format!(
                "2 × `etcdctl get` + 3 × {} commands per node",
                per_node_commands("", "").len()
            ),
        },
    ];
    Ok((rows, floor, busy_path))
}

/// What an operator reads on one node to compare it with etcd.
fn per_node_commands<'a>(subnet_file: &'a str, underlay: &'a str) -> Vec<Vec<&'a str>> {
    vec![
        vec!["ip", "-d", "link", "show", "flannel.1"],
        vec!["ip", "route", "show", "dev", "flannel.1"],
        vec!["ip", "neigh", "show", "dev", "flannel.1"],
        vec!["bridge", "fdb", "show", "dev", "flannel.1"],
        vec!["ip", "-d", "addr", "show", underlay],
        vec!["cat", subnet_file],
        vec!["sysctl", "net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter"],
    ]
}

fn emulated_ip(k: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1 + (k >> 8) as u8, (k & 0xff) as u8)
}

fn emulated_subnet(k: u32) -> Ipv4Network {
    Ipv4Network::new(Ipv4Addr::new(10, 100 + (k >> 8) as u8, (k & 0xff) as u8, 0), 24)
        .unwrap_or_else(|_| Ipv4Network::from(Ipv4Addr::UNSPECIFIED))
}

fn emulated_mac(k: u32) -> String {
    let [_, _, hi, lo] = k.to_be_bytes();
    weft_common::mac::format_mac(&[0x0e, 0, 0, 0, hi, lo])
}

fn lease_value(k: u32) -> String {
    format!(
        r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{}"}}}}"#,
        emulated_ip(k),
        emulated_mac(k)
    )
}

/// Node 0's real view rewritten as node `k` would report it.
fn emulated_view(real: &DataplaneView, k: u32, real_ip: Ipv4Addr) -> DataplaneView {
    let mut v = real.clone();
    let (ip, subnet, mac) = (emulated_ip(k), emulated_subnet(k), emulated_mac(k));
    let gw = IpAddr::V4(subnet.network());
    let dev_index = v.device.as_ref().map_or(0, |d| d.index);
    let real_lease = real.flanneld.as_ref().and_then(|f| f.lease.clone());
    v.neighbours.retain(|n| n.ip != gw);
    v.fdb.retain(|f| f.mac != mac);
    v.routes.retain(|r| r.dst != IpNetwork::V4(subnet));
    if let Some(l) = &real_lease {
        let real_gw = IpAddr::V4(l.subnet.network());
        v.neighbours.push(NeighView {
            ip: real_gw,
            mac: Some(l.vtep_mac.clone()),
            state: "permanent".into(),
            permanent: true,
        });
        v.fdb.push(FdbView {
            mac: l.vtep_mac.clone(),
            dst: Some(IpAddr::V4(real_ip)),
            self_: true,
            permanent: true,
        });
        v.routes.push(RouteView {
            dst: IpNetwork::V4(l.subnet),
            gateway: Some(real_gw),
            dev: Some("flannel.1".into()),
            oif: Some(dev_index),
            onlink: true,
            protocol: PROTO_BOOT,
            kind: "unicast".into(),
            table: TABLE_MAIN,
            scope: 0,
            tos: 0,
            metric: 0,
            multipath: false,
        });
    }
    if let Some(d) = v.device.as_mut() {
        d.mac = Some(mac.clone());
        d.addresses = vec![IpNetwork::V4(Ipv4Network::from(subnet.network()))];
        if let Some(x) = d.vxlan.as_mut() {
            x.local = Some(ip);
        }
    }
    if let Some(u) = v.underlay.as_mut() {
        u.addresses = Ipv4Network::new(ip, 16).map(|n| vec![IpNetwork::V4(n)]).unwrap_or_default();
    }
    if let Some(f) = v.flanneld.as_mut() {
        f.public_ip = Some(ip);
        f.lease = Some(LeaseView {
            key: format!("{PREFIX}/subnets/{}-24", subnet.network()),
            subnet,
            public_ip: ip,
            vtep_mac: mac,
            vni: 1,
            etcd_revision: 0,
            etcd_lease: 0,
        });
        if let Some(d) = f.expected_device.as_mut() {
            d.local = ip;
            d.address = Ipv4Network::from(subnet.network());
        }
    }
    if let Some(env) = v.subnet_env.as_mut() {
        env.subnet =
            Ipv4Network::new(Ipv4Addr::from(u32::from(subnet.network()) + 1), 24).ok().map(IpNetwork::V4);
    }
    v
}

/// Serves `bodies` (one per address) as `GET /debug/dataplane` until the process ends.
fn spawn_stub(bodies: Vec<(Ipv4Addr, String)>) -> Result<(), String> {
    let listeners: Vec<(std::net::TcpListener, String)> = bodies
        .into_iter()
        .map(|(ip, body)| {
            let l = std::net::TcpListener::bind(SocketAddr::from((ip, PORT)))
                .map_err(|e| format!("bind {ip}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok((l, body))
        })
        .collect::<Result<_, String>>()?;
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            for (l, body) in listeners {
                let Ok(l) = tokio::net::TcpListener::from_std(l) else { continue };
                let reply = std::sync::Arc::new(format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                ));
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    while let Ok((mut s, _)) = l.accept().await {
                        let reply = reply.clone();
                        tokio::spawn(async move {
                            let mut buf = [0u8; 1024];
                            let _ = s.read(&mut buf).await;
                            let _ = s.write_all(reply.as_bytes()).await;
                        });
                    }
                });
            }
            std::future::pending::<()>().await;
        });
    });
    Ok(())
}

fn start_etcd(dir: &Path) -> Result<(crate::flanneld::Proc, String), String> {
    let port =
        |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).and_then(|l| l.local_addr()).map(|a| a.port());
    let (client, peer) = (port(0).map_err(|e| e.to_string())?, port(0).map_err(|e| e.to_string())?);
    let endpoint = format!("http://127.0.0.1:{client}");
    let child = Command::new("etcd")
        .args([
            "--name=bench",
            &format!("--data-dir={}", dir.join("etcd").display()),
            &format!("--listen-client-urls={endpoint}"),
            &format!("--advertise-client-urls={endpoint}"),
            &format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
            &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
            &format!("--initial-cluster=bench=http://127.0.0.1:{peer}"),
            "--log-level=error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start etcd: {e}"))?;
    Ok((crate::flanneld::Proc(child), endpoint))
}

fn etcdctl(endpoint: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("etcdctl")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .map_err(|e| format!("etcdctl: {e}"))?;
    if !out.status.success() {
        return Err(format!("etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_ok(argv: &[&str]) -> Result<(), String> {
    let st = Command::new(argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{argv:?} failed: {st}"))
    }
}

/// The large doctor row: 1 real flanneld + (n-1) stub endpoints in one namespace.
fn large_row(opts: &Options, weft: &Path, flanneld: &Path) -> Result<Row, String> {
    let n = opts.nodes.max(2);
    let node = Netns::unique(&format!("{}l", opts.ns_prefix));
    for argv in [
        vec!["ip", "link", "add", "under0", "type", "veth", "peer", "name", "under1"],
        vec!["ip", "link", "set", "under1", "up"],
        vec!["ip", "addr", "add", "198.18.0.1/16", "dev", "under0"],
        vec!["ip", "link", "set", "under0", "up"],
    ] {
        node.exec(&argv).expect_ok();
    }
    // A node forwards (the bridge plugin turns this on with the first pod; there is none here).
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]).expect_ok();
    let batch: String = (1..n).map(|k| format!("addr add {}/32 dev lo\n", emulated_ip(k))).collect();
    node.exec_with(&["ip", "-batch", "-"], &[], batch.as_bytes()).expect_ok();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ns = NetNs::open(node.path()).map_err(|e| e.to_string())?;
    let _inside = ns.enter().map_err(|e| e.to_string())?;
    let (_etcd, endpoint) = start_etcd(dir.path())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while etcdctl(&endpoint, &["endpoint", "health"]).is_err() {
        if Instant::now() > deadline {
            return Err("etcd did not become ready".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    etcdctl(
        &endpoint,
        &["put", &format!("{PREFIX}/config"), r#"{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}"#],
    )?;
    let lease = etcdctl(&endpoint, &["lease", "grant", "86400"])?;
    let lease_id = lease.split_whitespace().nth(1).ok_or("etcdctl lease grant output")?.to_string();
    let puts: String = (1..n)
        .map(|k| {
            format!(
                "put {PREFIX}/subnets/{}-24 '{}' --lease={lease_id}\n",
                emulated_subnet(k).network(),
                lease_value(k)
            )
        })
        .collect();
    // One etcdctl per put would take seconds; `etcdctl txn` is awkward: write a small script.
    let script = dir.path().join("puts.sh");
    let lines: String = puts
        .lines()
        .map(|l| format!("ETCDCTL_API=3 etcdctl --endpoints={endpoint} {l} >/dev/null\n"))
        .collect();
    std::fs::write(&script, lines).map_err(|e| e.to_string())?;
    run_ok(&["sh", script.to_str().unwrap_or_default()])?;

    let subnet_file = dir.path().join("subnet.env");
    let _flanneld = crate::flanneld::Proc(
        Command::new(flanneld)
            .args([
                &format!("--etcd-endpoints={endpoint}"),
                "--iface=under0",
                "--public-ip=198.18.0.1",
                &format!("--subnet-file={}", subnet_file.display()),
                "--healthz-ip=198.18.0.1",
                &format!("--healthz-port={PORT}"),
                "--debug-dataplane",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("flanneld.log")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("start flanneld: {e}"))?,
    );
    // Node 0's real view once every peer is programmed.
    let real_ip = Ipv4Addr::new(198, 18, 0, 1);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let real: DataplaneView = loop {
        let got = rt.block_on(weft_cli::doctor::fetch::fetch_view(real_ip, PORT, Duration::from_secs(2)));
        if let Ok(v) = got {
            if v.routes.iter().filter(|r| r.dev.as_deref() == Some("flannel.1")).count() + 1 >= n as usize
                && v.flanneld.as_ref().is_some_and(|f| f.lease.is_some())
            {
                break v;
            }
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("flanneld.log")).unwrap_or_default();
            return Err(format!("flanneld did not program {} peers in 60 s:\n{log}", n - 1));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let bodies: Vec<(Ipv4Addr, String)> = (1..n)
        .map(|k| {
            let v = emulated_view(&real, k, real_ip);
            (emulated_ip(k), serde_json::to_string(&v).unwrap_or_default())
        })
        .collect();
    spawn_stub(bodies)?;

    let weft_s = weft.display().to_string();
    let doctor_argv = [weft_s.as_str(), "doctor", "--etcd-endpoints", endpoint.as_str()];
    // Healthy first: a sick emulation would measure the wrong thing.
    let out = Command::new(weft).args(&doctor_argv[1..]).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "weft doctor on the emulated cluster is not healthy ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let doctor = time(|| run_ok(&doctor_argv), opts.doctor_runs)?;
    let sf = subnet_file.display().to_string();
    let per_node = time(
        || {
            for argv in per_node_commands(&sf, "under0") {
                run_ok(&argv)?;
            }
            Ok(())
        },
        opts.doctor_runs.min(10),
    )?;
    let etcd_time = time(
        || {
            etcdctl(&endpoint, &["get", &format!("{PREFIX}/config")])?;
            etcdctl(&endpoint, &["get", "--prefix", &format!("{PREFIX}/subnets/")]).map(|_| ())
        },
        opts.doctor_runs.min(10),
    )?;
    let by_hand = etcd_time + per_node * n;
    Ok(Row {
        what: format!(
            "`weft doctor`, {n} nodes: 1 real flanneld (99 peers in its kernel) + {} stub endpoints (median of {})",
            n - 1,
            opts.doctor_runs
        ),
        weft: doctor,
        by_hand,
        commands: format!(
            "2 × `etcdctl get` ({}) + {n} × {} commands per node ({} each, measured on the real node)",
            ms(etcd_time),
            per_node_commands("", "").len(),
            ms(per_node)
        ),
    })
}

/// Runs the benchmark and prints the table.
pub fn run(opts: &Options) -> Result<(), String> {
    require_root();
    let bin = weft_lab::bins::bin_dir();
    let (weft, flanneld): (PathBuf, PathBuf) = (bin.join("weft"), bin.join("flanneld"));
    for b in [&weft, &flanneld] {
        if !b.is_file() {
            return Err(format!("{} is missing (build it, or set WEFT_BIN_DIR)", b.display()));
        }
    }
    let (mut rows, floor, busy_path) = lab_rows(opts, &weft)?;
    rows.push(large_row(opts, &weft, &flanneld)?);
    let mut busy = vec![busy_path];
    busy.extend(busy_node(opts)?);
    println!("| | weft | by hand | by hand / weft | by-hand commands |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let ratio = r.by_hand.as_secs_f64() / r.weft.as_secs_f64().max(1e-9);
        println!("| {} | {} | {} | {ratio:.1}× | {} |", r.what, ms(r.weft), ms(r.by_hand), r.commands);
    }
    println!(
        "\nEvery command, weft's and the by-hand ones, is a process started directly inside the node's \
         namespace; by hand = the sum of one sequential run of the commands (median of runs)."
    );
    println!("\nFloor of `weft path` (median of {}):", opts.path_runs);
    for (what, d) in &floor {
        println!("- {what}: {}", ms(*d));
    }
    println!("\nA busy node, emulated (median of {}):", opts.path_runs);
    for (what, d) in &busy {
        println!("- {what}: {}", ms(*d));
    }
    Ok(())
}
