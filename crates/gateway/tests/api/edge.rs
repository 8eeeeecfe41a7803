//! The edge's protections: rate limits (in process, and shared through the real Redis here),
//! circuit breakers, retries, dot segments, `Location` rewriting, per-upstream metrics.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;

use common::testkit::{Cuttable, Running, redis_url};

use crate::helpers::{
    assert_limited, closed_port, gateway_metrics, spawn_flaky_upstream, spawn_gateway,
    spawn_in_front, spawn_upstream, spawn_upstream_at, wait_for_status,
};

async fn get_status(gateway: &Running, path: &str) -> u16 {
    reqwest::get(gateway.url(path))
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_client_over_its_rate_is_refused_with_429_and_ratelimit_headers() {
    let upstream = spawn_upstream().await;
    // Several workers: the limit is the gateway's, not a worker's (each request comes on a
    // new connection, which any worker may accept).
    let limits = [
        ("GATEWAY_RATE_LIMIT_RPS", "1".to_owned()),
        ("GATEWAY_RATE_LIMIT_BURST", "3".to_owned()),
        ("GATEWAY_WORKERS", "4".to_owned()),
    ];
    let gateway = spawn_gateway(upstream.addr, upstream.addr, &limits).await;
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = reqwest::get(gateway.url("/accounts/x")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["ratelimit-policy"],
            "\"default\";q=3;w=3"
        );
        remaining.push(response.headers()["ratelimit"].to_str().unwrap().to_owned());
    }
    assert!(
        remaining[0].starts_with("\"default\";r=2;t="),
        "{remaining:?}"
    );
    // Past the burst: refused, unless a second passed meanwhile (a slow machine); then the
    // next one is.
    let mut limited = client.get(gateway.url("/payments/y")).send().await.unwrap();
    while limited.status() == 200 {
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "allowed past the burst"
        );
        limited = client.get(gateway.url("/payments/y")).send().await.unwrap();
    }
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "1");
    assert!(limited.headers().contains_key("ratelimit-policy"));
    assert_eq!(
        limited.headers()["content-type"],
        "application/problem+json"
    );
    let request_id = limited.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let problem = limited.json::<Value>().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    assert_eq!(problem["request_id"], request_id.as_str());
    // The gateway's own probes are not limited.
    assert_eq!(get_status(&gateway, "/healthz").await, 200);
    assert!(
        gateway_metrics(&gateway)
            .await
            .contains("gateway_rate_limited_total{limit=\"default\"} 1")
    );

    // Refilled within the next second or so.
    wait_for_status(&gateway, "/accounts/x", 200).await;

    let unlimited = spawn_gateway(
        upstream.addr,
        upstream.addr,
        &[("GATEWAY_RATE_LIMIT_RPS", "0".to_owned())],
    )
    .await;
    for _ in 0..20 {
        let response = client
            .get(unlimited.url("/accounts/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(!response.headers().contains_key("ratelimit"));
    }
}

/// Behind a trusted load balancer, each client it reports has a limit of its own; from
/// anywhere else, `X-Forwarded-For` is the caller's own claim and changes nothing.
#[tokio::test]
async fn a_path_from_the_routes_file_has_a_limit_of_its_own() {
    let upstream = spawn_upstream().await;
    let routes = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        routes.path(),
        "[[limits]]\npath = \"/accounts/v1/token\"\nrps = 1\nburst = 2\nname = \"token\"\n",
    )
    .unwrap();
    let gateway = spawn_gateway(
        upstream.addr,
        upstream.addr,
        &[("GATEWAY_ROUTES_FILE", routes.path().display().to_string())],
    )
    .await;
    let client = reqwest::Client::new();
    let post = |path: &str| {
        client
            .post(gateway.url(path))
            .body("grant_type=password")
            .send()
    };
    let started = std::time::Instant::now();
    for _ in 0..2 {
        let response = post("/accounts/v1/token").await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["ratelimit-policy"], "\"token\";q=2;w=2");
        assert!(
            response.headers()["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with("\"token\";r=")
        );
    }
    let mut limited = post("/accounts/v1/token").await.unwrap();
    while limited.status() == 200 {
        // A second passed within the burst (a slow machine): one more was refilled.
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "allowed past the burst"
        );
        limited = post("/accounts/v1/token").await.unwrap();
    }
    assert_eq!(limited.status(), 429, "the path's own limit");
    assert_eq!(
        limited.json::<Value>().await.unwrap()["code"],
        "rate_limited"
    );
    // Under the path too; other paths keep the generous default.
    let mut under = post("/accounts/v1/token/introspect").await.unwrap();
    while under.status() == 200 {
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "allowed past the burst"
        );
        under = post("/accounts/v1/token/introspect").await.unwrap();
    }
    for _ in 0..10 {
        let response = post("/accounts/v1/users").await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["ratelimit-policy"]
                .to_str()
                .unwrap()
                .starts_with("\"default\"")
        );
    }
    assert_eq!(
        post("/accounts/v1/tokens").await.unwrap().status(),
        200,
        "only at segment boundaries"
    );
    let metrics = gateway_metrics(&gateway).await;
    assert!(
        metrics.contains("gateway_rate_limited_total{limit=\"token\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway_rate_limited_total{limit=\"default\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_clients_are_limited_by_their_forwarded_address() {
    let upstream = spawn_upstream().await;
    let limits = |trusted: &str| {
        vec![
            ("GATEWAY_RATE_LIMIT_RPS", "1".to_owned()),
            ("GATEWAY_RATE_LIMIT_BURST", "2".to_owned()),
            ("GATEWAY_TRUSTED_PROXIES", trusted.to_owned()),
        ]
    };
    let client = reqwest::Client::new();
    let status_as = |gateway: &Running, forwarded: &str| {
        client
            .get(gateway.url("/accounts/x"))
            .header("x-forwarded-for", forwarded)
            .send()
    };

    let behind_proxy = spawn_gateway(
        upstream.addr,
        upstream.addr,
        &limits("10.0.0.0/8, 127.0.0.1"),
    )
    .await;
    for _ in 0..2 {
        let response = status_as(&behind_proxy, "198.51.100.1").await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let over = status_as(&behind_proxy, "198.51.100.1").await.unwrap();
    assert_eq!(over.status(), 429, "198.51.100.1 spent its burst");
    let other = status_as(&behind_proxy, "198.51.100.2").await.unwrap();
    assert_eq!(other.status(), 200, "another client has its own limit");
    let forged = status_as(&behind_proxy, "198.51.100.3, 198.51.100.1")
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        429,
        "what the client wrote left of its address is ignored"
    );

    let exposed = spawn_gateway(upstream.addr, upstream.addr, &limits("")).await;
    for (n, forwarded) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .iter()
        .enumerate()
    {
        let status = status_as(&exposed, forwarded).await.unwrap().status();
        let expected = if n < 2 { 200 } else { 429 };
        assert_eq!(
            status, expected,
            "an untrusted peer is limited as itself ({forwarded})"
        );
    }
}

#[tokio::test]
#[cfg_attr(
    not(test_redis),
    ignore = "needs Redis: set TEST_REDIS_URL=redis://127.0.0.1:6379"
)]
async fn two_gateways_share_one_limit_through_redis() {
    let redis = redis_url();
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let _cleanup = common::testkit::RedisCleanup::new(&redis, &prefix);
    let upstream = spawn_upstream().await;
    let settings = [
        ("GATEWAY_RATE_LIMIT_RPS", "1".to_owned()),
        ("GATEWAY_RATE_LIMIT_BURST", "4".to_owned()),
        ("GATEWAY_REDIS_URL", redis),
        ("GATEWAY_REDIS_PREFIX", prefix),
    ];
    let first = spawn_gateway(upstream.addr, upstream.addr, &settings).await;
    let second = spawn_gateway(upstream.addr, upstream.addr, &settings).await;
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    for n in 0..8 {
        let gateway = if n % 2 == 0 { &first } else { &second };
        statuses.push(
            client
                .get(gateway.url("/accounts/x"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    // One budget of 4 for both gateways: each alone would have allowed 8.
    assert_limited(&statuses, 4, started);
}

#[tokio::test]
#[cfg_attr(
    not(test_redis),
    ignore = "needs Redis: set TEST_REDIS_URL=redis://127.0.0.1:6379"
)]
async fn a_redis_outage_falls_back_to_limits_in_process_and_recovers() {
    let redis = redis_url();
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let _cleanup = common::testkit::RedisCleanup::new(&redis, &prefix);
    let proxy = Cuttable::to(&redis).await.unwrap();
    let upstream = spawn_upstream().await;
    let settings = [
        ("GATEWAY_RATE_LIMIT_RPS", "1".to_owned()),
        ("GATEWAY_RATE_LIMIT_BURST", "2".to_owned()),
        ("GATEWAY_REDIS_URL", format!("redis://{}", proxy.addr)),
        ("GATEWAY_REDIS_PREFIX", prefix),
    ];
    let gateway = spawn_gateway(upstream.addr, upstream.addr, &settings).await;
    let burst = || async {
        let started = std::time::Instant::now();
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(get_status(&gateway, "/accounts/x").await);
        }
        (statuses, started)
    };
    let redis_up = || async {
        gateway_metrics(&gateway)
            .await
            .lines()
            .find(|l| l.starts_with("gateway_rate_limit_redis_up "))
            .map(str::to_owned)
    };
    // Limited through Redis.
    let (statuses, started) = burst().await;
    assert_limited(&statuses, 2, started);
    assert_eq!(
        redis_up().await.as_deref(),
        Some("gateway_rate_limit_redis_up 1")
    );

    proxy.set_up(false).await;
    // Redis away: still served, limited in process (a budget of its own).
    let (statuses, started) = burst().await;
    assert_limited(&statuses, 2, started);
    assert_eq!(
        redis_up().await.as_deref(),
        Some("gateway_rate_limit_redis_up 0")
    );

    proxy.set_up(true).await;
    let mut recovered = false;
    for _ in 0..60 {
        // Redis is asked again 2 s after it failed: poll until it is.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let status = get_status(&gateway, "/accounts/x").await;
        assert!(status == 200 || status == 429, "{status}");
        if redis_up().await.as_deref() == Some("gateway_rate_limit_redis_up 1") {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "limits are shared again once Redis answers");
}

#[tokio::test]
async fn the_breaker_opens_answers_without_the_upstream_half_opens_and_closes() {
    let flaky = spawn_flaky_upstream().await;
    let settings = [
        ("GATEWAY_BREAKER_FAILURES", "3".to_owned()),
        ("GATEWAY_BREAKER_COOLDOWN_MS", "400".to_owned()),
        ("GATEWAY_RATE_LIMIT_RPS", "0".to_owned()),
    ];
    let gateway = spawn_gateway(flaky.server.addr, closed_port().await, &settings).await;
    let client = reqwest::Client::new();
    let get = || client.get(gateway.url("/accounts/anything")).send();

    flaky.failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(
            get().await.unwrap().status(),
            500,
            "upstream errors pass through"
        );
    }
    let hits = flaky.hits.load(Ordering::SeqCst);
    let open = get().await.unwrap();
    assert_eq!(open.status(), 503);
    assert_eq!(open.headers()["retry-after"], "1");
    assert_eq!(open.json::<Value>().await.unwrap()["code"], "circuit_open");
    assert_eq!(
        flaky.hits.load(Ordering::SeqCst),
        hits,
        "the upstream was not called"
    );
    assert!(
        gateway_metrics(&gateway)
            .await
            .contains(r#"gateway_circuit_breaker_state{upstream="accounts"} 1"#)
    );

    // Cool-down over, still failing: the trial fails and the breaker opens again. (Until the
    // cool-down is over every request is refused without reaching the upstream.)
    let trial = |expected: u16| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = get().await.unwrap().status().as_u16();
            if status != 503 {
                assert_eq!(status, expected, "the half-open trial reaches the upstream");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the breaker stayed open"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    trial(500).await;
    assert_eq!(get().await.unwrap().status(), 503, "open again");

    // Recovered: the next trial succeeds and the breaker closes.
    flaky.failing.store(false, Ordering::SeqCst);
    trial(200).await;
    for _ in 0..5 {
        assert_eq!(get().await.unwrap().status(), 200, "closed");
    }
    assert!(
        gateway_metrics(&gateway)
            .await
            .contains(r#"gateway_circuit_breaker_state{upstream="accounts"} 0"#)
    );
}

#[tokio::test]
async fn only_safe_or_idempotent_requests_are_retried() {
    let settings = [
        ("GATEWAY_BREAKER_FAILURES", "100".to_owned()),
        ("GATEWAY_RATE_LIMIT_RPS", "0".to_owned()),
    ];
    let gateway = spawn_gateway(closed_port().await, closed_port().await, &settings).await;
    let client = reqwest::Client::new();
    assert_eq!(get_status(&gateway, "/accounts/x").await, 502);
    let retried = |text: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(
                    r#"gateway_upstream_requests_total{outcome="retried",upstream="accounts"}"#,
                )
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(|n| n.parse::<u32>().unwrap())
            .unwrap_or(0)
    };
    assert_eq!(
        retried(&gateway_metrics(&gateway).await),
        2,
        "a GET is retried twice"
    );
    assert_eq!(
        client
            .post(gateway.url("/accounts/x"))
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        502
    );
    assert_eq!(
        retried(&gateway_metrics(&gateway).await),
        2,
        "a plain POST is not retried"
    );
    let keyed = client
        .post(gateway.url("/accounts/x"))
        .header("idempotency-key", "k")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 502);
    assert_eq!(
        retried(&gateway_metrics(&gateway).await),
        4,
        "a POST with an Idempotency-Key is"
    );
}

#[tokio::test]
async fn a_retried_request_reaches_the_upstream_with_its_whole_body() {
    // Nothing listens at first; the upstream comes up between the first try and a retry.
    let addr = closed_port().await;
    // Retries 50, 100, 200 ... ms apart: several seconds in all, however slow the machine.
    let gateway = spawn_gateway(addr, addr, &[("GATEWAY_RETRIES", "7".to_owned())]).await;
    let retried = r#"gateway_upstream_requests_total{outcome="retried",upstream="payments"} "#;
    let late = {
        let metrics_url = gateway.url("/metrics");
        tokio::spawn(async move {
            // Once the first try has found no upstream and a retry is coming.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let metrics = reqwest::get(&metrics_url)
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                if metrics
                    .lines()
                    .any(|l| l.starts_with(retried) && !l.ends_with(" 0"))
                {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "no retry was made");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            spawn_upstream_at(addr).await
        })
    };
    let response = reqwest::Client::new()
        .post(gateway.url("/payments/v1/payments"))
        .header("idempotency-key", "k-1")
        .body("{\"amount\":1}")
        .send()
        .await
        .unwrap();
    let _upstream = late.await.unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body_len"], 12, "the body the first try did not send");
    let metrics = gateway_metrics(&gateway).await;
    let retries: u32 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(
                r#"gateway_upstream_requests_total{outcome="retried",upstream="payments"} "#,
            )
        })
        .unwrap()
        .parse()
        .unwrap();
    assert!(retries >= 1, "the first try found no upstream: {metrics}");
}

#[tokio::test]
async fn dot_segments_are_refused() {
    let (_upstream, gateway) = spawn_in_front(&[]).await;
    // Sent raw: reqwest would normalize the path.
    for path in [
        "/accounts/../payments/x",
        "/accounts/%2e%2e/payments",
        "/payments/./x",
    ] {
        let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("malformed_request"));
    }
}

#[tokio::test]
async fn a_relative_location_is_rewritten_to_work_through_the_gateway() {
    let (_upstream, gateway) = spawn_in_front(&[]).await;
    let response = reqwest::Client::new()
        .post(gateway.url("/payments/created"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["location"], "/payments/v1/things/1");
    let metrics = gateway_metrics(&gateway).await;
    assert!(
        metrics.contains(r#"http_server_request_duration_seconds_count{http_request_method="POST",http_response_status_code="201",http_route="/payments/{*rest}"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gateway_upstream_requests_total{outcome="ok",upstream="payments"} 1"#),
        "{metrics}"
    );
}
