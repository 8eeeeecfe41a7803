//! Administration (`accounts:admin`): key rotation, user import, disabling users (clients:
//! `clients.rs`).

use axum::extract::State;
use axum::response::IntoResponse;
use chrono::Utc;
use common::auth::Authenticated;
use common::extract::{Json, Path};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::users::UserView;
use super::{ApiError, AppState};
use crate::domain::scope;
use crate::import::{ImportReport, import_users};

pub(super) fn require_admin(caller: &Authenticated) -> Result<(), ApiError> {
    caller
        .require_scope(scope::ACCOUNTS_ADMIN)
        .map_err(ApiError::from)
}

/// The body of `POST /v1/admin/keys/rotate` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeys {
    /// Replace the signing key at once and unpublish it (a compromised key): every token it
    /// signed stops verifying.
    #[serde(default)]
    emergency: bool,
}

/// What a rotation did.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyRotation {
    /// The key that signs next.
    kid: String,
    /// From when it signs.
    #[schema(value_type = String, format = DateTime)]
    activates_at: chrono::DateTime<Utc>,
    /// The key published to follow it (not for an emergency replacement).
    #[serde(skip_serializing_if = "Option::is_none")]
    next_kid: Option<String>,
    /// Whether the old key was withdrawn at once.
    emergency: bool,
}

/// `POST /v1/admin/keys/rotate` → the key that signs next and from when: now if it has been
/// published long enough, else once it has (`ACCOUNTS_KEY_PREPUBLISH_SECONDS`). The old key
/// stays in the JWKS until every token it signed has expired. With `{"emergency": true}` a new
/// key signs at once and the old one leaves the JWKS now.
#[utoipa::path(
    post,
    path = "/v1/admin/keys/rotate",
    tag = "admin",
    operation_id = "rotate_keys",
    summary = "Rotate the signing key",
    description = "The pre-published next key signs from now if it has been in the JWKS long enough, else from when it has (`ACCOUNTS_KEY_PREPUBLISH_SECONDS`); the old key stays published until every token it signed has expired. `{\"emergency\": true}` (a compromised key): a new key signs at once and the old one leaves the JWKS now, so every token it signed stops verifying.",
    request_body(content = Option<RotateKeys>, content_type = "application/json"),
    responses((status = 200, description = "The key that signs next, and from when", body = KeyRotation)),
    security(("bearer" = ["accounts:admin"]), ("oauth2" = ["accounts:admin"]))
)]
pub async fn rotate_keys(
    State(state): State<AppState>,
    caller: Authenticated,
    body: Result<Option<Json<RotateKeys>>, common::Problem>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let body = body?.map(|Json(body)| body).unwrap_or_default();
    if body.emergency {
        let kid = state.keys.replace_now().await?;
        // This replica stops accepting the old key's tokens now; the others within the
        // seconds their own key cache lasts.
        state.verifier.forget_keys().await;
        tracing::warn!(%kid, by = %caller.0.sub, "signing key replaced at once (emergency)");
        return Ok(Json(KeyRotation {
            kid,
            activates_at: Utc::now(),
            next_kid: None,
            emergency: true,
        }));
    }
    let rotation = state.keys.rotate().await?;
    tracing::info!(kid = %rotation.kid, activates_at = %rotation.activates_at, by = %caller.0.sub, "signing key rotated on demand");
    Ok(Json(KeyRotation {
        kid: rotation.kid,
        activates_at: rotation.activates_at,
        next_kid: Some(rotation.next_kid),
        emergency: false,
    }))
}

/// An entry of `manage.py dumpdata auth.user` (others are skipped). Documentation only: each
/// entry is read on its own, so one bad entry is refused without failing the rest.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DumpedUser {
    /// `auth.user`.
    #[schema(example = "auth.user")]
    model: String,
    /// The monolith's user id (kept as `legacy_user_id`). In an export, `null` for users
    /// created in accounts: `loaddata` gives them a new one.
    #[schema(example = 42)]
    pk: Option<i64>,
    /// The user's fields as Django dumps them (`username`, `email`, `password` — a Django hash —,
    /// `first_name`, `last_name`, `is_active`, `is_staff`, `is_superuser`, `date_joined`).
    #[schema(value_type = Object)]
    fields: serde_json::Value,
}

/// `POST /v1/admin/users/import` with `manage.py dumpdata auth.user` output.
#[utoipa::path(
    post,
    path = "/v1/admin/users/import",
    tag = "admin",
    operation_id = "import_users",
    summary = "Import the monolith's users",
    description = "The JSON array `manage.py dumpdata auth.user` writes. Users keep their Django password hashes (PBKDF2, Argon2, bcrypt within cost limits), rehashed to Argon2id at their next login; existing emails are skipped; entries that cannot be imported are listed with the reason.",
    request_body(content = Vec<DumpedUser>, content_type = "application/json"),
    responses((status = 200, description = "What the import did", body = ImportReport)),
    security(("bearer" = ["accounts:admin"]), ("oauth2" = ["accounts:admin"]))
)]
pub async fn import(
    State(state): State<AppState>,
    caller: Authenticated,
    Json(entries): Json<Vec<serde_json::Value>>,
) -> Result<Json<ImportReport>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(import_users(state.store.as_ref(), &entries).await?))
}

/// The body of `PATCH /v1/admin/users/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    /// Disable (or enable) the account. Disabling ends its browser sessions and revokes its
    /// refresh tokens; its access tokens stop working at `/users/me` and `/userinfo` at once
    /// and elsewhere when they expire.
    disabled: bool,
}

/// `PATCH /v1/admin/users/{id}`: disables or enables a user.
#[utoipa::path(
    patch,
    path = "/v1/admin/users/{id}",
    tag = "admin",
    operation_id = "update_user",
    summary = "Disable or enable a user",
    description = "Disabling ends the user's browser sessions and revokes their refresh tokens in the same transaction; they can no longer log in. An administrator cannot disable their own account (422), so the last one cannot lock everyone out.",
    params(("id" = String, Path, description = "The user's id (`usr_...`)")),
    request_body = UserChange,
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "`not_found`: no such user"),
        (status = 422, description = "`validation_failed`: an administrator cannot disable their own account"),
    ),
    security(("bearer" = ["accounts:admin"]), ("oauth2" = ["accounts:admin"]))
)]
pub async fn update_user(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    Json(change): Json<UserChange>,
) -> Result<Json<UserView>, ApiError> {
    require_admin(&caller)?;
    if change.disabled && caller.0.sub == id {
        // An administrator who disables themselves may be the last one: nobody could undo it.
        return Err(ApiError::Validation(vec![
            common::problem::FieldError::new(
                "disabled",
                "you cannot disable your own account; ask another administrator",
            ),
        ]));
    }
    if !state
        .store
        .set_user_disabled(&id, change.disabled, Utc::now())
        .await?
    {
        return Err(ApiError::NotFound("user"));
    }
    tracing::info!(user_id = %id, disabled = change.disabled, by = %caller.0.sub, "user changed");
    let user = state
        .store
        .user_by_id(&id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok(Json(UserView::from(user)))
}

/// `GET /v1/admin/users/export`: every user in `manage.py loaddata` form.
#[utoipa::path(
    get,
    path = "/v1/admin/users/export",
    tag = "admin",
    operation_id = "export_users",
    summary = "Export the users for the monolith (the way back)",
    description = "A `manage.py loaddata` JSON array of `auth.user` entries: imported users with their Django primary key, username and groups; users created here with `pk: null` and their email as username. Password hashes are in a form Django verifies: imported hashes as they came, ours as Django's `argon2$argon2id$...`. Also `accounts export-users FILE`.",
    responses((status = 200, description = "The users", content_type = "application/json", body = Vec<DumpedUser>)),
    security(("bearer" = ["accounts:admin"]), ("oauth2" = ["accounts:admin"]))
)]
pub async fn export(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<axum::response::Response, ApiError> {
    require_admin(&caller)?;
    let mut body = Vec::new();
    let written = crate::export::export_users(state.store.as_ref(), |bytes| {
        body.extend_from_slice(bytes);
        Ok(())
    })
    .await
    .map_err(|error| match error {
        crate::export::ExportError::Store(error) => ApiError::Store(error),
        crate::export::ExportError::Write(error) => ApiError::Internal(error.into()),
    })?;
    tracing::info!(users = written, by = %caller.0.sub, "users exported");
    Ok(([(http::header::CONTENT_TYPE, "application/json")], body).into_response())
}
