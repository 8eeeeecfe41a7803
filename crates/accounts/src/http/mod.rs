//! The accounts HTTP API: routes, handlers and their state.

mod admin;
mod error;
mod jwks;
mod oauth;
mod token;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};
use common::auth::{KeySource, TokenVerifier};
use common::db::DatabaseCheck;
use common::health::Readiness;
use common::metrics::Metrics;
use jsonwebtoken::jwk::JwkSet;

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
}

/// The grants the token endpoint knows (anything else is counted as `other`).
const GRANTS: [&str; 3] = ["password", "refresh_token", "client_credentials"];

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
        Self { logins, issued }
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

/// The complete router, with the shared layers applied.
pub fn router(state: AppState) -> Router {
    let readiness = Readiness::new()
        .with(Arc::new(DatabaseCheck(state.store.database())))
        .with(Arc::new(SigningKeyCheck(state.keys.clone())));
    let (http, metrics) = (state.config.http.clone(), state.metrics.clone());
    let api = Router::new()
        .route("/.well-known/jwks.json", get(jwks::jwks))
        .route("/.well-known/openid-configuration", get(jwks::discovery))
        .route(
            "/.well-known/oauth-authorization-server",
            get(jwks::discovery),
        )
        .route("/users/me", get(users::me))
        .route("/v1/users/me", get(users::me))
        .route("/v1/users", post(users::sign_up))
        .route("/v1/token", post(token::token))
        .route("/v1/token/revoke", post(token::revoke))
        .route("/v1/token/introspect", post(token::introspect))
        .route("/v1/admin/clients", post(admin::create_client))
        .route("/v1/admin/keys/rotate", post(admin::rotate_keys))
        .route(
            "/v1/admin/users/import",
            post(admin::import).layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT)),
        )
        .with_state(state)
        .merge(common::health::routes(readiness));
    common::server::finish(api, crate::SERVICE, &http, &metrics)
}
