//! Creating, reading and listing payments: money, validation, auth and isolation.

use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_app_with, usd};
use common::testkit::TestDatabase;

common::both_databases!(
    a_payment_is_accepted_with_202_and_a_location,
    amounts_are_converted_exactly_to_minor_units,
    every_invalid_amount_or_currency_is_a_422_naming_the_field,
    malformed_bodies_and_missing_tokens_are_refused,
    a_principal_sees_only_its_own_payments,
    the_list_is_newest_first_and_paginates_by_cursor,
);

async fn a_payment_is_accepted_with_202_and_a_location(db: TestDatabase) {
    let app = spawn_app_with(db, &[("PAYMENTS_PROCESSOR_ENABLED", "false")]).await;
    let token = app.user_token("payer@example.com").await;
    let response = app
        .client
        .post(app.url("/payments"))
        .bearer_auth(&token)
        .header("idempotency-key", "seed-example")
        .json(&json!({"amount": 100.00, "currency": "USD", "description": "Test payment"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let payment: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/payments/{}", payment["id"].as_str().unwrap())
    );
    assert!(payment["id"].as_str().unwrap().starts_with("pay_"));
    assert_eq!(payment["status"], "pending");
    assert_eq!(payment["amount"], "100.00");
    assert_eq!(payment["amount_minor"], 10000);
    assert_eq!(payment["currency"], "USD");
    assert_eq!(payment["description"], "Test payment");
    assert_eq!(payment["payment_method"], "pm_card_visa");
    assert!(payment["failure_code"].is_null() && payment["failure_message"].is_null());
    assert!(payment["created_at"].is_string() && payment["updated_at"].is_string());

    let read = app.get(&token, &location).await;
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<Value>().await.unwrap(), payment);
}

async fn amounts_are_converted_exactly_to_minor_units(db: TestDatabase) {
    let app = spawn_app_with(db, &[("PAYMENTS_PROCESSOR_ENABLED", "false")]).await;
    let token = app.user_token("exact@example.com").await;
    let cases = [
        (json!({"amount": 19.99, "currency": "USD"}), 1999, "19.99"),
        (json!({"amount": "0.10", "currency": "usd"}), 10, "0.10"),
        (json!({"amount": 1e2, "currency": "EUR"}), 10000, "100.00"),
        (json!({"amount": 100, "currency": "JPY"}), 100, "100"),
        (json!({"amount": "1.234", "currency": "BHD"}), 1234, "1.234"),
        (json!({"amount": 0.07, "currency": "USD"}), 7, "0.07"),
    ];
    for (index, (body, minor, shown)) in cases.into_iter().enumerate() {
        let response = app.create(&token, &format!("exact-{index}"), &body).await;
        assert_eq!(response.status(), 202, "{body}");
        let payment: Value = response.json().await.unwrap();
        assert_eq!(payment["amount_minor"], minor, "{body}");
        assert_eq!(payment["amount"], shown, "{body}");
    }
}

async fn every_invalid_amount_or_currency_is_a_422_naming_the_field(db: TestDatabase) {
    let app = spawn_app_with(db, &[("PAYMENTS_PROCESSOR_ENABLED", "false")]).await;
    let token = app.user_token("invalid@example.com").await;
    let cases = [
        (
            json!({"amount": 100.001, "currency": "USD"}),
            vec!["amount"],
        ),
        (
            json!({"amount": "100.001", "currency": "USD"}),
            vec!["amount"],
        ),
        (json!({"amount": 100.5, "currency": "JPY"}), vec!["amount"]),
        (json!({"amount": 0, "currency": "USD"}), vec!["amount"]),
        (json!({"amount": "0.00", "currency": "USD"}), vec!["amount"]),
        (json!({"amount": -5, "currency": "USD"}), vec!["amount"]),
        (json!({"amount": "ten", "currency": "USD"}), vec!["amount"]),
        (json!({"amount": true, "currency": "USD"}), vec!["amount"]),
        (json!({"amount": null, "currency": "USD"}), vec!["amount"]),
        (json!({"amount": 1e30, "currency": "USD"}), vec!["amount"]),
        (json!({"amount": 10, "currency": "XYZ"}), vec!["currency"]),
        (json!({"amount": 10, "currency": "XAU"}), vec!["currency"]),
        (json!({"amount": 10, "currency": ""}), vec!["currency"]),
        (
            json!({"amount": 10, "currency": "USD", "payment_method": "pm_bitcoin"}),
            vec!["payment_method"],
        ),
        (
            json!({"amount": 10, "currency": "USD", "description": "x".repeat(1001)}),
            vec!["description"],
        ),
        (json!({"amount": -1, "currency": "NOPE"}), vec!["currency"]),
    ];
    for (index, (body, fields)) in cases.into_iter().enumerate() {
        let response = app.create(&token, &format!("bad-{index}"), &body).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed");
        let named: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields, "{body}");
    }
    assert_eq!(
        app.store.count_payments().await.unwrap(),
        0,
        "nothing was written"
    );
}

async fn malformed_bodies_and_missing_tokens_are_refused(db: TestDatabase) {
    let app = spawn_app_with(db, &[("PAYMENTS_PROCESSOR_ENABLED", "false")]).await;
    let token = app.user_token("shape@example.com").await;
    let raw = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/v1/payments"))
            .bearer_auth(&token)
            .header("idempotency-key", "k")
            .header("content-type", content_type)
            .body(body)
    };
    for (body, status, code) in [
        ("{\"amount\": 1", 400, "malformed_request"),
        ("[]", 400, "malformed_request"),
        ("{\"currency\": \"USD\"}", 400, "malformed_request"),
    ] {
        let response = raw(body, "application/json").send().await.unwrap();
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(response.json::<Value>().await.unwrap()["code"], code);
    }
    let text = raw("{}", "text/plain").send().await.unwrap();
    assert_eq!(text.status(), 415);
    assert_eq!(
        text.json::<Value>().await.unwrap()["code"],
        "unsupported_media_type"
    );
    // A client of its own: the service answers 413 without reading the rest of the body and
    // closes that connection, which a shared client could otherwise pick for its next request.
    let huge = reqwest::Client::new()
        .post(app.url("/v1/payments"))
        .bearer_auth(&token)
        .header("idempotency-key", "big")
        .json(&json!({"amount": 1, "currency": "USD", "description": "x".repeat(2 * 1024 * 1024)}))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(
        huge.json::<Value>().await.unwrap()["code"],
        "payload_too_large"
    );

    let anonymous = app
        .client
        .post(app.url("/v1/payments"))
        .json(&usd(json!(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.json::<Value>().await.unwrap()["code"],
        "unauthorized"
    );
    let narrowed: Value = app
        .client
        .post(app.accounts.url("/v1/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "shape@example.com"),
            ("password", "password-123"),
            ("scope", "payments:read"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let read_only = app
        .create(
            narrowed["access_token"].as_str().unwrap(),
            "ro",
            &usd(json!(1)),
        )
        .await;
    assert_eq!(read_only.status(), 403);
    assert_eq!(
        read_only.json::<Value>().await.unwrap()["code"],
        "forbidden"
    );
}

async fn a_principal_sees_only_its_own_payments(db: TestDatabase) {
    let app = spawn_app_with(db, &[("PAYMENTS_PROCESSOR_ENABLED", "false")]).await;
    let alice = app.user_token("alice@example.com").await;
    let bob = app.user_token("bob@example.com").await;
    let payment: Value = app
        .create(&alice, "a1", &usd(json!(5)))
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/v1/payments/{}", payment["id"].as_str().unwrap());

    assert_eq!(app.get(&alice, &path).await.status(), 200);
    let hidden = app.get(&bob, &path).await;
    assert_eq!(
        hidden.status(),
        404,
        "another principal's payment is not found, not forbidden"
    );
    assert_eq!(hidden.json::<Value>().await.unwrap()["code"], "not_found");
    let cancel = app
        .client
        .post(app.url(&format!("{path}/cancel")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 404);
    assert_eq!(cancel.json::<Value>().await.unwrap()["code"], "not_found");
    let bobs: Value = app.get(&bob, "/v1/payments").await.json().await.unwrap();
    assert_eq!(bobs["data"], json!([]));
    // The same key is Bob's own: it creates Bob's payment, not a replay of Alice's.
    let own = app.create(&bob, "a1", &usd(json!(5))).await;
    assert_eq!(own.status(), 202);
    assert!(own.headers().get("idempotent-replayed").is_none());

    let admin = app.admin_token().await;
    assert_eq!(
        app.get(&admin, &path).await.status(),
        200,
        "payments:admin sees all"
    );
    let all: Value = app.get(&admin, "/v1/payments").await.json().await.unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let unknown = app.get(&alice, "/v1/payments/pay_nope").await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.json::<Value>().await.unwrap()["code"], "not_found");
}

async fn the_list_is_newest_first_and_paginates_by_cursor(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("pages@example.com").await;
    let mut ids = Vec::new();
    for n in 0..7 {
        let payment: Value = app
            .create(&token, &format!("p{n}"), &usd(json!(n + 1)))
            .await
            .json()
            .await
            .unwrap();
        ids.push(payment["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(after) => format!("/v1/payments?limit=3&starting_after={after}"),
            None => "/v1/payments?limit=3".to_owned(),
        };
        let page: Value = app.get(&token, &path).await.json().await.unwrap();
        let data = page["data"].as_array().unwrap();
        seen.extend(data.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
        cursor = data.last().map(|p| p["id"].as_str().unwrap().to_owned());
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(seen, ids, "every payment once, newest first");
    for bad in [
        "/v1/payments?limit=0",
        "/v1/payments?limit=101",
        "/v1/payments?limit=x",
        "/v1/payments?starting_after=pay_unknown",
    ] {
        let response = app.get(&token, bad).await;
        assert_eq!(response.status(), 422, "{bad}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed", "{bad}");
        let field = problem["errors"][0]["field"].as_str().unwrap();
        assert!(bad.contains(field), "{bad}: {problem}");
    }
}
