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
use crate::login;
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

/// `POST /v1/token`.
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    OAuthBody(request): OAuthBody<TokenRequest>,
) -> Result<Response, OAuthError> {
    let grant_type = request.grant_type.as_deref();
    let result = match grant_type {
        Some("password") => password_grant(&state, &headers, &request).await,
        Some("refresh_token") => refresh_grant(&state, &headers, &request).await,
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
    let user = login::password_login(
        state.store.as_ref(),
        &state.hasher,
        username,
        password,
        Utc::now(),
    )
    .await?;
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

/// RFC 6749 §6: a refresh token issued to a confidential client is redeemed only by that
/// client, authenticated.
async fn refresh_grant(
    state: &AppState,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<IssuedTokens, OAuthError> {
    let presented = required(&request.refresh_token, "refresh_token")?;
    let client = match presented_client(headers, &request.client)? {
        Some(presented) => Some(authenticate_client(state.store.as_ref(), &presented).await?),
        None => None,
    };
    let (record, user) =
        login::redeem_refresh_token(state.store.as_ref(), presented, client.as_ref(), Utc::now())
            .await?;
    let granted = Scopes::parse(&record.scope)
        .map_err(|_| OAuthError::invalid_grant("the refresh token's scope is no longer known"))?;
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
