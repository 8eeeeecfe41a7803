//! Signing keys: generated here, stored with the private part encrypted at rest (AES-256-GCM),
//! rotated on a schedule and on demand.
//!
//! A key is published before it signs anything: there is always a *next* key in the JWKS
//! beside the active one, and a rotation makes that next key sign once it has been published
//! for at least [`KeySettings::prepublish`] (longer than any verifier caches the JWKS), then
//! publishes a new next key. So a verifier holding a cached key set already has the key of
//! every token it is shown, however recently the rotation happened (Keycloak's and Auth0's
//! "next" or "passive" key). A retired key stays in the JWKS until every token it signed has
//! expired. The emergency path, [`KeyManager::replace_now`], replaces a compromised key at
//! once and removes it from the JWKS: the tokens it signed stop verifying, and verifiers
//! with a cached key set refetch it on the new `kid`.
//!
//! A key that cannot be decrypted is a configuration error (a replica started with another
//! `ACCOUNTS_KEY_ENCRYPTION_KEY`), never a reason to make a new one: the replica reports it
//! on `/readyz` and issues no tokens, and the keys are left alone for the replicas that can
//! read them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use crate::config::{KeyEncryptionSource, SigningAlgorithm};
use crate::store::{AccountsStore, SigningKeyRecord};
use common::db::StoreError;

/// What can go wrong with keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Generating, encrypting or signing failed.
    #[error("key operation failed: {0}")]
    Crypto(String),
    /// A key in the database was encrypted with another key-encryption key.
    #[error(
        "cannot decrypt signing key {kid}: ACCOUNTS_KEY_ENCRYPTION_KEY (or the key file in DATA_DIR) is not the one the key was encrypted with; give every replica the same one"
    )]
    Undecryptable {
        /// The key's id.
        kid: String,
    },
}

fn crypto(error: impl std::fmt::Display) -> KeyError {
    KeyError::Crypto(error.to_string())
}

/// Encrypts signing keys at rest with a 32-byte key that never enters the database.
pub struct Sealer(Aes256Gcm);

impl Sealer {
    /// The key from the environment, or from `DATA_DIR` (generated, mode 0600, at first start).
    pub fn load(source: &KeyEncryptionSource) -> anyhow::Result<Self> {
        let key = match source {
            KeyEncryptionSource::Given(key) => *key,
            KeyEncryptionSource::File(path) => read_or_create_key_file(path)?,
        };
        Ok(Self(Aes256Gcm::new(&key.into())))
    }

    /// `nonce || ciphertext`, bound to `context` (the key id).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .0
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| crypto("encryption failed"))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// The plaintext of [`Sealer::seal`], if `blob` was sealed with this key for `context`.
    pub fn open(&self, context: &str, blob: &[u8]) -> Result<Vec<u8>, KeyError> {
        if blob.len() < 12 {
            return Err(crypto("sealed key too short"));
        }
        let (nonce, sealed) = blob.split_at(12);
        let nonce = <[u8; 12]>::try_from(nonce).map_err(crypto)?;
        self.0
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                crypto("cannot decrypt the signing key (was the key-encryption key changed?)")
            })
    }
}

fn read_or_create_key_file(path: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    use std::io::Write;
    let decode = |text: &str| -> anyhow::Result<[u8; 32]> {
        STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| anyhow::anyhow!("{} does not hold base64 of 32 bytes", path.display()))
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return decode(&text),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            anyhow::bail!("cannot read {}: {e}", path.display())
        }
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(STANDARD.encode(key).as_bytes())?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "generated the key that encrypts signing keys at rest");
            Ok(key)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            decode(&std::fs::read_to_string(path)?)
        }
        Err(e) => anyhow::bail!(
            "cannot create {} ({e}); set ACCOUNTS_KEY_ENCRYPTION_KEY instead",
            path.display()
        ),
    }
}

/// A freshly generated key pair: the private part for jsonwebtoken, the public part as a JWK.
struct Generated {
    kid: String,
    algorithm: Algorithm,
    private_der: Vec<u8>,
    public_jwk: serde_json::Value,
}

fn generate(algorithm: SigningAlgorithm) -> Result<Generated, KeyError> {
    match algorithm {
        SigningAlgorithm::Rs256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::traits::PublicKeyParts;
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(crypto)?;
            let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
            let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
            // RFC 7638 thumbprint: the required members in lexicographic order.
            let kid = thumbprint(&format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#));
            Ok(Generated {
                public_jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": e}),
                kid,
                algorithm: Algorithm::RS256,
                private_der: key.to_pkcs1_der().map_err(crypto)?.as_bytes().to_vec(),
            })
        }
        SigningAlgorithm::EdDsa => {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            let x = URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
            let kid = thumbprint(&format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#));
            Ok(Generated {
                public_jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA", "x": x}),
                kid,
                algorithm: Algorithm::EdDSA,
                private_der: key.to_pkcs8_der().map_err(crypto)?.as_bytes().to_vec(),
            })
        }
    }
}

fn thumbprint(canonical_jwk: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical_jwk.as_bytes()))
}

/// The key tokens are signed with now.
pub struct ActiveKey {
    /// Its id, the `kid` of every token it signs.
    pub kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    activated_at: DateTime<Utc>,
}

impl ActiveKey {
    /// Signs `claims` as an access token (`typ: at+jwt`).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        self.sign_as(claims, common::auth::ACCESS_TOKEN_TYPE)
    }

    /// The algorithm it signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Signs `claims` with the header's `typ` set to `typ` (`JWT` for ID tokens).
    pub fn sign_as<T: Serialize>(&self, claims: &T, typ: &str) -> Result<String, KeyError> {
        let mut header = Header::new(self.algorithm);
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(crypto)
    }
}

/// How keys are made and rotated.
#[derive(Debug, Clone, Copy)]
pub struct KeySettings {
    /// The algorithm of new keys.
    pub algorithm: SigningAlgorithm,
    /// How long access tokens live (a retired key stays published that much longer).
    pub token_ttl: Duration,
    /// How long a key signs before the next one replaces it.
    pub rotation_period: Duration,
    /// How long a key is published before it may sign.
    pub prepublish: Duration,
}

/// What a rotation did: which key signs from when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rotation {
    /// The key that signs from `activates_at`.
    pub kid: String,
    /// When it starts signing (now, or once it has been published long enough).
    pub activates_at: DateTime<Utc>,
    /// The key published in its place as the next one.
    pub next_kid: String,
}

/// Keeps the active signing key, rotates keys and retires old ones.
pub struct KeyManager {
    store: Arc<dyn AccountsStore>,
    sealer: Sealer,
    settings: KeySettings,
    /// The live keys as last read, and when: another replica may have rotated since.
    keys: RwLock<Option<(Arc<Vec<SigningKeyRecord>>, Instant)>>,
    /// The active key, decrypted.
    active: RwLock<Option<Arc<ActiveKey>>>,
}

/// How long the live keys are trusted from memory before the database is asked again
/// (another replica may have rotated). Scheduled activations are known in advance, so each
/// replica switches keys on time whatever its cache's age.
const KEYS_CACHE: Duration = Duration::from_secs(10);

/// How often [`KeyManager::spawn_rotation`] checks whether a rotation is due.
const ROTATION_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// Tokens signed by a retired key may still be presented for their lifetime plus this
/// (clock skew between replicas and verifiers).
const RETIRED_KEY_MARGIN: Duration = Duration::from_secs(60);

impl KeyManager {
    /// A manager over `store`; no key is loaded until first needed.
    pub fn new(store: Arc<dyn AccountsStore>, sealer: Sealer, settings: KeySettings) -> Self {
        // Before any signing: it fixes the process's JWT crypto for good.
        common::jwt_crypto::install();
        Self {
            store,
            sealer,
            settings,
            keys: RwLock::new(None),
            active: RwLock::new(None),
        }
    }

    async fn live_keys(&self, fresh: bool) -> Result<Arc<Vec<SigningKeyRecord>>, KeyError> {
        if !fresh
            && let Some((keys, loaded)) = self.keys.read().await.as_ref()
            && loaded.elapsed() < KEYS_CACHE
        {
            return Ok(keys.clone());
        }
        let keys = Arc::new(self.store.live_signing_keys(Utc::now()).await?);
        *self.keys.write().await = Some((keys.clone(), Instant::now()));
        Ok(keys)
    }

    /// Makes sure keys exist: on a new database, a first key that signs at once (no verifier
    /// can have cached an older set) and a next key, published; later, a next key if there
    /// is none.
    pub async fn ensure_keys(&self) -> Result<(), KeyError> {
        let keys = self.live_keys(true).await?;
        let now = Utc::now();
        if !keys.iter().any(|k| k.activates_at.is_some()) {
            let first = self.generate(now, Some(now)).await?;
            self.store.insert_signing_key(&first).await?;
            tracing::info!(kid = %first.kid, "first signing key created");
        }
        if !keys.iter().any(|k| k.activates_at.is_none()) {
            let next = self.generate(now, None).await?;
            self.store.insert_signing_key(&next).await?;
            tracing::info!(kid = %next.kid, "next signing key published");
        }
        self.live_keys(true).await?;
        Ok(())
    }

    /// The key to sign with now: of the keys whose activation has come, the latest. A key
    /// that cannot be decrypted is an error ([`KeyError::Undecryptable`]), never replaced.
    pub async fn active(&self) -> Result<Arc<ActiveKey>, KeyError> {
        let now = Utc::now();
        let keys = self.live_keys(false).await?;
        let record = match signing_at(&keys, now) {
            Some(record) => record.clone(),
            None => {
                self.ensure_keys().await?;
                signing_at(&self.live_keys(true).await?, now)
                    .cloned()
                    .ok_or_else(|| crypto("no signing key is active"))?
            }
        };
        if let Some(key) = self.active.read().await.as_ref()
            && key.kid == record.kid
        {
            return Ok(key.clone());
        }
        let key = Arc::new(self.load(&record)?);
        *self.active.write().await = Some(key.clone());
        Ok(key)
    }

    fn load(&self, record: &SigningKeyRecord) -> Result<ActiveKey, KeyError> {
        let der = self
            .sealer
            .open(&record.kid, &record.private_key)
            .map_err(|_| KeyError::Undecryptable {
                kid: record.kid.clone(),
            })?;
        let (algorithm, encoding) = match record.alg.as_str() {
            "RS256" => (Algorithm::RS256, EncodingKey::from_rsa_der(&der)),
            "EdDSA" => (Algorithm::EdDSA, EncodingKey::from_ed_der(&der)),
            other => return Err(crypto(format!("unknown key algorithm {other}"))),
        };
        Ok(ActiveKey {
            kid: record.kid.clone(),
            algorithm,
            encoding,
            activated_at: record.activates_at.unwrap_or(record.created_at),
        })
    }

    /// A new key of the configured algorithm, published from `now`, signing from `activates_at`.
    async fn generate(
        &self,
        now: DateTime<Utc>,
        activates_at: Option<DateTime<Utc>>,
    ) -> Result<SigningKeyRecord, KeyError> {
        let algorithm = self.settings.algorithm;
        let generated = tokio::task::spawn_blocking(move || generate(algorithm))
            .await
            .map_err(crypto)??;
        Ok(SigningKeyRecord {
            kid: generated.kid.clone(),
            alg: match generated.algorithm {
                Algorithm::EdDSA => "EdDSA",
                _ => "RS256",
            }
            .to_owned(),
            public_jwk: generated.public_jwk,
            private_key: self.sealer.seal(&generated.kid, &generated.private_der)?,
            created_at: now,
            activates_at,
            retired_at: None,
            expires_at: None,
        })
    }

    /// Rotates: the next key (published since the last rotation) signs from now, or from the
    /// moment it has been published for [`KeySettings::prepublish`] if that is later; the
    /// active key is retired then and stays published until its tokens have expired; a new
    /// next key is published.
    pub async fn rotate(&self) -> Result<Rotation, KeyError> {
        let now = Utc::now();
        // The key that signs must be readable: never rotate over a configuration error.
        self.active().await?;
        let keys = self.live_keys(true).await?;
        let next = match keys
            .iter()
            .filter(|k| k.activates_at.is_none())
            .min_by_key(|k| k.created_at)
        {
            Some(next) => next.clone(),
            None => {
                let next = self.generate(now, None).await?;
                self.store.insert_signing_key(&next).await?;
                next
            }
        };
        self.load(&next)?;
        let activates_at = (next.created_at + self.settings.prepublish).max(now);
        let retired_expire_at = activates_at + self.settings.token_ttl + RETIRED_KEY_MARGIN;
        let new_next = self.generate(now, None).await?;
        let scheduled = self
            .store
            .schedule_rotation(&next.kid, activates_at, retired_expire_at, &new_next)
            .await?;
        self.live_keys(true).await?;
        if !scheduled {
            return Err(crypto(
                "another replica rotated the keys at the same moment; nothing was changed here",
            ));
        }
        tracing::info!(kid = %next.kid, %activates_at, next_kid = %new_next.kid, "signing key rotation scheduled");
        Ok(Rotation {
            kid: next.kid,
            activates_at,
            next_kid: new_next.kid,
        })
    }

    /// Emergency: a new key signs from now, and every key signing until now is retired and
    /// leaves the JWKS at once, so the tokens it signed stop verifying (use it when a key may
    /// be compromised). Verifiers with a cached key set fetch the new one on its unknown
    /// `kid` (at most once per their refetch interval). A rotation scheduled for later is
    /// cancelled (its key stays published as a next key). Returns the new `kid`.
    pub async fn replace_now(&self) -> Result<String, KeyError> {
        let now = Utc::now();
        let key = self.generate(now, Some(now)).await?;
        self.store.replace_signing_key_now(&key, now).await?;
        self.live_keys(true).await?;
        tracing::warn!(kid = %key.kid, "signing key replaced at once; tokens signed by the old key are no longer accepted");
        Ok(key.kid)
    }

    /// Rotates when the active key has signed for the rotation period and no rotation is
    /// scheduled yet.
    pub async fn rotate_if_due(&self) -> Result<Option<Rotation>, KeyError> {
        let active = self.active().await?;
        let now = Utc::now();
        let keys = self.live_keys(true).await?;
        if keys
            .iter()
            .any(|k| k.activates_at.is_some_and(|at| at > now))
        {
            return Ok(None);
        }
        let age = (now - active.activated_at).to_std().unwrap_or_default();
        if age >= self.settings.rotation_period {
            return self.rotate().await.map(Some);
        }
        Ok(None)
    }

    /// Checks hourly (and at start) whether a rotation is due, until `shutdown`.
    pub fn spawn_rotation(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(ROTATION_CHECK_INTERVAL);
            loop {
                tokio::select! {
                    _ = interval.tick() => {
                        if let Err(error) = self.rotate_if_due().await {
                            tracing::warn!(%error, "scheduled key rotation failed; will retry");
                        }
                    }
                    () = shutdown.cancelled() => return,
                }
            }
        });
    }
}

/// The key signing at `now`: of those whose activation has come and that are not retired by
/// then, the latest activated.
fn signing_at(keys: &[SigningKeyRecord], now: DateTime<Utc>) -> Option<&SigningKeyRecord> {
    keys.iter()
        .filter(|k| {
            k.activates_at.is_some_and(|at| at <= now) && k.retired_at.is_none_or(|at| at > now)
        })
        .max_by(|a, b| (a.activates_at, &a.kid).cmp(&(b.activates_at, &b.kid)))
}

/// Readiness check `signing_key`: passes when the key that signs now can be used (fails,
/// naming `ACCOUNTS_KEY_ENCRYPTION_KEY`, when this replica cannot decrypt it).
pub struct SigningKeyCheck(pub Arc<KeyManager>);

#[async_trait::async_trait]
impl common::health::HealthCheck for SigningKeyCheck {
    fn name(&self) -> String {
        "signing_key".into()
    }

    fn component_type(&self) -> &'static str {
        "component"
    }

    async fn check(&self) -> Result<(), String> {
        self.0.active().await.map(drop).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_the_same_key_and_context() {
        let sealer = Sealer::load(&KeyEncryptionSource::Given([7; 32])).unwrap();
        let blob = sealer.seal("kid-1", b"private").unwrap();
        assert_eq!(sealer.open("kid-1", &blob).unwrap(), b"private");
        assert!(sealer.open("kid-2", &blob).is_err());
        let other = Sealer::load(&KeyEncryptionSource::Given([8; 32])).unwrap();
        assert!(other.open("kid-1", &blob).is_err());
    }

    #[test]
    fn the_key_file_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key");
        let first = read_or_create_key_file(&path).unwrap();
        let second = read_or_create_key_file(&path).unwrap();
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn generated_jwks_hold_public_parts_only() {
        let ed = generate(SigningAlgorithm::EdDsa).unwrap();
        assert_eq!(ed.public_jwk["kty"], "OKP");
        assert_eq!(ed.public_jwk["kid"], ed.kid.as_str());
        assert!(ed.public_jwk.get("d").is_none());
    }
}
