//! Where credentials come from and in which order, the base URL rules, accounts, and what a malformed source says (never the key).

use super::*;
use std::collections::HashMap;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn resolve_with(
    flags: (Option<&str>, Option<&str>),
    profile: Option<&str>,
    vars: &HashMap<String, String>,
    home: Option<&Path>,
) -> Result<Credentials, CredentialError> {
    let lookup = |k: &str| vars.get(k).cloned();
    resolve(&Sources {
        flag_public: flags.0.map(str::to_owned),
        flag_private: flags.1.map(str::to_owned),
        profile: profile.map(str::to_owned),
        env: &lookup,
        home: home.map(Path::to_path_buf),
    })
}

#[test]
fn private_key_never_prints() {
    let k = PrivateKey::new("s3cr3t-value");
    let c = Credentials {
        public_key: "pub".into(),
        private_key: k.clone(),
        source: "x".into(),
    };
    assert!(!format!("{k:?} {k} {c:?} {c:#?}").contains("s3cr3t"));
}

#[test]
fn flag_beats_env_beats_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join(".config/compshare");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.json"),
        r#"{"current_profile":"default","profiles":{"default":{"public_key":"filepub","private_key":"filepriv"}}}"#,
    )
    .unwrap();
    let vars = env(&[("COMPSHARE_PUBLIC_KEY", "envpub")]);
    let c = resolve_with((None, None), None, &vars, Some(dir.path())).unwrap();
    assert_eq!((c.public_key.as_str(), c.private_key.expose()), ("envpub", "filepriv"));
    let c = resolve_with((Some("flagpub"), None), None, &vars, Some(dir.path())).unwrap();
    assert_eq!(c.public_key, "flagpub");
    let vars = env(&[("UCLOUD_PUBLIC_KEY", "upub"), ("UCLOUD_PRIVATE_KEY", "upriv")]);
    let c = resolve_with((None, None), None, &vars, Some(dir.path())).unwrap();
    assert_eq!((c.public_key.as_str(), c.private_key.expose()), ("upub", "upriv"));
}

#[test]
fn compshare_profiles_and_unknown_profile() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cs.json");
    std::fs::write(&file, r#"{"current_profile":"a","profiles":{"a":{"public_key":"pa","private_key":"ka"},"b":{"public_key":"pb","private_key":"kb"}}}"#).unwrap();
    let vars = env(&[("COMPSHARE_CONFIG_FILE", file.to_str().unwrap())]);
    assert_eq!(resolve_with((None, None), None, &vars, None).unwrap().public_key, "pa");
    assert_eq!(
        resolve_with((None, None), Some("b"), &vars, None).unwrap().public_key,
        "pb"
    );
    let err = resolve_with((None, None), Some("zzz"), &vars, None).unwrap_err();
    assert!(err.to_string().contains("profile \"zzz\" not found"), "{err}");
}

#[test]
fn ucloud_files_use_active_profile() {
    let dir = tempfile::tempdir().unwrap();
    let u = dir.path().join(".ucloud");
    std::fs::create_dir_all(&u).unwrap();
    std::fs::write(
        u.join("config.json"),
        r#"[{"profile":"ucloud","active":false},{"profile":"work","active":true}]"#,
    )
    .unwrap();
    std::fs::write(u.join("credential.json"), r#"[{"public_key":"p1","private_key":"k1","profile":"ucloud"},{"public_key":"p2","private_key":"k2","profile":"work"}]"#).unwrap();
    let c = resolve_with((None, None), None, &env(&[]), Some(dir.path())).unwrap();
    assert_eq!(c.public_key, "p2");
    let c = resolve_with((None, None), Some("ucloud"), &env(&[]), Some(dir.path())).unwrap();
    assert_eq!(c.public_key, "p1");
}

#[test]
fn missing_key_names_every_place() {
    let dir = tempfile::tempdir().unwrap();
    let err = resolve_with((None, None), None, &env(&[]), Some(dir.path()))
        .unwrap_err()
        .to_string();
    for place in [
        "--public-key",
        "COMPSHARE_PUBLIC_KEY",
        "UCLOUD_PUBLIC_KEY",
        "compshare/config.json",
        ".ucloud/credential.json",
    ] {
        assert!(err.contains(place), "{err} lacks {place}");
    }
}

#[test]
fn base_url_rules() {
    assert!(parse_base_url("https://api.compshare.cn").is_ok());
    assert!(parse_base_url("http://127.0.0.1:8080").is_ok());
    assert!(parse_base_url("http://localhost:1").is_ok());
    assert!(parse_base_url("http://[::1]:9").is_ok());
    assert!(parse_base_url("http://api.compshare.cn").is_err());
    assert!(parse_base_url("http://10.0.0.1").is_err());
    assert!(parse_base_url("ftp://x").is_err());
    assert!(parse_base_url("not a url").is_err());
    for url in [
        "https://user:hunter2@api.compshare.cn",
        "https://user@api.compshare.cn",
        "https://api.compshare.cn/?ProjectId=x",
        "https://api.compshare.cn/#x",
    ] {
        let err = parse_base_url(url).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
    assert_eq!(without_userinfo("https://u:p@h/x@y"), "https://***@h/x@y");
}

#[test]
fn parse_errors_in_key_files_never_quote_values() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cs.json");
    let vars = env(&[("COMPSHARE_CONFIG_FILE", file.to_str().unwrap())]);
    for text in [
        r#"{"profiles": {"default": "SECRET-KEY-1"}}"#,
        r#"{"profiles": ["SECRET-KEY-1"]}"#,
        r#"{"current_profile": ["SECRET-KEY-1"]}"#,
        r#"{"profiles": {"default": {"private_key": 1, "public_key": "SECRET-KEY-1"}}}"#,
    ] {
        std::fs::write(&file, text).unwrap();
        let err = resolve_with((None, None), None, &vars, None).unwrap_err().to_string();
        assert!(err.contains("expected") && !err.contains("SECRET"), "{err}");
    }
    let u = dir.path().join(".ucloud");
    std::fs::create_dir_all(&u).unwrap();
    std::fs::write(u.join("credential.json"), r#"["SECRET-KEY-2"]"#).unwrap();
    let err = resolve_with((None, None), None, &env(&[]), Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("credential.json") && !err.contains("SECRET"), "{err}");
}

#[test]
fn a_missing_current_profile_is_reported_but_not_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cs.json");
    std::fs::write(
        &file,
        r#"{"current_profile":"work","profiles":{"default":{"public_key":"p","private_key":"k"}}}"#,
    )
    .unwrap();
    let vars = env(&[("COMPSHARE_CONFIG_FILE", file.to_str().unwrap())]);
    let err = resolve_with((None, None), None, &vars, None).unwrap_err().to_string();
    assert!(!err.contains("work") && err.contains("current_profile"), "{err}");
}

#[test]
fn accounts_differ_by_endpoint_project_and_key_only() {
    let u = Url::parse("https://api.compshare.cn").unwrap();
    let a = Account::new(&u, Some("p1"), "pub");
    assert_eq!(a, Account::new(&u, Some("p1"), "pub"));
    assert_eq!(a.key_fingerprint.len(), "sha1:".len() + 16);
    assert!(!a.key_fingerprint.contains("pub"));
    assert_ne!(a.slug(), Account::new(&u, Some("p2"), "pub").slug());
    assert_ne!(a.slug(), Account::new(&u, Some("p1"), "pub2").slug());
    assert_eq!(a.differences(&Account::new(&u, None, "pub")).len(), 1);
}

#[test]
fn a_key_in_current_profile_is_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join(".config/compshare");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.json"),
        r#"{"current_profile":"Pasted-Private-Key-0123","profiles":{"default":{"public_key":"p","private_key":"q"}}}"#,
    )
    .unwrap();
    let err = resolve_with((None, None), None, &env(&[]), Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(!err.contains("Pasted-Private-Key"), "{err}");
    assert!(err.contains("profile named by current_profile not found"), "{err}");
    // A name the user gave is shown.
    let err = resolve_with((None, None), Some("mine"), &env(&[]), Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("profile \"mine\" not found"), "{err}");
}
