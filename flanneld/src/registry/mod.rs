//! The seam between the daemon and etcd: the few key-value operations flanneld needs.
//!
//! Implementations: [`etcd::EtcdRegistry`] (etcd v3 over gRPC) and [`memory::MemoryRegistry`]
//! (tests, with fault injection). Keys are full etcd keys; the registry knows nothing about
//! leases' meaning. Every write is conditional so the daemon can never overwrite a lease key
//! somebody else holds.

pub mod etcd;
pub mod memory;

use std::future::Future;

/// One key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub value: Vec<u8>,
    /// etcd lease ID attached to the key; 0 for none (a "reservation").
    pub lease: i64,
    pub mod_revision: i64,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(Record),
    Delete { key: String, mod_revision: i64 },
}

impl WatchEvent {
    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put(r) => r.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// The condition of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The key does not exist (create-if-absent).
    Absent,
    /// The key exists with this mod revision (nobody wrote it since we read it).
    ModRevision(i64),
    /// The key is attached to this etcd lease (it is still the one we wrote).
    Lease(i64),
}

/// Registry failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// etcd could not be reached or did not answer: retry later.
    #[error("etcd unavailable: {0}")]
    Unavailable(String),
    /// A watch asked for a revision that was compacted away: re-list.
    #[error("watch revision compacted (oldest available {0})")]
    Compacted(i64),
    /// Any other error reported by etcd.
    #[error("etcd: {0}")]
    Other(String),
}

/// An open watch.
pub trait WatchStream: Send {
    /// The next batch of events (never empty), or the error that ended the watch.
    fn next(&mut self) -> impl Future<Output = Result<Vec<WatchEvent>, RegistryError>> + Send;
}

/// What flanneld needs from etcd.
pub trait Registry: Clone + Send + Sync + 'static {
    type Watch: WatchStream + 'static;

    /// The value at `key`, `None` if absent.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, RegistryError>> + Send;

    /// All keys under `prefix` in key order, with the revision of the read (one range read).
    fn list(&self, prefix: &str) -> impl Future<Output = Result<(Vec<Record>, i64), RegistryError>> + Send;

    /// Grants an etcd lease of `ttl_secs`; returns its ID.
    fn grant(&self, ttl_secs: i64) -> impl Future<Output = Result<i64, RegistryError>> + Send;

    /// Revokes an etcd lease (its keys are deleted).
    fn revoke(&self, lease: i64) -> impl Future<Output = Result<(), RegistryError>> + Send;

    /// Puts `value` at `key` attached to `lease` if `expect` holds: `Ok(Some(revision))` of the
    /// write, `Ok(None)` if the condition did not hold (nothing written).
    fn put_if(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
        expect: Expect,
    ) -> impl Future<Output = Result<Option<i64>, RegistryError>> + Send;

    /// Deletes `key` if it still has `mod_revision`; `Ok(false)` if it did not.
    fn delete_if(
        &self,
        key: &str,
        mod_revision: i64,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send;

    /// Watches keys under `prefix` from revision `from` (inclusive).
    fn watch(
        &self,
        prefix: &str,
        from: i64,
    ) -> impl Future<Output = Result<Self::Watch, RegistryError>> + Send;
}
