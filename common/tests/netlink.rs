//! rtnetlink operations against the kernel (root): each test runs in namespaces of its own,
//! unshared per test thread or named `wtle…`, so nothing outside them is touched.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nix::sched::{unshare, CloneFlags};

use weft_common::mac::parse_mac;
use weft_common::netlink::{
    BridgeSpec, LinkEvents, Netlink, OperState, PortAttrs, PortVlan, Route, VethSpec,
};
use weft_common::netns::NetNs;

/// Runs `f` on a new thread inside two fresh namespaces: `host` (the thread's own at the
/// start of `f`) and `other`, both gone when the thread ends.
fn in_fresh_namespaces(f: impl FnOnce(&NetNs, &NetNs) + Send + 'static) {
    assert!(nix::unistd::geteuid().is_root(), "netlink tests need root");
    std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).unwrap();
        let other = NetNs::current().unwrap();
        // Keep `other` alive by its fd, then move the thread into a second new namespace.
        let other_file = other.file().try_clone().unwrap();
        unshare(CloneFlags::CLONE_NEWNET).unwrap();
        let host = NetNs::current().unwrap();
        let other =
            NetNs::open(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&other_file))).unwrap();
        f(&host, &other);
    })
    .join()
    .unwrap();
}

#[test]
fn bridge_veth_addresses_routes() {
    // A kernel built without CONFIG_BRIDGE_VLAN_FILTERING (this machine's) refuses a filtering
    // bridge with EOPNOTSUPP; the probe (the `ip` tool, in its own namespace) says which
    // outcome this kernel must give.
    let vlan_ok = weft_lab::ns::kernel_has_bridge_vlan_filtering("wthd");
    in_fresh_namespaces(move |_host, other| {
        let mut nl = Netlink::open().unwrap();
        let mut peer_nl = Netlink::open_in(other).unwrap();

        nl.create_bridge(&BridgeSpec { name: "br-t".into(), mtu: Some(1400), vlan_filtering: false })
            .unwrap();
        let created = nl.create_bridge(&BridgeSpec { name: "br-v".into(), mtu: None, vlan_filtering: true });
        match (&created, vlan_ok) {
            (Ok(()), true) => {}
            (Err(e), false) => assert_eq!(e.raw_errno(), Some(libc::EOPNOTSUPP), "{e}"),
            (other, _) => panic!("kernel VLAN filtering {vlan_ok}, but creating br-v gave {other:?}"),
        }
        let e = nl.create_bridge(&BridgeSpec { name: "br-t".into(), ..Default::default() }).unwrap_err();
        assert!(e.is_exists(), "{e}");
        let br = nl.link_by_name("br-t").unwrap();
        assert!(br.is_bridge());
        assert_eq!(br.mtu, 1400);
        assert!(nl.link_by_name("nope0").unwrap_err().is_not_found());
        assert_eq!(nl.find_link("nope0").unwrap(), None);

        let mac = parse_mac("0a:58:0a:00:00:05").unwrap();
        nl.create_veth(&VethSpec {
            name: "vh0".into(),
            mtu: Some(1400),
            peer_name: "eth0".into(),
            peer_mtu: Some(1400),
            peer_mac: Some(mac),
            peer_netns: Some(other),
            ..Default::default()
        })
        .unwrap();
        assert!(nl.find_link("eth0").unwrap().is_none(), "peer must be in the other namespace");
        let ctr = peer_nl.link_by_name("eth0").unwrap();
        assert!(ctr.is_veth());
        assert_eq!(ctr.mac_string(), "0a:58:0a:00:00:05");
        let host = nl.link_by_name("vh0").unwrap();
        assert_eq!(host.link, Some(ctr.index));

        nl.set_master(host.index, br.index).unwrap();
        nl.set_bridge_port(host.index, &PortAttrs { hairpin: Some(true), isolated: Some(true) }).unwrap();
        nl.set_up(br.index).unwrap();
        nl.set_up(host.index).unwrap();
        peer_nl.set_up(ctr.index).unwrap();
        assert_eq!(nl.wait_oper_up(host.index, Duration::from_secs(3)).unwrap(), OperState::Up);
        assert_eq!(nl.link_by_index(host.index).unwrap().master, Some(br.index));

        if vlan_ok {
            let vbr = nl.link_by_name("br-v").unwrap();
            nl.set_master(host.index, vbr.index).unwrap();
            let vlans = nl.bridge_vlans(host.index).unwrap();
            assert_eq!(vlans, vec![PortVlan { vid: 1, pvid: true, untagged: true }]);
            nl.bridge_vlan_del(host.index, 1).unwrap();
            nl.bridge_vlan_add(host.index, &PortVlan { vid: 100, pvid: true, untagged: true }).unwrap();
            nl.bridge_vlan_add(host.index, &PortVlan { vid: 200, pvid: false, untagged: false }).unwrap();
            let vlans = nl.bridge_vlans(host.index).unwrap();
            assert_eq!(
                vlans,
                vec![
                    PortVlan { vid: 100, pvid: true, untagged: true },
                    PortVlan { vid: 200, pvid: false, untagged: false }
                ]
            );
        }

        nl.set_promisc(br.index, true).unwrap();
        assert!(nl.link_by_index(br.index).unwrap().promisc);
        nl.set_mac(br.index, &[0x0a, 0, 0, 0, 0, 1]).unwrap();
        assert_eq!(nl.link_by_index(br.index).unwrap().mac_string(), "0a:00:00:00:00:01");
        nl.set_mtu(host.index, 1300).unwrap();
        assert_eq!(nl.link_by_index(host.index).unwrap().mtu, 1300);

        let a4: ipnetwork::IpNetwork = "10.9.0.5/24".parse().unwrap();
        let a6: ipnetwork::IpNetwork = "fd00:9::5/64".parse().unwrap();
        peer_nl.add_address(ctr.index, &a4, false).unwrap();
        peer_nl.add_address(ctr.index, &a6, true).unwrap();
        assert!(peer_nl.add_address(ctr.index, &a4, false).unwrap_err().is_exists());
        let addrs = peer_nl.addresses(Some(ctr.index)).unwrap();
        let got6 = addrs.iter().find(|a| a.address == a6).unwrap();
        assert!(!got6.is_tentative() && got6.is_global());
        assert!(addrs.iter().any(|a| a.address == a4));

        let dflt =
            Route::new("0.0.0.0/0".parse().unwrap(), Some("10.9.0.1".parse().unwrap()), Some(ctr.index));
        peer_nl.add_route(&dflt).unwrap();
        let mut extra =
            Route::new("10.99.0.0/16".parse().unwrap(), Some("10.9.0.1".parse().unwrap()), Some(ctr.index));
        extra.mtu = Some(1200);
        peer_nl.add_route(&extra).unwrap();
        let routes = peer_nl.routes().unwrap();
        assert!(routes.iter().any(|r| r.dst == dflt.dst && r.gw == dflt.gw && r.oif == Some(ctr.index)));
        assert!(routes.iter().any(|r| r.dst == extra.dst && r.mtu == Some(1200)));
        // The kernel explains some failures (extended ack).
        let unreachable =
            Route::new("10.98.0.0/16".parse().unwrap(), Some("192.0.2.1".parse().unwrap()), Some(ctr.index));
        let e = peer_nl.add_route(&unreachable).unwrap_err();
        assert!(e.kernel_msg.is_some(), "{e}");
        peer_nl.del_route(&dflt).unwrap();
        assert!(peer_nl.del_route(&dflt).unwrap_err().is_not_found());

        peer_nl.del_address(ctr.index, &a4).unwrap();
        assert!(peer_nl.del_address(ctr.index, &a4).unwrap_err().is_not_found());

        nl.del_link(host.index).unwrap();
        assert!(peer_nl.find_link("eth0").unwrap().is_none(), "deleting one end removes the peer");
        assert!(nl.del_link(host.index).unwrap_err().is_not_found());
        assert!(nl.links().unwrap().iter().any(|l| l.name == "br-t"));
    });
}

/// A real deletion in a fresh namespace is seen; nothing else is (root).
#[test]
fn link_events_see_a_real_deletion() {
    weft_lab::ns::require_root();
    let lab = weft_lab::ns::Netns::unique("wtle");
    let ns = NetNs::open(lab.path()).unwrap();
    lab.exec(&["ip", "link", "add", "wtle0", "type", "veth", "peer", "name", "wtle1"]).expect_ok();
    let (mut events, mut nl) = ns.run(|| (LinkEvents::open().unwrap(), Netlink::open().unwrap())).unwrap();
    let index = nl.link_by_name("wtle0").unwrap().index;
    assert!(!events.wait_deleted(index, Duration::from_millis(20)), "nothing deleted yet");
    nl.del_link(index).unwrap();
    assert!(events.wait_deleted(index, Duration::from_secs(5)));
}

/// `Netlink::batch`: many requests per datagram, one outcome each in order, failures named by
/// the kernel's errno, whatever the datagram size (root, fresh namespaces).
#[test]
fn batch_outcomes_are_per_request_and_in_order() {
    use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
    use netlink_packet_route::RouteNetlinkMessage;
    use weft_common::netlink::BatchOutcome;

    in_fresh_namespaces(|_host, _other| {
        let mut nl = Netlink::open().unwrap();
        let lo = nl.link_by_name("lo").unwrap().index;
        nl.set_up(lo).unwrap();
        for (k, per_send) in [1usize, 7, 256].into_iter().enumerate() {
            let base = 20 + 2 * k;
            // 300 routes; every 50th is the previous one again (EEXIST), and one has a gateway
            // that is not on-link (ENETUNREACH).
            let dsts: Vec<String> = (0..300u32)
                .map(|i| {
                    let j = if i % 50 == 49 { i - 1 } else { i };
                    format!("10.{}.{}.0/24", base + j as usize / 256, j % 256)
                })
                .collect();
            let mut routes: Vec<Route> =
                dsts.iter().map(|d| Route::new(d.parse().unwrap(), None, Some(lo))).collect();
            routes[120] = Route::new(
                format!("10.{}.250.0/24", base + 1).parse().unwrap(),
                Some("192.0.2.1".parse().unwrap()),
                None,
            );
            let requests = routes
                .iter()
                .map(|r| (RouteNetlinkMessage::NewRoute(r.to_message()), NLM_F_CREATE | NLM_F_EXCL));
            let out = nl.batch(requests, per_send).unwrap();
            assert_eq!(out.len(), 300, "per_send {per_send}");
            for (i, o) in out.iter().enumerate() {
                let want = match i {
                    120 => Some(libc::ENETUNREACH),
                    i if i % 50 == 49 => Some(libc::EEXIST),
                    _ => None,
                };
                match (want, o) {
                    (None, BatchOutcome::Done) => {}
                    (Some(e), BatchOutcome::Failed { errno, .. }) if *errno == e => {}
                    _ => panic!("per_send {per_send}: request {i}: {o:?}, wanted {want:?}"),
                }
            }
            let ours = |r: &Route| {
                let [a, b, ..] = match r.dst.ip() {
                    std::net::IpAddr::V4(v4) => v4.octets(),
                    std::net::IpAddr::V6(_) => return false,
                };
                r.oif == Some(lo) && a == 10 && (usize::from(b) == base || usize::from(b) == base + 1)
            };
            assert_eq!(
                nl.routes().unwrap().iter().filter(|r| ours(r)).count(),
                300 - 6 - 1,
                "per_send {per_send}"
            );
        }
        // A receive buffer too small for a datagram's failures: the batch still returns, and
        // every request is either reported failed or unknown (never done).
        let create = || {
            (0..256u32).map(move |j| {
                let r = Route::new(format!("10.17.{j}.0/24").parse().unwrap(), None, Some(lo));
                (RouteNetlinkMessage::NewRoute(r.to_message()), NLM_F_CREATE | NLM_F_EXCL)
            })
        };
        assert!(nl.batch(create(), 256).unwrap().iter().all(|o| *o == BatchOutcome::Done));
        nl.set_receive_buffer(0);
        let out = nl.batch(create(), 256).unwrap();
        assert_eq!(out.len(), 256);
        assert!(
            out.iter().all(|o| matches!(
                o,
                BatchOutcome::Failed { errno: libc::EEXIST, .. } | BatchOutcome::Unknown
            )),
            "{out:?}"
        );
        // The socket goes on answering, with the same tiny buffer.
        let one = Route::new("10.17.0.0/24".parse().unwrap(), None, Some(lo));
        let next =
            nl.batch([(RouteNetlinkMessage::NewRoute(one.to_message()), NLM_F_CREATE | NLM_F_EXCL)], 1);
        let next = next.unwrap();
        assert!(matches!(next.as_slice(), [BatchOutcome::Failed { errno: libc::EEXIST, .. }]), "{next:?}");
    });
}
