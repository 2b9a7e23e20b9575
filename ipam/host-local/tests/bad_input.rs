//! Bad input through the built binary: each gives the right code and field, and leaves no file.

mod common;

use common::*;
use serde_json::json;

/// Runs an ADD with `stdin` and asserts (code, msg) and that the data dir stayed empty.
fn assert_rejected(lab: &Lab, stdin: &str, code: u64, msg: &str) {
    let out = Call::new(OURS, "ADD", "ctr1", &lab.netns(), stdin).run();
    assert_eq!(out.code(), code, "{stdin}\n{out:?}");
    assert_eq!(out.msg(), msg, "{stdin}\n{out:?}");
    assert!(out.json()["cniVersion"].is_string(), "{out:?}");
    assert_eq!(entries(lab.data.path()), Vec::<String>::new(), "left files behind for {stdin}");
}

#[test]
fn bad_configs_give_code_and_field_and_leave_nothing() {
    let lab = Lab::new();
    let d = lab.data.path();
    let subnet = |r: serde_json::Value| conf("1.0.0", "net1", d, json!({"ranges": [[r]]}));
    let cases: Vec<(String, u64, &str)> = vec![
        ("not json".into(), 6, "error unmarshall network config"),
        (String::new(), 6, "error unmarshall network config"),
        (
            json!({"cniVersion": "1.0.0", "type": "host-local", "ipam": {}}).to_string(),
            7,
            "missing network name",
        ),
        (
            json!({"cniVersion": "1.0.0", "name": "net1", "type": "host-local"}).to_string(),
            7,
            "IPAM config missing 'ipam' key",
        ),
        (conf("1.0.0", "net1", d, json!({})), 7, "invalid ipam.ranges"),
        (subnet(json!({"subnet": "10.0.0.0/33"})), 7, "invalid ipam.ranges[0][0].subnet"),
        (subnet(json!({"subnet": "10.0.0.1/24"})), 7, "invalid ipam.ranges[0][0].subnet"),
        (
            subnet(json!({"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"})),
            7,
            "invalid ipam.ranges[0][0].rangeStart",
        ),
        (
            subnet(json!({"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.5"})),
            7,
            "invalid ipam.ranges[0][0].rangeEnd",
        ),
        (
            subnet(json!({"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"})),
            7,
            "invalid ipam.ranges[0][0].gateway",
        ),
        (
            conf("1.0.0", "net1", d, json!({"subnet": "10.0.0.0/24", "routes": [{"dst": "nope"}]})),
            7,
            "invalid ipam.routes[0].dst",
        ),
        (
            conf("1.0.0", "../x", d, json!({"subnet": "10.0.0.0/24"})),
            7,
            "invalid characters found in network name",
        ),
        (
            conf("1.0.0", "a/b", d, json!({"subnet": "10.0.0.0/24"})),
            7,
            "invalid characters found in network name",
        ),
        (conf("9.9.9", "net1", d, json!({"subnet": "10.0.0.0/24"})), 1, "incompatible CNI versions"),
    ];
    for (stdin, code, msg) in cases {
        assert_rejected(&lab, &stdin, code, msg);
    }
    // The config is checked for DEL too (the reference fails DEL on an invalid config).
    let out = Call::new(OURS, "DEL", "ctr1", "", &subnet(json!({"subnet": "10.0.0.0/33"}))).run();
    assert_eq!(out.code(), 7);
    assert_eq!(entries(d), Vec::<String>::new());
}

#[test]
fn bad_environment_gives_code_4_and_leaves_nothing() {
    let lab = Lab::new();
    let stdin = conf("1.0.0", "net1", lab.data.path(), json!({"subnet": "10.0.0.0/24"}));
    let out = Call::new(OURS, "ADD", "ctr1", &lab.netns(), &stdin).cni_args("IP=10.0.0.300").run();
    assert_eq!((out.code(), out.msg().as_str()), (4, "invalid CNI_ARGS"));
    let out = Call::new(OURS, "ADD", "../../etc", &lab.netns(), &stdin).run();
    assert_eq!(out.code(), 4);
    let out = Call::new(OURS, "ADD", "ctr1", "/nonexistent/netns", &stdin).run();
    assert_eq!(out.code(), 4);
    let out = Call::new(OURS, "ADD", "ctr1", "/proc/self/ns/net", &stdin).run();
    assert_eq!(out.code(), 8);
    assert_eq!(entries(lab.data.path()), Vec::<String>::new());
}

#[test]
fn exhausted_range_is_code_999_with_the_reference_text() {
    let lab = Lab::new();
    let stdin = conf("0.4.0", "net1", lab.data.path(), json!({"ranges": [[{"subnet": "10.9.0.0/30"}]]}));
    let first = Call::new(OURS, "ADD", "ctr1", &lab.netns(), &stdin).run().ok();
    assert_eq!(first.ips(), ["10.9.0.2/30"]);
    let before = entries(&lab.dir("net1"));
    let out = Call::new(OURS, "ADD", "ctr2", &lab.netns(), &stdin).run();
    assert_eq!(out.code(), 999);
    assert_eq!(
        out.msg(),
        "failed to allocate for range 0: no IP addresses available in range set: 10.9.0.1-10.9.0.2"
    );
    assert_eq!(entries(&lab.dir("net1")), before);
    // STATUS reports the exhaustion with code 50, and success once an address is free
    let v11 = conf("1.1.0", "net1", lab.data.path(), json!({"ranges": [[{"subnet": "10.9.0.0/30"}]]}));
    let out = Call::new(OURS, "STATUS", "", "", &v11).ifname("").run();
    assert_eq!(out.code(), 50, "{out:?}");
    Call::new(OURS, "DEL", "ctr1", "", &stdin).run().ok();
    Call::new(OURS, "STATUS", "", "", &v11).ifname("").run().ok();
}

#[test]
fn network_name_with_dotdot_creates_nothing_outside() {
    let lab = Lab::new();
    let inner = lab.data.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    for name in ["../escape", "..", "."] {
        let stdin = conf("1.0.0", name, &inner, json!({"subnet": "10.0.0.0/24"}));
        let out = Call::new(OURS, "ADD", "ctr1", &lab.netns(), &stdin).run();
        assert_eq!(out.code(), 7, "{name}: {out:?}");
        let out = Call::new(OURS, "DEL", "ctr1", "", &stdin).run();
        assert_eq!(out.code(), 7, "{name}: {out:?}");
    }
    assert_eq!(entries(lab.data.path()), ["inner"]);
    assert_eq!(entries(&inner), Vec::<String>::new());
}
