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
use crate::domain::{Scopes, scope};
use crate::keys::{KeyError, KeyManager};
use crate::oidc::{IdTokenClaims, at_hash, identity_claims};
use crate::store::{AccountsStore, AuthorizationCodeRecord, RefreshTokenRecord, UserRecord};

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
    /// The ID token (authorization code grant with the `openid` scope): a JWT for the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// What redeeming an authorization code issued, to be recorded against the code.
pub struct CodeTokens {
    /// The response.
    pub tokens: IssuedTokens,
    /// The access token's claims.
    pub access: AccessClaims,
    /// The refresh-token family started, if any.
    pub refresh_family: Option<String>,
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

    /// A signed access token for `subject` (with the monolith's id of an imported user), and
    /// its claims.
    pub async fn access_token(
        &self,
        subject: &str,
        legacy_user_id: Option<i64>,
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
            legacy_user_id,
        };
        let key = self.keys.active().await?;
        Ok((key.sign(&claims)?, claims))
    }

    /// Access and refresh token for a user; `family` continues a rotated family.
    pub async fn for_user(
        &self,
        user: &UserRecord,
        client_id: &str,
        scopes: &Scopes,
        family: Option<&str>,
    ) -> Result<IssuedTokens, KeyError> {
        Ok(self
            .user_tokens(user, client_id, scopes, Some(family))
            .await?
            .tokens)
    }

    /// An access token for a user, and a refresh token when `refresh` says so (`Some(None)`:
    /// a new family; `Some(Some(family))`: continuing one).
    async fn user_tokens(
        &self,
        user: &UserRecord,
        client_id: &str,
        scopes: &Scopes,
        refresh: Option<Option<&str>>,
    ) -> Result<CodeTokens, KeyError> {
        // Users always may call accounts (/users/me) besides the services their scopes name.
        let mut audiences = scopes.audiences();
        if !audiences.iter().any(|a| a == "accounts") {
            audiences.insert(0, "accounts".to_owned());
        }
        let user_id = user.id.as_str();
        let (access_token, access) = self
            .access_token(
                user_id,
                user.legacy.legacy_user_id,
                client_id,
                scopes,
                audiences,
            )
            .await?;
        let mut refresh_family = None;
        let mut refresh_token = None;
        if let Some(family) = refresh {
            let token = new_refresh_token();
            let family_id = family.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
            let now = Utc::now();
            self.store
                .insert_refresh_token(&RefreshTokenRecord {
                    id: uuid::Uuid::new_v4().to_string(),
                    token_hash: hash_token(&token),
                    family_id: family_id.clone(),
                    user_id: user_id.to_owned(),
                    client_id: client_id.to_owned(),
                    scope: scopes.to_claim(),
                    created_at: now,
                    expires_at: now + self.config.refresh_token_ttl,
                    used_at: None,
                    revoked_at: None,
                })
                .await?;
            refresh_family = Some(family_id);
            refresh_token = Some(token);
        }
        Ok(CodeTokens {
            tokens: IssuedTokens {
                access_token,
                token_type: "Bearer",
                expires_in: self.config.access_token_ttl.as_secs(),
                refresh_token,
                scope: scopes.to_claim(),
                id_token: None,
            },
            access,
            refresh_family,
        })
    }

    /// What an authorization code buys: an access token, a refresh token when `refresh`, and
    /// an ID token when the code's scopes include `openid`.
    pub async fn for_code(
        &self,
        code: &AuthorizationCodeRecord,
        user: &UserRecord,
        refresh: bool,
    ) -> Result<CodeTokens, KeyError> {
        let scopes = Scopes::parse(&code.scope).unwrap_or_default();
        let mut issued = self
            .user_tokens(user, &code.client_id, &scopes, refresh.then_some(None))
            .await?;
        if scopes.contains(scope::OPENID) {
            let key = self.keys.active().await?;
            let (email, email_verified, name) = identity_claims(user, &scopes);
            let claims = IdTokenClaims {
                iss: self.config.issuer.clone(),
                sub: user.id.clone(),
                aud: code.client_id.clone(),
                exp: issued.access.exp,
                iat: issued.access.iat,
                auth_time: code.auth_time.timestamp(),
                nonce: code.nonce.clone(),
                at_hash: Some(at_hash(&issued.tokens.access_token, key.algorithm())),
                sid: Some(code.sid.clone()),
                email,
                email_verified,
                name,
                legacy_user_id: user.legacy.legacy_user_id,
            };
            issued.tokens.id_token = Some(key.sign_as(&claims, "JWT")?);
        }
        Ok(issued)
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
            .access_token(client_id, None, client_id, scopes, audiences)
            .await?;
        Ok(IssuedTokens {
            access_token,
            token_type: "Bearer",
            expires_in: self.config.access_token_ttl.as_secs(),
            refresh_token: None,
            scope: scopes.to_claim(),
            id_token: None,
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
