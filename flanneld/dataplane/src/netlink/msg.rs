//! [`NetOp`] → rtnetlink message, and dumped messages → [`KernelState`] entries. Pure.
//!
//! Attribute choices are upstream's (docs/flannel.md §8.5): neighbours are family inet,
//! state PERMANENT, type unicast; FDB entries are family bridge, flag SELF, state PERMANENT,
//! lladdr + dst only (no VNI/port/ifindex); routes are main table, protocol boot, scope universe,
//! type unicast, with oif + ONLINK unless DirectRouting.

use std::net::IpAddr;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use weft_common::mac::format_mac;

use crate::{KernelFdb, KernelNeigh, KernelRoute, Mac, NetOp};

/// A request: the message and the extra `NLM_F_*` flags (besides REQUEST|ACK).
pub(crate) struct Request {
    pub msg: RouteNetlinkMessage,
    pub flags: u16,
}

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

fn neigh(index: u32, ip: IpAddr, mac: &Mac) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family(&ip);
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unicast;
    m.attributes.push(NeighbourAttribute::Destination(neigh_addr(ip)));
    m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m
}

fn fdb(index: u32, mac: &Mac, dst: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.flags = NeighbourFlags::Own;
    m.header.state = NeighbourState::Permanent;
    m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m.attributes.push(NeighbourAttribute::Destination(neigh_addr(dst)));
    m
}

/// A main-table route to `dst` of `kind`, protocol boot, scope universe (what upstream's
/// netlink library sends by default).
fn main_table_route(dst: &IpNetwork, kind: RouteType) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(&dst.ip());
    m.header.destination_prefix_length = dst.prefix();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::Universe;
    m.header.kind = kind;
    m.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst.network())));
    m
}

fn route(index: u32, dst: &IpNetwork, gw: IpAddr, onlink: bool) -> RouteMessage {
    let mut m = main_table_route(dst, RouteType::Unicast);
    m.attributes.push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    if onlink {
        m.header.flags = RouteFlags::Onlink;
        m.attributes.push(RouteAttribute::Oif(index));
    }
    m
}

/// `RTM_GETROUTE` for the host `dst` (`ip route get <dst>`): which route the kernel picks.
pub(crate) fn route_get(dst: IpAddr) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(&dst);
    m.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    m.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst)));
    m
}

/// `blackhole <dst>` in the main table, as upstream's `netlink.RouteAdd` builds it (protocol
/// boot, scope universe, no device).
pub(crate) fn blackhole(dst: &Ipv4Network) -> RouteMessage {
    main_table_route(&IpNetwork::V4(*dst), RouteType::BlackHole)
}

/// True for a main-table blackhole route to exactly `dst`.
pub(crate) fn is_blackhole_to(m: &RouteMessage, dst: &Ipv4Network) -> bool {
    let table = m
        .attributes
        .iter()
        .find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None })
        .unwrap_or(u32::from(m.header.table));
    let to = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    });
    table == u32::from(RouteHeader::RT_TABLE_MAIN)
        && m.header.kind == RouteType::BlackHole
        && m.header.destination_prefix_length == dst.prefix()
        && to == Some(dst.network())
}

/// The request for `op` on the device with ifindex `index`. Adds are create+replace.
pub(crate) fn request(index: u32, op: &NetOp) -> Request {
    let add = NLM_F_CREATE | NLM_F_REPLACE;
    match op {
        NetOp::AddNeigh { ip, mac } => {
            Request { msg: RouteNetlinkMessage::NewNeighbour(neigh(index, *ip, mac)), flags: add }
        }
        NetOp::DelNeigh { ip, mac } => {
            Request { msg: RouteNetlinkMessage::DelNeighbour(neigh(index, *ip, mac)), flags: 0 }
        }
        NetOp::AddFdb { mac, dst } => {
            Request { msg: RouteNetlinkMessage::NewNeighbour(fdb(index, mac, *dst)), flags: add }
        }
        NetOp::DelFdb { mac, dst } => {
            Request { msg: RouteNetlinkMessage::DelNeighbour(fdb(index, mac, *dst)), flags: 0 }
        }
        NetOp::AddRoute { dst, gw, onlink } => {
            Request { msg: RouteNetlinkMessage::NewRoute(route(index, dst, *gw, *onlink)), flags: add }
        }
        NetOp::DelRoute { dst, gw, onlink } => {
            Request { msg: RouteNetlinkMessage::DelRoute(route(index, dst, *gw, *onlink)), flags: 0 }
        }
        NetOp::CreateRoute { dst, gw, onlink } => Request {
            msg: RouteNetlinkMessage::NewRoute(route(index, dst, *gw, *onlink)),
            flags: NLM_F_CREATE | NLM_F_EXCL,
        },
    }
}

/// True when the op adds (EEXIST is then success) rather than deletes (ENOENT/ESRCH are).
pub(crate) fn is_add(op: &NetOp) -> bool {
    matches!(
        op,
        NetOp::AddNeigh { .. } | NetOp::AddFdb { .. } | NetOp::AddRoute { .. } | NetOp::CreateRoute { .. }
    )
}

/// A short description of `op` for errors and logs, in `ip`/`bridge` words.
pub fn describe(op: &NetOp) -> String {
    match op {
        NetOp::AddNeigh { ip, mac } => format!("add neigh {ip} lladdr {}", format_mac(mac)),
        NetOp::DelNeigh { ip, mac } => format!("del neigh {ip} lladdr {}", format_mac(mac)),
        NetOp::AddFdb { mac, dst } => format!("add fdb {} dst {dst}", format_mac(mac)),
        NetOp::DelFdb { mac, dst } => format!("del fdb {} dst {dst}", format_mac(mac)),
        NetOp::AddRoute { dst, gw, onlink } => format!("add route {dst} via {gw}{}", onlink_str(*onlink)),
        NetOp::DelRoute { dst, gw, onlink } => format!("del route {dst} via {gw}{}", onlink_str(*onlink)),
        NetOp::CreateRoute { dst, gw, onlink } => {
            format!("create route {dst} via {gw}{}", onlink_str(*onlink))
        }
    }
}

fn onlink_str(onlink: bool) -> &'static str {
    if onlink {
        " onlink"
    } else {
        ""
    }
}

fn mac_of(bytes: &[u8]) -> Option<Mac> {
    <Mac>::try_from(bytes).ok()
}

fn neigh_ip(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        // Family bridge (FDB): the parser cannot know the address family of NDA_DST.
        NeighbourAddress::Other(b) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

fn neigh_parts(m: &NeighbourMessage) -> (Option<IpAddr>, Option<Mac>) {
    let mut ip = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(d) => ip = neigh_ip(d),
            NeighbourAttribute::LinkLayerAddress(l) => mac = mac_of(l),
            _ => {}
        }
    }
    (ip, mac)
}

/// NUD_PERMANENT set; `bridge fdb add … permanent` also sets NUD_NOARP (state 0xc0).
fn permanent(state: NeighbourState) -> bool {
    const NUD_PERMANENT: u16 = 0x80;
    u16::from(state) & NUD_PERMANENT != 0
}

/// An inet/inet6 neighbour with an address and a link-layer address, on any device.
pub(crate) fn parse_neigh(m: &NeighbourMessage) -> Option<KernelNeigh> {
    if !matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6) {
        return None;
    }
    match neigh_parts(m) {
        (Some(ip), Some(mac)) => {
            Some(KernelNeigh { ifindex: m.header.ifindex, ip, mac, permanent: permanent(m.header.state) })
        }
        _ => None,
    }
}

/// An FDB entry (family bridge) with a destination, on any device.
pub(crate) fn parse_fdb(m: &NeighbourMessage) -> Option<KernelFdb> {
    if m.header.family != AddressFamily::Bridge {
        return None;
    }
    match neigh_parts(m) {
        (Some(dst), Some(mac)) => Some(KernelFdb {
            ifindex: m.header.ifindex,
            mac,
            dst,
            permanent: permanent(m.header.state),
            self_: m.header.flags.contains(NeighbourFlags::Own),
        }),
        _ => None,
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Any IPv4 or IPv6 route (a missing destination is the default route `0.0.0.0/0`, `::/0`).
pub(crate) fn parse_route(m: &RouteMessage) -> Option<KernelRoute> {
    let default = match m.header.address_family {
        AddressFamily::Inet => IpNetwork::V4(Ipv4Network::new(std::net::Ipv4Addr::UNSPECIFIED, 0).ok()?),
        AddressFamily::Inet6 => IpNetwork::V6(Ipv6Network::new(std::net::Ipv6Addr::UNSPECIFIED, 0).ok()?),
        _ => return None,
    };
    let mut r = KernelRoute {
        dst: default,
        gw: None,
        oif: None,
        table: u32::from(m.header.table),
        protocol: u8::from(m.header.protocol),
        kind: u8::from(m.header.kind),
        scope: u8::from(m.header.scope),
        tos: m.header.tos,
        metric: 0,
        onlink: m.header.flags.contains(RouteFlags::Onlink),
        multipath: false,
    };
    let mut dst = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = route_ip(d),
            RouteAttribute::Gateway(g) => r.gw = route_ip(g),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Table(t) => r.table = *t,
            RouteAttribute::Priority(p) => r.metric = *p,
            RouteAttribute::MultiPath(_) => r.multipath = true,
            _ => {}
        }
    }
    if let Some(d) = dst {
        r.dst = IpNetwork::new(d, m.header.destination_prefix_length).ok()?;
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Mac = [0x6e, 0xaa, 0xbb, 0xcc, 0xdd, 0x01];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn neigh_add_is_permanent_inet_create_replace() {
        let r = request(7, &NetOp::AddNeigh { ip: ip("10.5.71.0"), mac: M });
        assert_eq!(r.flags, NLM_F_CREATE | NLM_F_REPLACE);
        let RouteNetlinkMessage::NewNeighbour(m) = r.msg else { panic!("not a neighbour") };
        assert_eq!(m.header.family, AddressFamily::Inet);
        assert_eq!(m.header.ifindex, 7);
        assert_eq!(m.header.state, NeighbourState::Permanent);
        assert_eq!(m.header.kind, RouteType::Unicast);
        assert_eq!(
            parse_neigh(&m),
            Some(KernelNeigh { ifindex: 7, ip: ip("10.5.71.0"), mac: M, permanent: true })
        );
    }

    #[test]
    fn fdb_add_is_bridge_self_permanent_with_lladdr_and_dst_only() {
        let r = request(7, &NetOp::AddFdb { mac: M, dst: ip("198.18.0.3") });
        let RouteNetlinkMessage::NewNeighbour(m) = r.msg else { panic!("not a neighbour") };
        assert_eq!(m.header.family, AddressFamily::Bridge);
        assert_eq!(m.header.flags, NeighbourFlags::Own);
        assert_eq!(m.header.state, NeighbourState::Permanent);
        assert_eq!(m.attributes.len(), 2);
        assert_eq!(
            parse_fdb(&m),
            Some(KernelFdb { ifindex: 7, mac: M, dst: ip("198.18.0.3"), permanent: true, self_: true })
        );
        assert_eq!(parse_neigh(&m), None);
    }

    #[test]
    fn onlink_route_has_oif_and_flag_direct_route_has_neither() {
        let dst: IpNetwork = "10.5.71.0/24".parse().unwrap();
        let r = request(7, &NetOp::AddRoute { dst, gw: ip("10.5.71.0"), onlink: true });
        let RouteNetlinkMessage::NewRoute(m) = r.msg else { panic!("not a route") };
        assert_eq!(m.header.protocol, RouteProtocol::Boot);
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert_eq!(m.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(parse_route(&m), Some(KernelRoute::made(dst, ip("10.5.71.0"), true, Some(7))));

        let r = request(7, &NetOp::DelRoute { dst, gw: ip("198.18.0.3"), onlink: false });
        assert_eq!(r.flags, 0);
        let RouteNetlinkMessage::DelRoute(m) = r.msg else { panic!("not a route") };
        assert_eq!(parse_route(&m), Some(KernelRoute::made(dst, ip("198.18.0.3"), false, None)));
    }

    #[test]
    fn blackhole_is_a_main_table_boot_route_without_device_and_matches_only_its_prefix() {
        let dst: Ipv4Network = "10.5.71.0/24".parse().unwrap();
        let m = blackhole(&dst);
        assert_eq!(m.header.kind, RouteType::BlackHole);
        assert_eq!(m.header.protocol, RouteProtocol::Boot);
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert_eq!(m.header.table, RouteHeader::RT_TABLE_MAIN);
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Oif(_) | RouteAttribute::Gateway(_))));
        assert!(is_blackhole_to(&m, &dst));
        assert!(!is_blackhole_to(&m, &"10.5.71.0/25".parse().unwrap()));
        assert!(!is_blackhole_to(&m, &"10.5.72.0/24".parse().unwrap()));
        // A unicast route to the same prefix (the bridge's) is not one.
        let mut unicast = m.clone();
        unicast.header.kind = RouteType::Unicast;
        assert!(!is_blackhole_to(&unicast, &dst));
        // Nor is a blackhole in another table.
        let mut other = m;
        other.attributes.push(RouteAttribute::Table(100));
        assert!(!is_blackhole_to(&other, &dst));
    }

    #[test]
    fn describe_reads_like_ip() {
        assert_eq!(
            describe(&NetOp::AddFdb { mac: M, dst: ip("198.18.0.3") }),
            "add fdb 6e:aa:bb:cc:dd:01 dst 198.18.0.3"
        );
    }
}
