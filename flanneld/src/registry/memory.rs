//! An in-memory [`Registry`] with etcd's semantics where flanneld depends on them (revisions,
//! conditional writes, lease expiry, watch from a revision, compaction), plus fault injection
//! for tests: outages, compaction, hand-written records.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

use super::{Expect, Record, Registry, RegistryError, WatchEvent, WatchStream};

#[derive(Default)]
struct State {
    kv: BTreeMap<String, Record>,
    revision: i64,
    compacted: i64,
    history: Vec<WatchEvent>,
    leases: HashMap<i64, Instant>,
    next_lease: i64,
    down: bool,
    /// Bumped when watches must break (simulated server restart).
    epoch: u64,
    lists: usize,
    grants: usize,
}

struct Shared {
    state: Mutex<State>,
    notify: Notify,
}

/// The in-memory registry; clones share the same store.
#[derive(Clone)]
pub struct MemoryRegistry {
    shared: Arc<Shared>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        MemoryRegistry::new()
    }
}

impl MemoryRegistry {
    /// An empty store at revision 1.
    pub fn new() -> MemoryRegistry {
        let state = State { revision: 1, next_lease: 0x1000, ..State::default() };
        MemoryRegistry { shared: Arc::new(Shared { state: Mutex::new(state), notify: Notify::new() }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a test thread panicked; the data is still usable.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self) -> Result<MutexGuard<'_, State>, RegistryError> {
        let mut st = self.lock();
        if st.down {
            return Err(RegistryError::Unavailable("memory registry is down".into()));
        }
        expire(&mut st);
        Ok(st)
    }

    fn changed(&self) {
        self.shared.notify.notify_waiters();
    }

    /// Writes a key as an operator or another node would (no conditions); `lease` 0 = none.
    pub fn put_raw(&self, key: &str, value: &[u8], lease: i64) {
        let mut st = self.lock();
        put(&mut st, key, value, lease);
        drop(st);
        self.changed();
    }

    /// Deletes a key unconditionally.
    pub fn delete_raw(&self, key: &str) {
        let mut st = self.lock();
        del(&mut st, key);
        drop(st);
        self.changed();
    }

    /// The current record at `key`.
    pub fn record(&self, key: &str) -> Option<Record> {
        let mut st = self.lock();
        expire(&mut st);
        st.kv.get(key).cloned()
    }

    /// All records under `prefix`.
    pub fn records(&self, prefix: &str) -> Vec<Record> {
        let mut st = self.lock();
        expire(&mut st);
        st.kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Simulates an outage (`true`) or recovery; open watches break.
    pub fn set_down(&self, down: bool) {
        let mut st = self.lock();
        st.down = down;
        st.epoch += 1;
        drop(st);
        self.changed();
    }

    /// Compacts history up to the current revision; a watch (re)started behind it gets
    /// `Compacted`, as with etcd (an up-to-date watch is unaffected).
    pub fn compact(&self) {
        let mut st = self.lock();
        st.compacted = st.revision;
        st.history.clear();
    }

    /// Deletes the keys of leases whose TTL has passed (also done before every operation).
    pub fn expire_now(&self) {
        let mut st = self.lock();
        expire(&mut st);
        drop(st);
        self.changed();
    }

    /// How many range reads (`list`) were made.
    pub fn list_calls(&self) -> usize {
        self.lock().lists
    }

    /// How many leases were granted.
    pub fn grant_calls(&self) -> usize {
        self.lock().grants
    }

    /// How many etcd leases are granted and not revoked (expiry aside).
    pub fn live_leases(&self) -> usize {
        self.lock().leases.len()
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.lock().revision
    }
}

fn put(st: &mut State, key: &str, value: &[u8], lease: i64) {
    st.revision += 1;
    let rec = Record { key: key.to_string(), value: value.to_vec(), lease, mod_revision: st.revision };
    st.kv.insert(key.to_string(), rec.clone());
    st.history.push(WatchEvent::Put(rec));
}

fn del(st: &mut State, key: &str) {
    if st.kv.remove(key).is_some() {
        st.revision += 1;
        let ev = WatchEvent::Delete { key: key.to_string(), mod_revision: st.revision };
        st.history.push(ev);
    }
}

fn expire(st: &mut State) {
    let now = Instant::now();
    let dead: Vec<i64> = st.leases.iter().filter(|(_, at)| **at <= now).map(|(id, _)| *id).collect();
    for id in dead {
        st.leases.remove(&id);
        let keys: Vec<String> = st.kv.values().filter(|r| r.lease == id).map(|r| r.key.clone()).collect();
        for k in keys {
            del(st, &k);
        }
    }
}

impl Registry for MemoryRegistry {
    type Watch = MemoryWatch;

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        Ok(self.check()?.kv.get(key).map(|r| r.value.clone()))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<Record>, i64), RegistryError> {
        let mut st = self.check()?;
        st.lists += 1;
        let recs = st
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, r)| r.clone())
            .collect();
        Ok((recs, st.revision))
    }

    async fn grant(&self, ttl_secs: i64) -> Result<i64, RegistryError> {
        let mut st = self.check()?;
        st.grants += 1;
        st.next_lease += 1;
        let id = st.next_lease;
        let ttl = Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(0));
        st.leases.insert(id, Instant::now() + ttl);
        Ok(id)
    }

    async fn revoke(&self, lease: i64) -> Result<(), RegistryError> {
        let mut st = self.check()?;
        if st.leases.remove(&lease).is_some() {
            let keys: Vec<String> =
                st.kv.values().filter(|r| r.lease == lease).map(|r| r.key.clone()).collect();
            for k in keys {
                del(&mut st, &k);
            }
        }
        drop(st);
        self.changed();
        Ok(())
    }

    async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
        expect: Expect,
    ) -> Result<Option<i64>, RegistryError> {
        let mut st = self.check()?;
        if lease != 0 && !st.leases.contains_key(&lease) {
            return Err(RegistryError::Other("requested lease not found".into()));
        }
        let cur = st.kv.get(key);
        let ok = match expect {
            Expect::Absent => cur.is_none(),
            Expect::ModRevision(r) => cur.is_some_and(|c| c.mod_revision == r),
            // etcd compares a missing key's lease as 0.
            Expect::Lease(l) => cur.map_or(0, |c| c.lease) == l,
        };
        if !ok {
            return Ok(None);
        }
        put(&mut st, key, value, lease);
        let rev = st.revision;
        drop(st);
        self.changed();
        Ok(Some(rev))
    }

    async fn delete_if(&self, key: &str, mod_revision: i64) -> Result<bool, RegistryError> {
        let mut st = self.check()?;
        let ok = st.kv.get(key).is_some_and(|c| c.mod_revision == mod_revision);
        if ok {
            del(&mut st, key);
            drop(st);
            self.changed();
        }
        Ok(ok)
    }

    async fn watch(&self, prefix: &str, from: i64) -> Result<MemoryWatch, RegistryError> {
        let st = self.check()?;
        Ok(MemoryWatch { registry: self.clone(), prefix: prefix.to_string(), next: from, epoch: st.epoch })
    }
}

/// A watch on the in-memory store.
pub struct MemoryWatch {
    registry: MemoryRegistry,
    prefix: String,
    next: i64,
    epoch: u64,
}

impl WatchStream for MemoryWatch {
    async fn next(&mut self) -> Result<Vec<WatchEvent>, RegistryError> {
        loop {
            let notified = self.registry.shared.notify.notified();
            {
                let mut st = self.registry.lock();
                if st.down || st.epoch != self.epoch {
                    if st.next_is_compacted(self.next) {
                        return Err(RegistryError::Compacted(st.compacted + 1));
                    }
                    return Err(RegistryError::Unavailable("watch broken".into()));
                }
                expire(&mut st);
                if st.next_is_compacted(self.next) {
                    return Err(RegistryError::Compacted(st.compacted + 1));
                }
                let events: Vec<WatchEvent> = st
                    .history
                    .iter()
                    .filter(|e| e.revision() >= self.next)
                    .filter(|e| match e {
                        WatchEvent::Put(r) => r.key.starts_with(&self.prefix),
                        WatchEvent::Delete { key, .. } => key.starts_with(&self.prefix),
                    })
                    .cloned()
                    .collect();
                if let Some(last) = events.last() {
                    self.next = last.revision() + 1;
                    return Ok(events);
                }
                // Nothing for us yet: skip past revisions of other keys.
                self.next = self.next.max(st.revision + 1);
            }
            notified.await;
        }
    }
}

impl State {
    fn next_is_compacted(&self, next: i64) -> bool {
        next <= self.compacted
    }
}
