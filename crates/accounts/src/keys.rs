//! Signing keys: generated here, stored with the private part encrypted at rest (AES-256-GCM),
//! rotated on a schedule and on demand. A retired key stays in the JWKS until every token it
//! signed has expired.

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
    created_at: DateTime<Utc>,
}

impl ActiveKey {
    /// Signs `claims` as an access token (`typ: at+jwt`).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(self.algorithm);
        header.typ = Some(common::auth::ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(crypto)
    }
}

/// Keeps the active signing key, rotates keys and retires old ones.
pub struct KeyManager {
    store: Arc<dyn AccountsStore>,
    sealer: Sealer,
    algorithm: SigningAlgorithm,
    token_ttl: Duration,
    rotation_period: Duration,
    active: RwLock<Option<(Arc<ActiveKey>, Instant)>>,
}

/// How long the active key is trusted from memory before the database is asked again
/// (another replica may have rotated).
const ACTIVE_KEY_CACHE: Duration = Duration::from_secs(10);

impl KeyManager {
    /// A manager over `store`; no key is loaded until first needed.
    pub fn new(
        store: Arc<dyn AccountsStore>,
        sealer: Sealer,
        algorithm: SigningAlgorithm,
        token_ttl: Duration,
        rotation_period: Duration,
    ) -> Self {
        Self {
            store,
            sealer,
            algorithm,
            token_ttl,
            rotation_period,
            active: RwLock::new(None),
        }
    }

    /// The key to sign with: the newest unretired key, or a new one if there is none (or it
    /// cannot be decrypted).
    pub async fn active(&self) -> Result<Arc<ActiveKey>, KeyError> {
        if let Some((key, loaded)) = self.active.read().await.as_ref()
            && loaded.elapsed() < ACTIVE_KEY_CACHE
        {
            return Ok(key.clone());
        }
        let newest = self
            .store
            .live_signing_keys(Utc::now())
            .await?
            .into_iter()
            .find(|k| k.retired_at.is_none());
        let key = match newest {
            Some(record) => match self.load(&record) {
                Ok(key) => key,
                Err(error) => {
                    tracing::error!(kid = %record.kid, %error, "the active signing key is unusable; rotating");
                    self.rotate().await?;
                    return Box::pin(self.active()).await;
                }
            },
            None => {
                self.rotate().await?;
                return Box::pin(self.active()).await;
            }
        };
        let key = Arc::new(key);
        *self.active.write().await = Some((key.clone(), Instant::now()));
        Ok(key)
    }

    fn load(&self, record: &SigningKeyRecord) -> Result<ActiveKey, KeyError> {
        let der = self.sealer.open(&record.kid, &record.private_key)?;
        let (algorithm, encoding) = match record.alg.as_str() {
            "RS256" => (Algorithm::RS256, EncodingKey::from_rsa_der(&der)),
            "EdDSA" => (Algorithm::EdDSA, EncodingKey::from_ed_der(&der)),
            other => return Err(crypto(format!("unknown key algorithm {other}"))),
        };
        Ok(ActiveKey {
            kid: record.kid.clone(),
            algorithm,
            encoding,
            created_at: record.created_at,
        })
    }

    /// Makes a new key the active one; the others stop signing now and leave the JWKS once
    /// the tokens they signed have expired. Returns the new `kid`.
    pub async fn rotate(&self) -> Result<String, KeyError> {
        let algorithm = self.algorithm;
        let generated = tokio::task::spawn_blocking(move || generate(algorithm))
            .await
            .map_err(crypto)??;
        let now = Utc::now();
        let record = SigningKeyRecord {
            kid: generated.kid.clone(),
            alg: match generated.algorithm {
                Algorithm::EdDSA => "EdDSA",
                _ => "RS256",
            }
            .to_owned(),
            public_jwk: generated.public_jwk,
            private_key: self.sealer.seal(&generated.kid, &generated.private_der)?,
            created_at: now,
            retired_at: None,
            expires_at: None,
        };
        // Tokens signed until now live at most one TTL, plus leeway for clock skew.
        let expires_at = now + self.token_ttl + Duration::from_secs(60);
        self.store
            .rotate_signing_key(&record, now, expires_at)
            .await?;
        *self.active.write().await = None;
        tracing::info!(kid = %record.kid, alg = %record.alg, "signing key rotated");
        Ok(record.kid)
    }

    /// Rotates when the active key is older than the rotation period.
    pub async fn rotate_if_due(&self) -> Result<Option<String>, KeyError> {
        let active = self.active().await?;
        let age = (Utc::now() - active.created_at)
            .to_std()
            .unwrap_or_default();
        if age >= self.rotation_period {
            return self.rotate().await.map(Some);
        }
        Ok(None)
    }

    /// Checks hourly (and at start) whether a rotation is due, until `shutdown`.
    pub fn spawn_rotation(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(3600));
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
