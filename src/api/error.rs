//! API errors and their retry classes.
//!
//! `ApiError` is what a call can go wrong with; `classify` is a pure function from an error to
//! what the caller should do about it (smithy-rs style: classification apart from the retry
//! loop). The workflow owns the retry loop; this module owns only the judgement.

use std::fmt;

use serde::Serialize;

/// Why the transport failed, as far as the client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// The connection could not be opened: the request never left, so nothing happened.
    Connect,
    /// No complete answer in time: the server may or may not have acted.
    Timeout,
    /// The connection closed or reset after the request was sent: the answer was lost.
    Closed,
    /// Anything else from the HTTP stack.
    Other,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "connection failed",
            TransportKind::Timeout => "timed out",
            TransportKind::Closed => "connection closed before the answer",
            TransportKind::Other => "transport error",
        })
    }
}

/// A failed API call. Every variant names the action; server-side variants carry the
/// `X-UCLOUD-REQUEST-UUID` when the server sent one, for support tickets.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ApiError {
    #[error("{action}: RetCode {code}: {message}{}", request_suffix(.request_id.as_deref()))]
    RetCode {
        action: String,
        code: i64,
        message: String,
        request_id: Option<String>,
    },
    #[error("{action}: HTTP {status}: {snippet}{}", request_suffix(.request_id.as_deref()))]
    Http {
        action: String,
        status: u16,
        snippet: String,
        request_id: Option<String>,
    },
    #[error("{action}: {kind}: {detail}")]
    Transport {
        action: String,
        kind: TransportKind,
        detail: String,
    },
    #[error("{action}: unreadable answer: {detail}{}", request_suffix(.request_id.as_deref()))]
    Decode {
        action: String,
        detail: String,
        request_id: Option<String>,
    },
}

fn request_suffix(id: Option<&str>) -> String {
    id.map(|id| format!(" (request id {id})")).unwrap_or_default()
}

impl ApiError {
    pub fn action(&self) -> &str {
        match self {
            ApiError::RetCode { action, .. }
            | ApiError::Http { action, .. }
            | ApiError::Transport { action, .. }
            | ApiError::Decode { action, .. } => action,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            ApiError::RetCode { request_id, .. }
            | ApiError::Http { request_id, .. }
            | ApiError::Decode { request_id, .. } => request_id.as_deref(),
            ApiError::Transport { .. } => None,
        }
    }

    /// The RetCode, for `RetCode` errors.
    pub fn code(&self) -> Option<i64> {
        match self {
            ApiError::RetCode { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the action can change the world (anything but `Describe*`/`Get*`).
    fn is_mutating(&self) -> bool {
        is_mutating_action(self.action())
    }
}

/// Read-only actions are safe to repeat blindly; everything else is not.
fn is_mutating_action(action: &str) -> bool {
    !(action.starts_with("Describe") || action.starts_with("Get"))
}

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryClass {
    /// The per-instance operation lock is held: wait (minutes, not seconds), re-describe, retry.
    Locked,
    /// The gateway throttled us: back off and lower the request rate.
    Throttled,
    /// Nothing happened and trying again later may work.
    Transient,
    /// A mutating call may or may not have taken effect: re-describe before deciding.
    Ambiguous,
    /// `DeleteCompshareDisk` answered 8434, "the disk is still detaching": nothing was done;
    /// look again after a while (seconds, not minutes) and retry.
    Detaching,
    /// Retrying will not help.
    Fatal,
}

/// Which RetCodes mean "the operation lock is held". The documented error is the *name*
/// `InstanceOperationInProgress`; its number is unpublished. 8903 was returned by Stop/Start on
/// a real account while an operation was running, so it is treated as the lock until proven
/// otherwise. Users can add codes (`--lock-code`) without a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockCodes(pub Vec<i64>);

impl Default for LockCodes {
    fn default() -> Self {
        LockCodes(vec![8903])
    }
}

/// The message marker of the lock error.
pub(crate) const LOCK_MARKER: &str = "InstanceOperationInProgress";

/// The title of the page the gateway's nginx answers by itself while it refuses requests
/// (overload, maintenance, `limit_req`): such a request never reached the API. The upstream's
/// own 503, passed through, carries its own body instead. The title is nginx's own wording
/// and comes first in its page, so even a short excerpt of the body shows it.
const GATEWAY_503: &str = "503 Service Temporarily Unavailable";

/// Whether a 503's body (or its excerpt) is the gateway's own refusal page.
fn is_gateway_503(snippet: &str) -> bool {
    snippet.contains(GATEWAY_503)
}

/// Classify an error. Pure: same input, same class.
///
/// Only an answer that proves nothing was done may be retried at once: a RetCode from the API,
/// the gateway's own 503 page, a 429, a connection that was never opened. Every answer to a
/// Stop or Terminate that may have followed the work (500, 502, 504, another 503, a timeout, a
/// connection closed after the request left, an unreadable body) is [`RetryClass::Ambiguous`]:
/// look first, and resend only by the settle rule.
// Arms with equal results stay apart: each documents why its codes get that class.
pub fn classify(error: &ApiError, lock_codes: &LockCodes) -> RetryClass {
    let mutating = error.is_mutating();
    match error {
        ApiError::RetCode {
            code, message, action, ..
        } => {
            // Only the disk delete means this by 8434; elsewhere the code is unknown.
            if *code == super::disk::STILL_DETACHING && action == super::disk::DELETE_DISK {
                return RetryClass::Detaching;
            }
            if message.to_ascii_lowercase().contains(&LOCK_MARKER.to_ascii_lowercase()) || lock_codes.0.contains(code) {
                return RetryClass::Locked;
            }
            match code {
                153 => RetryClass::Throttled,
                130 | 150 => RetryClass::Transient,
                // 110: the gateway gave up waiting for the backend after 60 s; the backend may
                // still have acted.
                110 if mutating => RetryClass::Ambiguous,
                110 => RetryClass::Transient,
                _ => RetryClass::Fatal,
            }
        }
        ApiError::Http { status, snippet, .. } => match status {
            // A 500, a 502 ("upstream closed") or a gateway timeout may come after the backend
            // acted: a proxy reports the lost upstream answer, not what the upstream did.
            500 | 502 | 504 if mutating => RetryClass::Ambiguous,
            // A 503 proves nothing was done only when it is the gateway's own page (it refused
            // the request itself); one passed through from upstream may follow the work.
            503 if mutating && !is_gateway_503(snippet) => RetryClass::Ambiguous,
            429 | 500 | 502 | 503 | 504 => RetryClass::Transient,
            _ => RetryClass::Fatal,
        },
        ApiError::Transport { kind, .. } => match kind {
            TransportKind::Connect => RetryClass::Transient,
            TransportKind::Timeout | TransportKind::Closed | TransportKind::Other if mutating => RetryClass::Ambiguous,
            TransportKind::Timeout | TransportKind::Closed => RetryClass::Transient,
            TransportKind::Other => RetryClass::Fatal,
        },
        // A 200 whose body is not the API's JSON: a proxy page or a truncated body. For a
        // mutating call nobody knows whether it took effect.
        ApiError::Decode { .. } if mutating => RetryClass::Ambiguous,
        ApiError::Decode { .. } => RetryClass::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(action: &str, code: i64, message: &str) -> ApiError {
        ApiError::RetCode {
            action: action.into(),
            code,
            message: message.into(),
            request_id: None,
        }
    }
    fn http(action: &str, status: u16) -> ApiError {
        ApiError::Http {
            action: action.into(),
            status,
            snippet: "<html>".into(),
            request_id: None,
        }
    }
    fn http_body(action: &str, status: u16, snippet: &str) -> ApiError {
        ApiError::Http {
            action: action.into(),
            status,
            snippet: snippet.into(),
            request_id: None,
        }
    }
    /// The gateway's own 503 page as the HTTP client excerpts it (tags stripped).
    const GATEWAY_PAGE_503: &str = "503 Service Temporarily Unavailable 503 Service Temporarily Unavailable nginx";
    fn tr(action: &str, kind: TransportKind) -> ApiError {
        ApiError::Transport {
            action: action.into(),
            kind,
            detail: String::new(),
        }
    }

    const D: &str = "DescribeCompShareInstance";
    const S: &str = "StopCompShareInstance";
    const T: &str = "TerminateCompShareInstance";

    #[test]
    fn classification_table() {
        use RetryClass::{Ambiguous, Detaching, Fatal, Locked, Throttled, Transient};
        use TransportKind::{Closed, Connect, Other, Timeout};
        let table: Vec<(ApiError, RetryClass)> = vec![
            (rc(S, 8903, "busy"), Locked),
            (rc(T, 230, "InstanceOperationInProgress"), Locked),
            (rc(T, 8000, "instanceoperationinprogress: try later"), Locked),
            (rc(D, 153, "throttled"), Throttled),
            (rc(T, 153, "throttled"), Throttled),
            (rc(D, 150, "unavailable"), Transient),
            (rc(S, 130, "gateway"), Transient),
            (rc(D, 110, "timeout"), Transient),
            (rc(T, 110, "timeout"), Ambiguous),
            (rc(S, 110, "timeout"), Ambiguous),
            (rc(T, 171, "Signature VerifyAC Error"), Fatal),
            (rc(T, 172, "User Not Exists"), Fatal),
            (rc(T, 170, "missing signature"), Fatal),
            (rc(T, 160, "missing action"), Fatal),
            (rc(T, 161, "no such action"), Fatal),
            (rc(T, 230, "Params [UHostId] not available"), Fatal),
            (rc(T, 8900, "state Running does not allow this"), Fatal),
            (rc(T, 226_601, "arrears"), Fatal),
            (rc(T, 999_999, "who knows"), Fatal),
            (rc("DeleteCompshareDisk", 8434, "disk is still detaching"), Detaching),
            (rc(T, 8434, "disk is still detaching"), Fatal),
            (rc("DeleteCompshareDisk", 153, "throttled"), Throttled),
            (rc("DeleteCompshareDisk", 110, "timeout"), Ambiguous),
            (http("DeleteCompshareDisk", 502), Ambiguous),
            (http("DescribeCompshareDisk", 502), Transient),
            (http(D, 429), Transient),
            (http(T, 429), Transient),
            (http(T, 502), Ambiguous),
            (http(S, 502), Ambiguous),
            (http(D, 502), Transient),
            (http(T, 503), Ambiguous),
            (http(S, 503), Ambiguous),
            (http_body(T, 503, GATEWAY_PAGE_503), Transient),
            (http_body(S, 503, GATEWAY_PAGE_503), Transient),
            (
                http_body(T, 503, "503 Service Unavailable upstream overloaded"),
                Ambiguous,
            ),
            (http(D, 503), Transient),
            (http(D, 504), Transient),
            (http(S, 504), Ambiguous),
            (http(T, 504), Ambiguous),
            (http(T, 500), Ambiguous),
            (http(D, 500), Transient),
            (http(T, 501), Fatal),
            (http(T, 404), Fatal),
            (tr(T, Connect), Transient),
            (tr(D, Connect), Transient),
            (tr(D, Timeout), Transient),
            (tr(D, Closed), Transient),
            (tr(T, Timeout), Ambiguous),
            (tr(S, Closed), Ambiguous),
            (tr(T, Other), Ambiguous),
            (tr(D, Other), Fatal),
            (
                ApiError::Decode {
                    action: T.into(),
                    detail: String::new(),
                    request_id: None,
                },
                Ambiguous,
            ),
            (
                ApiError::Decode {
                    action: D.into(),
                    detail: String::new(),
                    request_id: None,
                },
                Transient,
            ),
        ];
        for (error, want) in table {
            assert_eq!(classify(&error, &LockCodes::default()), want, "{error}");
        }
    }

    #[test]
    fn configured_lock_codes_extend_the_default() {
        let e = rc(S, 8433, "service error");
        assert_eq!(classify(&e, &LockCodes::default()), RetryClass::Fatal);
        assert_eq!(classify(&e, &LockCodes(vec![8903, 8433])), RetryClass::Locked);
    }

    #[test]
    fn messages_carry_action_and_request_id() {
        let e = ApiError::RetCode {
            action: T.into(),
            code: 171,
            message: "Signature VerifyAC Error".into(),
            request_id: Some("abc-123".into()),
        };
        assert_eq!(
            e.to_string(),
            "TerminateCompShareInstance: RetCode 171: Signature VerifyAC Error (request id abc-123)"
        );
    }
}
