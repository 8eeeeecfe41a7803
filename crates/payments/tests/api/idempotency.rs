//! Idempotency keys: replays, changed requests, concurrency, crashes and expiry.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{spawn_app_with, start_payments, usd};
use common::testkit::TestDatabase;

common::both_databases!(
    a_finished_request_replays_byte_for_byte,
    the_same_key_with_another_request_is_422,
    missing_and_invalid_keys_are_400,
    fifty_concurrent_identical_requests_create_one_payment,
    a_request_that_died_mid_way_is_recovered_once_after_restart,
    expired_keys_are_purged_and_then_free,
    an_expired_key_not_yet_purged_is_claimed_afresh,
    a_request_that_outlived_its_lock_creates_nothing,
    a_new_key_is_written_finished_with_its_payment_and_a_live_one_is_left_alone,
);

const NO_PROCESSOR: (&str, &str) = ("PAYMENTS_PROCESSOR_ENABLED", "false");

async fn a_finished_request_replays_byte_for_byte(db: TestDatabase) {
    let app = spawn_app_with(db, &[NO_PROCESSOR]).await;
    let token = app.user_token("replay@example.com").await;
    let first = app.create(&token, "order-1", &usd(json!(12.5))).await;
    assert_eq!(first.status(), 202);
    let location = first.headers()["location"].clone();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.bytes().await.unwrap();

    let again = app.create(&token, "order-1", &usd(json!(12.5))).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], location);
    assert_eq!(again.bytes().await.unwrap(), first_body, "byte-identical");
    assert_eq!(app.store.count_payments().await.unwrap(), 1);
}

async fn the_same_key_with_another_request_is_422(db: TestDatabase) {
    let app = spawn_app_with(db, &[NO_PROCESSOR]).await;
    let token = app.user_token("reuse@example.com").await;
    assert_eq!(app.create(&token, "k", &usd(json!(1))).await.status(), 202);
    let other_body = app.create(&token, "k", &usd(json!(2))).await;
    assert_eq!(other_body.status(), 422);
    assert_eq!(
        other_body.json::<Value>().await.unwrap()["code"],
        "idempotency_key_reused"
    );
    let other_path = app
        .client
        .post(app.url("/payments"))
        .bearer_auth(&token)
        .header("idempotency-key", "k")
        .json(&usd(json!(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(other_path.status(), 422, "same body on another path");
    assert_eq!(
        other_path.json::<Value>().await.unwrap()["code"],
        "idempotency_key_reused"
    );
    assert_eq!(app.store.count_payments().await.unwrap(), 1);
}

async fn missing_and_invalid_keys_are_400(db: TestDatabase) {
    let app = spawn_app_with(db, &[NO_PROCESSOR]).await;
    let token = app.user_token("keys@example.com").await;
    let missing = app
        .client
        .post(app.url("/v1/payments"))
        .bearer_auth(&token)
        .json(&usd(json!(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["code"],
        "missing_idempotency_key"
    );
    for bad in [
        String::new(),
        "x".repeat(256),
        "tab\there".to_owned(),
        "ünï".to_owned(),
    ] {
        let response = app
            .client
            .post(app.url("/v1/payments"))
            .bearer_auth(&token)
            .header(
                "idempotency-key",
                reqwest::header::HeaderValue::from_bytes(bad.as_bytes()).unwrap(),
            )
            .json(&usd(json!(1)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad:?}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["code"],
            "invalid_idempotency_key"
        );
    }
    assert_eq!(
        app.create(&token, &"x".repeat(255), &usd(json!(1)))
            .await
            .status(),
        202
    );
}

async fn fifty_concurrent_identical_requests_create_one_payment(db: TestDatabase) {
    let app = spawn_app_with(db, &[NO_PROCESSOR]).await;
    let token = app.user_token("race@example.com").await;
    let body = usd(json!(42));
    let requests = (0..50).map(|_| app.create(&token, "same-key", &body));
    let responses = futures_util::future::join_all(requests).await;
    let mut ids = std::collections::BTreeSet::new();
    for response in responses {
        match response.status().as_u16() {
            202 => {
                let body: Value = response.json().await.unwrap();
                ids.insert(body["id"].as_str().unwrap().to_owned());
            }
            409 => {
                assert_eq!(response.headers()["retry-after"], "1");
                assert_eq!(
                    response.json::<Value>().await.unwrap()["code"],
                    "idempotency_key_in_use"
                );
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ids.len(), 1, "every 202 names the same payment");
    assert_eq!(
        app.store.count_payments().await.unwrap(),
        1,
        "exactly one payment"
    );
    let replay = app.create(&token, "same-key", &usd(json!(42))).await;
    assert_eq!(replay.status(), 202);
}

/// What a process killed after claiming a key (phase one) and before writing the payment
/// (phase two) leaves behind: a locked key with no response.
async fn leave_a_dead_request(
    app: &crate::helpers::TestApp,
    principal: &str,
    key: &str,
    fingerprint_of: &Value,
) {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"POST\n/v1/payments\n");
    hasher.update(serde_json::to_vec(fingerprint_of).unwrap());
    let fingerprint: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let claim = app
        .store
        .claim_idempotency_key(
            principal,
            key,
            &fingerprint,
            chrono::Utc::now(),
            Duration::from_secs(3600),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert_eq!(claim, payments::store::KeyClaim::Proceed);
}

async fn a_request_that_died_mid_way_is_recovered_once_after_restart(db: TestDatabase) {
    let mut app = spawn_app_with(
        db,
        &[
            NO_PROCESSOR,
            ("PAYMENTS_IDEMPOTENCY_LOCK_TIMEOUT_SECONDS", "2"),
        ],
    )
    .await;
    let token = app.user_token("crash@example.com").await;
    let me: Value = app
        .client
        .get(app.accounts.url("/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let body = usd(json!(99));
    leave_a_dead_request(&app, me["id"].as_str().unwrap(), "crash-key", &body).await;

    // The process is killed and restarted on the same database.
    let (server, store) = start_payments(&app.db, app.accounts.addr, &app.extra).await;
    let old = std::mem::replace(&mut app.server, server);
    old.stop().await.unwrap();
    app.store = store;

    let while_locked = app.create(&token, "crash-key", &body).await;
    assert_eq!(while_locked.status(), 409, "the lock is still fresh");
    assert_eq!(
        while_locked.json::<Value>().await.unwrap()["code"],
        "idempotency_key_in_use"
    );
    // Retried as a client would, until the dead request's lock times out (2 s after it was
    // taken): 409 until then, then the request runs, once.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let recovered = loop {
        let response = app.create(&token, "crash-key", &body).await;
        if response.status() != 409 {
            break response;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock never timed out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(recovered.status(), 202, "taken over after the lock timeout");
    assert!(recovered.headers().get("idempotent-replayed").is_none());
    let replay = app.create(&token, "crash-key", &body).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(
        app.store.count_payments().await.unwrap(),
        1,
        "executed exactly once"
    );
}

async fn expired_keys_are_purged_and_then_free(db: TestDatabase) {
    let app = spawn_app_with(db, &[NO_PROCESSOR]).await;
    let token = app.user_token("expiry@example.com").await;
    assert_eq!(
        app.create(&token, "old", &usd(json!(1))).await.status(),
        202
    );
    let tomorrow = chrono::Utc::now() + chrono::Duration::hours(25);
    assert_eq!(
        app.store
            .purge_idempotency_keys(chrono::Utc::now())
            .await
            .unwrap(),
        0
    );
    assert_eq!(app.store.purge_idempotency_keys(tomorrow).await.unwrap(), 1);
    let reused = app.create(&token, "old", &usd(json!(2))).await;
    assert_eq!(reused.status(), 202, "a purged key is new again");
    assert_eq!(app.store.count_payments().await.unwrap(), 2);
}

/// A key past its expiry that the purger has not reached yet is as good as gone: the next
/// claim takes it afresh (its old fingerprint and response forgotten), in one statement.
async fn an_expired_key_not_yet_purged_is_claimed_afresh(db: TestDatabase) {
    use chrono::{SubsecRound, Utc};
    use payments::domain::events::state_changed;
    use payments::store::{KeyClaim, SavedResponse};

    let app = spawn_app_with(db, &[NO_PROCESSOR]).await;
    let store = &app.store;
    let (ttl, lock) = (Duration::from_secs(3600), Duration::from_secs(30));
    let first = Utc::now().trunc_subsecs(6);
    let claim = |fingerprint: &'static str, at| async move {
        store
            .claim_idempotency_key("alice", "k", fingerprint, at, ttl, lock)
            .await
            .unwrap()
    };
    assert!(matches!(claim("fp", first).await, KeyClaim::Proceed));
    let payment = alices_payment("pay_first", first);
    let response = SavedResponse {
        principal: "alice",
        key: "k",
        status: 202,
        body: "{}",
        locked_at: first,
    };
    store
        .create_payment(&payment, &state_changed(&payment, first), Some(response))
        .await
        .unwrap();
    let within = first + chrono::Duration::minutes(59);
    assert!(matches!(
        claim("fp", within).await,
        KeyClaim::Replay { payment_id: Some(ref id), .. } if id == "pay_first"
    ));
    assert!(matches!(claim("other", within).await, KeyClaim::Mismatch));

    let after = first + chrono::Duration::minutes(61);
    let fresh = claim("other", after).await;
    assert!(matches!(fresh, KeyClaim::Proceed), "{fresh:?}");
    // Now the fresh claim's: in flight (no response of its own yet), under its fingerprint.
    let second = after + chrono::Duration::seconds(1);
    assert!(matches!(claim("other", second).await, KeyClaim::InFlight));
    assert!(matches!(claim("fp", second).await, KeyClaim::Mismatch));
    assert_eq!(
        store.purge_idempotency_keys(after).await.unwrap(),
        0,
        "expires an hour after the fresh claim"
    );
}

/// A request that stalls past the lock timeout loses its key to a retry: when it wakes up, it
/// can neither save a second payment under the key nor release the retry's lock.
async fn a_request_that_outlived_its_lock_creates_nothing(db: TestDatabase) {
    use chrono::{SubsecRound, Utc};
    use payments::domain::events::state_changed;
    use payments::domain::payment::Payment;
    use payments::store::{KeyClaim, SavedResponse};

    let app = spawn_app_with(db, &[NO_PROCESSOR]).await;
    let store = &app.store;
    let (ttl, lock) = (Duration::from_secs(3600), Duration::from_secs(30));
    let first = Utc::now().trunc_subsecs(6);
    let retry = first + chrono::Duration::seconds(31);
    for claimed_at in [first, retry] {
        let claim = store
            .claim_idempotency_key("alice", "k", "fp", claimed_at, ttl, lock)
            .await
            .unwrap();
        assert!(
            matches!(claim, KeyClaim::Proceed),
            "{claimed_at}: {claim:?}"
        );
    }
    let payment = |id: &str| alices_payment(id, first);
    let save = |payment: Payment, locked_at| async move {
        let event = state_changed(&payment, payment.created_at);
        let response = SavedResponse {
            principal: "alice",
            key: "k",
            status: 202,
            body: "{}",
            locked_at,
        };
        store.create_payment(&payment, &event, Some(response)).await
    };

    let late = save(payment("pay_late"), first).await;
    assert!(
        matches!(late, Err(common::db::StoreError::Conflict(_))),
        "{late:?}"
    );
    assert!(
        store.payment("pay_late").await.unwrap().is_none(),
        "rolled back"
    );
    store
        .release_idempotency_key("alice", "k", first)
        .await
        .unwrap();
    save(payment("pay_retry"), retry)
        .await
        .expect("the retry holds the lock");
    let replay = store
        .claim_idempotency_key("alice", "k", "fp", Utc::now(), ttl, lock)
        .await
        .unwrap();
    assert!(
        matches!(replay, KeyClaim::Replay { payment_id: Some(ref id), .. } if id == "pay_retry"),
        "{replay:?}"
    );
    assert_eq!(store.count_payments().await.unwrap(), 1);
}

/// The one-write path: a new key is saved already finished with its payment, its event and
/// its webhook deliveries; a live key (finished, or locked by a running request) makes it
/// write nothing, so the request goes the long way; an expired one is taken afresh.
async fn a_new_key_is_written_finished_with_its_payment_and_a_live_one_is_left_alone(
    db: TestDatabase,
) {
    use chrono::{SubsecRound, Utc};
    use payments::domain::events::state_changed;
    use payments::store::{FinishedKey, KeyClaim};

    let app = spawn_app_with(db, &[NO_PROCESSOR]).await;
    let store = &app.store;
    let (ttl, lock) = (Duration::from_secs(3600), Duration::from_secs(30));
    let now = Utc::now().trunc_subsecs(6);
    let finished = |key: &'static str, fingerprint: &'static str, at| FinishedKey {
        principal: "alice",
        key,
        fingerprint,
        status: 202,
        body: "{\"id\":\"first\"}",
        created_at: at,
        expires_at: at + chrono::Duration::hours(1),
    };
    let create = |id: &'static str, key| async move {
        let payment = alices_payment(id, now);
        let event = state_changed(&payment, now);
        store
            .create_payment_under_new_key(&payment, &event, key)
            .await
            .unwrap()
    };

    assert!(create("pay_first", finished("k", "fp", now)).await);
    let written = store
        .payment("pay_first")
        .await
        .unwrap()
        .expect("the payment");
    assert_eq!(written.amount_minor, 100);
    assert_eq!(store.payment_events("pay_first").await.unwrap().len(), 1);
    let replay = store
        .claim_idempotency_key("alice", "k", "fp", now, ttl, lock)
        .await
        .unwrap();
    assert_eq!(
        replay,
        KeyClaim::Replay {
            status: 202,
            body: "{\"id\":\"first\"}".into(),
            payment_id: Some("pay_first".into()),
        },
        "finished, not locked"
    );

    // Live: the same key again (a retry, or a concurrent duplicate), even another request's.
    assert!(!create("pay_again", finished("k", "fp", now)).await);
    assert!(!create("pay_other", finished("k", "other", now)).await);
    // Live: locked by a request that claimed it the long way and is still running.
    assert_eq!(
        store
            .claim_idempotency_key("alice", "held", "fp", now, ttl, lock)
            .await
            .unwrap(),
        KeyClaim::Proceed
    );
    assert!(!create("pay_held", finished("held", "fp", now)).await);
    for id in ["pay_again", "pay_other", "pay_held"] {
        assert!(
            store.payment(id).await.unwrap().is_none(),
            "{id}: nothing written"
        );
        assert!(
            store.payment_events(id).await.unwrap().is_empty(),
            "{id}: no event"
        );
    }
    assert_eq!(
        store
            .claim_idempotency_key("alice", "held", "fp", now, ttl, lock)
            .await
            .unwrap(),
        KeyClaim::InFlight,
        "the running request's lock is untouched"
    );

    // Expired, not yet purged: taken afresh, under the new request's fingerprint.
    let later = now + chrono::Duration::minutes(61);
    assert!(create("pay_later", finished("k", "other", later)).await);
    assert!(matches!(
        store.claim_idempotency_key("alice", "k", "other", later, ttl, lock).await.unwrap(),
        KeyClaim::Replay { payment_id: Some(ref id), .. } if id == "pay_later"
    ));
    assert_eq!(store.count_payments().await.unwrap(), 2);
}

/// A payment of 1.00 USD by alice, created at `at`, to save under a key in store tests.
fn alices_payment(
    id: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> payments::domain::payment::Payment {
    use payments::domain::money::Money;
    use payments::domain::payment::{CaptureMethod, Payment};
    Payment {
        id: id.to_owned(),
        ..Payment::new(
            "alice",
            Money::from_minor(100, "USD").unwrap(),
            String::new(),
            "pm_card_visa".to_owned(),
            CaptureMethod::Automatic,
            at,
        )
    }
}
