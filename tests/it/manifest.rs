//! The release build carries no test machinery: tokio's `test-util` (paused time, which only
//! the seed sweep builds runtimes with) comes in through the `sweep` feature, which only the
//! dev-dependency of the package on itself turns on (docs/dependencies.md).

use toml::Table;

fn manifest() -> Table {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    text.parse().unwrap()
}

fn features(dep: &toml::Value) -> Vec<&str> {
    dep.get("features")
        .and_then(toml::Value::as_array)
        .map(|a| a.iter().filter_map(toml::Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn tokio_test_util_is_only_in_the_test_build() {
    let m = manifest();
    let normal = &m["dependencies"]["tokio"];
    assert!(!features(normal).contains(&"test-util"), "{normal}");
    let sweep = m["features"]["sweep"].as_array().unwrap();
    assert!(sweep.iter().any(|f| f.as_str() == Some("tokio/test-util")), "{sweep:?}");
    assert!(!m["features"].as_table().unwrap().contains_key("default"));
    let me = &m["dev-dependencies"]["compshare-teardown"];
    assert_eq!(me["path"].as_str(), Some("."));
    assert_eq!(features(me), ["sweep"]);
    // Nor may a normal dependency turn the feature on.
    assert!(!m["dependencies"].as_table().unwrap().contains_key("compshare-teardown"));
}
