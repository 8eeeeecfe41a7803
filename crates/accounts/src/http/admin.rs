//! Administration (`accounts:admin`): service clients, key rotation, user import.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::Utc;
use common::auth::Authenticated;
use common::extract::Json;
use common::problem::FieldError;
use serde::Deserialize;
use serde_json::json;

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
#[derive(Debug, Deserialize)]
pub struct NewClient {
    name: String,
    scopes: Vec<String>,
}

/// `POST /v1/admin/clients` → 201 with `client_id` and `client_secret` (shown this once).
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
        Json(json!({
            "client_id": client.client_id,
            "client_secret": secret,
            "name": client.name,
            "scopes": scopes.iter().collect::<Vec<_>>(),
            "created_at": client.created_at,
        })),
    ))
}

/// The body of `POST /v1/admin/keys/rotate` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKeys {
    /// Replace the signing key at once and unpublish it (a compromised key): every token it
    /// signed stops verifying.
    #[serde(default)]
    emergency: bool,
}

/// `POST /v1/admin/keys/rotate` → the key that signs next and from when: now if it has been
/// published long enough, else once it has (`ACCOUNTS_KEY_PREPUBLISH_SECONDS`). The old key
/// stays in the JWKS until every token it signed has expired. With `{"emergency": true}` a new
/// key signs at once and the old one leaves the JWKS now.
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
        return Ok(Json(json!({
            "kid": kid,
            "activates_at": Utc::now(),
            "emergency": true,
        })));
    }
    let rotation = state.keys.rotate().await?;
    tracing::info!(kid = %rotation.kid, activates_at = %rotation.activates_at, by = %caller.0.sub, "signing key rotated on demand");
    Ok(Json(json!({
        "kid": rotation.kid,
        "activates_at": rotation.activates_at,
        "next_kid": rotation.next_kid,
        "emergency": false,
    })))
}

/// `POST /v1/admin/users/import` with `manage.py dumpdata auth.user` output.
pub async fn import(
    State(state): State<AppState>,
    caller: Authenticated,
    Json(entries): Json<Vec<serde_json::Value>>,
) -> Result<Json<ImportReport>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(import_users(state.store.as_ref(), &entries).await?))
}
