//! `POST /v1/users` (sign-up) and `GET /users/me`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use common::auth::Authenticated;
use common::extract::Json;
use common::problem::FieldError;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::domain::{Email, Password, Role, name_char_allowed};
use crate::store::UserRecord;
use crate::users::create_user;

/// A user as the API shows it.
#[derive(Debug, Serialize)]
pub struct UserView {
    id: String,
    email: String,
    name: Option<String>,
    roles: Vec<&'static str>,
    created_at: DateTime<Utc>,
}

impl From<UserRecord> for UserView {
    fn from(user: UserRecord) -> Self {
        Self {
            roles: Role::from_db(&user.role).names(),
            id: user.id,
            email: user.email,
            name: user.name,
            created_at: user.created_at,
        }
    }
}

/// The sign-up body.
#[derive(Debug, Deserialize)]
pub struct SignUp {
    email: String,
    password: String,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /v1/users` → 201 user; 409 `email_taken`; 422 for a bad email, password or name.
pub async fn sign_up(
    State(state): State<AppState>,
    Json(body): Json<SignUp>,
) -> Result<impl IntoResponse, ApiError> {
    if !state.config.signup_enabled {
        return Err(ApiError::SignupDisabled);
    }
    let email = Email::parse(&body.email);
    let password = Password::parse(body.password);
    let name = body
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    let name_error = name.as_ref().and_then(|n| {
        if n.chars().count() > 200 {
            Some(FieldError::new("name", "must be at most 200 characters"))
        } else if !n.chars().all(name_char_allowed) {
            Some(FieldError::new(
                "name",
                "must not contain control characters or bidi overrides",
            ))
        } else {
            None
        }
    });
    let (email, password) = match (email, password, name_error) {
        (Ok(email), Ok(password), None) => (email, password),
        (email, password, name_error) => {
            let errors = [email.err(), password.err(), name_error];
            return Err(ApiError::Validation(errors.into_iter().flatten().collect()));
        }
    };
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

/// `GET /users/me`, `GET /v1/users/me`: the caller's user.
pub async fn me(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<Json<UserView>, ApiError> {
    if state.store.access_token_revoked(&claims.jti).await? {
        return Err(ApiError::Unauthorized("the access token was revoked"));
    }
    let user = state
        .store
        .user_by_id(&claims.sub)
        .await?
        .ok_or(ApiError::NotFound(
            "user for this token (client tokens have none)",
        ))?;
    if user.disabled {
        return Err(ApiError::Unauthorized("the account is disabled"));
    }
    Ok(Json(UserView::from(user)))
}
