//! End to end (root): the real `flanneld` binary with the netlink dataplane and a real etcd,
//! both inside a network namespace `wtfd-<pid>-e2e` created (and removed) by the test. The
//! test thread enters the namespace, so etcd, flanneld and `ip` inherit it; the host's root
//! namespace is never touched.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::etcd::Etcd;
use common::upstream_value;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_common::netns::NetNs;

const PREFIX: &str = "/coreos.com/network";

/// Removes the namespace (and with it everything inside) on drop.
struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Kills a child by PID on drop.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A log line at level ERROR (`<time> ERROR <target>: …`). The word alone is not enough: with
/// `-v=1` the h2 crate's debug lines carry `error_code: NO_ERROR`.
fn is_error(line: &str) -> bool {
    line.split_whitespace().nth(1) == Some("ERROR")
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip_json(args: &[&str]) -> Value {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    serde_json::from_str(&ip(&full)).unwrap_or(Value::Null)
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return String::new() };
    let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

#[test]
fn flanneld_binary_programs_a_peer_and_heals_in_a_namespace() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root (network namespaces)");
    let name = format!("wtfd-{}-e2e", std::process::id());
    let st = Command::new("ip").args(["netns", "add", &name]).status().unwrap();
    assert!(st.success());
    let _ns = NsGuard(name.clone());
    for args in [
        vec!["-n", &name, "link", "set", "lo", "up"],
        // A veth pair with both ends inside (no dummy module on every kernel).
        vec!["-n", &name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"],
        vec!["-n", &name, "link", "set", "eth0p", "up"],
        vec!["-n", &name, "addr", "add", "198.18.0.2/24", "dev", "eth0"],
        vec!["-n", &name, "link", "set", "eth0", "up"],
        vec!["-n", &name, "route", "add", "default", "via", "198.18.0.1", "dev", "eth0"],
    ] {
        ip(&args);
    }
    let ns = NetNs::open(format!("/var/run/netns/{name}")).unwrap();
    let _inside = ns.enter().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(scenario());
}

async fn scenario() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    client
        .put(format!("{PREFIX}/config"), r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#, None)
        .await
        .unwrap();
    client
        .put(
            format!("{PREFIX}/subnets/10.5.71.0-24"),
            upstream_value("198.18.0.3", "6e:aa:bb:cc:dd:01"),
            None,
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let subnet_file = dir.path().join("subnet.env");
    let health_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_flanneld"))
        .args([
            &format!("-etcd-endpoints={}", etcd.endpoint()),
            "-iface=eth0",
            &format!("-subnet-file={}", subnet_file.display()),
            "-healthz-ip=127.0.0.1",
            &format!("-healthz-port={health_port}"),
            "--metrics",
            "-reconcile-interval=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("flanneld.log")).unwrap())
        .spawn()
        .unwrap();
    let mut flanneld = ChildGuard(Some(child));
    let log = || std::fs::read_to_string(dir.path().join("flanneld.log")).unwrap_or_default();

    wait_until("subnet.env", || subnet_file.exists()).await;
    // Ready (subnet.env) comes after the firewall rules (the FORWARD accept rules here).
    assert!(log().contains("firewall rules installed"), "{}", log());
    let env = std::fs::read_to_string(&subnet_file).unwrap();
    assert!(env.starts_with("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5."), "{env}");
    assert!(env.ends_with("FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"), "{env}");

    // The device as upstream creates it.
    let link = ip_json(&["-d", "link", "show", "flannel.1"]);
    let info = &link[0]["linkinfo"]["info_data"];
    assert_eq!(info["id"], 1, "{link}");
    assert_eq!(info["local"], "198.18.0.2", "{link}");
    assert_eq!(info["port"], 8472, "{link}");
    assert_eq!(link[0]["mtu"], 1450);
    let mac = link[0]["address"].as_str().unwrap().to_string();

    // The published lease carries the device's MAC.
    let own = client
        .get(format!("{PREFIX}/subnets/"), Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(|kv| kv.value_str().unwrap().to_string())
        .find(|v| v.contains("198.18.0.2"))
        .unwrap();
    assert!(own.contains(&format!(r#""VtepMAC":"{mac}""#)), "{own} vs {mac}");

    // The peer: neighbour, FDB, onlink route.
    let has_route = || {
        ip_json(&["route", "show", "10.5.71.0/24"])
            .as_array()
            .is_some_and(|r| r.iter().any(|e| e["gateway"] == "10.5.71.0" && e["dev"] == "flannel.1"))
    };
    wait_until("peer route", has_route).await;
    let neigh = ip(&["neigh", "show", "dev", "flannel.1"]);
    assert!(neigh.contains("10.5.71.0 lladdr 6e:aa:bb:cc:dd:01 PERMANENT"), "{neigh}");
    let out = Command::new("bridge").args(["fdb", "show", "dev", "flannel.1"]).output().unwrap();
    let fdb = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(fdb.contains("6e:aa:bb:cc:dd:01") && fdb.contains("198.18.0.3"), "{fdb}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !http_get(health_port, "/healthz").await.contains("200 OK") {
        assert!(tokio::time::Instant::now() < deadline, "healthz never 200: {}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(http_get(health_port, "/metrics").await.contains("flanneld_peers_programmed 1"));

    // `ip route del` by hand heals.
    ip(&["route", "del", "10.5.71.0/24"]);
    wait_until("route healed", has_route).await;

    // The device deleted by hand: recreated with the same (published) MAC and peers replayed.
    ip(&["link", "del", "flannel.1"]);
    wait_until("device and route back", has_route).await;
    let again = ip_json(&["link", "show", "flannel.1"]);
    assert_eq!(again[0]["address"].as_str(), Some(mac.as_str()));

    // SIGTERM: exit 0, state left in place.
    let mut child = flanneld.0.take().unwrap();
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", log());
    assert!(has_route());
    let log = log();
    assert!(log.contains("firewall rules installed"), "{log}");
    // Errors only from the deleted device (ops on the vanished index), none otherwise.
    assert!(
        log.lines().filter(|l| is_error(l)).all(|l| l.contains("flannel.1") || l.contains("kernel op")),
        "{log}"
    );
    eprintln!("{log}");
}

/// flanneld in `netns` (`None`: the caller's), with `extra` flags after the common ones.
fn flanneld_command(
    netns: Option<&str>,
    endpoint: &str,
    iface: &str,
    subnet_file: &std::path::Path,
    log: &std::path::Path,
    extra: &[&str],
) -> Command {
    let flanneld = env!("CARGO_BIN_EXE_flanneld");
    let mut args = vec![
        format!("-etcd-endpoints={endpoint}"),
        format!("-iface={iface}"),
        format!("-subnet-file={}", subnet_file.display()),
        "-reconcile-interval=2".to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut cmd = match netns {
        // `ip netns exec` execs flanneld in place: the PID we kill is flanneld's.
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, flanneld]);
            c
        }
        None => Command::new(flanneld),
    };
    cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap());
    cmd
}

fn flannel_addr(subnet_file: &std::path::Path) -> String {
    // FLANNEL_SUBNET=10.5.x.1/24 → the device address 10.5.x.0.
    let env = std::fs::read_to_string(subnet_file).unwrap();
    let line = env.lines().find(|l| l.starts_with("FLANNEL_SUBNET=")).unwrap();
    let net: ipnetwork::Ipv4Network = line.trim_start_matches("FLANNEL_SUBNET=").parse().unwrap();
    net.network().to_string()
}

#[test]
fn two_nodes_reach_each_other_over_vxlan() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root (network namespaces)");
    let (a, b) = (format!("wtfd-{}-a", std::process::id()), format!("wtfd-{}-b", std::process::id()));
    for n in [&a, &b] {
        assert!(Command::new("ip").args(["netns", "add", n]).status().unwrap().success());
    }
    let _guards = (NsGuard(a.clone()), NsGuard(b.clone()));
    for args in [
        vec!["-n", &a, "link", "set", "lo", "up"],
        vec!["-n", &b, "link", "set", "lo", "up"],
        // The underlay: one veth pair, created inside A with its peer moved straight into B.
        vec!["-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b],
        vec!["-n", &a, "addr", "add", "198.18.0.2/24", "dev", "eth0"],
        vec!["-n", &b, "addr", "add", "198.18.0.3/24", "dev", "eth0"],
        vec!["-n", &a, "link", "set", "eth0", "up"],
        vec!["-n", &b, "link", "set", "eth0", "up"],
    ] {
        ip(&args);
    }
    let ns = NetNs::open(format!("/var/run/netns/{a}")).unwrap();
    let _inside = ns.enter().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let etcd = Etcd::start_on("198.18.0.2").await;
        let mut client = etcd.client().await;
        client
            .put(format!("{PREFIX}/config"), r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#, None)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (file_a, file_b) = (dir.path().join("a/subnet.env"), dir.path().join("b/subnet.env"));
        let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        let _fa = ChildGuard(Some(
            flanneld_command(None, &etcd.endpoint(), "eth0", &file_a, &log_a, &[]).spawn().unwrap(),
        ));
        let _fb = ChildGuard(Some(
            flanneld_command(Some(&b), &etcd.endpoint(), "198.18.0.3", &file_b, &log_b, &[]).spawn().unwrap(),
        ));
        let logs = || {
            format!(
                "A:\n{}\nB:\n{}",
                std::fs::read_to_string(&log_a).unwrap_or_default(),
                std::fs::read_to_string(&log_b).unwrap_or_default()
            )
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !(file_a.exists() && file_b.exists()) {
            assert!(tokio::time::Instant::now() < deadline, "subnet files: {}", logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (addr_a, addr_b) = (flannel_addr(&file_a), flannel_addr(&file_b));
        assert_ne!(addr_a, addr_b);
        // Host to host through the overlay, both directions (source = the flannel.1 address).
        let ping = |netns: Option<&str>, dst: &str| {
            let mut c = match netns {
                Some(n) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", n, "ping"]);
                    c
                }
                None => Command::new("ping"),
            };
            c.args(["-c1", "-W1", dst])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !(ping(None, &addr_b) && ping(Some(&b), &addr_a)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no overlay connectivity {addr_a} <-> {addr_b}: {}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// A namespace `wtfx<pid><tag>` with `lo` up and an underlay `eth0` (198.18.0.2/24, its veth peer
/// up), entered by the calling thread until the returned guard drops; removed with the
/// `NsGuard`.
fn one_node_namespace(tag: &str) -> (NsGuard, weft_common::netns::NetnsGuard) {
    named_node_namespace(&format!("wtfx{}{tag}", std::process::id()))
}

/// [`one_node_namespace`] with the namespace name given.
fn named_node_namespace(name: &str) -> (NsGuard, weft_common::netns::NetnsGuard) {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root (network namespaces)");
    let name = name.to_string();
    assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
    let guard = NsGuard(name.clone());
    for args in [
        vec!["-n", &name, "link", "set", "lo", "up"],
        vec!["-n", &name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"],
        vec!["-n", &name, "link", "set", "eth0p", "up"],
        vec!["-n", &name, "addr", "add", "198.18.0.2/24", "dev", "eth0"],
        vec!["-n", &name, "link", "set", "eth0", "up"],
    ] {
        ip(&args);
    }
    let ns = NetNs::open(format!("/var/run/netns/{name}")).unwrap();
    (guard, ns.enter().unwrap())
}

/// A private etcd holding a vxlan network config for 10.5.0.0/16.
async fn etcd_with_network_config() -> Etcd {
    etcd_with_config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#).await
}

/// A private etcd holding `config` as the network config.
async fn etcd_with_config(config: &str) -> Etcd {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    client.put(format!("{PREFIX}/config"), config, None).await.unwrap();
    etcd
}

/// One flanneld (with `extra` flags) on `eth0` of the calling thread's namespace, against its
/// own etcd holding a network config; everything ends when dropped.
struct SingleNode {
    _etcd: Etcd,
    _dir: tempfile::TempDir,
    subnet_file: std::path::PathBuf,
    log_path: std::path::PathBuf,
    _flanneld: ChildGuard,
}

impl SingleNode {
    async fn start(extra: &[&str]) -> SingleNode {
        SingleNode::start_with(etcd_with_network_config().await, extra)
    }

    /// [`SingleNode::start`] against a given etcd.
    fn start_with(etcd: Etcd, extra: &[&str]) -> SingleNode {
        let dir = tempfile::tempdir().unwrap();
        let subnet_file = dir.path().join("subnet.env");
        let log_path = dir.path().join("flanneld.log");
        let child =
            flanneld_command(None, &etcd.endpoint(), "eth0", &subnet_file, &log_path, extra).spawn().unwrap();
        SingleNode { _etcd: etcd, _dir: dir, subnet_file, log_path, _flanneld: ChildGuard(Some(child)) }
    }
}

/// `--ip-masq-fully-random-disable` reaches the firewall: the real binary (iptables mode, the
/// default) installs plain `-j MASQUERADE` targets inside its namespace `wtfx<pid>fr`.
#[test]
fn ip_masq_fully_random_disable_gives_plain_masquerade() {
    let (_ns, _inside) = one_node_namespace("fr");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let node = SingleNode::start(&["-ip-masq", "-ip-masq-fully-random-disable"]).await;
        let log_path = &node.log_path;
        let masq_rules = || {
            let out = Command::new("iptables-save").args(["-t", "nat"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("-A FLANNEL-POSTRTG") && l.contains("MASQUERADE"))
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while masq_rules().len() < 2 {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            assert!(tokio::time::Instant::now() < deadline, "no masquerade rules: {log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rules = masq_rules();
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert!(rules.iter().all(|r| r.ends_with("-j MASQUERADE")), "{rules:?}");
    });
}

/// The firewall rules are installed while the peers are programmed, and ready waits for them
/// (namespace `wtfx<pid>ff`): with no firewall tool on `PATH`, `-ip-masq` cannot be installed,
/// flanneld exits non-zero naming it, and subnet.env is never written (nothing says ready).
#[test]
fn a_firewall_that_cannot_be_installed_stops_flanneld_before_ready() {
    let (_ns, _inside) = one_node_namespace("ff");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let etcd = etcd_with_network_config().await;
        let dir = tempfile::tempdir().unwrap();
        let (subnet_file, log_path, empty) =
            (dir.path().join("subnet.env"), dir.path().join("flanneld.log"), dir.path().join("no-tools"));
        std::fs::create_dir(&empty).unwrap();
        let mut cmd =
            flanneld_command(None, &etcd.endpoint(), "eth0", &subnet_file, &log_path, &["-ip-masq"]);
        let child = cmd.env("PATH", &empty).spawn().unwrap();
        let mut flanneld = ChildGuard(Some(child));
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = flanneld.0.as_mut().unwrap().try_wait().unwrap() {
                break status;
            }
            assert!(tokio::time::Instant::now() < deadline, "flanneld still running: {}", log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_ne!(status.code(), Some(0), "{}", log());
        assert!(log().contains("install firewall rules"), "{}", log());
        assert!(!log().contains("flanneld is ready"), "{}", log());
        assert!(!subnet_file.exists(), "{}", log());
    });
}

/// `--ip-blackhole-route` on the real kernel (namespace `wtfx<pid>bh`): within one
/// `--iptables-resync` period the own subnet has `blackhole <subnet>` in the main table, read
/// back with `ip -j route`; deleted behind flanneld's back, it comes back.
#[test]
fn ip_blackhole_route_keeps_a_blackhole_for_the_own_subnet() {
    let (_ns, _inside) = one_node_namespace("bh");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let node = SingleNode::start(&["-ip-blackhole-route", "-iptables-resync=1"]).await;
        let (subnet_file, log_path) = (&node.subnet_file, &node.log_path);
        wait_until("subnet.env", || subnet_file.exists()).await;
        let subnet = format!("{}/24", flannel_addr(subnet_file));
        let blackholes = || {
            let routes = ip_json(&["route", "show", "type", "blackhole"]);
            routes
                .as_array()
                .map(|a| a.iter().filter_map(|r| r["dst"].as_str().map(String::from)).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let log = || std::fs::read_to_string(log_path).unwrap_or_default();
        wait_until("the blackhole route", || blackholes() == [subnet.clone()]).await;
        ip(&["route", "del", "blackhole", &subnet]);
        assert!(blackholes().is_empty());
        wait_until("the blackhole route again", || blackholes() == [subnet.clone()]).await;
        assert!(!log().lines().any(is_error), "{}", log());
    });
}

/// `-debug-dataplane` (namespace `wtfx<pid>dv`): `/debug/dataplane` reports the real kernel
/// state, read back with `ip`/`bridge`: the device's MAC and attributes, the peer's neighbour,
/// FDB entry and route, the own lease as published, and the view turns into exactly the
/// kernel state the reconciler would leave alone.
#[test]
fn debug_dataplane_serves_the_real_kernel_view() {
    use weft_dataplane::plan::{plan_reconcile, Peer};
    use weft_dataplane::view::DataplaneView;

    let (_ns, _inside) = one_node_namespace("dv");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let etcd = etcd_with_network_config().await;
        let mut client = etcd.client().await;
        client
            .put(
                format!("{PREFIX}/subnets/10.5.71.0-24"),
                upstream_value("198.18.0.3", "6e:aa:bb:cc:dd:01"),
                None,
            )
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (subnet_file, log_path) = (dir.path().join("subnet.env"), dir.path().join("flanneld.log"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // No periodic reconciliation during the test: a deleted entry stays deleted.
        let flags = [
            "-healthz-ip=127.0.0.1".to_string(),
            format!("-healthz-port={port}"),
            "-debug-dataplane".into(),
            "-reconcile-interval=3600".into(),
        ];
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let _f = ChildGuard(Some(
            flanneld_command(None, &etcd.endpoint(), "eth0", &subnet_file, &log_path, &flags)
                .spawn()
                .unwrap(),
        ));
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let has_route =
            || ip_json(&["route", "show", "10.5.71.0/24"]).as_array().is_some_and(|r| !r.is_empty());
        wait_until("peer route", has_route).await;

        let resp = http_get(port, "/debug/dataplane").await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}\n{}", log());
        let body = resp.split("\r\n\r\n").nth(1).unwrap();
        let view: DataplaneView = serde_json::from_str(body).unwrap();
        assert!(view.errors.is_empty(), "{:?}", view.errors);
        // The filter rules are in the default view, read in this namespace.
        let fw = view.firewall.as_ref().unwrap();
        assert!(fw.errors.is_empty(), "{:?}", fw.errors);
        assert!(fw.iptables_filter.as_deref().is_some_and(|t| t.contains("*filter")), "{fw:?}");
        assert!(fw.ip6tables_filter.as_deref().is_some_and(|t| t.contains("*filter")), "{fw:?}");
        assert!(fw.nft.is_some());
        // IPv6 forwarding as this namespace has it.
        let fwd6 = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding").ok();
        assert_eq!(view.sysctls.ipv6_forwarding, fwd6.and_then(|v| v.trim().parse().ok()));
        // `?firewall=0`: the same view without them.
        let lean = http_get(port, "/debug/dataplane?firewall=0").await;
        let lean: DataplaneView = serde_json::from_str(lean.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert!(lean.firewall.is_none() && lean.errors.is_empty(), "{:?}", lean.errors);
        assert_eq!(lean.device.as_ref().map(|d| &d.mac), view.device.as_ref().map(|d| &d.mac));

        let link = ip_json(&["-d", "link", "show", "flannel.1"]);
        let dev = view.device.as_ref().unwrap();
        assert_eq!(dev.mac.as_deref(), link[0]["address"].as_str());
        assert_eq!(Some(u64::from(dev.index)), link[0]["ifindex"].as_u64());
        assert_eq!(Some(u64::from(dev.mtu)), link[0]["mtu"].as_u64());
        assert!(dev.up);
        let vx = dev.vxlan.as_ref().unwrap();
        assert_eq!((vx.vni, vx.port, vx.learning), (Some(1), 8472, false));
        assert_eq!(vx.local, Some("198.18.0.2".parse().unwrap()));
        assert_eq!(vx.underlay.as_deref(), Some("eth0"));
        assert_eq!(view.underlay.as_ref().map(|u| u.name.as_str()), Some("eth0"));
        assert!(view.underlay.as_ref().unwrap().addresses.contains(&"198.18.0.2/24".parse().unwrap()));

        let neigh = view.neighbours.iter().find(|n| n.ip.to_string() == "10.5.71.0").unwrap();
        assert_eq!(neigh.mac.as_deref(), Some("6e:aa:bb:cc:dd:01"));
        assert!(neigh.permanent);
        let fdb = view.fdb.iter().find(|f| f.mac == "6e:aa:bb:cc:dd:01").unwrap();
        assert_eq!(fdb.dst, Some("198.18.0.3".parse().unwrap()));
        assert!(fdb.self_ && fdb.permanent);
        let route = view.routes.iter().find(|r| r.dst.to_string() == "10.5.71.0/24").unwrap();
        assert_eq!(route.gateway, Some("10.5.71.0".parse().unwrap()));
        assert_eq!((route.dev.as_deref(), route.onlink, route.protocol), (Some("flannel.1"), true, 3));

        // The lease as flanneld holds it, equal to the value in etcd.
        let facts = view.flanneld.as_ref().unwrap();
        let lease = facts.lease.as_ref().unwrap();
        assert_eq!(lease.vtep_mac.as_str(), link[0]["address"].as_str().unwrap());
        let got = client.get(lease.key.as_str(), None).await.unwrap();
        let kv = &got.kvs()[0];
        assert!(kv.value_str().unwrap().contains(&format!(r#""VtepMAC":"{}""#, lease.vtep_mac)));
        assert_eq!(lease.etcd_revision, kv.mod_revision());
        assert_eq!(facts.network, Some("10.5.0.0/16".parse().unwrap()));
        let env = view.subnet_env.as_ref().unwrap();
        let written = std::fs::read_to_string(&subnet_file).unwrap();
        assert!(written.contains(&format!("FLANNEL_SUBNET={}\n", env.subnet.unwrap())), "{written}");
        assert_eq!(env.mtu, Some(dev.mtu));
        assert!(view.sysctls.ip_forward.is_some() && view.sysctls.rp_filter.contains_key("all"));

        // What the reconciler would change on this kernel: nothing.
        let peer = Peer {
            subnet: "10.5.71.0/24".parse().unwrap(),
            public_ip: "198.18.0.3".parse().unwrap(),
            vtep_mac: [0x6e, 0xaa, 0xbb, 0xcc, 0xdd, 0x01],
            direct: false,
        };
        let owner = weft_dataplane::own::Ownership::of_peers(
            "10.5.0.0/16".parse().unwrap(),
            24,
            std::slice::from_ref(&peer),
            false,
        );
        assert_eq!(plan_reconcile(std::slice::from_ref(&peer), &view.kernel_state(), &owner).ops, vec![]);
        // A neighbour deleted by hand shows up at once, as the one op a reconcile would do.
        ip(&["neigh", "del", "10.5.71.0", "dev", "flannel.1"]);
        let body = http_get(port, "/debug/dataplane").await;
        let view: DataplaneView = serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert!(!view.neighbours.iter().any(|n| n.ip.to_string() == "10.5.71.0"), "{body}");
        assert_eq!(
            plan_reconcile(std::slice::from_ref(&peer), &view.kernel_state(), &owner).ops,
            vec![weft_dataplane::NetOp::AddNeigh { ip: "10.5.71.0".parse().unwrap(), mac: peer.vtep_mac }]
        );
    });
}

/// Issue 13 on the real kernel (namespaces `wtown<pid>off` and `wtown<pid>dr`): with
/// DirectRouting off and on, routes flanneld did not make — the issue's `/32` via a peer's
/// address (proto boot, iproute2's default) and `/24 … proto static`, a lease-sized route via an
/// address that is no peer's PublicIP, and a peer subnet in another table — survive several
/// reconcile passes; flanneld's own peer route is healed when deleted and removed when its
/// lease goes.
#[test]
fn routes_flanneld_did_not_make_survive_reconciliation_with_direct_routing_off_and_on() {
    for (tag, direct) in [("off", false), ("dr", true)] {
        let (_ns, _inside) = named_node_namespace(&format!("wtown{}{tag}", std::process::id()));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(operator_routes_scenario(direct));
    }
}

/// `ip -j route show table <table> <dst>` as (gateway, dev, protocol) triples.
fn routes_to(table: &str, dst: &str) -> Vec<(String, String, String)> {
    let v = ip_json(&["-d", "route", "show", "table", table, dst]);
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
                    (s("gateway"), s("dev"), s("protocol"))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn operator_routes_scenario(direct: bool) {
    let config =
        format!(r#"{{"Network":"10.5.0.0/16","Backend":{{"Type":"vxlan","DirectRouting":{direct}}}}}"#);
    let etcd = etcd_with_config(&config).await;
    let mut client = etcd.client().await;
    let peer_key = format!("{PREFIX}/subnets/10.5.71.0-24");
    // On the underlay's /24: on-link, so DirectRouting gives `10.5.71.0/24 via 198.18.0.11`.
    client.put(peer_key.clone(), upstream_value("198.18.0.11", "6e:aa:bb:cc:dd:01"), None).await.unwrap();
    let operator: [(&str, &[&str]); 4] = [
        ("main", &["10.5.200.7/32", "via", "198.18.0.11", "dev", "eth0"]),
        ("main", &["10.5.201.0/24", "via", "198.18.0.11", "dev", "eth0", "proto", "static"]),
        ("main", &["10.5.202.0/24", "via", "198.18.0.99", "dev", "eth0"]),
        ("100", &["10.5.71.0/24", "via", "198.18.0.11", "dev", "eth0", "table", "100"]),
    ];
    for (_, r) in &operator {
        let mut args = vec!["route", "add"];
        args.extend_from_slice(r);
        ip(&args);
    }
    let snapshot = || operator.iter().map(|(t, r)| routes_to(t, r[0])).collect::<Vec<_>>();
    let before = snapshot();
    assert!(before.iter().all(|r| r.len() == 1), "{before:?}");
    assert_eq!(before[0][0].2, "boot", "iproute2's default protocol");

    let node = SingleNode::start_with(etcd, &["-v=1", "-reconcile-interval=1"]);
    let log = || std::fs::read_to_string(&node.log_path).unwrap_or_default();
    let ours = move || {
        routes_to("main", "10.5.71.0/24").into_iter().any(|(gw, dev, proto)| {
            proto == "boot"
                && if direct {
                    gw == "198.18.0.11" && dev == "eth0"
                } else {
                    gw == "10.5.71.0" && dev == "flannel.1"
                }
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !ours() {
        assert!(tokio::time::Instant::now() < deadline, "peer route never programmed: {}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let passes = || log().matches("dumped kernel state").count();
    let seen = passes();
    wait_until("three more reconcile passes", || passes() >= seen + 3).await;
    assert_eq!(snapshot(), before, "{}", log());

    // Its own route: healed when deleted by hand.
    ip(&["route", "del", "10.5.71.0/24", "table", "main"]);
    wait_until("peer route healed", ours).await;
    assert_eq!(snapshot(), before);

    // Removed when its lease goes; everything else stays.
    client.delete(peer_key, None).await.unwrap();
    wait_until("peer route removed", || routes_to("main", "10.5.71.0/24").is_empty()).await;
    let seen = passes();
    wait_until("two more reconcile passes", || passes() >= seen + 2).await;
    assert_eq!(snapshot(), before, "{}", log());
    let log = log();
    assert!(!log.lines().any(is_error), "{log}");
    assert!(!log.contains("a route flanneld did not make holds a peer subnet"), "{log}");
}

/// `ip link set flannel.1 down` / `flannel-v6.1 down` behind flanneld's back (dual stack,
/// namespace `wtfx<pid>dn`, no peer: no failing op shows it): the next reconciliation pass
/// finds them down and brings both up again with the IPv6 address back (docs/flannel.md
/// §8.1–8.3), long before the regular device check (every 10th pass, 200 s here).
#[test]
fn downed_devices_of_both_families_are_brought_up_again() {
    let (ns, _inside) = one_node_namespace("dn");
    ip(&["-n", &ns.0, "addr", "add", "2001:2::2/64", "dev", "eth0", "nodad"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let config = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;
        let node = SingleNode::start_with(etcd_with_config(config).await, &["-reconcile-interval=20"]);
        let log = || std::fs::read_to_string(&node.log_path).unwrap_or_default();
        // `ip -j` of a link that may not exist yet (then `null`).
        let show = |args: &[&str]| {
            let out = Command::new("ip").arg("-j").args(args).output().unwrap();
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)
        };
        let up = |dev: &str| {
            show(&["link", "show", "dev", dev])[0]["flags"].as_array().is_some_and(|f| f.iter().any(|f| f == "UP"))
        };
        let v6_addr = || {
            show(&["-6", "addr", "show", "dev", "flannel-v6.1", "scope", "global"])[0]["addr_info"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["prefixlen"] == 128))
        };
        wait_until("both devices up", || up("flannel.1") && up("flannel-v6.1") && v6_addr()).await;
        for dev in ["flannel.1", "flannel-v6.1"] {
            ip(&["link", "set", dev, "down"]);
        }
        assert!(!up("flannel.1") && !up("flannel-v6.1"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !(up("flannel.1") && up("flannel-v6.1") && v6_addr()) {
            assert!(tokio::time::Instant::now() < deadline, "devices not brought up: {}", log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(log().contains("a VXLAN device is down or gone, bringing it up"), "{}", log());
    });
}
