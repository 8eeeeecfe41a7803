//! Logging in, as rules the token endpoint calls: the password check with its per-account
//! lockout (counted before the password is checked, so parallel guesses see each other), the
//! same work for every failing path, re-hashing legacy hashes; and refresh-token redemption
//! (rotation, reuse detection, the client the token is bound to).

use chrono::{DateTime, Utc};
use common::db::StoreError;
use common::problem::retry_after_seconds;

use crate::domain::email_key;
use crate::passwords::{Hasher, PasswordError, Verdict};
use crate::store::{AccountsStore, ClientRecord, LoginGate, RefreshTokenRecord, UserRecord};
use crate::tokens::{PUBLIC_CLIENT_ID, hash_token};

/// Failed logins allowed before an account is locked for a growing delay.
pub const FREE_FAILURES: i64 = 5;
/// The longest lock.
pub const MAX_LOCK_SECONDS: i64 = 15 * 60;

/// How long an account is locked once it has `failures` consecutive failures (counting the
/// attempt being made): nothing for the first few, then 1 s, 2 s, 4 s ... up to 15 minutes.
pub fn lock_seconds(failures: i64) -> Option<i64> {
    let over = failures - FREE_FAILURES;
    (over >= 0).then(|| {
        1i64.checked_shl(u32::try_from(over).unwrap_or(u32::MAX))
            .unwrap_or(i64::MAX)
            .min(MAX_LOCK_SECONDS)
    })
}

/// Why a login or a refresh was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown user, wrong password, disabled account: one answer for all (`invalid_grant`).
    #[error("the email or password is wrong")]
    InvalidCredentials,
    /// Too many failures for this account: wait this many seconds (429).
    #[error("too many failed attempts; retry in {retry_after} s")]
    Throttled {
        /// Seconds until the lock ends.
        retry_after: u64,
    },
    /// The refresh token is unknown, spent, expired or revoked, or bound to another client
    /// (`invalid_grant`).
    #[error("{0}")]
    InvalidGrant(&'static str),
    /// The refresh token belongs to a confidential client and the request did not
    /// authenticate as it (`invalid_client`, 401).
    #[error("the refresh token's client must authenticate")]
    ClientAuthenticationRequired,
    /// No hashing slot is free: shed the load (503 with `Retry-After`).
    #[error("every password-hashing slot is busy")]
    Busy,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed (a bug).
    #[error("{0}")]
    Internal(String),
}

impl From<PasswordError> for LoginError {
    fn from(error: PasswordError) -> Self {
        match error {
            PasswordError::Busy => Self::Busy,
            PasswordError::Failed(cause) => Self::Internal(cause),
        }
    }
}

/// The throttle key of a login name: its canonical form, so every spelling of one address
/// shares one lock.
fn throttle_key(username: &str) -> String {
    format!("login:{}", email_key(username))
}

/// Checks a username (an email) and password: the user, with a legacy hash replaced by an
/// Argon2id one. The attempt is counted before the password is checked; a success clears
/// the count.
pub async fn password_login(
    store: &dyn AccountsStore,
    hasher: &Hasher,
    username: &str,
    password: &str,
    now: DateTime<Utc>,
) -> Result<UserRecord, LoginError> {
    let key = throttle_key(username);
    let lock_after = |failures: i64| lock_seconds(failures).map(chrono::Duration::seconds);
    if let LoginGate::Locked { until } = store.begin_login_attempt(&key, now, &lock_after).await? {
        let wait = (until - now).to_std().unwrap_or_default();
        return Err(LoginError::Throttled {
            retry_after: retry_after_seconds(wait),
        });
    }
    // Unknown users, and hashes that cannot be verified, are checked against a dummy hash:
    // same answer, same work.
    let user = store.user_by_email(&email_key(username)).await?;
    let verdict = hasher
        .verify(
            password.to_owned(),
            user.as_ref().map(|u| u.password_hash.as_str()),
        )
        .await?;
    let user = match (user, verdict) {
        (Some(user), Verdict::Match | Verdict::MatchNeedsRehash) if !user.disabled => user,
        // Counted already, and locked if that was one failure too many.
        _ => return Err(LoginError::InvalidCredentials),
    };
    store.clear_throttle(&key).await?;
    store.record_login(&user.id, now).await?;
    if verdict == Verdict::MatchNeedsRehash {
        let hash = hasher.hash(password.to_owned()).await?;
        store.set_password_hash(&user.id, &hash, now).await?;
        tracing::info!(user_id = %user.id, "password re-hashed with Argon2id");
    }
    Ok(user)
}

/// Why a request may not use a token (RFC 6749 §6 for refresh tokens, RFC 7009 §2.1 for
/// revocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotIssuedTo {
    /// The token was issued to another client, or (a first-party token, issued to no client)
    /// the request came from a client.
    AnotherClient,
    /// The token was issued to a registered client, and the request named no client: a
    /// confidential client must authenticate, a public one name itself.
    ClientMustIdentify,
}

/// Whether a request from `client` (as the token endpoint identifies it:
/// authenticated, or a public client naming itself; `None`: no client) may use a token
/// issued to `issued_to`: only the client it was issued to, and a first-party token
/// ([`PUBLIC_CLIENT_ID`]) only a request from no client.
pub fn issued_to(issued_to: &str, client: Option<&ClientRecord>) -> Result<(), NotIssuedTo> {
    match (issued_to, client) {
        (PUBLIC_CLIENT_ID, None) => Ok(()),
        (PUBLIC_CLIENT_ID, Some(_)) => Err(NotIssuedTo::AnotherClient),
        (_, None) => Err(NotIssuedTo::ClientMustIdentify),
        (issued_to, Some(client)) if issued_to != client.client_id => {
            Err(NotIssuedTo::AnotherClient)
        }
        _ => Ok(()),
    }
}

/// Spends a refresh token: its record and its (enabled) user. `client` is the client the
/// request authenticated as, if any: a token issued to a confidential client is redeemed only
/// by that client (RFC 6749 §6), and a public token by no confidential one. Presenting a spent
/// token revokes its whole family.
pub async fn redeem_refresh_token(
    store: &dyn AccountsStore,
    presented: &str,
    client: Option<&ClientRecord>,
    now: DateTime<Utc>,
) -> Result<(RefreshTokenRecord, UserRecord), LoginError> {
    const INVALID: &str = "the refresh token is invalid, expired or revoked";
    let record = store
        .refresh_token_by_hash(&hash_token(presented))
        .await?
        .ok_or(LoginError::InvalidGrant(INVALID))?;
    match issued_to(&record.client_id, client) {
        Ok(()) => {}
        Err(NotIssuedTo::AnotherClient) => {
            return Err(LoginError::InvalidGrant(
                "the refresh token was not issued to this client",
            ));
        }
        Err(NotIssuedTo::ClientMustIdentify) => {
            return Err(LoginError::ClientAuthenticationRequired);
        }
    }
    if record.used_at.is_some() || record.revoked_at.is_some() {
        reuse_detected(store, &record.family_id, now).await?;
        return Err(LoginError::InvalidGrant(INVALID));
    }
    if record.expires_at <= now {
        return Err(LoginError::InvalidGrant(INVALID));
    }
    if !store.mark_refresh_token_used(&record.id, now).await? {
        // Someone spent it between our read and our write: that is reuse too.
        reuse_detected(store, &record.family_id, now).await?;
        return Err(LoginError::InvalidGrant(INVALID));
    }
    let user = store
        .user_by_id(&record.user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or(LoginError::InvalidGrant(INVALID))?;
    Ok((record, user))
}

async fn reuse_detected(
    store: &dyn AccountsStore,
    family_id: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    tracing::warn!(
        family_id,
        "refresh token reuse detected; revoking its family"
    );
    store.revoke_refresh_family(family_id, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_grows_after_the_free_failures_and_is_capped() {
        assert_eq!(lock_seconds(1), None);
        assert_eq!(lock_seconds(4), None);
        assert_eq!(lock_seconds(5), Some(1));
        assert_eq!(lock_seconds(6), Some(2));
        assert_eq!(lock_seconds(9), Some(16));
        assert_eq!(lock_seconds(30), Some(MAX_LOCK_SECONDS));
        assert_eq!(lock_seconds(1000), Some(MAX_LOCK_SECONDS));
    }
}
