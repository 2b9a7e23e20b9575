//! Our own lease in etcd: one acquisition attempt (docs/flannel.md §5.2, §4.4) and renewal.
//!
//! Every write is conditional: creation is create-if-absent, reuse of our PublicIP's lease
//! requires the record to be unchanged since we listed it, renewal requires the key to still be
//! attached to our etcd lease. So we can never overwrite a subnet somebody else holds.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use tracing::{info, warn};

use crate::allocate::{choose, overlapping, Choice, Existing, OutOfSubnets};
use crate::lease::{lease_path, parse_lease_path, subnets_dir, LeaseAttrs, LeaseKey, LEASE_TTL_SECS};
use crate::network::NetworkSpec;
use crate::registry::{Expect, Record, Registry, RegistryError};

/// The lease we hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnLease {
    pub key: LeaseKey,
    /// Full etcd key.
    pub path: String,
    /// The exact bytes we wrote.
    pub value: Vec<u8>,
    /// The etcd lease the key is attached to.
    pub etcd_lease: i64,
    /// Revision of our last write of the key.
    pub revision: i64,
}

impl OwnLease {
    /// Our subnet.
    pub fn subnet(&self) -> Ipv4Network {
        self.key.ipv4
    }

    /// Why the lease is lost, if it is, given what etcd holds at our key (`None`: no key) as of
    /// `revision` (a listing's, or a watch event's). A view older than our last write says
    /// nothing; a key on another etcd lease with another value was taken by another node (our
    /// own renewal changes only one of the two).
    pub fn lost_because(&self, current: Option<&Record>, revision: i64) -> Option<&'static str> {
        if revision < self.revision {
            return None;
        }
        match current {
            None => Some("key deleted or expired"),
            Some(r) if r.lease != self.etcd_lease && r.value != self.value => {
                Some("key overwritten by another node")
            }
            Some(_) => None,
        }
    }
}

/// The result of a successful attempt, with the listing it was based on (reused as the
/// watch's initial snapshot, so startup costs one range read).
#[derive(Debug, Clone)]
pub struct Acquired {
    pub lease: OwnLease,
    pub records: Vec<Record>,
    pub list_revision: i64,
}

/// Why an attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AcquireError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    OutOfSubnets(#[from] OutOfSubnets),
    /// Somebody changed or created the chosen key between our list and our write.
    #[error("lost the race for {0}")]
    LostRace(LeaseKey),
}

/// Inputs of an attempt.
#[derive(Debug, Clone)]
pub struct Want<'a> {
    pub prefix: &'a str,
    pub spec: &'a NetworkSpec,
    pub public_ip: Ipv4Addr,
    pub attrs: &'a LeaseAttrs,
    /// Preferred subnets (subnet.env's `FLANNEL_SUBNET` and `FLANNEL_IPV6_SUBNET`, or the
    /// lease we just lost).
    pub previous: Option<LeaseKey>,
}

/// One acquisition attempt. The etcd lease is granted while the leases are listed (it does not
/// depend on them: one round trip less before the first peer is programmed) and revoked
/// whenever the attempt fails after that.
pub async fn acquire_once<R: Registry>(registry: &R, want: &Want<'_>) -> Result<Acquired, AcquireError> {
    let dir = subnets_dir(want.prefix);
    let (listed, granted) = tokio::join!(registry.list(&dir), registry.grant(LEASE_TTL_SECS));
    let etcd_lease = granted?;
    let attempt = match listed {
        Ok((records, list_revision)) => place(registry, want, &dir, records, list_revision, etcd_lease).await,
        Err(e) => Err(e.into()),
    };
    if attempt.is_err() {
        revoke_quietly(registry, etcd_lease).await;
    }
    attempt
}

/// The rest of an attempt, with the listing and a granted etcd lease: choose, write, check.
async fn place<R: Registry>(
    registry: &R,
    want: &Want<'_>,
    dir: &str,
    records: Vec<Record>,
    list_revision: i64,
    etcd_lease: i64,
) -> Result<Acquired, AcquireError> {
    let ours = want.public_ip.to_string();
    let existing: Vec<(Existing, &Record)> = records
        .iter()
        .filter_map(|r| {
            let key = parse_lease_path(dir, &r.key).ok()?;
            // Only a value that may name our PublicIP is decoded (the choice compares it with
            // ours and nothing else): with 1,000 leases, ~1 ms less before the first peer.
            let public_ip = may_name(&r.value, ours.as_bytes())
                .then(|| LeaseAttrs::parse(&r.value).ok().map(|a| a.public_ip))
                .flatten();
            Some((Existing { key, public_ip }, r))
        })
        .collect();
    let plain: Vec<Existing> = existing.iter().map(|(e, _)| e.clone()).collect();
    let alloc = choose(want.spec, &plain, want.public_ip, want.previous, &mut rand::rng())?;
    let record_of = |k: &LeaseKey| existing.iter().find(|(e, _)| e.key == *k).map(|(_, r)| *r);

    for stale in &alloc.delete {
        if let Some(r) = record_of(stale) {
            // Upstream deletes leases of our PublicIP that no longer fit the config.
            info!(key = %r.key, "deleting own lease that does not fit the network config");
            // Its subnets count as free for the choice (crate::allocate): if the key changed
            // since the listing, somebody else may hold it now, so list and choose again.
            if !registry.delete_if(&r.key, r.mod_revision).await? {
                return Err(AcquireError::LostRace(*stale));
            }
        }
    }

    let value = want.attrs.render();
    let (key, expect) = match alloc.choice {
        Choice::Reuse(k) => {
            let rev = record_of(&k).map(|r| r.mod_revision).unwrap_or(0);
            (k, Expect::ModRevision(rev))
        }
        Choice::Create(key) => (key, Expect::Absent),
    };
    let path = lease_path(want.prefix, &key);
    let written = registry.put_if(&path, &value, etcd_lease, expect.clone()).await;
    match written {
        Ok(Some(revision)) => {
            // An IPv4-only key is its subnet, so create-if-absent protects it fully (every node
            // reads the same config, hence the same SubnetLen); a dual-stack key is not.
            let (records, list_revision) = if expect == Expect::Absent && key.ipv6.is_some() {
                match created_alone(registry, dir, &path, &key, revision).await {
                    Ok(Some(listing)) => listing,
                    // The new key is gone again (deleted by us or somebody): choose again.
                    Ok(None) => return Err(AcquireError::LostRace(key)),
                    Err(e) => {
                        warn!(error = %e, key = %path, "could not re-list to check the new lease for overlaps");
                        (records, list_revision)
                    }
                }
            } else {
                (records, list_revision)
            };
            info!(
                subnet = %key.ipv4,
                ipv6_subnet = ?key.ipv6.map(|n| n.to_string()),
                reused = matches!(expect, Expect::ModRevision(_)),
                "lease acquired"
            );
            Ok(Acquired {
                lease: OwnLease { key, path, value, etcd_lease, revision },
                records,
                list_revision,
            })
        }
        Ok(None) => {
            warn!(subnet = %key.ipv4, "another node took the subnet first, picking again");
            Err(AcquireError::LostRace(key))
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether a lease value may name `ip` (dotted-quad text) as its PublicIP: JSON spells the
/// address out unless it escapes characters, and then the value is decoded to be sure.
fn may_name(value: &[u8], ip: &[u8]) -> bool {
    value.contains(&b'\\') || value.windows(ip.len()).any(|w| w == ip)
}

/// After creating `key` at `revision`: whether it stands alone. Create-if-absent protects only
/// the exact key, and a dual-stack key names two subnets picked independently, so two nodes
/// starting together can create different keys sharing an IPv4 or an IPv6 subnet (upstream
/// has the same gap, docs/flannel.md §5.4). Any lease overlapping ours was created after our
/// listing (we chose free subnets); the one written first keeps its subnets and the later one —
/// ours if the other's revision is lower — is deleted. `Ok(Some(listing))`: ours stands (the
/// listing, to start the watch from); `Ok(None)`: ours was deleted.
async fn created_alone<R: Registry>(
    registry: &R,
    dir: &str,
    path: &str,
    key: &LeaseKey,
    revision: i64,
) -> Result<Option<(Vec<Record>, i64)>, RegistryError> {
    let (records, list_revision) = registry.list(dir).await?;
    let earlier = records.iter().find(|r| {
        r.key != path
            && r.mod_revision < revision
            && parse_lease_path(dir, &r.key).is_ok_and(|other| overlapping(key, &other))
    });
    let Some(earlier) = earlier else { return Ok(Some((records, list_revision))) };
    warn!(key = %path, earlier = %earlier.key, "a lease created just before ours shares a subnet, picking again");
    if !registry.delete_if(path, revision).await? {
        warn!(key = %path, "our new lease changed before we could delete it; leaving it to expire");
    }
    Ok(None)
}

async fn revoke_quietly<R: Registry>(registry: &R, lease: i64) {
    if let Err(e) = registry.revoke(lease).await {
        tracing::debug!(lease, error = %e, "revoking unused etcd lease failed (it will expire)");
    }
}

/// Outcome of a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// The key is gone or no longer ours: re-acquire.
    Lost,
}

/// Re-puts our key with `value` attached to a fresh 24 h etcd lease, only if it is still
/// attached to our current one. Also used to republish changed attributes (`value`).
pub async fn renew<R: Registry>(
    registry: &R,
    own: &mut OwnLease,
    value: &[u8],
) -> Result<Renewal, RegistryError> {
    let fresh = registry.grant(LEASE_TTL_SECS).await?;
    match registry.put_if(&own.path, value, fresh, Expect::Lease(own.etcd_lease)).await {
        Ok(Some(revision)) => {
            let old = std::mem::replace(&mut own.etcd_lease, fresh);
            own.revision = revision;
            own.value = value.to_vec();
            // The old etcd lease has no keys any more; revoking it just tidies etcd.
            revoke_quietly(registry, old).await;
            Ok(Renewal::Renewed)
        }
        Ok(None) => {
            revoke_quietly(registry, fresh).await;
            Ok(Renewal::Lost)
        }
        Err(e) => {
            revoke_quietly(registry, fresh).await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_only_when_a_view_newer_than_our_write_shows_the_key_gone_or_taken() {
        let own = OwnLease {
            key: LeaseKey::parse("10.5.7.0-24").unwrap(),
            path: "/coreos.com/network/subnets/10.5.7.0-24".into(),
            value: b"ours".to_vec(),
            etcd_lease: 7,
            revision: 100,
        };
        let rec = |lease: i64, value: &[u8]| Record {
            key: own.path.clone(),
            value: value.to_vec(),
            lease,
            mod_revision: 101,
        };
        assert_eq!(own.lost_because(None, 99), None, "older than our write");
        assert_eq!(own.lost_because(None, 100), Some("key deleted or expired"));
        assert_eq!(own.lost_because(Some(&rec(8, b"theirs")), 101), Some("key overwritten by another node"));
        assert_eq!(own.lost_because(Some(&rec(8, b"theirs")), 50), None);
        // Renewed onto a new etcd lease, or rewritten with our new MAC: still ours.
        assert_eq!(own.lost_because(Some(&rec(8, b"ours")), 101), None);
        assert_eq!(own.lost_because(Some(&rec(7, b"new mac")), 101), None);
    }
}

#[cfg(test)]
mod dual_stack_tests {
    use super::*;
    use crate::network::parse_config;
    use crate::registry::memory::MemoryRegistry;

    const PREFIX: &str = "/coreos.com/network";
    const DUAL: &str = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/56","Backend":{"Type":"vxlan"}}"#;
    const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    fn attrs(mac6: u8) -> LeaseAttrs {
        LeaseAttrs::vxlan(ME, 1, [2, 0, 0, 0, 0, 1]).with_vxlan_v6(
            "fd18::2".parse().unwrap(),
            1,
            [2, 0, 0, 0, 6, mac6],
        )
    }

    async fn acquire(
        reg: &MemoryRegistry,
        spec: &NetworkSpec,
        a: &LeaseAttrs,
        previous: Option<LeaseKey>,
    ) -> Acquired {
        let want = Want { prefix: PREFIX, spec, public_ip: ME, attrs: a, previous };
        acquire_once(reg, &want).await.unwrap()
    }

    #[test]
    fn only_values_that_may_name_our_public_ip_are_decoded() {
        let ip = b"198.18.0.1";
        assert!(may_name(br#"{"PublicIP":"198.18.0.1"}"#, ip));
        // A longer address containing ours is decoded, then compared exactly.
        assert!(may_name(br#"{"PublicIP":"198.18.0.12"}"#, ip));
        assert!(!may_name(br#"{"PublicIP":"198.18.0.2"}"#, ip));
        // Escaped characters could spell it: decoded.
        assert!(may_name(br#"{"PublicIP":"\u0031\u0039\u0038.18.0.1"}"#, ip));
    }

    /// The lease is granted while the leases are listed; an attempt that then fails (here: no
    /// free subnet) revokes it, and a successful one keeps exactly the one it wrote.
    #[tokio::test]
    async fn a_failed_attempt_revokes_the_lease_it_granted() {
        let full = r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.7.0","SubnetMax":"10.5.7.0","Backend":{"Type":"vxlan"}}"#;
        let spec = parse_config(full.as_bytes()).unwrap();
        let reg = MemoryRegistry::new();
        reg.put_raw(&format!("{PREFIX}/subnets/10.5.7.0-24"), b"{\"PublicIP\":\"198.18.0.9\"}", 0);
        let a = LeaseAttrs::vxlan(ME, 1, [2, 0, 0, 0, 0, 1]);
        let want = Want { prefix: PREFIX, spec: &spec, public_ip: ME, attrs: &a, previous: None };
        assert!(acquire_once(&reg, &want).await.is_err());
        assert_eq!((reg.grant_calls(), reg.live_leases()), (1, 0));
        reg.delete_raw(&format!("{PREFIX}/subnets/10.5.7.0-24"));
        let got = acquire_once(&reg, &want).await.unwrap();
        assert_eq!((reg.grant_calls(), reg.live_leases()), (2, 1));
        assert_eq!(reg.record(&got.lease.path).map(|r| r.lease), Some(got.lease.etcd_lease));
    }

    #[tokio::test]
    async fn dual_stack_lease_is_created_reused_and_renewed_with_both_families() {
        let spec = parse_config(DUAL.as_bytes()).unwrap();
        let reg = MemoryRegistry::new();
        // A peer holds one subnet of each family.
        reg.put_raw(
            &format!("{PREFIX}/subnets/10.5.1.0-24&fd00:5:0:1::-64"),
            b"{\"PublicIP\":\"198.18.0.9\"}",
            0,
        );

        // Fresh start: one key naming both subnets, the value with PublicIPv6 and BackendV6Data.
        let a1 = attrs(1);
        let first = acquire(&reg, &spec, &a1, None).await;
        let key = first.lease.key;
        let v6 = key.ipv6.unwrap();
        assert!(spec.fits(&key.ipv4) && spec.ipv6.as_ref().unwrap().fits(&v6), "{key}");
        assert_ne!(key.ipv4.to_string(), "10.5.1.0/24");
        assert_ne!(v6.to_string(), "fd00:5:0:1::/64");
        assert_eq!(
            first.lease.path,
            format!("{PREFIX}/subnets/{}&{}-64", key.ipv4.to_string().replace('/', "-"), v6.ip())
        );
        let stored = reg.record(&first.lease.path).unwrap();
        assert_eq!(stored.value, a1.render());
        assert_eq!(LeaseAttrs::parse(&stored.value).unwrap().public_ipv6, Some("fd18::2".parse().unwrap()));

        // Restart while the key still exists: found by PublicIP and re-put, same subnets.
        let a2 = attrs(2);
        let again = acquire(&reg, &spec, &a2, None).await;
        assert_eq!(again.lease.key, key);
        assert_eq!(reg.record(&again.lease.path).unwrap().value, a2.render());

        // Renewal re-puts the same key (both families) on a fresh etcd lease.
        let mut own = again.lease.clone();
        let before = own.etcd_lease;
        assert_eq!(renew(&reg, &mut own, &a2.render()).await.unwrap(), Renewal::Renewed);
        assert_ne!(own.etcd_lease, before);
        let rec = reg.record(&own.path).unwrap();
        assert_eq!((rec.lease, rec.value), (own.etcd_lease, a2.render()));
        assert_eq!(reg.records(&format!("{PREFIX}/subnets/")).len(), 2, "no second key for us");
    }

    #[tokio::test]
    async fn of_two_new_leases_sharing_a_subnet_the_later_one_is_deleted() {
        let reg = MemoryRegistry::new();
        let dir = subnets_dir(PREFIX);
        let ours = LeaseKey::parse("10.5.3.0-24&fd00:5:0:30::-64").unwrap();
        let path = lease_path(PREFIX, &ours);
        // Another node created a lease with the same IPv6 subnet just before ours.
        reg.put_raw(&format!("{dir}10.5.7.0-24&fd00:5:0:30::-64"), b"{}", 0);
        reg.put_raw(&path, b"ours", 0);
        let rev = reg.record(&path).unwrap().mod_revision;
        assert_eq!(created_alone(&reg, &dir, &path, &ours, rev).await.unwrap(), None);
        assert!(reg.record(&path).is_none(), "ours deleted");

        // Ours first, theirs (same IPv4 subnet) after: ours stands.
        let reg = MemoryRegistry::new();
        // An earlier upstream IPv6-only lease (0.0.0.0-0&…) holds no IPv4 subnet.
        reg.put_raw(&format!("{dir}0.0.0.0-0&fd00:5:0:32::-64"), b"{}", 0);
        reg.put_raw(&path, b"ours", 0);
        let rev = reg.record(&path).unwrap().mod_revision;
        reg.put_raw(&format!("{dir}10.5.3.0-24&fd00:5:0:31::-64"), b"{}", 0);
        let (records, _) = created_alone(&reg, &dir, &path, &ours, rev).await.unwrap().unwrap();
        assert_eq!(records.len(), 3);
        assert!(reg.record(&path).is_some());
    }

    #[tokio::test]
    async fn after_the_key_expired_the_previous_subnets_of_subnet_env_come_back() {
        let spec = parse_config(DUAL.as_bytes()).unwrap();
        let reg = MemoryRegistry::new();
        let a = attrs(1);
        let previous = LeaseKey::parse("10.5.77.0-24&fd00:5:0:4d::-64").ok();
        let got = acquire(&reg, &spec, &a, previous).await;
        assert_eq!(Some(got.lease.key), previous);
        assert_eq!(got.lease.path, format!("{PREFIX}/subnets/10.5.77.0-24&fd00:5:0:4d::-64"));
    }

    #[tokio::test]
    async fn turning_ipv6_on_replaces_our_ipv4_only_key_and_keeps_its_ipv4_subnet() {
        let spec = parse_config(DUAL.as_bytes()).unwrap();
        let reg = MemoryRegistry::new();
        let old = format!("{PREFIX}/subnets/10.5.7.0-24");
        reg.put_raw(&old, &LeaseAttrs::vxlan(ME, 1, [2, 0, 0, 0, 0, 1]).render(), 0);
        let got = acquire(&reg, &spec, &attrs(1), LeaseKey::parse("10.5.7.0-24").ok()).await;
        assert!(reg.record(&old).is_none(), "incompatible own key deleted");
        assert_eq!(got.lease.key.ipv4.to_string(), "10.5.7.0/24");
        assert!(got.lease.key.ipv6.is_some());
        assert!(reg.record(&got.lease.path).is_some());
    }
}
