//! Bridge-port settings: hairpin and isolation flags, and the port's VLAN table.

use netlink_packet_route::link::{
    AfSpecBridge, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridgePort, InfoPortData, InfoPortKind,
    LinkAttribute, LinkExtentMask, LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Error, Netlink};

/// Bridge-port attributes to write; `None` leaves a setting alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortAttrs {
    /// Hairpin (reflective relay): frames may leave through the port they came in.
    pub hairpin: Option<bool>,
    /// Isolated ports cannot talk to each other, only to non-isolated ones.
    pub isolated: Option<bool>,
}

/// One VLAN entry of a bridge port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortVlan {
    pub vid: u16,
    /// Untagged ingress frames get this VLAN.
    pub pvid: bool,
    /// Egress frames of this VLAN leave untagged.
    pub untagged: bool,
}

fn vlan_msg(index: u32, vlan: &PortVlan) -> LinkMessage {
    let mut flags = BridgeVlanInfoFlags::empty();
    if vlan.pvid {
        flags |= BridgeVlanInfoFlags::Pvid;
    }
    if vlan.untagged {
        flags |= BridgeVlanInfoFlags::Untagged;
    }
    let mut msg = LinkMessage::default();
    msg.header.interface_family = AddressFamily::Bridge;
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::AfSpecBridge(vec![AfSpecBridge::VlanInfo(BridgeVlanInfo {
        flags,
        vid: vlan.vid,
    })]));
    msg
}

impl Netlink {
    /// Writes bridge-port attributes of `index`, which must already be a bridge port.
    pub fn set_bridge_port(&mut self, index: u32, attrs: &PortAttrs) -> Result<(), Error> {
        let mut data = Vec::new();
        if let Some(h) = attrs.hairpin {
            data.push(InfoBridgePort::HairpinMode(h));
        }
        if let Some(i) = attrs.isolated {
            data.push(InfoBridgePort::Isolated(i));
        }
        if data.is_empty() {
            return Ok(());
        }
        // Port ("slave") data is only accepted by RTM_NEWLINK on an existing device.
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(data)),
        ]));
        self.request_ack(RouteNetlinkMessage::NewLink(msg), 0, "set bridge port", &format!("index {index}"))
    }

    /// The VLAN entries of bridge port `index`.
    pub fn bridge_vlans(&mut self, index: u32) -> Result<Vec<PortVlan>, Error> {
        let mut msg = LinkMessage::default();
        msg.header.interface_family = AddressFamily::Bridge;
        msg.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::Brvlan]));
        let object = format!("index {index}");
        let answers = self.dump(RouteNetlinkMessage::GetLink(msg), "list bridge vlans", &object)?;
        let mut out = Vec::new();
        for m in &answers {
            let RouteNetlinkMessage::NewLink(l) = m else { continue };
            if l.header.index != index {
                continue;
            }
            for attr in &l.attributes {
                let LinkAttribute::AfSpecBridge(specs) = attr else { continue };
                for spec in specs {
                    if let AfSpecBridge::VlanInfo(v) = spec {
                        out.push(PortVlan {
                            vid: v.vid,
                            pvid: v.flags.contains(BridgeVlanInfoFlags::Pvid),
                            untagged: v.flags.contains(BridgeVlanInfoFlags::Untagged),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Adds (or updates) a VLAN entry on bridge port `index`.
    pub fn bridge_vlan_add(&mut self, index: u32, vlan: &PortVlan) -> Result<(), Error> {
        let object = format!("vid {} on index {index}", vlan.vid);
        self.request_ack(RouteNetlinkMessage::SetLink(vlan_msg(index, vlan)), 0, "add bridge vlan", &object)
    }

    /// Removes VLAN `vid` from bridge port `index`.
    pub fn bridge_vlan_del(&mut self, index: u32, vid: u16) -> Result<(), Error> {
        let vlan = PortVlan { vid, pvid: false, untagged: false };
        let object = format!("vid {vid} on index {index}");
        self.request_ack(
            RouteNetlinkMessage::DelLink(vlan_msg(index, &vlan)),
            0,
            "delete bridge vlan",
            &object,
        )
    }
}
