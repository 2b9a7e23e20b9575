//! The bridge configuration: the wire type ([`NetConf`], decoded like the Go reference:
//! case-insensitive keys, unknown keys ignored) and its validated form ([`BridgeSpec`]).
//!
//! Everything that can be checked without the kernel is checked here, before any side
//! effect (docs/cni.md §7.1, §7.2, §11).

use serde::Deserialize;
use serde_json::Value;
use weft_common::cni::args::CniArgs;
use weft_common::cni::conf::{self, COMMON_KEYS};
use weft_common::cni::error::CniError;
use weft_common::cni::Dns;
use weft_common::firewall::BackendChoice;
use weft_common::mac::parse_mac;

/// The reference's default bridge name.
pub const DEFAULT_BRIDGE: &str = "cni0";

/// Highest VLAN ID a port may carry (4095 is reserved).
const MAX_VLAN: i64 = 4094;

/// Keys this plugin reads, in their canonical spelling (for case-insensitive decoding).
const BRIDGE_KEYS: &[&str] = &[
    "bridge",
    "isGateway",
    "isDefaultGateway",
    "forceAddress",
    "ipMasqBackend",
    "mtu",
    "hairpinMode",
    "promiscMode",
    "vlan",
    "vlanTrunk",
    "preserveDefaultVlan",
    "macspoofchk",
    "enabledad",
    "disableContainerInterface",
    "portIsolation",
    "id",
    "minID",
    "maxID",
    "cni",
    "mac",
];

/// One `vlanTrunk` entry: `{"id": n}` or `{"minID": a, "maxID": b}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Trunk {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default, rename = "minID")]
    pub min_id: Option<i64>,
    #[serde(default, rename = "maxID")]
    pub max_id: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamConf {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MacArg {
    #[serde(default)]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Args {
    #[serde(default)]
    pub cni: Option<MacArg>,
}

/// The plugin's configuration as it arrives on stdin (only the keys bridge reads).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub bridge: Option<String>,
    #[serde(default)]
    pub is_gateway: Option<bool>,
    #[serde(default)]
    pub is_default_gateway: Option<bool>,
    #[serde(default)]
    pub force_address: Option<bool>,
    #[serde(default)]
    pub ip_masq: Option<bool>,
    #[serde(default)]
    pub ip_masq_backend: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub hairpin_mode: Option<bool>,
    #[serde(default)]
    pub promisc_mode: Option<bool>,
    #[serde(default)]
    pub vlan: Option<i64>,
    #[serde(default)]
    pub vlan_trunk: Option<Vec<Trunk>>,
    #[serde(default)]
    pub preserve_default_vlan: Option<bool>,
    #[serde(default)]
    pub macspoofchk: Option<bool>,
    #[serde(default)]
    pub enabledad: Option<bool>,
    #[serde(default)]
    pub disable_container_interface: Option<bool>,
    #[serde(default)]
    pub port_isolation: Option<bool>,
    #[serde(default)]
    pub ipam: Option<IpamConf>,
    #[serde(default)]
    pub dns: Option<Dns>,
    #[serde(default)]
    pub args: Option<Args>,
    #[serde(default)]
    pub runtime_config: Option<MacArg>,
    #[serde(default)]
    pub prev_result: Option<Value>,
}

/// The validated configuration of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub force_address: bool,
    pub ip_masq: bool,
    pub ip_masq_backend: BackendChoice,
    /// `None`: kernel default.
    pub mtu: Option<u32>,
    pub hairpin: bool,
    pub promisc: bool,
    /// Access VLAN (PVID, untagged); 0 = none.
    pub vlan: u16,
    /// Tagged VLANs, expanded from ranges, in config order.
    pub trunk: Vec<u16>,
    /// `vlanTrunk` was given (even empty): turns on VLAN filtering like `vlan`.
    pub has_trunk: bool,
    pub preserve_default_vlan: bool,
    pub macspoofchk: bool,
    pub enable_dad: bool,
    pub disable_container_interface: bool,
    pub port_isolation: bool,
    /// `ipam.type`; `None` is L2 mode (no addresses).
    pub ipam: Option<String>,
    /// The config's `dns` when any field is set (it replaces IPAM's).
    pub dns: Option<Dns>,
    /// Container MAC: `runtimeConfig.mac` > `args.cni.mac` > `CNI_ARGS` `MAC`.
    pub mac: Option<[u8; 6]>,
    pub prev_result: Option<Value>,
}

impl BridgeSpec {
    /// VLAN filtering is needed on the bridge.
    pub fn vlan_filtering(&self) -> bool {
        self.vlan != 0 || self.has_trunk
    }
}

/// Decodes `conf` (stdin, common keys already folded by skel) and validates it with the raw
/// `CNI_ARGS`. ADD-only rules (IPAM with `disableContainerInterface`, hairpin with promisc)
/// are checked when `for_add`.
pub fn parse(conf: &Value, cni_args: &str, for_add: bool) -> Result<BridgeSpec, CniError> {
    let mut value = conf.clone();
    conf::fold_keys(&mut value, &[COMMON_KEYS, BRIDGE_KEYS]);
    let nc: NetConf = conf::decode(&value, "")?;
    validate(nc, cni_args, for_add)
}

fn validate(nc: NetConf, cni_args: &str, for_add: bool) -> Result<BridgeSpec, CniError> {
    let bridge = nc.bridge.filter(|b| !b.is_empty()).unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
    validate_ifname("bridge", &bridge)?;
    let vlan = match nc.vlan.unwrap_or(0) {
        v @ 0..=MAX_VLAN => u16::try_from(v).unwrap_or(0),
        v => {
            return Err(CniError::invalid_config(
                "vlan",
                format!("invalid VLAN ID {v} (must be between 0 and {MAX_VLAN})"),
            ))
        }
    };
    let has_trunk = nc.vlan_trunk.is_some();
    let trunk = expand_trunk(nc.vlan_trunk.as_deref().unwrap_or_default())?;
    let mtu = match nc.mtu {
        None | Some(0) => None,
        // 68 is IPv4's minimum MTU; the kernel refuses smaller ones for these devices.
        Some(m @ 68..=65535) => Some(m),
        Some(m) => return Err(CniError::invalid_config("mtu", format!("{m} is not between 68 and 65535"))),
    };
    let ip_masq_backend = BackendChoice::parse(nc.ip_masq_backend.as_deref())
        .map_err(|e| CniError::invalid_config("ipMasqBackend", e.to_string()))?;
    let ipam = nc.ipam.and_then(|i| i.kind).filter(|t| !t.is_empty());
    let hairpin = nc.hairpin_mode.unwrap_or(false);
    let promisc = nc.promisc_mode.unwrap_or(false);
    let disable_container_interface = nc.disable_container_interface.unwrap_or(false);
    if for_add {
        if disable_container_interface && ipam.is_some() {
            return Err(CniError::invalid_config(
                "disableContainerInterface",
                "cannot use IPAM when DisableContainerInterface flag is set",
            ));
        }
        if hairpin && promisc {
            return Err(CniError::invalid_config(
                "promiscMode",
                "cannot set hairpin mode and promiscuous mode at the same time",
            ));
        }
    }
    let is_gateway = nc.is_gateway.unwrap_or(false) || nc.is_default_gateway.unwrap_or(false);
    if is_gateway && vlan != 0 {
        // The gateway then lives on `<bridge>.<vlan>`, which must be a valid name too.
        validate_ifname("bridge", &format!("{bridge}.{vlan}"))?;
    }
    let macspoofchk = nc.macspoofchk.unwrap_or(false);
    let mac = container_mac(nc.runtime_config.as_ref(), nc.args.as_ref(), cni_args)?;
    let is_default_gateway = nc.is_default_gateway.unwrap_or(false);
    Ok(BridgeSpec {
        bridge,
        // isDefaultGateway implies isGateway.
        is_gateway,
        is_default_gateway,
        force_address: nc.force_address.unwrap_or(false),
        ip_masq: nc.ip_masq.unwrap_or(false),
        ip_masq_backend,
        mtu,
        hairpin,
        promisc,
        vlan,
        trunk,
        has_trunk,
        preserve_default_vlan: nc.preserve_default_vlan.unwrap_or(false),
        macspoofchk,
        enable_dad: nc.enabledad.unwrap_or(false),
        disable_container_interface,
        port_isolation: nc.port_isolation.unwrap_or(false),
        ipam,
        dns: nc.dns.filter(|d| !d.is_empty()),
        mac,
        prev_result: nc.prev_result.filter(|v| !v.is_null()),
    })
}

/// Interface-name rules of the kernel (1–15 bytes, not `.`/`..`, no `/`, `:` or space).
fn validate_ifname(field: &str, name: &str) -> Result<(), CniError> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(CniError::invalid_config(
            field,
            format!("{name:?} is not a valid interface name (1-15 bytes, no '/', ':' or whitespace)"),
        ));
    }
    Ok(())
}

fn vid(path: &str, v: i64) -> Result<u16, CniError> {
    if (1..=MAX_VLAN).contains(&v) {
        Ok(u16::try_from(v).unwrap_or(0))
    } else {
        Err(CniError::invalid_config(path, format!("VLAN ID {v} is not between 1 and {MAX_VLAN}")))
    }
}

/// Expands `vlanTrunk` into VLAN IDs (reference messages in the details).
fn expand_trunk(trunks: &[Trunk]) -> Result<Vec<u16>, CniError> {
    let mut out: Vec<u16> = Vec::new();
    for (i, t) in trunks.iter().enumerate() {
        let path = |k: &str| format!("vlanTrunk[{i}].{k}");
        match (t.min_id, t.max_id) {
            (Some(min), Some(max)) => {
                let lo = vid(&path("minID"), min)?;
                let hi = vid(&path("maxID"), max)?;
                if lo > hi {
                    return Err(CniError::invalid_config(
                        &path("minID"),
                        "minID is greater than maxID in trunk parameter",
                    ));
                }
                out.extend(lo..=hi);
            }
            (Some(_), None) => {
                return Err(CniError::invalid_config(
                    &path("maxID"),
                    "minID and maxID should be configured simultaneously, maxID is missing",
                ))
            }
            (None, Some(_)) => {
                return Err(CniError::invalid_config(
                    &path("minID"),
                    "minID and maxID should be configured simultaneously, minID is missing",
                ))
            }
            (None, None) => {}
        }
        if let Some(id) = t.id {
            out.push(vid(&path("id"), id)?);
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|v| seen.insert(*v));
    Ok(out)
}

/// The container MAC by precedence `runtimeConfig.mac` > `args.cni.mac` > `CNI_ARGS` `MAC=`.
fn container_mac(
    runtime: Option<&MacArg>,
    args: Option<&Args>,
    cni_args: &str,
) -> Result<Option<[u8; 6]>, CniError> {
    // CNI_ARGS is parsed (and must be well formed) whichever source wins, like the reference.
    let parsed = CniArgs::parse(cni_args)?;
    let from_config = |path: &str, text: Option<&String>| -> Result<Option<[u8; 6]>, CniError> {
        match text.filter(|t| !t.is_empty()) {
            None => Ok(None),
            Some(t) => parse_unicast_mac(t)
                .map(Some)
                .ok_or_else(|| CniError::invalid_config(path, format!("{t:?} is not a unicast MAC address"))),
        }
    };
    if let Some(mac) = from_config("runtimeConfig.mac", runtime.and_then(|r| r.mac.as_ref()))? {
        return Ok(Some(mac));
    }
    let args_mac = args.and_then(|a| a.cni.as_ref()).and_then(|c| c.mac.as_ref());
    if let Some(mac) = from_config("args.cni.mac", args_mac)? {
        return Ok(Some(mac));
    }
    match parsed.get("MAC").filter(|m| !m.is_empty()) {
        None => Ok(None),
        Some(t) => parse_unicast_mac(t).map(Some).ok_or_else(|| {
            CniError::invalid_env("CNI_ARGS", format!("MAC={t:?} is not a unicast MAC address"))
        }),
    }
}

/// A MAC usable on an interface: six octets, not multicast (bit 0 of the first octet).
fn parse_unicast_mac(text: &str) -> Option<[u8; 6]> {
    parse_mac(text).filter(|m| m[0] & 1 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> Result<BridgeSpec, CniError> {
        parse(&v, "", true)
    }

    #[test]
    fn defaults_match_the_reference() {
        let s = spec(json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"})).unwrap();
        assert_eq!(s.bridge, "cni0");
        assert!(!s.is_gateway && !s.is_default_gateway && !s.force_address && !s.ip_masq);
        assert_eq!(s.ip_masq_backend, BackendChoice::Auto);
        assert_eq!((s.mtu, s.vlan, s.has_trunk), (None, 0, false));
        assert!(!s.hairpin && !s.promisc && !s.preserve_default_vlan && !s.enable_dad);
        assert!(!s.disable_container_interface && !s.port_isolation);
        assert_eq!(s.ipam, None);
        assert_eq!(s.mac, None);
    }

    #[test]
    fn keys_are_case_insensitive_and_default_gateway_implies_gateway() {
        let s = spec(json!({"Bridge": "br9", "ISDEFAULTGATEWAY": true, "MTU": 1450,
                            "ipam": {"type": "host-local"}, "hairpinmode": true}))
        .unwrap();
        assert_eq!(s.bridge, "br9");
        assert!(s.is_gateway && s.is_default_gateway && s.hairpin);
        assert_eq!(s.mtu, Some(1450));
        assert_eq!(s.ipam.as_deref(), Some("host-local"));
    }

    #[test]
    fn l2_mode_when_ipam_type_missing_or_empty() {
        assert_eq!(spec(json!({"ipam": {}})).unwrap().ipam, None);
        assert_eq!(spec(json!({"ipam": {"type": ""}})).unwrap().ipam, None);
    }

    #[test]
    fn rejects_bad_values_naming_the_field() {
        let cases = [
            (json!({"vlan": 4095}), "invalid vlan"),
            (json!({"vlan": -1}), "invalid vlan"),
            (json!({"mtu": "1450"}), "invalid mtu"),
            (json!({"mtu": 20}), "invalid mtu"),
            (json!({"bridge": "a/b"}), "invalid bridge"),
            (json!({"bridge": "0123456789abcdef"}), "invalid bridge"),
            (json!({"bridge": "0123456789ab", "vlan": 100, "isGateway": true}), "invalid bridge"),
            (json!({"hairpinMode": true, "promiscMode": true}), "invalid promiscMode"),
            (
                json!({"disableContainerInterface": true, "ipam": {"type": "x"}}),
                "invalid disableContainerInterface",
            ),
            (json!({"ipMasqBackend": "pf"}), "invalid ipMasqBackend"),
            (json!({"vlanTrunk": [{"minID": 5}]}), "invalid vlanTrunk[0].maxID"),
            (json!({"vlanTrunk": [{"id": 1}, {"minID": 9, "maxID": 3}]}), "invalid vlanTrunk[1].minID"),
            (json!({"vlanTrunk": [{"id": 0}]}), "invalid vlanTrunk[0].id"),
            (json!({"runtimeConfig": {"mac": "01:00:00:00:00:01"}}), "invalid runtimeConfig.mac"),
            (json!({"args": {"cni": {"mac": "nope"}}}), "invalid args.cni.mac"),
        ];
        for (v, msg) in cases {
            let e = spec(v.clone()).unwrap_err();
            assert_eq!((e.code, e.msg.as_str()), (7, msg), "{v}");
        }
        assert!(spec(json!({"macspoofchk": true})).unwrap().macspoofchk);
        let e = parse(&json!({}), "MAC=zz", true).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_ARGS"));
    }

    #[test]
    fn add_only_rules_do_not_block_del() {
        assert!(parse(&json!({"hairpinMode": true, "promiscMode": true}), "", false).is_ok());
    }

    #[test]
    fn trunk_expands_ranges_and_ids() {
        let s = spec(json!({"vlanTrunk": [{"minID": 10, "maxID": 12}, {"id": 20}, {"id": 11}]})).unwrap();
        assert_eq!(s.trunk, vec![10, 11, 12, 20]);
        assert!(s.vlan_filtering());
        assert!(spec(json!({"vlanTrunk": []})).unwrap().vlan_filtering());
    }

    #[test]
    fn mac_precedence() {
        let v = json!({"runtimeConfig": {"mac": "0a:00:00:00:00:01"}, "args": {"cni": {"mac": "0a:00:00:00:00:02"}}});
        assert_eq!(parse(&v, "MAC=0a:00:00:00:00:03", true).unwrap().mac, Some([10, 0, 0, 0, 0, 1]));
        let v = json!({"args": {"cni": {"mac": "0a:00:00:00:00:02"}}});
        assert_eq!(parse(&v, "MAC=0a:00:00:00:00:03", true).unwrap().mac, Some([10, 0, 0, 0, 0, 2]));
        let e = parse(&json!({}), "IgnoreUnknown=1;K8S_POD_NAME=x;MAC=0A:00:00:00:00:03", true).unwrap();
        assert_eq!(e.mac, Some([10, 0, 0, 0, 0, 3]));
    }
}

#[cfg(test)]
mod prop_tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const FIELDS: &[&str] = &[
        "bridge",
        "isGateway",
        "isDefaultGateway",
        "mtu",
        "vlan",
        "vlanTrunk",
        "ipam",
        "dns",
        "args",
        "runtimeConfig",
        "ipMasqBackend",
        "hairpinMode",
        "macspoofchk",
    ];

    proptest! {
        /// Arbitrary values in every known field never panic: they decode or give a CNI error.
        #[test]
        fn arbitrary_config_never_panics(values in prop::collection::vec(any_json(), FIELDS.len()),
                                         cni_args in ".{0,30}") {
            let mut conf = serde_json::Map::new();
            for (k, v) in FIELDS.iter().zip(values) {
                conf.insert((*k).to_string(), v);
            }
            if let Err(e) = parse(&Value::Object(conf), &cni_args, true) {
                prop_assert!([2, 4, 7].contains(&e.code), "{e:?}");
            }
        }
    }
}
