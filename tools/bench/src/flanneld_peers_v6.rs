//! The IPv6 side of the flanneld benchmark's synthetic dual-stack VXLAN peers: their IPv6
//! subnets, `PublicIPv6`s and `flannel-v6.1` VTEP MACs, and the node's IPv6 underlay address.
//! The underlay is in 2001:2::/48, the IPv6 benchmarking range (RFC 5180); the pod network is
//! the ULA `fd10::/48` cut into /64s (docs/flannel.md §3.3, `IPv6SubnetLen`).

use std::net::Ipv6Addr;

use weft_lab::ns::Netns;

use crate::flanneld_peers::UNDERLAY;

/// The node's own IPv6 underlay address (`-public-ipv6`), on `under0` with a /48.
pub const NODE_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
/// The underlay's prefix length: every peer's PublicIPv6 is inside 2001:2::/48.
pub const UNDERLAY_V6_PREFIX_LEN: u8 = 48;
/// `IPv6Network` of the benchmark's network config.
pub const POD_NETWORK_V6: &str = "fd10::/48";
/// `IPv6SubnetLen`: 65,535 /64s in the /48, one per peer index like the IPv4 /24s in 10.0.0.0/8.
pub const SUBNET_LEN_V6: u8 = 64;

/// Peer `i`'s IPv6 subnet (network address): `fd10:0:0:<i>::` for 1 <= i <= 65,535.
pub fn subnet_v6(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0xfd10, 0, 0, (i & 0xffff) as u16, 0, 0, 0, 0)
}

/// Peer `i`'s PublicIPv6: `2001:2:0:1::<i>`, inside the underlay's /48 and clear of the node's
/// `2001:2::1`.
pub fn public_ipv6(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0)) + u128::from(i))
}

/// Peer `i`'s `flannel-v6.1` VTEP MAC (its own, as upstream's `BackendV6Data` carries).
pub fn vtep_mac_v6(i: u32) -> String {
    let [_, a, b, c] = i.to_be_bytes();
    weft_common::mac::format_mac(&[0x0e, 0, 6, a, b, c])
}

/// Gives `under0` the node's IPv6 address. `nodad`: duplicate address detection would leave it
/// tentative for a second, and nothing else is on this veth.
pub fn add_underlay_v6(node: &Netns) {
    let addr = format!("{NODE_IPV6}/{UNDERLAY_V6_PREFIX_LEN}");
    node.exec(&["ip", "addr", "add", addr.as_str(), "dev", UNDERLAY, "nodad"]).expect_ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_distinct_and_in_their_ranges() {
        let net: ipnetwork::Ipv6Network = POD_NETWORK_V6.parse().unwrap();
        let under = ipnetwork::Ipv6Network::new(NODE_IPV6, UNDERLAY_V6_PREFIX_LEN).unwrap();
        for i in [1, 255, 256, 5_000, 60_000, 65_535] {
            assert!(net.contains(subnet_v6(i)), "{}", subnet_v6(i));
            assert!(under.contains(public_ipv6(i)), "{}", public_ipv6(i));
            assert_ne!(public_ipv6(i), NODE_IPV6);
        }
        assert_eq!(subnet_v6(1).to_string(), "fd10:0:0:1::");
        assert_eq!(subnet_v6(60_000).to_string(), "fd10:0:0:ea60::");
        assert_eq!(public_ipv6(5_000).to_string(), "2001:2:0:1::1388");
        assert_ne!(subnet_v6(1), subnet_v6(2));
        assert_eq!(vtep_mac_v6(258), "0e:00:06:00:01:02");
    }
}
