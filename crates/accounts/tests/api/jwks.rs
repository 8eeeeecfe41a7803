//! `GET /.well-known/jwks.json`: the key set's shape and which keys it serves.

use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::helpers::spawn_app;
use common::db::Pool;
use common::testkit::TestDatabase;

common::both_databases!(jwks_shape, jwks_serves_only_keys_whose_tokens_may_be_alive);

/// Inserts a signing-key row as the key manager will, without its private part's meaning.
async fn insert_key(pool: &Pool, kid: &str, expires_in: Option<Duration>) {
    let jwk =
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": "sXch", "e": "AQAB"});
    let now = Utc::now();
    let expires_at = expires_in.map(|d| now + d);
    match pool {
        Pool::Sqlite(pool) => sqlx::query(
            "INSERT INTO signing_keys (kid, alg, public_jwk, private_key, created_at, expires_at) \
             VALUES ($1, 'RS256', $2, x'00', $3, $4)",
        )
        .bind(kid)
        .bind(jwk.to_string())
        .bind(now)
        .bind(expires_at)
        .execute(pool)
        .await
        .map(drop),
        Pool::Postgres(pool) => sqlx::query(
            "INSERT INTO signing_keys (kid, alg, public_jwk, private_key, created_at, expires_at) \
             VALUES ($1, 'RS256', $2, '\\x00', $3, $4)",
        )
        .bind(kid)
        .bind(&jwk)
        .bind(now)
        .bind(expires_at)
        .execute(pool)
        .await
        .map(drop),
    }
    .expect("insert signing key");
}

async fn jwks_shape(db: TestDatabase) {
    let app = spawn_app(db).await;
    let empty = app.get("/.well-known/jwks.json").await;
    assert_eq!(empty.status(), 200);
    assert_eq!(empty.json::<Value>().await.unwrap(), json!({"keys": []}));

    insert_key(&app.store.database(), "k1", None).await;
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
    assert_eq!(keys.len(), 1);
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
    insert_key(&pool, "retired-but-alive", Some(Duration::minutes(10))).await;
    insert_key(&pool, "expired", Some(Duration::minutes(-1))).await;
    insert_key(&pool, "active", None).await;
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
    assert_eq!(kids, ["active", "retired-but-alive"]);
}
