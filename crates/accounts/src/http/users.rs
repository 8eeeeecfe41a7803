//! `POST /v1/users` (sign-up) and `GET /users/me`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use common::auth::Authenticated;
use common::db::StoreError;
use common::extract::Json;
use common::problem::FieldError;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::domain::{Email, Password, Role};
use crate::passwords;
use crate::store::UserRecord;

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
    let name_error = name
        .as_ref()
        .filter(|n| n.chars().count() > 200)
        .map(|_| FieldError::new("name", "must be at most 200 characters"));
    let (email, password) = match (email, password, name_error) {
        (Ok(email), Ok(password), None) => (email, password),
        (email, password, name_error) => {
            let errors = [email.err(), password.err(), name_error];
            return Err(ApiError::Validation(errors.into_iter().flatten().collect()));
        }
    };
    let user = create_user(&state, &email, &password, name, Role::User).await?;
    Ok((StatusCode::CREATED, Json(UserView::from(user))))
}

/// Hashes the password and stores a new user; `EmailTaken` if the email exists.
pub async fn create_user(
    state: &AppState,
    email: &Email,
    password: &Password,
    name: Option<String>,
    role: Role,
) -> Result<UserRecord, ApiError> {
    let now = Utc::now();
    let user = UserRecord {
        id: format!("usr_{}", uuid::Uuid::now_v7().simple()),
        email: email.as_str().to_owned(),
        email_normalized: email.normalized(),
        name,
        password_hash: passwords::hash(password.expose().to_owned()).await?,
        role: role.as_str().to_owned(),
        disabled: false,
        created_at: now,
        updated_at: now,
    };
    match state.store.insert_user(&user).await {
        Ok(()) => Ok(user),
        Err(StoreError::Conflict(_)) => Err(ApiError::EmailTaken),
        Err(error) => Err(error.into()),
    }
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
