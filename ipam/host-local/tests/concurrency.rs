//! Many concurrent processes on one network: distinct addresses, then a clean directory.

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::json;

#[test]
fn sixty_four_parallel_adds_then_dels() {
    let lab = Lab::new();
    let stdin = conf("1.0.0", "par", lab.data.path(), json!({"ranges": [[{"subnet": "10.33.0.0/24"}]]}));
    let children: Vec<_> =
        (0..64).map(|i| Call::new(OURS, "ADD", &format!("ctr{i}"), &lab.netns(), &stdin).spawn()).collect();
    let outs: Vec<Out> = children.into_iter().map(finish).collect();
    let mut seen = HashSet::new();
    for (i, out) in outs.into_iter().enumerate() {
        let out = out.ok();
        let ips = out.ips();
        assert_eq!(ips.len(), 1, "{out:?}");
        assert!(seen.insert(ips[0].clone()), "address {} handed out twice", ips[0]);
        let file = lab.dir("par").join(ips[0].trim_end_matches("/24"));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("ctr{i}\r\neth0"));
    }
    assert_eq!(ip_files(&lab.dir("par")).len(), 64);

    let children: Vec<_> =
        (0..64).map(|i| Call::new(OURS, "DEL", &format!("ctr{i}"), "", &stdin).spawn()).collect();
    for out in children.into_iter().map(finish) {
        out.ok();
    }
    assert_eq!(entries(&lab.dir("par")), ["last_reserved_ip.0", "lock"]);
}
