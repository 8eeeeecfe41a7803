//! Users and tokens. Issuance is the next milestone: until it lands no token can be valid,
//! so `/users/me` refuses every caller and the issuing routes say they are not built yet.

use axum::http::HeaderMap;
use http::header;

use super::ApiError;

/// `GET /users/me`: the caller's user. No token can be valid until issuance exists.
pub async fn me(headers: HeaderMap) -> ApiError {
    ApiError::Unauthorized {
        token_presented: headers.contains_key(header::AUTHORIZATION),
    }
}

/// `POST /v1/users`: sign-up.
pub async fn sign_up() -> ApiError {
    ApiError::NotImplemented("sign-up")
}

/// `POST /v1/token`: the OAuth 2.0 token endpoint.
pub async fn token() -> ApiError {
    ApiError::NotImplemented("the token endpoint")
}
