//! The flannel plugin's network configuration (docs/flannel.md §12.1).
//!
//! Only the keys flannel reads are decoded; `delegate` and `ipam` stay opaque JSON objects
//! because everything in them is passed on to the delegate verbatim. Decoding (type errors)
//! happens for every command; the semantic checks of [`FlannelConf::validate_delegate`] only
//! matter for ADD, as upstream.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};
use weft_common::cni::conf;
use weft_common::cni::CniError;

/// Where flanneld writes its lease (`subnetFile` default).
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
/// Where the delegate configs are saved for DEL (`dataDir` default).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flannel";

/// Keys flannel adds to the common vocabulary; Go's decoder matches them in any case.
const FLANNEL_KEYS: &[&str] = &["subnetFile", "dataDir", "delegate"];

/// The wire form of the config; every field optional so that defaults are applied in one place.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default)]
    cni_version: Option<String>,
    #[serde(default)]
    subnet_file: Option<String>,
    #[serde(default)]
    data_dir: Option<String>,
    #[serde(default)]
    delegate: Option<Map<String, Value>>,
    #[serde(default)]
    ipam: Option<Map<String, Value>>,
    #[serde(default)]
    runtime_config: Option<Value>,
}

/// The decoded configuration, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct FlannelConf {
    /// Top-level `name` (already validated by the skel).
    pub name: String,
    /// Top-level `cniVersion`; empty when absent (then the delegate's own, if any, is kept).
    pub cni_version: String,
    pub subnet_file: PathBuf,
    pub data_dir: PathBuf,
    /// `delegate`, `{}` when absent.
    pub delegate: Map<String, Value>,
    /// Top-level `ipam`: the base of the delegate's `ipam`.
    pub ipam: Option<Map<String, Value>>,
    /// Top-level `runtimeConfig`, copied into the delegate when present (even `{}`).
    pub runtime_config: Option<Value>,
}

impl FlannelConf {
    /// Decodes the request config (`conf` as the skel gives it: common keys case-folded).
    /// A field of the wrong type is a code 7 error naming it.
    pub fn parse(conf: &Value, name: &str) -> Result<FlannelConf, CniError> {
        let mut conf = conf.clone();
        // Fold flannel's own keys at the top level only: a `dataDir` inside `ipam` belongs
        // to host-local and must reach it as written.
        fold_top_level(&mut conf, FLANNEL_KEYS);
        let wire: Wire = conf::decode(&conf, "")?;
        // An explicit empty string means "default", not "current directory".
        let path_or = |v: Option<String>, default: &str| {
            PathBuf::from(v.filter(|s| !s.is_empty()).unwrap_or_else(|| default.to_string()))
        };
        Ok(FlannelConf {
            name: name.to_string(),
            cni_version: wire.cni_version.unwrap_or_default(),
            subnet_file: path_or(wire.subnet_file, DEFAULT_SUBNET_FILE),
            data_dir: path_or(wire.data_dir, DEFAULT_DATA_DIR),
            delegate: wire.delegate.unwrap_or_default(),
            ipam: wire.ipam,
            runtime_config: wire.runtime_config.filter(|v| !v.is_null()),
        })
    }

    /// The ADD-time checks of upstream `cmdAdd`: `delegate.type`, if present, is a plugin
    /// name; `delegate` carries neither `name` nor `ipam` (flannel sets both).
    pub fn validate_delegate(&self) -> Result<(), CniError> {
        match self.delegate.get("type") {
            None => {}
            Some(Value::String(t)) if !t.is_empty() && !t.contains('/') => {}
            Some(Value::String(t)) => {
                return Err(CniError::invalid_config(
                    "delegate.type",
                    format!("{t:?} is not a plugin name (non-empty, no '/')"),
                ))
            }
            Some(other) => {
                return Err(CniError::invalid_config(
                    "delegate.type",
                    format!(
                        "'delegate' dictionary, if present, must have (string) 'type' field, got {other}"
                    ),
                ))
            }
        }
        for key in ["name", "ipam"] {
            if self.delegate.contains_key(key) {
                return Err(CniError::invalid_config(
                    &format!("delegate.{key}"),
                    format!("'delegate' dictionary must not have '{key}' field, it'll be set by flannel"),
                ));
            }
        }
        Ok(())
    }
}

/// Renames top-level keys that match `vocab` ignoring ASCII case to their canonical spelling.
fn fold_top_level(value: &mut Value, vocab: &[&str]) {
    let Value::Object(map) = value else { return };
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        if let Some(canonical) = vocab.iter().find(|k| k.eq_ignore_ascii_case(&key) && **k != key) {
            if let Some(v) = map.remove(&key) {
                map.insert((*canonical).to_string(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_apply() {
        let c = FlannelConf::parse(&json!({"cniVersion":"0.3.1","name":"cbr0","type":"flannel"}), "cbr0")
            .unwrap();
        assert_eq!(c.subnet_file, PathBuf::from(DEFAULT_SUBNET_FILE));
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.delegate.is_empty());
        assert_eq!(c.cni_version, "0.3.1");
        let c = FlannelConf::parse(&json!({"name":"n","SubnetFile":"/x","dataDir":""}), "n").unwrap();
        assert_eq!(c.subnet_file, PathBuf::from("/x"));
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = FlannelConf::parse(&json!({"name":"n","delegate":[1]}), "n").unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (7, "invalid delegate"));
        let e = FlannelConf::parse(&json!({"name":"n","subnetFile":5}), "n").unwrap_err();
        assert_eq!(e.msg, "invalid subnetFile");
        let e = FlannelConf::parse(&json!({"name":"n","ipam":"host-local"}), "n").unwrap_err();
        assert_eq!(e.msg, "invalid ipam");
    }

    #[test]
    fn delegate_checks() {
        let check = |d: Value| {
            FlannelConf::parse(&json!({"name":"n","delegate": d}), "n").unwrap().validate_delegate()
        };
        assert!(check(json!({"hairpinMode": true})).is_ok());
        assert!(check(json!({"type": "ipvlan"})).is_ok());
        assert_eq!(check(json!({"type": 5})).unwrap_err().msg, "invalid delegate.type");
        assert_eq!(check(json!({"type": "../x"})).unwrap_err().msg, "invalid delegate.type");
        let e = check(json!({"name": "x"})).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (7, "invalid delegate.name"));
        assert_eq!(check(json!({"ipam": {}})).unwrap_err().msg, "invalid delegate.ipam");
    }
}
