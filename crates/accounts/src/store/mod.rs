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
    /// Who the user is in the monolith, for users imported from it.
    #[sqlx(flatten)]
    pub legacy: LegacyIdentity,
    /// The last successful login at accounts (from then on accounts holds the password).
    pub last_login_at: Option<DateTime<Utc>>,
}

/// A user and whether an access token issued to them was revoked, read in one query: the
/// two checks every request with a user's token makes at `/users/me` and `/userinfo`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenUser {
    /// The user.
    #[sqlx(flatten)]
    pub user: UserRecord,
    /// Whether the token was revoked.
    pub token_revoked: bool,
}

/// The monolith's identity of an imported user (empty for users created here).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LegacyIdentity {
    /// The Django primary key: the `legacy_user_id` claim.
    pub legacy_user_id: Option<i64>,
    /// The Django username.
    pub username: Option<String>,
    /// Django's `first_name`.
    pub first_name: Option<String>,
    /// Django's `last_name`.
    pub last_name: Option<String>,
    /// Django's `is_staff` (the role `staff`).
    pub is_staff: bool,
    /// Django's groups as dumped (a JSON array of ids or natural keys).
    pub groups: String,
    /// Django's `last_login`.
    pub legacy_last_login: Option<DateTime<Utc>>,
}

impl Default for LegacyIdentity {
    fn default() -> Self {
        Self {
            legacy_user_id: None,
            username: None,
            first_name: None,
            last_name: None,
            is_staff: false,
            groups: "[]".to_owned(),
            legacy_last_login: None,
        }
    }
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
    /// Where the authorization endpoint may send codes, space-separated (exact matches).
    pub redirect_uris: String,
    /// Where the end-session endpoint may send the browser back, space-separated.
    pub post_logout_redirect_uris: String,
    /// `authorization_code`, `refresh_token`, `client_credentials`, space-separated.
    pub grant_types: String,
    /// `client_secret_basic`, `client_secret_post` or `none` (a public client).
    pub token_endpoint_auth_method: String,
    /// First-party clients skip the consent page.
    pub first_party: bool,
    /// Last change of its metadata.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A browser session (the cookie's value is never stored, only its SHA-256).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    /// SHA-256 (hex) of the cookie's value.
    pub id_hash: String,
    /// The public session id (`sid` in ID tokens).
    pub sid: String,
    /// Whose.
    pub user_id: String,
    /// When the user last typed their password.
    pub auth_time: DateTime<Utc>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last used (idle lifetime).
    pub last_seen_at: DateTime<Utc>,
    /// Absolute end.
    pub expires_at: DateTime<Utc>,
    /// Signed out (or ended by an administrator).
    pub ended_at: Option<DateTime<Utc>>,
}

/// An authorization code (only its hash is kept).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuthorizationCodeRecord {
    /// SHA-256 (hex) of the code.
    pub code_hash: String,
    /// Issued to.
    pub client_id: String,
    /// Whose.
    pub user_id: String,
    /// The session it came from.
    pub sid: String,
    /// The redirect URI it was sent to (the token request must name it again).
    pub redirect_uri: String,
    /// Granted scopes.
    pub scope: String,
    /// The client's nonce, for the ID token.
    pub nonce: Option<String>,
    /// PKCE: base64url SHA-256 of the verifier (S256).
    pub code_challenge: Option<String>,
    /// When the user authenticated.
    pub auth_time: DateTime<Utc>,
    /// Issued.
    pub created_at: DateTime<Utc>,
    /// Expires (a minute after issue).
    pub expires_at: DateTime<Utc>,
    /// Redeemed.
    pub used_at: Option<DateTime<Utc>>,
    /// The refresh-token family its redemption started.
    pub refresh_family: Option<String>,
    /// The access token its redemption issued.
    pub access_jti: Option<String>,
    /// When that access token expires.
    pub access_expires_at: Option<DateTime<Utc>>,
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
    /// Up to `limit` users with ids after `after`, in id order (an export's pages).
    async fn users_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<UserRecord>, StoreError>;
    /// The user imported from the monolith's user `legacy_user_id`.
    async fn user_by_legacy_id(
        &self,
        legacy_user_id: i64,
    ) -> Result<Option<UserRecord>, StoreError>;
    /// Replaces what an import brings of a user (email, name, password hash, role, disabled
    /// flag, the monolith's identity); `Conflict` when the email is another user's.
    async fn update_imported_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// Replaces a user's password hash (re-hashing at login).
    async fn set_password_hash(
        &self,
        id: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Records a successful login at accounts (from then on accounts holds the password).
    async fn record_login(&self, id: &str, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Whether any admin exists.
    async fn any_admin(&self) -> Result<bool, StoreError>;

    /// Disables or enables a user; disabling ends their sessions and revokes their refresh
    /// tokens in the same transaction. `false` when there is no such user.
    async fn set_user_disabled(
        &self,
        id: &str,
        disabled: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Inserts a client.
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    /// The client with this id.
    async fn client_by_id(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError>;
    /// Replaces a client's metadata (everything but its id, secret and creation time);
    /// `false` when there is no such client.
    async fn update_client(&self, client: &ClientRecord) -> Result<bool, StoreError>;
    /// Deletes a client with its refresh tokens, codes and consents; `false` when there was
    /// none.
    async fn delete_client(&self, client_id: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Stores a new browser session.
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    /// The live session behind a cookie (by its hash): not ended, not past its absolute end,
    /// used within `idle`, and of an enabled user; its last use is moved to `now`.
    async fn live_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
        idle: chrono::Duration,
    ) -> Result<Option<SessionRecord>, StoreError>;
    /// Ends a session by its public id (logout); `false` when it was not live.
    async fn end_session(&self, sid: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Stores an authorization code.
    async fn insert_authorization_code(
        &self,
        code: &AuthorizationCodeRecord,
    ) -> Result<(), StoreError>;
    /// Spends a code: its record, with `used_at` as it was before this call. Only the caller
    /// that finds `used_at` empty spent it; any other finds it set (a reuse).
    async fn spend_authorization_code(
        &self,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<AuthorizationCodeRecord>, StoreError>;
    /// Records what a code's redemption issued (so that a reuse can revoke it).
    async fn record_code_tokens(
        &self,
        code_hash: &str,
        refresh_family: Option<&str>,
        access_jti: &str,
        access_expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The scopes a user consented to for a client.
    async fn consent(&self, user_id: &str, client_id: &str) -> Result<Option<String>, StoreError>;
    /// Records (or widens) a user's consent for a client.
    async fn grant_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scope: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

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
    /// The user `user_id` and whether their access token `jti` was revoked, in one query;
    /// `None` when there is no such user.
    async fn token_user(&self, user_id: &str, jti: &str) -> Result<Option<TokenUser>, StoreError>;
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
