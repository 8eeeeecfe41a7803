//! Forwarding: prefix routing with the prefix stripped, pooled keep-alive connections,
//! hop-by-hop headers removed, `X-Forwarded-*` and `traceparent` set, bodies streamed, a
//! circuit breaker per upstream, retries where they are safe, `Location` rewritten.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use common::Problem;
use common::metrics::Metrics;
use common::request::{PassThrough, RequestContext, TRACEPARENT, TraceParent};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tracing::Instrument;
use tracing::field::Empty;

use crate::breaker::{Breaker, BreakerSettings};
use crate::config::GatewayConfig;

/// An upstream: where requests go, under which name they are reported, and its breaker.
#[derive(Clone)]
pub struct Upstream {
    /// Name in logs, metrics and readiness.
    pub name: String,
    /// Its circuit breaker.
    pub breaker: Arc<Breaker>,
    /// Its metric series, resolved once.
    metrics: UpstreamMetrics,
    /// `http://host:port`, no path.
    origin: String,
    /// Base path of the upstream, without a trailing slash (usually empty).
    base_path: String,
}

impl Upstream {
    /// An upstream at `url` (`http://host:port[/base]`).
    fn new(name: &str, url: &url::Url, breaker: BreakerSettings, metrics: &ProxyMetrics) -> Self {
        let host = url.host_str().unwrap_or("localhost");
        let origin = match url.port() {
            Some(port) => format!("http://{host}:{port}"),
            None => format!("http://{host}"),
        };
        Self {
            name: name.to_owned(),
            breaker: Arc::new(Breaker::new(breaker)),
            metrics: metrics.of(name),
            origin,
            base_path: url.path().trim_end_matches('/').to_owned(),
        }
    }

    /// The URI of `path` (and `query`) on this upstream.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let query_len = query.map_or(0, |q| q.len() + 1);
        let mut uri = String::with_capacity(
            self.origin.len() + self.base_path.len() + path.len() + query_len,
        );
        uri.push_str(&self.origin);
        uri.push_str(&self.base_path);
        uri.push_str(path);
        if let Some(query) = query {
            uri.push('?');
            uri.push_str(query);
        }
        Ok(Uri::try_from(uri)?)
    }
}

/// A prefix route.
#[derive(Clone)]
struct Route {
    prefix: String,
    /// Its route template in metrics and spans: `{prefix}/{*rest}`.
    label: String,
    upstream: Upstream,
    readiness: bool,
}

/// The route template of paths served by the fallback upstream.
const FALLBACK_ROUTE: &str = "{*fallback}";

/// The forwarding half of the gateway: its routes and its connection pool.
#[derive(Clone)]
pub struct Proxy {
    routes: Vec<Route>,
    fallback: Option<Upstream>,
    client: Client<HttpConnector, Body>,
    connect_timeout: Duration,
    upstream_timeout: Duration,
    max_body_bytes: usize,
    retries: u32,
    blocked_paths: Arc<[String]>,
}

/// A keep-alive connection pool for every upstream.
fn new_client(connect_timeout: Duration) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// Where a request goes: the upstream, the path to ask it for, the prefix that was removed
/// and the route template.
struct Target<'a, 'p> {
    upstream: &'a Upstream,
    path: &'p str,
    prefix: Option<&'a str>,
    label: &'a str,
}

impl Proxy {
    /// Builds the routes and one keep-alive connection pool shared by all upstreams.
    pub fn new(config: &GatewayConfig, metrics: &Metrics) -> Self {
        let metrics = ProxyMetrics::new(metrics);
        let mut routes: Vec<Route> = config
            .routes
            .iter()
            .map(|r| Route {
                prefix: r.prefix.trim_end_matches('/').to_owned(),
                label: format!("{}/{{*rest}}", r.prefix.trim_end_matches('/')),
                upstream: Upstream::new(&r.name, &r.upstream, config.breaker, &metrics),
                readiness: r.readiness,
            })
            .collect();
        // Longest prefix first, so `/a/b` wins over `/a`.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Self {
            routes,
            fallback: config
                .fallback
                .as_ref()
                .map(|url| Upstream::new("fallback", url, config.breaker, &metrics)),
            client: new_client(config.connect_timeout),
            connect_timeout: config.connect_timeout,
            upstream_timeout: config.upstream_timeout,
            max_body_bytes: config.http.max_body_bytes,
            retries: config.retries,
            blocked_paths: config.blocked_paths.clone().into(),
        }
    }

    /// The prefix-routed upstreams that readiness depends on (the fallback excluded).
    pub fn upstreams(&self) -> impl Iterator<Item = &Upstream> {
        self.routes
            .iter()
            .filter(|r| r.readiness)
            .map(|r| &r.upstream)
    }

    /// Every upstream, the fallback included.
    pub fn all_upstreams(&self) -> impl Iterator<Item = &Upstream> {
        self.routes
            .iter()
            .map(|r| &r.upstream)
            .chain(self.fallback.iter())
    }

    /// The same routes, breakers and metrics with a connection pool of its own: each worker
    /// thread keeps its upstream connections on its own runtime.
    pub fn with_own_pool(&self) -> Self {
        Self {
            client: new_client(self.connect_timeout),
            ..self.clone()
        }
    }

    /// The shared client, for readiness probes.
    pub fn client(&self) -> &Client<HttpConnector, Body> {
        &self.client
    }

    fn resolve<'a, 'p>(&'a self, path: &'p str) -> Option<Target<'a, 'p>> {
        for route in &self.routes {
            if let Some(rest) = path.strip_prefix(route.prefix.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return Some(Target {
                    upstream: &route.upstream,
                    path: if rest.is_empty() { "/" } else { rest },
                    prefix: Some(route.prefix.as_str()),
                    label: &route.label,
                });
            }
        }
        self.fallback.as_ref().map(|upstream| Target {
            upstream,
            path,
            prefix: None,
            label: FALLBACK_ROUTE,
        })
    }

    /// The route template a path is served by (`/accounts/{*rest}`), if any.
    pub fn route_of(&self, path: &str) -> Option<&str> {
        self.resolve(path).map(|target| target.label)
    }

    /// Forwards `request` to its upstream and streams the answer back: 404 for no route, 400
    /// for dot segments, 413 over the body limit, 503 `circuit_open` while the upstream's
    /// breaker is open, 502 when it cannot be reached, 504 when it is too slow. Connection
    /// failures are retried for safe methods and requests with an `Idempotency-Key`.
    /// `peer` is the client's TCP address, appended to `X-Forwarded-For`.
    pub async fn forward(&self, request: Request, peer: IpAddr) -> Response {
        let full_path = request.uri().path();
        if has_dot_segments(full_path) {
            return Problem::malformed("the path may not contain . or .. segments").into_response();
        }
        let target = self
            .resolve(full_path)
            .filter(|target| !self.is_blocked(target.path));
        let Some(target) = target else {
            return Problem::not_found(format!("no route for {full_path}")).into_response();
        };
        if content_length(request.headers()).is_some_and(|len| len > self.max_body_bytes as u64) {
            return Problem::from_status(StatusCode::PAYLOAD_TOO_LARGE).into_response();
        }
        let Ok(uri) = target.upstream.uri(target.path, request.uri().query()) else {
            return Problem::malformed("the request path cannot be forwarded").into_response();
        };
        let (upstream, prefix) = (target.upstream, target.prefix);
        if let Err(wait) = upstream.breaker.try_acquire() {
            upstream
                .metrics
                .record(Outcome::CircuitOpen, &upstream.breaker);
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "circuit_open",
                format!(
                    "the {} service is failing; not calling it for now",
                    upstream.name
                ),
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)))
            .into_response();
        }
        let retryable = matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        ) || request.headers().contains_key("idempotency-key");
        // The client span of the call upstream (when spans are exported): the upstream's
        // server span is its child.
        let span = if !common::telemetry::exporting() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
            "upstream_request",
            otel.name = %request.method(),
            otel.kind = "client",
            otel.status_code = Empty,
            upstream = %upstream.name,
            http.request.method = %request.method(),
            server.address = uri.host().unwrap_or_default(),
            server.port = uri.port_u16(),
            url.full = %uri,
            http.response.status_code = Empty,
            )
        };
        let trace = common::request::exported_trace(&span, None);
        let (head, body) = self.outgoing_request(request, peer, uri, prefix, trace);
        let response = async {
            if retryable {
                // Retrying needs the body again: these requests are small (safe methods have none).
                let bytes = if http_body::Body::is_end_stream(&body) {
                    Ok(Bytes::new())
                } else {
                    axum::body::to_bytes(body, self.max_body_bytes).await
                };
                match bytes {
                    Ok(bytes) => self.send_with_retries(upstream, &head, bytes).await,
                    Err(_) => {
                        Err(Problem::from_status(StatusCode::PAYLOAD_TOO_LARGE).into_response())
                    }
                }
            } else {
                self.send(upstream, head.request(Body::new(body))).await
            }
        }
        .instrument(span.clone())
        .await;
        let status = match &response {
            Ok(response) => response.status(),
            Err(failure) => failure.status(),
        };
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "error");
        }
        match response {
            Ok(response) => self.pass_through(upstream, response, prefix),
            Err(failure) => failure,
        }
    }

    /// Whether `path` (as the upstream would see it, percent-decoded) is one of the blocked
    /// paths or under one.
    fn is_blocked(&self, path: &str) -> bool {
        if self.blocked_paths.is_empty() {
            return false;
        }
        let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        self.blocked_paths.iter().any(|blocked| {
            decoded
                .strip_prefix(blocked.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    async fn send_with_retries(
        &self,
        upstream: &Upstream,
        head: &Head,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, Response> {
        let mut attempt = 0;
        loop {
            let request = head.request(Body::from(body.clone()));
            match tokio::time::timeout(self.upstream_timeout, self.client.request(request)).await {
                Ok(Err(error)) if error.is_connect() && attempt < self.retries => {
                    attempt += 1;
                    request_event!(
                        info!(upstream = %upstream.name, attempt, error = %error_chain(&error), "retrying")
                    );
                    upstream.metrics.record(Outcome::Retried, &upstream.breaker);
                    tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
                }
                other => return self.settle(upstream, other),
            }
        }
    }

    async fn send(
        &self,
        upstream: &Upstream,
        request: Request,
    ) -> Result<hyper::Response<Incoming>, Response> {
        let result =
            tokio::time::timeout(self.upstream_timeout, self.client.request(request)).await;
        self.settle(upstream, result)
    }

    /// Records the outcome with the breaker and metrics; failures become 502/504 problems.
    fn settle(
        &self,
        upstream: &Upstream,
        result: Result<
            Result<hyper::Response<Incoming>, hyper_util::client::legacy::Error>,
            tokio::time::error::Elapsed,
        >,
    ) -> Result<hyper::Response<Incoming>, Response> {
        let name = &upstream.name;
        match result {
            Ok(Ok(response)) => {
                let failed = response.status().is_server_error();
                upstream.breaker.record(!failed);
                let outcome = if failed {
                    Outcome::ServerError
                } else {
                    Outcome::Ok
                };
                upstream.metrics.record(outcome, &upstream.breaker);
                Ok(response)
            }
            Ok(Err(error)) => {
                upstream.breaker.record(false);
                upstream
                    .metrics
                    .record(Outcome::Unreachable, &upstream.breaker);
                request_event!(
                    warn!(upstream = %name, error = %error_chain(&error), "upstream request failed")
                );
                Err(Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    format!("the {name} service could not be reached"),
                )
                .into_response())
            }
            Err(_) => {
                upstream.breaker.record(false);
                upstream.metrics.record(Outcome::Timeout, &upstream.breaker);
                request_event!(
                    warn!(upstream = %name, timeout = ?self.upstream_timeout, "upstream timed out")
                );
                Err(Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!("the {name} service did not answer in time"),
                )
                .into_response())
            }
        }
    }

    /// The upstream's response as ours: hop-by-hop headers removed, a relative `Location`
    /// given the prefix back, left as is otherwise (not turned into a problem).
    fn pass_through(
        &self,
        upstream: &Upstream,
        response: hyper::Response<Incoming>,
        prefix: Option<&str>,
    ) -> Response {
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let (Some(prefix), Some(location)) = (prefix, parts.headers.get(header::LOCATION))
            && let Some(rewritten) = rewrite_location(location, prefix)
        {
            parts.headers.insert(header::LOCATION, rewritten);
        }
        upstream.metrics.breaker_state(&upstream.breaker);
        parts.extensions.insert(PassThrough);
        Response::from_parts(parts, Body::new(body))
    }

    /// The request to send upstream; `trace` is the exported client span, if spans are
    /// exported (else the gateway's own span is the upstream's parent).
    fn outgoing_request(
        &self,
        request: Request,
        peer: IpAddr,
        uri: Uri,
        prefix: Option<&str>,
        trace: Option<TraceParent>,
    ) -> (Head, Body) {
        let trace = trace.or_else(|| {
            request
                .extensions()
                .get::<RequestContext>()
                .map(|ctx| ctx.trace)
        });
        let (mut parts, body) = request.into_parts();
        let original_host = parts.headers.get(header::HOST).cloned();
        strip_hop_by_hop(&mut parts.headers);
        let headers = &mut parts.headers;
        // Let the client set Host to the upstream; keep the original in X-Forwarded-Host.
        headers.remove(header::HOST);
        let forwarded_for = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {peer}"),
            None => peer.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
            headers.insert(X_FORWARDED_FOR, value);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        match original_host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host),
            None => headers.remove(X_FORWARDED_HOST),
        };
        match prefix.map(HeaderValue::from_str) {
            Some(Ok(value)) => headers.insert(X_FORWARDED_PREFIX, value),
            _ => headers.remove(X_FORWARDED_PREFIX),
        };
        if let Some(trace) = trace {
            headers.insert(TRACEPARENT, trace.to_header());
        }
        let head = Head {
            method: parts.method,
            uri,
            headers: parts.headers,
        };
        (
            head,
            Body::new(http_body_util::Limited::new(body, self.max_body_bytes)),
        )
    }
}

/// What is sent upstream, reusable for retries.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Head {
    fn request(&self, body: Body) -> Request {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Whether a path has `.` or `..` segments (also percent-encoded), which could step out of
/// the prefix that chose the upstream.
fn has_dot_segments(path: &str) -> bool {
    path.split('/').any(|segment| {
        let dots = segment
            .strip_prefix('.')
            .or_else(|| segment.strip_prefix("%2e"))
            .or_else(|| segment.strip_prefix("%2E"));
        match dots {
            None => false,
            Some("") => true,
            Some(rest) => matches!(rest, "." | "%2e" | "%2E"),
        }
    })
}

/// `/v1/payments/1` from an upstream behind `/payments` becomes `/payments/v1/payments/1`;
/// absolute URLs and locations already under the prefix are left alone.
fn rewrite_location(location: &HeaderValue, prefix: &str) -> Option<HeaderValue> {
    let text = location.to_str().ok()?;
    if !text.starts_with('/')
        || text.starts_with("//")
        || text == prefix
        || text.starts_with(&format!("{prefix}/"))
    {
        return None;
    }
    HeaderValue::from_str(&format!("{prefix}{text}")).ok()
}

/// Per-upstream metrics.
#[derive(Clone)]
struct ProxyMetrics {
    requests: prometheus::IntCounterVec,
    breaker: prometheus::IntGaugeVec,
}

impl ProxyMetrics {
    fn new(metrics: &Metrics) -> Self {
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
enum Outcome {
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
struct UpstreamMetrics {
    outcomes: Arc<[prometheus::IntCounter]>,
    breaker: prometheus::IntGauge,
}

impl UpstreamMetrics {
    fn record(&self, outcome: Outcome, breaker: &Breaker) {
        if let Some(counter) = self.outcomes.get(outcome as usize) {
            counter.inc();
        }
        self.breaker_state(breaker);
    }

    fn breaker_state(&self, breaker: &Breaker) {
        self.breaker.set(breaker.state().code());
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// Removes RFC 9110 §7.6.1 connection-specific headers, including those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none: one look at each name instead of a removal of each kind.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let mut doomed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    doomed.extend(headers.keys().filter(|name| is_hop_by_hop(name)).cloned());
    for name in doomed {
        headers.remove(name);
    }
}

/// Whether `name` is connection-specific whatever `Connection` says (RFC 9110 §7.6.1, plus
/// the `Keep-Alive` and `Proxy-Connection` of older clients).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "keep-alive"
            | "proxy-connection"
    )
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::config::Env;

    fn proxy(fallback: Option<&str>) -> Proxy {
        let mut env = Env::default();
        if let Some(url) = fallback {
            env = env.with("GATEWAY_FALLBACK_URL", url);
        }
        Proxy::new(&GatewayConfig::from_env(&env).unwrap(), &Metrics::new())
    }

    #[test]
    fn blocked_paths_cover_what_is_under_them_even_encoded() {
        let env = Env::from_pairs([("GATEWAY_BLOCKED_PATHS", "/metrics")]);
        let proxy = Proxy::new(&GatewayConfig::from_env(&env).unwrap(), &Metrics::new());
        for blocked in [
            "/metrics",
            "/metrics/",
            "/metrics/x",
            "/%6Detrics",
            "/%6detrics/y",
        ] {
            assert!(proxy.is_blocked(blocked), "{blocked}");
        }
        for open in ["/metricsx", "/v1/metrics", "/", "/healthz"] {
            assert!(!proxy.is_blocked(open), "{open}");
        }
        assert!(
            !self::proxy(None).is_blocked("/metrics"),
            "nothing blocked by default"
        );
    }

    #[test]
    fn prefixes_are_stripped_only_at_segment_boundaries() {
        let proxy = proxy(None);
        let target = proxy.resolve("/accounts/healthz").unwrap();
        assert_eq!(
            (target.upstream.name.as_str(), target.path),
            ("accounts", "/healthz")
        );
        assert_eq!(proxy.resolve("/payments").unwrap().path, "/");
        assert_eq!(proxy.resolve("/payments/").unwrap().path, "/");
        assert!(proxy.resolve("/paymentsx/1").is_none());
        assert!(proxy.resolve("/other").is_none());
    }

    #[test]
    fn other_paths_go_to_the_fallback_unchanged() {
        let proxy = proxy(Some("http://127.0.0.1:9000/legacy/"));
        let target = proxy.resolve("/admin/login/").unwrap();
        assert_eq!(target.upstream.name, "fallback");
        assert_eq!(
            target.upstream.uri(target.path, Some("next=/")).unwrap(),
            "http://127.0.0.1:9000/legacy/admin/login/?next=/"
        );
        assert!(target.prefix.is_none());
    }

    #[test]
    fn dot_segments_are_found_even_encoded() {
        for path in ["/accounts/../payments", "/a/./b", "/a/%2e%2E/b", "/.."] {
            assert!(has_dot_segments(path), "{path}");
        }
        for path in ["/accounts/v1/users", "/a/..b/c", "/a/.well-known/x", "/"] {
            assert!(!has_dot_segments(path), "{path}");
        }
    }

    #[test]
    fn relative_locations_get_the_prefix_back() {
        let rewrite = |l: &str| {
            rewrite_location(&HeaderValue::from_str(l).unwrap(), "/payments")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            rewrite("/v1/payments/p1").as_deref(),
            Some("/payments/v1/payments/p1")
        );
        assert_eq!(rewrite("/payments/v1/payments/p1"), None);
        assert_eq!(rewrite("https://elsewhere/x"), None);
        assert_eq!(rewrite("//elsewhere/x"), None);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        for always in [
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "upgrade",
            "proxy-connection",
        ] {
            headers.insert(always, HeaderValue::from_static("x"));
        }
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));
    }
}
