//! Host-namespace work: the bridge, the veth pair, the bridge port, gateway addresses and
//! forwarding. Everything goes through the host [`Netlink`] socket; sysctls are written in
//! the host namespace (the thread never leaves it here).

use std::time::Duration;

use ipnetwork::IpNetwork;
use weft_common::netlink::{BridgeSpec as NlBridge, Link, Netlink, PortAttrs, PortVlan, VethSpec};
use weft_common::netns::NetNs;
use weft_common::sysctl;

use crate::config::BridgeSpec;
use crate::error::Error;
use crate::undo::{Action, Undo};

/// How many random host veth names are tried before giving up.
const VETH_NAME_ATTEMPTS: usize = 16;

/// How long ADD waits for the host veth to report operstate up (the reference's 2.55 s).
pub const PORT_UP_TIMEOUT: Duration = Duration::from_millis(2550);

/// Finds or creates the bridge, sets promiscuity, `accept_ra=0` and up (§7.3 step 2).
/// An existing bridge's MTU and VLAN filtering are left as they are. The bridge is never
/// removed again (other containers share it), so it is not registered for rollback.
pub fn ensure_bridge(nl: &mut Netlink, spec: &BridgeSpec) -> Result<Link, Error> {
    let what = || format!("failed to create bridge {:?}", spec.bridge);
    let link = match nl.find_link(&spec.bridge).map_err(Error::netlink(what()))? {
        Some(l) => l,
        None => {
            let nb =
                NlBridge { name: spec.bridge.clone(), mtu: spec.mtu, vlan_filtering: spec.vlan_filtering() };
            match nl.create_bridge(&nb) {
                // Another ADD created it at the same moment: use theirs.
                Ok(()) => {}
                Err(e) if e.is_exists() => {}
                Err(e) => return Err(Error::netlink(what())(e)),
            }
            nl.link_by_name(&spec.bridge).map_err(Error::netlink(what()))?
        }
    };
    if !link.is_bridge() {
        return Err(Error::NotABridge(spec.bridge.clone()));
    }
    if spec.promisc && !link.promisc {
        nl.set_promisc(link.index, true).map_err(Error::netlink(what()))?;
    }
    // Router advertisements on the bridge would give the host addresses and routes it
    // should not have; errors ignored like the reference (IPv6 may be disabled).
    let _ = sysctl::set(&sysctl::iface_key("ipv6", &spec.bridge, "accept_ra"), "0");
    if !link.up {
        nl.set_up(link.index).map_err(Error::netlink(what()))?;
    }
    Ok(link)
}

/// A random host veth name: `veth` + 8 hex digits (the prefix keeps NetworkManager away).
fn random_veth_name() -> String {
    format!("veth{:08x}", rand::random::<u32>())
}

/// Creates the veth pair: `ifname` inside `netns` (with MTU and MAC), a random `veth…` peer
/// in the host namespace, retrying another name when the host name is taken. Registers
/// the deletion for rollback and returns (host link, container link).
pub fn create_veth(
    host: &mut Netlink,
    ctr: &mut Netlink,
    netns: &NetNs,
    spec: &BridgeSpec,
    ifname: &str,
    undo: &mut Undo,
) -> Result<(Link, Link), Error> {
    let mut last_err = None;
    for _ in 0..VETH_NAME_ATTEMPTS {
        let name = random_veth_name();
        let veth = VethSpec {
            name: name.clone(),
            mtu: spec.mtu,
            mac: None,
            peer_name: ifname.to_string(),
            peer_mtu: spec.mtu,
            peer_mac: spec.mac,
            peer_netns: Some(netns),
        };
        match host.create_veth(&veth) {
            Ok(()) => {
                let what = || format!("failed to look up veth {name}");
                let host_link = host.link_by_name(&name).map_err(Error::netlink(what()))?;
                undo.push(Action::DelLink { index: host_link.index, name: name.clone() });
                let ctr_link = ctr.link_by_name(ifname).map_err(Error::netlink(what()))?;
                return Ok((host_link, ctr_link));
            }
            Err(e) if e.is_exists() => {
                // Either name may clash: the container one is fatal, the host one is retried.
                let found =
                    ctr.find_link(ifname).map_err(Error::netlink("failed to look up container interface"))?;
                if found.is_some() {
                    return Err(Error::InterfaceExists(ifname.to_string()));
                }
                last_err = Some(e);
            }
            Err(e) => return Err(Error::netlink(format!("failed to create veth for {ifname:?}"))(e)),
        }
    }
    match last_err {
        Some(e) => Err(Error::netlink("failed to find a free host veth name")(e)),
        None => Err(Error::Internal("failed to create veth".into())),
    }
}

/// Sets the host veth up, attaches it to the bridge and writes its port settings
/// (hairpin and isolation are always written, VLANs when configured) — §7.3 steps 4–5.
pub fn attach_port(nl: &mut Netlink, spec: &BridgeSpec, bridge: &Link, veth: &Link) -> Result<(), Error> {
    let _ = sysctl::set(&sysctl::iface_key("ipv6", &veth.name, "accept_ra"), "0");
    let what = || format!("failed to connect {:?} to bridge {}", veth.name, bridge.name);
    nl.set_master(veth.index, bridge.index).map_err(Error::netlink(what()))?;
    nl.set_up(veth.index).map_err(Error::netlink(format!("failed to set {:?} up", veth.name)))?;
    let attrs = PortAttrs { hairpin: Some(spec.hairpin), isolated: Some(spec.port_isolation) };
    nl.set_bridge_port(veth.index, &attrs)
        .map_err(Error::netlink(format!("failed to set bridge port options of {:?}", veth.name)))?;
    if spec.vlan_filtering() {
        let vwhat = || format!("failed to set VLANs on {:?}", veth.name);
        if !spec.preserve_default_vlan {
            for v in nl.bridge_vlans(veth.index).map_err(Error::netlink(vwhat()))? {
                nl.bridge_vlan_del(veth.index, v.vid).map_err(Error::netlink(vwhat()))?;
            }
        }
        if spec.vlan != 0 {
            let access = PortVlan { vid: spec.vlan, pvid: true, untagged: true };
            nl.bridge_vlan_add(veth.index, &access).map_err(Error::netlink(vwhat()))?;
        }
        for vid in &spec.trunk {
            let tagged = PortVlan { vid: *vid, pvid: false, untagged: false };
            nl.bridge_vlan_add(veth.index, &tagged).map_err(Error::netlink(vwhat()))?;
        }
        if spec.vlan == 0 && spec.has_trunk {
            // A trunk-only port still needs an untagged native VLAN, as in the reference.
            let native = PortVlan { vid: 1, pvid: true, untagged: true };
            nl.bridge_vlan_add(veth.index, &native).map_err(Error::netlink(vwhat()))?;
        }
    }
    Ok(())
}

fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// Puts the gateway addresses on `target`, the bridge or its VLAN interface (§7.3 step 11): an identical address is kept;
/// for IPv4 any other global address, for IPv6 an overlapping one, is a conflict — replaced
/// with `forceAddress`, else an error. IPv6 gateways are added with `nodad` so they are
/// usable at once. Then pins the bridge MAC and enables forwarding.
pub fn ensure_gateways(
    nl: &mut Netlink,
    spec: &BridgeSpec,
    target: &Link,
    gws: &[IpNetwork],
) -> Result<(), Error> {
    if gws.is_empty() {
        return Ok(());
    }
    let what = || format!("could not add gateway address to {:?}", target.name);
    let mut existing: Vec<IpNetwork> = nl
        .addresses(Some(target.index))
        .map_err(Error::netlink(what()))?
        .into_iter()
        .filter(|a| a.is_global())
        .map(|a| a.address)
        .collect();
    for gw in gws {
        if existing.contains(gw) {
            continue;
        }
        let conflicts: Vec<IpNetwork> = existing
            .iter()
            .filter(|a| a.is_ipv4() == gw.is_ipv4())
            .filter(|a| a.is_ipv4() || overlaps(a, gw))
            // Our own other gateways of this ADD are not conflicts.
            .filter(|a| !gws.contains(a))
            .copied()
            .collect();
        for c in conflicts {
            if !spec.force_address {
                return Err(Error::AddressConflict { bridge: target.name.clone(), wanted: gw.to_string() });
            }
            match nl.del_address(target.index, &c) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    return Err(Error::netlink(format!("failed to remove {c} from {:?}", target.name))(e))
                }
            }
            existing.retain(|a| *a != c);
        }
        match nl.add_address(target.index, gw, true) {
            Ok(()) => {}
            // A concurrent ADD of the same network put it there first.
            Err(e) if e.is_exists() => {}
            Err(e) => {
                return Err(Error::netlink(format!("could not add IP address {gw} to {:?}", target.name))(e))
            }
        }
        existing.push(*gw);
    }
    // Pin the bridge MAC (otherwise it follows the lowest port MAC and changes as pods come
    // and go, breaking the neighbours' ARP caches).
    let current = nl.link_by_index(target.index).map_err(Error::netlink("could not set bridge's mac"))?;
    if !current.mac.is_empty() {
        nl.set_mac(target.index, &current.mac).map_err(Error::netlink("could not set bridge's mac"))?;
    }
    let forwarding = |v4: bool| if v4 { "net/ipv4/ip_forward" } else { "net/ipv6/conf/all/forwarding" };
    for v4 in [true, false] {
        if gws.iter().any(|g| g.is_ipv4() == v4) {
            let key = forwarding(v4);
            sysctl::set(key, "1").map_err(|source| Error::Sysctl { key: key.to_string(), source })?;
        }
    }
    Ok(())
}

/// The gateway interface of an access VLAN (§7.3 step 11): `<bridge>.<vlan>`, one end of a
/// host veth pair whose other end is a bridge port carrying the VLAN untagged. Created on
/// first use and shared by every container of the VLAN, so never rolled back.
pub fn ensure_vlan_interface(nl: &mut Netlink, spec: &BridgeSpec, bridge: &Link) -> Result<Link, Error> {
    let name = format!("{}.{}", spec.bridge, spec.vlan);
    let what = || format!("failed to create VLAN gateway interface {name:?}");
    if let Some(link) = nl.find_link(&name).map_err(Error::netlink(what()))? {
        return Ok(link);
    }
    let mut last_err = None;
    for _ in 0..VETH_NAME_ATTEMPTS {
        let peer = random_veth_name();
        let veth = VethSpec {
            name: name.clone(),
            mtu: Some(bridge.mtu).filter(|m| *m != 0),
            peer_name: peer.clone(),
            peer_mtu: Some(bridge.mtu).filter(|m| *m != 0),
            ..Default::default()
        };
        match nl.create_veth(&veth) {
            Ok(()) => {
                let port = nl.link_by_name(&peer).map_err(Error::netlink(what()))?;
                // The port carries the VLAN like a container port with `vlan` set.
                let port_spec = BridgeSpec {
                    hairpin: false,
                    port_isolation: false,
                    trunk: Vec::new(),
                    has_trunk: false,
                    ..spec.clone()
                };
                attach_port(nl, &port_spec, bridge, &port)?;
                let link = nl.link_by_name(&name).map_err(Error::netlink(what()))?;
                nl.set_up(link.index).map_err(Error::netlink(what()))?;
                return Ok(link);
            }
            // Another ADD created the interface meanwhile: use it.
            Err(e) if e.is_exists() => match nl.find_link(&name).map_err(Error::netlink(what()))? {
                Some(link) => return Ok(link),
                None => last_err = Some(e),
            },
            Err(e) => return Err(Error::netlink(what())(e)),
        }
    }
    match last_err {
        Some(e) => Err(Error::netlink(what())(e)),
        None => Err(Error::Internal(what())),
    }
}

/// Waits until the host veth is operationally up (§7.3 step 14).
pub fn wait_port_up(nl: &mut Netlink, veth: &Link) -> Result<(), Error> {
    let state = nl
        .wait_oper_up(veth.index, PORT_UP_TIMEOUT)
        .map_err(Error::netlink(format!("failed to read state of {:?}", veth.name)))?;
    if state != weft_common::netlink::OperState::Up {
        return Err(Error::PortNotUp(state.to_string()));
    }
    Ok(())
}
