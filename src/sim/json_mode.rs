//! JSON-mode signatures as the simulator's gateway checks them: the Go SDK can send any request
//! as a JSON body, signed over a different string than form mode, and the tool itself sends
//! `GetCompShareInstanceMonitor` that way. The rule lives in [`crate::api::sign`]; this is the
//! simulator's (and its tests') name for it.

use serde_json::Value;

use crate::api::sign::json_string_to_sign;
use crate::credentials::PrivateKey;
use crate::credentials::sha1_hex;

/// The string hashed in JSON mode: [`crate::api::sign`] owns the rule (the monitor action's
/// JSON body is signed by it too), so the gateway checks exactly what the client signs.
pub(crate) fn string_to_sign(object: &serde_json::Map<String, Value>, private_key: &PrivateKey) -> String {
    json_string_to_sign(object, private_key)
}

/// JSON-mode `Signature`: lowercase hex SHA-1 of [`string_to_sign`].
pub fn signature(object: &serde_json::Map<String, Value>, private_key: &PrivateKey) -> String {
    sha1_hex(string_to_sign(object, private_key).as_bytes())
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
