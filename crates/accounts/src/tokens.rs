//! Issuing tokens: signed access tokens (RFC 9068 JWTs) and opaque, rotating refresh tokens of
//! which only a hash is stored.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use common::auth::{AccessClaims, Audience};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::AccountsConfig;
use crate::domain::Scopes;
use crate::keys::{KeyError, KeyManager};
use crate::store::{AccountsStore, RefreshTokenRecord};

/// What the token endpoint hands out.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct IssuedTokens {
    /// The access token: a JWT (RFC 9068, `typ: at+jwt`) signed with a key of the JWKS.
    #[schema(example = "eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJSUzI1NiIsImtpZCI6Ii4uLiJ9...")]
    pub access_token: String,
    /// `Bearer`.
    #[schema(value_type = String, example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    pub expires_in: u64,
    /// A new refresh token (not for client credentials); the one redeemed is spent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Granted scopes, space-separated.
    #[schema(example = "payments:read payments:write")]
    pub scope: String,
}

/// The client id recorded in tokens issued to callers that did not authenticate a client
/// (the password and refresh grants of a first-party app).
pub const PUBLIC_CLIENT_ID: &str = "public";

/// Issues tokens with the active signing key.
pub struct Issuer {
    store: Arc<dyn AccountsStore>,
    keys: Arc<KeyManager>,
    config: Arc<AccountsConfig>,
}

impl Issuer {
    /// An issuer over `store` and `keys`.
    pub fn new(
        store: Arc<dyn AccountsStore>,
        keys: Arc<KeyManager>,
        config: Arc<AccountsConfig>,
    ) -> Self {
        Self {
            store,
            keys,
            config,
        }
    }

    /// A signed access token for `subject`, and its claims.
    pub async fn access_token(
        &self,
        subject: &str,
        client_id: &str,
        scopes: &Scopes,
        audiences: Vec<String>,
    ) -> Result<(String, AccessClaims), KeyError> {
        let now = Utc::now().timestamp();
        let ttl = i64::try_from(self.config.access_token_ttl.as_secs()).unwrap_or(900);
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            sub: subject.to_owned(),
            aud: Audience::Many(audiences),
            exp: now + ttl,
            iat: now,
            nbf: Some(now),
            jti: uuid::Uuid::new_v4().to_string(),
            client_id: client_id.to_owned(),
            scope: scopes.to_claim(),
        };
        let key = self.keys.active().await?;
        Ok((key.sign(&claims)?, claims))
    }

    /// Access and refresh token for a user; `family` continues a rotated family.
    pub async fn for_user(
        &self,
        user_id: &str,
        client_id: &str,
        scopes: &Scopes,
        family: Option<&str>,
    ) -> Result<IssuedTokens, KeyError> {
        // Users always may call accounts (/users/me) besides the services their scopes name.
        let mut audiences = scopes.audiences();
        if !audiences.iter().any(|a| a == "accounts") {
            audiences.insert(0, "accounts".to_owned());
        }
        let (access_token, _) = self
            .access_token(user_id, client_id, scopes, audiences)
            .await?;
        let refresh_token = new_refresh_token();
        let now = Utc::now();
        self.store
            .insert_refresh_token(&RefreshTokenRecord {
                id: uuid::Uuid::new_v4().to_string(),
                token_hash: hash_token(&refresh_token),
                family_id: family.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned),
                user_id: user_id.to_owned(),
                client_id: client_id.to_owned(),
                scope: scopes.to_claim(),
                created_at: now,
                expires_at: now + self.config.refresh_token_ttl,
                used_at: None,
                revoked_at: None,
            })
            .await?;
        Ok(IssuedTokens {
            access_token,
            token_type: "Bearer",
            expires_in: self.config.access_token_ttl.as_secs(),
            refresh_token: Some(refresh_token),
            scope: scopes.to_claim(),
        })
    }

    /// An access token for a service client (no refresh token).
    pub async fn for_client(
        &self,
        client_id: &str,
        scopes: &Scopes,
    ) -> Result<IssuedTokens, KeyError> {
        let mut audiences = scopes.audiences();
        if audiences.is_empty() {
            audiences.push("accounts".to_owned());
        }
        let (access_token, _) = self
            .access_token(client_id, client_id, scopes, audiences)
            .await?;
        Ok(IssuedTokens {
            access_token,
            token_type: "Bearer",
            expires_in: self.config.access_token_ttl.as_secs(),
            refresh_token: None,
            scope: scopes.to_claim(),
        })
    }
}

/// 256 random bits, base64url.
pub fn new_refresh_token() -> String {
    random_secret()
}

/// 256 random bits, base64url: refresh tokens and client secrets.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 (hex) of a high-entropy secret; what is stored instead of it.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Seconds since the epoch as a time.
pub fn from_timestamp(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or_else(Utc::now)
}
