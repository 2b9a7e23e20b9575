//! Pure subnet choice for one acquisition attempt (docs/flannel.md §5.2): our own
//! PublicIP's existing lease, else the previous subnet(s) from subnet.env if free, else a random
//! pick among the first 100 free subnets — the IPv6 subnet picked independently the same way
//! (upstream `pkg/subnet/etcd/local_manager.go` `allocateSubnet`). No I/O: the caller lists,
//! creates and retries.
//!
//! Where we differ from upstream, only in which free subnet is chosen (docs/flannel.md §15):
//! a previous subnet must not *overlap* any listed lease (upstream: not equal to one); the
//! previous IPv4 subnet is kept when the previous IPv6 one is missing, taken or no longer fits
//! (upstream then drops both), so turning IPv6 on or off does not renumber a node's IPv4 pods;
//! and the subnets of our own incompatible leases, which the caller deletes first, count as free.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};
use rand::Rng;

use crate::lease::LeaseKey;
use crate::network::NetworkSpec;
use crate::network_v6::Ipv6Spec;

/// How many free subnets the random pick chooses from (upstream's number).
pub const CANDIDATES: usize = 100;

/// A lease that exists in etcd, as far as allocation cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub key: LeaseKey,
    /// `None` when the value did not parse or cannot name our PublicIP (it is compared with ours
    /// only): the subnet still counts as taken.
    pub public_ip: Option<Ipv4Addr>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Our PublicIP already holds this compatible lease: re-put it with our attributes.
    Reuse(LeaseKey),
    /// Create this lease (the previous subnets, or fresh picks) with create-if-absent.
    Create(LeaseKey),
}

/// The decision of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub choice: Choice,
    /// Leases with our PublicIP that do not fit the config: upstream deletes them.
    pub delete: Vec<LeaseKey>,
}

/// No free subnet in `[SubnetMin, SubnetMax]` (or its IPv6 counterpart).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutOfSubnets {
    #[error("out of subnets in {network} (SubnetMin {min}, SubnetMax {max}, /{len})")]
    V4 { network: Ipv4Network, min: Ipv4Addr, max: Ipv4Addr, len: u8 },
    #[error("out of IPv6 subnets in {network} (IPv6SubnetMin {min}, IPv6SubnetMax {max}, /{len})")]
    V6 { network: Ipv6Network, min: Ipv6Addr, max: Ipv6Addr, len: u8 },
}

/// A lease fits the config (upstream `isSubnetConfigCompat` and `isIPv6SubnetConfigCompat`):
/// its IPv4 subnet is in range with the configured length, and it has an IPv6 part exactly
/// when IPv6 is enabled, in range with the configured IPv6 length.
pub fn fits(spec: &NetworkSpec, key: &LeaseKey) -> bool {
    let v6_fits = match (&spec.ipv6, &key.ipv6) {
        (None, None) => true,
        (Some(s6), Some(n6)) => s6.fits(n6),
        _ => false,
    };
    spec.fits(&key.ipv4) && v6_fits
}

/// `existing` in etcd key order (lexicographic, as listed), so "first lease with our IP" matches
/// upstream. `previous`: the subnets of subnet.env (`FLANNEL_SUBNET`, `FLANNEL_IPV6_SUBNET`).
pub fn choose(
    spec: &NetworkSpec,
    existing: &[Existing],
    public_ip: Ipv4Addr,
    previous: Option<LeaseKey>,
    rng: &mut impl Rng,
) -> Result<Allocation, OutOfSubnets> {
    let mut delete = Vec::new();
    for e in existing.iter().filter(|e| e.public_ip == Some(public_ip)) {
        if fits(spec, &e.key) {
            return Ok(Allocation { choice: Choice::Reuse(e.key), delete });
        }
        delete.push(e.key);
    }
    let taken: Vec<LeaseKey> = existing.iter().map(|e| e.key).filter(|k| !delete.contains(k)).collect();

    let prev_v4 = previous.map(|p| p.ipv4).filter(|p| spec.fits(p) && !taken.iter().any(|k| holds_v4(k, p)));
    let ipv4 = match prev_v4 {
        Some(p) => p,
        None => pick(free_subnets(spec, &taken, CANDIDATES), rng).ok_or(OutOfSubnets::V4 {
            network: spec.network,
            min: spec.subnet_min,
            max: spec.subnet_max,
            len: spec.subnet_len,
        })?,
    };
    let ipv6 = match &spec.ipv6 {
        None => None,
        Some(s6) => {
            let prev_v6 = previous
                .and_then(|p| p.ipv6)
                .filter(|p| s6.fits(p) && !taken.iter().any(|k| k.ipv6.is_some_and(|t| overlaps_v6(&t, p))));
            Some(match prev_v6 {
                Some(p) => p,
                None => pick(free_subnets_v6(s6, &taken, CANDIDATES), rng).ok_or(OutOfSubnets::V6 {
                    network: s6.network,
                    min: s6.subnet_min,
                    max: s6.subnet_max,
                    len: s6.subnet_len,
                })?,
            })
        }
    };
    Ok(Allocation { choice: Choice::Create(LeaseKey { ipv4, ipv6 }), delete })
}

fn pick<T: Copy>(free: Vec<T>, rng: &mut impl Rng) -> Option<T> {
    if free.is_empty() {
        None
    } else {
        free.get(rng.random_range(0..free.len())).copied()
    }
}

/// The first `limit` subnets from `SubnetMin` upward (while ≤ `SubnetMax`) that overlap no
/// `taken` lease (reservations and unparsable values included).
pub fn free_subnets(spec: &NetworkSpec, taken: &[LeaseKey], limit: usize) -> Vec<Ipv4Network> {
    let range = |n: &Ipv4Network| (u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast())));
    let taken = taken.iter().filter(|k| !k.is_ipv6_only()).map(|k| range(&k.ipv4)).collect();
    let (min, max) = (u32::from(spec.subnet_min), u32::from(spec.subnet_max));
    free_blocks(min.into(), max.into(), spec.subnet_size().into(), taken, limit)
        .into_iter()
        .filter_map(|x| Ipv4Network::new(Ipv4Addr::from(u32::try_from(x).ok()?), spec.subnet_len).ok())
        .collect()
}

/// The IPv6 counterpart of [`free_subnets`], from `IPv6SubnetMin` to `IPv6SubnetMax`, against
/// the IPv6 parts of the `taken` leases.
pub fn free_subnets_v6(spec: &Ipv6Spec, taken: &[LeaseKey], limit: usize) -> Vec<Ipv6Network> {
    let range = |n: &Ipv6Network| (u128::from(n.network()), u128::from(n.broadcast()));
    let taken = taken.iter().filter_map(|k| k.ipv6.as_ref().map(range)).collect();
    let (min, max) = (u128::from(spec.subnet_min), u128::from(spec.subnet_max));
    free_blocks(min, max, spec.subnet_size(), taken, limit)
        .into_iter()
        .filter_map(|x| Ipv6Network::new(Ipv6Addr::from(x), spec.subnet_len).ok())
        .collect()
}

/// The starts of the first `limit` blocks of `size` addresses at `min`, `min + size`, ...
/// (while ≤ `max`) that intersect none of the `taken` address ranges (inclusive). The ranges
/// are sorted and merged once, then swept alongside the blocks: linear in the leases, where a
/// check of every block against every lease was quadratic (5,000 leases: 25 million checks).
fn free_blocks(min: u128, max: u128, size: u128, mut taken: Vec<(u128, u128)>, limit: usize) -> Vec<u128> {
    taken.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(taken.len());
    for (start, end) in taken {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let mut busy = merged.iter().peekable();
    let mut out = Vec::new();
    let mut at = Some(min);
    while let Some(x) = at.filter(|x| *x <= max && out.len() < limit) {
        let last = x.saturating_add(size.saturating_sub(1));
        while busy.next_if(|(_, end)| *end < x).is_some() {}
        if busy.peek().is_none_or(|(start, _)| *start > last) {
            out.push(x);
        }
        // The last subnet of the address space has no successor.
        at = x.checked_add(size);
    }
    out
}

/// Two leases share addresses of either family.
pub fn overlapping(a: &LeaseKey, b: &LeaseKey) -> bool {
    let v6 = match (a.ipv6, b.ipv6) {
        (Some(x), Some(y)) => overlaps_v6(&x, &y),
        _ => false,
    };
    v6 || (!a.is_ipv6_only() && holds_v4(b, &a.ipv4))
}

/// `key` holds IPv4 addresses of `subnet`. The IPv4 part of an IPv6-only lease (`0.0.0.0-0&…`,
/// docs/flannel.md §4.1) is no subnet and holds nothing.
fn holds_v4(key: &LeaseKey, subnet: &Ipv4Network) -> bool {
    !key.is_ipv6_only() && overlaps(&key.ipv4, subnet)
}

fn overlaps(a: &Ipv4Network, b: &Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

fn overlaps_v6(a: &Ipv6Network, b: &Ipv6Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::parse_config;
    use rand::SeedableRng;

    fn spec(json: &str) -> NetworkSpec {
        parse_config(json.as_bytes()).unwrap()
    }

    fn key(k: &str) -> LeaseKey {
        LeaseKey::parse(k).unwrap()
    }

    fn ex(k: &str, ip: Option<&str>) -> Existing {
        Existing { key: key(k), public_ip: ip.map(|s| s.parse().unwrap()) }
    }

    fn keys(existing: &[Existing]) -> Vec<LeaseKey> {
        existing.iter().map(|e| e.key).collect()
    }

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    fn created(a: Allocation) -> LeaseKey {
        match a.choice {
            Choice::Create(k) => k,
            other => panic!("{other:?}"),
        }
    }

    const NET: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
    const DUAL: &str = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/56","Backend":{"Type":"vxlan"}}"#;
    const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    #[test]
    fn reuses_own_public_ip_first_and_deletes_incompatible() {
        let s = spec(NET);
        let existing = [
            ex("10.5.0.0-24", Some("198.18.0.2")), // below SubnetMin: incompatible
            ex("10.5.7.0-24", Some("198.18.0.2")),
            ex("10.5.8.0-24", Some("198.18.0.2")),
        ];
        let a = choose(&s, &existing, ME, Some(key("10.5.9.0-24")), &mut rng()).unwrap();
        assert_eq!(a.choice, Choice::Reuse(key("10.5.7.0-24")));
        assert_eq!(a.delete, vec![key("10.5.0.0-24")]);
    }

    #[test]
    fn previous_subnet_when_free_and_fitting() {
        let s = spec(NET);
        let existing = [ex("10.5.1.0-24", Some("198.18.0.9"))];
        let prev = key("10.5.9.0-24");
        assert_eq!(created(choose(&s, &existing, ME, Some(prev), &mut rng()).unwrap()), prev);
        // Taken by someone else: fresh pick instead, never the taken one.
        let taken = [ex("10.5.9.0-24", Some("198.18.0.9"))];
        assert_ne!(created(choose(&s, &taken, ME, Some(prev), &mut rng()).unwrap()).ipv4, prev.ipv4);
        // Wrong length for the config: ignored.
        let odd = key("10.5.9.0-25");
        assert_ne!(created(choose(&s, &[], ME, Some(odd), &mut rng()).unwrap()).ipv4, odd.ipv4);
        // IPv6 now off: the previous IPv6 subnet is dropped, the IPv4 one kept.
        let was_dual = key("10.5.9.0-24&fd00:5:0:9::-64");
        assert_eq!(created(choose(&s, &[], ME, Some(was_dual), &mut rng()).unwrap()), prev);
    }

    #[test]
    fn random_among_first_hundred_free() {
        let s = spec(NET);
        // Unparsable values still occupy their subnet.
        let existing = [ex("10.5.1.0-24", None), ex("10.5.2.0-24", Some("1.2.3.4"))];
        let free = free_subnets(&s, &keys(&existing), CANDIDATES);
        assert_eq!(free.len(), 100);
        assert_eq!(free[0].to_string(), "10.5.3.0/24");
        assert_eq!(free[99].to_string(), "10.5.102.0/24");
        let mut r = rng();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let k = created(choose(&s, &existing, ME, None, &mut r).unwrap());
            assert!(free.contains(&k.ipv4) && k.ipv6.is_none(), "{k}");
            seen.insert(k.ipv4);
        }
        assert!(seen.len() > 20, "not random: {seen:?}");
    }

    /// The sweep answers exactly what checking every subnet against every lease answers, for
    /// leases of mixed lengths that nest, overlap, repeat and lie partly outside the range.
    #[test]
    fn the_sweep_agrees_with_checking_every_pair() {
        let s4 = spec(
            r#"{"Network":"10.5.0.0/16","SubnetLen":26,"SubnetMin":"10.5.3.64","SubnetMax":"10.5.40.0","EnableIPv6":true,"IPv6Network":"fd00:5::/48","IPv6SubnetLen":66,"Backend":{"Type":"vxlan"}}"#,
        );
        let s6 = s4.ipv6.clone().unwrap();
        let mut r = rng();
        for round in 0..50 {
            let taken: Vec<LeaseKey> = (0..r.random_range(0..120))
                .map(|_| {
                    let len4 = r.random_range(22..=28u8);
                    let ip4 = Ipv4Addr::from(
                        u32::from(Ipv4Addr::new(10, 5, 0, 0)) + r.random_range(0..(45u32 << 8)),
                    );
                    let len6 = r.random_range(62..=68u8);
                    let ip6 = Ipv6Addr::from(
                        u128::from("fd00:5::".parse::<Ipv6Addr>().unwrap())
                            + (u128::from(r.random_range(0..200u32)) << 60),
                    );
                    let ipv4 = Ipv4Network::new(ip4, len4).unwrap();
                    let ipv4 = Ipv4Network::new(ipv4.network(), len4).unwrap();
                    let ipv6 = Ipv6Network::new(ip6, len6).ok().filter(|_| r.random_bool(0.8));
                    LeaseKey { ipv4, ipv6 }
                })
                .collect();
            let naive4: Vec<Ipv4Network> = (u32::from(s4.subnet_min)..=u32::from(s4.subnet_max))
                .step_by(64)
                .map(|x| Ipv4Network::new(Ipv4Addr::from(x), 26).unwrap())
                .filter(|c| !taken.iter().any(|k| holds_v4(k, c)))
                .take(CANDIDATES)
                .collect();
            assert_eq!(free_subnets(&s4, &taken, CANDIDATES), naive4, "round {round}: {taken:?}");
            let mut naive6 = Vec::new();
            let mut x = u128::from(s6.subnet_min);
            while x <= u128::from(s6.subnet_max) && naive6.len() < CANDIDATES {
                let c = Ipv6Network::new(Ipv6Addr::from(x), 66).unwrap();
                if !taken.iter().any(|k| k.ipv6.is_some_and(|t| overlaps_v6(&t, &c))) {
                    naive6.push(c);
                }
                x += s6.subnet_size();
            }
            assert_eq!(free_subnets_v6(&s6, &taken, CANDIDATES), naive6, "round {round}: {taken:?}");
        }
    }

    #[test]
    fn out_of_subnets() {
        let s = spec(r#"{"Network":"10.5.0.0/28","Backend":{"Type":"vxlan"}}"#);
        let existing = [ex("10.5.0.4-30", None), ex("10.5.0.8-30", None), ex("10.5.0.12-30", None)];
        assert!(matches!(choose(&s, &existing, ME, None, &mut rng()), Err(OutOfSubnets::V4 { .. })));
        // A larger overlapping lease blocks the subnets it covers.
        let wide = [ex("10.5.0.0-28", Some("9.9.9.9"))];
        assert!(choose(&s, &wide, ME, None, &mut rng()).is_err());
        let inverted = spec(
            r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.2.0","Backend":{"Type":"vxlan"}}"#,
        );
        assert!(choose(&inverted, &[], ME, None, &mut rng()).is_err());
    }

    #[test]
    fn dual_stack_picks_both_families_independently_among_the_first_hundred() {
        let s = spec(DUAL);
        let existing = [
            ex("10.5.1.0-24&fd00:5:0:1::-64", Some("198.18.0.9")),
            // An IPv4-only lease of an older node blocks only its IPv4 subnet.
            ex("10.5.2.0-24", Some("198.18.0.8")),
            // An upstream IPv6-only node blocks only its IPv6 subnet (never all of IPv4).
            ex("0.0.0.0-0&fd00:5:0:2::-64", Some("0.0.0.0")),
        ];
        let taken = keys(&existing);
        let free4 = free_subnets(&s, &taken, CANDIDATES);
        assert_eq!(free4[0].to_string(), "10.5.3.0/24");
        let s6 = s.ipv6.as_ref().unwrap();
        let free6 = free_subnets_v6(s6, &taken, CANDIDATES);
        assert_eq!(free6.len(), 100);
        assert_eq!(free6[0].to_string(), "fd00:5:0:3::/64");
        assert_eq!(free6[99].to_string(), "fd00:5:0:66::/64");
        let mut r = rng();
        let mut pairs = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let k = created(choose(&s, &existing, ME, None, &mut r).unwrap());
            let v6 = k.ipv6.unwrap();
            assert!(free4.contains(&k.ipv4) && free6.contains(&v6), "{k}");
            pairs.insert((k.ipv4.ip(), v6.ip()));
        }
        // Independent picks: the IPv6 subnet is not tied to the IPv4 one.
        assert!(pairs.iter().any(|(a, b)| a.octets()[2] != b.segments()[3] as u8), "{pairs:?}");
        assert!(pairs.len() > 100, "not random: {}", pairs.len());
    }

    #[test]
    fn dual_stack_reuse_and_previous() {
        let s = spec(DUAL);
        // Our lease with both families fits: reused.
        let mine = [ex("10.5.7.0-24&fd00:5:0:7::-64", Some("198.18.0.2"))];
        let a = choose(&s, &mine, ME, None, &mut rng()).unwrap();
        assert_eq!(a.choice, Choice::Reuse(key("10.5.7.0-24&fd00:5:0:7::-64")));
        // Our IPv4-only lease no longer fits with IPv6 on: deleted, and its IPv4 subnet (the
        // previous one) is kept with a fresh IPv6 subnet.
        let old = [ex("10.5.7.0-24", Some("198.18.0.2"))];
        let a = choose(&s, &old, ME, Some(key("10.5.7.0-24")), &mut rng()).unwrap();
        assert_eq!(a.delete, vec![key("10.5.7.0-24")]);
        let k = created(a);
        assert_eq!(k.ipv4.to_string(), "10.5.7.0/24");
        assert!(s.ipv6.as_ref().unwrap().fits(&k.ipv6.unwrap()));
        // After a restart: both previous subnets from subnet.env, when free.
        let prev = key("10.5.9.0-24&fd00:5:0:9::-64");
        assert_eq!(created(choose(&s, &[], ME, Some(prev), &mut rng()).unwrap()), prev);
        // Previous IPv6 subnet taken (or out of range): a fresh one, the IPv4 one kept.
        let taken = [ex("10.5.1.0-24&fd00:5:0:9::-64", Some("198.18.0.9"))];
        let k = created(choose(&s, &taken, ME, Some(prev), &mut rng()).unwrap());
        assert_eq!(k.ipv4, prev.ipv4);
        assert_ne!(k.ipv6, prev.ipv6);
        let outside = key("10.5.9.0-24&fd00:6::-64");
        let k = created(choose(&s, &[], ME, Some(outside), &mut rng()).unwrap());
        assert_eq!(k.ipv4, prev.ipv4);
        assert!(s.ipv6.as_ref().unwrap().fits(&k.ipv6.unwrap()));
        // A lease of another node with our previous IPv4 subnet: nothing previous is used.
        let v4_taken = [ex("10.5.9.0-24&fd00:5:0:1::-64", Some("198.18.0.9"))];
        let k = created(choose(&s, &v4_taken, ME, Some(prev), &mut rng()).unwrap());
        assert_ne!(k.ipv4, prev.ipv4);
        assert_eq!(k.ipv6, prev.ipv6, "the IPv6 subnet is still free");
    }

    #[test]
    fn ipv6_out_of_subnets_and_top_of_the_address_space() {
        let s = spec(
            r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/124","Backend":{"Type":"vxlan"}}"#,
        );
        let full = [
            ex("10.5.1.0-24&fd00::4-126", None),
            ex("10.5.2.0-24&fd00::8-126", None),
            ex("10.5.3.0-24&fd00::c-126", None),
        ];
        assert!(matches!(choose(&s, &full, ME, None, &mut rng()), Err(OutOfSubnets::V6 { .. })));
        // The last subnet of the address space is reachable and the walk ends there.
        let top = spec(
            r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124","Backend":{"Type":"vxlan"}}"#,
        );
        let free = free_subnets_v6(top.ipv6.as_ref().unwrap(), &[], CANDIDATES);
        let last = free.last().map(ToString::to_string);
        assert_eq!((free.len(), last.as_deref()), (3, Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126")));
    }
}
