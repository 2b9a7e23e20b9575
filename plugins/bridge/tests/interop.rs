//! Interop with the reference Go plugins (Debian's 1.1.1, spec ≤ 1.0.0): our bridge with
//! the reference host-local, the reference bridge with our host-local, pods of both
//! implementations on one bridge, and masquerade rules removed across implementations.

mod support;

use serde_json::json;
use support::*;
use weft_lab::ns::Netns;

#[test]
fn our_bridge_with_reference_host_local() {
    let env = Env::with(Impl::Weft, Impl::Reference);
    let (a, b) = (Netns::unique(PREFIX), Netns::unique(PREFIX));
    let conf =
        env.conf("1.0.0", "iop1", json!({"isDefaultGateway": true, "ipam": env.ipam(&["10.66.30.0/24"])}));
    let ra = env.add("a", &a, &conf);
    let rb = env.add("b", &b, &conf);
    ping(&a, &ip_of(&rb, 0)).expect_ok();
    let c = env.run("CHECK", "a", &a.path(), "eth0", &Env::with_prev(&conf, &ra));
    assert!(c.ok(), "{c}");
    for (cid, pod, r) in [("a", &a, &ra), ("b", &b, &rb)] {
        assert!(env.run("DEL", cid, &pod.path(), "eth0", &Env::with_prev(&conf, r)).ok());
    }
    assert!(env.ip_files("iop1").is_empty());
    assert!(env.host_veths().is_empty());
}

#[test]
fn reference_bridge_with_our_host_local() {
    let env = Env::with(Impl::Reference, Impl::Weft);
    let (a, b) = (Netns::unique(PREFIX), Netns::unique(PREFIX));
    let conf =
        env.conf("1.0.0", "iop2", json!({"isDefaultGateway": true, "ipam": env.ipam(&["10.66.31.0/24"])}));
    let ra = env.add("a", &a, &conf);
    let rb = env.add("b", &b, &conf);
    assert_eq!(ra["ips"][0]["interface"], 2);
    ping(&a, &ip_of(&rb, 0)).expect_ok();
    for (cid, pod) in [("a", &a), ("b", &b)] {
        assert!(env.run("DEL", cid, &pod.path(), "eth0", &conf).ok());
    }
    assert!(env.ip_files("iop2").is_empty());
}

#[test]
fn pods_of_both_implementations_share_a_bridge_and_ips() {
    let env = Env::with(Impl::Weft, Impl::Reference);
    let (a, b) = (Netns::unique(PREFIX), Netns::unique(PREFIX));
    let conf =
        env.conf("0.4.0", "iop3", json!({"isDefaultGateway": true, "ipam": env.ipam(&["10.66.32.0/24"])}));
    // Reference first: it creates br0 with its gateway address and pins its MAC.
    let reference = other_bridge(&env, Impl::Reference);
    let vars = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "ref"),
        ("CNI_NETNS", &a.path()),
        ("CNI_IFNAME", "eth0"),
    ];
    let path = env.cni_path();
    let mut full = vec![("CNI_PATH", path.as_str())];
    full.extend_from_slice(&vars);
    let r = env.host.exec_with(&[reference.to_str().unwrap()], &full, conf.to_string().as_bytes());
    assert!(r.ok(), "{r}");
    let ra: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let bridge_mac = link(&env.host, "br0")["address"].clone();
    // Ours reuses it.
    let rb = env.add("ours", &b, &conf);
    assert_eq!(rb["interfaces"][0]["mac"], bridge_mac);
    assert_eq!(addresses(&env.host, "br0"), vec!["10.66.32.1/24"]);
    assert_ne!(ip_of(&ra, 0), ip_of(&rb, 0));
    ping(&b, &ip_of(&ra, 0)).expect_ok();
    // Our DEL of our pod, then our DEL of the reference's pod.
    assert!(env.run("DEL", "ours", &b.path(), "eth0", &conf).ok());
    assert!(env.run("DEL", "ref", &a.path(), "eth0", &conf).ok());
    assert!(env.ip_files("iop3").is_empty());
    assert!(env.host_veths().is_empty());
}

fn nat_rules(env: &Env) -> String {
    env.host.exec(&["iptables-save", "-t", "nat"]).expect_ok().stdout
}

#[test]
fn masquerade_rules_are_removed_across_implementations() {
    let env = Env::with(Impl::Weft, Impl::Reference);
    let pod = Netns::unique(PREFIX);
    let conf = env.conf(
        "0.4.0",
        "iop4",
        json!({"isGateway": true, "ipMasq": true, "ipMasqBackend": "iptables", "ipam": env.ipam(&["10.66.33.0/24"])}),
    );
    let path = env.cni_path();
    let reference = other_bridge(&env, Impl::Reference);
    let run_ref = |cmd: &str, netns: &str, stdin: &serde_json::Value| {
        let vars = [
            ("CNI_PATH", path.as_str()),
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "ctr"),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
        ];
        env.host.exec_with(&[reference.to_str().unwrap()], &vars, stdin.to_string().as_bytes())
    };
    // Ours adds, the reference deletes.
    let r = env.add("ctr", &pod, &conf);
    let rules = nat_rules(&env);
    assert!(rules.contains(&format!("-A POSTROUTING -s {}/32", ip_of(&r, 0))), "{rules}");
    assert!(rules.contains("name: \\\"iop4\\\" id: \\\"ctr\\\""), "{rules}");
    let d = run_ref("DEL", &pod.path(), &Env::with_prev(&conf, &r));
    assert!(d.ok(), "{d}");
    assert!(!nat_rules(&env).contains("CNI-"), "{}", nat_rules(&env));

    // The reference adds, ours deletes after the netns is gone and without prevResult.
    let pod2 = Netns::unique(PREFIX);
    let a = run_ref("ADD", &pod2.path(), &conf);
    assert!(a.ok(), "{a}");
    assert!(nat_rules(&env).contains("CNI-"));
    let p2 = pod2.path();
    drop(pod2);
    let d = env.run("DEL", "ctr", &p2, "eth0", &conf);
    assert!(d.ok(), "{d}");
    assert!(!nat_rules(&env).contains("CNI-"), "chain leaked: {}", nat_rules(&env));
    assert!(env.ip_files("iop4").is_empty());
}

#[test]
fn nftables_masquerade_is_set_up_and_removed_even_without_the_netns() {
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    let conf = env.conf(
        "1.0.0",
        "iop5",
        json!({"isGateway": true, "ipMasq": true, "ipMasqBackend": "nftables", "ipam": env.ipam(&["10.66.34.0/24"])}),
    );
    let r = env.add("ctr", &pod, &conf);
    let rules = env.host.exec(&["nft", "list", "ruleset"]).expect_ok().stdout;
    assert!(rules.contains(&format!("ip saddr {}", ip_of(&r, 0))), "{rules}");
    assert!(rules.contains("masquerade"), "{rules}");
    let p = pod.path();
    drop(pod);
    assert!(env.run("DEL", "ctr", &p, "eth0", &conf).ok());
    let rules = env.host.exec(&["nft", "list", "ruleset"]).expect_ok().stdout;
    assert!(!rules.contains("saddr"), "{rules}");
    assert!(env.ip_files("iop5").is_empty());
}

fn bridge_nat(env: &Env) -> String {
    env.host.exec(&["nft", "list", "table", "bridge", "nat"]).stdout
}

#[test]
fn macspoofchk_drops_spoofed_frames_and_is_removed_across_implementations() {
    let env = Env::with(Impl::Weft, Impl::Reference);
    let pod = Netns::unique(PREFIX);
    let conf = env.conf(
        "1.0.0",
        "iop6",
        json!({"isGateway": true, "macspoofchk": true, "ipam": env.ipam(&["10.66.35.0/24"])}),
    );
    let r = env.add("ctr", &pod, &conf);
    let rules = bridge_nat(&env);
    assert!(rules.contains("macspoofchk-ctr-eth0"), "{rules}");
    assert!(rules.contains(r["interfaces"][1]["name"].as_str().unwrap()), "{rules}");
    ping(&pod, "10.66.35.1").expect_ok();
    // A frame with another source MAC is dropped at the bridge port.
    pod.exec(&["ip", "neigh", "flush", "all"]).expect_ok();
    env.host.exec(&["ip", "neigh", "flush", "all"]).expect_ok();
    pod.exec(&["ip", "link", "set", "eth0", "address", "0a:58:de:ad:be:ef"]).expect_ok();
    assert!(!ping(&pod, "10.66.35.1").ok(), "spoofed MAC must be dropped");
    assert!(env.run("DEL", "ctr", &pod.path(), "eth0", &conf).ok());
    assert!(!bridge_nat(&env).contains("macspoofchk-ctr-eth0"), "{}", bridge_nat(&env));

    // The reference installs it, ours removes it after the netns is gone.
    let pod2 = Netns::unique(PREFIX);
    let reference = other_bridge(&env, Impl::Reference);
    let path = env.cni_path();
    let p2 = pod2.path();
    let vars = [
        ("CNI_PATH", path.as_str()),
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "ref"),
        ("CNI_NETNS", p2.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let a = env.host.exec_with(&[reference.to_str().unwrap()], &vars, conf.to_string().as_bytes());
    assert!(a.ok(), "{a}");
    assert!(bridge_nat(&env).contains("macspoofchk-ref-eth0"));
    drop(pod2);
    assert!(env.run("DEL", "ref", &p2, "eth0", &conf).ok());
    assert!(!bridge_nat(&env).contains("macspoofchk-ref-eth0"), "{}", bridge_nat(&env));
}
