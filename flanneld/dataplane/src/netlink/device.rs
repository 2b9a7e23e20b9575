//! Creating, adopting or replacing the VXLAN device, and its one address (docs/flannel.md
//! §8.1–8.3): `flannel.<VNI>` over IPv4 (`IFLA_VXLAN_LOCAL`, address `/32`) or `flannel-v6.<VNI>`
//! over IPv6 (`IFLA_VXLAN_LOCAL6`, address `/128`), otherwise the same attributes (upstream
//! `pkg/backend/vxlan/vxlan.go` `newSubnetAttrs`/`New`, `device.go` `newVXLANDevice`).
//!
//! An existing device is kept as it is (MAC, MTU, learning) unless it is incompatible (upstream
//! `pkg/backend/vxlan/device.go` `vxlanLinksIncompat`); then it is deleted and created again,
//! with the caller's `mac_hint` so peers that know the old MAC need no update.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use nix::errno::Errno;
use weft_common::mac::{format_mac, random_local_mac};

use super::{errno_text, nl_err, NetlinkDataplane, Outcome};
use crate::{DataplaneError, DeviceInfo, Mac, VxlanSpec};

/// What matters about an existing link for the compatibility check.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkFacts {
    pub index: u32,
    pub kind: Option<String>,
    pub vni: Option<u32>,
    pub lower: u32,
    pub local: Option<IpAddr>,
    pub group: Option<IpAddr>,
    pub l2miss: bool,
    pub port: u16,
    pub gbp: bool,
    pub mac: Option<Mac>,
    pub mtu: u32,
}

pub(crate) fn facts(m: &LinkMessage) -> LinkFacts {
    let mut f = LinkFacts { index: m.header.index, ..LinkFacts::default() };
    for a in &m.attributes {
        match a {
            LinkAttribute::Address(mac) => f.mac = <Mac>::try_from(mac.as_slice()).ok(),
            LinkAttribute::Mtu(mtu) => f.mtu = *mtu,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => f.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(attrs)) => {
                            for v in attrs {
                                match v {
                                    InfoVxlan::Id(id) => f.vni = Some(*id),
                                    InfoVxlan::Link(l) => f.lower = *l,
                                    InfoVxlan::Local(ip) => f.local = Some((*ip).into()),
                                    InfoVxlan::Local6(ip) => f.local = Some((*ip).into()),
                                    InfoVxlan::Group(ip) => f.group = Some((*ip).into()),
                                    InfoVxlan::Group6(ip) => f.group = Some((*ip).into()),
                                    InfoVxlan::L2Miss(b) => f.l2miss = *b,
                                    InfoVxlan::Port(p) => f.port = *p,
                                    InfoVxlan::Gbp => f.gbp = true,
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
    f
}

/// Why an existing link cannot be adopted, or `None` when it can. MTU and learning are
/// deliberately not compared (upstream keeps them).
pub(crate) fn incompatible(f: &LinkFacts, spec: &VxlanSpec) -> Option<String> {
    if f.kind.as_deref() != Some("vxlan") {
        return Some(format!("link type {}", f.kind.as_deref().unwrap_or("unknown")));
    }
    if f.vni != Some(spec.vni) {
        return Some(format!("VNI {:?} != {}", f.vni, spec.vni));
    }
    if f.lower != 0 && spec.underlay_index != 0 && f.lower != spec.underlay_index {
        return Some(format!("lower device {} != {}", f.lower, spec.underlay_index));
    }
    if let Some(local) = f.local {
        // A device over the other family's underlay is never adoptable.
        if local.is_ipv6() != spec.local.is_ipv6()
            || (!local.is_unspecified() && !spec.local.is_unspecified() && local != spec.local)
        {
            return Some(format!("local {local} != {}", spec.local));
        }
    }
    if f.group.is_some_and(|g| !g.is_unspecified()) {
        return Some("has a multicast group".into());
    }
    if f.l2miss {
        return Some("l2miss on".into());
    }
    if f.port > 0 && spec.port > 0 && f.port != spec.port {
        return Some(format!("port {} != {}", f.port, spec.port));
    }
    if f.gbp != spec.gbp {
        return Some(format!("gbp {} != {}", f.gbp, spec.gbp));
    }
    None
}

/// The RTM_NEWLINK message upstream sends (§8.1).
pub(crate) fn create_msg(spec: &VxlanSpec, mac: Mac) -> LinkMessage {
    let mut data = vec![InfoVxlan::Id(spec.vni)];
    if spec.underlay_index != 0 {
        data.push(InfoVxlan::Link(spec.underlay_index));
    }
    match spec.local {
        IpAddr::V4(ip) if !ip.is_unspecified() => data.push(InfoVxlan::Local(ip)),
        IpAddr::V6(ip) if !ip.is_unspecified() => data.push(InfoVxlan::Local6(ip)),
        _ => {}
    }
    data.extend([
        InfoVxlan::Ttl(0),
        InfoVxlan::Tos(0),
        InfoVxlan::Learning(spec.learning),
        InfoVxlan::Proxy(false),
        InfoVxlan::Rsc(false),
        InfoVxlan::L2Miss(false),
        InfoVxlan::L3Miss(false),
        InfoVxlan::UDPZeroCsumTX(false),
        InfoVxlan::UDPZeroCsumRX(false),
    ]);
    if spec.gbp {
        data.push(InfoVxlan::Gbp);
    }
    if spec.port > 0 {
        data.push(InfoVxlan::Port(spec.port));
    }
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(spec.name.clone()));
    m.attributes.push(LinkAttribute::Mtu(spec.mtu));
    m.attributes.push(LinkAttribute::TxQueueLen(0));
    m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(data)),
    ]));
    m
}

async fn get_link(dp: &NetlinkDataplane, name: &str) -> Result<Option<LinkFacts>, DataplaneError> {
    let mut q = LinkMessage::default();
    q.attributes.push(LinkAttribute::IfName(name.to_string()));
    match dp.get(RouteNetlinkMessage::GetLink(q), 0, "link").await {
        Ok(msgs) => Ok(msgs.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(facts(l)),
            _ => None,
        })),
        Err(DataplaneError::Netlink { errno: Some(Errno::ENODEV), .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the link `index` exists and is administratively up (`IFF_UP`); a link gone
/// (ENODEV) is not.
pub(super) async fn is_up(dp: &NetlinkDataplane, index: u32) -> Result<bool, DataplaneError> {
    let mut q = LinkMessage::default();
    q.header.index = index;
    match dp.get(RouteNetlinkMessage::GetLink(q), 0, "link").await {
        Ok(msgs) => Ok(msgs.iter().any(|m| match m {
            RouteNetlinkMessage::NewLink(l) => {
                l.header.index == index && l.header.flags.contains(LinkFlags::Up)
            }
            _ => false,
        })),
        Err(DataplaneError::Netlink { errno: Some(Errno::ENODEV), .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

fn check(outcome: Outcome, op: &'static str, object: &str, ok: &[Errno]) -> Result<(), DataplaneError> {
    match outcome {
        Outcome::Done => Ok(()),
        Outcome::Errno(e) if ok.contains(&e) => Ok(()),
        Outcome::Errno(e) => Err(nl_err(op, object, errno_text(e), Some(e))),
        Outcome::Overrun => Err(nl_err(op, object, "receive buffer overrun", None)),
        Outcome::Closed => Err(nl_err(op, object, "netlink connection closed", None)),
    }
}

async fn delete_link(dp: &NetlinkDataplane, index: u32, name: &str) -> Result<(), DataplaneError> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    check(dp.ack(RouteNetlinkMessage::DelLink(m), 0).await, "delete link", name, &[Errno::ENODEV])
}

async fn create_link(dp: &NetlinkDataplane, spec: &VxlanSpec, mac: Mac) -> Result<bool, DataplaneError> {
    let out = dp.ack(RouteNetlinkMessage::NewLink(create_msg(spec, mac)), NLM_F_CREATE | NLM_F_EXCL).await;
    match out {
        Outcome::Errno(Errno::EEXIST) => Ok(false),
        other => check(other, "create vxlan", &spec.name, &[]).map(|()| true),
    }
}

/// The family of `ip` as an address family.
fn family_of(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

/// Keeps exactly `spec.address` among the device's addresses (of its family) inside
/// `spec.network`. IPv6 addresses are dumped with `IFA_ADDRESS` only (no `IFA_LOCAL`); the
/// link-local `fe80::/64` address the kernel gives the device is outside the network and
/// stays.
async fn ensure_address(dp: &NetlinkDataplane, index: u32, spec: &VxlanSpec) -> Result<(), DataplaneError> {
    let family = family_of(&spec.address.ip());
    let mut q = AddressMessage::default();
    q.header.family = family;
    let mut have = false;
    for m in dp.dump_req(RouteNetlinkMessage::GetAddress(q), "addresses").await? {
        let RouteNetlinkMessage::NewAddress(a) = m else { continue };
        if a.header.index != index || a.header.family != family {
            continue;
        }
        let local = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let address = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        let Some(ip) = local.or(address).filter(|ip| ip.is_ipv6() == spec.address.is_ipv6()) else {
            continue;
        };
        if ip == spec.address.ip() && a.header.prefix_len == spec.address.prefix() {
            have = true;
        } else if spec.network.contains(ip) {
            tracing::info!(device = %spec.name, address = %ip, prefix = a.header.prefix_len,
                "removing stale address inside the cluster network");
            let object = format!("{ip}/{} on {}", a.header.prefix_len, spec.name);
            check(
                dp.ack(RouteNetlinkMessage::DelAddress(a), 0).await,
                "delete address",
                &object,
                &[Errno::EADDRNOTAVAIL],
            )?;
        }
    }
    if !have {
        let mut a = AddressMessage::default();
        a.header.family = family;
        a.header.prefix_len = spec.address.prefix();
        a.header.scope = AddressScope::Universe;
        a.header.index = index;
        a.attributes.push(AddressAttribute::Local(spec.address.ip()));
        a.attributes.push(AddressAttribute::Address(spec.address.ip()));
        let object = format!("{} on {}", spec.address, spec.name);
        check(
            dp.ack(RouteNetlinkMessage::NewAddress(a), NLM_F_CREATE | NLM_F_EXCL).await,
            "add address",
            &object,
            &[Errno::EEXIST],
        )?;
    }
    Ok(())
}

async fn set_up(dp: &NetlinkDataplane, index: u32, name: &str) -> Result<(), DataplaneError> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    check(dp.ack(RouteNetlinkMessage::SetLink(m), 0).await, "set up", name, &[])
}

/// host-gw: deletes the VXLAN links a vxlan run of flanneld left (`flannel.<N>`,
/// `flannel-v6.<N>`, kind vxlan; links of another kind with such a name are not ours and
/// stay). Returns the names deleted.
pub(super) async fn remove_stale(dp: &NetlinkDataplane) -> Result<Vec<String>, DataplaneError> {
    let mut removed = Vec::new();
    for m in dp.dump_req(RouteNetlinkMessage::GetLink(LinkMessage::default()), "links").await? {
        let RouteNetlinkMessage::NewLink(l) = m else { continue };
        let name = l.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        let Some(name) = name.filter(|n| crate::is_flannel_vxlan_name(n)) else { continue };
        if facts(&l).kind.as_deref() != Some("vxlan") {
            continue;
        }
        delete_link(dp, l.header.index, &name).await?;
        removed.push(name);
    }
    Ok(removed)
}

/// §8.1–8.3: create/adopt/replace, accept_ra=0, the one address, up; returns the device as it is.
pub(super) async fn ensure(
    dp: &NetlinkDataplane,
    spec: &VxlanSpec,
    mac_hint: Option<Mac>,
) -> Result<DeviceInfo, DataplaneError> {
    let mut created = false;
    // Two rounds: a concurrent creator (EEXIST) sends us back to adoption once.
    for _ in 0..2 {
        if let Some(f) = get_link(dp, &spec.name).await? {
            match incompatible(&f, spec) {
                None => {
                    tracing::info!(device = %spec.name, index = f.index, "adopting existing VXLAN device");
                    break;
                }
                Some(why) => {
                    tracing::warn!(device = %spec.name, reason = %why, "replacing incompatible device");
                    delete_link(dp, f.index, &spec.name).await?;
                }
            }
        }
        let mac = mac_hint.unwrap_or_else(random_local_mac);
        if create_link(dp, spec, mac).await? {
            tracing::info!(device = %spec.name, mac = %format_mac(&mac), "created VXLAN device");
            created = true;
            break;
        }
    }
    let f = get_link(dp, &spec.name).await?.ok_or_else(|| {
        nl_err("get link", spec.name.clone(), errno_text(Errno::ENODEV), Some(Errno::ENODEV))
    })?;
    if let Some(why) = incompatible(&f, spec) {
        return Err(nl_err("ensure vxlan", spec.name.clone(), format!("still incompatible: {why}"), None));
    }
    // Best effort, like upstream: a kernel without IPv6 has no such key.
    let key = weft_common::sysctl::iface_key("ipv6", &spec.name, "accept_ra");
    if let Err(e) = weft_common::sysctl::set(&key, "0") {
        tracing::debug!(device = %spec.name, error = %e, "could not set accept_ra=0");
    }
    ensure_address(dp, f.index, spec).await?;
    set_up(dp, f.index, &spec.name).await?;
    // Re-read: udev (MACAddressPolicy) may have rewritten the MAC of a fresh device.
    let f = get_link(dp, &spec.name).await?.ok_or_else(|| {
        nl_err("get link", spec.name.clone(), errno_text(Errno::ENODEV), Some(Errno::ENODEV))
    })?;
    let mac = f.mac.ok_or_else(|| nl_err("get link", spec.name.clone(), "no MAC address", None))?;
    if created {
        if let Some(hint) = mac_hint {
            if hint != mac {
                return Err(nl_err(
                    "ensure vxlan",
                    spec.name.clone(),
                    format!("MAC changed after creation: {} != {}", format_mac(&mac), format_mac(&hint)),
                    None,
                ));
            }
        }
    }
    Ok(DeviceInfo { index: f.index, mac, mtu: f.mtu })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VxlanSpec {
        crate::fake::test_spec(5)
    }

    #[test]
    fn created_message_reads_back_compatible() {
        let s = spec();
        let f = facts(&create_msg(&s, [2, 1, 2, 3, 4, 5]));
        assert_eq!(f.kind.as_deref(), Some("vxlan"));
        assert_eq!(f.vni, Some(1));
        assert_eq!(f.lower, 5);
        assert_eq!(f.port, 0, "port 0 is not sent");
        assert_eq!(f.mac, Some([2, 1, 2, 3, 4, 5]));
        assert_eq!(incompatible(&f, &s), None);
    }

    #[test]
    fn incompatibilities_are_detected() {
        let s = spec();
        let base = facts(&create_msg(&s, [2, 1, 2, 3, 4, 5]));
        let mut f = LinkFacts { vni: Some(2), ..facts(&create_msg(&s, [2; 6])) };
        assert!(incompatible(&f, &s).unwrap().contains("VNI"));
        f = LinkFacts { kind: Some("dummy".into()), ..facts(&create_msg(&s, [2; 6])) };
        assert!(incompatible(&f, &s).unwrap().contains("link type"));
        f = LinkFacts { local: Some("198.18.0.9".parse().unwrap()), ..facts(&create_msg(&s, [2; 6])) };
        assert!(incompatible(&f, &s).is_some());
        f = LinkFacts { port: 4789, ..facts(&create_msg(&s, [2; 6])) };
        assert_eq!(incompatible(&f, &s), None, "port compared only when both > 0");
        let mut s2 = s.clone();
        s2.port = 8472;
        assert!(incompatible(&f, &s2).is_some());
        let mut s3 = s.clone();
        s3.gbp = true;
        assert!(incompatible(&base, &s3).unwrap().contains("gbp"));
        let mut s4 = s.clone();
        s4.mtu = 1000;
        s4.learning = true;
        assert_eq!(incompatible(&base, &s4), None, "MTU and learning never force recreation");
    }
}
