//! Allocation, release, check, GC and status over any [`Store`] (docs/cni.md §8.3–§8.7).
//!
//! Pure logic: every function takes the store's lock for its whole duration, reads the
//! reservations once, and decides. Stricter than the reference in one place: when a later range
//! set fails, only the addresses reserved by *this* call are released, never an earlier ADD's.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::range::RangeSet;
use crate::store::{Allocation, Ownership, Store, StoreError};

/// The attachment an operation is for.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    pub id: &'a str,
    pub ifname: &'a str,
}

/// One address handed out, in range-set order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocated {
    /// Index of the range set.
    pub set: usize,
    /// Address with the range's prefix length (`10.1.2.5/24`).
    pub address: IpNetwork,
    /// The containing range's gateway.
    pub gateway: IpAddr,
}

/// Why an allocation failed; messages are the reference's.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("failed to allocate for range {set}: {ip} has been allocated to {id}, duplicate allocation is not allowed")]
    Duplicate { set: usize, ip: IpAddr, id: String },
    #[error("failed to allocate for range {set}: no IP addresses available in range set: {range_set}")]
    Exhausted { set: usize, range_set: String },
    #[error("failed to allocate for range {set}: requested ip {ip} is subnet's gateway")]
    RequestedGateway { set: usize, ip: IpAddr },
    #[error("failed to allocate for range {set}: requested IP address {ip} is not available in range set {range_set}")]
    RequestedUnavailable { set: usize, ip: IpAddr, range_set: String },
    #[error("failed to allocate all requested IPs: {}", join(.ips))]
    RequestedLeftOver { ips: Vec<IpAddr> },
    #[error("failed to allocate for range {set}: {source}")]
    Store {
        set: usize,
        #[source]
        source: StoreError,
    },
    /// Locking or reading the store failed before any set was tried.
    #[error(transparent)]
    Access(#[from] StoreError),
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
}

/// Allocates one address per range set for `who` (ADD). `requested` addresses are taken by the
/// set that contains them; every requested address must be used.
pub fn allocate<S: Store>(
    store: &mut S,
    sets: &[RangeSet],
    requested: &[IpAddr],
    who: Attachment<'_>,
) -> Result<Vec<Allocated>, AllocError> {
    let _guard = store.lock()?;
    let result = allocate_locked(store, sets, requested, who);
    store.flush();
    result
}

fn allocate_locked<S: Store>(
    store: &mut S,
    sets: &[RangeSet],
    requested: &[IpAddr],
    who: Attachment<'_>,
) -> Result<Vec<Allocated>, AllocError> {
    // The cache may answer here: a stale owner could only affect the duplicate check, never
    // hand out a taken address (the reservation itself is exclusive).
    let existing = store.allocations(false)?;
    let taken: HashSet<IpAddr> = existing.iter().map(|a| a.ip).collect();
    let mut remaining: Vec<IpAddr> = requested.to_vec();
    let mut done: Vec<Allocated> = Vec::with_capacity(sets.len());
    for (n, set) in sets.iter().enumerate() {
        let wanted = remaining.iter().position(|ip| set.contains(*ip)).map(|i| remaining.remove(i));
        match allocate_one(store, n, set, wanted, &existing, &taken, who) {
            Ok(a) => done.push(a),
            Err(e) => {
                rollback(store, &done);
                return Err(e);
            }
        }
    }
    if !remaining.is_empty() {
        rollback(store, &done);
        return Err(AllocError::RequestedLeftOver { ips: remaining });
    }
    Ok(done)
}

fn allocate_one<S: Store>(
    store: &mut S,
    n: usize,
    set: &RangeSet,
    wanted: Option<IpAddr>,
    existing: &[Allocation],
    taken: &HashSet<IpAddr>,
    who: Attachment<'_>,
) -> Result<Allocated, AllocError> {
    let store_err = |source| AllocError::Store { set: n, source };
    if let Some(ip) = wanted {
        let Some(range) = set.range_of(ip) else {
            return Err(AllocError::RequestedUnavailable { set: n, ip, range_set: set.to_string() });
        };
        if ip == range.gateway {
            return Err(AllocError::RequestedGateway { set: n, ip });
        }
        let address = range.address(ip);
        let gateway = range.gateway;
        return match (store.reserve(ip, who.id, who.ifname, n).map_err(store_err)?, address) {
            (true, Some(address)) => Ok(Allocated { set: n, address, gateway }),
            _ => Err(AllocError::RequestedUnavailable { set: n, ip, range_set: set.to_string() }),
        };
    }
    // An attachment gets one address per set; a second ADD without DEL is refused, and the
    // first reservation is left alone (it belongs to a running pod).
    if let Some(dup) =
        existing.iter().find(|a| a.ownership(who.id, who.ifname) != Ownership::Other && set.contains(a.ip))
    {
        return Err(AllocError::Duplicate { set: n, ip: dup.ip, id: who.id.to_string() });
    }
    let last = store.last_reserved(n).map_err(store_err)?;
    for (idx, ip) in set.candidates(last) {
        // Addresses known taken are skipped without a syscall; the reservation itself decides.
        if taken.contains(&ip) {
            continue;
        }
        if store.reserve(ip, who.id, who.ifname, n).map_err(store_err)? {
            let range = set.ranges.get(idx);
            if let Some((address, range)) = range.and_then(|r| r.address(ip).map(|a| (a, r))) {
                return Ok(Allocated { set: n, address, gateway: range.gateway });
            }
        }
    }
    Err(AllocError::Exhausted { set: n, range_set: set.to_string() })
}

/// Releases what this call reserved (best effort: the error being reported matters more).
fn rollback<S: Store>(store: &mut S, done: &[Allocated]) {
    for a in done {
        let name = a.address.ip().to_string();
        if let Err(e) = store.release(&name) {
            tracing::warn!(ip = %name, error = %e, "rollback of a reservation failed");
        }
    }
}

/// Releases every reservation of `who` (DEL): the exact `(id, ifname)` records, or when there
/// are none, legacy records holding only `id`. Keeps going past failures and reports the first.
/// Returns the released addresses; nothing found is success.
pub fn release<S: Store>(store: &mut S, who: Attachment<'_>) -> Result<Vec<IpAddr>, StoreError> {
    let _guard = store.lock()?;
    let result = release_locked(store, who);
    store.flush();
    result
}

fn release_locked<S: Store>(store: &mut S, who: Attachment<'_>) -> Result<Vec<IpAddr>, StoreError> {
    let all = store.allocations(true)?;
    let mut mine: Vec<&Allocation> =
        all.iter().filter(|a| a.ownership(who.id, who.ifname) == Ownership::Exact).collect();
    if mine.is_empty() {
        mine = all.iter().filter(|a| a.ownership(who.id, who.ifname) == Ownership::Legacy).collect();
    }
    release_all(store, mine)
}

fn release_all<S: Store>(store: &mut S, victims: Vec<&Allocation>) -> Result<Vec<IpAddr>, StoreError> {
    let mut released = Vec::new();
    let mut first_err = None;
    for a in victims {
        match store.release(&a.name) {
            Ok(true) => released.push(a.ip),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(ip = %a.ip, error = %e, "release failed");
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(released),
    }
}

/// True when `who` holds any reservation (CHECK), exact or legacy.
pub fn holds_any<S: Store>(store: &mut S, who: Attachment<'_>) -> Result<bool, StoreError> {
    let _guard = store.lock()?;
    let all = store.allocations(true);
    store.flush();
    Ok(all?.iter().any(|a| a.ownership(who.id, who.ifname) != Ownership::Other))
}

/// Releases every reservation not owned by one of `valid` `(containerID, ifname)` pairs (GC).
/// A legacy ID-only record survives when its ID is one of the valid container IDs; empty or
/// unreadable records belong to nobody and are released. Returns the released addresses.
pub fn gc<S: Store>(store: &mut S, valid: &[(String, String)]) -> Result<Vec<IpAddr>, StoreError> {
    let _guard = store.lock()?;
    let result = gc_locked(store, valid);
    store.flush();
    result
}

fn gc_locked<S: Store>(store: &mut S, valid: &[(String, String)]) -> Result<Vec<IpAddr>, StoreError> {
    let all = store.allocations(true)?;
    let keep = |a: &Allocation| {
        valid.iter().any(|(id, ifname)| a.ownership(id, ifname) != Ownership::Other && !a.owner.is_empty())
    };
    let stale: Vec<&Allocation> = all.iter().filter(|a| !keep(a)).collect();
    release_all(store, stale)
}

/// The index of the first range set with no free address, if any (STATUS).
pub fn first_exhausted<S: Store>(store: &mut S, sets: &[RangeSet]) -> Result<Option<usize>, StoreError> {
    let _guard = store.lock()?;
    // Only which addresses are taken matters here, and the listing is always read afresh.
    let all = store.allocations(false);
    store.flush();
    let taken: HashSet<IpAddr> = all?.into_iter().map(|a| a.ip).collect();
    // Each walk stops at the first free address, so it costs at most |taken| + gateways steps.
    Ok(sets.iter().position(|set| set.candidates(None).all(|(_, ip)| taken.contains(&ip))))
}

#[cfg(test)]
mod tests;
