//! The payments HTTP API: routes, handlers and their state.

mod error;
mod events;
mod payments;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::{get, post};
use common::auth::TokenVerifier;
use common::db::DatabaseCheck;
use common::health::Readiness;
use common::metrics::Metrics;
use tokio::sync::Notify;

pub use error::ApiError;

use crate::config::PaymentsConfig;
use crate::store::PaymentsStore;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Arc<dyn PaymentsStore>,
    /// The configuration.
    pub config: Arc<PaymentsConfig>,
    /// Verifies access tokens against accounts' JWKS.
    pub verifier: Arc<TokenVerifier>,
    /// Wakes idle processor workers and the relay when a payment is accepted.
    pub wake: Arc<Notify>,
    /// The NATS connection, when events are published.
    pub broker: Option<async_nats::Client>,
    /// This service's metrics.
    pub metrics: Metrics,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// The complete router, with the shared layers applied.
pub fn router(state: AppState) -> Router {
    let mut readiness = Readiness::new().with(Arc::new(DatabaseCheck(state.store.database())));
    if let Some(broker) = &state.broker {
        readiness = readiness.with(Arc::new(crate::relay::BrokerCheck(broker.clone())));
    }
    let (http, metrics) = (state.config.http.clone(), state.metrics.clone());
    let api = Router::new()
        .route("/payments", post(payments::create))
        .route("/v1/payments", post(payments::create).get(payments::list))
        .route("/v1/payments/{id}", get(payments::get_one))
        .route("/v1/payments/{id}/cancel", post(payments::cancel))
        .route("/v1/events", get(events::feed))
        .with_state(state)
        .merge(common::health::routes(readiness));
    common::server::finish(api, crate::SERVICE, &http, &metrics)
}
