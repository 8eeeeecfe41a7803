//! OTLP export: one request's spans, from the gateway to the database, reach a collector as one
//! trace with the right parentage. A test binary of its own: it installs the process's global
//! subscriber, which no other test may race.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed test should panic

#[path = "../support/stack.rs"]
#[allow(dead_code)] // the helpers this test does not use
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::telemetry::TraceExport;
use common::testkit::TestDatabase;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use support::{spawn_stack_with, user_token};

/// A span as the collector got it.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: Vec<(String, String)>,
    error: bool,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The fake collector: `POST /v1/traces` with an OTLP protobuf body.
async fn spawn_collector() -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut spans = store.lock().unwrap();
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            spans.push(Received {
                                name: span.name,
                                kind: span.kind,
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent: hex(&span.parent_span_id),
                                attributes: span
                                    .attributes
                                    .into_iter()
                                    .map(|kv| (kv.key, value_text(kv.value)))
                                    .collect(),
                                error: span.status.is_some_and(|s| s.code == 2),
                            });
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

fn value_text(value: Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match value.and_then(|v| v.value) {
        Some(Value::StringValue(text)) => text,
        Some(Value::IntValue(n)) => n.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// Not a tokio test: the exporter's HTTP client must be built outside any runtime.
#[test]
fn one_request_is_one_trace_from_the_gateway_to_the_database() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (collector, received) = runtime.block_on(spawn_collector());
    let export = TraceExport {
        endpoint: format!("http://{collector}/v1/traces"),
        service_name: None,
    };
    let provider = export.provider("stack").unwrap();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(common::telemetry::otel_layer(&provider, "stack"))
        .init();

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    runtime.block_on(async {
        // The monolith is down: a 5xx to look for.
        let stack = spawn_stack_with(
            TestDatabase::sqlite().await,
            &[("GATEWAY_FALLBACK_URL", "http://127.0.0.1:1")],
        )
        .await;
        let token = user_token(&stack, "traced@example.com").await;
        let response = reqwest::Client::new()
            .post(stack.url("/payments/v1/payments"))
            .bearer_auth(&token)
            .header("idempotency-key", "traced-1")
            .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
            .json(&serde_json::json!({"amount": "12.50", "currency": "EUR"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let failing = reqwest::Client::new()
            .get(stack.url("/admin/"))
            .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
            .send()
            .await
            .unwrap();
        assert_eq!(failing.status(), 502);
    });
    provider.force_flush().unwrap();

    let spans: Vec<Received> = received
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .cloned()
        .collect();
    let find = |name: &str, kind: SpanKind, parent: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.kind == kind as i32 && s.parent == parent)
            .unwrap_or_else(|| {
                let seen: Vec<_> = spans
                    .iter()
                    .map(|s| (&s.name, s.kind, &s.span_id, &s.parent))
                    .collect();
                panic!("no {name} span under {parent} in {seen:#?}")
            })
            .clone()
    };
    let gateway = find("POST /payments/{*rest}", SpanKind::Server, caller_span);
    assert_eq!(gateway.attribute("service"), Some("gateway"));
    let client = find("POST", SpanKind::Client, &gateway.span_id);
    assert!(client.attribute("upstream").is_some());
    let payments = find("POST /v1/payments", SpanKind::Server, &client.span_id);
    assert_eq!(payments.attribute("service"), Some("payments"));
    assert_eq!(payments.attribute("http.route"), Some("/v1/payments"));
    assert_eq!(payments.attribute("http.request.method"), Some("POST"));
    assert_eq!(payments.attribute("url.scheme"), Some("http"));
    assert_eq!(payments.attribute("http.response.status_code"), Some("202"));
    assert!(
        spans
            .iter()
            .any(|s| s.name == "db create_payment_under_new_key"
                && s.kind == SpanKind::Client as i32
                && s.parent == payments.span_id
                && s.attribute("db.system.name") == Some("sqlite")),
        "the payment's insert is a child of the payments span: {spans:#?}"
    );
    assert!(!gateway.error && !client.error && !payments.error);
    let failed = find("GET {*fallback}", SpanKind::Server, caller_span);
    assert!(failed.error, "a 5xx marks the server span as an error");
    assert!(find("GET", SpanKind::Client, &failed.span_id).error);
}
