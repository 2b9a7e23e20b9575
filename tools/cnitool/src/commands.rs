//! Running a network list: ADD, CHECK, DEL, GC, STATUS as libcni `api.go` does
//! (docs/cni.md §4.1, §4.4). Plugins are exec'd through `weft_common::cni::invoke`.

use serde_json::{Map, Value};
use weft_common::cni::conf::validate_network_name;
use weft_common::cni::invoke;
use weft_common::cni::skel::{validate_container_id, validate_ifname};
use weft_common::cni::version::Version;
use weft_common::cni::{CniError, CniResult, Command};

use crate::cache::{Cache, CacheEntry, Cached, KIND_V1};
use crate::conflist::NetworkList;
use crate::error::Error;
use crate::request;

/// One attachment as a runtime describes it (libcni `RuntimeConf`) plus where plugins live.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` pairs, passed to every plugin joined as `K=V;K=V`.
    pub cni_args: Vec<[String; 2]>,
    /// Capability arguments (`CAP_ARGS`), filtered per plugin into `runtimeConfig`.
    pub cap_args: Map<String, Value>,
    /// `CNI_PATH`, `:`-separated.
    pub cni_path: String,
    pub cache: Cache,
}

impl Runtime {
    fn cni_args_string(&self) -> String {
        self.cni_args.iter().map(|[k, v]| format!("{k}={v}")).collect::<Vec<_>>().join(";")
    }

    /// Runs one plugin; `attached` is false for GC and STATUS, which have no attachment
    /// (their `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` are empty, as libcni sends them).
    fn exec(
        &self,
        plugin: &Map<String, Value>,
        command: Command,
        stdin: &[u8],
        attached: bool,
    ) -> Result<Vec<u8>, Error> {
        let kind = plugin.get("type").and_then(Value::as_str).unwrap_or_default();
        let verb = verb(command);
        let fail = |source: CniError| Error::Plugin { plugin: kind.to_string(), verb, source };
        let path = invoke::find_plugin(kind, &self.cni_path).map_err(fail)?;
        let args = self.cni_args_string();
        let (cid, netns, ifname) = if attached {
            (self.container_id.as_str(), self.netns.as_str(), self.ifname.as_str())
        } else {
            ("", "", "")
        };
        // Every CNI_* variable is set, possibly empty, so none leaks from our environment.
        let env = [
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", netns),
            ("CNI_ARGS", args.as_str()),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", self.cni_path.as_str()),
        ];
        invoke::exec(&path, command, &env, stdin).map_err(fail)
    }
}

fn verb(command: Command) -> &'static str {
    match command {
        Command::Add => "add",
        Command::Del => "delete",
        Command::Check => "check",
        Command::Gc => "gc",
        Command::Status => "status",
        Command::Version => "version",
    }
}

fn list_version(list: &NetworkList) -> Result<Version, Error> {
    let text = if list.cni_version.is_empty() { "0.1.0" } else { list.cni_version.as_str() };
    Version::parse(text).ok_or_else(|| Error::Invalid(format!("invalid cniVersion {:?}", list.cni_version)))
}

/// A result normalised in its own version (as libcni re-marshals results).
fn normalise(value: &Value, default_version: &str) -> Result<Value, CniError> {
    let result = CniResult::parse(value, default_version)?;
    result.render(&result.cni_version)
}

/// The cached result converted to the list's version, or `None` (missing or unusable).
fn cached_result(list: &NetworkList, cached: &Cached) -> Option<Value> {
    let version = if list.cni_version.is_empty() { "0.1.0" } else { list.cni_version.as_str() };
    let result = CniResult::parse(cached.result()?, version).ok()?;
    result.render(version).ok()
}

/// libcni validates container ID, network name and ifname before ADD; weft does it for
/// every attachment command, because the three name the cache file (no `/` may get in).
fn validate(list: &NetworkList, rt: &Runtime) -> Result<(), Error> {
    let invalid = |e: CniError| Error::Invalid(e.to_string());
    validate_container_id(&rt.container_id).map_err(invalid)?;
    validate_network_name(Some(&Value::String(list.name.clone()))).map_err(invalid)?;
    validate_ifname(&rt.ifname).map_err(invalid)
}

/// ADD: every plugin in order, each getting the previous result; the final result is
/// cached and returned (in the version it was produced in).
pub fn add(list: &NetworkList, rt: &Runtime) -> Result<Value, Error> {
    validate(list, rt)?;
    let default_version = if list.cni_version.is_empty() { "0.1.0" } else { list.cni_version.as_str() };
    let mut prev: Option<Value> = None;
    for plugin in &list.plugins {
        let stdin = request::build(list, plugin, prev.as_ref(), &rt.cap_args);
        let out = rt.exec(plugin, Command::Add, &stdin, true)?;
        let kind = plugin.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
        let fail = |source: CniError| Error::Plugin { plugin: kind.clone(), verb: "add", source };
        let value: Value = serde_json::from_slice(&out).map_err(|e| {
            fail(CniError::new(
                weft_common::cni::ErrorCode::Decode,
                "failed to decode the plugin's result",
                e.to_string(),
            ))
        })?;
        prev = Some(normalise(&value, default_version).map_err(fail)?);
    }
    let result = prev.unwrap_or(Value::Null);
    rt.cache.write(&CacheEntry {
        kind: KIND_V1.into(),
        container_id: rt.container_id.clone(),
        config: list.bytes.clone(),
        if_name: rt.ifname.clone(),
        network_name: list.name.clone(),
        netns: rt.netns.clone(),
        cni_args: rt.cni_args.clone(),
        capability_args: rt.cap_args.clone(),
        result: Some(result.clone()),
    })?;
    Ok(result)
}

/// DEL: every plugin in reverse order, with the cached result as `prevResult` (≥ 0.4.0);
/// the cache entry is removed once all succeeded. An unusable cache entry is dropped and
/// DEL goes on without `prevResult`.
pub fn del(list: &NetworkList, rt: &Runtime) -> Result<(), Error> {
    validate(list, rt)?;
    let mut prev = None;
    if list_version(list)? >= Version::V0_4_0 {
        let cached = rt.cache.read(&list.name, &rt.container_id, &rt.ifname);
        prev = cached.as_ref().ok().and_then(|c| cached_result(list, c));
        if prev.is_none() && !matches!(cached, Ok(Cached::Missing)) {
            rt.cache.remove(&list.name, &rt.container_id, &rt.ifname)?;
        }
    }
    for plugin in list.plugins.iter().rev() {
        let stdin = request::build(list, plugin, prev.as_ref(), &rt.cap_args);
        rt.exec(plugin, Command::Del, &stdin, true)?;
    }
    rt.cache.remove(&list.name, &rt.container_id, &rt.ifname)?;
    Ok(())
}

/// CHECK: only for ≥ 0.4.0, skipped with `disableCheck`; list order, cached `prevResult`.
pub fn check(list: &NetworkList, rt: &Runtime) -> Result<(), Error> {
    if list_version(list)? < Version::V0_4_0 {
        return Err(Error::Invalid(format!(
            "configuration version {:?} does not support the CHECK command",
            list.cni_version
        )));
    }
    if list.disable_check {
        return Ok(());
    }
    validate(list, rt)?;
    let cached = rt.cache.read(&list.name, &rt.container_id, &rt.ifname)?;
    if let Cached::Corrupt(why) = &cached {
        return Err(Error::Invalid(format!("failed to get network {:?} cached result: {why}", list.name)));
    }
    let prev = cached_result(list, &cached);
    for plugin in &list.plugins {
        let stdin = request::build(list, plugin, prev.as_ref(), &rt.cap_args);
        rt.exec(plugin, Command::Check, &stdin, true)?;
    }
    Ok(())
}

/// GC without a valid-attachment list (what cnitool does): DEL every cached attachment of
/// the network with its cached netns, CNI_ARGS and capability args, then (1.1.0 lists)
/// GC to every plugin. All failures are collected.
pub fn gc(list: &NetworkList, rt: &Runtime) -> Result<(), Error> {
    if list.disable_gc {
        return Ok(());
    }
    let mut errors = Vec::new();
    for entry in rt.cache.attachments(&list.name)? {
        let stale = Runtime {
            container_id: entry.container_id.clone(),
            netns: entry.netns.clone(),
            ifname: entry.if_name.clone(),
            cni_args: entry.cni_args.clone(),
            cap_args: entry.capability_args.clone(),
            cni_path: rt.cni_path.clone(),
            cache: rt.cache.clone(),
        };
        if let Err(e) = del(list, &stale) {
            errors.push(Error::Invalid(format!(
                "failed to delete stale attachment {} {}: {e}",
                entry.container_id, entry.if_name
            )));
        }
    }
    if list_version(list)? >= Version::V1_1_0 {
        for plugin in &list.plugins {
            if let Err(e) = rt.exec(plugin, Command::Gc, &request::build_bare(list, plugin), false) {
                errors.push(e);
            }
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Many(errors)),
    }
}

/// STATUS: every plugin in order (1.1.0 lists only; older lists have nothing to ask).
pub fn status(list: &NetworkList, rt: &Runtime) -> Result<(), Error> {
    if list_version(list)? < Version::V1_1_0 {
        return Ok(());
    }
    for plugin in &list.plugins {
        rt.exec(plugin, Command::Status, &request::build_bare(list, plugin), false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conflist::parse_list;

    #[test]
    fn names_that_would_escape_the_cache_dir_are_refused_before_any_plugin_runs() {
        let d = tempfile::tempdir().unwrap();
        let list =
            parse_list(br#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"nonexistent"}]}"#).unwrap();
        let rt = Runtime {
            container_id: "cnitool-0123456789abcdef0123".into(),
            netns: "/run/netns/x".into(),
            ifname: "../../x".into(),
            cni_args: Vec::new(),
            cap_args: Map::new(),
            cni_path: d.path().display().to_string(),
            cache: Cache::new(d.path()),
        };
        for result in [add(&list, &rt).map(|_| ()), del(&list, &rt), check(&list, &rt)] {
            let e = result.unwrap_err();
            assert!(matches!(e, Error::Invalid(_)) && e.to_string().contains("CNI_IFNAME"), "{e}");
        }
        let mut bad_name = list.clone();
        bad_name.name = "../n".into();
        let rt = Runtime { ifname: "eth0".into(), ..rt };
        assert!(matches!(del(&bad_name, &rt), Err(Error::Invalid(_))));
        // With valid names the plugin lookup is reached (and fails: it does not exist).
        assert!(matches!(del(&list, &rt), Err(Error::Plugin { .. })));
    }
}
