//! `GET /.well-known/jwks.json`: the key set's shape and which keys it serves.

use chrono::Duration;
use serde_json::{Value, json};

use crate::helpers::{insert_key, spawn_app};
use common::testkit::TestDatabase;

common::both_databases!(jwks_shape, jwks_serves_only_keys_whose_tokens_may_be_alive);

fn rsa_jwk(kid: &str) -> Value {
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": "sXch", "e": "AQAB"})
}

async fn jwks_shape(db: TestDatabase) {
    let app = spawn_app(db).await;
    let response = app.get("/.well-known/jwks.json").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let cache = response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_owned();
    let max_age: u64 = cache
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .expect("a max-age")
        .parse()
        .unwrap();
    assert!(max_age > 0 && max_age <= 3600, "finite max-age: {cache}");
    let body: Value = response.json().await.unwrap();
    let keys = body["keys"].as_array().expect("keys is an array");
    assert_eq!(
        keys.len(),
        2,
        "the signing key made at first start, and the next one, published before it signs"
    );
    for key in keys {
        for field in ["kty", "kid", "use", "alg"] {
            assert!(key[field].is_string(), "{field} missing in {key}");
        }
        assert_eq!(key["use"], "sig");
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(key.get(private).is_none(), "private part {private} served");
        }
    }
}

async fn jwks_serves_only_keys_whose_tokens_may_be_alive(db: TestDatabase) {
    let app = spawn_app(db).await;
    let pool = app.store.database();
    let live: Vec<String> = app
        .store
        .live_signing_keys(chrono::Utc::now())
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    insert_key(
        &pool,
        &rsa_jwk("retired-but-alive"),
        Some(Duration::minutes(10)),
    )
    .await;
    insert_key(&pool, &rsa_jwk("expired"), Some(Duration::minutes(-1))).await;
    let body: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let mut kids: Vec<&str> = body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    kids.sort_unstable();
    let mut expected: Vec<&str> = live.iter().map(String::as_str).collect();
    expected.push("retired-but-alive");
    expected.sort_unstable();
    assert_eq!(kids, expected);
}
