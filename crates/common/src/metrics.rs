//! Prometheus metrics, one registry per service (no globals, so the all-in-one runner's three
//! services keep theirs apart): the HTTP RED histogram every service records, domain metrics
//! each service adds, and `GET /metrics` in the Prometheus text format.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Buckets of `http_server_request_duration_seconds` (OpenTelemetry's HTTP defaults).
pub const HTTP_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The route label of requests that matched no route (unknown paths).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// A service's metrics registry and the HTTP histogram.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http_duration: HistogramVec,
    http_active: prometheus::IntGauge,
    /// Tells this registry's series apart in each thread's [`SERIES`] cache.
    id: u64,
}

/// The HTTP histogram's series a thread has recorded into lately: `(registry id, method,
/// route, status)` and the series. Finding a series by its labels in the histogram hashes
/// the three labels and takes the histogram's lock; a thread serving a few kinds of request
/// over and over finds them here.
type SeriesCache = Vec<(u64, http::Method, Box<str>, u16, prometheus::Histogram)>;

/// Series a thread keeps at most; past that the cache starts over.
const CACHED_SERIES: usize = 64;

thread_local! {
    static SERIES: std::cell::RefCell<SeriesCache> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One request counted in `http_server_active_requests` while this lives (dropped when it is
/// answered, or when its client goes away first).
#[derive(Debug)]
pub struct ActiveRequest(prometheus::IntGauge);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The route template a response was served by, for the `http_route` label.
#[derive(Debug, Clone)]
pub struct RouteLabel(pub String);

impl Metrics {
    /// A registry with `http_server_request_duration_seconds`.
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_server_request_duration_seconds",
                "Duration of HTTP server requests, by method, route template and status.",
            )
            .buckets(HTTP_BUCKETS.to_vec()),
            &[
                "http_request_method",
                "http_route",
                "http_response_status_code",
            ],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let http_active = prometheus::IntGauge::new(
            "http_server_active_requests",
            "HTTP requests being served (received, not yet answered).",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let metrics = Self {
            registry,
            http_duration,
            http_active,
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        metrics.register(metrics.http_duration.clone());
        metrics.register(metrics.http_active.clone());
        metrics
    }

    /// Counts a request as being served until the guard is dropped.
    pub fn active_request(&self) -> ActiveRequest {
        self.http_active.inc();
        ActiveRequest(self.http_active.clone())
    }

    fn register(&self, collector: impl prometheus::core::Collector + 'static) {
        if let Err(error) = self.registry.register(Box::new(collector)) {
            tracing::error!(%error, "metric registration failed");
        }
    }

    /// Records one served request.
    pub fn observe_http(&self, method: &http::Method, route: &str, status: u16, seconds: f64) {
        let recorded = SERIES.with_borrow(|series| {
            let found = series.iter().find(|(id, m, r, s, _)| {
                *id == self.id && *s == status && m == method && &**r == route
            });
            found.map(|(.., histogram)| histogram.observe(seconds))
        });
        if recorded.is_some() {
            return;
        }
        let code = http::StatusCode::from_u16(status);
        let label = match &code {
            Ok(code) => code.as_str(),
            Err(_) => "invalid",
        };
        let histogram = self
            .http_duration
            .with_label_values(&[method.as_str(), route, label]);
        histogram.observe(seconds);
        SERIES.with_borrow_mut(|series| {
            if series.len() >= CACHED_SERIES {
                series.clear();
            }
            series.push((self.id, method.clone(), route.into(), status, histogram));
        });
    }

    /// A counter with labels, registered here (`name` must end in `_total`).
    pub fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let counter = IntCounterVec::new(Opts::new(name, help), labels)
            .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
        self.register(counter.clone());
        counter
    }

    /// A gauge, registered here.
    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        let gauge = IntGauge::new(name, help)
            .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
        self.register(gauge.clone());
        gauge
    }

    /// A gauge with labels, registered here.
    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::IntGaugeVec {
        let gauge = prometheus::IntGaugeVec::new(Opts::new(name, help), labels)
            .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
        self.register(gauge.clone());
        gauge
    }

    /// A histogram with labels, registered here.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> HistogramVec {
        let histogram = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
            .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
        self.register(histogram.clone());
        histogram
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "The service's metrics in the Prometheus text format (RED metrics per route, domain counters).",
    responses(
        (status = 200, description = "The metrics", body = String, content_type = "text/plain")
    )
)]
pub async fn metrics_endpoint(State(metrics): State<Metrics>) -> Response {
    let mut response = (StatusCode::OK, metrics.render()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(metrics: &Metrics, method: &str, route: &str, status: &str) -> u64 {
        metrics
            .http_duration
            .with_label_values(&[method, route, status])
            .get_sample_count()
    }

    #[test]
    fn each_registry_counts_its_own_requests_whatever_this_thread_remembers() {
        let (one, two) = (Metrics::new(), Metrics::new());
        for _ in 0..3 {
            one.observe_http(&http::Method::GET, "/a", 200, 0.001);
        }
        two.observe_http(&http::Method::GET, "/a", 200, 0.001);
        one.observe_http(&http::Method::GET, "/a", 404, 0.001);
        one.observe_http(&http::Method::POST, "/a", 200, 0.001);
        assert_eq!(count(&one, "GET", "/a", "200"), 3);
        assert_eq!(count(&two, "GET", "/a", "200"), 1);
        assert_eq!(count(&one, "GET", "/a", "404"), 1);
        assert_eq!(count(&one, "POST", "/a", "200"), 1);
        // More series than the cache keeps: every request still counted once.
        for round in 0..2 {
            for n in 0..(CACHED_SERIES + 10) {
                one.observe_http(&http::Method::GET, &format!("/r{n}"), 200, 0.001);
            }
            assert_eq!(count(&one, "GET", "/r0", "200"), round + 1);
            assert_eq!(count(&one, "GET", "/r70", "200"), round + 1);
        }
        assert!(one.render().contains("http_response_status_code=\"404\""));
    }
}
