//! Pure subnet choice for one acquisition attempt (docs/flannel.md §5.2): our own
//! PublicIP's existing lease, else the previous subnet from subnet.env if free, else a random
//! pick among the first 100 free subnets. No I/O: the caller lists, creates and retries.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use rand::Rng;

use crate::lease::LeaseKey;
use crate::network::NetworkSpec;

/// How many free subnets the random pick chooses from (upstream's number).
pub const CANDIDATES: usize = 100;

/// A lease that exists in etcd, as far as allocation cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub key: LeaseKey,
    /// `None` when the value did not parse: the subnet still counts as taken.
    pub public_ip: Option<Ipv4Addr>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Our PublicIP already holds this compatible lease: re-put it with our attributes.
    Reuse(LeaseKey),
    /// Create this subnet (the previous one, or a fresh pick) with create-if-absent.
    Create(Ipv4Network),
}

/// The decision of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub choice: Choice,
    /// Leases with our PublicIP that do not fit the config: upstream deletes them.
    pub delete: Vec<LeaseKey>,
}

/// No free subnet in `[SubnetMin, SubnetMax]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("out of subnets in {network} (SubnetMin {min}, SubnetMax {max}, /{len})")]
pub struct OutOfSubnets {
    pub network: Ipv4Network,
    pub min: Ipv4Addr,
    pub max: Ipv4Addr,
    pub len: u8,
}

/// `existing` in etcd key order (lexicographic, as listed), so "first lease with our IP" matches
/// upstream.
pub fn choose(
    spec: &NetworkSpec,
    existing: &[Existing],
    public_ip: Ipv4Addr,
    previous: Option<Ipv4Network>,
    rng: &mut impl Rng,
) -> Result<Allocation, OutOfSubnets> {
    let fits = |k: &LeaseKey| k.ipv6.is_none() && spec.fits(&k.ipv4);
    let mut delete = Vec::new();
    for e in existing.iter().filter(|e| e.public_ip == Some(public_ip)) {
        if fits(&e.key) {
            return Ok(Allocation { choice: Choice::Reuse(e.key), delete });
        }
        delete.push(e.key);
    }
    if let Some(prev) = previous.filter(|p| spec.fits(p)) {
        if !existing.iter().any(|e| e.key.ipv4 == prev) {
            return Ok(Allocation { choice: Choice::Create(prev), delete });
        }
    }
    let free = free_subnets(spec, existing, CANDIDATES);
    let pick = if free.is_empty() { None } else { free.get(rng.random_range(0..free.len())).copied() };
    match pick {
        Some(subnet) => Ok(Allocation { choice: Choice::Create(subnet), delete }),
        None => Err(OutOfSubnets {
            network: spec.network,
            min: spec.subnet_min,
            max: spec.subnet_max,
            len: spec.subnet_len,
        }),
    }
}

/// The first `limit` subnets from `SubnetMin` upward (while ≤ `SubnetMax`) that overlap no
/// existing lease (reservations and unparsable values included).
pub fn free_subnets(spec: &NetworkSpec, existing: &[Existing], limit: usize) -> Vec<Ipv4Network> {
    let size = spec.subnet_size();
    let max = u64::from(u32::from(spec.subnet_max));
    let mut at = u64::from(u32::from(spec.subnet_min));
    let mut out = Vec::new();
    while at <= max && out.len() < limit {
        let Ok(ip) = u32::try_from(at) else { break };
        if let Ok(candidate) = Ipv4Network::new(Ipv4Addr::from(ip), spec.subnet_len) {
            if !existing.iter().any(|e| overlaps(&e.key.ipv4, &candidate)) {
                out.push(candidate);
            }
        }
        at += size;
    }
    out
}

fn overlaps(a: &Ipv4Network, b: &Ipv4Network) -> bool {
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

    fn ex(key: &str, ip: Option<&str>) -> Existing {
        Existing { key: LeaseKey::parse(key).unwrap(), public_ip: ip.map(|s| s.parse().unwrap()) }
    }

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    const NET: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
    const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    #[test]
    fn reuses_own_public_ip_first_and_deletes_incompatible() {
        let s = spec(NET);
        let existing = [
            ex("10.5.0.0-24", Some("198.18.0.2")), // below SubnetMin: incompatible
            ex("10.5.7.0-24", Some("198.18.0.2")),
            ex("10.5.8.0-24", Some("198.18.0.2")),
        ];
        let a = choose(&s, &existing, ME, Some("10.5.9.0/24".parse().unwrap()), &mut rng()).unwrap();
        assert_eq!(a.choice, Choice::Reuse(LeaseKey::parse("10.5.7.0-24").unwrap()));
        assert_eq!(a.delete, vec![LeaseKey::parse("10.5.0.0-24").unwrap()]);
    }

    #[test]
    fn previous_subnet_when_free_and_fitting() {
        let s = spec(NET);
        let existing = [ex("10.5.1.0-24", Some("198.18.0.9"))];
        let prev = "10.5.9.0/24".parse().unwrap();
        assert_eq!(choose(&s, &existing, ME, Some(prev), &mut rng()).unwrap().choice, Choice::Create(prev));
        // Taken by someone else: fresh pick instead, never the taken one.
        let taken = [ex("10.5.9.0-24", Some("198.18.0.9"))];
        let a = choose(&s, &taken, ME, Some(prev), &mut rng()).unwrap();
        assert!(matches!(a.choice, Choice::Create(n) if n != prev));
        // Wrong length for the config: ignored.
        let odd = "10.5.9.0/25".parse().unwrap();
        assert!(
            matches!(choose(&s, &[], ME, Some(odd), &mut rng()).unwrap().choice, Choice::Create(n) if n != odd)
        );
    }

    #[test]
    fn random_among_first_hundred_free() {
        let s = spec(NET);
        // Unparsable values still occupy their subnet.
        let existing = [ex("10.5.1.0-24", None), ex("10.5.2.0-24", Some("1.2.3.4"))];
        let free = free_subnets(&s, &existing, CANDIDATES);
        assert_eq!(free.len(), 100);
        assert_eq!(free[0].to_string(), "10.5.3.0/24");
        assert_eq!(free[99].to_string(), "10.5.102.0/24");
        let mut r = rng();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            match choose(&s, &existing, ME, None, &mut r).unwrap().choice {
                Choice::Create(n) => {
                    assert!(free.contains(&n));
                    seen.insert(n);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(seen.len() > 20, "not random: {seen:?}");
    }

    #[test]
    fn out_of_subnets() {
        let s = spec(r#"{"Network":"10.5.0.0/28","Backend":{"Type":"vxlan"}}"#);
        let existing = [ex("10.5.0.4-30", None), ex("10.5.0.8-30", None), ex("10.5.0.12-30", None)];
        assert!(choose(&s, &existing, ME, None, &mut rng()).is_err());
        // A larger overlapping lease blocks the subnets it covers.
        let wide = [ex("10.5.0.0-28", Some("9.9.9.9"))];
        assert!(choose(&s, &wide, ME, None, &mut rng()).is_err());
        let inverted = spec(
            r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.2.0","Backend":{"Type":"vxlan"}}"#,
        );
        assert!(choose(&inverted, &[], ME, None, &mut rng()).is_err());
    }
}
