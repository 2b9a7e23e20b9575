//! The lease model shared with upstream flanneld: etcd key names and `LeaseAttrs` JSON.
//!
//! Byte compatibility matters here (docs/flannel.md §4): keys are
//! `<prefix>/subnets/<a.b.c.d>-<len>[&<ipv6>-<len6>]`, values are compact JSON with the fields in
//! upstream's order and `PublicIPv6: null` when there is no IPv6. Readers accept what upstream's
//! readers accept (field names case-insensitive, MAC in either case).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::Serialize;
use serde_json::{Map, Value};
use weft_dataplane::Mac;

use crate::lease_wire::{Text, Wire};

/// TTL of the etcd lease attached to every lease key (fixed upstream, §4.3).
pub const LEASE_TTL_SECS: i64 = 86_400;

/// `BackendType` of a VXLAN node's lease.
pub const BACKEND_VXLAN: &str = "vxlan";
/// `BackendType` of a host-gw node's lease (upstream `pkg/backend/hostgw/hostgw.go`).
pub const BACKEND_HOST_GW: &str = "host-gw";

/// The subnet(s) a lease key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseKey {
    pub ipv4: Ipv4Network,
    pub ipv6: Option<Ipv6Network>,
}

/// Why a key or value is not a lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("key {key:?} is not under {prefix:?}")]
    NotUnderPrefix { key: String, prefix: String },
    #[error("key {key:?} is not <ipv4>-<len>[&<ipv6>-<len>]: {why}")]
    BadKey { key: String, why: String },
    #[error("value is not LeaseAttrs JSON: {0}")]
    BadValue(String),
    #[error("BackendData is not VXLAN data: {0}")]
    BadBackendData(String),
}

/// The IPv4 part upstream writes in the key of an IPv6-only lease (`0.0.0.0-0&<v6>-<len>`,
/// docs/flannel.md §4.1): its unset `ip.IP4Net`.
pub const NO_IPV4: Ipv4Network = match Ipv4Network::new_checked(Ipv4Addr::UNSPECIFIED, 0) {
    Some(n) => n,
    None => panic!("0.0.0.0/0 is a valid network"),
};

impl LeaseKey {
    /// A lease for an IPv4 subnet only.
    pub fn v4(ipv4: Ipv4Network) -> LeaseKey {
        LeaseKey { ipv4, ipv6: None }
    }

    /// A dual-stack lease (`<v4>-<len>&<v6>-<len6>`).
    pub fn dual(ipv4: Ipv4Network, ipv6: Ipv6Network) -> LeaseKey {
        LeaseKey { ipv4, ipv6: Some(ipv6) }
    }

    /// An IPv6-only lease as upstream spells it: `0.0.0.0-0&<v6>-<len6>` (§4.1).
    pub fn ipv6_only(ipv6: Ipv6Network) -> LeaseKey {
        LeaseKey { ipv4: NO_IPV4, ipv6: Some(ipv6) }
    }

    /// The key carries no IPv4 subnet (`0.0.0.0-0&…`): its `ipv4` is not a subnet to route.
    pub fn is_ipv6_only(&self) -> bool {
        self.ipv4 == NO_IPV4 && self.ipv6.is_some()
    }

    /// The key's last path element, in the canonical form upstream produces
    /// (`10.5.52.0-24`, `10.12.13.0-24&fd00:12:13::-56`).
    pub fn render(&self) -> String {
        let mut out = format!("{}-{}", self.ipv4.ip(), self.ipv4.prefix());
        if let Some(v6) = self.ipv6 {
            // Rust's Ipv6Addr Display is the RFC 5952 canonical form (lower-case, compressed),
            // the same as Go's net.IP.String().
            out.push_str(&format!("&{}-{}", v6.ip(), v6.prefix()));
        }
        out
    }

    /// Parses a key's last path element by upstream's consumer grammar (§4.1): dotted quad,
    /// `-`, a length that fits in 5 bits; optionally `&`, lower-case hex/colons, `-`, a length
    /// that fits in 7 bits.
    pub fn parse(name: &str) -> Result<LeaseKey, LeaseError> {
        let bad = |why: &str| LeaseError::BadKey { key: name.to_string(), why: why.to_string() };
        let (v4, v6) = match name.split_once('&') {
            Some((a, b)) => (a, Some(b)),
            None => (name, None),
        };
        let (ip, len) = v4.rsplit_once('-').ok_or_else(|| bad("no '-' before the prefix length"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad("not a dotted-quad IPv4 address"))?;
        let len = parse_len(len, 31).ok_or_else(|| bad("IPv4 prefix length not 0..31"))?;
        let ipv4 = Ipv4Network::new(ip, len).map_err(|_| bad("IPv4 prefix length"))?;
        let ipv6 = match v6 {
            None => None,
            Some(text) => {
                let (ip, len) =
                    text.rsplit_once('-').ok_or_else(|| bad("no '-' before the IPv6 prefix length"))?;
                if ip.is_empty()
                    || !ip.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == ':')
                {
                    return Err(bad("IPv6 part is not lower-case hex and colons"));
                }
                let ip: Ipv6Addr = ip.parse().map_err(|_| bad("not an IPv6 address"))?;
                let len = parse_len(len, 127).ok_or_else(|| bad("IPv6 prefix length not 0..127"))?;
                Some(Ipv6Network::new(ip, len).map_err(|_| bad("IPv6 prefix length"))?)
            }
        };
        Ok(LeaseKey { ipv4, ipv6 })
    }
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

fn parse_len(text: &str, max: u8) -> Option<u8> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u8>().ok().filter(|l| *l <= max)
}

/// Joins an etcd prefix and a relative path the way Go's `path.Join` does for our inputs:
/// no doubled or trailing slashes.
pub fn join_key(prefix: &str, rest: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + rest.len() + 1);
    for part in prefix.split('/').chain(rest.split('/')) {
        if part.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(part);
    }
    if !prefix.starts_with('/') {
        out.remove(0);
    }
    out
}

/// Where the network config lives: `<prefix>/config`.
pub fn config_key(prefix: &str) -> String {
    join_key(prefix, "config")
}

/// The directory of lease keys with its trailing slash (`<prefix>/subnets/`): the range we
/// list and watch. Unlike upstream we do not match `<prefix>/subnets-x/…` siblings.
pub fn subnets_dir(prefix: &str) -> String {
    let mut dir = join_key(prefix, "subnets");
    dir.push('/');
    dir
}

/// The full etcd key of a lease.
pub fn lease_path(prefix: &str, key: &LeaseKey) -> String {
    format!("{}{}", subnets_dir(prefix), key.render())
}

/// Parses a full etcd key under `subnets_dir`.
pub fn parse_lease_path(subnets_dir: &str, full: &str) -> Result<LeaseKey, LeaseError> {
    let name = full.strip_prefix(subnets_dir).ok_or_else(|| LeaseError::NotUnderPrefix {
        key: full.to_string(),
        prefix: subnets_dir.to_string(),
    })?;
    LeaseKey::parse(name)
}

/// VXLAN `BackendData` as published (§4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanData {
    pub vni: u32,
    pub vtep_mac: Mac,
}

/// The value of a lease key.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseAttrs {
    pub public_ip: Ipv4Addr,
    pub public_ipv6: Option<Ipv6Addr>,
    /// Empty when absent.
    pub backend_type: String,
    /// Kept as raw JSON: only the VXLAN handler interprets it, and a bad one only skips that lease.
    pub backend_data: Option<Value>,
    /// `BackendV6Data`, raw like `backend_data`: a bad one only skips the lease's IPv6 side.
    pub backend_v6_data: Option<Value>,
    /// Why a `PublicIPv6` that is present was not usable (`public_ipv6` is then `None`). Upstream
    /// rejects the whole value for it; we keep the lease's IPv4 side (docs/flannel.md §4.2, §6.3).
    pub ipv6_problem: Option<String>,
}

#[derive(Serialize)]
struct VxlanWire {
    #[serde(rename = "VNI")]
    vni: u32,
    #[serde(rename = "VtepMAC")]
    vtep_mac: String,
}

#[derive(Serialize)]
struct AttrsWire<'a> {
    #[serde(rename = "PublicIP")]
    public_ip: String,
    // Never omitted and never "": upstream peers fail to parse an empty string (§4.2).
    #[serde(rename = "PublicIPv6")]
    public_ipv6: Option<String>,
    #[serde(rename = "BackendType", skip_serializing_if = "str::is_empty")]
    backend_type: &'a str,
    #[serde(rename = "BackendData", skip_serializing_if = "Option::is_none")]
    backend_data: Option<&'a Value>,
    #[serde(rename = "BackendV6Data", skip_serializing_if = "Option::is_none")]
    backend_v6_data: Option<&'a Value>,
}

/// MAC text as upstream publishes (lower-case, colon-separated) and parses it (Go's `net.ParseMAC`).
pub use weft_common::mac::{format_mac, parse_mac};

impl LeaseAttrs {
    /// Attributes of a VXLAN node (what this daemon publishes).
    pub fn vxlan(public_ip: Ipv4Addr, vni: u32, vtep_mac: Mac) -> LeaseAttrs {
        let data = serde_json::to_value(VxlanWire { vni, vtep_mac: format_mac(&vtep_mac) }).ok();
        LeaseAttrs {
            public_ip,
            public_ipv6: None,
            backend_type: BACKEND_VXLAN.to_string(),
            backend_data: data,
            backend_v6_data: None,
            ipv6_problem: None,
        }
    }

    /// Attributes of a host-gw node: `BackendType` `host-gw` and no `BackendData` at all (not
    /// `null`), the bytes an upstream host-gw node writes (docs/flannel.md §4.2).
    pub fn host_gw(public_ip: Ipv4Addr) -> LeaseAttrs {
        LeaseAttrs {
            public_ip,
            public_ipv6: None,
            backend_type: BACKEND_HOST_GW.to_string(),
            backend_data: None,
            backend_v6_data: None,
            ipv6_problem: None,
        }
    }

    /// `BackendType` is `host-gw`, compared exactly as upstream's route network does
    /// (`pkg/backend/route_network.go` `handleSubnetEvents`).
    pub fn is_host_gw(&self) -> bool {
        self.backend_type == BACKEND_HOST_GW
    }

    /// Adds the IPv6 side of a dual-stack VXLAN node: `PublicIPv6` and `BackendV6Data` (the
    /// `flannel-v6.<VNI>` device's VNI and MAC, §4.2).
    pub fn with_vxlan_v6(mut self, public_ipv6: Ipv6Addr, vni: u32, vtep_mac: Mac) -> LeaseAttrs {
        self.public_ipv6 = Some(public_ipv6);
        self.backend_v6_data = serde_json::to_value(VxlanWire { vni, vtep_mac: format_mac(&vtep_mac) }).ok();
        self
    }

    /// The exact bytes upstream writes for these attributes.
    pub fn render(&self) -> Vec<u8> {
        let wire = AttrsWire {
            public_ip: self.public_ip.to_string(),
            public_ipv6: self.public_ipv6.map(|ip| ip.to_string()),
            backend_type: &self.backend_type,
            backend_data: self.backend_data.as_ref(),
            backend_v6_data: self.backend_v6_data.as_ref(),
        };
        // Serialising plain strings and JSON values cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Decodes a value as upstream's readers do: field names case-insensitive (a later key for
    /// the same field wins, `crate::lease_wire`), unknown fields ignored, `PublicIP` must be a dotted quad, `PublicIPv6` null/absent or a valid address.
    pub fn parse(value: &[u8]) -> Result<LeaseAttrs, LeaseError> {
        let bad = |why: String| LeaseError::BadValue(why);
        let w: Wire = serde_json::from_slice(value).map_err(|e| bad(e.to_string()))?;
        let public_ip = match w.public_ip {
            Text::Null => Ipv4Addr::UNSPECIFIED,
            Text::Str(s) => s.parse().map_err(|_| bad(format!("PublicIP {s:?} is not an IPv4 address")))?,
            Text::NotAString => return Err(bad("PublicIP is not a string".into())),
        };
        let (public_ipv6, ipv6_problem) = match w.public_ipv6 {
            Text::Null => (None, None),
            Text::Str(s) => match s.parse::<Ipv6Addr>() {
                Ok(ip) => (Some(ip), None),
                Err(_) => (None, Some(format!("PublicIPv6 {s:?} is not an IPv6 address"))),
            },
            Text::NotAString => (None, Some("PublicIPv6 is not a string".to_string())),
        };
        let backend_type = match w.backend_type {
            Text::Null => String::new(),
            Text::Str(s) => s,
            Text::NotAString => return Err(bad("BackendType is not a string".into())),
        };
        Ok(LeaseAttrs {
            public_ip,
            public_ipv6,
            backend_type,
            backend_data: w.backend_data,
            backend_v6_data: w.backend_v6_data,
            ipv6_problem,
        })
    }

    /// `BackendType` is `vxlan` (compared lower-cased, like upstream's backend selection).
    pub fn is_vxlan(&self) -> bool {
        self.backend_type.eq_ignore_ascii_case(BACKEND_VXLAN)
    }

    /// The VXLAN `BackendData` (`VNI`, `VtepMAC`), decoded case-insensitively.
    pub fn vxlan_data(&self) -> Result<VxlanData, LeaseError> {
        decode_vxlan(self.backend_data.as_ref())
    }

    /// The VXLAN `BackendV6Data` of the IPv6 device, decoded like [`LeaseAttrs::vxlan_data`].
    pub fn vxlan_v6_data(&self) -> Result<VxlanData, LeaseError> {
        decode_vxlan(self.backend_v6_data.as_ref())
    }
}

fn decode_vxlan(raw: Option<&Value>) -> Result<VxlanData, LeaseError> {
    let bad = |why: &str| LeaseError::BadBackendData(why.to_string());
    let obj = raw.and_then(Value::as_object).ok_or_else(|| bad("missing"))?;
    let vni = match field(obj, "VNI") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| bad("VNI"))?,
    };
    let mac = field(obj, "VtepMAC").and_then(Value::as_str).ok_or_else(|| bad("VtepMAC missing"))?;
    let vtep_mac = parse_mac(mac).ok_or_else(|| bad("VtepMAC is not a MAC address"))?;
    Ok(VxlanData { vni, vtep_mac })
}

/// Looks a field up as Go's encoding/json does: an exact match first, else case-insensitive.
pub fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44];

    #[test]
    fn renders_upstream_bytes() {
        let attrs = LeaseAttrs::vxlan("192.168.64.3".parse().unwrap(), 1, MAC);
        assert_eq!(
            String::from_utf8(attrs.render()).unwrap(),
            r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#
        );
    }

    #[test]
    fn host_gw_renders_the_bytes_an_upstream_host_gw_node_writes() {
        // docs/flannel.md §4.2, read back from a real upstream v0.21.3 host-gw node.
        let attrs = LeaseAttrs::host_gw("198.18.0.4".parse().unwrap());
        assert_eq!(
            String::from_utf8(attrs.render()).unwrap(),
            r#"{"PublicIP":"198.18.0.4","PublicIPv6":null,"BackendType":"host-gw"}"#
        );
        let back = LeaseAttrs::parse(&attrs.render()).unwrap();
        assert_eq!(back, attrs);
        assert!(back.is_host_gw() && !back.is_vxlan());
        // Upstream compares the type exactly.
        let upper = LeaseAttrs::parse(br#"{"PublicIP":"198.18.0.4","BackendType":"HOST-GW"}"#).unwrap();
        assert!(!upper.is_host_gw());
    }

    #[test]
    fn parses_case_insensitively_and_round_trips() {
        let text = br#"{"publicip":"10.0.0.1","BACKENDTYPE":"vxlan","backenddata":{"vni":1,"vtepmac":"C6:D2:32:6F:8F:44"},"extra":3}"#;
        let attrs = LeaseAttrs::parse(text).unwrap();
        assert_eq!(attrs.public_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert!(attrs.is_vxlan());
        assert_eq!(attrs.vxlan_data().unwrap(), VxlanData { vni: 1, vtep_mac: MAC });
        let canonical = LeaseAttrs::vxlan("10.0.0.1".parse().unwrap(), 1, MAC);
        assert_eq!(LeaseAttrs::parse(&canonical.render()).unwrap(), canonical);
    }

    #[test]
    fn rejects_what_upstream_rejects() {
        for bad in [&br#"{"PublicIP":"not-an-ip"}"#[..], br#"{"PublicIP":5}"#, b"[]", b"garbage"] {
            assert!(LeaseAttrs::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let no_mac = LeaseAttrs::parse(br#"{"PublicIP":"10.0.0.1","BackendType":"vxlan"}"#).unwrap();
        assert!(no_mac.vxlan_data().is_err());
    }

    const MAC6: Mac = [0x6e, 0xaa, 0xbb, 0xcc, 0xdd, 0x06];

    /// The dual-stack lease a real upstream v0.21.3 node wrote (docs/flannel.md §4.2), with its
    /// two device MACs filled in.
    const DUAL_KEY: &str = "10.88.78.0-24&fd88:0:0:a::-64";
    const DUAL_VALUE: &str = r#"{"PublicIP":"198.18.0.4","PublicIPv6":"fd18::4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"6e:aa:bb:cc:dd:06"}}"#;

    #[test]
    fn dual_stack_golden_bytes() {
        let key = LeaseKey::dual("10.88.78.0/24".parse().unwrap(), "fd88:0:0:a::/64".parse().unwrap());
        assert_eq!(key.render(), DUAL_KEY);
        assert_eq!(
            lease_path("/coreos.com/network", &key),
            format!("/coreos.com/network/subnets/{DUAL_KEY}")
        );
        assert_eq!(LeaseKey::parse(DUAL_KEY).unwrap(), key);
        assert!(!key.is_ipv6_only());

        let attrs = LeaseAttrs::vxlan("198.18.0.4".parse().unwrap(), 1, MAC).with_vxlan_v6(
            "fd18::4".parse().unwrap(),
            1,
            MAC6,
        );
        assert_eq!(String::from_utf8(attrs.render()).unwrap(), DUAL_VALUE);
        let back = LeaseAttrs::parse(DUAL_VALUE.as_bytes()).unwrap();
        assert_eq!(back, attrs);
        assert_eq!(back.public_ipv6, Some("fd18::4".parse().unwrap()));
        assert_eq!(back.vxlan_data().unwrap(), VxlanData { vni: 1, vtep_mac: MAC });
        assert_eq!(back.vxlan_v6_data().unwrap(), VxlanData { vni: 1, vtep_mac: MAC6 });
        // An IPv4-only lease has no IPv6 device data.
        assert!(LeaseAttrs::vxlan("198.18.0.4".parse().unwrap(), 1, MAC).vxlan_v6_data().is_err());
    }

    #[test]
    fn ipv6_only_golden_bytes() {
        // What upstream writes with EnableIPv4 false: the unset IPv4 subnet and PublicIP, no
        // BackendData (pkg/subnet/subnet.go MakeSubnetKey, pkg/backend/vxlan/vxlan.go).
        let key = LeaseKey::ipv6_only("fd00:0:0:5::/64".parse().unwrap());
        assert_eq!(key.render(), "0.0.0.0-0&fd00:0:0:5::-64");
        assert_eq!(LeaseKey::parse("0.0.0.0-0&fd00:0:0:5::-64").unwrap(), key);
        assert!(key.is_ipv6_only());
        assert!(!LeaseKey::parse("0.0.0.0-0").unwrap().is_ipv6_only(), "no IPv6 part: not IPv6-only");
        let value = r#"{"PublicIP":"0.0.0.0","PublicIPv6":"fd18::4","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"6e:aa:bb:cc:dd:06"}}"#;
        let attrs = LeaseAttrs::parse(value.as_bytes()).unwrap();
        assert_eq!(attrs.public_ip, Ipv4Addr::UNSPECIFIED);
        assert!(attrs.vxlan_data().is_err());
        assert_eq!(attrs.vxlan_v6_data().unwrap().vtep_mac, MAC6);
        assert_eq!(String::from_utf8(attrs.render()).unwrap(), value);
    }

    #[test]
    fn malformed_ipv6_parts_spare_the_ipv4_side() {
        for (v6, why) in [
            (r#""""#, "is not an IPv6 address"),
            (r#""fd18:::4""#, "is not an IPv6 address"),
            (r#""198.18.0.9""#, "is not an IPv6 address"),
            ("7", "is not a string"),
        ] {
            let value = format!(
                r#"{{"PublicIP":"198.18.0.4","PublicIPv6":{v6},"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}}}"#
            );
            let a = LeaseAttrs::parse(value.as_bytes()).unwrap_or_else(|e| panic!("{v6}: {e}"));
            assert_eq!(a.public_ip, Ipv4Addr::new(198, 18, 0, 4));
            assert_eq!(a.public_ipv6, None);
            assert!(a.ipv6_problem.as_deref().is_some_and(|p| p.contains(why)), "{v6}: {:?}", a.ipv6_problem);
            assert_eq!(a.vxlan_data().unwrap().vtep_mac, MAC);
            // Re-rendered, the bad address becomes null: never "" (§4.2).
            assert!(String::from_utf8(a.render()).unwrap().contains(r#""PublicIPv6":null"#));
        }
        let bad_v6_data = br#"{"PublicIP":"198.18.0.4","PublicIPv6":"fd18::4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"zz"}}"#;
        let a = LeaseAttrs::parse(bad_v6_data).unwrap();
        assert!(a.vxlan_v6_data().is_err());
        assert_eq!(a.vxlan_data().unwrap().vtep_mac, MAC);
        // Bad IPv6 parts of a key make the whole key unrecognisable, as upstream's grammar does.
        for bad in [
            "10.5.52.0-24&fd00:::-64",
            "10.5.52.0-24&fd00::-128",
            "10.5.52.0-24&fd00::-",
            "10.5.52.0-24&-64",
            "10.5.52.0-24&fd00::",
            "10.5.52.0-24&fd00::g-64",
            "10.5.52.0-24&fd00::-64&fd01::-64",
        ] {
            assert!(LeaseKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_codec() {
        let k = LeaseKey::parse("10.5.52.0-24").unwrap();
        assert_eq!(k.ipv4.to_string(), "10.5.52.0/24");
        assert_eq!(k.render(), "10.5.52.0-24");
        let d = LeaseKey::parse("10.12.13.0-24&fd00:12:13::-56").unwrap();
        assert_eq!(d.ipv6.unwrap().to_string(), "fd00:12:13::/56");
        assert_eq!(d.render(), "10.12.13.0-24&fd00:12:13::-56");
        for bad in
            ["10.5.52.0-32", "10.5.52.0", "10.5.52-24", "10.5.52.0-24&FD00::-56", "x-24", "10.5.52.0--1"]
        {
            assert!(LeaseKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(subnets_dir("/coreos.com/network/"), "/coreos.com/network/subnets/");
        assert_eq!(config_key("/coreos.com/network"), "/coreos.com/network/config");
        let k = LeaseKey::parse("10.5.52.0-24").unwrap();
        assert_eq!(lease_path("/coreos.com/network", &k), "/coreos.com/network/subnets/10.5.52.0-24");
        assert_eq!(parse_lease_path("/p/subnets/", "/p/subnets/10.5.52.0-24").unwrap(), k);
        assert!(parse_lease_path("/p/subnets/", "/p/subnets/meta/x").is_err());
    }
}
