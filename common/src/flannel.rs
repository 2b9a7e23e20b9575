//! `subnet.env`: the one parser and renderer (flanneld writes it, the flannel plugin reads it).
//!
//! Format and strictness follow docs/flannel.md §10 and §12.2: `KEY=value` lines, no
//! quotes; `FLANNEL_SUBNET` is the node's first host address with the subnet's prefix.

use std::fmt::Write as _;
use std::path::Path;

use ipnetwork::IpNetwork;

/// The contents of `subnet.env`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetEnv {
    /// `FLANNEL_NETWORK`: the cluster network(s) (a comma list; duplicates dropped).
    pub networks: Vec<IpNetwork>,
    /// `FLANNEL_SUBNET` as written (host address + prefix, e.g. `10.244.1.1/24`).
    pub subnet: Option<IpNetwork>,
    /// `FLANNEL_IPV6_NETWORK`.
    pub ipv6_networks: Vec<IpNetwork>,
    /// `FLANNEL_IPV6_SUBNET` as written.
    pub ipv6_subnet: Option<IpNetwork>,
    /// `FLANNEL_MTU`.
    pub mtu: u32,
    /// `FLANNEL_IPMASQ` (exactly `true` means true).
    pub ipmasq: bool,
}

/// Why a `subnet.env` could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubnetEnvError {
    #[error("{path} is missing {keys}")]
    Missing { path: String, keys: String },
    #[error("{path}: {key} has an invalid value {value:?}")]
    Invalid { path: String, key: String, value: String },
}

impl SubnetEnv {
    /// Strict parse, as the flannel CNI plugin does (§12.2). `path` is used in messages.
    pub fn parse(text: &str, path: &str) -> Result<SubnetEnv, SubnetEnvError> {
        let mut env = SubnetEnv::default();
        let (mut have_mtu, mut have_masq) = (false, false);
        let invalid = |key: &str, value: &str| SubnetEnvError::Invalid {
            path: path.to_string(),
            key: key.to_string(),
            value: value.to_string(),
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else { continue };
            let cidr = |v: &str| v.parse::<IpNetwork>().map_err(|_| invalid(key, value));
            let cidr_list = |v: &str| -> Result<Vec<IpNetwork>, SubnetEnvError> {
                let mut out: Vec<IpNetwork> = Vec::new();
                for item in v.split(',') {
                    // As networks, like Go's net.ParseCIDR in upstream's plugin.
                    let n = cidr(item)?;
                    let n = IpNetwork::new(n.network(), n.prefix()).map_err(|_| invalid(key, value))?;
                    if !out.contains(&n) {
                        out.push(n);
                    }
                }
                Ok(out)
            };
            match key {
                "FLANNEL_NETWORK" => env.networks = cidr_list(value)?,
                "FLANNEL_SUBNET" => env.subnet = Some(cidr(value)?),
                "FLANNEL_IPV6_NETWORK" => env.ipv6_networks = cidr_list(value)?,
                "FLANNEL_IPV6_SUBNET" => env.ipv6_subnet = Some(cidr(value)?),
                "FLANNEL_MTU" => {
                    env.mtu = value.parse().map_err(|_| invalid(key, value))?;
                    have_mtu = true;
                }
                "FLANNEL_IPMASQ" => {
                    env.ipmasq = value == "true";
                    have_masq = true;
                }
                _ => {}
            }
        }
        let mut missing = Vec::new();
        if env.networks.is_empty() && env.ipv6_networks.is_empty() {
            missing.push("FLANNEL_NETWORK");
        }
        if env.subnet.is_none() && env.ipv6_subnet.is_none() {
            missing.push("FLANNEL_SUBNET");
        }
        if !have_mtu {
            missing.push("FLANNEL_MTU");
        }
        if !have_masq {
            missing.push("FLANNEL_IPMASQ");
        }
        if !missing.is_empty() {
            return Err(SubnetEnvError::Missing { path: path.to_string(), keys: missing.join(", ") });
        }
        Ok(env)
    }

    /// Reads and strictly parses the file at `path`.
    pub fn read(path: &Path) -> Result<SubnetEnv, std::io::Error> {
        let text = std::fs::read_to_string(path)?;
        SubnetEnv::parse(&text, &path.display().to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// The exact text flanneld writes (§10.1).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let join = |v: &[IpNetwork]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
        if let Some(subnet) = self.subnet {
            let _ = writeln!(out, "FLANNEL_NETWORK={}", join(&self.networks));
            let _ = writeln!(out, "FLANNEL_SUBNET={subnet}");
        }
        if let Some(subnet) = self.ipv6_subnet {
            let _ = writeln!(out, "FLANNEL_IPV6_NETWORK={}", join(&self.ipv6_networks));
            let _ = writeln!(out, "FLANNEL_IPV6_SUBNET={subnet}");
        }
        let _ = writeln!(out, "FLANNEL_MTU={}", self.mtu);
        let _ = writeln!(out, "FLANNEL_IPMASQ={}", self.ipmasq);
        out
    }

    /// `FLANNEL_SUBNET` reduced to its network (`10.244.1.1/24` → `10.244.1.0/24`).
    pub fn subnet_network(&self) -> Option<IpNetwork> {
        self.subnet.and_then(|s| IpNetwork::new(s.network(), s.prefix()).ok())
    }

    /// `FLANNEL_IPV6_SUBNET` reduced to its network.
    pub fn ipv6_subnet_network(&self) -> Option<IpNetwork> {
        self.ipv6_subnet.and_then(|s| IpNetwork::new(s.network(), s.prefix()).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str =
        "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";

    #[test]
    fn round_trips_upstream_text() {
        let env = SubnetEnv::parse(UPSTREAM, "subnet.env").unwrap();
        assert_eq!(env.mtu, 1450);
        assert!(!env.ipmasq);
        assert_eq!(env.subnet_network().unwrap().to_string(), "10.5.72.0/24");
        assert_eq!(env.render(), UPSTREAM);
    }

    #[test]
    fn dual_stack_order() {
        let text = "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";
        let env = SubnetEnv::parse(text, "x").unwrap();
        assert_eq!(env.ipv6_subnet_network().unwrap().to_string(), "2001:cafe:42::/64");
        assert_eq!(env.render(), text);
    }

    #[test]
    fn strict_about_quotes_and_missing_keys() {
        assert!(matches!(
            SubnetEnv::parse("FLANNEL_MTU=\"1450\"", "f").unwrap_err(),
            SubnetEnvError::Invalid { .. }
        ));
        let e = SubnetEnv::parse("FLANNEL_NETWORK=10.5.0.0/16\n", "/run/flannel/subnet.env").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/run/flannel/subnet.env is missing FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ"
        );
        // A known key without '=' must not crash (upstream does).
        assert!(SubnetEnv::parse("FLANNEL_MTU\n", "f").is_err());
    }
}
