//! `GET`/`POST /userinfo` (OpenID Connect Core §5.3): the caller's identity claims, per the
//! scopes of the access token.

use axum::extract::State;
use common::auth::Authenticated;
use common::extract::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::users::caller_user;
use super::{ApiError, AppState};
use crate::domain::{Scopes, scope};
use crate::oidc::identity_claims;

/// The user's claims.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserInfo {
    /// The user's id (the `sub` of their tokens).
    #[schema(example = "usr_0193a8e27c1f7d2e9b513f0e6c2d9a44")]
    sub: String,
    /// `email` scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "ada@example.com")]
    email: Option<String>,
    /// `email` scope: accounts does not verify addresses, so `false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    email_verified: Option<bool>,
    /// `profile` scope, when the user has a name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "Ada Lovelace")]
    name: Option<String>,
    /// For users imported from the monolith: their id there.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 42)]
    legacy_user_id: Option<i64>,
}

/// `GET /userinfo`.
#[utoipa::path(
    get,
    path = "/userinfo",
    tag = "sign-in",
    operation_id = "userinfo",
    summary = "The signed-in user's claims (OpenID Connect userinfo)",
    description = "Bearer access token with the `openid` scope. `email` and `email_verified` with the `email` scope, `name` with `profile`.",
    responses(
        (status = 200, description = "The claims", body = UserInfo),
        (status = 404, description = "`not_found`: the token is a client's, which has no user"),
    ),
    security(("bearer" = ["openid"]), ("oauth2" = ["openid"]))
)]
pub async fn userinfo(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<UserInfo>, ApiError> {
    caller.require_scope(scope::OPENID)?;
    let claims = caller.0;
    let user = caller_user(&state, &claims).await?;
    let scopes =
        Scopes::from_iter_checked(claims.scope.split_ascii_whitespace()).unwrap_or_default();
    let (email, email_verified, name) = identity_claims(&user, &scopes);
    Ok(Json(UserInfo {
        legacy_user_id: user.legacy.legacy_user_id,
        sub: user.id,
        email,
        email_verified,
        name,
    }))
}

/// `POST /userinfo`: the same, for clients that post.
#[utoipa::path(
    post,
    path = "/userinfo",
    tag = "sign-in",
    operation_id = "userinfo_post",
    summary = "The signed-in user's claims (POST)",
    responses(
        (status = 200, description = "The claims", body = UserInfo),
        (status = 404, description = "`not_found`: the token is a client's, which has no user"),
    ),
    security(("bearer" = ["openid"]), ("oauth2" = ["openid"]))
)]
pub async fn userinfo_post(
    state: State<AppState>,
    caller: Authenticated,
) -> Result<Json<UserInfo>, ApiError> {
    userinfo(state, caller).await
}
