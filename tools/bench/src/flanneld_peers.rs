//! The synthetic peers of the flanneld benchmark: their subnets, public IPs, VTEP MACs and
//! lease keys and values per backend (and, for dual stack, with the IPv6 side of
//! `flanneld_peers_v6`), and the veth underlay they sit on.

use std::net::Ipv4Addr;

pub use weft_lab::backend::Backend;
use weft_lab::ns::Netns;

use crate::flanneld_peers_v6::{public_ipv6, subnet_v6, vtep_mac_v6, POD_NETWORK_V6, SUBNET_LEN_V6};

/// The node's own underlay address and its prefix length.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// A /16: every host-gw peer's PublicIP (peers up to 60,000 + samples) must be on-link, or
/// flanneld skips the lease as off-L2 (docs/flannel.md, host-gw backend).
pub const UNDERLAY_PREFIX_LEN: u8 = 16;
/// The underlay device flanneld is given (`--iface`).
pub const UNDERLAY: &str = "under0";

/// Peer `i`'s subnet: 10.<hi>.<lo>.0/24 for i >= 1; 10.0.0.0/24 is never handed out (SubnetMin).
pub fn subnet(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, (i >> 8) as u8, (i & 0xff) as u8, 0)
}

/// Peer `i`'s PublicIP. host-gw peers are on the underlay's on-link /16 (198.18.1.0 + i, clear
/// of the node's 198.18.0.1); VXLAN peers need not be and keep 198.19.0.0/16.
pub fn public_ip(backend: Backend, i: u32) -> Ipv4Addr {
    match backend {
        Backend::Vxlan => Ipv4Addr::new(198, 19, (i >> 8) as u8, (i & 0xff) as u8),
        Backend::HostGw => Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 1, 0)) + i),
    }
}

/// Peer `i`'s VTEP MAC (VXLAN only).
pub fn vtep_mac(i: u32) -> String {
    let [_, a, b, c] = i.to_be_bytes();
    weft_common::mac::format_mac(&[0x0e, 0, 0, a, b, c])
}

/// What the synthetic peers are: their backend, and whether their leases carry an IPv6 side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub backend: Backend,
    pub dual_stack: bool,
}

/// The etcd prefix flanneld uses by default (docs/flannel.md §4).
pub const PREFIX: &str = "/coreos.com/network";

/// The first peer index of the new-lease latency samples; the start-up peers are 1..=N below it.
pub const FIRST_SAMPLE: u32 = 60_000;
/// The largest peer index: 10.0.0.0/8 holds 65,536 /24s and fd10::/48 65,536 /64s.
pub const MAX_PEER: u32 = 65_535;

/// Refuses peer and sample counts whose indexes would not fit the networks or would overlap.
pub fn check_counts(peers: &[u32], samples: u32) -> Result<(), String> {
    if let Some(n) = peers.iter().find(|&&n| n == 0 || n >= FIRST_SAMPLE) {
        return Err(format!("--peers {n}: must be 1..{FIRST_SAMPLE}"));
    }
    if samples > MAX_PEER - FIRST_SAMPLE + 1 {
        return Err(format!("--samples {samples}: at most {}", MAX_PEER - FIRST_SAMPLE + 1));
    }
    Ok(())
}

impl Mode {
    /// Peer `i`'s lease key: `<prefix>/subnets/<v4>-24`, or with dual stack
    /// `<prefix>/subnets/<v4>-24&<v6>-64` (docs/flannel.md §4.1; the IPv6 part in RFC 5952
    /// form, as Rust's `Ipv6Addr` prints it).
    pub fn key(self, i: u32) -> String {
        let v4 = format!("{PREFIX}/subnets/{}-24", subnet(i));
        if self.dual_stack {
            format!("{v4}&{}-{SUBNET_LEN_V6}", subnet_v6(i))
        } else {
            v4
        }
    }

    /// Peer `i`'s lease value in upstream's format (docs/flannel.md §4.2).
    pub fn lease_value(self, i: u32) -> String {
        if !self.dual_stack {
            return lease_value(self.backend, i);
        }
        if self.backend == Backend::HostGw {
            // Upstream's host-gw writes no backend data for either family.
            return format!(
                r#"{{"PublicIP":"{}","PublicIPv6":"{}","BackendType":"host-gw"}}"#,
                public_ip(self.backend, i),
                public_ipv6(i)
            );
        }
        format!(
            r#"{{"PublicIP":"{}","PublicIPv6":"{}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{}"}},"BackendV6Data":{{"VNI":1,"VtepMAC":"{}"}}}}"#,
            public_ip(self.backend, i),
            public_ipv6(i),
            vtep_mac(i),
            vtep_mac_v6(i)
        )
    }

    /// The network config flanneld reads (with `EnableIPv6`, `IPv6Network`, `IPv6SubnetLen`
    /// for dual stack, docs/flannel.md §3.2).
    pub fn network_config(self) -> Result<String, String> {
        if !self.dual_stack {
            return network_config(self.backend);
        }
        let base = format!(
            r#"{{"Network":"10.0.0.0/8","SubnetLen":24,"EnableIPv6":true,"IPv6Network":"{POD_NETWORK_V6}","IPv6SubnetLen":{SUBNET_LEN_V6}}}"#
        );
        self.backend.apply_to(&base).map_err(|e| e.to_string())
    }

    /// The table's name for the mode: `vxlan`, `host-gw`, `vxlan, dual stack`, `host-gw, dual
    /// stack`.
    pub fn label(self) -> String {
        if self.dual_stack {
            format!("{}, dual stack", self.backend.type_name())
        } else {
            self.backend.type_name().to_string()
        }
    }
}

/// Peer `i`'s lease value in upstream's format.
fn lease_value(backend: Backend, i: u32) -> String {
    let ip = public_ip(backend, i);
    match backend {
        Backend::Vxlan => format!(
            r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{}"}}}}"#,
            vtep_mac(i)
        ),
        Backend::HostGw => format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"host-gw"}}"#),
    }
}

/// The network config flanneld reads.
fn network_config(backend: Backend) -> Result<String, String> {
    backend.apply_to(r#"{"Network":"10.0.0.0/8","SubnetLen":24}"#).map_err(|e| e.to_string())
}

/// Makes the veth underlay in `node`: `under0` (the node's address, a /16) paired with `under1`.
pub fn add_underlay(node: &Netns) {
    let addr = format!("{NODE_IP}/{UNDERLAY_PREFIX_LEN}");
    for argv in [
        // A veth pair rather than a dummy device: this kernel may lack the dummy module.
        vec!["ip", "link", "add", UNDERLAY, "type", "veth", "peer", "name", "under1"],
        vec!["ip", "link", "set", "under1", "up"],
        vec!["ip", "addr", "add", addr.as_str(), "dev", UNDERLAY],
        vec!["ip", "link", "set", UNDERLAY, "up"],
    ] {
        node.exec(&argv).expect_ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_flanneld::lease::{LeaseAttrs, LeaseKey};
    use weft_flanneld::network::parse_config;

    const VXLAN: Mode = Mode { backend: Backend::Vxlan, dual_stack: false };
    const DUAL: Mode = Mode { backend: Backend::Vxlan, dual_stack: true };

    #[test]
    fn dual_stack_lease_matches_upstream_bytes() {
        assert_eq!(DUAL.key(258), "/coreos.com/network/subnets/10.1.2.0-24&fd10:0:0:102::-64");
        assert_eq!(
            DUAL.lease_value(258),
            r#"{"PublicIP":"198.19.1.2","PublicIPv6":"2001:2:0:1::102","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:01:02"},"BackendV6Data":{"VNI":1,"VtepMAC":"0e:00:06:00:01:02"}}"#
        );
        // The same bytes flanneld itself writes for those attributes, and a key it parses back.
        for i in [1, 258, 4_999, FIRST_SAMPLE + 99] {
            let mac = |s: String| weft_common::mac::parse_mac(&s).unwrap();
            let attrs = LeaseAttrs::vxlan(public_ip(Backend::Vxlan, i), 1, mac(vtep_mac(i))).with_vxlan_v6(
                public_ipv6(i),
                1,
                mac(vtep_mac_v6(i)),
            );
            assert_eq!(String::from_utf8(attrs.render()).unwrap(), DUAL.lease_value(i));
            let key = DUAL.key(i);
            let name = key.strip_prefix("/coreos.com/network/subnets/").unwrap();
            let parsed = LeaseKey::parse(name).unwrap();
            assert_eq!(parsed.ipv4.ip(), subnet(i));
            assert_eq!(parsed.ipv6.map(|n| (n.ip(), n.prefix())), Some((subnet_v6(i), SUBNET_LEN_V6)));
        }
    }

    #[test]
    fn dual_stack_host_gw_lease_is_upstreams_and_flanneld_writes_the_same_bytes() {
        let hg = Mode { backend: Backend::HostGw, dual_stack: true };
        assert_eq!(hg.key(258), "/coreos.com/network/subnets/10.1.2.0-24&fd10:0:0:102::-64");
        assert_eq!(
            hg.lease_value(258),
            r#"{"PublicIP":"198.18.2.2","PublicIPv6":"2001:2:0:1::102","BackendType":"host-gw"}"#
        );
        let mut attrs = LeaseAttrs::host_gw(public_ip(Backend::HostGw, 258));
        attrs.public_ipv6 = Some(public_ipv6(258));
        assert_eq!(String::from_utf8(attrs.render()).unwrap(), hg.lease_value(258));
    }

    #[test]
    fn single_stack_leases_are_unchanged() {
        assert_eq!(VXLAN.key(258), "/coreos.com/network/subnets/10.1.2.0-24");
        assert_eq!(VXLAN.lease_value(1), lease_value(Backend::Vxlan, 1));
        let hg = Mode { backend: Backend::HostGw, dual_stack: false };
        assert_eq!(
            hg.lease_value(2),
            r#"{"PublicIP":"198.18.1.2","PublicIPv6":null,"BackendType":"host-gw"}"#
        );
    }

    #[test]
    fn dual_stack_config_is_accepted_by_flanneld() {
        let spec = parse_config(DUAL.network_config().unwrap().as_bytes()).unwrap();
        let v6 = spec.ipv6.expect("IPv6 side");
        assert_eq!(v6.subnet_len, SUBNET_LEN_V6);
        assert_eq!(v6.network.to_string(), POD_NETWORK_V6);
        assert!(v6.fits(&ipnetwork::Ipv6Network::new(subnet_v6(1), SUBNET_LEN_V6).unwrap()));
        assert!(v6.fits(&ipnetwork::Ipv6Network::new(subnet_v6(MAX_PEER), SUBNET_LEN_V6).unwrap()));
        assert!(parse_config(VXLAN.network_config().unwrap().as_bytes()).unwrap().ipv6.is_none());
    }

    #[test]
    fn counts_are_checked() {
        assert!(check_counts(&[1000, 5000], 100).is_ok());
        assert!(check_counts(&[0], 1).is_err());
        assert!(check_counts(&[FIRST_SAMPLE], 1).is_err());
        assert!(check_counts(&[10], MAX_PEER - FIRST_SAMPLE + 1).is_ok());
        assert!(check_counts(&[10], MAX_PEER - FIRST_SAMPLE + 2).is_err());
    }
}
