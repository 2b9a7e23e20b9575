//! JSON as libcni and the Go plugins write it: object keys sorted, compact.
//!
//! Go's `encoding/json` sorts map keys; runtimes and plugins re-serialise configs that way
//! (docs/cni.md §4.1, docs/flannel.md §12.3). `serde_json::Map` is only sorted when
//! its `preserve_order` feature is off, and a workspace build may turn it on through another
//! crate, so the order is imposed here explicitly.

use serde_json::{Map, Value};

/// A copy of `value` with every object's keys in sorted order (recursively).
pub fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for key in keys {
                if let Some(v) = map.get(key) {
                    out.insert(key.clone(), sorted(v));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// `value` serialised compactly with sorted keys (no trailing newline).
pub fn to_sorted_compact(value: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail (all keys are strings).
    serde_json::to_vec(&sorted(value)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_nested_keys() {
        let v = json!({"b": 1, "a": {"z": [ {"y": 1, "x": 2} ], "c": null}});
        let text = String::from_utf8(to_sorted_compact(&v)).unwrap();
        assert_eq!(text, r#"{"a":{"c":null,"z":[{"x":2,"y":1}]},"b":1}"#);
    }
}
