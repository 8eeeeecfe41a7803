//! Liveness (`/healthz`) and readiness (`/readyz`) in `application/health+json`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::join_all;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

/// The media type of health responses (draft-inadarei-api-health-check).
pub const HEALTH_JSON: &str = "application/health+json";

/// Something readiness depends on: the database, the broker, an upstream.
#[async_trait::async_trait]
pub trait HealthCheck: Send + Sync {
    /// The key under `checks` (`database`, `broker`, `upstream:accounts`).
    fn name(&self) -> String;
    /// The component type reported (`datastore`, `component`, `system`).
    fn component_type(&self) -> &'static str;
    /// `Ok` when the dependency answers; `Err` says why not.
    async fn check(&self) -> Result<(), String>;
}

/// The set of checks behind `/readyz`, each bounded by a timeout.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<Arc<dyn HealthCheck>>,
    timeout: Duration,
}

impl Readiness {
    /// An empty set with a 2-second timeout per check.
    pub fn new() -> Self {
        Self {
            checks: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }

    /// Adds a check.
    pub fn with(mut self, check: Arc<dyn HealthCheck>) -> Self {
        self.checks.push(check);
        self
    }

    /// Runs every check concurrently: whether all passed, and the `checks` object.
    pub async fn evaluate(&self) -> (bool, Value) {
        let results = join_all(self.checks.iter().map(|check| async move {
            let outcome = match tokio::time::timeout(self.timeout, check.check()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {:?}", self.timeout)),
            };
            (check.name(), check.component_type(), outcome)
        }))
        .await;
        let mut all_pass = true;
        let mut checks = Map::new();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for (name, component_type, outcome) in results {
            let entry = match outcome {
                Ok(()) => json!({"componentType": component_type, "status": "pass", "time": now}),
                Err(output) => {
                    all_pass = false;
                    tracing::warn!(check = %name, %output, "readiness check failed");
                    json!({"componentType": component_type, "status": "fail", "time": now, "output": output})
                }
            };
            checks.insert(name, Value::Array(vec![entry]));
        }
        (all_pass, Value::Object(checks))
    }
}

/// `GET /healthz` and `GET /readyz`, for merging into a service's router.
pub fn routes<S: Clone + Send + Sync + 'static>(readiness: Readiness) -> Router<S> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

/// Liveness: passes whenever the process serves; never looks at dependencies.
pub async fn healthz() -> Response {
    health_response(StatusCode::OK, json!({"status": "pass"}))
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let (ready, checks) = readiness.evaluate().await;
    let (status, word) = if ready {
        (StatusCode::OK, "pass")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "fail")
    };
    health_response(status, json!({"status": word, "checks": checks}))
}

fn health_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(HEALTH_JSON));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
