//! Against a real etcd (started per test on 127.0.0.1 at free ports, stopped by PID): byte
//! compatibility with upstream's keys and values, races between many registries, watch
//! recovery after an etcd restart, and compaction → re-list.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::etcd::Etcd;
use common::node::{daemon_config, start, Kernel, CONFIG, PREFIX};
use common::{upstream_value, wait_for};
use etcd_client::{GetOptions, PutOptions};
use tokio::sync::mpsc;
use tokio::task::LocalSet;
use weft_dataplane::fake::SharedFake;
use weft_flanneld::acquire::{acquire_once, renew, AcquireError, Renewal, Want};
use weft_flanneld::daemon::DaemonConfig;
use weft_flanneld::lease::{parse_lease_path, LeaseAttrs, LeaseKey};
use weft_flanneld::network::parse_config;
use weft_flanneld::registry::etcd::{EtcdOptions, EtcdRegistry};
use weft_flanneld::registry::{Expect, Registry};
use weft_flanneld::watch::{self, WatchMsg};

const LIMIT: Duration = Duration::from_secs(60);

/// A registry whose endpoint list starts with a closed port, then the live `etcd`.
async fn registry_with_a_dead_endpoint_first(etcd: &Etcd) -> EtcdRegistry {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    EtcdRegistry::connect(&EtcdOptions { endpoints: vec![dead, etcd.endpoint()], ..Default::default() })
        .await
        .unwrap()
}

async fn registry(etcd: &Etcd) -> EtcdRegistry {
    EtcdRegistry::connect(&EtcdOptions { endpoints: vec![etcd.endpoint()], ..Default::default() })
        .await
        .unwrap()
}

/// The fixture's daemon config with a 5 s reconcile period (real time here).
fn config(dir: &std::path::Path, ip: Ipv4Addr) -> DaemonConfig {
    DaemonConfig { reconcile_interval: Duration::from_secs(5), ..daemon_config(dir, ip) }
}

fn is_canonical_key(name: &str) -> bool {
    LeaseKey::parse(name).is_ok_and(|k| k.render() == name)
}

#[tokio::test]
async fn keys_and_values_are_upstream_compatible_and_handwritten_leases_are_peers() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    client.put(format!("{PREFIX}/config"), CONFIG, None).await.unwrap();
    // A lease exactly as upstream flanneld writes it (with its own 24 h etcd lease).
    let grant = client.lease_grant(86_400, None).await.unwrap();
    let upstream = upstream_value("198.18.0.3", "c6:d2:32:6f:8f:44");
    client
        .put(
            format!("{PREFIX}/subnets/10.5.52.0-24"),
            upstream.clone(),
            Some(PutOptions::new().with_lease(grant.id())),
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Ipv4Addr::new(198, 18, 0, 2));
    let health = cfg.health.clone();
    let dp = SharedFake::new();
    let reg = registry(&etcd).await;
    LocalSet::new()
        .run_until(async {
            let run = start(cfg, reg, dp.clone());
            wait_for("hand-written peer programmed", LIMIT, || dp.routes().contains_key("10.5.52.0/24")).await;
            assert_eq!(dp.routes()["10.5.52.0/24"], "10.5.52.0");
            assert!(health.get().mesh_programmed);

            let resp = client.get(format!("{PREFIX}/subnets/"), Some(GetOptions::new().with_prefix())).await.unwrap();
            let dirp = format!("{PREFIX}/subnets/");
            let mut own = None;
            for kv in resp.kvs() {
                let key = kv.key_str().unwrap();
                let name = key.strip_prefix(&dirp).unwrap();
                // Nothing but canonical lease keys with valid attributes under subnets/.
                assert!(is_canonical_key(name), "{key}");
                let attrs = LeaseAttrs::parse(kv.value()).unwrap();
                if attrs.public_ip == Ipv4Addr::new(198, 18, 0, 2) {
                    own = Some(kv.clone());
                }
            }
            assert_eq!(resp.kvs().len(), 2);
            let own = own.expect("own lease written");
            let mac = dp.device().unwrap().1.mac;
            assert_eq!(
                own.value_str().unwrap(),
                format!(
                    r#"{{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{}"}}}}"#,
                    weft_flanneld::lease::format_mac(&mac)
                )
            );
            let ttl = client.lease_time_to_live(own.lease(), None).await.unwrap();
            assert!(ttl.granted_ttl() == 86_400 && ttl.ttl() > 86_000, "ttl {}", ttl.ttl());
            // The hand-written lease is untouched.
            let theirs = client.get(format!("{PREFIX}/subnets/10.5.52.0-24"), None).await.unwrap();
            assert_eq!(theirs.kvs()[0].value_str().unwrap(), upstream);

            // A deletion (what upstream nodes see when a lease expires) removes the peer.
            client.delete(format!("{PREFIX}/subnets/10.5.52.0-24"), None).await.unwrap();
            wait_for("peer removed", LIMIT, || !dp.routes().contains_key("10.5.52.0/24")).await;
            run.stop().await;
        })
        .await;
}

/// Twenty nodes (PublicIP 198.18.1.<i+1>, attributes from `attrs`) acquire at once from
/// `config`, all preferring `previous`: their keys and how many races they lost.
async fn race(
    etcd: &Etcd,
    config: &str,
    previous: &str,
    attrs: fn(u8, Ipv4Addr) -> LeaseAttrs,
) -> (Vec<LeaseKey>, usize) {
    let mut client = etcd.client().await;
    client.put(format!("{PREFIX}/config"), config, None).await.unwrap();
    let spec = parse_config(config.as_bytes()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let reg = registry(etcd).await;
        let spec = spec.clone();
        let previous = LeaseKey::parse(previous).ok();
        tasks.push(tokio::spawn(async move {
            let ip = Ipv4Addr::new(198, 18, 1, i + 1);
            let attrs = attrs(i, ip);
            let want = Want { prefix: PREFIX, spec: &spec, public_ip: ip, attrs: &attrs, previous };
            let mut lost = 0;
            loop {
                match acquire_once(&reg, &want).await {
                    Ok(a) => return (a.lease.key, lost),
                    Err(AcquireError::LostRace(_)) => lost += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let (mut keys, mut races) = (Vec::new(), 0);
    for t in tasks {
        let (k, lost) = t.await.unwrap();
        keys.push(k);
        races += lost;
    }
    (keys, races)
}

#[tokio::test]
async fn twenty_registries_racing_never_share_a_subnet() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    // Everybody prefers the same subnet: maximal contention on one key.
    let (keys, races) =
        race(&etcd, CONFIG, "10.5.9.0-24", |i, ip| LeaseAttrs::vxlan(ip, 1, [2, 0, 0, 0, 1, i])).await;
    let mut subnets = BTreeSet::new();
    for k in keys {
        assert!(subnets.insert(k.ipv4), "subnet {} handed out twice", k.ipv4);
    }
    assert_eq!(subnets.len(), 20);
    assert!(subnets.contains(&"10.5.9.0/24".parse().unwrap()));
    let resp = client.get(format!("{PREFIX}/subnets/"), Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(resp.kvs().len(), 20);
    // With one preferred key there must have been lost races, all resolved without overwrite.
    assert!(races >= 1, "no race happened");
    let ips: BTreeSet<_> =
        resp.kvs().iter().map(|kv| LeaseAttrs::parse(kv.value()).unwrap().public_ip).collect();
    assert_eq!(ips.len(), 20);
}

/// Dual stack against a real etcd: twenty nodes racing for the same previous subnets never share
/// an IPv4 or an IPv6 subnet (the subnets of either family picked independently, so different
/// keys can collide: crate `acquire`'s overlap check resolves it), every key is upstream's
/// `<v4>-<len>&<v6>-<len6>` form and every value carries `PublicIPv6` and `BackendV6Data`.
#[tokio::test]
async fn twenty_dual_stack_registries_racing_never_share_a_subnet_of_either_family() {
    const DUAL: &str = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/56","Backend":{"Type":"vxlan"}}"#;
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    let (keys, _) = race(&etcd, DUAL, "10.5.9.0-24&fd00:5:0:9::-64", |i, ip| {
        let ip6 = std::net::Ipv6Addr::new(0xfd18, 0, 0, 0, 0, 0, 1, u16::from(i) + 1);
        LeaseAttrs::vxlan(ip, 1, [2, 0, 0, 0, 1, i]).with_vxlan_v6(ip6, 1, [2, 0, 0, 0, 6, i])
    })
    .await;
    let spec = parse_config(DUAL.as_bytes()).unwrap();
    let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
    for k in keys {
        assert!(v4.insert(k.ipv4), "IPv4 subnet {} handed out twice", k.ipv4);
        let n6 = k.ipv6.expect("dual-stack lease");
        assert!(v6.insert(n6), "IPv6 subnet {n6} handed out twice");
    }
    let resp = client.get(format!("{PREFIX}/subnets/"), Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(resp.kvs().len(), 20);
    for kv in resp.kvs() {
        let name = kv.key_str().unwrap().rsplit('/').next().unwrap();
        let k = LeaseKey::parse(name).unwrap();
        assert_eq!(k.render(), name, "canonical key");
        assert!(spec.ipv6.as_ref().unwrap().fits(&k.ipv6.unwrap()), "{name}");
        let attrs = LeaseAttrs::parse(kv.value()).unwrap();
        assert!(attrs.public_ipv6.is_some() && attrs.vxlan_v6_data().is_ok(), "{name}");
        assert_ne!(kv.lease(), 0);
    }
}

#[tokio::test]
async fn watch_resumes_after_etcd_restart() {
    let mut etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    client.put(format!("{PREFIX}/config"), CONFIG, None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Ipv4Addr::new(198, 18, 0, 2));
    let health = cfg.health.clone();
    let dp = SharedFake::new();
    let reg = registry(&etcd).await;
    LocalSet::new()
        .run_until(async {
            let run = start(cfg, reg, dp.clone());
            wait_for("ready", LIMIT, || health.get().mesh_programmed).await;
            client
                .put(
                    format!("{PREFIX}/subnets/10.5.61.0-24"),
                    upstream_value("198.18.0.61", "02:00:00:00:00:61"),
                    None,
                )
                .await
                .unwrap();
            wait_for("first peer", LIMIT, || dp.routes().contains_key("10.5.61.0/24")).await;

            etcd.stop();
            wait_for("etcd seen down", LIMIT, || !health.get().etcd_reachable).await;
            // Kernel state is kept during the outage.
            assert!(dp.routes().contains_key("10.5.61.0/24"));
            etcd.restart().await;
            let mut client = etcd.client().await;
            client
                .put(
                    format!("{PREFIX}/subnets/10.5.62.0-24"),
                    upstream_value("198.18.0.62", "02:00:00:00:00:62"),
                    None,
                )
                .await
                .unwrap();
            wait_for("peer after restart", LIMIT, || dp.routes().contains_key("10.5.62.0/24")).await;
            wait_for("etcd seen up", LIMIT, || health.get().etcd_reachable).await;
            assert!(dp.routes().contains_key("10.5.61.0/24"));
            run.stop().await;
        })
        .await;
}

#[tokio::test]
async fn compacted_watch_relists_and_resyncs() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    let dirp = format!("{PREFIX}/subnets/");
    client
        .put(format!("{dirp}10.5.70.0-24"), upstream_value("198.18.0.70", "02:00:00:00:00:70"), None)
        .await
        .unwrap();
    let reg = registry(&etcd).await;
    let (records, rev) = reg.list(&dirp).await.unwrap();
    assert_eq!(records.len(), 1);
    // History after our listing is compacted away before the watch starts.
    client
        .put(format!("{dirp}10.5.71.0-24"), upstream_value("198.18.0.71", "02:00:00:00:00:71"), None)
        .await
        .unwrap();
    client.delete(format!("{dirp}10.5.70.0-24"), None).await.unwrap();
    let put = client.put("/other/key", "x", None).await.unwrap();
    client.compact(put.header().unwrap().revision(), None).await.unwrap();

    let (tx, mut rx) = mpsc::channel(16);
    let task = tokio::spawn(watch::follow(reg.clone(), dirp.clone(), rev, tx));
    let mut snapshots = Vec::new();
    while snapshots.is_empty() {
        match tokio::time::timeout(LIMIT, rx.recv()).await.unwrap().unwrap() {
            WatchMsg::Snapshot { records, .. } => snapshots.push(records),
            WatchMsg::Events(e) => panic!("events from a compacted revision: {e:?}"),
            WatchMsg::Etcd(_) => {}
        }
    }
    let names: Vec<String> =
        snapshots[0].iter().map(|r| parse_lease_path(&dirp, &r.key).unwrap().render()).collect();
    assert_eq!(names, vec!["10.5.71.0-24"]);
    // And the watch continues from the new listing.
    client
        .put(format!("{dirp}10.5.72.0-24"), upstream_value("198.18.0.72", "02:00:00:00:00:72"), None)
        .await
        .unwrap();
    match tokio::time::timeout(LIMIT, rx.recv()).await.unwrap().unwrap() {
        WatchMsg::Events(e) => assert!(format!("{e:?}").contains("10.5.72.0-24")),
        other => panic!("unexpected {other:?}"),
    }
    task.abort();
}

#[tokio::test]
async fn idle_watch_outlives_the_request_timeout() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    let dirp = format!("{PREFIX}/subnets/");
    let reg = registry(&etcd).await;
    let (_, rev) = reg.list(&dirp).await.unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let task = tokio::spawn(watch::follow(reg.clone(), dirp.clone(), rev, tx));
    // Longer than the 10 s per-request timeout of the client: the stream must stay open.
    tokio::time::sleep(Duration::from_secs(12)).await;
    client
        .put(format!("{dirp}10.5.80.0-24"), upstream_value("198.18.0.80", "02:00:00:00:00:80"), None)
        .await
        .unwrap();
    match tokio::time::timeout(LIMIT, rx.recv()).await.unwrap().unwrap() {
        WatchMsg::Events(e) => assert!(format!("{e:?}").contains("10.5.80.0-24")),
        other => panic!("watch was interrupted: {other:?}"),
    }
    task.abort();
}

#[tokio::test]
async fn a_dead_endpoint_in_the_list_is_tolerated() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    client.put(format!("{PREFIX}/config"), CONFIG, None).await.unwrap();
    let reg = registry_with_a_dead_endpoint_first(&etcd).await;
    let spec = parse_config(CONFIG.as_bytes()).unwrap();
    let ip = Ipv4Addr::new(198, 18, 0, 2);
    let attrs = LeaseAttrs::vxlan(ip, 1, [2, 0, 0, 0, 0, 2]);
    let want = Want { prefix: PREFIX, spec: &spec, public_ip: ip, attrs: &attrs, previous: None };
    // Calls may fail while the balancer learns the first endpoint is down; they must succeed soon.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match acquire_once(&reg, &want).await {
            Ok(_) => break,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "never reached the live endpoint: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Reads are retried inside the registry: with one live endpoint they succeed.
    for _ in 0..10 {
        assert!(reg.get(&format!("{PREFIX}/config")).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn writes_that_never_reached_a_server_are_retried() {
    // With a dead endpoint in the list the balancer sends some calls there; such a call fails
    // before any request is sent, so the registry repeats it, writes included (a node joining
    // while one etcd member is down must still get its lease at the first attempt).
    let etcd = Etcd::start().await;
    let reg = registry_with_a_dead_endpoint_first(&etcd).await;
    for i in 0..40 {
        let lease = reg.grant(60).await.unwrap_or_else(|e| panic!("grant {i}: {e}"));
        let key = format!("{PREFIX}/writes/{i}");
        let put = reg.put_if(&key, b"v", lease, Expect::Absent).await;
        assert!(matches!(put, Ok(Some(_))), "put {i}: {put:?}");
    }
}

#[tokio::test]
async fn client_certificate_tls() {
    let etcd = Etcd::start_tls().await;
    let (ca, cert, key) = etcd.tls_files().unwrap();
    let mut client = etcd.client().await;
    client.put(format!("{PREFIX}/config"), CONFIG, None).await.unwrap();
    let tls = weft_flanneld::registry::etcd::EtcdTls { cert, key, ca: Some(ca) }.load().unwrap();
    // A bare host:port endpoint gets https when TLS is configured, like upstream.
    let bare = etcd.endpoint().trim_start_matches("https://").to_string();
    let reg =
        EtcdRegistry::connect(&EtcdOptions { endpoints: vec![bare], tls: Some(tls), ..Default::default() })
            .await
            .unwrap();
    assert_eq!(reg.get(&format!("{PREFIX}/config")).await.unwrap().unwrap(), CONFIG.as_bytes());
    // Without a client certificate the server refuses.
    let plain =
        EtcdRegistry::connect(&EtcdOptions { endpoints: vec![etcd.endpoint()], ..Default::default() })
            .await
            .unwrap();
    assert!(plain.get(&format!("{PREFIX}/config")).await.is_err());
    let missing = weft_flanneld::registry::etcd::EtcdTls {
        cert: "/nonexistent/wtfd.crt".into(),
        key: "/nonexistent/wtfd.key".into(),
        ca: None,
    };
    assert!(missing.load().unwrap_err().contains("/nonexistent/wtfd.crt"));
}

#[tokio::test]
async fn renewal_never_overwrites_a_foreign_key() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;
    let reg = registry(&etcd).await;
    let spec = parse_config(CONFIG.as_bytes()).unwrap();
    let ip = Ipv4Addr::new(198, 18, 0, 2);
    let attrs = LeaseAttrs::vxlan(ip, 1, [2, 0, 0, 0, 0, 2]);
    let want = Want { prefix: PREFIX, spec: &spec, public_ip: ip, attrs: &attrs, previous: None };
    let mut own = acquire_once(&reg, &want).await.unwrap().lease;
    let first_lease = own.etcd_lease;

    // A normal renewal: same key and value, a fresh 24 h etcd lease, the old one revoked.
    let value = own.value.clone();
    assert_eq!(renew(&reg, &mut own, &value).await.unwrap(), Renewal::Renewed);
    assert_ne!(own.etcd_lease, first_lease);
    let kv = client.get(own.path.clone(), None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.lease(), kv.value()), (own.etcd_lease, value.as_slice()));
    assert_eq!(client.lease_time_to_live(first_lease, None).await.unwrap().ttl(), -1);

    // Another node takes the key: renewal reports the loss and leaves their value alone.
    let theirs = upstream_value("198.18.0.9", "02:00:00:00:00:09");
    client.put(own.path.clone(), theirs.clone(), None).await.unwrap();
    assert_eq!(renew(&reg, &mut own, &value).await.unwrap(), Renewal::Lost);
    let kv = client.get(own.path.clone(), None).await.unwrap().kvs()[0].clone();
    assert_eq!(kv.value_str().unwrap(), theirs);

    // Deleted key: lost as well, and nothing is re-created by the renewal itself.
    client.delete(own.path.clone(), None).await.unwrap();
    assert_eq!(renew(&reg, &mut own, &value).await.unwrap(), Renewal::Lost);
    assert!(client.get(own.path.clone(), None).await.unwrap().kvs().is_empty());
}
