//! Events: the outbox relayed to the real NATS JetStream here (each test on its own stream and
//! subjects), through an outage, with two relays; and the `/v1/events` feed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with, start_payments, usd};
use common::testkit::{
    Cuttable, StreamCleanup, TestDatabase, nats_url, readiness, wait_for_readiness,
};

common::both_databases!(
    needs(test_nats): every_state_change_is_published_once_in_order,
    refund_events_are_published_beside_the_payments,
    a_nats_outage_loses_nothing,
    two_relays_publish_each_event_once,
);

common::both_databases!(
    the_feed_pages_through_the_callers_events,
    the_relay_holds_no_transaction_while_it_waits_for_the_broker,
    the_backlog_is_reported_while_nats_is_down_from_the_start,
);

/// A publisher that acknowledges everything, once let go.
struct Held {
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl payments::relay::EventPublisher for Held {
    async fn publish(&self, events: &[payments::store::OutboxEvent]) -> Vec<String> {
        self.entered.notify_one();
        self.release.notified().await;
        events.iter().map(|event| event.id.clone()).collect()
    }
}

async fn the_relay_holds_no_transaction_while_it_waits_for_the_broker(db: TestDatabase) {
    let app = spawn_app_with(db, &[("PAYMENTS_PROCESSOR_ENABLED", "false")]).await;
    let token = app.user_token("held@example.com").await;
    for key in ["h1", "h2"] {
        assert_eq!(app.create(&token, key, &usd(json!(3))).await.status(), 202);
    }
    let store = app.store.clone();
    let held = std::sync::Arc::new(Held {
        entered: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let relay = {
        let (store, held) = (store.clone(), held.clone());
        tokio::spawn(
            async move { payments::relay::relay_once(store.as_ref(), held.as_ref(), 10).await },
        )
    };
    held.entered.notified().await;
    // While the broker keeps the relay waiting: no transaction is open on the database ...
    if let common::db::Pool::Postgres(pool) = app.store.database() {
        let (open,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(open, 0, "a transaction is held open while publishing");
    }
    // ... writers are not held up, and another relay finds the claimed events taken.
    let third: Value = app
        .create(&token, "h3", &usd(json!(3)))
        .await
        .json()
        .await
        .unwrap();
    let other = store
        .claim_outbox_batch(10, chrono::Utc::now(), payments::relay::CLAIM_LEASE)
        .await
        .unwrap();
    assert_eq!(
        other
            .iter()
            .map(|e| e.payment_id.as_str())
            .collect::<Vec<_>>(),
        [third["id"].as_str().unwrap()],
        "only the new payment's event is free"
    );
    held.release.notify_one();
    let outcome = relay.await.unwrap().unwrap();
    assert_eq!((outcome.sent, outcome.failed), (2, 0));
    store
        .mark_published(
            &other.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(store.outbox_backlog().await.unwrap(), 0);
}

async fn the_backlog_is_reported_while_nats_is_down_from_the_start(db: TestDatabase) {
    // Never reachable: the relay cannot set up its stream.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nats = format!("nats://{}", closed.local_addr().unwrap());
    drop(closed);
    let settings = nats_settings(&nats);
    let app = spawn_app_with(db, &as_refs(&settings)).await;
    let token = app.user_token("backlog@example.com").await;
    for key in ["b1", "b2", "b3"] {
        assert_eq!(app.create(&token, key, &usd(json!(4))).await.status(), 202);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let backlog: i64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix("payments_outbox_backlog "))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        if backlog >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backlog gauge stayed at {backlog}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A stream and subjects of this test's own.
fn nats_settings(nats: &str) -> Vec<(String, String)> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    vec![
        ("NATS_URL".into(), nats.into()),
        ("PAYMENTS_STREAM".into(), format!("T{id}")),
        (
            "PAYMENTS_SUBJECT_PREFIX".into(),
            format!("t{id}.payments.payment"),
        ),
    ]
}

fn as_refs(settings: &[(String, String)]) -> Vec<(&str, &str)> {
    settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Every message of the stream: `(subject, Nats-Msg-Id, CloudEvent)` in stream order.
async fn read_stream(nats: &str, stream: &str) -> Vec<(String, String, Value)> {
    let client = async_nats::connect(nats).await.unwrap();
    let context = async_nats::jetstream::new(client);
    let mut stream = context.get_stream(stream).await.unwrap();
    let info = stream.info().await.unwrap().state.clone();
    let mut messages = Vec::new();
    for sequence in info.first_sequence..=info.last_sequence {
        if info.messages == 0 {
            break;
        }
        let message = stream.get_raw_message(sequence).await.unwrap();
        let id = message.headers.get("Nats-Msg-Id").unwrap().to_string();
        messages.push((
            message.subject.to_string(),
            id,
            serde_json::from_slice(&message.payload).unwrap(),
        ));
    }
    let _ = context
        .delete_stream(stream.cached_info().config.name.clone())
        .await;
    messages
}

async fn drained(app: &TestApp) {
    for _ in 0..300 {
        if app.store.outbox_backlog().await.unwrap() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the outbox did not drain");
}

/// The stream holds exactly the database's events, once each, in order per payment.
/// The stream holds every event of `payments`, once, in order per payment; and the relays
/// of `app` and of the processes at `other_relays` published each once.
async fn assert_stream_matches(
    app: &TestApp,
    nats: &str,
    settings: &[(String, String)],
    payments: &[String],
    other_relays: &[String],
    outage: bool,
) {
    drained(app).await;
    let stream = &settings[1].1;
    let prefix = &settings[2].1;
    let messages = read_stream(nats, stream).await;
    let ids: BTreeSet<&str> = messages.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), messages.len(), "no event twice");
    let mut expected = 0;
    for payment in payments {
        let history = app.store.payment_events(payment).await.unwrap();
        expected += history.len();
        let published: Vec<&Value> = messages
            .iter()
            .filter(|(_, _, e)| e["subject"] == payment.as_str())
            .map(|(_, _, e)| e)
            .collect();
        assert_eq!(
            published,
            history.iter().collect::<Vec<_>>(),
            "{payment}: every event, in order"
        );
    }
    assert_eq!(messages.len(), expected);
    // The stream's duplicate window would hide a second publish of an event: what the relays
    // published (and what JetStream dropped as repeats) is counted where it happened.
    let mut relays = vec![app.url("")];
    relays.extend(other_relays.iter().cloned());
    let published = published_counts(&relays).await;
    assert_eq!(published.0, expected as u64, "each event published once");
    if !outage {
        // Through an outage a publish that reached the stream may have lost its
        // acknowledgement, and been sent again (at least once); otherwise never.
        assert_eq!(published.1, 0, "events published twice");
    }
    for (subject, id, event) in &messages {
        assert_eq!(
            id,
            event["id"].as_str().unwrap(),
            "Nats-Msg-Id is the event id"
        );
        let state = event["type"].as_str().unwrap().rsplit('.').next().unwrap();
        assert_eq!(subject, &format!("{prefix}.{state}"));
    }
}

/// A refund's events go to `<root>.refund.<state>`, its payment's to `<root>.payment.<state>`
/// (the configured prefix, in its old `<root>.payment` form here, names the root), all in the
/// payment's order.
async fn refund_events_are_published_beside_the_payments(db: TestDatabase) {
    let nats = nats_url();
    let settings = nats_settings(&nats);
    let _cleanup = StreamCleanup::new(&nats, &settings[1].1);
    let app = spawn_app_with(db, &as_refs(&settings)).await;
    let token = app.user_token("refund-events@example.com").await;
    let paid = app.processed_payment(&token, "p", &usd(json!(12))).await;
    let payment = paid["id"].as_str().unwrap().to_owned();
    let refund: Value = app
        .refund(&token, &payment, "r", &json!({"amount": 2}))
        .await
        .json()
        .await
        .unwrap();
    let refund = refund["id"].as_str().unwrap().to_owned();
    app.wait_for(&token, &format!("/v1/refunds/{refund}"), &["succeeded"])
        .await;
    drained(&app).await;
    let root = settings[2].1.trim_end_matches(".payment");
    let messages = read_stream(&nats, &settings[1].1).await;
    let published: Vec<(String, String)> = messages
        .iter()
        .map(|(subject, _, event)| {
            (
                subject.clone(),
                event["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("payment.created", &payment),
        ("payment.processing", &payment),
        ("payment.succeeded", &payment),
        ("refund.created", &refund),
        ("refund.succeeded", &refund),
    ]
    .into_iter()
    .map(|(kind, subject)| (format!("{root}.{kind}"), subject.clone()))
    .collect();
    assert_eq!(published, expected);
    let history = app.store.payment_events(&payment).await.unwrap();
    let stored: Vec<&str> = history.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let sent: Vec<&str> = messages.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(
        sent, stored,
        "each event once, Nats-Msg-Id = its id, in order"
    );
    assert_eq!(messages[4].2["data"]["object"], "refund");
}

/// The events the relays of these services published, and the repeats JetStream dropped, from
/// their metrics.
async fn published_counts(relays: &[String]) -> (u64, u64) {
    let mut counts = (0, 0);
    for base in relays {
        let metrics = reqwest::Client::new()
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in metrics.lines() {
            let value = || line.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
            if line.starts_with("payments_outbox_published_total{") {
                counts.0 += value();
            } else if line.starts_with("payments_outbox_duplicates_total ") {
                counts.1 += value();
            }
        }
    }
    counts
}

async fn create_and_settle(app: &TestApp, token: &str, count: usize, tag: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let method = ["pm_card_visa", "pm_card_declined", "pm_card_flaky"][n % 3];
        let body = json!({"amount": n + 1, "currency": "USD", "payment_method": method});
        let response = app.create(token, &format!("{tag}-{n}"), &body).await;
        assert_eq!(response.status(), 202);
        ids.push(
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for id in &ids {
        app.settled(token, id).await;
    }
    ids
}

async fn every_state_change_is_published_once_in_order(db: TestDatabase) {
    let nats = nats_url();
    let settings = nats_settings(&nats);
    let _cleanup = StreamCleanup::new(&nats, &settings[1].1);
    let app = spawn_app_with(db, &as_refs(&settings)).await;
    let token = app.user_token("events@example.com").await;
    let ids = create_and_settle(&app, &token, 6, "e").await;
    let (status, body) = readiness(&app.url("")).await;
    assert_eq!(status, 200);
    assert_eq!(body["checks"]["broker"][0]["status"], "pass");
    assert_stream_matches(&app, &nats, &settings, &ids, &[], false).await;
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"payments_outbox_published_total{type="payments.payment.created"} 6"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("payments_outbox_publish_lag_seconds_count"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE payments_outbox_backlog gauge"),
        "{metrics}"
    );
}

async fn a_nats_outage_loses_nothing(db: TestDatabase) {
    let nats = nats_url();
    let proxy = Cuttable::to(&nats).await.unwrap();
    let mut settings = nats_settings(&nats);
    let _cleanup = StreamCleanup::new(&nats, &settings[1].1);
    settings[0].1 = format!("nats://{}", proxy.addr);
    let app = spawn_app_with(db, &as_refs(&settings)).await;
    let token = app.user_token("outage@example.com").await;
    let before = create_and_settle(&app, &token, 3, "before").await;
    drained(&app).await;

    proxy.set_up(false).await;
    let during = create_and_settle(&app, &token, 9, "during").await;
    assert!(
        app.store.outbox_backlog().await.unwrap() > 0,
        "events accumulate while NATS is away"
    );
    let body = wait_for_readiness(&app.url(""), 503).await;
    assert_eq!(body["checks"]["broker"][0]["status"], "fail", "{body}");
    assert_eq!(body["checks"]["database"][0]["status"], "pass");

    proxy.set_up(true).await;
    let mut all = before;
    all.extend(during);
    let mut checked = settings.clone();
    checked[0].1 = nats.clone();
    assert_stream_matches(&app, &nats, &checked, &all, &[], true).await;
}

async fn two_relays_publish_each_event_once(db: TestDatabase) {
    let nats = nats_url();
    let settings = nats_settings(&nats);
    let _cleanup = StreamCleanup::new(&nats, &settings[1].1);
    let app = spawn_app_with(db, &as_refs(&settings)).await;
    let (second, _) = start_payments(&app.db, app.accounts.addr, &app.extra).await;
    let token = app.user_token("relays@example.com").await;
    let ids = create_and_settle(&app, &token, 12, "r").await;
    assert_stream_matches(&app, &nats, &settings, &ids, &[second.url("")], false).await;
    second.stop().await.unwrap();
}

async fn the_feed_pages_through_the_callers_events(db: TestDatabase) {
    let app = spawn_app(db).await;
    let alice = app.user_token("feed-a@example.com").await;
    let bob = app.user_token("feed-b@example.com").await;
    let mine = create_and_settle(&app, &alice, 4, "a").await;
    create_and_settle(&app, &bob, 2, "b").await;

    let mut seen: Vec<Value> = Vec::new();
    let mut after = "0".to_owned();
    loop {
        let page: Value = app
            .get(&alice, &format!("/v1/events?limit=3&after={after}"))
            .await
            .json()
            .await
            .unwrap();
        seen.extend(page["data"].as_array().unwrap().iter().cloned());
        after = page["next"].as_str().unwrap().to_owned();
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    let mut expected = Vec::new();
    let mut per_payment: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for id in &mine {
        let history = app.store.payment_events(id).await.unwrap();
        expected.extend(history.iter().map(|e| e["id"].clone()));
        per_payment.insert(id.clone(), history);
    }
    let seen_ids: BTreeSet<String> = seen
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let expected_ids: BTreeSet<String> = expected
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen_ids, expected_ids, "exactly Alice's events");
    assert_eq!(seen.len(), expected.len());
    for (id, history) in per_payment {
        let order: Vec<&Value> = seen
            .iter()
            .filter(|e| e["subject"] == id.as_str())
            .collect();
        assert_eq!(order, history.iter().collect::<Vec<_>>(), "oldest first");
    }
    let empty: Value = app
        .get(&alice, &format!("/v1/events?after={after}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty["data"], json!([]));
    assert_eq!(
        empty["next"],
        after.as_str(),
        "polling from the end keeps the cursor"
    );

    let admin = app.admin_token().await;
    let all: Value = app
        .get(&admin, "/v1/events?limit=500")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        all["data"].as_array().unwrap().len() > seen.len(),
        "payments:admin sees all"
    );
    for bad in [
        "/v1/events?limit=0",
        "/v1/events?limit=501",
        "/v1/events?after=-1",
        "/v1/events?after=x",
    ] {
        let response = app.get(&alice, bad).await;
        assert_eq!(response.status(), 422, "{bad}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed", "{bad}");
        let field = problem["errors"][0]["field"].as_str().unwrap();
        assert!(bad.contains(field), "{bad}: {problem}");
    }
}
