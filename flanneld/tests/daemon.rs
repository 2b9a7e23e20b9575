//! The daemon loop without root and without etcd: memory registry + the fake kernel, with
//! tokio's paused clock where timing matters.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use common::node::{daemon_config, key, start, Kernel, Node, CONFIG, ME, PREFIX, UNDERLAY};
use common::{mac, upstream_value, wait_for};
use tokio::task::LocalSet;
use weft_dataplane::fake::SharedFake;
use weft_dataplane::{KernelFdb, KernelRoute, NetOp};
use weft_flanneld::daemon::{self, DaemonConfig};
use weft_flanneld::health::Health;
use weft_flanneld::lease::{LeaseAttrs, LeaseKey};
use weft_flanneld::registry::memory::MemoryRegistry;
use weft_flanneld::registry::{Expect, Record, Registry, RegistryError};

const LIMIT: Duration = Duration::from_secs(120);
const DIRECT_ROUTING: &[u8] = br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#;

fn own_record_opt(reg: &MemoryRegistry) -> Option<Record> {
    let recs = reg.records(&format!("{PREFIX}/subnets/"));
    recs.into_iter().find(|r| LeaseAttrs::parse(&r.value).map(|a| a.public_ip == ME).unwrap_or(false))
}

fn own_record(reg: &MemoryRegistry) -> Record {
    own_record_opt(reg).expect("own lease")
}

fn gw(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn startup_programs_peers_writes_subnet_env_and_publishes_upstream_format() {
    LocalSet::new()
        .run_until(async {
            let Node { dir, reg, dp, cfg } = Node::new();
            reg.put_raw(&key("10.5.7.0-24"), upstream_value("198.18.0.3", "6e:aa:bb:cc:dd:01").as_bytes(), 0);
            reg.put_raw(&key("10.5.8.0-24"), upstream_value("198.18.0.4", "6e:aa:bb:cc:dd:02").as_bytes(), 0);
            // Malformed records and a non-vxlan lease: skipped, never fatal.
            reg.put_raw(&key("garbage"), b"{}", 0);
            reg.put_raw(&key("10.5.9.0-24"), br#"{"PublicIP":"x"}"#, 0);
            reg.put_raw(&key("10.5.10.0-24"), br#"{"PublicIP":"198.18.0.9","BackendType":"udp"}"#, 0);
            let (health, metrics) = (cfg.health.clone(), cfg.metrics.clone());
            let run = start(cfg, reg.clone(), dp.clone());

            wait_for("mesh", LIMIT, || health.get().mesh_programmed).await;
            let routes = dp.routes();
            assert_eq!(routes.len(), 2, "{routes:?}");
            assert_eq!(routes["10.5.7.0/24"], "10.5.7.0");
            assert_eq!(routes["10.5.8.0/24"], "10.5.8.0");
            assert_eq!(dp.neigh("10.5.7.0"), Some([0x6e, 0xaa, 0xbb, 0xcc, 0xdd, 0x01]));
            assert!(dp.has_fdb([0x6e, 0xaa, 0xbb, 0xcc, 0xdd, 0x02], "198.18.0.4"));
            dp.with(|k| {
                // Neighbour and FDB before the route, per peer.
                let first_route = k.applied.iter().position(|o| matches!(o, NetOp::AddRoute { .. })).unwrap();
                assert!(k.applied[..first_route].iter().any(|o| matches!(o, NetOp::AddNeigh { .. })));
            });

            // Own lease: canonical key, upstream bytes with the device's MAC, 24 h etcd lease.
            let own = own_record(&reg);
            let own_key = LeaseKey::parse(own.key.rsplit('/').next().unwrap()).unwrap();
            assert_eq!(own.key, key(&own_key.render()));
            assert_ne!(own.lease, 0);
            let (spec, info) = dp.device().unwrap();
            let expected = format!(
                r#"{{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{}"}}}}"#,
                weft_flanneld::lease::format_mac(&info.mac)
            );
            assert_eq!(String::from_utf8(own.value.clone()).unwrap(), expected);
            assert_eq!((spec.name.as_str(), spec.mtu, spec.local), ("flannel.1", 1450, ME.into()));
            assert_eq!(spec.address.to_string(), format!("{}/32", own_key.ipv4.network()));
            // Fresh pick: not a taken subnet, not the first one.
            assert!(!["10.5.7.0/24", "10.5.8.0/24", "10.5.9.0/24", "10.5.10.0/24", "10.5.0.0/24"]
                .contains(&own_key.ipv4.to_string().as_str()));

            let env = std::fs::read_to_string(dir.path().join("subnet.env")).unwrap();
            let first = Ipv4Addr::from(u32::from(own_key.ipv4.network()) + 1);
            assert_eq!(
                env,
                format!("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET={first}/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
            );
            assert!(health.get().ready && health.get().lease_held);
            assert_eq!(health.healthz().0, 200);
            // One range read at startup (no per-lease lookups).
            assert_eq!(reg.list_calls(), 1);
            assert!(metrics.render().contains("flanneld_peers_programmed 2"));
            let persisted = std::fs::read_to_string(dir.path().join("weft-vtep-mac")).unwrap();
            assert_eq!(persisted.trim(), weft_flanneld::lease::format_mac(&info.mac));
            run.stop().await;
            // Nothing cleaned up on shutdown: key and routes stay.
            assert!(reg.record(&own.key).is_some());
            assert_eq!(dp.routes().len(), 2);
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn watch_events_add_change_and_remove_peers() {
    LocalSet::new()
        .run_until(async {
            let Node { dir: _dir, reg, dp, cfg } = Node::new();
            let health = cfg.health.clone();
            let run = start(cfg, reg.clone(), dp.clone());
            wait_for("mesh", LIMIT, || health.get().mesh_programmed).await;

            reg.put_raw(
                &key("10.5.20.0-24"),
                upstream_value("198.18.0.5", "02:00:00:00:00:05").as_bytes(),
                7,
            );
            wait_for("peer route", LIMIT, || dp.routes().contains_key("10.5.20.0/24")).await;

            // The peer recreated its device: new MAC. Old FDB entry goes, new one comes.
            reg.put_raw(
                &key("10.5.20.0-24"),
                upstream_value("198.18.0.5", "02:00:00:00:00:55").as_bytes(),
                7,
            );
            wait_for("new mac", LIMIT, || dp.neigh("10.5.20.0") == Some(mac(0x55))).await;
            assert!(dp.has_fdb(mac(0x55), "198.18.0.5"));
            dp.with(|k| assert!(!k.fdb.iter().any(|e| e.mac == mac(5)), "old FDB entry left: {:?}", k.fdb));

            // A malformed event between: nothing is dropped.
            reg.put_raw(&key("10.5.21.0-24"), b"not json", 0);
            reg.put_raw(&key("bogus"), b"{}", 0);
            reg.put_raw(
                &key("10.5.22.0-24"),
                upstream_value("198.18.0.6", "02:00:00:00:00:06").as_bytes(),
                7,
            );
            wait_for("second peer", LIMIT, || dp.routes().contains_key("10.5.22.0/24")).await;
            assert!(dp.routes().contains_key("10.5.20.0/24"));

            reg.delete_raw(&key("10.5.20.0-24"));
            wait_for("peer removed", LIMIT, || !dp.routes().contains_key("10.5.20.0/24")).await;
            assert_eq!(dp.neigh("10.5.20.0"), None);
            dp.with(|k| assert!(!k.fdb.iter().any(|e| e.mac == mac(0x55))));
            assert!(dp.routes().contains_key("10.5.22.0/24"));
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn outage_and_compaction_resync_by_diff_and_keep_kernel_state() {
    LocalSet::new()
        .run_until(async {
            let Node { dir: _dir, reg, dp, cfg } = Node::new();
            reg.put_raw(
                &key("10.5.30.0-24"),
                upstream_value("198.18.0.7", "02:00:00:00:00:07").as_bytes(),
                0,
            );
            reg.put_raw(
                &key("10.5.31.0-24"),
                upstream_value("198.18.0.8", "02:00:00:00:00:08").as_bytes(),
                0,
            );
            let health = cfg.health.clone();
            let run = start(cfg, reg.clone(), dp.clone());
            wait_for("mesh", LIMIT, || dp.routes().len() == 2).await;

            reg.set_down(true);
            wait_for("etcd unreachable", LIMIT, || !health.get().etcd_reachable).await;
            assert_eq!(health.healthz().0, 503);
            // Changes while we cannot see them, then compaction of that history.
            reg.delete_raw(&key("10.5.30.0-24"));
            reg.put_raw(
                &key("10.5.32.0-24"),
                upstream_value("198.18.0.9", "02:00:00:00:00:09").as_bytes(),
                0,
            );
            reg.compact();
            tokio::time::sleep(Duration::from_secs(20)).await;
            // The outage changed nothing in the kernel.
            assert_eq!(dp.routes().len(), 2);

            reg.set_down(false);
            wait_for("resync", LIMIT, || {
                let r = dp.routes();
                r.contains_key("10.5.32.0/24")
                    && !r.contains_key("10.5.30.0/24")
                    && r.contains_key("10.5.31.0/24")
            })
            .await;
            wait_for("healthy", LIMIT, || health.healthz().0 == 200).await;
            // Later events still arrive (the watch resumed after the re-list).
            reg.delete_raw(&key("10.5.31.0-24"));
            wait_for("post-resync delete", LIMIT, || !dp.routes().contains_key("10.5.31.0/24")).await;
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn compaction_of_a_live_watch_relists() {
    LocalSet::new()
        .run_until(async {
            let Node { dir: _dir, reg, dp, cfg } = Node::new();
            let health = cfg.health.clone();
            let run = start(cfg, reg.clone(), dp.clone());
            wait_for("mesh", LIMIT, || health.get().mesh_programmed).await;
            let lists = reg.list_calls();
            // Break the watch and compact before it comes back: the restart finds its
            // revision compacted and must re-list.
            reg.set_down(true);
            reg.put_raw(
                &key("10.5.40.0-24"),
                upstream_value("198.18.0.10", "02:00:00:00:00:10").as_bytes(),
                0,
            );
            reg.compact();
            reg.set_down(false);
            wait_for("peer via relist", LIMIT, || dp.routes().contains_key("10.5.40.0/24")).await;
            assert!(reg.list_calls() > lists);
            run.stop().await;
        })
        .await;
}

/// A registry where another node wins the first create race.
#[derive(Clone)]
struct Racing {
    inner: MemoryRegistry,
    raced: Arc<std::sync::atomic::AtomicBool>,
}

impl Registry for Racing {
    type Watch = <MemoryRegistry as Registry>::Watch;
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<(Vec<Record>, i64), RegistryError> {
        self.inner.list(prefix).await
    }
    async fn grant(&self, ttl: i64) -> Result<i64, RegistryError> {
        self.inner.grant(ttl).await
    }
    async fn revoke(&self, lease: i64) -> Result<(), RegistryError> {
        self.inner.revoke(lease).await
    }
    async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
        expect: Expect,
    ) -> Result<Option<i64>, RegistryError> {
        if expect == Expect::Absent && !self.raced.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.inner.put_raw(key, upstream_value("198.18.0.99", "02:00:00:00:00:99").as_bytes(), 0);
        }
        self.inner.put_if(key, value, lease, expect).await
    }
    async fn delete_if(&self, key: &str, rev: i64) -> Result<bool, RegistryError> {
        self.inner.delete_if(key, rev).await
    }
    async fn watch(&self, prefix: &str, from: i64) -> Result<Self::Watch, RegistryError> {
        self.inner.watch(prefix, from).await
    }
}

#[tokio::test(start_paused = true)]
async fn lost_create_race_picks_again_and_never_overwrites() {
    LocalSet::new()
        .run_until(async {
            let Node { dir, reg, dp, cfg } = Node::new();
            // The previous subnet is what we try first, and what the other node takes.
            std::fs::write(dir.path().join("subnet.env"), "FLANNEL_SUBNET=10.5.50.1/24\n").unwrap();
            let racing = Racing { inner: reg.clone(), raced: Arc::default() };
            let health = cfg.health.clone();
            let run = start(cfg, racing, dp.clone());
            wait_for("lease", LIMIT, || health.get().ready).await;
            let winner = reg.record(&key("10.5.50.0-24")).unwrap();
            assert!(String::from_utf8_lossy(&winner.value).contains("198.18.0.99"), "overwritten");
            let own = own_record(&reg);
            assert_ne!(own.key, key("10.5.50.0-24"));
            // The winner is our peer.
            wait_for("winner programmed", LIMIT, || dp.routes().contains_key("10.5.50.0/24")).await;
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn previous_subnet_and_own_public_ip_lease_are_reused() {
    LocalSet::new()
        .run_until(async {
            let Node { dir, reg, dp, cfg } = Node::new();
            std::fs::write(dir.path().join("subnet.env"), "FLANNEL_SUBNET=10.5.60.1/24\n").unwrap();
            let run = start(cfg.clone(), reg.clone(), dp.clone());
            wait_for("lease", LIMIT, || cfg.health.get().ready).await;
            assert_eq!(own_record(&reg).key, key("10.5.60.0-24"));
            let mac_before = own_record(&reg).value;
            run.stop().await;

            // Restart without the subnet file: our PublicIP's lease is found and reused, with
            // the persisted MAC (same value).
            std::fs::remove_file(dir.path().join("subnet.env")).unwrap();
            let cfg2 = DaemonConfig { health: Health::new(), ..cfg };
            let run = start(cfg2.clone(), reg.clone(), SharedFake::new());
            wait_for("lease again", LIMIT, || cfg2.health.get().ready).await;
            let own = own_record(&reg);
            assert_eq!(own.key, key("10.5.60.0-24"));
            assert_eq!(own.value, mac_before);
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn renews_before_expiry_and_reacquires_same_subnet_after_deletion() {
    LocalSet::new()
        .run_until(async {
            let Node { dir, reg, dp, cfg } = Node::new();
            let (health, metrics) = (cfg.health.clone(), cfg.metrics.clone());
            let run = start(cfg, reg.clone(), dp.clone());
            wait_for("mesh", LIMIT, || health.get().mesh_programmed).await;
            let first = own_record(&reg);

            // 23 h later (TTL 24 h − 60 min margin) the key is re-put with a fresh etcd lease.
            wait_for("renewal", Duration::from_secs(24 * 3600), || {
                reg.record(&first.key).is_some_and(|r| r.lease != first.lease)
            })
            .await;
            let renewed = reg.record(&first.key).unwrap();
            assert_eq!(renewed.value, first.value);
            // Still there well past the first lease's expiry.
            tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
            reg.expire_now();
            assert!(reg.record(&first.key).is_some());
            assert!(!metrics.render().contains("flanneld_last_renewal_timestamp_seconds 0\n"));

            // An operator deletes our key: we take the same subnet again and keep running.
            reg.delete_raw(&first.key);
            wait_for("re-acquired", LIMIT, || reg.record(&first.key).is_some_and(|r| r.value == first.value))
                .await;
            wait_for("lease held", LIMIT, || health.get().lease_held).await;
            assert!(!run.handle.is_finished());

            // Someone else overwrites our key: we never write over theirs, we move.
            reg.put_raw(&first.key, upstream_value("198.18.0.77", "02:00:00:00:00:77").as_bytes(), 0);
            wait_for("moved", LIMIT, || own_record_opt(&reg).is_some_and(|own| own.key != first.key)).await;
            let theirs = reg.record(&first.key).unwrap();
            assert!(String::from_utf8_lossy(&theirs.value).contains("198.18.0.77"));
            // The node that now holds our old subnet is programmed as a peer.
            let old_subnet = LeaseKey::parse(first.key.rsplit('/').next().unwrap()).unwrap().ipv4;
            wait_for("old subnet is a peer", LIMIT, || dp.routes().contains_key(&old_subnet.to_string()))
                .await;
            assert!(dp.has_fdb(mac(0x77), "198.18.0.77"));
            // subnet.env follows the new subnet.
            let own = own_record(&reg);
            let name = own.key.rsplit('/').next().unwrap().to_string();
            let env = std::fs::read_to_string(dir.path().join("subnet.env")).unwrap();
            let net = LeaseKey::parse(&name).unwrap().ipv4.network();
            assert!(
                env.contains(&format!("FLANNEL_SUBNET={}/24", Ipv4Addr::from(u32::from(net) + 1))),
                "{env}"
            );
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn periodic_reconcile_heals_manual_changes_and_overruns() {
    LocalSet::new()
        .run_until(async {
            let node = Node::new();
            node.put_peer("10.5.70.0-24", "198.18.0.11", "02:00:00:00:00:11");
            // The device of a previous run, with stale entries no lease explains.
            let dev = node.preexisting_device("10.5.60.0/32", mac(1));
            node.dp.with(|k| {
                k.routes.push(KernelRoute::made(
                    "10.5.99.0/24".parse().unwrap(),
                    gw("10.5.99.0"),
                    true,
                    Some(dev),
                ));
                k.fdb.push(KernelFdb {
                    ifindex: dev,
                    mac: mac(0x99),
                    dst: gw("198.18.0.99"),
                    permanent: true,
                    self_: true,
                });
            });
            let Node { dir: _dir, reg, dp, cfg } = node;
            let (health, metrics) = (cfg.health.clone(), cfg.metrics.clone());
            let run = start(cfg, reg.clone(), dp.clone());
            wait_for("mesh", LIMIT, || health.get().mesh_programmed).await;
            assert!(!dp.routes().contains_key("10.5.99.0/24"), "startup reconcile removes extras");
            dp.with(|k| assert!(k.fdb.iter().all(|e| e.mac != mac(0x99))));

            // `ip route del` by hand: back after the next reconciliation.
            dp.with(|k| k.routes.clear());
            wait_for("healed", LIMIT, || dp.routes().contains_key("10.5.70.0/24")).await;
            assert!(metrics.render().contains("flanneld_reconcile_corrections_total 1"));

            // Failing ops: health drops and the daemon retries until they succeed.
            dp.with(|k| {
                k.fail_when = Some(|op| matches!(op, NetOp::AddRoute { .. } | NetOp::CreateRoute { .. }))
            });
            reg.put_raw(
                &key("10.5.71.0-24"),
                upstream_value("198.18.0.12", "02:00:00:00:00:12").as_bytes(),
                0,
            );
            wait_for("unhealthy", LIMIT, || !health.get().mesh_programmed).await;
            dp.with(|k| k.fail_when = None);
            wait_for("retried", LIMIT, || dp.routes().contains_key("10.5.71.0/24")).await;
            wait_for("healthy", LIMIT, || health.get().mesh_programmed).await;

            // Overrun: the daemon re-dumps and reconciles.
            let dumps = dp.with(|k| k.dumps);
            dp.with(|k| k.overrun_next = true);
            reg.put_raw(
                &key("10.5.72.0-24"),
                upstream_value("198.18.0.13", "02:00:00:00:00:13").as_bytes(),
                0,
            );
            wait_for("re-dump after overrun", Duration::from_secs(5), || dp.with(|k| k.dumps) > dumps).await;
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn invalid_config_is_retried_until_fixed() {
    LocalSet::new()
        .run_until(async {
            let Node { dir: _dir, reg, dp, cfg } =
                Node::with_network_config(br#"{"Network":"10.5.0.0/29","Backend":{"Type":"vxlan"}}"#);
            let health = cfg.health.clone();
            let run = start(cfg, reg.clone(), dp.clone());
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert!(!health.get().ready);
            assert!(!run.handle.is_finished());
            reg.put_raw(&format!("{PREFIX}/config"), CONFIG.as_bytes(), 0);
            wait_for("ready", LIMIT, || health.get().ready).await;
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn device_with_another_mac_is_republished() {
    LocalSet::new()
        .run_until(async {
            // A compatible device is there already, with a MAC other than the one a new device
            // would get: it is adopted, and its MAC is what peers must learn.
            let node = Node::new();
            node.preexisting_device("10.5.60.0/32", mac(0x42));
            let Node { dir, reg, dp, cfg } = node;
            let health = cfg.health.clone();
            let run = start(cfg, reg.clone(), dp.clone());
            wait_for("ready", LIMIT, || health.get().ready).await;
            let attrs = LeaseAttrs::parse(&own_record(&reg).value).unwrap();
            assert_eq!(attrs.vxlan_data().unwrap().vtep_mac, mac(0x42));
            let persisted = std::fs::read_to_string(dir.path().join("weft-vtep-mac")).unwrap();
            assert_eq!(persisted.trim(), "02:00:00:00:00:42");
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn many_peers_are_programmed_in_batches() {
    LocalSet::new()
        .run_until(async {
            let Node { dir: _dir, reg, dp, cfg } = Node::new();
            // 250 peers (/24s 10.5.1..=250), 3 ops each.
            for i in 1..=250u32 {
                let name = format!("10.5.{i}.0-24");
                let value = upstream_value(
                    &format!("198.18.1.{}", i % 250 + 1),
                    &format!("02:00:00:00:01:{:02x}", i % 256),
                );
                reg.put_raw(&key(&name), value.as_bytes(), 0);
            }
            let (health, metrics) = (cfg.health.clone(), cfg.metrics.clone());
            let run = start(cfg, reg.clone(), dp.clone());
            wait_for("mesh", LIMIT, || health.get().mesh_programmed).await;
            assert_eq!(dp.routes().len(), 250);
            dp.with(|k| {
                assert_eq!(k.neighs.len(), 250);
                assert!(k.batch_sizes.len() >= 3, "{:?}", k.batch_sizes);
                assert!(k.batch_sizes.iter().all(|b| *b <= daemon::BATCH));
            });
            assert!(metrics.render().contains("flanneld_peers_programmed 250"));
            run.stop().await;
        })
        .await;
}

/// `--ip-blackhole-route`: none at startup, then the own subnet's route every period (added
/// once, re-added after it vanished); a refusal by the kernel is retried, never fatal.
#[tokio::test(start_paused = true)]
async fn blackhole_route_for_the_own_subnet_is_kept_every_period() {
    LocalSet::new()
        .run_until(async {
            let Node { dir: _dir, reg, dp, cfg } = Node::new();
            let cfg = DaemonConfig { blackhole_every: Some(Duration::from_secs(5)), ..cfg };
            let health = cfg.health.clone();
            dp.with(|k| k.blackhole_error = Some("File exists (os error 17)".into()));
            let run = start(cfg, reg.clone(), dp.clone());
            wait_for("ready", LIMIT, || health.get().ready).await;
            // Upstream's loop waits one period before the first check.
            assert!(dp.with(|k| k.blackhole_calls.is_empty()));
            wait_for("first attempt", LIMIT, || dp.with(|k| !k.blackhole_calls.is_empty())).await;
            wait_for("retried", LIMIT, || dp.with(|k| k.blackhole_calls.len() >= 2)).await;
            dp.with(|k| k.blackhole_error = None);
            wait_for("added", LIMIT, || dp.with(|k| !k.blackholes.is_empty())).await;
            let own = LeaseKey::parse(own_record(&reg).key.rsplit('/').next().unwrap()).unwrap();
            dp.with(|k| {
                assert_eq!(k.blackholes, [own.ipv4]);
                assert!(k.blackhole_calls.iter().all(|s| *s == own.ipv4));
                k.blackholes.clear();
            });
            wait_for("re-added", LIMIT, || dp.with(|k| k.blackholes.contains(&own.ipv4))).await;
            run.stop().await;
        })
        .await;
}

/// A route as an operator (or another tool) adds it: on `eth0`, no onlink.
fn foreign(dst: &str, gw: &str, table: u32, protocol: u8, metric: u32) -> KernelRoute {
    KernelRoute {
        table,
        protocol,
        metric,
        ..KernelRoute::made(dst.parse().unwrap(), gw.parse().unwrap(), false, Some(UNDERLAY))
    }
}

/// Whether every one of `routes` is in the fake kernel, unchanged.
fn all_there(dp: &SharedFake, routes: &[KernelRoute]) -> bool {
    dp.with(|k| routes.iter().all(|r| k.routes.contains(r)))
}

const BOOT: u8 = 3;
const STATIC: u8 = 4;

/// Issue 13's routes and their relatives, none of which flanneld made: a /32 via a peer's
/// address with iproute2's default protocol (boot), a /24 with protocol static, a /24 of the
/// lease size via an address that is no peer's PublicIP, a peer subnet in another table and
/// one with a metric.
fn operator_routes() -> Vec<KernelRoute> {
    vec![
        foreign("10.5.200.7/32", "198.18.0.3", 254, BOOT, 0),
        foreign("10.5.201.0/24", "198.18.0.3", 254, STATIC, 0),
        foreign("10.5.202.0/24", "198.18.0.99", 254, BOOT, 0),
        foreign("10.5.8.0/24", "198.18.0.99", 100, BOOT, 0),
        foreign("10.5.8.0/24", "198.18.0.98", 254, STATIC, 100),
    ]
}

/// Issue 13, without root: routes flanneld did not make survive every reconcile pass; one that
/// holds a peer subnet (found at startup or met by a lease event) is left alone and reported
/// (`/healthz` 503 naming the subnet, `flanneld_route_conflicts`), and once the operator
/// removes it the peer route is programmed and health returns.
#[tokio::test(start_paused = true)]
async fn routes_flanneld_did_not_make_are_never_touched_and_conflicts_are_reported() {
    LocalSet::new()
        .run_until(async {
            let Node { dir: _dir, reg, dp, cfg } = Node::new();
            reg.put_raw(&key("10.5.7.0-24"), upstream_value("198.18.0.3", "02:00:00:00:00:07").as_bytes(), 0);
            reg.put_raw(&key("10.5.8.0-24"), upstream_value("198.18.0.4", "02:00:00:00:00:08").as_bytes(), 0);
            let in_the_way = foreign("10.5.7.0/24", "198.18.0.50", 254, STATIC, 0);
            dp.with(|k| {
                k.routes = operator_routes();
                k.routes.push(in_the_way.clone());
            });
            let (health, metrics) = (cfg.health.clone(), cfg.metrics.clone());
            let run = start(cfg, reg.clone(), dp.clone());
            wait_for("peer route and conflict", LIMIT, || {
                dp.routes().contains_key("10.5.8.0/24") && health.get().route_conflicts == ["10.5.7.0/24"]
            })
            .await;
            let (code, body) = health.healthz();
            assert_eq!(code, 503);
            assert!(body.contains("hold peer subnets 10.5.7.0/24"), "{body}");
            let text = metrics.render();
            assert!(text.contains("flanneld_route_conflicts 1"), "{text}");
            assert!(text.contains("flanneld_peers_programmed 1"), "{text}");
            // The peer's neighbour and FDB entry are there; only its route waits.
            assert_eq!(dp.neigh("10.5.7.0"), Some(mac(7)));
            assert!(dp.has_fdb(mac(7), "198.18.0.3"));

            // Several reconcile passes later nothing foreign has changed.
            let dumps = dp.with(|k| k.dumps);
            tokio::time::sleep(Duration::from_secs(100)).await;
            assert!(dp.with(|k| k.dumps) >= dumps + 3);
            let mut want = operator_routes();
            want.push(in_the_way.clone());
            assert!(all_there(&dp, &want));
            assert!(!dp.routes().contains_key("10.5.7.0/24"));

            // A lease event for a subnet an operator route holds: not replaced either.
            let blocks_new = foreign("10.5.9.0/24", "198.18.0.51", 254, BOOT, 0);
            dp.with(|k| k.routes.push(blocks_new.clone()));
            reg.put_raw(&key("10.5.9.0-24"), upstream_value("198.18.0.5", "02:00:00:00:00:09").as_bytes(), 0);
            wait_for("event conflict", LIMIT, || health.get().route_conflicts.len() == 2).await;
            assert!(all_there(&dp, std::slice::from_ref(&blocks_new)));
            dp.with(|k| {
                let dst: ipnetwork::IpNetwork = "10.5.9.0/24".parse().unwrap();
                assert!(!k.applied.iter().any(|o| matches!(o, NetOp::AddRoute { dst: d, .. } if *d == dst)));
            });

            // The operator takes the routes in the way away: programmed, healthy again.
            dp.with(|k| k.routes.retain(|r| *r != in_the_way && *r != blocks_new));
            wait_for("healthy", LIMIT, || health.healthz().0 == 200).await;
            assert!(dp.routes().contains_key("10.5.7.0/24") && dp.routes().contains_key("10.5.9.0/24"));
            assert!(metrics.render().contains("flanneld_route_conflicts 0"));
            assert!(all_there(&dp, &operator_routes()));
            run.stop().await;
        })
        .await;
}

/// DirectRouting: its routes are healed and removed with their lease, operator routes via the
/// same peer stay; restarted with DirectRouting off, its routes are replaced once, and a route
/// of that shape added afterwards is an operator's (a conflict, left alone).
#[tokio::test(start_paused = true)]
async fn direct_routing_routes_are_owned_only_while_in_use() {
    LocalSet::new()
        .run_until(async {
            let Node { dir, reg, dp, cfg } = Node::with_network_config(DIRECT_ROUTING);
            reg.put_raw(&key("10.5.7.0-24"), upstream_value("198.18.0.3", "02:00:00:00:00:07").as_bytes(), 0);
            reg.put_raw(&key("10.5.8.0-24"), upstream_value("198.18.0.4", "02:00:00:00:00:08").as_bytes(), 0);
            dp.with(|k| {
                k.routes = operator_routes();
                k.add_onlink("198.18.0.3".parse().unwrap(), UNDERLAY);
            });
            let direct = |dp: &SharedFake| dp.route("10.5.7.0/24");
            let health = cfg.health.clone();
            let run = start(cfg, reg.clone(), dp.clone());
            wait_for("direct route", LIMIT, || direct(&dp) == Some((gw("198.18.0.3"), false))).await;
            assert_eq!(dp.routes()["10.5.8.0/24"], "10.5.8.0", "not on-link: VXLAN");
            wait_for("healthy", LIMIT, || health.healthz().0 == 200).await;

            dp.del_route("10.5.7.0/24");
            wait_for("healed", LIMIT, || direct(&dp).is_some()).await;
            reg.delete_raw(&key("10.5.7.0-24"));
            wait_for("removed with its lease", LIMIT, || direct(&dp).is_none()).await;
            reg.put_raw(&key("10.5.7.0-24"), upstream_value("198.18.0.3", "02:00:00:00:00:07").as_bytes(), 0);
            wait_for("back", LIMIT, || direct(&dp) == Some((gw("198.18.0.3"), false))).await;
            tokio::time::sleep(Duration::from_secs(70)).await;
            assert!(all_there(&dp, &operator_routes()));
            run.stop().await;

            // DirectRouting switched off: the next run replaces its route, once.
            reg.put_raw(&format!("{PREFIX}/config"), CONFIG.as_bytes(), 0);
            let cfg = daemon_config(dir.path(), ME);
            let health = cfg.health.clone();
            let run = start(cfg, reg.clone(), dp.clone());
            wait_for("VXLAN route", LIMIT, || direct(&dp) == Some((gw("10.5.7.0"), true))).await;
            wait_for("healthy", LIMIT, || health.healthz().0 == 200).await;
            // Now a route of the DirectRouting shape is an operator's.
            let by_hand = foreign("10.5.7.0/24", "198.18.0.3", 254, BOOT, 0);
            dp.del_route("10.5.7.0/24");
            dp.with(|k| k.routes.push(by_hand.clone()));
            wait_for("conflict", LIMIT, || health.get().route_conflicts == ["10.5.7.0/24"]).await;
            tokio::time::sleep(Duration::from_secs(70)).await;
            // Still the operator's route only: flanneld's VXLAN route was not put back over it.
            assert!(all_there(&dp, std::slice::from_ref(&by_hand)));
            assert_eq!(direct(&dp), Some((gw("198.18.0.3"), false)));
            assert!(all_there(&dp, &operator_routes()));
            run.stop().await;
        })
        .await;
}

/// DirectRouting with many peers: the on-link question of every peer is answered from one
/// route dump (not one kernel lookup per peer), and each peer gets the right kind of route.
#[tokio::test(start_paused = true)]
async fn direct_routing_decides_all_peers_from_one_route_dump() {
    LocalSet::new()
        .run_until(async {
            let Node { dir: _dir, reg, dp, cfg } = Node::with_network_config(DIRECT_ROUTING);
            for i in 1..=100u32 {
                let public = format!("198.18.1.{i}");
                reg.put_raw(
                    &key(&format!("10.5.{i}.0-24")),
                    upstream_value(&public, &format!("02:00:00:00:01:{i:02x}")).as_bytes(),
                    0,
                );
                if i % 2 == 0 {
                    dp.with(|k| k.add_onlink(public.parse().unwrap(), UNDERLAY));
                }
            }
            let health = cfg.health.clone();
            let run = start(cfg, reg.clone(), dp.clone());
            wait_for("mesh", LIMIT, || health.get().mesh_programmed).await;
            let routes = dp.routes();
            assert_eq!(routes.len(), 100);
            for i in 1..=100u32 {
                let want = if i % 2 == 0 { format!("198.18.1.{i}") } else { format!("10.5.{i}.0") };
                assert_eq!(routes[&format!("10.5.{i}.0/24")], want);
            }
            // One for the snapshot's decisions, one in the reconciliation's full dump.
            assert_eq!(dp.with(|k| k.route_dumps), 2);
            run.stop().await;
        })
        .await;
}

/// The VXLAN device deleted behind the daemon's back (an operator's `ip link del flannel.1`):
/// its neighbours, FDB entries and routes go with it; the next reconciliation meets ENODEV,
/// recreates the device (same MAC, a new ifindex) and replays every peer's neighbour, FDB
/// entry and route onto it.
#[tokio::test(start_paused = true)]
async fn deleted_device_is_recreated_and_every_peer_replayed() {
    LocalSet::new()
        .run_until(async {
            let node = Node::new();
            let peers = [
                ("10.5.7.0", "198.18.0.3", mac(7)),
                ("10.5.8.0", "198.18.0.4", mac(8)),
                ("10.5.9.0", "198.18.0.5", mac(9)),
            ];
            for (net, public, m) in peers {
                let name = format!("{net}-24");
                node.put_peer(&name, public, &weft_flanneld::lease::format_mac(&m));
            }
            let health = node.health();
            let run = node.start();
            let dp = &node.dp;
            wait_for("mesh", LIMIT, || health.get().mesh_programmed).await;
            let (_, before) = dp.device().unwrap();
            let programmed = |index: u32| {
                dp.with(|k| {
                    peers.iter().all(|(net, public, m)| {
                        let (ip, dst): (IpAddr, IpAddr) = (net.parse().unwrap(), public.parse().unwrap());
                        let route =
                            KernelRoute::made(format!("{net}/24").parse().unwrap(), ip, true, Some(index));
                        k.neighs.iter().any(|n| n.ifindex == index && n.ip == ip && n.mac == *m)
                            && k.fdb.iter().any(|e| e.ifindex == index && e.mac == *m && e.dst == dst)
                            && k.routes.contains(&route)
                    })
                })
            };
            assert!(programmed(before.index));

            dp.with(|k| k.remove_device());
            assert!(dp.with(|k| k.neighs.is_empty() && k.fdb.is_empty() && k.routes.is_empty()));
            wait_for("device recreated", LIMIT, || dp.device().is_some()).await;
            let (_, after) = dp.device().unwrap();
            assert_ne!(after.index, before.index, "a new device");
            assert_eq!(after.mac, before.mac, "same MAC: peers need no update");
            wait_for("every peer replayed", LIMIT, || programmed(after.index)).await;
            wait_for("healthy", LIMIT, || health.get().mesh_programmed).await;
            // Nothing left on (or pointing at) the old device.
            dp.with(|k| {
                assert!(k.neighs.iter().all(|n| n.ifindex == after.index));
                assert!(k.fdb.iter().all(|e| e.ifindex == after.index));
                assert!(k.routes.iter().all(|r| r.oif == Some(after.index)));
                assert_eq!(k.neighs.len(), 3);
            });
            // The published lease still carries the same MAC.
            let attrs = LeaseAttrs::parse(&own_record(&node.reg).value).unwrap();
            assert_eq!(attrs.vxlan_data().unwrap().vtep_mac, before.mac);
            run.stop().await;
        })
        .await;
}

/// IPv6-only (`EnableIPv4: false`) is refused (docs/flannel.md §4.1): no lease, no device,
/// no subnet.env, not ready — and once the operator turns IPv4 back on, the daemon starts
/// normally.
#[tokio::test(start_paused = true)]
async fn ipv6_only_is_refused_until_the_config_turns_ipv4_on() {
    LocalSet::new()
        .run_until(async {
            let dual = r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:5::/56","Backend":{"Type":"host-gw"}}"#;
            let node = Node::with_network_config(dual.as_bytes());
            let health = node.health();
            let run = node.start();
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert!(own_record_opt(&node.reg).is_none());
            assert!(node.dp.device().is_none());
            // The fixture's previous subnet file, not rewritten.
            let env = std::fs::read_to_string(node.dir.path().join("subnet.env")).unwrap();
            assert_eq!(env, common::node::OWN_SUBNET_ENV);
            assert!(!health.get().ready);

            node.reg.put_raw(&format!("{PREFIX}/config"), CONFIG.as_bytes(), 0);
            wait_for("ready", LIMIT, || health.get().ready).await;
            assert!(LeaseKey::parse(own_record(&node.reg).key.rsplit('/').next().unwrap()).unwrap().ipv6.is_none());
            run.stop().await;
        })
        .await;
}
