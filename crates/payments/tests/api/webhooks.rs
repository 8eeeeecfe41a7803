//! Webhooks: endpoints and their checks (SSRF), every event delivered signed (verified with
//! the `standardwebhooks` crate) and filtered by type, retries on a schedule and the
//! delivery log, an endpoint disabled for failing too long, secret rotation, redelivery, a
//! slow endpoint holding up no other, two replicas never sending an attempt twice, concurrent
//! claims of the store sharing the due deliveries, and a process killed mid-delivery.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::testkit::TestDatabase;
use payments::store::DeliveryShares;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, id_of, owned, spawn_app_with, spawn_payments_process, start_payments, usd,
};

common::both_databases!(
    endpoints_are_managed_and_checked,
    urls_that_reach_private_addresses_are_refused,
    every_event_is_delivered_signed_and_filtered_by_type,
    failures_are_retried_on_the_schedule_and_logged,
    an_endpoint_failing_too_long_is_disabled,
    a_rotated_secret_signs_beside_the_old_one,
    an_event_can_be_delivered_again,
    a_slow_endpoint_holds_up_no_other,
    failing_endpoints_that_hang_leave_healthy_ones_their_slots,
    two_replicas_never_send_an_attempt_twice,
    concurrent_claims_share_the_due_deliveries_longest_due_first,
    a_claim_shares_the_slots_between_endpoints_healthy_ones_first,
    a_delivery_in_flight_when_its_process_is_killed_is_made_after_restart,
);

/// Receivers here are on 127.0.0.1 over http, so tests allow both.
const OPEN: [(&str, &str); 3] = [
    ("PAYMENTS_WEBHOOK_ALLOW_PRIVATE", "true"),
    ("PAYMENTS_WEBHOOK_ALLOW_HTTP", "true"),
    (
        "PAYMENTS_WEBHOOK_RETRY_SCHEDULE",
        "100ms,200ms,300ms,400ms,500ms,500ms,500ms,500ms",
    ),
];

/// What a receiver does with a delivery.
const OK: u8 = 0;
const FAIL: u8 = 1;
const HOLD: u8 = 2;

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    kind: String,
    signatures: usize,
    /// Which of the receiver's secrets verified it.
    verified_by: Vec<usize>,
}

#[derive(Default)]
struct ReceiverState {
    secrets: Mutex<Vec<String>>,
    received: Mutex<Vec<Received>>,
    mode: AtomicU8,
    release: tokio::sync::Notify,
}

/// A webhook receiver: verifies each delivery with the `standardwebhooks` crate against the
/// secrets it was given, records it, and answers as its mode says.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start() -> Self {
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    fn trust(&self, secret: &str) {
        self.state.secrets.lock().unwrap().push(secret.to_owned());
    }

    fn mode(&self, mode: u8) {
        self.state.mode.store(mode, Ordering::SeqCst);
        if mode != HOLD {
            self.state.release.notify_waiters();
        }
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Deliveries per event id.
    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for r in self.received() {
            *counts.entry(r.id).or_insert(0) += 1;
        }
        counts
    }

    async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) {
        for _ in 0..400 {
            if done(&self.received()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the receiver never saw {what}: {:?}", self.received());
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let secrets = state.secrets.lock().unwrap().clone();
    let verified_by: Vec<usize> = secrets
        .iter()
        .enumerate()
        .filter(|(_, secret)| {
            standardwebhooks::Webhook::new(secret)
                .unwrap()
                .verify(&body, &headers)
                .is_ok()
        })
        .map(|(n, _)| n)
        .collect();
    let event: Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = headers["webhook-id"].to_str().unwrap().to_owned();
    assert_eq!(event["id"], id.as_str(), "webhook-id is the event id");
    let signatures = headers["webhook-signature"]
        .to_str()
        .unwrap()
        .split(' ')
        .count();
    state.received.lock().unwrap().push(Received {
        id,
        kind: event["type"].as_str().unwrap_or_default().to_owned(),
        signatures,
        verified_by,
    });
    match state.mode.load(Ordering::SeqCst) {
        FAIL => StatusCode::INTERNAL_SERVER_ERROR,
        HOLD => {
            state.release.notified().await;
            StatusCode::OK
        }
        _ => StatusCode::NO_CONTENT,
    }
}

async fn register(app: &TestApp, admin: &str, url: &str, events: Value) -> Value {
    let response = app
        .post(
            admin,
            "/v1/webhook_endpoints",
            None,
            Some(&json!({"url": url, "enabled_events": events})),
        )
        .await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

async fn listen(app: &TestApp, admin: &str, receiver: &Receiver, events: Value) -> String {
    let endpoint = register(app, admin, &receiver.url, events).await;
    receiver.trust(endpoint["secret"].as_str().unwrap());
    id_of(&endpoint)
}

/// Creates `n` payments and waits until they are processed; returns their ids.
async fn payments(app: &TestApp, token: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let payment = app
            .processed_payment(token, &format!("{prefix}-{i}"), &usd(json!(5)))
            .await;
        ids.push(id_of(&payment));
    }
    ids
}

/// Every event id of these payments, from the store.
async fn event_ids(app: &TestApp, payments: &[String]) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    for payment in payments {
        for event in app.store.payment_events(payment).await.unwrap() {
            ids.push((
                event["id"].as_str().unwrap().to_owned(),
                event["type"].as_str().unwrap().to_owned(),
            ));
        }
    }
    ids
}

async fn deliveries(app: &TestApp, admin: &str, endpoint: &str) -> Vec<Value> {
    let page: Value = app
        .get(
            admin,
            &format!("/v1/webhook_endpoints/{endpoint}/deliveries?limit=100"),
        )
        .await
        .json()
        .await
        .unwrap();
    page["data"].as_array().unwrap().clone()
}

async fn endpoints_are_managed_and_checked(db: TestDatabase) {
    let app = spawn_app_with(db, &OPEN).await;
    let admin = app.admin_token().await;
    let created = register(
        &app,
        &admin,
        "http://127.0.0.1:9/hook",
        json!(["payments.payment.succeeded"]),
    )
    .await;
    let id = id_of(&created);
    assert!(id.starts_with("we_"));
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(
        (created["status"].as_str(), created["object"].as_str()),
        (Some("enabled"), Some("webhook_endpoint"))
    );
    let read: Value = app
        .get(&admin, &format!("/v1/webhook_endpoints/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        read.get("secret").is_none(),
        "the secret is shown once: {read}"
    );
    assert_eq!(
        read["enabled_events"],
        json!(["payments.payment.succeeded"])
    );
    let list: Value = app
        .get(&admin, "/v1/webhook_endpoints")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert!(list["data"][0].get("secret").is_none());

    let patch = |body: Value| {
        let (app, admin, id) = (&app, &admin, &id);
        async move {
            let response = app
                .client
                .patch(app.url(&format!("/v1/webhook_endpoints/{id}")))
                .bearer_auth(admin)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, changed) =
        patch(json!({"enabled_events": ["*"], "description": "all of it", "disabled": true})).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (
            changed["status"].as_str(),
            changed["disabled_reason"].as_str()
        ),
        (Some("disabled"), Some("disabled by request"))
    );
    assert_eq!(changed["enabled_events"], json!(["*"]));
    let (_, enabled) = patch(json!({"disabled": false})).await;
    assert_eq!(
        (
            enabled["status"].as_str(),
            enabled["disabled_reason"].as_str()
        ),
        (Some("enabled"), None)
    );
    for (body, field) in [
        (
            json!({"enabled_events": ["payments.payment.exploded"]}),
            "enabled_events",
        ),
        (json!({"enabled_events": []}), "enabled_events"),
        (
            json!({"enabled_events": ["*", "payments.payment.created"]}),
            "enabled_events",
        ),
        (json!({"url": "ftp://example.com/"}), "url"),
        (json!({"description": "x".repeat(1001)}), "description"),
    ] {
        let (status, problem) = patch(body.clone()).await;
        assert_eq!(
            (status, problem["errors"][0]["field"].as_str()),
            (422, Some(field)),
            "{body}: {problem}"
        );
    }
    // Only administrators.
    let user = app.user_token("not-admin@example.com").await;
    let refused = app
        .post(
            &user,
            "/v1/webhook_endpoints",
            None,
            Some(&json!({"url": "http://127.0.0.1:9/", "enabled_events": ["*"]})),
        )
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        app.get(&user, &format!("/v1/webhook_endpoints/{id}"))
            .await
            .status(),
        403
    );

    let deleted = app
        .client
        .delete(app.url(&format!("/v1/webhook_endpoints/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(deleted.json::<Value>().await.unwrap()["deleted"], true);
    assert_eq!(
        app.get(&admin, &format!("/v1/webhook_endpoints/{id}"))
            .await
            .status(),
        404
    );
}

async fn urls_that_reach_private_addresses_are_refused(db: TestDatabase) {
    // The defaults: https only, no private addresses.
    let app = spawn_app_with(db, &[]).await;
    let admin = app.admin_token().await;
    for url in [
        "https://127.0.0.1/hook",
        "https://localhost/hook", // a name that resolves to 127.0.0.1
        "https://10.0.0.8/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "http://shop.example.com/hook",
        "https://user:password@shop.example.com/hook",
        "not a url",
    ] {
        let response = app
            .post(
                &admin,
                "/v1/webhook_endpoints",
                None,
                Some(&json!({"url": url, "enabled_events": ["*"]})),
            )
            .await;
        let status = response.status();
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            (status.as_u16(), problem["errors"][0]["field"].as_str()),
            (422, Some("url")),
            "{url}: {problem}"
        );
    }
    // An endpoint registered while a name was public, then pointed at a private address (DNS
    // rebinding): the check at connect refuses it, and says so in the delivery log.
    let open = spawn_app_with(
        TestDatabase::sqlite().await,
        &[
            ("PAYMENTS_WEBHOOK_ALLOW_HTTP", "true"),
            ("PAYMENTS_WEBHOOK_RETRY_SCHEDULE", "100ms"),
        ],
    )
    .await;
    let admin = open.admin_token().await;
    // (Written as such a name would leave it: registered while public, now resolving to
    // 127.0.0.1.)
    let endpoint = payments::domain::webhook::WebhookEndpoint::new(
        "http://localhost:9/hook".into(),
        String::new(),
        &["*".to_owned()],
        chrono::Utc::now(),
    );
    open.store.create_webhook_endpoint(&endpoint).await.unwrap();
    let endpoint = json!({"id": endpoint.id});
    let token = open.user_token("ssrf@example.com").await;
    open.create(&token, "p", &usd(json!(1))).await;
    for _ in 0..200 {
        let log = deliveries(&open, &admin, &id_of(&endpoint)).await;
        if log.iter().any(|d| d["status"] == "failed") {
            let errors: Vec<&str> = log
                .iter()
                .flat_map(|d| d["attempts"].as_array().unwrap().iter())
                .filter_map(|a| a["error"].as_str())
                .collect();
            assert!(
                errors.iter().all(|e| e.starts_with("refused")),
                "{errors:?}"
            );
            assert!(
                open.metrics()
                    .await
                    .contains("payments_webhook_attempts_total{outcome=\"refused\"}")
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the rebound endpoint was not refused");
}

async fn every_event_is_delivered_signed_and_filtered_by_type(db: TestDatabase) {
    let app = spawn_app_with(db, &OPEN).await;
    let admin = app.admin_token().await;
    let token = app.user_token("hooks@example.com").await;
    let everything = Receiver::start().await;
    let succeeded = Receiver::start().await;
    let all_id = listen(&app, &admin, &everything, json!(["*"])).await;
    listen(
        &app,
        &admin,
        &succeeded,
        json!(["payments.payment.succeeded", "payments.refund.succeeded"]),
    )
    .await;
    let authorizations = Receiver::start().await;
    listen(
        &app,
        &admin,
        &authorizations,
        json!(["payments.payment.requires_capture"]),
    )
    .await;
    let paid = payments(&app, &token, "p", 4).await;
    let refund: Value = app
        .refund(&token, &paid[0], "r", &json!({"amount": 1}))
        .await
        .json()
        .await
        .unwrap();
    app.wait_for(
        &token,
        &format!("/v1/refunds/{}", id_of(&refund)),
        &["succeeded"],
    )
    .await;
    let events = event_ids(&app, &paid).await;
    let wanted: Vec<&(String, String)> = events
        .iter()
        .filter(|(_, kind)| {
            kind == "payments.payment.succeeded" || kind == "payments.refund.succeeded"
        })
        .collect();
    everything
        .wait_for("every event", |r| r.len() >= events.len())
        .await;
    succeeded
        .wait_for("the succeeded events", |r| r.len() >= wanted.len())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = everything.counts();
    assert_eq!(counts.len(), events.len(), "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "each once: {counts:?}");
    for (id, _) in &events {
        assert!(counts.contains_key(id), "{id} delivered");
    }
    for received in everything
        .received()
        .iter()
        .chain(succeeded.received().iter())
    {
        assert_eq!(
            received.verified_by,
            [0],
            "signed with the endpoint's secret: {received:?}"
        );
        assert_eq!(received.signatures, 1);
    }
    let kinds: Vec<String> = succeeded
        .received()
        .iter()
        .map(|r| r.kind.clone())
        .collect();
    assert_eq!(kinds.len(), wanted.len(), "{kinds:?}");
    assert!(kinds.iter().all(|k| k.ends_with(".succeeded")), "{kinds:?}");
    // The delivery log.
    let log = deliveries(&app, &admin, &all_id).await;
    assert_eq!(log.len(), events.len());
    for delivery in &log {
        assert_eq!(delivery["status"], "delivered", "{delivery}");
        let attempts = delivery["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0]["status_code"], 204);
        assert!(attempts[0]["latency_ms"].is_i64());
    }
    let metrics = app.metrics().await;
    assert!(metrics.contains("payments_webhook_backlog 0"), "{metrics}");
    // A type with an underscore matches itself only (LIKE's wildcard is escaped).
    let manual = json!({"amount": 3, "currency": "USD", "capture_method": "manual"});
    let held = app.processed_payment(&token, "manual", &manual).await;
    authorizations
        .wait_for("the authorization", |r| !r.is_empty())
        .await;
    let kinds: Vec<String> = authorizations
        .received()
        .iter()
        .map(|r| r.kind.clone())
        .collect();
    assert_eq!(kinds, ["payments.payment.requires_capture"], "{held}");
}

async fn failures_are_retried_on_the_schedule_and_logged(db: TestDatabase) {
    let app = spawn_app_with(db, &OPEN).await;
    let admin = app.admin_token().await;
    let token = app.user_token("retry@example.com").await;
    let flaky = Receiver::start().await;
    flaky.mode(FAIL);
    let endpoint = listen(&app, &admin, &flaky, json!(["payments.payment.created"])).await;
    let paid = payments(&app, &token, "p", 1).await;
    flaky.wait_for("three failed tries", |r| r.len() >= 3).await;
    flaky.mode(OK);
    let log = loop {
        let log = deliveries(&app, &admin, &endpoint).await;
        if log[0]["status"] == "delivered" {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let attempts = log[0]["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 4, "{attempts:?}");
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[0]["error"], "status 500");
    assert_eq!(attempts.last().unwrap()["status_code"], 204);
    assert_eq!(log[0]["next_attempt_at"], Value::Null);
    let created = event_ids(&app, &paid)
        .await
        .into_iter()
        .find(|(_, k)| k == "payments.payment.created")
        .unwrap()
        .0;
    assert_eq!(log[0]["event_id"], created.as_str());
    // A receiver that never answers 2xx: given up after the schedule.
    let broken = Receiver::start().await;
    broken.mode(FAIL);
    let short = spawn_app_with(
        TestDatabase::sqlite().await,
        &[
            OPEN[0],
            OPEN[1],
            ("PAYMENTS_WEBHOOK_RETRY_SCHEDULE", "50ms,50ms"),
        ],
    )
    .await;
    let admin = short.admin_token().await;
    let token = short.user_token("gives-up@example.com").await;
    let endpoint = listen(&short, &admin, &broken, json!(["payments.payment.created"])).await;
    short.create(&token, "p", &usd(json!(1))).await;
    for _ in 0..200 {
        let log = deliveries(&short, &admin, &endpoint).await;
        if log.first().is_some_and(|d| d["status"] == "failed") {
            assert_eq!(
                log[0]["attempts"].as_array().unwrap().len(),
                3,
                "the first try and two retries"
            );
            assert!(
                short
                    .metrics()
                    .await
                    .contains("payments_webhook_deliveries_failed_total 1")
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the delivery was never given up");
}

async fn an_endpoint_failing_too_long_is_disabled(db: TestDatabase) {
    let app = spawn_app_with(
        db,
        &[
            OPEN[0],
            OPEN[1],
            (
                "PAYMENTS_WEBHOOK_RETRY_SCHEDULE",
                "200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms",
            ),
            ("PAYMENTS_WEBHOOK_DISABLE_AFTER_SECONDS", "1"),
        ],
    )
    .await;
    let admin = app.admin_token().await;
    let token = app.user_token("disabled@example.com").await;
    let dead = Receiver::start().await;
    dead.mode(FAIL);
    let endpoint = listen(&app, &admin, &dead, json!(["payments.payment.created"])).await;
    app.create(&token, "p", &usd(json!(1))).await;
    let disabled = loop {
        let read: Value = app
            .get(&admin, &format!("/v1/webhook_endpoints/{endpoint}"))
            .await
            .json()
            .await
            .unwrap();
        if read["status"] == "disabled" {
            break read;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(
        reason.contains("failing for more than 1 seconds") && reason.contains("status 500"),
        "{reason}"
    );
    assert!(
        app.metrics()
            .await
            .contains("payments_webhook_endpoints_disabled_total 1")
    );
    // Its pending delivery ends; nothing more is sent to it.
    for _ in 0..100 {
        let log = deliveries(&app, &admin, &endpoint).await;
        if log[0]["status"] == "failed" {
            let last = log[0]["attempts"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .clone();
            assert_eq!(last["error"], "endpoint disabled");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = dead.received().len();
    app.create(&token, "q", &usd(json!(1))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        dead.received().len(),
        seen,
        "a disabled endpoint gets nothing"
    );
}

async fn a_rotated_secret_signs_beside_the_old_one(db: TestDatabase) {
    let app = spawn_app_with(db, &OPEN).await;
    let admin = app.admin_token().await;
    let token = app.user_token("rotate@example.com").await;
    let receiver = Receiver::start().await;
    let endpoint = listen(&app, &admin, &receiver, json!(["payments.payment.created"])).await;
    let rotate = |body: Option<Value>| {
        let (app, admin, endpoint) = (&app, &admin, &endpoint);
        async move {
            let response = app
                .post(
                    admin,
                    &format!("/v1/webhook_endpoints/{endpoint}/rotate_secret"),
                    None,
                    body.as_ref(),
                )
                .await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let rotated = rotate(Some(json!({"overlap_seconds": 3600}))).await;
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert!(rotated["previous_secret_expires_at"].is_string());
    receiver.trust(&new);
    app.create(&token, "a", &usd(json!(1))).await;
    receiver.wait_for("a delivery", |r| !r.is_empty()).await;
    let first = receiver.received()[0].clone();
    assert_eq!(first.signatures, 2, "both secrets sign during the overlap");
    assert_eq!(
        first.verified_by,
        [0, 1],
        "the old secret and the new one each verify it"
    );
    // Rotated again with no overlap: only the newest signs.
    let newest = rotate(Some(json!({"overlap_seconds": 0}))).await;
    receiver.trust(newest["secret"].as_str().unwrap());
    app.create(&token, "b", &usd(json!(1))).await;
    receiver
        .wait_for("a second delivery", |r| r.len() >= 2)
        .await;
    let second = receiver.received()[1].clone();
    assert_eq!((second.signatures, second.verified_by), (1, vec![2]));
    let too_long = app
        .post(
            &admin,
            &format!("/v1/webhook_endpoints/{endpoint}/rotate_secret"),
            None,
            Some(&json!({"overlap_seconds": 999_999})),
        )
        .await;
    assert_eq!(too_long.status(), 422);
    // No body: the configured overlap.
    let default = rotate(None).await;
    assert!(default["previous_secret_expires_at"].is_string());
}

async fn an_event_can_be_delivered_again(db: TestDatabase) {
    let app = spawn_app_with(db, &OPEN).await;
    let admin = app.admin_token().await;
    let token = app.user_token("again@example.com").await;
    let receiver = Receiver::start().await;
    let endpoint = listen(&app, &admin, &receiver, json!(["payments.payment.created"])).await;
    let paid = payments(&app, &token, "p", 1).await;
    receiver
        .wait_for("the first delivery", |r| r.len() == 1)
        .await;
    let event = receiver.received()[0].id.clone();
    let again = app
        .post(
            &admin,
            &format!("/v1/webhook_endpoints/{endpoint}/deliveries/{event}/redeliver"),
            None,
            None,
        )
        .await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.json::<Value>().await.unwrap()["status"], "pending");
    receiver
        .wait_for("the second delivery", |r| r.len() == 2)
        .await;
    assert_eq!(receiver.received()[1].id, event, "the same webhook-id");
    let log = deliveries(&app, &admin, &endpoint).await;
    assert_eq!(log[0]["attempts"].as_array().unwrap().len(), 2);
    // An event the endpoint never subscribed to can be sent too; an unknown one cannot.
    let processing = event_ids(&app, &paid)
        .await
        .into_iter()
        .find(|(_, k)| k == "payments.payment.processing")
        .unwrap()
        .0;
    let other = app
        .post(
            &admin,
            &format!("/v1/webhook_endpoints/{endpoint}/deliveries/{processing}/redeliver"),
            None,
            None,
        )
        .await;
    assert_eq!(other.status(), 202);
    receiver
        .wait_for("the processing event", |r| {
            r.iter().any(|x| x.id == processing)
        })
        .await;
    for path in [
        format!("/v1/webhook_endpoints/{endpoint}/deliveries/evt_nope/redeliver"),
        format!("/v1/webhook_endpoints/we_nope/deliveries/{event}/redeliver"),
    ] {
        assert_eq!(
            app.post(&admin, &path, None, None).await.status(),
            404,
            "{path}"
        );
    }
    // Finished deliveries leave the log after its retention; pending ones stay.
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    let pruned = app.store.prune_webhook_deliveries(future).await.unwrap();
    assert_eq!(pruned, 2);
    assert!(deliveries(&app, &admin, &endpoint).await.is_empty());
}

/// An app whose attempts may wait a minute for an answer (receivers here hold them), with
/// `extra` settings.
async fn patient_app(db: TestDatabase, extra: &[(&'static str, &'static str)]) -> TestApp {
    let mut settings = OPEN.to_vec();
    settings.push(("PAYMENTS_WEBHOOK_TIMEOUT_MS", "60000"));
    settings.extend_from_slice(extra);
    spawn_app_with(db, &settings).await
}

/// Marks endpoint `id` failing for five minutes, as its failed attempts would have.
async fn mark_failing(app: &TestApp, id: &str) {
    let mut endpoint = app.store.webhook_endpoint(id).await.unwrap().unwrap();
    endpoint.failing_since = Some(chrono::Utc::now() - chrono::Duration::minutes(5));
    assert!(app.store.update_webhook_endpoint(&endpoint).await.unwrap());
}

/// Waits until `receiver` has had each of `n` events at least once.
async fn wait_for_distinct(receiver: &Receiver, what: &str, n: usize) {
    receiver
        .wait_for(what, |r| {
            let ids: std::collections::BTreeSet<&str> = r.iter().map(|x| x.id.as_str()).collect();
            ids.len() >= n
        })
        .await;
}

/// One endpoint holds every request it gets; the other still gets all of its deliveries, and
/// the API still answers.
async fn a_slow_endpoint_holds_up_no_other(db: TestDatabase) {
    let app = patient_app(db, &[]).await;
    let admin = app.admin_token().await;
    let token = app.user_token("slow@example.com").await;
    let slow = Receiver::start().await;
    slow.mode(HOLD);
    let fast = Receiver::start().await;
    listen(&app, &admin, &slow, json!(["*"])).await;
    listen(&app, &admin, &fast, json!(["*"])).await;
    let paid = payments(&app, &token, "p", 5).await;
    let events = event_ids(&app, &paid).await;
    fast.wait_for("every event", |r| r.len() >= events.len())
        .await;
    assert!(
        slow.received().len() <= 4,
        "at most 4 attempts in flight per endpoint: {}",
        slow.received().len()
    );
    slow.mode(OK);
    wait_for_distinct(&slow, "every event, once let go", events.len()).await;
}

/// Three failing endpoints that hang (as dead hosts do, until the timeout) and a healthy
/// one, with two slots: the failing ones together hold at most one slot, one attempt at a
/// time, so the healthy endpoint gets every event meanwhile; once they answer, everything
/// reaches them too.
async fn failing_endpoints_that_hang_leave_healthy_ones_their_slots(db: TestDatabase) {
    let app = patient_app(db, &[("PAYMENTS_WEBHOOK_CONCURRENCY", "2")]).await;
    let admin = app.admin_token().await;
    let token = app.user_token("hanging@example.com").await;
    let mut hanging = Vec::new();
    for _ in 0..3 {
        let receiver = Receiver::start().await;
        receiver.mode(HOLD);
        let id = listen(&app, &admin, &receiver, json!(["*"])).await;
        mark_failing(&app, &id).await;
        hanging.push(receiver);
    }
    let healthy = Receiver::start().await;
    listen(&app, &admin, &healthy, json!(["*"])).await;
    let paid = payments(&app, &token, "p", 4).await;
    let events = event_ids(&app, &paid).await;
    healthy
        .wait_for("every event", |r| r.len() >= events.len())
        .await;
    let held: usize = hanging.iter().map(|r| r.received().len()).sum();
    assert!(
        held <= 1,
        "failing endpoints hold one slot of two at most: {held} attempts reached them"
    );
    for receiver in &hanging {
        receiver.mode(OK);
    }
    for receiver in &hanging {
        wait_for_distinct(receiver, "every event, once it answers", events.len()).await;
    }
}

/// Two processes deliver from one database: with a receiver that always answers, each event
/// arrives exactly once.
async fn two_replicas_never_send_an_attempt_twice(db: TestDatabase) {
    let app = spawn_app_with(db, &OPEN).await;
    let (other, _) = start_payments(&app.db, app.accounts.addr, &owned(&OPEN)).await;
    let admin = app.admin_token().await;
    let token = app.user_token("replicas@example.com").await;
    let receiver = Receiver::start().await;
    listen(&app, &admin, &receiver, json!(["*"])).await;
    let paid = payments(&app, &token, "p", 8).await;
    let events = event_ids(&app, &paid).await;
    receiver
        .wait_for("every event", |r| r.len() >= events.len())
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = receiver.counts();
    assert_eq!(counts.len(), events.len());
    assert!(
        counts.values().all(|n| *n == 1),
        "no attempt sent twice: {counts:?}"
    );
    other.stop().await.unwrap();
}

/// Shares large enough not to matter.
const UNLIMITED: DeliveryShares = DeliveryShares {
    per_endpoint: 1000,
    failing: 1000,
};

/// An app whose deliverer and processor are off, so that only the test claims deliveries and
/// no state change adds any meanwhile: the app, an admin token and a user token.
async fn claims_only(db: TestDatabase, email: &str) -> (TestApp, String, String) {
    let mut settings = OPEN.to_vec();
    settings.extend([
        ("PAYMENTS_WEBHOOKS_ENABLED", "false"),
        ("PAYMENTS_PROCESSOR_ENABLED", "false"),
    ]);
    let app = spawn_app_with(db, &settings).await;
    let admin = app.admin_token().await;
    let token = app.user_token(email).await;
    (app, admin, token)
}

/// `n` payments accepted (not processed): an event, so a delivery to every endpoint, each.
async fn accepted(app: &TestApp, token: &str, prefix: &str, n: usize) {
    for i in 0..n {
        let created = app
            .create(token, &format!("{prefix}-{i}"), &usd(json!(1)))
            .await;
        assert_eq!(created.status(), 202);
    }
}

/// The store's claim (one statement): concurrent claims share the due deliveries, none taken
/// twice, all taken by the claims that follow, each answer longest due first; a leased
/// delivery is skipped until its lease runs out, then claimed again with the attempt counted.
async fn concurrent_claims_share_the_due_deliveries_longest_due_first(db: TestDatabase) {
    let (app, admin, token) = claims_only(db, "claims@example.com").await;
    register(&app, &admin, "http://127.0.0.1:9/hook", json!(["*"])).await;
    accepted(&app, &token, "c", 12).await;
    let now = chrono::Utc::now() + chrono::Duration::seconds(1);
    let lease = Duration::from_secs(30);
    let claims = (0..4).map(|_| app.store.claim_deliveries(now, lease, 5, UNLIMITED));
    let mut answers: Vec<Vec<payments::domain::webhook::Delivery>> =
        futures_util::future::try_join_all(claims).await.unwrap();
    // A claim made at the same moment as another may come back short (on PostgreSQL it
    // skips the rows the other is taking rather than wait): what it left is there for the
    // next claim.
    loop {
        let next = app
            .store
            .claim_deliveries(now, lease, 5, UNLIMITED)
            .await
            .unwrap();
        if next.is_empty() {
            break;
        }
        answers.push(next);
    }
    let mut ids = Vec::new();
    for answer in &answers {
        assert!(answer.len() <= 5, "a claim took more than its limit");
        let due: Vec<_> = answer.iter().map(|d| (d.next_attempt_at, d.id)).collect();
        assert!(due.is_sorted(), "longest due first: {due:?}");
        for delivery in answer {
            assert_eq!(delivery.attempts, 1);
            assert!(delivery.lease_until.is_some_and(|until| until > now));
            ids.push(delivery.id);
        }
    }
    ids.sort_unstable();
    let taken = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), taken, "a delivery was claimed twice");
    assert_eq!(taken, 12, "every due delivery was claimed once");
    // Held: nobody else gets them while the lease runs.
    assert!(
        app.store
            .claim_deliveries(now, lease, 50, UNLIMITED)
            .await
            .unwrap()
            .is_empty()
    );
    // After the lease, they are claimed again, the second attempt counted.
    let later = now + chrono::Duration::seconds(31);
    let again = app
        .store
        .claim_deliveries(later, lease, 50, UNLIMITED)
        .await
        .unwrap();
    assert_eq!(again.len(), 12);
    assert!(again.iter().all(|d| d.attempts == 2));
}

/// The store's claim is fair between endpoints: one endpoint's backlog does not hold up the
/// others (each has at most its share in flight, counting those already held), an endpoint
/// that is failing gets one at a time and failing endpoints together their own share, and
/// healthy endpoints' deliveries are taken before failing ones'.
async fn a_claim_shares_the_slots_between_endpoints_healthy_ones_first(db: TestDatabase) {
    let (app, admin, token) = claims_only(db, "fair@example.com").await;
    let busy = register(&app, &admin, "http://127.0.0.1:9/busy", json!(["*"])).await;
    // A backlog for the first endpoint, older than anything of the others.
    accepted(&app, &token, "b", 6).await;
    let quiet = register(&app, &admin, "http://127.0.0.1:9/quiet", json!(["*"])).await;
    let mut failing = Vec::new();
    for name in ["failing", "down"] {
        let url = format!("http://127.0.0.1:9/{name}");
        let id = id_of(&register(&app, &admin, &url, json!(["*"])).await);
        mark_failing(&app, &id).await;
        failing.push(id);
    }
    accepted(&app, &token, "q", 3).await;
    let now = chrono::Utc::now() + chrono::Duration::seconds(1);
    let lease = Duration::from_secs(30);
    let shares = |per_endpoint, failing| DeliveryShares {
        per_endpoint,
        failing,
    };
    let per_endpoint = |claimed: &[payments::domain::webhook::Delivery]| {
        let mut counts = BTreeMap::new();
        for delivery in claimed {
            let name = if delivery.endpoint_id == busy["id"] {
                "busy"
            } else if delivery.endpoint_id == quiet["id"] {
                "quiet"
            } else {
                assert!(failing.contains(&delivery.endpoint_id));
                "failing"
            };
            *counts.entry(name).or_insert(0) += 1;
        }
        counts.into_iter().collect::<Vec<_>>()
    };
    // Four slots, two per endpoint: the backlog's two oldest and the quiet endpoint's two,
    // nothing for the failing ones while healthy endpoints have work.
    let first = app
        .store
        .claim_deliveries(now, lease, 4, shares(2, 50))
        .await
        .unwrap();
    assert_eq!(per_endpoint(&first), [("busy", 2), ("quiet", 2)]);
    let due: Vec<_> = first.iter().map(|d| (d.next_attempt_at, d.id)).collect();
    assert!(due.is_sorted(), "longest due first: {due:?}");
    // Those two endpoints are at their share while their claims are held; the failing ones
    // get one delivery at a time, and together only their share (one) however many slots
    // are free.
    let second = app
        .store
        .claim_deliveries(now, lease, 50, shares(2, 1))
        .await
        .unwrap();
    assert_eq!(per_endpoint(&second), [("failing", 1)]);
    assert!(
        app.store
            .claim_deliveries(now, lease, 50, shares(2, 1))
            .await
            .unwrap()
            .is_empty(),
        "every endpoint is at its share"
    );
    let third = app
        .store
        .claim_deliveries(now, lease, 50, shares(2, 2))
        .await
        .unwrap();
    assert_eq!(per_endpoint(&third), [("failing", 1)]);
    assert_ne!(third[0].endpoint_id, second[0].endpoint_id);
    // Once the leases run out the shares are free again; with a larger share the backlog
    // is taken further, still one for each failing endpoint.
    let later = now + chrono::Duration::seconds(31);
    let fourth = app
        .store
        .claim_deliveries(later, lease, 50, shares(5, 50))
        .await
        .unwrap();
    assert_eq!(
        per_endpoint(&fourth),
        [("busy", 5), ("failing", 2), ("quiet", 3)]
    );
}

/// The process delivering is killed while the receiver holds its request; after a restart the
/// delivery is made again (at least once), and de-duplicated by `webhook-id` every event is
/// there once.
async fn a_delivery_in_flight_when_its_process_is_killed_is_made_after_restart(db: TestDatabase) {
    let app = spawn_app_with(
        db,
        &[
            OPEN[0],
            OPEN[1],
            OPEN[2],
            ("PAYMENTS_WEBHOOKS_ENABLED", "false"),
        ],
    )
    .await;
    let admin = app.admin_token().await;
    let token = app.user_token("killed-hook@example.com").await;
    let receiver = Receiver::start().await;
    receiver.mode(HOLD);
    listen(&app, &admin, &receiver, json!(["payments.payment.created"])).await;
    let data = tempfile::tempdir().unwrap();
    let mut deliverer = spawn_payments_process(
        &app.db,
        data.path(),
        &[
            ("PAYMENTS_PROCESSOR_ENABLED", "false"),
            ("PAYMENTS_WEBHOOK_ALLOW_PRIVATE", "true"),
            ("PAYMENTS_WEBHOOK_ALLOW_HTTP", "true"),
            ("PAYMENTS_WEBHOOK_TIMEOUT_MS", "1000"),
        ],
    );
    let created = app
        .create(&token, "p", &usd(json!(1)))
        .await
        .json::<Value>()
        .await
        .unwrap();
    receiver
        .wait_for("the delivery in flight", |r| !r.is_empty())
        .await;
    deliverer.kill().await.unwrap();
    receiver.mode(OK);
    // Another process takes the delivery over once the dead one's lease runs out.
    let extra = owned(&[
        OPEN[0],
        OPEN[1],
        OPEN[2],
        ("PAYMENTS_WEBHOOK_TIMEOUT_MS", "1000"),
    ]);
    let (restarted, _) = start_payments(&app.db, app.accounts.addr, &extra).await;
    receiver
        .wait_for("the delivery made again", |r| r.len() >= 2)
        .await;
    let created_event = app.store.payment_events(&id_of(&created)).await.unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(receiver.received().iter().all(|r| r.id == created_event));
    assert_eq!(
        receiver.counts().len(),
        1,
        "one event, delivered at least once"
    );
    restarted.stop().await.unwrap();
}
