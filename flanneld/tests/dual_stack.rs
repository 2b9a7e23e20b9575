//! Dual-stack VXLAN in the daemon, without root: the memory registry and the fake kernel
//! (`SharedFake`, with its second device `flannel-v6`), tokio's paused clock.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::node::{key, Kernel, Node, ME, ME6, PREFIX, UNDERLAY};
use common::{mac, wait_for};
use tokio::task::LocalSet;
use weft_dataplane::{KernelRoute, NetOp};
use weft_flanneld::daemon::DaemonError;
use weft_flanneld::lease::{format_mac, LeaseAttrs, LeaseKey};
use weft_flanneld::registry::memory::MemoryRegistry;
use weft_flanneld::registry::Record;

const LIMIT: Duration = Duration::from_secs(120);

fn own_record(reg: &MemoryRegistry) -> Record {
    let recs = reg.records(&format!("{PREFIX}/subnets/"));
    recs.into_iter()
        .find(|r| LeaseAttrs::parse(&r.value).map(|a| a.public_ip == ME).unwrap_or(false))
        .expect("own lease")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Peer 7: `10.5.7.0/24` + `fd00:5:0:7::/64` at 198.18.0.3 / 2001:2::3.
fn put_peer7(node: &Node, mac4: u8, mac6: u8) {
    node.put_dual_peer(
        "10.5.7.0-24&fd00:5:0:7::-64",
        "198.18.0.3",
        &format_mac(&mac(mac4)),
        "2001:2::3",
        &format_mac(&mac(mac6)),
    );
}

/// Both sides of peer 7 as the kernel must hold them.
fn peer7_programmed(node: &Node, mac4: u8, mac6: u8) -> bool {
    let dp = &node.dp;
    dp.route("10.5.7.0/24") == Some((ip("10.5.7.0"), true))
        && dp.neigh("10.5.7.0") == Some(mac(mac4))
        && dp.has_fdb(mac(mac4), "198.18.0.3")
        && dp.route6("fd00:5:0:7::/64") == Some(ip("fd00:5:0:7::"))
        && dp.neigh6("fd00:5:0:7::") == Some(mac(mac6))
        && dp.fdb6() == vec![(mac(mac6), ip("2001:2::3"))]
}

fn peer7_gone(node: &Node) -> bool {
    let dp = &node.dp;
    dp.route("10.5.7.0/24").is_none()
        && dp.neigh("10.5.7.0").is_none()
        && dp.route6("fd00:5:0:7::/64").is_none()
        && dp.neigh6("fd00:5:0:7::").is_none()
        && dp.fdb6().is_empty()
}

#[tokio::test(start_paused = true)]
async fn dual_stack_peer_gets_both_sides_and_its_removal_removes_both() {
    LocalSet::new()
        .run_until(async {
            let node = Node::dual();
            put_peer7(&node, 7, 0x67);
            // An IPv4-only lease next to it: IPv4 side only, no IPv6 entries.
            node.put_peer("10.5.8.0-24", "198.18.0.4", &format_mac(&mac(8)));
            let (health, metrics) = (node.health(), node.metrics());
            let run = node.start();
            wait_for("mesh", LIMIT, || health.get().mesh_programmed).await;
            assert!(peer7_programmed(&node, 7, 0x67));
            assert_eq!(node.dp.route("10.5.8.0/24"), Some((ip("10.5.8.0"), true)));
            let text = metrics.render();
            assert!(text.contains("flanneld_peers_programmed 2"), "{text}");
            assert!(text.contains("flanneld_peers_programmed_v6 1"), "{text}");

            // The device over the IPv6 underlay, and the lease publishing it.
            let (spec6, info6) = node.dp.device_v6().expect("flannel-v6 device");
            let own = own_record(&node.reg);
            let lease = LeaseKey::parse(own.key.rsplit('/').next().unwrap()).unwrap();
            let own6 = lease.ipv6.expect("a dual-stack lease");
            assert_eq!(spec6.name, "flannel-v6.1");
            assert_eq!(spec6.local, IpAddr::V6(ME6));
            assert_eq!(spec6.mtu, 1430, "1500 − 70 (docs/flannel.md §8.4)");
            assert_eq!(spec6.address, format!("{}/128", own6.network()).parse().unwrap());
            assert_eq!(spec6.network, "fd00:5::/48".parse().unwrap());
            let attrs = LeaseAttrs::parse(&own.value).unwrap();
            assert_eq!(attrs.public_ipv6, Some(ME6));
            assert_eq!(attrs.vxlan_v6_data().unwrap().vtep_mac, info6.mac);
            assert_ne!(info6.mac, node.dp.device().unwrap().1.mac, "each device has its own MAC");
            // What /debug/dataplane reports of the daemon.
            let facts = health.facts();
            assert_eq!(facts.public_ipv6, Some(ME6));
            assert_eq!(facts.network_v6, Some("fd00:5::/48".parse().unwrap()));
            let env = std::fs::read_to_string(node.dir.path().join("subnet.env")).unwrap();
            assert!(env.contains("FLANNEL_IPV6_SUBNET=") && env.contains("FLANNEL_MTU=1430"), "{env}");

            node.reg.delete_raw(&key("10.5.7.0-24&fd00:5:0:7::-64"));
            wait_for("both sides removed", LIMIT, || peer7_gone(&node)).await;
            assert_eq!(node.dp.route("10.5.8.0/24"), Some((ip("10.5.8.0"), true)), "other peer kept");
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn changed_v6_vtep_mac_is_replaced_and_the_old_entry_goes() {
    LocalSet::new()
        .run_until(async {
            let node = Node::dual();
            put_peer7(&node, 7, 0x67);
            let run = node.start();
            wait_for("peer", LIMIT, || peer7_programmed(&node, 7, 0x67)).await;
            put_peer7(&node, 7, 0x68);
            wait_for("new IPv6 MAC", LIMIT, || peer7_programmed(&node, 7, 0x68)).await;
            // The IPv4 side kept its MAC; the old IPv6 FDB entry is gone (`fdb6` is exact).
            assert_eq!(node.dp.fdb6(), vec![(mac(0x68), ip("2001:2::3"))]);
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn malformed_ipv6_part_keeps_the_ipv4_side() {
    LocalSet::new()
        .run_until(async {
            let node = Node::dual();
            put_peer7(&node, 7, 0x67);
            // PublicIPv6 that does not parse, and a BackendV6Data without a MAC.
            let bad_ip = r#"{"PublicIP":"198.18.0.4","PublicIPv6":"junk","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"6e:00:00:00:00:08"},"BackendV6Data":{"VNI":1,"VtepMAC":"6e:00:00:00:00:68"}}"#;
            node.reg.put_raw(&key("10.5.8.0-24&fd00:5:0:8::-64"), bad_ip.as_bytes(), 0);
            let no_mac = r#"{"PublicIP":"198.18.0.5","PublicIPv6":"2001:2::5","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"6e:00:00:00:00:09"},"BackendV6Data":{"VNI":1}}"#;
            node.reg.put_raw(&key("10.5.9.0-24&fd00:5:0:9::-64"), no_mac.as_bytes(), 0);
            let health = node.health();
            let run = node.start();
            wait_for("mesh", LIMIT, || health.get().mesh_programmed).await;
            assert!(peer7_programmed(&node, 7, 0x67), "a good peer next to them is whole");
            for (v4, v6) in [("10.5.8", "fd00:5:0:8::"), ("10.5.9", "fd00:5:0:9::")] {
                assert_eq!(node.dp.route(&format!("{v4}.0/24")), Some((ip(&format!("{v4}.0")), true)));
                assert_eq!(node.dp.route6(&format!("{v6}/64")), None);
                assert_eq!(node.dp.neigh6(v6), None);
            }

            // A peer whose IPv6 part turns bad loses its IPv6 entries, keeps the IPv4 ones.
            let turned = r#"{"PublicIP":"198.18.0.3","PublicIPv6":"junk","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:07"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:00:67"}}"#;
            node.reg.put_raw(&key("10.5.7.0-24&fd00:5:0:7::-64"), turned.as_bytes(), 0);
            wait_for("IPv6 side removed", LIMIT, || {
                node.dp.route6("fd00:5:0:7::/64").is_none()
                    && node.dp.neigh6("fd00:5:0:7::").is_none()
                    && node.dp.fdb6().is_empty()
            })
            .await;
            assert_eq!(node.dp.route("10.5.7.0/24"), Some((ip("10.5.7.0"), true)));
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn deleting_the_devices_replays_both_sides() {
    LocalSet::new()
        .run_until(async {
            let node = Node::dual();
            put_peer7(&node, 7, 0x67);
            let health = node.health();
            let run = node.start();
            wait_for("peer", LIMIT, || peer7_programmed(&node, 7, 0x67)).await;
            let (_, v4) = node.dp.device().unwrap();
            let (_, v6) = node.dp.device_v6().unwrap();

            // Only the IPv6 device deleted behind the daemon's back.
            node.dp.with(|k| k.remove_device_v6());
            assert!(node.dp.route6("fd00:5:0:7::/64").is_none());
            wait_for("IPv6 side replayed", LIMIT, || peer7_programmed(&node, 7, 0x67)).await;
            let (_, v6b) = node.dp.device_v6().unwrap();
            assert_ne!(v6b.index, v6.index, "a new flannel-v6");
            assert_eq!(v6b.mac, v6.mac, "same MAC: peers need no update");
            assert_eq!(node.dp.device().unwrap().1.index, v4.index, "flannel.1 untouched");

            // Both devices deleted.
            node.dp.with(|k| {
                k.remove_device();
                k.remove_device_v6();
            });
            wait_for("both sides replayed", LIMIT, || {
                node.dp.device().is_some_and(|d| d.1.index != v4.index) && peer7_programmed(&node, 7, 0x67)
            })
            .await;
            wait_for("healthy", LIMIT, || health.get().mesh_programmed).await;
            run.stop().await;
        })
        .await;
}

/// DirectRouting per family (upstream `vxlan_network.go`): a peer whose PublicIPv6 is on-link
/// gets only `S6 via P6`; one that is not gets the VXLAN entries on `flannel-v6`; reconciling
/// changes nothing afterwards.
#[tokio::test(start_paused = true)]
async fn direct_routing_decides_per_family_on_the_ipv6_routes() {
    LocalSet::new()
        .run_until(async {
            let config = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan","DirectRouting":true}}"#;
            let mut node = Node::with_network_config(config.as_bytes());
            node.cfg.public_ipv6 = Some(ME6);
            // Both addresses of peer 7 are on the underlay's segment.
            node.dp.with(|k| {
                k.add_onlink(ip("198.18.0.3"), UNDERLAY);
                k.add_onlink(ip("2001:2::3"), UNDERLAY);
            });
            put_peer7(&node, 7, 0x67);
            // Peer 8's IPv6 address is behind a router: VXLAN for it.
            node.put_dual_peer(
                "10.5.8.0-24&fd00:5:0:8::-64",
                "198.18.0.3",
                &format_mac(&mac(8)),
                "2001:db8::8",
                &format_mac(&mac(0x68)),
            );
            let (health, metrics) = (node.health(), node.metrics());
            let run = node.start();
            wait_for("mesh", LIMIT, || health.get().mesh_programmed).await;
            let direct = |dst: &str| {
                let dst: ipnetwork::IpNetwork = dst.parse().unwrap();
                node.dp.with(|k| {
                    k.routes.iter().find(|r| r.dst == dst && !r.onlink).map(|r| (r.gw, r.oif, r.metric))
                })
            };
            assert_eq!(direct("fd00:5:0:7::/64"), Some((Some(ip("2001:2::3")), Some(UNDERLAY), 1024)));
            assert_eq!(node.dp.neigh6("fd00:5:0:7::"), None, "no VXLAN entries for a direct peer");
            assert_eq!(node.dp.route6("fd00:5:0:8::/64"), Some(ip("fd00:5:0:8::")));
            assert_eq!(node.dp.fdb6(), vec![(mac(0x68), ip("2001:db8::8"))]);
            assert_eq!(direct("10.5.7.0/24").map(|r| r.0), Some(Some(ip("198.18.0.3"))), "IPv4 side direct too");
            // Several reconciliations later nothing was corrected: the shapes are recognised.
            tokio::time::sleep(Duration::from_secs(120)).await;
            let text = metrics.render();
            assert!(text.contains("flanneld_reconcile_corrections_total 0"), "{text}");
            assert!(text.contains("flanneld_peers_programmed_v6 2"), "{text}");
            run.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn enable_ipv6_without_an_ipv6_address_stops_startup() {
    LocalSet::new()
        .run_until(async {
            let mut node = Node::dual();
            node.cfg.public_ipv6 = None;
            let run = node.start();
            let out = run.handle.await.unwrap();
            assert!(matches!(out, Err(DaemonError::NoPublicIpv6)), "{out:?}");
            assert!(node.dp.device().is_none());
        })
        .await;
}

/// A dual-stack lease event is programmed without reading a route dump: the new IPv6 route is
/// created exclusively, like the IPv4 one. An operator's IPv6 route at a new peer's
/// destination still blocks it: found (then from a dump), reported as a conflict, left alone;
/// the peer's IPv4 side is programmed.
#[tokio::test(start_paused = true)]
async fn dual_stack_lease_event_reads_no_dump_and_a_foreign_ipv6_route_still_blocks() {
    LocalSet::new()
        .run_until(async {
            let node = Node::dual();
            let theirs = KernelRoute {
                protocol: 4,
                ..KernelRoute::made(
                    "fd00:5:0:9::/64".parse().unwrap(),
                    ip("2001:2::50"),
                    false,
                    Some(UNDERLAY),
                )
            };
            node.dp.with(|k| k.routes.push(theirs.clone()));
            let (health, metrics) = (node.health(), node.metrics());
            let run = node.start();
            wait_for("mesh", LIMIT, || health.get().mesh_programmed).await;
            let dumps = || node.dp.with(|k| k.route_dumps);
            let before = dumps();

            put_peer7(&node, 7, 0x67);
            wait_for("peer 7", LIMIT, || peer7_programmed(&node, 7, 0x67)).await;
            assert_eq!(dumps(), before, "a lease event reads no route dump");
            let created = node.dp.with(|k| {
                k.applied.iter().any(|o| matches!(o, NetOp::CreateRoute { dst, .. } if dst.is_ipv6()))
            });
            assert!(created, "the IPv6 route is created exclusively");
            // A changed IPv6 VTEP MAC of a known peer: no dump either.
            put_peer7(&node, 7, 0x77);
            wait_for("new MAC", LIMIT, || peer7_programmed(&node, 7, 0x77)).await;
            assert_eq!(dumps(), before);

            node.put_dual_peer(
                "10.5.9.0-24&fd00:5:0:9::-64",
                "198.18.0.5",
                &format_mac(&mac(9)),
                "2001:2::5",
                &format_mac(&mac(0x69)),
            );
            wait_for("conflict", LIMIT, || {
                health.get().route_conflicts == vec!["fd00:5:0:9::/64".to_string()]
            })
            .await;
            assert!(node.dp.with(|k| k.routes.contains(&theirs)), "the operator's route is untouched");
            assert_eq!(node.dp.route6("fd00:5:0:9::/64"), None);
            assert_eq!(node.dp.route("10.5.9.0/24"), Some((ip("10.5.9.0"), true)), "IPv4 side programmed");
            assert!(metrics.render().contains("flanneld_route_conflicts 1"));
            run.stop().await;
        })
        .await;
}

/// Both devices set down behind the daemon's back (`ip link set … down`): the next
/// reconciliation pass finds it and ensures them again (which sets them up), without waiting
/// for the regular device check (every 10th pass).
#[tokio::test(start_paused = true)]
async fn downed_devices_are_ensured_again_on_the_next_pass() {
    LocalSet::new()
        .run_until(async {
            let node = Node::dual();
            let health = node.health();
            let run = node.start();
            wait_for("mesh", LIMIT, || health.get().mesh_programmed).await;
            let ensured = node.dp.with(|k| k.ensure_calls);
            node.dp.with(|k| k.devices_down = true);
            // One reconcile period (30 s), far from the 10th.
            wait_for("devices up", Duration::from_secs(45), || !node.dp.with(|k| k.devices_down)).await;
            assert_eq!(node.dp.with(|k| k.ensure_calls), ensured + 2, "both devices ensured again");
            run.stop().await;
        })
        .await;
}
