//! The remote node whose view the walk will ask for, guessed from this node's route to DST
//! before anything else is read: its `/debug/dataplane` request (`remote::request_view_ahead`)
//! then runs while `weft path` reads its own pods, kernel and firewall state, instead of after
//! it. A wrong or missing guess costs nothing but the overlap: the walk asks whoever it
//! needs, as without it, and gets the same answers.
//!
//! The guess follows the walk: host-gw's peer route `S via P` names the node P
//! (`hostgw.rs`); VXLAN's `S via S.0 onlink dev flannel.1` names it through the neighbour
//! entry of `S.0` (the peer's VTEP MAC) and that MAC's FDB entry (`dst P`, `overlay.rs`;
//! docs/flannel.md §8.5).

use std::net::IpAddr;

use weft_common::netlink::Netlink;

use crate::kernel::{self, RouteQuery};
use crate::remote;

/// Requests the view of DST's node ahead when the routes name one (IPv4; an IPv6 peer's
/// flanneld is found by asking several nodes, left to the walk).
pub(super) fn request_remote_view(dst: IpAddr, port: u16) {
    let Ok(mut host) = Netlink::open() else { return };
    if let Some(node) = node_of(&mut host, dst) {
        remote::request_view_ahead(node, port);
    }
}

/// The PublicIP of the node DST is routed to, if the kernel routes it via a gateway. Each step
/// is one question the kernel answers from the object itself (route get, link get, neighbour
/// get, FDB get), not a dump: this guess is on the critical path.
fn node_of(host: &mut Netlink, dst: IpAddr) -> Option<IpAddr> {
    if dst.is_ipv6() {
        return None;
    }
    let route = kernel::route_get(host, &RouteQuery { to: Some(dst), ..RouteQuery::default() }).ok()?;
    let (gw, oif) = (route.gateway?, route.oif?);
    let out = host.link_by_index(oif).ok()?;
    if out.kind.as_deref() != Some("vxlan") {
        return Some(gw);
    }
    let mac = kernel::neighbour_get(host, oif, gw).ok()??.mac?;
    kernel::fdb_get(host, oif, &mac).ok()??.dst.filter(|d| !d.is_unspecified())
}
