//! `weft pods` and `weft path` in a two-node lab (etcd, weft flanneld with -debug-dataplane,
//! two pods per node): a healthy lab, then one broken link at a time (flanneld frozen with
//! SIGSTOP so the break holds), each named by its cause code and healthy again once repaired.
//! Needs root and the built binaries; never skipped.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    assert_broken, assert_reachable, on, path, probe, probe_hop, wait_reachable, weft, Freeze, PREFIX,
};
use serde_json::Value;
use weft_lab::ns::require_root;
use weft_lab::{FlannelSpec, Lab};

fn lab() -> Lab {
    require_root();
    Lab::flannel(PREFIX, FlannelSpec { nodes: 2, pods_per_node: 2, etcd_members: 1 }).unwrap()
}

/// The pod's interface index as the pod itself sees its peer (`iflink`), read with `ip -j`.
fn pod_peer_index(lab: &Lab, p: usize) -> u64 {
    let v = lab.pod(p).unwrap().ns().ip_json(&["link", "show", "dev", "eth0"]);
    v[0]["link_index"].as_u64().unwrap()
}

#[test]
fn healthy_lab_lists_pods_and_every_path_is_reachable() {
    let lab = lab();
    // pods: exactly the pods of each node, each with its real host veth.
    for n in 0..2 {
        let run = weft(&lab, n, "pods", &["--json"]);
        assert_eq!(run.status, Some(0), "{}\n{}", run.stdout, run.stderr);
        let v: Value = serde_json::from_str(&run.stdout).unwrap();
        let listed = v["pods"].as_array().unwrap();
        let mine: Vec<usize> = (0..lab.pods().len()).filter(|p| lab.pod(*p).unwrap().node() == n).collect();
        assert_eq!(listed.len(), mine.len(), "{}", run.stdout);
        assert!(v["orphans"].as_array().unwrap().is_empty(), "{}", run.stdout);
        for p in mine {
            let pod = lab.pod(p).unwrap();
            let entry = listed
                .iter()
                .find(|e| e["netns"] == pod.ns().path().as_str())
                .unwrap_or_else(|| panic!("pod {} missing:\n{}", pod.ns().path(), run.stdout));
            assert_eq!(
                entry["addresses"][0].as_str().unwrap().split('/').next(),
                Some(pod.ip().to_string().as_str())
            );
            assert_eq!(entry["host_veth"]["index"].as_u64(), Some(pod_peer_index(&lab, p)));
            assert_eq!(entry["host_veth"]["bridge"], "cni0");
            assert_eq!(entry["host_veth"]["peer_confirmed"], true);
            // The host veth named is really a veth on cni0 in the node (read with ip -j).
            let name = entry["host_veth"]["name"].as_str().unwrap();
            let link = lab.node(n).unwrap().ns().ip_json(&["link", "show", "dev", name]);
            assert_eq!(link[0]["master"], "cni0");
            assert_eq!(entry["reservations"][0]["container_id"], entry["container_id"]);
            assert_eq!(entry["cache"]["container_id"], entry["container_id"]);
            assert_eq!(entry["masquerade"]["expected_by"], "flanneld");
            assert_eq!(entry["masquerade"]["present"], true);
        }
        let table = weft(&lab, n, "pods", &[]);
        assert_eq!(table.status, Some(0));
        assert!(table.stdout.starts_with("CONTAINER"), "{}", table.stdout);
    }
    // path: every pair, from the source's node; by IP, container ID and netns path.
    let pods: Vec<(usize, String, String)> =
        lab.pods().iter().map(|p| (p.node(), p.ip().to_string(), p.ns().path())).collect();
    for (sn, sip, _) in &pods {
        for (_, dip, _) in pods.iter().filter(|d| d.1 != *sip) {
            assert_reachable(&lab, *sn, sip, dip);
        }
    }
    // By container ID (as `weft pods` reports it, from the cache entry).
    let listed: Value = serde_json::from_str(&weft(&lab, 0, "pods", &["--json"]).stdout).unwrap();
    let ctr = |ns: &str| {
        listed["pods"].as_array().unwrap().iter().find(|p| p["netns"] == ns).unwrap()["container_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b) = (ctr(&pods[0].2), ctr(&pods[1].2));
    assert!(a.starts_with("cnitool-"), "{a}");
    let (code, _, run) = path(&lab, 0, &a, &b);
    assert_eq!(code, 0, "{}\n{}", run.stdout, run.stderr);
    let (code, v, run) = path(&lab, 0, &pods[0].2, &pods[2].1);
    assert_eq!(code, 0, "{}", run.stdout);
    let steps: Vec<&str> =
        v["hops"].as_array().unwrap().iter().map(|h| h["step"].as_str().unwrap()).collect();
    assert_eq!(
        steps,
        [
            "pod",
            "pod-route",
            "veth",
            "bridge",
            "host-route",
            "forward",
            "vtep",
            "neighbour",
            "fdb",
            "underlay",
            "remote-vtep",
            "remote-route",
            "remote-firewall",
            "dst-pod"
        ]
    );
    // The remote node's hops are the remote node's.
    assert_eq!(v["hops"][10]["node"], lab.node(1).unwrap().ip().to_string());
    // The same with the leases read from etcd.
    let ep = lab.etcd().unwrap().endpoints();
    let r = weft(&lab, 0, "path", &["--etcd-endpoints", &ep, "--json", &pods[0].1, &pods[3].1]);
    assert_eq!(r.status, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("rev "), "lease revision cited: {}", r.stdout);
    // Outside the cluster (etcd's address on the underlay switch): masqueraded.
    let outside = lab.etcd().unwrap().members()[0].ip().to_string();
    let (code, v, run) = path(&lab, 0, &pods[0].1, &outside);
    assert_eq!(code, 0, "{}", run.stdout);
    let masq = v["hops"].as_array().unwrap().iter().find(|h| h["step"] == "masquerade").unwrap();
    assert!(masq["object"].as_str().unwrap().contains("MASQUERADE"), "{masq}");
    // Another node's underlay address.
    assert_reachable(&lab, 0, &pods[0].1, &lab.node(1).unwrap().ip().to_string());
    // The minimal text form is stable: step names and the verdict only.
    let brief = weft(&lab, 0, "path", &["--brief", &pods[0].1, &pods[2].1]);
    assert_eq!(
        brief.stdout,
        "✓ pod\n✓ pod-route\n✓ veth\n✓ bridge\n✓ host-route\n✓ forward\n✓ vtep\n✓ neighbour\n✓ fdb\n✓ underlay\n\
         ✓ remote-vtep remote\n✓ remote-route remote\n✓ remote-firewall remote\n✓ dst-pod remote\nreachable\n"
    );
    kernel_gets_answer_like_the_dumps(&lab);
    pods_without_a_cache_entry_are_still_found(&lab, &pods);
}

/// The single-entry lookups `weft path` asks ahead (neighbour get, FDB get) give what the
/// dumps give, and "none" for an entry that is not there.
fn kernel_gets_answer_like_the_dumps(lab: &Lab) {
    use weft_cli::kernel;
    use weft_common::netlink::Netlink;
    use weft_common::netns::NetNs;
    let ns = NetNs::open(lab.node(0).unwrap().ns().path()).unwrap();
    let mut nl = Netlink::open_in(&ns).unwrap();
    let vtep = nl.link_by_name("flannel.1").unwrap().index;
    let (_, gw, mac) = lease(lab, 1);
    let neigh = kernel::neighbour_get(&mut nl, vtep, gw.parse().unwrap()).unwrap().unwrap();
    assert_eq!(neigh.mac.as_deref(), Some(mac.as_str()));
    assert!(kernel::neighbours(&mut nl, vtep, false).unwrap().contains(&neigh));
    let fdb = kernel::fdb_get(&mut nl, vtep, &mac).unwrap().unwrap();
    assert_eq!(fdb.dst, Some(lab.node(1).unwrap().ip().into()));
    assert!(kernel::fdb(&mut nl, vtep).unwrap().contains(&fdb));
    assert_eq!(kernel::neighbour_get(&mut nl, vtep, "10.99.99.0".parse().unwrap()).unwrap(), None);
    assert_eq!(kernel::fdb_get(&mut nl, vtep, "0e:99:99:99:99:99").unwrap(), None);
}

/// `weft path` reads only the namespaces the result cache names for SRC and DST; a pod whose
/// cache entry is gone is still found (every namespace is read then), as SRC and as a local DST.
fn pods_without_a_cache_entry_are_still_found(lab: &Lab, pods: &[(usize, String, String)]) {
    let listed: Value = serde_json::from_str(&weft(lab, 0, "pods", &["--json"]).stdout).unwrap();
    let entry = listed["pods"].as_array().unwrap().iter().find(|p| p["netns"] == pods[1].2.as_str()).unwrap();
    let cache = std::path::PathBuf::from(entry["cache"]["path"].as_str().unwrap());
    let aside = cache.with_extension("aside");
    std::fs::rename(&cache, &aside).unwrap();
    let from = path(lab, 0, &pods[1].1, &pods[2].1);
    let to = path(lab, 0, &pods[0].1, &pods[1].1);
    std::fs::rename(&aside, &cache).unwrap();
    for (code, v, run) in [from, to] {
        assert_eq!(code, 0, "{}\n{}", run.stdout, run.stderr);
        assert_eq!(v["verdict"], "reachable", "{}", run.stdout);
    }
}

/// Lease facts of node `i`: (subnet, gateway S.0, VtepMAC).
fn lease(lab: &Lab, i: usize) -> (String, String, String) {
    let l = lab.lease(i).unwrap().unwrap();
    let mac = l.attrs["BackendData"]["VtepMAC"].as_str().unwrap().to_lowercase();
    (l.subnet.to_string(), l.subnet.network().to_string(), mac)
}

#[test]
fn each_broken_link_is_named_and_healthy_after_repair() {
    let lab = lab();
    let src = lab.pod(0).unwrap().ip().to_string();
    let dst = lab.pod(2).unwrap().ip().to_string();
    let local_dst = lab.pod(1).unwrap().ip().to_string();
    let outside = lab.etcd().unwrap().members()[0].ip().to_string();
    let peer_ip = lab.node(1).unwrap().ip().to_string();
    let (subnet, gw, mac) = lease(&lab, 1);
    assert_reachable(&lab, 0, &src, &dst);

    // F1: the peer route deleted.
    {
        let _f = Freeze::new(&lab, &[0]);
        on(&lab, 0, &["ip", "route", "del", &subnet]);
        assert_broken(&lab, 0, &src, &dst, "host-route", "NO_ROUTE");
        on(&lab, 0, &["ip", "route", "add", &subnet, "via", &gw, "dev", "flannel.1", "onlink"]);
        assert_reachable(&lab, 0, &src, &dst);
    }
    // F3: the FDB entry deleted.
    {
        let _f = Freeze::new(&lab, &[0]);
        on(&lab, 0, &["bridge", "fdb", "del", &mac, "dev", "flannel.1", "dst", &peer_ip]);
        assert_broken(&lab, 0, &src, &dst, "fdb", "FDB_MISSING");
        on(
            &lab,
            0,
            &["bridge", "fdb", "append", &mac, "dev", "flannel.1", "dst", &peer_ip, "self", "permanent"],
        );
        assert_reachable(&lab, 0, &src, &dst);
    }
    // F3: the neighbour's MAC changed (with and without etcd as the lease source).
    {
        let _f = Freeze::new(&lab, &[0]);
        on(
            &lab,
            0,
            &[
                "ip",
                "neigh",
                "replace",
                &gw,
                "lladdr",
                "02:00:00:00:00:99",
                "dev",
                "flannel.1",
                "nud",
                "permanent",
            ],
        );
        assert_broken(&lab, 0, &src, &dst, "neighbour", "NEIGH_MAC_STALE");
        let ep = lab.etcd().unwrap().endpoints();
        let r = weft(&lab, 0, "path", &["--etcd-endpoints", &ep, "--json", &src, &dst]);
        assert_eq!(r.status, Some(1), "{}", r.stdout);
        assert!(r.stdout.contains("\"cause\": \"NEIGH_MAC_STALE\""), "{}", r.stdout);
        on(&lab, 0, &["ip", "neigh", "replace", &gw, "lladdr", &mac, "dev", "flannel.1", "nud", "permanent"]);
        assert_reachable(&lab, 0, &src, &dst);
    }
    // F4: flannel.1 down (the kernel drops its routes and neighbours with it).
    {
        let _f = Freeze::new(&lab, &[0]);
        on(&lab, 0, &["ip", "link", "set", "flannel.1", "down"]);
        assert_broken(&lab, 0, &src, &dst, "vtep", "VTEP_DOWN");
        on(&lab, 0, &["ip", "link", "set", "flannel.1", "up"]);
        on(&lab, 0, &["ip", "neigh", "replace", &gw, "lladdr", &mac, "dev", "flannel.1", "nud", "permanent"]);
        on(
            &lab,
            0,
            &["bridge", "fdb", "replace", &mac, "dev", "flannel.1", "dst", &peer_ip, "self", "permanent"],
        );
        on(&lab, 0, &["ip", "route", "replace", &subnet, "via", &gw, "dev", "flannel.1", "onlink"]);
        assert_reachable(&lab, 0, &src, &dst);
    }
    // F8: the pod's MTU above what the overlay carries.
    {
        let pod = lab.pod(0).unwrap();
        let before = pod.mtu().unwrap().to_string();
        assert!(pod.ns().exec(&["ip", "link", "set", "eth0", "mtu", "1500"]).ok());
        assert_broken(&lab, 0, &src, &dst, "pod", "MTU_MISMATCH");
        assert!(pod.ns().exec(&["ip", "link", "set", "eth0", "mtu", &before]).ok());
        assert_reachable(&lab, 0, &src, &dst);
    }
    // F11: the pod's bridge port down (same-node and cross-node paths both name it).
    {
        let pods = weft(&lab, 0, "pods", &["--json"]);
        let v: Value = serde_json::from_str(&pods.stdout).unwrap();
        let src_ns = lab.pod(0).unwrap().ns().path();
        let veth = v["pods"].as_array().unwrap().iter().find(|p| p["netns"] == src_ns.as_str()).unwrap()
            ["host_veth"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        on(&lab, 0, &["ip", "link", "set", &veth, "down"]);
        assert_broken(&lab, 0, &src, &dst, "veth", "BRIDGE_PORT_DOWN");
        assert_broken(&lab, 0, &src, &local_dst, "veth", "BRIDGE_PORT_DOWN");
        let table = weft(&lab, 0, "pods", &[]);
        assert_eq!(table.status, Some(1), "pods reports the problem: {}", table.stdout);
        on(&lab, 0, &["ip", "link", "set", &veth, "up"]);
        wait_reachable(&lab, 0, &src, &dst);
        // Hairpin off on a port whose network config asks for it (F11): `pods` names it.
        on(&lab, 0, &["bridge", "link", "set", "dev", &veth, "hairpin", "off"]);
        let table = weft(&lab, 0, "pods", &[]);
        assert_eq!(table.status, Some(1), "{}", table.stdout);
        assert!(table.stdout.contains("HAIRPIN_OFF"), "{}", table.stdout);
        on(&lab, 0, &["bridge", "link", "set", "dev", &veth, "hairpin", "on"]);
        assert_eq!(weft(&lab, 0, "pods", &[]).status, Some(0));
    }
    // F11: ip_forward off.
    {
        on(&lab, 0, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        assert_broken(&lab, 0, &src, &dst, "host-route", "IP_FORWARD_OFF");
        on(&lab, 0, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        assert_reachable(&lab, 0, &src, &dst);
    }
    // F10: strict rp_filter with an asymmetric path back to the pod.
    {
        let before = on(&lab, 0, &["sysctl", "-n", "net.ipv4.conf.all.rp_filter"]).trim().to_string();
        on(&lab, 0, &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"]);
        on(&lab, 0, &["ip", "route", "add", &format!("{src}/32"), "dev", "eth0"]);
        assert_broken(&lab, 0, &src, &dst, "host-route", "RP_FILTER");
        on(&lab, 0, &["ip", "route", "del", &format!("{src}/32"), "dev", "eth0"]);
        on(&lab, 0, &["sysctl", "-qw", &format!("net.ipv4.conf.all.rp_filter={before}")]);
        assert_reachable(&lab, 0, &src, &dst);
    }
    // F7: FORWARD policy DROP with flanneld's accept rules gone.
    {
        let _f = Freeze::new(&lab, &[0]);
        let saved = on(&lab, 0, &["iptables-save", "-t", "filter"]);
        on(&lab, 0, &["iptables", "-P", "FORWARD", "DROP"]);
        on(&lab, 0, &["iptables", "-F", "FLANNEL-FWD"]);
        assert_broken(&lab, 0, &src, &dst, "forward", "FORWARD_DROP");
        let r = lab.node(0).unwrap().ns().exec_with(&["iptables-restore"], &[], saved.as_bytes());
        assert!(r.ok(), "{}", r.stderr);
        assert_reachable(&lab, 0, &src, &dst);
    }
    // Masquerade removed: an outside destination is named, pod-to-pod is not affected.
    {
        let _f = Freeze::new(&lab, &[0]);
        let saved = on(&lab, 0, &["iptables-save", "-t", "nat"]);
        on(&lab, 0, &["iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG"]);
        assert_broken(&lab, 0, &src, &outside, "masquerade", "MASQ_MISSING");
        assert_reachable(&lab, 0, &src, &dst);
        let r = lab.node(0).unwrap().ns().exec_with(&["iptables-restore"], &[], saved.as_bytes());
        assert!(r.ok(), "{}", r.stderr);
        assert_reachable(&lab, 0, &src, &outside);
    }
    // F12: cni0 carries another address than the lease's gateway.
    {
        let env = lab.subnet_env(0).unwrap().unwrap();
        let gw_cidr = env.subnet.unwrap().to_string();
        let net = lab.node_subnet(0).unwrap();
        let wrong = format!("{}/{}", std::net::Ipv4Addr::from(u32::from(net.network()) + 254), net.prefix());
        on(&lab, 0, &["ip", "addr", "del", &gw_cidr, "dev", "cni0"]);
        on(&lab, 0, &["ip", "addr", "add", &wrong, "dev", "cni0"]);
        assert_broken(&lab, 0, &src, &dst, "bridge", "CNI0_ADDR_MISMATCH");
        on(&lab, 0, &["ip", "addr", "del", &wrong, "dev", "cni0"]);
        on(&lab, 0, &["ip", "addr", "add", &gw_cidr, "dev", "cni0"]);
        assert_reachable(&lab, 0, &src, &dst);
    }
    // F13: a second lease overlapping the peer's subnet (judged with the leases from etcd).
    {
        let _f = Freeze::new(&lab, &[0]);
        let ep = lab.etcd().unwrap().endpoints();
        let peer = lab.node_subnet(1).unwrap();
        // A supernet of the peer's subnet with another network address, so that removing it
        // later does not take the peer's own gateway neighbour with it.
        let over = (17..peer.prefix())
            .rev()
            .filter_map(|p| ipnetwork::Ipv4Network::new(peer.network(), p).ok())
            .map(|n| ipnetwork::Ipv4Network::new(n.network(), n.prefix()).unwrap())
            .find(|n| n.network() != peer.network())
            .unwrap();
        let key = format!("{}/subnets/{}-{}", lab.etcd_prefix(), over.network(), over.prefix());
        let value = r#"{"PublicIP":"198.18.0.99","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:98"}}"#;
        lab.etcd().unwrap().put(&key, value).unwrap();
        let r = weft(&lab, 0, "path", &["--etcd-endpoints", &ep, "--json", &src, &dst]);
        assert_eq!(
            r.status,
            Some(1),
            "{}
{}",
            r.stdout,
            r.stderr
        );
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(v["cause"], "LEASE_OVERLAP", "{}", r.stdout);
        assert!(r.stdout.contains(&key), "names both keys: {}", r.stdout);
        lab.etcd().unwrap().del(&key).unwrap();
        let r = weft(&lab, 0, "path", &["--etcd-endpoints", &ep, &src, &dst]);
        assert_eq!(r.status, Some(0), "{}", r.stdout);
    }
    // F5: the underlay route to the peer leaves by another device than flannel.1's.
    {
        let _f = Freeze::new(&lab, &[0]);
        let host = format!("{peer_ip}/32");
        on(&lab, 0, &["ip", "route", "add", &host, "dev", "cni0"]);
        assert_broken(&lab, 0, &src, &dst, "underlay", "UNDERLAY_NO_ROUTE");
        on(&lab, 0, &["ip", "route", "del", &host, "dev", "cni0"]);
        assert_reachable(&lab, 0, &src, &dst);
    }
    // F5: the VXLAN local address (the lease's PublicIP) is no longer an address of the node.
    {
        let _f = Freeze::new(&lab, &[0]);
        let own = format!("{}/24", lab.node(0).unwrap().ip());
        on(&lab, 0, &["ip", "addr", "del", &own, "dev", "eth0"]);
        assert_broken(&lab, 0, &src, &dst, "vtep", "PUBLIC_IP_NOT_LOCAL");
        on(&lab, 0, &["ip", "addr", "add", &own, "dev", "eth0"]);
        assert_reachable(&lab, 0, &src, &dst);
    }
    // F3: node 1's flannel.1 MAC changed without its lease following.
    {
        let n1 = lab.node(1).unwrap().ns();
        assert!(n1.exec(&["ip", "link", "set", "flannel.1", "address", "02:00:00:00:00:97"]).ok());
        let v = assert_broken(&lab, 0, &src, &dst, "remote-vtep", "VTEP_MAC_MISMATCH");
        assert_eq!(v["hops"].as_array().unwrap().last().unwrap()["node"], peer_ip.as_str());
        assert!(n1.exec(&["ip", "link", "set", "flannel.1", "address", &mac]).ok());
        assert_reachable(&lab, 0, &src, &dst);
    }
    // F3: node 1's lease in etcd carries a VtepMAC its device does not have (node 0's flanneld
    // follows the lease; node 1's flanneld still holds the real MAC).
    {
        let ep = lab.etcd().unwrap().endpoints();
        let key = lab.lease(1).unwrap().unwrap().key;
        let good = lab.etcd().unwrap().get(&key).unwrap().unwrap();
        let bad = good.replace(&mac, "02:00:00:00:00:96");
        assert_ne!(good, bad, "lease value carries the MAC in lower case: {good}");
        assert!(lab.etcd().unwrap().ctl(&["put", "--ignore-lease", &key, &bad]).ok());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let r = weft(&lab, 0, "path", &["--etcd-endpoints", &ep, "--json", &src, &dst]);
            let v: Value = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
            if v["cause"] == "LEASE_VTEP_MAC_STALE" {
                assert_eq!(r.status, Some(1));
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never named LEASE_VTEP_MAC_STALE:\n{}", r.stdout);
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert!(lab.etcd().unwrap().ctl(&["put", "--ignore-lease", &key, &good]).ok());
        wait_reachable(&lab, 0, &src, &dst);
    }
    // The remote flanneld stopped: its view cannot be read (exit 2, cause named).
    {
        let _f = Freeze::new(&lab, &[1]);
        let (code, v, run) = path(&lab, 0, &src, &dst);
        assert_eq!(code, 2, "{}\n{}", run.stdout, run.stderr);
        assert_eq!(v["cause"], "REMOTE_VIEW_UNAVAILABLE", "{}", run.stdout);
        assert!(run.stderr.contains("/debug/dataplane"), "{}", run.stderr);
    }
    assert_reachable(&lab, 0, &src, &dst);
}

#[test]
fn probe_sees_packets_per_hop_on_both_nodes_and_names_where_vxlan_is_lost() {
    let lab = lab();
    let src = lab.pod(0).unwrap().ip().to_string();
    let dst = lab.pod(2).unwrap().ip().to_string();
    let n1 = lab.node(1).unwrap().ip().to_string();
    let (code, v, out) = probe(&lab, &src, &dst, &[]);
    assert_eq!(code, Some(0), "{out}");
    let p = &v["probe"];
    assert_eq!(p["answered"], true, "{p}");
    assert_eq!(p["remote_watched"], true, "{p}");
    assert_eq!(p["df_answered"], true, "a DF echo at the pod MTU (1450) fits the overlay: {p}");
    let places: Vec<(&str, &str)> = p["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["node"].as_str().unwrap(), h["place"].as_str().unwrap()))
        .collect();
    let l = "local";
    let r = n1.as_str();
    assert_eq!(
        places,
        [
            (l, "pod"),
            (l, "veth"),
            (l, "bridge"),
            (l, "vtep"),
            (l, "underlay"),
            (r, "underlay"),
            (r, "vtep"),
            (r, "bridge"),
            (r, "dst-veth")
        ]
    );
    assert!(
        p["hops"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["requests"].as_u64().unwrap() >= 3 && h["replies"].as_u64().unwrap() >= 3),
        "{p}"
    );
    // The remote dst-veth named is the destination pod's own host veth (its peer index).
    let veth = probe_hop(&v, r, "dst-veth")["ifname"].as_str().unwrap().to_string();
    let link = lab.node(1).unwrap().ns().ip_json(&["link", "show", "dev", &veth]);
    assert_eq!(link[0]["ifindex"].as_u64(), Some(pod_peer_index(&lab, 2)), "{veth}");
    assert_eq!(p["last_seen"], format!("dst-veth ({veth}) of {n1}"));
    // UDP probes to a port: seen out and answered (port unreachable) on every hop.
    let (code, v, out) = probe(&lab, &src, &dst, &["--proto", "udp", "--port", "9"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(probe_hop(&v, r, "dst-veth")["requests"].as_u64().unwrap() >= 3, "{out}");

    // F6 on node 1: its firewall drops VXLAN arriving on its underlay. The static chain cannot
    // see it; the probe sees the packets reach node 1's eth0 (packet taps run before the
    // firewall) and never its flannel.1.
    let rule = ["INPUT", "-i", "eth0", "-p", "udp", "--dport", "8472", "-j", "DROP"];
    let mut add = vec!["iptables", "-I"];
    add.extend_from_slice(&rule);
    on(&lab, 1, &add);
    assert_reachable(&lab, 0, &src, &dst);
    let (code, v, out) = probe(&lab, &src, &dst, &[]);
    let mut del = vec!["iptables", "-D"];
    del.extend_from_slice(&rule);
    on(&lab, 1, &del);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(v["cause"], "UNDERLAY_LOSS", "{out}");
    assert_eq!(v["probe"]["last_seen"], format!("underlay (eth0) of {n1}"), "{out}");
    assert!(probe_hop(&v, "local", "underlay")["requests"].as_u64().unwrap() >= 3, "{out}");
    assert_eq!(probe_hop(&v, r, "vtep")["requests"], 0, "{out}");
    assert_eq!(v["probe"]["answered"], false);
    let failing = v["hops"].as_array().unwrap().iter().find(|h| h["ok"] == false).unwrap();
    assert!(failing["detail"].as_str().unwrap().contains("dropped on arrival"), "{out}");

    // F6 in the underlay itself (the switch eats VXLAN toward node 1): the probe left node 0's
    // uplink and never reached node 1's.
    let sw = lab.switch().unwrap();
    let table = format!("wtP{}", std::process::id());
    for cmd in [
        format!("add table bridge {table}"),
        format!("add chain bridge {table} cut {{ type filter hook forward priority 0; }}"),
        format!("add rule bridge {table} cut oifname \"n1\" udp dport 8472 drop"),
    ] {
        let r = sw.exec(&["nft", &cmd]);
        assert!(r.ok(), "nft {cmd}: {}", r.stderr);
    }
    let (code, v, out) = probe(&lab, &src, &dst, &[]);
    assert!(sw.exec(&["nft", "delete", "table", "bridge", &table]).ok());
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(v["cause"], "UNDERLAY_LOSS", "{out}");
    assert_eq!(v["probe"]["last_seen"], "underlay (eth0)", "{out}");
    assert_eq!(probe_hop(&v, r, "underlay")["requests"], 0, "{out}");
    let failing = v["hops"].as_array().unwrap().iter().find(|h| h["ok"] == false).unwrap();
    let want = format!("the probe left this node's eth0 and never reached {n1}'s eth0");
    assert!(failing["detail"].as_str().unwrap().starts_with(&want), "{out}");

    // F8: the underlay between the nodes carries less than flannel.1's MTU + VXLAN overhead
    // (the switch port to node 1 at 1400): small probes pass, the DF probe at the pod MTU does not.
    assert!(sw.exec(&["ip", "link", "set", "n1", "mtu", "1400"]).ok());
    let (code, v, out) = probe(&lab, &src, &dst, &[]);
    assert!(sw.exec(&["ip", "link", "set", "n1", "mtu", "1500"]).ok());
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(v["cause"], "MTU_MISMATCH", "{out}");
    assert_eq!(v["probe"]["answered"], true);
    assert_eq!(v["probe"]["df_answered"], false);
    // Nothing left behind: the sockets are closed, the remote capture slot is free again (a
    // new capture starts at once), and the path works.
    let run = weft(&lab, 0, "path", &["--probe", &src, &dst]);
    assert_eq!(run.status, Some(0), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("last seen: dst-veth ({veth}) of {n1}")), "{}", run.stdout);
    assert!(!run.stdout.contains("remote capture"), "{}", run.stdout);
}

/// The kernel's drop reason for probe packets a FORWARD rule of node 0 drops, from
/// `skb:kfree_skb` in a tracing instance of weft's own, and no tracing state left behind.
#[test]
fn probe_reports_the_kernels_drop_reason_and_leaves_tracing_as_it_was() {
    let lab = lab();
    let src = lab.pod(0).unwrap().ip().to_string();
    let dst = lab.pod(2).unwrap().ip().to_string();
    let tracing = |script: &str| {
        let sh =
            format!("d=$(mktemp -d) && mount -t tracefs nodev $d && {{ {script}; }}; umount $d; rmdir $d");
        lab.node(0).unwrap().ns().exec(&["sh", "-c", &sh])
    };
    let before = tracing(
        "cat $d/events/skb/kfree_skb/enable $d/events/skb/kfree_skb/filter \
         $d/events/net/netif_receive_skb/enable $d/events/net/netif_receive_skb/filter; ls $d/instances",
    );
    if !before.ok() {
        eprintln!(
            "SKIPPED: tracefs cannot be mounted here ({}); drop reasons untested",
            before.stderr.trim()
        );
        return;
    }
    let rule = ["FORWARD", "-s", &src, "-p", "icmp", "-j", "DROP"];
    let mut add = vec!["iptables", "-I"];
    add.extend_from_slice(&rule);
    on(&lab, 0, &add);
    let (code, v, out) = probe(&lab, &src, &dst, &[]);
    let mut del = vec!["iptables", "-D"];
    del.extend_from_slice(&rule);
    on(&lab, 0, &del);
    assert_eq!(code, Some(1), "{out}");
    let drops = &v["probe"]["drops"];
    assert!(!drops.is_null(), "{out}");
    // Tied to the probe's own packets through their buffers (net:netif_receive_skb with the
    // probe's length): each of the three echo requests dropped by the FORWARD rule. (Tests
    // running meanwhile send probes of the same length, so "at least".)
    assert_eq!(drops["correlated"], true, "{out}");
    let own = |list: &str| {
        drops[list].as_array().unwrap().iter().find(|r| r["reason"] == "NETFILTER_DROP").cloned()
    };
    let mine = own("probe").unwrap_or_else(|| panic!("no NETFILTER_DROP of the probe's packets: {out}"));
    assert!(mine["count"].as_u64().unwrap() >= 3, "{out}");
    assert!(own("reasons").unwrap()["count"].as_u64().unwrap() >= 3, "{out}");
    // Tracing is as it was: the global event off and unfiltered, no instance left behind. Other
    // tests' probes run at the same time, each with its live instance `weft-probe-<pid>`: only
    // an instance whose process is gone is a leftover (listed again, as one may end meanwhile).
    let list = "cat $d/events/skb/kfree_skb/enable $d/events/skb/kfree_skb/filter \
        $d/events/net/netif_receive_skb/enable $d/events/net/netif_receive_skb/filter; ls $d/instances";
    let after = tracing(list);
    assert_eq!(without_probe_instances(&after.stdout), without_probe_instances(&before.stdout));
    let dead = |out: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.strip_prefix("weft-probe-"))
            .filter(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
            .map(str::to_string)
            .collect()
    };
    // One already there before this probe is another run's, not this one's.
    let earlier = dead(&before.stdout);
    let suspects: Vec<String> = dead(&after.stdout).into_iter().filter(|p| !earlier.contains(p)).collect();
    if !suspects.is_empty() {
        let again = tracing(list).stdout;
        let left: Vec<_> = dead(&again).into_iter().filter(|p| suspects.contains(p)).collect();
        assert!(left.is_empty(), "tracing instances of ended probes left behind: {left:?}");
    }
}

/// A tracing listing without the `weft-probe-<pid>` instances of running probes and the
/// `flanneld-capture-<pid>-<id>` ones of running remote captures (checked in `probe_drops.rs`).
fn without_probe_instances(listing: &str) -> Vec<&str> {
    listing.lines().filter(|l| !l.starts_with("weft-probe-") && !l.starts_with("flanneld-capture-")).collect()
}
