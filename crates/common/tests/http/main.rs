//! The shared HTTP layers, served for real on port 0: problem responses, the JSON extractor's
//! rejections, request ids, the body limit, panics, readiness.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed test should panic

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::routing::{get, post};
use common::config::HttpConfig;
use common::extract::Json;
use common::health::{HealthCheck, Readiness};
use common::testkit::Running;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct Greeting {
    name: String,
}

struct Switch(Arc<AtomicBool>);

#[async_trait::async_trait]
impl HealthCheck for Switch {
    fn name(&self) -> String {
        "switch".into()
    }
    fn component_type(&self) -> &'static str {
        "component"
    }
    async fn check(&self) -> Result<(), String> {
        if self.0.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("switched off".into())
        }
    }
}

async fn spawn(up: Arc<AtomicBool>) -> Running {
    let http = HttpConfig {
        max_body_bytes: 1024,
        ..HttpConfig::default()
    };
    let router = Router::new()
        .route(
            "/greet",
            post(|Json(g): Json<Greeting>| async move { Json(json!({"hello": g.name})) }),
        )
        .route(
            "/panic",
            get(|| async {
                #[allow(clippy::panic)]
                if true {
                    panic!("boom");
                }
                "unreachable"
            }),
        )
        .merge(common::health::routes(
            Readiness::new().with(Arc::new(Switch(up))),
        ));
    let router = common::server::finish(router, "test", &http, &common::metrics::Metrics::new());
    let listener = common::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    Running::spawn(addr, move |shutdown| async move {
        common::server::serve(
            listener,
            router,
            shutdown,
            std::time::Duration::from_secs(5),
        )
        .await?;
        Ok(())
    })
}

async fn problem(response: reqwest::Response) -> Value {
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["request_id"], request_id,
        "problem carries the request id"
    );
    for field in ["type", "title", "status", "detail", "code"] {
        assert!(!body[field].is_null(), "problem lacks {field}: {body}");
    }
    body
}

#[tokio::test]
async fn a_valid_json_body_is_accepted() {
    let app = spawn(Arc::new(AtomicBool::new(true))).await;
    let response = reqwest::Client::new()
        .post(app.url("/greet"))
        .json(&json!({"name": "ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["hello"], "ada");
}

#[tokio::test]
async fn a_body_without_json_content_type_is_415() {
    let app = spawn(Arc::new(AtomicBool::new(true))).await;
    let response = reqwest::Client::new()
        .post(app.url("/greet"))
        .body(r#"{"name":"ada"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(problem(response).await["code"], "unsupported_media_type");
}

#[tokio::test]
async fn invalid_json_and_the_wrong_shape_are_400_malformed_request() {
    let app = spawn(Arc::new(AtomicBool::new(true))).await;
    for body in [r#"{"name":"#, r#"{"nom":"ada"}"#, "[]", r#"{"name":42}"#] {
        let response = reqwest::Client::new()
            .post(app.url("/greet"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(problem(response).await["code"], "malformed_request");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn(Arc::new(AtomicBool::new(true))).await;
    let big = json!({"name": "x".repeat(4096)});
    let response = reqwest::Client::new()
        .post(app.url("/greet"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(problem(response).await["code"], "payload_too_large");
}

#[tokio::test]
async fn a_sane_request_id_is_echoed_and_an_insane_one_replaced() {
    let app = spawn(Arc::new(AtomicBool::new(true))).await;
    let client = reqwest::Client::new();
    let echoed = client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
    let replaced = client
        .get(app.url("/healthz"))
        .header("x-request-id", "no spaces allowed")
        .send()
        .await
        .unwrap();
    let id = replaced.headers()["x-request-id"].to_str().unwrap();
    assert!(!id.is_empty() && id != "no spaces allowed");
    let generated = client.get(app.url("/healthz")).send().await.unwrap();
    assert!(generated.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn unknown_paths_and_methods_are_problems() {
    let app = spawn(Arc::new(AtomicBool::new(true))).await;
    let client = reqwest::Client::new();
    let missing = client.get(app.url("/nowhere")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(problem(missing).await["code"], "not_found");
    let wrong_method = client.delete(app.url("/greet")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(wrong_method.headers()["allow"], "POST");
    assert_eq!(problem(wrong_method).await["code"], "method_not_allowed");
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_problem_and_the_server_lives_on() {
    let app = spawn(Arc::new(AtomicBool::new(true))).await;
    let client = reqwest::Client::new();
    let response = client.get(app.url("/panic")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    let body = problem(response).await;
    assert_eq!(body["code"], "internal_error");
    assert!(!body["detail"].as_str().unwrap().contains("boom"));
    let after = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(after.status(), 200);
}

#[tokio::test]
async fn readiness_follows_its_checks() {
    let up = Arc::new(AtomicBool::new(true));
    let app = spawn(up.clone()).await;
    let client = reqwest::Client::new();
    let ready = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.headers()["content-type"], "application/health+json");
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "pass");
    assert_eq!(body["checks"]["switch"][0]["status"], "pass");

    up.store(false, Ordering::SeqCst);
    // The answer is shared for up to a second: the next evaluation sees the change.
    let body = common::testkit::wait_for_readiness(&app.url(""), 503).await;
    let unready = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(unready.headers()["content-type"], "application/health+json");
    assert_eq!(body["status"], "fail");
    assert_eq!(body["checks"]["switch"][0]["output"], "switched off");

    let alive = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(alive.status(), 200, "liveness never looks at dependencies");
}

#[tokio::test]
async fn metrics_count_requests_by_method_route_and_status() {
    let app = spawn(Arc::new(AtomicBool::new(true))).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        client
            .post(app.url("/greet"))
            .json(&json!({"name": "ada"}))
            .send()
            .await
            .unwrap();
    }
    client.get(app.url("/nowhere")).send().await.unwrap();
    let response = client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains("# TYPE http_server_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains(r#"http_server_request_duration_seconds_count{http_request_method="POST",http_response_status_code="200",http_route="/greet"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="404",http_route="unmatched"} 1"#),
        "{text}"
    );
}
