//! The shared token verifier (what payments and the gateway use) against the real JWKS, and
//! scheduled key rotation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use accounts::config::{KeyEncryptionSource, SigningAlgorithm};
use accounts::keys::{KeyManager, KeySettings, Sealer};
use common::auth::{HttpJwks, KeySource, TokenVerifier, VerifierSettings, VerifyError};
use jsonwebtoken::jwk::JwkSet;
use serde_json::json;

use crate::helpers::{TestApp, backdate_next_keys, decode_jwt, spawn_app};
use common::testkit::TestDatabase;

common::both_databases!(
    the_shared_verifier_checks_tokens_against_the_jwks_url,
    unknown_kids_refetch_the_key_set_at_most_once_per_interval,
    a_burst_on_an_empty_or_stale_cache_fetches_the_keys_once,
    a_token_signed_right_after_a_rotation_verifies_from_the_cached_set,
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

/// A verifier that cached the key set moments ago (and just refetched it for an unknown kid,
/// which rate-limits the next refetch) still verifies a token signed right after a rotation:
/// the new key was in the set it holds.
async fn a_token_signed_right_after_a_rotation_verifies_from_the_cached_set(db: TestDatabase) {
    let app = spawn_app(db).await;
    let admin = app.admin_token().await;
    backdate_next_keys(&app.store.database(), chrono::Duration::hours(2)).await;
    let (source, verifier) = verifier_for(&app, "payments");
    verifier.verify(&admin).await.unwrap();
    let fetches = source.fetches.load(Ordering::SeqCst);
    let rotated = app
        .post_json("/v1/admin/keys/rotate", &admin, &json!({}))
        .await;
    assert_eq!(rotated.status(), 200);
    let fresh = app.admin_token().await;
    assert_ne!(decode_jwt(&fresh).0["kid"], decode_jwt(&admin).0["kid"]);
    verifier
        .verify(&fresh)
        .await
        .expect("the new key was pre-published in the cached set");
    verifier
        .verify(&admin)
        .await
        .expect("the old key is still published");
    assert_eq!(
        source.fetches.load(Ordering::SeqCst),
        fetches,
        "no refetch was needed"
    );
}

async fn rotation_happens_when_the_active_key_is_old_enough(db: TestDatabase) {
    let app = spawn_app(db).await;
    let before = app
        .store
        .live_signing_keys(chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(before.len(), 2, "the active key and the next one");
    let active = before.iter().find(|k| k.activates_at.is_some()).unwrap();
    let next = before.iter().find(|k| k.activates_at.is_none()).unwrap();
    let manager = |rotation_period| {
        let sealer = Sealer::load(&KeyEncryptionSource::File(
            app.data_dir.path().join("accounts-key-encryption.key"),
        ))
        .unwrap();
        KeyManager::new(
            app.store.clone(),
            sealer,
            KeySettings {
                algorithm: SigningAlgorithm::EdDsa,
                token_ttl: Duration::from_secs(900),
                rotation_period,
                prepublish: Duration::ZERO,
            },
        )
    };
    assert_eq!(
        manager(Duration::from_secs(3600))
            .rotate_if_due()
            .await
            .unwrap(),
        None,
        "a new key is not due"
    );
    let rotated = manager(Duration::ZERO)
        .rotate_if_due()
        .await
        .unwrap()
        .expect("due at once");
    assert_eq!(rotated.kid, next.kid, "the pre-published key signs");
    let after = app
        .store
        .live_signing_keys(chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(after.len(), 3, "the retired, the active and a new next key");
    let old = after.iter().find(|k| k.kid == active.kid).unwrap();
    assert!(old.retired_at.is_some() && old.expires_at.is_some());
    assert!(
        after
            .iter()
            .any(|k| k.kid == rotated.next_kid && k.activates_at.is_none())
    );
}

/// Keys served from memory, withdrawn at will.
struct Withdrawable {
    set: JwkSet,
    withdrawn: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl KeySource for Withdrawable {
    async fn fetch(&self) -> Result<JwkSet, String> {
        if self.withdrawn.load(Ordering::SeqCst) {
            return Ok(JwkSet { keys: Vec::new() });
        }
        Ok(self.set.clone())
    }
}

/// An Ed25519 key published as `k1` by a [`Withdrawable`] source, and a signer of tokens
/// expiring `expires_in` seconds from now.
fn own_keys() -> (Arc<Withdrawable>, impl Fn(i64) -> String) {
    use base64::Engine;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
    let set: JwkSet = serde_json::from_value(json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "k1", "use": "sig", "alg": "EdDSA", "x": x}
    ]}))
    .unwrap();
    let der = key.to_pkcs8_der().unwrap();
    let encoding = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
    let sign = move |expires_in: i64| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some("k1".into());
        header.typ = Some("at+jwt".into());
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "iss": "http://localhost:8080/accounts", "sub": "u1", "aud": ["payments"],
            "exp": now + expires_in, "iat": now - 60, "jti": "j", "client_id": "c", "scope": "",
        });
        jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
    };
    let source = Arc::new(Withdrawable {
        set,
        withdrawn: std::sync::atomic::AtomicBool::new(false),
    });
    (source, sign)
}

#[tokio::test]
async fn verified_tokens_are_remembered_only_while_they_and_their_key_are_good() {
    let (source, sign) = own_keys();
    let mut settings = VerifierSettings::new("http://localhost:8080/accounts", "payments");
    settings.leeway = Duration::ZERO;
    settings.max_age = Duration::from_millis(400);
    // Keys withdrawn and given back quickly here: refetch for every unknown kid.
    settings.min_refetch_interval = Duration::ZERO;
    let verifier = TokenVerifier::new(source.clone(), settings);
    let token = sign(300);
    assert_eq!(verifier.verify(&token).await.unwrap().sub, "u1");
    // Another byte is another token: a tampered copy is checked, and refused.
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        verifier.verify(&tampered).await.unwrap_err(),
        VerifyError::Invalid
    );
    // The key withdrawn: the remembered token holds while the key set would still be used...
    source.withdrawn.store(true, Ordering::SeqCst);
    assert!(verifier.verify(&token).await.is_ok());
    // ... and not past it (the set is fetched again, without the key).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        verifier.verify(&token).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    // Forgetting the keys forgets the tokens verified with them.
    source.withdrawn.store(false, Ordering::SeqCst);
    assert!(verifier.verify(&token).await.is_ok());
    source.withdrawn.store(true, Ordering::SeqCst);
    verifier.forget_keys().await;
    assert_eq!(
        verifier.verify(&token).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    // A remembered token that expires is refused.
    source.withdrawn.store(false, Ordering::SeqCst);
    let short = sign(1);
    assert!(verifier.verify(&short).await.is_ok());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        verifier.verify(&short).await.unwrap_err(),
        VerifyError::Expired
    );
}
