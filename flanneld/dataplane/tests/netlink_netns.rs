//! The rtnetlink dataplane against a real kernel, in namespaces created per test (prefix `wtdp`).
//! Kernel state is read back with `ip -j` / `bridge -j`, independent of our own dump code.
//! Needs root; fails (never skips) without it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Instant;

use weft_common::mac::format_mac;
use weft_dataplane::netlink::NetlinkDataplane;
use weft_dataplane::own::Ownership;
use weft_dataplane::plan::{plan_add, plan_reconcile, plan_remove, Peer};
use weft_dataplane::{Dataplane, DeviceInfo, KernelState, Mac, NetOp, VxlanSpec};
use weft_lab::ns::{require_root, Netns};

/// Runs `f` with a fresh [`NetlinkDataplane`] whose socket lives in `ns`: a dedicated thread
/// enters the namespace, then builds a current-thread runtime (setns is per thread).
fn in_ns<T, F, Fut>(ns: &Netns, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(NetlinkDataplane) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let path = ns.path();
    std::thread::spawn(move || {
        let target = weft_common::netns::NetNs::open(&path).unwrap();
        let _guard = target.enter().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let dp = NetlinkDataplane::new().unwrap();
            f(dp).await
        })
    })
    .join()
    .unwrap()
}

/// A namespace with an underlay `eth0` at `198.18.0.<host>/24` (a veth whose peer stays in the
/// namespace, up: the kernel has no dummy module here).
fn node(host: u8) -> Netns {
    node_in("wtdp", host)
}

/// [`node`] with another namespace name prefix.
fn node_in(prefix: &str, host: u8) -> Netns {
    require_root();
    let ns = Netns::unique(prefix);
    let addr = format!("198.18.0.{host}/24");
    ns.exec(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]).expect_ok();
    ns.exec(&["ip", "link", "set", "eth0p", "up"]).expect_ok();
    ns.exec(&["ip", "addr", "add", &addr, "dev", "eth0"]).expect_ok();
    ns.exec(&["ip", "link", "set", "eth0", "up"]).expect_ok();
    ns
}

fn ifindex(ns: &Netns, dev: &str) -> u32 {
    let v = ns.ip_json(&["link", "show", "dev", dev]);
    v[0]["ifindex"].as_u64().unwrap() as u32
}

fn spec(ns: &Netns, host: u8, own: &str) -> VxlanSpec {
    VxlanSpec {
        local: format!("198.18.0.{host}").parse().unwrap(),
        address: format!("{own}/32").parse().unwrap(),
        ..weft_dataplane::fake::test_spec(ifindex(ns, "eth0"))
    }
}

fn ensure(ns: &Netns, s: VxlanSpec, hint: Option<Mac>) -> DeviceInfo {
    in_ns(ns, move |mut dp| async move { dp.ensure_device(&s, hint).await.unwrap() })
}

/// Ensures the device, applies `ops`, returns the report's (applied, failed, overrun).
fn apply(ns: &Netns, s: VxlanSpec, ops: Vec<NetOp>) -> (usize, usize, bool) {
    let (applied, failed, overrun, _) = apply_on(ns, vec![s], ops);
    (applied, failed, overrun)
}

/// Ensures the devices `specs` in order, applies `ops`, returns the report's (applied,
/// failed, overrun) and a dump afterwards.
fn apply_on(ns: &Netns, specs: Vec<VxlanSpec>, ops: Vec<NetOp>) -> (usize, usize, bool, KernelState) {
    in_ns(ns, move |mut dp| async move {
        for s in &specs {
            dp.ensure_device(s, None).await.unwrap();
        }
        let r = dp.apply(&ops).await.unwrap();
        for (op, why) in &r.failed {
            eprintln!("failed: {op:?}: {why}");
        }
        (r.applied, r.failed.len(), r.overrun, dp.dump().await.unwrap())
    })
}

fn text(ns: &Netns, argv: &[&str]) -> String {
    ns.exec(argv).expect_ok().stdout.trim().to_string()
}

fn peer(third: u8, host: u8, mac: Mac) -> Peer {
    Peer {
        subnet: format!("10.5.{third}.0/24").parse().unwrap(),
        public_ip: format!("198.18.0.{host}").parse().unwrap(),
        vtep_mac: mac,
        direct: false,
    }
}

/// The ownership rule for `peers` in 10.5.0.0/16 (lease size 24), DirectRouting on.
fn owner(peers: &[Peer]) -> Ownership {
    Ownership::of_peers("10.5.0.0/16".parse().unwrap(), 24, peers, true)
}

/// The reconcile ops for `peers` (there must be no conflict).
fn reconcile(peers: &[Peer], st: &KernelState) -> Vec<NetOp> {
    let r = plan_reconcile(peers, st, &owner(peers));
    assert!(r.conflicts.is_empty(), "{:?}", r.conflicts);
    r.ops
}

/// Only flanneld's entries of `st` (for `peers`), the device index dropped.
fn ours(peers: &[Peer], st: &KernelState) -> KernelState {
    KernelState { device: 0, ..owner(peers).owned(st) }
}

const M1: Mac = [0x6e, 0xaa, 0xbb, 0xcc, 0xdd, 0x01];
const M2: Mac = [0x6e, 0xaa, 0xbb, 0xcc, 0xdd, 0x02];

#[test]
fn created_device_has_upstream_attributes() {
    let ns = node(2);
    let s = spec(&ns, 2, "10.5.72.0");
    let info = ensure(&ns, s, None);
    let link = ns.ip_json(&["-d", "link", "show", "dev", "flannel.1"]);
    let l = &link[0];
    assert_eq!(l["ifindex"].as_u64(), Some(u64::from(info.index)));
    assert_eq!(l["mtu"], 1450);
    assert!(l.get("txqlen").is_none(), "txqueuelen 0 (iproute2 omits a zero qlen)");
    assert_eq!(l["address"].as_str(), Some(format_mac(&info.mac).as_str()));
    assert_eq!(info.mac[0] & 3, 2, "locally administered unicast");
    assert!(l["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    let kind = &l["linkinfo"];
    assert_eq!(kind["info_kind"], "vxlan");
    let d = &kind["info_data"];
    assert_eq!(d["id"], 1);
    assert_eq!(d["local"], "198.18.0.2");
    assert_eq!(d["link"], "eth0");
    assert_eq!(d["port"], 8472);
    assert_eq!(d["learning"], false);
    assert_eq!(d["ttl"], 0);
    assert_eq!(d["ageing"], 300);
    assert_eq!(d["udp_csum"], true);
    assert_eq!(d["udp_zero_csum6_tx"], false);
    assert!(d.get("gbp").is_none());
    assert!(d.get("proxy").is_none() || d["proxy"] == false);
    let addrs = ns.ip_json(&["-4", "addr", "show", "dev", "flannel.1"]);
    let a = addrs[0]["addr_info"].as_array().unwrap();
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["local"], "10.5.72.0");
    assert_eq!(a[0]["prefixlen"], 32);
    assert_eq!(a[0]["scope"], "global");
    assert!(a[0].get("broadcast").is_none());
    assert_eq!(text(&ns, &["cat", "/proc/sys/net/ipv6/conf/flannel.1/accept_ra"]), "0");
}

#[test]
fn port_and_gbp_are_sent_when_asked_and_hint_mac_is_used() {
    let ns = node(2);
    let mut s = spec(&ns, 2, "10.5.72.0");
    s.port = 4789;
    s.gbp = true;
    let hint = [0x2a, 0x11, 0x22, 0x33, 0x44, 0x55];
    let info = ensure(&ns, s, Some(hint));
    assert_eq!(info.mac, hint);
    let d = ns.ip_json(&["-d", "link", "show", "dev", "flannel.1"])[0]["linkinfo"]["info_data"].clone();
    assert_eq!(d["port"], 4789);
    assert_eq!(d["gbp"], true);
}

#[test]
fn compatible_device_is_adopted_with_its_mac_and_addresses_are_fixed() {
    let ns = node(2);
    let s = spec(&ns, 2, "10.5.72.0");
    let first = ensure(&ns, s.clone(), None);
    // Another address in the cluster network (an old lease) and one outside it (not ours).
    ns.exec(&["ip", "addr", "add", "10.5.9.0/32", "dev", "flannel.1"]).expect_ok();
    ns.exec(&["ip", "addr", "add", "192.0.2.1/32", "dev", "flannel.1"]).expect_ok();
    ns.exec(&["ip", "addr", "del", "10.5.72.0/32", "dev", "flannel.1"]).expect_ok();
    ns.exec(&["ip", "link", "set", "flannel.1", "down", "mtu", "1400"]).expect_ok();
    let second = ensure(&ns, s, Some([2, 0xde, 0xad, 0, 0, 1]));
    assert_eq!(second.index, first.index, "same device");
    assert_eq!(second.mac, first.mac, "MAC kept, hint ignored on adoption");
    assert_eq!(second.mtu, 1400, "MTU of an adopted device is not changed (upstream)");
    let addrs = ns.ip_json(&["-4", "addr", "show", "dev", "flannel.1"]);
    let mut got: Vec<String> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    got.sort();
    assert_eq!(got, vec!["10.5.72.0/32", "192.0.2.1/32"]);
    assert!(ns.ip_json(&["link", "show", "dev", "flannel.1"])[0]["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "UP"));
}

#[test]
fn incompatible_devices_are_replaced() {
    let ns = node(2);
    let s = spec(&ns, 2, "10.5.72.0");
    // Wrong VNI.
    ns.exec(&[
        "ip",
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        "2",
        "dev",
        "eth0",
        "local",
        "198.18.0.2",
    ])
    .expect_ok();
    let old = ifindex(&ns, "flannel.1");
    let hint = [0x2a, 0, 0, 0, 0, 7];
    let info = ensure(&ns, s.clone(), Some(hint));
    assert_ne!(info.index, old);
    assert_eq!(info.mac, hint);
    let d = ns.ip_json(&["-d", "link", "show", "dev", "flannel.1"])[0]["linkinfo"]["info_data"].clone();
    assert_eq!(d["id"], 1);
    // Wrong kind.
    ns.exec(&["ip", "link", "del", "flannel.1"]).expect_ok();
    ns.exec(&["ip", "link", "add", "flannel.1", "type", "veth", "peer", "name", "x0"]).expect_ok();
    ensure(&ns, s.clone(), None);
    let l = ns.ip_json(&["-d", "link", "show", "dev", "flannel.1"]);
    assert_eq!(l[0]["linkinfo"]["info_kind"], "vxlan");
    // Wrong local address.
    ns.exec(&["ip", "link", "del", "flannel.1"]).expect_ok();
    ns.exec(&[
        "ip",
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        "1",
        "dev",
        "eth0",
        "local",
        "198.18.0.9",
    ])
    .expect_ok();
    ensure(&ns, s, None);
    let d = ns.ip_json(&["-d", "link", "show", "dev", "flannel.1"])[0]["linkinfo"]["info_data"].clone();
    assert_eq!(d["local"], "198.18.0.2");
}

#[test]
fn one_peer_add_and_remove_reads_back_like_upstream() {
    let ns = node(2);
    let s = spec(&ns, 2, "10.5.72.0");
    let p = peer(71, 3, M1);
    let (applied, failed, overrun) = apply(&ns, s.clone(), plan_add(None, &p));
    assert_eq!((applied, failed, overrun), (3, 0, false));
    assert_eq!(
        text(&ns, &["ip", "route", "show", "table", "main", "10.5.71.0/24"]),
        "10.5.71.0/24 via 10.5.71.0 dev flannel.1 onlink"
    );
    let r = ns.ip_json(&["-d", "route", "show", "table", "main", "10.5.71.0/24"]);
    assert_eq!(r[0]["protocol"], "boot");
    assert_eq!(r[0]["scope"], "global");
    assert_eq!(r[0]["type"], "unicast");
    assert!(r[0].get("metric").is_none());
    assert_eq!(
        text(&ns, &["ip", "neigh", "show", "dev", "flannel.1"]),
        "10.5.71.0 lladdr 6e:aa:bb:cc:dd:01 PERMANENT"
    );
    assert_eq!(
        text(&ns, &["bridge", "fdb", "show", "dev", "flannel.1"]),
        "6e:aa:bb:cc:dd:01 dst 198.18.0.3 self permanent"
    );
    // Applying again is idempotent.
    assert_eq!(apply(&ns, s.clone(), plan_add(Some(&p), &p)), (3, 0, false));

    assert_eq!(apply(&ns, s, plan_remove(&p)), (3, 0, false));
    assert_eq!(text(&ns, &["ip", "route", "show", "dev", "flannel.1"]), "");
    assert_eq!(text(&ns, &["ip", "neigh", "show", "dev", "flannel.1"]), "");
    assert_eq!(text(&ns, &["bridge", "fdb", "show", "dev", "flannel.1"]), "");
}

#[test]
fn removing_absent_entries_succeeds() {
    let ns = node(2);
    let s = spec(&ns, 2, "10.5.72.0");
    let (applied, failed, _) = apply(&ns, s, plan_remove(&peer(71, 3, M1)));
    assert_eq!((applied, failed), (3, 0));
}

#[test]
fn mac_and_public_ip_changes_leave_no_stale_fdb_entry() {
    let ns = node(2);
    let s = spec(&ns, 2, "10.5.72.0");
    let p1 = peer(71, 3, M1);
    apply(&ns, s.clone(), plan_add(None, &p1));
    let p2 = peer(71, 3, M2);
    assert_eq!(apply(&ns, s.clone(), plan_add(Some(&p1), &p2)).1, 0);
    assert_eq!(
        text(&ns, &["bridge", "fdb", "show", "dev", "flannel.1"]),
        "6e:aa:bb:cc:dd:02 dst 198.18.0.3 self permanent"
    );
    assert_eq!(
        text(&ns, &["ip", "neigh", "show", "dev", "flannel.1"]),
        "10.5.71.0 lladdr 6e:aa:bb:cc:dd:02 PERMANENT"
    );
    let p3 = peer(71, 4, M2);
    assert_eq!(apply(&ns, s, plan_add(Some(&p2), &p3)).1, 0);
    assert_eq!(
        text(&ns, &["bridge", "fdb", "show", "dev", "flannel.1"]),
        "6e:aa:bb:cc:dd:02 dst 198.18.0.4 self permanent"
    );
}

#[test]
fn direct_routing_route_and_onlink_lookup() {
    let ns = node(2);
    ns.exec(&["ip", "route", "add", "default", "via", "198.18.0.1"]).expect_ok();
    let s = spec(&ns, 2, "10.5.72.0");
    let mut p = peer(71, 3, M1);
    p.direct = true;
    let (s2, p2) = (s.clone(), p.clone());
    let (onlink_peer, onlink_far, state) = in_ns(&ns, move |mut dp| async move {
        dp.ensure_device(&s, None).await.unwrap();
        let r = dp.apply(&plan_add(None, &p)).await.unwrap();
        assert_eq!((r.applied, r.failed.len()), (1, 0));
        let routes = dp.dump_routes().await.unwrap();
        let a = routes.is_onlink("198.18.0.3".parse().unwrap());
        let b = routes.is_onlink("203.0.113.9".parse().unwrap());
        let st = dp.dump().await.unwrap();
        assert_eq!(reconcile(std::slice::from_ref(&p), &st), vec![]);
        // Switching to VXLAN replaces the route; back to direct, then removal.
        let mut vx = p.clone();
        vx.direct = false;
        assert!(dp.apply(&plan_add(Some(&p), &vx)).await.unwrap().failed.is_empty());
        assert_eq!(reconcile(std::slice::from_ref(&vx), &dp.dump().await.unwrap()), vec![]);
        assert!(dp.apply(&plan_add(Some(&vx), &p)).await.unwrap().failed.is_empty());
        let back = dp.dump().await.unwrap();
        let only = std::slice::from_ref(&p);
        assert_eq!(ours(only, &back), ours(only, &st), "neighbour and FDB of the VXLAN period are gone");
        (a, b, ours(only, &st))
    });
    assert!(onlink_peer);
    assert!(!onlink_far, "via a gateway is not on-link");
    assert_eq!(state.routes.len(), 1, "the default route is not ours: {state:?}");
    assert_eq!(text(&ns, &["ip", "route", "show", "10.5.71.0/24"]), "10.5.71.0/24 via 198.18.0.3 dev eth0");
    let removed = in_ns(&ns, move |mut dp| async move {
        dp.ensure_device(&s2, None).await.unwrap();
        let r = dp.apply(&plan_remove(&p2)).await.unwrap();
        (r.applied, r.failed.len(), ours(std::slice::from_ref(&p2), &dp.dump().await.unwrap()))
    });
    assert_eq!(removed, (1, 0, Default::default()));
}

#[test]
fn is_onlink_without_any_route_is_false() {
    let ns = node(2);
    let r = in_ns(&ns, |mut dp| async move {
        dp.dump_routes().await.unwrap().is_onlink("203.0.113.9".parse().unwrap())
    });
    assert!(!r);
}

/// DirectRouting's on-link answer from one route dump agrees with the kernel's own lookup
/// (`ip route get`: on-link when the chosen route has no gateway) for connected, gatewayed,
/// more specific, blackhole and metric-ordered routes (namespace `wtown…`).
#[test]
fn onlink_from_one_dump_agrees_with_route_get() {
    let ns = node_in("wtown", 2);
    for r in [
        &["default", "via", "198.18.0.1"][..],
        &["203.0.113.0/24", "dev", "eth0"],
        &["blackhole", "192.0.2.0/24"],
        &["198.51.100.0/24", "via", "198.18.0.1", "metric", "10"],
        &["198.51.100.0/24", "dev", "eth0", "metric", "20"],
        &["198.51.100.128/25", "dev", "eth0", "metric", "30"],
        &["10.9.0.0/16", "via", "198.18.0.1", "table", "100"],
    ] {
        let mut args = vec!["ip", "route", "add"];
        args.extend_from_slice(r);
        ns.exec(&args).expect_ok();
    }
    let probes: Vec<std::net::Ipv4Addr> =
        ["198.18.0.3", "203.0.113.9", "192.0.2.5", "198.51.100.7", "198.51.100.200", "10.9.1.1", "8.8.8.8"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
    let p = probes.clone();
    let ours = in_ns(&ns, move |mut dp| async move {
        let routes = dp.dump_routes().await.unwrap();
        p.iter().map(|a| routes.is_onlink((*a).into())).collect::<Vec<_>>()
    });
    let kernel: Vec<bool> = probes
        .iter()
        .map(|a| {
            let out = ns.exec(&["ip", "-j", "route", "get", &a.to_string()]);
            out.ok()
                && serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()[0].get("gateway").is_none()
        })
        .collect();
    assert_eq!(ours, kernel, "{probes:?}");
    assert_eq!(ours, [true, true, false, false, true, false, false]);
}

fn many_peers(n: u32) -> Vec<Peer> {
    (0..n)
        .map(|i| {
            // /27 subnets from 10.5.8.0: 1,000 of them fit in the /16.
            let base = u32::from(Ipv4Addr::new(10, 5, 8, 0)) + i * 32;
            Peer {
                subnet: ipnetwork::Ipv4Network::new(Ipv4Addr::from(base), 27).unwrap().into(),
                public_ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 4, 0)) + i).into(),
                vtep_mac: [0x2a, 0, 0, 0, (i >> 8) as u8, i as u8],
                direct: false,
            }
        })
        .collect()
}

#[test]
fn thousand_peers_apply_dump_reconcile_remove() {
    let ns = node(2);
    let s = spec(&ns, 2, "10.5.0.0");
    let peers = many_peers(1000);
    let (apply_ms, dump_ms, remove_ms, counts) = in_ns(&ns, move |mut dp| async move {
        dp.ensure_device(&s, None).await.unwrap();
        let ops: Vec<NetOp> = peers.iter().flat_map(|p| plan_add(None, p)).collect();
        assert_eq!(ops.len(), 3000);
        let t = Instant::now();
        let r = dp.apply(&ops).await.unwrap();
        let apply_ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!((r.applied, r.failed.len(), r.overrun), (3000, 0, false));
        let t = Instant::now();
        let st = dp.dump().await.unwrap();
        let dump_ms = t.elapsed().as_secs_f64() * 1e3;
        let mine = ours(&peers, &st);
        let counts = (mine.neighs.len(), mine.fdb.len(), mine.routes.len());
        assert_eq!(reconcile(&peers, &st), vec![]);
        let ops: Vec<NetOp> = peers.iter().flat_map(plan_remove).collect();
        let t = Instant::now();
        let r = dp.apply(&ops).await.unwrap();
        let remove_ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!((r.applied, r.failed.len()), (3000, 0));
        let st = dp.dump().await.unwrap();
        assert_eq!(ours(&peers, &st), Default::default());
        // For comparison: the same batch one request at a time.
        dp.set_window(1);
        let ops: Vec<NetOp> = peers.iter().flat_map(|p| plan_add(None, p)).collect();
        let t = Instant::now();
        assert_eq!(dp.apply(&ops).await.unwrap().applied, 3000);
        eprintln!("1000 peers, window 1: apply {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        (apply_ms, dump_ms, remove_ms, counts)
    });
    eprintln!("1000 peers: apply {apply_ms:.1} ms, dump {dump_ms:.1} ms, remove {remove_ms:.1} ms");
    assert_eq!(counts, (1000, 1000, 1000));
}

#[test]
fn reconcile_heals_deleted_route_and_removes_extra_one() {
    let ns = node(2);
    let s = spec(&ns, 2, "10.5.72.0");
    let peers = vec![peer(71, 3, M1), peer(73, 4, M2)];
    let ops: Vec<NetOp> = peers.iter().flat_map(|p| plan_add(None, p)).collect();
    apply(&ns, s.clone(), ops);
    ns.exec(&["ip", "route", "del", "10.5.71.0/24"]).expect_ok();
    ns.exec(&["ip", "route", "add", "10.5.99.0/24", "via", "10.5.99.0", "dev", "flannel.1", "onlink"])
        .expect_ok();
    ns.exec(&[
        "bridge",
        "fdb",
        "append",
        "2a:00:00:00:00:99",
        "dev",
        "flannel.1",
        "dst",
        "198.18.0.99",
        "self",
        "permanent",
    ])
    .expect_ok();
    let p2 = peers.clone();
    let (planned, after) = in_ns(&ns, move |mut dp| async move {
        dp.ensure_device(&s, None).await.unwrap();
        let st = dp.dump().await.unwrap();
        let ops = reconcile(&p2, &st);
        let r = dp.apply(&ops).await.unwrap();
        assert_eq!(r.failed.len(), 0);
        let after = reconcile(&p2, &dp.dump().await.unwrap());
        (ops, after)
    });
    assert_eq!(planned.len(), 3, "add one route, delete one route and one FDB entry: {planned:?}");
    assert_eq!(after, vec![]);
    let routes = text(&ns, &["ip", "route", "show", "dev", "flannel.1"]);
    assert_eq!(routes, "10.5.71.0/24 via 10.5.71.0 onlink \n10.5.73.0/24 via 10.5.73.0 onlink");
    assert!(!text(&ns, &["bridge", "fdb", "show", "dev", "flannel.1"]).contains("2a:00:00:00:00:99"));
}

/// Two nodes on a veth underlay, each with flannel.1 programmed for the other: the overlay
/// addresses ping each other over VXLAN.
#[test]
fn two_nodes_ping_over_vxlan() {
    require_root();
    let a = Netns::unique("wtdp");
    let b = Netns::unique("wtdp");
    a.exec(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0b", "netns", b.name()])
        .expect_ok();
    b.exec(&["ip", "link", "set", "eth0b", "name", "eth0"]).expect_ok();
    for (ns, ip) in [(&a, "198.18.0.2/24"), (&b, "198.18.0.3/24")] {
        ns.exec(&["ip", "addr", "add", ip, "dev", "eth0"]).expect_ok();
        ns.exec(&["ip", "link", "set", "eth0", "up"]).expect_ok();
    }
    let sa = spec(&a, 2, "10.5.1.0");
    let sb = spec(&b, 3, "10.5.2.0");
    let ia = ensure(&a, sa.clone(), None);
    let ib = ensure(&b, sb.clone(), None);
    let pa = Peer {
        subnet: "10.5.1.0/24".parse().unwrap(),
        public_ip: "198.18.0.2".parse().unwrap(),
        vtep_mac: ia.mac,
        direct: false,
    };
    let pb = Peer {
        subnet: "10.5.2.0/24".parse().unwrap(),
        public_ip: "198.18.0.3".parse().unwrap(),
        vtep_mac: ib.mac,
        direct: false,
    };
    assert_eq!(apply(&a, sa, plan_add(None, &pb)).1, 0);
    assert_eq!(apply(&b, sb, plan_add(None, &pa)).1, 0);
    let out = a.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", "10.5.1.0", "10.5.2.0"]);
    assert!(out.ok(), "ping failed: {}\n{}", out.stdout, out.stderr);
    // And the frames really went through the VXLAN device.
    let stats = a.ip_json(&["-s", "link", "show", "dev", "flannel.1"]);
    assert!(stats[0]["stats64"]["tx"]["packets"].as_u64().unwrap() >= 3);
}

/// A tiny receive buffer and an unbounded window: whether or not the kernel drops acks
/// (ENOBUFS; on the test kernel it does not, netlink acks are queued regardless), `apply`
/// returns instead of hanging, its report is consistent, and dump + reconcile converges.
#[test]
fn tiny_buffer_huge_window_never_hangs_and_converges() {
    let ns = node(2);
    let s = spec(&ns, 2, "10.5.0.0");
    let peers = many_peers(1000);
    let path = ns.path();
    let (overrun, healed) = std::thread::spawn(move || {
        let target = weft_common::netns::NetNs::open(&path).unwrap();
        let _guard = target.enter().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let mut dp = NetlinkDataplane::with_receive_buffer(0).unwrap();
            dp.set_window(100_000);
            dp.ensure_device(&s, None).await.unwrap();
            let ops: Vec<NetOp> = peers.iter().flat_map(|p| plan_add(None, p)).collect();
            let r = dp.apply(&ops).await.unwrap();
            assert!(r.failed.is_empty(), "{:?}", r.failed.first());
            if r.overrun {
                assert!(r.applied < ops.len(), "overrun ops are not counted as applied");
            } else {
                assert_eq!(r.applied, ops.len());
            }
            // Converge with a normal window, on the same socket.
            dp.set_window(64);
            let mut rounds = 0;
            loop {
                let st = dp.dump().await.unwrap();
                let fix = reconcile(&peers, &st);
                if fix.is_empty() {
                    break;
                }
                rounds += 1;
                assert!(rounds < 5, "no convergence");
                dp.apply(&fix).await.unwrap();
            }
            (r.overrun, rounds)
        })
    })
    .join()
    .unwrap();
    eprintln!("overrun: {overrun}, reconcile rounds: {healed}");
    assert!(overrun || healed == 0, "nothing to heal without an overrun");
}

/// Issue 13 at the dataplane level (namespace `wtown…`): the dump reports operators' routes with
/// their real protocol, table and device; reconciliation with DirectRouting off and on plans
/// nothing for them, and a route holding a peer subnet is a conflict — not replaced, although
/// the kernel's create+replace would have overwritten it (shown at the end).
#[test]
fn operator_routes_are_dumped_as_they_are_and_never_planned_over() {
    let ns = node_in("wtown", 2);
    let s = spec(&ns, 2, "10.5.72.0");
    let p = peer(71, 11, M1);
    let q = peer(73, 12, M2);
    for r in [
        &["10.5.200.7/32", "via", "198.18.0.11", "dev", "eth0"][..],
        &["10.5.201.0/24", "via", "198.18.0.11", "dev", "eth0", "proto", "static"],
        &["10.5.202.0/24", "via", "198.18.0.99", "dev", "eth0"],
        &["10.5.71.0/24", "via", "198.18.0.11", "dev", "eth0", "table", "100"],
        // In the way of peer q's route.
        &["10.5.73.0/24", "via", "198.18.0.50", "dev", "eth0", "proto", "static"],
    ] {
        let mut args = vec!["ip", "route", "add"];
        args.extend_from_slice(r);
        ns.exec(&args).expect_ok();
    }
    let all_routes = || text(&ns, &["ip", "route", "show", "table", "all"]);
    let before = all_routes();
    let (peers, s2) = (vec![p.clone(), q.clone()], s.clone());
    let (conflicts, states) = in_ns(&ns, move |mut dp| async move {
        dp.ensure_device(&s2, None).await.unwrap();
        let mut conflicts = Vec::new();
        let mut states = Vec::new();
        for direct in [false, true, false] {
            let o = Ownership::of_peers("10.5.0.0/16".parse().unwrap(), 24, &peers, direct);
            let st = dp.dump().await.unwrap();
            let plan = plan_reconcile(&peers, &st, &o);
            assert!(dp.apply(&plan.ops).await.unwrap().failed.is_empty());
            conflicts.push(plan.conflicts.iter().map(|c| c.route.to_string()).collect::<Vec<_>>());
            states.push(st);
        }
        (conflicts, states)
    });
    let st = &states[0];
    let dev = st.device;
    let find = |dst: &str, table: u32| {
        st.routes.iter().find(|r| r.dst.to_string() == dst && r.table == table).unwrap().clone()
    };
    let eth0 = ifindex(&ns, "eth0");
    let r = find("10.5.200.7/32", 254);
    assert_eq!((r.protocol, r.oif, r.onlink, r.metric), (3, Some(eth0), false, 0), "iproute2 default: boot");
    assert_eq!(find("10.5.201.0/24", 254).protocol, 4);
    assert_eq!(find("10.5.71.0/24", 100).gw, Some("198.18.0.11".parse().unwrap()));
    assert_ne!(dev, 0);
    for c in &conflicts {
        assert_eq!(c.len(), 1, "{conflicts:?}");
        assert!(c[0].starts_with("10.5.73.0/24 via 198.18.0.50") && c[0].contains("proto static"), "{c:?}");
    }
    // Everything that was there is still there, flanneld's own peer route for p added.
    let after = all_routes();
    for line in before.lines() {
        assert!(after.lines().any(|l| l == line), "{line} is gone:\n{after}");
    }
    assert!(after.contains("10.5.71.0/24 via 10.5.71.0 dev flannel.1 onlink"), "{after}");
    // An exclusive create meets the foreign route, reports it and changes nothing.
    let dst: ipnetwork::IpNetwork = "10.5.73.0/24".parse().unwrap();
    let create = NetOp::CreateRoute { dst, gw: "10.5.73.0".parse().unwrap(), onlink: true };
    let s3 = s.clone();
    let report = in_ns(&ns, move |mut dp| async move {
        dp.ensure_device(&s3, None).await.unwrap();
        let r = dp.apply(std::slice::from_ref(&create)).await.unwrap();
        (r.applied, r.failed.len(), r.exists)
    });
    assert_eq!(report.0 + report.1, 0);
    assert_eq!(report.2.len(), 1);
    assert_eq!(
        text(&ns, &["ip", "route", "show", "table", "main", "10.5.73.0/24"]),
        "10.5.73.0/24 via 198.18.0.50 dev eth0 proto static"
    );
    // What the conflict rule prevents: the kernel's create+replace overwrites the foreign route.
    let (applied, failed, _) = apply(&ns, s, plan_add(None, &q));
    assert_eq!((applied, failed), (3, 0));
    assert_eq!(
        text(&ns, &["ip", "route", "show", "table", "main", "10.5.73.0/24"]),
        "10.5.73.0/24 via 10.5.73.0 dev flannel.1 onlink"
    );
}

// ---- Dual stack: the `flannel-v6.<VNI>` device and the IPv6 side of a peer (docs/flannel.md
// §8.1–8.5). The IPv6 underlay is in the benchmarking range 2001:2::/48, inside the namespace.

/// [`node`] with `2001:2::<host>/64` on `eth0` as well (no DAD: usable at once).
fn node6(host: u8) -> Netns {
    let ns = node_in("wtV6", host);
    let addr = format!("2001:2::{host}/64");
    ns.exec(&["ip", "-6", "addr", "add", &addr, "dev", "eth0", "nodad"]).expect_ok();
    ns
}

/// The `flannel-v6.1` spec of [`node6`] `host` with the own IPv6 subnet `own` (`S6::`).
fn spec6(ns: &Netns, host: u8, own: &str) -> VxlanSpec {
    VxlanSpec {
        local: format!("2001:2::{host}").parse().unwrap(),
        address: format!("{own}/128").parse().unwrap(),
        ..weft_dataplane::fake::test_spec_v6(ifindex(ns, "eth0"))
    }
}

/// The IPv6 side of a peer: `fd00:5:0:<third>::/64` at `2001:2::<host>`.
fn peer6(third: u8, host: u8, mac: Mac) -> Peer {
    let subnet = format!("fd00:5:0:{third}::/64").parse().unwrap();
    Peer { subnet, public_ip: format!("2001:2::{host}").parse().unwrap(), ..peer(third, host, mac) }
}

/// The ownership rule for IPv6 `peers` in fd00:5::/48 (lease size 64), DirectRouting off.
fn owner6(peers: &[Peer]) -> Ownership {
    Ownership::of_peers("fd00:5::/48".parse().unwrap(), 64, peers, false)
}

/// Ensures both devices (IPv4 first, as the daemon does), applies `ops`, returns the report's
/// (applied, failed) and a dump afterwards.
fn apply_dual(ns: &Netns, s4: VxlanSpec, s6: VxlanSpec, ops: Vec<NetOp>) -> (usize, usize, KernelState) {
    let (applied, failed, _, st) = apply_on(ns, vec![s4, s6], ops);
    (applied, failed, st)
}

#[test]
fn v6_device_has_upstream_attributes_next_to_the_v4_one() {
    let ns = node6(2);
    let (s4, s6) = (spec(&ns, 2, "10.5.72.0"), spec6(&ns, 2, "fd00:5:0:48::"));
    let (i4, i6) = in_ns(&ns, move |mut dp| async move {
        let a = dp.ensure_device(&s4, None).await.unwrap();
        let b = dp.ensure_device(&s6, Some([0x2a, 6, 6, 6, 6, 6])).await.unwrap();
        (a, b)
    });
    assert_ne!(i4.index, i6.index);
    assert_eq!(i6.mac, [0x2a, 6, 6, 6, 6, 6]);
    let l = ns.ip_json(&["-d", "link", "show", "dev", "flannel-v6.1"])[0].clone();
    assert_eq!(l["ifindex"].as_u64(), Some(u64::from(i6.index)));
    assert_eq!(l["mtu"], 1430, "underlay 1500 − 70 (§8.4)");
    assert!(l["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    let d = &l["linkinfo"]["info_data"];
    assert_eq!(l["linkinfo"]["info_kind"], "vxlan");
    assert_eq!(d["id"], 1);
    assert_eq!(d["local6"], "2001:2::2", "IFLA_VXLAN_LOCAL6");
    assert_eq!(d["link"], "eth0");
    assert_eq!(d["port"], 8472);
    assert_eq!(d["learning"], false);
    assert!(d.get("gbp").is_none());
    let addrs = ns.ip_json(&["-6", "addr", "show", "dev", "flannel-v6.1", "scope", "global"]);
    // (`ip -j` adds an empty object per address filtered out by `scope`.)
    let a: Vec<_> =
        addrs[0]["addr_info"].as_array().unwrap().iter().filter(|a| a.get("local").is_some()).collect();
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["local"], "fd00:5:0:48::");
    assert_eq!(a[0]["prefixlen"], 128);
    assert_eq!(text(&ns, &["cat", "/proc/sys/net/ipv6/conf/flannel-v6.1/accept_ra"]), "0");
    // The IPv4 device is untouched by the second one.
    let d4 = ns.ip_json(&["-d", "link", "show", "dev", "flannel.1"])[0]["linkinfo"]["info_data"].clone();
    assert_eq!(d4["local"], "198.18.0.2");
    // Adopted on the next run: same device, same MAC; a stale address inside the IPv6 network
    // is removed, one outside it stays.
    ns.exec(&["ip", "-6", "addr", "add", "fd00:5:0:9::/128", "dev", "flannel-v6.1", "nodad"]).expect_ok();
    ns.exec(&["ip", "-6", "addr", "add", "2001:db8::1/128", "dev", "flannel-v6.1", "nodad"]).expect_ok();
    let s6 = spec6(&ns, 2, "fd00:5:0:48::");
    let again = in_ns(&ns, move |mut dp| async move { dp.ensure_device(&s6, None).await.unwrap() });
    assert_eq!((again.index, again.mac), (i6.index, i6.mac));
    let addrs = ns.ip_json(&["-6", "addr", "show", "dev", "flannel-v6.1", "scope", "global"]);
    let mut got: Vec<String> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| Some(format!("{}/{}", a.get("local")?.as_str()?, a["prefixlen"])))
        .collect();
    got.sort();
    assert_eq!(got, vec!["2001:db8::1/128", "fd00:5:0:48::/128"]);
}

#[test]
fn v6_device_over_the_v4_underlay_is_replaced() {
    let ns = node6(2);
    // A `flannel-v6.1` left with an IPv4 local address is not adoptable.
    ns.exec(&[
        "ip",
        "link",
        "add",
        "flannel-v6.1",
        "type",
        "vxlan",
        "id",
        "1",
        "dev",
        "eth0",
        "local",
        "198.18.0.2",
    ])
    .expect_ok();
    let old = ifindex(&ns, "flannel-v6.1");
    let s6 = spec6(&ns, 2, "fd00:5:0:48::");
    let info = in_ns(&ns, move |mut dp| async move { dp.ensure_device(&s6, None).await.unwrap() });
    assert_ne!(info.index, old);
    let d = ns.ip_json(&["-d", "link", "show", "dev", "flannel-v6.1"])[0]["linkinfo"]["info_data"].clone();
    assert_eq!(d["local6"], "2001:2::2");
}

#[test]
fn v6_dual_stack_peer_add_reconcile_and_remove_read_back_like_upstream() {
    let ns = node6(2);
    let (s4, s6) = (spec(&ns, 2, "10.5.72.0"), spec6(&ns, 2, "fd00:5:0:48::"));
    let (p4, p6) = (peer(71, 3, M1), peer6(71, 3, M2));
    let ops: Vec<NetOp> = plan_add(None, &p4).into_iter().chain(plan_add(None, &p6)).collect();
    let (applied, failed, st) = apply_dual(&ns, s4.clone(), s6.clone(), ops);
    assert_eq!((applied, failed), (6, 0));
    assert_eq!(
        text(&ns, &["ip", "-6", "route", "show", "table", "main", "fd00:5:0:71::/64"]),
        "fd00:5:0:71::/64 via fd00:5:0:71:: dev flannel-v6.1 metric 1024 onlink pref medium"
    );
    assert_eq!(
        text(&ns, &["ip", "-6", "neigh", "show", "dev", "flannel-v6.1", "nud", "permanent"]),
        "fd00:5:0:71:: lladdr 6e:aa:bb:cc:dd:02 PERMANENT"
    );
    assert_eq!(
        text(&ns, &["bridge", "fdb", "show", "dev", "flannel-v6.1"]),
        "6e:aa:bb:cc:dd:02 dst 2001:2::3 self permanent"
    );
    // The IPv4 side is on flannel.1, as before.
    assert_eq!(
        text(&ns, &["ip", "route", "show", "table", "main", "10.5.71.0/24"]),
        "10.5.71.0/24 via 10.5.71.0 dev flannel.1 onlink"
    );
    assert_eq!(
        text(&ns, &["bridge", "fdb", "show", "dev", "flannel.1"]),
        "6e:aa:bb:cc:dd:01 dst 198.18.0.3 self permanent"
    );
    // Our dump, per family, sees exactly what was programmed: nothing to reconcile.
    assert_eq!(reconcile(std::slice::from_ref(&p4), &st.family(false)), vec![]);
    let v6 = st.family(true);
    assert_ne!(v6.device, 0);
    let r = plan_reconcile(std::slice::from_ref(&p6), &v6, &owner6(std::slice::from_ref(&p6)));
    assert_eq!((r.ops, r.conflicts), (vec![], vec![]));
    // `ip -6 route del` of the peer route is healed by a reconcile.
    ns.exec(&["ip", "-6", "route", "del", "fd00:5:0:71::/64"]).expect_ok();
    let (s4b, s6b, q6) = (s4.clone(), s6.clone(), p6.clone());
    let healed = in_ns(&ns, move |mut dp| async move {
        dp.ensure_device(&s4b, None).await.unwrap();
        dp.ensure_device(&s6b, None).await.unwrap();
        let st = dp.dump().await.unwrap().family(true);
        let r = plan_reconcile(std::slice::from_ref(&q6), &st, &owner6(std::slice::from_ref(&q6)));
        let report = dp.apply(&r.ops).await.unwrap();
        (r.ops, report.failed.len())
    });
    assert_eq!(healed.1, 0);
    assert_eq!(
        healed.0,
        vec![NetOp::AddRoute {
            dst: "fd00:5:0:71::/64".parse().unwrap(),
            gw: "fd00:5:0:71::".parse().unwrap(),
            onlink: true
        }]
    );
    assert!(text(&ns, &["ip", "-6", "route", "show", "fd00:5:0:71::/64"]).contains("dev flannel-v6.1"));
    let r = ns.ip_json(&["-6", "-d", "route", "show", "table", "main", "fd00:5:0:71::/64"]);
    assert_eq!((r[0]["protocol"].as_str(), r[0]["metric"].as_u64()), (Some("boot"), Some(1024)));
    // Removing the IPv6 side leaves the IPv4 side alone.
    let (_, failed, _) = apply_dual(&ns, s4, s6, plan_remove(&p6));
    assert_eq!(failed, 0);
    assert_eq!(text(&ns, &["ip", "-6", "route", "show", "dev", "flannel-v6.1", "proto", "boot"]), "");
    assert_eq!(text(&ns, &["ip", "-6", "neigh", "show", "dev", "flannel-v6.1", "nud", "permanent"]), "");
    assert_eq!(text(&ns, &["bridge", "fdb", "show", "dev", "flannel-v6.1"]), "");
    assert_eq!(
        text(&ns, &["bridge", "fdb", "show", "dev", "flannel.1"]),
        "6e:aa:bb:cc:dd:01 dst 198.18.0.3 self permanent"
    );
}

#[test]
fn v6_reconcile_never_touches_a_foreign_ipv6_route() {
    let ns = node6(2);
    let (s4, s6) = (spec(&ns, 2, "10.5.72.0"), spec6(&ns, 2, "fd00:5:0:48::"));
    // Ours, then its peer left: stale, to be removed.
    let gone = peer6(73, 4, M1);
    let (_, failed, _) = apply_dual(&ns, s4.clone(), s6.clone(), plan_add(None, &gone));
    assert_eq!(failed, 0);
    // An operator's routes on the device (proto static; proto boot with a metric) and one
    // holding a peer's subnet through eth0.
    for argv in [
        &[
            "ip",
            "-6",
            "route",
            "add",
            "fd00:5:0:49::/64",
            "via",
            "fd00:5:0:49::",
            "dev",
            "flannel-v6.1",
            "onlink",
            "proto",
            "static",
        ][..],
        &[
            "ip",
            "-6",
            "route",
            "add",
            "fd00:5:0:50::/64",
            "via",
            "fd00:5:0:50::",
            "dev",
            "flannel-v6.1",
            "onlink",
            "metric",
            "100",
        ],
        &[
            "ip",
            "-6",
            "route",
            "add",
            "fd00:5:0:72::/64",
            "via",
            "2001:2::9",
            "dev",
            "eth0",
            "proto",
            "static",
        ],
    ] {
        ns.exec(argv).expect_ok();
    }
    let foreign = |ns: &Netns| {
        let mut v = vec![
            text(ns, &["ip", "-6", "route", "show", "fd00:5:0:49::/64"]),
            text(ns, &["ip", "-6", "route", "show", "fd00:5:0:50::/64"]),
            text(ns, &["ip", "-6", "route", "show", "fd00:5:0:72::/64"]),
        ];
        v.sort();
        v
    };
    let before = foreign(&ns);
    let want = peer6(72, 5, M2);
    let (w, g) = (want.clone(), gone.clone());
    let (r, failed) = in_ns(&ns, move |mut dp| async move {
        dp.ensure_device(&s4, None).await.unwrap();
        dp.ensure_device(&s6, None).await.unwrap();
        let st = dp.dump().await.unwrap().family(true);
        let owner = owner6(&[w.clone(), g]);
        let r = plan_reconcile(std::slice::from_ref(&w), &st, &owner);
        let report = dp.apply(&r.ops).await.unwrap();
        (r, report.failed.len())
    });
    assert_eq!(failed, 0);
    assert_eq!(r.conflicts.len(), 1, "{:?}", r.conflicts);
    assert_eq!(r.conflicts[0].dst, "fd00:5:0:72::/64".parse().unwrap());
    assert!(
        !r.ops.iter().any(|op| matches!(op, NetOp::AddRoute { .. } | NetOp::CreateRoute { .. })),
        "{:?}",
        r.ops
    );
    assert_eq!(foreign(&ns), before, "foreign IPv6 routes untouched");
    assert_eq!(text(&ns, &["ip", "-6", "route", "show", "fd00:5:0:73::/64"]), "", "the stale one went");
    // The wanted peer's neighbour and FDB entry are there even though its route is blocked.
    assert_eq!(
        text(&ns, &["bridge", "fdb", "show", "dev", "flannel-v6.1"]),
        "6e:aa:bb:cc:dd:02 dst 2001:2::5 self permanent"
    );
}

#[test]
fn v6_debug_view_shows_the_v6_device_and_its_entries() {
    use weft_dataplane::netlink::{collect_view, ViewInput};
    use weft_dataplane::view::FlanneldFacts;
    let ns = node6(2);
    let (s4, s6) = (spec(&ns, 2, "10.5.72.0"), spec6(&ns, 2, "fd00:5:0:48::"));
    let p6 = peer6(71, 3, M2);
    let (_, failed, _) = apply_dual(&ns, s4, s6, plan_add(None, &p6));
    assert_eq!(failed, 0);
    let facts = FlanneldFacts {
        network: Some("10.5.0.0/16".parse().unwrap()),
        network_v6: Some("fd00:5::/48".parse().unwrap()),
        ..FlanneldFacts::default()
    };
    let input = ViewInput { facts: Some(facts), device: Some("flannel.1".into()), ..ViewInput::default() };
    let view = in_ns(&ns, move |_dp| async move { collect_view(&input).await });
    let d6 = view.device_v6.as_ref().expect("flannel-v6.1 in the view");
    assert_eq!((d6.name.as_str(), d6.mtu), ("flannel-v6.1", 1430));
    assert!(d6.addresses.contains(&"fd00:5:0:48::/128".parse().unwrap()), "{:?}", d6.addresses);
    // flanneld's (proto boot); the kernel's own routes of the device's addresses are there too.
    let r: Vec<_> = view
        .routes_v6
        .iter()
        .filter(|r| r.protocol == weft_dataplane::view::PROTO_BOOT)
        .map(|r| (r.dst.to_string(), r.gateway, r.onlink, r.metric, r.dev.clone()))
        .collect();
    let gw = Some("fd00:5:0:71::".parse().unwrap());
    assert_eq!(r, vec![("fd00:5:0:71::/64".to_string(), gw, true, 1024, Some("flannel-v6.1".to_string()))]);
    let n: Vec<_> =
        view.neighbours_v6.iter().filter(|n| n.permanent).map(|n| (n.ip, n.mac.clone())).collect();
    assert_eq!(n, vec![("fd00:5:0:71::".parse().unwrap(), Some(format_mac(&M2)))]);
    let f: Vec<_> = view.fdb_v6.iter().map(|e| (e.mac.clone(), e.dst, e.self_, e.permanent)).collect();
    assert_eq!(f, vec![(format_mac(&M2), Some("2001:2::3".parse().unwrap()), true, true)]);
    assert!(view.routes.iter().all(|r| r.dst.is_ipv4()), "the IPv4 lists stay IPv4");
    assert!(!view.errors.iter().any(|e| e.contains("flannel-v6")), "{:?}", view.errors);
}
