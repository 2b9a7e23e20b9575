//! host-local's configuration: the wire types read from stdin and [`validate`] into a [`Spec`].
//!
//! Accepts what the reference accepts (docs/cni.md §8.1–§8.3): case-insensitive keys,
//! unknown keys ignored, the legacy top-level range, `runtimeConfig.ipRanges` prepended. Every
//! rejection is code 7 naming the field path (`ipam.ranges[0][0].subnet`) with the reference's
//! message text in `details`, except a bad `CNI_ARGS` `IP=` (code 4). Nothing here does I/O.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;
use weft_common::cni::args::CniArgs;
use weft_common::cni::conf::{decode, fold_keys, COMMON_KEYS};
use weft_common::cni::{CniError, ErrorCode, Route, Version};

use crate::range::{Range, RangeSet};

/// Where host-local keeps its state unless `ipam.dataDir` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// Keys matched case-insensitively, like Go's decoder does (in addition to [`COMMON_KEYS`]).
const VOCABULARY: &[&str] = &[
    "ranges",
    "subnet",
    "rangeStart",
    "rangeEnd",
    "gateway",
    "routes",
    "dst",
    "gw",
    "mtu",
    "advmss",
    "priority",
    "table",
    "scope",
    "dataDir",
    "resolvConf",
    "ipRanges",
    "ips",
    "cni",
];

/// The request as host-local reads it (only the keys it uses).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub ipam: Option<IpamConf>,
    #[serde(default)]
    pub runtime_config: Option<RuntimeConfig>,
    #[serde(default)]
    pub args: Option<ConfArgs>,
}

/// The `ipam` object.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    #[serde(default)]
    pub ranges: Option<Vec<Option<Vec<RangeConf>>>>,
    /// Legacy single range (used only when `subnet` is given).
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub range_start: Option<String>,
    #[serde(default)]
    pub range_end: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub routes: Option<Vec<Route>>,
    #[serde(default)]
    pub data_dir: Option<String>,
    #[serde(default)]
    pub resolv_conf: Option<String>,
}

/// One range as written; every field is text so its errors can name the path.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeConf {
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub range_start: Option<String>,
    #[serde(default)]
    pub range_end: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
}

/// `runtimeConfig` (capability arguments).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub ips: Option<Vec<String>>,
    #[serde(default)]
    pub ip_ranges: Option<Vec<Option<Vec<RangeConf>>>>,
}

/// `args` in the config; host-local reads `args.cni.ips`.
#[derive(Debug, Default, Deserialize)]
pub struct ConfArgs {
    #[serde(default)]
    pub cni: Option<CniConfArgs>,
}

/// `args.cni`.
#[derive(Debug, Default, Deserialize)]
pub struct CniConfArgs {
    #[serde(default)]
    pub ips: Option<Vec<String>>,
}

/// Validated host-local configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// State root (`<data_dir>/<network>/` holds the reservations).
    pub data_dir: PathBuf,
    /// Range sets in allocation order; the position is the `N` of `last_reserved_ip.N`.
    pub range_sets: Vec<RangeSet>,
    /// Requested addresses, deduplicated, in source order (`CNI_ARGS`, `args`, `runtimeConfig`).
    pub requested: Vec<IpAddr>,
    /// Copied verbatim into the result.
    pub routes: Vec<Route>,
    /// `resolv.conf`-style file read into the result's `dns`.
    pub resolv_conf: Option<PathBuf>,
}

/// Where a range set came from, to name it in errors.
#[derive(Debug, Clone, Copy)]
enum Origin {
    RuntimeConfig(usize),
    Legacy,
    Ranges(usize),
}

impl Origin {
    fn set_path(self) -> String {
        match self {
            Origin::RuntimeConfig(i) => format!("runtimeConfig.ipRanges[{i}]"),
            Origin::Legacy => "ipam".to_string(),
            Origin::Ranges(i) => format!("ipam.ranges[{i}]"),
        }
    }

    fn range_path(self, j: usize) -> String {
        match self {
            Origin::Legacy => "ipam".to_string(),
            other => format!("{}[{j}]", other.set_path()),
        }
    }
}

/// Parses and validates the request. `conf` is the stdin object (common keys already folded),
/// `version` the request's `cniVersion`, `cni_args` the raw `CNI_ARGS`.
pub fn parse(conf: &Value, version: &str, cni_args: &str) -> Result<Spec, CniError> {
    let mut conf = conf.clone();
    fold_keys(&mut conf, &[COMMON_KEYS, VOCABULARY]);
    let wire: NetConf = decode(&conf, "")?;
    validate(wire, version, cni_args)
}

/// Turns the wire config into a [`Spec`] (reference `LoadIPAMConfig` order of checks).
pub fn validate(wire: NetConf, version: &str, cni_args: &str) -> Result<Spec, CniError> {
    let Some(ipam) = wire.ipam else {
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            "IPAM config missing 'ipam' key",
            "the configuration has no \"ipam\" object",
        ));
    };
    let requested = requested_ips(&wire.runtime_config, &wire.args, cni_args)?;

    // Final order: runtimeConfig.ipRanges, the legacy range, then ipam.ranges (§8.1).
    let mut raw: Vec<(Origin, Option<Vec<RangeConf>>)> = Vec::new();
    if let Some(sets) = wire.runtime_config.and_then(|r| r.ip_ranges) {
        raw.extend(sets.into_iter().enumerate().map(|(i, s)| (Origin::RuntimeConfig(i), s)));
    }
    let IpamConf { ranges, subnet, range_start, range_end, gateway, routes, data_dir, resolv_conf } = ipam;
    if subnet.is_some() {
        raw.push((Origin::Legacy, Some(vec![RangeConf { subnet, range_start, range_end, gateway }])));
    }
    if let Some(sets) = ranges {
        raw.extend(sets.into_iter().enumerate().map(|(i, s)| (Origin::Ranges(i), s)));
    }
    if raw.is_empty() {
        return Err(CniError::invalid_config("ipam.ranges", "no IP ranges specified"));
    }

    let mut range_sets: Vec<RangeSet> = Vec::with_capacity(raw.len());
    let mut origins = Vec::with_capacity(raw.len());
    for (n, (origin, set)) in raw.into_iter().enumerate() {
        let set = validate_set(n, origin, set.unwrap_or_default())?;
        if let Some(i) = range_sets.iter().position(|earlier| earlier.overlaps(&set)) {
            return Err(CniError::invalid_config(
                &origin.set_path(),
                format!("range set {i} overlaps with {n}"),
            ));
        }
        range_sets.push(set);
        origins.push(origin);
    }

    let v4 = range_sets.iter().filter(|s| s.is_ipv4()).count();
    let v6 = range_sets.len() - v4;
    if (v4 > 1 || v6 > 1) && Version::parse(version).is_some_and(|v| v < Version::V0_3_0) {
        return Err(CniError::invalid_config(
            "cniVersion",
            format!("CNI version {version} does not support more than 1 address per family"),
        ));
    }

    let data_dir = data_dir.filter(|d| !d.is_empty()).unwrap_or_else(|| DEFAULT_DATA_DIR.to_string());
    Ok(Spec {
        data_dir: PathBuf::from(data_dir),
        range_sets,
        requested,
        routes: routes.unwrap_or_default(),
        resolv_conf: resolv_conf.filter(|p| !p.is_empty()).map(PathBuf::from),
    })
}

fn validate_set(n: usize, origin: Origin, set: Vec<RangeConf>) -> Result<RangeSet, CniError> {
    if set.is_empty() {
        return Err(CniError::invalid_config(
            &origin.set_path(),
            format!("invalid range set {n}: empty range set"),
        ));
    }
    let mut ranges: Vec<Range> = Vec::with_capacity(set.len());
    for (j, conf) in set.into_iter().enumerate() {
        let path = origin.range_path(j);
        let range = validate_range(n, &path, conf)?;
        if let Some(first) = ranges.first() {
            if first.start.is_ipv4() != range.start.is_ipv4() {
                return Err(CniError::invalid_config(
                    &format!("{path}.subnet"),
                    format!("invalid range set {n}: mixed address families"),
                ));
            }
        }
        if let Some(other) = ranges.iter().find(|r| r.overlaps(&range)) {
            return Err(CniError::invalid_config(
                &path,
                format!("invalid range set {n}: subnets {other} and {range} overlap"),
            ));
        }
        ranges.push(range);
    }
    Ok(RangeSet { ranges })
}

/// Validates one range and applies its defaults (reference `Range.Canonicalize`).
fn validate_range(n: usize, path: &str, conf: RangeConf) -> Result<Range, CniError> {
    let field = |name: &str| format!("{path}.{name}");
    let err = |name: &str, why: String| CniError::invalid_config(&field(name), why);
    let Some(subnet_text) = conf.subnet else {
        return Err(err("subnet", format!("invalid range set {n}: missing subnet")));
    };
    let subnet = parse_cidr(&subnet_text)
        .ok_or_else(|| err("subnet", format!("invalid CIDR address: {subnet_text}")))?;
    let bits: u8 = if subnet.is_ipv4() { 32 } else { 128 };
    if subnet.prefix() > bits - 2 {
        return Err(err(
            "subnet",
            format!("invalid range set {n}: Network {subnet} too small to allocate from"),
        ));
    }
    if subnet.ip() != subnet.network() {
        return Err(err(
            "subnet",
            format!(
                "invalid range set {n}: Network has host bits set. For a subnet mask of length {} the network \
                 address is {}",
                subnet.prefix(),
                subnet.network()
            ),
        ));
    }
    let network = subnet.network();
    let first = next_ip(network);
    let in_subnet = |ip: IpAddr| ip.is_ipv4() == subnet.is_ipv4() && subnet.contains(ip);
    let parse_ip = |name: &str, text: &Option<String>| -> Result<Option<IpAddr>, CniError> {
        match text.as_deref() {
            None | Some("") => Ok(None),
            Some(t) => t
                .parse::<IpAddr>()
                .map(|ip| Some(ip.to_canonical()))
                .map_err(|_| err(name, format!("invalid IP address: {t}"))),
        }
    };

    // An unset gateway claims network + 1 (which is also the default start: the walk skips it).
    let gateway = match parse_ip("gateway", &conf.gateway)? {
        Some(gw) if !in_subnet(gw) => {
            // The reference accepts this; weft refuses it (a gateway the pod cannot reach on-link).
            return Err(err(
                "gateway",
                format!("invalid range set {n}: Gateway {gw} not in network {subnet}"),
            ));
        }
        Some(gw) => gw,
        None => first,
    };
    let start = match parse_ip("rangeStart", &conf.range_start)? {
        Some(s) if !in_subnet(s) => {
            return Err(err(
                "rangeStart",
                format!("invalid range set {n}: RangeStart {s} not in network {subnet}"),
            ))
        }
        Some(s) => s,
        None => first,
    };
    // Default end: IPv4 broadcast − 1 (network and broadcast are never handed out by default);
    // IPv6 has no broadcast, so the last address of the subnet.
    let end = match parse_ip("rangeEnd", &conf.range_end)? {
        Some(e) if !in_subnet(e) || e < start => {
            return Err(err(
                "rangeEnd",
                format!("invalid range set {n}: RangeEnd {e} not in network {subnet}"),
            ))
        }
        Some(e) => e,
        None => match subnet {
            IpNetwork::V4(v4) => prev_ip(IpAddr::V4(v4.broadcast())),
            IpNetwork::V6(v6) => last_v6(v6),
        },
    };
    if start > end {
        // Only reachable when rangeStart is set past the default end (the broadcast address).
        return Err(err(
            "rangeStart",
            format!("invalid range set {n}: RangeStart {start} not in network {subnet}"),
        ));
    }
    Ok(Range { subnet, start, end, gateway })
}

/// Parses `addr/len` strictly (Go `net.ParseCIDR`: the length is required). IPv4-mapped IPv6
/// addresses are not rewritten here; the prefix would not match.
pub fn parse_cidr(text: &str) -> Option<IpNetwork> {
    let (addr, len) = text.split_once('/')?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 3 {
        return None;
    }
    let ip: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    IpNetwork::new(ip, len).ok()
}

/// Parses a requested address, `ip` or `ip/len` (the length is checked, then ignored).
pub fn parse_requested(text: &str) -> Option<IpAddr> {
    if text.contains('/') {
        parse_cidr(text).map(|n| n.ip().to_canonical())
    } else {
        text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
    }
}

/// Requested IPs in the reference's order: `CNI_ARGS` `IP=`, `args.cni.ips`, `runtimeConfig.ips`.
fn requested_ips(
    runtime: &Option<RuntimeConfig>,
    args: &Option<ConfArgs>,
    cni_args: &str,
) -> Result<Vec<IpAddr>, CniError> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut push = |ip: IpAddr| {
        if !out.contains(&ip) {
            out.push(ip);
        }
    };
    let env = CniArgs::parse(cni_args)?;
    if let Some(text) = env.get("IP").filter(|t| !t.is_empty()) {
        let ip = parse_requested(text)
            .ok_or_else(|| CniError::invalid_env("CNI_ARGS", format!("cannot understand ip: {text:?}")))?;
        push(ip);
    }
    let lists = [
        ("args.cni.ips", args.as_ref().and_then(|a| a.cni.as_ref()).and_then(|c| c.ips.as_ref())),
        ("runtimeConfig.ips", runtime.as_ref().and_then(|r| r.ips.as_ref())),
    ];
    for (path, list) in lists {
        for (i, text) in list.into_iter().flatten().enumerate() {
            let ip = parse_requested(text).ok_or_else(|| {
                CniError::invalid_config(&format!("{path}[{i}]"), format!("cannot understand ip: {text:?}"))
            })?;
            push(ip);
        }
    }
    Ok(out)
}

fn next_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(u32::from(a).wrapping_add(1).into()),
        IpAddr::V6(a) => IpAddr::V6(u128::from(a).wrapping_add(1).into()),
    }
}

fn prev_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(u32::from(a).wrapping_sub(1).into()),
        IpAddr::V6(a) => IpAddr::V6(u128::from(a).wrapping_sub(1).into()),
    }
}

fn last_v6(net: ipnetwork::Ipv6Network) -> IpAddr {
    let host_bits = 128u32.saturating_sub(u32::from(net.prefix()));
    let mask = u128::MAX.checked_shr(128 - host_bits).filter(|_| host_bits > 0).unwrap_or(0);
    IpAddr::V6((u128::from(net.network()) | mask).into())
}

#[cfg(test)]
mod tests;
