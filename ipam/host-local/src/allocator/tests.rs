//! Unit tests for the allocator over the memory store: round robin, wrap, gateway skip,
//! exhaustion, requested IPs, multi-range sets, IPv6, release, check, GC and status.

use super::*;
use crate::config;
use crate::store::memory::MemoryStore;
use serde_json::json;

fn sets(ranges: serde_json::Value) -> Vec<RangeSet> {
    let c = json!({"cniVersion": "1.0.0", "name": "n", "type": "host-local", "ipam": {"ranges": ranges}});
    config::parse(&c, "1.0.0", "").unwrap().range_sets
}

fn who(id: &str) -> Attachment<'_> {
    Attachment { id, ifname: "eth0" }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn add(store: &mut MemoryStore, s: &[RangeSet], id: &str) -> Result<Vec<String>, AllocError> {
    allocate(store, s, &[], who(id)).map(|v| v.iter().map(|a| a.address.to_string()).collect())
}

#[test]
fn round_robin_skips_gateway_and_wraps() {
    let s = sets(json!([[{"subnet": "10.0.0.0/29"}]]));
    let mut st = MemoryStore::new();
    let got: Vec<String> = (0..5).map(|i| add(&mut st, &s, &format!("c{i}")).unwrap()[0].clone()).collect();
    assert_eq!(got, ["10.0.0.2/29", "10.0.0.3/29", "10.0.0.4/29", "10.0.0.5/29", "10.0.0.6/29"]);
    let e = add(&mut st, &s, "c5").unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to allocate for range 0: no IP addresses available in range set: 10.0.0.1-10.0.0.6"
    );
    // releasing .3 makes it the only free address: found after wrapping past .6
    release(&mut st, who("c1")).unwrap();
    assert_eq!(add(&mut st, &s, "c6").unwrap(), ["10.0.0.3/29"]);
}

#[test]
fn released_address_is_not_reused_before_a_full_cycle() {
    let s = sets(json!([[{"subnet": "10.0.0.0/24"}]]));
    let mut st = MemoryStore::new();
    assert_eq!(add(&mut st, &s, "a").unwrap(), ["10.0.0.2/24"]);
    release(&mut st, who("a")).unwrap();
    assert_eq!(add(&mut st, &s, "b").unwrap(), ["10.0.0.3/24"]);
}

#[test]
fn starts_after_last_reserved_and_ignores_a_foreign_one() {
    let s = sets(json!([[{"subnet": "10.0.0.0/24"}]]));
    let mut st = MemoryStore::new();
    st.last.insert(0, ip("10.0.0.200"));
    assert_eq!(add(&mut st, &s, "a").unwrap(), ["10.0.0.201/24"]);
    st.last.insert(0, ip("192.168.0.9"));
    assert_eq!(add(&mut st, &s, "b").unwrap(), ["10.0.0.2/24"]);
    st.last.insert(0, ip("10.0.0.254"));
    assert_eq!(add(&mut st, &s, "c").unwrap(), ["10.0.0.3/24"]);
}

#[test]
fn explicit_range_end_at_broadcast_and_outside_gateway_semantics() {
    let s = sets(json!([[{"subnet": "10.0.0.0/30", "rangeStart": "10.0.0.2", "rangeEnd": "10.0.0.3"}]]));
    let mut st = MemoryStore::new();
    assert_eq!(add(&mut st, &s, "a").unwrap(), ["10.0.0.2/30"]);
    assert_eq!(add(&mut st, &s, "b").unwrap(), ["10.0.0.3/30"]);
    assert!(matches!(add(&mut st, &s, "c"), Err(AllocError::Exhausted { set: 0, .. })));
}

#[test]
fn gateway_is_reported_and_never_handed_out() {
    let s = sets(json!([[{"subnet": "10.0.0.0/29", "gateway": "10.0.0.3"}]]));
    let mut st = MemoryStore::new();
    let got = allocate(&mut st, &s, &[], who("a")).unwrap();
    assert_eq!((got[0].address.to_string(), got[0].gateway), ("10.0.0.1/29".to_string(), ip("10.0.0.3")));
    assert_eq!(add(&mut st, &s, "b").unwrap(), ["10.0.0.2/29"]);
    assert_eq!(add(&mut st, &s, "c").unwrap(), ["10.0.0.4/29"]);
}

#[test]
fn multi_range_set_moves_to_next_range_and_wraps() {
    let s = sets(json!([[{"subnet": "10.0.0.0/30"}, {"subnet": "10.0.1.0/30"}]]));
    let mut st = MemoryStore::new();
    assert_eq!(add(&mut st, &s, "a").unwrap(), ["10.0.0.2/30"]);
    assert_eq!(add(&mut st, &s, "b").unwrap(), ["10.0.1.2/30"]);
    assert!(add(&mut st, &s, "c").is_err());
    release(&mut st, who("a")).unwrap();
    assert_eq!(add(&mut st, &s, "c").unwrap(), ["10.0.0.2/30"]);
}

#[test]
fn dual_stack_gets_one_address_per_set_and_records_each_set() {
    let s = sets(json!([[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00:9::/64"}]]));
    let mut st = MemoryStore::new();
    let got = allocate(&mut st, &s, &[], who("a")).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].set, got[0].address.to_string()), (0, "10.0.0.2/24".to_string()));
    assert_eq!(
        (got[1].set, got[1].address.to_string(), got[1].gateway),
        (1, "fd00:9::2/64".to_string(), ip("fd00:9::1"))
    );
    assert_eq!(st.last.get(&1), Some(&ip("fd00:9::2")));
    assert_eq!(st.entries.get("fd00:9::2").map(String::as_str), Some("a\r\neth0"));
}

#[test]
fn duplicate_add_is_refused_and_keeps_the_live_reservation() {
    let s = sets(json!([[{"subnet": "10.0.0.0/24"}]]));
    let mut st = MemoryStore::new();
    add(&mut st, &s, "a").unwrap();
    let e = add(&mut st, &s, "a").unwrap_err();
    assert_eq!(e.to_string(), "failed to allocate for range 0: 10.0.0.2 has been allocated to a, duplicate allocation is not allowed");
    assert!(st.entries.contains_key("10.0.0.2"));
    // a legacy record (ID only) counts as the same container's
    st.insert_raw("10.0.0.50", "old\n");
    assert!(matches!(add(&mut st, &s, "old"), Err(AllocError::Duplicate { .. })));
    // another ifname of the same container is a different attachment
    let got = allocate(&mut st, &s, &[], Attachment { id: "a", ifname: "net1" }).unwrap();
    assert_eq!(got[0].address.to_string(), "10.0.0.3/24");
}

#[test]
fn failure_in_a_later_set_releases_only_this_calls_reservations() {
    let s = sets(json!([[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/30"}]]));
    let mut st = MemoryStore::new();
    // an earlier reservation of the same attachment in set 0's subnet but outside any set
    st.insert_raw("10.2.0.9", "a\r\neth0");
    st.insert_raw("10.1.0.2", "x\r\neth0");
    let e = add(&mut st, &s, "a").unwrap_err();
    assert!(e.to_string().starts_with("failed to allocate for range 1: no IP addresses available"), "{e}");
    assert!(!st.entries.contains_key("10.0.0.2"), "this call's reservation must be rolled back");
    assert!(st.entries.contains_key("10.2.0.9"), "an earlier reservation must be kept");
}

#[test]
fn requested_ips() {
    let s = sets(json!([[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]]));
    let mut st = MemoryStore::new();
    let got = allocate(&mut st, &s, &[ip("fd00::77"), ip("10.0.0.99")], who("a")).unwrap();
    let v: Vec<String> = got.iter().map(|a| a.address.to_string()).collect();
    assert_eq!(v, ["10.0.0.99/24", "fd00::77/64"]);
    assert_eq!(st.last.get(&0), Some(&ip("10.0.0.99")));
    // taken
    let e = allocate(&mut st, &s, &[ip("10.0.0.99")], who("b")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to allocate for range 0: requested IP address 10.0.0.99 is not available in range set 10.0.0.1-10.0.0.254"
    );
    // the gateway
    let e = allocate(&mut st, &s, &[ip("10.0.0.1")], who("b")).unwrap_err();
    assert_eq!(e.to_string(), "failed to allocate for range 0: requested ip 10.0.0.1 is subnet's gateway");
    // outside every set: the sets succeed, then everything this call took is released
    let before = st.entries.clone();
    let e = allocate(&mut st, &s, &[ip("10.8.0.1"), ip("10.8.0.2")], who("c")).unwrap_err();
    assert_eq!(e.to_string(), "failed to allocate all requested IPs: 10.8.0.1 10.8.0.2");
    assert_eq!(st.entries, before);
    // a requested address skips the duplicate check (as in the reference)
    let got = allocate(&mut st, &s, &[ip("10.0.0.100"), ip("fd00::78")], who("a")).unwrap();
    assert_eq!(got[0].address.to_string(), "10.0.0.100/24");
    // ...but a set without a requested address still refuses a second one for `a`
    let e = allocate(&mut st, &s, &[ip("10.0.0.101")], who("a")).unwrap_err();
    assert!(matches!(e, AllocError::Duplicate { set: 1, .. }), "{e}");
    assert!(!st.entries.contains_key("10.0.0.101"));
}

#[test]
fn release_exact_then_legacy() {
    let mut st = MemoryStore::new();
    st.insert_raw("10.0.0.2", "a\r\neth0");
    st.insert_raw("10.0.0.3", "a\r\nnet1");
    st.insert_raw("10.0.0.4", "a");
    assert_eq!(release(&mut st, who("a")).unwrap(), [ip("10.0.0.2")]);
    assert_eq!(release(&mut st, who("a")).unwrap(), [ip("10.0.0.4")]);
    assert!(release(&mut st, who("a")).unwrap().is_empty());
    assert!(release(&mut st, who("zzz")).unwrap().is_empty());
    assert!(st.entries.contains_key("10.0.0.3"));
}

#[test]
fn check_finds_exact_or_legacy() {
    let mut st = MemoryStore::new();
    st.insert_raw("10.0.0.2", "a\r\neth0");
    st.insert_raw("10.0.0.4", "old");
    assert!(holds_any(&mut st, who("a")).unwrap());
    assert!(holds_any(&mut st, who("old")).unwrap());
    assert!(!holds_any(&mut st, Attachment { id: "a", ifname: "net1" }).unwrap());
    assert!(!holds_any(&mut st, who("b")).unwrap());
}

#[test]
fn gc_keeps_valid_attachments_only() {
    let mut st = MemoryStore::new();
    st.insert_raw("10.0.0.2", "a\r\neth0");
    st.insert_raw("10.0.0.3", "a\r\nnet1");
    st.insert_raw("10.0.0.4", "b\r\neth0");
    st.insert_raw("10.0.0.5", "legacy-a");
    st.insert_raw("10.0.0.6", "legacy-x");
    st.insert_raw("10.0.0.7", "");
    st.insert_raw("last_reserved_ip.0", "10.0.0.7");
    st.insert_raw("lock", "");
    st.last.insert(0, ip("10.0.0.7"));
    let valid = vec![("a".to_string(), "eth0".to_string()), ("legacy-a".to_string(), "eth0".to_string())];
    let mut released = gc(&mut st, &valid).unwrap();
    released.sort();
    assert_eq!(released, [ip("10.0.0.3"), ip("10.0.0.4"), ip("10.0.0.6"), ip("10.0.0.7")]);
    let left: Vec<&str> = st.entries.keys().map(String::as_str).collect();
    assert_eq!(left, ["10.0.0.2", "10.0.0.5", "last_reserved_ip.0", "lock"]);
    // an empty list means nothing is valid
    gc(&mut st, &[]).unwrap();
    let left: Vec<&str> = st.entries.keys().map(String::as_str).collect();
    assert_eq!(left, ["last_reserved_ip.0", "lock"]);
    assert_eq!(st.last.get(&0), Some(&ip("10.0.0.7")));
}

#[test]
fn status_reports_the_first_exhausted_set() {
    let s = sets(json!([[{"subnet": "fd00::/64"}], [{"subnet": "10.0.0.0/30"}]]));
    let mut st = MemoryStore::new();
    assert_eq!(first_exhausted(&mut st, &s).unwrap(), None);
    allocate(&mut st, &s, &[], who("a")).unwrap();
    assert_eq!(first_exhausted(&mut st, &s).unwrap(), Some(1));
    release(&mut st, who("a")).unwrap();
    assert_eq!(first_exhausted(&mut st, &s).unwrap(), None);
}

#[test]
fn ipv6_round_robin_in_a_small_range() {
    let s = sets(json!([[{"subnet": "fd00:5::/126"}]]));
    let mut st = MemoryStore::new();
    assert_eq!(add(&mut st, &s, "a").unwrap(), ["fd00:5::2/126"]);
    assert_eq!(add(&mut st, &s, "b").unwrap(), ["fd00:5::3/126"]);
    let e = add(&mut st, &s, "c").unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to allocate for range 0: no IP addresses available in range set: fd00:5::1-fd00:5::3"
    );
}
