//! Link operations: look up, create (bridge, veth with its peer in another namespace),
//! change (up, master, MTU, MAC, promiscuity), wait for operstate, delete.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoBridge, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::{Error, Netlink};
use crate::mac::format_mac;
use crate::netns::NetNs;

/// Operational state of a link (`IFLA_OPERSTATE`, RFC 2863).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperState {
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
}

impl std::fmt::Display for OperState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            OperState::Unknown => "unknown",
            OperState::NotPresent => "notpresent",
            OperState::Down => "down",
            OperState::LowerLayerDown => "lowerlayerdown",
            OperState::Testing => "testing",
            OperState::Dormant => "dormant",
            OperState::Up => "up",
        };
        f.write_str(s)
    }
}

impl From<&State> for OperState {
    fn from(s: &State) -> Self {
        match s {
            State::Up => OperState::Up,
            State::Down => OperState::Down,
            State::LowerLayerDown => OperState::LowerLayerDown,
            State::Testing => OperState::Testing,
            State::Dormant => OperState::Dormant,
            State::NotPresent => OperState::NotPresent,
            _ => OperState::Unknown,
        }
    }
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`bridge`, `veth`, ...); `None` for physical devices.
    pub kind: Option<String>,
    /// Hardware address; empty for devices without one.
    pub mac: Vec<u8>,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Promiscuous (`IFF_PROMISC`).
    pub promisc: bool,
    /// Index of the master (bridge) this link is a port of.
    pub master: Option<u32>,
    pub oper_state: OperState,
    /// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: set when the peer lives in another namespace.
    pub link_netnsid: Option<i32>,
}

impl Link {
    pub fn is_bridge(&self) -> bool {
        self.kind.as_deref() == Some("bridge")
    }

    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }

    /// The MAC as lowercase `aa:bb:cc:dd:ee:ff`.
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }

    fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mac: Vec::new(),
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            promisc: msg.header.flags.contains(LinkFlags::Promisc),
            master: None,
            oper_state: OperState::Unknown,
            link: None,
            link_netnsid: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name.clone_from(n),
                LinkAttribute::Address(a) => link.mac.clone_from(a),
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::Controller(m) => link.master = Some(*m),
                LinkAttribute::OperState(s) => link.oper_state = OperState::from(s),
                LinkAttribute::Link(l) => link.link = Some(*l),
                LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(*id),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            link.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// A new bridge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: String,
    /// `None`: kernel default.
    pub mtu: Option<u32>,
    /// Turn on VLAN filtering at creation.
    pub vlan_filtering: bool,
}

/// A new veth pair; the peer may be created directly in another namespace.
#[derive(Debug, Clone, Default)]
pub struct VethSpec<'a> {
    pub name: String,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub peer_name: String,
    pub peer_mtu: Option<u32>,
    pub peer_mac: Option<[u8; 6]>,
    /// The namespace the peer is created in; `None`: the socket's own.
    pub peer_netns: Option<&'a NetNs>,
}

fn link_msg(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

fn with_basics(msg: &mut LinkMessage, name: &str, mtu: Option<u32>, mac: Option<[u8; 6]>) {
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    if let Some(mtu) = mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = mac {
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
}

impl Netlink {
    /// The link named `name`; an error that [`Error::is_not_found`] when there is none.
    pub fn link_by_name(&mut self, name: &str) -> Result<Link, Error> {
        let mut msg = link_msg(0);
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(msg, name)
    }

    /// The link named `name`, or `None` when there is none.
    pub fn find_link(&mut self, name: &str) -> Result<Option<Link>, Error> {
        match self.link_by_name(name) {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link with `index`; an error that [`Error::is_not_found`] when there is none.
    pub fn link_by_index(&mut self, index: u32) -> Result<Link, Error> {
        self.get_link(link_msg(index), &format!("index {index}"))
    }

    fn get_link(&mut self, msg: LinkMessage, object: &str) -> Result<Link, Error> {
        let answers = self.request(RouteNetlinkMessage::GetLink(msg), "get link", object)?;
        answers
            .iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .ok_or_else(|| Error::errno("get link", object, libc::ENODEV))
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, Error> {
        let answers = self.dump(RouteNetlinkMessage::GetLink(link_msg(0)), "list links", "")?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
    }

    /// Creates a bridge; fails with [`Error::is_exists`] when the name is taken.
    pub fn create_bridge(&mut self, spec: &BridgeSpec) -> Result<(), Error> {
        let mut msg = link_msg(0);
        with_basics(&mut msg, &spec.name, spec.mtu, None);
        let mut info = vec![LinkInfo::Kind(InfoKind::Bridge)];
        if spec.vlan_filtering {
            info.push(LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(true)])));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(info));
        self.request_ack(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            "create bridge",
            &spec.name,
        )
    }

    /// Creates a veth pair in one request, the peer directly in `spec.peer_netns`; fails with
    /// [`Error::is_exists`] when either name is taken in its namespace.
    pub fn create_veth(&mut self, spec: &VethSpec<'_>) -> Result<(), Error> {
        let mut peer = LinkMessage::default();
        with_basics(&mut peer, &spec.peer_name, spec.peer_mtu, spec.peer_mac);
        if let Some(ns) = spec.peer_netns {
            peer.attributes.push(LinkAttribute::NetNsFd(ns.file().as_raw_fd()));
        }
        let mut msg = link_msg(0);
        with_basics(&mut msg, &spec.name, spec.mtu, spec.mac);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        let object = format!("{} (peer {})", spec.name, spec.peer_name);
        self.request_ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL, "create veth", &object)
    }

    fn set_flags(&mut self, index: u32, flag: LinkFlags, on: bool, op: &'static str) -> Result<(), Error> {
        let mut msg = link_msg(index);
        msg.header.change_mask = flag;
        if on {
            msg.header.flags = flag;
        }
        self.request_ack(RouteNetlinkMessage::SetLink(msg), 0, op, &format!("index {index}"))
    }

    /// Sets the link administratively up.
    pub fn set_up(&mut self, index: u32) -> Result<(), Error> {
        self.set_flags(index, LinkFlags::Up, true, "set link up")
    }

    /// Sets the link administratively down.
    pub fn set_down(&mut self, index: u32) -> Result<(), Error> {
        self.set_flags(index, LinkFlags::Up, false, "set link down")
    }

    /// Turns promiscuous mode on or off.
    pub fn set_promisc(&mut self, index: u32, on: bool) -> Result<(), Error> {
        self.set_flags(index, LinkFlags::Promisc, on, "set promiscuous mode")
    }

    /// Makes `index` a port of `master` (`0` detaches it).
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<(), Error> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::Controller(master));
        self.request_ack(
            RouteNetlinkMessage::SetLink(msg),
            0,
            "set master",
            &format!("index {index} to {master}"),
        )
    }

    /// Sets the MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), Error> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.request_ack(RouteNetlinkMessage::SetLink(msg), 0, "set mtu", &format!("index {index} to {mtu}"))
    }

    /// Sets the hardware address.
    pub fn set_mac(&mut self, index: u32, mac: &[u8]) -> Result<(), Error> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        let object = format!("index {index} to {}", format_mac(mac));
        self.request_ack(RouteNetlinkMessage::SetLink(msg), 0, "set mac", &object)
    }

    /// Deletes the link (a veth takes its peer with it).
    pub fn del_link(&mut self, index: u32) -> Result<(), Error> {
        self.request_ack(
            RouteNetlinkMessage::DelLink(link_msg(index)),
            0,
            "delete link",
            &format!("index {index}"),
        )
    }

    /// Polls the link's operstate until it is `up` or `timeout` passes; returns the last
    /// state seen. Polls every millisecond at first, backing off to 10 ms: a veth whose
    /// peer is up reports `up` within microseconds (its link-watch events are urgent).
    pub fn wait_oper_up(&mut self, index: u32, timeout: Duration) -> Result<OperState, Error> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let state = self.link_by_index(index)?.oper_state;
            if state == OperState::Up || start.elapsed() >= timeout {
                return Ok(state);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }
}
