//! The IPv6 side of a dual-stack node (docs/flannel.md §4.1, §4.2): `flannel-v6.<VNI>` and its
//! neighbours, FDB entries and routes (VXLAN), or the `S6 via P6` routes (host-gw), checked
//! with the planning flanneld's IPv6 reconcile uses (`flanneld/src/daemon/dual.rs`
//! `reconcile_v6`: [`plan_reconcile`] on the IPv6 entries only, ownership of the IPv6
//! network). Findings carry `family: "ipv6"` and the same cause codes as the IPv4 side.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv6Network};
use weft_common::mac::parse_mac;
use weft_dataplane::own::Ownership;
use weft_dataplane::plan::{plan_reconcile, Peer};
use weft_dataplane::view::{DataplaneView, RouteView};
use weft_dataplane::{KernelFdb, KernelNeigh, KernelState, Mac};
use weft_flanneld::daemon::VXLAN_OVERHEAD_V6;
use weft_flanneld::lease::{format_mac, subnets_dir, LeaseAttrs, LeaseKey};
use weft_flanneld::network::BackendKind;
use weft_flanneld::peers::PeerSet;

use super::{classify, describe_op, Cluster, Groups, Lease, Severity};
use crate::cause::Cause;

/// The IPv6 side of a lease (`key.ipv6`, `BackendV6Data.VtepMAC`); only a lease with a
/// `PublicIPv6` has one.
#[derive(Debug, Clone)]
pub(super) struct LeaseV6 {
    pub subnet: Ipv6Network,
    /// `None` with host-gw (no VTEP) or a malformed `BackendV6Data`.
    pub vtep_mac: Option<Mac>,
}

impl LeaseV6 {
    pub fn of(key: &LeaseKey, attrs: &LeaseAttrs, backend: BackendKind) -> Option<LeaseV6> {
        let vtep_mac = match backend {
            BackendKind::Vxlan => attrs.vxlan_v6_data().ok().map(|d| d.vtep_mac),
            BackendKind::HostGw => None,
        };
        attrs.public_ipv6?;
        Some(LeaseV6 { subnet: key.ipv6?, vtep_mac })
    }
}

/// The IPv6 prefixes of the node's external interface.
fn connected_v6(v: &DataplaneView) -> Vec<Ipv6Network> {
    super::connected_of(v, |a| match a {
        IpNetwork::V6(n) => Some(*n),
        IpNetwork::V4(_) => None,
    })
}

/// The IPv6 peers flanneld on the node holding `own` would program (`upsert_v6`), and the
/// ownership of its IPv6 reconcile (`ownership_v6`); `None` without `IPv6Network`.
fn desired_v6(c: &Cluster, own: Option<&Lease>, v: &DataplaneView) -> Option<(Vec<Peer>, Ownership)> {
    let spec6 = c.spec.ipv6.as_ref()?;
    let mut set = PeerSet::for_backend(&subnets_dir(&c.prefix), c.spec.backend_type);
    if let Some(o) = own {
        set.set_own(o.subnets);
    }
    let others: Vec<_> =
        c.records.iter().filter(|r| Some(r.key.as_str()) != own.map(|o| o.key.as_str())).cloned().collect();
    set.snapshot(&others);
    let host_gw = c.spec.backend_type == BackendKind::HostGw;
    let connected = connected_v6(v);
    let on_link = |ip: Ipv6Addr| connected.iter().any(|n| n.contains(ip));
    let mut held = BTreeSet::new();
    let mut peers = Vec::new();
    for p in set.iter() {
        let Some(p6) = &p.ipv6 else { continue };
        held.insert((IpNetwork::V6(p6.subnet), IpAddr::V6(p6.public_ipv6)));
        // host-gw leaves an off-link PublicIPv6 unrouted (`dual.rs` `upsert_v6`).
        if host_gw && !on_link(p6.public_ipv6) {
            continue;
        }
        peers.push(Peer {
            subnet: IpNetwork::V6(p6.subnet),
            public_ip: IpAddr::V6(p6.public_ipv6),
            vtep_mac: p6.vtep_mac,
            direct: host_gw || (c.spec.backend.direct_routing && on_link(p6.public_ipv6)),
        });
    }
    let owner = Ownership {
        network: IpNetwork::V6(spec6.network),
        subnet_len: spec6.subnet_len,
        leases: held,
        direct: host_gw || c.spec.backend.direct_routing,
    };
    Some((peers, owner))
}

/// The IPv6 kernel state as a dump's `family(true)` would give it: the entries on
/// `flannel-v6.<VNI>` and the IPv6 routes of the view; host-gw: the routes only.
pub(super) fn kernel_state_v6(v: &DataplaneView, host_gw: bool) -> KernelState {
    let mut k = KernelState {
        routes: v.routes_v6.iter().filter(|r| r.dst.is_ipv6()).map(RouteView::kernel).collect(),
        ..KernelState::default()
    };
    if host_gw {
        return k;
    }
    let Some(dev) = &v.device_v6 else { return k };
    k.device = dev.index;
    k.device_v6 = dev.index;
    k.neighs = v
        .neighbours_v6
        .iter()
        .filter_map(|n| {
            let mac = n.mac.as_deref().and_then(parse_mac)?;
            Some(KernelNeigh { ifindex: dev.index, ip: n.ip, mac, permanent: n.permanent })
        })
        .collect();
    k.fdb = v
        .fdb_v6
        .iter()
        .filter_map(|f| {
            Some(KernelFdb {
                ifindex: dev.index,
                mac: parse_mac(&f.mac)?,
                dst: f.dst?,
                permanent: f.permanent,
                self_: f.self_,
            })
        })
        .collect();
    k
}

/// Checks one node's IPv6 side; returns the ops a reconcile would apply to it. Does nothing
/// (and returns none) when the cluster or the node is not dual stack.
#[allow(clippy::too_many_arguments)]
pub(super) fn check(
    c: &Cluster,
    name: &str,
    own: Option<&Lease>,
    leases: &[Lease],
    v: &DataplaneView,
    g: &mut Groups,
    broken_pairs: &mut BTreeMap<(String, String), BTreeSet<Cause>>,
    node_causes: &mut BTreeSet<Cause>,
) -> Vec<String> {
    let Some((desired, owner)) = desired_v6(c, own, v) else { return Vec::new() };
    let own6 = own.and_then(|o| o.v6.as_ref());
    let host_gw = c.spec.backend_type == BackendKind::HostGw;
    g.family = Some("ipv6");
    let ops = check_with(c, name, own6, leases, v, &desired, &owner, host_gw, g, broken_pairs, node_causes);
    g.family = None;
    ops
}

#[allow(clippy::too_many_arguments)]
fn check_with(
    c: &Cluster,
    name: &str,
    own6: Option<&LeaseV6>,
    leases: &[Lease],
    v: &DataplaneView,
    desired: &[Peer],
    owner: &Ownership,
    host_gw: bool,
    g: &mut Groups,
    broken_pairs: &mut BTreeMap<(String, String), BTreeSet<Cause>>,
    node_causes: &mut BTreeSet<Cause>,
) -> Vec<String> {
    let dev_name = format!("flannel-v6.{}", c.spec.backend.vni);
    if !host_gw {
        let Some(dev) = &v.device_v6 else {
            // Only a node with an IPv6 lease side creates the device (`dual.rs`).
            if own6.is_some() {
                node_causes.insert(Cause::VtepMissing);
                g.add(
                    Cause::VtepMissing,
                    Severity::Error,
                    name,
                    name,
                    None,
                    format!("{name}: {dev_name}"),
                    || format!("{name}: {dev_name} does not exist"),
                );
            }
            return Vec::new();
        };
        if !dev.up {
            node_causes.insert(Cause::VtepDown);
            g.add(
                Cause::VtepDown,
                Severity::Error,
                name,
                name,
                None,
                format!("{name}: {}", dev.name),
                || format!("{name}: {} is down", dev.name),
            );
        }
        // F8: flanneld sizes `flannel-v6` to the underlay MTU − 70 (`flanneld/src/daemon/dual.rs`).
        if let Some(u) = v.underlay.as_ref().filter(|u| dev.mtu > u.mtu.saturating_sub(VXLAN_OVERHEAD_V6)) {
            node_causes.insert(Cause::MtuMismatch);
            let object = format!("{name}: {} mtu {}", dev.name, dev.mtu);
            g.add(Cause::MtuMismatch, Severity::Error, &format!("{name} mtu"), name, None, object, || {
                format!(
                    "{name}: {} MTU {} > {} MTU {} - {VXLAN_OVERHEAD_V6}",
                    dev.name, dev.mtu, u.name, u.mtu
                )
            });
        }
        // F3 on the node's own side: `flannel-v6` MAC against `BackendV6Data.VtepMAC`.
        let dev_mac = dev.mac.as_deref().and_then(parse_mac);
        if let (Some(o), Some(dm)) = (own6, dev_mac) {
            if let Some(lm) = o.vtep_mac.filter(|lm| *lm != dm) {
                node_causes.insert(Cause::VtepMacMismatch);
                let object =
                    format!("neigh {} {} (device {})", o.subnet.network(), format_mac(&lm), format_mac(&dm));
                let (lms, dms) = (format_mac(&lm), format_mac(&dm));
                g.add(Cause::VtepMacMismatch, Severity::Error, name, name, None, object, || {
                    format!(
                        "{name}'s {} has MAC {dms} but its lease's BackendV6Data says {lms}; {{HOLDERS}} send to \
                         {lms}, which {name} drops",
                        dev.name
                    )
                });
            }
        }
    }
    let actual = kernel_state_v6(v, host_gw);
    let plan = plan_reconcile(desired, &actual, owner);
    let by_mac: BTreeMap<Mac, &Lease> =
        leases.iter().filter_map(|l| Some((l.v6.as_ref()?.vtep_mac?, l))).collect();
    // Peers are named by their IPv4 PublicIP, like the nodes in every finding.
    let name_of = |p: &Peer| {
        leases
            .iter()
            .find(|l| l.v6.as_ref().is_some_and(|s| IpNetwork::V6(s.subnet) == p.subnet))
            .map_or_else(|| p.public_ip.to_string(), |l| l.public_ip.to_string())
    };
    super::note_conflicts(&plan.conflicts, desired, name, &name_of, g, broken_pairs);
    for op in &plan.ops {
        if let Some((cause, Some(p))) =
            classify(op, &actual, desired, &BTreeMap::new(), &by_mac, g, name, &name_of)
        {
            broken_pairs.entry((name.to_string(), p)).or_default().insert(cause);
        }
    }
    plan.ops.iter().map(describe_op).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{diagnose, tests::cluster, Report};
    use super::*;
    use weft_dataplane::view::{LinkView, VxlanView};
    use weft_flanneld::network::parse_config;

    fn mac6(i: usize) -> Mac {
        [0x6a, 0xbb, 0, 0, 0, i as u8]
    }

    fn subnet6(i: usize) -> Ipv6Network {
        Ipv6Network::new(format!("fd00:5:0:{:x}::", 0x10 + i).parse().unwrap(), 64).unwrap()
    }

    fn public6(i: usize) -> Ipv6Addr {
        format!("fd00:18::{:x}", 0x10 + i).parse().unwrap()
    }

    /// `cluster(n)` made dual stack: every lease with its IPv6 side, every node with its
    /// `flannel-v6.1` holding exactly what flanneld's IPv6 reconcile programs.
    fn dual(n: usize) -> Cluster {
        let mut c = cluster(n);
        c.spec = parse_config(
            br#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        for (i, r) in c.records.iter_mut().enumerate() {
            let mut attrs = LeaseAttrs::parse(&r.value).unwrap();
            attrs.public_ipv6 = Some(public6(i));
            attrs.backend_v6_data = Some(serde_json::json!({"VNI": 1, "VtepMAC": format_mac(&mac6(i))}));
            r.value = attrs.render();
            let old = r.key.clone();
            r.key = format!("{old}&{}-64", subnet6(i).network());
            for v in c.views.values_mut().flat_map(|v| v.as_mut().ok()) {
                if let Some(l) = v.flanneld.as_mut().and_then(|f| f.lease.as_mut()).filter(|l| l.key == old) {
                    l.key = r.key.clone();
                }
            }
        }
        for (i, v) in c.views.values_mut().enumerate() {
            let v = v.as_mut().unwrap();
            v.device_v6 = Some(LinkView {
                name: "flannel-v6.1".into(),
                index: 6,
                kind: Some("vxlan".into()),
                mac: Some(format_mac(&mac6(i))),
                mtu: 1430,
                up: true,
                vxlan: Some(VxlanView { vni: Some(1), local6: Some(public6(i)), ..VxlanView::default() }),
                ..LinkView::default()
            });
            for j in (0..n).filter(|j| *j != i) {
                let gw = IpAddr::V6(subnet6(j).network());
                // The IPv4 entries for the same peer, moved to the IPv6 side.
                let mut n = v.neighbours[0].clone();
                (n.ip, n.mac) = (gw, Some(format_mac(&mac6(j))));
                v.neighbours_v6.push(n);
                let mut f = v.fdb[0].clone();
                (f.mac, f.dst) = (format_mac(&mac6(j)), Some(IpAddr::V6(public6(j))));
                v.fdb_v6.push(f);
                let mut r = v.routes[0].clone();
                // IPv6 routes get the kernel's default metric 1024, which flanneld's plan expects.
                (r.dst, r.gateway, r.dev, r.oif, r.metric) =
                    (IpNetwork::V6(subnet6(j)), Some(gw), Some("flannel-v6.1".into()), Some(6), 1024);
                v.routes_v6.push(r);
            }
        }
        c
    }

    fn view(c: &mut Cluster, i: usize) -> &mut DataplaneView {
        c.views.values_mut().nth(i).unwrap().as_mut().unwrap()
    }

    fn causes(r: &Report) -> Vec<(Cause, Option<&'static str>, Vec<String>)> {
        r.findings.iter().map(|f| (f.cause, f.family, f.nodes.clone())).collect()
    }

    #[test]
    fn healthy_dual_stack_is_healthy() {
        let r = diagnose(&dual(3));
        assert!(r.healthy, "{:?}", r.findings);
        assert!(r.findings.is_empty() && r.dry_run.is_empty(), "{:?} {:?}", r.findings, r.dry_run);
    }

    #[test]
    fn missing_ipv6_fdb_entry_is_fdb_missing_on_ipv6() {
        let mut c = dual(3);
        view(&mut c, 0).fdb_v6.retain(|f| f.dst != Some(IpAddr::V6(public6(1))));
        let r = diagnose(&c);
        assert_eq!(causes(&r), vec![(Cause::FdbMissing, Some("ipv6"), vec!["198.18.0.10".into()])]);
        let f = &r.findings[0];
        assert_eq!(f.peer.as_deref(), Some("198.18.0.11"));
        assert!(f.message.starts_with("IPv6: "), "{}", f.message);
        assert_eq!(r.dry_run[0].ops, vec![format!("add fdb {} dst {}", format_mac(&mac6(1)), public6(1))]);
        let json = serde_json::to_value(f).unwrap();
        assert_eq!(json["family"], "ipv6");
    }

    #[test]
    fn missing_ipv6_route_and_neighbour() {
        let mut c = dual(2);
        view(&mut c, 1).routes_v6.clear();
        view(&mut c, 0).neighbours_v6.clear();
        let r = diagnose(&c);
        let mut got = causes(&r);
        got.sort();
        assert_eq!(
            got,
            vec![
                (Cause::NoRoute, Some("ipv6"), vec!["198.18.0.11".into()]),
                (Cause::NeighMissing, Some("ipv6"), vec!["198.18.0.10".into()]),
            ]
        );
    }

    #[test]
    fn stale_ipv6_vtep_mac_on_the_remote_device() {
        // Node 1's flannel-v6 has a new MAC its lease does not say; node 0 still holds the old.
        let mut c = dual(2);
        view(&mut c, 1).device_v6.as_mut().unwrap().mac = Some("6a:bb:00:00:00:99".into());
        let r = diagnose(&c);
        assert_eq!(causes(&r), vec![(Cause::VtepMacMismatch, Some("ipv6"), vec!["198.18.0.11".into()])]);
        assert!(r.findings[0].message.contains("1 node sends to"), "{}", r.findings[0].message);
    }

    #[test]
    fn stale_local_ipv6_neighbour_mac() {
        let mut c = dual(2);
        view(&mut c, 0).neighbours_v6[0].mac = Some("6a:bb:00:00:00:77".into());
        let r = diagnose(&c);
        assert_eq!(causes(&r), vec![(Cause::NeighMacStale, Some("ipv6"), vec!["198.18.0.10".into()])]);
    }

    #[test]
    fn missing_ipv6_device_and_ipv4_side_untouched() {
        let mut c = dual(2);
        let v = view(&mut c, 0);
        v.device_v6 = None;
        v.neighbours_v6.clear();
        v.fdb_v6.clear();
        v.routes_v6.clear();
        let r = diagnose(&c);
        assert_eq!(causes(&r), vec![(Cause::VtepMissing, Some("ipv6"), vec!["198.18.0.10".into()])]);
        assert!(r.findings[0].message.contains("flannel-v6.1 does not exist"));
    }

    #[test]
    fn ipv6_device_larger_than_the_underlay_allows_is_mtu_mismatch() {
        let mut c = dual(2);
        view(&mut c, 1).device_v6.as_mut().unwrap().mtu = 1450; // eth0 1500 − 70 = 1430
        let r = diagnose(&c);
        assert_eq!(causes(&r), vec![(Cause::MtuMismatch, Some("ipv6"), vec!["198.18.0.11".into()])]);
        assert!(r.findings[0].message.contains("flannel-v6.1 MTU 1450 > eth0 MTU 1500 - 70"));
    }

    #[test]
    fn ipv4_only_cluster_has_no_ipv6_findings() {
        let r = diagnose(&cluster(2));
        assert!(r.healthy && r.findings.iter().all(|f| f.family.is_none()));
    }
}
