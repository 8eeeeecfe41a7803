//! Clients (`accounts:admin`): `POST /v1/admin/clients` with RFC 7591 metadata (or the older
//! `{"name","scopes"}`), and `GET`/`PATCH`/`DELETE /v1/admin/clients/{client_id}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use common::auth::Authenticated;
use common::extract::{Json, Path};
use http::{HeaderValue, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::admin::require_admin;
use super::{ApiError, AppState};
use crate::clients::{ClientMetadata, MetadataInput, grant};
use crate::store::ClientRecord;
use crate::tokens::{hash_token, random_secret};

/// A client's metadata as sent: RFC 7591 names (`client_name`, `scope`, ...) or the older
/// `name` and `scopes`. On `PATCH`, only the fields sent change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({
    "client_name": "monolith",
    "redirect_uris": ["https://monolith.example.com/oidc/callback/"],
    "post_logout_redirect_uris": ["https://monolith.example.com/"],
    "grant_types": ["authorization_code", "refresh_token"],
    "token_endpoint_auth_method": "client_secret_post",
    "scope": "openid profile email payments:read payments:write",
    "first_party": true
}))]
pub struct ClientBody {
    /// The name people see on the consent page; 1 to 100 characters.
    #[schema(max_length = 100)]
    client_name: Option<String>,
    /// The older spelling of `client_name`.
    #[schema(max_length = 100)]
    name: Option<String>,
    /// Space-separated scopes its tokens may carry.
    #[schema(example = "openid profile email payments:read")]
    scope: Option<String>,
    /// The older form of `scope`: a list.
    #[schema(value_type = Option<Vec<ScopeName>>)]
    scopes: Option<Vec<String>>,
    /// Exact URIs the authorization endpoint may send codes to: `https`, `http` on a loopback
    /// host, or a reverse-domain private-use scheme (a native app). At most 20.
    redirect_uris: Option<Vec<String>>,
    /// Exact URIs the end-session endpoint may send the browser back to.
    post_logout_redirect_uris: Option<Vec<String>>,
    /// `authorization_code`, `refresh_token`, `client_credentials` (default:
    /// `authorization_code` with redirect URIs, else `client_credentials`).
    #[schema(value_type = Option<Vec<GrantName>>)]
    grant_types: Option<Vec<String>>,
    /// Only `code`.
    response_types: Option<Vec<String>>,
    /// `client_secret_basic` (default), `client_secret_post`, or `none` for a public client
    /// (no secret; PKCE required). Fixed at creation.
    #[schema(value_type = Option<AuthMethod>)]
    token_endpoint_auth_method: Option<String>,
    /// A first-party client skips the consent page.
    first_party: Option<bool>,
    /// `PATCH` only: a disabled client cannot authenticate or start a sign-in.
    disabled: Option<bool>,
}

impl ClientBody {
    /// Field errors named as the caller named the fields (`name` and `scopes` in the older
    /// body).
    fn rename_errors(
        &self,
    ) -> impl Fn(Vec<common::problem::FieldError>) -> Vec<common::problem::FieldError> + use<> {
        let old_name = self.client_name.is_none() && self.name.is_some();
        let old_scopes = self.scope.is_none() && self.scopes.is_some();
        move |errors| {
            errors
                .into_iter()
                .map(|mut error| {
                    if old_name && error.field == "client_name" {
                        error.field = "name".into();
                    }
                    if old_scopes && error.field == "scope" {
                        error.field = "scopes".into();
                    }
                    error
                })
                .collect()
        }
    }

    fn input(self) -> MetadataInput {
        MetadataInput {
            name: self.client_name.or(self.name),
            scopes: self
                .scope
                .map(|s| s.split_ascii_whitespace().map(str::to_owned).collect())
                .or(self.scopes),
            redirect_uris: self.redirect_uris,
            post_logout_redirect_uris: self.post_logout_redirect_uris,
            grant_types: self.grant_types,
            response_types: self.response_types,
            token_endpoint_auth_method: self.token_endpoint_auth_method,
            first_party: self.first_party,
        }
    }
}

/// A scope.
#[derive(ToSchema)]
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
    /// `openid`.
    #[schema(rename = "openid")]
    Openid,
    /// `profile`.
    #[schema(rename = "profile")]
    Profile,
    /// `email`.
    #[schema(rename = "email")]
    Email,
    /// `offline_access`.
    #[schema(rename = "offline_access")]
    OfflineAccess,
}

/// A grant a client may use.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum GrantName {
    /// Browser sign-in.
    AuthorizationCode,
    /// Refresh tokens.
    RefreshToken,
    /// A service's own credentials.
    ClientCredentials,
}

/// How a client authenticates at the token endpoint.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum AuthMethod {
    /// HTTP Basic.
    ClientSecretBasic,
    /// Form fields.
    ClientSecretPost,
    /// A public client.
    None,
}

/// A client (RFC 7591 §3.2.1), with its secret only in the answer that created it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Client)]
pub struct ClientView {
    /// `cli_` and 32 hex digits.
    #[schema(example = "cli_0193a8e27c1f7d2e9b513f0e6c2d9a44")]
    client_id: String,
    /// The secret, in the creation's answer only (never for a public client): keep it, it
    /// cannot be read again.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
    /// `0`: the secret does not expire (with `client_secret`).
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret_expires_at: Option<i64>,
    /// When the client was registered, seconds since the epoch.
    client_id_issued_at: i64,
    /// Its name.
    client_name: String,
    /// Its name (the older field).
    name: String,
    /// Exact redirect URIs.
    redirect_uris: Vec<String>,
    /// Exact post-logout redirect URIs.
    post_logout_redirect_uris: Vec<String>,
    /// Its grants.
    grant_types: Vec<String>,
    /// `["code"]` for clients with the authorization code grant.
    response_types: Vec<&'static str>,
    /// How it authenticates.
    token_endpoint_auth_method: String,
    /// Space-separated scopes.
    scope: String,
    /// The same scopes as a list (the older field).
    scopes: Vec<String>,
    /// No consent page.
    first_party: bool,
    /// Cannot authenticate or sign anyone in.
    disabled: bool,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    created_at: chrono::DateTime<Utc>,
}

impl ClientView {
    fn of(record: &ClientRecord, secret: Option<String>) -> Self {
        let metadata = ClientMetadata::of(record);
        Self {
            client_id: record.client_id.clone(),
            client_secret_expires_at: secret.as_ref().map(|_| 0),
            client_secret: secret,
            client_id_issued_at: record.created_at.timestamp(),
            client_name: metadata.name.clone(),
            name: metadata.name,
            response_types: if metadata
                .grant_types
                .iter()
                .any(|g| g == grant::AUTHORIZATION_CODE)
            {
                vec!["code"]
            } else {
                vec![]
            },
            redirect_uris: metadata.redirect_uris,
            post_logout_redirect_uris: metadata.post_logout_redirect_uris,
            grant_types: metadata.grant_types,
            token_endpoint_auth_method: metadata.token_endpoint_auth_method,
            scope: metadata.scopes.to_claim(),
            scopes: metadata.scopes.iter().map(str::to_owned).collect(),
            first_party: metadata.first_party,
            disabled: record.disabled,
            created_at: record.created_at,
        }
    }
}

/// `POST /v1/admin/clients` → 201 with `client_id` and `client_secret` (shown this once).
#[utoipa::path(
    post,
    path = "/v1/admin/clients",
    tag = "admin",
    operation_id = "create_client",
    summary = "Register a client",
    description = "RFC 7591 metadata: a web app, single-page or mobile app signing people in (`redirect_uris`, `authorization_code`), or a service calling another (`client_credentials`; the older `{\"name\",\"scopes\"}` body makes one). The secret is returned this once; a public client (`token_endpoint_auth_method: none`) has none.",
    request_body = ClientBody,
    responses((status = 201, description = "The client, with its secret", body = ClientView,
        headers(("Location" = String, description = "The client's URL")))),
    security(("bearer" = ["accounts:admin"]), ("oauth2" = ["accounts:admin"]))
)]
pub async fn create_client(
    State(state): State<AppState>,
    caller: Authenticated,
    Json(body): Json<ClientBody>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    if body.disabled.is_some() {
        return Err(ApiError::Validation(vec![
            common::problem::FieldError::new(
                "disabled",
                "a new client is enabled; disable it with PATCH",
            ),
        ]));
    }
    let rename = body.rename_errors();
    let metadata =
        ClientMetadata::new(body.input()).map_err(|errors| ApiError::Validation(rename(errors)))?;
    let secret = (!metadata.is_public()).then(random_secret);
    let client = metadata.record(
        format!("cli_{}", uuid::Uuid::now_v7().simple()),
        secret.as_deref().map(hash_token).unwrap_or_default(),
        false,
        Utc::now(),
        None,
    );
    state.store.insert_client(&client).await?;
    tracing::info!(client_id = %client.client_id, grants = %client.grant_types, by = %caller.0.sub, "client created");
    let mut response = (StatusCode::CREATED, Json(ClientView::of(&client, secret))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/admin/clients/{}", client.client_id))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /v1/admin/clients/{client_id}`.
#[utoipa::path(
    get,
    path = "/v1/admin/clients/{client_id}",
    tag = "admin",
    operation_id = "get_client",
    summary = "A client's metadata",
    params(("client_id" = String, Path, description = "The client's id")),
    responses(
        (status = 200, description = "The client (never its secret)", body = ClientView),
        (status = 404, description = "`not_found`: no such client"),
    ),
    security(("bearer" = ["accounts:admin"]), ("oauth2" = ["accounts:admin"]))
)]
pub async fn get_client(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(client_id): Path<String>,
) -> Result<Json<ClientView>, ApiError> {
    require_admin(&caller)?;
    let client = state
        .store
        .client_by_id(&client_id)
        .await?
        .ok_or(ApiError::NotFound("client"))?;
    Ok(Json(ClientView::of(&client, None)))
}

/// `PATCH /v1/admin/clients/{client_id}`.
#[utoipa::path(
    patch,
    path = "/v1/admin/clients/{client_id}",
    tag = "admin",
    operation_id = "update_client",
    summary = "Change a client's metadata",
    description = "The fields sent replace the client's (lists are replaced whole); the result is checked as a whole. `disabled: true` stops it authenticating and signing anyone in. A client cannot change between public and confidential.",
    params(("client_id" = String, Path, description = "The client's id")),
    request_body = ClientBody,
    responses(
        (status = 200, description = "The client", body = ClientView),
        (status = 404, description = "`not_found`: no such client"),
    ),
    security(("bearer" = ["accounts:admin"]), ("oauth2" = ["accounts:admin"]))
)]
pub async fn update_client(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(client_id): Path<String>,
    Json(body): Json<ClientBody>,
) -> Result<Json<ClientView>, ApiError> {
    require_admin(&caller)?;
    let current = state
        .store
        .client_by_id(&client_id)
        .await?
        .ok_or(ApiError::NotFound("client"))?;
    let disabled = body.disabled.unwrap_or(current.disabled);
    let rename = body.rename_errors();
    let metadata = ClientMetadata::of(&current)
        .patched(body.input())
        .map_err(|errors| ApiError::Validation(rename(errors)))?;
    let client = metadata.record(
        current.client_id.clone(),
        current.secret_hash.clone(),
        disabled,
        current.created_at,
        Some(Utc::now()),
    );
    if !state.store.update_client(&client).await? {
        return Err(ApiError::NotFound("client"));
    }
    tracing::info!(client_id = %client.client_id, by = %caller.0.sub, "client changed");
    Ok(Json(ClientView::of(&client, None)))
}

/// `DELETE /v1/admin/clients/{client_id}`.
#[utoipa::path(
    delete,
    path = "/v1/admin/clients/{client_id}",
    tag = "admin",
    operation_id = "delete_client",
    summary = "Delete a client",
    description = "Its refresh tokens are revoked and its unredeemed codes and consents deleted; its access tokens live out their (short) lifetime.",
    params(("client_id" = String, Path, description = "The client's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such client"),
    ),
    security(("bearer" = ["accounts:admin"]), ("oauth2" = ["accounts:admin"]))
)]
pub async fn delete_client(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(client_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller)?;
    if !state.store.delete_client(&client_id, Utc::now()).await? {
        return Err(ApiError::NotFound("client"));
    }
    tracing::info!(%client_id, by = %caller.0.sub, "client deleted");
    Ok(StatusCode::NO_CONTENT)
}
