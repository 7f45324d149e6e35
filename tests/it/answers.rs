//! Answers a hostile or broken server could send, over real HTTP from a raw socket: a body
//! far beyond any real page, and a private key echoed back in a message or a header.

use std::time::Duration;

use compshare_teardown::api::sign::Params;
use compshare_teardown::api::{ApiError, Client, ClientConfig};
use compshare_teardown::credentials::{Credentials, PrivateKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "PRIVATE-KEY-0123456789abcdef";

/// A server that answers every request with `head` and then `body_len` bytes of `x`
/// (written in 64 KiB pieces, so a reader that stops early is noticed), for one connection.
async fn serve(head: String, body_len: usize) -> url::Url {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 64 << 10];
        let _ = sock.read(&mut buf).await;
        if sock.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let piece = vec![b'x'; 64 << 10];
        let mut sent = 0;
        while sent < body_len {
            let n = piece.len().min(body_len - sent);
            if sock.write_all(&piece[..n]).await.is_err() {
                return;
            }
            sent += n;
        }
    });
    format!("http://{addr}/").parse().unwrap()
}

fn client(url: url::Url) -> Client {
    let mut config = ClientConfig::new(
        url,
        Credentials {
            public_key: "public".into(),
            private_key: PrivateKey::new(KEY),
            source: "test".into(),
        },
    );
    config.timeout = Duration::from_secs(20);
    Client::new(config).unwrap()
}

/// The error `action` gets from a server answering `status` with `headers` and `body`.
async fn refused_by(status: &str, headers: &str, body: &str, action: &str) -> ApiError {
    let head = format!(
        "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    client(serve(head, 0).await)
        .call(action, Params::default())
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_huge_answer_fails_the_request_clearly() {
    const HUGE: usize = 200 << 20;
    // Announced by its length: refused before reading.
    let url = serve(
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {HUGE}\r\n\r\n"),
        HUGE,
    )
    .await;
    let err = client(url)
        .call("DescribeCompShareInstance", Params::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("larger than 4 MiB"), "{err}");
    // Unannounced (read to the connection's end): refused as soon as it passes the cap.
    let url = serve(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n".into(),
        HUGE,
    )
    .await;
    let err = client(url)
        .call("DescribeCompShareInstance", Params::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Decode { .. }), "{err}");
    assert!(err.to_string().contains("larger than 4 MiB"), "{err}");
}

#[tokio::test]
async fn a_key_echoed_by_the_server_is_masked() {
    let body = format!(r#"{{"RetCode":160,"Message":"bad signature for key {KEY}"}}"#);
    let headers = format!("content-type: application/json\r\nX-UCLOUD-REQUEST-UUID: rid-{KEY}\r\n");
    let err = refused_by("200 OK", &headers, &body, "StopCompShareInstance").await;
    let text = format!("{err} {err:?}");
    assert!(!text.contains(KEY), "{text}");
    assert!(text.contains("bad signature for key ***"), "{text}");
    assert_eq!(err.request_id(), Some("rid-***"));
    // An error page (HTTP 500) quoting it, too.
    let body = format!("<html>internal error: {KEY}</html>");
    let err = refused_by("500 Internal Server Error", "", &body, "DescribeCompShareInstance").await;
    assert!(!format!("{err} {err:?}").contains(KEY), "{err}");
}
