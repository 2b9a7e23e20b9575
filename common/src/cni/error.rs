//! The CNI error document (`{"cniVersion","code","msg","details"}`) and its codes.
//!
//! Each plugin maps its own error enum into [`CniError`] in one place; a delegate's error
//! passes through unchanged with its own code.

use serde::{Deserialize, Serialize};

/// The spec's well-known error codes (docs/cni.md §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    InvalidNetns = 8,
    TryAgainLater = 11,
    PluginNotAvailable = 50,
    PluginDegraded = 51,
    /// Kernel or internal failure (the reference plugins' catch-all).
    Internal = 999,
}

/// A CNI error as printed on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}{}", if .details.is_empty() { String::new() } else { format!("; {}", .details) })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError { code: code as u32, msg: msg.into(), details: details.into() }
    }

    /// Code 7: the config field at `path` (e.g. `ipam.ranges[0][0].subnet`) is invalid.
    pub fn invalid_config(path: &str, why: impl Into<String>) -> Self {
        CniError::new(ErrorCode::InvalidConfig, format!("invalid {path}"), why)
    }

    /// Code 4: the `CNI_*` variable `var` is missing or invalid.
    pub fn invalid_env(var: &str, why: impl Into<String>) -> Self {
        CniError::new(ErrorCode::InvalidEnvironment, format!("invalid {var}"), why)
    }

    /// Code 999 with the operation and the cause.
    pub fn internal(msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError::new(ErrorCode::Internal, msg, details)
    }

    /// Code 1, with the reference's details text: Go's `%q` of the version and of the list
    /// (`["0.1.0" "0.2.0" …]`, space-separated).
    pub fn incompatible_version(requested: &str) -> Self {
        let supported: Vec<String> = super::version::SUPPORTED.iter().map(|v| format!("{v:?}")).collect();
        CniError::new(
            ErrorCode::IncompatibleVersion,
            "incompatible CNI versions",
            format!("config is {requested:?}, plugin supports [{}]", supported.join(" ")),
        )
    }

    /// The error document, with `cniVersion` set to the request's version.
    pub fn to_json(&self, cni_version: &str) -> String {
        let doc = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        let mut doc = doc;
        if !self.details.is_empty() {
            doc["details"] = serde_json::Value::String(self.details.clone());
        }
        serde_json::to_string_pretty(&doc).unwrap_or_else(|_| String::from("{}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incompatible_version_details_read_like_the_reference() {
        let e = CniError::incompatible_version("9.9.9");
        assert_eq!(
            e.details,
            r#"config is "9.9.9", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]"#
        );
    }

    #[test]
    fn renders_spec_shape() {
        let e = CniError::invalid_config("ipam.ranges[0][0].subnet", "\"10.0.0.0/33\" is not a CIDR");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(v["code"], 7);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["msg"], "invalid ipam.ranges[0][0].subnet");
        assert!(v["details"].as_str().unwrap().contains("10.0.0.0/33"));
    }

    #[test]
    fn omits_empty_details() {
        let e = CniError::internal("boom", "");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("0.4.0")).unwrap();
        assert!(v.get("details").is_none());
        assert_eq!(e.to_string(), "boom");
    }
}
