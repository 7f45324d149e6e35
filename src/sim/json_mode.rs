//! JSON-mode signatures, which only the simulator checks: the Go SDK can send a request as a
//! JSON body, signed over a different string than form mode (the Go SDK's JSON encoder). The tool itself
//! always sends form-encoded requests ([`crate::api::sign`]), so this lives beside the
//! simulator's gateway, which accepts both.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::sign::{hex_sha1, number_text};
use crate::credentials::PrivateKey;

/// The string hashed in JSON mode (the Go SDK's opt-in JSON encoder): top-level
/// keys in byte order, each followed by its value text, where an array is the concatenation of
/// its items' texts with no indices and an object is its `k`+`v` pairs in key order; then the
/// private key. `Signature` is skipped. Flat payloads give the same string as form mode.
pub(crate) fn string_to_sign(object: &serde_json::Map<String, Value>, private_key: &PrivateKey) -> String {
    let sorted: BTreeMap<&String, &Value> = object.iter().filter(|(k, _)| k.as_str() != "Signature").collect();
    let mut s = String::new();
    for (k, v) in sorted {
        s.push_str(k);
        value_text(&mut s, v);
    }
    s.push_str(private_key.expose());
    s
}

/// JSON-mode `Signature`: lowercase hex SHA-1 of [`string_to_sign`].
pub fn signature(object: &serde_json::Map<String, Value>, private_key: &PrivateKey) -> String {
    hex_sha1(&string_to_sign(object, private_key))
}

/// One value's text in JSON mode (see [`string_to_sign`]).
fn value_text(out: &mut String, value: &Value) {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number_text(n)),
        Value::String(s) => out.push_str(s),
        Value::Array(items) => items.iter().for_each(|item| value_text(out, item)),
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            for (k, v) in sorted {
                out.push_str(k);
                value_text(out, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("a JSON object"),
        }
    }

    #[test]
    fn go_vector() {
        // The JSON-mode part of the Go `TestSign` vector: arrays without indices, nested maps
        // as sorted k+v, integral floats without a fraction.
        let m = obj(json!({
            "map": {"foo": "bar"}, "array": ["foo", "bar"], "arrMap": [{"foo": "bar"}],
            "arr2": [["foo", "bar"]], "f": 42.0, "b": true, "Signature": "ignored",
        }));
        assert_eq!(
            string_to_sign(&m, &PrivateKey::new("k")),
            "arr2foobararrMapfoobararrayfoobarbtruef42mapfoobark"
        );
        let flat = obj(json!({"foo": "bar", "PublicKey": "my_public_key"}));
        assert_eq!(
            signature(&flat, &PrivateKey::new("my_private_key")),
            "d4411ab30953fb0bbcb1e7313081f05e4e91a394"
        );
    }
}
