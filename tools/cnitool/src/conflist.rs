//! Loading a network list from a configuration directory, as libcni does
//! (`libcni/conf.go`, docs/cni.md §4.1).
//!
//! `*.conflist` files are tried in file-name order and the first whose `name` matches wins;
//! a file that does not parse aborts the search (libcni does the same). If no list matches,
//! single-plugin `*.conf`/`*.json` files are tried and up-converted to a one-plugin list.
//! Unless `loadOnlyInlinedPlugins` is true, `*.conf` files in `<dir>/<name>/` are appended.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use weft_common::cni::version::{Version, CURRENT};

/// Why a network could not be loaded; each names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("no net configurations found in {}", .dir.display())]
    NoConfigs { dir: PathBuf },
    #[error("no net configuration with name {name:?} in {}", .dir.display())]
    NotFound { name: String, dir: PathBuf },
    #[error("failed to read {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {why}", .path.display())]
    Parse { path: PathBuf, why: String },
}

/// A loaded network list.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    pub name: String,
    /// The list's version after `cniVersions` selection (empty if the file gives none).
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub load_only_inlined_plugins: bool,
    /// Each plugin's config object, in list order.
    pub plugins: Vec<Map<String, Value>>,
    /// The list's bytes (the file, or the up-converted single config): cached as `config`.
    pub bytes: Vec<u8>,
}

/// Files in `dir` whose extension is one of `exts`, sorted by file name. A missing
/// directory has no files.
fn conf_files(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>, ConfError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ConfError::Read { path: dir.to_path_buf(), source }),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|x| x.to_str()).is_some_and(|x| exts.contains(&x)))
        .collect();
    files.sort();
    Ok(files)
}

fn read(path: &Path) -> Result<Vec<u8>, ConfError> {
    std::fs::read(path).map_err(|source| ConfError::Read { path: path.to_path_buf(), source })
}

/// Loads the network `name` from `dir` (libcni `LoadNetworkConf`).
pub fn load(dir: &Path, name: &str) -> Result<NetworkList, ConfError> {
    let mut found = None;
    for path in conf_files(dir, &["conflist"])? {
        let list = parse_list(&read(&path)?).map_err(|why| ConfError::Parse { path: path.clone(), why })?;
        if list.name == name {
            found = Some(list);
            break;
        }
    }
    let mut list = match found {
        Some(list) => list,
        None => load_single(dir, name)?,
    };
    if !list.load_only_inlined_plugins {
        for path in conf_files(&dir.join(name), &["conf"])? {
            let plugin = parse_plugin(&read(&path)?).map_err(|why| ConfError::Parse { path, why })?;
            list.plugins.push(plugin);
        }
    }
    if list.plugins.is_empty() {
        return Err(ConfError::Parse {
            path: dir.to_path_buf(),
            why: format!("network {name:?} has no plugins"),
        });
    }
    Ok(list)
}

/// libcni `LoadConf` + `ConfListFromConf`: a single-plugin file made into a list.
fn load_single(dir: &Path, name: &str) -> Result<NetworkList, ConfError> {
    let files = conf_files(dir, &["conf", "json"])?;
    if files.is_empty() {
        return Err(ConfError::NoConfigs { dir: dir.to_path_buf() });
    }
    for path in files {
        let plugin =
            parse_plugin(&read(&path)?).map_err(|why| ConfError::Parse { path: path.clone(), why })?;
        if plugin.get("name").and_then(Value::as_str) == Some(name) {
            let version = plugin.get("cniVersion").and_then(Value::as_str).unwrap_or_default().to_string();
            let wrapped = json!({"cniVersion": version, "name": name, "plugins": [plugin]});
            let bytes = weft_common::json::to_sorted_compact(&wrapped);
            return parse_list(&bytes).map_err(|why| ConfError::Parse { path, why });
        }
    }
    Err(ConfError::NotFound { name: name.to_string(), dir: dir.to_path_buf() })
}

/// One plugin config: a JSON object with a non-empty string `type` (libcni `ConfFromBytes`).
pub fn parse_plugin(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("error parsing configuration: {e}"))?;
    let Value::Object(map) = value else {
        return Err("error parsing configuration: not a JSON object".into());
    };
    match map.get("type") {
        Some(Value::String(t)) if !t.is_empty() => Ok(map),
        _ => Err("error parsing configuration: missing 'type'".into()),
    }
}

/// A `*.conflist` document (libcni `ConfListFromBytes`).
pub fn parse_list(bytes: &[u8]) -> Result<NetworkList, String> {
    let err = |why: String| format!("error parsing configuration list: {why}");
    let value: Value = serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))?;
    let Value::Object(raw) = value else { return Err(err("not a JSON object".into())) };
    let name = match raw.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(err(format!("invalid name type {other}"))),
        None => return Err(err("no name".into())),
    };
    let mut cni_version = match raw.get("cniVersion") {
        Some(Value::String(s)) => s.clone(),
        None => String::new(),
        Some(other) => return Err(err(format!("invalid cniVersion type {other}"))),
    };
    if let Some(versions) = raw.get("cniVersions") {
        cni_version = select_version(versions, &cni_version).map_err(err)?;
    }
    let disable_check = parse_bool(&raw, "disableCheck").map_err(err)?;
    let disable_gc = parse_bool(&raw, "disableGC").map_err(err)?;
    let load_only_inlined_plugins = parse_bool(&raw, "loadOnlyInlinedPlugins").map_err(err)?;
    let mut plugins = Vec::new();
    match raw.get("plugins") {
        // The plugins may all come from `<dir>/<name>/*.conf`.
        None if !load_only_inlined_plugins => {}
        None => return Err(err("`loadOnlyInlinedPlugins` is true, and no 'plugins' key".into())),
        Some(Value::Array(items)) if items.is_empty() => return Err(err("no plugins in list".into())),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let bytes = serde_json::to_vec(item).unwrap_or_default();
                let plugin =
                    parse_plugin(&bytes).map_err(|e| format!("failed to parse plugin config {i}: {e}"))?;
                plugins.push(plugin);
            }
        }
        Some(other) => return Err(err(format!("invalid 'plugins' type {other}"))),
    }
    Ok(NetworkList {
        name,
        cni_version,
        disable_check,
        disable_gc,
        load_only_inlined_plugins,
        plugins,
        bytes: bytes.to_vec(),
    })
}

/// `cniVersions`: the highest listed version not newer than ours, `cniVersion` included.
fn select_version(versions: &Value, current: &str) -> Result<String, String> {
    let ours = Version::parse(CURRENT).unwrap_or(Version::V1_1_0);
    let Value::Array(items) = versions else {
        return Err(format!("invalid type for cniVersions: {versions}"));
    };
    let mut candidates: Vec<(Version, String)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::String(text) = item else {
            return Err(format!("invalid type for cniVersions index {i}: {item}"));
        };
        let v =
            Version::parse(text).ok_or_else(|| format!("invalid cniVersions entry {text} at index {i}"))?;
        if v <= ours {
            candidates.push((v, text.clone()));
        }
    }
    if !current.is_empty() {
        let v = Version::parse(current).ok_or_else(|| format!("invalid cniVersion {current}"))?;
        if v <= ours {
            candidates.push((v, current.to_string()));
        }
    }
    Ok(candidates.into_iter().max_by_key(|(v, _)| *v).map(|(_, t)| t).unwrap_or_else(|| current.to_string()))
}

/// A list-level boolean: JSON `true`/`false` or the strings `"true"`/`"false"` in any case.
fn parse_bool(raw: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(format!("invalid {key} value {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_configs() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../test-configs"))
    }

    /// A temp dir holding copies of the shipped conflists (not the etcd config, which is
    /// not a CNI config).
    fn netconf_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(test_configs()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|x| x == "conflist") {
                std::fs::copy(&p, d.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        d
    }

    #[test]
    fn loads_every_shipped_conflist_by_name() {
        let d = netconf_dir();
        let flannel = load(d.path(), "cbr0").unwrap();
        assert_eq!(flannel.cni_version, "0.3.1");
        let types: Vec<_> = flannel.plugins.iter().map(|p| p["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["flannel", "portmap"]);
        assert_eq!(flannel.bytes, std::fs::read(test_configs().join("10-flannel.conflist")).unwrap());
        assert_eq!(load(d.path(), "weft-bridge").unwrap().plugins.len(), 1);
        assert_eq!(load(d.path(), "weft-dualstack").unwrap().cni_version, "1.0.0");
        let pm = load(d.path(), "weft-portmap").unwrap();
        let types: Vec<_> = pm.plugins.iter().map(|p| p["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["bridge", "portmap", "bandwidth"]);
        let e = load(d.path(), "nope").unwrap_err();
        assert!(matches!(e, ConfError::NoConfigs { .. }), "{e}");
    }

    #[test]
    fn first_file_by_name_wins_and_parse_errors_abort() {
        let d = tempfile::tempdir().unwrap();
        let list = |v: &str| format!(r#"{{"name":"n","cniVersion":"{v}","plugins":[{{"type":"x"}}]}}"#);
        std::fs::write(d.path().join("20-b.conflist"), list("1.0.0")).unwrap();
        std::fs::write(d.path().join("10-a.conflist"), list("0.4.0")).unwrap();
        assert_eq!(load(d.path(), "n").unwrap().cni_version, "0.4.0");
        std::fs::write(d.path().join("05-broken.conflist"), "{").unwrap();
        let e = load(d.path(), "n").unwrap_err();
        assert!(e.to_string().contains("05-broken.conflist"), "{e}");
    }

    #[test]
    fn single_conf_is_up_converted_and_subdir_plugins_appended() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("50-one.conf"),
            r#"{"cniVersion":"0.4.0","name":"one","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::create_dir(d.path().join("one")).unwrap();
        std::fs::write(d.path().join("one/extra.conf"), r#"{"type":"tuning"}"#).unwrap();
        let l = load(d.path(), "one").unwrap();
        assert_eq!(l.cni_version, "0.4.0");
        let types: Vec<_> = l.plugins.iter().map(|p| p["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["bridge", "tuning"]);
        let e = load(d.path(), "two").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("no net configuration with name \"two\" in {}", d.path().display())
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_lists_never_panic(
            name in proptest::option::of("[a-z]{0,4}"),
            version in proptest::option::of("[0-9.]{0,6}"),
            versions in proptest::collection::vec("[0-9.x]{0,6}", 0..3),
            plugins in proptest::collection::vec(proptest::option::of("[a-z/]{0,4}"), 0..3),
            flag in proptest::option::of("(true|FALSE|yes|)"),
        ) {
            let plugins: Vec<Value> = plugins.into_iter().map(|t| json!({"type": t})).collect();
            let doc = json!({"name": name, "cniVersion": version, "cniVersions": versions,
                             "disableCheck": flag, "plugins": plugins});
            let _ = parse_list(&serde_json::to_vec(&doc).unwrap());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = parse_list(&bytes);
        }
    }

    #[test]
    fn list_fields() {
        let l = parse_list(
            br#"{"name":"n","cniVersion":"0.3.1","cniVersions":["1.0.0","9.0.0","0.4.0"],
                 "disableCheck":"TRUE","disableGC":false,"plugins":[{"type":"a"}]}"#,
        )
        .unwrap();
        assert_eq!(l.cni_version, "1.0.0");
        assert!(l.disable_check && !l.disable_gc);
        assert!(parse_list(br#"{"name":"n","disableCheck":"yes","plugins":[{"type":"a"}]}"#).is_err());
        assert!(parse_list(br#"{"name":"n","plugins":[]}"#).unwrap_err().contains("no plugins"));
        assert!(parse_list(br#"{"name":"n","plugins":[{"x":1}]}"#).unwrap_err().contains("missing 'type'"));
        assert!(parse_list(br#"{"plugins":[]}"#).unwrap_err().contains("no name"));
    }
}
