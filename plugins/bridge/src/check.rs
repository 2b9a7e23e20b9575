//! CHECK (docs/cni.md §7.7) without the reference's bugs: a `prevResult` route without
//! `gw` matches the kernel route ADD installed through the gateway, and an L2 config does
//! not call a non-existent IPAM plugin.

use std::net::IpAddr;

use weft_common::cni::invoke;
use weft_common::cni::{CmdArgs, CniResult, Command};
use weft_common::mac::format_mac;
use weft_common::netlink::{Link, Netlink, Route as NlRoute};
use weft_common::netns::NetNs;

use crate::config::BridgeSpec;
use crate::error::Error;

fn fail(msg: impl Into<String>) -> Error {
    Error::Check(msg.into())
}

fn same_mac(recorded: Option<&String>, link: &Link) -> bool {
    recorded.is_none_or(|m| m.eq_ignore_ascii_case(&format_mac(&link.mac)))
}

fn is_default(dst: &ipnetwork::IpNetwork) -> bool {
    dst.prefix() == 0
}

pub fn check(args: &CmdArgs, spec: &BridgeSpec) -> Result<(), Error> {
    let netns = NetNs::open(&args.netns).map_err(Error::Netns)?;
    if let Some(ipam) = &spec.ipam {
        invoke::delegate(ipam, Command::Check, &args.path, &args.stdin)?;
    }
    let prev = spec.prev_result.as_ref().ok_or_else(|| fail("Required prevResult missing"))?;
    let result = CniResult::parse(prev, &args.version)?;

    let mut host = Netlink::open().map_err(Error::netlink("failed to open netlink socket"))?;
    let mut ctr =
        Netlink::open_in(&netns).map_err(Error::netlink("failed to open netlink socket in the netns"))?;

    // The bridge.
    let br_entry = result
        .interfaces
        .iter()
        .find(|i| i.name == spec.bridge && i.sandbox.as_deref().unwrap_or("").is_empty())
        .ok_or_else(|| fail(format!("Interface name {} not found in prevResult", spec.bridge)))?;
    let bridge = host
        .find_link(&spec.bridge)
        .map_err(Error::netlink("failed to look up bridge"))?
        .ok_or_else(|| fail(format!("Interface name {} not found", spec.bridge)))?;
    if !bridge.is_bridge() {
        return Err(fail(format!("Error: Interface {} is not a bridge", spec.bridge)));
    }
    if !same_mac(br_entry.mac.as_ref(), &bridge) {
        return Err(fail(format!(
            "Bridge interface {} Mac doesn't match: {}",
            spec.bridge,
            bridge.mac_string()
        )));
    }
    if bridge.promisc != spec.promisc {
        return Err(fail(format!(
            "Bridge interface {} promiscuous mode does not match the config",
            spec.bridge
        )));
    }

    // The container interface.
    let ctr_idx = result
        .interfaces
        .iter()
        .position(|i| i.name == args.ifname && i.sandbox.as_deref() == Some(args.netns.as_str()))
        .ok_or_else(|| {
            fail(format!(
                "Interface name {} with sandbox {} not found in prevResult",
                args.ifname, args.netns
            ))
        })?;
    let ctr_entry = result.interfaces.get(ctr_idx).ok_or_else(|| fail("bad prevResult"))?;
    let ctr_link = ctr
        .find_link(&args.ifname)
        .map_err(Error::netlink("failed to look up container interface"))?
        .ok_or_else(|| fail(format!("Interface name {} not found", args.ifname)))?;
    if !ctr_link.is_veth() {
        return Err(fail(format!("Error: Container interface {} not of type veth", args.ifname)));
    }
    if !same_mac(ctr_entry.mac.as_ref(), &ctr_link) {
        return Err(fail(format!("Interface {} Mac doesn't match: {}", args.ifname, ctr_link.mac_string())));
    }

    // Its host peer, attached to the bridge.
    let peer_ok = result.interfaces.iter().enumerate().any(|(i, entry)| {
        if i == ctr_idx
            || entry.name == spec.bridge
            || entry.sandbox.as_deref().is_some_and(|s| !s.is_empty())
        {
            return false;
        }
        match host.find_link(&entry.name) {
            Ok(Some(l)) => l.is_veth() && l.link == Some(ctr_link.index) && l.master == Some(bridge.index),
            _ => false,
        }
    });
    if !peer_ok {
        return Err(fail(format!("CNI veth created for bridge {} was not found", spec.bridge)));
    }

    // Addresses and routes inside the namespace.
    let addrs = crate::container::global_addresses(&mut ctr, &ctr_link);
    for ip in &result.ips {
        if ip.interface.is_some_and(|i| i != ctr_idx) {
            continue;
        }
        if !crate::container::has_address(&addrs, ip) {
            return Err(fail(format!("Failed to find IP address {} on {}", ip.address, args.ifname)));
        }
    }
    let routes = ctr.routes().map_err(Error::netlink("failed to list routes"))?;
    let on_ctr: Vec<&NlRoute> = routes.iter().filter(|r| r.oif == Some(ctr_link.index)).collect();
    for ip in result.ips.iter().filter(|ip| ip.interface.is_none_or(|i| i == ctr_idx)) {
        let subnet = ipnetwork::IpNetwork::new(ip.address.network(), ip.address.prefix()).ok();
        if !on_ctr.iter().any(|r| Some(r.dst) == subnet) {
            return Err(fail(format!("Failed to find route to subnet of {} on {}", ip.address, args.ifname)));
        }
    }
    for r in &result.routes {
        let gw: Option<IpAddr> = r.gw;
        let found = on_ctr.iter().any(|k| {
            let dst_ok = k.dst == r.dst
                || (is_default(&r.dst) && is_default(&k.dst) && k.dst.is_ipv4() == r.dst.is_ipv4());
            dst_ok && (gw.is_none() || k.gw == gw)
        });
        if !found {
            let via = gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(fail(format!("Expected route {}{via} not found in routing table", r.dst)));
        }
    }
    Ok(())
}
