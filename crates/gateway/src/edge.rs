//! The edge: what each worker serves. Requests for the gateway's own paths go to its probe
//! and metrics router; every other request is observed (request id, trace context, access
//! log, RED metrics), rate-limited (by token subject, else client address; a path's own limit
//! or the default one) and handed to the proxy.

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
use common::problem::seconds_rounded_up;
use common::request::{RequestObserver, RequestSpans};
use http::HeaderValue;
use hyper::body::Incoming;
use tower::ServiceExt;

use crate::body::EdgeBody;
use crate::config::AuthMode;
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::limit::{self, Decision, Limiter, RateLimitSettings};
use crate::proxy::{self, Caller, Proxy, Trail};
use crate::routing::{Route, Routing};
use crate::{SERVICE, real_ip};

/// How often the in-process rate limiters forget clients whose buckets are full again.
const LIMITER_SHRINK_INTERVAL: Duration = Duration::from_secs(60);

/// The gateway's own endpoints; every other path is forwarded.
const OWN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// One worker's service: requests for `/healthz`, `/readyz` and `/metrics` go to the probe
/// and metrics router (with every service's standard layers), the others straight to the
/// edge, which observes them as those layers would (request id, trace context, span, access log, RED metrics) without
/// the router's per-request machinery in the way of the hot path.
#[derive(Clone)]
pub struct Worker {
    edge: Arc<Edge>,
    own: Router,
}

impl Worker {
    /// The service for a connection from `peer`.
    pub fn connection(&self, peer: SocketAddr) -> ClientConnection {
        let trusted = self
            .edge
            .trusted_proxies
            .iter()
            .any(|network| network.contains(&peer.ip()));
        ClientConnection {
            worker: self.clone(),
            client: Arc::new(proxy::Downstream::new(peer, trusted)),
        }
    }
}

/// The service for one client connection.
#[derive(Clone)]
pub struct ClientConnection {
    worker: Worker,
    client: Arc<proxy::Downstream>,
}

impl hyper::service::Service<http::Request<Incoming>> for ClientConnection {
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

/// The edge: token checks and rate limiting in front of the proxy.
#[derive(Clone)]
pub struct Edge {
    /// This worker's proxy.
    proxy: Arc<Proxy>,
    routing: Arc<Routing>,
    config: Arc<GatewayConfig>,
    /// Path limits, longest path first, then the default limit; empty when limiting is off.
    limits: Arc<[EdgeLimit]>,
    verifier: Arc<TokenVerifier>,
    rate_limited: prometheus::IntCounterVec,
    trusted_proxies: Arc<[ipnet::IpNet]>,
    observer: RequestObserver,
}

impl Edge {
    /// The edge of `config`: its limits (each path's own, then the default), the verifier
    /// that finds a token's subject, its metrics.
    pub fn new(
        config: &GatewayConfig,
        routing: Arc<Routing>,
        redis: Option<(redis::aio::ConnectionManager, String)>,
        metrics: &common::metrics::Metrics,
    ) -> Self {
        let mut settings = VerifierSettings::new(config.token_issuer.clone(), "accounts");
        settings.audiences.push("payments".to_owned());
        let redis =
            redis.map(|(connection, prefix)| limit::SharedRedis::new(connection, prefix, metrics));
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
            proxy: Arc::new(Proxy::new(config, routing.clone(), 0)),
            routing,
            config: Arc::new(config.clone()),
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
                let mut interval = tokio::time::interval(LIMITER_SHRINK_INTERVAL);
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
        edge
    }

    /// Worker `index`'s copy, with connections of its own, serving `own` (the gateway's
    /// probes and metrics) beside the forwarded paths.
    pub fn worker(&self, own: Router, index: usize) -> Worker {
        let edge = Self {
            proxy: Arc::new(Proxy::new(&self.config, self.routing.clone(), index)),
            // Not shared: cloning one header value from every worker would contend for its
            // count.
            limits: self.limits.iter().map(EdgeLimit::for_worker).collect(),
            ..self.clone()
        };
        Worker {
            edge: Arc::new(edge),
            own,
        }
    }
}

impl Edge {
    /// Serves one forwarded request, observed as every service's requests are.
    async fn serve(
        &self,
        mut request: http::Request<Incoming>,
        client: &proxy::Downstream,
    ) -> http::Response<EdgeBody> {
        let observation = self.observer.begin(&mut request);
        // This request's generation of the routes, whatever a reload does meanwhile.
        let table = self.proxy.table();
        let route = table
            .resolve(request.uri().path())
            .map(|target| target.route);
        if let Some(route) = route {
            observation
                .span()
                .record("http.route", route.label.as_str());
        }
        let (mut response, trail) = {
            let context = observation.context();
            let span = observation.span();
            // Polled where it lies, inside the span (if there is one), its panics caught: a
            // wrapper of each kind around the future would move the whole future into it.
            let mut forward = std::pin::pin!(self.forward(request, client, context, route));
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
                (GatewayError::Panicked.respond(context), Trail::default())
            })
        };
        self.observer.finish_proxied(
            observation,
            route.map(|route| route.label.as_str()),
            &mut response,
            common::request::ProxyFields {
                upstream: trail.upstream,
                host: trail.host,
                split: trail.split,
                mirror: trail.mirror,
            },
        );
        response
    }

    /// The token check and rate limiting (for routed paths), then the proxy.
    async fn forward<'t>(
        &self,
        request: http::Request<Incoming>,
        client: &proxy::Downstream,
        context: &common::request::RequestContext,
        route: Option<&'t Route>,
    ) -> (http::Response<EdgeBody>, Trail<'t>) {
        let path = request.uri().path();
        if proxy::has_dot_segments(path) {
            return (GatewayError::DotSegments.respond(context), Trail::default());
        }
        let Some(route) = route else {
            let path = path.to_owned();
            return (
                GatewayError::NoRoute { path }.respond(context),
                Trail::default(),
            );
        };
        let limit = self.limits.iter().find(|limit| limit.covers(path));
        // The token, verified once for all who want it: the route's check, the rate limit's
        // key, the split's stickiness.
        let bearer = common::auth::bearer_token(request.headers());
        let wanted = route.auth != AuthMode::Off || limit.is_some() || route.split.is_some();
        let verified = match bearer {
            // Boxed: a token check would otherwise make every request's future larger.
            Some(Ok(token)) if wanted => Some(Box::pin(self.verifier.verify(token)).await),
            _ => None,
        };
        let claims = verified.as_ref().and_then(|v| v.as_ref().ok());
        let identity = match route.auth {
            AuthMode::Off => None,
            mode => match check_token(route, mode, bearer.is_some(), &verified) {
                Ok(identity) => identity,
                Err(problem) => {
                    return (
                        GatewayError::Refused(Box::new(problem)).respond(context),
                        Trail::default(),
                    );
                }
            },
        };
        let address =
            || real_ip::client_address(client.addr.ip(), request.headers(), &self.trusted_proxies);
        let mut quota = None;
        if let Some(limit) = limit {
            let key = match claims {
                Some(claims) => limit::ClientKey::Subject(claims.sub.clone()),
                None => limit::ClientKey::Ip(address()),
            };
            let decision = match limit.limiter.check_now(&key) {
                Some(decision) => decision,
                None => Box::pin(limit.limiter.check(&key)).await,
            };
            match decision {
                Decision::Allowed { remaining, reset } => quota = Some((limit, remaining, reset)),
                Decision::Limited { retry_after } => {
                    self.rate_limited.with_label_values(&[&*limit.name]).inc();
                    let mut response = GatewayError::RateLimited(retry_after).respond(context);
                    rate_limit_headers(limit, response.headers_mut(), 0, retry_after);
                    return (response, Trail::default());
                }
            }
        }
        let sticky = match (&route.split, claims) {
            (None, _) => String::new(),
            (Some(_), Some(claims)) => claims.sub.clone(),
            (Some(_), None) => address().to_string(),
        };
        let caller = Caller {
            identity,
            sticky: &sticky,
        };
        let (mut response, trail) = self
            .proxy
            .forward(request, route, client, context, &caller)
            .await;
        if let Some((limit, remaining, reset)) = quota {
            rate_limit_headers(limit, response.headers_mut(), remaining, reset);
        }
        (response, trail)
    }
}

/// The token check of a route with auth on: the claims to forward (none for an anonymous
/// caller of an `optional` route), or the problem the services would answer with: 401 for a
/// missing (where required), malformed, forged or expired token, 403 for a missing scope,
/// 503 when the keys cannot be had.
fn check_token<'c>(
    route: &Route,
    mode: AuthMode,
    presented: bool,
    verified: &'c Option<Result<common::auth::AccessClaims, common::auth::VerifyError>>,
) -> Result<Option<&'c common::auth::AccessClaims>, common::Problem> {
    use common::auth::VerifyError;
    let outcome = |name: &str| route.count_auth(name);
    match verified {
        None if !presented => {
            if mode == AuthMode::Required {
                outcome("missing");
                Err(common::Problem::unauthorized(
                    "an access token is required (Authorization: Bearer ...)",
                    false,
                ))
            } else {
                outcome("anonymous");
                Ok(None)
            }
        }
        // Another scheme than Bearer, or an empty token.
        None => {
            outcome("invalid");
            Err(common::Problem::unauthorized(
                "expected Authorization: Bearer <access token>",
                true,
            ))
        }
        Some(Err(VerifyError::KeysUnavailable)) => {
            outcome("unavailable");
            Err(common::Problem::dependency_unavailable(
                "the token signing keys cannot be fetched; try again shortly",
            ))
        }
        Some(Err(error)) => {
            outcome("invalid");
            Err(common::Problem::unauthorized(error.to_string(), true))
        }
        Some(Ok(claims)) => {
            if let Some(missing) = route.scopes.iter().find(|scope| !claims.has_scope(scope)) {
                outcome("forbidden");
                return Err(common::auth::Authenticated(claims.clone())
                    .require_scope(missing)
                    .err()
                    .unwrap_or_else(common::Problem::internal));
            }
            outcome("verified");
            Ok(Some(claims))
        }
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
    value.push_str(itoa::Buffer::new().format(seconds_rounded_up(reset)));
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
