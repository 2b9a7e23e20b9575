//! The CNI result in every spec version, held internally in the 1.1.0 shape.
//!
//! [`CniResult::parse`] reads a result (or `prevResult`) of any version and
//! [`CniResult::render`] prints it in the version the request asked for, following the
//! conversion rules of the reference library (docs/cni.md §3.4).

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::{CniError, ErrorCode};
use super::version::Version;

/// One interface of a result (`interfaces[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// One address of a result (`ips[]`). `address` keeps its host bits (`10.244.1.5/24`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route (`routes[]`, also used in IPAM configs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "is_none_or_zero")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

fn is_none_or_zero(v: &Option<u32>) -> bool {
    matches!(v, None | Some(0))
}

impl Route {
    /// A plain route to `dst`, optionally via `gw`.
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Self {
        Route { dst, gw, mtu: None, advmss: None, priority: None, table: None, scope: None }
    }
}

/// DNS information (`dns`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A result in the 1.1.0 shape; `cni_version` records the version it arrived in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// The 0.1.0/0.2.0 per-family block (`ip4`, `ip6`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LegacyIp {
    ip: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<LegacyRoute>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LegacyRoute {
    dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gw: Option<IpAddr>,
}

fn decode_err(what: &str, e: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::Decode, format!("failed to decode {what}"), e.to_string())
}

impl CniResult {
    /// Reads a result of any version. A result without `cniVersion` is taken to be in
    /// `default_version` (what libcni does for delegate output and `prevResult`).
    pub fn parse(value: &Value, default_version: &str) -> Result<CniResult, CniError> {
        let obj = value.as_object().ok_or_else(|| decode_err("result", "not a JSON object"))?;
        let version_text = obj
            .get("cniVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(default_version)
            .to_string();
        let version = Version::parse(&version_text)
            .ok_or_else(|| decode_err("result", format!("unknown cniVersion {version_text:?}")))?;
        let field = |k: &str| obj.get(k).filter(|v| !v.is_null()).cloned();
        let dns: Dns = match field("dns") {
            Some(v) => serde_json::from_value(v).map_err(|e| decode_err("result dns", e))?,
            None => Dns::default(),
        };
        if version.is_legacy_020() {
            let mut out = CniResult { cni_version: version_text, dns, ..Default::default() };
            for key in ["ip4", "ip6"] {
                if let Some(v) = field(key) {
                    let ip: LegacyIp =
                        serde_json::from_value(v).map_err(|e| decode_err(&format!("result {key}"), e))?;
                    out.ips.push(IpConfig { address: ip.ip, gateway: ip.gateway, interface: None });
                    out.routes.extend(ip.routes.into_iter().map(|r| Route::new(r.dst, r.gw)));
                }
            }
            return Ok(out);
        }
        let list =
            |k: &str| -> Result<Value, CniError> { Ok(field(k).unwrap_or_else(|| Value::Array(Vec::new()))) };
        // `ips[].version` (0.3.x/0.4.0) is ignored: the family follows from the address.
        Ok(CniResult {
            cni_version: version_text,
            interfaces: serde_json::from_value(list("interfaces")?)
                .map_err(|e| decode_err("result interfaces", e))?,
            ips: serde_json::from_value(list("ips")?).map_err(|e| decode_err("result ips", e))?,
            routes: serde_json::from_value(list("routes")?).map_err(|e| decode_err("result routes", e))?,
            dns,
        })
    }

    /// Prints the result in `version` (rules of docs/cni.md §3.4).
    pub fn render(&self, version: &str) -> Result<Value, CniError> {
        let v = Version::parse(version).ok_or_else(|| CniError::incompatible_version(version))?;
        if v.is_legacy_020() {
            return self.render_020(version);
        }
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version));
        if !self.interfaces.is_empty() {
            let ifaces: Vec<Value> = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut i = i.clone();
                    if v < Version::V1_0_0 {
                        i.mtu = None;
                        i.socket_path = None;
                        i.pci_id = None;
                    }
                    to_value(&i)
                })
                .collect();
            out.insert("interfaces".into(), Value::Array(ifaces));
        }
        if !self.ips.is_empty() {
            let ips: Vec<Value> = self
                .ips
                .iter()
                .map(|ip| {
                    let mut m = Map::new();
                    if v < Version::V1_0_0 {
                        let fam = if ip.address.is_ipv4() { "4" } else { "6" };
                        m.insert("version".into(), json!(fam));
                    }
                    if let Some(i) = ip.interface {
                        m.insert("interface".into(), json!(i));
                    }
                    m.insert("address".into(), json!(ip.address.to_string()));
                    if let Some(gw) = ip.gateway {
                        m.insert("gateway".into(), json!(gw.to_string()));
                    }
                    Value::Object(m)
                })
                .collect();
            out.insert("ips".into(), Value::Array(ips));
        }
        if !self.routes.is_empty() {
            out.insert("routes".into(), Value::Array(self.routes.iter().map(to_value).collect()));
        }
        // 0.3.x/0.4.0 always carry `dns` (the reference prints `{}`); 1.x omits an empty one.
        if v < Version::V1_0_0 || !self.dns.is_empty() {
            out.insert("dns".into(), to_value(&self.dns));
        }
        Ok(Value::Object(out))
    }

    fn render_020(&self, version: &str) -> Result<Value, CniError> {
        let first = |v4: bool| self.ips.iter().find(|ip| ip.address.is_ipv4() == v4);
        let (ip4, ip6) = (first(true), first(false));
        if ip4.is_none() && ip6.is_none() {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                "cannot convert: no valid IP addresses",
                format!("a result without addresses has no {version} form"),
            ));
        }
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version));
        for (key, ip, v4) in [("ip4", ip4, true), ("ip6", ip6, false)] {
            let Some(ip) = ip else { continue };
            let routes: Vec<LegacyRoute> = self
                .routes
                .iter()
                .filter(|r| r.dst.is_ipv4() == v4)
                .map(|r| LegacyRoute { dst: r.dst, gw: r.gw })
                .collect();
            let block = LegacyIp { ip: ip.address, gateway: ip.gateway, routes };
            out.insert(key.into(), serde_json::to_value(block).unwrap_or(Value::Null));
        }
        out.insert("dns".into(), serde_json::to_value(&self.dns).unwrap_or(Value::Null));
        Ok(Value::Object(out))
    }

    /// Index of the interface named `ifname` with a sandbox, if any.
    pub fn container_interface(&self, ifname: &str) -> Option<usize> {
        self.interfaces.iter().position(|i| i.name == ifname && i.sandbox.is_some())
    }
}

fn to_value<T: Serialize>(x: &T) -> Value {
    serde_json::to_value(x).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        let v = json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:02", "mtu": 1450},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"interface": 2, "address": "10.244.1.3/24", "gateway": "10.244.1.1"},
                {"interface": 2, "address": "fd00::3/64", "gateway": "fd00::1"}
            ],
            "routes": [{"dst": "10.244.0.0/16"}, {"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
                       {"dst": "::/0", "gw": "fd00::1", "priority": 0, "table": 100}],
            "dns": {"nameservers": ["10.0.0.10"]}
        });
        CniResult::parse(&v, "1.1.0").unwrap()
    }

    #[test]
    fn v1_round_trip() {
        let r = sample();
        let out = r.render("1.1.0").unwrap();
        // priority 0 means "unset" and is dropped, everything else survives
        let again = CniResult::parse(&out, "1.1.0").unwrap();
        assert_eq!(again.render("1.1.0").unwrap(), out);
        assert_eq!(again.ips, r.ips);
        assert_eq!(out["ips"][0]["address"], "10.244.1.3/24");
        assert!(out["ips"][0].get("version").is_none());
        assert_eq!(out["interfaces"][1]["mtu"], 1450);
        assert!(out["routes"][2].get("priority").is_none());
        assert_eq!(out["routes"][2]["table"], 100);
    }

    #[test]
    fn to_040_adds_version_and_drops_mtu() {
        let out = sample().render("0.4.0").unwrap();
        assert_eq!(out["cniVersion"], "0.4.0");
        assert_eq!(out["ips"][0]["version"], "4");
        assert_eq!(out["ips"][1]["version"], "6");
        assert_eq!(out["ips"][0]["interface"], 2);
        assert!(out["interfaces"][1].get("mtu").is_none());
        // and back up again
        let back = CniResult::parse(&out, "0.4.0").unwrap();
        assert_eq!(back.ips, sample().ips);
    }

    #[test]
    fn empty_dns_present_before_1_0() {
        let mut r = sample();
        r.dns = Dns::default();
        assert_eq!(r.render("0.3.1").unwrap()["dns"], json!({}));
        assert!(r.render("1.0.0").unwrap().get("dns").is_none());
    }

    #[test]
    fn to_020_splits_families() {
        let out = sample().render("0.2.0").unwrap();
        assert_eq!(out["ip4"]["ip"], "10.244.1.3/24");
        assert_eq!(out["ip4"]["routes"].as_array().unwrap().len(), 2);
        assert_eq!(out["ip6"]["routes"][0]["dst"], "::/0");
        assert!(out.get("interfaces").is_none());
        let back = CniResult::parse(&out, "0.2.0").unwrap();
        assert_eq!(back.ips.len(), 2);
        assert_eq!(back.routes.len(), 3);
    }

    #[test]
    fn l2_result_has_no_020_form() {
        let mut r = sample();
        r.ips.clear();
        assert!(r.render("0.1.0").is_err());
        assert!(r.render("0.3.0").is_ok());
    }

    #[test]
    fn missing_version_uses_default() {
        let r = CniResult::parse(&json!({"ips": [{"address": "10.0.0.2/24"}]}), "0.3.1").unwrap();
        assert_eq!(r.cni_version, "0.3.1");
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let e = CniResult::parse(&json!({"ips": [{"address": "nope"}]}), "1.0.0").unwrap_err();
        assert_eq!(e.code, 6);
        assert!(CniResult::parse(&json!([1]), "1.0.0").is_err());
    }

    proptest::proptest! {
        /// A prevResult of any shape parses or is refused with an error; whatever parses
        /// renders in every version without panicking.
        #[test]
        fn any_result_shape_parses_or_errors(
            addr in "[0-9a-f.:/]{0,20}",
            gw in "[0-9a-f.:]{0,16}",
            iface in proptest::option::of(-2i64..5),
            dst in "[0-9a-f.:/]{0,20}",
            mtu in proptest::option::of(proptest::prelude::any::<i64>()),
            version in "(0\\.1\\.0|0\\.2\\.0|0\\.3\\.1|0\\.4\\.0|1\\.0\\.0|1\\.1\\.0|[0-9.]{0,6})",
        ) {
            let v = json!({
                "cniVersion": version,
                "interfaces": [{"name": "eth0", "mac": "x", "mtu": mtu}],
                "ips": [{"address": addr, "gateway": gw, "interface": iface, "version": "4"}],
                "ip4": {"ip": addr, "gateway": gw},
                "routes": [{"dst": dst, "gw": gw}],
                "dns": {"nameservers": [gw]}
            });
            if let Ok(r) = CniResult::parse(&v, &version) {
                for out in ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
                    let _ = r.render(out);
                }
            }
        }
    }
}
