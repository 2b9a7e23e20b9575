//! The lab harness itself, without flanneld: topology, etcd (single and 3-member), pods via
//! the reference CNI plugins with hand-written routes, iperf3, and every cleanup path.
//! Needs root (fails, never skips, without it).

// Test helpers outside #[test] fns panic on broken invariants on purpose.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use weft_lab::bins::REFERENCE_DIR;
use weft_lab::cleanup::netns_names;
use weft_lab::cni::Runner;
use weft_lab::ns::require_root;
use weft_lab::{cleanup_prefix, Lab, Result};

const PREFIX: &str = "wtlab";

fn net() -> Ipv4Network {
    "10.244.0.0/16".parse().unwrap()
}

fn subnet(i: usize) -> Ipv4Network {
    format!("10.244.{}.0/24", i + 1).parse().unwrap()
}

/// Pods on every node through the reference bridge + host-local, with host-gw style routes
/// between nodes over the underlay standing in for flanneld.
fn plain_pods(lab: &mut Lab, nodes: usize, pods: usize, mtu: u32) -> Result<()> {
    for i in 0..nodes {
        lab.use_plain_cni(i, net(), subnet(i), mtu, REFERENCE_DIR)?;
        for _ in 0..pods {
            lab.add_pod_with(i, &Runner::Direct)?;
        }
    }
    Ok(())
}

fn host_gw_routes(lab: &Lab) -> Result<()> {
    for on in lab.nodes() {
        for other in lab.nodes() {
            if other.index() != on.index() {
                let dst = subnet(other.index()).to_string();
                on.ns().run(&["ip", "route", "add", &dst, "via", &other.ip().to_string()])?;
            }
        }
    }
    Ok(())
}

/// Everything a lab made, recorded before it is dropped.
struct Footprint {
    namespaces: Vec<String>,
    pids: Vec<u32>,
    dir: std::path::PathBuf,
}

fn footprint(lab: &Lab) -> Footprint {
    let id = lab.id().to_string();
    let namespaces = netns_names().unwrap().into_iter().filter(|n| n.starts_with(&id)).collect();
    let mut pids: Vec<u32> = lab.nodes().iter().filter_map(|n| n.flanneld_pid()).collect();
    // etcd members run in the switch namespace: the kernel knows their PIDs.
    let sw = lab.switch().unwrap().name().to_string();
    let r = weft_lab::cmd::sh(&["ip", "netns", "pids", &sw]);
    pids.extend(r.stdout.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    Footprint { namespaces, pids, dir: lab.dir().to_path_buf() }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

fn assert_gone(f: &Footprint) {
    let now = netns_names().unwrap();
    let left: Vec<&String> = f.namespaces.iter().filter(|n| now.contains(n)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let running: Vec<&u32> = f.pids.iter().filter(|p| alive(**p)).collect();
    assert!(running.is_empty(), "processes left behind: {running:?}");
    assert!(!f.dir.exists(), "temp dir left behind: {}", f.dir.display());
}

#[test]
fn pods_on_three_nodes_reach_each_other_and_everything_is_removed_on_drop() -> Result<()> {
    require_root();
    let mut lab = Lab::new(PREFIX)?;
    for _ in 0..3 {
        lab.add_node()?;
    }
    assert!(lab.nodes().iter().all(|n| n.ns().name().len() <= 15));
    // Underlay: node 0 reaches node 2 through the switch, MTU 1500.
    let n0 = lab.node(0)?;
    n0.ns().run(&["ping", "-c", "1", "-W", "2", "198.18.0.12"])?;
    let link = n0.ns().try_ip_json(&["link", "show", "dev", "eth0"])?;
    assert_eq!(link[0]["mtu"], 1500);

    lab.start_etcd(1)?;
    let config = lab.put_network_config()?;
    let stored = lab.etcd()?.get("/coreos.com/network/config")?;
    assert_eq!(stored.as_deref(), Some(config.trim()));
    assert_eq!(lab.etcd()?.get("/coreos.com/network/absent")?, None);

    plain_pods(&mut lab, 3, 2, 1500)?;
    host_gw_routes(&lab)?;
    assert_eq!(lab.pods().len(), 6);
    for p in lab.pods() {
        assert!(subnet(p.node()).contains(p.ip()), "pod {} got {}", p.ns().name(), p.ip());
        assert_eq!(p.mtu()?, 1500);
    }
    let matrix = lab.ping_matrix()?;
    assert!(matrix.all_ok(), "ping matrix:\n{matrix}");

    // CNI CHECK and DEL through the lab's runner; DEL removes the pod's namespace.
    lab.check_pod(5)?;
    let gone = lab.pod(5)?.ns().name().to_string();
    lab.del_pod(5)?;
    assert!(!netns_names()?.contains(&gone));

    let f = footprint(&lab);
    assert!(f.namespaces.len() >= 1 + 3 + 5, "{:?}", f.namespaces);
    assert!(!f.pids.is_empty(), "etcd should run in the switch namespace");
    drop(lab);
    assert_gone(&f);
    Ok(())
}

#[test]
fn three_member_etcd_survives_killing_the_leader() -> Result<()> {
    require_root();
    let mut lab = Lab::new(PREFIX)?;
    lab.start_etcd(3)?;
    let etcd = lab.etcd_mut()?;
    assert_eq!(etcd.members().len(), 3);
    assert_eq!(etcd.endpoints().split(',').count(), 3);
    etcd.put("/weft/before", "kept")?;
    let leader = etcd.leader()?;
    etcd.kill_member(leader)?;
    // The two survivors elect a new leader; nothing written before is lost, writes go on.
    etcd.wait_healthy()?;
    let new_leader = weft_lab::wait::until(
        "a new etcd leader",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || Ok(etcd.leader().ok()),
    )?;
    assert_ne!(new_leader, leader);
    assert_eq!(etcd.get("/weft/before")?.as_deref(), Some("kept"));
    etcd.put("/weft/after", "written")?;
    // The killed member rejoins from its data dir and catches up.
    etcd.start_member(leader)?;
    etcd.wait_healthy()?;
    let ep = etcd.members()[leader].client_url();
    let r = etcd.ctl_at(&ep, &["get", "--consistency=s", "--print-value-only", "/weft/after"]);
    weft_lab::wait::until_true("rejoined member has the new key", Duration::from_secs(20), || {
        let r = etcd.ctl_at(&ep, &["get", "--consistency=s", "--print-value-only", "/weft/after"]);
        Ok(r.stdout.trim() == "written")
    })
    .map_err(|e| weft_lab::LabError::Invalid(format!("{e}; first try: {r}")))?;
    Ok(())
}

#[test]
fn single_etcd_stopped_and_restarted_keeps_its_data() -> Result<()> {
    require_root();
    let mut lab = Lab::new(PREFIX)?;
    lab.start_etcd(1)?;
    lab.put_network_config()?;
    let etcd = lab.etcd_mut()?;
    etcd.stop();
    assert!(!etcd.ctl(&["get", "/coreos.com/network/config"]).ok(), "etcd still answers after stop");
    etcd.restart()?;
    assert!(etcd.get("/coreos.com/network/config")?.is_some());
    Ok(())
}

#[test]
fn tcp_stream_over_hand_made_vxlan_with_mtu_1450() -> Result<()> {
    // flannel.1 programmed by hand exactly as docs/flannel.md §8.5 describes, so the
    // lab's iperf3, MTU and inspection paths are proven before flanneld exists.
    require_root();
    let mut lab = Lab::new(PREFIX)?;
    for _ in 0..2 {
        lab.add_node()?;
    }
    let macs = ["0a:58:0a:f4:01:00", "0a:58:0a:f4:02:00"];
    for n in lab.nodes() {
        let i = n.index();
        let ip = n.ip().to_string();
        let addr = format!("{}/32", subnet(i).ip());
        n.ns().run(&[
            "ip",
            "link",
            "add",
            "flannel.1",
            "address",
            macs[i],
            "mtu",
            "1450",
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            &ip,
            "dev",
            "eth0",
            "dstport",
            "8472",
            "nolearning",
        ])?;
        n.ns().run(&["ip", "addr", "add", &addr, "dev", "flannel.1"])?;
        n.ns().run(&["ip", "link", "set", "flannel.1", "up"])?;
    }
    for on in lab.nodes() {
        for peer in lab.nodes().iter().filter(|p| p.index() != on.index()) {
            let s = subnet(peer.index());
            let gw = s.ip().to_string();
            let mac = macs[peer.index()];
            on.ns().run(&[
                "ip",
                "neigh",
                "replace",
                &gw,
                "lladdr",
                mac,
                "dev",
                "flannel.1",
                "nud",
                "permanent",
            ])?;
            on.ns().run(&[
                "bridge",
                "fdb",
                "replace",
                mac,
                "dev",
                "flannel.1",
                "dst",
                &peer.ip().to_string(),
                "self",
                "permanent",
            ])?;
            on.ns().run(&[
                "ip",
                "route",
                "replace",
                &s.to_string(),
                "via",
                &gw,
                "dev",
                "flannel.1",
                "onlink",
            ])?;
        }
    }
    assert_eq!(lab.flannel_routes(0)?, vec![subnet(1)]);
    assert!(lab.show_fdb(0)?.contains("dst 198.18.0.11"));
    assert!(lab.show_neighbours(1)?.contains(macs[0]));
    plain_pods(&mut lab, 2, 1, 1450)?;
    let (a, b) = (0, 1);
    assert_eq!(lab.pod(a)?.mtu()?, 1450);
    let to = lab.pod(b)?.ip();
    lab.wait_ping(a, to, Duration::from_secs(10))?;
    // Largest unfragmented ICMP payload at MTU 1450 passes; one byte more is refused locally.
    assert!(lab.pod(a)?.ping_once(to, Some(1450 - 28)));
    assert!(!lab.pod(a)?.ping_once(to, Some(1450 - 27)));
    let report = lab.iperf(a, b, 2)?;
    assert!(report.bytes_received > 10_000_000, "{report:?}");
    assert!(report.bits_per_second > 50e6, "{report:?}");
    Ok(())
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    require_root();
    let recorded = std::sync::Mutex::new(None);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lab = Lab::new(PREFIX).unwrap();
        lab.add_node().unwrap();
        lab.start_etcd(1).unwrap();
        *recorded.lock().unwrap() = Some(footprint(&lab));
        panic!("deliberate");
    }));
    assert!(outcome.is_err());
    let f = recorded.lock().unwrap().take().unwrap();
    assert!(!f.pids.is_empty() && f.namespaces.len() == 2, "{:?} {:?}", f.namespaces, f.pids);
    assert_gone(&f);
}

#[test]
fn cleanup_prefix_removes_a_leaked_lab() -> Result<()> {
    require_root();
    let mut lab = Lab::new(PREFIX)?;
    lab.add_node()?;
    lab.start_etcd(1)?;
    let f = footprint(&lab);
    let id = lab.id().to_string();
    // As if the process had been killed: no destructor runs.
    std::mem::forget(lab);
    assert!(Path::new(&f.dir).exists());
    let cleaned = cleanup_prefix(&id)?;
    assert_eq!(cleaned.namespaces.len(), 2, "{cleaned:?}");
    assert!(!cleaned.pids.is_empty(), "{cleaned:?}");
    assert_gone(&f);
    assert!(cleanup_prefix("").is_err());
    assert!(cleanup_prefix("a/b").is_err());
    Ok(())
}

#[test]
fn names_fit_in_fifteen_bytes_and_bad_prefixes_are_refused() {
    require_root();
    assert!(Lab::new("toolong7").is_err());
    assert!(Lab::new("a-b").is_err());
    let lab = Lab::new("wtlab9").unwrap();
    assert!(lab.id().len() <= 9);
    assert!(format!("{}n19p19", lab.id()).len() <= 15);
    assert_eq!(weft_lab::lab::node_ip(0), Some(Ipv4Addr::new(198, 18, 0, 10)));
    assert_eq!(weft_lab::lab::node_ip(200), None);
}

#[test]
fn stock_flannel_conflist_attaches_pods_with_a_hand_written_subnet_env() -> Result<()> {
    // weft's cnitool (or the lab's runner until it is built) + flannel → bridge → host-local,
    // with subnet.env written by hand and host-gw routes in place of flanneld.
    require_root();
    weft_lab::bins::require(&["cnitool", "flannel", "bridge", "host-local"])?;
    let cnitool = Runner::Cnitool(weft_lab::bins::bin("cnitool"));
    let mut lab = Lab::new(PREFIX)?;
    for _ in 0..2 {
        lab.add_node()?;
    }
    for i in 0..2 {
        let env = weft_common_subnet_env(i);
        let path = lab.node(i)?.subnet_file().to_path_buf();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, env).unwrap();
        lab.use_flannel_cni(i)?;
        lab.add_pod_with(i, &cnitool)?;
    }
    host_gw_routes(&lab)?;
    let node1 = lab.node(1)?.cni_dirs().clone();
    let files = |d: &Path| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
    assert_eq!(files(&node1.cache.join("results")), 1, "cnitool caches the result in CNI_CACHE_DIR");
    assert_eq!(files(&node1.flannel_data), 1, "flannel saves the delegate config in dataDir");
    for p in lab.pods() {
        assert!(subnet(p.node()).contains(p.ip()), "pod {} got {}", p.ns().name(), p.ip());
        assert_eq!(p.mtu()?, 1450, "FLANNEL_MTU reaches the pod");
    }
    let matrix = lab.ping_matrix()?;
    assert!(matrix.all_ok(), "ping matrix:\n{matrix}");
    // DEL replays the saved delegate config; the pod's address goes back to host-local.
    let ip = lab.pod(1)?.ip();
    lab.del_pod(1)?;
    let ipam = lab.node(1)?.cni_dirs().ipam_data.join("cbr0").join(ip.to_string());
    assert!(!ipam.exists(), "host-local reservation {} survived DEL", ipam.display());
    assert_eq!(files(&node1.cache.join("results")), 0);
    assert_eq!(files(&node1.flannel_data), 0);
    Ok(())
}

fn weft_common_subnet_env(i: usize) -> String {
    format!(
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.{}.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        i + 1
    )
}

#[test]
fn weft_lab_up_tears_down_on_sigterm_and_demo_fails_clearly_without_binaries() {
    require_root();
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let exe = env!("CARGO_BIN_EXE_weft-lab");
    let mut child = Command::new(exe)
        .args(["up", "--bare", "--nodes", "2", "--prefix", PREFIX])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let id = loop {
        let line = lines.next().expect("weft-lab up ended before ready").unwrap();
        if let Some(rest) = line.strip_prefix("ready ") {
            break rest.split(';').next().unwrap().to_string();
        }
    };
    let names: Vec<String> = netns_names().unwrap().into_iter().filter(|n| n.starts_with(&id)).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let pids: Vec<u32> = weft_lab::cmd::sh(&["ip", "netns", "pids", &format!("{id}sw")])
        .stdout
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(!pids.is_empty(), "etcd runs in the switch");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let dir = std::env::temp_dir().join("weft-lab").join(&id);
    assert_gone(&Footprint { namespaces: names, pids, dir });

    // The demo names what is missing and fails (never a silent pass).
    let empty = std::env::temp_dir().join(format!("weft-lab-empty-bins-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out =
        Command::new(exe).args(["demo", "--prefix", PREFIX]).env("WEFT_BIN_DIR", &empty).output().unwrap();
    let _ = std::fs::remove_dir(&empty);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flanneld") && err.contains("not found"), "{err}");
}

#[test]
fn ping_matrix_names_unreachable_pairs_within_seconds() -> Result<()> {
    // No routes between the nodes: same-node pairs answer, cross-node pairs fail, fast.
    require_root();
    let mut lab = Lab::new(PREFIX)?;
    for _ in 0..2 {
        lab.add_node()?;
    }
    plain_pods(&mut lab, 2, 2, 1500)?;
    let start = std::time::Instant::now();
    let m = lab.ping_matrix()?;
    assert!(start.elapsed() < Duration::from_secs(15), "took {:?}", start.elapsed());
    let mut want = Vec::new();
    for f in 0..4 {
        for t in 0..4 {
            if lab.pod(f)?.node() != lab.pod(t)?.node() {
                want.push((f, t));
            }
        }
    }
    assert_eq!(m.failures(), want, "\n{m}");
    Ok(())
}

#[test]
fn health_endpoint_helper_speaks_http_inside_the_node() -> Result<()> {
    // A stand-in HTTP server on flanneld's health port proves the helper, not flanneld.
    require_root();
    let mut lab = Lab::new(PREFIX)?;
    lab.add_node()?;
    let ns = lab.node(0)?.ns().name().to_string();
    let port = weft_lab::flannel::HEALTHZ_PORT.to_string();
    let srv =
        lab.spawn_extra("http.server", &ns, &["python3", "-m", "http.server", &port, "--bind", "127.0.0.1"])?;
    let (code, body) =
        weft_lab::wait::until("http server up", Duration::from_secs(10), Duration::from_millis(100), || {
            Ok(lab.flanneld_http(0, "/").ok())
        })?;
    assert_eq!(code, 200);
    assert!(body.contains("Directory listing"), "{body}");
    assert_eq!(lab.flanneld_http(0, "/nope")?.0, 404);
    lab.stop_extra(srv)?;
    assert!(lab.flanneld_http(0, "/").is_err());
    Ok(())
}
