//! Liveness (`/healthz`) and readiness (`/readyz`) in `application/health+json`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

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

/// The set of checks behind `/readyz`, each bounded by a timeout. `/readyz` is public and
/// unauthenticated, so its answer is shared: the checks run at most once per
/// [`Readiness::max_age`], by one caller, while every other caller waits for that result
/// (a burst of probes costs one round of database pings, not one per probe).
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<Arc<dyn HealthCheck>>,
    timeout: Duration,
    max_age: Duration,
    last: Arc<tokio::sync::Mutex<Option<(Instant, bool, Value)>>>,
}

/// How long one evaluation of the checks answers `/readyz`, by default.
pub const READINESS_MAX_AGE: Duration = Duration::from_secs(1);

impl Readiness {
    /// An empty set with a 2-second timeout per check, evaluated at most once a second.
    pub fn new() -> Self {
        Self {
            checks: Vec::new(),
            timeout: Duration::from_secs(2),
            max_age: READINESS_MAX_AGE,
            last: Arc::default(),
        }
    }

    /// Evaluates the checks at most once per `max_age` (zero: at every call).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The checks' result, evaluated now or at most `max_age` ago; concurrent callers share
    /// one evaluation.
    pub async fn evaluate_shared(&self) -> (bool, Value) {
        let mut last = self.last.lock().await;
        if let Some((at, ready, checks)) = last.as_ref()
            && at.elapsed() < self.max_age
        {
            return (*ready, checks.clone());
        }
        let (ready, checks) = self.evaluate().await;
        *last = Some((Instant::now(), ready, checks.clone()));
        (ready, checks)
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

/// [`routes`] with their OpenAPI operations, for a service that serves a document.
pub fn documented_routes<S: Clone + Send + Sync + 'static>(
    readiness: Readiness,
) -> utoipa_axum::router::OpenApiRouter<S> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(healthz))
        .routes(utoipa_axum::routes!(readyz))
        .with_state(readiness)
}

/// The body of `/healthz` and `/readyz` (`application/health+json`,
/// draft-inadarei-api-health-check). Documentation only: the handlers build it from the checks.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// `pass` or `fail`.
    #[schema(example = "pass")]
    status: HealthStatus,
    /// `/readyz` only: each dependency's result, under its name (`database`, `broker`,
    /// `signing_key`).
    #[schema(required = false)]
    checks: std::collections::BTreeMap<String, Vec<CheckResult>>,
}

/// Whether a check (or the whole) passed.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum HealthStatus {
    /// Ready.
    Pass,
    /// Not ready.
    Fail,
}

/// One dependency's check.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct CheckResult {
    /// `datastore`, `component` or `system`.
    component_type: String,
    /// `pass` or `fail`.
    status: HealthStatus,
    /// When it was checked (RFC 3339).
    time: String,
    /// Why it failed.
    #[schema(required = false)]
    output: String,
}

/// Liveness: passes whenever the process serves; never looks at dependencies.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    summary = "Liveness",
    description = "200 whenever the process serves; never checks dependencies.",
    responses((status = 200, description = "The process serves", body = Health, content_type = "application/health+json"))
)]
pub async fn healthz() -> Response {
    health_response(StatusCode::OK, json!({"status": "pass"}))
}

/// Readiness: every dependency answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    summary = "Readiness",
    description = "200 when every dependency (the database, the broker where configured, the signing key) answers; else 503. Evaluated at most once a second, shared by concurrent callers.",
    responses(
        (status = 200, description = "Ready", body = Health, content_type = "application/health+json"),
        (status = 503, description = "Not ready: a check failed (see `checks`)", body = Health, content_type = "application/health+json")
    )
)]
pub async fn readyz(State(readiness): State<Readiness>) -> Response {
    let (ready, checks) = readiness.evaluate_shared().await;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Counting(Arc<AtomicUsize>);

    #[async_trait::async_trait]
    impl HealthCheck for Counting {
        fn name(&self) -> String {
            "database".into()
        }

        fn component_type(&self) -> &'static str {
            "datastore"
        }

        async fn check(&self) -> Result<(), String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_probes_runs_the_checks_once_per_interval() {
        let runs = Arc::new(AtomicUsize::new(0));
        let readiness = Readiness::new().with(Arc::new(Counting(runs.clone())));
        let burst = (0..60).map(|_| readiness.evaluate_shared());
        assert!(join_all(burst).await.iter().all(|(ready, _)| *ready));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "one evaluation for the burst"
        );
        tokio::time::advance(READINESS_MAX_AGE).await;
        readiness.evaluate_shared().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "evaluated again once stale");
    }
}
