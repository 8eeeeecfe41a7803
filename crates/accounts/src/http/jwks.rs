//! `GET /.well-known/jwks.json` and `GET /.well-known/openid-configuration`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use serde_json::json;

use super::{ApiError, AppState};
use crate::domain::scope;

/// How long verifiers may cache the key set. A new key signs from the moment it is made, so
/// verifiers also refetch on an unknown `kid`; this bounds how long a removed key is trusted.
pub const JWKS_MAX_AGE_SECONDS: u32 = 300;

/// The JWK Set (RFC 7517): public parts only, of every key whose tokens may still be alive.
pub async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let keys = state.store.published_keys(chrono::Utc::now()).await?;
    let mut response = common::extract::Json(json!({ "keys": keys })).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("public, max-age={JWKS_MAX_AGE_SECONDS}"))
            .unwrap_or(HeaderValue::from_static("max-age=300")),
    );
    Ok(response)
}

/// Discovery (RFC 8414 / OpenID Connect Discovery): where everything is.
pub async fn discovery(State(state): State<AppState>) -> Response {
    let issuer = &state.config.issuer;
    let mut response = common::extract::Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "token_endpoint": format!("{issuer}/v1/token"),
        "revocation_endpoint": format!("{issuer}/v1/token/revoke"),
        "introspection_endpoint": format!("{issuer}/v1/token/introspect"),
        "grant_types_supported": ["password", "refresh_token", "client_credentials"],
        "response_types_supported": ["token"],
        "scopes_supported": scope::ALL,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "id_token_signing_alg_values_supported": ["RS256", "EdDSA"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "EdDSA"],
        "subject_types_supported": ["public"],
    }))
    .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}
