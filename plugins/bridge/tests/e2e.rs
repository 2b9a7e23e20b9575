//! End-to-end: the built `bridge` binary (with host-local) against fresh host and container
//! namespaces, kernel state read back with `ip -j`.

mod support;

use serde_json::json;
use support::*;
use weft_lab::ns::Netns;

#[test]
fn two_pods_ping_each_other_and_the_gateway_and_result_has_reference_shape() {
    let env = Env::new();
    let (a, b) = (Netns::unique(PREFIX), Netns::unique(PREFIX));
    let conf =
        env.conf("1.0.0", "net1", json!({"isDefaultGateway": true, "ipam": env.ipam(&["10.66.1.0/24"])}));
    let ra = env.add("ctr-a", &a, &conf);
    let rb = env.add("ctr-b", &b, &conf);

    // Shape: interfaces = [bridge, host veth, container with sandbox]; ips point at index 2.
    let ifaces = ra["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 3, "{ra}");
    assert_eq!(ifaces[0]["name"], "br0");
    assert!(ifaces[0].get("sandbox").is_none());
    let veth = ifaces[1]["name"].as_str().unwrap();
    assert!(veth.starts_with("veth") && veth.len() == 12, "{veth}");
    assert!(ifaces[1].get("sandbox").is_none());
    assert_eq!(ifaces[2]["name"], "eth0");
    assert_eq!(ifaces[2]["sandbox"], a.path());
    assert_eq!(ra["cniVersion"], "1.0.0");
    assert_eq!(ra["ips"][0]["interface"], 2);
    assert_eq!(ra["ips"][0]["gateway"], "10.66.1.1");
    assert!(ra["ips"][0].get("version").is_none());
    assert_eq!(ra["routes"], json!([{"dst": "0.0.0.0/0", "gw": "10.66.1.1"}]));

    // Kernel state matches the result.
    let ctr_link = link(&a, "eth0");
    assert_eq!(ctr_link["address"], ifaces[2]["mac"]);
    assert_eq!(ctr_link["operstate"], "UP");
    let host_link = link(&env.host, veth);
    assert_eq!(host_link["master"], "br0");
    assert_eq!(host_link["address"], ifaces[1]["mac"]);
    assert_eq!(link(&env.host, "br0")["address"], ifaces[0]["mac"]);
    assert_eq!(addresses(&a, "eth0"), vec![ra["ips"][0]["address"].as_str().unwrap().to_string()]);
    assert_eq!(addresses(&env.host, "br0"), vec!["10.66.1.1/24"]);
    assert_eq!(env.host.exec(&["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.trim(), "1");

    ping(&a, &ip_of(&rb, 0)).expect_ok();
    ping(&b, &ip_of(&ra, 0)).expect_ok();
    ping(&a, "10.66.1.1").expect_ok();

    for (cid, pod, r) in [("ctr-a", &a, &ra), ("ctr-b", &b, &rb)] {
        let d = env.run("DEL", cid, &pod.path(), "eth0", &Env::with_prev(&conf, r));
        assert!(d.ok(), "{d}");
    }
    assert!(env.host_veths().is_empty());
    assert!(env.ip_files("net1").is_empty());
}

#[test]
fn result_versions_follow_the_request() {
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    for (i, version) in ["0.3.1", "0.4.0", "1.1.0", "0.2.0"].iter().enumerate() {
        let conf = env.conf(version, "netv", json!({"isGateway": true, "ipam": env.ipam(&["10.66.9.0/24"])}));
        let cid = format!("v{i}");
        let r = env.add(&cid, &pod, &conf);
        assert_eq!(r["cniVersion"], *version);
        match *version {
            "0.2.0" => {
                assert!(r.get("interfaces").is_none());
                assert_eq!(r["ip4"]["gateway"], "10.66.9.1");
            }
            "1.1.0" => assert!(r["ips"][0].get("version").is_none()),
            _ => {
                assert_eq!(r["ips"][0]["version"], "4");
                assert_eq!(r["dns"], json!({}));
            }
        }
        let d = env.run("DEL", &cid, &pod.path(), "eth0", &conf);
        assert!(d.ok(), "{d}");
        assert!(!pod.has_link("eth0"));
    }
}

#[test]
fn check_passes_after_add_and_detects_a_removed_address() {
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    // A route without gw: the reference 1.1.1 CHECK fails on it, ours must not.
    let mut ipam = env.ipam(&["10.66.2.0/24"]);
    ipam["routes"] = json!([{"dst": "10.0.0.0/8"}]);
    let conf = env.conf("1.0.0", "net2", json!({"isDefaultGateway": true, "ipam": ipam}));
    let r = env.add("ctr", &pod, &conf);
    let with_prev = Env::with_prev(&conf, &r);
    let c = env.run("CHECK", "ctr", &pod.path(), "eth0", &with_prev);
    assert!(c.ok(), "{c}");
    assert_eq!(c.stdout, "");

    // Without prevResult CHECK fails.
    let c = env.run("CHECK", "ctr", &pod.path(), "eth0", &conf);
    assert!(error_of(&c)["msg"].as_str().unwrap().contains("prevResult"), "{c}");

    let addr = r["ips"][0]["address"].as_str().unwrap();
    pod.exec(&["ip", "addr", "del", addr, "dev", "eth0"]).expect_ok();
    let c = env.run("CHECK", "ctr", &pod.path(), "eth0", &with_prev);
    let e = error_of(&c);
    assert!(e["msg"].as_str().unwrap().contains(addr), "{c}");

    let d = env.run("DEL", "ctr", &pod.path(), "eth0", &with_prev);
    assert!(d.ok(), "{d}");
}

#[test]
fn check_detects_a_removed_route_and_a_detached_veth() {
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    let conf =
        env.conf("0.4.0", "net2b", json!({"isDefaultGateway": true, "ipam": env.ipam(&["10.66.12.0/24"])}));
    let r = env.add("ctr", &pod, &conf);
    let with_prev = Env::with_prev(&conf, &r);
    pod.exec(&["ip", "route", "del", "default"]).expect_ok();
    let c = env.run("CHECK", "ctr", &pod.path(), "eth0", &with_prev);
    assert!(error_of(&c)["msg"].as_str().unwrap().contains("0.0.0.0/0"), "{c}");
    pod.exec(&["ip", "route", "add", "default", "via", "10.66.12.1"]).expect_ok();
    assert!(env.run("CHECK", "ctr", &pod.path(), "eth0", &with_prev).ok());
    let veth = r["interfaces"][1]["name"].as_str().unwrap();
    env.host.exec(&["ip", "link", "set", veth, "nomaster"]).expect_ok();
    let c = env.run("CHECK", "ctr", &pod.path(), "eth0", &with_prev);
    assert!(error_of(&c)["msg"].as_str().unwrap().contains("veth"), "{c}");
}

#[test]
fn del_removes_veth_and_address_and_is_repeatable() {
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    let conf = env.conf("1.0.0", "net3", json!({"isGateway": true, "ipam": env.ipam(&["10.66.3.0/24"])}));
    let r = env.add("ctr", &pod, &conf);
    assert_eq!(env.ip_files("net3"), vec![ip_of(&r, 0)]);
    let with_prev = Env::with_prev(&conf, &r);
    for _ in 0..2 {
        let d = env.run("DEL", "ctr", &pod.path(), "eth0", &with_prev);
        assert!(d.ok(), "{d}");
        assert!(!pod.has_link("eth0"));
        assert!(env.host_veths().is_empty());
        assert!(env.ip_files("net3").is_empty());
    }
    // Without prevResult and without CNI_NETNS too.
    assert!(env.run("DEL", "ctr", &pod.path(), "eth0", &conf).ok());
    assert!(env.run("DEL", "ctr", "", "eth0", &conf).ok());
}

#[test]
fn del_releases_the_ip_when_the_netns_is_gone_empty_or_not_a_namespace() {
    let env = Env::new();
    let conf = env.conf("1.0.0", "net4", json!({"ipam": env.ipam(&["10.66.4.0/24"])}));
    let not_ns = env.dir.path().join("not-a-netns");
    std::fs::write(&not_ns, b"").unwrap();
    // What CNI_NETNS says at DEL time, after the pod's namespace was deleted.
    let not_ns = not_ns.display().to_string();
    let cases = [("gone", None), ("empty", Some(String::new())), ("file", Some(not_ns))];
    for (cid, netns_at_del) in cases {
        let pod = Netns::unique(PREFIX);
        env.add(cid, &pod, &conf);
        assert_eq!(env.ip_files("net4").len(), 1);
        let path = netns_at_del.unwrap_or_else(|| pod.path());
        drop(pod);
        let d = env.run("DEL", cid, &path, "eth0", &conf);
        assert!(d.ok(), "{cid}: {d}");
        assert!(env.ip_files("net4").is_empty(), "{cid}: IP not released");
        // The kernel removes the host end when it tears the dead namespace down, which
        // happens asynchronously after the last reference is gone.
        assert!(eventually(|| env.host_veths().is_empty()), "{cid}: veth left");
    }
}

#[test]
fn dual_stack_pods_reach_each_other_over_both_families() {
    let env = Env::new();
    let (a, b) = (Netns::unique(PREFIX), Netns::unique(PREFIX));
    let conf = env.conf(
        "1.0.0",
        "net5",
        json!({"isDefaultGateway": true, "ipam": env.ipam(&["10.66.5.0/24", "fd00:66:5::/64"])}),
    );
    let ra = env.add("a", &a, &conf);
    let rb = env.add("b", &b, &conf);
    assert_eq!(ra["ips"].as_array().unwrap().len(), 2);
    assert_eq!(ra["ips"][1]["gateway"], "fd00:66:5::1");
    assert_eq!(ra["ips"][1]["interface"], 2);
    let defaults: Vec<_> = ra["routes"].as_array().unwrap().iter().map(|r| r["dst"].clone()).collect();
    assert_eq!(defaults, vec![json!("0.0.0.0/0"), json!("::/0")]);
    let br = addresses(&env.host, "br0");
    assert!(br.contains(&"fd00:66:5::1/64".to_string()), "{br:?}");
    // Gateway and container addresses are usable at once (no DAD wait needed).
    let tentative = env.host.exec(&["ip", "-6", "addr", "show", "dev", "br0", "tentative"]);
    assert!(!tentative.stdout.contains("fd00:66:5::1"), "{tentative}");
    ping(&a, &ip_of(&rb, 0)).expect_ok();
    ping(&a, &ip_of(&rb, 1)).expect_ok();
    ping(&b, "fd00:66:5::1").expect_ok();
    for (cid, pod) in [("a", &a), ("b", &b)] {
        assert!(env.run("DEL", cid, &pod.path(), "eth0", &conf).ok());
    }
    assert!(env.ip_files("net5").is_empty());
}

#[test]
fn mtu_applies_to_both_veth_ends_and_a_new_bridge() {
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    let conf = env.conf("1.0.0", "net6", json!({"mtu": 1400, "ipam": env.ipam(&["10.66.6.0/24"])}));
    let r = env.add("ctr", &pod, &conf);
    assert_eq!(link(&pod, "eth0")["mtu"], 1400);
    assert_eq!(link(&env.host, r["interfaces"][1]["name"].as_str().unwrap())["mtu"], 1400);
    assert_eq!(link(&env.host, "br0")["mtu"], 1400);
    assert!(env.run("DEL", "ctr", &pod.path(), "eth0", &conf).ok());
}

#[test]
fn l2_mode_without_ipam_type_brings_the_interface_up_without_addresses() {
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    let conf = env.conf("1.0.0", "net7", json!({"ipam": {}}));
    let r = env.add("ctr", &pod, &conf);
    assert!(r.get("ips").is_none(), "{r}");
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(link(&pod, "eth0")["operstate"], "UP");
    assert!(addresses(&pod, "eth0").is_empty());
    let c = env.run("CHECK", "ctr", &pod.path(), "eth0", &Env::with_prev(&conf, &r));
    assert!(c.ok(), "L2 CHECK must not call an IPAM plugin: {c}");
    assert!(env.run("DEL", "ctr", &pod.path(), "eth0", &conf).ok());
    assert!(env.host_veths().is_empty());
}

#[test]
fn hairpin_isolation_promisc_and_mac_are_applied() {
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    let conf = env.conf(
        "1.0.0",
        "net8",
        json!({"hairpinMode": true, "portIsolation": true, "ipam": env.ipam(&["10.66.8.0/24"]),
               "runtimeConfig": {"mac": "0a:58:0a:42:08:99"}}),
    );
    let r = env.add("ctr", &pod, &conf);
    assert_eq!(r["interfaces"][2]["mac"], "0a:58:0a:42:08:99");
    assert_eq!(link(&pod, "eth0")["address"], "0a:58:0a:42:08:99");
    let port = &link(&env.host, r["interfaces"][1]["name"].as_str().unwrap())["linkinfo"]["info_slave_data"];
    assert_eq!(port["hairpin"], true, "{port}");
    assert_eq!(port["isolated"], true, "{port}");
    assert!(env.run("DEL", "ctr", &pod.path(), "eth0", &conf).ok());

    let pod2 = Netns::unique(PREFIX);
    let conf = env.conf("1.0.0", "net8b", json!({"bridge": "br1", "promiscMode": true, "ipam": {}}));
    env.add("p", &pod2, &conf);
    let flags = link(&env.host, "br1")["flags"].to_string();
    assert!(flags.contains("PROMISC"), "{flags}");
}

#[test]
fn vlan_is_applied_where_the_kernel_filters_vlans_and_refused_cleanly_where_not() {
    let filtering = weft_lab::ns::kernel_has_bridge_vlan_filtering(PREFIX);
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    let conf = env.conf(
        "1.0.0",
        "net9",
        json!({"bridge": "brv", "vlan": 100, "ipam": env.ipam(&["10.66.10.0/24"])}),
    );
    let r = env.run("ADD", "ctr", &pod.path(), "eth0", &conf);
    if filtering {
        assert!(r.ok(), "the kernel filters VLANs, yet ADD failed: {r}");
        let res: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let veth = res["interfaces"][1]["name"].as_str().unwrap();
        let vlans = env.host.ip_json(&["-d", "link", "show", "dev", "brv"]);
        assert_eq!(vlans[0]["linkinfo"]["info_data"]["vlan_filtering"], 1);
        let port = env.host.exec(&["bridge", "-j", "vlan", "show", "dev", veth]).expect_ok();
        assert!(port.stdout.contains("\"vlan\":100"), "{port}");
        assert!(!port.stdout.contains("\"vlan\":1,"), "default VLAN must be removed: {port}");
    } else {
        // A kernel built without CONFIG_BRIDGE_VLAN_FILTERING (this one): a clean error,
        // nothing left.
        assert!(!r.ok(), "the kernel has no VLAN filtering, yet ADD succeeded: {r}");
        let e = error_of(&r);
        assert_eq!(e["code"], 999, "{r}");
        assert!(e["msg"].as_str().unwrap().contains("brv"), "{r}");
        assert!(env.host_veths().is_empty());
        assert!(env.ip_files("net9").is_empty());
    }
}

#[test]
fn enabledad_waits_until_the_container_ipv6_address_is_usable() {
    let env = Env::new();
    let (a, b) = (Netns::unique(PREFIX), Netns::unique(PREFIX));
    let conf = env.conf(
        "1.0.0",
        "net10",
        json!({"isGateway": true, "enabledad": true, "ipam": env.ipam(&["fd00:66:10::/64"])}),
    );
    let ra = env.add("a", &a, &conf);
    let rb = env.add("b", &b, &conf);
    let tentative = a.exec(&["ip", "-6", "addr", "show", "dev", "eth0", "tentative"]).expect_ok();
    assert!(!tentative.stdout.contains("fd00:66:10"), "ADD returned before DAD finished: {tentative}");
    assert_eq!(a.exec(&["sysctl", "-n", "net.ipv6.conf.eth0.accept_dad"]).stdout.trim(), "1");
    ping(&a, &ip_of(&rb, 0)).expect_ok();
    for (cid, pod, r) in [("a", &a, &ra), ("b", &b, &rb)] {
        assert!(env.run("DEL", cid, &pod.path(), "eth0", &Env::with_prev(&conf, r)).ok());
    }
}

#[test]
fn disable_container_interface_leaves_it_down() {
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    let conf = env.conf("1.0.0", "net11", json!({"disableContainerInterface": true}));
    let r = env.add("ctr", &pod, &conf);
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(link(&pod, "eth0")["operstate"], "DOWN");
    assert!(env.run("DEL", "ctr", &pod.path(), "eth0", &conf).ok());
    assert!(env.host_veths().is_empty());
}

#[test]
fn gc_and_status_are_forwarded_to_ipam() {
    let env = Env::new();
    let (a, b) = (Netns::unique(PREFIX), Netns::unique(PREFIX));
    let conf = env.conf("1.1.0", "net12", json!({"ipam": env.ipam(&["10.66.13.0/24"])}));
    let ra = env.add("a", &a, &conf);
    env.add("b", &b, &conf);
    assert_eq!(env.ip_files("net12").len(), 2);
    let empty = [("CNI_COMMAND", "STATUS"), ("CNI_CONTAINERID", ""), ("CNI_NETNS", ""), ("CNI_IFNAME", "")];
    let s = env.run_raw(&empty, conf.to_string().as_bytes());
    assert!(s.ok(), "{s}");
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "a", "ifname": "eth0"}]);
    let mut vars = empty;
    vars[0].1 = "GC";
    let g = env.run_raw(&vars, gc.to_string().as_bytes());
    assert!(g.ok(), "{g}");
    assert_eq!(env.ip_files("net12"), vec![ip_of(&ra, 0)], "GC must release only b's address");

    // STATUS fails when the IPAM plugin is missing.
    let mut missing = conf.clone();
    missing["ipam"]["type"] = json!("no-such-ipam");
    let s = env.run_raw(&empty, missing.to_string().as_bytes());
    assert!(!s.ok(), "{s}");
}
