//! The overlay hops: the lease covering DST, the VXLAN device, neighbour, FDB, the underlay
//! route and the remote node's view (the VTEP triangle). IPv6 (dual stack, docs/flannel.md
//! §4.1) walks the same hops on `flannel-v6.<VNI>`: the IPv6 neighbour `S6::` → v6 VtepMAC, the
//! FDB entry `mac dst PublicIPv6`, the remote `flannel-v6` device; the remote node's view is
//! read at its IPv4 PublicIP (where its flanneld listens).

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;
use serde_json::Value;
use weft_common::netlink::Netlink;

use super::local::forward_hop;
use super::remote_filter::{self, Flow};
use super::{describe_route, vxlan_overhead, Local, Walk};
use crate::cause::Cause;
use crate::kernel::{self, Fdb, LinkFacts, Neigh, RouteAnswer, RouteQuery};
use crate::pods::Attachment;
use crate::remote;

/// The lease that covers `dst`, with where it was read.
pub(super) struct PeerLease {
    /// The subnet of the walked family.
    pub(super) subnet: IpNetwork,
    /// `PublicIP`, or `PublicIPv6` for IPv6.
    pub(super) public_ip: Option<IpAddr>,
    pub(super) vtep_mac: Option<String>,
    pub(super) source: String,
    /// Where the node's flanneld view is read: its IPv4 PublicIP.
    pub(super) node: Option<IpAddr>,
}

impl PeerLease {
    /// The lease `l` (from etcd) for the family `v6` selects.
    pub(super) fn of(l: &crate::leases::Lease, v6: bool, source: String) -> Option<PeerLease> {
        Some(PeerLease {
            subnet: l.subnet_of(v6)?,
            public_ip: l.public_of(v6),
            vtep_mac: l.mac_of(v6),
            source,
            node: Some(IpAddr::V4(l.public_ip)),
        })
    }
}

/// The lease a node's flanneld holds, as its view (read at `at`) tells it. IPv6: the view
/// carries no IPv6 lease, so the subnet is the IPv6 prefix on its bridge (`FLANNEL_IPV6_SUBNET`,
/// which the bridge plugin puts there), `PublicIPv6` flanneld's, and the MAC unknown.
pub(super) fn lease_from_view(view: &Value, at: IpAddr, v6: bool) -> Option<PeerLease> {
    let l = view.pointer("/flanneld/lease")?;
    if v6 {
        let subnet = view
            .pointer("/bridge/addresses")?
            .as_array()?
            .iter()
            .filter_map(|a| a.as_str()?.parse::<IpNetwork>().ok())
            .find(IpNetwork::is_ipv6)
            .and_then(|a| IpNetwork::new(a.network(), a.prefix()).ok())?;
        let public =
            view.pointer("/flanneld/public_ipv6").and_then(Value::as_str).and_then(|p| p.parse().ok());
        return Some(PeerLease {
            subnet,
            public_ip: public,
            vtep_mac: None,
            source: format!(
                "lease {} (IPv6 side as flanneld on {at} publishes it)",
                l.get("key").and_then(Value::as_str).unwrap_or("?")
            ),
            node: Some(at),
        });
    }
    Some(PeerLease {
        subnet: IpNetwork::V4(l.get("subnet")?.as_str()?.parse().ok()?),
        public_ip: l.get("public_ip").and_then(Value::as_str).and_then(|p| p.parse().ok()),
        vtep_mac: l.get("vtep_mac").and_then(Value::as_str).map(str::to_lowercase),
        node: Some(at),
        source: format!(
            "lease {} rev {} (as flanneld on {at} holds it)",
            l.get("key").and_then(Value::as_str).unwrap_or("?"),
            l.get("etcd_revision").map(Value::to_string).unwrap_or_else(|| "?".into())
        ),
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn cross_node(
    w: &mut Walk,
    host: &mut Netlink,
    local: &Local,
    vtep: Option<&LinkFacts>,
    answer: &RouteAnswer,
    route_obj: String,
    _src: &Attachment,
    src_ip: IpAddr,
    dst_ip: IpAddr,
    q: &str,
    remote_port: u16,
    unreadable: &mut Option<String>,
    bridge: &LinkFacts,
) {
    let v6 = dst_ip.is_ipv6();
    let Some(vtep) = vtep else {
        let dev = if v6 { "flannel-v6.<VNI>" } else { "flannel.<VNI>" };
        w.broken("host-route", route_obj, None, Cause::VtepMissing, format!("no {dev} device on this node"));
        return;
    };
    if !vtep.up {
        w.broken(
            "vtep",
            format!("{}@{} DOWN", vtep.name, vtep.index),
            None,
            Cause::VtepDown,
            format!("{} is down (the kernel dropped its routes and neighbours)", vtep.name),
        );
        return;
    }
    let neighs = kernel::neighbours(host, vtep.index, v6).unwrap_or_else(|e| {
        w.notes.push(format!("neighbours of {}: {e}", vtep.name));
        Vec::new()
    });
    let fdbs = kernel::fdb(host, vtep.index).unwrap_or_else(|e| {
        w.notes.push(format!("FDB of {}: {e}", vtep.name));
        Vec::new()
    });
    // The lease covering DST: from etcd, or from the view of the node the FDB points at.
    let mut view: Option<(IpAddr, Value)> = None;
    let etcd_lease = local.leases.as_ref().map(|ls| {
        ls.iter().find(|l| l.covers(dst_ip)).and_then(|l| {
            PeerLease::of(l, v6, format!("lease {} rev {} ({})", l.key, l.revision, local.lease_source))
        })
    });
    // Two leases covering DST (F13): traffic goes to whichever route won.
    if local.overlapping(w, dst_ip, &route_obj) {
        return;
    }
    let lease = match etcd_lease {
        Some(Some(l)) => Some(l),
        Some(None) => {
            w.broken(
                "host-route",
                route_obj,
                Some(local.lease_source.clone()),
                Cause::LeaseMissing,
                format!("no lease in etcd covers {dst_ip}"),
            );
            return;
        }
        None => {
            // Ask each peer the FDB names (the neighbour's first) for its own lease.
            let gw_mac =
                answer.gateway.and_then(|g| neighs.iter().find(|n| n.ip == g)).and_then(|n| n.mac.clone());
            let mut dsts: Vec<IpAddr> =
                fdbs.iter().filter(|f| Some(&f.mac) == gw_mac.as_ref()).filter_map(|f| f.dst).collect();
            dsts.extend(fdbs.iter().filter_map(|f| f.dst));
            if v6 {
                // flanneld listens on the IPv4 side: ask the nodes `flannel.<VNI>`'s FDB names.
                let v4 = local.vtep(false).map(|d| kernel::fdb(host, d.index).unwrap_or_default());
                dsts = v4.into_iter().flatten().filter_map(|f| f.dst).collect();
            }
            dsts.dedup();
            let mut found = None;
            let mut errors = Vec::new();
            for d in dsts.into_iter().filter(|d| !d.is_unspecified()) {
                match remote::fetch_view(d, remote_port) {
                    Ok(v) => {
                        if let Some(l) = lease_from_view(&v, d, v6).filter(|l| l.subnet.contains(dst_ip)) {
                            view = Some((d, v));
                            found = Some(l);
                            break;
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
            if found.is_none() && !errors.is_empty() {
                w.notes.extend(errors);
            }
            found
        }
    };
    let expected_gw = lease.as_ref().map(|l| l.subnet.network());
    let node_at = lease.as_ref().and_then(|l| l.node);
    let lease_src = lease.as_ref().map(|l| l.source.clone());

    // 5b. The route must leave by the VXLAN device via the peer subnet's network address.
    if answer.oif != Some(vtep.index) {
        // A route for the lease's subnet that leaves elsewhere is wrong; none at all is missing (F1).
        let misrouted = lease.as_ref().is_some_and(|l| {
            host.routes().unwrap_or_default().iter().any(|r| r.dst == l.subnet && r.oif != Some(vtep.index))
        });
        let cause = if misrouted { Cause::RouteWrongDev } else { Cause::NoRoute };
        w.broken(
            "host-route",
            route_obj,
            lease_src.clone().or_else(|| Some(format!("every peer lease (via {})", local.lease_source))),
            cause,
            format!("{dst_ip} is in the cluster network but the kernel does not send it to {}", vtep.name),
        );
        return;
    }
    if let (Some(want), Some(got)) = (expected_gw, answer.gateway) {
        if got != want {
            w.broken(
                "host-route",
                route_obj,
                lease_src,
                Cause::RouteWrongDev,
                format!("gateway {got}, the lease implies {want}"),
            );
            return;
        }
    }
    w.ok("host-route", format!("{route_obj} ({q})"), lease_src.clone());
    forward_hop(w, local, src_ip, dst_ip, &bridge.name, &vtep.name);
    if w.failed() {
        return;
    }

    // 6. The VXLAN device.
    let underlay =
        vtep.vxlan.as_ref().and_then(|x| x.underlay_index).filter(|i| *i != 0).and_then(|i| local.link(i));
    let local_ip: Option<IpAddr> =
        vtep.vxlan.as_ref().and_then(|x| if v6 { x.local6.map(IpAddr::V6) } else { x.local.map(IpAddr::V4) });
    let vx = vtep.vxlan.clone().unwrap_or_default();
    let vtep_obj = format!(
        "{}@{} mac {} mtu {} {} vni {} local {} port {} dev {}",
        vtep.name,
        vtep.index,
        vtep.mac,
        vtep.mtu,
        if vtep.up { "up" } else { "DOWN" },
        vx.vni.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
        local_ip.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
        vx.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        underlay.as_ref().map(|u| u.name.clone()).unwrap_or_else(|| "-".into())
    );
    let vtep_src = Some(format!("flanneld (FLANNEL_MTU in {})", local.subnet_file));
    if !vtep.up {
        w.broken("vtep", vtep_obj, vtep_src, Cause::VtepDown, format!("{} is down", vtep.name));
        return;
    }
    if let Some(u) = &underlay {
        let max = u.mtu.saturating_sub(vxlan_overhead(v6));
        if vtep.mtu > max {
            w.broken(
                "vtep",
                vtep_obj,
                vtep_src,
                Cause::MtuMismatch,
                format!(
                    "{} mtu {} > {} mtu {} - {} VXLAN overhead",
                    vtep.name,
                    vtep.mtu,
                    u.name,
                    u.mtu,
                    vxlan_overhead(v6)
                ),
            );
            return;
        }
    }
    if let Some(l) = local_ip {
        // The kernel's own answer (a `local` route): no dump of every address, whose count grows
        // with the node's pods (each veth has an IPv6 link-local one).
        let here = match kernel::route_get(host, &RouteQuery { to: Some(l), ..RouteQuery::default() }) {
            Ok(r) => r.kind == "local",
            // No route at all: certainly not ours (a local address always has its route).
            Err(e) if matches!(e.raw_errno(), Some(libc::ENETUNREACH | libc::EHOSTUNREACH)) => false,
            Err(_) => true,
        };
        if !here {
            w.broken(
                "vtep",
                vtep_obj,
                vtep_src,
                Cause::PublicIpNotLocal,
                format!("VXLAN local {l} is not an address of this node"),
            );
            return;
        }
    }
    w.ok("vtep", vtep_obj, vtep_src);

    // 7. Neighbour: the peer gateway's VTEP MAC.
    let Some(gw) = answer.gateway else {
        w.broken(
            "neighbour",
            "no gateway in the route".into(),
            lease_src,
            Cause::RouteWrongDev,
            "the route via the VXLAN device has no gateway".into(),
        );
        return;
    };
    let neigh: Option<&Neigh> = neighs.iter().find(|n| n.ip == gw);
    let Some(neigh) = neigh.filter(|n| n.mac.is_some()) else {
        w.broken(
            "neighbour",
            format!("no entry for {gw} on {}", vtep.name),
            lease_src,
            Cause::NeighMissing,
            format!("no neighbour entry maps {gw} to a VTEP MAC"),
        );
        return;
    };
    let nmac = neigh.mac.clone().unwrap_or_default();
    let neigh_obj = format!("{gw} lladdr {nmac} {}", neigh.state);
    let lease_mac = lease.as_ref().and_then(|l| l.vtep_mac.clone());
    if let Some(lm) = lease_mac.as_ref().filter(|lm| **lm != nmac) {
        // Before blaming our neighbour, ask the peer: if its device has our neighbour's MAC
        // and its flanneld holds that MAC too, it is the lease in etcd that is out of date.
        let stale_lease = node_at.and_then(|p| remote::fetch_view(p, remote_port).ok()).is_some_and(|v| {
            let dev = v.pointer(if v6 { "/device_v6/mac" } else { "/device/mac" });
            let dev = dev.and_then(Value::as_str).map(str::to_lowercase);
            let held = v.pointer("/flanneld/lease/vtep_mac").and_then(Value::as_str).map(str::to_lowercase);
            dev.as_deref() == Some(nmac.as_str()) && held.as_deref() == Some(nmac.as_str())
        });
        let (cause, why) = if stale_lease {
            (
                Cause::LeaseVtepMacStale,
                format!("the lease's VtepMAC {lm} is not the MAC the peer's device has and its flanneld holds ({nmac})"),
            )
        } else {
            (Cause::NeighMacStale, format!("neighbour MAC {nmac} is not the lease's VtepMAC {lm}"))
        };
        w.broken("neighbour", neigh_obj, lease_src, cause, why);
        return;
    }
    w.ok("neighbour", neigh_obj, lease_src.clone());

    // 8. FDB: that MAC to the peer's PublicIP.
    let fdb: Option<&Fdb> = fdbs.iter().find(|f| f.mac == nmac && f.dst.is_some());
    let Some(fdb) = fdb else {
        w.broken(
            "fdb",
            format!("no entry for {nmac} on {}", vtep.name),
            lease_src,
            Cause::FdbMissing,
            format!("no FDB entry sends {nmac} to a node"),
        );
        return;
    };
    let fdst = fdb.dst.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let fdb_obj = format!("{nmac} dst {fdst} dev {}", vtep.name);
    if let Some(p) = lease.as_ref().and_then(|l| l.public_ip).filter(|p| *p != fdst) {
        w.broken(
            "fdb",
            fdb_obj,
            lease_src,
            Cause::FdbWrongDst,
            format!(
                "FDB sends {nmac} to {fdst}, the lease's {} is {p}",
                if v6 { "PublicIPv6" } else { "PublicIP" }
            ),
        );
        return;
    }
    w.ok("fdb", fdb_obj, lease_src.clone());

    // 9. The underlay route to the peer (F5: it must leave by the VXLAN device's lower device).
    let peer = fdst;
    match kernel::route_get(host, &RouteQuery { to: Some(peer), from: local_ip, ..RouteQuery::default() }) {
        Err(e) => {
            w.broken(
                "underlay",
                format!("route get {peer}: {}", e.source),
                None,
                Cause::UnderlayNoRoute,
                format!("no underlay route to {peer}"),
            );
            return;
        }
        Ok(r) => {
            let obj = describe_route(&r, local, peer);
            if r.kind != "unicast" {
                w.broken(
                    "underlay",
                    obj,
                    None,
                    Cause::UnderlayNoRoute,
                    format!("the kernel answers {} for {peer}", r.kind),
                );
                return;
            }
            if let (Some(u), Some(o)) = (&underlay, r.oif) {
                if u.index != o {
                    w.broken(
                        "underlay",
                        obj,
                        None,
                        Cause::UnderlayNoRoute,
                        format!("{peer} is reached via another device than {}'s {}", vtep.name, u.name),
                    );
                    return;
                }
            }
            w.ok("underlay", obj, None);
        }
    }

    // 10. The remote node, through its flanneld's view (at its IPv4 PublicIP).
    let at_node = if v6 { node_at.unwrap_or(fdst) } else { fdst };
    let (at, v) = match view.take().filter(|(a, _)| *a == at_node) {
        Some(x) => x,
        None => match remote::fetch_view(at_node, remote_port) {
            Ok(v) => (at_node, v),
            Err(e) => {
                w.node = at_node.to_string();
                w.broken(
                    "remote-vtep",
                    format!("view of {at_node}"),
                    None,
                    Cause::RemoteViewUnavailable,
                    e.clone(),
                );
                *unreadable = Some(e);
                return;
            }
        },
    };
    w.node = at.to_string();
    remote_hops(w, &v, at, remote_port, &nmac, lease.as_ref(), (src_ip, dst_ip));
}

fn remote_hops(
    w: &mut Walk,
    v: &Value,
    at: IpAddr,
    port: u16,
    nmac: &str,
    lease: Option<&PeerLease>,
    (src_ip, dst_ip): (IpAddr, IpAddr),
) {
    let v6 = dst_ip.is_ipv6();
    let src = Some(format!("flanneld view {}", remote::url(at, port)));
    let (key, dev_name) = if v6 { ("device_v6", "flannel-v6.<VNI>") } else { ("device", "flannel.<VNI>") };
    let Some(dev) = v.get(key).filter(|d| !d.is_null()) else {
        w.broken(
            "remote-vtep",
            format!("no {dev_name} device"),
            src,
            Cause::VtepMissing,
            format!("{at} has no {dev_name} device"),
        );
        return;
    };
    let name = dev.get("name").and_then(Value::as_str).unwrap_or("flannel.?");
    let mac = dev.get("mac").and_then(Value::as_str).unwrap_or("").to_lowercase();
    let up = dev.get("up").and_then(Value::as_bool).unwrap_or(false);
    let obj = format!(
        "{name} mac {mac} mtu {} {}",
        dev.get("mtu").map(Value::to_string).unwrap_or_default(),
        if up { "up" } else { "DOWN" }
    );
    if !up {
        w.broken("remote-vtep", obj, src, Cause::VtepDown, format!("{name} on {at} is down"));
        return;
    }
    let held = lease_from_view(v, at, v6).and_then(|l| l.vtep_mac);
    if mac != nmac {
        // The triangle (F3): device MAC, lease VtepMAC, our neighbour MAC.
        let lease_mac = lease.and_then(|l| l.vtep_mac.clone()).or(held.clone());
        let (cause, why) =
            if held.as_deref() == Some(mac.as_str()) && lease_mac.as_deref() != Some(mac.as_str()) {
                // flanneld holds the device's MAC; the lease we (and our neighbour) follow does not.
                (
                    Cause::LeaseVtepMacStale,
                    format!(
                        "the lease's VtepMAC {} is not {at}'s {name} MAC {mac}, which its flanneld holds",
                        lease_mac.as_deref().unwrap_or("?")
                    ),
                )
            } else if lease_mac.as_deref() == Some(mac.as_str()) {
                (
                    Cause::NeighMacStale,
                    format!("our neighbour MAC {nmac} is not {at}'s {name} MAC {mac} (which its lease has)"),
                )
            } else {
                (
                    Cause::VtepMacMismatch,
                    format!(
                        "{at}'s {name} MAC {mac} differs from our neighbour MAC {nmac} and its lease ({})",
                        lease_mac.as_deref().unwrap_or("?")
                    ),
                )
            };
        w.broken("remote-vtep", obj, src, cause, why);
        return;
    }
    if let (Some(etcd_mac), Some(h)) = (lease.and_then(|l| l.vtep_mac.clone()), held.as_ref()) {
        if etcd_mac != *h || etcd_mac != mac {
            w.broken(
                "remote-vtep",
                obj,
                src,
                Cause::LeaseVtepMacStale,
                format!("lease VtepMAC {etcd_mac}, {at}'s flanneld holds {h}, device {mac}"),
            );
            return;
        }
    }
    w.ok("remote-vtep", obj, src.clone());
    remote_tail(w, v, at, src, (src_ip, dst_ip));
}

/// The destination node forwards (`ip_forward`), holds DST's subnet on its bridge, its strict
/// `rp_filter` (if any) accepts SRC on the arrival interface and its FORWARD chain passes the
/// packet ([`super::remote_filter`]); then the destination pod.
pub(super) fn remote_tail(w: &mut Walk, v: &Value, at: IpAddr, src: Option<String>, ips: (IpAddr, IpAddr)) {
    let dst_ip = ips.1;
    let v6 = dst_ip.is_ipv6();
    let flow = Flow { src: ips.0, dst: dst_ip };
    // The family's forwarding switch (an older flanneld's view has no IPv6 one: not judged).
    let (key, sysctl) = if v6 {
        ("/sysctls/ipv6_forwarding", "net.ipv6.conf.all.forwarding")
    } else {
        ("/sysctls/ip_forward", "net.ipv4.ip_forward")
    };
    let fwd = v.pointer(key).and_then(Value::as_u64);
    if fwd == Some(0) {
        w.broken(
            "remote-forward",
            format!("{sysctl}=0 on {at}"),
            src,
            Cause::IpForwardOff,
            format!("{at} does not forward {}", super::local::family(dst_ip)),
        );
        return;
    }
    if v6 && fwd.is_none() {
        w.notes.push(format!("{at}: its view carries no IPv6 forwarding sysctl (not judged)"));
    }
    let bridge = v.pointer("/bridge/name").and_then(Value::as_str);
    let routes = v.get(if v6 { "routes_v6" } else { "routes" });
    let routes = routes.and_then(Value::as_array).cloned().unwrap_or_default();
    let route = routes.iter().find(|r| {
        r.get("dst")
            .and_then(Value::as_str)
            .and_then(|d| d.parse::<IpNetwork>().ok())
            .is_some_and(|d| d.contains(dst_ip) && d.prefix() > 0)
            && r.get("dev").and_then(Value::as_str) == bridge
            && bridge.is_some()
    });
    let iif = remote_filter::arrival_iface(v).unwrap_or("?");
    match route {
        Some(r) => {
            let obj = format!(
                "{} dev {}",
                r.get("dst").and_then(Value::as_str).unwrap_or("?"),
                bridge.unwrap_or("?")
            );
            if let Some(why) = remote_filter::rp_rejects(w, v, at, iif, flow) {
                w.broken("remote-route", obj, src, Cause::RpFilter, why);
                return;
            }
            w.ok("remote-route", obj, src.clone());
        }
        None => {
            w.broken(
                "remote-route",
                format!("no route to {dst_ip} on {at}'s bridge"),
                src,
                Cause::NoRoute,
                format!("{at} has no route for {dst_ip} to its bridge"),
            );
            return;
        }
    }
    if !remote_filter::forward_hop(w, v, at, src, (iif, bridge.unwrap_or("?")), flow) {
        return;
    }
    w.ok("dst-pod", format!("{dst_ip} behind {} on {at}", bridge.unwrap_or("?")), None);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn view() -> Value {
        serde_json::json!({
            "flanneld": {
                "public_ipv6": "fd00:18::11",
                "lease": {"key": "/coreos.com/network/subnets/10.5.11.0-24&fd00:5:0:11::-64",
                          "subnet": "10.5.11.0/24", "public_ip": "198.18.0.11",
                          "vtep_mac": "6E:AA:00:00:00:01", "etcd_revision": 12}
            },
            "bridge": {"name": "cni0", "addresses": ["10.5.11.1/24", "fd00:5:0:11::1/64"]}
        })
    }

    #[test]
    fn a_views_lease_for_each_family() {
        let at: IpAddr = "198.18.0.11".parse().unwrap();
        let v4 = lease_from_view(&view(), at, false).unwrap();
        assert_eq!(v4.subnet, "10.5.11.0/24".parse::<IpNetwork>().unwrap());
        assert_eq!(
            (v4.public_ip, v4.vtep_mac.as_deref(), v4.node),
            (Some(at), Some("6e:aa:00:00:00:01"), Some(at))
        );
        // IPv6: the bridge's IPv6 prefix, flanneld's PublicIPv6, MAC unknown, read at the IPv4 node.
        let v6 = lease_from_view(&view(), at, true).unwrap();
        assert_eq!(v6.subnet, "fd00:5:0:11::/64".parse::<IpNetwork>().unwrap());
        assert_eq!(v6.public_ip, Some("fd00:18::11".parse().unwrap()));
        assert_eq!((v6.vtep_mac, v6.node), (None, Some(at)));
        // A bridge without an IPv6 address: no IPv6 lease side.
        let mut no6 = view();
        no6["bridge"]["addresses"] = serde_json::json!(["10.5.11.1/24"]);
        assert!(lease_from_view(&no6, at, true).is_none());
    }

    #[test]
    fn remote_ipv6_forwarding_off_is_named_with_its_family() {
        let at: IpAddr = "198.18.0.11".parse().unwrap();
        let mut v = view();
        v["sysctls"] = serde_json::json!({"ip_forward": 1, "ipv6_forwarding": 0, "rp_filter": {}});
        let ips6: (IpAddr, IpAddr) = ("fd00:5:0:1::2".parse().unwrap(), "fd00:5:0:11::3".parse().unwrap());
        let mut w = Walk { hops: Vec::new(), notes: Vec::new(), node: at.to_string() };
        remote_tail(&mut w, &v, at, None, ips6);
        let h = &w.hops[0];
        assert_eq!((h.step, h.cause), ("remote-forward", Some(Cause::IpForwardOff)));
        assert_eq!(h.object, "net.ipv6.conf.all.forwarding=0 on 198.18.0.11");
        assert_eq!(h.detail.as_deref(), Some("198.18.0.11 does not forward IPv6"));
        // IPv4 forwarding on: the IPv4 pair goes past the forwarding check.
        let ips4: (IpAddr, IpAddr) = ("10.5.1.2".parse().unwrap(), "10.5.11.3".parse().unwrap());
        let mut w = Walk { hops: Vec::new(), notes: Vec::new(), node: at.to_string() };
        remote_tail(&mut w, &v, at, None, ips4);
        assert!(w.hops.iter().all(|h| h.step != "remote-forward"), "{:?}", w.hops);
    }
}
