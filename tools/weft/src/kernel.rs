//! Questions asked of the kernel over rtnetlink, on weft-common's blocking socket: links with
//! their bridge-port and VXLAN attributes, `RTM_GETROUTE` lookups (what `ip route get ... from
//! ... iif ...` asks), neighbour and FDB entries, and `RTM_GETNSID`.
//!
//! Nothing here changes kernel state. Each function takes the [`Netlink`] socket of the
//! namespace to ask (see [`Netlink::open_in`]).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use netlink_packet_route::link::{
    BridgePortState, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVxlan, LinkAttribute,
    LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use serde::Serialize;
use weft_common::mac::format_mac;
use weft_common::netlink::{Error, Netlink, OperState};
use weft_common::netns::NetNs;

/// A link with what `weft` needs to judge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkFacts {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub mac: String,
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    pub oper_state: String,
    /// ifindex of the master (bridge).
    pub master: Option<u32>,
    /// `IFLA_LINK` (a veth's peer index, a VXLAN device's lower device in some kernels).
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer's namespace, as this namespace numbers it.
    pub link_netnsid: Option<i32>,
    /// Bridge-port state (`forwarding`, `disabled`, ...), when a bridge port.
    pub port_state: Option<String>,
    /// Bridge-port hairpin flag, when a bridge port.
    pub hairpin: Option<bool>,
    pub vxlan: Option<VxlanFacts>,
}

/// VXLAN attributes of a link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VxlanFacts {
    pub vni: Option<u32>,
    pub local: Option<Ipv4Addr>,
    /// `IFLA_VXLAN_LOCAL6`: the local address of an IPv6-underlay device (`flannel-v6.<VNI>`).
    pub local6: Option<std::net::Ipv6Addr>,
    /// UDP destination port (host order).
    pub port: Option<u16>,
    /// ifindex of the underlay device.
    pub underlay_index: Option<u32>,
}

impl LinkFacts {
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }
    pub fn is_bridge(&self) -> bool {
        self.kind.as_deref() == Some("bridge")
    }
    /// Up and not operationally down.
    pub fn is_running(&self) -> bool {
        self.up && !matches!(self.oper_state.as_str(), "down" | "lowerlayerdown" | "notpresent")
    }

    fn from_message(msg: &LinkMessage) -> LinkFacts {
        let mut l = LinkFacts {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mac: String::new(),
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            oper_state: "unknown".into(),
            master: None,
            link: None,
            link_netnsid: None,
            port_state: None,
            hairpin: None,
            vxlan: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => l.name.clone_from(n),
                LinkAttribute::Address(a) => l.mac = format_mac(a),
                LinkAttribute::Mtu(m) => l.mtu = *m,
                LinkAttribute::Controller(m) => l.master = Some(*m),
                LinkAttribute::OperState(s) => l.oper_state = OperState::from(s).to_string(),
                LinkAttribute::Link(i) => l.link = Some(*i),
                LinkAttribute::LinkNetNsId(id) => l.link_netnsid = Some(*id),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
                            LinkInfo::Data(InfoData::Vxlan(v)) => l.vxlan = Some(vxlan(v)),
                            LinkInfo::PortData(InfoPortData::BridgePort(p)) => {
                                for a in p {
                                    match a {
                                        InfoBridgePort::State(s) => l.port_state = Some(port_state(s)),
                                        InfoBridgePort::HairpinMode(h) => l.hairpin = Some(*h),
                                        _ => {}
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

fn vxlan(attrs: &[InfoVxlan]) -> VxlanFacts {
    let mut v = VxlanFacts::default();
    for a in attrs {
        match a {
            InfoVxlan::Id(id) => v.vni = Some(*id),
            InfoVxlan::Local(ip) => v.local = Some(*ip),
            InfoVxlan::Local6(ip) => v.local6 = Some(*ip),
            InfoVxlan::Port(p) => v.port = Some(*p),
            InfoVxlan::Link(i) => v.underlay_index = Some(*i),
            _ => {}
        }
    }
    v
}

fn port_state(s: &BridgePortState) -> String {
    match s {
        BridgePortState::Disabled => "disabled".into(),
        BridgePortState::Listening => "listening".into(),
        BridgePortState::Learning => "learning".into(),
        BridgePortState::Forwarding => "forwarding".into(),
        BridgePortState::Blocking => "blocking".into(),
        BridgePortState::Other(n) => format!("state {n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// A link request without the counters (`RTEXT_FILTER_SKIP_STATS`: about a third of each
/// answer, and nothing here reads them).
fn link_query() -> LinkMessage {
    let mut q = LinkMessage::default();
    q.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    q
}

fn link_facts(answers: &[RouteNetlinkMessage]) -> Vec<LinkFacts> {
    answers
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(LinkFacts::from_message(l)),
            _ => None,
        })
        .collect()
}

/// Every link of the namespace.
pub fn links(nl: &mut Netlink) -> Result<Vec<LinkFacts>, Error> {
    Ok(link_facts(&nl.dump(RouteNetlinkMessage::GetLink(link_query()), "list links", "")?))
}

/// The links of one kind (`ip link show type <kind>`: the kernel filters the dump).
pub fn links_of_kind(nl: &mut Netlink, kind: InfoKind) -> Result<Vec<LinkFacts>, Error> {
    let mut q = link_query();
    let what = kind.to_string();
    q.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
    let mut found = link_facts(&nl.dump(RouteNetlinkMessage::GetLink(q), "list links", &what)?);
    // A kernel that ignores the filter answers with every link.
    found.retain(|l| l.kind.as_deref() == Some(what.as_str()));
    Ok(found)
}

/// The link with ifindex `index`; `None` when there is none.
pub fn link(nl: &mut Netlink, index: u32) -> Result<Option<LinkFacts>, Error> {
    let mut q = link_query();
    q.header.index = index;
    match nl.request(RouteNetlinkMessage::GetLink(q), "get link", &format!("index {index}")) {
        Ok(answers) => Ok(link_facts(&answers).into_iter().next()),
        Err(e) if e.raw_errno() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The kernel's answer to a route lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteAnswer {
    /// `unicast`, `local`, `broadcast`, `blackhole`, `unreachable`, `prohibit`, ...
    pub kind: String,
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
    /// Preferred source address.
    pub prefsrc: Option<IpAddr>,
    pub table: Option<u32>,
    /// Route MTU metric, when set.
    pub mtu: Option<u32>,
}

/// What a route lookup asks: `ip route get <to> [from <from>] [iif <iif>] [oif <oif>] [mark <m>]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteQuery {
    /// `to` and `from` are of one family, which the lookup is made in.
    pub to: Option<IpAddr>,
    pub from: Option<IpAddr>,
    pub iif: Option<u32>,
    pub oif: Option<u32>,
    pub mark: Option<u32>,
}

impl std::fmt::Display for RouteQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(t) = self.to {
            parts.push(format!("{t}"));
        }
        if let Some(s) = self.from {
            parts.push(format!("from {s}"));
        }
        if let Some(i) = self.iif {
            parts.push(format!("iif {i}"));
        }
        if let Some(o) = self.oif {
            parts.push(format!("oif {o}"));
        }
        if let Some(m) = self.mark {
            parts.push(format!("mark {m:#x}"));
        }
        f.write_str(&parts.join(" "))
    }
}

fn kind_name(k: RouteType) -> String {
    match k {
        RouteType::Unicast => "unicast".into(),
        RouteType::Local => "local".into(),
        RouteType::Broadcast => "broadcast".into(),
        RouteType::Anycast => "anycast".into(),
        RouteType::Multicast => "multicast".into(),
        RouteType::BlackHole => "blackhole".into(),
        RouteType::Unreachable => "unreachable".into(),
        RouteType::Prohibit => "prohibit".into(),
        RouteType::Throw => "throw".into(),
        RouteType::Nat => "nat".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// `RTM_GETROUTE` for one packet: the kernel runs its real lookup (policy rules, `rp_filter`
/// and forwarding checks when `iif` is given), so an `Err` carries the errno it rejects the
/// packet with (`EXDEV` for reverse-path filtering, `EHOSTUNREACH`/`ENETUNREACH` for no route,
/// `EINVAL` when forwarding is off on the input device).
pub fn route_get(nl: &mut Netlink, q: &RouteQuery) -> Result<RouteAnswer, Error> {
    let mut msg = RouteMessage::default();
    let v6 = q.to.or(q.from).is_some_and(|a| a.is_ipv6());
    msg.header.address_family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
    // RTM_F_LOOKUP_TABLE: report the table the route came from (as `ip route get` does). IPv6
    // refuses any flag but RTM_F_FIB_MATCH with EINVAL (`inet6_rtm_valid_getroute_req`,
    // net/ipv6/route.c) and reports the table anyway.
    if !v6 {
        msg.header.flags = RouteFlags::LookupTable;
    }
    if let Some(to) = q.to {
        msg.header.destination_prefix_length = host_len(&to);
        msg.attributes.push(RouteAttribute::Destination(route_addr(to)));
    }
    if let Some(from) = q.from {
        msg.header.source_prefix_length = host_len(&from);
        msg.attributes.push(RouteAttribute::Source(route_addr(from)));
    }
    if let Some(i) = q.iif {
        msg.attributes.push(RouteAttribute::Iif(i));
    }
    if let Some(o) = q.oif {
        msg.attributes.push(RouteAttribute::Oif(o));
    }
    if let Some(m) = q.mark {
        msg.attributes.push(RouteAttribute::Mark(m));
    }
    let object = q.to_string();
    let answers = nl.request(RouteNetlinkMessage::GetRoute(msg), "route get", &object)?;
    let r = answers
        .iter()
        .find_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => Some(r),
            _ => None,
        })
        .ok_or_else(|| Error {
            op: "route get",
            object: object.clone(),
            source: std::io::Error::other("no route in the kernel's answer"),
            kernel_msg: None,
        })?;
    let mut a = RouteAnswer {
        kind: kind_name(r.header.kind),
        oif: None,
        gateway: None,
        prefsrc: None,
        table: Some(u32::from(r.header.table)),
        mtu: None,
    };
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Oif(o) => a.oif = Some(*o),
            RouteAttribute::Gateway(g) => a.gateway = route_ip(g),
            RouteAttribute::PrefSource(s) => a.prefsrc = route_ip(s),
            RouteAttribute::Table(t) => a.table = Some(*t),
            RouteAttribute::Metrics(ms) => {
                for m in ms {
                    if let netlink_packet_route::route::RouteMetric::Mtu(v) = m {
                        a.mtu = Some(*v);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(a)
}

fn host_len(a: &IpAddr) -> u8 {
    if a.is_ipv6() {
        128
    } else {
        32
    }
}

fn route_addr(a: IpAddr) -> RouteAddress {
    match a {
        IpAddr::V4(v) => RouteAddress::Inet(v),
        IpAddr::V6(v) => RouteAddress::Inet6(v),
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

/// A neighbour (ARP) entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Neigh {
    pub ip: IpAddr,
    pub mac: Option<String>,
    pub state: String,
    pub permanent: bool,
}

/// An FDB entry of a VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fdb {
    pub mac: String,
    pub dst: Option<IpAddr>,
}

fn neigh_state(s: NeighbourState) -> (String, bool) {
    const NUD_PERMANENT: u16 = 0x80;
    let raw = u16::from(s);
    let name = match s {
        NeighbourState::Incomplete => "incomplete".to_string(),
        NeighbourState::Reachable => "reachable".into(),
        NeighbourState::Stale => "stale".into(),
        NeighbourState::Delay => "delay".into(),
        NeighbourState::Probe => "probe".into(),
        NeighbourState::Failed => "failed".into(),
        NeighbourState::Noarp => "noarp".into(),
        NeighbourState::Permanent => "permanent".into(),
        NeighbourState::None => "none".into(),
        NeighbourState::Other(n) => format!("0x{n:x}"),
        other => format!("{other:?}").to_lowercase(),
    };
    (name, raw & NUD_PERMANENT != 0)
}

/// IPv4 (ARP) or, with `v6`, IPv6 (NDISC) neighbour entries of link `index`.
pub fn neighbours(nl: &mut Netlink, index: u32, v6: bool) -> Result<Vec<Neigh>, Error> {
    let family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
    Ok(nl.neighbours_of(family, index)?.iter().filter_map(neigh_of).collect())
}

/// The neighbour entry of `ip` on link `index` (`ip neigh get <ip> dev <link>`: one
/// `RTM_GETNEIGH` answered from the device's table, where a dump walks every namespace's
/// entries); `None` when there is none.
pub fn neighbour_get(nl: &mut Netlink, index: u32, ip: IpAddr) -> Result<Option<Neigh>, Error> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = if ip.is_ipv6() { AddressFamily::Inet6 } else { AddressFamily::Inet };
    msg.header.ifindex = index;
    msg.attributes.push(NeighbourAttribute::Destination(match ip {
        IpAddr::V4(v) => NeighbourAddress::Inet(v),
        IpAddr::V6(v) => NeighbourAddress::Inet6(v),
    }));
    single(nl.request(RouteNetlinkMessage::GetNeighbour(msg), "neigh get", &format!("{ip} index {index}")))
        .map(|n| n.as_ref().and_then(neigh_of))
}

/// The FDB entry of `mac` on VXLAN link `index` (`bridge fdb get <mac> dev <link> self`, asked
/// of the device itself); `None` when there is none.
pub fn fdb_get(nl: &mut Netlink, index: u32, mac: &str) -> Result<Option<Fdb>, Error> {
    let Some(lladdr) = weft_common::mac::parse_mac(mac) else { return Ok(None) };
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes.push(NeighbourAttribute::LinkLayerAddress(lladdr.to_vec()));
    single(nl.request(RouteNetlinkMessage::GetNeighbour(msg), "fdb get", &format!("{mac} index {index}")))
        .map(|n| n.as_ref().and_then(fdb_of))
}

/// The one neighbour message of a get, `None` for "no such entry" (`ENOENT`).
fn single(answers: Result<Vec<RouteNetlinkMessage>, Error>) -> Result<Option<NeighbourMessage>, Error> {
    match answers {
        Ok(ms) => Ok(ms.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n) => Some(n),
            _ => None,
        })),
        Err(e) if e.raw_errno() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn neigh_of(n: &NeighbourMessage) -> Option<Neigh> {
    let ip = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => Some(IpAddr::V4(*v)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => Some(IpAddr::V6(*v)),
        _ => None,
    })?;
    let mac = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(m) => Some(format_mac(m)),
        _ => None,
    });
    let (state, permanent) = neigh_state(n.header.state);
    Some(Neigh { ip, mac, state, permanent })
}

/// FDB entries of link `index` (`bridge fdb show dev <link>`).
pub fn fdb(nl: &mut Netlink, index: u32) -> Result<Vec<Fdb>, Error> {
    Ok(nl.neighbours_of(AddressFamily::Bridge, index)?.iter().filter_map(fdb_of).collect())
}

fn fdb_of(n: &NeighbourMessage) -> Option<Fdb> {
    let mac = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(m) => Some(format_mac(m)),
        _ => None,
    })?;
    let dst = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => Some(IpAddr::V4(*v)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => Some(IpAddr::V6(*v)),
        // AF_BRIDGE messages carry NDA_DST as raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    });
    Some(Fdb { mac, dst })
}

/// The id the asking namespace gives to namespace `ns` (`RTM_GETNSID` with its fd); `None`
/// when it has none assigned (then no link of the asking namespace has a peer there).
pub fn nsid_of(nl: &mut Netlink, ns: &NetNs) -> Result<Option<i32>, Error> {
    let fd = u32::try_from(ns.file().as_raw_fd()).unwrap_or(u32::MAX);
    let mut msg = NsidMessage::default();
    msg.attributes.push(NsidAttribute::Fd(fd));
    let answers =
        nl.request(RouteNetlinkMessage::GetNsId(msg), "get nsid", &ns.path().display().to_string())?;
    Ok(answers.iter().find_map(|m| match m {
        RouteNetlinkMessage::NewNsId(n) => n.attributes.iter().find_map(|a| match a {
            NsidAttribute::Id(id) if *id >= 0 => Some(*id),
            _ => None,
        }),
        _ => None,
    }))
}
