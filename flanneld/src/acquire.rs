//! Our own lease in etcd: one acquisition attempt (docs/flannel.md §5.2, §4.4) and renewal.
//!
//! Every write is conditional: creation is create-if-absent, reuse of our PublicIP's lease
//! requires the record to be unchanged since we listed it, renewal requires the key to still be
//! attached to our etcd lease. So we can never overwrite a subnet somebody else holds.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use tracing::{info, warn};

use crate::allocate::{choose, Choice, Existing, OutOfSubnets};
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
    /// Preferred subnet (subnet.env's, or the one we just lost).
    pub previous: Option<Ipv4Network>,
}

/// One acquisition attempt.
pub async fn acquire_once<R: Registry>(registry: &R, want: &Want<'_>) -> Result<Acquired, AcquireError> {
    let dir = subnets_dir(want.prefix);
    let (records, list_revision) = registry.list(&dir).await?;
    let existing: Vec<(Existing, &Record)> = records
        .iter()
        .filter_map(|r| {
            let key = parse_lease_path(&dir, &r.key).ok()?;
            let public_ip = LeaseAttrs::parse(&r.value).ok().map(|a| a.public_ip);
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
            registry.delete_if(&r.key, r.mod_revision).await?;
        }
    }

    let value = want.attrs.render();
    let etcd_lease = registry.grant(LEASE_TTL_SECS).await?;
    let (key, expect) = match alloc.choice {
        Choice::Reuse(k) => {
            let rev = record_of(&k).map(|r| r.mod_revision).unwrap_or(0);
            (k, Expect::ModRevision(rev))
        }
        Choice::Create(subnet) => (LeaseKey::v4(subnet), Expect::Absent),
    };
    let path = lease_path(want.prefix, &key);
    let written = registry.put_if(&path, &value, etcd_lease, expect.clone()).await;
    match written {
        Ok(Some(revision)) => {
            info!(subnet = %key.ipv4, reused = matches!(expect, Expect::ModRevision(_)), "lease acquired");
            Ok(Acquired {
                lease: OwnLease { key, path, value, etcd_lease, revision },
                records,
                list_revision,
            })
        }
        Ok(None) => {
            revoke_quietly(registry, etcd_lease).await;
            warn!(subnet = %key.ipv4, "another node took the subnet first, picking again");
            Err(AcquireError::LostRace(key))
        }
        Err(e) => {
            revoke_quietly(registry, etcd_lease).await;
            Err(e.into())
        }
    }
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
