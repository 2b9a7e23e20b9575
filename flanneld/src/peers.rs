//! The set of remote peers derived from lease records (pure; docs/flannel.md §6).
//!
//! Input: lease puts, deletes and full snapshots (after a re-list). Output: [`Change`]s for the
//! daemon to program. Rules: our own subnet is never a peer; leases whose `BackendType` is not
//! the node's backend (`vxlan` or `host-gw`) are not peers and are logged once at WARN, as
//! upstream's handlers ignore them with a warning (`pkg/backend/vxlan/vxlan_network.go`,
//! `pkg/backend/route_network.go`); a malformed record (bad key, bad JSON, bad PublicIP, bad BackendData)
//! is logged at WARN with its key and skipped — it never removes any other peer (the upstream
//! defect of §6.3 must not be copied), and a malformed re-put of a known peer keeps the
//! last-known good attributes.
//!
//! It also remembers which node held which lease (`(subnet, PublicIP)`, current and removed
//! ones): DirectRouting routes `S via P` are flanneld's only for such pairs (see
//! `weft_dataplane::own`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};
use tracing::{info, warn};
use weft_dataplane::Mac;

use crate::lease::{parse_lease_path, LeaseAttrs, LeaseKey};
use crate::network::BackendKind;
use crate::registry::Record;

/// A remote node as published in its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePeer {
    pub key: LeaseKey,
    pub public_ip: Ipv4Addr,
    /// The VXLAN `VtepMAC`; all zero for a host-gw peer (its lease has no `BackendData`).
    pub vtep_mac: Mac,
    /// The VXLAN `VNI`; 0 for a host-gw peer.
    pub vni: u32,
    /// The IPv6 side of a dual-stack lease (subnet `key.ipv6`); `None` when the lease has none
    /// or its IPv6 part is malformed (logged; the IPv4 side is kept).
    pub ipv6: Option<PeerV6>,
}

/// The IPv6 side of a dual-stack peer: `PublicIPv6` and `BackendV6Data` (docs/flannel.md §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerV6 {
    pub subnet: Ipv6Network,
    pub public_ipv6: Ipv6Addr,
    pub vtep_mac: Mac,
    pub vni: u32,
}

impl RemotePeer {
    /// The peer's IPv4 subnet.
    pub fn subnet(&self) -> Ipv4Network {
        self.key.ipv4
    }
}

/// What changed in the peer set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new peer, or a known one whose attributes changed.
    Upsert(RemotePeer),
    /// The peer with this subnet is gone.
    Remove(Ipv4Network),
}

enum Classified {
    Peer(RemotePeer),
    /// A lease of another backend type (the type and the lease's PublicIP).
    Foreign(LeaseKey, String, Ipv4Addr),
    /// `0.0.0.0-0&<v6>-<len>`: an upstream IPv6-only node; its `0.0.0.0/0` is no subnet to route.
    Ipv6Only,
    /// `key` is known when only the value is bad.
    Malformed {
        key: Option<LeaseKey>,
        reason: String,
    },
}

/// The current peers, keyed by subnet.
///
/// Two nodes racing for a subnet can both hold a lease for it for a moment: dual-stack keys
/// name both subnets, so a clash in one family still gives two keys, and the node whose
/// lease came second picks again and deletes its own (`crate::acquire`). The lease seen
/// first stays the peer meanwhile: a second lease for an IPv4 subnet waits in `shadowed`, a
/// second claim on an IPv6 subnet (or a claim on our own) waits in `waiting_v6`, and either
/// takes over when the first goes.
#[derive(Debug, Clone)]
pub struct PeerSet {
    subnets_dir: String,
    backend: BackendKind,
    own: Option<Ipv4Network>,
    own_v6: Option<Ipv6Network>,
    /// The peers as programmed: a peer's `ipv6` is `None` while its IPv6 side waits.
    peers: BTreeMap<Ipv4Network, RemotePeer>,
    /// Leases for an IPv4 subnet whose peer is another lease, with their mod revision.
    shadowed: BTreeMap<LeaseKey, (i64, RemotePeer)>,
    /// The IPv6 sides held back from `peers` (by the peer's IPv4 subnet).
    waiting_v6: BTreeMap<Ipv4Network, PeerV6>,
    /// Which peer (IPv4 subnet) holds each IPv6 subnet.
    v6_holder: BTreeMap<Ipv6Network, Ipv4Network>,
    /// Leases of another backend type, by subnet, with that type (to log each once).
    foreign: BTreeMap<Ipv4Network, String>,
    /// `(subnet, PublicIP)` of every peer lease seen, current and removed (pruned with
    /// [`PeerSet::forget_held`]).
    held: BTreeSet<(Ipv4Network, Ipv4Addr)>,
}

impl PeerSet {
    /// An empty set of VXLAN peers for leases under `subnets_dir` (`<prefix>/subnets/`).
    pub fn new(subnets_dir: &str) -> PeerSet {
        PeerSet::for_backend(subnets_dir, BackendKind::Vxlan)
    }

    /// An empty set of peers of `backend` (leases of other types are skipped).
    pub fn for_backend(subnets_dir: &str, backend: BackendKind) -> PeerSet {
        PeerSet {
            subnets_dir: subnets_dir.to_string(),
            backend,
            own: None,
            own_v6: None,
            peers: BTreeMap::new(),
            shadowed: BTreeMap::new(),
            waiting_v6: BTreeMap::new(),
            v6_holder: BTreeMap::new(),
            foreign: BTreeMap::new(),
            held: BTreeSet::new(),
        }
    }

    /// Sets our own lease's subnets: a peer at our IPv4 subnet is removed, a peer's IPv6
    /// side at our IPv6 subnet is held back (and one held back for our previous IPv6 subnet
    /// is given back).
    pub fn set_own(&mut self, own: LeaseKey) -> Vec<Change> {
        self.own = Some(own.ipv4);
        let before_v6 = std::mem::replace(&mut self.own_v6, own.ipv6);
        self.shadowed.retain(|k, _| k.ipv4 != own.ipv4);
        let mut changes = Vec::new();
        if self.peers.contains_key(&own.ipv4) {
            changes.push(Change::Remove(own.ipv4));
            changes.extend(self.take(own.ipv4));
        }
        if before_v6 != own.ipv6 {
            if let Some(mine) = own.ipv6 {
                if let Some(holder) = self.v6_holder.remove(&mine) {
                    if let Some(p) = self.peers.get_mut(&holder) {
                        if let Some(v6) = p.ipv6.take() {
                            self.waiting_v6.insert(holder, v6);
                        }
                        changes.push(Change::Upsert(p.clone()));
                    }
                }
            }
            if let Some(old) = before_v6 {
                changes.extend(self.give_v6(old));
            }
        }
        changes
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// No peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The peers in subnet order.
    pub fn iter(&self) -> impl Iterator<Item = &RemotePeer> {
        self.peers.values()
    }

    /// The peer at `subnet`.
    pub fn get(&self, subnet: &Ipv4Network) -> Option<&RemotePeer> {
        self.peers.get(subnet)
    }

    /// `(subnet, PublicIP)` of every peer lease held now or seen before (until forgotten).
    pub fn held(&self) -> &BTreeSet<(Ipv4Network, Ipv4Addr)> {
        &self.held
    }

    /// Forgets remembered leases that no peer holds any more and for which `keep` is false
    /// (the daemon keeps those that may still have a route in the kernel). Current peers'
    /// leases, shadowed ones included, are always kept.
    pub fn forget_held(&mut self, keep: impl Fn(&Ipv4Network, &Ipv4Addr) -> bool) {
        let (peers, shadowed) = (&self.peers, &self.shadowed);
        let holds = |s: &Ipv4Network, ip: &Ipv4Addr| {
            peers.get(s).is_some_and(|p| p.public_ip == *ip)
                || shadowed.values().any(|(_, p)| p.subnet() == *s && p.public_ip == *ip)
        };
        self.held.retain(|(s, ip)| holds(s, ip) || keep(s, ip));
    }

    fn is_own(&self, key: &LeaseKey) -> bool {
        self.own == Some(key.ipv4)
    }

    fn classify(&self, rec: &Record) -> Classified {
        let key = match parse_lease_path(&self.subnets_dir, &rec.key) {
            Ok(k) => k,
            Err(e) => return Classified::Malformed { key: None, reason: e.to_string() },
        };
        let attrs = match LeaseAttrs::parse(&rec.value) {
            Ok(a) => a,
            Err(e) => return Classified::Malformed { key: Some(key), reason: e.to_string() },
        };
        if key.is_ipv6_only() {
            return Classified::Ipv6Only;
        }
        match self.backend {
            BackendKind::Vxlan if attrs.is_vxlan() => {}
            BackendKind::HostGw if attrs.is_host_gw() => {
                return Classified::Peer(RemotePeer {
                    key,
                    public_ip: attrs.public_ip,
                    vtep_mac: [0; 6],
                    vni: 0,
                    // Dual stack: `S6 via PublicIPv6` (upstream `pkg/backend/hostgw/hostgw.go`);
                    // a host-gw lease has no `BackendV6Data`.
                    ipv6: key.ipv6.and_then(|subnet| host_gw_ipv6_side(rec, subnet, &attrs)),
                });
            }
            _ => return Classified::Foreign(key, attrs.backend_type, attrs.public_ip),
        }
        match attrs.vxlan_data() {
            Ok(d) => Classified::Peer(RemotePeer {
                key,
                public_ip: attrs.public_ip,
                vtep_mac: d.vtep_mac,
                vni: d.vni,
                ipv6: key.ipv6.and_then(|subnet| ipv6_side(rec, subnet, &attrs)),
            }),
            Err(e) => Classified::Malformed { key: Some(key), reason: e.to_string() },
        }
    }

    /// A lease was put.
    pub fn put(&mut self, rec: &Record) -> Vec<Change> {
        match self.classify(rec) {
            Classified::Malformed { reason, .. } => {
                warn!(key = %rec.key, reason = %reason, "skipping malformed lease record");
                Vec::new()
            }
            Classified::Foreign(key, kind, public_ip) => {
                self.note_foreign(&rec.key, &key, kind, public_ip);
                self.remove(&key)
            }
            Classified::Ipv6Only => {
                warn!(key = %rec.key, "skipping IPv6-only lease: it has no IPv4 subnet");
                Vec::new()
            }
            Classified::Peer(p) if self.is_own(&p.key) => Vec::new(),
            Classified::Peer(p) => {
                let s = p.subnet();
                self.held.insert((s, p.public_ip));
                match self.peers.get(&s).map(|c| c.key) {
                    Some(current) if current != p.key => {
                        warn!(key = %rec.key, subnet = %s,
                            "a second lease for a peer's subnet; keeping the first until one goes");
                        self.shadowed.insert(p.key, (rec.mod_revision, p));
                        Vec::new()
                    }
                    Some(_) if self.raw(&s).as_ref() == Some(&p) => {
                        // A renewal: nothing to reprogram (reconciliation catches kernel drift).
                        Vec::new()
                    }
                    Some(_) => {
                        // New attributes of the same lease: admitted again in its own place
                        // (an IPv6 subnet it held stays its own unless its IPv6 side is now
                        // unusable; then a peer waiting for that subnet gets it).
                        let held = self.release_v6(s);
                        self.waiting_v6.remove(&s);
                        self.peers.remove(&s);
                        let mut changes = vec![Change::Upsert(self.admit(p))];
                        if let Some(subnet) = held {
                            changes.extend(self.give_v6(subnet));
                        }
                        changes
                    }
                    None => vec![Change::Upsert(self.admit(p))],
                }
            }
        }
    }

    /// The peer at `s` with its IPv6 side, also when that waits.
    fn raw(&self, s: &Ipv4Network) -> Option<RemotePeer> {
        let mut p = self.peers.get(s)?.clone();
        p.ipv6 = p.ipv6.or_else(|| self.waiting_v6.get(s).cloned());
        Some(p)
    }

    /// Makes `p` the peer of its (free) subnet: its IPv6 side waits when that subnet is ours
    /// or another peer's. Returns the peer as programmed.
    fn admit(&mut self, mut p: RemotePeer) -> RemotePeer {
        let s = p.subnet();
        if let Some(v6) = p.ipv6.take() {
            let taken =
                self.own_v6 == Some(v6.subnet) || self.v6_holder.get(&v6.subnet).is_some_and(|h| *h != s);
            if taken {
                warn!(subnet = %s, ipv6_subnet = %v6.subnet,
                    "a peer lease claims an IPv6 subnet already held; its IPv6 side waits until that one goes");
                self.waiting_v6.insert(s, v6);
            } else {
                self.v6_holder.insert(v6.subnet, s);
                p.ipv6 = Some(v6);
            }
        }
        self.peers.insert(s, p.clone());
        p
    }

    /// Removes the peer at `s`; returns the changes of peers whose IPv6 side it held up.
    fn take(&mut self, s: Ipv4Network) -> Vec<Change> {
        self.waiting_v6.remove(&s);
        let held = self.release_v6(s);
        self.peers.remove(&s);
        held.map(|subnet| self.give_v6(subnet)).unwrap_or_default()
    }

    /// Lets go of the IPv6 subnet the peer at `s` holds, if any; returns it.
    fn release_v6(&mut self, s: Ipv4Network) -> Option<Ipv6Network> {
        let subnet = self.peers.get(&s)?.ipv6.as_ref()?.subnet;
        (self.v6_holder.get(&subnet) == Some(&s)).then(|| self.v6_holder.remove(&subnet)).flatten()?;
        Some(subnet)
    }

    /// The free IPv6 subnet `subnet` goes to a peer whose IPv6 side waits for it, if any.
    fn give_v6(&mut self, subnet: Ipv6Network) -> Vec<Change> {
        if self.own_v6 == Some(subnet) || self.v6_holder.contains_key(&subnet) {
            return Vec::new();
        }
        let Some(s) = self.waiting_v6.iter().find(|(_, v6)| v6.subnet == subnet).map(|(s, _)| *s) else {
            return Vec::new();
        };
        let (Some(v6), Some(p)) = (self.waiting_v6.remove(&s), self.peers.get_mut(&s)) else {
            return Vec::new();
        };
        self.v6_holder.insert(subnet, s);
        p.ipv6 = Some(v6);
        vec![Change::Upsert(p.clone())]
    }

    /// Logs a lease of another backend type once per (subnet, type), and remembers its
    /// `(subnet, PublicIP)` as held: after a switch of backends, the routes this node made for
    /// that lease under the other backend are still recognised as its own.
    fn note_foreign(&mut self, path: &str, key: &LeaseKey, kind: String, public_ip: Ipv4Addr) {
        if self.is_own(key) {
            return;
        }
        self.held.insert((key.ipv4, public_ip));
        if self.foreign.get(&key.ipv4) != Some(&kind) {
            warn!(key = %path, backend_type = %kind, backend = self.backend.lease_type(),
                "ignoring lease of another backend type");
            self.foreign.insert(key.ipv4, kind);
        }
    }

    /// A lease key was deleted (explicitly or by TTL).
    pub fn delete(&mut self, key: &str) -> Vec<Change> {
        match parse_lease_path(&self.subnets_dir, key) {
            Ok(k) => {
                self.foreign.remove(&k.ipv4);
                self.remove(&k)
            }
            Err(e) => {
                warn!(key = %key, reason = %e, "ignoring delete of a malformed lease key");
                Vec::new()
            }
        }
    }

    /// The lease `key` is no peer any more: when it was the peer of its subnet, another
    /// lease for that subnet takes its place, or the subnet's peer is removed. The subnet's
    /// change comes first, then those of peers whose IPv6 side it held up.
    fn remove(&mut self, key: &LeaseKey) -> Vec<Change> {
        self.shadowed.remove(key);
        let s = key.ipv4;
        if self.peers.get(&s).is_none_or(|p| p.key != *key) {
            return Vec::new();
        }
        let freed = self.take(s);
        let next = self.shadowed.iter().filter(|(k, _)| k.ipv4 == s).min_by_key(|(_, (rev, _))| *rev);
        let next = next.map(|(k, _)| *k).and_then(|k| self.shadowed.remove(&k));
        let mut changes = match next {
            Some((_, p)) => {
                info!(key = %p.key.ipv4, public_ip = %p.public_ip, "the other lease for the subnet takes over");
                vec![Change::Upsert(self.admit(p))]
            }
            None => vec![Change::Remove(s)],
        };
        changes.extend(freed);
        changes
    }

    /// A full listing replaced whatever we knew (startup, or after compaction / a broken watch):
    /// the diff against the current set. A known peer whose record is now malformed is kept.
    /// Of several leases for one subnet, the current peer stays, else the oldest is taken;
    /// likewise a current holder of an IPv6 subnet keeps it.
    pub fn snapshot<'r>(&mut self, records: impl IntoIterator<Item = &'r Record>) -> Vec<Change> {
        let mut candidates: BTreeMap<Ipv4Network, Vec<(i64, RemotePeer)>> = BTreeMap::new();
        let before = std::mem::take(&mut self.foreign);
        for rec in records {
            match self.classify(rec) {
                Classified::Peer(p) if !self.is_own(&p.key) => {
                    self.held.insert((p.subnet(), p.public_ip));
                    candidates.entry(p.subnet()).or_default().push((rec.mod_revision, p));
                }
                Classified::Peer(_) => {}
                Classified::Foreign(key, kind, public_ip) => {
                    if before.get(&key.ipv4) == Some(&kind) {
                        self.foreign.insert(key.ipv4, kind.clone());
                    }
                    self.note_foreign(&rec.key, &key, kind, public_ip);
                }
                Classified::Ipv6Only => {
                    warn!(key = %rec.key, "skipping IPv6-only lease: it has no IPv4 subnet")
                }
                Classified::Malformed { key, reason } => {
                    warn!(key = %rec.key, reason = %reason, "skipping malformed lease record");
                    let known = key.filter(|k| self.peers.get(&k.ipv4).is_some_and(|p| p.key == *k));
                    if let Some(old) = known.and_then(|k| self.raw(&k.ipv4)) {
                        candidates.entry(old.subnet()).or_default().push((rec.mod_revision, old));
                    }
                }
            }
        }
        let old = std::mem::take(&mut self.peers);
        let old_holders = std::mem::take(&mut self.v6_holder);
        self.shadowed.clear();
        self.waiting_v6.clear();
        let mut chosen = Vec::new();
        for (s, mut leases) in candidates {
            let current = old.get(&s).map(|p| p.key);
            let pick = leases
                .iter()
                .position(|(_, p)| Some(p.key) == current)
                .or_else(|| leases.iter().enumerate().min_by_key(|(_, (rev, _))| *rev).map(|(i, _)| i))
                .unwrap_or(0);
            chosen.push(leases.swap_remove(pick).1);
            self.shadowed.extend(leases.into_iter().map(|(rev, p)| (p.key, (rev, p))));
        }
        // Current IPv6 holders are admitted first, so they keep their IPv6 subnet.
        let holds = |p: &RemotePeer| {
            p.ipv6.as_ref().is_some_and(|v6| old_holders.get(&v6.subnet) == Some(&p.subnet()))
        };
        let (first, rest): (Vec<_>, Vec<_>) = chosen.into_iter().partition(holds);
        for p in first.into_iter().chain(rest) {
            self.admit(p);
        }
        let mut changes: Vec<Change> =
            old.keys().filter(|s| !self.peers.contains_key(s)).map(|s| Change::Remove(*s)).collect();
        for (s, p) in &self.peers {
            if old.get(s) != Some(p) {
                changes.push(Change::Upsert(p.clone()));
            }
        }
        changes
    }
}

/// The IPv6 side of a dual-stack lease, or `None` with a warning naming what is wrong with it
/// (the peer's IPv4 side is unaffected).
fn ipv6_side(rec: &Record, subnet: Ipv6Network, attrs: &LeaseAttrs) -> Option<PeerV6> {
    let problem = match (attrs.public_ipv6, attrs.vxlan_v6_data()) {
        (Some(public_ipv6), Ok(d)) => {
            return Some(PeerV6 { subnet, public_ipv6, vtep_mac: d.vtep_mac, vni: d.vni })
        }
        (None, _) => attrs.ipv6_problem.clone().unwrap_or_else(|| "no PublicIPv6".to_string()),
        (Some(_), Err(e)) => format!("BackendV6Data: {e}"),
    };
    warn!(key = %rec.key, reason = %problem, "skipping the IPv6 part of a lease record");
    None
}

/// The IPv6 side of a dual-stack host-gw lease (its `PublicIPv6`), or `None` with a warning
/// when it has none or a malformed one (the peer's IPv4 side is unaffected).
fn host_gw_ipv6_side(rec: &Record, subnet: Ipv6Network, attrs: &LeaseAttrs) -> Option<PeerV6> {
    if let Some(public_ipv6) = attrs.public_ipv6 {
        return Some(PeerV6 { subnet, public_ipv6, vtep_mac: [0; 6], vni: 0 });
    }
    let problem = attrs.ipv6_problem.clone().unwrap_or_else(|| "no PublicIPv6".to_string());
    warn!(key = %rec.key, reason = %problem, "skipping the IPv6 part of a lease record");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/coreos.com/network/subnets/";

    fn rec(name: &str, value: &str) -> Record {
        Record { key: format!("{DIR}{name}"), value: value.as_bytes().to_vec(), lease: 1, mod_revision: 1 }
    }

    fn vx(ip: &str, mac: &str) -> String {
        format!(
            r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
        )
    }

    fn own(s: &str) -> LeaseKey {
        LeaseKey { ipv4: net(s), ipv6: None }
    }

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    #[test]
    fn put_delete_own_and_non_vxlan() {
        let mut set = PeerSet::new(DIR);
        assert!(set.set_own(own("10.5.1.0/24")).is_empty());
        assert!(set.put(&rec("10.5.1.0-24", &vx("198.18.0.2", "02:00:00:00:00:01"))).is_empty());
        let c = set.put(&rec("10.5.2.0-24", &vx("198.18.0.3", "02:00:00:00:00:02")));
        assert!(matches!(&c[..], [Change::Upsert(p)] if p.public_ip == Ipv4Addr::new(198, 18, 0, 3)));
        // Identical re-put (renewal): no change.
        assert!(set.put(&rec("10.5.2.0-24", &vx("198.18.0.3", "02:00:00:00:00:02"))).is_empty());
        // Changed MAC: upsert.
        let c = set.put(&rec("10.5.2.0-24", &vx("198.18.0.3", "02:00:00:00:00:09")));
        assert!(matches!(&c[..], [Change::Upsert(p)] if p.vtep_mac[5] == 9));
        assert!(set.put(&rec("10.5.3.0-24", r#"{"PublicIP":"198.18.0.4","BackendType":"udp"}"#)).is_empty());
        // A vxlan peer turning into udp is removed.
        assert_eq!(
            set.put(&rec("10.5.2.0-24", r#"{"PublicIP":"198.18.0.3","BackendType":"udp"}"#)),
            vec![Change::Remove(net("10.5.2.0/24"))]
        );
        set.put(&rec("10.5.4.0-24", &vx("198.18.0.5", "02:00:00:00:00:05")));
        assert_eq!(set.delete(&format!("{DIR}10.5.4.0-24")), vec![Change::Remove(net("10.5.4.0/24"))]);
        assert!(set.delete(&format!("{DIR}10.5.4.0-24")).is_empty());
        assert!(set.is_empty());
    }

    fn hg(ip: &str) -> String {
        format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#)
    }

    #[test]
    fn host_gw_set_takes_host_gw_leases_and_skips_vxlan_ones() {
        let mut set = PeerSet::for_backend(DIR, BackendKind::HostGw);
        set.set_own(own("10.5.1.0/24"));
        assert!(set.put(&rec("10.5.1.0-24", &hg("198.18.0.2"))).is_empty(), "own lease");
        let c = set.put(&rec("10.5.2.0-24", &hg("198.18.0.3")));
        assert!(matches!(&c[..], [Change::Upsert(p)] if p.public_ip == Ipv4Addr::new(198, 18, 0, 3)));
        assert!(set.put(&rec("10.5.2.0-24", &hg("198.18.0.3"))).is_empty(), "renewal");
        let c = set.put(&rec("10.5.2.0-24", &hg("198.18.0.9")));
        assert!(matches!(&c[..], [Change::Upsert(p)] if p.public_ip == Ipv4Addr::new(198, 18, 0, 9)));
        // A vxlan lease is not a peer of a host-gw node, and a peer switching to vxlan goes.
        assert!(set.put(&rec("10.5.3.0-24", &vx("198.18.0.4", "02:00:00:00:00:03"))).is_empty());
        assert_eq!(
            set.put(&rec("10.5.2.0-24", &vx("198.18.0.9", "02:00:00:00:00:02"))),
            vec![Change::Remove(net("10.5.2.0/24"))]
        );
        assert!(set.is_empty());
        // Foreign leases are still remembered as held (a switch's leftovers are recognised).
        assert!(set.held().contains(&(net("10.5.3.0/24"), Ipv4Addr::new(198, 18, 0, 4))));
        // Exact type match, as upstream: "HOST-GW" is another type.
        let upper = r#"{"PublicIP":"198.18.0.5","BackendType":"HOST-GW"}"#;
        assert!(set.put(&rec("10.5.4.0-24", upper)).is_empty());
        let c = set.snapshot(&[
            rec("10.5.5.0-24", &hg("198.18.0.6")),
            rec("10.5.3.0-24", &vx("198.18.0.4", "02:00:00:00:00:03")),
        ]);
        assert!(matches!(&c[..], [Change::Upsert(p)] if p.subnet() == net("10.5.5.0/24")));
    }

    #[test]
    fn dual_stack_host_gw_lease_has_an_ipv6_side_without_backend_v6_data() {
        let mut set = PeerSet::for_backend(DIR, BackendKind::HostGw);
        let dual = r#"{"PublicIP":"198.18.0.3","PublicIPv6":"2001:2::3","BackendType":"host-gw"}"#;
        let c = set.put(&rec("10.5.2.0-24&fd00:5:0:2::-64", dual));
        let [Change::Upsert(p)] = &c[..] else { panic!("{c:?}") };
        let v6 = p.ipv6.as_ref().unwrap();
        assert_eq!(
            (v6.subnet.to_string(), v6.public_ipv6.to_string()),
            ("fd00:5:0:2::/64".into(), "2001:2::3".into())
        );
        assert_eq!((v6.vtep_mac, v6.vni), ([0; 6], 0));
        // No or a malformed PublicIPv6: the IPv4 side stays, without an IPv6 one.
        for value in [
            r#"{"PublicIP":"198.18.0.4","PublicIPv6":null,"BackendType":"host-gw"}"#,
            r#"{"PublicIP":"198.18.0.4","PublicIPv6":"nope","BackendType":"host-gw"}"#,
        ] {
            let c = set.put(&rec("10.5.3.0-24&fd00:5:0:3::-64", value));
            assert!(
                matches!(&c[..], [Change::Upsert(p)] if p.ipv6.is_none() && p.public_ip == Ipv4Addr::new(198, 18, 0, 4)),
                "{value}"
            );
            set.delete(&format!("{DIR}10.5.3.0-24&fd00:5:0:3::-64"));
        }
        // An IPv4-only key has no IPv6 side even with a PublicIPv6.
        let c = set.put(&rec("10.5.4.0-24", dual));
        assert!(matches!(&c[..], [Change::Upsert(p)] if p.ipv6.is_none()));
    }

    #[test]
    fn vxlan_set_skips_host_gw_leases() {
        let mut set = PeerSet::new(DIR);
        assert!(set.put(&rec("10.5.2.0-24", &hg("198.18.0.3"))).is_empty());
        assert!(set.snapshot(&[rec("10.5.2.0-24", &hg("198.18.0.3"))]).is_empty());
        assert!(set.is_empty());
    }

    #[test]
    fn malformed_records_never_drop_other_peers() {
        let mut set = PeerSet::new(DIR);
        set.put(&rec("10.5.2.0-24", &vx("198.18.0.3", "02:00:00:00:00:02")));
        set.put(&rec("10.5.3.0-24", &vx("198.18.0.4", "02:00:00:00:00:03")));
        for (name, value) in [
            ("garbage", "{}"),
            ("10.5.9.0-24", "not json"),
            ("10.5.9.0-24", r#"{"PublicIP":"nope"}"#),
            ("10.5.9.0-24", r#"{"PublicIP":"1.2.3.4","BackendType":"vxlan","BackendData":{"VNI":1}}"#),
            // A bad re-put of a known peer keeps its last good attributes.
            ("10.5.2.0-24", "}{"),
        ] {
            assert!(set.put(&rec(name, value)).is_empty(), "{name} {value}");
        }
        assert!(set.delete(&format!("{DIR}not-a-lease")).is_empty());
        assert_eq!(set.len(), 2);
        // Snapshot with a malformed record for a known peer and junk keys: nothing is lost.
        let snap = vec![
            rec("10.5.2.0-24", "junk"),
            rec("10.5.3.0-24", &vx("198.18.0.4", "02:00:00:00:00:03")),
            rec("meta-x", "1"),
        ];
        assert!(set.snapshot(&snap).is_empty());
        assert_eq!(set.len(), 2);
    }

    fn dual(ip: &str, ip6: &str, mac6: &str) -> String {
        format!(
            r#"{{"PublicIP":"{ip}","PublicIPv6":{ip6},"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}},"BackendV6Data":{{"VNI":1,"VtepMAC":"{mac6}"}}}}"#
        )
    }

    fn rec_at(name: &str, value: &str, mod_revision: i64) -> Record {
        Record { mod_revision, ..rec(name, value) }
    }

    fn upserted(c: &[Change]) -> Vec<(String, Option<String>)> {
        c.iter()
            .filter_map(|c| match c {
                Change::Upsert(p) => {
                    Some((p.public_ip.to_string(), p.ipv6.as_ref().map(|v| v.subnet.to_string())))
                }
                Change::Remove(_) => None,
            })
            .collect()
    }

    /// Two nodes racing for one IPv4 subnet with different IPv6 subnets both create their
    /// dual-stack key; the second deletes its own: the first stays the peer throughout.
    #[test]
    fn a_second_lease_for_a_subnet_waits_and_takes_over_when_the_first_goes() {
        let first = ("10.5.2.0-24&fd00:0:0:9::-64", dual("198.18.0.12", r#""fd18::c""#, "02:00:00:00:06:0c"));
        let second =
            ("10.5.2.0-24&fd00:0:0:b::-64", dual("198.18.0.10", r#""fd18::a""#, "02:00:00:00:06:0a"));
        let mut set = PeerSet::new(DIR);
        assert_eq!(upserted(&set.put(&rec(first.0, &first.1)))[0].0, "198.18.0.12");
        assert!(set.put(&rec(second.0, &second.1)).is_empty(), "the second waits");
        assert!(set.delete(&format!("{DIR}{}", second.0)).is_empty());
        assert_eq!(
            set.get(&net("10.5.2.0/24")).map(|p| p.public_ip.to_string()).as_deref(),
            Some("198.18.0.12")
        );
        // When the first goes, the waiting one takes over.
        set.put(&rec(second.0, &second.1));
        let c = set.delete(&format!("{DIR}{}", first.0));
        assert_eq!(upserted(&c), [("198.18.0.10".to_string(), Some("fd00:0:0:b::/64".to_string()))], "{c:?}");
        assert_eq!(set.delete(&format!("{DIR}{}", second.0)), vec![Change::Remove(net("10.5.2.0/24"))]);
        assert!(set.is_empty());
        // A listing holding both: the older one is the peer, the other waits.
        let c = set.snapshot(&[rec_at(second.0, &second.1, 7), rec_at(first.0, &first.1, 5)]);
        assert_eq!(upserted(&c)[0].0, "198.18.0.12", "{c:?}");
        assert!(set.delete(&format!("{DIR}{}", second.0)).is_empty());
        assert!(set.snapshot(&[rec(first.0, &first.1)]).is_empty(), "nothing changed");
        // The peer's lease turning into another backend's gives the subnet to the other one.
        set.put(&rec(second.0, &second.1));
        let c = set.put(&rec(first.0, &hg("198.18.0.12")));
        assert_eq!(upserted(&c)[0].0, "198.18.0.10", "{c:?}");
    }

    /// Two leases with different IPv4 subnets claim one IPv6 subnet, or a peer claims ours:
    /// the first claim keeps it, the other peer's IPv6 side waits, and gets it when it is free.
    #[test]
    fn a_claimed_ipv6_subnet_is_programmed_once() {
        let a = ("10.5.2.0-24&fd00:0:0:9::-64", dual("198.18.0.11", r#""fd18::b""#, "02:00:00:00:06:0b"));
        let b = ("10.5.3.0-24&fd00:0:0:9::-64", dual("198.18.0.12", r#""fd18::c""#, "02:00:00:00:06:0c"));
        let v6 =
            |s: &PeerSet, n: &str| s.get(&net(n)).and_then(|p| p.ipv6.as_ref()).map(|v| v.subnet.to_string());
        let mut set = PeerSet::new(DIR);
        set.put(&rec(a.0, &a.1));
        let c = set.put(&rec(b.0, &b.1));
        assert_eq!(upserted(&c), [("198.18.0.12".to_string(), None)], "b's IPv4 side only");
        // A renewal of b changes nothing; a's going gives b its IPv6 side, after a's removal.
        assert!(set.put(&rec(b.0, &b.1)).is_empty());
        let c = set.delete(&format!("{DIR}{}", a.0));
        assert_eq!(c[0], Change::Remove(net("10.5.2.0/24")), "{c:?}");
        assert_eq!(upserted(&c), [("198.18.0.12".to_string(), Some("fd00:0:0:9::/64".to_string()))]);
        // b's IPv6 part turning malformed gives the subnet to a; mended, b waits for it.
        set.put(&rec(a.0, &a.1));
        let bad_b = dual("198.18.0.12", r#""""#, "02:00:00:00:06:0c");
        let c = set.put(&rec(b.0, &bad_b));
        assert_eq!(
            upserted(&c),
            [
                ("198.18.0.12".to_string(), None),
                ("198.18.0.11".to_string(), Some("fd00:0:0:9::/64".to_string()))
            ],
            "{c:?}"
        );
        let c = set.put(&rec(b.0, &b.1));
        assert_eq!(upserted(&c), [("198.18.0.12".to_string(), None)], "{c:?}");
        assert!(set.delete(&format!("{DIR}{}", a.0)).contains(&Change::Remove(net("10.5.2.0/24"))));
        assert_eq!(v6(&set, "10.5.3.0/24").as_deref(), Some("fd00:0:0:9::/64"));
        // A listing with both, b holding it: b keeps it.
        let c = set.snapshot(&[rec(a.0, &a.1), rec(b.0, &b.1)]);
        assert_eq!(upserted(&c), [("198.18.0.11".to_string(), None)], "{c:?}");
        assert_eq!(v6(&set, "10.5.3.0/24").as_deref(), Some("fd00:0:0:9::/64"));
        // Our own lease takes that IPv6 subnet: b's IPv6 side waits; a new own one frees it.
        let c = set
            .set_own(LeaseKey { ipv4: net("10.5.1.0/24"), ipv6: Some("fd00:0:0:9::/64".parse().unwrap()) });
        assert_eq!(upserted(&c), [("198.18.0.12".to_string(), None)], "{c:?}");
        assert_eq!(v6(&set, "10.5.2.0/24"), None);
        let c = set
            .set_own(LeaseKey { ipv4: net("10.5.1.0/24"), ipv6: Some("fd00:0:0:1::/64".parse().unwrap()) });
        assert_eq!(upserted(&c).len(), 1, "{c:?}");
        assert!(
            v6(&set, "10.5.2.0/24").is_some() != v6(&set, "10.5.3.0/24").is_some(),
            "exactly one holds it"
        );
    }

    #[test]
    fn dual_stack_peers_and_malformed_ipv6_parts() {
        let mut set = PeerSet::new(DIR);
        set.set_own(own("10.5.1.0/24"));
        let c = set.put(&rec(
            "10.5.2.0-24&fd00:0:0:2::-64",
            &dual("198.18.0.3", r#""fd18::3""#, "02:00:00:00:06:02"),
        ));
        let [Change::Upsert(p)] = &c[..] else { panic!("{c:?}") };
        let v6 = p.ipv6.as_ref().unwrap();
        assert_eq!(v6.subnet.to_string(), "fd00:0:0:2::/64");
        assert_eq!(v6.public_ipv6.to_string(), "fd18::3");
        assert_eq!(v6.vtep_mac, [2, 0, 0, 0, 6, 2]);
        // A malformed IPv6 part (PublicIPv6, BackendV6Data) keeps the peer's IPv4 side and
        // every other peer.
        for (name, value) in [
            ("10.5.3.0-24&fd00:0:0:3::-64", dual("198.18.0.4", r#""""#, "02:00:00:00:06:03")),
            ("10.5.4.0-24&fd00:0:0:4::-64", dual("198.18.0.5", r#""fd18:::5""#, "02:00:00:00:06:04")),
            ("10.5.5.0-24&fd00:0:0:5::-64", dual("198.18.0.6", r#""fd18::6""#, "nope")),
            ("10.5.6.0-24&fd00:0:0:6::-64", vx("198.18.0.7", "02:00:00:00:00:07")),
        ] {
            let c = set.put(&rec(name, &value));
            assert!(matches!(&c[..], [Change::Upsert(p)] if p.ipv6.is_none()), "{name}: {c:?}");
        }
        // A malformed IPv6 part of a key makes it no lease at all; IPv6-only leases of upstream
        // nodes (0.0.0.0-0&…) never become a 0.0.0.0/0 peer.
        for name in ["10.5.7.0-24&FD00::-64", "10.5.7.0-24&fd00::-129", "0.0.0.0-0&fd00:0:0:8::-64"] {
            assert!(
                set.put(&rec(name, &dual("198.18.0.8", r#""fd18::8""#, "02:00:00:00:06:08"))).is_empty(),
                "{name}"
            );
        }
        assert_eq!(set.len(), 5);
        let snap: Vec<Record> = set
            .iter()
            .map(|p| {
                rec(&p.key.render(), &dual(&p.public_ip.to_string(), r#""fd18::9""#, "02:00:00:00:06:09"))
            })
            .chain([rec(
                "0.0.0.0-0&fd00:0:0:8::-64",
                &dual("198.18.0.8", r#""fd18::8""#, "02:00:00:00:06:08"),
            )])
            .collect();
        let c = set.snapshot(&snap);
        assert_eq!(c.len(), 5, "every peer's IPv6 side changed: {c:?}");
        assert!(set.iter().all(|p| p.ipv6.as_ref().is_some_and(|v| v.public_ipv6.to_string() == "fd18::9")));
        assert!(set.get(&"0.0.0.0/0".parse().unwrap()).is_none());
    }

    #[test]
    fn held_leases_outlive_their_peers_until_forgotten() {
        let mut set = PeerSet::new(DIR);
        set.put(&rec("10.5.2.0-24", &vx("198.18.0.3", "02:00:00:00:00:02")));
        // The node moved to another address, then the lease went.
        set.put(&rec("10.5.2.0-24", &vx("198.18.0.9", "02:00:00:00:00:02")));
        set.snapshot(&[rec("10.5.3.0-24", &vx("198.18.0.4", "02:00:00:00:00:03"))]);
        let pair = |s: &str, ip: &str| (net(s), ip.parse::<Ipv4Addr>().unwrap());
        let all: Vec<_> = set.held().iter().copied().collect();
        assert_eq!(
            all,
            [
                pair("10.5.2.0/24", "198.18.0.3"),
                pair("10.5.2.0/24", "198.18.0.9"),
                pair("10.5.3.0/24", "198.18.0.4")
            ]
        );
        set.forget_held(|s, ip| (*s, *ip) == pair("10.5.2.0/24", "198.18.0.9"));
        let all: Vec<_> = set.held().iter().copied().collect();
        assert_eq!(
            all,
            [pair("10.5.2.0/24", "198.18.0.9"), pair("10.5.3.0/24", "198.18.0.4")],
            "current kept"
        );
    }

    #[test]
    fn snapshot_diffs() {
        let mut set = PeerSet::new(DIR);
        set.set_own(own("10.5.1.0/24"));
        set.put(&rec("10.5.2.0-24", &vx("198.18.0.3", "02:00:00:00:00:02")));
        set.put(&rec("10.5.3.0-24", &vx("198.18.0.4", "02:00:00:00:00:03")));
        let snap = vec![
            rec("10.5.1.0-24", &vx("198.18.0.2", "02:00:00:00:00:01")),
            rec("10.5.3.0-24", &vx("198.18.0.4", "02:00:00:00:00:33")),
            rec("10.5.4.0-24", &vx("198.18.0.5", "02:00:00:00:00:04")),
        ];
        let c = set.snapshot(&snap);
        assert_eq!(c.len(), 3, "{c:?}");
        assert_eq!(c[0], Change::Remove(net("10.5.2.0/24")));
        assert!(
            matches!(&c[1], Change::Upsert(p) if p.subnet() == net("10.5.3.0/24") && p.vtep_mac[5] == 0x33)
        );
        assert!(matches!(&c[2], Change::Upsert(p) if p.subnet() == net("10.5.4.0/24")));
    }
}
