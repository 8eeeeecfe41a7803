//! Forged and unacceptable tokens against `GET /users/me`: each attack is refused with 401 and
//! `WWW-Authenticate: Bearer error="invalid_token"`, while a control token signed by a
//! published test key is accepted (so the refusals are not an accident of the harness).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, insert_key, spawn_app};
use common::testkit::TestDatabase;

common::both_databases!(forged_and_unacceptable_tokens_are_refused);

struct TestKey {
    kid: String,
    encoding: EncodingKey,
    x: String,
}

/// An Ed25519 key of ours, published in the service's JWKS as a retired key.
async fn published_test_key(app: &TestApp) -> TestKey {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let x = URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
    let kid = format!("test-{}", &x[..8]);
    let jwk =
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA", "x": x});
    insert_key(&app.store.database(), &jwk, Some(Duration::minutes(30))).await;
    let der = key.to_pkcs8_der().unwrap();
    TestKey {
        kid,
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        x,
    }
}

fn claims(user_id: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": "http://localhost:8080/accounts", "sub": user_id, "aud": ["accounts", "payments"],
        "exp": now + 300, "iat": now, "nbf": now, "jti": "forged", "client_id": "public",
        "scope": "payments:read",
    })
}

fn sign(key: &TestKey, typ: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    header.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

async fn forged_and_unacceptable_tokens_are_refused(db: TestDatabase) {
    let app = spawn_app(db).await;
    assert_eq!(
        app.sign_up("target@example.com", "password-123")
            .await
            .status(),
        201
    );
    let user_id = app
        .store
        .user_by_email("target@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let key = published_test_key(&app).await;
    let good = claims(&user_id);

    let control = sign(&key, Some("at+jwt"), &good);
    assert_eq!(
        app.get_with_token("/users/me", &control).await.status(),
        200,
        "control token"
    );

    let with = |field: &str, value: Value| {
        let mut c = good.clone();
        c[field] = value;
        c
    };
    let without = |field: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(field);
        c
    };
    let now = chrono::Utc::now().timestamp();
    let hs256_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(key.x.as_bytes())).unwrap()
    };
    let tampered = {
        let mut parts: Vec<String> = control.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(with("scope", json!("payments:admin")).to_string());
        parts.join(".")
    };
    let attacks: Vec<(&str, String)> = vec![
        (
            "alg none",
            unsigned(
                &json!({"alg": "none", "typ": "at+jwt", "kid": key.kid}),
                &good,
            ),
        ),
        ("HS256 keyed with the public key", hs256_with_public_key),
        ("tampered payload", tampered),
        ("no typ", sign(&key, None, &good)),
        ("typ JWT", sign(&key, Some("JWT"), &good)),
        (
            "wrong issuer",
            sign(
                &key,
                Some("at+jwt"),
                &with("iss", json!("https://evil.example")),
            ),
        ),
        (
            "wrong audience",
            sign(&key, Some("at+jwt"), &with("aud", json!(["payments"]))),
        ),
        (
            "expired",
            sign(&key, Some("at+jwt"), &with("exp", json!(now - 120))),
        ),
        (
            "not yet valid",
            sign(&key, Some("at+jwt"), &with("nbf", json!(now + 600))),
        ),
        ("no exp", sign(&key, Some("at+jwt"), &without("exp"))),
        ("no sub", sign(&key, Some("at+jwt"), &without("sub"))),
        ("unknown kid", {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some("nobody-knows".into());
            header.typ = Some("at+jwt".into());
            jsonwebtoken::encode(&header, &good, &key.encoding).unwrap()
        }),
        ("not a JWT", "abc.def".into()),
        // RFC 7515 §4.1.11: extensions marked critical that the verifier does not understand.
        ("crit extension", {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(key.kid.clone());
            header.typ = Some("at+jwt".into());
            header.crit = Some(vec!["https://example.com/must-understand".into()]);
            jsonwebtoken::encode(&header, &good, &key.encoding).unwrap()
        }),
    ];
    for (attack, token) in attacks {
        let response = app.get_with_token("/users/me", &token).await;
        assert_eq!(response.status(), 401, "{attack}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\"",
            "{attack}"
        );
    }
}
