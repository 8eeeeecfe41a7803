//! The accounts HTTP API: routes, handlers and their state.

mod error;
mod jwks;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use common::db::DatabaseCheck;
use common::health::Readiness;

pub use error::ApiError;

use crate::config::AccountsConfig;
use crate::store::AccountsStore;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Arc<dyn AccountsStore>,
    /// The configuration.
    pub config: Arc<AccountsConfig>,
}

/// The complete router, with the shared layers applied.
pub fn router(state: AppState) -> Router {
    let readiness = Readiness::new().with(Arc::new(DatabaseCheck(state.store.database())));
    let http = state.config.http.clone();
    let api = Router::new()
        .route("/.well-known/jwks.json", get(jwks::jwks))
        .route("/users/me", get(users::me))
        .route("/v1/users/me", get(users::me))
        .route("/v1/users", post(users::sign_up))
        .route("/v1/token", post(users::token))
        .with_state(state)
        .merge(common::health::routes(readiness));
    common::server::finish(api, crate::SERVICE, &http)
}
