//! `GET /.well-known/jwks.json`: the public keys that verify our access tokens.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use serde_json::json;

use super::{ApiError, AppState};

/// How long verifiers may cache the key set. Short enough that a rotated-in key is picked up
/// well before it signs anything (verifiers also refetch on an unknown `kid`).
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
