//! Authorize, then capture: full and partial captures, a second capture, a capture after a
//! release, authorizations released when nobody captures them, and a capture the provider
//! did not confirm in time finished in the background.

use common::testkit::TestDatabase;
use serde_json::{Value, json};

use crate::helpers::{TestApp, id_of, spawn_app, spawn_app_with, usd_with};

common::both_databases!(
    manual_capture_full_and_partial,
    a_capture_replays_by_key_and_happens_once,
    captures_and_releases_that_are_refused,
    authorizations_nobody_captures_are_released,
    an_unconfirmed_capture_finishes_in_the_background,
);

/// A payment created with `capture_method: manual`, authorized.
async fn authorized(app: &TestApp, token: &str, key: &str, amount: Value) -> Value {
    let body = usd_with(amount, json!({"capture_method": "manual"}));
    let payment = app.processed_payment(token, key, &body).await;
    assert_eq!(payment["status"], "requires_capture", "{payment}");
    payment
}

async fn capture(app: &TestApp, token: &str, id: &str, body: Option<&Value>) -> (u16, Value) {
    let response = app
        .post(token, &format!("/v1/payments/{id}/capture"), None, body)
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn manual_capture_full_and_partial(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("capture@example.com").await;
    let held = authorized(&app, &token, "a1", json!("100.00")).await;
    let id = id_of(&held);
    assert_eq!(held["capture_method"], "manual");
    assert_eq!(held["amount_captured"], "0.00");
    assert!(held["capture_before"].is_string(), "{held}");

    // Part of it: the rest is released.
    let (status, captured) = capture(
        &app,
        &token,
        &id,
        Some(&json!({"amount_to_capture": "60.00"})),
    )
    .await;
    assert_eq!(status, 200, "{captured}");
    assert_eq!(captured["status"], "succeeded");
    assert_eq!(
        (
            captured["amount"].as_str(),
            captured["amount_captured"].as_str()
        ),
        (Some("100.00"), Some("60.00"))
    );
    let read: Value = app
        .get(&token, &format!("/v1/payments/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read, captured, "the response is the payment as stored");
    let types: Vec<String> = app
        .store
        .payment_events(&id)
        .await
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "payments.payment.created",
            "payments.payment.processing",
            "payments.payment.requires_capture",
            "payments.payment.succeeded"
        ]
    );
    // Refunds are bounded by what was captured, not what was authorized.
    let over = app
        .refund(&token, &id, "over", &json!({"amount": "60.01"}))
        .await;
    assert_eq!(over.status(), 422);
    let all = app.refund(&token, &id, "all", &json!({})).await;
    assert_eq!(all.json::<Value>().await.unwrap()["amount"], "60.00");

    // No body: all of it.
    let whole = id_of(&authorized(&app, &token, "a2", json!(25)).await);
    let (status, captured) = capture(&app, &token, &whole, None).await;
    assert_eq!(
        (status, captured["amount_captured"].as_str()),
        (200, Some("25.00"))
    );
    let metrics = app.metrics().await;
    for series in [
        "payments_processed_total{outcome=\"authorized\"} 2",
        "payments_captures_total{outcome=\"captured\"} 2",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
}

async fn a_capture_replays_by_key_and_happens_once(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("replay-capture@example.com").await;
    let id = id_of(&authorized(&app, &token, "a", json!(30)).await);
    let path = format!("/v1/payments/{id}/capture");
    let body = json!({"amount_to_capture": 20});
    let first = app.post(&token, &path, Some("cap-1"), Some(&body)).await;
    assert_eq!(first.status(), 200);
    let first_text = first.text().await.unwrap();
    let again = app.post(&token, &path, Some("cap-1"), Some(&body)).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.text().await.unwrap(),
        first_text,
        "byte-identical replay"
    );
    // Without the key (or with another), a second capture is refused: it happens once.
    for key in [None, Some("cap-2")] {
        let twice = app.post(&token, &path, key, Some(&body)).await;
        assert_eq!(twice.status(), 409, "{key:?}");
        assert_eq!(
            twice.json::<Value>().await.unwrap()["code"],
            "invalid_state"
        );
    }
    assert_eq!(
        app.store.sandbox_calls("capture").await.unwrap(),
        [(id.clone(), 1)]
    );
    let captured = app.store.payment(&id).await.unwrap().unwrap();
    assert_eq!(captured.amount_captured_minor, 2000);
}

async fn captures_and_releases_that_are_refused(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("refused-capture@example.com").await;
    // An automatic payment has nothing to capture.
    let automatic = app
        .processed_payment(&token, "auto", &usd_with(json!(10), json!({})))
        .await;
    let (status, problem) = capture(&app, &token, &id_of(&automatic), None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("invalid_state"))
    );
    assert_eq!(automatic["capture_method"], "automatic");
    assert_eq!(automatic["amount_captured"], "10.00");

    let later = app
        .create(
            &token,
            "later",
            &usd_with(json!(10), json!({"capture_method": "later"})),
        )
        .await;
    assert_eq!(later.status(), 422);
    let later: Value = later.json().await.unwrap();
    assert_eq!(later["errors"][0]["field"], "capture_method", "{later}");
    let id = id_of(&authorized(&app, &token, "a", json!(10)).await);
    let (status, problem) = capture(
        &app,
        &token,
        &id,
        Some(&json!({"amount_to_capture": "10.01"})),
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("amount_too_large")),
        "{problem}"
    );
    for bad in [
        json!({"amount_to_capture": "0"}),
        json!({"amount_to_capture": "1.001"}),
    ] {
        let (status, problem) = capture(&app, &token, &id, Some(&bad)).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (422, Some("validation_failed")),
            "{bad}"
        );
    }
    let not_json = app
        .client
        .post(app.url(&format!("/v1/payments/{id}/capture")))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("all of it")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);
    // A refund of an authorization: nothing was captured yet.
    let early = app.refund(&token, &id, "early", &json!({})).await;
    assert_eq!(early.status(), 409);
    // Another principal cannot capture it.
    let bob = app.user_token("bob-capture@example.com").await;
    let (status, _) = capture(&app, &bob, &id, None).await;
    assert_eq!(status, 404);

    // Cancel releases the authorization; a capture afterwards is refused.
    let canceled = app
        .post(&token, &format!("/v1/payments/{id}/cancel"), None, None)
        .await;
    assert_eq!(canceled.status(), 200);
    let canceled: Value = canceled.json().await.unwrap();
    assert_eq!(
        (
            canceled["status"].as_str(),
            canceled["cancellation_reason"].as_str()
        ),
        (Some("canceled"), Some("requested"))
    );
    let (status, problem) = capture(&app, &token, &id, None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("invalid_state"))
    );
    assert_eq!(
        app.store.sandbox_calls("release").await.unwrap(),
        [(id.clone(), 1)],
        "released at the provider"
    );
    assert!(
        app.metrics()
            .await
            .contains("payments_authorizations_released_total{reason=\"requested\"} 1")
    );
}

async fn authorizations_nobody_captures_are_released(db: TestDatabase) {
    let app = spawn_app_with(db, &[("PAYMENTS_AUTHORIZATION_WINDOW_SECONDS", "1")]).await;
    let token = app.user_token("expiry@example.com").await;
    let id = id_of(&authorized(&app, &token, "a", json!(10)).await);
    let released = app
        .wait_for(&token, &format!("/v1/payments/{id}"), &["canceled"])
        .await;
    assert_eq!(released["cancellation_reason"], "authorization_expired");
    let last = app.store.payment_events(&id).await.unwrap().pop().unwrap();
    assert_eq!(last["type"], "payments.payment.canceled");
    let (status, _) = capture(&app, &token, &id, None).await;
    assert_eq!(status, 409, "too late to capture");
    assert!(
        app.metrics()
            .await
            .contains("payments_authorizations_released_total{reason=\"authorization_expired\"} 1")
    );
}

/// The provider takes longer than the request waits: 202, the payment still
/// `requires_capture`, and a worker finishes the capture by asking the provider (which had
/// done it) once the request's lease has run out.
async fn an_unconfirmed_capture_finishes_in_the_background(db: TestDatabase) {
    let app = spawn_app_with(
        db,
        &[
            ("PAYMENTS_SANDBOX_LATENCY_MS", "400"),
            ("PAYMENTS_PROVIDER_TIMEOUT_MS", "100"),
            ("PAYMENTS_LEASE_SECONDS", "1"),
        ],
    )
    .await;
    let token = app.user_token("unconfirmed@example.com").await;
    let id = id_of(&authorized(&app, &token, "a", json!(10)).await);
    let (status, pending) = capture(&app, &token, &id, None).await;
    assert_eq!(
        (status, pending["status"].as_str()),
        (202, Some("requires_capture")),
        "{pending}"
    );
    // Asked once: a second capture is refused while the first is under way.
    let (status, problem) = capture(&app, &token, &id, None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("invalid_state"))
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("under way"),
        "{problem}"
    );
    let captured = app
        .wait_for(&token, &format!("/v1/payments/{id}"), &["succeeded"])
        .await;
    assert_eq!(captured["amount_captured"], "10.00");
    assert_eq!(
        app.store.sandbox_calls("capture").await.unwrap(),
        [(id.clone(), 1)],
        "asked, not captured twice"
    );
    let metrics = app.metrics().await;
    for series in [
        "payments_captures_total{outcome=\"unconfirmed\"} 1",
        "payments_captures_total{outcome=\"captured\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
}
