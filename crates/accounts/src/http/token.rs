//! `POST /v1/token` (RFC 6749: password, refresh_token, client_credentials),
//! `POST /v1/token/revoke` (RFC 7009) and `POST /v1/token/introspect` (RFC 7662).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use common::auth::Audience;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::oauth::{
    ClientFields, OAuthBody, OAuthError, OAuthErrorBody, authenticate_client, identify_client,
    no_store, presented_client, require_client,
};
use crate::clients::{ClientMetadata, grant};
use crate::domain::{Role, Scopes};
use crate::login;
use crate::oidc;
use crate::tokens::{IssuedTokens, PUBLIC_CLIENT_ID, from_timestamp, hash_token};

/// The token endpoint's parameters, across grants (RFC 6749 §4.3, §6, §4.4).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({
    "grant_type": "password",
    "username": "ada@example.com",
    "password": "correct horse battery staple",
    "scope": "payments:read payments:write"
}))]
pub struct TokenRequest {
    /// `password`, `refresh_token` or `client_credentials`.
    #[schema(value_type = GrantType)]
    grant_type: Option<String>,
    /// `password` grant: the email.
    username: Option<String>,
    /// `password` grant: the password.
    #[schema(format = Password)]
    password: Option<String>,
    /// Space-separated scopes to narrow the grant to (default: all the caller may have).
    #[schema(example = "payments:read payments:write")]
    scope: Option<String>,
    /// `refresh_token` grant: the refresh token to redeem (it is spent; a new one is issued).
    refresh_token: Option<String>,
    /// `authorization_code` grant: the code the authorization endpoint sent.
    code: Option<String>,
    /// `authorization_code` grant: the redirect URI of the authorization request.
    redirect_uri: Option<String>,
    /// `authorization_code` grant: the PKCE verifier (RFC 7636).
    code_verifier: Option<String>,
    #[serde(flatten)]
    client: ClientFields,
}

/// The grants the token endpoint knows.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum GrantType {
    /// A code from the authorization endpoint (browser sign-in).
    AuthorizationCode,
    /// A user's email and password (can be switched off: `ACCOUNTS_PASSWORD_GRANT_ENABLED`).
    Password,
    /// A refresh token (rotated at each use).
    RefreshToken,
    /// A client's own credentials.
    ClientCredentials,
}

/// `POST /v1/token`.
#[utoipa::path(
    post,
    path = "/v1/token",
    tag = "oauth",
    operation_id = "token",
    summary = "Issue tokens (OAuth 2.0 token endpoint)",
    description = "RFC 6749: the `authorization_code` (with PKCE, RFC 7636; an `id_token` with the `openid` scope), `password`, `refresh_token` and `client_credentials` grants. A public client names itself with `client_id` alone. Parameters form-encoded (or JSON). A client authenticates with HTTP Basic or `client_id`/`client_secret` fields; the password and refresh grants may be used without one. Errors are RFC 6749 `{\"error\", \"error_description\"}` bodies. Responses are `Cache-Control: no-store`.",
    request_body(content(
        (TokenRequest = "application/x-www-form-urlencoded"),
        (TokenRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "Tokens issued", body = IssuedTokens, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "RFC 6749 error `invalid_request`, `invalid_grant` (wrong email or password, a spent or revoked refresh token), `invalid_scope` or `unsupported_grant_type`", body = OAuthErrorBody),
        (status = 401, description = "RFC 6749 error `invalid_client`: client authentication failed", body = OAuthErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Basic` when the client tried HTTP Basic"))),
        (status = 429, description = "RFC 6749 error `temporarily_unavailable`: too many failed logins for this account; retry after `Retry-After`", body = OAuthErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 503, description = "RFC 6749 error `temporarily_unavailable`: the service is busy or cannot reach its database", body = OAuthErrorBody),
        (status = 500, description = "RFC 6749 error `server_error`", body = OAuthErrorBody),
    ),
    security((), ("client_basic" = []))
)]
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    OAuthBody(request): OAuthBody<TokenRequest>,
) -> Result<Response, OAuthError> {
    let grant_type = request.grant_type.as_deref();
    let result = match grant_type {
        Some("authorization_code") => code_grant(&state, &headers, &request).await,
        Some("password") if !state.config.password_grant_enabled => {
            Err(OAuthError::unsupported_grant_type_because(
                "password",
                "the password grant is switched off; sign in through the authorization endpoint",
            ))
        }
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
        .for_user(&user, &client_id, &scopes, None)
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
    let client = identify_client(state.store.as_ref(), headers, &request.client).await?;
    let (record, user) =
        login::redeem_refresh_token(state.store.as_ref(), presented, client.as_ref(), Utc::now())
            .await?;
    let granted = Scopes::parse(&record.scope)
        .map_err(|_| OAuthError::invalid_grant("the refresh token's scope is no longer known"))?;
    let scopes =
        Scopes::grant(request.scope.as_deref(), &granted).map_err(OAuthError::invalid_scope)?;
    Ok(state
        .issuer
        .for_user(&user, &record.client_id, &scopes, Some(&record.family_id))
        .await?)
}

/// RFC 6749 §4.1.3 with RFC 7636: a code from the authorization endpoint, redeemed once by
/// the client it was issued to, with the same redirect URI and the PKCE verifier.
async fn code_grant(
    state: &AppState,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<IssuedTokens, OAuthError> {
    let code = required(&request.code, "code")?;
    let redirect_uri = required(&request.redirect_uri, "redirect_uri")?;
    let client = identify_client(state.store.as_ref(), headers, &request.client)
        .await?
        .ok_or_else(|| OAuthError::invalid_client(false))?;
    let metadata = ClientMetadata::of(&client);
    if !metadata.allows(grant::AUTHORIZATION_CODE) {
        return Err(OAuthError::unauthorized_client(
            "the client is not registered for the authorization_code grant",
        ));
    }
    let (record, user) = oidc::redeem_code(
        state.store.as_ref(),
        code,
        &client,
        redirect_uri,
        request.code_verifier.as_deref(),
        Utc::now(),
    )
    .await?;
    let issued = state
        .issuer
        .for_code(&record, &user, metadata.allows(grant::REFRESH_TOKEN))
        .await?;
    state
        .store
        .record_code_tokens(
            &record.code_hash,
            issued.refresh_family.as_deref(),
            &issued.access.jti,
            from_timestamp(issued.access.exp),
        )
        .await?;
    Ok(issued.tokens)
}

async fn client_credentials_grant(
    state: &AppState,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<IssuedTokens, OAuthError> {
    let client = require_client(state.store.as_ref(), headers, &request.client).await?;
    if !ClientMetadata::of(&client).allows(grant::CLIENT_CREDENTIALS) {
        return Err(OAuthError::unauthorized_client(
            "the client is not registered for the client_credentials grant",
        ));
    }
    let allowed = Scopes::parse(&client.scopes)
        .map_err(|_| OAuthError::invalid_scope("the client's scopes are unknown"))?;
    let scopes =
        Scopes::grant(request.scope.as_deref(), &allowed).map_err(OAuthError::invalid_scope)?;
    Ok(state.issuer.for_client(&client.client_id, &scopes).await?)
}

/// RFC 7009 / RFC 7662 body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenParameter {
    /// The access or refresh token.
    token: Option<String>,
    /// `access_token` or `refresh_token` (a hint; the token's form decides).
    #[serde(rename = "token_type_hint")]
    #[schema(rename = "token_type_hint")]
    _hint: Option<String>,
    #[serde(flatten)]
    client: ClientFields,
}

/// `POST /v1/token/revoke`: 200 whether or not the token was known (RFC 7009 §2.2).
#[utoipa::path(
    post,
    path = "/v1/token/revoke",
    tag = "oauth",
    operation_id = "revoke",
    summary = "Revoke a token (RFC 7009)",
    description = "Revokes an access token, or a refresh token with its whole family. 200 for unknown tokens too. Only the client a token was issued to may revoke it (RFC 7009 §2.1): a confidential client authenticates (HTTP Basic or `client_id`/`client_secret`), a public one names itself with `client_id`; a first-party token (a password login without a client) is revoked by a request from no client.",
    request_body(content(
        (TokenParameter = "application/x-www-form-urlencoded"),
        (TokenParameter = "application/json"),
    )),
    responses(
        (status = 200, description = "Revoked (or not a token of ours)"),
        (status = 400, description = "RFC 6749 error `invalid_request`: no `token`; `unauthorized_client`: the token was issued to another client", body = OAuthErrorBody),
        (status = 401, description = "RFC 6749 error `invalid_client`: client authentication failed, or the token's client did not authenticate", body = OAuthErrorBody),
        (status = 503, description = "RFC 6749 error `temporarily_unavailable`", body = OAuthErrorBody),
    ),
    security((), ("client_basic" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    OAuthBody(request): OAuthBody<TokenParameter>,
) -> Result<Response, OAuthError> {
    let client = identify_client(state.store.as_ref(), &headers, &request.client).await?;
    let token = required(&request.token, "token")?;
    // RFC 7009 §2.1: only the client a token was issued to may revoke it.
    let may_revoke = |issued_to: &str| {
        login::issued_to(issued_to, client.as_ref()).map_err(|refused| match refused {
            login::NotIssuedTo::AnotherClient => {
                OAuthError::unauthorized_client("the token was not issued to this client")
            }
            login::NotIssuedTo::ClientMustIdentify => OAuthError::invalid_client(false),
        })
    };
    if token.matches('.').count() == 2 {
        if let Ok(claims) = state.verifier.verify(token).await {
            may_revoke(&claims.client_id)?;
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
        may_revoke(&record.client_id)?;
        state
            .store
            .revoke_refresh_family(&record.family_id, Utc::now())
            .await?;
    }
    let mut response = axum::http::StatusCode::OK.into_response();
    no_store(response.headers_mut());
    Ok(response)
}

/// What introspection says of a token (RFC 7662): `{"active": false}` alone, or its claims.
#[derive(Debug, Serialize, ToSchema)]
pub struct Introspection {
    /// Whether the token is valid now.
    active: bool,
    /// `Bearer` (an access token) or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
    /// Space-separated scopes.
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// The client it was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    /// The user (or client) it stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    /// Access tokens: the services it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<Audience>,
    /// Access tokens: the issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    /// Expiry, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    /// Issued at, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    /// Access tokens: the token's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
}

impl Introspection {
    const INACTIVE: Self = Self {
        active: false,
        token_type: None,
        scope: None,
        client_id: None,
        sub: None,
        aud: None,
        iss: None,
        exp: None,
        iat: None,
        jti: None,
    };
}

/// `POST /v1/token/introspect`: client authentication required; `{"active":false}` for anything
/// not currently valid.
#[utoipa::path(
    post,
    path = "/v1/token/introspect",
    tag = "oauth",
    operation_id = "introspect",
    summary = "Introspect a token (RFC 7662)",
    description = "Whether a token is valid now, with its claims; exactly `{\"active\": false}` otherwise. Client authentication is required.",
    request_body(content(
        (TokenParameter = "application/x-www-form-urlencoded"),
        (TokenParameter = "application/json"),
    )),
    responses(
        (status = 200, description = "The token's state", body = Introspection),
        (status = 400, description = "RFC 6749 error `invalid_request`: no `token`", body = OAuthErrorBody),
        (status = 401, description = "RFC 6749 error `invalid_client`: no or wrong client credentials", body = OAuthErrorBody),
        (status = 503, description = "RFC 6749 error `temporarily_unavailable`", body = OAuthErrorBody),
    ),
    security(("client_basic" = []))
)]
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    OAuthBody(request): OAuthBody<TokenParameter>,
) -> Result<Response, OAuthError> {
    require_client(state.store.as_ref(), &headers, &request.client).await?;
    let token = required(&request.token, "token")?;
    let body = if token.matches('.').count() == 2 {
        match state.verifier.verify(token).await {
            Ok(claims) if !state.store.access_token_revoked(&claims.jti).await? => Introspection {
                active: true,
                token_type: Some("Bearer"),
                scope: Some(claims.scope),
                client_id: Some(claims.client_id),
                sub: Some(claims.sub),
                aud: Some(claims.aud),
                iss: Some(claims.iss),
                exp: Some(claims.exp),
                iat: Some(claims.iat),
                jti: Some(claims.jti),
            },
            _ => Introspection::INACTIVE,
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
                Introspection {
                    active: true,
                    token_type: Some("refresh_token"),
                    scope: Some(record.scope),
                    client_id: Some(record.client_id),
                    sub: Some(record.user_id),
                    exp: Some(record.expires_at.timestamp()),
                    iat: Some(record.created_at.timestamp()),
                    ..Introspection::INACTIVE
                }
            }
            _ => Introspection::INACTIVE,
        }
    };
    let mut response = axum::Json(body).into_response();
    no_store(response.headers_mut());
    Ok(response)
}
