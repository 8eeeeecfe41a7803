//! What a request leaves in the log: one access line carrying the request's ids, and never a
//! password, a token or a client secret. A test binary of its own: the log is captured on the
//! test's thread, and no other test may race it to register the same log call sites.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed test should panic

#[path = "../api/helpers.rs"]
#[allow(dead_code)] // the helpers this test does not use
mod helpers;

use common::testkit::{CapturedLog, TestDatabase};
use serde_json::Value;

use crate::helpers::spawn_app;

// Current-thread: the server runs on the test's thread, where the capture is installed.
#[tokio::test]
async fn a_request_logs_its_ids_and_no_secret() {
    let (log, _guard) = CapturedLog::install();
    let app = spawn_app(TestDatabase::sqlite().await).await;
    let password = "Secret-Passw0rd-Never-Logged";
    assert_eq!(
        app.sign_up("logs@example.com", password).await.status(),
        201
    );
    let tokens = app.login("logs@example.com", password).await;
    let wrong = app
        .token(&[
            ("grant_type", "password"),
            ("username", "logs@example.com"),
            ("password", "Wrong-Passw0rd-Never-Logged"),
        ])
        .await;
    assert_eq!(wrong.status(), 400);
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let me = app
        .client
        .get(app.url("/users/me"))
        .bearer_auth(access)
        .header("x-request-id", "logs-test-1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let admin = app.admin_token().await;
    let client: Value = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &serde_json::json!({"name": "billing", "scopes": ["payments:read"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let secret = client["client_secret"].as_str().expect("secret shown once");

    let text = log.text();
    for (what, value) in [
        ("password", password),
        ("wrong password", "Wrong-Passw0rd-Never-Logged"),
        ("access token", access),
        ("refresh token", refresh),
        ("admin token", admin.as_str()),
        ("client secret", secret),
    ] {
        assert!(!text.contains(value), "the {what} was logged");
    }

    let lines = log.lines();
    let access_line = lines
        .iter()
        .find(|l| l["request_id"] == "logs-test-1" && l["message"] == "request completed")
        .unwrap_or_else(|| panic!("no access line for the request in:\n{text}"));
    for field in ["timestamp", "level", "target", "span_id", "latency_ms"] {
        assert!(access_line.get(field).is_some(), "{field} in {access_line}");
    }
    assert_eq!(access_line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(
        access_line["span_id"], "00f067aa0ba902b7",
        "a span of its own"
    );
    assert_eq!(access_line["http.request.method"], "GET");
    assert_eq!(access_line["http.route"], "/users/me");
    assert_eq!(access_line["http.response.status_code"], 200);
    assert_eq!(access_line["service"], "accounts");
}
