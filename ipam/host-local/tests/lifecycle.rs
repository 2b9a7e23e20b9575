//! ADD, CHECK, DEL, GC and STATUS through the built binary, with the on-disk bytes checked.

mod common;

use common::*;
use serde_json::json;

#[test]
fn dual_stack_add_writes_reference_layout_and_del_removes_it() {
    let lab = Lab::new();
    let resolv = lab.data.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.0.0.10\ndomain ex.com\nsearch a.svc b.svc\noptions ndots:5\n")
        .unwrap();
    let ipam = json!({"ranges": [[{"subnet": "10.9.0.0/29"}], [{"subnet": "fd00:9::/126"}]],
                      "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}], "resolvConf": resolv});
    let stdin = conf("0.4.0", "hl", lab.data.path(), ipam);
    let out = Call::new(OURS, "ADD", "ctr1", &lab.netns(), &stdin).run().ok();
    let expected = json!({
        "cniVersion": "0.4.0",
        "ips": [
            {"version": "4", "address": "10.9.0.2/29", "gateway": "10.9.0.1"},
            {"version": "6", "address": "fd00:9::2/126", "gateway": "fd00:9::1"}
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        "dns": {"nameservers": ["10.0.0.10"], "domain": "ex.com", "search": ["a.svc", "b.svc"], "options": ["ndots:5"]}
    });
    assert_eq!(out.json(), expected);
    let dir = lab.dir("hl");
    assert_eq!(entries(&dir), ["10.9.0.2", "fd00:9::2", "last_reserved_ip.0", "last_reserved_ip.1", "lock"]);
    assert_eq!(std::fs::read(dir.join("10.9.0.2")).unwrap(), b"ctr1\r\neth0");
    assert_eq!(std::fs::read(dir.join("fd00:9::2")).unwrap(), b"ctr1\r\neth0");
    assert_eq!(std::fs::read(dir.join("last_reserved_ip.0")).unwrap(), b"10.9.0.2");
    assert_eq!(std::fs::read(dir.join("last_reserved_ip.1")).unwrap(), b"fd00:9::2");

    // CHECK succeeds for the owner only; a second ADD of the same attachment is refused
    Call::new(OURS, "CHECK", "ctr1", &lab.netns(), &stdin).run().ok();
    let out = Call::new(OURS, "CHECK", "ctr2", &lab.netns(), &stdin).run();
    assert_eq!(
        (out.code(), out.msg().as_str()),
        (999, "host-local: Failed to find address added by container ctr2")
    );
    let out = Call::new(OURS, "ADD", "ctr1", &lab.netns(), &stdin).run();
    assert_eq!(out.code(), 999);
    assert!(out.msg().contains("duplicate allocation is not allowed"), "{out:?}");
    assert_eq!(ip_files(&dir), ["10.9.0.2", "fd00:9::2"]);

    // DEL twice, and DEL of something never added: all success
    for id in ["ctr1", "ctr1", "never"] {
        Call::new(OURS, "DEL", id, "", &stdin).run().ok();
    }
    assert_eq!(entries(&dir), ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]);
}

#[test]
fn legacy_layout_v020_result_and_requested_ip() {
    let lab = Lab::new();
    let stdin = json!({"cniVersion": "0.2.0", "name": "leg", "type": "host-local",
        "args": {"cni": {"ips": ["fd00:1::99"]}},
        "ipam": {"type": "host-local", "dataDir": lab.data.path(), "subnet": "10.7.0.0/24", "gateway": "10.7.0.254",
                 "ranges": [[{"subnet": "fd00:1::/64"}]], "routes": [{"dst": "0.0.0.0/0"}]}})
    .to_string();
    let out = Call::new(OURS, "ADD", "c1", &lab.netns(), &stdin)
        .cni_args("IgnoreUnknown=1;IP=10.7.0.77/24")
        .run()
        .ok();
    assert_eq!(
        out.json(),
        json!({"cniVersion": "0.2.0",
               "ip4": {"ip": "10.7.0.77/24", "gateway": "10.7.0.254", "routes": [{"dst": "0.0.0.0/0"}]},
               "ip6": {"ip": "fd00:1::99/64", "gateway": "fd00:1::1"},
               "dns": {}})
    );
    // a legacy (ID-only) file is found by CHECK and removed by DEL
    let dir = lab.dir("leg");
    std::fs::write(dir.join("10.7.0.5"), "old-ctr").unwrap();
    Call::new(OURS, "DEL", "old-ctr", "", &stdin).run().ok();
    assert_eq!(ip_files(&dir), ["10.7.0.77", "fd00:1::99"]);
}

#[test]
fn runtime_ip_ranges_are_prepended_and_numbered_first() {
    let lab = Lab::new();
    let stdin = json!({"cniVersion": "1.0.0", "name": "rt", "type": "host-local",
        "runtimeConfig": {"ipRanges": [[{"subnet": "10.50.0.0/24"}]]},
        "ipam": {"type": "host-local", "dataDir": lab.data.path(), "ranges": [[{"subnet": "10.60.0.0/24"}]]}})
    .to_string();
    let out = Call::new(OURS, "ADD", "c1", &lab.netns(), &stdin).run().ok();
    assert_eq!(out.ips(), ["10.50.0.2/24", "10.60.0.2/24"]);
    let dir = lab.dir("rt");
    assert_eq!(std::fs::read(dir.join("last_reserved_ip.0")).unwrap(), b"10.50.0.2");
    assert_eq!(std::fs::read(dir.join("last_reserved_ip.1")).unwrap(), b"10.60.0.2");
}

#[test]
fn gc_releases_everything_not_listed_and_keeps_bookkeeping() {
    let lab = Lab::new();
    let ipam = json!({"ranges": [[{"subnet": "10.9.0.0/24"}]]});
    let stdin = conf("1.1.0", "gcnet", lab.data.path(), ipam.clone());
    for (id, ifname) in [("keep", "eth0"), ("keep", "net1"), ("drop", "eth0")] {
        Call::new(OURS, "ADD", id, &lab.netns(), &stdin).ifname(ifname).run().ok();
    }
    let dir = lab.dir("gcnet");
    std::fs::write(dir.join("10.9.0.200"), "legacy-keep").unwrap();
    std::fs::write(dir.join("10.9.0.201"), "legacy-drop").unwrap();

    // no attachment key at all: nothing happens
    Call::new(OURS, "GC", "", "", &stdin).ifname("").run().ok();
    assert_eq!(ip_files(&dir).len(), 5);

    let mut gc: serde_json::Value = serde_json::from_str(&stdin).unwrap();
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": "keep", "ifname": "eth0"}, {"containerID": "legacy-keep", "ifname": "eth0"}]);
    gc["cni.dev/attachments"] = json!([]);
    Call::new(OURS, "GC", "", "", &gc.to_string()).ifname("").run().ok();
    assert_eq!(ip_files(&dir), ["10.9.0.2", "10.9.0.200"]);
    assert_eq!(std::fs::read(dir.join("10.9.0.2")).unwrap(), b"keep\r\neth0");
    assert!(dir.join("last_reserved_ip.0").exists() && dir.join("lock").exists());

    // only the legacy key: an empty list releases everything
    let mut gc: serde_json::Value = serde_json::from_str(&stdin).unwrap();
    gc["cni.dev/attachments"] = json!([]);
    Call::new(OURS, "GC", "", "", &gc.to_string()).ifname("").run().ok();
    assert_eq!(entries(&dir), ["last_reserved_ip.0", "lock"]);

    // GC needs cniVersion 1.1.0
    let old = conf("1.0.0", "gcnet", lab.data.path(), ipam);
    assert_eq!(Call::new(OURS, "GC", "", "", &old).ifname("").run().code(), 1);
}
