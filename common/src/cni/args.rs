//! `CNI_ARGS` (`K=V;K=V`), docs/cni.md §6.3.
//!
//! weft is lenient where the reference is strict: unknown keys are accepted whether or not
//! `IgnoreUnknown` is set, so `IP=` meant for host-local does not break bridge. A pair
//! without `=` is still an error, since it can only be a typo.

use super::error::CniError;

/// Parsed `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// Parses `raw`; empty pairs (a trailing `;`) are skipped.
    pub fn parse(raw: &str) -> Result<CniArgs, CniError> {
        let mut pairs = Vec::new();
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(CniError::invalid_env(
                    "CNI_ARGS",
                    format!("invalid pair {pair:?}: expected KEY=VALUE"),
                ));
            };
            if k.is_empty() {
                return Err(CniError::invalid_env("CNI_ARGS", format!("invalid pair {pair:?}: empty key")));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(CniArgs { pairs })
    }

    /// The value of `key` (case-sensitive, as in the reference); the last one wins.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_args() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=a-b.c;IP=10.0.0.5/24;",
        )
        .unwrap();
        assert_eq!(a.get("IP"), Some("10.0.0.5/24"));
        assert_eq!(a.get("ip"), None);
        assert_eq!(a.pairs().len(), 4);
        assert!(CniArgs::parse("").unwrap().pairs().is_empty());
    }

    #[test]
    fn rejects_pair_without_equals() {
        let e = CniArgs::parse("IP").unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_ARGS"));
        assert!(CniArgs::parse("=x").is_err());
    }
}
