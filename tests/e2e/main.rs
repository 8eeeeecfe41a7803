//! End to end: the all-in-one stack (gateway, accounts, payments) started in-process on port 0,
//! every request through the gateway, on SQLite (the default under `DATA_DIR`) and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed test should panic

use common::testkit::{TestDatabase, assert_live, readiness as get_readiness};
use serde_json::Value;

mod cli;
mod nul;
#[path = "../support/stack.rs"]
mod support;
use support::{TestStack, spawn_stack, spawn_stack_with, user_token};

common::both_databases!(
    health,
    readiness,
    jwks_shape,
    users_me,
    unknown_paths_are_404_problems,
    a_payment_through_the_gateway,
    rate_limits_follow_the_token_subject,
    the_stack_shuts_down_cleanly,
    processing_stops_taking_payments_at_the_first_signal,
);

async fn health(db: TestDatabase) {
    let stack = spawn_stack(db).await;
    for service in ["/accounts", "/payments", ""] {
        assert_live(&stack.url(service)).await;
    }
}

async fn readiness(db: TestDatabase) {
    let postgres = db.is_postgres();
    let stack = spawn_stack(db).await;
    for service in ["/accounts", "/payments"] {
        let (status, body) = get_readiness(&stack.url(service)).await;
        assert_eq!(status, 200, "{service}: {body}");
        assert_eq!(body["checks"]["database"][0]["status"], "pass");
    }
    let (status, body) = get_readiness(&stack.url("")).await;
    assert_eq!(status, 200, "gateway: {body}");
    if !postgres {
        for file in ["accounts.db", "payments.db"] {
            assert!(
                stack.data_dir.path().join(file).exists(),
                "{file} created under DATA_DIR"
            );
        }
    }
}

async fn jwks_shape(db: TestDatabase) {
    let stack = spawn_stack(db).await;
    let response = reqwest::get(stack.url("/accounts/.well-known/jwks.json"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    let body: Value = response.json().await.unwrap();
    let keys = body["keys"].as_array().expect("{\"keys\": [...]}");
    assert_eq!(
        keys.len(),
        2,
        "the RS256 key made at first start, and the next one, published before it signs"
    );
    for key in keys {
        assert_eq!(key["alg"], "RS256");
        assert_eq!(key["use"], "sig");
        assert!(key.get("d").is_none());
    }
}

async fn users_me(db: TestDatabase) {
    let stack = spawn_stack(db).await;
    let client = reqwest::Client::new();
    let anonymous = client
        .get(stack.url("/accounts/users/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let request_id = anonymous.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");
    assert_eq!(
        body["request_id"], request_id,
        "the service saw the gateway's request id"
    );

    let token = user_token(&stack, "e2e@example.com").await;
    let me = client
        .get(stack.url("/accounts/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["email"], "e2e@example.com");
}

async fn unknown_paths_are_404_problems(db: TestDatabase) {
    let stack = spawn_stack(db).await;
    let client = reqwest::Client::new();
    for path in ["/nowhere", "/accounts/nowhere", "/payments/v2/nothing"] {
        let response = client
            .get(stack.url(path))
            .header("x-request-id", "e2e-404")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(response.headers()["x-request-id"], "e2e-404");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_found");
        assert_eq!(body["request_id"], "e2e-404");
    }
}

/// The seed's curl example, with a token, through the gateway: accepted, readable at its
/// `Location` through the gateway, processed to `succeeded`.
async fn a_payment_through_the_gateway(db: TestDatabase) {
    let stack = spawn_stack(db).await;
    let client = reqwest::Client::new();
    let token = user_token(&stack, "shop@example.com").await;
    let response = client
        .post(stack.url("/payments/payments"))
        .bearer_auth(&token)
        .header("idempotency-key", "e2e-1")
        .json(&serde_json::json!({"amount": 100.00, "currency": "USD", "description": "Test payment"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("/payments/v1/payments/pay_"),
        "{location}"
    );
    let payment: Value = response.json().await.unwrap();
    assert_eq!(payment["amount_minor"], 10000);
    let mut status = String::new();
    for _ in 0..100 {
        let read: Value = client
            .get(stack.url(&location))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(read["id"], payment["id"]);
        status = read["status"].as_str().unwrap().to_owned();
        if status == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, "succeeded");
}

async fn the_stack_shuts_down_cleanly(db: TestDatabase) {
    let stack = spawn_stack(db).await;
    assert_live(&stack.url("/accounts")).await;
    let TestStack {
        gateway,
        _databases,
        data_dir: _data_dir,
        ..
    } = stack;
    let addr = gateway.addr;
    gateway
        .stop()
        .await
        .expect("every service stops without error");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the gateway no longer listens"
    );
}

async fn rate_limits_follow_the_token_subject(db: TestDatabase) {
    let stack = spawn_stack_with(
        db,
        &[
            ("GATEWAY_RATE_LIMIT_RPS", "1"),
            ("GATEWAY_RATE_LIMIT_BURST", "5"),
        ],
    )
    .await;
    let alice = user_token(&stack, "limit-a@example.com").await;
    let bob = user_token(&stack, "limit-b@example.com").await;
    let client = reqwest::Client::new();
    let me = |token: &str| {
        client
            .get(stack.url("/accounts/users/me"))
            .bearer_auth(token.to_owned())
            .send()
    };
    let started = std::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(me(&alice).await.unwrap().status(), 200);
    }
    let mut limited = me(&alice).await.unwrap();
    while limited.status() == 200 {
        // A second passed within the burst (a slow machine): one more was refilled.
        assert!(
            started.elapsed() >= std::time::Duration::from_secs(1),
            "allowed past the burst"
        );
        limited = me(&alice).await.unwrap();
    }
    assert_eq!(limited.status(), 429, "Alice spent her burst");
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        me(&bob).await.unwrap().status(),
        200,
        "Bob, from the same IP, has his own"
    );
}

/// Shutdown: the gateway drains first, and the services serve until it has; but payment
/// processing stops taking new work at the first signal (it finishes what it holds).
async fn processing_stops_taking_payments_at_the_first_signal(db: TestDatabase) {
    let stack = spawn_stack(db).await;
    let client = reqwest::Client::new();
    let token = user_token(&stack, "drain@example.com").await;
    // A request through the gateway whose body is still coming keeps it draining.
    let (more, rest) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let slow = client
        .post(stack.url("/accounts/v1/users"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(tokio_stream_of(rest)))
        .send();
    let slow = tokio::spawn(slow);
    more.send(Ok(b"{\"email\": \"late@example.com\", ".to_vec()))
        .await
        .unwrap();
    // It has reached the gateway (the scrape is the other request in flight).
    common::testkit::wait_for_active_requests(&stack.url(""), 2).await;
    stack.gateway.begin_shutdown();
    // Payments still serves (the gateway has not drained), but takes no new work.
    let direct = |path: &str| format!("http://{}{path}", stack.payments);
    let created = client
        .post(direct("/v1/payments"))
        .bearer_auth(&token)
        .header("idempotency-key", "late-1")
        .json(&serde_json::json!({"amount": "1.00", "currency": "USD", "description": "late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Workers are woken by every new payment: a worker still claiming takes it within
    // milliseconds. Watched for a while: it stays pending.
    let watch_until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    while std::time::Instant::now() < watch_until {
        let read: Value = client
            .get(direct(&format!("/v1/payments/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            read["status"], "pending",
            "claimed after the shutdown signal"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    more.send(Ok(b"\"password\": \"password-123\"}".to_vec()))
        .await
        .unwrap();
    drop(more);
    let finished = slow.await.unwrap().unwrap();
    assert_eq!(finished.status(), 201, "the in-flight request finished");
    let TestStack {
        gateway,
        payments_db,
        _databases,
        ..
    } = stack;
    gateway.stop().await.expect("a clean stop");
    let store = payments::store::open(&payments_db, 1).await.unwrap();
    let stored = store.payment(&id).await.unwrap().unwrap();
    assert_eq!(stored.status, "pending", "left for the next start");
}

/// The receiving end of a channel as a stream of body chunks.
fn tokio_stream_of(
    mut rest: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rest.poll_recv(cx))
}
