//! Accounts storage: one trait, one implementation generic over the database (SQLite or
//! PostgreSQL, in `sql.rs`), the same tests for both.

mod sql;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::db::{DatabaseUrl, Migrations, Pool, StoreError};

pub use sql::SqlStore;

/// A user row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    /// `usr_...`.
    pub id: String,
    /// As given.
    pub email: String,
    /// Lowercase, unique.
    pub email_normalized: String,
    /// Display name.
    pub name: Option<String>,
    /// Argon2id PHC string or a Django hash.
    pub password_hash: String,
    /// `user` or `admin`.
    pub role: String,
    /// Disabled users cannot log in.
    pub disabled: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A service client row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientRecord {
    /// `cli_...`.
    pub client_id: String,
    /// Who it is for.
    pub name: String,
    /// SHA-256 (hex) of the secret.
    pub secret_hash: String,
    /// Space-separated scopes it may be granted.
    pub scopes: String,
    /// Disabled clients cannot authenticate.
    pub disabled: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A refresh token row (only its hash is kept).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshTokenRecord {
    /// Row id.
    pub id: String,
    /// SHA-256 (hex) of the token.
    pub token_hash: String,
    /// All tokens rotated from one login share a family.
    pub family_id: String,
    /// Whose.
    pub user_id: String,
    /// Issued to.
    pub client_id: String,
    /// Granted scopes.
    pub scope: String,
    /// Issued.
    pub created_at: DateTime<Utc>,
    /// Expires.
    pub expires_at: DateTime<Utc>,
    /// Exchanged for a new one (a second use is reuse).
    pub used_at: Option<DateTime<Utc>>,
    /// Revoked (logout, reuse detected).
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A signing key row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SigningKeyRecord {
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// `RS256` or `EdDSA`.
    pub alg: String,
    /// The public JWK, as served.
    #[sqlx(json)]
    pub public_jwk: serde_json::Value,
    /// The private key, sealed.
    pub private_key: Vec<u8>,
    /// Created, and published in the JWKS from then on.
    pub created_at: DateTime<Utc>,
    /// Signs from then on; `None` for the next key, published but not yet scheduled.
    pub activates_at: Option<DateTime<Utc>>,
    /// Stopped signing.
    pub retired_at: Option<DateTime<Utc>>,
    /// Leaves the JWKS.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Failed logins for one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Throttle {
    /// Consecutive failures.
    pub failures: i64,
    /// No attempt is considered before this.
    pub locked_until: Option<DateTime<Utc>>,
}

/// Whether a login attempt may check its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginGate {
    /// Check it; this attempt is already counted as the `failures`-th failure in a row.
    Proceed {
        /// Consecutive failures, this attempt included.
        failures: i64,
    },
    /// The key is locked until then; nothing was counted.
    Locked {
        /// When the next attempt may be made.
        until: DateTime<Utc>,
    },
}

/// Everything accounts keeps in its database.
#[async_trait::async_trait]
pub trait AccountsStore: Send + Sync {
    /// The pool behind the store, for readiness checks and shutdown.
    fn database(&self) -> Pool;

    /// Public JWKs of every signing key whose tokens may still be alive at `now`, newest first.
    async fn published_keys(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<serde_json::Value>, StoreError>;
    /// Signing keys not yet expired at `now`, newest first.
    async fn live_signing_keys(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<SigningKeyRecord>, StoreError>;
    /// Stores a new key (published in the JWKS from its `created_at`).
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError>;
    /// In one transaction: the next key `next_kid` signs from `activates_at`; every key that
    /// signs before then is retired at that time and leaves the JWKS at `retired_expire_at`;
    /// `new_next` is published as the next key; keys expired for a day are dropped. `false`
    /// and nothing written when `next_kid` is no longer unscheduled (another replica rotated).
    async fn schedule_rotation(
        &self,
        next_kid: &str,
        activates_at: DateTime<Utc>,
        retired_expire_at: DateTime<Utc>,
        new_next: &SigningKeyRecord,
    ) -> Result<bool, StoreError>;
    /// In one transaction, for a key that must stop signing at once (compromised): every key
    /// signing at `now` is retired and leaves the JWKS now, and `key` signs from `now`.
    async fn replace_signing_key_now(
        &self,
        key: &SigningKeyRecord,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Inserts a user; `Conflict` when the email is taken.
    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// The user with this lowercase email.
    async fn user_by_email(&self, email_normalized: &str)
    -> Result<Option<UserRecord>, StoreError>;
    /// The user with this id.
    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Replaces a user's password hash (re-hashing at login).
    async fn set_password_hash(
        &self,
        id: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Whether any admin exists.
    async fn any_admin(&self) -> Result<bool, StoreError>;

    /// Inserts a client.
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    /// The client with this id.
    async fn client_by_id(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError>;

    /// Stores a refresh token.
    async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), StoreError>;
    /// The refresh token with this hash.
    async fn refresh_token_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<RefreshTokenRecord>, StoreError>;
    /// Marks a token used; `false` when it was already used or revoked (a concurrent reuse).
    async fn mark_refresh_token_used(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Revokes every token of a family.
    async fn revoke_refresh_family(
        &self,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The failed-login record for `key`.
    async fn throttle(&self, key: &str) -> Result<Option<Throttle>, StoreError>;
    /// Counts a login attempt for `key` before its password is checked, atomically (attempts
    /// on one key are serialized): refused while the key is locked; otherwise counted as a
    /// failure in advance (a success clears it), and the key locked at once for
    /// `lock_after(failures)` when that says so. Parallel guesses therefore see each other:
    /// no more of them are checked than sequential ones would be.
    async fn begin_login_attempt(
        &self,
        key: &str,
        now: DateTime<Utc>,
        lock_after: &(dyn Fn(i64) -> Option<chrono::Duration> + Sync),
    ) -> Result<LoginGate, StoreError>;
    /// Forgets failed logins for `key` (after a success).
    async fn clear_throttle(&self, key: &str) -> Result<(), StoreError>;

    /// Denies an access token until it would have expired.
    async fn revoke_access_token(
        &self,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Whether an access token was revoked.
    async fn access_token_revoked(&self, jti: &str) -> Result<bool, StoreError>;
}

/// Opens the database named by `url` (PostgreSQL: with a pool of up to `max_connections`) and
/// applies its migrations.
pub async fn open(
    url: &DatabaseUrl,
    max_connections: u32,
) -> Result<Arc<dyn AccountsStore>, StoreError> {
    Ok(
        match common::db::open(url, max_connections, &migrations()).await? {
            Pool::Sqlite(pool) => Arc::new(SqlStore::new(pool)),
            Pool::Postgres(pool) => Arc::new(SqlStore::new(pool)),
        },
    )
}

/// The accounts schema for each backend, embedded in the binary.
pub fn migrations() -> Migrations {
    Migrations::new(
        sqlx::migrate!("./migrations/sqlite"),
        sqlx::migrate!("./migrations/postgres"),
    )
}
