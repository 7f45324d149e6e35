//! One attempt at the webhook sink: `POST` the payload as JSON. 2xx means delivered; a
//! redirect is not followed (a webhook that moved is a configuration to fix, and following it
//! would send the payload somewhere not configured).

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};

use super::command::one_line;
use super::config::WebhookUrl;
use super::notifier::Failure;

/// How much of an error answer's body is read, for the log: a receiver's error message fits,
/// and a hostile or broken one cannot make the run read without end.
const BODY_LIMIT: usize = 4096;

/// The HTTP client for webhooks: its own, never the API's, so no API credential or header can
/// reach a webhook; no redirects. Building fails only when the TLS backend cannot
/// initialise; then every webhook attempt fails with that reason.
pub(super) fn client(timeout: std::time::Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(concat!("compshare-teardown/", env!("CARGO_PKG_VERSION"), " (notice)"))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .build()
        .map_err(|e| e.to_string())
}

/// `POST` once. The whole attempt's timeout is the caller's.
pub(super) async fn post(client: &reqwest::Client, url: &WebhookUrl, body: &[u8]) -> Result<(), Failure> {
    let answer = client
        .post(url.expose().clone())
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| transport(url, e))?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    if status.is_redirection() {
        return Err(Failure::Redirect(status.as_u16()));
    }
    // Only the seconds form: the date form would need the wall clock, which this room does not
    // read; without it the backoff's own delay applies.
    let retry_after = answer
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = read_capped(answer).await;
    Err(Failure::Status {
        status: status.as_u16(),
        body: url.mask(&one_line(&body)),
        retry_after,
    })
}

async fn read_capped(mut answer: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < BODY_LIMIT {
        match answer.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(BODY_LIMIT - body.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// A request that got no answer, said without the URL (reqwest's message includes it) and
/// masked again in case a cause in the chain repeats it.
fn transport(url: &WebhookUrl, e: reqwest::Error) -> Failure {
    if e.is_timeout() {
        return Failure::Transport("timed out".to_owned());
    }
    let e = e.without_url();
    let mut said = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        said.push_str(": ");
        said.push_str(&c.to_string());
        cause = c.source();
    }
    Failure::Transport(url.mask(&said))
}
