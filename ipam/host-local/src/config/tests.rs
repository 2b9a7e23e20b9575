//! Unit tests for config parsing and validation: defaults, order of range sets, and every
//! rejection with its code, field path and reference message text.

use super::*;
use serde_json::json;

fn ok(v: Value) -> Spec {
    parse(&v, "1.0.0", "").unwrap()
}

/// Parses `ipam` (inside a minimal conf) and returns the error's (code, msg, details).
fn bad_ipam(ipam: Value) -> (u32, String, String) {
    bad(json!({"cniVersion": "1.0.0", "name": "n", "type": "host-local", "ipam": ipam}), "1.0.0", "")
}

fn bad(conf: Value, version: &str, cni_args: &str) -> (u32, String, String) {
    let e = parse(&conf, version, cni_args).unwrap_err();
    (e.code, e.msg, e.details)
}

fn conf(ipam: Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": "n", "type": "host-local", "ipam": ipam})
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn defaults_exclude_network_broadcast_and_claim_gateway() {
    let s = ok(conf(json!({"ranges": [[{"subnet": "10.1.2.0/24"}]]})));
    let r = &s.range_sets[0].ranges[0];
    assert_eq!((r.start, r.end, r.gateway), (ip("10.1.2.1"), ip("10.1.2.254"), ip("10.1.2.1")));
    assert_eq!(s.data_dir, PathBuf::from("/var/lib/cni/networks"));
    assert!(s.routes.is_empty() && s.requested.is_empty() && s.resolv_conf.is_none());

    let s = ok(conf(json!({"ranges": [[{"subnet": "fd00:5::/120"}]]})));
    let r = &s.range_sets[0].ranges[0];
    assert_eq!((r.start, r.end, r.gateway), (ip("fd00:5::1"), ip("fd00:5::ff"), ip("fd00:5::1")));
}

#[test]
fn explicit_values_are_kept() {
    let s = ok(conf(json!({
        "ranges": [[{"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.10", "rangeEnd": "10.1.2.255", "gateway": "10.1.2.254"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.0.0.0/8", "gw": "10.1.2.254"}],
        "dataDir": "/tmp/x", "resolvConf": "/etc/r.conf"
    })));
    let r = &s.range_sets[0].ranges[0];
    assert_eq!((r.start, r.end, r.gateway), (ip("10.1.2.10"), ip("10.1.2.255"), ip("10.1.2.254")));
    assert_eq!(s.routes.len(), 2);
    assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(s.resolv_conf, Some(PathBuf::from("/etc/r.conf")));
}

#[test]
fn keys_match_case_insensitively() {
    let s = ok(json!({"cniVersion": "1.0.0", "name": "n", "type": "host-local",
        "IPAM": {"Ranges": [[{"SUBNET": "10.1.2.0/24", "RangeStart": "10.1.2.9"}]], "DATADIR": "/d"}}));
    assert_eq!(s.range_sets[0].ranges[0].start, ip("10.1.2.9"));
    assert_eq!(s.data_dir, PathBuf::from("/d"));
}

#[test]
fn range_set_order_is_runtime_then_legacy_then_ranges() {
    let c = json!({"cniVersion": "0.4.0", "name": "n", "type": "host-local",
        "runtimeConfig": {"ipRanges": [[{"subnet": "10.3.0.0/24"}]]},
        "ipam": {"subnet": "10.1.0.0/24", "gateway": "10.1.0.254", "rangeStart": "10.1.0.5",
                 "ranges": [[{"subnet": "10.2.0.0/24"}, {"subnet": "10.2.1.0/24"}], [{"subnet": "fd00::/64"}]]}});
    let s = parse(&c, "0.4.0", "").unwrap();
    let firsts: Vec<String> = s.range_sets.iter().map(|r| r.ranges[0].subnet.to_string()).collect();
    assert_eq!(firsts, ["10.3.0.0/24", "10.1.0.0/24", "10.2.0.0/24", "fd00::/64"]);
    assert_eq!(s.range_sets[1].ranges[0].gateway, ip("10.1.0.254"));
    assert_eq!(s.range_sets[1].ranges[0].start, ip("10.1.0.5"));
    assert_eq!(s.range_sets[2].ranges.len(), 2);
}

#[test]
fn legacy_range_needs_subnet() {
    let (code, msg, details) = bad_ipam(json!({"rangeStart": "10.0.0.5"}));
    assert_eq!((code, msg.as_str(), details.as_str()), (7, "invalid ipam.ranges", "no IP ranges specified"));
}

#[test]
fn requested_ips_come_from_all_three_sources_in_order() {
    let c = json!({"cniVersion": "1.0.0", "name": "n", "type": "host-local",
        "args": {"cni": {"ips": ["10.1.0.7/24", "10.1.0.5"]}},
        "runtimeConfig": {"ips": ["fd00::9", "::ffff:10.1.0.8"]},
        "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}]]}});
    let s = parse(&c, "1.0.0", "IgnoreUnknown=1;IP=10.1.0.5;K8S_POD_NAME=x").unwrap();
    assert_eq!(s.requested, [ip("10.1.0.5"), ip("10.1.0.7"), ip("fd00::9"), ip("10.1.0.8")]);
}

#[test]
fn bad_requested_ips() {
    let base = conf(json!({"ranges": [[{"subnet": "10.1.0.0/24"}]]}));
    let (code, msg, _) = bad(base.clone(), "1.0.0", "IP=10.1.0.300");
    assert_eq!((code, msg.as_str()), (4, "invalid CNI_ARGS"));
    let (code, _, _) = bad(base.clone(), "1.0.0", "IP");
    assert_eq!(code, 4);
    let mut c = base.clone();
    c["args"] = json!({"cni": {"ips": ["10.1.0.2", "nope"]}});
    let (code, msg, details) = bad(c, "1.0.0", "");
    assert_eq!((code, msg.as_str()), (7, "invalid args.cni.ips[1]"));
    assert!(details.contains("cannot understand ip"), "{details}");
    let mut c = base;
    c["runtimeConfig"] = json!({"ips": ["10.1.0.2/33"]});
    assert_eq!(bad(c, "1.0.0", "").1, "invalid runtimeConfig.ips[0]");
}

#[test]
fn missing_ipam() {
    let (code, msg, _) = bad(json!({"cniVersion": "1.0.0", "name": "n", "type": "x"}), "1.0.0", "");
    assert_eq!((code, msg.as_str()), (7, "IPAM config missing 'ipam' key"));
    let (code, msg, _) = bad(json!({"name": "n", "type": "x", "ipam": null}), "1.0.0", "");
    assert_eq!((code, msg.as_str()), (7, "IPAM config missing 'ipam' key"));
}

/// Every range-level rejection: (ipam, msg, details).
#[test]
fn range_errors_name_the_field() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"ranges": []}), "invalid ipam.ranges", "no IP ranges specified"),
        (json!({"ranges": [[]]}), "invalid ipam.ranges[0]", "invalid range set 0: empty range set"),
        (json!({"ranges": [null]}), "invalid ipam.ranges[0]", "invalid range set 0: empty range set"),
        (json!({"ranges": [[{}]]}), "invalid ipam.ranges[0][0].subnet", "invalid range set 0: missing subnet"),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/33"}]]}),
            "invalid ipam.ranges[0][0].subnet",
            "invalid CIDR address: 10.0.0.0/33",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0"}]]}),
            "invalid ipam.ranges[0][0].subnet",
            "invalid CIDR address: 10.0.0.0",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/31"}]]}),
            "invalid ipam.ranges[0][0].subnet",
            "invalid range set 0: Network 10.0.0.0/31 too small to allocate from",
        ),
        (
            json!({"ranges": [[{"subnet": "fd00::/127"}]]}),
            "invalid ipam.ranges[0][0].subnet",
            "invalid range set 0: Network fd00::/127 too small to allocate from",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.1/24"}]]}),
            "invalid ipam.ranges[0][0].subnet",
            "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.0.0.0",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.1"}]]}),
            "invalid ipam.ranges[0][0].rangeStart",
            "invalid range set 0: RangeStart 10.0.1.1 not in network 10.0.0.0/24",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "nope"}]]}),
            "invalid ipam.ranges[0][0].rangeStart",
            "invalid IP address: nope",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.1"}]]}),
            "invalid ipam.ranges[0][0].rangeEnd",
            "invalid range set 0: RangeEnd 10.0.1.1 not in network 10.0.0.0/24",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.5"}]]}),
            "invalid ipam.ranges[0][0].rangeEnd",
            "invalid range set 0: RangeEnd 10.0.0.5 not in network 10.0.0.0/24",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.255"}]]}),
            "invalid ipam.ranges[0][0].rangeStart",
            "invalid range set 0: RangeStart 10.0.0.255 not in network 10.0.0.0/24",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}]]}),
            "invalid ipam.ranges[0][0].gateway",
            "invalid range set 0: Gateway 10.0.1.1 not in network 10.0.0.0/24",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "fd00::1"}]]}),
            "invalid ipam.ranges[0][0].gateway",
            "invalid range set 0: Gateway fd00::1 not in network 10.0.0.0/24",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}),
            "invalid ipam.ranges[0][1].subnet",
            "invalid range set 0: mixed address families",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/25"}]]}),
            "invalid ipam.ranges[0][1]",
            "invalid range set 0: subnets 10.0.0.1-10.0.0.254 and 10.0.0.1-10.0.0.126 overlap",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/16"}]]}),
            "invalid ipam.ranges[1]",
            "range set 0 overlaps with 1",
        ),
        (
            json!({"subnet": "10.0.0.0/33"}),
            "invalid ipam.subnet",
            "invalid CIDR address: 10.0.0.0/33",
        ),
        (
            json!({"ranges": [[{"subnet": 5}]]}),
            "invalid ipam.ranges[0][0].subnet",
            "invalid type: integer `5`, expected a string",
        ),
        (json!({"routes": [{"dst": "x"}], "subnet": "10.0.0.0/24"}), "invalid ipam.routes[0].dst", ""),
        (json!({"ranges": "10.0.0.0/24"}), "invalid ipam.ranges", ""),
    ];
    for (ipam, msg, details) in cases {
        let (code, m, d) = bad_ipam(ipam.clone());
        assert_eq!((code, m.as_str()), (7, msg), "{ipam}");
        if !details.is_empty() {
            assert_eq!(d, details, "{ipam}");
        }
    }
}

#[test]
fn runtime_ranges_are_named_by_their_own_path() {
    let c = json!({"cniVersion": "1.0.0", "name": "n", "type": "host-local",
        "runtimeConfig": {"ipRanges": [[{"subnet": "10.0.0.0/24"}]]},
        "ipam": {"ranges": [[{"subnet": "10.0.0.0/31"}]]}});
    let (_, msg, details) = bad(c, "1.0.0", "");
    assert_eq!(msg, "invalid ipam.ranges[0][0].subnet");
    // the set number counts runtimeConfig sets first, like last_reserved_ip.N does
    assert!(details.starts_with("invalid range set 1:"), "{details}");
    let c = json!({"name": "n", "runtimeConfig": {"ipRanges": [[{"subnet": "bad"}]]}, "ipam": {}});
    assert_eq!(bad(c, "1.0.0", "").1, "invalid runtimeConfig.ipRanges[0][0].subnet");
}

#[test]
fn one_set_per_family_before_0_3_0() {
    let two = conf(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/24"}]]}));
    let (code, msg, details) = bad(two.clone(), "0.2.0", "");
    assert_eq!((code, msg.as_str()), (7, "invalid cniVersion"));
    assert_eq!(details, "CNI version 0.2.0 does not support more than 1 address per family");
    assert!(parse(&two, "0.3.0", "").is_ok());
    let dual = conf(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]]}));
    assert!(parse(&dual, "0.1.0", "").is_ok());
}

#[test]
fn cidr_parsing_is_strict() {
    assert!(parse_cidr("10.0.0.0/24").is_some());
    assert!(parse_cidr("fd00::/64").is_some());
    for bad in ["10.0.0.0", "10.0.0.0/", "10.0.0.0/+4", "10.0.0.0/x", "010.0.0.0/8", "1.2.3.4/0024", "a/8"] {
        assert!(parse_cidr(bad).is_none(), "{bad}");
    }
    assert_eq!(parse_requested("10.1.0.7/24"), Some(ip("10.1.0.7")));
    assert_eq!(parse_requested("::ffff:10.1.0.7"), Some(ip("10.1.0.7")));
    assert_eq!(parse_requested("10.1.0.7/40"), None);
}

proptest::proptest! {
    #[test]
    fn arbitrary_ipam_never_panics(subnet in ".{0,24}", start in ".{0,16}", n in 0u8..200) {
        let c = conf(json!({"ranges": [[{"subnet": subnet, "rangeStart": start}], [{"subnet": format!("10.{n}.0.0/{n}")}]]}));
        let _ = parse(&c, "1.0.0", "");
    }
}
