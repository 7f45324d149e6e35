//! The HTTP face of the simulator: an axum router (`/` for the API, `GET /_sim/state` for the
//! ledger) behind our own accept loop, which exists so that a call can end with the connection
//! closed and no answer at all (the `drop` and `lost_response` faults), something a handler
//! cannot do on its own.
//!
//! It may listen on every address (`sim --listen 0.0.0.0:...`), so it defends itself like a
//! server: a connection must send its request head within [`HEADER_TIMEOUT`] and its body
//! within [`BODY_TIMEOUT`], bodies are capped, and at most [`MAX_CONNECTIONS`] are served at
//! once (more are closed at once rather than queued): a client holding a thousand half-open
//! connections cannot exhaust it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tower_service::Service;
use url::Url;

use super::SimHandle;
use super::world::{Auth, Reply, Request};
use crate::api::client::REQUEST_ID_HEADER;
use crate::api::sign::{Params, flatten};

/// Time for a connection to send a request head: a client sends it at once; 5 s is ample
/// even across a slow network, and bounds what an idle or half-open connection holds.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to send a request body once the head is in (a signed call is a few hundred bytes).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body read: a signed call is far below 64 KiB.
const BODY_LIMIT: usize = 64 << 10;
/// Connections served at once: a teardown's largest concurrency (64 by default, 1024 at
/// most; reqwest shares connections), well below what exhausts file descriptors.
pub const MAX_CONNECTIONS: usize = 1024;

/// A running simulator on its own thread and tokio runtime, so a test that blocks (on a child
/// process, say) cannot starve it. Dropping it shuts it down.
pub struct Server {
    /// `http://127.0.0.1:PORT/`.
    pub url: Url,
    pub handle: SimHandle,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Bind `addr` (port 0 picks a free port) and serve `handle` until dropped.
    pub fn start(handle: SimHandle, addr: SocketAddr) -> io::Result<Server> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let url = Url::parse(&format!("http://{local}/")).map_err(io::Error::other)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (tx, rx) = oneshot::channel::<()>();
        let served = handle.clone();
        let thread = std::thread::Builder::new()
            .name("compshare-sim".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let stop = async {
                                let _ = rx.await;
                            };
                            if let Err(e) = serve(listener, served, stop).await {
                                tracing::error!(error = %e, "simulator stopped");
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "simulator could not listen"),
                    }
                });
            })?;
        Ok(Server {
            url,
            handle,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serve the simulator on `listener` until `shutdown` resolves; open connections are dropped then.
pub async fn serve(
    listener: TcpListener,
    handle: SimHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let router = router(handle);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let router = router.clone();
                        connections.spawn(async move {
                            connection(stream, router).await;
                            drop(slot);
                        });
                    }
                    // Full: closed at once (the client sees a reset and may retry).
                    Err(_) => drop(stream),
                },
                // Per-connection accept errors (reset before accept, fd pressure) are transient.
                Err(e) => tracing::debug!(error = %e, "accept failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
    Ok(())
}

/// The kill switch of one connection: notifying it drops the connection mid-request.
#[derive(Clone)]
struct ConnectionKill(Arc<Notify>);

async fn connection(stream: TcpStream, router: Router) {
    let kill = Arc::new(Notify::new());
    let switch = ConnectionKill(kill.clone());
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(switch.clone());
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        // Dropping the connection future closes the socket with nothing written.
        () = kill.notified() => {}
    }
}

fn router(handle: SimHandle) -> Router {
    Router::new()
        .route("/", any(api))
        .route("/_sim/state", get(state))
        .with_state(handle)
}

async fn state(State(handle): State<SimHandle>) -> Json<super::SimState> {
    Json(handle.snapshot())
}

/// `/`: GET with query parameters, or POST form or JSON (query parameters merged, body wins).
async fn api(
    State(handle): State<SimHandle>,
    Extension(kill): Extension<ConnectionKill>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let body: Bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large or broken").into_response(),
        Err(_) => return (StatusCode::REQUEST_TIMEOUT, "request body too slow").into_response(),
    };
    let mut params = Params::new();
    if let Some(q) = query {
        params.extend(url::form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    let mut auth = Auth::Form;
    if method == Method::POST {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"));
        if json {
            // An unparsable body is treated as carrying no parameters: it then fails on the
            // missing Action, as the gateway's "160" would.
            if let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&body) {
                params.extend(flatten(&object));
                auth = Auth::Json(object);
            }
        } else {
            params.extend(url::form_urlencoded::parse(&body).into_owned());
        }
    }
    match handle.handle(Request { params, auth }).await {
        Reply::Json { body, request_id } => {
            let mut response = (StatusCode::OK, Json(body)).into_response();
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, v);
            }
            response
        }
        Reply::Html { status, body } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "text/html")],
            body,
        )
            .into_response(),
        Reply::Close => {
            kill.0.notify_one();
            // The connection task drops this future together with the connection.
            std::future::pending().await
        }
    }
}
