//! `POST /v1/token` (RFC 6749: password, refresh_token, client_credentials),
//! `POST /v1/token/revoke` (RFC 7009) and `POST /v1/token/introspect` (RFC 7662).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::oauth::{
    ClientFields, OAuthBody, OAuthError, authenticate_client, no_store, presented_client,
    require_client,
};
use crate::domain::{Role, Scopes};
use crate::passwords::{self, Verdict};
use crate::store::Throttle;
use crate::tokens::{IssuedTokens, PUBLIC_CLIENT_ID, from_timestamp, hash_token};

/// The token endpoint's parameters, across grants.
#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    scope: Option<String>,
    refresh_token: Option<String>,
    #[serde(flatten)]
    client: ClientFields,
}

/// Failed logins allowed before an account is locked for a growing delay.
pub const FREE_FAILURES: i64 = 5;
/// The longest lock.
pub const MAX_LOCK_SECONDS: i64 = 15 * 60;

/// How long an account is locked after `failures` consecutive failures: nothing for the first
/// few, then 1 s, 2 s, 4 s ... up to 15 minutes.
pub fn lock_seconds(failures: i64) -> Option<i64> {
    let over = failures - FREE_FAILURES;
    (over >= 0).then(|| {
        1i64.checked_shl(u32::try_from(over).unwrap_or(u32::MAX))
            .unwrap_or(i64::MAX)
            .min(MAX_LOCK_SECONDS)
    })
}

/// `POST /v1/token`.
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    OAuthBody(request): OAuthBody<TokenRequest>,
) -> Result<Response, OAuthError> {
    let grant_type = request.grant_type.as_deref();
    let result = match grant_type {
        Some("password") => password_grant(&state, &headers, &request).await,
        Some("refresh_token") => refresh_grant(&state, &request).await,
        Some("client_credentials") => client_credentials_grant(&state, &headers, &request).await,
        Some(other) => Err(OAuthError::unsupported_grant_type(other)),
        None => Err(OAuthError::invalid_request("grant_type is required")),
    };
    state.token_metrics.token_request(
        grant_type,
        result.as_ref().map(drop).map_err(OAuthError::code),
    );
    let issued = result?;
    let mut response = axum::Json(issued).into_response();
    no_store(response.headers_mut());
    Ok(response)
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, OAuthError> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
}

async fn password_grant(
    state: &AppState,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<IssuedTokens, OAuthError> {
    let username = required(&request.username, "username")?;
    let password = required(&request.password, "password")?;
    // A client may identify itself; if it does, it must authenticate.
    let client_id = match presented_client(headers, &request.client)? {
        Some(presented) => {
            authenticate_client(state.store.as_ref(), &presented)
                .await?
                .client_id
        }
        None => PUBLIC_CLIENT_ID.to_owned(),
    };
    let email = username.trim().to_lowercase();
    let throttle_key = format!("login:{email}");
    let now = Utc::now();
    let throttle = state.store.throttle(&throttle_key).await?;
    if let Some(until) = throttle
        .and_then(|t| t.locked_until)
        .filter(|until| *until > now)
    {
        let wait = (until - now).num_milliseconds().max(0) as u64;
        return Err(OAuthError::throttled(wait.div_ceil(1000)));
    }

    // Unknown users are checked against a dummy hash: same answer, same time.
    let user = state.store.user_by_email(&email).await?;
    let verdict = passwords::verify(
        password.to_owned(),
        user.as_ref().map(|u| u.password_hash.clone()),
    )
    .await?;
    let user = match (user, verdict) {
        (Some(user), Verdict::Match | Verdict::MatchNeedsRehash) if !user.disabled => user,
        _ => {
            let failures = throttle.map_or(0, |t| t.failures) + 1;
            let locked_until = lock_seconds(failures).map(|s| now + chrono::Duration::seconds(s));
            state
                .store
                .set_throttle(
                    &throttle_key,
                    Throttle {
                        failures,
                        locked_until,
                    },
                    now,
                )
                .await?;
            return Err(OAuthError::invalid_grant("the email or password is wrong"));
        }
    };
    if throttle.is_some() {
        state.store.clear_throttle(&throttle_key).await?;
    }
    if verdict == Verdict::MatchNeedsRehash {
        let hash = passwords::hash(password.to_owned()).await?;
        state.store.set_password_hash(&user.id, &hash, now).await?;
        tracing::info!(user_id = %user.id, "password re-hashed with Argon2id");
    }
    let scopes = Scopes::grant(
        request.scope.as_deref(),
        &Role::from_db(&user.role).scopes(),
    )
    .map_err(OAuthError::invalid_scope)?;
    Ok(state
        .issuer
        .for_user(&user.id, &client_id, &scopes, None)
        .await?)
}

async fn refresh_grant(
    state: &AppState,
    request: &TokenRequest,
) -> Result<IssuedTokens, OAuthError> {
    let presented = required(&request.refresh_token, "refresh_token")?;
    let invalid = || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
    let record = state
        .store
        .refresh_token_by_hash(&hash_token(presented))
        .await?
        .ok_or_else(invalid)?;
    let now = Utc::now();
    if record.used_at.is_some() || record.revoked_at.is_some() {
        reuse_detected(state, &record.family_id).await?;
        return Err(invalid());
    }
    if record.expires_at <= now {
        return Err(invalid());
    }
    if !state.store.mark_refresh_token_used(&record.id, now).await? {
        // Someone spent it between our read and our write: that is reuse too.
        reuse_detected(state, &record.family_id).await?;
        return Err(invalid());
    }
    let user = state
        .store
        .user_by_id(&record.user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(invalid)?;
    let granted = Scopes::parse(&record.scope).map_err(|_| invalid())?;
    let scopes =
        Scopes::grant(request.scope.as_deref(), &granted).map_err(OAuthError::invalid_scope)?;
    Ok(state
        .issuer
        .for_user(
            &user.id,
            &record.client_id,
            &scopes,
            Some(&record.family_id),
        )
        .await?)
}

async fn reuse_detected(state: &AppState, family_id: &str) -> Result<(), OAuthError> {
    tracing::warn!(
        family_id,
        "refresh token reuse detected; revoking its family"
    );
    state
        .store
        .revoke_refresh_family(family_id, Utc::now())
        .await?;
    Ok(())
}

async fn client_credentials_grant(
    state: &AppState,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<IssuedTokens, OAuthError> {
    let client = require_client(state.store.as_ref(), headers, &request.client).await?;
    let allowed = Scopes::parse(&client.scopes)
        .map_err(|_| OAuthError::invalid_scope("the client's scopes are unknown"))?;
    let scopes =
        Scopes::grant(request.scope.as_deref(), &allowed).map_err(OAuthError::invalid_scope)?;
    Ok(state.issuer.for_client(&client.client_id, &scopes).await?)
}

/// RFC 7009 / RFC 7662 body.
#[derive(Debug, Deserialize)]
pub struct TokenParameter {
    token: Option<String>,
    #[serde(rename = "token_type_hint")]
    _hint: Option<String>,
    #[serde(flatten)]
    client: ClientFields,
}

/// `POST /v1/token/revoke`: 200 whether or not the token was known (RFC 7009 §2.2).
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    OAuthBody(request): OAuthBody<TokenParameter>,
) -> Result<Response, OAuthError> {
    if let Some(presented) = presented_client(&headers, &request.client)? {
        authenticate_client(state.store.as_ref(), &presented).await?;
    }
    let token = required(&request.token, "token")?;
    if token.matches('.').count() == 2 {
        if let Ok(claims) = state.verifier.verify(token).await {
            state
                .store
                .revoke_access_token(&claims.jti, from_timestamp(claims.exp))
                .await?;
        }
    } else if let Some(record) = state
        .store
        .refresh_token_by_hash(&hash_token(token))
        .await?
    {
        state
            .store
            .revoke_refresh_family(&record.family_id, Utc::now())
            .await?;
    }
    let mut response = axum::http::StatusCode::OK.into_response();
    no_store(response.headers_mut());
    Ok(response)
}

/// `POST /v1/token/introspect`: client authentication required; `{"active":false}` for anything
/// not currently valid.
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    OAuthBody(request): OAuthBody<TokenParameter>,
) -> Result<Response, OAuthError> {
    require_client(state.store.as_ref(), &headers, &request.client).await?;
    let token = required(&request.token, "token")?;
    let body = if token.matches('.').count() == 2 {
        match state.verifier.verify(token).await {
            Ok(claims) if !state.store.access_token_revoked(&claims.jti).await? => json!({
                "active": true,
                "token_type": "Bearer",
                "scope": claims.scope,
                "client_id": claims.client_id,
                "sub": claims.sub,
                "aud": claims.aud,
                "iss": claims.iss,
                "exp": claims.exp,
                "iat": claims.iat,
                "jti": claims.jti,
            }),
            _ => json!({"active": false}),
        }
    } else {
        match state
            .store
            .refresh_token_by_hash(&hash_token(token))
            .await?
        {
            Some(record)
                if record.used_at.is_none()
                    && record.revoked_at.is_none()
                    && record.expires_at > Utc::now() =>
            {
                json!({
                    "active": true,
                    "token_type": "refresh_token",
                    "scope": record.scope,
                    "client_id": record.client_id,
                    "sub": record.user_id,
                    "exp": record.expires_at.timestamp(),
                    "iat": record.created_at.timestamp(),
                })
            }
            _ => json!({"active": false}),
        }
    };
    let mut response = axum::Json(body).into_response();
    no_store(response.headers_mut());
    Ok(response)
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
