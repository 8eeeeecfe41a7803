//! Administration (`accounts:admin`): service clients, key rotation, user import.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::Utc;
use common::auth::Authenticated;
use common::extract::Json;
use common::problem::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::domain::{Scopes, scope};
use crate::import::{ImportReport, import_users};
use crate::store::ClientRecord;
use crate::tokens::{hash_token, random_secret};

fn require_admin(caller: &Authenticated) -> Result<(), ApiError> {
    caller
        .require_scope(scope::ACCOUNTS_ADMIN)
        .map_err(ApiError::from)
}

/// The body of `POST /v1/admin/clients`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"name": "monolith", "scopes": ["payments:write", "payments:read"]}))]
pub struct NewClient {
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// The scopes its tokens may carry (at least one).
    #[schema(value_type = Vec<ScopeName>, min_items = 1)]
    scopes: Vec<String>,
}

/// A scope.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ScopeName {
    /// `payments:read`.
    #[schema(rename = "payments:read")]
    PaymentsRead,
    /// `payments:write`.
    #[schema(rename = "payments:write")]
    PaymentsWrite,
    /// `payments:admin`.
    #[schema(rename = "payments:admin")]
    PaymentsAdmin,
    /// `accounts:admin`.
    #[schema(rename = "accounts:admin")]
    AccountsAdmin,
}

/// A client just created: its secret is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedClient {
    /// `cli_` and 32 hex digits.
    #[schema(example = "cli_0193a8e27c1f7d2e9b513f0e6c2d9a44")]
    client_id: String,
    /// The secret: keep it, it cannot be read again.
    client_secret: String,
    /// The name given.
    name: String,
    /// Its scopes.
    scopes: Vec<String>,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    created_at: chrono::DateTime<Utc>,
}

/// `POST /v1/admin/clients` → 201 with `client_id` and `client_secret` (shown this once).
#[utoipa::path(
    post,
    path = "/v1/admin/clients",
    tag = "admin",
    operation_id = "create_client",
    summary = "Create a service client",
    description = "A confidential client for the `client_credentials` grant (a service calling another). The secret is returned this once.",
    request_body = NewClient,
    responses((status = 201, description = "The client, with its secret", body = CreatedClient)),
    security(("bearer" = ["accounts:admin"]), ("oauth2" = ["accounts:admin"]))
)]
pub async fn create_client(
    State(state): State<AppState>,
    caller: Authenticated,
    Json(body): Json<NewClient>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let name = body.name.trim().to_owned();
    let mut errors = Vec::new();
    if name.is_empty() || name.chars().count() > 100 {
        errors.push(FieldError::new("name", "must be 1 to 100 characters"));
    }
    let scopes = match Scopes::from_iter_checked(body.scopes.iter().map(String::as_str)) {
        Ok(scopes) if !scopes.is_empty() => Some(scopes),
        Ok(_) => {
            errors.push(FieldError::new("scopes", "at least one scope is required"));
            None
        }
        Err(why) => {
            errors.push(FieldError::new(
                "scopes",
                format!("{why}; known: {}", scope::ALL.join(", ")),
            ));
            None
        }
    };
    let Some(scopes) = scopes.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let secret = random_secret();
    let client = ClientRecord {
        client_id: format!("cli_{}", uuid::Uuid::now_v7().simple()),
        name,
        secret_hash: hash_token(&secret),
        scopes: scopes.to_claim(),
        disabled: false,
        created_at: Utc::now(),
    };
    state.store.insert_client(&client).await?;
    tracing::info!(client_id = %client.client_id, by = %caller.0.sub, "client created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedClient {
            client_id: client.client_id,
            client_secret: secret,
            name: client.name,
            scopes: scopes.iter().map(str::to_owned).collect(),
            created_at: client.created_at,
        }),
    ))
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
    /// The monolith's user id.
    #[schema(example = 42)]
    pk: i64,
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
