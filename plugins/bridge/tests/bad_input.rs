//! Bad input: each case gives the right CNI error code and leaves nothing behind (no veth,
//! no container interface, no bridge address, no IP reservation).

mod support;

use serde_json::{json, Value};
use support::*;
use weft_lab::ns::Netns;

struct Case {
    name: &'static str,
    vars: Vec<(&'static str, String)>,
    stdin: Vec<u8>,
    code: u64,
    msg_contains: &'static str,
}

fn assert_nothing_left(env: &Env, pod: &Netns, case: &str) {
    assert!(env.host_veths().is_empty(), "{case}: veth left");
    assert!(!pod.has_link("eth0"), "{case}: container interface left");
    assert!(env.ip_files("bad").is_empty(), "{case}: IP reserved");
    if env.host.has_link("br0") {
        assert!(addresses(&env.host, "br0").is_empty(), "{case}: bridge address left");
    }
}

#[test]
fn bad_inputs_give_the_right_code_and_leave_nothing() {
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    let good = env.conf("1.0.0", "bad", json!({"isGateway": true, "ipam": env.ipam(&["10.66.20.0/24"])}));
    let with = |extra: Value| {
        let mut c = good.clone();
        if let (Some(o), Value::Object(m)) = (c.as_object_mut(), extra) {
            o.extend(m);
        }
        c.to_string().into_bytes()
    };
    let base = |ifname: &str, netns: &str| -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", "ADD".into()),
            ("CNI_CONTAINERID", "ctr".into()),
            ("CNI_NETNS", netns.into()),
            ("CNI_IFNAME", ifname.into()),
        ]
    };
    let p = pod.path();
    let mut no_ipam_path = base("eth0", &p);
    no_ipam_path.push(("CNI_PATH", env.dir.path().join("empty").display().to_string()));
    std::fs::create_dir(env.dir.path().join("empty")).unwrap();
    // The bridge binary itself is found by path; only the IPAM lookup uses CNI_PATH.
    let cases = vec![
        Case {
            name: "not json",
            vars: base("eth0", &p),
            stdin: b"{nope".to_vec(),
            code: 6,
            msg_contains: "",
        },
        Case {
            name: "bad vlan",
            vars: base("eth0", &p),
            stdin: with(json!({"vlan": 5000})),
            code: 7,
            msg_contains: "vlan",
        },
        Case {
            name: "bad trunk",
            vars: base("eth0", &p),
            stdin: with(json!({"vlanTrunk": [{"minID": 3}]})),
            code: 7,
            msg_contains: "vlanTrunk[0].maxID",
        },
        Case {
            name: "hairpin and promisc",
            vars: base("eth0", &p),
            stdin: with(json!({"hairpinMode": true, "promiscMode": true})),
            code: 7,
            msg_contains: "promiscMode",
        },
        Case {
            name: "mtu as string",
            vars: base("eth0", &p),
            stdin: with(json!({"mtu": "1450"})),
            code: 7,
            msg_contains: "mtu",
        },
        Case {
            name: "ifname too long",
            vars: base("eth0123456789abc", &p),
            stdin: with(json!({})),
            code: 4,
            msg_contains: "CNI_IFNAME",
        },
        Case {
            name: "ifname with slash",
            vars: base("et/h0", &p),
            stdin: with(json!({})),
            code: 4,
            msg_contains: "CNI_IFNAME",
        },
        Case {
            name: "missing netns",
            vars: base("eth0", "/run/netns/wtbr-does-not-exist"),
            stdin: with(json!({})),
            code: 4,
            msg_contains: "CNI_NETNS",
        },
        Case {
            name: "bad CNI_ARGS MAC",
            vars: [base("eth0", &p), vec![("CNI_ARGS", "MAC=zz".into())]].concat(),
            stdin: with(json!({})),
            code: 4,
            msg_contains: "CNI_ARGS",
        },
        Case {
            name: "bad runtimeConfig mac",
            vars: base("eth0", &p),
            stdin: with(json!({"runtimeConfig": {"mac": "ff:ff:ff:ff:ff:ff"}})),
            code: 7,
            msg_contains: "runtimeConfig.mac",
        },
        Case {
            name: "ipam with disableContainerInterface",
            vars: base("eth0", &p),
            stdin: with(json!({"disableContainerInterface": true})),
            code: 7,
            msg_contains: "disableContainerInterface",
        },
        Case {
            name: "ipam missing from CNI_PATH",
            vars: no_ipam_path,
            stdin: with(json!({})),
            code: 7,
            msg_contains: "host-local",
        },
        Case {
            name: "ipam type unknown",
            vars: base("eth0", &p),
            stdin: with(json!({"ipam": {"type": "no-such-ipam"}})),
            code: 7,
            msg_contains: "no-such-ipam",
        },
        Case {
            name: "bad ipMasqBackend",
            vars: base("eth0", &p),
            stdin: with(json!({"ipMasq": true, "ipMasqBackend": "pf"})),
            code: 7,
            msg_contains: "ipMasqBackend",
        },
    ];
    for case in cases {
        let vars: Vec<(&str, &str)> = case.vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = env.run_raw(&vars, &case.stdin);
        let e = error_of(&r);
        assert_eq!(e["code"].as_u64(), Some(case.code), "{}: {r}", case.name);
        let text = format!("{} {}", e["msg"], e["details"]);
        assert!(text.contains(case.msg_contains), "{}: {text}", case.name);
        assert_nothing_left(&env, &pod, case.name);
    }
}

#[test]
fn existing_interface_fails_and_is_left_untouched() {
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    pod.exec(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]).expect_ok();
    let conf = env.conf("1.0.0", "bad", json!({"ipam": env.ipam(&["10.66.21.0/24"])}));
    let r = env.run("ADD", "ctr", &pod.path(), "eth0", &conf);
    let e = error_of(&r);
    assert_eq!(e["code"], 999, "{r}");
    assert!(e["msg"].as_str().unwrap().contains("already exists"), "{r}");
    assert!(pod.has_link("eth0"), "the existing interface must survive");
    assert!(env.host_veths().is_empty());
    assert!(env.ip_files("bad").is_empty());
}

#[test]
fn second_add_of_the_same_attachment_fails_and_rolls_back_its_ip() {
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    let conf = env.conf("1.0.0", "bad", json!({"ipam": env.ipam(&["10.66.22.0/24"])}));
    env.add("ctr", &pod, &conf);
    let before = env.ip_files("bad");
    let r = env.run("ADD", "ctr2", &pod.path(), "eth0", &conf);
    assert_eq!(error_of(&r)["code"], 999);
    assert_eq!(env.ip_files("bad"), before, "the failed ADD must not keep an IP");
    assert_eq!(env.host_veths().len(), 1);
}

#[test]
fn failure_after_ipam_undoes_veth_and_ip() {
    // A conflicting address on an existing bridge (no forceAddress) fails after IPAM ADD:
    // the veth and the reservation must both be rolled back.
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    env.host.exec(&["ip", "link", "add", "br0", "type", "bridge"]).expect_ok();
    env.host.exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", "br0"]).expect_ok();
    let conf = env.conf("1.0.0", "bad", json!({"isGateway": true, "ipam": env.ipam(&["10.66.23.0/24"])}));
    let r = env.run("ADD", "ctr", &pod.path(), "eth0", &conf);
    let e = error_of(&r);
    assert!(e["msg"].as_str().unwrap().contains("already has an IP address"), "{r}");
    assert!(env.host_veths().is_empty(), "veth left");
    assert!(!pod.has_link("eth0"));
    assert!(env.ip_files("bad").is_empty(), "IP left");
    assert_eq!(addresses(&env.host, "br0"), vec!["192.0.2.1/24"]);

    // With forceAddress the old address is replaced.
    let conf = env.conf(
        "1.0.0",
        "bad",
        json!({"isGateway": true, "forceAddress": true, "ipam": env.ipam(&["10.66.23.0/24"])}),
    );
    env.add("ctr", &pod, &conf);
    assert_eq!(addresses(&env.host, "br0"), vec!["10.66.23.1/24"]);
}

#[test]
fn failure_after_ipam_with_masquerade_leaves_no_rules() {
    // A gateway conflict fails ADD after IPAM with ipMasq on: with either backend, nothing
    // may be left, masquerade rules included.
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    env.host.exec(&["ip", "link", "add", "br0", "type", "bridge"]).expect_ok();
    env.host.exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", "br0"]).expect_ok();
    for backend in ["iptables", "nftables"] {
        let conf = env.conf(
            "1.0.0",
            "bad",
            json!({"isGateway": true, "ipMasq": true, "ipMasqBackend": backend,
                   "ipam": env.ipam(&["10.66.25.0/24"])}),
        );
        let r = env.run("ADD", "ctr", &pod.path(), "eth0", &conf);
        let e = error_of(&r);
        assert!(e["msg"].as_str().unwrap().contains("already has an IP address"), "{backend}: {r}");
        assert!(env.host_veths().is_empty(), "{backend}: veth left");
        assert!(env.ip_files("bad").is_empty(), "{backend}: IP left");
        let nat = env.host.exec(&["iptables-save", "-t", "nat"]).stdout;
        assert!(!nat.contains("CNI-"), "{backend}: iptables rules left:\n{nat}");
        let nft = env.host.exec(&["nft", "list", "ruleset"]).stdout;
        assert!(!nft.contains("10.66.25."), "{backend}: nftables rules left:\n{nft}");
    }
}

#[test]
fn l2_failure_is_reported_before_an_ipam_failure() {
    // IPAM ADD runs while the bridge is set up; when both fail, the error is the bridge's,
    // as if they had run one after the other.
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    env.host.exec(&["ip", "link", "add", "br0", "type", "veth", "peer", "name", "br0p"]).expect_ok();
    let blocker = env.data_dir().with_file_name("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let ipam = json!({"type": "host-local", "ranges": [[{"subnet": "10.66.26.0/24"}]],
                      "dataDir": blocker.join("ipam").display().to_string()});
    let conf = env.conf("1.0.0", "bad", json!({"ipam": ipam}));
    let r = env.run("ADD", "ctr", &pod.path(), "eth0", &conf);
    assert!(error_of(&r)["msg"].as_str().unwrap().contains("not a bridge"), "{r}");
    assert_eq!(env.host_veths(), vec!["br0p", "br0"], "only the pre-existing pair");
    assert!(!pod.has_link("eth0"));
}

#[test]
fn del_attempts_every_step_when_ipam_del_fails() {
    // DEL's steps run concurrently: an IPAM failure is reported, and the interface and the
    // masquerade rules are removed all the same.
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    let masq = json!({"isGateway": true, "ipMasq": true, "ipMasqBackend": "iptables"});
    let mut conf = env.conf("1.0.0", "bad", masq);
    conf["ipam"] = env.ipam(&["10.66.27.0/24"]);
    env.add("ctr", &pod, &conf);
    assert!(env.host.exec(&["iptables-save", "-t", "nat"]).stdout.contains("CNI-"));
    let blocker = env.data_dir().with_file_name("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    conf["ipam"]["dataDir"] = json!(blocker.join("ipam").display().to_string());
    let r = env.run("DEL", "ctr", &pod.path(), "eth0", &conf);
    let e = error_of(&r);
    assert!(e["msg"].as_str().unwrap().contains("not-a-dir"), "the IPAM error is reported: {r}");
    assert!(!pod.has_link("eth0"), "interface left");
    assert!(env.host_veths().is_empty(), "veth left");
    let nat = env.host.exec(&["iptables-save", "-t", "nat"]).stdout;
    assert!(!nat.contains("CNI-"), "iptables rules left:\n{nat}");
}

#[test]
fn existing_non_bridge_with_the_bridge_name_is_refused() {
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    env.host.exec(&["ip", "link", "add", "br0", "type", "veth", "peer", "name", "br0p"]).expect_ok();
    let conf = env.conf("1.0.0", "bad", json!({"ipam": env.ipam(&["10.66.24.0/24"])}));
    let r = env.run("ADD", "ctr", &pod.path(), "eth0", &conf);
    assert!(error_of(&r)["msg"].as_str().unwrap().contains("not a bridge"), "{r}");
    assert_eq!(env.host_veths(), vec!["br0p", "br0"], "only the pre-existing pair");
    assert!(env.ip_files("bad").is_empty());
}

#[test]
fn l2_mode_at_0_2_0_is_refused_before_creating_anything() {
    let env = Env::new();
    let pod = Netns::unique(PREFIX);
    let conf = env.conf("0.2.0", "bad", json!({}));
    let r = env.run("ADD", "ctr", &pod.path(), "eth0", &conf);
    assert_eq!(error_of(&r)["code"], 1, "{r}");
    assert!(env.host_veths().is_empty());
    assert!(!pod.has_link("eth0"));
    assert!(!env.host.has_link("br0"));
}
