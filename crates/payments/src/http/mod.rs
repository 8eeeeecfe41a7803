//! The payments HTTP API: routes, handlers and their state.

mod error;
mod events;
mod payments;
mod refunds;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::post;
use common::auth::TokenVerifier;
use common::db::DatabaseCheck;
use common::health::Readiness;
use common::metrics::Metrics;
use common::openapi::{HttpMethod, alias};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    /// Wakes an idle processor worker, the relay and the webhook deliverer.
    pub wake: Arc<crate::wake::Wake>,
    /// The NATS connection, when events are published.
    pub broker: Option<async_nats::Client>,
    /// This service's metrics.
    pub metrics: Metrics,
    /// The payment provider (captures and releases are called from requests).
    pub provider: Arc<dyn crate::provider::PaymentProvider>,
    /// The workflow's counters.
    pub counters: crate::processor::ProcessorMetrics,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// The document's front matter; the operations come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "payments",
        description = "Idempotent payments, their processing workflow, authorize then capture, refunds, and their events. Every error is `application/problem+json` with a stable `code`.",
    ),
    tags(
        (name = "payments", description = "Payments: create (idempotent), read, list, cancel, capture"),
        (name = "refunds", description = "Refunds: money given back from a succeeded payment"),
        (name = "webhooks", description = "Webhook endpoints (Standard Webhooks), their delivery log, redelivery"),
        (name = "events", description = "The event feed (CloudEvents)"),
        (name = "operations", description = "Probes and metrics"),
    )
)]
struct PaymentsApi;

/// The scopes payments' operations ask for.
const SCOPES: &[(&str, &str)] = &[
    (payments::READ, "read your payments and their events"),
    (
        payments::WRITE,
        "create, cancel and capture payments, and refund them",
    ),
    (
        payments::ADMIN,
        "see everyone's payments and events; manage webhook endpoints",
    ),
];

/// The routes and their OpenAPI document, built from the same `#[utoipa::path]` attributes.
fn routes(state: AppState, readiness: Readiness) -> (Router, utoipa::openapi::OpenApi) {
    let router = OpenApiRouter::with_openapi(PaymentsApi::openapi())
        .routes(routes!(payments::create, payments::list))
        .routes(routes!(payments::get_one))
        .routes(routes!(payments::cancel))
        .routes(routes!(payments::capture))
        .routes(routes!(refunds::create, refunds::list))
        .routes(routes!(refunds::get_one))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(
            webhooks::get_one,
            webhooks::update,
            webhooks::delete
        ))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::redeliver))
        .routes(routes!(events::feed));
    alias(
        router,
        HttpMethod::Post,
        "/v1/payments",
        "/payments",
        "create_payment_unversioned",
        post(payments::create),
    )
    .with_state(state)
    .merge(common::health::documented_routes(readiness))
    .split_for_parts()
}

/// The complete router, with the shared layers applied.
pub fn router(state: AppState) -> Router {
    let mut readiness = Readiness::new().with(Arc::new(DatabaseCheck(state.store.database())));
    if let Some(broker) = &state.broker {
        readiness = readiness.with(Arc::new(crate::relay::BrokerCheck(broker.clone())));
    }
    let (http, metrics) = (state.config.http.clone(), state.metrics.clone());
    let issuer = state.config.token_issuer.clone();
    let (api, document) = routes(state, readiness);
    let security = common::openapi::Security {
        issuer: &issuer,
        scopes: SCOPES,
    };
    let api = common::openapi::serve_document(api, document, &security, crate::SERVICE, &http);
    common::server::finish(api, crate::SERVICE, &http, &metrics)
}
