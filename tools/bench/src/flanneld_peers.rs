//! The synthetic peers of the flanneld benchmark: their subnets, public IPs, VTEP MACs and
//! lease values per backend, and the veth underlay they sit on.

use std::net::Ipv4Addr;

pub use weft_lab::backend::Backend;
use weft_lab::ns::Netns;

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

/// Peer `i`'s lease value in upstream's format.
pub fn lease_value(backend: Backend, i: u32) -> String {
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
pub fn network_config(backend: Backend) -> Result<String, String> {
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
