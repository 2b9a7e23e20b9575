//! The host-gw backend without root and without etcd: config validation, the route plan and
//! its diff, and the daemon loop over the memory registry and `weft_dataplane`'s
//! `FakeDataplane` (tokio's paused clock where reconciliation timing matters).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::node::{daemon_config, key, start, Running, ME, ME6, OWN_SUBNET_ENV, PREFIX, UNDERLAY};
use ipnetwork::{IpNetwork, Ipv4Network};
use tokio::sync::oneshot;
use tokio::task::LocalSet;
use weft_dataplane::fake::{FakeDataplane, SharedFake};
use weft_dataplane::own::Ownership;
use weft_dataplane::plan::{plan_add, plan_reconcile, plan_remove, Peer};
use weft_dataplane::{KernelRoute, KernelState, NetOp, RTN_LOCAL, RT_TABLE_LOCAL, RT_TABLE_MAIN};
use weft_flanneld::daemon::{self, DaemonError};
use weft_flanneld::health::Health;
use weft_flanneld::lease::LeaseAttrs;
use weft_flanneld::metrics::Metrics;
use weft_flanneld::network::{parse_config, BackendKind, ConfigError};
use weft_flanneld::registry::memory::MemoryRegistry;

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#;
const VXLAN_CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
/// The external interface's ifindex.
const ETH0: u32 = UNDERLAY;
const LIMIT: Duration = Duration::from_secs(120);

// ---- config ----------------------------------------------------------------------------

#[test]
fn host_gw_config_is_accepted_with_upstreams_network_validation() {
    for json in [
        CONFIG,
        r#"{"network":"10.5.0.0/16","backend":{"type":"HOST-GW"}}"#,
        // Options host-gw does not have (Windows-only ones, VXLAN ones) are ignored.
        r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw","VNI":"x","MacPrefix":"0E-2A"}}"#,
    ] {
        let spec = parse_config(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(spec.backend_type, BackendKind::HostGw, "{json}");
        assert_eq!(spec.backend_type.lease_type(), "host-gw");
        assert_eq!((spec.subnet_len, spec.subnet_min.to_string()), (24, "10.5.1.0".into()));
    }
    assert_eq!(parse_config(VXLAN_CONFIG.as_bytes()).unwrap().backend_type, BackendKind::Vxlan);
    // The network rules are the same as for vxlan.
    for (json, field) in [
        (r#"{"Network":"10.5.0.0/29","Backend":{"Type":"host-gw"}}"#, "Network"),
        (r#"{"Network":"10.5.0.0/16","SubnetLen":31,"Backend":{"Type":"host-gw"}}"#, "SubnetLen"),
        (r#"{"Backend":{"Type":"host-gw"}}"#, "Network"),
        (r#"{"Network":"10.5.0.0/16","Backend":{"Type":7}}"#, "Backend.Type"),
    ] {
        match parse_config(json.as_bytes()) {
            Err(ConfigError::Field { field: f, .. }) => assert_eq!(f, field, "{json}"),
            other => panic!("{json}: {other:?}"),
        }
    }
    for json in [
        r#"{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}"#,
        r#"{"Network":"10.5.0.0/16","Backend":{"Type":"hostgw"}}"#,
    ] {
        assert!(matches!(parse_config(json.as_bytes()), Err(ConfigError::Unsupported(_))), "{json}");
    }
}

// ---- the route plan and its diff ---------------------------------------------------------

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn hg_peer(subnet: &str, public: &str) -> Peer {
    Peer {
        subnet: subnet.parse().unwrap(),
        public_ip: public.parse().unwrap(),
        vtep_mac: [0; 6],
        direct: true,
    }
}

fn hg_owner(peers: &[Peer]) -> Ownership {
    Ownership::of_peers("10.5.0.0/16".parse().unwrap(), 24, peers, true)
}

/// A route as flanneld's host-gw route reads back: `S via P dev eth0 proto boot`.
fn hg_route(dst: &str, gw: &str) -> KernelRoute {
    KernelRoute::made(net(dst), ip(gw), false, Some(ETH0))
}

#[test]
fn host_gw_plan_is_one_plain_route_per_peer_and_replaces_on_public_ip_change() {
    let p = hg_peer("10.5.7.0/24", "198.18.0.3");
    let add = vec![NetOp::AddRoute { dst: net("10.5.7.0/24"), gw: ip("198.18.0.3"), onlink: false }];
    assert_eq!(plan_add(None, &p), add);
    assert_eq!(
        plan_remove(&p),
        vec![NetOp::DelRoute { dst: net("10.5.7.0/24"), gw: ip("198.18.0.3"), onlink: false }]
    );
    // A new PublicIP: the replace rewrites the gateway of the same destination, nothing else.
    let moved = hg_peer("10.5.7.0/24", "198.18.0.9");
    assert_eq!(
        plan_add(Some(&p), &moved),
        vec![NetOp::AddRoute { dst: net("10.5.7.0/24"), gw: ip("198.18.0.9"), onlink: false }]
    );
}

#[test]
fn host_gw_diff_adds_missing_removes_ours_and_leaves_foreign_routes() {
    let a = hg_peer("10.5.7.0/24", "198.18.0.3");
    let b = hg_peer("10.5.8.0/24", "198.18.0.4");
    let gone = hg_peer("10.5.9.0/24", "198.18.0.5");
    let mut k = KernelState { device: 0, ..KernelState::default() };
    // b is programmed, a is missing, gone's route is left over, and an operator's routes.
    k.routes.push(hg_route("10.5.8.0/24", "198.18.0.4"));
    k.routes.push(hg_route("10.5.9.0/24", "198.18.0.5"));
    let operator = [
        KernelRoute { protocol: 4, ..hg_route("10.5.20.0/24", "198.18.0.3") },
        hg_route("10.5.21.7/32", "198.18.0.3"),
        hg_route("10.5.22.0/24", "198.18.0.99"),
    ];
    k.routes.extend(operator.iter().cloned());
    let all = [a.clone(), b.clone(), gone.clone()];
    let r = plan_reconcile(&[a.clone(), b.clone()], &k, &hg_owner(&all));
    assert!(r.conflicts.is_empty(), "{:?}", r.conflicts);
    assert_eq!(
        r.ops,
        vec![
            NetOp::AddRoute { dst: net("10.5.7.0/24"), gw: ip("198.18.0.3"), onlink: false },
            NetOp::DelRoute { dst: net("10.5.9.0/24"), gw: ip("198.18.0.5"), onlink: false },
        ]
    );
    // A wrong gateway of ours is rewritten; an operator's route at a peer subnet is a conflict.
    let mut k = KernelState { device: 0, ..KernelState::default() };
    k.routes.push(hg_route("10.5.7.0/24", "198.18.0.77"));
    let theirs = KernelRoute { protocol: 4, ..hg_route("10.5.8.0/24", "198.18.0.50") };
    k.routes.push(theirs.clone());
    let mut owner = hg_owner(&[a.clone(), b.clone()]);
    owner.leases.insert(("10.5.7.0/24".parse().unwrap(), "198.18.0.77".parse().unwrap()));
    let r = plan_reconcile(&[a, b], &k, &owner);
    assert_eq!(r.ops, vec![NetOp::AddRoute { dst: net("10.5.7.0/24"), gw: ip("198.18.0.3"), onlink: false }]);
    assert_eq!(r.conflicts.len(), 1);
    assert_eq!(r.conflicts[0].route, theirs);
}

#[test]
fn on_link_and_local_checks_read_the_dump() {
    let mut k = KernelState::default();
    k.routes.push(underlay_route());
    k.routes.push(local_route(ME));
    k.routes.push(KernelRoute::made(net("0.0.0.0/0"), ip("198.18.0.1"), false, Some(ETH0)));
    assert!(k.is_onlink_on(ip("198.18.0.3"), ETH0));
    assert!(!k.is_onlink_on(ip("198.18.0.3"), 9), "on-link, but on another interface");
    assert!(!k.is_onlink_on(ip("203.0.113.5"), ETH0), "via the default gateway");
    assert!(k.is_local_on(ME, ETH0));
    assert!(!k.is_local_on("203.0.113.1".parse().unwrap(), ETH0));
}

// ---- the daemon ----------------------------------------------------------------------------

/// `198.18.0.0/24 dev eth0 proto kernel scope link`: peers in it are on-link.
fn underlay_route() -> KernelRoute {
    KernelRoute {
        gw: None,
        protocol: 2,
        scope: 253,
        ..KernelRoute::made(net("198.18.0.0/24"), ip("198.18.0.1"), false, Some(ETH0))
    }
}

/// `local <ip> dev eth0 table local`: the interface's own address.
fn local_route(addr: Ipv4Addr) -> KernelRoute {
    KernelRoute {
        gw: None,
        table: RT_TABLE_LOCAL,
        kind: RTN_LOCAL,
        protocol: 2,
        scope: 254,
        ..KernelRoute::made(IpNetwork::V4(Ipv4Network::from(addr)), IpAddr::V4(addr), false, Some(ETH0))
    }
}

/// A host whose eth0 holds [`ME`] in 198.18.0.0/24.
fn host() -> FakeDataplane {
    let mut f = FakeDataplane::new();
    f.routes.push(underlay_route());
    f.routes.push(local_route(ME));
    f
}

/// flanneld's host-gw routes in the fake kernel.
trait PeerRoutes {
    /// Main-table routes of flanneld's host-gw shape, as `subnet -> gateway`.
    fn peer_routes(&self) -> Vec<(String, String)>;
}

impl PeerRoutes for SharedFake {
    fn peer_routes(&self) -> Vec<(String, String)> {
        self.with(|f| {
            let mut v: Vec<(String, String)> = f
                .routes
                .iter()
                .filter(|r| r.table == RT_TABLE_MAIN && r.protocol == 3 && r.gw.is_some())
                .map(|r| (r.dst.to_string(), r.gw.map(|g| g.to_string()).unwrap_or_default()))
                .collect();
            v.sort();
            v
        })
    }
}

fn hg_value(public_ip: &str) -> String {
    format!(r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#)
}

fn vx_value(public_ip: &str) -> String {
    format!(
        r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"6e:aa:bb:cc:dd:01"}}}}"#
    )
}

/// Starts a daemon with the fixture's config for `dir`; returns it with its health and metrics.
fn boot(dir: &Path, reg: &MemoryRegistry, dp: &SharedFake) -> (Running, Arc<Health>, Arc<Metrics>) {
    let cfg = daemon_config(dir, ME);
    let (health, metrics) = (cfg.health.clone(), cfg.metrics.clone());
    (start(cfg, reg.clone(), dp.clone()), health, metrics)
}

async fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    common::wait_for(what, LIMIT, cond).await
}

fn own_value(reg: &MemoryRegistry) -> (String, String) {
    reg.records(&format!("{PREFIX}/subnets/"))
        .into_iter()
        .find(|r| LeaseAttrs::parse(&r.value).is_ok_and(|a| a.public_ip == ME))
        .map(|r| (r.key, String::from_utf8(r.value).unwrap()))
        .expect("own lease")
}

/// A registry holding `config` and the leases `(key name, value)`.
fn registry(config: &str, leases: &[(&str, String)]) -> MemoryRegistry {
    let reg = MemoryRegistry::new();
    reg.put_raw(&format!("{PREFIX}/config"), config.as_bytes(), 0);
    for (name, value) in leases {
        reg.put_raw(&key(name), value.as_bytes(), 0);
    }
    reg
}

#[tokio::test(start_paused = true)]
async fn startup_routes_host_gw_peers_publishes_upstream_bytes_and_skips_vxlan_leases() {
    LocalSet::new()
        .run_until(async {
            let dir = tempfile::tempdir().unwrap();
            let reg = registry(CONFIG, &[("10.5.7.0-24", hg_value("198.18.0.3")), ("10.5.8.0-24", hg_value("198.18.0.4")), ("10.5.9.0-24", vx_value("198.18.0.5"))]);
            let dp = SharedFake::from(host());
            let (run, health, metrics) = boot(dir.path(), &reg, &dp);

            wait_for("mesh", || health.get().mesh_programmed).await;
            assert_eq!(
                dp.peer_routes(),
                vec![("10.5.7.0/24".into(), "198.18.0.3".into()), ("10.5.8.0/24".into(), "198.18.0.4".into())]
            );
            dp.with(|f| {
                // The routes are on the external interface; no VXLAN device, no neighbour, no FDB.
                assert!(f.routes.iter().filter(|r| r.protocol == 3).all(|r| r.oif == Some(ETH0) && !r.onlink));
                assert!(!f.has_vxlan_device());
                assert!(f.neighs.is_empty() && f.fdb.is_empty());
                assert!(!f.applied.iter().any(|o| matches!(o, NetOp::AddNeigh { .. } | NetOp::AddFdb { .. })));
            });

            // Own lease: exactly what an upstream host-gw node writes (no BackendData key).
            let (own_key, value) = own_value(&reg);
            assert_eq!(value, r#"{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"host-gw"}"#);
            // subnet.env: the interface MTU, no overhead.
            let subnet = own_key.rsplit('/').next().unwrap().replace('-', "/");
            let subnet: Ipv4Network = subnet.parse().unwrap();
            let env = std::fs::read_to_string(dir.path().join("subnet.env")).unwrap();
            let first = Ipv4Addr::from(u32::from(subnet.network()) + 1);
            assert_eq!(
                env,
                format!("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET={first}/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n")
            );
            assert_eq!(health.healthz().0, 200, "{}", health.healthz().1);
            assert!(metrics.render().contains("flanneld_peers_programmed 2"), "{}", metrics.render());
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn peer_public_ip_change_replaces_and_lease_removal_deletes_the_route() {
    LocalSet::new()
        .run_until(async {
            let dir = tempfile::tempdir().unwrap();
            let reg = registry(CONFIG, &[("10.5.7.0-24", hg_value("198.18.0.3"))]);
            let dp = SharedFake::from(host());
            let (run, health, _) = boot(dir.path(), &reg, &dp);
            wait_for("mesh", || health.get().mesh_programmed).await;

            reg.put_raw(&key("10.5.7.0-24"), hg_value("198.18.0.9").as_bytes(), 0);
            wait_for("new gateway", || dp.peer_routes() == vec![("10.5.7.0/24".into(), "198.18.0.9".into())])
                .await;
            // A joining node.
            reg.put_raw(&key("10.5.8.0-24"), hg_value("198.18.0.4").as_bytes(), 0);
            wait_for("joined", || dp.peer_routes().len() == 2).await;
            // Leaving nodes.
            reg.delete_raw(&key("10.5.7.0-24"));
            wait_for("route gone", || dp.peer_routes() == vec![("10.5.8.0/24".into(), "198.18.0.4".into())])
                .await;
            // A node switching to vxlan is no longer a host-gw peer: its route goes.
            reg.put_raw(&key("10.5.8.0-24"), vx_value("198.18.0.4").as_bytes(), 0);
            wait_for("switched peer gone", || dp.peer_routes().is_empty()).await;
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn reconciliation_heals_deleted_routes_and_removes_ours_but_never_an_operators() {
    LocalSet::new()
        .run_until(async {
            let dir = tempfile::tempdir().unwrap();
            let reg = registry(
                CONFIG,
                &[("10.5.7.0-24", hg_value("198.18.0.3")), ("10.5.8.0-24", hg_value("198.18.0.4"))],
            );
            let mut f = host();
            // Left over from an earlier run for a lease that is gone: ours by shape, but the
            // lease is unknown, so it is not recognised as ours and stays (never guess).
            f.routes.push(hg_route("10.5.30.0/24", "198.18.0.30"));
            // An operator's static route at a peer subnet: a conflict, left alone.
            let theirs = KernelRoute { protocol: 4, ..hg_route("10.5.8.0/24", "198.18.0.50") };
            f.routes.push(theirs.clone());
            let dp = SharedFake::from(f);
            let (run, health, metrics) = boot(dir.path(), &reg, &dp);
            wait_for("first reconcile", || {
                dp.peer_routes().contains(&("10.5.7.0/24".into(), "198.18.0.3".into()))
            })
            .await;
            wait_for("conflict reported", || health.get().route_conflicts == vec!["10.5.8.0/24".to_string()])
                .await;
            assert!(dp.with(|f| f.routes.contains(&theirs)));
            assert!(dp.with(|f| f.routes.contains(&hg_route("10.5.30.0/24", "198.18.0.30"))));

            // `ip route del` behind the daemon's back: the next reconciliation re-adds it.
            dp.with(|f| f.routes.retain(|r| r.dst != net("10.5.7.0/24")));
            wait_for("healed", || dp.peer_routes().contains(&("10.5.7.0/24".into(), "198.18.0.3".into())))
                .await;
            assert!(metrics.render().contains("flanneld_route_conflicts 1"), "{}", metrics.render());
            // The route of a lease that just went, put back behind the daemon's back: removed.
            reg.delete_raw(&key("10.5.7.0-24"));
            wait_for("deleted", || !dp.peer_routes().iter().any(|(d, _)| d == "10.5.7.0/24")).await;
            dp.with(|f| f.routes.push(hg_route("10.5.7.0/24", "198.18.0.3")));
            wait_for("extra removed", || !dp.peer_routes().iter().any(|(d, _)| d == "10.5.7.0/24")).await;
            assert!(dp.with(|f| f.routes.contains(&theirs)), "operator's route survives");
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_off_the_l2_segment_is_skipped_and_reported_until_it_is_on_link() {
    LocalSet::new()
        .run_until(async {
            let dir = tempfile::tempdir().unwrap();
            let reg = registry(
                CONFIG,
                &[("10.5.7.0-24", hg_value("198.18.0.3")), ("10.5.8.0-24", hg_value("198.19.5.4"))],
            );
            let mut f = host();
            f.routes.push(KernelRoute {
                protocol: 4,
                ..KernelRoute::made(net("0.0.0.0/0"), ip("198.18.0.1"), false, Some(ETH0))
            });
            let dp = SharedFake::from(f);
            let (run, health, metrics) = boot(dir.path(), &reg, &dp);
            wait_for("off-link reported", || !health.get().peers_off_link.is_empty()).await;
            assert_eq!(health.get().peers_off_link, vec!["10.5.8.0/24 via 198.19.5.4".to_string()]);
            let (code, body) = health.healthz();
            assert_eq!(code, 503);
            assert!(
                body.contains("not on the same L2 segment") && body.contains("10.5.8.0/24 via 198.19.5.4"),
                "{body}"
            );
            assert!(metrics.render().contains("flanneld_peers_off_link 1"), "{}", metrics.render());
            wait_for("on-link peer routed", || dp.peer_routes().len() == 1).await;
            assert_eq!(dp.peer_routes(), vec![("10.5.7.0/24".into(), "198.18.0.3".into())]);

            // The underlay grows to cover it: the next reconciliation routes it.
            dp.with(|f| {
                f.routes.push(KernelRoute { dst: net("198.19.5.0/24"), ..underlay_route() });
            });
            wait_for("routed", || dp.peer_routes().len() == 2).await;
            wait_for("report cleared", || health.get().peers_off_link.is_empty()).await;
            assert!(metrics.render().contains("flanneld_peers_off_link 0"));
            // Moving a peer off the segment removes its route.
            reg.put_raw(&key("10.5.7.0-24"), hg_value("203.0.113.3").as_bytes(), 0);
            wait_for("moved off", || dp.peer_routes() == vec![("10.5.8.0/24".into(), "198.19.5.4".into())])
                .await;
            assert_eq!(health.get().peers_off_link, vec!["10.5.7.0/24 via 203.0.113.3".to_string()]);
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn switching_from_vxlan_deletes_the_device_and_reuses_the_subnet() {
    LocalSet::new()
        .run_until(async {
            let dir = tempfile::tempdir().unwrap();
            let reg = registry(VXLAN_CONFIG, &[("10.5.7.0-24", vx_value("198.18.0.3"))]);
            let dp = SharedFake::from(host());
            let (run, health, _) = boot(dir.path(), &reg, &dp);
            wait_for("vxlan mesh", || health.get().mesh_programmed).await;
            assert!(dp.with(|f| f.has_vxlan_device() && !f.neighs.is_empty()));
            let (vx_key, _) = own_value(&reg);
            run.stop().await;

            // The operator switches the cluster; the peer restarts first.
            reg.put_raw(&format!("{PREFIX}/config"), CONFIG.as_bytes(), 0);
            reg.put_raw(&key("10.5.7.0-24"), hg_value("198.18.0.3").as_bytes(), 0);
            let (run, health, _) = boot(dir.path(), &reg, &dp);
            wait_for("host-gw mesh", || health.get().mesh_programmed).await;
            dp.with(|f| {
                assert!(!f.has_vxlan_device(), "flannel.1 deleted");
                assert!(f.neighs.is_empty() && f.fdb.is_empty(), "its entries went with it");
                assert!(!f.routes.iter().any(|r| r.onlink), "no VXLAN route left");
            });
            assert_eq!(dp.peer_routes(), vec![("10.5.7.0/24".into(), "198.18.0.3".into())]);
            let (hg_key, value) = own_value(&reg);
            assert_eq!(hg_key, vx_key, "same subnet");
            assert_eq!(value, r#"{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"host-gw"}"#);
            run.stop().await;

            // And back: the host-gw routes of the previous run are removed by the vxlan run.
            reg.put_raw(&format!("{PREFIX}/config"), VXLAN_CONFIG.as_bytes(), 0);
            let (run, health, _) = boot(dir.path(), &reg, &dp);
            wait_for("vxlan again", || health.get().mesh_programmed).await;
            assert!(dp.peer_routes().is_empty(), "{:?}", dp.peer_routes());
            assert!(dp.with(|f| f.has_vxlan_device()));
            run.stop().await;
        })
        .await;
}

/// host-gw publishes no VTEP MAC and waits for it only after the listing's peers are programmed
/// (the MAC file is written on a blocking thread meanwhile), but a MAC that cannot be persisted
/// still ends the start: with the config there, for both backends, and while the config is
/// still missing (not only once it appears).
#[tokio::test]
async fn a_vtep_mac_that_cannot_be_persisted_ends_the_start_for_either_backend() {
    LocalSet::new()
        .run_until(async {
            for config in [Some(CONFIG), Some(VXLAN_CONFIG), None] {
                let dir = tempfile::tempdir().unwrap();
                let blocker = dir.path().join("not-a-dir");
                std::fs::write(&blocker, "").unwrap();
                let mut cfg = daemon_config(dir.path(), ME);
                cfg.mac_file = blocker.join("weft-vtep-mac");
                let reg = match config {
                    Some(c) => registry(c, &[("10.5.2.0-24", hg_value("198.18.0.3"))]),
                    None => MemoryRegistry::new(),
                };
                let dp = SharedFake::from(host());
                let (_tx, rx) = oneshot::channel::<()>();
                let run = daemon::run(cfg.clone(), reg, dp.clone(), async {
                    let _ = rx.await;
                });
                match tokio::time::timeout(LIMIT, run).await.unwrap() {
                    Err(DaemonError::File { path, .. }) => assert_eq!(path, cfg.mac_file, "{config:?}"),
                    other => panic!("{config:?}: {:?}", other.map(|_| ())),
                }
                let subnet_env = std::fs::read_to_string(&cfg.subnet_file).unwrap();
                assert_eq!(subnet_env, OWN_SUBNET_ENV, "{config:?}: never ready");
            }
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_public_ip_that_is_not_the_interfaces_address_is_refused_like_upstream() {
    LocalSet::new()
        .run_until(async {
            let dir = tempfile::tempdir().unwrap();
            let reg = registry(CONFIG, &[]);
            let mut f = host();
            f.routes.retain(|r| r.table != RT_TABLE_LOCAL);
            let dp = SharedFake::from(f);
            let (_tx, rx) = oneshot::channel::<()>();
            let res = daemon::run(daemon_config(dir.path(), ME), reg, dp.clone(), async {
                let _ = rx.await;
            })
            .await;
            match res {
                Err(e @ DaemonError::HostGwNat { .. }) => {
                    assert!(e.to_string().contains("NAT"), "{e}");
                }
                other => panic!("{:?}", other.map(|_| ())),
            }
        })
        .await;
}

// ---- dual stack (IPv6 host-gw) -----------------------------------------------------------

const DUAL_HG_CONFIG: &str =
    r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"host-gw"}}"#;

/// `2001:2::/64 dev eth0 proto kernel metric 256`: IPv6 peers in it are on-link.
fn underlay_route_v6() -> KernelRoute {
    KernelRoute {
        gw: None,
        protocol: 2,
        metric: 256,
        ..KernelRoute::made(net("2001:2::/64"), ip("::"), false, Some(ETH0))
    }
}

/// [`host`] with [`ME6`] on eth0 and an IPv6 default route via `2001:2::1`.
fn host_dual() -> FakeDataplane {
    let mut f = host();
    f.routes.push(underlay_route_v6());
    f.routes.push(KernelRoute {
        protocol: 4,
        ..KernelRoute::made(net("::/0"), ip("2001:2::1"), false, Some(ETH0))
    });
    f
}

/// What an upstream dual-stack host-gw node writes: `PublicIPv6`, no `BackendV6Data`.
fn hg_value_dual(public_ip: &str, public_ipv6: &str) -> String {
    format!(r#"{{"PublicIP":"{public_ip}","PublicIPv6":"{public_ipv6}","BackendType":"host-gw"}}"#)
}

/// A dual-stack host-gw node (`PublicIPv6` [`ME6`]) started on `kernel` with [`DUAL_HG_CONFIG`]
/// and the leases `(key name, value)`.
struct DualNode {
    /// Holds the subnet file the node starts from (`daemon_config`): keep it while it runs.
    dir: tempfile::TempDir,
    reg: MemoryRegistry,
    dp: SharedFake,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    run: Running,
}

fn boot_dual(kernel: FakeDataplane, leases: &[(&str, String)]) -> DualNode {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(DUAL_HG_CONFIG, leases);
    let dp = SharedFake::from(kernel);
    let mut cfg = daemon_config(dir.path(), ME);
    cfg.public_ipv6 = Some(ME6);
    let (health, metrics) = (cfg.health.clone(), cfg.metrics.clone());
    let run = start(cfg, reg.clone(), dp.clone());
    DualNode { dir, reg, dp, health, metrics, run }
}

#[tokio::test(start_paused = true)]
async fn dual_stack_host_gw_peer_gets_both_routes_follows_its_public_ipv6_and_goes_with_its_lease() {
    LocalSet::new()
        .run_until(async {
            let leases = [
                ("10.5.7.0-24&fd00:5:0:7::-64", hg_value_dual("198.18.0.3", "2001:2::3")),
                // An IPv4-only host-gw peer beside it stays IPv4-only.
                ("10.5.8.0-24", hg_value("198.18.0.4")),
            ];
            let DualNode { dir, reg, dp, health, metrics, run } = boot_dual(host_dual(), &leases);
            wait_for("mesh", || health.get().mesh_programmed).await;
            let both = |gw6: &str| {
                vec![
                    ("10.5.7.0/24".to_string(), "198.18.0.3".to_string()),
                    ("10.5.8.0/24".into(), "198.18.0.4".into()),
                    ("fd00:5:0:7::/64".into(), gw6.to_string()),
                ]
            };
            assert_eq!(dp.peer_routes(), both("2001:2::3"));
            dp.with(|f| {
                let r6 = f.routes.iter().find(|r| r.dst == net("fd00:5:0:7::/64")).unwrap();
                // `S6 via P6` on the external interface, the kernel's default IPv6 metric.
                assert_eq!(
                    *r6,
                    KernelRoute::made(net("fd00:5:0:7::/64"), ip("2001:2::3"), false, Some(ETH0))
                );
                assert!(!f.has_vxlan_device() && f.device_v6.is_none());
                assert!(f.neighs.is_empty() && f.fdb.is_empty());
            });
            // Own lease: dual-stack key, `PublicIPv6`, no BackendData / BackendV6Data.
            let (own_key, value) = own_value(&reg);
            assert!(own_key.contains('&'), "{own_key}");
            assert_eq!(
                value,
                r#"{"PublicIP":"198.18.0.2","PublicIPv6":"2001:2::2","BackendType":"host-gw"}"#
            );
            let env = std::fs::read_to_string(dir.path().join("subnet.env")).unwrap();
            assert!(
                env.contains("FLANNEL_IPV6_NETWORK=fd00:5::/48\n") && env.contains("FLANNEL_MTU=1500\n"),
                "{env}"
            );
            assert!(metrics.render().contains("flanneld_peers_programmed_v6 1"), "{}", metrics.render());

            // PublicIPv6 changes: the IPv6 route is replaced, the IPv4 one stays.
            reg.put_raw(
                &key("10.5.7.0-24&fd00:5:0:7::-64"),
                hg_value_dual("198.18.0.3", "2001:2::9").as_bytes(),
                0,
            );
            wait_for("new IPv6 gateway", || dp.peer_routes() == both("2001:2::9")).await;
            // The lease goes: both routes go.
            reg.delete_raw(&key("10.5.7.0-24&fd00:5:0:7::-64"));
            wait_for("both gone", || dp.peer_routes() == vec![("10.5.8.0/24".into(), "198.18.0.4".into())])
                .await;
            assert_eq!(health.healthz().0, 200, "{}", health.healthz().1);
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn dual_stack_host_gw_reports_an_off_link_ipv6_peer_and_a_foreign_ipv6_route_and_heals_a_deleted_one() {
    LocalSet::new()
        .run_until(async {
            let leases = [
                ("10.5.7.0-24&fd00:5:0:7::-64", hg_value_dual("198.18.0.3", "2001:2::3")),
                // IPv4 on-link, IPv6 only via the default gateway.
                ("10.5.8.0-24&fd00:5:0:8::-64", hg_value_dual("198.18.0.4", "2001:db8::4")),
                ("10.5.9.0-24&fd00:5:0:9::-64", hg_value_dual("198.18.0.5", "2001:2::5")),
            ];
            let mut f = host_dual();
            // An operator's static route at a peer's IPv6 subnet: a conflict, left alone.
            let theirs = KernelRoute {
                protocol: 4,
                ..KernelRoute::made(net("fd00:5:0:9::/64"), ip("2001:2::50"), false, Some(ETH0))
            };
            f.routes.push(theirs.clone());
            let DualNode { dir: _dir, reg, dp, health, metrics, run } = boot_dual(f, &leases);
            wait_for("reported", || {
                let h = health.get();
                !h.peers_off_link.is_empty() && !h.route_conflicts.is_empty()
            })
            .await;
            let h = health.get();
            assert_eq!(h.peers_off_link, vec!["fd00:5:0:8::/64 via 2001:db8::4".to_string()]);
            assert_eq!(h.route_conflicts, vec!["fd00:5:0:9::/64".to_string()]);
            let (code, body) = health.healthz();
            assert_eq!(code, 503);
            assert!(
                body.contains("fd00:5:0:8::/64 via 2001:db8::4") && body.contains("fd00:5:0:9::/64"),
                "{body}"
            );
            let m = metrics.render();
            assert!(
                m.contains("flanneld_peers_off_link 1") && m.contains("flanneld_route_conflicts 1"),
                "{m}"
            );
            wait_for("routes", || dp.peer_routes().len() == 4).await;
            assert_eq!(
                dp.peer_routes(),
                vec![
                    ("10.5.7.0/24".to_string(), "198.18.0.3".to_string()),
                    ("10.5.8.0/24".into(), "198.18.0.4".into()),
                    ("10.5.9.0/24".into(), "198.18.0.5".into()),
                    ("fd00:5:0:7::/64".into(), "2001:2::3".into()),
                ]
            );
            assert!(dp.with(|f| f.routes.contains(&theirs)), "the operator's IPv6 route is untouched");

            // `ip -6 route del` behind the daemon's back: the next reconciliation re-adds it.
            dp.with(|f| f.routes.retain(|r| r.dst != net("fd00:5:0:7::/64")));
            wait_for("healed", || dp.peer_routes().contains(&("fd00:5:0:7::/64".into(), "2001:2::3".into())))
                .await;
            // The off-link peer moves onto the segment: routed on the next lease event.
            reg.put_raw(
                &key("10.5.8.0-24&fd00:5:0:8::-64"),
                hg_value_dual("198.18.0.4", "2001:2::4").as_bytes(),
                0,
            );
            wait_for("routed", || dp.peer_routes().contains(&("fd00:5:0:8::/64".into(), "2001:2::4".into())))
                .await;
            wait_for("report cleared", || health.get().peers_off_link.is_empty()).await;
            assert!(dp.with(|f| f.routes.contains(&theirs)));
            run.stop().await;
        })
        .await;
}

/// A lease event asks the kernel about its peer's addresses (one route lookup each) instead of
/// reading a route dump; a new route is created exclusively, so an operator's route at its
/// destination is still found (then from a dump), reported and left alone.
#[tokio::test(start_paused = true)]
async fn lease_events_look_up_each_new_address_instead_of_dumping_routes() {
    LocalSet::new()
        .run_until(async {
            let mut f = host_dual();
            let theirs = KernelRoute {
                protocol: 4,
                ..KernelRoute::made(net("10.5.9.0/24"), ip("198.18.0.50"), false, Some(ETH0))
            };
            f.routes.push(theirs.clone());
            let DualNode { dir: _dir, reg, dp, health, metrics, run } = boot_dual(f, &[]);
            wait_for("mesh", || health.get().mesh_programmed).await;
            let counts = || dp.with(|f| (f.route_dumps, f.route_gets));
            let (dumps, gets) = counts();
            // Its own lease is none of the peers' below (their keys would be its own).
            assert_eq!(own_value(&reg).0, key("10.5.240.0-24&fd00:5:0:f0::-64"));

            reg.put_raw(
                &key("10.5.7.0-24&fd00:5:0:7::-64"),
                hg_value_dual("198.18.0.3", "2001:2::3").as_bytes(),
                0,
            );
            wait_for("routed", || dp.peer_routes().len() == 2).await;
            assert_eq!(counts(), (dumps, gets + 2), "one lookup per address, no dump");
            assert_eq!(
                dp.peer_routes(),
                vec![
                    ("10.5.7.0/24".to_string(), "198.18.0.3".to_string()),
                    ("fd00:5:0:7::/64".into(), "2001:2::3".into())
                ]
            );
            assert!(dp.with(|f| f.applied.iter().any(|o| matches!(o, NetOp::CreateRoute { .. }))));
            // Off the segment (IPv6 via the default gateway): reported from the lookup alone.
            reg.put_raw(
                &key("10.5.8.0-24&fd00:5:0:8::-64"),
                hg_value_dual("198.18.0.4", "2001:db8::4").as_bytes(),
                0,
            );
            wait_for("off-link", || {
                health.get().peers_off_link == vec!["fd00:5:0:8::/64 via 2001:db8::4".to_string()]
            })
            .await;
            wait_for("its IPv4 route", || dp.peer_routes().len() == 3).await;
            assert_eq!(counts(), (dumps, gets + 4));
            assert!(metrics.render().contains("flanneld_peers_off_link 1"));

            // An operator's route holds the next peer's destination: found, reported, kept.
            reg.put_raw(&key("10.5.9.0-24"), hg_value("198.18.0.5").as_bytes(), 0);
            wait_for("conflict", || health.get().route_conflicts == vec!["10.5.9.0/24".to_string()]).await;
            assert!(dp.with(|f| f.routes.contains(&theirs)));
            assert!(!dp.peer_routes().iter().any(|(d, _)| d == "10.5.9.0/24"));
            run.stop().await;
        })
        .await;
}

/// Dual-stack host-gw without an IPv6 address to publish stops startup, as with vxlan: peers
/// could not route to this node's IPv6 subnet.
#[tokio::test(start_paused = true)]
async fn dual_stack_host_gw_without_a_public_ipv6_stops_startup() {
    LocalSet::new()
        .run_until(async {
            let dir = tempfile::tempdir().unwrap();
            let reg = registry(DUAL_HG_CONFIG, &[]);
            let dp = SharedFake::from(host_dual());
            let out = start(daemon_config(dir.path(), ME), reg.clone(), dp).handle.await.unwrap();
            assert!(matches!(out, Err(DaemonError::NoPublicIpv6)), "{out:?}");
            assert!(reg.records(&format!("{PREFIX}/subnets/")).is_empty(), "no lease taken");
        })
        .await;
}

/// A batch of lease events with more new PublicIPs than are worth a lookup each reads one
/// route dump instead.
#[tokio::test(start_paused = true)]
async fn a_large_batch_of_lease_events_reads_one_route_dump_instead_of_lookups() {
    LocalSet::new()
        .run_until(async {
            let dir = tempfile::tempdir().unwrap();
            let reg = registry(CONFIG, &[]);
            let dp = SharedFake::from(host());
            let (run, health, _) = boot(dir.path(), &reg, &dp);
            wait_for("mesh", || health.get().mesh_programmed).await;
            let (dumps, gets) = dp.with(|f| (f.route_dumps, f.route_gets));
            // Written without yielding: the watch delivers them as one batch.
            for i in 10..40 {
                reg.put_raw(
                    &key(&format!("10.5.{i}.0-24")),
                    hg_value(&format!("198.18.0.{i}")).as_bytes(),
                    0,
                );
            }
            wait_for("all routed", || dp.peer_routes().len() == 30).await;
            let (dumps_now, gets_now) = dp.with(|f| (f.route_dumps, f.route_gets));
            assert_eq!(gets_now, gets, "no lookups");
            assert!(dumps_now > dumps);
            run.stop().await;
        })
        .await;
}
