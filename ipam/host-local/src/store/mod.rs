//! Where reservations live: the [`Store`] trait the allocator works over.
//!
//! A reservation is a named entry per address whose content records its owner,
//! `<containerID>\r\n<ifname>` (or only `<containerID>` for files written before ifnames were
//! recorded). [`disk::DiskStore`] is the reference's on-disk format; [`memory::MemoryStore`] is
//! for tests. Callers hold [`Store::lock`] around every sequence of calls.

use std::net::IpAddr;
use std::path::PathBuf;

pub mod disk;
pub mod index;
pub mod memory;

/// One reservation as found in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The reserved address (canonical form).
    pub ip: IpAddr,
    /// The entry's name (normally `ip` as text); releasing removes this name.
    pub name: String,
    /// The owner record, whitespace-trimmed (the reference compares trimmed content).
    pub owner: String,
}

/// How an [`Allocation`] relates to an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// `<containerID>\r\n<ifname>` matches.
    Exact,
    /// A legacy record holding only `<containerID>` matches.
    Legacy,
    /// Someone else's (or an unreadable/empty record).
    Other,
}

impl Allocation {
    /// Whether this reservation belongs to `(id, ifname)`.
    pub fn ownership(&self, id: &str, ifname: &str) -> Ownership {
        if self.owner == owner_record(id, ifname) {
            Ownership::Exact
        } else if self.owner == id.trim() {
            Ownership::Legacy
        } else {
            Ownership::Other
        }
    }
}

/// The owner record written into a reservation: `<containerID>\r\n<ifname>`, no newline.
pub fn owner_record(id: &str, ifname: &str) -> String {
    format!("{}\r\n{}", id.trim(), ifname)
}

/// Errors of a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A network name or container ID that could escape the data directory or corrupt a record.
    #[error("invalid {what} {value:?}: must match [A-Za-z0-9][A-Za-z0-9_.-]*")]
    InvalidName { what: &'static str, value: String },
    /// A file operation failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reservation storage. Every method other than [`Store::lock`] expects the lock to be held.
pub trait Store {
    /// Held while locked; dropping it unlocks.
    type Guard;

    /// Takes the store-wide exclusive lock, blocking until it is free.
    fn lock(&self) -> Result<Self::Guard, StoreError>;

    /// Every reservation (entries whose name is an address). With `fresh` every record is
    /// read from its file; otherwise a store may answer from a cache it has verified.
    fn allocations(&mut self, fresh: bool) -> Result<Vec<Allocation>, StoreError>;

    /// Reserves `ip` for `(id, ifname)` and records it as set `set`'s last reserved address.
    /// `Ok(false)` when the address is already taken.
    fn reserve(&mut self, ip: IpAddr, id: &str, ifname: &str, set: usize) -> Result<bool, StoreError>;

    /// The last address reserved in set `set`, if recorded and readable.
    fn last_reserved(&self, set: usize) -> Result<Option<IpAddr>, StoreError>;

    /// Removes the reservation entry `name`; `Ok(false)` when it was already gone.
    fn release(&mut self, name: &str) -> Result<bool, StoreError>;

    /// Called once at the end of an operation, still under the lock (e.g. to save a cache).
    fn flush(&mut self) {}
}
