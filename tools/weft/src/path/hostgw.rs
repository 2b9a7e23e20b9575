//! The cross-node hops of the host-gw backend (docs/flannel.md §4.2; upstream
//! `pkg/backend/hostgw/hostgw.go` and `pkg/backend/route_network.go`): the peer route
//! `S via P dev <external iface>`, the external interface with `P` on-link, the underlay
//! neighbour (ARP) entry of `P`, then the remote node's view. No VXLAN device, neighbour or FDB.
//! IPv6 (dual stack): `S6 via P6 dev <external iface>` and the NDISC entry of `P6`; the remote
//! view is read at the node's IPv4 PublicIP.

use std::net::IpAddr;

use serde_json::Value;
use weft_common::netlink::Netlink;

use super::local::forward_hop;
use super::overlay::{lease_from_view, remote_tail, PeerLease};
use super::{describe_route, Local, Walk};
use crate::cause::Cause;
use crate::kernel::{self, LinkFacts, RouteAnswer, RouteQuery};
use crate::pods::Attachment;
use crate::remote;

/// What the kernel answered for DST from the bridge, and how it was asked.
pub(super) struct Asked<'a> {
    pub answer: &'a RouteAnswer,
    pub route_obj: String,
    pub query: &'a str,
}

/// The main-table route that decided `dst` (longest prefix), as `ip route` lists it.
pub(super) fn deciding_route(host: &mut Netlink, dst: IpAddr) -> Option<weft_common::netlink::route::Route> {
    let routes = host.routes().ok()?;
    routes
        .into_iter()
        .filter(|r| {
            r.table.is_none_or(|t| t == 254) && r.dst.is_ipv6() == dst.is_ipv6() && r.dst.contains(dst)
        })
        .max_by_key(|r| r.dst.prefix())
}

/// Without etcd, IPv6: the view of the node whose flanneld publishes `p6` as its PublicIPv6,
/// asked at the gateways of this node's IPv4 peer routes (flanneld listens on IPv4).
fn view_of_v6_peer(
    host: &mut Netlink,
    local: &Local,
    p6: IpAddr,
    port: u16,
) -> Result<(IpAddr, Value), String> {
    let nets = local.network(false);
    let mut gws: Vec<IpAddr> = host
        .routes()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| nets.iter().any(|n| n.contains(r.dst.ip())))
        .filter_map(|r| r.gw)
        .collect();
    gws.sort();
    gws.dedup();
    let mut errors = Vec::new();
    for gw in gws {
        match remote::fetch_view(gw, port) {
            Ok(v) if lease_from_view(&v, gw, true).and_then(|l| l.public_ip) == Some(p6) => {
                return Ok((gw, v))
            }
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    errors.push(format!("no peer's flanneld publishes PublicIPv6 {p6}"));
    Err(errors.join("; "))
}

/// The lease covering DST from etcd (F13 and a missing lease are named here); `Ok(None)`
/// when the leases were not read from etcd.
fn etcd_lease(w: &mut Walk, local: &Local, dst_ip: IpAddr, route_obj: &str) -> Result<Option<PeerLease>, ()> {
    let Some(ls) = &local.leases else { return Ok(None) };
    if local.overlapping(w, dst_ip, route_obj) {
        return Err(());
    }
    let found = ls.iter().find(|l| l.covers(dst_ip));
    match found.and_then(|l| PeerLease::of(l, dst_ip.is_ipv6(), local.route_source(dst_ip))) {
        Some(l) => Ok(Some(PeerLease { vtep_mac: None, ..l })),
        None => {
            w.broken(
                "host-route",
                route_obj.to_string(),
                Some(local.lease_source.clone()),
                Cause::LeaseMissing,
                format!("no lease in etcd covers {dst_ip}"),
            );
            Err(())
        }
    }
}

/// A remote node whose view could not be read: the walk stops there (exit 2).
fn unavailable(w: &mut Walk, at: IpAddr, e: String, unreadable: &mut Option<String>) {
    w.node = at.to_string();
    w.broken("remote-node", format!("view of {at}"), None, Cause::RemoteViewUnavailable, e.clone());
    *unreadable = Some(e);
}

#[allow(clippy::too_many_arguments)]
pub(super) fn cross_node(
    w: &mut Walk,
    host: &mut Netlink,
    local: &Local,
    asked: Asked,
    src: &Attachment,
    src_ip: IpAddr,
    dst_ip: IpAddr,
    remote_port: u16,
    unreadable: &mut Option<String>,
    bridge: &LinkFacts,
) {
    let Asked { answer, route_obj, query } = asked;
    let v6 = dst_ip.is_ipv6();
    let Ok(etcd) = etcd_lease(w, local, dst_ip, &route_obj) else { return };
    let every = || Some(format!("every peer lease (via {})", local.lease_source));
    // 5. The route: a peer route `S via P dev <iface>` must hold DST's subnet.
    let deciding = deciding_route(host, dst_ip);
    let in_cluster =
        deciding.as_ref().is_some_and(|r| local.network(v6).iter().any(|n| n.contains(r.dst.ip())));
    let Some(route) = deciding.filter(|r| r.dst.prefix() > 0 && in_cluster) else {
        let src = etcd.as_ref().map(|l| l.source.clone()).or_else(every);
        let why = format!(
            "no peer route holds {dst_ip}: the kernel answers with a route outside the cluster network"
        );
        w.broken("host-route", route_obj, src, Cause::NoRoute, why);
        return;
    };
    let out = answer.oif.and_then(|i| local.link(i));
    let (Some(gw), Some(out)) = (answer.gateway.filter(|g| g.is_ipv6() == v6), out) else {
        let src = etcd.as_ref().map(|l| l.source.clone()).or_else(every);
        let why =
            format!("the route for {} has no gateway: host-gw sends it via the peer's PublicIP", route.dst);
        w.broken("host-route", route_obj, src, Cause::RouteWrongDev, why);
        return;
    };
    let mut view: Option<Result<Value, String>> = None;
    let lease = match etcd {
        Some(l) => l,
        // Without etcd: the lease as the gateway's flanneld holds it. When it cannot be asked
        // the walk goes on with the gateway (the underlay hops may say why; else exit 2).
        None => match fetch_gateway_view(host, local, gw, remote_port) {
            Err(e) => {
                let source = format!("the route's gateway (its flanneld could not be asked: {e})");
                view = Some(Err(e));
                PeerLease { subnet: route.dst, public_ip: Some(gw), vtep_mac: None, source, node: None }
            }
            Ok((at, v)) => {
                let held = lease_from_view(&v, at, v6);
                match held.filter(|l| l.subnet.contains(dst_ip)) {
                    Some(mut l) => {
                        l.source = format!("{}, PublicIP {gw}", l.source);
                        view = Some(Ok(v));
                        l
                    }
                    None => {
                        let why = format!("{gw}'s flanneld holds no lease covering {dst_ip}: the route's gateway is not its node");
                        w.broken("host-route", route_obj, None, Cause::RouteWrongDev, why);
                        return;
                    }
                }
            }
        },
    };
    let src_of = Some(lease.source.clone());
    let peer = lease.public_ip.unwrap_or(gw);
    if gw != peer {
        let why = format!("gateway {gw}, the lease's PublicIP is {peer}");
        w.broken("host-route", route_obj, src_of, Cause::RouteWrongDev, why);
        return;
    }
    w.ok(
        "host-route",
        format!("{route_obj} ({query}; route {} via {gw} dev {})", route.dst, out.name),
        src_of.clone(),
    );
    forward_hop(w, local, src_ip, dst_ip, &bridge.name, &out.name);
    if w.failed() {
        return;
    }

    // 6. The external interface: up, carries the pod MTU, and P on-link (the same L2 segment).
    let up_obj = format!("{}@{} mtu {} {}", out.name, out.index, out.mtu, if out.up { "up" } else { "DOWN" });
    let up_src = Some("flanneld -iface (the external interface), FLANNEL_MTU".to_string());
    if src.mtu > out.mtu {
        let why = format!("pod {} mtu {} > {} mtu {}", src.ifname, src.mtu, out.name, out.mtu);
        w.broken("underlay", up_obj, up_src, Cause::MtuMismatch, why);
        return;
    }
    match kernel::route_get(host, &RouteQuery { to: Some(peer), ..RouteQuery::default() }) {
        Ok(r) if r.kind == "unicast" && r.gateway.is_none() && r.oif == Some(out.index) => {
            w.ok(
                "underlay",
                format!("{up_obj}: {peer} on-link ({})", describe_route(&r, local, peer)),
                up_src,
            );
        }
        Ok(r) => {
            let obj = format!("{up_obj}: {}", describe_route(&r, local, peer));
            let why = format!("{peer} is not on-link on {}: not on the same L2 segment", out.name);
            w.broken("underlay", obj, up_src, Cause::PeerNotOnLink, why);
            return;
        }
        Err(e) => {
            let obj = format!("{up_obj}: route get {peer}: {}", e.source);
            w.broken("underlay", obj, up_src, Cause::PeerNotOnLink, format!("no route to {peer} at all"));
            return;
        }
    }

    // 7. The underlay neighbour of P, then the remote node's view (read through that
    // neighbour: a bad entry also hides the view) and the neighbour's MAC measured against it.
    let neighs = kernel::neighbours(host, out.index, v6).unwrap_or_else(|e| {
        w.notes.push(format!("neighbours of {}: {e}", out.name));
        Vec::new()
    });
    let proto = if v6 { "NDISC" } else { "ARP" };
    let n_src = Some(format!("{proto} on {} (the kernel's; flanneld adds no entry with host-gw)", out.name));
    let neigh = neighs.iter().find(|n| n.ip == peer);
    let n_obj = match neigh {
        Some(n) => format!("{peer} lladdr {} {} dev {}", n.mac.as_deref().unwrap_or("-"), n.state, out.name),
        None => format!("no entry for {peer} on {} yet ({proto} resolves it)", out.name),
    };
    if let Some(n) = neigh.filter(|n| n.state.contains("failed") || n.state.contains("incomplete")) {
        let why = format!("{peer} does not answer {proto} on {} ({})", out.name, n.state);
        w.broken("neighbour", n_obj, n_src, Cause::UnderlayNeighFailed, why);
        return;
    }
    let at = lease.node.unwrap_or(peer);
    let v = match view.take().unwrap_or_else(|| remote::fetch_view(at, remote_port)) {
        Ok(v) => v,
        // A static entry (host-gw makes none) through which P's flanneld cannot be reached.
        Err(e) if neigh.is_some_and(|n| n.permanent) => {
            let why = format!("a static neighbour entry for {peer} (not learned by {proto}), and {peer} cannot be reached through it");
            w.notes.push(e);
            w.broken("neighbour", n_obj, n_src, Cause::UnderlayNeighMacStale, why);
            return;
        }
        Err(e) => return unavailable(w, at, e, unreadable),
    };
    let peer_mac = v.pointer("/underlay/mac").and_then(Value::as_str).map(str::to_lowercase);
    if let (Some(have), Some(want)) = (neigh.and_then(|n| n.mac.as_ref()), peer_mac.as_ref()) {
        if have != want {
            let why = format!("neighbour MAC {have} is not {peer}'s external interface MAC {want}");
            w.broken("neighbour", n_obj, n_src, Cause::UnderlayNeighMacStale, why);
            return;
        }
    }
    w.ok("neighbour", n_obj, n_src);
    remote_node(w, &v, (at, peer), remote_port, (src_ip, dst_ip));
}

/// The view of the node behind gateway `gw` and where it was read: at `gw` itself, or for an
/// IPv6 gateway at that node's IPv4 address.
fn fetch_gateway_view(
    host: &mut Netlink,
    local: &Local,
    gw: IpAddr,
    port: u16,
) -> Result<(IpAddr, Value), String> {
    if gw.is_ipv6() {
        return view_of_v6_peer(host, local, gw, port);
    }
    remote::fetch_view(gw, port).map(|v| (gw, v))
}

/// The destination node (its view read at `at`): its external interface carries `peer` (P or
/// P6), then forwarding and the bridge.
fn remote_node(w: &mut Walk, v: &Value, (at, peer): (IpAddr, IpAddr), port: u16, ips: (IpAddr, IpAddr)) {
    w.node = at.to_string();
    let src = Some(format!("flanneld view {}", remote::url(at, port)));
    let name = v.pointer("/underlay/name").and_then(Value::as_str).unwrap_or("?");
    let up = v.pointer("/underlay/up").and_then(Value::as_bool).unwrap_or(false);
    let addrs: Vec<String> = v
        .pointer("/underlay/addresses")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default();
    let obj = format!("{name} {} addr {}", if up { "up" } else { "DOWN" }, addrs.join(","));
    let holds =
        addrs.iter().any(|a| a.split('/').next().and_then(|ip| ip.parse::<IpAddr>().ok()) == Some(peer));
    if !holds {
        let why = format!("{peer} is not an address of that node's external interface {name}");
        w.broken("remote-node", obj, src, Cause::PublicIpNotLocal, why);
        return;
    }
    if !up {
        let why = format!("{name} on {at} is down");
        w.broken("remote-node", obj, src, Cause::UnderlayNoRoute, why);
        return;
    }
    w.ok("remote-node", obj, src.clone());
    remote_tail(w, v, at, src, ips);
}
