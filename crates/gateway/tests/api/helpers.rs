//! An echo upstream that reports what reached it, and `spawn_gateway` in front of it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::routing::{any, get};
use common::config::Env;
use common::testkit::Running;
use gateway::{Application, GatewayConfig};
use serde_json::{Map, Value, json};

/// What the echo upstream saw of one request.
async fn echo(ConnectInfo(peer): ConnectInfo<SocketAddr>, request: Request) -> axum::Json<Value> {
    let (parts, body) = request.into_parts();
    let headers: Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap_or("?"))))
        .collect();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    axum::Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": body.len(),
        "peer_port": peer.port(),
    }))
}

/// An upstream on port 0: `/slow` answers after 1.5 s, `/readyz` answers 200, `/teapot`
/// answers a plain-text 418, everything else echoes.
pub async fn spawn_upstream() -> Running {
    spawn_upstream_at("127.0.0.1:0".parse().unwrap()).await
}

/// [`spawn_upstream`] on `addr`.
pub async fn spawn_upstream_at(addr: SocketAddr) -> Running {
    let router = Router::new()
        .route("/readyz", get(|| async { "ready" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "slow"
            }),
        )
        .route(
            "/teapot",
            get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
        )
        .route(
            "/created",
            axum::routing::post(|| async {
                (StatusCode::CREATED, [("location", "/v1/things/1")], "made")
            }),
        )
        .route(
            "/big",
            get(|| async { Bytes::from(vec![b'x'; 3 * 1024 * 1024]) }),
        )
        .fallback(any(echo));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    Running::spawn(addr, move |shutdown| async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
        Ok(())
    })
}

/// An address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// The gateway with `/accounts` → `accounts`, `/payments` → `payments`, plus extra settings.
pub async fn spawn_gateway(
    accounts: SocketAddr,
    payments: SocketAddr,
    extra: &[(&str, String)],
) -> Running {
    let mut env = Env::from_pairs([
        ("GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
        ("GATEWAY_ACCOUNTS_URL", format!("http://{accounts}")),
        ("GATEWAY_PAYMENTS_URL", format!("http://{payments}")),
    ]);
    for (name, value) in extra {
        env = env.with(*name, value.clone());
    }
    let config = GatewayConfig::from_env(&env).expect("config");
    let app = Application::build(config).await.expect("gateway builds");
    let addr = app.local_addr().unwrap();
    Running::spawn(addr, |shutdown| app.run(shutdown))
}

/// An echo upstream and a gateway routing both `/accounts` and `/payments` to it, with
/// `extra` settings.
pub async fn spawn_in_front(extra: &[(&str, &str)]) -> (Running, Running) {
    let upstream = spawn_upstream().await;
    let extra: Vec<(&str, String)> = extra
        .iter()
        .map(|(name, value)| (*name, (*value).to_owned()))
        .collect();
    let gateway = spawn_gateway(upstream.addr, upstream.addr, &extra).await;
    (upstream, gateway)
}

/// GET `path` through the gateway with `client` (its connection kept, so the same gateway
/// worker) and decode the echo.
pub async fn echoed_by(client: &reqwest::Client, gateway: &Running, path: &str) -> Value {
    let response = client.get(gateway.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

/// GET through the gateway and decode the echo.
pub async fn echoed(gateway: &Running, path: &str) -> Value {
    let response = reqwest::get(gateway.url(path)).await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

/// An upstream whose every request fails with 500 while `failing` is set; `hits` counts what
/// reached it.
pub struct Flaky {
    pub server: Running,
    pub failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

pub async fn spawn_flaky_upstream() -> Flaky {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let failing = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let (f, h) = (failing.clone(), hits.clone());
    let router = Router::new().fallback(any(move || {
        let (f, h) = (f.clone(), h.clone());
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            if f.load(Ordering::SeqCst) {
                (StatusCode::INTERNAL_SERVER_ERROR, "broken")
            } else {
                (StatusCode::OK, "fine")
            }
        }
    }));
    let server = serve(router).await;
    Flaky {
        server,
        failing,
        hits,
    }
}

/// The gateway's own metrics text.
pub async fn gateway_metrics(gateway: &Running) -> String {
    reqwest::get(gateway.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Checks the statuses of requests sent one after another from `started` by one client with
/// a limit of `burst` refilled at one request a second: the first `burst` are allowed; no
/// more are allowed in all than the burst and what refilled meanwhile; and when the requests
/// outnumber those, the ones past them are refused. (Exact on a quick machine, and still
/// right on a slow one, where a second may pass within the burst.)
pub fn assert_limited(statuses: &[u16], burst: usize, started: std::time::Instant) {
    let refilled = started.elapsed().as_secs() as usize;
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses[..burst].iter().all(|s| *s == 200),
        "the burst is allowed: {statuses:?}"
    );
    assert!(
        allowed <= burst + refilled,
        "{allowed} allowed; the burst {burst} and {refilled} refilled at most: {statuses:?}"
    );
    if statuses.len() > burst + refilled {
        assert!(
            statuses.contains(&429),
            "over the burst and what refilled, a request is refused: {statuses:?}"
        );
    }
}

/// Polls `GET path` through `gateway` until it answers `status`, for at most 10 seconds (a
/// limit refilling, a breaker's cool-down running out).
pub async fn wait_for_status(gateway: &Running, path: &str, status: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = reqwest::get(gateway.url(path))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if now == status {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} answered {now}, waited for {status}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An upstream that answers every request with `name` (and counts them in `hits`).
pub async fn spawn_named_upstream(
    name: &'static str,
) -> (Running, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    spawn_named_upstream_at(name, "127.0.0.1:0".parse().unwrap()).await
}

/// [`spawn_named_upstream`] on `addr`.
pub async fn spawn_named_upstream_at(
    name: &'static str,
    addr: SocketAddr,
) -> (Running, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    let router = Router::new().fallback(any(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            name
        }
    }));
    (serve_at(router, addr).await, hits)
}

/// `router` served on a port of its own.
pub async fn serve(router: Router) -> Running {
    serve_at(router, "127.0.0.1:0".parse().unwrap()).await
}

/// `router` served on `addr`.
pub async fn serve_at(router: Router, addr: SocketAddr) -> Running {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    Running::spawn(addr, move |shutdown| async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await?;
        Ok(())
    })
}

/// A routes file with `text`, and the environment that points the gateway at it (looked at
/// for changes every 50 ms).
pub fn routes_file(text: &str) -> (tempfile::NamedTempFile, Vec<(&'static str, String)>) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let env = vec![
        (
            "GATEWAY_ROUTES_FILE",
            file.path().to_str().unwrap().to_owned(),
        ),
        ("GATEWAY_ROUTES_POLL_MS", "50".to_owned()),
    ];
    (file, env)
}

/// The value of the metric series `series` (the line's start, labels included) in `metrics`.
pub fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls the gateway's metrics until `check` accepts them, for at most 10 seconds.
pub async fn wait_for_metrics(
    gateway: &Running,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = gateway_metrics(gateway).await;
        if check(&metrics) {
            return metrics;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited for {what}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
