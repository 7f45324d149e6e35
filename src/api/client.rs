//! The HTTP client: one reqwest client, form POSTs (JSON POSTs for the monitor action) signed
//! per request, answers decoded leniently into typed results or an [`ApiError`].

use std::time::Duration;

use serde_json::{Map, Value};
use url::Url;

use super::error::{ApiError, TransportKind};
use super::sign::{Params, sign_in_place, sign_json_in_place};
use super::{Transport, lenient};
use crate::credentials::Credentials;

/// Header carrying the gateway's request id; quoted in every error for support tickets.
pub(crate) const REQUEST_ID_HEADER: &str = "X-UCLOUD-REQUEST-UUID";

/// 4 MiB: the largest answer read. A full 100-row Describe page is ~200 KiB; a body far
/// beyond that is a broken or hostile server, and reading it whole could exhaust memory.
pub const MAX_ANSWER: usize = 4 << 20;

/// How to reach the API.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: Url,
    pub credentials: Credentials,
    /// Sub-accounts must name a project; the main account may leave it out.
    pub project_id: Option<String>,
    pub connect_timeout: Duration,
    /// Whole-request timeout. The gateway itself gives up after 60 s (RetCode 110), so 30 s
    /// (the SDKs' default) keeps a stuck call from holding a concurrency slot for long.
    pub timeout: Duration,
}

impl ClientConfig {
    pub fn new(base_url: Url, credentials: Credentials) -> ClientConfig {
        ClientConfig {
            base_url,
            credentials,
            project_id: None,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A signed CompShare API client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The `Describe*` reads, on connections of their own: a connection's read buffer grows
    /// to the largest answer it carried (a 100-row page, ~200 KiB) and keeps that size while
    /// it idles in the pool. Shared with Stop and Terminate, every one of the 64+ connections
    /// of a large batch ended up holding one (11 MiB at 10,000 instances); apart, only the
    /// few connections the looks use do.
    reads: reqwest::Client,
    config: ClientConfig,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, reqwest::Error> {
        let build = || {
            reqwest::Client::builder()
                .user_agent(concat!("compshare-teardown/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(config.connect_timeout)
                .timeout(config.timeout)
                .build()
        };
        Ok(Client {
            http: build()?,
            reads: build()?,
            config,
        })
    }

    /// The pool an action's requests go through.
    fn pool(&self, action: &str) -> &reqwest::Client {
        if action.starts_with("Describe") {
            &self.reads
        } else {
            &self.http
        }
    }

    /// Sign and send one action; returns the decoded JSON body of a `RetCode: 0` answer.
    pub async fn call(&self, action: &str, mut params: Params) -> Result<Answer, ApiError> {
        params.insert("Action".to_owned(), action.to_owned());
        if let Some(project) = &self.config.project_id {
            params.entry("ProjectId".to_owned()).or_insert_with(|| project.clone());
        }
        sign_in_place(
            &mut params,
            &self.config.credentials.public_key,
            &self.config.credentials.private_key,
        );
        // The very map that was signed is the one sent.
        let request = self.pool(action).post(self.url(action)).form(&params);
        self.exchange(action, request).await
    }

    /// Sign and send one action as a JSON body (see [`Transport::call_json`]).
    pub async fn call_json(&self, action: &str, mut body: Map<String, Value>) -> Result<Answer, ApiError> {
        body.insert("Action".to_owned(), Value::String(action.to_owned()));
        if let Some(project) = &self.config.project_id {
            body.entry("ProjectId".to_owned())
                .or_insert_with(|| Value::String(project.clone()));
        }
        sign_json_in_place(
            &mut body,
            &self.config.credentials.public_key,
            &self.config.credentials.private_key,
        );
        // Serialised once, from the very object that was signed. Serialising a map of JSON
        // values cannot fail.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let request = self
            .pool(action)
            .post(self.url(action))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes);
        self.exchange(action, request).await
    }

    /// The endpoint, with `Action` in the query as the SDKs add it (logs and proxies see
    /// which action a request is; it carries nothing secret).
    fn url(&self, action: &str) -> Url {
        let mut url = self.config.base_url.clone();
        url.query_pairs_mut().append_pair("Action", action);
        url
    }

    /// Send a built request and decode its answer.
    async fn exchange(&self, action: &str, request: reqwest::RequestBuilder) -> Result<Answer, ApiError> {
        tracing::trace!(action, "sending");
        let transport = |e: reqwest::Error| ApiError::Transport {
            action: action.to_owned(),
            kind: transport_kind(&e),
            detail: error_chain(&e),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        // What the server sends is masked before anything keeps it: a server that echoes the
        // private key (in an error message, a name, a header) must not put it in a report,
        // a journal or a log.
        let key = &self.config.credentials.private_key;
        let request_id = response
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| key.mask(v).into_owned());
        let body = capped_body(response, action).await?;
        // Looked for as bytes: the key is text, so it is in the body's text exactly when its
        // bytes are in the body. A lossy UTF-8 copy of every answer (a Describe page is up to
        // 200 KiB) only to look was a tenth of the tool's CPU at 10,000 instances.
        let body = if memchr::memmem::find(&body, key.expose().as_bytes()).is_some() {
            key.mask(&String::from_utf8_lossy(&body)).into_owned().into_bytes()
        } else {
            body
        };
        if status.as_u16() >= 400 {
            return Err(ApiError::Http {
                action: action.to_owned(),
                status: status.as_u16(),
                snippet: snippet(&body),
                request_id,
            });
        }
        decode_envelope(action, body, request_id)
    }
}

/// The answer's body, refused beyond [`MAX_ANSWER`] (before reading it, when the server says
/// its length; else as soon as it grows past the cap).
async fn capped_body(mut response: reqwest::Response, action: &str) -> Result<Vec<u8>, ApiError> {
    let too_large = || ApiError::Decode {
        action: action.to_owned(),
        detail: format!(
            "the answer is larger than {} MiB; refusing to read it",
            MAX_ANSWER >> 20
        ),
        request_id: None,
    };
    let announced = response.content_length();
    if announced.is_some_and(|n| n > MAX_ANSWER as u64) {
        return Err(too_large());
    }
    // Sized once from the announced length (within the cap): grown chunk by chunk, a 200 KiB
    // page was copied five times over and left the allocator large blocks to merge.
    let mut body = Vec::with_capacity(announced.and_then(|n| usize::try_from(n).ok()).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(|e| ApiError::Transport {
        action: action.to_owned(),
        kind: transport_kind(&e),
        detail: error_chain(&e),
    })? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Transport for Client {
    async fn call(&self, action: &str, params: Params) -> Result<Answer, ApiError> {
        Client::call(self, action, params).await
    }

    async fn call_json(&self, action: &str, body: Map<String, Value>) -> Result<Answer, ApiError> {
        Client::call_json(self, action, body).await
    }
}

/// Decode `{RetCode, Message?, ...}`; `RetCode` may be a number or a numeric string.
pub(crate) fn decode_envelope(action: &str, body: Vec<u8>, request_id: Option<String>) -> Result<Answer, ApiError> {
    /// The envelope's two fields; serde skips the rest of the body without building it.
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "RetCode", default)]
        ret_code: Option<Value>,
        #[serde(rename = "Message", default)]
        message: Option<Value>,
    }
    let head: Head = serde_json::from_slice(&body).map_err(|e| ApiError::Decode {
        action: action.to_owned(),
        detail: format!("{e}: {}", snippet(&body)),
        request_id: request_id.clone(),
    })?;
    let code = head
        .ret_code
        .as_ref()
        .and_then(lenient::value_to_i64)
        .ok_or_else(|| ApiError::Decode {
            action: action.to_owned(),
            detail: format!("no RetCode in {}", snippet(&body)),
            request_id: request_id.clone(),
        })?;
    if code != 0 {
        let message = head
            .message
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or("(no message)")
            .to_owned();
        return Err(ApiError::RetCode {
            action: action.to_owned(),
            code,
            message,
            request_id,
        });
    }
    Ok(Answer(body))
}

/// The body of an answer whose `RetCode` was 0, read into the type the caller wants in one
/// pass: a Describe page of 100 rows parsed through a `serde_json::Value` tree first cost
/// half the tool's CPU in allocations at 10,000 instances.
#[derive(Clone)]
pub struct Answer(Vec<u8>);

/// Its length, not its bytes: a Describe page is up to 200 KiB.
impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Answer({} bytes)", self.0.len())
    }
}

impl Answer {
    /// The body as `T`, which may borrow from it (see `api::look`).
    pub fn parse<'a, T: serde::Deserialize<'a>>(&'a self, action: &str) -> Result<T, ApiError> {
        serde_json::from_slice(&self.0).map_err(|e| ApiError::Decode {
            action: action.into(),
            detail: e.to_string(),
            request_id: None,
        })
    }

    #[cfg(test)]
    pub(crate) fn from_body(body: Vec<u8>) -> Answer {
        Answer(body)
    }

    /// The body as a JSON value (a body that was read once always parses again).
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.0).unwrap_or_default()
    }
}

/// A short, single-line excerpt of a body for error messages (HTML tags stripped).
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(if c.is_whitespace() { ' ' } else { c }),
            _ => {}
        }
    }
    let collapsed = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() > 120 {
        format!("{}…", collapsed.chars().take(120).collect::<String>())
    } else {
        collapsed
    }
}

fn transport_kind(e: &reqwest::Error) -> TransportKind {
    if e.is_connect() {
        TransportKind::Connect
    } else if e.is_timeout() {
        TransportKind::Timeout
    } else if e.is_request() || e.is_body() || e.is_decode() {
        TransportKind::Closed
    } else {
        TransportKind::Other
    }
}

/// reqwest's top-level message hides the cause ("error sending request"), and the middle of
/// the chain repeats it; the innermost cause is what a person needs ("Connection refused",
/// "connection closed before message completed").
fn error_chain(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let text = root.to_string();
    match e.url() {
        Some(url) => text.replace(&format!(" for url ({url})"), ""),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_accepts_string_retcode_and_missing_message() {
        assert!(decode_envelope("X", br#"{"RetCode":"0"}"#.to_vec(), None).is_ok());
        let e = decode_envelope("X", br#"{"RetCode":"153"}"#.to_vec(), Some("rid".into())).unwrap_err();
        assert_eq!(e.code(), Some(153));
        assert_eq!(e.request_id(), Some("rid"));
        assert!(matches!(
            decode_envelope("X", b"<html>bad gateway</html>".to_vec(), None),
            Err(ApiError::Decode { .. })
        ));
        assert!(matches!(
            decode_envelope("X", br#"{"Action":"X"}"#.to_vec(), None),
            Err(ApiError::Decode { .. })
        ));
    }

    #[test]
    fn snippet_strips_html() {
        assert_eq!(
            snippet(b"<html><body><h1>502 Bad Gateway</h1>\n<hr>nginx</body></html>"),
            "502 Bad Gateway nginx"
        );
    }
}
