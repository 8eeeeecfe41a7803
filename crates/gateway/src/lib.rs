//! The gateway: the one public entry point, routing `/accounts/*` and `/payments/*` (prefix
//! stripped) to the services over pooled keep-alive connections, and everything else to the
//! fallback upstream if one is configured.

/// A log line about a forwarded request (`context`: its [`RequestContext`]): forwarded
/// requests have no span of their own unless spans are exported, so the line carries the
/// request's `request_id` and `trace_id` itself when no span does.
///
/// [`RequestContext`]: common::request::RequestContext
macro_rules! request_event {
    ($context:expr, $level:ident!($($fields:tt)*)) => {
        if tracing::Span::current().is_none() {
            let context: &common::request::RequestContext = $context;
            tracing::$level!(
                request_id = %context.request_id,
                trace_id = %context.trace.trace_id_hex(),
                $($fields)*
            )
        } else {
            tracing::$level!($($fields)*)
        }
    };
}

pub mod body;
pub mod breaker;
pub mod client;
pub mod config;
pub mod h1;
pub mod limit;
pub mod pool;
pub mod proxy;
pub mod server;
pub mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use common::auth::{HttpJwks, TokenVerifier, VerifierSettings};
use common::health::{HealthCheck, Readiness};
use common::request::{RequestObserver, RequestSpans};
use http::HeaderValue;
use hyper::body::Incoming;
use limit::{Decision, Limiter, RateLimitSettings};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use config::GatewayConfig;
pub use proxy::EdgeBody;
use proxy::{Proxy, own};
use upstream::Upstream;

/// The service's name in logs and spans.
pub const SERVICE: &str = "gateway";

/// `gateway serve`: the configuration from the environment, then serve until a signal.
pub fn serve(args: common::server::ServeArgs) -> std::process::ExitCode {
    common::server::run_binary(
        SERVICE,
        GatewayConfig::from_env,
        |config, shutdown| async move {
            let app = Application::build(config).await?;
            args.announce(app.local_addr()?)?;
            app.run(shutdown).await
        },
    )
}

/// A built gateway: listening sockets bound, not yet serving.
pub struct Application {
    /// One listening socket per worker, all on the same address.
    listeners: Vec<std::net::TcpListener>,
    gateway: Gateway,
    serving: server::ServeSettings,
}

impl Application {
    /// Binds `config.addr` (port 0 picks a free port).
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        for route in &config.routes {
            tracing::info!(prefix = %route.prefix, upstream = %route.upstream, "route");
        }
        let redis = match &config.redis_url {
            Some(url) if config.rate_limit.is_some() => Some((
                limit::connect_redis(url).await?,
                config.redis_prefix.clone(),
            )),
            _ => None,
        };
        let cannot = |e| anyhow::anyhow!("cannot listen on GATEWAY_ADDR {}: {e}", config.addr);
        let first = worker_listener(config.addr).map_err(cannot)?;
        // The others on the port the first one got (GATEWAY_ADDR may ask for port 0).
        let addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..config.workers {
            listeners.push(worker_listener(addr).map_err(cannot)?);
        }
        Ok(Self {
            listeners,
            gateway: Gateway::new(&config, redis),
            serving: server::ServeSettings {
                h2c: config.h2c,
                client_timeout: config.client_timeout,
                grace: config.http.shutdown_grace,
            },
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self.listeners.first() {
            Some(listener) => listener.local_addr(),
            None => Err(std::io::Error::other("no listening socket")),
        }
    }

    /// Serves until `shutdown` fires and in-flight requests have finished.
    ///
    /// Like nginx's worker processes, each of the `GATEWAY_WORKERS` threads runs a
    /// single-threaded runtime that accepts from a listening socket of its own (`SO_REUSEPORT`:
    /// the kernel spreads new connections evenly over them, where one shared socket lets
    /// whichever worker wakes first take a whole burst) and keeps its own upstream connections,
    /// so a request never changes threads on its way through; breakers, rate limits, metrics
    /// and the key cache are shared by all of them.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        let workers = self.listeners.len();
        tracing::info!(service = SERVICE, %addr, workers, "listening");
        // A worker that fails stops the others; the caller's token is left alone.
        let stop = shutdown.child_token();
        let mut finished = Vec::with_capacity(workers);
        for (index, listener) in self.listeners.into_iter().enumerate() {
            let service = self.gateway.worker();
            let stop = stop.clone();
            let serving = self.serving;
            let (done, finished_rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name(format!("gateway-worker-{index}"))
                .spawn(move || {
                    let result = serve_worker(listener, service, serving, stop.clone());
                    if result.is_err() {
                        stop.cancel();
                    }
                    let _ = done.send(result);
                })?;
            finished.push(finished_rx);
        }
        let mut result = Ok(());
        for worker in finished {
            let outcome = worker
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a gateway worker panicked")));
            if let Err(error) = outcome {
                stop.cancel();
                result = Err(error);
            }
        }
        tracing::info!(service = SERVICE, "stopped");
        result
    }
}

/// A nonblocking listening socket on `addr` that other sockets may share (`SO_REUSEPORT`), with
/// the backlog tokio's own `bind` gives.
fn worker_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// One worker thread: a single-threaded runtime serving `service` on `listener`.
fn serve_worker(
    listener: std::net::TcpListener,
    service: Worker,
    serving: server::ServeSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        server::serve(listener, service, serving, shutdown).await;
        Ok(())
    })
}

/// What every worker shares: routes and their breakers, the rate limiter, the token verifier,
/// metrics and readiness. Each worker's [`Gateway::worker`] adds connections of its own.
#[derive(Clone)]
pub struct Gateway {
    edge: Edge,
    readiness: Readiness,
    metrics: common::metrics::Metrics,
    http: common::config::HttpConfig,
}

impl Gateway {
    /// The shared state. `redis`, when given, holds the rate limits shared by every gateway.
    pub fn new(
        config: &GatewayConfig,
        redis: Option<(redis::aio::ConnectionManager, String)>,
    ) -> Self {
        let metrics = common::metrics::Metrics::new();
        let proxy = Arc::new(Proxy::new(config, &metrics));
        let readiness = proxy
            .upstreams()
            .fold(Readiness::new(), |readiness, upstream| {
                readiness.with(Arc::new(UpstreamCheck {
                    upstream: upstream.clone(),
                }))
            });
        let mut settings = VerifierSettings::new(config.token_issuer.clone(), "accounts");
        settings.audiences.push("payments".to_owned());
        let redis =
            redis.map(|(connection, prefix)| limit::SharedRedis::new(connection, prefix, &metrics));
        let mut limits: Vec<EdgeLimit> = Vec::new();
        if config.rate_limit.is_some() {
            // Paths with a limit of their own first (longest first), then the default one.
            for path_limit in &config.path_limits {
                limits.push(EdgeLimit::new(
                    Some(&path_limit.path),
                    &path_limit.name,
                    Limiter::new(path_limit.settings, redis.clone(), Some(&path_limit.name)),
                ));
            }
        }
        if let Some(settings) = config.rate_limit {
            limits.push(EdgeLimit::new(
                None,
                "default",
                Limiter::new(settings, redis, None),
            ));
        }
        let rate_limited = metrics.counter(
            "gateway_rate_limited_total",
            "Requests refused with 429 by the rate limiter, by limit (default, or a path's own).",
            &["limit"],
        );
        for limit in &limits {
            rate_limited.with_label_values(&[&*limit.name]);
        }
        let edge = Edge {
            proxy,
            limits: limits.into(),
            verifier: Arc::new(TokenVerifier::new(
                Arc::new(HttpJwks::new(config.jwks_url.clone())),
                settings,
            )),
            rate_limited,
            trusted_proxies: config.trusted_proxies.clone().into(),
            observer: RequestObserver {
                service: SERVICE,
                metrics: metrics.clone(),
                spans: RequestSpans::WhenExported,
            },
        };
        if !edge.limits.is_empty() {
            // Forget idle clients now and then, so the in-process tables stay small.
            let limiters: Vec<_> = edge
                .limits
                .iter()
                .map(|limit| Arc::downgrade(&limit.limiter))
                .collect();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(Duration::from_secs(60));
                loop {
                    interval.tick().await;
                    let mut alive = false;
                    for limiter in limiters.iter().filter_map(std::sync::Weak::upgrade) {
                        limiter.shrink();
                        alive = true;
                    }
                    if !alive {
                        break;
                    }
                }
            });
        }
        Self {
            edge,
            readiness,
            metrics,
            http: config.http.clone(),
        }
    }

    /// What one worker serves: the proxy (with a connection pool of its own) and the
    /// gateway's own probes and metrics.
    pub fn worker(&self) -> Worker {
        let edge = Edge {
            proxy: Arc::new(self.edge.proxy.with_own_pool()),
            // Not shared: cloning one header value from every worker would contend for its
            // count.
            limits: self.edge.limits.iter().map(EdgeLimit::for_worker).collect(),
            ..self.edge.clone()
        };
        let own = Router::new().merge(common::health::routes(self.readiness.clone()));
        Worker {
            edge: Arc::new(edge),
            own: common::server::finish(own, SERVICE, &self.http, &self.metrics),
        }
    }
}

/// The gateway's own endpoints; every other path is forwarded.
const OWN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// One worker's service: requests for [`OWN_PATHS`] go to the probe and metrics router (with
/// every service's standard layers), the others straight to the edge, which observes them
/// as those layers would (request id, trace context, span, access log, RED metrics) without
/// the router's per-request machinery in the way of the hot path.
#[derive(Clone)]
pub struct Worker {
    edge: Arc<Edge>,
    own: Router,
}

impl Worker {
    /// The service for a connection from `peer`.
    pub fn connection(&self, peer: SocketAddr) -> Connection {
        let trusted = self
            .edge
            .trusted_proxies
            .iter()
            .any(|network| network.contains(&peer.ip()));
        Connection {
            worker: self.clone(),
            client: Arc::new(proxy::Client::new(peer, trusted)),
        }
    }
}

/// The service for one client connection.
#[derive(Clone)]
pub struct Connection {
    worker: Worker,
    client: Arc<proxy::Client>,
}

impl hyper::service::Service<http::Request<Incoming>> for Connection {
    type Response = http::Response<EdgeBody>;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn call(&self, mut request: http::Request<Incoming>) -> Self::Future {
        if OWN_PATHS.contains(&request.uri().path()) {
            request
                .extensions_mut()
                .insert(ConnectInfo(self.client.addr));
            let own = self.worker.own.clone().oneshot(request.map(Body::new));
            return Box::pin(async move {
                own.await
                    .map(|response| response.map(http_body_util::Either::Right))
            });
        }
        let edge = self.worker.edge.clone();
        let client = self.client.clone();
        Box::pin(async move { Ok(edge.serve(request, &client).await) })
    }
}

/// A rate limit: the default one, or a path's own.
#[derive(Clone)]
struct EdgeLimit {
    /// The path it is for, with everything under it; `None` for the default limit.
    path: Option<Arc<str>>,
    /// `default`, or the path limit's name.
    name: Arc<str>,
    limiter: Arc<Limiter>,
    /// `RateLimit-Policy`, the same on every response it answers.
    policy: Option<HeaderValue>,
}

impl EdgeLimit {
    fn new(path: Option<&str>, name: &str, limiter: Limiter) -> Self {
        Self {
            path: path.map(Arc::from),
            name: Arc::from(name),
            policy: rate_limit_policy(name, limiter.settings()),
            limiter: Arc::new(limiter),
        }
    }

    /// The same limit with a header value of the worker's own.
    fn for_worker(&self) -> Self {
        Self {
            policy: self
                .policy
                .as_ref()
                .and_then(|policy| HeaderValue::from_bytes(policy.as_bytes()).ok()),
            ..self.clone()
        }
    }

    /// Whether it limits requests for `path`.
    fn covers(&self, path: &str) -> bool {
        self.path.as_deref().is_none_or(|own| {
            path.strip_prefix(own)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

/// The edge: rate limiting in front of the proxy.
#[derive(Clone)]
struct Edge {
    proxy: Arc<Proxy>,
    /// Path limits, longest path first, then the default limit; empty when limiting is off.
    limits: Arc<[EdgeLimit]>,
    verifier: Arc<TokenVerifier>,
    rate_limited: prometheus::IntCounterVec,
    trusted_proxies: Arc<[ipnet::IpNet]>,
    observer: RequestObserver,
}

impl Edge {
    /// Serves one forwarded request, observed as every service's requests are.
    async fn serve(
        &self,
        mut request: http::Request<Incoming>,
        client: &proxy::Client,
    ) -> http::Response<EdgeBody> {
        let observation = self.observer.begin(&mut request);
        let route = self.proxy.route_of(request.uri().path());
        if let Some(route) = route {
            observation.span().record("http.route", route);
        }
        let mut response = {
            let context = observation.context();
            let span = observation.span();
            // Polled where it lies, inside the span (if there is one), its panics caught: a
            // wrapper of each kind around the future would move the whole future into it.
            let mut forward =
                std::pin::pin!(self.forward(request, client, context, route.is_some()));
            let outcome = std::future::poll_fn(|cx| {
                let _entered = (!span.is_none()).then(|| span.enter());
                match std::panic::catch_unwind(AssertUnwindSafe(|| forward.as_mut().poll(cx))) {
                    Ok(poll) => poll.map(Ok),
                    Err(panic) => Poll::Ready(Err(panic)),
                }
            })
            .await;
            outcome.unwrap_or_else(|_| {
                request_event!(context, error!("handler panicked"));
                own(common::Problem::internal(), context)
            })
        };
        self.observer.finish(observation, route, &mut response);
        response
    }

    /// Rate limiting (for routed paths), then the proxy.
    async fn forward(
        &self,
        request: http::Request<Incoming>,
        client: &proxy::Client,
        context: &common::request::RequestContext,
        routed: bool,
    ) -> http::Response<EdgeBody> {
        let mut quota = None;
        let limit = self
            .limits
            .iter()
            .find(|limit| routed && limit.covers(request.uri().path()));
        if let Some(limit) = limit {
            let key = match bearer_token(request.headers()) {
                // Boxed: a token check would otherwise make every request's future larger.
                Some(token) => Box::pin(self.subject_key(token)).await,
                None => None,
            }
            .unwrap_or_else(|| {
                limit::ClientKey::Ip(client::address(
                    client.addr.ip(),
                    request.headers(),
                    &self.trusted_proxies,
                ))
            });
            let decision = match limit.limiter.check_now(&key) {
                Some(decision) => decision,
                None => Box::pin(limit.limiter.check(&key)).await,
            };
            match decision {
                Decision::Allowed { remaining, reset } => quota = Some((limit, remaining, reset)),
                Decision::Limited { retry_after } => {
                    self.rate_limited.with_label_values(&[&*limit.name]).inc();
                    let seconds = ceil_seconds(retry_after).max(1);
                    let mut response = own(
                        common::Problem::new(
                            http::StatusCode::TOO_MANY_REQUESTS,
                            "rate_limited",
                            format!("too many requests; retry in {seconds} s"),
                        )
                        .with_header(http::header::RETRY_AFTER, HeaderValue::from(seconds)),
                        context,
                    );
                    rate_limit_headers(limit, response.headers_mut(), 0, retry_after);
                    return response;
                }
            }
        }
        let mut response = self.proxy.forward(request, client, context).await;
        if let Some((limit, remaining, reset)) = quota {
            rate_limit_headers(limit, response.headers_mut(), remaining, reset);
        }
        response
    }

    /// The subject of `token`, if it is a valid access token.
    async fn subject_key(&self, token: &str) -> Option<limit::ClientKey> {
        let claims = self.verifier.verify(token).await.ok()?;
        Some(limit::ClientKey::Subject(claims.sub))
    }
}

/// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers) of `limit`: the
/// burst as the quota over the time it takes to refill, what remains now, and when it is full
/// again.
fn rate_limit_headers(
    limit: &EdgeLimit,
    headers: &mut http::HeaderMap,
    remaining: u32,
    reset: Duration,
) {
    if let Some(policy) = &limit.policy {
        headers.insert(RATELIMIT_POLICY, policy.clone());
    }
    let mut value = String::with_capacity(32);
    value.push('"');
    value.push_str(&limit.name);
    value.push_str("\";r=");
    value.push_str(itoa::Buffer::new().format(remaining));
    value.push_str(";t=");
    value.push_str(itoa::Buffer::new().format(ceil_seconds(reset)));
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        headers.insert(RATELIMIT, value);
    }
}

const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

/// `RateLimit-Policy` of the limit `name`: `"<name>";q=<burst>;w=<seconds to refill>`.
fn rate_limit_policy(name: &str, policy: RateLimitSettings) -> Option<HeaderValue> {
    let window = policy.burst.get().div_ceil(policy.rps.get()).max(1);
    HeaderValue::from_str(&format!("\"{name}\";q={};w={window}", policy.burst)).ok()
}

/// The token of an `Authorization: Bearer` header.
fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim())
}

fn ceil_seconds(duration: std::time::Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Readiness check `upstream:<name>`: the upstream's own `/readyz` answers 200.
struct UpstreamCheck {
    upstream: Upstream,
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

#[cfg(test)]
mod tests {
    use common::request::{RequestObserver, RequestSpans};
    use common::testkit::CapturedLog;

    #[test]
    fn worker_sockets_share_one_address_and_a_port_taken_otherwise_is_refused() {
        let first = super::worker_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = super::worker_listener(addr).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        // A port another program holds (without SO_REUSEPORT) stays its own.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(super::worker_listener(taken.local_addr().unwrap()).is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn lines_logged_while_forwarding_carry_the_request_ids() {
        let (log, _guard) = CapturedLog::install();
        let observer = RequestObserver {
            service: "gateway",
            metrics: common::metrics::Metrics::new(),
            spans: RequestSpans::WhenExported,
        };
        let mut request = http::Request::get("/accounts/x")
            .header("x-request-id", "rid-7")
            .body(())
            .unwrap();
        let observation = observer.begin(&mut request);
        let context = observation.context();
        request_event!(context, warn!(upstream = "accounts", "upstream timed out"));
        // With spans exported the request's span carries the ids; they are not repeated.
        let span = tracing::info_span!("http_request", request_id = "rid-7");
        span.in_scope(|| request_event!(context, info!("retrying")));
        let failed = log
            .lines()
            .into_iter()
            .find(|line| line["message"] == "upstream timed out")
            .unwrap();
        assert_eq!(failed["request_id"], "rid-7");
        assert_eq!(failed["upstream"], "accounts");
        assert_eq!(failed["trace_id"], context.trace.trace_id_hex().as_str());
        let text = log.text();
        let retrying = text.lines().find(|line| line.contains("retrying")).unwrap();
        assert_eq!(retrying.matches("\"request_id\"").count(), 1, "{retrying}");
    }
}
