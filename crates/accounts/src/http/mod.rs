//! The accounts HTTP API: routes, handlers and their state.

mod admin;
mod clients;
mod error;
mod jwks;
mod oauth;
mod pages;
mod signin;
mod token;
mod userinfo;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::get;
use common::auth::{KeySource, TokenVerifier};
use common::db::DatabaseCheck;
use common::health::Readiness;
use common::metrics::Metrics;
use common::openapi::{HttpMethod, alias};
use jsonwebtoken::jwk::JwkSet;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::config::AccountsConfig;
use crate::keys::{KeyManager, SigningKeyCheck};
use crate::passwords::Hasher;
use crate::store::AccountsStore;
use crate::tokens::Issuer;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Arc<dyn AccountsStore>,
    /// The configuration.
    pub config: Arc<AccountsConfig>,
    /// Signing keys.
    pub keys: Arc<KeyManager>,
    /// Token issuance.
    pub issuer: Arc<Issuer>,
    /// Verifies our own access tokens (from the database's keys, no HTTP).
    pub verifier: Arc<TokenVerifier>,
    /// This service's metrics.
    pub metrics: Metrics,
    /// Logins and issued tokens, registered in `metrics`.
    pub token_metrics: TokenMetrics,
    /// Password hashing, with its bounded slots and queue.
    pub hasher: Arc<Hasher>,
}

/// What the token endpoint counts.
#[derive(Clone)]
pub struct TokenMetrics {
    logins: prometheus::IntCounterVec,
    issued: prometheus::IntCounterVec,
    authorizations: prometheus::IntCounterVec,
    sessions: prometheus::IntCounterVec,
}

/// The grants the token endpoint knows (anything else is counted as `other`).
const GRANTS: [&str; 4] = [
    "authorization_code",
    "password",
    "refresh_token",
    "client_credentials",
];

impl TokenMetrics {
    /// Registers `accounts_logins_total{outcome}` and `accounts_tokens_issued_total{grant_type}`.
    pub fn new(metrics: &Metrics) -> Self {
        let logins = metrics.counter(
            "accounts_logins_total",
            "Password logins by outcome: success, invalid_credentials, throttled, error.",
            &["outcome"],
        );
        for outcome in ["success", "invalid_credentials", "throttled", "error"] {
            logins.with_label_values(&[outcome]);
        }
        let issued = metrics.counter(
            "accounts_tokens_issued_total",
            "Access tokens issued, by grant type.",
            &["grant_type"],
        );
        for grant in GRANTS {
            issued.with_label_values(&[grant]);
        }
        let authorizations = metrics.counter(
            "accounts_authorizations_total",
            "Answers of the authorization endpoint: code_issued, or the error sent to the client (login_required, access_denied, ...), or invalid_request_page.",
            &["outcome"],
        );
        for outcome in [
            "code_issued",
            "login_required",
            "access_denied",
            "invalid_request_page",
        ] {
            authorizations.with_label_values(&[outcome]);
        }
        let sessions = metrics.counter(
            "accounts_browser_sessions_total",
            "Browser sessions started (a login at the login or sign-up page) and ended (logout).",
            &["event"],
        );
        for event in ["started", "ended"] {
            sessions.with_label_values(&[event]);
        }
        Self {
            logins,
            issued,
            authorizations,
            sessions,
        }
    }

    /// Counts a login at the login page, like the password grant's.
    pub fn page_login<T>(&self, result: &Result<T, crate::login::LoginError>) {
        use crate::login::LoginError;
        let outcome = match result {
            Ok(_) => "success",
            Err(LoginError::InvalidCredentials) => "invalid_credentials",
            Err(LoginError::Throttled { .. }) => "throttled",
            Err(_) => "error",
        };
        self.logins.with_label_values(&[outcome]).inc();
    }

    /// Counts an answer of the authorization endpoint.
    pub fn authorization(&self, outcome: &str) {
        self.authorizations.with_label_values(&[outcome]).inc();
    }

    /// Counts a session started or ended.
    pub fn session(&self, event: &str) {
        self.sessions.with_label_values(&[event]).inc();
    }

    /// Counts one answer of the token endpoint to a `grant_type` request.
    pub fn token_request(&self, grant_type: Option<&str>, result: Result<(), &str>) {
        let grant = grant_type.filter(|g| GRANTS.contains(g));
        if let (Some(grant), Ok(())) = (grant, result) {
            self.issued.with_label_values(&[grant]).inc();
        }
        if grant == Some("password") {
            let outcome = match result {
                Ok(()) => "success",
                Err("invalid_grant") => "invalid_credentials",
                Err("temporarily_unavailable") => "throttled",
                Err(_) => "error",
            };
            self.logins.with_label_values(&[outcome]).inc();
        }
    }
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// Our own key set, read straight from the database.
pub struct StoreKeys(pub Arc<dyn AccountsStore>);

#[async_trait::async_trait]
impl KeySource for StoreKeys {
    async fn fetch(&self) -> Result<JwkSet, String> {
        let keys = self
            .0
            .published_keys(chrono::Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_value(serde_json::json!({ "keys": keys })).map_err(|e| e.to_string())
    }
}

/// Imports can be large: a whole user table.
const IMPORT_BODY_LIMIT: usize = 256 * 1024 * 1024;

/// The document's front matter; the operations come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "accounts",
        description = "Users, login, OAuth 2.0 tokens (RFC 6749, 7009, 7662), signed JWT access tokens and the JWKS that verifies them. Errors outside the OAuth endpoints are `application/problem+json` with a stable `code`; the OAuth endpoints answer RFC 6749 error bodies.",
    ),
    tags(
        (name = "oauth", description = "The token endpoint, revocation and introspection"),
        (name = "discovery", description = "Where everything is, and the public keys"),
        (name = "users", description = "Sign-up and the caller's user"),
        (name = "sign-in", description = "Browser sign-in (OpenID Connect): the authorization endpoint and its pages, userinfo, logout"),
        (name = "admin", description = "Clients, key rotation, users and imports (`accounts:admin`)"),
        (name = "operations", description = "Probes and metrics"),
    )
)]
struct AccountsApi;

/// The scopes accounts' tokens carry.
const SCOPES: &[(&str, &str)] = &[
    (crate::domain::scope::PAYMENTS_READ, "read your payments"),
    (
        crate::domain::scope::PAYMENTS_WRITE,
        "create and cancel payments",
    ),
    (
        crate::domain::scope::PAYMENTS_ADMIN,
        "see everyone's payments",
    ),
    (
        crate::domain::scope::ACCOUNTS_ADMIN,
        "administer accounts: clients, keys, imports",
    ),
    (
        crate::domain::scope::OPENID,
        "sign in: an ID token and /userinfo",
    ),
    (crate::domain::scope::PROFILE, "the user's name"),
    (crate::domain::scope::EMAIL, "the user's email address"),
    (
        crate::domain::scope::OFFLINE_ACCESS,
        "a refresh token, for clients with the refresh_token grant",
    ),
];

/// The routes and their OpenAPI document, built from the same `#[utoipa::path]` attributes.
fn routes(state: AppState, readiness: Readiness) -> (Router, utoipa::openapi::OpenApi) {
    let import = OpenApiRouter::new()
        .routes(routes!(admin::import))
        .layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT));
    let router = OpenApiRouter::with_openapi(AccountsApi::openapi())
        .routes(routes!(jwks::jwks))
        .routes(routes!(jwks::discovery))
        .routes(routes!(users::me))
        .routes(routes!(users::sign_up))
        .routes(routes!(token::token))
        .routes(routes!(token::revoke))
        .routes(routes!(token::introspect))
        .routes(routes!(clients::create_client))
        .routes(routes!(
            clients::get_client,
            clients::update_client,
            clients::delete_client
        ))
        .routes(routes!(admin::update_user))
        .routes(routes!(admin::export))
        .routes(routes!(signin::authorize, signin::login))
        .routes(routes!(signin::consent))
        .routes(routes!(signin::signup_page, signin::signup))
        .routes(routes!(signin::logout_page, signin::logout))
        .routes(routes!(signin::stylesheet))
        .routes(routes!(userinfo::userinfo, userinfo::userinfo_post))
        .routes(routes!(admin::rotate_keys))
        .merge(import);
    let router = alias(
        router,
        HttpMethod::Get,
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "oauth_authorization_server",
        get(jwks::discovery),
    );
    alias(
        router,
        HttpMethod::Get,
        "/v1/users/me",
        "/users/me",
        "get_me_unversioned",
        get(users::me),
    )
    .with_state(state)
    .merge(common::health::documented_routes(readiness))
    .split_for_parts()
}

/// The complete router, with the shared layers applied.
pub fn router(state: AppState) -> Router {
    let readiness = Readiness::new()
        .with(Arc::new(DatabaseCheck(state.store.database())))
        .with(Arc::new(SigningKeyCheck(state.keys.clone())));
    let (http, metrics) = (state.config.http.clone(), state.metrics.clone());
    let issuer = state.config.issuer.clone();
    let (api, document) = routes(state, readiness);
    let security = common::openapi::Security {
        issuer: &issuer,
        scopes: SCOPES,
    };
    let api = common::openapi::serve_document(api, document, &security, crate::SERVICE, &http);
    common::server::finish(api, crate::SERVICE, &http, &metrics)
}
