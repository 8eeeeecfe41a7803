//! Refunds: full and partial, never beyond what was captured (also under 50 concurrent
//! requests), idempotent, each sandbox outcome, owner isolation, and provider calls whose
//! answer was lost (a timeout, a killed process) resolved by asking the provider.

use std::time::Duration;

use common::testkit::TestDatabase;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, id_of, spawn_app, spawn_app_with, spawn_payments_process, start_payments, usd,
    usd_with,
};

common::both_databases!(
    full_and_partial_refunds,
    refunds_beyond_the_payment_or_of_unpaid_payments_are_refused,
    refund_replays_and_key_reuse,
    concurrent_refunds_never_exceed_the_payment,
    each_sandbox_refund_outcome,
    refunds_are_visible_to_their_owner_only,
    timed_out_provider_calls_are_resolved_by_asking_the_provider,
    an_unresolved_outcome_is_flagged_for_a_person,
    a_refund_in_flight_when_its_process_is_killed_is_resolved_after_restart,
);

/// A succeeded payment of `amount` USD paid with `method`.
async fn paid(app: &TestApp, token: &str, key: &str, amount: Value, method: &str) -> Value {
    let body = usd_with(amount, json!({"payment_method": method}));
    let payment = app.processed_payment(token, key, &body).await;
    assert_eq!(payment["status"], "succeeded", "{payment}");
    payment
}

async fn settled_refund(app: &TestApp, token: &str, id: &str) -> Value {
    app.wait_for(
        token,
        &format!("/v1/refunds/{id}"),
        &["succeeded", "failed"],
    )
    .await
}

async fn payment(app: &TestApp, token: &str, id: &str) -> Value {
    app.get(token, &format!("/v1/payments/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

async fn full_and_partial_refunds(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("refunds@example.com").await;
    let paid = paid(&app, &token, "p1", json!("100.00"), "pm_card_visa").await;
    let pay = id_of(&paid);
    assert_eq!(paid["amount_captured"], "100.00");
    assert_eq!(paid["amount_refunded"], "0.00");
    assert_eq!(paid["refunded"], false);

    let partial = app
        .refund(
            &token,
            &pay,
            "r1",
            &json!({"amount": "30.00", "reason": "requested_by_customer"}),
        )
        .await;
    assert_eq!(partial.status(), 202);
    let location = partial.headers()["location"].to_str().unwrap().to_owned();
    let partial: Value = partial.json().await.unwrap();
    let first = id_of(&partial);
    assert!(first.starts_with("re_"), "{first}");
    assert_eq!(location, format!("/v1/refunds/{first}"));
    assert_eq!(partial["object"], "refund");
    assert_eq!(partial["status"], "pending");
    assert_eq!(partial["payment_id"], pay.as_str());
    assert_eq!(
        (partial["amount"].as_str(), partial["amount_minor"].as_i64()),
        (Some("30.00"), Some(3000))
    );
    assert_eq!(partial["currency"], "USD");
    assert_eq!(partial["reason"], "requested_by_customer");
    // The amount is reserved at once: the payment shows it while the refund is pending.
    let now = payment(&app, &token, &pay).await;
    assert_eq!(
        (now["amount_refunded"].as_str(), now["refunded"].as_bool()),
        (Some("30.00"), Some(false))
    );
    let done = settled_refund(&app, &token, &first).await;
    assert_eq!(done["status"], "succeeded");

    // No amount: all that is left.
    let rest = app.refund(&token, &pay, "r2", &json!({})).await;
    assert_eq!(rest.status(), 202);
    let rest: Value = rest.json().await.unwrap();
    assert_eq!(rest["amount"], "70.00");
    assert_eq!(rest["reason"], Value::Null);
    let second = id_of(&rest);
    assert_eq!(
        settled_refund(&app, &token, &second).await["status"],
        "succeeded"
    );
    let now = payment(&app, &token, &pay).await;
    assert_eq!(
        now["status"], "succeeded",
        "a refunded payment stays succeeded"
    );
    assert_eq!(
        (
            now["amount_refunded_minor"].as_i64(),
            now["refunded"].as_bool()
        ),
        (Some(10000), Some(true))
    );
    let more = app.refund(&token, &pay, "r3", &json!({"amount": 1})).await;
    assert_eq!(more.status(), 422);
    let more: Value = more.json().await.unwrap();
    assert_eq!(more["code"], "amount_too_large", "{more}");

    // The list, newest first, a page at a time.
    let list = format!("/v1/payments/{pay}/refunds");
    let all: Value = app.get(&token, &list).await.json().await.unwrap();
    let ids: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    assert_eq!(all["has_more"], false);
    let page: Value = app
        .get(&token, &format!("{list}?limit=1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (page["data"][0]["id"].as_str(), page["has_more"].as_bool()),
        (Some(second.as_str()), Some(true))
    );
    let next: Value = app
        .get(&token, &format!("{list}?limit=1&starting_after={second}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (next["data"][0]["id"].as_str(), next["has_more"].as_bool()),
        (Some(first.as_str()), Some(false))
    );
    let bad = app
        .get(&token, &format!("{list}?starting_after=re_nope"))
        .await;
    assert_eq!(bad.status(), 422);

    // The payment's history carries its refunds' events, in order.
    let history: Vec<(String, String)> = app
        .store
        .payment_events(&pay)
        .await
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let refund_events: Vec<(String, String)> = history
        .into_iter()
        .filter(|(t, _)| t.starts_with("payments.refund."))
        .collect();
    assert_eq!(
        refund_events,
        [
            ("payments.refund.created".to_owned(), first.clone()),
            ("payments.refund.succeeded".to_owned(), first.clone()),
            ("payments.refund.created".to_owned(), second.clone()),
            ("payments.refund.succeeded".to_owned(), second.clone()),
        ]
    );
    // The feed shows them too, with the refund as their data.
    let feed: Value = app
        .get(&token, "/v1/events?limit=100")
        .await
        .json()
        .await
        .unwrap();
    let refund_event = feed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "payments.refund.succeeded")
        .expect("a refund event in the feed");
    assert_eq!(refund_event["data"]["object"], "refund");
    assert_eq!(refund_event["data"]["status"], "succeeded");
    assert!(
        app.metrics()
            .await
            .contains("payments_refunds_total{outcome=\"succeeded\"} 2")
    );
}

async fn refunds_beyond_the_payment_or_of_unpaid_payments_are_refused(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("refused@example.com").await;
    let pay = id_of(&paid(&app, &token, "p", json!(10), "pm_card_visa").await);
    let problem = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        (
            status,
            body["code"].as_str().unwrap_or_default().to_owned(),
            body,
        )
    };
    let (status, code, body) = problem(
        app.refund(&token, &pay, "over", &json!({"amount": "10.01"}))
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (422, "amount_too_large"), "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("10.00"),
        "says what is left: {body}"
    );
    for (key, body, field) in [
        ("cents", json!({"amount": "1.001"}), "amount"),
        ("zero", json!({"amount": 0}), "amount"),
        ("negative", json!({"amount": "-1"}), "amount"),
        ("text", json!({"amount": true}), "amount"),
        ("reason", json!({"reason": "bored"}), "reason"),
    ] {
        let (status, code, problem) = problem(app.refund(&token, &pay, key, &body).await).await;
        assert_eq!(
            (status, code.as_str()),
            (422, "validation_failed"),
            "{body}: {problem}"
        );
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let path = format!("/v1/payments/{pay}/refunds");
    let keyless = app.post(&token, &path, None, Some(&json!({}))).await;
    assert_eq!(problem(keyless).await.1, "missing_idempotency_key");
    let (status, code, _) = problem(app.refund(&token, "pay_nope", "k", &json!({})).await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    // A refused request wrote nothing and keeps nothing: its key can be used again.
    let (status, _, _) = problem(
        app.refund(&token, &pay, "over", &json!({"amount": "10.01"}))
            .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        payment(&app, &token, &pay).await["amount_refunded_minor"],
        0
    );

    // Only succeeded payments: declined, pending, canceled are refused.
    let declined = app
        .processed_payment(
            &token,
            "declined",
            &usd_with(json!(5), json!({"payment_method": "pm_card_declined"})),
        )
        .await;
    let (status, code, body) =
        problem(app.refund(&token, &id_of(&declined), "d", &json!({})).await).await;
    assert_eq!((status, code.as_str()), (409, "invalid_state"), "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("failed"),
        "{body}"
    );

    let idle = spawn_app_with(
        TestDatabase::sqlite().await,
        &[("PAYMENTS_PROCESSOR_ENABLED", "false")],
    )
    .await;
    let token = idle.user_token("idle@example.com").await;
    let pending = id_of(
        &idle
            .create(&token, "pending", &usd(json!(5)))
            .await
            .json::<Value>()
            .await
            .unwrap(),
    );
    let (status, code, _) = problem(idle.refund(&token, &pending, "p", &json!({})).await).await;
    assert_eq!((status, code.as_str()), (409, "invalid_state"));
    idle.post(
        &token,
        &format!("/v1/payments/{pending}/cancel"),
        None,
        None,
    )
    .await;
    let (status, code, _) = problem(idle.refund(&token, &pending, "c", &json!({})).await).await;
    assert_eq!((status, code.as_str()), (409, "invalid_state"));
}

async fn refund_replays_and_key_reuse(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("replay@example.com").await;
    let pay = id_of(&paid(&app, &token, "p", json!(50), "pm_card_visa").await);
    let other = id_of(&paid(&app, &token, "q", json!(50), "pm_card_visa").await);
    let body = json!({"amount": "20.00"});
    let first = app.refund(&token, &pay, "same", &body).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_text = first.text().await.unwrap();
    let again = app.refund(&token, &pay, "same", &body).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let location = again.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        again.text().await.unwrap(),
        first_text,
        "byte-identical replay"
    );
    let refund: Value = serde_json::from_str(&first_text).unwrap();
    assert_eq!(location, format!("/v1/refunds/{}", id_of(&refund)));
    let list: Value = app
        .get(&token, &format!("/v1/payments/{pay}/refunds"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "one refund for one key"
    );
    assert_eq!(
        payment(&app, &token, &pay).await["amount_refunded"],
        "20.00"
    );
    // The same key for another body, or another payment: refused.
    for (payment_id, body) in [(&pay, json!({"amount": "21.00"})), (&other, body.clone())] {
        let reused = app.refund(&token, payment_id, "same", &body).await;
        assert_eq!(reused.status(), 422);
        assert_eq!(
            reused.json::<Value>().await.unwrap()["code"],
            "idempotency_key_reused"
        );
    }
    // Keys are per principal: another user's identical key is theirs.
    let admin = app.admin_token().await;
    let theirs = app.refund(&admin, &pay, "same", &body).await;
    assert_eq!(theirs.status(), 202, "the admin's own key");
    assert_eq!(
        payment(&app, &token, &pay).await["amount_refunded"],
        "40.00"
    );
}

/// 50 refunds of 3.00 at once, each with its own key, of a 100.00 payment: 33 fit.
async fn concurrent_refunds_never_exceed_the_payment(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("rush@example.com").await;
    let pay = id_of(&paid(&app, &token, "p", json!("100.00"), "pm_card_visa").await);
    let requests = (0..50).map(|n| {
        let (app, token, pay) = (&app, &token, &pay);
        async move {
            let response = app
                .refund(token, pay, &format!("rush-{n}"), &json!({"amount": "3.00"}))
                .await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }
    });
    let results = futures_util::future::join_all(requests).await;
    let accepted = results.iter().filter(|(status, _)| *status == 202).count();
    let refused: Vec<&Value> = results
        .iter()
        .filter(|(status, _)| *status != 202)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(accepted, 33, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|body| body["code"] == "amount_too_large"),
        "{refused:?}"
    );
    let now = payment(&app, &token, &pay).await;
    assert_eq!(now["amount_refunded_minor"], 9900);
    let mut total = 0;
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/payments/{pay}/refunds?limit=100");
        if let Some(cursor) = &after {
            path.push_str(&format!("&starting_after={cursor}"));
        }
        let page: Value = app.get(&token, &path).await.json().await.unwrap();
        for refund in page["data"].as_array().unwrap() {
            total += refund["amount_minor"].as_i64().unwrap();
            after = Some(id_of(refund));
        }
        if page["has_more"] == false {
            break;
        }
    }
    assert_eq!(total, 9900, "the refunds add up to what the payment shows");
}

async fn each_sandbox_refund_outcome(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("outcomes@example.com").await;
    // Refused by the provider: failed, and its amount can be refunded again.
    let refused = id_of(
        &paid(
            &app,
            &token,
            "declined",
            json!(40),
            "pm_card_refund_declined",
        )
        .await,
    );
    let refund = app
        .refund(&token, &refused, "r", &json!({"amount": 25}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let failed = settled_refund(&app, &token, &id_of(&refund)).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["failure_code"], "refund_declined");
    assert!(failed["failure_message"].is_string());
    let now = payment(&app, &token, &refused).await;
    assert_eq!(
        (
            now["amount_refunded_minor"].as_i64(),
            now["refunded"].as_bool()
        ),
        (Some(0), Some(false))
    );
    let again = app.refund(&token, &refused, "r-again", &json!({})).await;
    assert_eq!(
        again.status(),
        202,
        "the failed refund's amount is refundable again"
    );
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["amount"], "40.00");
    let again = settled_refund(&app, &token, &id_of(&again)).await;
    assert_eq!(again["failure_code"], "refund_declined");

    // Flaky at the provider: retried, then it succeeds; the provider saw each try.
    let flaky = id_of(&paid(&app, &token, "flaky", json!(40), "pm_card_refund_flaky").await);
    let refund = app
        .refund(&token, &flaky, "r-flaky", &json!({}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    let refund_id = id_of(&refund);
    let done = settled_refund(&app, &token, &refund_id).await;
    assert_eq!(done["status"], "succeeded");
    let calls = app.store.sandbox_calls("refund").await.unwrap();
    let tries = calls
        .iter()
        .find(|(id, _)| *id == refund_id)
        .map(|(_, n)| *n);
    assert_eq!(
        tries,
        Some(i64::from(payments::provider::SANDBOX_FLAKY_FAILURES) + 1)
    );
    assert_eq!(payment(&app, &token, &flaky).await["refunded"], true);

    let metrics = app.metrics().await;
    for series in [
        "payments_refunds_total{outcome=\"declined\"} 2",
        "payments_reconciled_total{answer=\"nothing\"}",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
    let failed_events = app.store.payment_events(&refused).await.unwrap();
    assert!(
        failed_events
            .iter()
            .any(|e| e["type"] == "payments.refund.failed")
    );
}

async fn refunds_are_visible_to_their_owner_only(db: TestDatabase) {
    let app = spawn_app(db).await;
    let alice = app.user_token("alice@example.com").await;
    let bob = app.user_token("bob@example.com").await;
    let pay = id_of(&paid(&app, &alice, "p", json!(10), "pm_card_visa").await);
    let refund = id_of(
        &app.refund(&alice, &pay, "r", &json!({"amount": 1}))
            .await
            .json::<Value>()
            .await
            .unwrap(),
    );
    for response in [
        app.get(&bob, &format!("/v1/refunds/{refund}")).await,
        app.get(&bob, &format!("/v1/payments/{pay}/refunds")).await,
        app.refund(&bob, &pay, "steal", &json!({})).await,
    ] {
        assert_eq!(response.status(), 404);
        assert_eq!(response.json::<Value>().await.unwrap()["code"], "not_found");
    }
    assert_eq!(app.get(&bob, "/v1/refunds/re_nope").await.status(), 404);
    let admin = app.admin_token().await;
    assert_eq!(
        app.get(&admin, &format!("/v1/refunds/{refund}"))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get(&alice, &format!("/v1/refunds/{refund}"))
            .await
            .status(),
        200
    );
    // A token without payments:write cannot refund.
    let narrowed: Value = app
        .client
        .post(app.accounts.url("/v1/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice@example.com"),
            ("password", "password-123"),
            ("scope", "payments:read"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reader = narrowed["access_token"].as_str().unwrap();
    let response = app.refund(reader, &pay, "read-only", &json!({})).await;
    assert_eq!(response.status(), 403);
}

/// Every provider call takes longer than the processor waits: each answer is lost, and each
/// is resolved by asking the provider, never by calling it twice.
async fn timed_out_provider_calls_are_resolved_by_asking_the_provider(db: TestDatabase) {
    let app = spawn_app_with(
        db,
        &[
            ("PAYMENTS_SANDBOX_LATENCY_MS", "400"),
            ("PAYMENTS_PROVIDER_TIMEOUT_MS", "100"),
        ],
    )
    .await;
    let token = app.user_token("slow@example.com").await;
    let pay = id_of(&paid(&app, &token, "p", json!(10), "pm_card_visa").await);
    let refund = id_of(
        &app.refund(&token, &pay, "r", &json!({}))
            .await
            .json::<Value>()
            .await
            .unwrap(),
    );
    assert_eq!(
        settled_refund(&app, &token, &refund).await["status"],
        "succeeded"
    );
    let charges = app.store.sandbox_calls("charge").await.unwrap();
    let refunds = app.store.sandbox_calls("refund").await.unwrap();
    assert_eq!(charges, [(pay.clone(), 1)], "charged once");
    assert_eq!(refunds, [(refund.clone(), 1)], "refunded once");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("payments_reconciled_total{answer=\"done\"} 2"),
        "{metrics}"
    );
}

/// An outcome still unresolved after `PAYMENTS_ATTENTION_AFTER_SECONDS` (0 here) is flagged
/// for a person, and is still only settled by the provider's word.
async fn an_unresolved_outcome_is_flagged_for_a_person(db: TestDatabase) {
    let app = spawn_app_with(db, &[("PAYMENTS_ATTENTION_AFTER_SECONDS", "0")]).await;
    let token = app.user_token("flag@example.com").await;
    let flaky = paid(&app, &token, "flaky", json!(10), "pm_card_flaky").await;
    let stored = app.store.payment(&id_of(&flaky)).await.unwrap().unwrap();
    assert!(stored.attention_at.is_some(), "flagged");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("payments_attention_required_total{kind=\"payment\"} 1"),
        "{metrics}"
    );
}

/// The process holding a refund is killed while the provider works on it; after a restart the
/// refund is resolved by asking the provider, which had done it: one refund call, one outcome.
async fn a_refund_in_flight_when_its_process_is_killed_is_resolved_after_restart(db: TestDatabase) {
    let app = spawn_app_with(db, &[("PAYMENTS_PROCESSOR_ENABLED", "false")]).await;
    let token = app.user_token("killed@example.com").await;
    let data = tempfile::tempdir().unwrap();
    // The processing replica: a real process, slow at the provider.
    let mut replica = spawn_payments_process(
        &app.db,
        data.path(),
        &[
            ("PAYMENTS_SANDBOX_LATENCY_MS", "1500"),
            ("PAYMENTS_LEASE_SECONDS", "2"),
        ],
    );
    let pay = id_of(&paid(&app, &token, "p", json!(10), "pm_card_visa").await);
    let refund = id_of(
        &app.refund(&token, &pay, "r", &json!({}))
            .await
            .json::<Value>()
            .await
            .unwrap(),
    );
    // The provider has the call (its ledger says so); the replica waits for the answer.
    let mut reached = false;
    for _ in 0..200 {
        if !app.store.sandbox_calls("refund").await.unwrap().is_empty() {
            reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reached, "the refund reached the provider");
    replica.kill().await.unwrap();
    let held = app.store.refund(&refund).await.unwrap().unwrap();
    assert_eq!(
        (held.status.as_str(), held.attempts),
        ("pending", 1),
        "killed mid-call"
    );

    // A new processor takes it over once the dead one's lease runs out.
    let (restarted, _) = start_payments(
        &app.db,
        app.accounts.addr,
        &[("PAYMENTS_LEASE_SECONDS".to_owned(), "2".to_owned())],
    )
    .await;
    let done = settled_refund(&app, &token, &refund).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(
        app.store.sandbox_calls("refund").await.unwrap(),
        [(refund.clone(), 1)],
        "asked, not refunded twice"
    );
    let stored = app.store.refund(&refund).await.unwrap().unwrap();
    assert_eq!(stored.attempts, 2);
    let events: Vec<String> = app
        .store
        .payment_events(&pay)
        .await
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == refund.as_str())
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        events,
        ["payments.refund.created", "payments.refund.succeeded"]
    );
    restarted.stop().await.unwrap();
}
