//! Idempotency keys: how a `POST` that creates something runs at most once per caller and key.
//!
//! The rules, all here (the store keeps the rows, the handler maps outcomes to responses):
//! - a key is 1–255 printable ASCII characters, scoped to the caller (the token's `sub`);
//! - a request is identified by its [`fingerprint`]: method, path and exact body bytes;
//! - the first request [`begin`]s by claiming the key with a lock; the lock's time is its fencing
//!   token (stored and compared at microsecond precision, as PostgreSQL keeps it); a request
//!   whose response is known before it runs (creating a payment) first tries to write the key
//!   already [`finished`] with what it creates, in one write, and [`begin`]s only if the key
//!   is live;
//! - while it runs, the same key is [`Refused::InUse`] (409, retry); a different request with
//!   the key is [`Refused::Reused`] (422); once it finished, the saved response is replayed;
//! - the response is saved with the [`Lock`] in the same transaction as what the request
//!   created; a request whose lock was taken over (it ran past the lock timeout and a retry
//!   claimed the key) saves nothing, and one that failed before saving [`Lock::abandon`]s the key
//!   so a retry runs;
//! - keys expire after the configured TTL and are purged by [`spawn_purger`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use common::db::StoreError;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::store::{FinishedKey, KeyClaim, PaymentsStore, SavedResponse};

/// The request header that carries the key.
pub const HEADER: &str = "idempotency-key";

/// How often expired keys are deleted.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// The longest key accepted, in bytes.
const MAX_KEY_LENGTH: usize = 255;

/// Why a request's key is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The header is absent.
    #[error("the Idempotency-Key header is missing")]
    Missing,
    /// Empty, longer than 255 bytes, or not printable ASCII.
    #[error("the Idempotency-Key is not 1-255 printable ASCII characters")]
    Invalid,
}

/// A well-formed `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    /// The key a request carries.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, KeyError> {
        let bytes = headers.get(HEADER).ok_or(KeyError::Missing)?.as_bytes();
        let printable = bytes.iter().all(|b| (0x20..=0x7e).contains(b));
        if bytes.is_empty() || bytes.len() > MAX_KEY_LENGTH || !printable {
            return Err(KeyError::Invalid);
        }
        Ok(Self(String::from_utf8_lossy(bytes).into_owned()))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What identifies a request under a key: SHA-256 (hex) of its method, path and exact body.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update(b"\n");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    hex::encode(hasher.finalize())
}

/// Why a request may not run under its key.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The first request with this key is still running (or took the key over from this one).
    #[error("the idempotency key is in use")]
    InUse,
    /// The key was used for a different request.
    #[error("the idempotency key was used for a different request")]
    Reused,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A response saved under a key, to send again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// HTTP status.
    pub status: u16,
    /// The exact body.
    pub body: String,
    /// The payment the first request created.
    pub payment_id: Option<String>,
}

/// What [`begin`] decided.
#[derive(Debug)]
pub enum Begun {
    /// The key is this request's: run it, and save its response with the lock.
    Run(Lock),
    /// The request ran before: send its response again.
    Replay(Replay),
}

/// Settings from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a finished key is remembered.
    pub ttl: Duration,
    /// How long a claimed key without a response is held before another request may take it
    /// over (its request is presumed dead).
    pub lock_timeout: Duration,
}

/// Claims `key` for `principal`'s request with `fingerprint`.
pub async fn begin(
    store: &dyn PaymentsStore,
    principal: &str,
    key: Key,
    fingerprint: &str,
    settings: Settings,
) -> Result<Begun, Refused> {
    // The lock's time is also its fencing token, compared after a round trip through the
    // database: microseconds, as PostgreSQL stores them.
    let claimed_at = Utc::now().trunc_subsecs(6);
    let claim = store
        .claim_idempotency_key(
            principal,
            key.as_str(),
            fingerprint,
            claimed_at,
            settings.ttl,
            settings.lock_timeout,
        )
        .await?;
    match claim {
        KeyClaim::Proceed => Ok(Begun::Run(Lock {
            principal: principal.to_owned(),
            key,
            claimed_at,
        })),
        KeyClaim::Replay {
            status,
            body,
            payment_id,
        } => Ok(Begun::Replay(Replay {
            status,
            body,
            payment_id,
        })),
        KeyClaim::InFlight => Err(Refused::InUse),
        KeyClaim::Mismatch => Err(Refused::Reused),
    }
}

/// `key`, for a request whose response (`status`, `body`) is known before it runs, to be
/// claimed already finished in the same write as what the request creates (see
/// [`FinishedKey`]); if the key turns out to be live, the request [`begin`]s as any other.
pub fn finished<'a>(
    principal: &'a str,
    key: &'a Key,
    fingerprint: &'a str,
    settings: Settings,
    (status, body): (u16, &'a str),
) -> FinishedKey<'a> {
    // As [`begin`]'s lock: microseconds, as PostgreSQL stores them.
    let created_at = Utc::now().trunc_subsecs(6);
    FinishedKey {
        principal,
        key: key.as_str(),
        fingerprint,
        status,
        body,
        created_at,
        expires_at: created_at + settings.ttl,
    }
}

/// A key this request holds.
#[derive(Debug)]
pub struct Lock {
    principal: String,
    key: Key,
    claimed_at: DateTime<Utc>,
}

impl Lock {
    /// The response to save under the key, in the transaction that writes what the request made.
    pub fn response<'a>(&'a self, status: u16, body: &'a str) -> SavedResponse<'a> {
        SavedResponse {
            principal: &self.principal,
            key: self.key.as_str(),
            status,
            body,
            locked_at: self.claimed_at,
        }
    }

    /// Frees the key of a request that wrote nothing (refused by the state of things), so
    /// that a retry with it runs again.
    pub async fn release(self, store: &dyn PaymentsStore) {
        if let Err(error) = store
            .release_idempotency_key(&self.principal, self.key.as_str(), self.claimed_at)
            .await
        {
            tracing::warn!(%error, "cannot release the idempotency key; it will time out");
        }
    }

    /// After the write that carried [`Lock::response`] failed with `error`: a conflict means
    /// another request took the key over (its result is the key's, so this one reports the key
    /// in use); anything else wrote nothing, so the key is freed for a retry (if the database
    /// is gone, the lock times out instead).
    pub async fn abandon(self, store: &dyn PaymentsStore, error: StoreError) -> Refused {
        if matches!(error, StoreError::Conflict(_)) {
            tracing::warn!("idempotency key taken over while this request ran; nothing created");
            return Refused::InUse;
        }
        if let Err(release) = store
            .release_idempotency_key(&self.principal, self.key.as_str(), self.claimed_at)
            .await
        {
            tracing::warn!(error = %release, "cannot release the idempotency key; it will time out");
        }
        Refused::Store(error)
    }
}

/// Deletes expired keys every `every` until `shutdown`.
pub fn spawn_purger(store: Arc<dyn PaymentsStore>, every: Duration, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = interval.tick() => match store.purge_idempotency_keys(Utc::now()).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "expired idempotency keys purged"),
                    Err(error) => tracing::warn!(%error, "cannot purge idempotency keys"),
                },
                () = shutdown.cancelled() => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, http::HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn keys_are_one_to_255_printable_ascii_characters() {
        assert_eq!(Key::from_headers(&HeaderMap::new()), Err(KeyError::Missing));
        assert_eq!(Key::from_headers(&headers(b"")), Err(KeyError::Invalid));
        assert_eq!(
            Key::from_headers(&headers(&[b'k'; 256])),
            Err(KeyError::Invalid)
        );
        assert_eq!(Key::from_headers(&headers(b"a\tb")), Err(KeyError::Invalid));
        assert_eq!(
            Key::from_headers(&headers(&[b'k'; 255])).map(|k| k.as_str().len()),
            Ok(255)
        );
        assert_eq!(
            Key::from_headers(&headers(b"order 42/retry ~1"))
                .unwrap()
                .as_str(),
            "order 42/retry ~1"
        );
    }

    #[test]
    fn the_fingerprint_covers_method_path_and_body() {
        let base = fingerprint("POST", "/v1/payments", b"{}");
        assert_eq!(base.len(), 64);
        assert_ne!(base, fingerprint("POST", "/payments", b"{}"));
        assert_ne!(base, fingerprint("PUT", "/v1/payments", b"{}"));
        assert_ne!(base, fingerprint("POST", "/v1/payments", b"{ }"));
        assert_eq!(base, fingerprint("POST", "/v1/payments", b"{}"));
    }
}
