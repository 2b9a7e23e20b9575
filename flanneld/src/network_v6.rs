//! The IPv6 half of the network config (docs/flannel.md §3.2, §3.3): `IPv6Network`,
//! `IPv6SubnetLen`, `IPv6SubnetMin`, `IPv6SubnetMax`, read only when `EnableIPv6` is true.
//! Defaults are derived apart from the checks; the checks' texts are upstream's
//! (`pkg/subnet/config.go` `CheckNetworkConfig`), each under the field it concerns.
//!
//! Addresses are handled as `u128` so that `/0` networks and the last subnet of `ffff::/16`
//! compute without overflow.

use std::net::Ipv6Addr;

use ipnetwork::Ipv6Network;
use serde_json::{Map, Value};

use crate::network::{err, get_str, get_uint, ConfigError};

/// A validated IPv6 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Spec {
    /// `IPv6Network`, normalised to its network address.
    pub network: Ipv6Network,
    /// `IPv6SubnetLen` (derived when unset).
    pub subnet_len: u8,
    /// First subnet handed out (default: the second subnet of the network).
    pub subnet_min: Ipv6Addr,
    /// Last subnet handed out (default: the last subnet of the network).
    pub subnet_max: Ipv6Addr,
}

impl Ipv6Spec {
    /// Number of addresses in one node subnet.
    pub fn subnet_size(&self) -> u128 {
        1u128 << (128 - u32::from(self.subnet_len))
    }

    /// An IPv6 lease subnet fits this config: network address in
    /// `[IPv6SubnetMin, IPv6SubnetMax]` and the configured length (upstream
    /// `isIPv6SubnetConfigCompat`).
    pub fn fits(&self, subnet: &Ipv6Network) -> bool {
        subnet.prefix() == self.subnet_len && subnet.ip() >= self.subnet_min && subnet.ip() <= self.subnet_max
    }
}

/// Upstream's default IPv6 subnet length for networks of /62 or larger.
pub const DEFAULT_IPV6_SUBNET_LEN: u8 = 64;

/// Reads and validates the IPv6 fields (call only when `EnableIPv6` is true).
pub fn parse_ipv6(obj: &Map<String, Value>) -> Result<Ipv6Spec, ConfigError> {
    let missing = "please define a correct IPv6Network parameter in the flannel config";
    let network = match get_str(obj, "IPv6Network")? {
        None => return Err(err("IPv6Network", missing)),
        Some(s) => {
            let n: Ipv6Network =
                s.parse().map_err(|_| err("IPv6Network", format!("{s:?} is not an IPv6 CIDR")))?;
            // Normalised to the network address, like upstream (net.ParseCIDR).
            Ipv6Network::new(n.network(), n.prefix()).map_err(|e| err("IPv6Network", e.to_string()))?
        }
    };
    // Upstream's `Empty()`: address :: with prefix 0 counts as not set.
    if network.prefix() == 0 && network.ip().is_unspecified() {
        return Err(err("IPv6Network", missing));
    }
    let subnet_len = derive_subnet_len(network.prefix(), get_uint(obj, "IPv6SubnetLen")?)?;
    let size = 1u128 << (128 - u32::from(subnet_len));
    let host_mask = u128::MAX.checked_shr(u32::from(network.prefix())).unwrap_or(0);
    let net_start = u128::from(network.network());
    let net_end = net_start | host_mask;

    // The first subnet is never handed out by default: it holds the network address.
    let subnet_min = match get_ipv6(obj, "IPv6SubnetMin")?.filter(|ip| !ip.is_unspecified()) {
        None => Ipv6Addr::from(net_start + size),
        Some(ip) if !network.contains(ip) => {
            return Err(err("IPv6SubnetMin", "IPv6SubnetMin is not in the range of the IPv6Network"))
        }
        Some(ip) => ip,
    };
    let subnet_max = match get_ipv6(obj, "IPv6SubnetMax")?.filter(|ip| !ip.is_unspecified()) {
        None => Ipv6Addr::from(net_end - (size - 1)),
        Some(ip) if !network.contains(ip) => {
            return Err(err("IPv6SubnetMax", "IPv6SubnetMax is not in the range of the IPv6Network"))
        }
        Some(ip) => ip,
    };
    let aligned = |ip: Ipv6Addr| u128::from(ip) & (size - 1) == 0;
    if !aligned(subnet_min) {
        return Err(err(
            "IPv6SubnetMin",
            format!("IPv6SubnetMin is not on a SubnetLen boundary: {subnet_min}"),
        ));
    }
    if !aligned(subnet_max) {
        return Err(err(
            "IPv6SubnetMax",
            format!("IPv6SubnetMax is not on a SubnetLen boundary: {subnet_max}"),
        ));
    }
    // No Min <= Max check, as for IPv4: an inverted range just runs out of subnets.
    Ok(Ipv6Spec { network, subnet_len, subnet_min, subnet_max })
}

fn derive_subnet_len(prefix: u8, given: Option<u64>) -> Result<u8, ConfigError> {
    match given.filter(|l| *l != 0) {
        // Each subnet needs at least four addresses (/126) and the network at least four
        // subnets, the first of which is never used.
        None if prefix > 124 => {
            Err(err("IPv6Network", "IPv6Network is too small. Minimum useful network prefix is /124"))
        }
        // Large networks get a /64 per node; small ones are split in four.
        None if prefix <= 62 => Ok(DEFAULT_IPV6_SUBNET_LEN),
        None => Ok(prefix + 2),
        Some(l) if l > 126 => Err(err("IPv6SubnetLen", "SubnetLen must be less than /127")),
        Some(l) if l < u64::from(prefix) + 2 => {
            Err(err("IPv6SubnetLen", "network must be able to accommodate at least four subnets"))
        }
        Some(l) => u8::try_from(l).map_err(|_| err("IPv6SubnetLen", "SubnetLen must be less than /127")),
    }
}

fn get_ipv6(obj: &Map<String, Value>, name: &'static str) -> Result<Option<Ipv6Addr>, ConfigError> {
    get_str(obj, name)?
        .map(|s| s.parse::<Ipv6Addr>().map_err(|_| err(name, format!("{s:?} is not an IPv6 address"))))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::parse_config;

    fn v6(extra: &str) -> Result<Ipv6Spec, ConfigError> {
        let json =
            format!(r#"{{"Network":"10.5.0.0/16","EnableIPv6":true{extra},"Backend":{{"Type":"vxlan"}}}}"#);
        parse_config(json.as_bytes()).map(|s| s.ipv6.unwrap_or_else(|| panic!("{json}: no ipv6")))
    }

    #[test]
    fn defaults_mirror_upstream() {
        // (network, len, min, max)
        for (net, len, min, max) in [
            ("fd00:42::/56", 64, "fd00:42:0:1::", "fd00:42:0:ff::"),
            ("2001:cafe:42::/62", 64, "2001:cafe:42:1::", "2001:cafe:42:3::"),
            ("fd00::/63", 65, "fd00::8000:0:0:0", "fd00:0:0:1:8000::"),
            ("fd00::1:0/120", 122, "fd00::1:40", "fd00::1:c0"),
            ("fd00::/124", 126, "fd00::4", "fd00::c"),
            // Normalised to the network address.
            ("fd00:42::7/56", 64, "fd00:42:0:1::", "fd00:42:0:ff::"),
            // The very top of the address space and a /1 compute without overflow.
            ("ffff::/16", 64, "ffff:0:0:1::", "ffff:ffff:ffff:ffff::"),
            ("8000::/1", 64, "8000:0:0:1::", "ffff:ffff:ffff:ffff::"),
        ] {
            let s = v6(&format!(r#","IPv6Network":"{net}""#)).unwrap_or_else(|e| panic!("{net}: {e}"));
            assert_eq!(
                (s.subnet_len, s.subnet_min.to_string(), s.subnet_max.to_string()),
                (len, min.into(), max.into()),
                "{net}"
            );
        }
        let s = v6(r#","IPv6Network":"fd00::/48","IPv6SubnetLen":56,"IPv6SubnetMin":"fd00:0:0:200::","IPv6SubnetMax":"::""#)
            .unwrap();
        assert_eq!(s.subnet_len, 56);
        assert_eq!(s.subnet_min.to_string(), "fd00:0:0:200::");
        assert_eq!(s.subnet_max.to_string(), "fd00:0:0:ff00::", ":: means unset");
        assert!(s.fits(&"fd00:0:0:ff00::/56".parse().unwrap()));
        assert!(!s.fits(&"fd00:0:0:100::/56".parse().unwrap()), "below IPv6SubnetMin");
        assert!(!s.fits(&"fd00:0:0:200::/64".parse().unwrap()), "wrong length");
        // Field names are case-insensitive, like every config field.
        let s = parse_config(br#"{"network":"10.5.0.0/16","enableipv6":true,"ipv6network":"fd00::/48","backend":{"type":"vxlan"}}"#)
            .unwrap();
        assert_eq!(s.ipv6.map(|v| v.subnet_len), Some(64));
    }

    #[test]
    fn ipv6_fields_are_ignored_unless_enabled() {
        let s = parse_config(br#"{"Network":"10.5.0.0/16","IPv6Network":"junk","Backend":{"Type":"vxlan"}}"#)
            .unwrap();
        assert_eq!(s.ipv6, None);
    }

    #[test]
    fn validation_uses_upstream_texts_under_the_field() {
        for (extra, field, text) in [
            ("", "IPv6Network", "please define a correct IPv6Network parameter in the flannel config"),
            (r#","IPv6Network":"::/0""#, "IPv6Network", "please define a correct IPv6Network parameter"),
            (r#","IPv6Network":"10.5.0.0/16""#, "IPv6Network", "is not an IPv6 CIDR"),
            (
                r#","IPv6Network":"fd00::/125""#,
                "IPv6Network",
                "IPv6Network is too small. Minimum useful network prefix is /124",
            ),
            (
                r#","IPv6Network":"fd00::/48","IPv6SubnetLen":127"#,
                "IPv6SubnetLen",
                "SubnetLen must be less than /127",
            ),
            (
                r#","IPv6Network":"fd00::/48","IPv6SubnetLen":49"#,
                "IPv6SubnetLen",
                "network must be able to accommodate at least four subnets",
            ),
            (
                r#","IPv6Network":"fd00::/48","IPv6SubnetLen":"64""#,
                "IPv6SubnetLen",
                "must be a non-negative integer",
            ),
            (
                r#","IPv6Network":"fd00::/48","IPv6SubnetMin":"fd01::""#,
                "IPv6SubnetMin",
                "IPv6SubnetMin is not in the range of the IPv6Network",
            ),
            (
                r#","IPv6Network":"fd00::/48","IPv6SubnetMax":"fd01::""#,
                "IPv6SubnetMax",
                "IPv6SubnetMax is not in the range of the IPv6Network",
            ),
            (
                r#","IPv6Network":"fd00::/48","IPv6SubnetMin":"fd00:0:0:1::1""#,
                "IPv6SubnetMin",
                "IPv6SubnetMin is not on a SubnetLen boundary: fd00:0:0:1::1",
            ),
            (
                r#","IPv6Network":"fd00::/48","IPv6SubnetMax":"fd00:0:0:1:8000::""#,
                "IPv6SubnetMax",
                "IPv6SubnetMax is not on a SubnetLen boundary: fd00:0:0:1:8000::",
            ),
            (
                r#","IPv6Network":"fd00::/48","IPv6SubnetMin":"10.0.0.1""#,
                "IPv6SubnetMin",
                "is not an IPv6 address",
            ),
        ] {
            match v6(extra) {
                Err(ConfigError::Field { field: f, why }) => {
                    assert_eq!(f, field, "{extra}");
                    assert!(why.contains(text), "{extra}: {why}");
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
        // An inverted range is accepted (it just runs out of subnets), as for IPv4.
        let s =
            v6(r#","IPv6Network":"fd00::/48","IPv6SubnetMin":"fd00:0:0:9::","IPv6SubnetMax":"fd00:0:0:2::""#)
                .unwrap();
        assert!(s.subnet_min > s.subnet_max);
    }

    #[test]
    fn ipv6_only_is_refused_after_its_fields_are_checked() {
        let only =
            br#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"vxlan"}}"#;
        assert!(
            matches!(parse_config(only), Err(ConfigError::Unsupported(m)) if m.contains("EnableIPv4: false"))
        );
        let bad = br#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/125","Backend":{"Type":"vxlan"}}"#;
        assert!(matches!(parse_config(bad), Err(ConfigError::Field { field: "IPv6Network", .. })));
    }

    #[test]
    fn dual_stack_is_accepted_with_both_backends() {
        for backend in ["vxlan", "host-gw"] {
            let json = format!(
                r#"{{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{{"Type":"{backend}"}}}}"#
            );
            let spec = parse_config(json.as_bytes()).unwrap_or_else(|e| panic!("{backend}: {e}"));
            assert_eq!(spec.ipv6.map(|v| v.network.to_string()), Some("fd00::/48".into()), "{backend}");
        }
    }
}
