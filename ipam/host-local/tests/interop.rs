//! Interop with the reference Go host-local (Debian v1.1.1, cniVersion ≤ 1.0.0) on one data dir.

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::json;

fn reference_present() {
    assert!(std::path::Path::new(REFERENCE).exists(), "reference binary {REFERENCE} is required");
}

#[test]
fn reference_allocations_are_seen_and_released_by_ours_and_vice_versa() {
    reference_present();
    let lab = Lab::new();
    let stdin = conf(
        "1.0.0",
        "mix",
        lab.data.path(),
        json!({"ranges": [[{"subnet": "10.44.0.0/29"}], [{"subnet": "fd00:44::/125"}]]}),
    );
    let dir = lab.dir("mix");
    let theirs = Call::new(REFERENCE, "ADD", "ref1", &lab.netns(), &stdin).run().ok();
    assert_eq!(theirs.ips(), ["10.44.0.2/29", "fd00:44::2/125"]);
    let ours = Call::new(OURS, "ADD", "our1", &lab.netns(), &stdin).run().ok();
    assert_eq!(ours.ips(), ["10.44.0.3/29", "fd00:44::3/125"], "round robin continues after the reference's");
    // our files are byte-identical in form to the reference's
    assert_eq!(std::fs::read(dir.join("10.44.0.2")).unwrap(), b"ref1\r\neth0");
    assert_eq!(std::fs::read(dir.join("10.44.0.3")).unwrap(), b"our1\r\neth0");
    assert_eq!(std::fs::read(dir.join("last_reserved_ip.0")).unwrap(), b"10.44.0.3");
    // ours refuses a duplicate of the reference's attachment; the reference refuses ours
    assert!(Call::new(OURS, "ADD", "ref1", &lab.netns(), &stdin).run().msg().contains("duplicate"));
    assert!(Call::new(REFERENCE, "ADD", "our1", &lab.netns(), &stdin).run().msg().contains("duplicate"));
    // each CHECKs the other's allocation
    Call::new(OURS, "CHECK", "ref1", &lab.netns(), &stdin).run().ok();
    Call::new(REFERENCE, "CHECK", "our1", &lab.netns(), &stdin).run().ok();
    // each DELs the other's allocation
    Call::new(OURS, "DEL", "ref1", "", &stdin).run().ok();
    Call::new(REFERENCE, "DEL", "our1", "", &stdin).run().ok();
    assert_eq!(ip_files(&dir), Vec::<String>::new());
    // and the reference continues the round robin from our last reservation
    let theirs = Call::new(REFERENCE, "ADD", "ref2", &lab.netns(), &stdin).run().ok();
    assert_eq!(theirs.ips(), ["10.44.0.4/29", "fd00:44::4/125"]);
}

#[test]
fn mixed_concurrent_adds_never_share_an_address() {
    reference_present();
    let lab = Lab::new();
    let stdin = conf("0.4.0", "mixpar", lab.data.path(), json!({"ranges": [[{"subnet": "10.45.0.0/24"}]]}));
    let children: Vec<_> = (0..40)
        .map(|i| {
            let bin = if i % 2 == 0 { REFERENCE } else { OURS };
            Call::new(bin, "ADD", &format!("ctr{i}"), &lab.netns(), &stdin).spawn()
        })
        .collect();
    let mut seen = HashSet::new();
    for out in children.into_iter().map(finish) {
        let out = out.ok();
        let ips = out.ips();
        assert_eq!(ips.len(), 1, "{out:?}");
        assert!(seen.insert(ips[0].clone()), "address {} handed out twice", ips[0]);
    }
    let dir = lab.dir("mixpar");
    assert_eq!(ip_files(&dir).len(), 40);
    // DEL alternately by the other implementation
    let children: Vec<_> = (0..40)
        .map(|i| {
            let bin = if i % 2 == 0 { OURS } else { REFERENCE };
            Call::new(bin, "DEL", &format!("ctr{i}"), "", &stdin).spawn()
        })
        .collect();
    for out in children.into_iter().map(finish) {
        out.ok();
    }
    assert_eq!(entries(&dir), ["last_reserved_ip.0", "lock"]);
}

#[test]
fn our_owner_cache_notices_reference_changes() {
    reference_present();
    let lab = Lab::new();
    let stdin = conf("1.0.0", "cache", lab.data.path(), json!({"ranges": [[{"subnet": "10.46.0.0/24"}]]}));
    Call::new(OURS, "ADD", "a", &lab.netns(), &stdin).run().ok();
    Call::new(OURS, "ADD", "b", &lab.netns(), &stdin).run().ok();
    // the reference releases a and allocates for c; ours must see both changes
    Call::new(REFERENCE, "DEL", "a", "", &stdin).run().ok();
    Call::new(REFERENCE, "ADD", "c", &lab.netns(), &stdin).run().ok();
    let again = Call::new(OURS, "ADD", "a", &lab.netns(), &stdin).run().ok();
    assert_eq!(again.ips(), ["10.46.0.5/24"]);
    let dup = Call::new(OURS, "ADD", "c", &lab.netns(), &stdin).run();
    assert!(dup.msg().contains("10.46.0.4 has been allocated to c, duplicate"), "{dup:?}");
    // the cache lives outside the network directory, which keeps the reference layout
    assert_eq!(
        entries(&lab.dir("cache")),
        ["10.46.0.3", "10.46.0.4", "10.46.0.5", "last_reserved_ip.0", "lock"]
    );
}
