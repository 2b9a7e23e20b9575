//! Files flanneld keeps on the node: `subnet.env` (written in upstream's exact format, read
//! back leniently for the previous subnet, docs/flannel.md §10) and the persisted VTEP MAC
//! (`<subnet-file dir>/weft-vtep-mac`) that keeps the published `VtepMAC` stable across
//! restarts, so peers need no FDB update when we come back.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use weft_common::flannel::SubnetEnv;
use weft_common::fs::write_atomic;
use weft_dataplane::Mac;

use crate::daemon::{VXLAN_OVERHEAD, VXLAN_OVERHEAD_V6};
use crate::lease::{format_mac, parse_mac, LeaseKey};
use crate::network::NetworkSpec;

/// File name of the persisted MAC, next to the subnet file.
pub const MAC_FILE_NAME: &str = "weft-vtep-mac";

/// The previous lease's subnets from an existing subnet file (docs/flannel.md §2 step 2):
/// `FLANNEL_SUBNET` and, when present, `FLANNEL_IPV6_SUBNET`, as networks
/// (`10.5.72.1/24` → `10.5.72.0/24`). Like upstream, there is no previous lease without an
/// IPv4 subnet. Unreadable file: `None`.
pub fn read_previous_subnets(path: &Path) -> Option<LeaseKey> {
    let text = std::fs::read_to_string(path).ok()?;
    let ipv4 = parse_previous_subnet(&text)?;
    Some(LeaseKey { ipv4, ipv6: parse_previous_ipv6_subnet(&text) })
}

/// `FLANNEL_SUBNET` as a network. Lenient like upstream's dotenv reading: comments, `export`,
/// quotes and spaces are tolerated; a value with several comma-separated entries is ignored;
/// anything unreadable is `None`.
pub fn parse_previous_subnet(text: &str) -> Option<Ipv4Network> {
    let n = dotenv_value(text, "FLANNEL_SUBNET")?.parse::<Ipv4Network>().ok()?;
    Ipv4Network::new(n.network(), n.prefix()).ok()
}

/// `FLANNEL_IPV6_SUBNET` as a network, read like [`parse_previous_subnet`].
pub fn parse_previous_ipv6_subnet(text: &str) -> Option<Ipv6Network> {
    let n = dotenv_value(text, "FLANNEL_IPV6_SUBNET")?.parse::<Ipv6Network>().ok()?;
    Ipv6Network::new(n.network(), n.prefix()).ok()
}

/// The last value of `key` in dotenv text; `None` when absent or a comma list.
fn dotenv_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, value)) = line.split_once('=') else { continue };
        if k.trim() != key {
            continue;
        }
        found = Some(value.trim().trim_matches(|c| c == '"' || c == '\''));
    }
    found.filter(|v| !v.contains(','))
}

fn ensure_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)
        }
        _ => Ok(()),
    }
}

/// The exact subnet.env text for our lease (upstream `WriteSubnetFile`, §10.1): the IPv4 pair,
/// then the IPv6 pair when the config enables IPv6 and the lease has an IPv6 subnet, then
/// `mtu` and `ip_masq`.
pub fn render_subnet_env(spec: &NetworkSpec, lease: &LeaseKey, mtu: u32, ip_masq: bool) -> String {
    // FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET are the first host address with the subnet's
    // prefix.
    let first = Ipv4Addr::from(u32::from(lease.ipv4.network()).saturating_add(1));
    let v6 = spec.ipv6.as_ref().zip(lease.ipv6);
    let env = SubnetEnv {
        networks: vec![IpNetwork::V4(spec.network)],
        subnet: Ipv4Network::new(first, lease.ipv4.prefix()).ok().map(IpNetwork::V4),
        ipv6_networks: v6.map(|(s6, _)| IpNetwork::V6(s6.network)).into_iter().collect(),
        ipv6_subnet: v6.and_then(|(_, n)| {
            let first = Ipv6Addr::from(u128::from(n.network()).saturating_add(1));
            Ipv6Network::new(first, n.prefix()).ok().map(IpNetwork::V6)
        }),
        mtu,
        ipmasq: ip_masq,
    };
    env.render()
}

/// `FLANNEL_MTU`: the largest pod MTU that fits every VXLAN device of the node — the IPv4
/// device's (`underlay` − 50) and, with IPv6, the IPv6 device's (`underlay` − 70). Upstream
/// writes `underlay` − 50 even in dual stack, so IPv6 pod packets of up to 20 bytes more than
/// `flannel-v6.<VNI>` carries are dropped; pod MTU is node-local, so fitting both is a safe
/// divergence (docs/flannel.md §15).
pub fn subnet_env_mtu(underlay: u32, ipv6: bool) -> u32 {
    let overhead = if ipv6 { VXLAN_OVERHEAD_V6 } else { VXLAN_OVERHEAD };
    underlay.saturating_sub(overhead)
}

/// Writes subnet.env atomically, mode 0644, creating its directory (0755).
pub fn write_subnet_env(path: &Path, text: &str) -> io::Result<()> {
    ensure_parent(path)?;
    write_atomic(path, text.as_bytes(), 0o644)
}

/// Where the VTEP MAC is kept for a given subnet file.
pub fn mac_file_for(subnet_file: &Path) -> PathBuf {
    subnet_file.parent().unwrap_or(Path::new(".")).join(MAC_FILE_NAME)
}

/// The persisted MAC, or a new random locally administered unicast MAC (persisted).
pub fn load_or_create_mac(path: &Path) -> io::Result<Mac> {
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Some(mac) = parse_mac(text.trim()) {
            return Ok(mac);
        }
        tracing::warn!(path = %path.display(), "ignoring unreadable persisted VTEP MAC");
    }
    let mac = weft_common::mac::random_local_mac();
    save_mac(path, &mac)?;
    Ok(mac)
}

/// Persists `mac`.
pub fn save_mac(path: &Path, mac: &Mac) -> io::Result<()> {
    ensure_parent(path)?;
    write_atomic(path, format!("{}\n", format_mac(mac)).as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::parse_config;

    #[test]
    fn previous_subnet_is_lenient() {
        let n = |s: &str| Some(s.parse::<Ipv4Network>().unwrap());
        assert_eq!(parse_previous_subnet("FLANNEL_SUBNET=10.5.72.1/24\n"), n("10.5.72.0/24"));
        assert_eq!(parse_previous_subnet("# c\nexport FLANNEL_SUBNET=\"10.5.72.1/24\"\n"), n("10.5.72.0/24"));
        assert_eq!(parse_previous_subnet("FLANNEL_SUBNET=10.5.72.1/24,10.5.73.1/24\n"), None);
        assert_eq!(parse_previous_subnet("FLANNEL_SUBNET=junk\n"), None);
        assert_eq!(parse_previous_subnet(""), None);
    }

    #[test]
    fn previous_subnets_of_both_families() {
        let dual = "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_IPV6_NETWORK=fd00:5::/56\nFLANNEL_IPV6_SUBNET=fd00:5:0:48::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n";
        assert_eq!(parse_previous_ipv6_subnet(dual), Some("fd00:5:0:48::/64".parse().unwrap()));
        assert_eq!(
            parse_previous_ipv6_subnet("export FLANNEL_IPV6_SUBNET='fd00::1/64'"),
            Some("fd00::/64".parse().unwrap())
        );
        assert_eq!(parse_previous_ipv6_subnet("FLANNEL_IPV6_SUBNET=fd00::1/64,fd01::1/64"), None);
        assert_eq!(parse_previous_ipv6_subnet("FLANNEL_IPV6_SUBNET=10.5.72.1/24"), None);
        assert_eq!(parse_previous_ipv6_subnet("FLANNEL_SUBNET=10.5.72.1/24"), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subnet.env");
        std::fs::write(&path, dual).unwrap();
        assert_eq!(
            read_previous_subnets(&path),
            Some(LeaseKey::parse("10.5.72.0-24&fd00:5:0:48::-64").unwrap())
        );
        // Like upstream: no previous lease without an IPv4 subnet.
        std::fs::write(&path, "FLANNEL_IPV6_SUBNET=fd00:5:0:48::1/64\n").unwrap();
        assert_eq!(read_previous_subnets(&path), None);
        assert_eq!(read_previous_subnets(&dir.path().join("absent")), None);
    }

    #[test]
    fn dual_stack_subnet_env_is_upstreams_text_with_an_mtu_that_fits_both() {
        let spec = parse_config(
            br#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"2001:cafe:42::/56","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        let lease = LeaseKey::parse("10.5.72.0-24&2001:cafe:42::-64").unwrap();
        let mtu = subnet_env_mtu(1500, spec.ipv6.is_some());
        assert_eq!(mtu, 1430, "VXLAN over an IPv6 underlay costs 70");
        assert_eq!(subnet_env_mtu(1500, false), 1450);
        assert_eq!(subnet_env_mtu(9000, true), 8930);
        // docs/flannel.md §10.1's dual-stack example, in upstream's order.
        assert_eq!(
            render_subnet_env(&spec, &lease, mtu, true),
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n"
        );
        // The flannel CNI plugin's strict parser reads it back: one subnet per family.
        let env = SubnetEnv::parse(&render_subnet_env(&spec, &lease, mtu, true), "subnet.env").unwrap();
        assert_eq!(env.subnet_network().map(|n| n.to_string()).as_deref(), Some("10.5.72.0/24"));
        assert_eq!(env.ipv6_subnet_network().map(|n| n.to_string()).as_deref(), Some("2001:cafe:42::/64"));
        // IPv6 off: an IPv6 part of the lease is not written.
        let v4 = parse_config(br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert!(!render_subnet_env(&v4, &lease, 1450, false).contains("IPV6"));
    }

    #[test]
    fn subnet_env_exact_and_mac_persisted() {
        let spec = parse_config(br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        let text = render_subnet_env(&spec, &LeaseKey::parse("10.5.72.0-24").unwrap(), 1450, false);
        assert_eq!(text, "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/flannel/subnet.env");
        write_subnet_env(&path, &text).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let mac_path = mac_file_for(&path);
        let mac = load_or_create_mac(&mac_path).unwrap();
        assert_eq!(mac[0] & 0x03, 0x02);
        assert_eq!(load_or_create_mac(&mac_path).unwrap(), mac);
    }
}
