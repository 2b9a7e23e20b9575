//! The network configuration at `<prefix>/config` (docs/flannel.md §3): decoding with Go's
//! rules (field names case-insensitive, unknown fields ignored, wrong types are errors), derived
//! defaults, and validation into a [`NetworkSpec`]. Errors name the field.
//!
//! This module never writes the config: it is operator-owned and shared by all nodes.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde_json::{Map, Value};

use crate::lease::field;
use crate::network_v6::{parse_ipv6, Ipv6Spec};

/// The validated VXLAN backend options (§3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanBackend {
    pub vni: u32,
    /// 0: kernel default (8472).
    pub port: u16,
    /// Underlay MTU from the config; `None`: the external interface's MTU.
    pub mtu: Option<u32>,
    pub gbp: bool,
    pub learning: bool,
    pub direct_routing: bool,
}

/// The backend a node runs (`Backend.Type`, compared lower-cased as upstream does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// VXLAN overlay (docs/flannel.md §8): the `flannel.<VNI>` device, one route, neighbour and
    /// FDB entry per peer.
    Vxlan,
    /// Plain routes `<peer subnet> via <peer PublicIP>` on the external interface; every node
    /// must share one L2 segment (upstream `pkg/backend/hostgw`, `pkg/backend/route_network.go`).
    HostGw,
}

impl BackendKind {
    /// The `BackendType` leases of this backend carry (and the only one it programs peers for).
    pub fn lease_type(self) -> &'static str {
        match self {
            BackendKind::Vxlan => crate::lease::BACKEND_VXLAN,
            BackendKind::HostGw => crate::lease::BACKEND_HOST_GW,
        }
    }
}

/// A validated network configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    pub network: Ipv4Network,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
    /// `EnableIPv6` with its validated fields; `None` when IPv6 is off.
    pub ipv6: Option<Ipv6Spec>,
    pub enable_nftables: bool,
    /// Which backend `Backend.Type` selects.
    pub backend_type: BackendKind,
    /// The VXLAN options; with host-gw (which has no options upstream) their defaults, unused.
    pub backend: VxlanBackend,
}

/// Why `<prefix>/config` is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("network config not found (did you create your config using etcdv3 API?)")]
    NotFound,
    #[error("network config is not a JSON object: {0}")]
    NotJson(String),
    #[error("network config field {field}: {why}")]
    Field { field: &'static str, why: String },
    #[error("network config: {0}")]
    Unsupported(String),
}

pub(crate) fn err(field: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Field { field, why: why.into() }
}

fn get_bool(obj: &Map<String, Value>, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(err(name, "must be a boolean")),
    }
}

pub(crate) fn get_uint(obj: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, ConfigError> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| err(name, "must be a non-negative integer")),
    }
}

pub(crate) fn get_str<'a>(
    obj: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, ConfigError> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(name, "must be a string")),
    }
}

fn get_ipv4(obj: &Map<String, Value>, name: &'static str) -> Result<Option<Ipv4Addr>, ConfigError> {
    get_str(obj, name)?
        .map(|s| s.parse::<Ipv4Addr>().map_err(|_| err(name, format!("{s:?} is not an IPv4 address"))))
        .transpose()
}

/// Decodes and validates the config bytes.
pub fn parse_config(bytes: &[u8]) -> Result<NetworkSpec, ConfigError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| ConfigError::NotJson(e.to_string()))?;
    let obj = v.as_object().ok_or_else(|| ConfigError::NotJson("not an object".into()))?;

    let enable_v4 = get_bool(obj, "EnableIPv4", true)?;
    let enable_v6 = get_bool(obj, "EnableIPv6", false)?;
    if !enable_v4 && !enable_v6 {
        return Err(err("EnableIPv4", "EnableIPv4 and EnableIPv6 are both false"));
    }
    let ipv6 = if enable_v6 { Some(parse_ipv6(obj)?) } else { None };
    if !enable_v4 {
        // Upstream would write `0.0.0.0-0&<v6>-<len>` keys whose IPv4 part overlaps every other
        // lease (docs/flannel.md §4.1): refused, after the IPv6 fields were checked.
        return Err(ConfigError::Unsupported(
            "IPv6-only networks (EnableIPv4: false) are not supported in etcd mode".into(),
        ));
    }

    let network = match get_str(obj, "Network")? {
        None => return Err(err("Network", "missing (required when EnableIPv4 is true)")),
        Some(s) => {
            let n: Ipv4Network =
                s.parse().map_err(|_| err("Network", format!("{s:?} is not an IPv4 CIDR")))?;
            // Normalised to the network address, like upstream ("10.5.1.7/16" → 10.5.0.0/16).
            Ipv4Network::new(n.network(), n.prefix()).map_err(|e| err("Network", e.to_string()))?
        }
    };
    let subnet_len = derive_subnet_len(network.prefix(), get_uint(obj, "SubnetLen")?)?;
    let size = 1u64 << (32 - u32::from(subnet_len));
    let net_start = u64::from(u32::from(network.network()));
    let net_end = net_start + (1u64 << (32 - u32::from(network.prefix()))) - 1;
    let in_network = |ip: Ipv4Addr| {
        let x = u64::from(u32::from(ip));
        x >= net_start && x <= net_end
    };
    let aligned = |ip: Ipv4Addr| u64::from(u32::from(ip)) % size == 0;
    let to_ip = |x: u64| Ipv4Addr::from(u32::try_from(x).unwrap_or(u32::MAX));

    // The first subnet is never handed out by default (it holds the network address).
    let subnet_min = match get_ipv4(obj, "SubnetMin")?.filter(|ip| !ip.is_unspecified()) {
        None => to_ip(net_start + size),
        Some(ip) if !in_network(ip) => return Err(err("SubnetMin", format!("{ip} is not within {network}"))),
        Some(ip) => ip,
    };
    let subnet_max = match get_ipv4(obj, "SubnetMax")?.filter(|ip| !ip.is_unspecified()) {
        None => to_ip(net_end + 1 - size),
        Some(ip) if !in_network(ip) => return Err(err("SubnetMax", format!("{ip} is not within {network}"))),
        Some(ip) => ip,
    };
    if !aligned(subnet_min) {
        return Err(err("SubnetMin", format!("{subnet_min} is not on a /{subnet_len} boundary")));
    }
    if !aligned(subnet_max) {
        return Err(err("SubnetMax", format!("{subnet_max} is not on a /{subnet_len} boundary")));
    }
    // No Min <= Max check: upstream has none; an inverted range just runs out of subnets.

    let enable_nftables = get_bool(obj, "EnableNFTables", false)?;
    let (backend_type, backend) = parse_backend(obj)?;
    Ok(NetworkSpec {
        network,
        subnet_len,
        subnet_min,
        subnet_max,
        ipv6,
        enable_nftables,
        backend_type,
        backend,
    })
}

fn derive_subnet_len(prefix: u8, given: Option<u64>) -> Result<u8, ConfigError> {
    match given.filter(|l| *l != 0) {
        None if prefix > 28 => Err(err("Network", format!("/{prefix} is too small, the minimum is /28"))),
        // Large networks get /24 per node; small ones are split in four.
        None if prefix <= 22 => Ok(24),
        None => Ok(prefix + 2),
        Some(l) if l > 30 => Err(err("SubnetLen", format!("{l} is larger than 30"))),
        Some(l) if l < u64::from(prefix) + 2 => {
            Err(err("SubnetLen", format!("{l} leaves fewer than four subnets in a /{prefix}")))
        }
        Some(l) => u8::try_from(l).map_err(|_| err("SubnetLen", "out of range")),
    }
}

fn parse_backend(obj: &Map<String, Value>) -> Result<(BackendKind, VxlanBackend), ConfigError> {
    let b = match field(obj, "Backend") {
        // Upstream picks udp when Backend is absent (the docs claiming vxlan are wrong, §3.2).
        None | Some(Value::Null) => {
            return Err(ConfigError::Unsupported(
                "no Backend given: upstream defaults to udp, weft implements vxlan and host-gw".into(),
            ))
        }
        Some(Value::Object(b)) => b,
        Some(_) => return Err(err("Backend", "must be an object")),
    };
    let kind = get_str(b, "Type").map_err(|_| err("Backend.Type", "must be a string"))?;
    match kind.map(str::to_ascii_lowercase).as_deref() {
        Some("vxlan") => {}
        // host-gw takes no options on Linux (upstream reads none; the Windows-only ones are
        // ignored like any unknown field).
        Some("host-gw") => return Ok((BackendKind::HostGw, VxlanBackend::default())),
        None | Some("") => return Err(err("Backend.Type", "unknown backend type \"\"")),
        Some(other) => {
            return Err(ConfigError::Unsupported(format!(
                "backend type {other:?}: weft implements vxlan and host-gw"
            )))
        }
    }
    let rename = |e: ConfigError, to: &'static str| match e {
        ConfigError::Field { why, .. } => err(to, why),
        other => other,
    };
    let vni = get_uint(b, "VNI").map_err(|e| rename(e, "Backend.VNI"))?.unwrap_or(1);
    let vni = u32::try_from(vni)
        .ok()
        .filter(|v| *v < (1 << 24))
        .ok_or_else(|| err("Backend.VNI", format!("{vni} does not fit in 24 bits")))?;
    let port = get_uint(b, "Port").map_err(|e| rename(e, "Backend.Port"))?.unwrap_or(0);
    let port = u16::try_from(port).map_err(|_| err("Backend.Port", format!("{port} is not a UDP port")))?;
    let mtu = match get_uint(b, "MTU").map_err(|e| rename(e, "Backend.MTU"))? {
        None | Some(0) => None,
        Some(m) => Some(
            u32::try_from(m)
                .ok()
                .filter(|m| *m > 50 + 68)
                .ok_or_else(|| err("Backend.MTU", format!("{m} leaves no room for VXLAN")))?,
        ),
    };
    let vxlan = VxlanBackend {
        vni,
        port,
        mtu,
        gbp: get_bool(b, "GBP", false).map_err(|e| rename(e, "Backend.GBP"))?,
        learning: get_bool(b, "Learning", false).map_err(|e| rename(e, "Backend.Learning"))?,
        direct_routing: get_bool(b, "DirectRouting", false)
            .map_err(|e| rename(e, "Backend.DirectRouting"))?,
    };
    Ok((BackendKind::Vxlan, vxlan))
}

impl Default for VxlanBackend {
    /// Upstream's defaults (§3.4): VNI 1, kernel port, the interface's MTU, all flags off.
    fn default() -> Self {
        VxlanBackend { vni: 1, port: 0, mtu: None, gbp: false, learning: false, direct_routing: false }
    }
}

impl NetworkSpec {
    /// Number of addresses in one node subnet.
    pub fn subnet_size(&self) -> u64 {
        1u64 << (32 - u32::from(self.subnet_len))
    }

    /// A lease subnet fits this config: network address in `[SubnetMin, SubnetMax]` and the
    /// configured length (§5.2 "compatible").
    pub fn fits(&self, subnet: &Ipv4Network) -> bool {
        subnet.prefix() == self.subnet_len && subnet.ip() >= self.subnet_min && subnet.ip() <= self.subnet_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(json: &str) -> NetworkSpec {
        parse_config(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn defaults_table() {
        // (network, subnet len, min, max)
        for (net, len, min, max) in [
            ("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0"),
            ("10.5.0.0/22", 24, "10.5.1.0", "10.5.3.0"),
            ("10.5.0.0/23", 25, "10.5.0.128", "10.5.1.128"),
            ("10.5.0.0/28", 30, "10.5.0.4", "10.5.0.12"),
            ("10.5.1.7/16", 24, "10.5.1.0", "10.5.255.0"),
        ] {
            let s = ok(&format!(r#"{{"Network":"{net}","Backend":{{"Type":"vxlan"}}}}"#));
            assert_eq!(
                (s.subnet_len, s.subnet_min.to_string(), s.subnet_max.to_string()),
                (len, min.into(), max.into()),
                "{net}"
            );
        }
        let s = ok(
            r#"{"network":"10.5.0.0/16","backend":{"type":"VXLAN","vni":4,"port":4789,"mtu":9000,"gbp":true,"directrouting":true}}"#,
        );
        assert_eq!(s.network.to_string(), "10.5.0.0/16");
        assert_eq!(
            s.backend,
            VxlanBackend {
                vni: 4,
                port: 4789,
                mtu: Some(9000),
                gbp: true,
                learning: false,
                direct_routing: true
            }
        );
    }

    #[test]
    fn validation_names_the_field() {
        for (json, field) in [
            (r#"{"Network":"10.5.0.0/29","Backend":{"Type":"vxlan"}}"#, "Network"),
            (r#"{"Backend":{"Type":"vxlan"}}"#, "Network"),
            (r#"{"Network":"10.5.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan"}}"#, "SubnetLen"),
            (r#"{"Network":"10.5.0.0/16","SubnetLen":17,"Backend":{"Type":"vxlan"}}"#, "SubnetLen"),
            (r#"{"Network":"10.5.0.0/16","SubnetLen":"24","Backend":{"Type":"vxlan"}}"#, "SubnetLen"),
            (r#"{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0","Backend":{"Type":"vxlan"}}"#, "SubnetMin"),
            (r#"{"Network":"10.5.0.0/16","SubnetMax":"10.5.3.7","Backend":{"Type":"vxlan"}}"#, "SubnetMax"),
            (r#"{"Network":"10.5.0.0/16","Backend":{}}"#, "Backend.Type"),
            (r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":-1}}"#, "Backend.VNI"),
            (r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","Port":70000}}"#, "Backend.Port"),
            (r#"{"Network":"nope","Backend":{"Type":"vxlan"}}"#, "Network"),
            (r#"{"EnableIPv4":false,"EnableIPv6":false}"#, "EnableIPv4"),
        ] {
            match parse_config(json.as_bytes()) {
                Err(ConfigError::Field { field: f, .. }) => assert_eq!(f, field, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
        assert!(matches!(parse_config(br#"{"Network":"10.5.0.0/16"}"#), Err(ConfigError::Unsupported(_))));
        assert!(matches!(parse_config(b"[1]"), Err(ConfigError::NotJson(_))));
        // Inverted range is accepted (it just runs out of subnets).
        ok(
            r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.2.0","Backend":{"Type":"vxlan"}}"#,
        );
    }
}
