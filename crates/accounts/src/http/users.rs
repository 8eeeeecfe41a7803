//! `POST /v1/users` (sign-up) and `GET /users/me`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use common::auth::Authenticated;
use common::extract::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::domain::Role;
use crate::store::UserRecord;
use crate::users::{check_sign_up, create_user};

/// A user as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView {
    /// `usr_` and 32 hex digits; the `sub` of the user's tokens.
    #[schema(example = "usr_0193a8e27c1f7d2e9b513f0e6c2d9a44")]
    id: String,
    /// The email, as given (logins compare it case-insensitively).
    #[schema(example = "ada@example.com")]
    email: String,
    /// The display name.
    #[schema(example = "Ada Lovelace")]
    name: Option<String>,
    /// `user`; `admin` for administrators; `staff` for users imported with Django's
    /// `is_staff`.
    #[schema(example = json!(["user"]))]
    roles: Vec<&'static str>,
    /// For users imported from the monolith: their primary key there (also the
    /// `legacy_user_id` claim of their tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 42)]
    legacy_user_id: Option<i64>,
    /// For users imported from the monolith: their username there.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "ada")]
    username: Option<String>,
    /// When the account was created (RFC 3339).
    #[schema(value_type = String, format = DateTime, example = "2026-12-02T09:15:03.214Z")]
    created_at: DateTime<Utc>,
}

impl From<UserRecord> for UserView {
    fn from(user: UserRecord) -> Self {
        let mut roles = Role::from_db(&user.role).names();
        if user.legacy.is_staff {
            roles.push("staff");
        }
        Self {
            roles,
            legacy_user_id: user.legacy.legacy_user_id,
            username: user.legacy.username,
            id: user.id,
            email: user.email,
            name: user.name,
            created_at: user.created_at,
        }
    }
}

/// The sign-up body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SignUp {
    /// The email to log in with; unique, compared case-insensitively.
    #[schema(example = "ada@example.com", max_length = 254)]
    email: String,
    /// 8 to 128 characters.
    #[schema(example = "correct horse battery staple", min_length = 8, max_length = 128, format = Password)]
    password: String,
    /// A display name, at most 200 characters.
    #[serde(default)]
    #[schema(example = "Ada Lovelace", max_length = 200)]
    name: Option<String>,
}

/// `POST /v1/users` → 201 user; 409 `email_taken`; 422 for a bad email, password or name.
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    operation_id = "sign_up",
    summary = "Sign up",
    description = "Creates a user who can then log in at the token endpoint. Can be switched off (`ACCOUNTS_SIGNUP_ENABLED=false`).",
    request_body = SignUp,
    responses(
        (status = 201, description = "The new user", body = UserView),
        (status = 403, description = "`signup_disabled`: sign-up is switched off"),
        (status = 409, description = "`email_taken`: an account with this email exists"),
        (status = 422, description = "`validation_failed`: the email, password or name is not acceptable"),
    )
)]
pub async fn sign_up(
    State(state): State<AppState>,
    Json(body): Json<SignUp>,
) -> Result<impl IntoResponse, ApiError> {
    if !state.config.signup_enabled {
        return Err(ApiError::SignupDisabled);
    }
    let (email, password, name) =
        check_sign_up(&body.email, body.password, body.name).map_err(ApiError::Validation)?;
    let user = create_user(
        state.store.as_ref(),
        &state.hasher,
        &email,
        &password,
        name,
        Role::User,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(user))))
}

/// `GET /v1/users/me`: the caller's user.
#[utoipa::path(
    get,
    path = "/v1/users/me",
    tag = "users",
    operation_id = "get_me",
    summary = "The caller's user",
    description = "The user the access token was issued to.",
    responses(
        (status = 200, description = "The caller's user", body = UserView),
        (status = 404, description = "`not_found`: the token is a client's, which has no user"),
    ),
    security(("bearer" = []), ("oauth2" = []))
)]
pub async fn me(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<Json<UserView>, ApiError> {
    let user = caller_user(&state, &claims).await?;
    Ok(Json(UserView::from(user)))
}

/// The user an access token was issued to: refused when the token was revoked or the user is
/// disabled; 404 for a client's token, which has no user.
pub(super) async fn caller_user(
    state: &AppState,
    claims: &common::auth::AccessClaims,
) -> Result<UserRecord, ApiError> {
    // One query for both checks; only a token without a user (a client's) asks again.
    let found = state.store.token_user(&claims.sub, &claims.jti).await?;
    let revoked = match &found {
        Some(found) => found.token_revoked,
        None => state.store.access_token_revoked(&claims.jti).await?,
    };
    if revoked {
        return Err(ApiError::Unauthorized("the access token was revoked"));
    }
    let user = found
        .ok_or(ApiError::NotFound(
            "user for this token (client tokens have none)",
        ))?
        .user;
    if user.disabled {
        return Err(ApiError::Unauthorized("the account is disabled"));
    }
    Ok(user)
}
