//! Request signing: the UCloud/CompShare SHA-1 scheme.
//!
//! Owns the two pure steps every request goes through: flattening a nested parameter value into
//! the flat `Key.N.Sub` string map that is both signed and sent, and computing `Signature` over
//! that very map. Keeping one map for both is the whole point: signing `true` while sending
//! `True` is a classic cause of RetCode 171.

use std::collections::BTreeMap;

use serde_json::Value;
use sha1::{Digest, Sha1};

use crate::credentials::PrivateKey;

/// Flat request parameters, ordered byte-wise by key (the order `BTreeMap<String, _>` gives,
/// which is the order the signature requires: `Backends.10` < `Backends.2`, `CPU` < `ChargeType`).
pub type Params = BTreeMap<String, String>;

/// Flatten one parameter value under `key` into `out`, following the SDKs' form encoding:
/// arrays become `Key.0`, `Key.1`…; objects become `Key.Sub`; arrays of objects `Key.N.Sub`;
/// bools `true`/`false`; numbers in plain decimal (no exponent, no `.0` on integral floats).
/// Nulls and empty strings are dropped, as the Go SDK does.
fn flatten_into(out: &mut Params, key: &str, value: &Value) {
    match value {
        Value::Null => {}
        Value::Bool(b) => {
            out.insert(key.to_owned(), b.to_string());
        }
        Value::Number(n) => {
            out.insert(key.to_owned(), number_text(n));
        }
        Value::String(s) => {
            if !s.is_empty() {
                out.insert(key.to_owned(), s.clone());
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten_into(out, &format!("{key}.{i}"), item);
            }
        }
        Value::Object(map) => {
            for (sub, item) in map {
                flatten_into(out, &format!("{key}.{sub}"), item);
            }
        }
    }
}

/// Flatten a JSON object of top-level parameters.
pub(crate) fn flatten(object: &serde_json::Map<String, Value>) -> Params {
    let mut out = Params::new();
    for (key, value) in object {
        flatten_into(&mut out, key, value);
    }
    out
}

/// Plain decimal text for a number: integers as they are, floats via Rust's shortest
/// round-trip `Display`, which never uses an exponent and prints `42.0` as `42`.
pub(crate) fn number_text(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        // `as_f64` is always `Some` for a number that is neither i64 nor u64.
        format!("{}", n.as_f64().unwrap_or_default())
    }
}

/// The string that is hashed: every `key` + `value` in byte order, unescaped, then the
/// private key. [`signature`] hashes these bytes without building the string; the tests pin
/// both to the documented vectors.
#[cfg(test)]
fn string_to_sign(params: &Params, private_key: &PrivateKey) -> String {
    let mut s = String::new();
    for (k, v) in params {
        if k == "Signature" {
            continue;
        }
        s.push_str(k);
        s.push_str(v);
    }
    s.push_str(private_key.expose());
    s
}

/// `Signature` = lowercase hex SHA-1 of every `key` + `value` in byte order, unescaped, then
/// the private key. `params` must already contain `PublicKey`; a `Signature` entry, if
/// present, is ignored.
pub fn signature(params: &Params, private_key: &PrivateKey) -> String {
    // Hashed piece by piece, the same bytes as `string_to_sign` in the same order: no copy
    // of the whole request (100 IDs for a look) and none of the private key.
    let mut hasher = Sha1::new();
    for (k, v) in params.iter().filter(|(k, _)| k.as_str() != "Signature") {
        hasher.update(k.as_bytes());
        hasher.update(v.as_bytes());
    }
    hasher.update(private_key.expose().as_bytes());
    crate::credentials::hex(&hasher.finalize())
}

/// The string hashed for a JSON-body request (`GetCompShareInstanceMonitor`, or the Go SDK's
/// opt-in JSON encoder): top-level keys in byte order, each followed by its value text, where
/// an array is the concatenation of its items' texts with no indices or separator
/// (`UHostIds: ["a","b"]` signs as `UHostIdsab`, what compshare-cli does) and an object is
/// its `k`+`v` pairs in key order; then the private key. `Signature` is skipped. A flat body
/// gives the same string as form mode.
pub(crate) fn json_string_to_sign(object: &serde_json::Map<String, Value>, private_key: &PrivateKey) -> String {
    let sorted: BTreeMap<&String, &Value> = object.iter().filter(|(k, _)| k.as_str() != "Signature").collect();
    let mut s = String::new();
    for (k, v) in sorted {
        s.push_str(k);
        json_value_text(&mut s, v);
    }
    s.push_str(private_key.expose());
    s
}

/// One value's text in a JSON-body signature (see [`json_string_to_sign`]).
fn json_value_text(out: &mut String, value: &Value) {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number_text(n)),
        Value::String(s) => out.push_str(s),
        Value::Array(items) => items.iter().for_each(|item| json_value_text(out, item)),
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            for (k, v) in sorted {
                out.push_str(k);
                json_value_text(out, v);
            }
        }
    }
}

/// Add `PublicKey` and `Signature` to a JSON body, in place, signed over
/// [`json_string_to_sign`]: the body is sent as it is, so what is signed is what is sent.
pub fn sign_json_in_place(object: &mut serde_json::Map<String, Value>, public_key: &str, private_key: &PrivateKey) {
    object.remove("Signature");
    object.insert("PublicKey".to_owned(), Value::String(public_key.to_owned()));
    let sig = crate::credentials::sha1_hex(json_string_to_sign(object, private_key).as_bytes());
    object.insert("Signature".to_owned(), Value::String(sig));
}

/// Add `PublicKey` and `Signature` to `params`, in place.
pub fn sign_in_place(params: &mut Params, public_key: &str, private_key: &PrivateKey) {
    params.remove("Signature");
    params.insert("PublicKey".to_owned(), public_key.to_owned());
    let sig = signature(params, private_key);
    params.insert("Signature".to_owned(), sig);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PUB: &str = "ucloudsomeone@example.com1296235120854146120";
    fn private() -> PrivateKey {
        PrivateKey::new("46f09bb9fab4f12dfc160dae12273d5332b5debe")
    }

    fn obj(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn official_doc_vector() {
        let mut p = flatten(&obj(
            json!({"Action": "DescribeUHostInstance", "Region": "cn-bj2", "Limit": 10}),
        ));
        p.insert("PublicKey".into(), PUB.into());
        assert_eq!(
            string_to_sign(&p, &private()),
            "ActionDescribeUHostInstanceLimit10PublicKeyucloudsomeone@example.com1296235120854146120Regioncn-bj246f09bb9fab4f12dfc160dae12273d5332b5debe"
        );
        assert_eq!(signature(&p, &private()), "cba5cf5ec4d4233d206b1b54951e3787350a642f");
    }

    #[test]
    fn mirror_sites_public_key_vector() {
        let mut p = flatten(&obj(
            json!({"Action": "DescribeUHostInstance", "Region": "cn-bj2", "Limit": 10}),
        ));
        p.insert("PublicKey".into(), "someone@example.com1296235120854146120".into());
        assert_eq!(signature(&p, &private()), "4201919d267504385deb93af19e0197870fed36b");
    }

    fn create_uhost() -> serde_json::Map<String, Value> {
        obj(json!({
            "Action": "CreateUHostInstance", "CPU": 2, "ChargeType": "Month", "DiskSpace": 10,
            "ImageId": "f43736e1-65a5-4bea-ad2e-8a46e18883c2", "LoginMode": "Password", "Memory": 2048,
            "Name": "Host01", "Password": "VUNsb3VkLmNu", "Quantity": 1, "Region": "cn-bj2", "Zone": "cn-bj2-04",
        }))
    }

    #[test]
    fn go_create_sign_vector_sorts_bytewise() {
        let mut p = flatten(&create_uhost());
        sign_in_place(&mut p, PUB, &private());
        assert!(string_to_sign(&p, &private()).starts_with("ActionCreateUHostInstanceCPU2ChargeTypeMonth"));
        assert_eq!(p["Signature"], "4f9ef5df2abab2c6fccd1e9515cb7e2df8c6bb65");
    }

    #[test]
    fn go_sts_vector() {
        let mut m = create_uhost();
        m.insert("SecurityToken".into(), json!("some_stoken"));
        let mut p = flatten(&m);
        sign_in_place(&mut p, PUB, &private());
        assert_eq!(p["Signature"], "170c480ad176a247b324eb92a2cfe536aacfbd04");
    }

    #[test]
    fn go_long_array_vector_index_order() {
        let items: Vec<Value> = (0..12)
            .map(|i| match i % 3 {
                0 => json!("foo"),
                1 => json!("bar"),
                _ => json!(42),
            })
            .collect();
        let mut p = flatten(&obj(json!({"Action": "AllocateBackendBatch", "Backends": items})));
        p.insert("PublicKey".into(), PUB.into());
        assert!(string_to_sign(&p, &private()).contains("Backends.1barBackends.10barBackends.1142Backends.242"));
        assert_eq!(signature(&p, &private()), "6bc32642779f8cb0bb3d3f128b1c0688abf9a1a3");
    }

    #[test]
    fn python_vectors() {
        let p = flatten(&obj(json!({"foo": "bar"})));
        assert_eq!(
            signature(&p, &PrivateKey::new("my_private_key")),
            "634edc1bb957c0d65e5ab5494cf3b7784fbc87af"
        );
        let mut p = flatten(&obj(json!({"foo": "bar"})));
        sign_in_place(&mut p, "my_public_key", &PrivateKey::new("my_private_key"));
        assert_eq!(p["Signature"], "d4411ab30953fb0bbcb1e7313081f05e4e91a394");
    }

    #[test]
    fn flattening_vectors() {
        let p = flatten(&obj(json!({
            "Ips": ["127.0.0.1", "192.168.1.1"],
            "IsValid": true,
            "Arr": [{"Region": "cn-bj2"}, {"Region": "cn-sh1"}],
            "Ptr": {"Region": "cn-bj2"},
            "Nest": [{"Nest2": {"Int": 1, "Str": "str"}}],
            "F1": 42.0, "F2": 42.1, "F3": 42.42, "Big": 1e21, "U": 42u64,
            "Empty": "", "Nothing": null,
            "TemplateParams": ["中文"],
        })));
        let want: Vec<(&str, &str)> = vec![
            ("Arr.0.Region", "cn-bj2"),
            ("Arr.1.Region", "cn-sh1"),
            ("Big", "1000000000000000000000"),
            ("F1", "42"),
            ("F2", "42.1"),
            ("F3", "42.42"),
            ("Ips.0", "127.0.0.1"),
            ("Ips.1", "192.168.1.1"),
            ("IsValid", "true"),
            ("Nest.0.Nest2.Int", "1"),
            ("Nest.0.Nest2.Str", "str"),
            ("Ptr.Region", "cn-bj2"),
            ("TemplateParams.0", "中文"),
            ("U", "42"),
        ];
        let got: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn widened_f32_keeps_its_digits() {
        let p = flatten(&obj(json!({"f": f64::from(42.1f32)})));
        assert_eq!(p["f"], "42.099998474121094");
    }

    /// Derived, not official: no published vector covers the JSON-body signature of
    /// `GetCompShareInstanceMonitor`. This one is built by the rule compshare-cli follows
    /// (`UHostIds` replaced by the concatenation of its elements, then the usual sorted
    /// key+value string) with the official doc's key pair, and its SHA-1 computed outside
    /// this code (Python's `hashlib.sha1(s.encode()).hexdigest()` of the string below).
    #[test]
    fn monitor_json_body_vector_derived() {
        let mut body = obj(json!({
            "Action": "GetCompShareInstanceMonitor", "Region": "cn-wlcb", "Zone": "cn-wlcb-01",
            "UHostIds": ["uhost-1paxrg4g1vfw", "cpod-1tq6i2ltk5mj"],
        }));
        sign_json_in_place(&mut body, PUB, &private());
        assert_eq!(
            json_string_to_sign(&body, &private()),
            "ActionGetCompShareInstanceMonitorPublicKeyucloudsomeone@example.com1296235120854146120\
             Regioncn-wlcbUHostIdsuhost-1paxrg4g1vfwcpod-1tq6i2ltk5mjZonecn-wlcb-01\
             46f09bb9fab4f12dfc160dae12273d5332b5debe"
        );
        assert_eq!(body["Signature"], "44a3c9993142019c232f5298453b4062f7c43755");
        // The array itself is sent: the body keeps `UHostIds` as a JSON array.
        assert_eq!(body["UHostIds"], json!(["uhost-1paxrg4g1vfw", "cpod-1tq6i2ltk5mj"]));
        // The order of the IDs is signed: the same IDs swapped sign differently.
        let mut swapped = obj(json!({
            "Action": "GetCompShareInstanceMonitor", "Region": "cn-wlcb", "Zone": "cn-wlcb-01",
            "UHostIds": ["cpod-1tq6i2ltk5mj", "uhost-1paxrg4g1vfw"],
        }));
        sign_json_in_place(&mut swapped, PUB, &private());
        assert_ne!(swapped["Signature"], body["Signature"]);
    }

    #[test]
    fn signature_entry_is_not_signed() {
        let mut p = flatten(&obj(json!({"foo": "bar"})));
        let before = signature(&p, &PrivateKey::new("k"));
        p.insert("Signature".into(), "whatever".into());
        assert_eq!(signature(&p, &PrivateKey::new("k")), before);
    }
}
