//! Replicas on one machine: two gateways, two accounts and two payments processes (the service
//! binaries, each on a port of its own) against one PostgreSQL, one NATS JetStream and one Redis.
//!
//! Through both gateways at once: concurrent requests with one `Idempotency-Key` create one
//! payment; the two processors never take the same payment; every outbox event reaches the
//! stream exactly once; the rate limit is one limit across both gateways; a signing key rotated
//! on one accounts replica verifies at the other (and at the payments replica behind it); fifty
//! concurrent partial refunds through both never add up to more than the payment; the
//! replicas start together on empty databases. Then one replica of each is killed (SIGKILL) in
//! the middle of a load, and nothing that was accepted is lost or done twice.
//!
//! Replicas share a database server, so this runs on PostgreSQL only (SQLite is the
//! single-process default); like every server test it needs `TEST_DATABASE_URL`,
//! `TEST_NATS_URL` and `TEST_REDIS_URL`.

mod cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::testkit::{TestDatabase, nats_url, redis_url};
use futures_util::future::join_all;
use serde_json::{Value, json};

use cluster::{Cluster, Gateway};

/// Clients of the load: each creates `PER_CLIENT` payments.
const CLIENTS: usize = 6;
const PER_CLIENT: usize = 8;
/// The gateways' limit per token subject, shared through Redis.
const RATE_RPS: u32 = 2;
const RATE_BURST: u32 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(all(test_postgres, test_nats, test_redis)),
    ignore = "needs PostgreSQL, NATS and Redis: set TEST_DATABASE_URL, TEST_NATS_URL, TEST_REDIS_URL"
)]
async fn replicas_share_one_database_stream_and_limit_and_survive_a_kill() {
    let (nats, redis) = (nats_url(), redis_url());
    let accounts_db = TestDatabase::postgres().await;
    let payments_db = TestDatabase::postgres().await;
    let cluster = Cluster::start(
        &accounts_db,
        &payments_db,
        &nats,
        &redis,
        RATE_RPS,
        RATE_BURST,
    )
    .await;

    // Users: signed up at one accounts replica, logged in at the other (one database).
    let mut tokens = Vec::new();
    for n in 0..CLIENTS + 4 {
        tokens.push(cluster.user_token(&format!("user{n}@example.com"), n).await);
    }
    // Each check has a subject of its own, so one check's requests do not spend another's limit.
    let limited = tokens.pop().unwrap_or_else(|| panic!("three tokens"));
    let same_key_user = tokens.pop().unwrap_or_else(|| panic!("three tokens"));
    let shared_user = tokens.pop().unwrap_or_else(|| panic!("three tokens"));
    let refunding_user = tokens.pop().unwrap_or_else(|| panic!("four tokens"));

    same_key_requests_through_both_gateways_create_one_payment(&cluster, &same_key_user).await;
    processors_share_the_work_and_never_take_a_payment_twice(&cluster, &shared_user).await;
    the_rate_limit_is_one_limit_across_gateways(&cluster, &limited).await;
    a_key_rotated_at_one_accounts_replica_verifies_at_the_other(&cluster).await;
    concurrent_refunds_through_both_replicas_never_exceed_the_payment(&cluster, &refunding_user)
        .await;

    // The load: every client creates its payments through both gateways, alternating; in the
    // middle, gateway B, payments B and accounts B are killed.
    let started = Instant::now();
    let load = tokens.iter().enumerate().map(|(client, token)| {
        let cluster = &cluster;
        async move {
            let mut accepted = Vec::new();
            for n in 0..PER_CLIENT {
                let method = ["pm_card_visa", "pm_card_declined", "pm_card_flaky"][n % 3];
                let key = format!("load-{client}-{n}");
                let body = json!({"amount": 100 + n, "currency": "EUR", "payment_method": method});
                let payment = cluster.create_payment(token, &key, &body, client + n).await;
                accepted.push((key, payment["id"].as_str().unwrap_or_default().to_owned()));
                // Paced, so the kill lands while clients are still sending.
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            accepted
        }
    });
    let kill = async {
        // Kill while payments are being accepted and processed on both sides.
        cluster
            .wait_for_payments(1 + 20 + (CLIENTS * PER_CLIENT) as i64 / 3)
            .await;
        cluster.kill_replicas_b().await;
    };
    let (accepted, ()) = tokio::join!(join_all(load), kill);
    let accepted: Vec<(String, String)> = accepted.into_iter().flatten().collect();
    let (killed_at, failovers) = cluster.kill_report();
    eprintln!(
        "load: {} payments accepted in {:?}; replicas B killed at {killed_at} payments; {failovers} tries failed over",
        accepted.len(),
        started.elapsed()
    );

    // Nothing accepted is lost: every key has its payment, once.
    let ids: BTreeSet<&str> = accepted.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), accepted.len(), "one payment per key");
    // The same-key payment, the twenty shared ones, the refunded one, and the load's.
    let expected_payments = 1 + 20 + 1 + accepted.len() as i64;
    assert!(
        killed_at < expected_payments,
        "the kill came in the middle of the load"
    );
    assert!(
        failovers > 0,
        "clients met the dead replicas and went to the other gateway"
    );
    let held_at_kill = cluster.held_at_kill();
    assert!(
        !held_at_kill.is_empty(),
        "payments were being processed at the kill"
    );
    cluster
        .wait_until_settled_and_published(expected_payments)
        .await;
    let database = cluster.payments_database();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(database)
        .await
        .unwrap_or_else(|e| panic!("query failed: {e}"));
    assert_eq!(
        stored, expected_payments,
        "no payment lost, none created twice"
    );
    for (key, id) in &accepted {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM payments WHERE id = $1")
                .bind(id)
                .fetch_optional(database)
                .await
                .unwrap_or_else(|e| panic!("query failed: {e}"));
        let status = status.unwrap_or_else(|| panic!("{key}: payment {id} is not stored"));
        assert!(
            ["succeeded", "failed"].contains(&status.as_str()),
            "{key}: {id} ended {status}"
        );
    }

    let refunds: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM refunds GROUP BY status")
            .fetch_all(database)
            .await
            .unwrap_or_else(|e| panic!("query failed: {e}"));
    assert_eq!(
        refunds,
        [("succeeded".to_owned(), 33)],
        "every refund finished, once"
    );

    // Nothing done twice: one event per state change, each published once.
    let events: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id, payment_id, type FROM payment_events ORDER BY seq")
            .fetch_all(database)
            .await
            .unwrap_or_else(|e| panic!("query failed: {e}"));
    let mut per_payment: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    // The refunds' events (checked by their own step) are in their payment's history too.
    let payment_events = events
        .iter()
        .filter(|(_, _, kind)| kind.starts_with("payments.payment."));
    for (_, payment, kind) in payment_events {
        per_payment
            .entry(payment)
            .or_default()
            .push(kind.rsplit('.').next().unwrap_or_default());
    }
    assert_eq!(per_payment.len() as i64, expected_payments);
    for (payment, states) in &per_payment {
        let terminal = states
            .iter()
            .filter(|s| ["succeeded", "failed"].contains(s))
            .count();
        assert_eq!(states.first(), Some(&"created"), "{payment}: {states:?}");
        assert_eq!(terminal, 1, "{payment} finished once: {states:?}");
        assert_eq!(
            states.len(),
            3,
            "{payment}: created, processing, done: {states:?}"
        );
    }
    // A provider call is repeated only for payments that were being processed when payments B
    // died (its leases ran out and A resumed them), and for pm_card_flaky's planned failures.
    let charges = cluster.provider_calls().await;
    assert_eq!(
        charges.len() as i64,
        expected_payments,
        "every payment was charged, as the provider's own ledger says"
    );
    let methods: BTreeMap<String, String> =
        sqlx::query_as("SELECT id, payment_method FROM payments")
            .fetch_all(database)
            .await
            .unwrap_or_else(|e| panic!("query failed: {e}"))
            .into_iter()
            .collect();
    for (payment, calls) in &charges {
        let flaky = methods.get(payment).is_some_and(|m| m == "pm_card_flaky");
        if *calls > 1 && !flaky {
            assert!(
                held_at_kill.contains(payment),
                "{payment} was charged {calls} times but was not in flight at the kill"
            );
        }
    }
    eprintln!(
        "charged again after the kill: {:?}",
        charges
            .iter()
            .filter(|(p, calls)| **calls > 1 && held_at_kill.contains(*p))
            .collect::<Vec<_>>()
    );
    // The stream's duplicate window drops a repeated event, so the stream alone cannot show a
    // relay publishing twice: the survivor's own count of repeats can. Only events payments B
    // had claimed and not marked sent when it died may be sent again.
    let (repeats, claimed_at_kill) = cluster.relay_repeats().await;
    assert!(
        repeats <= claimed_at_kill,
        "payments A published {repeats} events again; only {claimed_at_kill} were in flight at the kill"
    );
    let published = cluster.read_stream().await;
    let published_ids: BTreeSet<&str> = published.iter().map(String::as_str).collect();
    assert_eq!(
        published_ids.len(),
        published.len(),
        "no event in the stream twice"
    );
    let stored_ids: BTreeSet<&str> = events.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(
        published_ids, stored_ids,
        "the stream holds exactly the stored events"
    );

    cluster.stop_survivors().await;
}

/// Fifty partial refunds of one payment at once, each with its own key, alternating between
/// the gateways (so between the two payments processes): never more than was paid.
async fn concurrent_refunds_through_both_replicas_never_exceed_the_payment(
    cluster: &Cluster,
    token: &str,
) {
    let body = json!({"amount": "100.00", "currency": "EUR", "payment_method": "pm_card_visa"});
    let payment = cluster.create_payment(token, "to-refund", &body, 0).await;
    let id = payment["id"].as_str().unwrap_or_default().to_owned();
    let database = cluster.payments_database();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: String = sqlx::query_scalar("SELECT status FROM payments WHERE id = $1")
            .bind(&id)
            .fetch_one(database)
            .await
            .unwrap_or_else(|e| panic!("query failed: {e}"));
        if status == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "{id} did not succeed: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refunds = (0..50).map(|n| {
        let (id, gateway) = (&id, if n % 2 == 0 { Gateway::A } else { Gateway::B });
        async move {
            let url = cluster.gateway_url(gateway, &format!("/payments/v1/payments/{id}/refunds"));
            loop {
                let response = cluster
                    .client
                    .post(&url)
                    .bearer_auth(token)
                    .header("idempotency-key", format!("refund-{n}"))
                    .json(&json!({"amount": "3.00"}))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("refund {n}: {e}"));
                let status = response.status().as_u16();
                if status == 429 || status == 409 {
                    // Limited per subject, or the first try of this key still running.
                    let wait = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .unwrap_or(1);
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                    continue;
                }
                let body: Value = response.json().await.unwrap_or_default();
                return (status, body);
            }
        }
    });
    let answers = join_all(refunds).await;
    let accepted = answers.iter().filter(|(status, _)| *status == 202).count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status != 202)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(accepted, 33, "33 × 3.00 fit in 100.00: {refused:?}");
    assert!(
        refused
            .iter()
            .all(|body| body["code"] == "amount_too_large"),
        "{refused:?}"
    );
    let (refunded, sum): (i64, i64) = sqlx::query_as(
        "SELECT p.amount_refunded_minor, (SELECT COALESCE(SUM(amount_minor), 0)::BIGINT FROM refunds r WHERE r.payment_id = p.id) \
         FROM payments p WHERE p.id = $1",
    )
    .bind(&id)
    .fetch_one(database)
    .await
    .unwrap_or_else(|e| panic!("query failed: {e}"));
    assert_eq!((refunded, sum), (9900, 9900));
}

/// Twenty identical requests at once, half through each gateway: one payment.
async fn same_key_requests_through_both_gateways_create_one_payment(
    cluster: &Cluster,
    token: &str,
) {
    let body = json!({"amount": 4200, "currency": "USD", "payment_method": "pm_card_visa"});
    let attempts = (0..20).map(|n| cluster.create_payment(token, "the-same-key", &body, n));
    let created = join_all(attempts).await;
    let ids: BTreeSet<&str> = created.iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids.len(), 1, "one payment for one key: {ids:?}");
}

/// Twenty payments with both processors running: each charged once, and both did some.
async fn processors_share_the_work_and_never_take_a_payment_twice(cluster: &Cluster, token: &str) {
    let body = json!({"amount": 10, "currency": "USD", "payment_method": "pm_card_visa"});
    let keys: Vec<String> = (0..20).map(|n| format!("shared-{n}")).collect();
    let creates = keys
        .iter()
        .enumerate()
        .map(|(n, key)| cluster.create_payment(token, key, &body, n));
    join_all(creates).await;
    cluster.wait_until_settled_and_published(21).await;
    // Every provider call, from the provider's own ledger: one per payment.
    let charges = cluster.provider_calls().await;
    assert_eq!(charges.len(), 21, "{charges:?}");
    for (id, calls) in &charges {
        assert_eq!(*calls, 1, "{id} was charged {calls} times");
    }
    for gateway in [Gateway::A, Gateway::B] {
        let processed = cluster.payments_processed(gateway).await;
        eprintln!("payments {gateway:?} processed {processed}");
        assert!(
            processed > 0.0,
            "payments {gateway:?} processed nothing ({processed})"
        );
    }
}

/// One subject, requests alternating between the gateways as fast as they answer: the burst
/// is granted once in all, not once per gateway.
async fn the_rate_limit_is_one_limit_across_gateways(cluster: &Cluster, token: &str) {
    let started = Instant::now();
    let mut allowed = 0u32;
    let mut limited_at = BTreeSet::new();
    for n in 0..(3 * RATE_BURST) {
        let gateway = if n % 2 == 0 { Gateway::A } else { Gateway::B };
        let response = cluster
            .client
            .get(cluster.gateway_url(gateway, "/payments/v1/payments?limit=1"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET through gateway {gateway:?}: {e}"));
        match response.status().as_u16() {
            200 => allowed += 1,
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                limited_at.insert(format!("{gateway:?}"));
            }
            other => panic!("unexpected {other} from gateway {gateway:?}"),
        }
    }
    // The bucket refills at RATE_RPS while the loop runs: allow for that (and one in flight).
    eprintln!(
        "rate limit: {allowed} of {} allowed, limited at {limited_at:?}",
        3 * RATE_BURST
    );
    let refilled = (started.elapsed().as_secs_f64() * f64::from(RATE_RPS)).ceil() as u32 + 1;
    assert!(
        allowed >= RATE_BURST && allowed <= RATE_BURST + refilled,
        "{allowed} requests allowed; one shared limit allows {RATE_BURST} + {refilled}"
    );
    assert_eq!(
        limited_at.len(),
        2,
        "both gateways enforce the shared limit"
    );
}

/// Rotated through gateway A (accounts A); the new key's tokens verify at accounts B and at
/// payments B, both reached through gateway B.
async fn a_key_rotated_at_one_accounts_replica_verifies_at_the_other(cluster: &Cluster) {
    let admin = cluster.admin_token(Gateway::A).await;
    // The next key has been published for longer than any JWKS cache lasts.
    cluster.backdate_next_keys().await;
    let rotated = cluster
        .client
        .post(cluster.gateway_url(Gateway::A, "/accounts/v1/admin/keys/rotate"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap_or_else(|e| panic!("rotate: {e}"));
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated
        .json()
        .await
        .unwrap_or_else(|e| panic!("rotate answered no JSON: {e}"));
    let kid = rotated["kid"]
        .as_str()
        .unwrap_or_else(|| panic!("no kid in {rotated}"));

    let token = cluster.admin_token(Gateway::A).await;
    assert_eq!(
        cluster::kid_of(&token),
        kid,
        "accounts A signs with the new key at once"
    );
    let jwks: Value = cluster
        .client
        .get(cluster.gateway_url(Gateway::B, "/accounts/.well-known/jwks.json"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("jwks: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("jwks answered no JSON: {e}"));
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .map(|keys| keys.iter().filter_map(|k| k["kid"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        kids.contains(&kid),
        "accounts B publishes the new key: {kids:?}"
    );

    let me = cluster
        .client
        .get(cluster.gateway_url(Gateway::B, "/accounts/v1/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("users/me: {e}"));
    assert_eq!(me.status(), 200, "accounts B accepts the new key's token");
    let listed = cluster
        .client
        .get(cluster.gateway_url(Gateway::B, "/payments/v1/payments?limit=1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("payments: {e}"));
    assert_eq!(
        listed.status(),
        200,
        "payments B accepts the new key's token"
    );
}
