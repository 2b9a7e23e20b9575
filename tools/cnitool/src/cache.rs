//! The result cache, in libcni's `cniCacheV1` format (docs/cni.md §4.3).
//!
//! One file per attachment, `<cacheDir>/results/<network>-<containerID>-<ifname>`,
//! directory 0700, file 0600. Files written by libcni ≥ 1.2 and by weft are interchangeable,
//! so a runtime built on libcni can read what cnitool cached and the other way round.
//! `netns` is always written: `cnitool gc` needs it to remove the interfaces.

use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `kind` of a current cache file.
pub const KIND_V1: &str = "cniCacheV1";
/// libcni's default cache directory (results live in its `results/` sub-directory).
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

/// Errors of the cache; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("failed to write cache file {}: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("failed to read cache {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("failed to remove cache file {}: {source}", .path.display())]
    Remove { path: PathBuf, source: std::io::Error },
}

/// One cache file (field order as libcni writes it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    pub kind: String,
    pub container_id: String,
    /// The network list's bytes, base64 in the file (Go's `[]byte` encoding).
    #[serde(with = "b64")]
    pub config: Vec<u8>,
    pub if_name: String,
    pub network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<[String; 2]>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub capability_args: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        // Go writes `null` for a nil slice.
        let text: Option<String> = Option::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.unwrap_or_default())
            .map_err(serde::de::Error::custom)
    }
}

/// What a cache file turned out to hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    /// No file.
    Missing,
    /// A `cniCacheV1` entry.
    Entry(Box<CacheEntry>),
    /// Something else that parses as JSON: a pre-v1 file holding the bare result.
    Legacy(Value),
    /// Not JSON at all.
    Corrupt(String),
}

impl Cached {
    /// The cached result, whatever the file format.
    pub fn result(&self) -> Option<&Value> {
        match self {
            Cached::Entry(e) => e.result.as_ref(),
            Cached::Legacy(v) => Some(v),
            Cached::Missing | Cached::Corrupt(_) => None,
        }
    }
}

/// The cache directory (`<cacheDir>/results`).
#[derive(Debug, Clone)]
pub struct Cache {
    results: PathBuf,
}

impl Cache {
    /// A cache rooted at `cache_dir` (libcni's `CacheDir`, default [`DEFAULT_CACHE_DIR`]).
    pub fn new(cache_dir: &Path) -> Cache {
        Cache { results: cache_dir.join("results") }
    }

    /// `<results>/<network>-<containerID>-<ifname>`.
    pub fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.results.join(format!("{network}-{container_id}-{ifname}"))
    }

    /// Writes `entry` (0600, atomically, in a 0700 directory).
    pub fn write(&self, entry: &CacheEntry) -> Result<PathBuf, CacheError> {
        let path = self.path(&entry.network_name, &entry.container_id, &entry.if_name);
        let write_err = |source| CacheError::Write { path: path.clone(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.results).map_err(write_err)?;
        let bytes = serde_json::to_vec(entry).map_err(|e| write_err(e.into()))?;
        weft_common::fs::write_replace(&path, &bytes, 0o600).map_err(write_err)?;
        Ok(path)
    }

    /// Reads the entry of one attachment.
    pub fn read(&self, network: &str, container_id: &str, ifname: &str) -> Result<Cached, CacheError> {
        let path = self.path(network, container_id, ifname);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Cached::Missing),
            Err(source) => return Err(CacheError::Read { path, source }),
        };
        Ok(parse(&bytes))
    }

    /// Removes the entry of one attachment; already gone is success.
    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), CacheError> {
        let path = self.path(network, container_id, ifname);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CacheError::Remove { path, source }),
        }
    }

    /// Every `cniCacheV1` entry of `network` (libcni `GetCachedAttachments`), in file order.
    /// Files of other kinds and unreadable files are skipped, as libcni does.
    pub fn attachments(&self, network: &str) -> Result<Vec<CacheEntry>, CacheError> {
        let entries = match std::fs::read_dir(&self.results) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(CacheError::Read { path: self.results.clone(), source }),
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        Ok(paths
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|b| match parse(&b) {
                Cached::Entry(e) if e.network_name == network => Some(*e),
                _ => None,
            })
            .collect())
    }
}

/// Classifies the bytes of a cache file.
pub fn parse(bytes: &[u8]) -> Cached {
    match serde_json::from_slice::<CacheEntry>(bytes) {
        Ok(entry) if entry.kind == KIND_V1 => Cached::Entry(Box::new(entry)),
        _ => match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => Cached::Legacy(v),
            Err(e) => Cached::Corrupt(e.to_string()),
        },
    }
}

/// Base64 as used for `config` (exposed for tests and tools reading cache files).
pub fn encode_config(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    fn entry() -> CacheEntry {
        CacheEntry {
            kind: KIND_V1.into(),
            container_id: "cnitool-357cc6fe9c6932998a39".into(),
            config: br#"{"name":"mynet"}"#.to_vec(),
            if_name: "eth0".into(),
            network_name: "mynet".into(),
            netns: "/var/run/netns/c1".into(),
            cni_args: vec![["K8S_POD_NAME".into(), "p".into()]],
            capability_args: json!({"portMappings": []}).as_object().unwrap().clone(),
            result: Some(json!({"cniVersion": "1.0.0", "ips": []})),
        }
    }

    #[test]
    fn file_matches_libcni_layout() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(d.path());
        let path = cache.write(&entry()).unwrap();
        assert_eq!(path, d.path().join("results/mynet-cnitool-357cc6fe9c6932998a39-eth0"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&path), mode(&d.path().join("results"))), (0o600, 0o700));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(r#"{"kind":"cniCacheV1","containerId":"cnitool-357cc6fe9c6932998a39","config":"eyJuYW1lIjoibXluZXQifQ==","ifName":"eth0","networkName":"mynet","netns":"/var/run/netns/c1","cniArgs":[["K8S_POD_NAME","p"]],"capabilityArgs":{"portMappings":[]},"result":"#), "{text}");
        assert_eq!(
            cache.read("mynet", "cnitool-357cc6fe9c6932998a39", "eth0").unwrap(),
            Cached::Entry(Box::new(entry()))
        );
    }

    #[test]
    fn reads_libcni_files_without_optional_keys() {
        // As written by libcni < 1.2 (verified shape: no netns, cniArgs, capabilityArgs).
        let text = r#"{"kind":"cniCacheV1","containerId":"c","config":"e30=","ifName":"eth0","networkName":"n","result":{"cniVersion":"0.3.1","dns":{}}}"#;
        let Cached::Entry(e) = parse(text.as_bytes()) else { panic!() };
        assert_eq!((e.config.as_slice(), e.netns.as_str()), (&b"{}"[..], ""));
        assert_eq!(parse(br#"{"cniVersion":"0.3.1","ips":[]}"#).result().unwrap()["ips"], json!([]));
        assert!(matches!(parse(b"garbage"), Cached::Corrupt(_)));
    }

    #[test]
    fn attachments_filter_by_network_and_remove_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(d.path());
        assert!(cache.attachments("mynet").unwrap().is_empty());
        cache.write(&entry()).unwrap();
        let mut other = entry();
        other.network_name = "other".into();
        cache.write(&other).unwrap();
        std::fs::write(d.path().join("results/junk"), "x").unwrap();
        let found = cache.attachments("mynet").unwrap();
        assert_eq!(found, vec![entry()]);
        cache.remove("mynet", &entry().container_id, "eth0").unwrap();
        cache.remove("mynet", &entry().container_id, "eth0").unwrap();
        assert!(cache.attachments("mynet").unwrap().is_empty());
        assert_eq!(cache.read("mynet", &entry().container_id, "eth0").unwrap(), Cached::Missing);
    }
}
