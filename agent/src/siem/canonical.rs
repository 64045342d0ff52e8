//! Canonical JSON for content hashes: object keys sorted by byte order, no
//! whitespace, strings escaped by `serde_json`. Independent of whether
//! `serde_json`'s maps preserve insertion order (a feature another crate in
//! the build may switch on).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Writes `value` canonically into `out`.
pub fn write(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    write(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// SHA-256 of the canonical form of `value`.
pub fn hash(value: &Value) -> [u8; 32] {
    let mut text = String::new();
    write(value, &mut text);
    Sha256::digest(text.as_bytes()).into()
}

/// The object holding only `keys` of `source` (those present).
pub fn pick(source: &Value, keys: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for key in keys {
        if let Some(v) = source.get(*key) {
            out.insert((*key).to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_does_not_matter() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,"x"],"x":null}}"#).unwrap_or_default();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[1,"x"]},"b":1}"#).unwrap_or_default();
        assert_eq!(hash(&a), hash(&b));
        let mut text = String::new();
        write(&a, &mut text);
        assert_eq!(text, r#"{"a":{"x":null,"y":[1,"x"]},"b":1}"#);
    }
}
