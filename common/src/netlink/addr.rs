//! Address operations: list, add (optionally without DAD), delete.

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Error, Netlink};

/// An address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    /// The address with its prefix length (host bits kept: `10.0.0.5/24`).
    pub address: IpNetwork,
    /// `IFA_F_*` flags.
    pub flags: u32,
    /// `RT_SCOPE_*`: 0 universe (global), 253 link, 254 host.
    pub scope: u8,
}

const IFA_F_TENTATIVE: u32 = 0x40;
const IFA_F_DADFAILED: u32 = 0x08;

impl Address {
    /// Still doing duplicate address detection (IPv6).
    pub fn is_tentative(&self) -> bool {
        self.flags & IFA_F_TENTATIVE != 0
    }

    /// Duplicate address detection found a conflict (IPv6).
    pub fn is_dad_failed(&self) -> bool {
        self.flags & IFA_F_DADFAILED != 0
    }

    /// Scope universe: not link-local or host.
    pub fn is_global(&self) -> bool {
        self.scope == 0
    }

    fn from_message(msg: &AddressMessage) -> Option<Address> {
        let mut local = None;
        let mut address = None;
        let mut flags = u32::from(msg.header.flags.bits());
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Flags(f) => flags = f.bits(),
                _ => {}
            }
        }
        // IFA_LOCAL is the interface's own address (differs from IFA_ADDRESS only on
        // point-to-point links); IPv6 reports only IFA_ADDRESS.
        let ip = local.or(address)?;
        Some(Address {
            index: msg.header.index,
            address: IpNetwork::new(ip, msg.header.prefix_len).ok()?,
            flags,
            scope: u8::from(msg.header.scope),
        })
    }
}

fn family(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn addr_msg(index: u32, net: &IpNetwork) -> AddressMessage {
    let ip = net.ip();
    let mut msg = AddressMessage::default();
    msg.header.family = family(&ip);
    msg.header.prefix_len = net.prefix();
    msg.header.index = index;
    msg.header.scope = AddressScope::Universe;
    msg.attributes.push(AddressAttribute::Address(ip));
    if let IpAddr::V4(v4) = ip {
        msg.attributes.push(AddressAttribute::Local(ip));
        // Like `ip addr add ... brd +`: the broadcast address of the subnet, for prefixes
        // that have one.
        if net.prefix() < 31 {
            let host_mask = u32::MAX.checked_shr(u32::from(net.prefix())).unwrap_or(0);
            let brd = Ipv4Addr::from(u32::from(v4) | host_mask);
            msg.attributes.push(AddressAttribute::Broadcast(brd));
        }
    }
    msg
}

impl Netlink {
    /// Addresses of link `index` (all links when `None`), both families.
    pub fn addresses(&mut self, index: Option<u32>) -> Result<Vec<Address>, Error> {
        let mut msg = AddressMessage::default();
        if let Some(i) = index {
            msg.header.index = i;
        }
        let object = index.map(|i| format!("index {i}")).unwrap_or_default();
        let answers = self.dump(RouteNetlinkMessage::GetAddress(msg), "list addresses", &object)?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => Address::from_message(a),
                _ => None,
            })
            // Filter here too: kernels without strict checking ignore the index filter.
            .filter(|a| match index {
                None => true,
                Some(i) => a.index == i,
            })
            .collect())
    }

    /// Adds `net` to link `index`; `nodad` skips IPv6 duplicate address detection (the
    /// address is usable at once). Fails with [`Error::is_exists`] if it is already there.
    pub fn add_address(&mut self, index: u32, net: &IpNetwork, nodad: bool) -> Result<(), Error> {
        let mut msg = addr_msg(index, net);
        if nodad && net.is_ipv6() {
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        let object = format!("{net} on index {index}");
        self.request_ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            "add address",
            &object,
        )
    }

    /// Removes `net` from link `index`; [`Error::is_not_found`] when it is not there.
    pub fn del_address(&mut self, index: u32, net: &IpNetwork) -> Result<(), Error> {
        let object = format!("{net} on index {index}");
        self.request_ack(RouteNetlinkMessage::DelAddress(addr_msg(index, net)), 0, "delete address", &object)
    }
}
