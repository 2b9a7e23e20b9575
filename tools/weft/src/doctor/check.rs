//! The diagnosis itself, pure: etcd's leases and config plus every node's kernel view in,
//! findings grouped by root cause and the per-node dry run out. No I/O, so every check is
//! unit-tested with hand-made views.
//!
//! Desired state per node is what flanneld's reconciler computes: the peer set flanneld would
//! derive from the same lease records ([`PeerSet::snapshot`], own subnet excluded), turned into
//! [`Peer`]s and compared with the node's kernel by [`plan_reconcile`]. The dry run is exactly
//! those ops; the findings explain them (and what a reconcile cannot fix: the device, leases,
//! MTU, sysctls).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::{IpNetwork, Ipv4Network};
use serde::Serialize;
use weft_common::mac::parse_mac;
use weft_dataplane::own::Ownership;
use weft_dataplane::plan::{plan_reconcile, Peer};
use weft_dataplane::view::{DataplaneView, LinkView};
use weft_dataplane::{KernelState, Mac, NetOp};
use weft_flanneld::daemon::VXLAN_OVERHEAD;
use weft_flanneld::lease::{format_mac, parse_lease_path, subnets_dir, LeaseAttrs, LeaseKey};
use weft_flanneld::network::{BackendKind, NetworkSpec};
use weft_flanneld::peers::PeerSet;
use weft_flanneld::registry::Record;

use crate::cause::Cause;

mod ipv6;
mod underlay;

/// The kernel's VXLAN port when flanneld sends none (`Backend.Port` 0).
pub const KERNEL_VXLAN_PORT: u16 = 8472;

/// Everything the diagnosis reads.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub prefix: String,
    pub spec: NetworkSpec,
    /// Every record under `<prefix>/subnets/`, as listed.
    pub records: Vec<Record>,
    /// Revision of the listing.
    pub revision: i64,
    /// Each node's view by PublicIP, or why it could not be read.
    pub views: BTreeMap<Ipv4Addr, Result<DataplaneView, String>>,
}

/// How bad a finding is: errors make the cluster unhealthy (exit 1), warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One root cause and the nodes it affects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub cause: Cause,
    /// F1–F13.
    pub failure_mode: Option<&'static str>,
    pub severity: Severity,
    /// The nodes (PublicIPs) where the broken object is, sorted.
    pub nodes: Vec<String>,
    /// The node the objects are about (the peer whose route/MAC/lease is wrong), when any.
    pub peer: Option<String>,
    pub message: String,
    pub hint: &'static str,
    /// The objects, one line each (`198.18.0.10: add fdb ... dst ...`).
    pub objects: Vec<String>,
    /// `"ipv6"` for a finding on a dual-stack node's IPv6 side (`flannel-v6.<VNI>`, its
    /// entries and the leases' IPv6 parts); absent for the IPv4 side and node-wide causes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<&'static str>,
}

/// One node as seen from etcd and its view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSummary {
    /// The node's name in findings: its PublicIP.
    pub name: String,
    pub subnet: Option<Ipv4Network>,
    pub lease_key: Option<String>,
    /// `VtepMAC` in etcd.
    pub vtep_mac: Option<String>,
    /// The MAC its `flannel.<VNI>` really has.
    pub device_mac: Option<String>,
    /// `ok` or `unavailable`.
    pub view: &'static str,
    pub error: Option<String>,
    /// The dual-stack device `flannel-v6.<VNI>` with its entries (checked in `check/ipv6.rs`).
    pub ipv6_device: Option<super::ipv6::Ipv6Device>,
}

/// What a reconcile on one node would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeOps {
    pub node: String,
    pub ops: Vec<String>,
}

/// An overlay link from one node's point of view (for the picture).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub from: String,
    pub to: String,
    /// Causes of findings that break it: this link's own entries, then node-level causes of
    /// either end (device, lease, view); empty when healthy.
    pub broken: Vec<Cause>,
    /// How many of `broken` are this link's own (the rest come from its ends).
    pub own: usize,
}

/// The diagnosis.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub healthy: bool,
    pub etcd_prefix: String,
    pub etcd_revision: i64,
    pub network: Ipv4Network,
    /// The cluster's backend (`vxlan`, `host-gw`).
    pub backend: &'static str,
    pub nodes: Vec<NodeSummary>,
    pub findings: Vec<Finding>,
    /// Per node, the ops flanneld's next reconcile would apply (nodes without any are left out).
    pub dry_run: Vec<NodeOps>,
    #[serde(skip)]
    pub links: Vec<Link>,
}

/// A parsed VXLAN lease.
#[derive(Debug, Clone)]
struct Lease {
    key: String,
    subnet: Ipv4Network,
    /// The subnets its key names (both families).
    subnets: LeaseKey,
    public_ip: Ipv4Addr,
    vtep_mac: Option<Mac>,
    /// The lease's IPv6 side (dual stack), when it has a usable one.
    v6: Option<ipv6::LeaseV6>,
}

/// Findings accumulated under a grouping key.
#[derive(Default)]
struct Groups {
    map: BTreeMap<(Cause, String), Finding>,
    /// The family findings added now are about (`Some("ipv6")` during the IPv6 pass).
    family: Option<&'static str>,
}

impl Groups {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        cause: Cause,
        severity: Severity,
        subject: &str,
        node: &str,
        peer: Option<&str>,
        object: String,
        message: impl FnOnce() -> String,
    ) {
        let family = self.family;
        let subject = match family {
            Some(f) => format!("{f} {subject}"),
            None => subject.to_string(),
        };
        let f = self.map.entry((cause, subject)).or_insert_with(|| Finding {
            cause,
            failure_mode: cause.failure_mode(),
            severity,
            nodes: Vec::new(),
            peer: peer.map(String::from),
            message: match family {
                Some("ipv6") => format!("IPv6: {}", message()),
                _ => message(),
            },
            hint: cause.hint(),
            objects: Vec::new(),
            family,
        });
        if !f.nodes.iter().any(|n| n == node) {
            f.nodes.push(node.to_string());
        }
        f.objects.push(object);
    }
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Replaces `{key} <verb>` by the count and the verb in agreement (`1 node has`, `3 nodes have`).
fn counted(message: &str, key: &str, n: usize) -> String {
    let mut out = message.to_string();
    if n == 1 {
        for (plural, singular) in [
            ("have", "has"),
            ("hold", "holds"),
            ("keep", "keeps"),
            ("send", "sends"),
            ("route", "routes"),
            ("use", "uses"),
        ] {
            out = out.replace(&format!("{key} {plural} "), &format!("{key} {singular} "));
        }
    }
    out.replace(key, &count(n, "node"))
}

/// The grouped messages name how many nodes are affected, so they are finished at the end.
fn finish(mut f: Finding) -> Finding {
    f.nodes.sort_by_key(|n| n.parse::<Ipv4Addr>().map(u32::from).unwrap_or(u32::MAX));
    f.message = counted(&f.message, "{N}", f.nodes.len());
    f
}

/// What a node lacks, per cause, when one node lacks it for several peers.
fn lacking(c: Cause) -> Option<&'static str> {
    Some(match c {
        Cause::NoRoute => "routes",
        Cause::RouteWrongDev => "correct routes",
        Cause::NeighMissing => "neighbour entries",
        Cause::NeighMacStale => "current neighbour MACs",
        Cause::FdbMissing => "FDB entries",
        Cause::FdbWrongDst => "correct FDB destinations",
        _ => return None,
    })
}

/// One node missing the same kind of entry for several peers is one root cause on that node
/// (a flushed table, a restarted node), not one finding per peer.
fn merge_per_node(findings: Vec<Finding>) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    let mut merged: BTreeMap<(Cause, String, Option<&'static str>), Vec<Finding>> = BTreeMap::new();
    for f in findings {
        match (&f.peer, f.nodes.as_slice(), lacking(f.cause)) {
            (Some(_), [node], Some(_)) => {
                merged.entry((f.cause, node.clone(), f.family)).or_default().push(f)
            }
            _ => out.push(f),
        }
    }
    for ((cause, node, family), group) in merged {
        if group.len() == 1 {
            out.extend(group);
            continue;
        }
        let peers: Vec<String> = group.iter().filter_map(|f| f.peer.clone()).collect();
        let mut rest = group.into_iter();
        let Some(mut first) = rest.next() else { continue };
        first.message = format!(
            "{}{node} lacks {} for {} peers: {}",
            if family == Some("ipv6") { "IPv6: " } else { "" },
            lacking(cause).unwrap_or("entries"),
            peers.len(),
            peers.join(", ")
        );
        first.peer = None;
        first.objects.extend(rest.flat_map(|f| f.objects));
        out.push(first);
    }
    out
}

/// A lease of the cluster's backend: flanneld takes only those as peers (the others are
/// skipped with a warning, `flanneld/src/peers.rs`).
pub fn of_backend(attrs: &LeaseAttrs, backend: BackendKind) -> bool {
    match backend {
        BackendKind::Vxlan => attrs.is_vxlan(),
        BackendKind::HostGw => attrs.is_host_gw(),
    }
}

fn parse_leases(prefix: &str, records: &[Record], backend: BackendKind) -> Vec<Lease> {
    let dir = subnets_dir(prefix);
    records
        .iter()
        .filter_map(|r| {
            let key = parse_lease_path(&dir, &r.key).ok()?;
            let attrs = LeaseAttrs::parse(&r.value).ok()?;
            if !of_backend(&attrs, backend) {
                return None;
            }
            Some(Lease {
                key: r.key.clone(),
                subnet: key.ipv4,
                subnets: key,
                public_ip: attrs.public_ip,
                vtep_mac: attrs.vxlan_data().ok().map(|d| d.vtep_mac),
                v6: ipv6::LeaseV6::of(&key, &attrs, backend),
            })
        })
        .collect()
}

fn gw_of(subnet: &Ipv4Network) -> IpAddr {
    IpAddr::V4(subnet.network())
}

/// The peers flanneld on a node holding `own` would program, from the same records, and the
/// ownership rule its reconciler applies with them (the leases it knows; a remote reader cannot
/// know the ones a running flanneld saw removed).
pub fn desired_peers(
    prefix: &str,
    spec: &NetworkSpec,
    records: &[Record],
    own: Option<&str>,
    own_subnets: Option<LeaseKey>,
    view: &DataplaneView,
) -> (Vec<Peer>, Ownership) {
    let mut set = PeerSet::for_backend(&subnets_dir(prefix), spec.backend_type);
    if let Some(k) = own_subnets {
        set.set_own(k);
    }
    let others: Vec<Record> = records.iter().filter(|r| Some(r.key.as_str()) != own).cloned().collect();
    set.snapshot(&others);
    let connected = connected(view);
    let host_gw = spec.backend_type == BackendKind::HostGw;
    // flanneld answers "on-link" from a route dump (`KernelState::is_onlink`, with host-gw
    // `is_onlink_on` the external interface); the view holds only the overlay's routes, so
    // remotely "on-link" is "inside a prefix of the underlay interface".
    let on_link = |ip: Ipv4Addr| connected.iter().any(|n| n.contains(ip));
    let peers = set
        .iter()
        // host-gw skips a peer that is not on the L2 segment (`flanneld/src/daemon/mesh.rs`
        // `peer_for`): no route is desired for it; [`off_link_peers`] names it.
        .filter(|p| !host_gw || on_link(p.public_ip))
        .map(|p| Peer {
            subnet: p.subnet().into(),
            public_ip: p.public_ip.into(),
            vtep_mac: p.vtep_mac,
            direct: host_gw || (spec.backend.direct_routing && on_link(p.public_ip)),
        })
        .collect();
    let owner = Ownership {
        network: spec.network.into(),
        subnet_len: spec.subnet_len,
        leases: set.held().iter().map(|(s, ip)| ((*s).into(), (*ip).into())).collect(),
        // host-gw routes have DirectRouting's shape (`flanneld/src/daemon/mesh.rs` `ownership`).
        direct: spec.backend.direct_routing || host_gw,
    };
    (peers, owner)
}

/// The IPv4 prefixes of the node's external interface (its connected networks).
fn connected(v: &DataplaneView) -> Vec<Ipv4Network> {
    connected_of(v, |a| match a {
        IpNetwork::V4(n) => Some(*n),
        IpNetwork::V6(_) => None,
    })
}

/// The prefixes of the node's external interface that `pick` keeps.
fn connected_of<N>(v: &DataplaneView, pick: impl Fn(&IpNetwork) -> Option<N>) -> Vec<N> {
    v.underlay.iter().flat_map(|u| u.addresses.iter()).filter_map(pick).collect()
}

/// host-gw: the peers (subnet, PublicIP) whose PublicIP is not on-link on the node's
/// external interface (see [`desired_peers`]), which flanneld leaves unrouted.
fn off_link_peers(
    c: &Cluster,
    own_subnet: Option<Ipv4Network>,
    v: &DataplaneView,
) -> Vec<(Ipv4Network, Ipv4Addr)> {
    if c.spec.backend_type != BackendKind::HostGw {
        return Vec::new();
    }
    let connected = connected(v);
    parse_leases(&c.prefix, &c.records, c.spec.backend_type)
        .into_iter()
        .filter(|l| Some(l.subnet) != own_subnet && !connected.iter().any(|n| n.contains(l.public_ip)))
        .map(|l| (l.subnet, l.public_ip))
        .collect()
}

/// The kernel state the reconciler compares with: a dump of the device's entries and the
/// routes; with host-gw (no device, flanneld's device index 0) only the routes.
fn actual_state(spec: &NetworkSpec, v: &DataplaneView) -> KernelState {
    if spec.backend_type != BackendKind::HostGw {
        return v.kernel_state();
    }
    KernelState {
        device: 0,
        routes: v
            .routes
            .iter()
            .filter(|r| r.dst.is_ipv4())
            .map(weft_dataplane::view::RouteView::kernel)
            .collect(),
        ..KernelState::default()
    }
}

/// Runs every check.
pub fn diagnose(c: &Cluster) -> Report {
    let leases = parse_leases(&c.prefix, &c.records, c.spec.backend_type);
    let mut nodes_ip: Vec<Ipv4Addr> = leases.iter().map(|l| l.public_ip).collect();
    nodes_ip.extend(c.views.keys().copied());
    let nodes_ip: Vec<Ipv4Addr> = nodes_ip.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
    let by_ip = |ip: &Ipv4Addr| leases.iter().filter(|l| l.public_ip == *ip).collect::<Vec<_>>();
    let by_subnet: BTreeMap<Ipv4Network, &Lease> = leases.iter().map(|l| (l.subnet, l)).collect();
    let by_mac: BTreeMap<Mac, &Lease> = leases.iter().filter_map(|l| Some((l.vtep_mac?, l))).collect();

    let mut g = Groups::default();
    let mut summaries = Vec::new();
    let mut dry_run = Vec::new();
    let mut holders_of: BTreeMap<(IpAddr, Mac), Vec<String>> = BTreeMap::new();
    let mut broken_pairs: BTreeMap<(String, String), BTreeSet<Cause>> = BTreeMap::new();
    let mut broken_nodes: BTreeMap<String, BTreeSet<Cause>> = BTreeMap::new();

    // F13: overlapping leases (two keys for one subnet, or nested subnets).
    for (i, a) in leases.iter().enumerate() {
        for b in leases.iter().skip(i + 1) {
            if a.subnet.contains(b.subnet.network()) || b.subnet.contains(a.subnet.network()) {
                let (na, nb) = (a.public_ip.to_string(), b.public_ip.to_string());
                let subject = format!("{}|{}", a.key, b.key);
                let msg = || {
                    format!(
                        "leases {} ({}) and {} ({}) overlap: traffic for {} flips between the nodes",
                        a.key, a.public_ip, b.key, b.public_ip, a.subnet
                    )
                };
                g.add(Cause::LeaseOverlap, Severity::Error, &subject, &na, None, a.key.clone(), msg);
                g.add(Cause::LeaseOverlap, Severity::Error, &subject, &nb, None, b.key.clone(), msg);
            }
        }
    }

    for ip in &nodes_ip {
        let name = ip.to_string();
        let own_leases = by_ip(ip);
        let view = c.views.get(ip);
        let view_ok = view.and_then(|v| v.as_ref().ok());
        // The node's own lease: the one flanneld says it holds, else the first with its PublicIP.
        let held = view_ok.and_then(|v| v.flanneld.as_ref()?.lease.as_ref());
        let own = held
            .and_then(|h| own_leases.iter().find(|l| l.key == h.key).copied())
            .or_else(|| own_leases.first().copied());
        summaries.push(NodeSummary {
            name: name.clone(),
            subnet: own.map(|l| l.subnet),
            lease_key: own.map(|l| l.key.clone()),
            vtep_mac: own.and_then(|l| l.vtep_mac).map(|m| format_mac(&m)),
            device_mac: view_ok.and_then(|v| v.device.as_ref()?.mac.clone()),
            view: if view_ok.is_some() { "ok" } else { "unavailable" },
            error: view.and_then(|v| v.as_ref().err().cloned()),
            ipv6_device: view_ok.and_then(super::ipv6::Ipv6Device::of),
        });
        if own_leases.len() > 1 {
            let keys: Vec<String> = own_leases.iter().map(|l| l.key.clone()).collect();
            g.add(
                Cause::PublicIpNotLocal,
                Severity::Error,
                &format!("dup {name}"),
                &name,
                None,
                keys.join(", "),
                || format!("PublicIP {name} is published by {} leases: {}", keys.len(), keys.join(", ")),
            );
        }
        let Some(v) = view_ok else {
            let why = match view {
                Some(Err(e)) => e.clone(),
                _ => "not fetched".to_string(),
            };
            g.add(
                Cause::RemoteViewUnavailable,
                Severity::Error,
                "",
                &name,
                None,
                format!("{name}: {why}"),
                || "{N}: kernel view could not be read, not checked".to_string(),
            );
            broken_nodes.entry(name.clone()).or_default().insert(Cause::RemoteViewUnavailable);
            continue;
        };
        if let Some(h) = held {
            if !c.records.iter().any(|r| r.key == h.key) {
                g.add(Cause::LeaseMissing, Severity::Error, &name, &name, None, h.key.clone(), || {
                    format!("flanneld on {name} holds lease {} but etcd has no such key", h.key)
                });
            }
        }
        let mut node_causes = BTreeSet::new();
        check_node(c, &name, *ip, own, v, &mut g, &mut node_causes);
        if let Some(own) = own {
            check_triangle(&name, own, v, held.map(|h| h.vtep_mac.as_str()), &mut g, &mut node_causes);
        }
        broken_nodes.entry(name.clone()).or_default().extend(node_causes.iter().copied());

        // The dry run and what it means.
        let (desired, owner) = desired_peers(
            &c.prefix,
            &c.spec,
            &c.records,
            own.map(|l| l.key.as_str()),
            own.map(|l| l.subnets),
            v,
        );
        let actual = actual_state(&c.spec, v);
        for (subnet, peer) in off_link_peers(c, own.map(|l| l.subnet), v) {
            let pn = peer.to_string();
            g.add(
                Cause::PeerNotOnLink,
                Severity::Error,
                &pn,
                &name,
                Some(&pn),
                format!("{name}: {subnet} via {peer} (not on-link)"),
                || format!("{{N}} cannot route node {pn}'s subnet {subnet}: {pn} is not on their L2 segment"),
            );
            broken_pairs.entry((name.clone(), pn)).or_default().insert(Cause::PeerNotOnLink);
        }
        if c.spec.backend_type == BackendKind::HostGw {
            underlay::check(c, &name, v, &desired, &mut g, &mut broken_pairs);
        }
        for n in &v.neighbours {
            if let Some(mac) = n.mac.as_deref().and_then(parse_mac) {
                holders_of.entry((n.ip, mac)).or_default().push(name.clone());
            }
        }
        let plan = plan_reconcile(&desired, &actual, &owner);
        let ops = plan.ops;
        let mut v6_causes = BTreeSet::new();
        let ops_v6 = ipv6::check(c, &name, own, &leases, v, &mut g, &mut broken_pairs, &mut v6_causes);
        broken_nodes.entry(name.clone()).or_default().extend(v6_causes);
        for n in &v.neighbours_v6 {
            if let Some(mac) = n.mac.as_deref().and_then(parse_mac) {
                holders_of.entry((n.ip, mac)).or_default().push(name.clone());
            }
        }
        if !ops.is_empty() || !ops_v6.is_empty() {
            let all = ops.iter().map(describe_op).chain(ops_v6).collect();
            dry_run.push(NodeOps { node: name.clone(), ops: all });
        }
        if v.device.is_none() && c.spec.backend_type != BackendKind::HostGw {
            continue; // VTEP_MISSING says it all; the reconcile cannot run before the device is back.
        }
        // Routes flanneld did not make that hold a peer's subnet: flanneld leaves them (and
        // reports them on /healthz); the peer is unreachable from this node.
        note_conflicts(
            &plan.conflicts,
            &desired,
            &name,
            &|p| p.public_ip.to_string(),
            &mut g,
            &mut broken_pairs,
        );
        for op in &ops {
            if let Some((cause, Some(p))) =
                classify(op, &actual, &desired, &by_subnet, &by_mac, &mut g, &name, &|p| {
                    p.public_ip.to_string()
                })
            {
                broken_pairs.entry((name.clone(), p)).or_default().insert(cause);
            }
        }
    }

    // F8 across nodes: pods on one node send packets of their MTU to every other node's
    // flannel device, which must carry them.
    // flannel device; with host-gw the external interface.
    let host_gw = c.spec.backend_type == BackendKind::HostGw;
    let devices: Vec<(Ipv4Addr, &str, u32)> = c
        .views
        .iter()
        .filter_map(|(ip, v)| {
            let v = v.as_ref().ok()?;
            let d = if host_gw { v.underlay.as_ref() } else { v.device.as_ref() };
            d.map(|d| (*ip, d.name.as_str(), d.mtu))
        })
        .collect();
    for (ip, v) in &c.views {
        let Ok(v) = v else { continue };
        let Some(pod_mtu) = v.subnet_env.as_ref().and_then(|e| e.mtu).or(v.device.as_ref().map(|d| d.mtu))
        else {
            continue;
        };
        for (other, dev, mtu) in devices.iter().filter(|(o, _, m)| o != ip && *m < pod_mtu) {
            let on = other.to_string();
            g.add(
                Cause::MtuMismatch,
                Severity::Error,
                &format!("pod mtu > {on}"),
                &ip.to_string(),
                Some(&on),
                format!("{ip}: pod MTU {pod_mtu} > {on} {dev} MTU {mtu}"),
                || {
                    format!(
                        "{{N}} use a pod MTU larger than {on}'s {dev} MTU {mtu}: big packets to it are lost"
                    )
                },
            );
            broken_pairs.entry((ip.to_string(), on)).or_default().insert(Cause::MtuMismatch);
        }
    }

    // Who still holds a node's stale MAC (for the F3 messages).
    let mut findings: Vec<Finding> = g
        .map
        .into_values()
        .map(|mut f| {
            if matches!(f.cause, Cause::VtepMacMismatch | Cause::LeaseVtepMacStale) {
                if let Some((gw, mac)) = f.objects.first().and_then(|o| stale_key(o)) {
                    let holders = holders_of.get(&(gw, mac)).cloned().unwrap_or_default();
                    f.message = counted(&f.message, "{HOLDERS}", holders.len());
                }
            }
            finish(f)
        })
        .collect();
    findings = merge_per_node(findings);
    // Errors first; among them causes that break a whole node (device, lease, forwarding,
    // view) before the per-link symptoms they usually explain; then by failure mode.
    let rank = |f: &Finding| {
        let fm = f.cause.failure_mode().unwrap_or("F99");
        (f.severity, !breaks_links(f.cause), fm.len(), fm, f.cause)
    };
    findings.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.nodes.cmp(&b.nodes)));
    for f in &findings {
        if f.peer.is_none() {
            for n in &f.nodes {
                broken_nodes.entry(n.clone()).or_default().insert(f.cause);
            }
        }
    }
    let names: Vec<String> = nodes_ip.iter().map(|i| i.to_string()).collect();
    let mut links = Vec::new();
    for from in &names {
        for to in &names {
            if from == to {
                continue;
            }
            let own: BTreeSet<Cause> =
                broken_pairs.get(&(from.clone(), to.clone())).cloned().unwrap_or_default();
            // A broken endpoint breaks its links in both directions.
            let ends: BTreeSet<Cause> = [from, to]
                .into_iter()
                .flat_map(|n| broken_nodes.get(n).into_iter().flatten())
                .filter(|c| breaks_links(**c) && !own.contains(c))
                .copied()
                .collect();
            let n = own.len();
            let broken = own.into_iter().chain(ends).collect();
            links.push(Link { from: from.clone(), to: to.clone(), broken, own: n });
        }
    }
    Report {
        healthy: !findings.iter().any(|f| f.severity == Severity::Error),
        etcd_prefix: c.prefix.clone(),
        etcd_revision: c.revision,
        network: c.spec.network,
        backend: c.spec.backend_type.lease_type(),
        nodes: summaries,
        findings,
        dry_run,
        links,
    }
}

/// Routes flanneld did not make that hold a peer's subnet: flanneld leaves them (and reports
/// them on /healthz); the peer is unreachable from this node.
fn note_conflicts(
    conflicts: &[weft_dataplane::own::Conflict],
    desired: &[Peer],
    name: &str,
    name_of: &dyn Fn(&Peer) -> String,
    g: &mut Groups,
    broken_pairs: &mut BTreeMap<(String, String), BTreeSet<Cause>>,
) {
    for conflict in conflicts {
        let Some(p) = desired.iter().find(|p| p.subnet == conflict.dst) else { continue };
        let pn = name_of(p);
        let route = conflict.route.to_string();
        g.add(
            Cause::RouteWrongDev,
            Severity::Error,
            &format!("conflict {pn}"),
            name,
            Some(&pn),
            format!("{name}: {route}"),
            || {
                format!(
                    "{{N}} hold a route flanneld did not make for node {pn}'s subnet {}: {route}",
                    conflict.dst
                )
            },
        );
        broken_pairs.entry((name.to_string(), pn)).or_default().insert(Cause::RouteWrongDev);
    }
}

/// Node-level causes that break every overlay link of the node.
fn breaks_links(c: Cause) -> bool {
    matches!(
        c,
        Cause::VtepMissing
            | Cause::VtepDown
            | Cause::VtepAttrMismatch
            | Cause::VtepMacMismatch
            | Cause::LeaseVtepMacStale
            | Cause::PublicIpNotLocal
            | Cause::IpForwardOff
            | Cause::RemoteViewUnavailable
            | Cause::LeaseOverlap
            | Cause::MtuMismatch
    )
}

/// `describe` with the device named, as an operator would type it.
fn describe_op(op: &NetOp) -> String {
    weft_dataplane::netlink::describe(op)
}

/// The object line of an F3 finding starts `neigh <gw> <mac>`.
fn stale_key(object: &str) -> Option<(IpAddr, Mac)> {
    let mut parts = object.split_whitespace();
    (parts.next()? == "neigh").then_some(())?;
    let gw = parts.next()?.parse().ok()?;
    let mac = parse_mac(parts.next()?)?;
    Some((gw, mac))
}

/// The device, addresses, MTU, sysctls, bridge and subnet.env of one node.
fn check_node(
    c: &Cluster,
    name: &str,
    ip: Ipv4Addr,
    own: Option<&Lease>,
    v: &DataplaneView,
    g: &mut Groups,
    causes: &mut BTreeSet<Cause>,
) {
    let spec = &c.spec;
    let dev_name = format!("flannel.{}", spec.backend.vni);
    let mut add = |cause: Cause, severity: Severity, object: String, message: String| {
        causes.insert(cause);
        g.add(cause, severity, &format!("{name} {object}"), name, None, format!("{name}: {object}"), || {
            message
        });
    };
    // F5: the PublicIP must be an address of the underlay interface.
    if let Some(u) = &v.underlay {
        if !u.addresses.iter().any(|a| a.ip() == IpAddr::V4(ip)) {
            add(
                Cause::PublicIpNotLocal,
                Severity::Error,
                format!(
                    "{} addresses {:?}",
                    u.name,
                    u.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>()
                ),
                format!("{name}: PublicIP {ip} is not an address of its interface {}", u.name),
            );
        }
    }
    // F4: the device. host-gw has none (docs/flannel.md §4.2): the external interface carries
    // the pods' packets, so its MTU bounds theirs.
    let host_gw = spec.backend_type == BackendKind::HostGw;
    let Some(dev) = (if host_gw { v.underlay.as_ref() } else { v.device.as_ref() }) else {
        if !host_gw {
            add(
                Cause::VtepMissing,
                Severity::Error,
                dev_name.clone(),
                format!("{name}: {dev_name} does not exist"),
            );
        }
        return;
    };
    if !host_gw {
        check_vxlan_device(spec, name, ip, dev, v, &mut add);
    }
    if let Some(b) = &v.bridge {
        if b.mtu > dev.mtu {
            add(
                Cause::MtuMismatch,
                Severity::Error,
                format!("{} mtu {}", b.name, b.mtu),
                format!("{name}: {} MTU {} > {} MTU {}", b.name, b.mtu, dev.name, dev.mtu),
            );
        }
    }
    if let Some(env) = &v.subnet_env {
        if let Some(mtu) = env.mtu.filter(|m| *m > dev.mtu) {
            add(
                Cause::MtuMismatch,
                Severity::Error,
                format!("FLANNEL_MTU {mtu}"),
                format!("{name}: subnet.env FLANNEL_MTU {mtu} > {} MTU {}", dev.name, dev.mtu),
            );
        }
    }
    // F10/F11: forwarding.
    match v.sysctls.ip_forward {
        Some(1) => {}
        other => add(
            Cause::IpForwardOff,
            Severity::Error,
            format!("net.ipv4.ip_forward={}", other.map_or("?".into(), |v| v.to_string())),
            format!("{name}: net.ipv4.ip_forward is not 1, pod traffic is not forwarded"),
        ),
    }
    for d in [Some(dev.name.as_str()), v.bridge.as_ref().map(|b| b.name.as_str())].into_iter().flatten() {
        if v.sysctls.rp_filter_effective(d) == Some(1) {
            add(
                Cause::RpFilter,
                Severity::Warning,
                format!("rp_filter {d}"),
                format!("{name}: strict rp_filter on {d} (drops asymmetric return traffic; `weft path` asks the kernel)"),
            );
        }
    }
    if v.bridge.is_some() && v.sysctls.bridge_nf_call_iptables != Some(1) && !spec.enable_nftables {
        add(
            Cause::BridgeNfOff,
            Severity::Warning,
            "bridge-nf-call-iptables".into(),
            format!("{name}: bridged pod traffic bypasses iptables (br_netfilter off or not loaded)"),
        );
    }
    // F12: the bridge and subnet.env against the lease.
    let Some(own) = own else { return };
    let gw = Ipv4Addr::from(u32::from(own.subnet.network()).saturating_add(1));
    if let Some(b) = &v.bridge {
        for a in &b.addresses {
            if let IpNetwork::V4(n) = a {
                if spec.network.contains(n.ip()) && (n.ip() != gw || n.prefix() != own.subnet.prefix()) {
                    add(
                        Cause::Cni0AddrMismatch,
                        Severity::Error,
                        format!("{} {n}", b.name),
                        format!(
                            "{name}: {} has {n}, the lease {} says {gw}/{}",
                            b.name,
                            own.subnet,
                            own.subnet.prefix()
                        ),
                    );
                }
            }
        }
    }
    if let Some(IpNetwork::V4(s)) = v.subnet_env.as_ref().and_then(|e| e.subnet) {
        if s.network() != own.subnet.network() || s.prefix() != own.subnet.prefix() {
            add(
                Cause::Cni0AddrMismatch,
                Severity::Error,
                format!("FLANNEL_SUBNET {s}"),
                format!("{name}: subnet.env FLANNEL_SUBNET {s} is not inside its lease {}", own.subnet),
            );
        }
    }
}

/// The VXLAN device's state, attributes and MTU against the config (F4, F5, F8).
fn check_vxlan_device(
    spec: &NetworkSpec,
    name: &str,
    ip: Ipv4Addr,
    dev: &LinkView,
    v: &DataplaneView,
    add: &mut dyn FnMut(Cause, Severity, String, String),
) {
    if !dev.up {
        add(Cause::VtepDown, Severity::Error, dev.name.clone(), format!("{name}: {} is down", dev.name));
    }
    let want_port = if spec.backend.port == 0 { KERNEL_VXLAN_PORT } else { spec.backend.port };
    let mut diffs = Vec::new();
    match &dev.vxlan {
        None => diffs.push(format!("kind {} instead of vxlan", dev.kind.as_deref().unwrap_or("unknown"))),
        Some(x) => {
            if x.vni != Some(spec.backend.vni) {
                diffs.push(format!("VNI {:?} != {}", x.vni, spec.backend.vni));
            }
            if x.port != want_port {
                diffs.push(format!("port {} != {want_port}", x.port));
            }
            if x.learning != spec.backend.learning {
                diffs.push(format!("learning {} != {}", x.learning, spec.backend.learning));
            }
            if x.gbp != spec.backend.gbp {
                diffs.push(format!("gbp {} != {}", x.gbp, spec.backend.gbp));
            }
            if let Some(u) = &v.underlay {
                if x.underlay_index != 0 && x.underlay_index != u.index {
                    diffs.push(format!("dev {} != {}", x.underlay.as_deref().unwrap_or("?"), u.name));
                }
            }
            if let Some(local) = x.local {
                if local != ip {
                    add(
                        Cause::PublicIpNotLocal,
                        Severity::Error,
                        format!("{} local {local}", dev.name),
                        format!("{name}: {} sends from {local}, not from its PublicIP {ip}", dev.name),
                    );
                }
            }
        }
    }
    if !diffs.is_empty() {
        add(
            Cause::VtepAttrMismatch,
            Severity::Error,
            format!("{}: {}", dev.name, diffs.join(", ")),
            format!("{name}: {} differs from the config: {}", dev.name, diffs.join(", ")),
        );
    }
    // F8: MTU chain on the node, from what the kernel says (never a fixed number).
    if let Some(u) = &v.underlay {
        let underlay = spec.backend.mtu.unwrap_or(u.mtu).min(u.mtu);
        let max = underlay.saturating_sub(VXLAN_OVERHEAD);
        if dev.mtu > max {
            add(
                Cause::MtuMismatch,
                Severity::Error,
                format!("{} mtu {}", dev.name, dev.mtu),
                format!("{name}: {} MTU {} > {} MTU {} - {VXLAN_OVERHEAD}", dev.name, dev.mtu, u.name, u.mtu),
            );
        }
    }
}

/// F3 on the node's own side: device MAC, lease `VtepMAC` in etcd, and what flanneld wrote.
fn check_triangle(
    name: &str,
    own: &Lease,
    v: &DataplaneView,
    flanneld_mac: Option<&str>,
    g: &mut Groups,
    causes: &mut BTreeSet<Cause>,
) {
    let Some(dev_mac) = v.device.as_ref().and_then(|d| d.mac.as_deref()).and_then(parse_mac) else { return };
    let Some(lease_mac) = own.vtep_mac else { return };
    if dev_mac == lease_mac {
        return;
    }
    let object =
        format!("neigh {} {} (device {})", gw_of(&own.subnet), format_mac(&lease_mac), format_mac(&dev_mac));
    let flanneld_wrote_device_mac = flanneld_mac.and_then(parse_mac) == Some(dev_mac);
    let cause = if flanneld_wrote_device_mac { Cause::LeaseVtepMacStale } else { Cause::VtepMacMismatch };
    causes.insert(cause);
    let (lm, dm) = (format_mac(&lease_mac), format_mac(&dev_mac));
    g.add(cause, Severity::Error, name, name, None, object, || {
        if flanneld_wrote_device_mac {
            format!(
                "lease {} in etcd says VtepMAC {lm} but {name}'s flannel device (and flanneld) have {dm}; \
                 {{HOLDERS}} hold the stale MAC",
                own.key
            )
        } else {
            format!(
                "{name}'s flannel device has MAC {dm} but its lease {} says {lm}; {{HOLDERS}} send to {lm}, \
                 which {name} drops",
                own.key
            )
        }
    });
}

/// Explains one reconcile op as a finding; returns its cause and the peer it is about.
#[allow(clippy::too_many_arguments)]
fn classify(
    op: &NetOp,
    actual: &KernelState,
    desired: &[Peer],
    by_subnet: &BTreeMap<Ipv4Network, &Lease>,
    by_mac: &BTreeMap<Mac, &Lease>,
    g: &mut Groups,
    node: &str,
    name_of: &dyn Fn(&Peer) -> String,
) -> Option<(Cause, Option<String>)> {
    let obj = format!("{node}: {}", describe_op(op));
    // `desired` holds one family's peers (the pass's), so a subnet match is of that family.
    let peer_of_subnet = |dst: &IpNetwork| desired.iter().find(|p| p.subnet == *dst);
    match op {
        // A reconcile plans create+replace adds; `CreateRoute` comes only from lease events.
        NetOp::AddRoute { dst, gw, onlink } | NetOp::CreateRoute { dst, gw, onlink } => {
            let p = peer_of_subnet(dst)?;
            let pn = name_of(p);
            let wrong = actual
                .routes
                .iter()
                .find(|r| r.dst == *dst && r.table == weft_dataplane::RT_TABLE_MAIN)
                .and_then(|r| Some((r.gw?, r.onlink, r.metric)));
            let cause = if wrong.is_some() { Cause::RouteWrongDev } else { Cause::NoRoute };
            let on = |o: bool| if o { " onlink" } else { "" };
            // flanneld's routes carry no metric: the kernel's default is theirs (IPv6: 1024).
            let metric = weft_dataplane::default_metric(dst);
            let msg = || {
                match wrong {
                Some((agw, aon, am)) if (agw, aon) == (*gw, *onlink) && am != metric => format!(
                    "{{N}} route node {pn}'s subnet {dst} via {gw}{} with metric {am} instead of the default {metric}",
                    on(aon)
                ),
                Some((agw, aon, _)) => {
                    format!("{{N}} route node {pn}'s subnet {dst} via {agw}{} instead of via {gw}{}", on(aon), on(*onlink))
                }
                None => format!("{{N}} have no route to node {pn}'s subnet {dst}"),
            }
            };
            g.add(cause, Severity::Error, &pn, node, Some(&pn), obj, msg);
            Some((cause, Some(pn)))
        }
        NetOp::DelRoute { dst, .. } => {
            let subject = dst.to_string();
            let holder = match dst {
                IpNetwork::V4(n) => by_subnet.get(n).map(|l| l.public_ip.to_string()),
                IpNetwork::V6(_) => None,
            };
            g.add(Cause::RouteStale, Severity::Error, &subject, node, None, obj, || {
                format!("{{N}} keep a route for {dst}, which no peer lease holds")
            });
            Some((Cause::RouteStale, holder))
        }
        NetOp::AddNeigh { ip, mac } => {
            let p = desired.iter().find(|p| p.subnet.network() == *ip)?;
            let pn = name_of(p);
            let have =
                actual.neighs.iter().find(|n| n.ip == *ip && n.ifindex == actual.device).map(|n| n.mac);
            let cause = if have.is_some() { Cause::NeighMacStale } else { Cause::NeighMissing };
            let msg = || match have {
                Some(old) => format!(
                    "{{N}} hold node {pn}'s old VTEP MAC {} for {ip} (its lease says {})",
                    format_mac(&old),
                    format_mac(mac)
                ),
                None => format!("{{N}} have no neighbour entry {ip} -> {} for node {pn}", format_mac(mac)),
            };
            g.add(cause, Severity::Error, &pn, node, Some(&pn), obj, msg);
            Some((cause, Some(pn)))
        }
        NetOp::DelNeigh { ip, mac } => {
            let subject = format!("neigh {ip}");
            g.add(Cause::RouteStale, Severity::Error, &subject, node, None, obj, || {
                format!("{{N}} keep a neighbour entry {ip} -> {} that no peer lease needs", format_mac(mac))
            });
            Some((Cause::RouteStale, None))
        }
        NetOp::AddFdb { mac, dst } => {
            let p = desired.iter().find(|p| p.vtep_mac == *mac)?;
            let pn = name_of(p);
            let wrong = actual
                .fdb
                .iter()
                .find(|e| e.mac == *mac && e.dst != *dst && e.ifindex == actual.device)
                .map(|e| e.dst);
            let cause = if wrong.is_some() { Cause::FdbWrongDst } else { Cause::FdbMissing };
            let msg = || match wrong {
                Some(w) => {
                    format!("{{N}} send node {pn}'s VTEP MAC {} to {w} instead of {dst}", format_mac(mac))
                }
                None => format!("{{N}} have no FDB entry {} dst {dst} for node {pn}", format_mac(mac)),
            };
            g.add(cause, Severity::Error, &pn, node, Some(&pn), obj, msg);
            Some((cause, Some(pn)))
        }
        NetOp::DelFdb { mac, dst } => {
            if let Some(p) = desired.iter().find(|p| p.vtep_mac == *mac) {
                // A wanted MAC with an old destination: part of the same FDB_WRONG_DST story.
                let pn = name_of(p);
                g.add(Cause::FdbWrongDst, Severity::Error, &pn, node, Some(&pn), obj, || {
                    format!("{{N}} send node {pn}'s VTEP MAC {} to {dst} as well", format_mac(mac))
                });
                return Some((Cause::FdbWrongDst, Some(pn)));
            }
            let owner = by_mac.get(mac).map(|l| l.public_ip.to_string());
            let subject = format_mac(mac);
            g.add(Cause::FdbDeadMac, Severity::Error, &subject, node, None, obj, || {
                format!(
                    "{{N}} keep an FDB entry for MAC {} (dst {dst}) that no peer lease holds",
                    format_mac(mac)
                )
            });
            Some((Cause::FdbDeadMac, owner))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_dataplane::view::{
        FdbView, FlanneldFacts, LeaseView, LinkView, NeighView, RouteView, SubnetEnvView, SysctlView,
        VxlanView, PROTO_BOOT, TABLE_MAIN,
    };
    use weft_flanneld::network::parse_config;

    const PREFIX: &str = "/coreos.com/network";

    fn mac(i: u8) -> Mac {
        [0x6e, 0xaa, 0, 0, 0, i]
    }

    fn ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 10 + i as u8)
    }

    fn subnet(i: usize) -> Ipv4Network {
        Ipv4Network::new(Ipv4Addr::new(10, 5, 10 + i as u8, 0), 24).unwrap()
    }

    fn record(key: &str, public: Ipv4Addr, m: Mac, rev: i64) -> Record {
        Record {
            key: format!("{PREFIX}/subnets/{key}"),
            value: LeaseAttrs::vxlan(public, 1, m).render(),
            lease: 7,
            mod_revision: rev,
        }
    }

    fn key(i: usize) -> String {
        format!("{}-24", subnet(i).network())
    }

    /// A healthy n-node cluster: every view holds exactly what flanneld programs.
    pub(super) fn cluster(n: usize) -> Cluster {
        let spec = parse_config(br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        let records: Vec<Record> =
            (0..n).map(|i| record(&key(i), ip(i), mac(i as u8), 10 + i as i64)).collect();
        let mut views = BTreeMap::new();
        for i in 0..n {
            let mut v = DataplaneView {
                version: 1,
                flanneld: Some(FlanneldFacts {
                    network: Some(spec.network),
                    lease: Some(LeaseView {
                        key: format!("{PREFIX}/subnets/{}", key(i)),
                        subnet: subnet(i),
                        public_ip: ip(i),
                        vtep_mac: format_mac(&mac(i as u8)),
                        vni: 1,
                        etcd_revision: 10 + i as i64,
                        etcd_lease: 7,
                    }),
                    ..FlanneldFacts::default()
                }),
                device: Some(LinkView {
                    name: "flannel.1".into(),
                    index: 5,
                    kind: Some("vxlan".into()),
                    mac: Some(format_mac(&mac(i as u8))),
                    mtu: 1450,
                    up: true,
                    oper_state: "unknown".into(),
                    vxlan: Some(VxlanView {
                        vni: Some(1),
                        local: Some(ip(i)),
                        port: KERNEL_VXLAN_PORT,
                        underlay_index: 2,
                        underlay: Some("eth0".into()),
                        learning: false,
                        gbp: false,
                        ..VxlanView::default()
                    }),
                    ..LinkView::default()
                }),
                underlay: Some(LinkView {
                    name: "eth0".into(),
                    index: 2,
                    mtu: 1500,
                    up: true,
                    addresses: vec![IpNetwork::V4(Ipv4Network::new(ip(i), 24).unwrap())],
                    ..LinkView::default()
                }),
                subnet_env: Some(SubnetEnvView {
                    subnet: Some(IpNetwork::V4(
                        Ipv4Network::new(Ipv4Addr::from(u32::from(subnet(i).network()) + 1), 24).unwrap(),
                    )),
                    mtu: Some(1450),
                    ..SubnetEnvView::default()
                }),
                sysctls: SysctlView { ip_forward: Some(1), ..SysctlView::default() },
                ..DataplaneView::default()
            };
            for j in (0..n).filter(|j| *j != i) {
                let gw = IpAddr::V4(subnet(j).network());
                v.neighbours.push(NeighView {
                    ip: gw,
                    mac: Some(format_mac(&mac(j as u8))),
                    state: "permanent".into(),
                    permanent: true,
                });
                v.fdb.push(FdbView {
                    mac: format_mac(&mac(j as u8)),
                    dst: Some(IpAddr::V4(ip(j))),
                    self_: true,
                    permanent: true,
                });
                v.routes.push(RouteView {
                    dst: IpNetwork::V4(subnet(j)),
                    gateway: Some(gw),
                    dev: Some("flannel.1".into()),
                    oif: Some(5),
                    onlink: true,
                    protocol: PROTO_BOOT,
                    kind: "unicast".into(),
                    table: TABLE_MAIN,
                    scope: 0,
                    tos: 0,
                    metric: 0,
                    multipath: false,
                });
            }
            views.insert(ip(i), Ok(v));
        }
        Cluster { prefix: PREFIX.into(), spec, records, revision: 20, views }
    }

    fn view(c: &mut Cluster, i: usize) -> &mut DataplaneView {
        c.views.get_mut(&ip(i)).unwrap().as_mut().unwrap()
    }

    fn only(r: &Report) -> &Finding {
        let errors: Vec<&Finding> = r.findings.iter().filter(|f| f.severity == Severity::Error).collect();
        assert_eq!(errors.len(), 1, "{:#?}", r.findings);
        errors[0]
    }

    fn names(idx: &[usize]) -> Vec<String> {
        idx.iter().map(|i| ip(*i).to_string()).collect()
    }

    #[test]
    fn healthy_cluster_has_no_findings_and_an_empty_dry_run() {
        let r = diagnose(&cluster(3));
        assert!(r.healthy, "{:#?}", r.findings);
        assert!(r.findings.is_empty(), "{:#?}", r.findings);
        assert!(r.dry_run.is_empty());
        assert_eq!(r.links.len(), 6);
        assert!(r.links.iter().all(|l| l.broken.is_empty()));
    }

    #[test]
    fn a_missing_fdb_entry_is_fdb_missing_on_that_node_with_the_reconcile_op() {
        let mut c = cluster(3);
        view(&mut c, 0).fdb.retain(|f| f.dst != Some(IpAddr::V4(ip(1))));
        let r = diagnose(&c);
        let f = only(&r);
        assert_eq!(
            (f.cause, f.nodes.clone(), f.peer.clone()),
            (Cause::FdbMissing, names(&[0]), Some(ip(1).to_string()))
        );
        assert_eq!(f.failure_mode, Some("F3"));
        assert_eq!(r.dry_run.len(), 1);
        assert_eq!(r.dry_run[0].ops, vec![format!("add fdb {} dst {}", format_mac(&mac(1)), ip(1))]);
        let broken: Vec<&Link> = r.links.iter().filter(|l| !l.broken.is_empty()).collect();
        assert_eq!(broken.len(), 1);
        assert_eq!(
            (broken[0].from.as_str(), broken[0].to.as_str()),
            (ip(0).to_string().as_str(), ip(1).to_string().as_str())
        );
    }

    #[test]
    fn a_missing_route_is_no_route_and_a_stale_one_route_stale() {
        let mut c = cluster(3);
        view(&mut c, 2).routes.retain(|r| r.dst != IpNetwork::V4(subnet(0)));
        let f = only(&diagnose(&c)).clone();
        assert_eq!((f.cause, f.nodes), (Cause::NoRoute, names(&[2])));
        let mut c = cluster(3);
        c.records.retain(|r| !r.key.ends_with(&key(2)));
        c.views.remove(&ip(2));
        let r = diagnose(&c);
        let causes: BTreeSet<Cause> = r.findings.iter().map(|f| f.cause).collect();
        assert_eq!(causes, BTreeSet::from([Cause::RouteStale, Cause::FdbDeadMac]), "{:#?}", r.findings);
        let stale = r
            .findings
            .iter()
            .find(|f| f.cause == Cause::RouteStale && f.objects[0].contains("route"))
            .unwrap();
        assert_eq!(stale.nodes, names(&[0, 1]));
    }

    #[test]
    fn one_node_missing_entries_for_every_peer_is_one_finding_on_that_node() {
        let mut c = cluster(3);
        view(&mut c, 1).neighbours.clear();
        let r = diagnose(&c);
        let f = only(&r);
        assert_eq!((f.cause, f.nodes.clone(), f.peer.clone()), (Cause::NeighMissing, names(&[1]), None));
        assert_eq!(f.message, "198.18.0.11 lacks neighbour entries for 2 peers: 198.18.0.10, 198.18.0.12");
        assert_eq!(f.objects.len(), 2);
        let mut c = cluster(3);
        view(&mut c, 1).fdb.remove(0);
        assert_eq!(
            only(&diagnose(&c)).message,
            "1 node has no FDB entry 6e:aa:00:00:00:00 dst 198.18.0.10 for node 198.18.0.10"
        );
    }

    #[test]
    fn stale_neighbour_macs_for_one_peer_are_one_finding_naming_every_holder() {
        let mut c = cluster(4);
        for i in [0, 2, 3] {
            let gw = IpAddr::V4(subnet(1).network());
            let n = view(&mut c, i).neighbours.iter_mut().find(|n| n.ip == gw).unwrap();
            n.mac = Some("6e:aa:00:00:00:99".into());
        }
        let r = diagnose(&c);
        let f = only(&r);
        assert_eq!((f.cause, f.nodes.clone()), (Cause::NeighMacStale, names(&[0, 2, 3])));
        assert!(
            f.message.starts_with("3 nodes hold node 198.18.0.11's old VTEP MAC 6e:aa:00:00:00:99"),
            "{}",
            f.message
        );
        assert_eq!(r.dry_run.len(), 3);
    }

    #[test]
    fn remote_device_mac_changed_without_its_lease_is_vtep_mac_mismatch() {
        let mut c = cluster(3);
        view(&mut c, 1).device.as_mut().unwrap().mac = Some("6e:aa:00:00:00:55".into());
        let r = diagnose(&c);
        let f = only(&r);
        assert_eq!((f.cause, f.nodes.clone()), (Cause::VtepMacMismatch, names(&[1])));
        assert!(f.message.contains("2 nodes send to 6e:aa:00:00:00:01"), "{}", f.message);
        assert!(r.dry_run.is_empty(), "peers follow the lease: a reconcile changes nothing");
        assert!(r
            .links
            .iter()
            .filter(|l| l.from == ip(1).to_string() || l.to == ip(1).to_string())
            .all(|l| !l.broken.is_empty()));
    }

    #[test]
    fn lease_vtep_mac_out_of_date_in_etcd_is_lease_vtep_mac_stale() {
        let mut c = cluster(3);
        c.records[2] = record(&key(2), ip(2), [0x6e, 0xaa, 0, 0, 0, 0x77], 30);
        for i in [0, 1] {
            let gw = IpAddr::V4(subnet(2).network());
            let v = view(&mut c, i);
            v.neighbours.iter_mut().find(|n| n.ip == gw).unwrap().mac = Some("6e:aa:00:00:00:77".into());
            v.fdb.iter_mut().find(|f| f.dst == Some(IpAddr::V4(ip(2)))).unwrap().mac =
                "6e:aa:00:00:00:77".into();
        }
        let f = only(&diagnose(&c)).clone();
        assert_eq!((f.cause, f.nodes), (Cause::LeaseVtepMacStale, names(&[2])));
        assert!(f.message.contains("2 nodes hold the stale MAC"), "{}", f.message);
    }

    #[test]
    fn duplicate_subnet_lease_is_lease_overlap_naming_both_public_ips() {
        let mut c = cluster(3);
        c.records.push(record(
            &format!("{}&fd00::-64", key(1)),
            Ipv4Addr::new(198, 18, 0, 99),
            mac(0x99),
            40,
        ));
        c.views.insert(
            Ipv4Addr::new(198, 18, 0, 99),
            Err("http://198.18.0.99:10256/debug/dataplane: connect: refused".into()),
        );
        let r = diagnose(&c);
        let f = r.findings.iter().find(|f| f.cause == Cause::LeaseOverlap).unwrap();
        assert_eq!(f.nodes, vec![ip(1).to_string(), "198.18.0.99".to_string()]);
        let u = r.findings.iter().find(|f| f.cause == Cause::RemoteViewUnavailable).unwrap();
        assert_eq!(u.nodes, vec!["198.18.0.99".to_string()]);
        assert!(!r.healthy);
    }

    #[test]
    fn an_unreadable_view_is_remote_view_unavailable_and_nothing_else_for_it() {
        let mut c = cluster(3);
        c.views.insert(ip(2), Err("connect: refused".into()));
        let f = only(&diagnose(&c)).clone();
        assert_eq!((f.cause, f.nodes), (Cause::RemoteViewUnavailable, names(&[2])));
    }

    #[test]
    fn device_sysctl_mtu_and_bridge_checks() {
        let mut c = cluster(2);
        view(&mut c, 0).device.as_mut().unwrap().up = false;
        assert_eq!(only(&diagnose(&c)).cause, Cause::VtepDown);

        let mut c = cluster(2);
        view(&mut c, 0).device = None;
        let r = diagnose(&c);
        assert_eq!(only(&r).cause, Cause::VtepMissing);
        assert_eq!(r.dry_run.len(), 1, "the reconcile would re-add everything once the device is back");

        let mut c = cluster(2);
        view(&mut c, 0).device.as_mut().unwrap().vxlan.as_mut().unwrap().port = 4789;
        assert_eq!(only(&diagnose(&c)).cause, Cause::VtepAttrMismatch);

        let mut c = cluster(2);
        view(&mut c, 0).sysctls.ip_forward = Some(0);
        assert_eq!(only(&diagnose(&c)).cause, Cause::IpForwardOff);

        // Node 1's underlay is smaller: its device too, and node 0's pods are too big for it.
        let mut c = cluster(2);
        let v = view(&mut c, 1);
        v.underlay.as_mut().unwrap().mtu = 1400;
        v.device.as_mut().unwrap().mtu = 1350;
        v.subnet_env.as_mut().unwrap().mtu = Some(1350);
        let f = only(&diagnose(&c)).clone();
        assert_eq!((f.cause, f.nodes), (Cause::MtuMismatch, names(&[0])));
        assert_eq!(
            f.message,
            "1 node uses a pod MTU larger than 198.18.0.11's flannel.1 MTU 1350: big packets to it are lost"
        );

        let mut c = cluster(2);
        view(&mut c, 0).underlay.as_mut().unwrap().addresses = vec!["198.18.0.77/24".parse().unwrap()];
        assert_eq!(only(&diagnose(&c)).cause, Cause::PublicIpNotLocal);

        let mut c = cluster(2);
        view(&mut c, 0).bridge = Some(LinkView {
            name: "cni0".into(),
            mtu: 1450,
            addresses: vec!["10.5.99.1/24".parse().unwrap()],
            ..LinkView::default()
        });
        view(&mut c, 0).sysctls.bridge_nf_call_iptables = Some(1);
        assert_eq!(only(&diagnose(&c)).cause, Cause::Cni0AddrMismatch);

        // Strict rp_filter is a warning: healthy, but reported.
        let mut c = cluster(2);
        view(&mut c, 0).sysctls.rp_filter.insert("all".into(), 1);
        let r = diagnose(&c);
        assert!(r.healthy);
        assert_eq!(
            r.findings.iter().map(|f| (f.cause, f.severity)).collect::<Vec<_>>(),
            vec![(Cause::RpFilter, Severity::Warning)]
        );
    }

    #[test]
    fn a_foreign_route_holding_a_peer_subnet_is_route_wrong_dev_and_left_alone() {
        let mut c = cluster(3);
        let v = view(&mut c, 0);
        let r = v.routes.iter_mut().find(|r| r.dst == IpNetwork::V4(subnet(1))).unwrap();
        // An operator's route (proto static) via the underlay: flanneld does not own it.
        *r = RouteView {
            dst: IpNetwork::V4(subnet(1)),
            gateway: Some("198.18.0.1".parse().unwrap()),
            dev: Some("eth0".into()),
            oif: Some(2),
            onlink: false,
            protocol: 4,
            kind: "unicast".into(),
            table: TABLE_MAIN,
            scope: 0,
            tos: 0,
            metric: 0,
            multipath: false,
        };
        let r = diagnose(&c);
        let f = only(&r);
        assert_eq!(
            (f.cause, f.nodes.clone(), f.peer.clone()),
            (Cause::RouteWrongDev, names(&[0]), Some(ip(1).to_string()))
        );
        assert!(f.message.contains("a route flanneld did not make"), "{}", f.message);
        assert!(r.dry_run.is_empty(), "flanneld never replaces a route it does not own: {:?}", r.dry_run);
    }

    #[test]
    fn a_peer_route_differing_only_in_metric_names_the_metric() {
        let mut c = cluster(3);
        let r = view(&mut c, 0).routes.iter_mut().find(|r| r.dst == IpNetwork::V4(subnet(1))).unwrap();
        r.metric = 100;
        let gw = r.gateway.unwrap();
        let r = diagnose(&c);
        let f = only(&r);
        assert_eq!((f.cause, f.nodes.clone()), (Cause::RouteWrongDev, names(&[0])));
        assert_eq!(
            f.message,
            format!(
                "1 node routes node {}'s subnet {} via {gw} onlink with metric 100 instead of the default 0",
                ip(1),
                subnet(1)
            )
        );
    }

    #[test]
    fn fdb_with_a_wrong_destination_and_a_dead_mac() {
        let mut c = cluster(3);
        view(&mut c, 0).fdb.iter_mut().find(|f| f.dst == Some(IpAddr::V4(ip(1)))).unwrap().dst =
            Some("198.18.0.50".parse().unwrap());
        let f = only(&diagnose(&c)).clone();
        assert_eq!((f.cause, f.nodes), (Cause::FdbWrongDst, names(&[0])));
        let mut c = cluster(3);
        for i in 0..3 {
            view(&mut c, i).fdb.push(FdbView {
                mac: "6e:aa:00:00:00:42".into(),
                dst: Some("198.18.0.42".parse().unwrap()),
                self_: true,
                permanent: true,
            });
        }
        let f = only(&diagnose(&c)).clone();
        assert_eq!((f.cause, f.nodes.len()), (Cause::FdbDeadMac, 3));
        assert!(
            f.message.starts_with("3 nodes keep an FDB entry for MAC 6e:aa:00:00:00:42"),
            "{}",
            f.message
        );
    }

    /// The healthy n-node cluster on host-gw (docs/flannel.md §4.2): host-gw leases without
    /// BackendData, no VXLAN device, one route `S via P dev eth0` per peer (flanneld's shape:
    /// protocol boot, no onlink), pods at the external interface's MTU.
    fn host_gw_cluster(n: usize) -> Cluster {
        let mut c = cluster(n);
        c.spec = parse_config(br#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#).unwrap();
        for (i, r) in c.records.iter_mut().enumerate() {
            r.value = LeaseAttrs::host_gw(ip(i)).render();
        }
        for i in 0..n {
            let v = view(&mut c, i);
            v.device = None;
            v.neighbours.clear();
            v.fdb.clear();
            v.subnet_env.as_mut().unwrap().mtu = Some(1500);
            let lease = v.flanneld.as_mut().unwrap().lease.as_mut().unwrap();
            (lease.vtep_mac, lease.vni) = (String::new(), 0);
            for r in &mut v.routes {
                let IpNetwork::V4(s) = r.dst else { continue };
                let j = (0..n).find(|j| subnet(*j) == s).unwrap();
                (r.gateway, r.dev, r.oif, r.onlink) =
                    (Some(IpAddr::V4(ip(j))), Some("eth0".into()), Some(2), false);
            }
        }
        c
    }

    #[test]
    fn healthy_host_gw_cluster_has_no_findings_and_renders_without_vteps() {
        let c = host_gw_cluster(3);
        let r = diagnose(&c);
        assert!(r.healthy && r.findings.is_empty(), "{:#?}", r.findings);
        assert!(r.dry_run.is_empty(), "{:?}", r.dry_run);
        assert_eq!((r.backend, r.nodes.len(), r.links.len()), ("host-gw", 3, 6));
        let text = super::super::render::text(&r);
        assert!(text.starts_with("etcd /coreos.com/network (revision 20): network 10.5.0.0/16 (host-gw), 3 node(s)\nNODE         SUBNET        VIEW\n198.18.0.10  10.5.10.0/24  ok\n"), "{text}");
        assert!(text.ends_with("\nhealthy\n"), "{text}");
        let dot = super::super::render::dot(&r);
        assert!(dot.contains("host-gw: routes via its PublicIP") && !dot.contains("VTEP"), "{dot}");
        let json = super::super::render::json(&r);
        assert!(json.contains("\"backend\": \"host-gw\""), "{json}");
        // The same views under a vxlan config: every device is missing.
        let mut vx = c.clone();
        vx.spec = cluster(3).spec;
        vx.records = cluster(3).records;
        assert!(diagnose(&vx).findings.iter().any(|f| f.cause == Cause::VtepMissing));
    }

    #[test]
    fn host_gw_missing_and_wrong_gateway_routes_are_named_with_the_reconcile_op() {
        let mut c = host_gw_cluster(3);
        view(&mut c, 0).routes.retain(|r| r.dst != IpNetwork::V4(subnet(1)));
        let r = diagnose(&c);
        let f = only(&r);
        assert_eq!(
            (f.cause, f.nodes.clone(), f.peer.clone()),
            (Cause::NoRoute, names(&[0]), Some(ip(1).to_string()))
        );
        assert_eq!(f.message, format!("1 node has no route to node {}'s subnet {}", ip(1), subnet(1)));
        assert_eq!(r.dry_run.len(), 1);
        assert_eq!(r.dry_run[0].ops, vec![format!("add route {} via {}", subnet(1), ip(1))]);

        // A route flanneld did not make (proto static) via another address: left alone, named.
        let mut c = host_gw_cluster(3);
        let route = view(&mut c, 0).routes.iter_mut().find(|r| r.dst == IpNetwork::V4(subnet(1))).unwrap();
        (route.gateway, route.protocol) = (Some("198.18.0.99".parse().unwrap()), 4);
        let r = diagnose(&c);
        let f = only(&r);
        assert_eq!((f.cause, f.nodes.clone()), (Cause::RouteWrongDev, names(&[0])));
        assert!(f.message.contains("a route flanneld did not make"), "{}", f.message);
        assert!(r.dry_run.is_empty(), "{:?}", r.dry_run);
    }

    #[test]
    fn host_gw_peer_off_the_l2_segment_is_peer_not_on_link_on_every_node() {
        let mut c = host_gw_cluster(3);
        let far = Ipv4Addr::new(203, 0, 113, 9);
        c.records.push(Record {
            key: format!("{PREFIX}/subnets/10.5.200.0-24"),
            value: LeaseAttrs::host_gw(far).render(),
            lease: 7,
            mod_revision: 40,
        });
        c.views.insert(far, Err("http://203.0.113.9:10256/debug/dataplane: connect: timed out".into()));
        let r = diagnose(&c);
        let f = r.findings.iter().find(|f| f.cause == Cause::PeerNotOnLink).unwrap();
        assert_eq!((f.nodes.clone(), f.peer.clone()), (names(&[0, 1, 2]), Some(far.to_string())));
        assert_eq!(f.failure_mode, Some("F5"));
        assert_eq!(
            f.message,
            "3 nodes cannot route node 203.0.113.9's subnet 10.5.200.0/24: 203.0.113.9 is not on their L2 segment"
        );
        // flanneld programs no route for it, so the dry run is empty.
        assert!(r.dry_run.is_empty(), "{:?}", r.dry_run);
        // A vxlan lease in a host-gw cluster is not a peer (flanneld skips it): no finding.
        let mut c = host_gw_cluster(2);
        c.records.push(record("10.5.201.0-24", Ipv4Addr::new(198, 18, 0, 50), mac(0x50), 41));
        let r = diagnose(&c);
        assert!(r.healthy && r.findings.is_empty(), "{:#?}", r.findings);
    }

    #[test]
    fn host_gw_mtu_is_the_external_interfaces() {
        let mut c = host_gw_cluster(2);
        view(&mut c, 1).underlay.as_mut().unwrap().mtu = 1400;
        let r = diagnose(&c);
        let causes: Vec<(Cause, Vec<String>)> =
            r.findings.iter().map(|f| (f.cause, f.nodes.clone())).collect();
        // Node 1's own subnet.env is larger than its interface, and node 0's pods send 1500.
        assert_eq!(
            causes,
            vec![(Cause::MtuMismatch, names(&[0])), (Cause::MtuMismatch, names(&[1]))],
            "{:#?}",
            r.findings
        );
        assert!(r.findings.iter().any(|f| f.message.contains("larger than 198.18.0.11's eth0 MTU 1400")));
    }
    #[test]
    fn host_gw_underlay_neighbours_failed_or_stale_are_grouped_per_peer() {
        use weft_dataplane::view::NeighView;
        let mut c = host_gw_cluster(3);
        let umac = |i: usize| format!("02:00:00:00:00:{i:02x}");
        for i in 0..3 {
            view(&mut c, i).underlay.as_mut().unwrap().mac = Some(umac(i));
        }
        let neigh = |j: usize, mac: Option<String>, state: &str| NeighView {
            ip: IpAddr::V4(ip(j)),
            mac,
            state: state.into(),
            permanent: state.contains("permanent"),
        };
        // Healthy entries (and none at all) are no finding.
        view(&mut c, 0).underlay_neighbours = vec![neigh(1, Some(umac(1)), "reachable")];
        let r = diagnose(&c);
        assert!(r.healthy && r.findings.is_empty(), "{:#?}", r.findings);
        // Nodes 0 and 2 cannot resolve node 1: one finding naming both; node 2 also holds a
        // wrong MAC for node 0.
        view(&mut c, 0).underlay_neighbours = vec![neigh(1, None, "failed")];
        view(&mut c, 2).underlay_neighbours =
            vec![neigh(1, None, "incomplete"), neigh(0, Some("02:aa:bb:cc:dd:ee".into()), "permanent")];
        let r = diagnose(&c);
        assert!(!r.healthy);
        let causes: Vec<(Cause, Vec<String>, Option<String>)> =
            r.findings.iter().map(|f| (f.cause, f.nodes.clone(), f.peer.clone())).collect();
        assert_eq!(
            causes,
            vec![
                (Cause::UnderlayNeighFailed, names(&[0, 2]), Some(ip(1).to_string())),
                (Cause::UnderlayNeighMacStale, names(&[2]), Some(ip(0).to_string())),
            ],
            "{:#?}",
            r.findings
        );
        assert_eq!(
            r.findings[0].message,
            "2 nodes cannot resolve node 198.18.0.11 on the underlay (ARP failed)"
        );
        assert_eq!(
            r.findings[1].message,
            "1 node holds MAC 02:aa:bb:cc:dd:ee for node 198.18.0.10, whose eth0 MAC is 02:00:00:00:00:00"
        );
        assert!(r.findings[1].objects[0].contains("198.18.0.10 lladdr 02:aa:bb:cc:dd:ee permanent dev eth0"));
        // The links are marked broken in the picture, and the dry run stays empty (flanneld
        // makes no neighbour entry with host-gw).
        let l = r.links.iter().find(|l| l.from == ip(2).to_string() && l.to == ip(0).to_string()).unwrap();
        assert!(l.broken.contains(&Cause::UnderlayNeighMacStale), "{l:?}");
        assert!(r.dry_run.is_empty(), "{:?}", r.dry_run);
    }
}
