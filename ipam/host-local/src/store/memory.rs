//! An in-memory [`Store`] for allocator tests (same semantics as the disk store, no files).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::{owner_record, Allocation, Store, StoreError};

/// Reservations in a map; `lock` is a no-op (tests are single-threaded).
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    /// Entry name → raw record.
    pub entries: BTreeMap<String, String>,
    /// Set index → last reserved address.
    pub last: HashMap<usize, IpAddr>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a raw entry (as another implementation or an older version would have written it).
    pub fn insert_raw(&mut self, name: &str, record: &str) {
        self.entries.insert(name.to_string(), record.to_string());
    }
}

impl Store for MemoryStore {
    type Guard = ();

    fn lock(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn allocations(&mut self, _fresh: bool) -> Result<Vec<Allocation>, StoreError> {
        Ok(self
            .entries
            .iter()
            .filter_map(|(name, record)| {
                let ip = name.parse::<IpAddr>().ok()?.to_canonical();
                Some(Allocation { ip, name: name.clone(), owner: record.trim().to_string() })
            })
            .collect())
    }

    fn reserve(&mut self, ip: IpAddr, id: &str, ifname: &str, set: usize) -> Result<bool, StoreError> {
        let name = ip.to_string();
        if self.entries.contains_key(&name) {
            return Ok(false);
        }
        self.entries.insert(name, owner_record(id, ifname));
        self.last.insert(set, ip);
        Ok(true)
    }

    fn last_reserved(&self, set: usize) -> Result<Option<IpAddr>, StoreError> {
        Ok(self.last.get(&set).copied())
    }

    fn release(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self.entries.remove(name).is_some())
    }
}
