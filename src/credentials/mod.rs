//! Credentials and endpoint: where the keys come from, and the type that keeps the private key
//! out of every log, error, report and `Debug` output.
//!
//! Precedence, per field: flag > environment > file. Files, in order:
//! 1. CompShare CLI: `$COMPSHARE_CONFIG_FILE`, else `${XDG_CONFIG_HOME:-~/.config}/compshare/config.json`
//!    (`{"current_profile": "...", "profiles": {"name": {"public_key", "private_key"}}}`);
//! 2. UCloud CLI: `$UCLOUD_SHARED_CREDENTIAL_FILE`, else `~/.ucloud/credential.json` (array of
//!    `{public_key, private_key, profile}`), with the profile marked `"active": true` in
//!    `$UCLOUD_SHARED_CONFIG_FILE`, else `~/.ucloud/config.json`, when none is named.
//!
//! Also here: the base-URL rules ([`parse_base_url`]: https, or http to a loopback host; no
//! user info, query or fragment) and the [`Account`] (endpoint, project, key fingerprint) that
//! plans, journals and the run lock are bound to.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

/// The default and only production endpoint. (The UCloud SDKs default to `api.ucloud.cn`,
/// which rejects CompShare keys with RetCode 171.)
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.compshare.cn";

/// A private key. `Debug` and `Display` print `***`; the only way to the text is
/// [`PrivateKey::expose`], which the signer alone calls.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(String);

impl PrivateKey {
    pub fn new(key: impl Into<String>) -> PrivateKey {
        PrivateKey(key.into())
    }

    /// The key text, for signing only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced by `***`: for text from outside (an
    /// answer, a header, a file) before it is logged or stored, since a server or a user may
    /// echo the key back. Keys shorter than 8 characters are left alone: they could match
    /// innocent text, and no real key is that short.
    pub fn mask<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        if self.0.len() >= 8 && text.contains(self.0.as_str()) {
            std::borrow::Cow::Owned(text.replace(self.0.as_str(), "***"))
        } else {
            std::borrow::Cow::Borrowed(text)
        }
    }
}

impl std::str::FromStr for PrivateKey {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(PrivateKey::new(s))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(***)")
    }
}

impl fmt::Display for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A key pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub public_key: String,
    pub private_key: PrivateKey,
    /// Where each half came from, for `-v` diagnostics (never the values).
    pub source: String,
}

/// What went wrong finding credentials or the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "no CompShare {missing} found; looked in: {looked}. Set COMPSHARE_PUBLIC_KEY and COMPSHARE_PRIVATE_KEY, or pass --public-key/--private-key"
    )]
    Missing { missing: &'static str, looked: String },
    /// `profile` is quoted, or says where the name came from when it is not shown.
    #[error("profile {profile} not found in {file}")]
    UnknownProfile { profile: String, file: String },
    #[error("cannot read {file}: {detail}")]
    Unreadable { file: String, detail: String },
    #[error("invalid base URL {url:?}: {detail}")]
    BadUrl { url: String, detail: String },
}

/// Inputs to credential resolution; the environment is passed in so tests need not mutate it.
pub(crate) struct Sources<'a> {
    pub flag_public: Option<String>,
    pub flag_private: Option<String>,
    pub profile: Option<String>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub home: Option<PathBuf>,
}

impl Sources<'_> {
    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }
}

#[derive(Deserialize, Default)]
struct CompshareFile {
    #[serde(default)]
    current_profile: Option<String>,
    #[serde(default)]
    profiles: std::collections::BTreeMap<String, KeyPair>,
}

#[derive(Deserialize, Default, Clone)]
struct KeyPair {
    #[serde(default)]
    public_key: Option<String>,
    #[serde(default)]
    private_key: Option<String>,
    #[serde(default)]
    profile: Option<String>,
}

#[derive(Deserialize, Default)]
struct UcloudConfigEntry {
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    active: bool,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, shape: &str) -> Result<Option<T>, CredentialError> {
    let unreadable = |detail: String| CredentialError::Unreadable {
        file: path.display().to_string(),
        detail,
    };
    let text = match crate::textfile::read(path, crate::textfile::SMALL_FILE) {
        Ok(text) => text,
        Err(crate::textfile::TextFileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    // A key file holds keys: a parse error says where and what shape was expected, never
    // the value it found (which may be the private key itself).
    serde_json::from_str(&text).map(Some).map_err(|e| {
        unreadable(format!(
            "{} at line {} column {} (expected {shape})",
            crate::textfile::redacted(
                &e.to_string()
                    .replace(&format!(" at line {} column {}", e.line(), e.column()), "")
            ),
            e.line(),
            e.column()
        ))
    })
}

/// What the key files look like, for parse errors.
const COMPSHARE_SHAPE: &str =
    r#"{"current_profile": "...", "profiles": {"NAME": {"public_key": "...", "private_key": "..."}}}"#;
const UCLOUD_CREDENTIAL_SHAPE: &str = r#"[{"profile": "...", "public_key": "...", "private_key": "..."}]"#;
const UCLOUD_CONFIG_SHAPE: &str = r#"[{"profile": "...", "active": true}]"#;

/// Resolve credentials: flag > env > CompShare CLI file > UCloud CLI files, per field.
#[expect(
    clippy::too_many_lines,
    reason = "One linear walk down the precedence list reads best as one function."
)]
pub(crate) fn resolve(src: &Sources<'_>) -> Result<Credentials, CredentialError> {
    let mut looked = vec![
        "--public-key/--private-key".to_owned(),
        "COMPSHARE_PUBLIC_KEY/COMPSHARE_PRIVATE_KEY".to_owned(),
        "UCLOUD_PUBLIC_KEY/UCLOUD_PRIVATE_KEY".to_owned(),
    ];
    let mut public = src
        .flag_public
        .clone()
        .filter(|s| !s.is_empty())
        .map(|v| (v, "--public-key"));
    let mut private = src
        .flag_private
        .clone()
        .filter(|s| !s.is_empty())
        .map(|v| (v, "--private-key"));
    for (pub_var, priv_var) in [
        ("COMPSHARE_PUBLIC_KEY", "COMPSHARE_PRIVATE_KEY"),
        ("UCLOUD_PUBLIC_KEY", "UCLOUD_PRIVATE_KEY"),
    ] {
        if public.is_none() {
            public = src.var(pub_var).map(|v| (v, pub_var));
        }
        if private.is_none() {
            private = src.var(priv_var).map(|v| (v, priv_var));
        }
    }
    let profile = src
        .profile
        .clone()
        .or_else(|| src.var("COMPSHARE_PROFILE"))
        .or_else(|| src.var("UCLOUD_PROFILE"));

    if public.is_none() || private.is_none() {
        // CompShare CLI file.
        let xdg = src
            .var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| src.home.as_ref().map(|h| h.join(".config")));
        let file = src
            .var("COMPSHARE_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| xdg.map(|x| x.join("compshare/config.json")));
        if let Some(file) = file {
            looked.push(file.display().to_string());
            if let Some(cfg) = read_json::<CompshareFile>(&file, COMPSHARE_SHAPE)? {
                let (name, named_by) = match (&profile, &cfg.current_profile) {
                    (Some(p), _) => (p.clone(), ""),
                    (None, Some(c)) => (c.clone(), " (its current_profile)"),
                    (None, None) => ("default".to_owned(), ""),
                };
                match cfg.profiles.get(&name) {
                    Some(pair) => fill(&mut public, &mut private, pair, "compshare config file"),
                    // A profile someone named (the user, or the file's own current_profile)
                    // and that is missing is an error, not a reason to look elsewhere.
                    None if !named_by.is_empty() || profile.is_some() => {
                        // A name the user gave is theirs to see; the file's own
                        // current_profile is a value from a file that holds keys, and may be
                        // one pasted into the wrong field: never quoted.
                        let profile = if profile.is_some() {
                            format!("{:?}", crate::textfile::excerpt(&name))
                        } else {
                            "named by current_profile".to_owned()
                        };
                        return Err(CredentialError::UnknownProfile {
                            profile,
                            file: format!("{}{named_by}", file.display()),
                        });
                    }
                    None => {
                        looked.pop();
                        looked.push(format!(
                            "{} (no current_profile and no \"default\" profile)",
                            file.display()
                        ));
                    }
                }
            }
        }
    }
    if (public.is_none() || private.is_none())
        && let Some(home) = &src.home
    {
        let cred_file = src
            .var("UCLOUD_SHARED_CREDENTIAL_FILE")
            .map_or_else(|| home.join(".ucloud/credential.json"), PathBuf::from);
        let conf_file = src
            .var("UCLOUD_SHARED_CONFIG_FILE")
            .map_or_else(|| home.join(".ucloud/config.json"), PathBuf::from);
        looked.push(cred_file.display().to_string());
        if let Some(creds) = read_json::<Vec<KeyPair>>(&cred_file, UCLOUD_CREDENTIAL_SHAPE)? {
            let active = read_json::<Vec<UcloudConfigEntry>>(&conf_file, UCLOUD_CONFIG_SHAPE)?
                .unwrap_or_default()
                .into_iter()
                .find(|e| e.active)
                .and_then(|e| e.profile);
            let name = profile.clone().or(active).unwrap_or_else(|| "default".to_owned());
            if let Some(pair) = creds.iter().find(|p| p.profile.as_deref() == Some(name.as_str())) {
                fill(&mut public, &mut private, pair, "ucloud credential file");
            }
        }
    }
    match (public, private) {
        (Some((public_key, ps)), Some((private_key, qs))) => Ok(Credentials {
            public_key,
            private_key: PrivateKey::new(private_key),
            source: if ps == qs {
                ps.to_owned()
            } else {
                format!("{ps} + {qs}")
            },
        }),
        (None, _) => Err(CredentialError::Missing {
            missing: "public key",
            looked: looked.join(", "),
        }),
        (_, None) => Err(CredentialError::Missing {
            missing: "private key",
            looked: looked.join(", "),
        }),
    }
}

fn fill(
    public: &mut Option<(String, &'static str)>,
    private: &mut Option<(String, &'static str)>,
    pair: &KeyPair,
    source: &'static str,
) {
    if public.is_none() {
        *public = pair.public_key.clone().filter(|s| !s.is_empty()).map(|v| (v, source));
    }
    if private.is_none() {
        *private = pair.private_key.clone().filter(|s| !s.is_empty()).map(|v| (v, source));
    }
}

/// Validate a base URL: `https://` anywhere, plain `http://` only to a loopback host (the
/// simulator), because the signature does not cover a timestamp: a captured request can be
/// replayed, so it must not cross a network in clear text. No user:password (it would reach
/// debug logs and saved plans) and no query string or fragment (it would ride along on every
/// request).
pub fn parse_base_url(text: &str) -> Result<Url, CredentialError> {
    let bad = |detail: &str| CredentialError::BadUrl {
        url: crate::textfile::excerpt(&without_userinfo(text)),
        detail: detail.to_owned(),
    };
    let url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
                None => false,
            };
            if !loopback {
                return Err(bad("plain http is allowed only to a loopback host; use https"));
            }
        }
        other => return Err(bad(&format!("unsupported scheme {other:?}"))),
    }
    if url.host().is_none() {
        return Err(bad("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("a user name or password in the URL is not allowed"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a query string or fragment in the URL is not allowed"));
    }
    Ok(url)
}

/// The URL text with anything between `://` and the last `@` of the authority replaced, so an
/// error about a URL never prints its password.
fn without_userinfo(text: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return text.to_owned();
    };
    let end = text[start..].find(['/', '?', '#']).map_or(text.len(), |i| start + i);
    match text[start..end].rfind('@') {
        Some(at) => format!("{}***@{}", &text[..start], &text[start + at + 1..]),
        None => text.to_owned(),
    }
}

/// Which account a plan, a journal or a run lock belongs to: the endpoint, the project and a
/// fingerprint of the public key. Never the private key: the fingerprint is a short SHA-1 of
/// the public half only, enough to tell two keys apart and to be written down safely.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Account {
    pub endpoint: String,
    /// Empty when no project is set (the account's default project).
    pub project_id: String,
    /// `sha1:` and the first 16 hex digits of the SHA-1 of the public key.
    pub key_fingerprint: String,
}

impl Account {
    pub fn new(endpoint: &Url, project_id: Option<&str>, public_key: &str) -> Account {
        Account {
            endpoint: endpoint.as_str().trim_end_matches('/').to_owned(),
            project_id: project_id.unwrap_or_default().to_owned(),
            key_fingerprint: format!("sha1:{}", &sha1_hex(public_key.as_bytes())[..16]),
        }
    }

    /// What differs between the account a file was made for (`self`) and `now`.
    pub(crate) fn differences(&self, now: &Account) -> Vec<String> {
        let mut out = Vec::new();
        for (what, a, b) in [
            ("endpoint", &self.endpoint, &now.endpoint),
            ("project", &self.project_id, &now.project_id),
            ("public key", &self.key_fingerprint, &now.key_fingerprint),
        ] {
            if a != b {
                let show = |v: &str| {
                    if v.is_empty() {
                        "(none)".to_owned()
                    } else {
                        crate::textfile::excerpt(v)
                    }
                };
                out.push(format!("{what} {} (now {})", show(a), show(b)));
            }
        }
        out
    }

    /// A short stable name for this account, for per-account file names.
    pub fn slug(&self) -> String {
        let text = format!("{}\n{}\n{}", self.endpoint, self.project_id, self.key_fingerprint);
        sha1_hex(text.as_bytes())[..12].to_owned()
    }
}

/// Lower-case hex SHA-1.
pub(crate) fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest;
    hex(&sha1::Sha1::digest(bytes))
}

/// Lower-case hex SHA-1 of `value`'s compact JSON, hashed as serde writes it (no copy of the
/// text: a saved plan of 100,000 entries is tens of MiB).
pub(crate) fn sha1_hex_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let mut hasher = JsonHasher(<sha1::Sha1 as sha1::Digest>::new());
    serde_json::to_writer(&mut hasher, value).expect("serializes");
    hex(&<sha1::Sha1 as sha1::Digest>::finalize(hasher.0))
}

/// Feeds what serde writes straight into the hash.
struct JsonHasher(sha1::Sha1);

impl std::io::Write for JsonHasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha1::Digest::update(&mut self.0, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Lower-case hex of a digest.
pub(crate) fn hex(digest: &[u8]) -> String {
    use std::fmt::Write as _;
    digest.iter().fold(String::with_capacity(digest.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests;
