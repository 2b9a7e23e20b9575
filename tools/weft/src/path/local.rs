//! The hops on this node: the pod, its veth and bridge, the node's routing decision, the
//! FORWARD and masquerade verdicts, and a destination on the same bridge.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use weft_common::netlink::Netlink;
use weft_common::netns::NetNs;

use super::overlay::cross_node;
use super::{attachment_source, describe_route, sysctl, Dst, Local, Walk};
use crate::cause::Cause;
use crate::firewall::Packet;
use crate::kernel::{self, LinkFacts, RouteAnswer, RouteQuery};
use crate::pods::Attachment;

#[allow(clippy::too_many_arguments)]
pub(super) fn walk(
    w: &mut Walk,
    host: &mut Netlink,
    local: &Local,
    src: &Attachment,
    src_ip: IpAddr,
    dst: &Dst,
    dst_ip: IpAddr,
    remote_port: u16,
    unreadable: &mut Option<String>,
) {
    // The family walked: IPv6 goes through `flannel-v6.<VNI>` (or host-gw's `S6 via P6`).
    let v6 = dst_ip.is_ipv6();
    let vtep_link = local.vtep(v6);
    let vtep = vtep_link.as_ref();
    // 1. The pod's interface, and the MTU chain from it.
    let src_source = attachment_source(src);
    let pod_obj = format!(
        "{} {} mtu {} {} (netns {}{})",
        src.ifname,
        src.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        src.mtu,
        if src.up { "up" } else { "DOWN" },
        src.netns,
        src.nsid.map(|n| format!(", nsid {n}")).unwrap_or_default()
    );
    let host_mtu = src.host_veth.as_ref().map(|h| h.mtu);
    let cross = matches!(dst, Dst::Ip(ip) if local.network(v6).iter().any(|n| n.contains(*ip)) && !local.own_subnet(v6).is_some_and(|s| s.contains(*ip)));
    let host_gw = cross && local.host_gw(dst_ip);
    let vtep_mtu = vtep.map(|v| v.mtu).filter(|_| cross);
    if let Some(h) = host_mtu.filter(|h| src.mtu > *h) {
        w.broken(
            "pod",
            pod_obj,
            src_source,
            Cause::MtuMismatch,
            format!("pod {} mtu {} > host veth mtu {h}", src.ifname, src.mtu),
        );
    } else if let Some(v) = vtep_mtu.filter(|v| src.mtu > *v) {
        let from = local
            .subnet_env
            .as_ref()
            .map(|s| format!(" (FLANNEL_MTU={} in {})", s.mtu, local.subnet_file))
            .unwrap_or_default();
        w.broken(
            "pod",
            pod_obj,
            src_source,
            Cause::MtuMismatch,
            format!("pod {} mtu {} > flannel mtu {v}{from}", src.ifname, src.mtu),
        );
    } else {
        w.ok("pod", pod_obj, src_source);
    }

    // 2. The pod's own routing decision.
    let pod_route = NetNs::open(&src.netns)
        .map_err(|e| e.to_string())
        .and_then(|ns| Netlink::open_in(&ns).map_err(|e| e.to_string()))
        .and_then(|mut nl| {
            kernel::route_get(
                &mut nl,
                &RouteQuery { to: Some(dst_ip), from: Some(src_ip), ..RouteQuery::default() },
            )
            .map_err(|e| e.source.to_string())
        });
    match pod_route {
        Ok(r) if r.kind == "unicast" && r.oif == Some(src.index) => {
            let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            w.ok(
                "pod-route",
                format!("{dst_ip}{via} dev {} (the pod's own lookup)", src.ifname),
                Some("CNI result routes (cache file)".into()),
            );
        }
        Ok(r) => w.broken(
            "pod-route",
            format!("{} {dst_ip} oif {:?}", r.kind, r.oif),
            Some("CNI result routes".into()),
            Cause::NoRoute,
            format!("the pod does not send {dst_ip} out of {}", src.ifname),
        ),
        Err(e) => w.broken(
            "pod-route",
            format!("route get {dst_ip} in the pod: {e}"),
            Some("CNI result routes".into()),
            Cause::NoRoute,
            format!("the pod has no route to {dst_ip}"),
        ),
    }

    // 3. The host end of the veth and its bridge port.
    let Some(hv) = &src.host_veth else {
        w.broken(
            "veth",
            "host end not found".into(),
            None,
            Cause::BridgePortNotEnslaved,
            "no link of this node is the pod interface's peer".into(),
        );
        return;
    };
    let veth_obj = format!(
        "{}@{} mtu {} {} port {} on {} (peer {} {})",
        hv.name,
        hv.index,
        hv.mtu,
        if hv.up { "up" } else { "DOWN" },
        hv.port_state.as_deref().unwrap_or("-"),
        hv.bridge.as_deref().unwrap_or("no bridge"),
        if hv.peer_confirmed { "confirmed by" } else { "NOT confirmed by" },
        "IFLA_LINK/IFLA_LINK_NETNSID"
    );
    let Some(bridge_link) = hv.bridge_index.and_then(|b| local.link(b)) else {
        w.broken(
            "veth",
            veth_obj,
            Some("bridge plugin (cache file interfaces)".into()),
            Cause::BridgePortNotEnslaved,
            format!("{} has no master bridge", hv.name),
        );
        return;
    };
    let bridge = &bridge_link;
    if !hv.up || hv.port_state.as_deref().is_some_and(|s| s != "forwarding") {
        w.broken(
            "veth",
            veth_obj,
            Some("bridge plugin".into()),
            Cause::BridgePortDown,
            format!(
                "{} is {} (port {})",
                hv.name,
                if hv.up { "up" } else { "down" },
                hv.port_state.as_deref().unwrap_or("-")
            ),
        );
    } else {
        w.ok("veth", veth_obj, Some("bridge plugin (cache file interfaces)".into()));
    }

    // 4. The bridge: up, and its address is the lease's gateway (F12).
    let bridge_addrs: Vec<IpNetwork> = host
        .addresses(Some(bridge.index))
        .map(|a| a.into_iter().map(|a| a.address).collect())
        .unwrap_or_default();
    let br_obj = format!(
        "{} mtu {} {} addr {}",
        bridge.name,
        bridge.mtu,
        if bridge.up { "up" } else { "DOWN" },
        bridge_addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    );
    let want_gw = local.own_subnet(v6);
    let var = if v6 { "FLANNEL_IPV6_SUBNET" } else { "FLANNEL_SUBNET" };
    let br_src = want_gw.map(|g| format!("{var}={g} ({})", local.subnet_file));
    if !bridge.up {
        w.broken("bridge", br_obj, br_src, Cause::BridgePortDown, format!("bridge {} is down", bridge.name));
    } else if let Some(g) = want_gw.filter(|g| !bridge_addrs.iter().any(|a| a.ip() == g.ip())) {
        w.broken(
            "bridge",
            br_obj,
            br_src,
            Cause::Cni0AddrMismatch,
            format!("{} does not carry the lease gateway {g}", bridge.name),
        );
    } else {
        w.ok("bridge", br_obj, br_src);
    }

    // Same node: bridged, not routed.
    if let Dst::Pod(d) = dst {
        same_node(w, local, bridge, d, src_ip, dst_ip);
        return;
    }

    // A missing or downed VXLAN device takes its routes with it: name the device, not the
    // route the kernel dropped.
    if cross && !host_gw {
        match vtep {
            None => {
                let obj = format!("no {}<VNI> device", if v6 { "flannel-v6." } else { "flannel." });
                w.broken(
                    "vtep",
                    obj,
                    Some("flanneld".into()),
                    Cause::VtepMissing,
                    "this node has no VXLAN device".into(),
                );
                return;
            }
            Some(v) if !v.up => {
                let obj = format!("{}@{} DOWN", v.name, v.index);
                let why = format!("{} is down (the kernel dropped its routes and neighbours)", v.name);
                w.broken("vtep", obj, Some("flanneld".into()), Cause::VtepDown, why);
                return;
            }
            Some(_) => {}
        }
    }

    // 5. The node's routing decision for a packet arriving from the bridge.
    let forwarding = if v6 { "net.ipv6.conf.all.forwarding" } else { "net.ipv4.ip_forward" };
    let ip_forward = sysctl(forwarding);
    let answer = kernel::route_get(
        host,
        &RouteQuery {
            to: Some(dst_ip),
            from: Some(src_ip),
            iif: Some(bridge.index),
            ..RouteQuery::default()
        },
    );
    let q = format!("route get {dst_ip} from {src_ip} iif {}", bridge.name);
    let answer = match answer {
        Err(e) => {
            let errno = e.raw_errno().unwrap_or(0);
            let rp = |d: &str| {
                sysctl(&weft_common::sysctl::iface_key("ipv4", d, "rp_filter")).unwrap_or_else(|| "?".into())
            };
            let e = &e.source;
            if ip_forward.as_deref() == Some("0") {
                w.broken(
                    "host-route",
                    format!("{q}: {e}"),
                    Some(format!("{forwarding} (bridge isGateway sets it to 1)")),
                    Cause::IpForwardOff,
                    format!("{forwarding} = 0"),
                );
            } else if errno == libc::EXDEV || (errno == libc::EINVAL && rp_rejects(host, src_ip, bridge)) {
                w.broken(
                    "host-route",
                    format!("{q}: {e} (rp_filter all={} {}={})", rp("all"), bridge.name, rp(&bridge.name)),
                    Some("net.ipv4.conf.{all,<dev>}.rp_filter".into()),
                    Cause::RpFilter,
                    format!("the kernel rejects {src_ip} arriving on {}: its route back to {src_ip} leaves by another device", bridge.name),
                );
            } else {
                let src = host_gw.then(|| local.route_source(dst_ip));
                w.broken(
                    "host-route",
                    format!("{q}: {e}"),
                    src,
                    Cause::NoRoute,
                    format!("no route to {dst_ip}"),
                );
            }
            return;
        }
        Ok(a) => a,
    };
    let route_obj = describe_route(&answer, local, dst_ip);
    if answer.kind == "local" {
        w.ok("host-route", format!("{route_obj} (an address of this node)"), None);
        return;
    }
    if answer.kind != "unicast" {
        w.broken(
            "host-route",
            route_obj,
            None,
            Cause::NoRoute,
            format!("the kernel answers {} for {dst_ip}", answer.kind),
        );
        return;
    }
    // IPv6: the route lookup answers whatever the forwarding switch says; the kernel drops in
    // `ip6_forward` (net/ipv6/ip6_output.c) when `all.forwarding` is 0.
    if v6 && ip_forward.as_deref() == Some("0") {
        w.broken(
            "host-route",
            route_obj,
            Some(format!("{forwarding} (bridge isGateway sets it to 1)")),
            Cause::IpForwardOff,
            format!("{forwarding} = 0: this node does not forward IPv6"),
        );
        return;
    }
    let out_dev = answer.oif.and_then(|i| local.link(i));
    let out_name = out_dev.map(|l| l.name.clone()).unwrap_or_default();

    if host_gw {
        let asked = super::hostgw::Asked { answer: &answer, route_obj, query: &q };
        super::hostgw::cross_node(
            w,
            host,
            local,
            asked,
            src,
            src_ip,
            dst_ip,
            remote_port,
            unreadable,
            bridge,
        );
    } else if cross {
        cross_node(
            w,
            host,
            local,
            vtep,
            &answer,
            route_obj,
            src,
            src_ip,
            dst_ip,
            &q,
            remote_port,
            unreadable,
            bridge,
        );
    } else {
        outside(w, local, &answer, route_obj, src, src_ip, dst_ip, bridge, &out_name);
    }
}

/// Whether reverse-path filtering explains a rejected input lookup: the effective
/// `rp_filter` (the larger of `all` and the device's) is strict and the kernel's own route
/// back to `src` does not leave by the bridge (loose mode: there is no route back at all).
/// The kernel reports the failed source validation as `EINVAL` (a martian source; older
/// kernels said `EXDEV`).
fn rp_filter_mode(dev: &str) -> u8 {
    let read = |d: &str| {
        sysctl(&weft_common::sysctl::iface_key("ipv4", d, "rp_filter"))
            .and_then(|v| v.parse::<u8>().ok())
            .unwrap_or(0)
    };
    read("all").max(read(dev))
}

fn rp_rejects(host: &mut Netlink, src: IpAddr, bridge: &LinkFacts) -> bool {
    if src.is_ipv6() {
        return false; // IPv6 has no rp_filter sysctl.
    }
    let back = kernel::route_get(host, &RouteQuery { to: Some(src), ..RouteQuery::default() });
    match rp_filter_mode(&bridge.name) {
        1 => back.map(|r| r.oif != Some(bridge.index)).unwrap_or(true),
        2 => back.is_err(),
        _ => false,
    }
}

/// `IPv4` or `IPv6`, to name the rules judged in a message.
pub(super) fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv6() {
        "IPv6"
    } else {
        "IPv4"
    }
}

pub(super) fn forward_hop(w: &mut Walk, local: &Local, src_ip: IpAddr, dst_ip: IpAddr, iif: &str, oif: &str) {
    // The packet's family picks the rules walked: iptables or ip6tables (`crate::firewall`).
    let v = local.rules.forward(&Packet { src: src_ip, dst: dst_ip, iif: Some(iif), oif: Some(oif) });
    let obj = format!("FORWARD {iif} → {oif}: {}", v.shown());
    if !v.skipped.is_empty() {
        w.notes.push(format!(
            "forward: {} rule(s) with matches weft does not evaluate were skipped",
            v.skipped.len()
        ));
    }
    if v.drops() {
        w.broken(
            "forward",
            obj,
            Some("flanneld -iptables-forward-rules (FLANNEL-FWD) / the host firewall".into()),
            Cause::ForwardDrop,
            format!("the {} FORWARD chain drops {src_ip} → {dst_ip}", family(dst_ip)),
        );
    } else {
        w.ok("forward", obj, None);
    }
}

fn same_node(
    w: &mut Walk,
    local: &Local,
    bridge: &LinkFacts,
    d: &Attachment,
    src_ip: IpAddr,
    dst_ip: IpAddr,
) {
    let nf = if dst_ip.is_ipv6() { "bridge-nf-call-ip6tables" } else { "bridge-nf-call-iptables" };
    if sysctl(&format!("net.bridge.{nf}")).as_deref() == Some("1") {
        forward_hop(w, local, src_ip, dst_ip, &bridge.name, &bridge.name);
    }
    match &d.host_veth {
        Some(h) if h.bridge_index == Some(bridge.index) => {
            let obj = format!(
                "{}@{} port {} on {}",
                h.name,
                h.index,
                h.port_state.as_deref().unwrap_or("-"),
                bridge.name
            );
            if !h.up || h.port_state.as_deref().is_some_and(|s| s != "forwarding") {
                w.broken(
                    "dst-veth",
                    obj,
                    Some("bridge plugin".into()),
                    Cause::BridgePortDown,
                    format!(
                        "{} is {} (port {})",
                        h.name,
                        if h.up { "up" } else { "down" },
                        h.port_state.as_deref().unwrap_or("-")
                    ),
                );
            } else {
                w.ok("dst-veth", obj, Some("bridge plugin".into()));
            }
        }
        Some(h) => w.broken(
            "dst-veth",
            format!("{}@{}", h.name, h.index),
            None,
            Cause::BridgePortNotEnslaved,
            format!("{} is not a port of {}", h.name, bridge.name),
        ),
        None => w.broken(
            "dst-veth",
            "host end not found".into(),
            None,
            Cause::BridgePortNotEnslaved,
            "the destination pod has no host veth".into(),
        ),
    }
    let obj = format!(
        "{} {} mtu {} {} (netns {})",
        d.ifname,
        dst_ip,
        d.mtu,
        if d.up { "up" } else { "DOWN" },
        d.netns
    );
    if d.up {
        w.ok("dst-pod", obj, attachment_source(d));
    } else {
        w.broken(
            "dst-pod",
            obj,
            attachment_source(d),
            Cause::BridgePortDown,
            format!("{} in the destination pod is down", d.ifname),
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn outside(
    w: &mut Walk,
    local: &Local,
    answer: &RouteAnswer,
    route_obj: String,
    src: &Attachment,
    src_ip: IpAddr,
    dst_ip: IpAddr,
    bridge: &LinkFacts,
    out_name: &str,
) {
    w.ok("host-route", route_obj, None);
    forward_hop(w, local, src_ip, dst_ip, &bridge.name, out_name);
    let gw = answer.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
    let v = local.rules.postrouting(&Packet { src: src_ip, dst: dst_ip, iif: None, oif: Some(out_name) });
    let expected = src.masquerade.as_ref().and_then(|m| m.expected_by.clone());
    let obj = format!(
        "POSTROUTING: {}{}",
        v.verdict,
        v.rule.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
    );
    match expected {
        Some(by) if !v.masquerades() => w.broken(
            "masquerade",
            obj,
            Some(format!("ipMasq by {by} (FLANNEL_IPMASQ in {} / bridge ipMasq)", local.subnet_file)),
            Cause::MasqMissing,
            format!(
                "{src_ip} → {dst_ip} leaves {out_name} without masquerade ({} POSTROUTING)",
                family(dst_ip)
            ),
        ),
        Some(by) => w.ok("masquerade", obj, Some(format!("ipMasq by {by}"))),
        None => {
            w.notes.push("ipMasq is off: the packet leaves with the pod's address".into());
            w.ok("masquerade", obj, None);
        }
    }
    w.ok("egress", format!("leaves this node on {out_name}{gw} toward {dst_ip}"), None);
}
