//! Upstreams that are down or slow, readiness, and draining at shutdown.

use std::time::Duration;

use common::testkit::{assert_live, readiness};
use serde_json::Value;

use crate::helpers::{closed_port, spawn_gateway, spawn_in_front, spawn_upstream};

#[tokio::test]
async fn an_upstream_that_refuses_connections_is_a_502_problem() {
    let gateway = spawn_gateway(closed_port().await, closed_port().await, &[]).await;
    let response = reqwest::get(gateway.url("/accounts/healthz"))
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "upstream_unavailable");
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
}

#[tokio::test]
async fn an_upstream_slower_than_the_timeout_is_a_504_problem() {
    let (_upstream, gateway) = spawn_in_front(&[("GATEWAY_UPSTREAM_TIMEOUT_MS", "200")]).await;
    let response = reqwest::Client::new()
        .get(gateway.url("/accounts/slow"))
        .header("x-request-id", "slow-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "upstream_timeout");
    assert_eq!(body["request_id"], "slow-1");
}

#[tokio::test]
async fn readiness_requires_every_upstream_to_be_ready() {
    let upstream = spawn_upstream().await;
    let ready = spawn_gateway(upstream.addr, upstream.addr, &[]).await;
    let (status, body) = readiness(&ready.url("")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["upstream:accounts"][0]["status"], "pass");
    assert_eq!(body["checks"]["upstream:payments"][0]["status"], "pass");

    let half = spawn_gateway(upstream.addr, closed_port().await, &[]).await;
    let (status, body) = readiness(&half.url("")).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "fail");
    assert_eq!(body["checks"]["upstream:accounts"][0]["status"], "pass");
    assert_eq!(body["checks"]["upstream:payments"][0]["status"], "fail");
    assert_live(&half.url("")).await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let (_upstream, gateway) = spawn_in_front(&[]).await;
    let url = gateway.url("/accounts/slow");
    let in_flight = tokio::spawn(async move { reqwest::get(url).await });
    // It has reached the gateway (the scrape is the other request in flight).
    common::testkit::wait_for_active_requests(&gateway.url(""), 2).await;
    gateway.begin_shutdown();
    let response = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slow");
    gateway.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn clients_that_send_no_request_in_time_are_let_go() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_upstream, gateway) = spawn_in_front(&[("GATEWAY_CLIENT_TIMEOUT_MS", "300")]).await;
    // Half a request head, then nothing (slowloris).
    let mut slow = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    slow.write_all(b"GET /accounts/x HTTP/1.1\r\nHost: gateway\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest))
        .await
        .expect("the gateway closes a connection whose head does not come")
        .ok();
    // One request answered, then idle: closed the same way, as nginx's keepalive_timeout.
    let stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get("/accounts/x")
        .header("host", "gateway")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("an idle kept-alive connection is closed")
        .unwrap()
        .ok();
}

#[tokio::test]
async fn a_burst_of_readiness_probes_asks_the_upstreams_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let router = axum::Router::new().route(
        "/readyz",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "ready" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _upstream = common::testkit::Running::spawn(addr, move |shutdown| async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await?;
        Ok(())
    });
    let gateway = spawn_gateway(addr, addr, &[]).await;
    let client = reqwest::Client::new();
    let burst = (0..60).map(|_| client.get(gateway.url("/readyz")).send());
    for response in futures_util::future::join_all(burst).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    // Two upstreams (both here), one shared evaluation: 2 calls, not 120. A burst that
    // straddles the one-second interval on a slow machine may cost one more evaluation.
    let calls = asked.load(Ordering::SeqCst);
    assert!((2..=4).contains(&calls), "{calls} upstream readiness calls");
}

/// An upstream that answers every request on every connection with `response` (raw bytes),
/// then keeps the connection open without a word more.
async fn raw_upstream(response: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buffer = [0u8; 4096];
                // The request's head and (Content-Length) body.
                loop {
                    let Ok(n) = stream.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&seen).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap_or(0));
                        if seen.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let _ = stream.write_all(response).await;
                std::future::pending::<()>().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_malformed_first_chunk_is_a_502_not_an_empty_reply() {
    for response in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 5 \r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ] {
        let upstream = raw_upstream(response).await;
        let gateway = spawn_gateway(upstream, upstream, &[]).await;
        let client = reqwest::Client::new();
        // Without a body (read in line) and with one (hyper's client).
        for request in [
            client.get(gateway.url("/accounts/x")),
            client.post(gateway.url("/accounts/x")).body("{}"),
        ] {
            let response = request.send().await.expect("an answer, not an empty reply");
            assert_eq!(response.status(), 502);
            assert_eq!(
                response.json::<Value>().await.unwrap()["code"],
                "upstream_unavailable"
            );
        }
    }
}

#[tokio::test]
async fn a_body_that_never_starts_is_a_504_and_one_that_stalls_is_cut_off() {
    let silent = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n").await;
    let stalling = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello").await;
    let read_timeout = [("GATEWAY_UPSTREAM_READ_TIMEOUT_MS", "300".to_owned())];
    let gateway = spawn_gateway(silent, stalling, &read_timeout).await;
    let client = reqwest::Client::new();
    let never = client.get(gateway.url("/accounts/x")).send().await.unwrap();
    assert_eq!(never.status(), 504);
    assert_eq!(
        never.json::<Value>().await.unwrap()["code"],
        "upstream_timeout"
    );
    // Begun, then stalled: the head and the first bytes went out; the rest is cut off
    // instead of hanging until the upstream closes.
    let begun = client.get(gateway.url("/payments/x")).send().await.unwrap();
    assert_eq!(begun.status(), 200);
    // (Without the read timeout this would wait for an upstream that never closes.)
    assert!(begun.bytes().await.is_err(), "the body ends in an error");
}
