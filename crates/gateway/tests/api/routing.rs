//! Prefix routing, forwarded headers, pooling, streaming and the fallback upstream.

use serde_json::Value;

use crate::helpers::{
    closed_port, echoed, echoed_by, spawn_gateway, spawn_in_front, spawn_upstream,
};

#[tokio::test]
async fn the_prefix_is_stripped_and_the_query_kept() {
    let upstream = spawn_upstream().await;
    let gateway = spawn_gateway(upstream.addr, closed_port().await, &[]).await;
    let cases = [
        (
            "/accounts/v1/users?limit=2&q=a%20b",
            "/v1/users",
            Some("limit=2&q=a%20b"),
        ),
        ("/accounts", "/", None),
        ("/accounts/", "/", None),
        ("/accounts/a%2Fb/c%20d", "/a%2Fb/c%20d", None),
        ("/accounts/trailing/", "/trailing/", None),
        ("/accounts//double", "//double", None),
        ("/accounts/x?", "/x", Some("")),
    ];
    for (path, expected_path, expected_query) in cases {
        let seen = echoed(&gateway, path).await;
        assert_eq!(seen["path"], expected_path, "{path}");
        assert_eq!(seen["query"].as_str(), expected_query, "{path}");
    }
}

#[tokio::test]
async fn a_path_that_only_starts_like_a_prefix_is_not_routed() {
    let (_upstream, gateway) = spawn_in_front(&[]).await;
    for path in ["/accountsx", "/payment", "/", "/other/accounts"] {
        let response = reqwest::get(gateway.url(path)).await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_found");
    }
}

/// `GATEWAY_BLOCKED_PATHS=/metrics`: the services' metrics are not served to the internet
/// through the gateway (the gateway's own `/metrics` stays, as the contract has it).
#[tokio::test]
async fn blocked_upstream_paths_are_not_forwarded() {
    let upstream = spawn_upstream().await;
    let blocked = [("GATEWAY_BLOCKED_PATHS", "/metrics".to_owned())];
    let gateway = spawn_gateway(upstream.addr, upstream.addr, &blocked).await;
    for path in [
        "/accounts/metrics",
        "/payments/metrics/",
        "/accounts/metrics/x?y=1",
        "/accounts/%6Detrics",
    ] {
        let response = reqwest::get(gateway.url(path)).await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_found", "{path}");
    }
    let echoed = echoed(&gateway, "/accounts/metricsx").await;
    assert_eq!(
        echoed["path"], "/metricsx",
        "only the path and what is under it"
    );
    let own = reqwest::get(gateway.url("/metrics")).await.unwrap();
    assert_eq!(own.status(), 200, "the gateway's own metrics");
}

#[tokio::test]
async fn forwarded_headers_request_id_and_trace_context_reach_the_upstream() {
    let upstream = spawn_upstream().await;
    let gateway = spawn_gateway(closed_port().await, upstream.addr, &[]).await;
    // Without a body the gateway writes the request head itself; with one, hyper's client
    // sends it: both with the same headers.
    for with_body in [false, true] {
        let client = reqwest::Client::new();
        // The POST claims a hop: from a client no proxy setting trusts, it is not passed on.
        let (request, forwarded_for) = if with_body {
            let post = client
                .post(gateway.url("/payments/v1/payments"))
                .body("{}")
                .header("x-forwarded-for", "203.0.113.7");
            (post, "127.0.0.1")
        } else {
            (
                client.get(gateway.url("/payments/v1/payments")),
                "127.0.0.1",
            )
        };
        let response = request
            .header("x-request-id", "req-42")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .header("connection", "x-hop")
            .header("x-hop", "must not pass")
            .header("x-custom", "kept")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-request-id"], "req-42");
        let seen: Value = response.json().await.unwrap();
        assert_eq!(seen["method"], if with_body { "POST" } else { "GET" });
        let headers = &seen["headers"];
        assert_eq!(headers["x-request-id"], "req-42");
        assert_eq!(headers["x-forwarded-for"], forwarded_for);
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-prefix"], "/payments");
        assert_eq!(
            headers["x-forwarded-host"],
            gateway.addr.to_string().as_str()
        );
        assert_eq!(headers["host"], upstream.addr.to_string().as_str());
        assert_eq!(headers["x-custom"], "kept");
        assert!(
            headers.get("x-hop").is_none(),
            "hop-by-hop header forwarded"
        );
        let traceparent = headers["traceparent"].as_str().unwrap();
        assert!(
            traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "same trace: {traceparent}"
        );
        assert!(
            !traceparent.contains("00f067aa0ba902b7"),
            "a new parent span"
        );
    }
}

#[tokio::test]
async fn a_trusted_proxy_is_appended_to_every_prior_forwarded_for_hop() {
    let (_upstream, gateway) = spawn_in_front(&[("GATEWAY_TRUSTED_PROXIES", "127.0.0.1")]).await;
    for with_body in [false, true] {
        let request = if with_body {
            reqwest::Client::new()
                .post(gateway.url("/accounts/x"))
                .body("{}")
        } else {
            reqwest::Client::new().get(gateway.url("/accounts/x"))
        };
        let seen: Value = request
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-for", "198.51.100.1, 10.0.0.2")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "api.example.com")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let headers = &seen["headers"];
        assert_eq!(
            headers["x-forwarded-for"],
            "203.0.113.7, 198.51.100.1, 10.0.0.2, 127.0.0.1"
        );
        assert_eq!(
            headers["x-forwarded-proto"], "https",
            "the TLS proxy's scheme"
        );
        assert_eq!(headers["x-forwarded-host"], "api.example.com");
    }
}

#[tokio::test]
async fn a_client_cannot_forge_the_forwarding_headers() {
    let (_upstream, gateway) = spawn_in_front(&[]).await;
    for with_body in [false, true] {
        let request = if with_body {
            reqwest::Client::new()
                .post(gateway.url("/accounts/x"))
                .body("{}")
        } else {
            reqwest::Client::new().get(gateway.url("/accounts/x"))
        };
        let seen: Value = request
            .header("forwarded", "for=203.0.113.7;proto=https;host=evil.example")
            .header("x-real-ip", "203.0.113.7")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.example")
            .header("x-forwarded-prefix", "/evil")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let headers = &seen["headers"];
        assert!(headers.get("forwarded").is_none(), "{headers}");
        assert!(headers.get("x-real-ip").is_none(), "{headers}");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(
            headers["x-forwarded-host"],
            gateway.addr.to_string().as_str()
        );
        assert_eq!(headers["x-forwarded-prefix"], "/accounts");
    }
}

#[tokio::test]
async fn a_request_without_ids_gets_new_ones_that_the_upstream_sees() {
    let (_upstream, gateway) = spawn_in_front(&[]).await;
    let response = reqwest::get(gateway.url("/accounts/x")).await.unwrap();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["headers"]["x-request-id"], request_id.as_str());
    assert!(seen["headers"]["traceparent"].is_string());
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let (_upstream, gateway) = spawn_in_front(&[]).await;
    let client = reqwest::Client::new();
    let mut ports = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let seen = echoed_by(&client, &gateway, "/accounts/ping").await;
        ports.insert(seen["peer_port"].as_u64().unwrap());
    }
    assert_eq!(
        ports.len(),
        1,
        "sequential requests share one upstream connection"
    );
}

#[tokio::test]
async fn upstream_connections_idle_past_their_timeout_are_not_used_again() {
    let (_upstream, gateway) = spawn_in_front(&[("GATEWAY_UPSTREAM_IDLE_TIMEOUT_MS", "100")]).await;
    // One client connection, so one gateway worker and its pool.
    let client = reqwest::Client::new();
    let port = async |path: &str| {
        echoed_by(&client, &gateway, path).await["peer_port"]
            .as_u64()
            .unwrap()
    };
    let first = port("/accounts/a").await;
    assert_eq!(port("/accounts/b").await, first, "reused at once");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_ne!(
        port("/accounts/c").await,
        first,
        "a new connection after the idle timeout"
    );
}

/// An upstream that answers each connection's first request, keeps the connection open (no
/// `Connection: close`) for 50 ms, then closes it without a word, as servers with a short
/// keep-alive timeout do. Returns its address, the number of connections it took and the
/// number it has closed.
async fn upstream_closing_idle_connections() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (counted, closing) = (connections.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let closing = closing.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nsure";
                if stream.write_all(answer).await.is_ok() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                drop(stream);
                closing.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
    (addr, connections, closed)
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
    let (upstream, connections, closed) = upstream_closing_idle_connections().await;
    let gateway = spawn_gateway(upstream, upstream, &[]).await;
    let client = reqwest::Client::new();
    for round in 0..3 {
        // POST without an Idempotency-Key: never retried, so it must not meet a dead connection.
        let response = client
            .post(gateway.url("/payments/anything"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "round {round}");
        assert_eq!(response.text().await.unwrap(), "sure");
        // Until the upstream has closed the connection it kept.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while closed.load(std::sync::atomic::Ordering::SeqCst) <= round {
            assert!(
                std::time::Instant::now() < deadline,
                "the upstream kept the connection"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "a new connection for each request once the last one was closed"
    );
}

/// `GET path` over HTTP/2 with prior knowledge (h2c): the status and body, or the error.
async fn h2c_get(
    gateway: &common::testkit::Running,
    path: &str,
) -> Result<(u16, bytes::Bytes), String> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::get(gateway.url(path))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes()))
}

#[tokio::test]
async fn h2c_clients_are_served_unless_switched_off() {
    let (upstream, gateway) = spawn_in_front(&[]).await;
    let (status, body) = h2c_get(&gateway, "/accounts/ping").await.unwrap();
    assert_eq!(status, 200);
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["path"], "/ping");
    // The host an HTTP/2 client names in `:authority`.
    assert_eq!(
        seen["headers"]["x-forwarded-host"],
        gateway.addr.to_string().as_str()
    );
    assert_eq!(h2c_get(&gateway, "/healthz").await.unwrap().0, 200);
    let http1_only = spawn_gateway(
        upstream.addr,
        upstream.addr,
        &[("GATEWAY_H2C", "false".to_owned())],
    )
    .await;
    assert!(h2c_get(&http1_only, "/accounts/ping").await.is_err());
    let seen = echoed(&http1_only, "/accounts/ping").await;
    assert_eq!(seen["path"], "/ping");
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let (_upstream, gateway) = spawn_in_front(&[("MAX_BODY_BYTES", "8388608")]).await;
    let client = reqwest::Client::new();
    let body = vec![b'a'; 5 * 1024 * 1024];
    let seen: Value = client
        .post(gateway.url("/payments/upload"))
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["body_len"], 5 * 1024 * 1024);
    assert_eq!(seen["method"], "POST");
    let download = client
        .get(gateway.url("/payments/big"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.bytes().await.unwrap().len(), 3 * 1024 * 1024);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let (_upstream, gateway) = spawn_in_front(&[]).await;
    let client = reqwest::Client::new();
    // The answer comes before the body is read; the client, still sending, must get it (the
    // rest of the body is read and thrown away, not the connection closed under it), every
    // time: a closed connection made this fail now and then.
    for _ in 0..10 {
        let response = client
            .post(gateway.url("/payments/upload"))
            .body(vec![b'a'; 1024 * 1024 + 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "payload_too_large");
    }
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_is_a_413_and_no_fault_of_the_upstream() {
    let (_upstream, gateway) = spawn_in_front(&[("GATEWAY_BREAKER_FAILURES", "1")]).await;
    let client = reqwest::Client::new();
    // No Content-Length: the limit is found while the body streams upstream.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b'a'; 64 * 1024])).collect();
    let response = client
        .post(gateway.url("/payments/upload"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");
    // One upstream failure would have opened the breaker.
    let seen = echoed(&gateway, "/payments/after").await;
    assert_eq!(seen["path"], "/after");
}

#[tokio::test]
async fn a_body_cut_short_by_the_client_is_a_400_and_no_fault_of_the_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_upstream, gateway) = spawn_in_front(&[("GATEWAY_BREAKER_FAILURES", "1")]).await;
    // A Content-Length (the body goes out in line) and then only part of it: the client
    // stops sending and waits for the answer.
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"POST /payments/upload HTTP/1.1\r\nHost: gateway\r\nContent-Length: 100000\r\n\r\npart of it")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the gateway answers")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    // One upstream failure would have opened the breaker.
    let seen = echoed(&gateway, "/payments/after").await;
    assert_eq!(seen["path"], "/after");
}

#[tokio::test]
async fn upstream_error_responses_pass_through_untouched() {
    let (_upstream, gateway) = spawn_in_front(&[]).await;
    let response = reqwest::get(gateway.url("/accounts/teapot")).await.unwrap();
    assert_eq!(response.status(), 418);
    assert_eq!(response.text().await.unwrap(), "short and stout");
}

#[tokio::test]
async fn other_paths_go_to_the_fallback_when_one_is_configured() {
    let services = spawn_upstream().await;
    let monolith = spawn_upstream().await;
    let gateway = spawn_gateway(
        services.addr,
        services.addr,
        &[("GATEWAY_FALLBACK_URL", format!("http://{}", monolith.addr))],
    )
    .await;
    let seen = echoed(&gateway, "/admin/login/?next=/").await;
    assert_eq!(seen["path"], "/admin/login/");
    assert_eq!(seen["query"], "next=/");
    assert!(seen["headers"].get("x-forwarded-prefix").is_none());
    let routed = echoed(&gateway, "/accounts/x").await;
    assert_ne!(routed["peer_port"], seen["peer_port"]);
}

#[tokio::test]
async fn routes_from_a_file_add_upstreams_longest_prefix_first() {
    let services = spawn_upstream().await;
    let reports = spawn_upstream().await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        format!(
            r#"
            [[routes]]
            prefix = "/reports"
            upstream = "http://{reports}/api"

            [[routes]]
            prefix = "/accounts/legacy"
            upstream = "http://{reports}/old"

            [[routes]]
            prefix = "/search"
            upstream = "http://{closed}"
            readiness = false
            "#,
            reports = reports.addr,
            closed = closed_port().await,
        ),
    )
    .unwrap();
    let gateway = spawn_gateway(
        services.addr,
        services.addr,
        &[(
            "GATEWAY_ROUTES_FILE",
            file.path().to_str().unwrap().to_owned(),
        )],
    )
    .await;
    let seen = echoed(&gateway, "/reports/monthly?year=2026").await;
    assert_eq!(seen["path"], "/api/monthly");
    assert_eq!(seen["query"], "year=2026");
    assert_eq!(seen["headers"]["x-forwarded-prefix"], "/reports");
    let legacy = echoed(&gateway, "/accounts/legacy/users").await;
    assert_eq!(legacy["path"], "/old/users", "the longer prefix wins");
    let plain = echoed(&gateway, "/accounts/users").await;
    assert_eq!(plain["path"], "/users");
    let down = reqwest::get(gateway.url("/search/q")).await.unwrap();
    assert_eq!(down.status(), 502);
    let ready = reqwest::get(gateway.url("/readyz")).await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "a route with readiness = false does not hold the gateway back"
    );
    let body: Value = ready.json().await.unwrap();
    let checks = body["checks"].as_object().unwrap();
    assert!(checks.contains_key("upstream:reports"), "{body}");
    assert!(!checks.contains_key("upstream:search"), "{body}");
}

#[tokio::test]
async fn a_client_that_gives_up_mid_upload_is_no_fault_of_the_upstream() {
    use tokio::io::AsyncWriteExt;
    let (_upstream, gateway) = spawn_in_front(&[("GATEWAY_BREAKER_FAILURES", "1")]).await;
    let mut client = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    client
        .write_all(
            b"POST /payments/upload HTTP/1.1\r\nHost: gateway\r\ncontent-length: 100000\r\n\r\npartial",
        )
        .await
        .unwrap();
    // Gone before the rest of its body, once the gateway is forwarding it.
    common::testkit::wait_for_active_requests(&gateway.url(""), 2).await;
    drop(client);
    // Until the gateway is done with it (the scrape is the one request left).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let metrics = reqwest::get(gateway.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("http_server_active_requests 1\n") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the aborted request never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // One upstream failure would have opened the breaker.
    let seen = echoed(&gateway, "/payments/after").await;
    assert_eq!(seen["path"], "/after");
}
