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
pub use users::create_user;

use crate::config::AccountsConfig;
use crate::keys::KeyManager;
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
    let readiness = Readiness::new().with(Arc::new(DatabaseCheck(state.store.database())));
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
