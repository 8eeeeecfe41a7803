//! A NUL in every string a request can carry, on every endpoint, through the gateway: each is
//! a 4xx, never a 500 (PostgreSQL cannot store a NUL), and nothing trips a breaker.

use base64::Engine;
use common::testkit::TestDatabase;
use serde_json::{Value, json};

use crate::support::{TestStack, spawn_stack_with};

common::both_databases!(a_nul_anywhere_is_a_4xx_and_takes_nothing_down);

const ADMIN: (&str, &str) = ("nul-admin@example.com", "admin-password-1");

/// Replaces the value at `pointer` in `body` with the same text holding a NUL.
fn with_nul(body: &Value, pointer: &str) -> Value {
    let mut body = body.clone();
    let slot = body.pointer_mut(pointer).expect(pointer);
    let text = slot
        .as_str()
        .map_or_else(|| slot.to_string(), str::to_owned);
    *slot = Value::String(format!("{text}\0x"));
    body
}

async fn expect_4xx(what: &str, response: reqwest::Response) {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert!(status.is_client_error(), "{what}: {status} {body}");
}

async fn a_nul_anywhere_is_a_4xx_and_takes_nothing_down(db: TestDatabase) {
    let stack: TestStack = spawn_stack_with(
        db,
        &[
            ("ACCOUNTS_BOOTSTRAP_ADMIN_EMAIL", ADMIN.0),
            ("ACCOUNTS_BOOTSTRAP_ADMIN_PASSWORD", ADMIN.1),
            // Every request below counts against one client's limit otherwise.
            ("GATEWAY_RATE_LIMIT_RPS", "0"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let accounts = stack.url("/accounts");
    let payments = stack.url("/payments");
    common::testkit::sign_up(&client, &accounts, "nul@example.com", "password-123").await;
    let user =
        common::testkit::password_token(&client, &accounts, "nul@example.com", "password-123")
            .await;
    let admin = common::testkit::password_token(&client, &accounts, ADMIN.0, ADMIN.1).await;

    // JSON bodies: every string field.
    let json_cases: [(&str, &str, &str, Value, &[&str]); 5] = [
        (
            "sign-up",
            "/accounts/v1/users",
            "",
            json!({"email": "new@example.com", "password": "password-123", "name": "New"}),
            &["/email", "/password", "/name"],
        ),
        (
            "client registration",
            "/accounts/v1/admin/clients",
            &admin,
            json!({"name": "svc", "scopes": ["payments:read"]}),
            &["/name", "/scopes/0"],
        ),
        (
            "user import",
            "/accounts/v1/admin/users/import",
            &admin,
            json!([{"model": "auth.user", "pk": 9, "fields": {"email": "imp@example.com",
                "username": "imp", "first_name": "Im", "last_name": "Port",
                "password": "pbkdf2_sha256$36000$xIEozuZVAoYm$uW1b35DUKyhvQAf1mBqMvoBDcqSD06juzyO/nmyV0+w="}}]),
            &[
                "/0/model",
                "/0/fields/email",
                "/0/fields/username",
                "/0/fields/first_name",
                "/0/fields/last_name",
                "/0/fields/password",
            ],
        ),
        (
            "payment",
            "/payments/v1/payments",
            &user,
            json!({"amount": "10.00", "currency": "USD", "description": "d", "payment_method": "pm_card_visa"}),
            &["/amount", "/currency", "/description", "/payment_method"],
        ),
        (
            "payment (old path)",
            "/payments/payments",
            &user,
            json!({"amount": "10.00", "currency": "USD", "description": "d"}),
            &["/description"],
        ),
    ];
    for (what, path, token, body, fields) in json_cases {
        for (n, field) in fields.iter().enumerate() {
            let mut request = client
                .post(stack.url(path))
                .header("idempotency-key", format!("nul-{what}-{n}"))
                .json(&with_nul(&body, field));
            if !token.is_empty() {
                request = request.bearer_auth(token);
            }
            expect_4xx(&format!("{what} {field}"), request.send().await.unwrap()).await;
        }
    }

    // Form bodies of the OAuth endpoints: every parameter.
    let forms: [(&str, &[(&str, &str)]); 4] = [
        (
            "/accounts/v1/token",
            &[
                ("grant_type", "password"),
                ("username", "nul@example.com"),
                ("password", "password-123"),
                ("scope", "payments:read"),
            ],
        ),
        (
            "/accounts/v1/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "cli_x"),
                ("client_secret", "s"),
            ],
        ),
        (
            "/accounts/v1/token/revoke",
            &[("token", "abc"), ("token_type_hint", "refresh_token")],
        ),
        (
            "/accounts/v1/token/introspect",
            &[
                ("token", "abc"),
                ("client_id", "cli_x"),
                ("client_secret", "s"),
            ],
        ),
    ];
    for (path, form) in forms {
        for index in 0..form.len() {
            let mut fields: Vec<(String, String)> = form
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect();
            fields[index].1.push('\0');
            let response = client
                .post(stack.url(path))
                .form(&fields)
                .send()
                .await
                .unwrap();
            expect_4xx(&format!("{path} {}", form[index].0), response).await;
        }
    }
    let refresh = client
        .post(stack.url("/accounts/v1/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "abc\0def"),
        ])
        .send()
        .await
        .unwrap();
    expect_4xx("refresh_token", refresh).await;
    // HTTP Basic client authentication.
    for credentials in ["cli_\0x:secret", "cli_x:sec\0ret"] {
        let basic = base64::engine::general_purpose::STANDARD.encode(credentials);
        let response = client
            .post(stack.url("/accounts/v1/token"))
            .header("authorization", format!("Basic {basic}"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        expect_4xx(&format!("basic {credentials:?}"), response).await;
    }

    // Query parameters and path parameters.
    for path in [
        "/payments/v1/payments?starting_after=pay_%00x",
        "/payments/v1/payments?limit=1%00",
        "/payments/v1/payments?li%00mit=1",
        "/payments/v1/events?after=1%00",
        "/payments/v1/events?limit=%00",
        "/payments/v1/payments/pay_%00x",
    ] {
        let response = client
            .get(stack.url(path))
            .bearer_auth(&user)
            .send()
            .await
            .unwrap();
        expect_4xx(path, response).await;
    }
    let cancel = client
        .post(stack.url("/payments/v1/payments/pay_%00x/cancel"))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    expect_4xx("cancel", cancel).await;

    // Nothing was taken down: both services answer through the gateway, no breaker opened.
    for path in [
        "/accounts/.well-known/jwks.json",
        "/accounts/readyz",
        "/payments/readyz",
        "/readyz",
    ] {
        let response = client.get(stack.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let me = client
        .get(format!("{accounts}/users/me"))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let list = client
        .get(format!("{payments}/v1/payments"))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
}
