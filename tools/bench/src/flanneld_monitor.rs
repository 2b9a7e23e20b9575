//! The flanneld benchmark's route monitor: an rtnetlink socket subscribed to new routes (IPv4,
//! and IPv6 for dual stack) in the calling thread's namespace, sending each peer-subnet route
//! with its gateway, output interface and the time it was seen.

use std::net::IpAddr;
use std::sync::mpsc;
use std::time::Instant;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::flanneld_peers_v6::SUBNET_LEN_V6;

/// `RTMGRP_IPV4_ROUTE` and `RTMGRP_IPV6_ROUTE` (linux/rtnetlink.h).
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

/// A new peer-subnet route as the monitor saw it.
pub struct SeenRoute {
    pub dst: IpAddr,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub at: Instant,
}

/// A route to a synthetic peer's subnet: a /24 in 10.0.0.0/8, or a /64 in fd10::/48.
pub fn is_peer_subnet(dst: IpAddr, prefix_len: u8) -> bool {
    match dst {
        IpAddr::V4(a) => prefix_len == 24 && a.octets()[0] == 10,
        IpAddr::V6(a) => {
            let s = a.segments();
            prefix_len == SUBNET_LEN_V6 && s[0] == 0xfd10 && s[1] == 0 && s[2] == 0
        }
    }
}

fn address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn seen(route: &RouteMessage, at: Instant) -> Option<SeenRoute> {
    let (mut dst, mut gateway, mut oif) = (None, None, None);
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = address(a),
            RouteAttribute::Gateway(a) => gateway = address(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let dst = dst.filter(|d| is_peer_subnet(*d, route.header.destination_prefix_length))?;
    Some(SeenRoute { dst, gateway, oif, at })
}

/// Starts the monitor; with `ipv6` it also follows IPv6 routes.
pub fn spawn_monitor(ipv6: bool) -> Result<mpsc::Receiver<SeenRoute>, String> {
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| e.to_string())?;
    let groups = if ipv6 { RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE } else { RTMGRP_IPV4_ROUTE };
    sock.bind(&SocketAddr::new(0, groups)).map_err(|e| e.to_string())?;
    // A burst of thousands of routes would overrun the default buffer.
    let _ = sock.set_rx_buf_sz(64 * 1024 * 1024);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match sock.recv(&mut &mut buf[..], 0) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("route monitor: {e}");
                    return;
                }
            };
            let now = Instant::now();
            let mut off = 0;
            while off < n {
                let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..n]) else { break };
                let len = msg.header.length as usize;
                if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) = msg.payload {
                    if let Some(r) = seen(&route, now) {
                        if tx.send(r).is_err() {
                            return;
                        }
                    }
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_subnets_of_both_families() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(is_peer_subnet(ip("10.1.2.0"), 24));
        assert!(!is_peer_subnet(ip("10.1.2.0"), 32));
        assert!(!is_peer_subnet(ip("198.18.0.0"), 24));
        assert!(is_peer_subnet(ip("fd10:0:0:102::"), 64));
        assert!(!is_peer_subnet(ip("fd10:0:0:102::"), 128));
        assert!(!is_peer_subnet(ip("fd10:1::"), 64));
        assert!(!is_peer_subnet(ip("2001:2::"), 64));
        assert!(!is_peer_subnet(ip("fe80::"), 64));
    }
}
