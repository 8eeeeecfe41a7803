//! [`AccountsStore`] on SQLite and PostgreSQL: one implementation, generic over the sqlx
//! database (`SqlStore<Sqlite>`, `SqlStore<Postgres>`). The SQL is the same for both; where
//! the backends differ, [`Backend`] names the difference.

use chrono::{DateTime, Utc};
use common::db::{Backend, Pool, StoreError};
use sqlx::{Decode, Encode, Executor, FromRow, Type};

use super::{
    AccountsStore, AuthorizationCodeRecord, ClientRecord, LoginGate, RefreshTokenRecord,
    SessionRecord, SigningKeyRecord, Throttle, TokenUser, UserRecord,
};

/// Inserts a signing key on `executor` (the pool, or a transaction).
async fn insert_key<'c, DB: Backend>(
    executor: impl Executor<'c, Database = DB>,
    key: &SigningKeyRecord,
) -> Result<(), sqlx::Error>
where
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB>,
    for<'q> sqlx::types::Json<&'q serde_json::Value>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, public_jwk, private_key, created_at, activates_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&key.kid)
    .bind(&key.alg)
    .bind(sqlx::types::Json(&key.public_jwk))
    .bind(&key.private_key)
    .bind(key.created_at)
    .bind(key.activates_at)
    .execute(executor)
    .await
    .map(drop)
}

/// Accounts in an sqlx database: `SqlStore<sqlx::Sqlite>` or `SqlStore<sqlx::Postgres>`.
pub struct SqlStore<DB: Backend> {
    pool: sqlx::Pool<DB>,
}

impl<DB: Backend> SqlStore<DB> {
    /// A store over an opened and migrated pool.
    pub fn new(pool: sqlx::Pool<DB>) -> Self {
        Self { pool }
    }
}

#[async_trait::async_trait]
impl<DB> AccountsStore for SqlStore<DB>
where
    DB: Backend,
    // What the queries below need of the database: to run on a pool or a transaction, to
    // bind these types, and to read these rows.
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
    for<'q> sqlx::types::Json<&'q serde_json::Value>: Encode<'q, DB> + Type<DB>,
    for<'r> UserRecord: FromRow<'r, DB::Row>,
    for<'r> TokenUser: FromRow<'r, DB::Row>,
    for<'r> ClientRecord: FromRow<'r, DB::Row>,
    for<'r> RefreshTokenRecord: FromRow<'r, DB::Row>,
    for<'r> SigningKeyRecord: FromRow<'r, DB::Row>,
    for<'r> Throttle: FromRow<'r, DB::Row>,
    for<'r> SessionRecord: FromRow<'r, DB::Row>,
    for<'r> AuthorizationCodeRecord: FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    fn database(&self) -> Pool {
        DB::into_pool(self.pool.clone())
    }

    #[tracing::instrument(name = "db published_keys", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "published_keys"))]
    async fn published_keys(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        Ok(self
            .live_signing_keys(now)
            .await?
            .into_iter()
            .map(|key| key.public_jwk)
            .collect())
    }

    #[tracing::instrument(name = "db live_signing_keys", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "live_signing_keys"))]
    async fn live_signing_keys(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<SigningKeyRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT kid, alg, public_jwk, private_key, created_at, activates_at, retired_at, \
             expires_at FROM signing_keys WHERE expires_at IS NULL OR expires_at > $1 \
             ORDER BY created_at DESC, kid DESC",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    #[tracing::instrument(name = "db insert_signing_key", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "insert_signing_key"))]
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError> {
        insert_key(&self.pool, key).await?;
        Ok(())
    }

    #[tracing::instrument(name = "db schedule_rotation", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "schedule_rotation"))]
    async fn schedule_rotation(
        &self,
        next_kid: &str,
        activates_at: DateTime<Utc>,
        retired_expire_at: DateTime<Utc>,
        new_next: &SigningKeyRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let scheduled = sqlx::query(
            "UPDATE signing_keys SET activates_at = $1 WHERE kid = $2 AND activates_at IS NULL",
        )
        .bind(activates_at)
        .bind(next_kid)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&scheduled) != 1 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE signing_keys SET retired_at = $1, expires_at = $2 \
             WHERE activates_at < $1 AND retired_at IS NULL",
        )
        .bind(activates_at)
        .bind(retired_expire_at)
        .execute(&mut *tx)
        .await?;
        insert_key(&mut *tx, new_next).await?;
        sqlx::query("DELETE FROM signing_keys WHERE expires_at < $1")
            .bind(activates_at - chrono::Duration::days(1))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    #[tracing::instrument(name = "db replace_signing_key_now", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "replace_signing_key_now"))]
    async fn replace_signing_key_now(
        &self,
        key: &SigningKeyRecord,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE signing_keys SET retired_at = $1, expires_at = $1 \
             WHERE activates_at <= $1 AND retired_at IS NULL",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_key(&mut *tx, key).await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(name = "db insert_user", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "insert_user"))]
    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, email, email_normalized, name, password_hash, role, \
             disabled, created_at, updated_at, legacy_user_id, username, first_name, last_name, \
             is_staff, groups, legacy_last_login, last_login_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.email_normalized)
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(&user.role)
        .bind(user.disabled)
        .bind(user.created_at)
        .bind(user.updated_at)
        .bind(user.legacy.legacy_user_id)
        .bind(&user.legacy.username)
        .bind(&user.legacy.first_name)
        .bind(&user.legacy.last_name)
        .bind(user.legacy.is_staff)
        .bind(&user.legacy.groups)
        .bind(user.legacy.legacy_last_login)
        .bind(user.last_login_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db user_by_email", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "user_by_email"))]
    async fn user_by_email(
        &self,
        email_normalized: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM users WHERE email_normalized = $1")
                .bind(email_normalized)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    #[tracing::instrument(name = "db user_by_id", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "user_by_id"))]
    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    #[tracing::instrument(name = "db users_page", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "users_page"))]
    async fn users_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<UserRecord>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM users WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    #[tracing::instrument(name = "db user_by_legacy_id", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "user_by_legacy_id"))]
    async fn user_by_legacy_id(
        &self,
        legacy_user_id: i64,
    ) -> Result<Option<UserRecord>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM users WHERE legacy_user_id = $1")
                .bind(legacy_user_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    #[tracing::instrument(name = "db update_imported_user", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "update_imported_user"))]
    async fn update_imported_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE users SET email = $1, email_normalized = $2, name = $3, password_hash = $4, \
             role = $5, disabled = $6, updated_at = $7, legacy_user_id = $8, username = $9, \
             first_name = $10, last_name = $11, is_staff = $12, groups = $13, \
             legacy_last_login = $14 WHERE id = $15",
        )
        .bind(&user.email)
        .bind(&user.email_normalized)
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(&user.role)
        .bind(user.disabled)
        .bind(user.updated_at)
        .bind(user.legacy.legacy_user_id)
        .bind(&user.legacy.username)
        .bind(&user.legacy.first_name)
        .bind(&user.legacy.last_name)
        .bind(user.legacy.is_staff)
        .bind(&user.legacy.groups)
        .bind(user.legacy.legacy_last_login)
        .bind(&user.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db set_password_hash", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "set_password_hash"))]
    async fn set_password_hash(
        &self,
        id: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db record_login", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "record_login"))]
    async fn record_login(&self, id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db any_admin", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "any_admin"))]
    async fn any_admin(&self) -> Result<bool, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT id FROM users WHERE role = 'admin' LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }

    #[tracing::instrument(name = "db insert_client", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "insert_client"))]
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO clients (client_id, name, secret_hash, scopes, disabled, created_at, \
             redirect_uris, post_logout_redirect_uris, grant_types, token_endpoint_auth_method, \
             first_party, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&client.client_id)
        .bind(&client.name)
        .bind(&client.secret_hash)
        .bind(&client.scopes)
        .bind(client.disabled)
        .bind(client.created_at)
        .bind(&client.redirect_uris)
        .bind(&client.post_logout_redirect_uris)
        .bind(&client.grant_types)
        .bind(&client.token_endpoint_auth_method)
        .bind(client.first_party)
        .bind(client.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db update_client", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "update_client"))]
    async fn update_client(&self, client: &ClientRecord) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE clients SET name = $1, scopes = $2, disabled = $3, redirect_uris = $4, \
             post_logout_redirect_uris = $5, grant_types = $6, token_endpoint_auth_method = $7, \
             first_party = $8, updated_at = $9 WHERE client_id = $10",
        )
        .bind(&client.name)
        .bind(&client.scopes)
        .bind(client.disabled)
        .bind(&client.redirect_uris)
        .bind(&client.post_logout_redirect_uris)
        .bind(&client.grant_types)
        .bind(&client.token_endpoint_auth_method)
        .bind(client.first_party)
        .bind(client.updated_at)
        .bind(&client.client_id)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&result) == 1)
    }

    #[tracing::instrument(name = "db delete_client", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "delete_client"))]
    async fn delete_client(&self, client_id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM clients WHERE client_id = $1")
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&deleted) != 1 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM authorization_codes WHERE client_id = $1")
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM consents WHERE client_id = $1")
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    #[tracing::instrument(name = "db set_user_disabled", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "set_user_disabled"))]
    async fn set_user_disabled(
        &self,
        id: &str,
        disabled: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3")
            .bind(disabled)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&updated) != 1 {
            return Ok(false);
        }
        if disabled {
            sqlx::query(
                "UPDATE sessions SET ended_at = $1 WHERE user_id = $2 AND ended_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    #[tracing::instrument(name = "db insert_session", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "insert_session"))]
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, sid, user_id, auth_time, created_at, last_seen_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&session.id_hash)
        .bind(&session.sid)
        .bind(&session.user_id)
        .bind(session.auth_time)
        .bind(session.created_at)
        .bind(session.last_seen_at)
        .bind(session.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db live_session", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "live_session"))]
    async fn live_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
        idle: chrono::Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        Ok(sqlx::query_as(
            "UPDATE sessions SET last_seen_at = $1 \
             WHERE id_hash = $2 AND ended_at IS NULL AND expires_at > $1 AND last_seen_at > $3 \
             AND user_id IN (SELECT id FROM users WHERE NOT disabled) \
             RETURNING id_hash, sid, user_id, auth_time, created_at, last_seen_at, expires_at, ended_at",
        )
        .bind(now)
        .bind(id_hash)
        .bind(now - idle)
        .fetch_optional(&self.pool)
        .await?)
    }

    #[tracing::instrument(name = "db end_session", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "end_session"))]
    async fn end_session(&self, sid: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let result =
            sqlx::query("UPDATE sessions SET ended_at = $1 WHERE sid = $2 AND ended_at IS NULL")
                .bind(now)
                .bind(sid)
                .execute(&self.pool)
                .await?;
        Ok(DB::rows_affected(&result) == 1)
    }

    #[tracing::instrument(name = "db insert_authorization_code", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "insert_authorization_code"))]
    async fn insert_authorization_code(
        &self,
        code: &AuthorizationCodeRecord,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO authorization_codes (code_hash, client_id, user_id, sid, redirect_uri, \
             scope, nonce, code_challenge, auth_time, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&code.code_hash)
        .bind(&code.client_id)
        .bind(&code.user_id)
        .bind(&code.sid)
        .bind(&code.redirect_uri)
        .bind(&code.scope)
        .bind(&code.nonce)
        .bind(&code.code_challenge)
        .bind(code.auth_time)
        .bind(code.created_at)
        .bind(code.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db spend_authorization_code", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "spend_authorization_code"))]
    async fn spend_authorization_code(
        &self,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<AuthorizationCodeRecord>, StoreError> {
        let spent: Option<AuthorizationCodeRecord> = sqlx::query_as(
            "UPDATE authorization_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL \
             RETURNING *",
        )
        .bind(now)
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(mut code) = spent {
            code.used_at = None;
            return Ok(Some(code));
        }
        Ok(
            sqlx::query_as("SELECT * FROM authorization_codes WHERE code_hash = $1")
                .bind(code_hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    #[tracing::instrument(name = "db record_code_tokens", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "record_code_tokens"))]
    async fn record_code_tokens(
        &self,
        code_hash: &str,
        refresh_family: Option<&str>,
        access_jti: &str,
        access_expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE authorization_codes SET refresh_family = $1, access_jti = $2, \
             access_expires_at = $3 WHERE code_hash = $4",
        )
        .bind(refresh_family.map(str::to_owned))
        .bind(access_jti)
        .bind(access_expires_at)
        .bind(code_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db consent", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "consent"))]
    async fn consent(&self, user_id: &str, client_id: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT scope FROM consents WHERE user_id = $1 AND client_id = $2")
                .bind(user_id)
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(scope,)| scope))
    }

    #[tracing::instrument(name = "db grant_consent", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "grant_consent"))]
    async fn grant_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scope: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO consents (user_id, client_id, scope, granted_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, client_id) DO UPDATE SET scope = $3, granted_at = $4",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(scope)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db client_by_id", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "client_by_id"))]
    async fn client_by_id(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    #[tracing::instrument(name = "db insert_refresh_token", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "insert_refresh_token"))]
    async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, token_hash, family_id, user_id, client_id, \
             scope, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&token.id)
        .bind(&token.token_hash)
        .bind(&token.family_id)
        .bind(&token.user_id)
        .bind(&token.client_id)
        .bind(&token.scope)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db refresh_token_by_hash", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "refresh_token_by_hash"))]
    async fn refresh_token_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<RefreshTokenRecord>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM refresh_tokens WHERE token_hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    #[tracing::instrument(name = "db mark_refresh_token_used", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "mark_refresh_token_used"))]
    async fn mark_refresh_token_used(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 \
             WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&result) == 1)
    }

    #[tracing::instrument(name = "db revoke_refresh_family", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "revoke_refresh_family"))]
    async fn revoke_refresh_family(
        &self,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 \
             WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(family_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db throttle", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "throttle"))]
    async fn throttle(&self, key: &str) -> Result<Option<Throttle>, StoreError> {
        Ok(
            sqlx::query_as("SELECT failures, locked_until FROM login_throttle WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    #[tracing::instrument(name = "db begin_login_attempt", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "begin_login_attempt"))]
    async fn begin_login_attempt(
        &self,
        key: &str,
        now: DateTime<Utc>,
        lock_after: &(dyn Fn(i64) -> Option<chrono::Duration> + Sync),
    ) -> Result<LoginGate, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A write first: it takes the row's lock (PostgreSQL) or the database's write lock
        // (SQLite) for the rest of the transaction, so attempts on one key run one at a time.
        let current: Throttle = sqlx::query_as(
            "INSERT INTO login_throttle (key, failures, locked_until, updated_at) \
             VALUES ($1, 0, NULL, $2) ON CONFLICT (key) DO UPDATE SET updated_at = $2 \
             RETURNING failures, locked_until",
        )
        .bind(key)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(until) = current.locked_until.filter(|until| *until > now) {
            tx.commit().await?;
            return Ok(LoginGate::Locked { until });
        }
        let failures = current.failures.saturating_add(1);
        sqlx::query("UPDATE login_throttle SET failures = $1, locked_until = $2 WHERE key = $3")
            .bind(failures)
            .bind(lock_after(failures).map(|lock| now + lock))
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(LoginGate::Proceed { failures })
    }

    #[tracing::instrument(name = "db clear_throttle", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "clear_throttle"))]
    async fn clear_throttle(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_throttle WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db revoke_access_token", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "revoke_access_token"))]
    async fn revoke_access_token(
        &self,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, $2) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db access_token_revoked", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "access_token_revoked"))]
    async fn access_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT jti FROM revoked_access_tokens WHERE jti = $1")
                .bind(jti)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }

    #[tracing::instrument(name = "db token_user", skip_all, fields(otel.kind = "client", db.system.name = DB::SYSTEM, db.operation.name = "token_user"))]
    async fn token_user(&self, user_id: &str, jti: &str) -> Result<Option<TokenUser>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT users.*, EXISTS (SELECT 1 FROM revoked_access_tokens WHERE jti = $2) \
             AS token_revoked FROM users WHERE id = $1",
        )
        .bind(user_id)
        .bind(jti)
        .fetch_optional(&self.pool)
        .await?)
    }
}
