//! The bytes of an audit event that become its Merkle leaf: JSON with a
//! version, fixed top-level field order and object keys sorted at every
//! level, no insignificant whitespace. The stored string *is* the leaf data;
//! this encoding only has to be stable so that the same event is always
//! written the same way, and simple enough for a customer to re-parse.

use serde_json::Value;

/// Version of the canonical event encoding (the `v` field).
pub const VERSION: u64 = 1;

/// Writes `value` as JSON with object keys sorted (byte order) at every level.
pub fn write_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(*k) {
                    write_sorted(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The canonical form of any JSON value (sorted keys, compact).
pub fn to_canonical(value: &Value) -> String {
    let mut out = String::new();
    write_sorted(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sorted_at_every_level_and_compact() {
        let v = serde_json::json!({"b": 1, "a": {"z": [ {"y": 1, "x": 2} ], "c": "é\n"}});
        assert_eq!(
            to_canonical(&v),
            r#"{"a":{"c":"é\n","z":[{"x":2,"y":1}]},"b":1}"#
        );
        let again: Value = serde_json::from_str(&to_canonical(&v)).unwrap_or_default();
        assert_eq!(
            to_canonical(&again),
            to_canonical(&v),
            "stable when re-parsed"
        );
    }
}
