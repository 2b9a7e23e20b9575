//! Building each plugin's stdin from the list, as libcni `buildOneConfig` does
//! (docs/cni.md §4.1): the plugin object with the list's `name` and `cniVersion`
//! imposed, `prevResult` when there is one, and `runtimeConfig` holding the capability
//! arguments the plugin declared in `capabilities`. Keys sorted, compact.

use serde_json::{json, Map, Value};

use crate::conflist::NetworkList;

/// The capability arguments `plugin` asked for (`"capabilities": {"<key>": true}`).
pub fn runtime_config(plugin: &Map<String, Value>, cap_args: &Map<String, Value>) -> Map<String, Value> {
    let mut rc = Map::new();
    if let Some(Value::Object(caps)) = plugin.get("capabilities") {
        for (cap, wanted) in caps {
            if wanted == &Value::Bool(true) {
                if let Some(arg) = cap_args.get(cap) {
                    rc.insert(cap.clone(), arg.clone());
                }
            }
        }
    }
    rc
}

/// The stdin of one plugin for ADD, CHECK or DEL.
pub fn build(
    list: &NetworkList,
    plugin: &Map<String, Value>,
    prev_result: Option<&Value>,
    cap_args: &Map<String, Value>,
) -> Vec<u8> {
    let mut conf = plugin.clone();
    conf.insert("name".into(), json!(list.name));
    conf.insert("cniVersion".into(), json!(list.cni_version));
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    let rc = runtime_config(plugin, cap_args);
    // An empty runtimeConfig is not injected; a non-empty one replaces the plugin's own.
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    weft_common::json::to_sorted_compact(&Value::Object(conf))
}

/// The stdin of one plugin for GC or STATUS: `name` and `cniVersion` only (no
/// `runtimeConfig`, no `prevResult`; cnitool passes no `cni.dev/valid-attachments`).
pub fn build_bare(list: &NetworkList, plugin: &Map<String, Value>) -> Vec<u8> {
    let mut conf = plugin.clone();
    conf.insert("name".into(), json!(list.name));
    conf.insert("cniVersion".into(), json!(list.cni_version));
    weft_common::json::to_sorted_compact(&Value::Object(conf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conflist::parse_list;

    #[test]
    fn injects_name_version_prev_result_and_filtered_capabilities() {
        let list = parse_list(
            br#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[
                {"type":"flannel","name":"ignored","cniVersion":"9.9.9","delegate":{"hairpinMode":true}},
                {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false},
                 "runtimeConfig":{"old":1}}]}"#,
        )
        .unwrap();
        let caps = json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],
                          "bandwidth":{"ingressRate":1}});
        let caps = caps.as_object().unwrap();
        let first = String::from_utf8(build(&list, &list.plugins[0], None, caps)).unwrap();
        assert_eq!(
            first,
            r#"{"cniVersion":"0.3.1","delegate":{"hairpinMode":true},"name":"cbr0","type":"flannel"}"#
        );
        let prev = json!({"cniVersion":"0.3.1","ips":[]});
        let second: Value =
            serde_json::from_slice(&build(&list, &list.plugins[1], Some(&prev), caps)).unwrap();
        assert_eq!(second["prevResult"], prev);
        assert_eq!(
            second["runtimeConfig"],
            json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]})
        );
        let bare: Value = serde_json::from_slice(&build_bare(&list, &list.plugins[1])).unwrap();
        assert_eq!(bare["runtimeConfig"], json!({"old": 1}));
        assert!(bare.get("prevResult").is_none());
    }
}
