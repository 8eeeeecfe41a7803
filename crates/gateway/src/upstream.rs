//! An upstream as the proxy knows it: where it is, its `Host`, its breaker, its metric series
//! (resolved once), and each worker's connections to it.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{Either, Empty};

use common::health::HealthCheck;

use crate::body::UpstreamBody;
use crate::breaker::Breaker;
use crate::config::GatewayConfig;
use crate::pool::{self, Pool, PoolSettings};
use common::metrics::Metrics;

/// Idle keep-alive connections kept per upstream and worker; beyond it, a connection released
/// after a burst is closed (nginx's `keepalive` directive plays this role).
const MAX_IDLE_CONNECTIONS: usize = 256;

/// An upstream: where requests go, under which name they are reported, its breaker and this
/// worker's connections to it.
#[derive(Clone)]
pub struct Upstream {
    /// Name in logs, metrics and readiness.
    pub name: String,
    /// Its circuit breaker.
    pub breaker: Arc<Breaker>,
    /// Its metric series, resolved once.
    pub(crate) metrics: UpstreamMetrics,
    /// `http://` and the `Host` header, for the client span's `url.full`.
    pub(crate) origin: String,
    /// The `Host` header sent to it.
    pub(crate) host: HeaderValue,
    /// Base path of the upstream, without a trailing slash (usually empty).
    base_path: String,
    /// This worker's keep-alive connections to it.
    pub(crate) pool: Pool<UpstreamBody>,
}

impl Upstream {
    /// An upstream at `url` (`http://host:port[/base]`).
    pub(crate) fn new(
        name: &str,
        url: &url::Url,
        config: &GatewayConfig,
        metrics: &ProxyMetrics,
    ) -> Self {
        let host = match url.host() {
            Some(url::Host::Domain(domain)) => domain.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => "localhost".to_owned(),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let host_header =
            pool::host_header(&host, port).unwrap_or_else(|| HeaderValue::from_static("localhost"));
        Self {
            name: name.to_owned(),
            breaker: Arc::new(Breaker::new(config.breaker)),
            metrics: metrics.of(name),
            origin: format!("http://{}", host_header.to_str().unwrap_or("localhost")),
            host: host_header,
            base_path: url.path().trim_end_matches('/').to_owned(),
            pool: Pool::new(PoolSettings {
                host,
                port,
                connect_timeout: config.connect_timeout,
                idle_timeout: config.upstream_idle_timeout,
                max_idle: MAX_IDLE_CONNECTIONS,
            }),
        }
    }

    /// The same upstream with no connections yet: each worker's own.
    pub(crate) fn with_own_pool(&self) -> Self {
        Self {
            pool: self.pool.empty_copy(),
            ..self.clone()
        }
    }

    /// The origin-form URI of `path` (and `query`) on this upstream.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let query_len = query.map_or(0, |q| q.len() + 1);
        let mut uri = String::with_capacity(self.base_path.len() + path.len() + query_len);
        uri.push_str(&self.base_path);
        uri.push_str(path);
        if let Some(query) = query {
            uri.push('?');
            uri.push_str(query);
        }
        Ok(Uri::try_from(uri)?)
    }

    /// `GET path` on this upstream (body read and dropped): its status.
    pub async fn get(&self, path: &str) -> Result<StatusCode, String> {
        let request = Request::get(self.uri(path, None).map_err(|e| e.to_string())?)
            .header(header::HOST, self.host.clone())
            .body(http_body_util::Limited::new(Either::Right(Empty::new()), 0))
            .map_err(|e| e.to_string())?;
        let response = self
            .pool
            .send(request, &[], true)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        // Read to the end, so the connection is kept for the next probe.
        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
        Ok(status)
    }
}

/// Per-upstream metrics.
#[derive(Clone)]
pub(crate) struct ProxyMetrics {
    requests: prometheus::IntCounterVec,
    breaker: prometheus::IntGaugeVec,
}

impl ProxyMetrics {
    pub(crate) fn new(metrics: &Metrics) -> Self {
        Self {
            requests: metrics.counter(
                "gateway_upstream_requests_total",
                "Requests to upstreams by outcome (ok, server_error, unreachable, timeout, retried, circuit_open).",
                &["upstream", "outcome"],
            ),
            breaker: metrics.gauge_vec(
                "gateway_circuit_breaker_state",
                "Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open.",
                &["upstream"],
            ),
        }
    }

    /// The series of the upstream `name`.
    fn of(&self, name: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            outcomes: Outcome::ALL
                .map(|outcome| self.requests.with_label_values(&[name, outcome.label()]))
                .into(),
            breaker: self.breaker.with_label_values(&[name]),
        }
    }
}

/// How a request to an upstream ended, as counted in `gateway_upstream_requests_total`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Ok,
    ServerError,
    Unreachable,
    Timeout,
    Retried,
    CircuitOpen,
}

impl Outcome {
    const ALL: [Self; 6] = [
        Self::Ok,
        Self::ServerError,
        Self::Unreachable,
        Self::Timeout,
        Self::Retried,
        Self::CircuitOpen,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ServerError => "server_error",
            Self::Unreachable => "unreachable",
            Self::Timeout => "timeout",
            Self::Retried => "retried",
            Self::CircuitOpen => "circuit_open",
        }
    }
}

/// One upstream's series: a counter per [`Outcome`] (in [`Outcome::ALL`]'s order) and its
/// breaker's state.
#[derive(Clone)]
pub(crate) struct UpstreamMetrics {
    outcomes: Arc<[prometheus::IntCounter]>,
    breaker: prometheus::IntGauge,
}

impl UpstreamMetrics {
    pub(crate) fn record(&self, outcome: Outcome, breaker: &Breaker) {
        if let Some(counter) = self.outcomes.get(outcome as usize) {
            counter.inc();
        }
        self.breaker_state(breaker);
    }

    pub(crate) fn breaker_state(&self, breaker: &Breaker) {
        self.breaker.set(breaker.state().code());
    }
}

/// Readiness check `upstream:<name>`: the upstream's own `/readyz` answers 200.
pub struct UpstreamCheck {
    /// The upstream.
    pub upstream: Upstream,
}

#[async_trait::async_trait]
impl HealthCheck for UpstreamCheck {
    fn name(&self) -> String {
        format!("upstream:{}", self.upstream.name)
    }

    fn component_type(&self) -> &'static str {
        "component"
    }

    async fn check(&self) -> Result<(), String> {
        match self.upstream.get("/readyz").await {
            Ok(status) if status.is_success() => Ok(()),
            Ok(status) => Err(format!("answered {status}")),
            Err(error) => Err(format!("unreachable: {error}")),
        }
    }
}
