//! The overlay hops: the lease covering DST, the VXLAN device, neighbour, FDB, the underlay
//! route and the remote node's view (the VTEP triangle).

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::{IpNetwork, Ipv4Network};
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
    pub(super) subnet: Ipv4Network,
    pub(super) public_ip: Option<Ipv4Addr>,
    pub(super) vtep_mac: Option<String>,
    pub(super) source: String,
}

pub(super) fn lease_from_view(view: &Value, at: IpAddr) -> Option<PeerLease> {
    let l = view.pointer("/flanneld/lease")?;
    Some(PeerLease {
        subnet: l.get("subnet")?.as_str()?.parse().ok()?,
        public_ip: l.get("public_ip").and_then(Value::as_str).and_then(|p| p.parse().ok()),
        vtep_mac: l.get("vtep_mac").and_then(Value::as_str).map(str::to_lowercase),
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
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    q: &str,
    remote_port: u16,
    unreadable: &mut Option<String>,
    bridge: &LinkFacts,
) {
    let Some(vtep) = vtep else {
        w.broken(
            "host-route",
            route_obj,
            None,
            Cause::VtepMissing,
            "no flannel.<VNI> device on this node".into(),
        );
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
    let neighs = kernel::neighbours(host, vtep.index).unwrap_or_else(|e| {
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
        ls.iter().find(|l| l.subnet.contains(dst_ip)).map(|l| PeerLease {
            subnet: l.subnet,
            public_ip: Some(l.public_ip),
            vtep_mac: l.vtep_mac.clone(),
            source: format!("lease {} rev {} ({})", l.key, l.revision, local.lease_source),
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
            dsts.dedup();
            let mut found = None;
            let mut errors = Vec::new();
            for d in dsts.into_iter().filter(|d| !d.is_unspecified()) {
                match remote::fetch_view(d, remote_port) {
                    Ok(v) => {
                        if let Some(l) = lease_from_view(&v, d).filter(|l| l.subnet.contains(dst_ip)) {
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
    let lease_src = lease.as_ref().map(|l| l.source.clone());

    // 5b. The route must leave by the VXLAN device via the peer subnet's network address.
    if answer.oif != Some(vtep.index) {
        // A route for the lease's subnet that leaves elsewhere is wrong; none at all is missing (F1).
        let misrouted = lease.as_ref().is_some_and(|l| {
            host.routes()
                .unwrap_or_default()
                .iter()
                .any(|r| r.dst == IpNetwork::V4(l.subnet) && r.oif != Some(vtep.index))
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
        if got != IpAddr::V4(want) {
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
    let local_ip = vtep.vxlan.as_ref().and_then(|x| x.local);
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
        underlay.map(|u| u.name.clone()).unwrap_or_else(|| "-".into())
    );
    let vtep_src = Some(format!("flanneld (FLANNEL_MTU in {})", local.subnet_file));
    if !vtep.up {
        w.broken("vtep", vtep_obj, vtep_src, Cause::VtepDown, format!("{} is down", vtep.name));
        return;
    }
    if let Some(u) = underlay {
        let max = u.mtu.saturating_sub(vxlan_overhead(false));
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
                    vxlan_overhead(false)
                ),
            );
            return;
        }
    }
    if let Some(l) = local_ip {
        let here =
            host.addresses(None).map(|a| a.iter().any(|a| a.address.ip() == IpAddr::V4(l))).unwrap_or(true);
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
        let peer = lease.as_ref().and_then(|l| l.public_ip).map(IpAddr::V4);
        let stale_lease = peer.and_then(|p| remote::fetch_view(p, remote_port).ok()).is_some_and(|v| {
            let dev = v.pointer("/device/mac").and_then(Value::as_str).map(str::to_lowercase);
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
    if let Some(p) = lease.as_ref().and_then(|l| l.public_ip).filter(|p| IpAddr::V4(*p) != fdst) {
        w.broken(
            "fdb",
            fdb_obj,
            lease_src,
            Cause::FdbWrongDst,
            format!("FDB sends {nmac} to {fdst}, the lease's PublicIP is {p}"),
        );
        return;
    }
    w.ok("fdb", fdb_obj, lease_src.clone());

    // 9. The underlay route to the peer (F5: it must leave by the VXLAN device's lower device).
    let IpAddr::V4(peer) = fdst else {
        w.broken(
            "underlay",
            format!("{fdst}"),
            None,
            Cause::UnderlayNoRoute,
            "IPv6 underlay not supported".into(),
        );
        return;
    };
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
            if let (Some(u), Some(o)) = (underlay, r.oif) {
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

    // 10. The remote node, through its flanneld's view.
    let (at, v) = match view.take().filter(|(a, _)| *a == fdst) {
        Some(x) => x,
        None => match remote::fetch_view(fdst, remote_port) {
            Ok(v) => (fdst, v),
            Err(e) => {
                w.node = fdst.to_string();
                w.broken(
                    "remote-vtep",
                    format!("view of {fdst}"),
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
    remote_hops(w, &v, at, remote_port, &nmac, lease.as_ref(), Flow { src: src_ip, dst: dst_ip });
}

fn remote_hops(
    w: &mut Walk,
    v: &Value,
    at: IpAddr,
    port: u16,
    nmac: &str,
    lease: Option<&PeerLease>,
    flow: Flow,
) {
    let src = Some(format!("flanneld view {}", remote::url(at, port)));
    let Some(dev) = v.get("device").filter(|d| !d.is_null()) else {
        w.broken(
            "remote-vtep",
            "no flannel.<VNI> device".into(),
            src,
            Cause::VtepMissing,
            format!("{at} has no VXLAN device"),
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
    let held = lease_from_view(v, at).and_then(|l| l.vtep_mac);
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
    remote_tail(w, v, at, src, flow);
}

/// The destination node forwards (`ip_forward`), holds DST's subnet on its bridge, its strict
/// `rp_filter` (if any) accepts SRC on the arrival interface and its FORWARD chain passes the
/// packet ([`super::remote_filter`]); then the destination pod.
pub(super) fn remote_tail(w: &mut Walk, v: &Value, at: IpAddr, src: Option<String>, flow: Flow) {
    let dst_ip = flow.dst;
    let fwd = v.pointer("/sysctls/ip_forward").and_then(Value::as_u64);
    if fwd == Some(0) {
        w.broken(
            "remote-forward",
            format!("net.ipv4.ip_forward=0 on {at}"),
            src,
            Cause::IpForwardOff,
            format!("{at} does not forward"),
        );
        return;
    }
    let bridge = v.pointer("/bridge/name").and_then(Value::as_str);
    let routes = v.get("routes").and_then(Value::as_array).cloned().unwrap_or_default();
    let route = routes.iter().find(|r| {
        r.get("dst")
            .and_then(Value::as_str)
            .and_then(|d| d.parse::<Ipv4Network>().ok())
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
