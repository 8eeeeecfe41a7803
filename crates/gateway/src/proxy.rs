//! Forwarding: prefix routing with the prefix stripped, pooled keep-alive connections,
//! hop-by-hop headers removed, `X-Forwarded-*` and `traceparent` set, bodies streamed, a
//! circuit breaker per upstream, retries where they are safe, `Location` rewritten.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::metrics::Metrics;
use common::request::{RequestContext, TRACEPARENT};
use http::Request;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use tracing::Instrument;

use crate::body::{EdgeBody, StartError, TimedBody, UpstreamBody, UpstreamResponseBody};
use crate::breaker::Permit;
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::h1::SetHeaders;
use crate::pool::{PooledBody, SendError, error_chain};
use crate::upstream::{Outcome, ProxyMetrics, Upstream};

/// The client at the other end of one connection, whether it is a proxy the gateway trusts,
/// and what it adds to `X-Forwarded-For` (worked out once per connection, not per request).
pub struct Downstream {
    /// Its TCP address.
    pub addr: SocketAddr,
    /// One of `GATEWAY_TRUSTED_PROXIES`: the forwarding headers it sends are kept (its
    /// `X-Forwarded-For` hops, `-Proto`, `-Host`); anyone else's are replaced.
    trusted: bool,
    /// Its IP as a header value.
    forwarded_for: Option<HeaderValue>,
}

impl Downstream {
    /// The client at `addr`; `trusted` when it is a proxy in front of the gateway.
    pub fn new(addr: SocketAddr, trusted: bool) -> Self {
        Self {
            addr,
            trusted,
            forwarded_for: HeaderValue::from_str(&addr.ip().to_string()).ok(),
        }
    }
}

/// A prefix route.
#[derive(Clone)]
struct Route {
    prefix: Prefix,
    /// Its route template in metrics and spans: `{prefix}/{*rest}`.
    label: String,
    upstream: Upstream,
    readiness: bool,
}

/// The route template of paths served by the fallback upstream.
const FALLBACK_ROUTE: &str = "{*fallback}";

/// The forwarding half of the gateway: its routes, each upstream's connections.
#[derive(Clone)]
pub struct Proxy {
    routes: Vec<Route>,
    fallback: Option<Upstream>,
    upstream_timeout: Duration,
    read_timeout: Duration,
    max_body_bytes: usize,
    retries: u32,
    blocked_paths: Arc<[String]>,
}

/// Where a request goes: the upstream, the path to ask it for, the prefix that was removed
/// and the route template.
struct Target<'a, 'p> {
    upstream: &'a Upstream,
    path: &'p str,
    prefix: Option<&'a Prefix>,
    label: &'a str,
}

/// A route's prefix, and as the `X-Forwarded-Prefix` header.
#[derive(Clone)]
struct Prefix {
    path: String,
    header: Option<HeaderValue>,
}

impl Proxy {
    /// Builds the routes, each upstream with a connection pool of its own.
    pub fn new(config: &GatewayConfig, metrics: &Metrics) -> Self {
        let metrics = ProxyMetrics::new(metrics);
        let mut routes: Vec<Route> = config
            .routes
            .iter()
            .map(|r| {
                let prefix = r.prefix.trim_end_matches('/').to_owned();
                Route {
                    label: format!("{prefix}/{{*rest}}"),
                    prefix: Prefix {
                        header: HeaderValue::from_str(&prefix).ok(),
                        path: prefix,
                    },
                    upstream: Upstream::new(&r.name, &r.upstream, config, &metrics),
                    readiness: r.readiness,
                }
            })
            .collect();
        // Longest prefix first, so `/a/b` wins over `/a`.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.path.len()));
        Self {
            routes,
            fallback: config
                .fallback
                .as_ref()
                .map(|url| Upstream::new("fallback", url, config, &metrics)),
            upstream_timeout: config.upstream_timeout,
            read_timeout: config.upstream_read_timeout,
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

    /// The same routes, breakers and metrics with connections of its own: each worker thread
    /// keeps its upstream connections on its own runtime.
    pub fn with_own_pool(&self) -> Self {
        Self {
            routes: self
                .routes
                .iter()
                .map(|route| Route {
                    upstream: route.upstream.with_own_pool(),
                    ..route.clone()
                })
                .collect(),
            fallback: self.fallback.as_ref().map(Upstream::with_own_pool),
            ..self.clone()
        }
    }

    fn resolve<'a, 'p>(&'a self, path: &'p str) -> Option<Target<'a, 'p>> {
        for route in &self.routes {
            if let Some(rest) = path.strip_prefix(route.prefix.path.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return Some(Target {
                    upstream: &route.upstream,
                    path: if rest.is_empty() { "/" } else { rest },
                    prefix: Some(&route.prefix),
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
    /// `client`'s address is appended to `X-Forwarded-For`; `context` is this hop's (its span
    /// is the upstream's parent unless spans are exported: then the client span is).
    pub async fn forward(
        &self,
        request: Request<Incoming>,
        client: &Downstream,
        context: &RequestContext,
    ) -> http::Response<EdgeBody> {
        let full_path = request.uri().path();
        if has_dot_segments(full_path) {
            return GatewayError::DotSegments.respond(context);
        }
        let target = self
            .resolve(full_path)
            .filter(|target| !self.is_blocked(target.path));
        let Some(target) = target else {
            let path = full_path.to_owned();
            return GatewayError::NoRoute { path }.respond(context);
        };
        // The body's length as its `Content-Length` declares it (0 when it streams).
        let declared = http_body::Body::size_hint(request.body()).lower();
        if declared > self.max_body_bytes as u64 {
            return GatewayError::PayloadTooLarge.respond(context);
        }
        let Ok(uri) = target.upstream.uri(target.path, request.uri().query()) else {
            return GatewayError::Unforwardable.respond(context);
        };
        let (upstream, prefix) = (target.upstream, target.prefix);
        let permit = match upstream.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(wait) => {
                upstream
                    .metrics
                    .record(Outcome::CircuitOpen, &upstream.breaker);
                return GatewayError::CircuitOpen {
                    upstream: upstream.name.clone(),
                    retry_after: wait,
                }
                .respond(context);
            }
        };
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
                otel.status_code = tracing::field::Empty,
                upstream = %upstream.name,
                http.request.method = %request.method(),
                server.address = upstream.pool.host(),
                server.port = upstream.pool.port(),
                url.full = %format_args!("{}{uri}", upstream.origin),
                http.response.status_code = tracing::field::Empty,
            )
        };
        let trace = common::request::exported_trace(&span, None).unwrap_or(context.trace);
        let (outgoing, set) = self.outgoing_request(request, client, uri, upstream, prefix, trace);
        // One future, instrumented whether or not there is a span (entering none costs a
        // branch): awaiting it on two paths would give the request's future room for both.
        let attempt = async {
            match self
                .send(upstream, outgoing, &set, retryable, context)
                .await
            {
                Ok(Ok(response)) => self.start_body(response).await,
                Ok(Err(error)) => Attempt::Failed(error),
                Err(_) => Attempt::TimedOut,
            }
        }
        .instrument(span.clone())
        .await;
        let response = match self.settle(upstream, permit, attempt, context) {
            Ok(response) => self.pass_through(upstream, response, prefix),
            Err(failure) => failure,
        };
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "error");
        }
        response
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

    /// Reads the first frame of `response`'s body (a body that fails or stalls before it is
    /// an upstream failure, answered while nothing of the response has gone out).
    async fn start_body(&self, response: http::Response<PooledBody<UpstreamBody>>) -> Attempt {
        let (parts, body) = response.into_parts();
        match TimedBody::start(body, self.read_timeout).await {
            Ok(body) => Attempt::Answered(http::Response::from_parts(parts, body)),
            Err(StartError::Failed(why)) => Attempt::BodyFailed(why),
            Err(StartError::TimedOut) => Attempt::TimedOut,
        }
    }

    /// Sends `request` upstream, each attempt allowed the upstream timeout; a connection that
    /// cannot be made is tried again (nothing was sent) when the request is `retryable`.
    async fn send(
        &self,
        upstream: &Upstream,
        mut request: Request<UpstreamBody>,
        set: &SetHeaders,
        retryable: bool,
        context: &RequestContext,
    ) -> Sent {
        let mut attempt = 0;
        loop {
            // Boxed: every future above this one (the request's, moved whole a few times on
            // its way to the connection's task) would otherwise hold this one's state.
            let result = Box::pin(tokio::time::timeout(
                self.upstream_timeout,
                upstream.pool.send(request, set, retryable),
            ))
            .await;
            match result {
                Ok(Err(SendError::Connect {
                    reason,
                    request: unsent,
                })) if retryable && attempt < self.retries => {
                    attempt += 1;
                    request_event!(
                        context,
                        info!(upstream = %upstream.name, attempt, error = %reason, "retrying")
                    );
                    upstream.metrics.record(Outcome::Retried, &upstream.breaker);
                    Box::pin(tokio::time::sleep(Duration::from_millis(25 << attempt))).await;
                    request = *unsent;
                }
                other => return other,
            }
        }
    }

    /// Records the outcome with the breaker and metrics; failures become 502/504 problems, and
    /// a request whose own body failed (over the limit, or the client gone) a 413 or 400 that
    /// says nothing about the upstream.
    fn settle(
        &self,
        upstream: &Upstream,
        permit: Permit<'_>,
        result: Attempt,
        context: &RequestContext,
    ) -> Result<http::Response<UpstreamResponseBody>, http::Response<EdgeBody>> {
        let name = &upstream.name;
        match result {
            Attempt::Answered(response) => {
                let failed = response.status().is_server_error();
                permit.record(!failed);
                let outcome = if failed {
                    Outcome::ServerError
                } else {
                    Outcome::Ok
                };
                upstream.metrics.record(outcome, &upstream.breaker);
                Ok(response)
            }
            Attempt::Failed(SendError::Request(error)) if error.is_user() => {
                drop(permit);
                let too_long = std::iter::successors(std::error::Error::source(&error), |cause| {
                    cause.source()
                })
                .any(|cause| cause.is::<http_body_util::LengthLimitError>());
                request_event!(
                    context,
                    info!(upstream = %name, error = %error_chain(&error), "request body failed")
                );
                Err(if too_long {
                    GatewayError::PayloadTooLarge
                } else {
                    GatewayError::BodyUnreadable
                }
                .respond(context))
            }
            Attempt::Failed(error) => {
                permit.record(false);
                upstream
                    .metrics
                    .record(Outcome::Unreachable, &upstream.breaker);
                request_event!(
                    context,
                    warn!(upstream = %name, error = %error, "upstream request failed")
                );
                Err(GatewayError::Unreachable {
                    upstream: name.clone(),
                }
                .respond(context))
            }
            Attempt::BodyFailed(why) => {
                permit.record(false);
                upstream
                    .metrics
                    .record(Outcome::Unreachable, &upstream.breaker);
                request_event!(
                    context,
                    warn!(upstream = %name, error = %why, "upstream response body failed before it began")
                );
                Err(GatewayError::InvalidResponse {
                    upstream: name.clone(),
                }
                .respond(context))
            }
            Attempt::TimedOut => {
                permit.record(false);
                upstream.metrics.record(Outcome::Timeout, &upstream.breaker);
                request_event!(
                    context,
                    warn!(upstream = %name, timeout = ?self.upstream_timeout, "upstream timed out")
                );
                Err(GatewayError::Timeout {
                    upstream: name.clone(),
                }
                .respond(context))
            }
        }
    }

    /// The upstream's response as ours: hop-by-hop headers removed, a relative `Location`
    /// given the prefix back, left as is otherwise (not turned into a problem).
    fn pass_through(
        &self,
        upstream: &Upstream,
        response: http::Response<UpstreamResponseBody>,
        prefix: Option<&Prefix>,
    ) -> http::Response<EdgeBody> {
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let (Some(prefix), Some(location)) = (prefix, parts.headers.get(header::LOCATION))
            && let Some(rewritten) = rewrite_location(location, &prefix.path)
        {
            parts.headers.insert(header::LOCATION, rewritten);
        }
        upstream.metrics.breaker_state(&upstream.breaker);
        http::Response::from_parts(parts, Either::Left(body))
    }

    /// The request to send upstream (hop-by-hop headers removed, origin-form URI), and the
    /// headers the gateway sets on it in place of the client's: `Host` (the upstream's; the
    /// client's kept in `X-Forwarded-Host`), `X-Forwarded-For` (`client` added to the hops
    /// before), `-Proto`, `-Prefix` and `traceparent` (`trace` its parent span). They are
    /// not put in the request's header map: for most requests the pool writes them straight
    /// into the head it sends.
    fn outgoing_request(
        &self,
        request: Request<Incoming>,
        client: &Downstream,
        uri: Uri,
        upstream: &Upstream,
        prefix: Option<&Prefix>,
        trace: common::request::TraceParent,
    ) -> (Request<UpstreamBody>, Forwarding) {
        let (mut parts, body) = request.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // The gateway owns the forwarding headers: what an untrusted client claims in them
        // never reaches an upstream.
        for name in CLIENT_FORWARDING {
            if parts.headers.contains_key(&name) {
                parts.headers.remove(&name);
            }
        }
        let headers = &parts.headers;
        let trusted = |name: &HeaderName| headers.get(name).filter(|_| client.trusted).cloned();
        let original_host =
            match trusted(&X_FORWARDED_HOST).or_else(|| headers.get(header::HOST).cloned()) {
                Some(host) => Some(host),
                // HTTP/2 carries the host in the URI (`:authority`), not in a header.
                None => parts
                    .uri
                    .authority()
                    .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok()),
            };
        let mut prior = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter(|_| client.trusted)
            .filter_map(|value| value.to_str().ok())
            .peekable();
        let forwarded_for = if prior.peek().is_none() {
            client.forwarded_for.clone()
        } else {
            let mut chain = prior.collect::<Vec<_>>().join(", ");
            chain.push_str(", ");
            chain.push_str(&client.addr.ip().to_string());
            HeaderValue::from_str(&chain)
                .ok()
                .or_else(|| client.forwarded_for.clone())
        };
        let proto = trusted(&X_FORWARDED_PROTO)
            .filter(|proto| matches!(proto.as_bytes(), b"http" | b"https"))
            .unwrap_or(HeaderValue::from_static("http"));
        let set = [
            (header::HOST, Some(upstream.host.clone())),
            (X_FORWARDED_FOR, forwarded_for),
            (X_FORWARDED_PROTO, Some(proto)),
            (X_FORWARDED_HOST, original_host),
            (
                X_FORWARDED_PREFIX,
                prefix.and_then(|prefix| prefix.header.clone()),
            ),
            (TRACEPARENT, Some(trace.to_header())),
        ];
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let request = Request::from_parts(
            parts,
            http_body_util::Limited::new(Either::Left(body), self.max_body_bytes),
        );
        (request, set)
    }
}

/// The headers the gateway sets on a forwarded request (see [`Proxy::outgoing_request`]).
type Forwarding = [(HeaderName, Option<HeaderValue>); 6];

/// How sending to an upstream went: in time or not, and then answered or failed.
type Sent = Result<
    Result<http::Response<PooledBody<UpstreamBody>>, SendError<UpstreamBody>>,
    tokio::time::error::Elapsed,
>;

/// How a request to an upstream ended, its body started.
// The large variant is the common one: boxing it would allocate once more per request.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    /// A response, its body begun.
    Answered(http::Response<UpstreamResponseBody>),
    /// No response: the connection or the request failed.
    Failed(SendError<UpstreamBody>),
    /// A response head whose body failed before its first byte.
    BodyFailed(String),
    /// No response head in the upstream timeout, or no first body byte in the read timeout.
    TimedOut,
}

/// Whether a path has `.` or `..` segments (also percent-encoded), which could step out of
/// the prefix that chose the upstream.
fn has_dot_segments(path: &str) -> bool {
    // Most paths have neither a dot nor an escape: one scan settles them.
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return false;
    }
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

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// Forwarding headers a client may send that the gateway neither sets nor passes on: the
/// standard `Forwarded` (RFC 7239) and nginx's `X-Real-IP`. An upstream that read them would
/// take a client's word for its address.
const CLIENT_FORWARDING: [HeaderName; 2] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-real-ip"),
];

/// Removes RFC 9110 §7.6.1 connection-specific headers, including those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One look at each name (most messages have none, or only `Connection: keep-alive`).
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(index) = hop_by_hop_index(name) {
            present |= 1 << index;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // What `Connection` lists besides its usual `keep-alive` / `close`.
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| {
                !name.eq_ignore_ascii_case("keep-alive") && !name.eq_ignore_ascii_case("close")
            })
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (index, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << index) != 0 {
            headers.remove(name);
        }
    }
}

/// Connection-specific whatever `Connection` says (RFC 9110 §7.6.1, plus the `Keep-Alive`
/// and `Proxy-Connection` of older clients); `Connection` first.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Where `name` is in [`HOP_BY_HOP`], if it is hop-by-hop (one string match per name, not
/// nine comparisons: this runs for every header of every request and response).
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "proxy-authenticate" => 1,
        "proxy-authorization" => 2,
        "te" => 3,
        "trailer" => 4,
        "transfer-encoding" => 5,
        "upgrade" => 6,
        "keep-alive" => 7,
        "proxy-connection" => 8,
        _ => return None,
    })
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
    fn each_hop_by_hop_header_is_found_at_its_place() {
        for (index, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(index), "{name}");
        }
        assert_eq!(hop_by_hop_index(&header::CONTENT_LENGTH), None);
        assert_eq!(hop_by_hop_index(&HeaderName::from_static("x-te")), None);
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
            "/legacy/admin/login/?next=/"
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
