//! Splits a batch of ops into waves that may run concurrently without breaking the order that
//! matters. Pure.
//!
//! Requests in flight on one socket may be handled in any order, so ordering is restored by
//! dependencies: an op waits for every earlier op on the same object (neighbour address, FDB
//! MAC, route destination), and a route *add* waits for every earlier neighbour/FDB op (the
//! neighbour must exist before the route makes the kernel use the gateway, §8.5). With 1,000
//! new peers this gives two waves: 2,000 neighbour/FDB ops, then 1,000 routes.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::{Mac, NetOp};

#[derive(Hash, PartialEq, Eq)]
enum Key {
    Neigh(IpAddr),
    Fdb(Mac),
    Route(IpNetwork),
}

fn key(op: &NetOp) -> Key {
    match op {
        NetOp::AddNeigh { ip, .. } | NetOp::DelNeigh { ip, .. } => Key::Neigh(*ip),
        NetOp::AddFdb { mac, .. } | NetOp::DelFdb { mac, .. } => Key::Fdb(*mac),
        NetOp::AddRoute { dst, .. } | NetOp::DelRoute { dst, .. } | NetOp::CreateRoute { dst, .. } => {
            Key::Route(*dst)
        }
    }
}

/// Indices of `ops`, grouped in waves; every wave only depends on earlier waves.
pub(crate) fn waves(ops: &[NetOp]) -> Vec<Vec<usize>> {
    let mut last: HashMap<Key, usize> = HashMap::new();
    // One past the highest wave of any neighbour/FDB op seen so far (0 = none yet).
    let mut l2_after = 0usize;
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let k = key(op);
        let mut wave = last.get(&k).map_or(0, |w| w + 1);
        if matches!(op, NetOp::AddRoute { .. } | NetOp::CreateRoute { .. }) {
            wave = wave.max(l2_after);
        }
        if !matches!(k, Key::Route(_)) {
            l2_after = l2_after.max(wave + 1);
        }
        last.insert(k, wave);
        if out.len() <= wave {
            out.resize_with(wave + 1, Vec::new);
        }
        if let Some(w) = out.get_mut(wave) {
            w.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{plan_add, plan_remove, Peer};

    fn peer(i: u8, mac_last: u8) -> Peer {
        Peer {
            subnet: format!("10.5.{i}.0/24").parse().unwrap(),
            public_ip: format!("198.18.0.{i}").parse().unwrap(),
            vtep_mac: [2, 0, 0, 0, i, mac_last],
            direct: false,
        }
    }

    #[test]
    fn many_new_peers_take_two_waves() {
        let ops: Vec<NetOp> = (1..=200).flat_map(|i| plan_add(None, &peer(i, 1))).collect();
        let w = waves(&ops);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].len(), 400);
        assert!(w[1].iter().all(|&i| matches!(ops[i], NetOp::AddRoute { .. })));
    }

    #[test]
    fn removals_run_in_one_wave() {
        let ops: Vec<NetOp> = (1..=50).flat_map(|i| plan_remove(&peer(i, 1))).collect();
        assert_eq!(waves(&ops).len(), 1);
    }

    #[test]
    fn same_object_keeps_its_order() {
        let ops = vec![
            NetOp::DelNeigh { ip: "10.5.1.0".parse().unwrap(), mac: [2; 6] },
            NetOp::AddNeigh { ip: "10.5.1.0".parse().unwrap(), mac: [3; 6] },
            NetOp::AddRoute {
                dst: "10.5.1.0/24".parse().unwrap(),
                gw: "10.5.1.0".parse().unwrap(),
                onlink: true,
            },
            NetOp::DelRoute {
                dst: "10.5.1.0/24".parse().unwrap(),
                gw: "10.5.1.0".parse().unwrap(),
                onlink: true,
            },
        ];
        assert_eq!(waves(&ops), vec![vec![0], vec![1], vec![2], vec![3]]);
    }

    #[test]
    fn mac_change_cleanup_follows_its_add() {
        let old = peer(1, 1);
        let mut new = old.clone();
        new.public_ip = "198.18.0.99".parse().unwrap();
        let ops = plan_add(Some(&old), &new);
        let w = waves(&ops);
        // AddFdb(mac, new dst) strictly before DelFdb(mac, old dst).
        let pos = |i: usize| w.iter().position(|wave| wave.contains(&i)).unwrap();
        assert!(pos(1) < pos(3));
    }
}
