use super::*;
use crate::own::Ownership;
use crate::plan::{plan_add, plan_guard, plan_reconcile, plan_remove, Peer};

fn owner(peers: &[Peer]) -> Ownership {
    Ownership::of_peers("10.5.0.0/16".parse().unwrap(), 24, peers, true)
}

fn spec() -> VxlanSpec {
    test_spec(2)
}

/// A VXLAN peer: `10.5.71.0/24` at `198.18.0.3`, VTEP MAC `06:06:06:06:06:06`.
fn peer71() -> Peer {
    Peer {
        subnet: "10.5.71.0/24".parse().unwrap(),
        public_ip: "198.18.0.3".parse().unwrap(),
        vtep_mac: [6; 6],
        direct: false,
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

#[test]
fn add_change_remove_round_trip() {
    block(async {
        let mut dp = FakeDataplane::new();
        assert!(dp.apply(&[]).await.is_err(), "no device yet");
        let info = dp.ensure_device(&spec(), Some([2, 9, 9, 9, 9, 9])).await.unwrap();
        assert_eq!(info.mac, [2, 9, 9, 9, 9, 9]);
        let p = peer71();
        dp.apply(&plan_add(None, &p)).await.unwrap();
        let mut p2 = p.clone();
        p2.vtep_mac = [7; 6];
        dp.apply(&plan_add(Some(&p), &p2)).await.unwrap();
        assert_eq!(dp.fdb.len(), 1, "old MAC's FDB entry removed");
        let o = owner(&[p.clone(), p2.clone()]);
        assert_eq!(plan_reconcile(&[p2.clone()], &dp.dump().await.unwrap(), &o).ops, vec![]);
        let r = dp.apply(&plan_remove(&p2)).await.unwrap();
        assert_eq!(r.applied, 3);
        assert_eq!(dp.state(), KernelState { device: FAKE_DEVICE_INDEX, ..KernelState::default() });
        assert_eq!(dp.batches, 3);
    });
}

#[test]
fn adoption_keeps_mac_and_incompatible_spec_recreates() {
    block(async {
        let mut dp = FakeDataplane::new();
        let a = dp.ensure_device(&spec(), None).await.unwrap();
        let b = dp.ensure_device(&spec(), Some([2, 5, 5, 5, 5, 5])).await.unwrap();
        assert_eq!(a, b);
        let mut s = spec();
        s.vni = 2;
        let c = dp.ensure_device(&s, Some([2, 5, 5, 5, 5, 5])).await.unwrap();
        assert_eq!(c.mac, [2, 5, 5, 5, 5, 5]);
    });
}

#[test]
fn failures_and_overrun_are_reported() {
    block(async {
        let mut dp = FakeDataplane::new();
        dp.ensure_device(&spec(), None).await.unwrap();
        let op = NetOp::AddNeigh { ip: "10.5.1.0".parse().unwrap(), mac: [1; 6] };
        dp.fail.push((op.clone(), "EPERM".into()));
        dp.overrun_next = true;
        let r = dp.apply(std::slice::from_ref(&op)).await.unwrap();
        assert_eq!(r.failed.len(), 1);
        assert!(r.overrun);
        assert!(dp.neighs.is_empty());
    });
}

#[test]
fn deleted_device_takes_its_entries_and_ops_fail_until_recreated() {
    block(async {
        let mut dp = FakeDataplane::new();
        dp.ensure_device(&spec(), None).await.unwrap();
        let vxlan = peer71();
        let direct = Peer { subnet: "10.5.73.0/24".parse().unwrap(), direct: true, ..vxlan.clone() };
        dp.apply(&plan_add(None, &vxlan)).await.unwrap();
        dp.apply(&plan_add(None, &direct)).await.unwrap();
        dp.remove_device();
        // Only the DirectRouting route (on the underlay) survives the device.
        assert!(dp.neighs.is_empty() && dp.fdb.is_empty());
        assert_eq!(dp.routes.len(), 1);
        assert_eq!(dp.routes[0].oif, Some(2));
        // The dataplane still holds the old ifindex: the dump shows nothing on it and ops
        // through it fail with ENODEV, while a route without the device still works.
        let seen = dp.dump().await.unwrap();
        assert_eq!(seen.device, FAKE_DEVICE_INDEX);
        assert!(seen.neighs.is_empty());
        let r = dp.apply(&plan_add(None, &vxlan)).await.unwrap();
        assert_eq!(r.failed.len(), 3, "{r:?}");
        assert!(r.failed.iter().all(|(_, why)| why == ENODEV_MESSAGE));
        let r = dp.apply(&plan_remove(&direct)).await.unwrap();
        assert!(r.failed.iter().all(|(op, _)| !matches!(op, NetOp::DelRoute { .. })), "{r:?}");
        assert!(dp.routes.is_empty());
        // Recreated: a new ifindex, and ops work again.
        let info = dp.ensure_device(&spec(), Some([2, 9, 9, 9, 9, 9])).await.unwrap();
        assert_eq!(info.index, FAKE_DEVICE_INDEX + 1);
        let r = dp.apply(&plan_add(None, &vxlan)).await.unwrap();
        assert_eq!((r.applied, r.failed.len()), (3, 0));
        assert!(dp.neighs.iter().all(|n| n.ifindex == info.index));
    });
}

#[test]
fn replacing_an_incompatible_device_drops_its_entries() {
    block(async {
        let mut dp = FakeDataplane::new();
        dp.ensure_device(&spec(), None).await.unwrap();
        let p = peer71();
        dp.apply(&plan_add(None, &p)).await.unwrap();
        let mut s = spec();
        s.vni = 2;
        let info = dp.ensure_device(&s, None).await.unwrap();
        assert_ne!(info.index, FAKE_DEVICE_INDEX);
        assert_eq!(dp.state(), KernelState { device: info.index, ..KernelState::default() });
    });
}

#[test]
fn route_delete_matches_the_exact_entry() {
    block(async {
        let mut dp = FakeDataplane::new();
        dp.ensure_device(&spec(), None).await.unwrap();
        let dst: ipnetwork::IpNetwork = "10.5.71.0/24".parse().unwrap();
        let gw = "10.5.71.0".parse().unwrap();
        dp.apply(&[NetOp::AddRoute { dst, gw, onlink: true }]).await.unwrap();
        // Another gateway, or without onlink: not this route.
        let other = "10.5.71.1".parse().unwrap();
        dp.apply(&[NetOp::DelRoute { dst, gw: other, onlink: true }]).await.unwrap();
        assert_eq!(dp.routes.len(), 1);
        dp.apply(&[NetOp::DelRoute { dst, gw, onlink: true }]).await.unwrap();
        assert!(dp.routes.is_empty());
    });
}

#[test]
fn predicate_failures_batches_and_dumps_are_recorded() {
    block(async {
        let mut dp = FakeDataplane::new();
        assert!(dp.dump().await.is_err(), "no device yet");
        assert_eq!(dp.dump_routes().await.unwrap().device, 0);
        dp.ensure_device(&spec(), None).await.unwrap();
        dp.fail_when = Some(|op| matches!(op, NetOp::AddFdb { .. }));
        let ops = [
            NetOp::AddNeigh { ip: "10.5.1.0".parse().unwrap(), mac: [1; 6] },
            NetOp::AddFdb { mac: [1; 6], dst: "198.18.0.3".parse().unwrap() },
        ];
        let r = dp.apply(&ops).await.unwrap();
        assert_eq!((r.applied, r.failed.len()), (1, 1));
        assert!(dp.fdb.is_empty());
        dp.apply(&ops[..1]).await.unwrap();
        assert_eq!(dp.batch_sizes, [2, 1]);
        assert_eq!(dp.applied.len(), 3);
        dp.dump().await.unwrap();
        assert_eq!((dp.dumps, dp.route_dumps), (1, 2));
    });
}

mod props {
    use std::collections::BTreeSet;
    use std::net::{IpAddr, Ipv4Addr};

    use ipnetwork::IpNetwork;
    use proptest::prelude::*;

    use super::*;

    /// Up to 12 peers on distinct subnets `10.5.<i>.0/24` with distinct MACs.
    fn peers() -> impl Strategy<Value = Vec<Peer>> {
        proptest::collection::btree_map(0u8..40, (1u8..6, any::<bool>()), 0..12).prop_map(|m| {
            m.into_iter()
                .map(|(i, (host, direct))| Peer {
                    subnet: format!("10.5.{i}.0/24").parse().unwrap(),
                    public_ip: format!("198.18.0.{host}").parse().unwrap(),
                    vtep_mac: [2, 0, 0, 0, host, i],
                    direct,
                })
                .collect()
        })
    }

    fn programmed(peers: &[Peer]) -> KernelState {
        block(async {
            let mut dp = FakeDataplane::new();
            dp.ensure_device(&spec(), None).await.unwrap();
            for p in peers {
                dp.apply(&plan_add(None, p)).await.unwrap();
            }
            dp.state()
        })
    }

    /// Any IPv4 route near the cluster network: every table, protocol, type, device,
    /// metric and gateway flanneld could meet, its own shapes included by chance.
    fn route() -> impl Strategy<Value = KernelRoute> {
        (
            (0u8..40, prop::sample::select(vec![16u8, 24, 25, 32]), any::<bool>()),
            prop::sample::select(vec![None, Some(0u8), Some(1), Some(3), Some(7), Some(99)]),
            prop::sample::select(vec![FAKE_DEVICE_INDEX, 2, 3]),
            prop::sample::select(vec![RT_TABLE_MAIN, 100]),
            prop::sample::select(vec![2u8, RTPROT_BOOT, 4]),
            prop::sample::select(vec![RTN_UNICAST, 6]),
            prop::sample::select(vec![0u32, 100]),
            any::<bool>(),
        )
            .prop_map(|((third, len, outside), gw, oif, table, protocol, kind, metric, onlink)| {
                let base: Ipv4Addr = if outside { [10, 6, third, 0] } else { [10, 5, third, 0] }.into();
                let dst = Ipv4Network::new(base, len).unwrap();
                let dst = IpNetwork::V4(Ipv4Network::new(dst.network(), len).unwrap());
                let gw = gw.map(|h| -> IpAddr {
                    if h == 0 {
                        IpAddr::V4(dst.network().to_string().parse().unwrap())
                    } else {
                        format!("198.18.0.{h}").parse().unwrap()
                    }
                });
                KernelRoute {
                    dst,
                    gw,
                    oif: Some(oif),
                    table,
                    protocol,
                    kind,
                    scope: RT_SCOPE_UNIVERSE,
                    tos: 0,
                    metric,
                    onlink,
                    multipath: false,
                }
            })
    }

    fn neigh() -> impl Strategy<Value = KernelNeigh> {
        (prop::sample::select(vec![FAKE_DEVICE_INDEX, 3]), 0u8..40, any::<u8>(), any::<bool>()).prop_map(
            |(ifindex, third, m, permanent)| KernelNeigh {
                ifindex,
                ip: format!("10.5.{third}.0").parse().unwrap(),
                mac: [2, 0, 0, 0, m, third],
                permanent,
            },
        )
    }

    fn fdb() -> impl Strategy<Value = KernelFdb> {
        (prop::sample::select(vec![FAKE_DEVICE_INDEX, 3]), 1u8..8, any::<u8>(), any::<bool>(), any::<bool>())
            .prop_map(|(ifindex, h, m, permanent, self_)| KernelFdb {
                ifindex,
                mac: [2, 0, 0, 0, h, m],
                dst: format!("198.18.0.{h}").parse().unwrap(),
                permanent,
                self_,
            })
    }

    /// A kernel with the device, the entries flanneld programmed for `old`, and `extra`
    /// entries of any kind (the kernel's key rules applied: one neighbour per device and
    /// address, one `self` FDB entry per device and MAC).
    fn kernel(
        old: &[Peer],
        routes: Vec<KernelRoute>,
        neighs: Vec<KernelNeigh>,
        fdb: Vec<KernelFdb>,
    ) -> FakeDataplane {
        block(async {
            let mut dp = FakeDataplane::new();
            dp.ensure_device(&spec(), None).await.unwrap();
            for p in old {
                dp.apply(&plan_add(None, p)).await.unwrap();
            }
            dp.routes.extend(routes);
            for n in neighs {
                if !dp.neighs.iter().any(|o| o.ifindex == n.ifindex && o.ip == n.ip) {
                    dp.neighs.push(n);
                }
            }
            for e in fdb {
                if !dp.fdb.iter().any(|o| o.ifindex == e.ifindex && o.mac == e.mac && o.self_ == e.self_) {
                    dp.fdb.push(e);
                }
            }
            dp
        })
    }

    proptest! {
        /// Whatever was programmed before, one reconcile round yields exactly the desired state.
        #[test]
        fn reconcile_converges_in_one_round(old in peers(), new in peers()) {
            let got = block(async {
                let mut dp = FakeDataplane::new();
                dp.ensure_device(&spec(), None).await.unwrap();
                for p in &old {
                    dp.apply(&plan_add(None, p)).await.unwrap();
                }
                let all: Vec<Peer> = old.iter().chain(&new).cloned().collect();
                let plan = plan_reconcile(&new, &dp.dump().await.unwrap(), &owner(&all));
                dp.apply(&plan.ops).await.unwrap();
                dp.state()
            });
            prop_assert_eq!(got, programmed(&new));
        }

        /// A change of a peer (MAC, public IP, direct) leaves exactly the new peer's entries.
        #[test]
        fn change_leaves_only_new_entries(a in peers(), b in peers()) {
            for (old, new) in a.iter().zip(b.iter()) {
                let mut new = new.clone();
                new.subnet = old.subnet;
                let got = block(async {
                    let mut dp = FakeDataplane::new();
                    dp.ensure_device(&spec(), None).await.unwrap();
                    dp.apply(&plan_add(None, old)).await.unwrap();
                    dp.apply(&plan_add(Some(old), &new)).await.unwrap();
                    dp.state()
                });
                prop_assert_eq!(got, programmed(std::slice::from_ref(&new)));
            }
        }

        /// Issue 13: over random kernels (foreign routes of every table, protocol, device,
        /// metric and shape; neighbours and FDB entries on other devices), with
        /// DirectRouting on or off, the reconcile plan deletes only entries the ownership
        /// rule gives flanneld, never adds a route over a foreign one, and after applying
        /// it every entry flanneld does not own (routes; neighbours and FDB entries of
        /// other devices) is exactly as it was. Every other needed entry is programmed.
        #[test]
        fn reconcile_never_touches_what_flanneld_does_not_own(
            old in peers(),
            new in peers(),
            routes in proptest::collection::vec(route(), 0..16),
            neighs in proptest::collection::vec(neigh(), 0..8),
            fdb in proptest::collection::vec(fdb(), 0..8),
            direct in any::<bool>(),
        ) {
            let new: Vec<Peer> = new.into_iter().map(|p| Peer { direct: p.direct && direct, ..p }).collect();
            let mut dp = kernel(&old, routes, neighs, fdb);
            let before = dp.state();
            let dev = before.device;
            let all: Vec<Peer> = old.iter().chain(&new).cloned().collect();
            let o = Ownership::of_peers("10.5.0.0/16".parse().unwrap(), 24, &all, direct);
            let plan = plan_reconcile(&new, &before, &o);
            for op in &plan.ops {
                match op {
                    NetOp::DelRoute { dst, gw, onlink } => prop_assert!(
                        before.routes.iter().any(|r| r.dst == *dst && r.gw == Some(*gw) && r.onlink == *onlink && o.owns_route(dev, r)),
                        "delete of a route flanneld does not own: {:?}", op),
                    NetOp::DelNeigh { ip, mac } => prop_assert!(
                        before.neighs.iter().any(|n| n.ip == *ip && n.mac == *mac && o.owns_neigh(dev, n)), "{:?}", op),
                    NetOp::DelFdb { mac, dst } => prop_assert!(
                        before.fdb.iter().any(|e| e.mac == *mac && e.dst == *dst && o.owns_fdb(dev, e)), "{:?}", op),
                    NetOp::AddRoute { dst, .. } => prop_assert!(
                        !before.routes.iter().any(|r| o.blocks(dev, r, dst)), "add over a foreign route: {:?}", op),
                    _ => {}
                }
            }
            block(dp.apply(&plan.ops)).unwrap();
            let after = dp.state();
            for r in before.routes.iter().filter(|r| !o.owns_route(dev, r)) {
                prop_assert!(after.routes.contains(r), "foreign route changed: {}", r);
            }
            // The same, against the words rather than the rule's code: whatever
            // went or changed was a main-table, proto boot, metric 0 route, either on the
            // device as `S via S.0 onlink` or (DirectRouting) `S via P` of a known lease.
            for r in before.routes.iter().filter(|r| !after.routes.contains(r)) {
                let vxlan = r.oif == Some(dev) && r.onlink && r.gw == Some(r.dst.network()) && r.dst.prefix() == 24;
                let dr = direct && !r.onlink && all.iter().any(|p| p.subnet == r.dst && r.gw == Some(p.public_ip));
                prop_assert!(r.table == RT_TABLE_MAIN && r.protocol == RTPROT_BOOT && r.metric == 0 && r.kind == RTN_UNICAST && (vxlan || dr),
                    "changed a route flanneld does not make: {}", r);
            }
            for n in before.neighs.iter().filter(|n| n.ifindex != dev) {
                prop_assert!(after.neighs.contains(n), "{:?}", n);
            }
            for e in before.fdb.iter().filter(|e| e.ifindex != dev) {
                prop_assert!(after.fdb.contains(e), "{:?}", e);
            }
            // Converged: a second pass has nothing to do but report the same conflicts.
            let again = plan_reconcile(&new, &after, &o);
            prop_assert_eq!(again.ops, vec![]);
            let blocked: BTreeSet<IpNetwork> = plan.conflicts.iter().map(|c| c.dst).collect();
            prop_assert_eq!(blocked, again.conflicts.iter().map(|c| c.dst).collect::<BTreeSet<_>>());
        }

        /// The same for ops planned from lease events: after [`plan_guard`] they never
        /// delete or overwrite a route flanneld does not own.
        #[test]
        fn guarded_event_ops_never_touch_foreign_routes(
            old in peers(),
            new in peers(),
            routes in proptest::collection::vec(route(), 0..16),
        ) {
            let mut dp = kernel(&old, routes, vec![], vec![]);
            let before = dp.state();
            let all: Vec<Peer> = old.iter().chain(&new).cloned().collect();
            let o = owner(&all);
            let mut ops: Vec<NetOp> = old.iter().flat_map(plan_remove).collect();
            ops.extend(new.iter().flat_map(|p| plan_add(None, p)));
            let guarded = plan_guard(ops, &before, &o);
            let mut exclusive = dp.clone();
            block(dp.apply(&guarded.ops)).unwrap();
            let after = dp.state();
            for r in before.routes.iter().filter(|r| !o.owns_route(before.device, r)) {
                prop_assert!(after.routes.contains(r), "foreign route changed: {}", r);
            }
            // New peers' routes created exclusively, unguarded: nothing that was there changes.
            let create: Vec<NetOp> = new
                .iter()
                .flat_map(|p| plan_add(None, p))
                .map(|op| match op {
                    NetOp::AddRoute { dst, gw, onlink } => NetOp::CreateRoute { dst, gw, onlink },
                    other => other,
                })
                .collect();
            let report = block(exclusive.apply(&create)).unwrap();
            let after = exclusive.state();
            for r in &before.routes {
                prop_assert!(after.routes.contains(r), "route changed by an exclusive create: {}", r);
            }
            for op in &report.exists {
                let NetOp::CreateRoute { dst, .. } = op else { unreachable!() };
                prop_assert!(before.routes.iter().any(|r| r.dst == *dst && r.table == RT_TABLE_MAIN));
            }
        }
    }
}

/// The IPv6 side of a dual-stack peer: `fd00:5:0:71::/64` at `2001:2::3`.
fn peer71_v6() -> Peer {
    Peer {
        subnet: "fd00:5:0:71::/64".parse().unwrap(),
        public_ip: "2001:2::3".parse().unwrap(),
        vtep_mac: [8; 6],
        direct: false,
    }
}

fn owner_v6(peers: &[Peer]) -> Ownership {
    Ownership::of_peers("fd00:5::/48".parse().unwrap(), 64, peers, false)
}

#[test]
fn dual_stack_ops_go_to_the_device_of_their_family() {
    block(async {
        let mut dp = FakeDataplane::new();
        let v4 = dp.ensure_device(&spec(), None).await.unwrap();
        // Before the IPv6 device: IPv6 ops fail as on a missing device, dumps hold no IPv6.
        let (p4, p6) = (peer71(), peer71_v6());
        let r = dp.apply(&plan_add(None, &p6)).await.unwrap();
        assert_eq!(r.failed.len(), 3, "{r:?}");
        assert!(r.failed.iter().all(|(_, why)| why == ENODEV_MESSAGE));
        let v6 = dp.ensure_device(&test_spec_v6(2), Some([2, 6, 6, 6, 6, 6])).await.unwrap();
        assert_ne!(v4.index, v6.index);
        assert_eq!((v6.mac, v6.mtu), ([2, 6, 6, 6, 6, 6], 1430));
        let ops: Vec<NetOp> = plan_add(None, &p4).into_iter().chain(plan_add(None, &p6)).collect();
        let r = dp.apply(&ops).await.unwrap();
        assert_eq!((r.applied, r.failed.len()), (6, 0));
        for n in &dp.neighs {
            assert_eq!(n.ifindex, if n.ip.is_ipv6() { v6.index } else { v4.index }, "{n:?}");
        }
        for e in &dp.fdb {
            assert_eq!(e.ifindex, if e.dst.is_ipv6() { v6.index } else { v4.index }, "{e:?}");
        }
        let r6 = dp.routes.iter().find(|r| r.dst.is_ipv6()).unwrap();
        assert_eq!((r6.oif, r6.metric), (Some(v6.index), crate::IP6_RT_PRIO_USER));
        let st = dp.dump().await.unwrap();
        assert_eq!((st.device, st.device_v6), (v4.index, v6.index));
        let o4 = owner(std::slice::from_ref(&p4));
        let o6 = owner_v6(std::slice::from_ref(&p6));
        assert_eq!(plan_reconcile(std::slice::from_ref(&p4), &st.family(false), &o4).ops, vec![]);
        assert_eq!(plan_reconcile(std::slice::from_ref(&p6), &st.family(true), &o6).ops, vec![]);
        // The IPv6 device deleted behind our back takes only its own entries.
        dp.remove_device_v6();
        assert_eq!(dp.neighs.len(), 1);
        assert!(dp.routes.iter().all(|r| r.dst.is_ipv4()));
        let st = dp.dump().await.unwrap();
        let missing = plan_reconcile(std::slice::from_ref(&p6), &st.family(true), &o6).ops;
        assert_eq!(missing, plan_add(None, &p6));
        let r = dp.apply(&missing).await.unwrap();
        assert!(r.failed.iter().all(|(_, why)| why == ENODEV_MESSAGE) && r.failed.len() == 3, "{r:?}");
        let again = dp.ensure_device(&test_spec_v6(2), Some(v6.mac)).await.unwrap();
        assert_ne!(again.index, v6.index);
        assert_eq!(dp.apply(&missing).await.unwrap().applied, 3);
        assert_eq!(
            plan_reconcile(std::slice::from_ref(&p4), &dp.dump().await.unwrap().family(false), &o4).ops,
            vec![]
        );
        // host-gw removes both devices.
        let removed = dp.ensure_no_device(2).await.unwrap();
        assert_eq!(removed, vec!["flannel.1".to_string(), "flannel-v6.1".to_string()]);
        assert!(dp.neighs.is_empty() && dp.fdb.is_empty());
    });
}

#[test]
fn host_gw_route_lookups_and_plain_ipv6_routes() {
    block(async {
        let mut dp = FakeDataplane::new();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let net = |s: &str| s.parse::<IpNetwork>().unwrap();
        let link = |dst: &str| KernelRoute {
            gw: None,
            protocol: 2,
            ..KernelRoute::made(net(dst), ip("::"), false, Some(2))
        };
        dp.routes.push(link("198.18.0.0/24"));
        dp.routes.push(KernelRoute { metric: 256, ..link("2001:2::/64") });
        dp.routes.push(KernelRoute {
            protocol: 4,
            ..KernelRoute::made(net("::/0"), ip("2001:2::1"), false, Some(2))
        });
        // Outside host-gw, without flannel-v6, an IPv6 op fails and IPv6 routes are not dumped.
        dp.ensure_device(&spec(), None).await.unwrap();
        let r6 = NetOp::AddRoute { dst: net("fd00:5:0:7::/64"), gw: ip("2001:2::3"), onlink: false };
        let r = dp.apply(std::slice::from_ref(&r6)).await.unwrap();
        assert_eq!(r.failed.len(), 1, "{r:?}");
        assert!(dp.dump_routes().await.unwrap().routes.iter().all(|r| r.dst.is_ipv4()));
        dp.ensure_no_device(2).await.unwrap();
        assert_eq!(dp.apply(std::slice::from_ref(&r6)).await.unwrap().applied, 1);
        let k = dp.dump_routes().await.unwrap();
        assert!(k.routes.contains(&KernelRoute::made(
            net("fd00:5:0:7::/64"),
            ip("2001:2::3"),
            false,
            Some(2)
        )));
        // Lookups: the picked route for a host prefix, counted apart from dumps.
        let dumps = dp.route_dumps;
        let on = dp.route_to(ip("2001:2::3")).await.unwrap().unwrap();
        assert_eq!((on.dst, on.gw, on.metric), (net("2001:2::3/128"), None, 256));
        assert!(on.reaches_onlink(2) && !on.reaches_onlink(3));
        let via = dp.route_to(ip("2001:db8::4")).await.unwrap().unwrap();
        assert_eq!(via.gw, Some(ip("2001:2::1")));
        assert!(!via.reaches_onlink(2));
        assert!(dp.route_to(ip("203.0.113.9")).await.unwrap().is_none(), "no IPv4 default route");
        assert!(dp.route_to(ip("198.18.0.9")).await.unwrap().unwrap().reaches_onlink(2));
        assert_eq!((dp.route_gets, dp.route_dumps), (4, dumps));
    });
}
