//! Processing: the sandbox's outcomes, retries, cancel rules, history, several processors, a
//! database outage.

use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_app_with, start_payments, usd};
use common::testkit::TestDatabase;
use payments::store::PaymentsStore;

common::both_databases!(
    each_sandbox_method_ends_as_documented,
    only_pending_payments_can_be_canceled,
    every_state_change_is_in_the_history,
    several_processors_never_take_the_same_payment,
    a_database_outage_is_a_503_and_nothing_is_half_written,
    a_request_cancelled_as_its_transaction_begins_leaves_its_connection_clean,
    a_full_or_read_only_database_is_a_503_and_readiness_says_so,
    a_restart_resumes_a_payment_its_dead_processor_held,
    due_retries_and_lapsed_leases_are_taken_before_newer_payments,
);

fn with_method(method: &str) -> Value {
    json!({"amount": "10.00", "currency": "USD", "description": method, "payment_method": method})
}

async fn each_sandbox_method_ends_as_documented(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("sandbox@example.com").await;
    let expected = [
        ("pm_card_visa", "succeeded", Value::Null),
        ("pm_card_declined", "failed", json!("card_declined")),
        (
            "pm_card_insufficient_funds",
            "failed",
            json!("insufficient_funds"),
        ),
        ("pm_card_flaky", "succeeded", Value::Null),
    ];
    for (method, status, failure_code) in expected {
        let created: Value = app
            .create(&token, method, &with_method(method))
            .await
            .json()
            .await
            .unwrap();
        let settled = app.settled(&token, created["id"].as_str().unwrap()).await;
        assert_eq!(settled["status"], status, "{method}");
        assert_eq!(settled["failure_code"], failure_code, "{method}");
        if status == "failed" {
            assert!(settled["failure_message"].is_string());
        }
        let stored = app
            .store
            .payment(created["id"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap();
        let attempts = if method == "pm_card_flaky" { 3 } else { 1 };
        assert_eq!(
            stored.attempts, attempts,
            "{method}: transient errors retried with backoff"
        );
    }
    // Counted just after the outcome is stored: allow the processor a moment.
    let expected = [
        r#"payments_processed_total{outcome="succeeded"} 2"#,
        r#"payments_processed_total{outcome="declined"} 2"#,
        r#"payments_processed_total{outcome="processing_error"} 0"#,
        "payments_provider_errors_total 2",
    ];
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = reqwest::get(app.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if expected.iter().all(|series| metrics.contains(series)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for series in expected {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
}

async fn only_pending_payments_can_be_canceled(db: TestDatabase) {
    let app = spawn_app_with(db, &[("PAYMENTS_PROCESSOR_ENABLED", "false")]).await;
    let token = app.user_token("cancel@example.com").await;
    let pending: Value = app
        .create(&token, "c1", &usd(json!(3)))
        .await
        .json()
        .await
        .unwrap();
    let cancel_url = app.url(&format!(
        "/v1/payments/{}/cancel",
        pending["id"].as_str().unwrap()
    ));
    let canceled = app
        .client
        .post(&cancel_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(canceled.status(), 200);
    assert_eq!(
        canceled.json::<Value>().await.unwrap()["status"],
        "canceled"
    );
    let again = app
        .client
        .post(&cancel_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(
        again.json::<Value>().await.unwrap()["code"],
        "invalid_state"
    );

    // A succeeded payment cannot be canceled either.
    let (processor, _) = start_payments(&app.db, app.accounts.addr, &[]).await;
    let done: Value = app
        .create(&token, "c2", &usd(json!(4)))
        .await
        .json()
        .await
        .unwrap();
    let settled = app.settled(&token, done["id"].as_str().unwrap()).await;
    assert_eq!(settled["status"], "succeeded");
    let refused = app
        .client
        .post(app.url(&format!(
            "/v1/payments/{}/cancel",
            done["id"].as_str().unwrap()
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    assert_eq!(
        app.settled(&token, done["id"].as_str().unwrap()).await["status"],
        "succeeded",
        "terminal states never change"
    );
    processor.stop().await.unwrap();
}

async fn every_state_change_is_in_the_history(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("history@example.com").await;
    let created: Value = app
        .create(&token, "h1", &with_method("pm_card_declined"))
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    app.settled(&token, id).await;
    let events = app.store.payment_events(id).await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "payments.payment.created",
            "payments.payment.processing",
            "payments.payment.failed"
        ]
    );
    for event in &events {
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["source"], "/payments");
        assert_eq!(event["subject"], id);
        assert_eq!(event["datacontenttype"], "application/json");
        assert_eq!(event["data"]["id"], id);
        assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    }
    assert_eq!(events[2]["data"]["failure_code"], "card_declined");
}

async fn several_processors_never_take_the_same_payment(db: TestDatabase) {
    let app = spawn_app_with(
        db,
        &[
            ("PAYMENTS_WORKERS", "4"),
            ("PAYMENTS_SANDBOX_LATENCY_MS", "5"),
        ],
    )
    .await;
    let (second, _) = start_payments(&app.db, app.accounts.addr, &app.extra).await;
    let token = app.user_token("many@example.com").await;
    let mut ids = Vec::new();
    for n in 0..30 {
        let created: Value = app
            .create(&token, &format!("m{n}"), &usd(json!(n + 1)))
            .await
            .json()
            .await
            .unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        assert_eq!(app.settled(&token, id).await["status"], "succeeded");
        let events = app.store.payment_events(id).await.unwrap();
        let processing = events
            .iter()
            .filter(|e| e["type"] == "payments.payment.processing")
            .count();
        let succeeded = events
            .iter()
            .filter(|e| e["type"] == "payments.payment.succeeded")
            .count();
        assert_eq!((processing, succeeded), (1, 1), "{id} was processed once");
        let stored = app.store.payment(id).await.unwrap().unwrap();
        assert_eq!(stored.attempts, 1, "{id} was charged once");
    }
    second.stop().await.unwrap();
}

async fn a_database_outage_is_a_503_and_nothing_is_half_written(db: TestDatabase) {
    let app = spawn_app_with(db, &[("PAYMENTS_PROCESSOR_ENABLED", "false")]).await;
    let token = app.user_token("outage@example.com").await;
    assert_eq!(
        app.create(&token, "before", &usd(json!(1))).await.status(),
        202
    );
    let recoverable = app.db.take_down(&app.store.database()).await;
    let during = app.create(&token, "during", &usd(json!(2))).await;
    assert_eq!(during.status(), 503);
    assert_eq!(
        during.json::<Value>().await.unwrap()["code"],
        "dependency_unavailable"
    );
    let read = app.get(&token, "/v1/payments").await;
    assert_eq!(read.status(), 503);
    if recoverable {
        app.db.restore().await;
        let after = app.create(&token, "during", &usd(json!(2))).await;
        assert_eq!(
            after.status(),
            202,
            "serves again without a restart; the key was not burnt"
        );
        assert_eq!(app.store.count_payments().await.unwrap(), 2);
    }
}

/// A client that hangs up while its request's transaction is beginning drops the request's
/// future after the `BEGIN` went out and before its answer came. The connection must go
/// back to the pool outside any transaction: sqlx 0.8.4 to 0.9.0 returned it inside one on
/// PostgreSQL (launchbadge/sqlx#4393), so the next requests' single statements ran in it,
/// unseen by everyone else and lost if it was rolled back. Each of 16 rows written by a
/// single statement after such a cancellation must be visible to another connection.
async fn a_request_cancelled_as_its_transaction_begins_leaves_its_connection_clean(
    db: TestDatabase,
) {
    use common::db::{DatabaseUrl, connect_postgres, connect_sqlite};
    match &db.url {
        DatabaseUrl::Postgres(url) => {
            let (pool, other) = (connect_postgres(url, 1), connect_postgres(url, 1));
            cancelled_begins_lose_no_writes(&pool.await.unwrap(), &other.await.unwrap()).await;
        }
        DatabaseUrl::Sqlite(path) => {
            let (pool, other) = (connect_sqlite(path), connect_sqlite(path));
            cancelled_begins_lose_no_writes(&pool.await.unwrap(), &other.await.unwrap()).await;
        }
    }
}

async fn cancelled_begins_lose_no_writes<DB: common::db::Backend>(
    pool: &sqlx::Pool<DB>,
    other: &sqlx::Pool<DB>,
) where
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> i32: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> (i64,): sqlx::FromRow<'r, DB::Row>,
{
    sqlx::query("CREATE TABLE cancel_probe (n INTEGER NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    for n in 0..16 {
        let mut connection = pool.acquire().await.unwrap();
        let begin = sqlx::Connection::begin(&mut *connection);
        drop(tokio::time::timeout(std::time::Duration::ZERO, begin).await);
        drop(connection);
        sqlx::query("INSERT INTO cancel_probe (n) VALUES ($1)")
            .bind(n)
            .execute(pool)
            .await
            .unwrap();
    }
    let (seen,): (i64,) = sqlx::query_as("SELECT count(*) FROM cancel_probe")
        .fetch_one(other)
        .await
        .unwrap();
    assert_eq!(
        seen, 16,
        "rows written after a cancelled BEGIN are committed"
    );
}

/// Storage that answers but takes no writes: a PostgreSQL turned read-only (a failover to a
/// standby), a SQLite file that cannot grow (a full disk). Writes are 503s the client may
/// retry, nothing is half-written, and readiness says so though the database answers pings.
async fn a_full_or_read_only_database_is_a_503_and_readiness_says_so(db: TestDatabase) {
    if db.is_postgres() {
        let app = spawn_app_with(db, &[("PAYMENTS_PROCESSOR_ENABLED", "false")]).await;
        let token = app.user_token("standby@example.com").await;
        assert_eq!(
            app.create(&token, "one", &usd(json!(1))).await.status(),
            202
        );
        app.db.set_read_only(true).await;
        let refused = app.create(&token, "two", &usd(json!(2))).await;
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_eq!(
            refused.json::<Value>().await.unwrap()["code"],
            "dependency_unavailable"
        );
        assert_eq!(
            app.get(&token, "/v1/payments").await.status(),
            200,
            "reads still work"
        );
        let body = common::testkit::wait_for_readiness(&app.url(""), 503).await;
        let output = body["checks"]["database"][0]["output"].as_str().unwrap();
        assert!(output.contains("read-only"), "{output}");
        assert_eq!(app.store.count_payments().await.unwrap(), 1);
        app.db.set_read_only(false).await;
        common::testkit::wait_for_readiness(&app.url(""), 200).await;
        assert_eq!(
            app.create(&token, "two", &usd(json!(2))).await.status(),
            202,
            "the key was not burnt"
        );
    } else {
        use common::testkit::SqliteConstraint;
        let migrations = payments::store::migrations();
        let full = SqliteConstraint::NearlyFull { spare_pages: 8 };
        let pool = db.sqlite_constrained(&migrations, full).await;
        let store = payments::store::SqlStore::new(pool.clone());
        let mut written = 0;
        let error = loop {
            let payment = payments::domain::payment::Payment {
                id: format!("pay_{written}"),
                ..payments::domain::payment::Payment::new(
                    "usr_full",
                    payments::domain::money::Money::from_minor(100, "USD").unwrap(),
                    "x".repeat(900),
                    "pm_card_visa".into(),
                    payments::domain::payment::CaptureMethod::Automatic,
                    chrono::Utc::now(),
                )
            };
            let event = payments::domain::events::state_changed(&payment, payment.created_at);
            match store.create_payment(&payment, &event, None).await {
                Ok(()) => written += 1,
                Err(error) => break error,
            }
            assert!(written < 10_000, "the database never filled up");
        };
        assert!(
            matches!(&error, common::db::StoreError::Unavailable(cause) if cause.contains("full")),
            "{error:?}"
        );
        assert_eq!(
            common::Problem::from(error).status(),
            http::StatusCode::SERVICE_UNAVAILABLE
        );
        // The failed payment left neither its row nor its event.
        let (payments, events): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM payments), (SELECT COUNT(*) FROM payment_events)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((payments, events), (written, written));
        pool.close().await;
        // A file that takes no writes: 503, and readiness fails though reads work.
        let pool = db
            .sqlite_constrained(&migrations, SqliteConstraint::ReadOnly)
            .await;
        let store = payments::store::SqlStore::new(pool.clone());
        let payment = store.payment("pay_0").await.unwrap().expect("reads work");
        let event = payments::domain::events::state_changed(&payment, payment.created_at);
        let error = store
            .create_payment(
                &payments::domain::payment::Payment {
                    id: "pay_new".into(),
                    ..payment
                },
                &event,
                None,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&error, common::db::StoreError::Unavailable(cause) if cause.contains("readonly")),
            "{error:?}"
        );
        let check = common::db::DatabaseCheck(common::db::Pool::Sqlite(pool));
        let readiness = common::health::HealthCheck::check(&check).await;
        assert!(
            readiness
                .as_ref()
                .is_err_and(|output| output.contains("readonly")),
            "{readiness:?}"
        );
    }
}

async fn a_restart_resumes_a_payment_its_dead_processor_held(db: TestDatabase) {
    let app = spawn_app_with(db, &[("PAYMENTS_PROCESSOR_ENABLED", "false")]).await;
    let token = app.user_token("resume@example.com").await;
    let created: Value = app
        .create(&token, "r1", &usd(json!(8)))
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    // A processor claims it and dies before calling the provider.
    let claimed = app
        .store
        .claim_next_payment(chrono::Utc::now(), std::time::Duration::from_millis(500))
        .await
        .unwrap()
        .expect("the pending payment");
    assert_eq!(claimed.id, id);
    assert_eq!(claimed.status, "processing");

    let (restarted, _) = start_payments(&app.db, app.accounts.addr, &[]).await;
    let settled = app.settled(&token, id).await;
    assert_eq!(
        settled["status"], "succeeded",
        "resumed once the lease ran out"
    );
    let events = app.store.payment_events(id).await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "payments.payment.created",
            "payments.payment.processing",
            "payments.payment.succeeded"
        ]
    );
    restarted.stop().await.unwrap();
}

/// Under a steady stream of new payments, a retry that is due and a payment whose worker died
/// are taken in due order, not only once nothing is pending.
async fn due_retries_and_lapsed_leases_are_taken_before_newer_payments(db: TestDatabase) {
    let app = spawn_app_with(db, &[("PAYMENTS_PROCESSOR_ENABLED", "false")]).await;
    let token = app.user_token("due@example.com").await;
    let store = &app.store;
    let create = |key: &'static str| {
        let app = &app;
        let token = token.clone();
        async move {
            let body: Value = app
                .create(&token, key, &usd(json!(5)))
                .await
                .json()
                .await
                .unwrap();
            body["id"].as_str().unwrap().to_owned()
        }
    };
    let lease = std::time::Duration::from_secs(30);
    let seconds = chrono::Duration::seconds;
    // A payment whose provider call failed: its retry was due 20 s ago. (A claim only takes
    // payments accepted before it, so each claim below is made after its payment exists.)
    let retried = create("retried").await;
    let now = chrono::Utc::now();
    assert!(
        store
            .claim_next_payment(now - seconds(1), lease)
            .await
            .unwrap()
            .is_none(),
        "a claim that began before the payment was accepted does not take it"
    );
    let claimed = store.claim_next_payment(now, lease).await.unwrap().unwrap();
    assert_eq!(claimed.id, retried);
    store
        .retry_payment_later(&retried, 1, now + seconds(3600), now)
        .await
        .unwrap();
    // A payment whose worker died: its lease (a millisecond) lapsed before the new ones came.
    let abandoned = create("abandoned").await;
    let claimed = store
        .claim_next_payment(chrono::Utc::now(), std::time::Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, abandoned);
    // The retry comes due: 20 s ago.
    store
        .retry_payment_later(&retried, 1, now - seconds(20), now)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // New payments keep coming, accepted after both were due.
    let mut newer = Vec::new();
    for key in ["n1", "n2", "n3"] {
        newer.push(create(key).await);
    }
    let now = chrono::Utc::now();
    let order: Vec<String> = {
        let mut order = Vec::new();
        while let Some(payment) = store.claim_next_payment(now, lease).await.unwrap() {
            order.push(payment.id);
        }
        order
    };
    let mut expected = vec![retried.clone(), abandoned.clone()];
    expected.extend(newer);
    assert_eq!(
        order, expected,
        "due order: the retry, the lapsed lease, then the new ones"
    );
    // A retried or resumed payment keeps its one `processing` event.
    let history = store.payment_events(&retried).await.unwrap();
    assert_eq!(
        history
            .iter()
            .filter(|e| e["type"] == "payments.payment.processing")
            .count(),
        1
    );
}
