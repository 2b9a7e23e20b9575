//! Reading a plugin's network configuration from stdin the way the Go reference does.
//!
//! Go's decoder matches keys case-insensitively (`"IPAM"` is `ipam`) and ignores unknown
//! keys; [`fold_keys`] gives serde the same leniency for a known vocabulary, and [`decode`]
//! turns serde's errors into code 7 errors that name the field path.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{CniError, ErrorCode};

/// Keys every CNI config may carry (the spec's well-known keys and DNS fields).
pub const COMMON_KEYS: &[&str] = &[
    "cniVersion",
    "name",
    "type",
    "capabilities",
    "runtimeConfig",
    "args",
    "prevResult",
    "ipMasq",
    "ipam",
    "dns",
    "nameservers",
    "domain",
    "search",
    "options",
];

/// Parses stdin as a JSON object (code 6 when it is empty or not JSON).
pub fn parse_json(stdin: &[u8]) -> Result<Value, CniError> {
    if stdin.iter().all(u8::is_ascii_whitespace) {
        return Err(CniError::new(
            ErrorCode::Decode,
            "error unmarshall network config",
            "stdin is empty: the network configuration must be given as JSON on stdin",
        ));
    }
    let value: Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(ErrorCode::Decode, "error unmarshall network config", e.to_string()))?;
    if !value.is_object() {
        return Err(CniError::new(
            ErrorCode::Decode,
            "error unmarshall network config",
            "the network configuration must be a JSON object",
        ));
    }
    Ok(value)
}

/// Renames, recursively, every object key that equals one of `vocab` ignoring ASCII case to
/// that spelling, so `"IPAM"`/`"DataDir"` decode like `ipam`/`dataDir`. `prevResult` is
/// left alone (results are produced by programs, not people).
pub fn fold_keys(value: &mut Value, vocab: &[&[&str]]) {
    match value {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let canonical =
                    vocab.iter().flat_map(|v| v.iter()).find(|k| k.eq_ignore_ascii_case(&key) && **k != key);
                if let Some(canonical) = canonical {
                    if let Some(v) = map.remove(&key) {
                        map.insert((*canonical).to_string(), v);
                    }
                }
            }
            for (key, v) in map.iter_mut() {
                if key != "prevResult" {
                    fold_keys(v, vocab);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fold_keys(v, vocab)),
        _ => {}
    }
}

/// Deserialises `value` into `T`; a type error becomes code 7 naming the field path, prefixed
/// with `prefix` (e.g. `ipam`), as in `invalid ipam.ranges[0][0].subnet`.
pub fn decode<T: DeserializeOwned>(value: &Value, prefix: &str) -> Result<T, CniError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (prefix.is_empty(), inner == ".") {
            (true, _) => inner,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{inner}"),
        };
        let mut why = e.into_inner().to_string();
        // serde_json appends " at line L column C", meaningless for a re-decoded value.
        if let Some(i) = why.find(" at line ") {
            why.truncate(i);
        }
        CniError::invalid_config(&path, why)
    })
}

/// Validates a network `name` (docs/cni.md §2.2): required, `[A-Za-z0-9][A-Za-z0-9_.-]*`
/// and, because host-local uses it as a directory name, never `.` or `..`.
pub fn validate_network_name(name: Option<&Value>) -> Result<String, CniError> {
    let name = match name {
        None | Some(Value::Null) => {
            return Err(CniError::new(
                ErrorCode::InvalidConfig,
                "missing network name",
                "the configuration has no \"name\"",
            ))
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(CniError::invalid_config("name", format!("must be a string, got {other}")))
        }
    };
    if name.is_empty() {
        return Err(CniError::new(ErrorCode::InvalidConfig, "missing network name", "\"name\" is empty"));
    }
    if !is_valid_id(&name) {
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            "invalid characters found in network name",
            format!("name {name:?} must match [A-Za-z0-9][A-Za-z0-9_.-]*"),
        ));
    }
    Ok(name)
}

/// The spec's identifier rule shared by container IDs and network names.
pub fn is_valid_id(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "camelCase")]
    struct Inner {
        #[allow(dead_code)]
        subnet: String,
        data_dir: Option<String>,
    }
    #[derive(Deserialize, Debug)]
    struct Outer {
        ranges: Vec<Vec<Inner>>,
    }

    #[test]
    fn folds_key_case() {
        let mut v = json!({"IPAM": {"DataDir": "/x", "TYPE": "host-local"}, "prevResult": {"IPS": 1}});
        fold_keys(&mut v, &[COMMON_KEYS, &["dataDir"]]);
        assert_eq!(v["ipam"]["dataDir"], "/x");
        assert_eq!(v["ipam"]["type"], "host-local");
        assert_eq!(v["prevResult"]["IPS"], 1);
    }

    #[test]
    fn decode_names_the_path() {
        let v = json!({"ranges": [[{"subnet": 5}]]});
        let e = decode::<Outer>(&v, "ipam").unwrap_err();
        assert_eq!(e.code, 7);
        assert_eq!(e.msg, "invalid ipam.ranges[0][0].subnet");
        let ok = decode::<Outer>(&json!({"ranges": [[{"subnet": "a", "dataDir": "/d"}]]}), "").unwrap();
        assert_eq!(ok.ranges[0][0].data_dir.as_deref(), Some("/d"));
    }

    #[test]
    fn stdin_must_be_an_object() {
        assert_eq!(parse_json(b"").unwrap_err().code, 6);
        assert_eq!(parse_json(b"  \n").unwrap_err().code, 6);
        assert_eq!(parse_json(b"{nope").unwrap_err().code, 6);
        assert_eq!(parse_json(b"[1]").unwrap_err().code, 6);
        assert!(parse_json(b"{}").is_ok());
    }

    #[test]
    fn network_names() {
        assert!(validate_network_name(Some(&json!("cbr0"))).is_ok());
        assert_eq!(validate_network_name(None).unwrap_err().code, 7);
        for bad in ["../x", "a/b", ".", "..", "", "-a", "a b"] {
            assert_eq!(validate_network_name(Some(&json!(bad))).unwrap_err().code, 7, "{bad}");
        }
    }
}
