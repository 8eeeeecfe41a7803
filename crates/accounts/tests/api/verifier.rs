//! The shared token verifier (what payments and the gateway use) against the real JWKS, and
//! scheduled key rotation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use accounts::config::{KeyEncryptionSource, SigningAlgorithm};
use accounts::keys::{KeyManager, Sealer};
use common::auth::{HttpJwks, KeySource, TokenVerifier, VerifierSettings, VerifyError};
use jsonwebtoken::jwk::JwkSet;
use serde_json::json;

use crate::helpers::{TestApp, decode_jwt, spawn_app};
use common::testkit::TestDatabase;

common::both_databases!(
    the_shared_verifier_checks_tokens_against_the_jwks_url,
    unknown_kids_refetch_the_key_set_at_most_once_per_interval,
    a_burst_on_an_empty_or_stale_cache_fetches_the_keys_once,
    a_rotated_key_is_picked_up_and_old_tokens_still_verify,
    rotation_happens_when_the_active_key_is_old_enough,
);

/// Counts fetches of the real JWKS.
struct Counting {
    inner: HttpJwks,
    fetches: AtomicUsize,
}

#[async_trait::async_trait]
impl KeySource for Counting {
    async fn fetch(&self) -> Result<JwkSet, String> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.inner.fetch().await
    }
}

fn verifier_for(app: &TestApp, audience: &str) -> (Arc<Counting>, TokenVerifier) {
    let source = Arc::new(Counting {
        inner: HttpJwks::new(app.url("/.well-known/jwks.json")),
        fetches: AtomicUsize::new(0),
    });
    let settings = VerifierSettings::new("http://localhost:8080/accounts", audience);
    (source.clone(), TokenVerifier::new(source, settings))
}

async fn the_shared_verifier_checks_tokens_against_the_jwks_url(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("verify@example.com").await;
    let (_, payments) = verifier_for(&app, "payments");
    let claims = payments
        .verify(&token)
        .await
        .expect("a payments token verifies");
    assert!(claims.has_scope("payments:write"));
    assert!(!claims.has_scope("payments:admin"));
    let (_, gateway) = verifier_for(&app, "gateway");
    assert_eq!(
        gateway.verify(&token).await.unwrap_err(),
        VerifyError::Invalid,
        "audience"
    );

    let down = TokenVerifier::new(
        Arc::new(HttpJwks::new("http://127.0.0.1:9/.well-known/jwks.json")),
        VerifierSettings::new("http://localhost:8080/accounts", "payments"),
    );
    assert_eq!(
        down.verify(&token).await.unwrap_err(),
        VerifyError::KeysUnavailable
    );
}

async fn unknown_kids_refetch_the_key_set_at_most_once_per_interval(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("kid@example.com").await;
    let (source, verifier) = verifier_for(&app, "payments");
    verifier.verify(&token).await.unwrap();
    verifier.verify(&token).await.unwrap();
    assert_eq!(source.fetches.load(Ordering::SeqCst), 1, "cached");

    let forged = |kid: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(kid.into());
        header.typ = Some("at+jwt".into());
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let der = key.to_pkcs8_der().unwrap();
        jsonwebtoken::encode(
            &header,
            &json!({"sub": "x"}),
            &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
        )
        .unwrap()
    };
    for attempt in 0..5 {
        let error = verifier
            .verify(&forged(&format!("unknown-{attempt}")))
            .await
            .unwrap_err();
        assert_eq!(error, VerifyError::UnknownKey);
    }
    assert_eq!(
        source.fetches.load(Ordering::SeqCst),
        2,
        "one refetch for five unknown kids"
    );
}

async fn a_burst_on_an_empty_or_stale_cache_fetches_the_keys_once(db: TestDatabase) {
    let app = spawn_app(db).await;
    let token = app.user_token("burst@example.com").await;
    let source = Arc::new(Counting {
        inner: HttpJwks::new(app.url("/.well-known/jwks.json")),
        fetches: AtomicUsize::new(0),
    });
    let mut settings = VerifierSettings::new("http://localhost:8080/accounts", "payments");
    settings.max_age = Duration::from_millis(300);
    let verifier = TokenVerifier::new(source.clone(), settings);
    let burst = || futures_util::future::join_all((0..60).map(|_| verifier.verify(&token)));
    assert!(burst().await.iter().all(Result::is_ok));
    assert_eq!(
        source.fetches.load(Ordering::SeqCst),
        1,
        "an empty cache: one fetch"
    );
    tokio::time::sleep(Duration::from_millis(400)).await; // the cache is stale now
    assert!(burst().await.iter().all(Result::is_ok));
    assert_eq!(
        source.fetches.load(Ordering::SeqCst),
        2,
        "a stale cache: one fetch"
    );
}

async fn a_rotated_key_is_picked_up_and_old_tokens_still_verify(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    let (source, verifier) = verifier_for(&app, "payments");
    verifier.verify(&admin).await.unwrap();
    let rotated = app
        .post_json("/v1/admin/keys/rotate", &admin, &json!({}))
        .await;
    assert_eq!(rotated.status(), 200);
    let fresh = app.admin_token().await;
    assert_ne!(decode_jwt(&fresh).0["kid"], decode_jwt(&admin).0["kid"]);
    verifier
        .verify(&fresh)
        .await
        .expect("the new kid is fetched");
    verifier
        .verify(&admin)
        .await
        .expect("the old key is still published");
    assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
}

async fn rotation_happens_when_the_active_key_is_old_enough(db: TestDatabase) {
    let app = spawn_app(db).await;
    let before = app
        .store
        .live_signing_keys(chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(before.len(), 1);
    let sealer = Sealer::load(&KeyEncryptionSource::File(
        app.data_dir.path().join("accounts-key-encryption.key"),
    ))
    .unwrap();
    let patient = KeyManager::new(
        app.store.clone(),
        sealer,
        SigningAlgorithm::EdDsa,
        Duration::from_secs(900),
        Duration::from_secs(3600),
    );
    assert_eq!(
        patient.rotate_if_due().await.unwrap(),
        None,
        "a new key is not due"
    );
    let sealer = Sealer::load(&KeyEncryptionSource::File(
        app.data_dir.path().join("accounts-key-encryption.key"),
    ))
    .unwrap();
    let eager = KeyManager::new(
        app.store.clone(),
        sealer,
        SigningAlgorithm::EdDsa,
        Duration::from_secs(900),
        Duration::ZERO,
    );
    let rotated = eager.rotate_if_due().await.unwrap().expect("due at once");
    let after = app
        .store
        .live_signing_keys(chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].kid, rotated);
    assert!(after[0].retired_at.is_none() && after[1].retired_at.is_some());
    assert_eq!(after[1].kid, before[0].kid);
}
