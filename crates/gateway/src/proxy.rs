//! Forwarding: pooled keep-alive connections to the chosen host of the route's upstream (or
//! of its split), hop-by-hop headers removed, `X-Forwarded-*`, `traceparent` and the verified
//! caller's identity headers set (client-sent copies of those always removed), bodies
//! streamed, a circuit breaker per host, another host tried when one cannot be reached,
//! retries where they are safe, `Location` rewritten, and a copy of the request sent to the
//! route's mirror.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::auth::AccessClaims;
use common::request::{RequestContext, TRACEPARENT};
use http::Request;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use tracing::Instrument;

use crate::body::{EdgeBody, StartError, TimedBody, UpstreamBody, UpstreamResponseBody};
use crate::cluster::{Chosen, Cluster, Host, Outcome};
use crate::config::{GatewayConfig, IdentityHeaders};
use crate::error::GatewayError;
use crate::mirror::{self, MirrorJob};
use crate::pool::{PooledBody, SendError, error_chain};
use crate::routing::{Route, Routing, WorkerRoutes, WorkerTable};

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

/// The caller of one request, as the edge found it.
pub struct Caller<'a> {
    /// The verified token's claims, forwarded in the identity headers (routes with auth on).
    pub identity: Option<&'a AccessClaims>,
    /// What keeps one client on one arm of a split: the token's subject, else its address.
    pub sticky: &'a str,
}

/// What the access log says of a forwarded request: the upstream and host that served it,
/// the split's arm, whether a copy went to the mirror.
#[derive(Debug, Default, Clone, Copy)]
pub struct Trail<'t> {
    /// The upstream's name.
    pub upstream: Option<&'t str>,
    /// The host (`address:port`).
    pub host: Option<&'t str>,
    /// `primary` or the split's name, on split routes.
    pub split: Option<&'t str>,
    /// `sent` or `dropped`, on mirrored requests.
    pub mirror: Option<&'static str>,
}

/// One worker's forwarding half: the routes (the current generation), its own connections
/// to every host.
pub struct Proxy {
    routes: WorkerRoutes,
    /// This worker's index: its connections in each host.
    worker: usize,
    upstream_timeout: Duration,
    read_timeout: Duration,
    max_body_bytes: usize,
    retries: u32,
    blocked_paths: Arc<[String]>,
    identity: IdentityHeaders,
    /// Mirrored requests this worker may have under way.
    mirrors: Arc<tokio::sync::Semaphore>,
}

impl Proxy {
    /// Worker `worker`'s proxy over `routing`.
    pub fn new(config: &GatewayConfig, routing: Arc<Routing>, worker: usize) -> Self {
        Self {
            routes: WorkerRoutes::new(routing),
            worker,
            upstream_timeout: config.upstream_timeout,
            read_timeout: config.upstream_read_timeout,
            max_body_bytes: config.http.max_body_bytes,
            retries: config.retries,
            blocked_paths: config.blocked_paths.clone().into(),
            identity: config.identity_headers.clone(),
            mirrors: Arc::new(tokio::sync::Semaphore::new(config.mirror_concurrency)),
        }
    }

    /// The routes in force (this worker's reference to them).
    pub fn table(&self) -> Arc<WorkerTable> {
        self.routes.current()
    }

    /// The shared routing.
    pub fn routing(&self) -> &Arc<Routing> {
        self.routes.routing()
    }

    /// Forwards `request` along `route` and streams the answer back: 404 for a blocked path,
    /// 413 over the body limit, 503 `circuit_open` while every host's breaker is open, 502
    /// when no host can be reached, 504 when it is too slow. A host that cannot be connected
    /// to (nothing was sent) is replaced by another of the upstream's hosts; connection
    /// failures are retried for safe methods and requests with an `Idempotency-Key`.
    /// `client`'s address is appended to `X-Forwarded-For`; `context` is this hop's (its span
    /// is the upstream's parent unless spans are exported: then the client span is).
    pub async fn forward<'t>(
        &self,
        request: Request<Incoming>,
        route: &'t Route,
        client: &Downstream,
        context: &RequestContext,
        caller: &Caller<'_>,
    ) -> (http::Response<EdgeBody>, Trail<'t>) {
        let mut trail = Trail::default();
        let path = route.upstream_path(request.uri().path());
        if self.is_blocked(path) {
            let path = request.uri().path().to_owned();
            return (GatewayError::NoRoute { path }.respond(context), trail);
        }
        // The body's length as its `Content-Length` declares it (0 when it streams).
        let declared = http_body::Body::size_hint(request.body()).lower();
        if declared > self.max_body_bytes as u64 {
            crate::body::discard(request.into_body());
            return (GatewayError::PayloadTooLarge.respond(context), trail);
        }
        let cluster: &'t Cluster = match &route.split {
            Some(split) => {
                let to_split = mirror::bucket(&route.name, caller.sticky) < split.per_10k;
                split.counted[usize::from(to_split)].inc();
                trail.split = Some(if to_split {
                    split.cluster.name.as_str()
                } else {
                    "primary"
                });
                if to_split {
                    &split.cluster
                } else {
                    &route.primary
                }
            }
            None => &route.primary,
        };
        trail.upstream = Some(cluster.name.as_str());
        // A copy for the mirror: its path (the request's is gone once it is sent), and a
        // place among the copies under way, or none (dropped, never queued).
        let mirroring = route
            .mirror
            .as_ref()
            .filter(|mirror| mirror.methods.contains(request.method()))
            .map(|mirror| {
                let permit = self.mirrors.clone().try_acquire_owned().ok();
                trail.mirror = Some(if permit.is_some() { "sent" } else { "dropped" });
                if permit.is_none() {
                    mirror::count(route, "dropped");
                }
                (mirror, permit, path.to_owned())
            })
            .and_then(|(mirror, permit, path)| Some((mirror, permit?, path)));
        let chosen = match cluster.choose(self.worker, 0) {
            Ok(chosen) => chosen,
            Err(wait) => return (self.circuit_open(cluster, wait, context), trail),
        };
        let Ok(uri) = chosen.host.uri(path, request.uri().query()) else {
            return (GatewayError::Unforwardable.respond(context), trail);
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
                upstream = %cluster.name,
                http.request.method = %request.method(),
                server.address = chosen.host.pool(self.worker).host(),
                server.port = chosen.host.pool(self.worker).port(),
                url.full = %format_args!("{}{uri}", chosen.host.origin),
                http.response.status_code = tracing::field::Empty,
            )
        };
        let trace = common::request::exported_trace(&span, None).unwrap_or(context.trace);
        let prefix = route.prefix.as_ref().filter(|_| route.strip);
        let (mut outgoing, mut set) =
            self.outgoing_request(request, client, uri, chosen.host, prefix, trace, caller);
        let mut answered = None;
        if let Some((mirror, permit, path)) = mirroring {
            // The body is read whole once, for both.
            match mirror::buffer(outgoing, self.max_body_bytes).await {
                Ok((request, body)) => {
                    outgoing = request;
                    let (job, report) = MirrorJob::new(
                        route,
                        mirror,
                        &outgoing,
                        body,
                        path,
                        &set,
                        context,
                        self.worker,
                        permit,
                    );
                    answered = Some(report);
                    tokio::spawn(job.run());
                }
                Err(error) => return (error.respond(context), trail),
            }
        }
        // One future, instrumented whether or not there is a span (entering none costs a
        // branch): awaiting it on two paths would give the request's future room for both.
        let (attempt, chosen) = async {
            let (sent, chosen) = self
                .send(cluster, chosen, outgoing, &mut set, retryable, context)
                .await;
            let attempt = match sent {
                Ok(Ok(response)) => self.start_body(response).await,
                Ok(Err(error)) => Attempt::Failed(error),
                Err(_) => Attempt::TimedOut,
            };
            (attempt, chosen)
        }
        .instrument(span.clone())
        .await;
        let chosen = match chosen {
            Ok(chosen) => chosen,
            Err(wait) => {
                let response = self.circuit_open(cluster, wait, context);
                mirror::report_failed(answered, response.status());
                return (response, trail);
            }
        };
        trail.host = Some(chosen.host.label.as_str());
        let response = match self.settle(cluster, chosen, attempt, context) {
            Ok(response) => pass_through(response, prefix.map(|p| p.path.as_str())),
            Err(failure) => failure,
        };
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "error");
        }
        let response = match answered {
            Some(report) => mirror::watch(response, report),
            None => response,
        };
        (response, trail)
    }

    /// 503 `circuit_open`: every host of `cluster` is out for `wait` at least.
    fn circuit_open(
        &self,
        cluster: &Cluster,
        wait: Duration,
        context: &RequestContext,
    ) -> http::Response<EdgeBody> {
        cluster.record(Outcome::CircuitOpen, None);
        GatewayError::CircuitOpen {
            upstream: cluster.name.clone(),
            retry_after: wait,
        }
        .respond(context)
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

    /// Sends `request` to the chosen host, each attempt allowed the upstream timeout. A
    /// connection that cannot be made (nothing was sent) moves the request to another host
    /// of the upstream while there is one it has not tried, and is tried again when the
    /// request is `retryable` (after a pause, once every host was tried). Gives the host
    /// that had the last word, or `Err(wait)` when every breaker opened meanwhile.
    async fn send<'c>(
        &self,
        cluster: &'c Cluster,
        mut chosen: Chosen<'c>,
        mut request: Request<UpstreamBody>,
        set: &mut Forwarding,
        retryable: bool,
        context: &RequestContext,
    ) -> (Sent, Result<Chosen<'c>, Duration>) {
        let mut retries = if retryable { self.retries } else { 0 };
        let mut tried = 0u64;
        let mut attempt = 0u32;
        loop {
            let host = chosen.host;
            let in_flight = cluster.begin(host);
            // Boxed: every future above this one (the request's, moved whole a few times on
            // its way to the connection's task) would otherwise hold this one's state.
            let result = Box::pin(tokio::time::timeout(
                self.upstream_timeout,
                host.pool(self.worker)
                    .send(request, set.headers(), retryable),
            ))
            .await;
            drop(in_flight);
            let (reason, unsent) = match result {
                Ok(Err(SendError::Connect { reason, request })) => (reason, request),
                other => return (other, Ok(chosen)),
            };
            tried |= 1u64 << chosen.index.min(63);
            let untried = cluster.hosts.len() > tried.count_ones() as usize;
            let again = untried || retries > 0;
            if !again {
                return (
                    Ok(Err(SendError::Connect {
                        reason,
                        request: unsent,
                    })),
                    Ok(chosen),
                );
            }
            attempt += 1;
            request_event!(
                context,
                info!(upstream = %cluster.name, host = %host.label, attempt, error = %reason, "retrying")
            );
            chosen.permit.record(false);
            cluster.record(Outcome::Retried, Some(host));
            if !untried {
                retries -= 1;
                tried = 0;
                Box::pin(tokio::time::sleep(Duration::from_millis(
                    25 << attempt.min(8),
                )))
                .await;
            }
            chosen = match cluster.choose(self.worker, tried) {
                Ok(next) => next,
                Err(wait) => {
                    return (
                        Ok(Err(SendError::Connect {
                            reason,
                            request: unsent,
                        })),
                        Err(wait),
                    );
                }
            };
            request = *unsent;
            if !std::ptr::eq(chosen.host, host) {
                set.host(chosen.host);
                let moved = rebase(request.uri(), host, chosen.host);
                if let Some(uri) = moved {
                    *request.uri_mut() = uri;
                }
            }
        }
    }

    /// Records the outcome with the host's breaker and the metrics; failures become 502/504
    /// problems, and a request whose own body failed (over the limit, or the client gone) a
    /// 413 or 400 that says nothing about the upstream.
    fn settle(
        &self,
        cluster: &Cluster,
        chosen: Chosen<'_>,
        result: Attempt,
        context: &RequestContext,
    ) -> Result<http::Response<UpstreamResponseBody>, http::Response<EdgeBody>> {
        let name = &cluster.name;
        let Chosen { host, permit, .. } = chosen;
        let failed = |outcome: Outcome| {
            cluster.record(outcome, Some(host));
        };
        match result {
            Attempt::Answered(response) => {
                let error = response.status().is_server_error();
                permit.record(!error);
                failed(if error {
                    Outcome::ServerError
                } else {
                    Outcome::Ok
                });
                Ok(response)
            }
            Attempt::Failed(SendError::Request(error)) if error.is_user() => {
                drop(permit);
                Err(Self::body_failed(name, &error, context))
            }
            Attempt::Failed(SendError::Inline(crate::h1::Error::Body(error))) => {
                drop(permit);
                Err(Self::body_failed(name, &*error, context))
            }
            Attempt::Failed(error) => {
                permit.record(false);
                failed(Outcome::Unreachable);
                request_event!(
                    context,
                    warn!(upstream = %name, host = %host.label, error = %error, "upstream request failed")
                );
                Err(GatewayError::Unreachable {
                    upstream: name.clone(),
                }
                .respond(context))
            }
            Attempt::BodyFailed(why) => {
                permit.record(false);
                failed(Outcome::Unreachable);
                request_event!(
                    context,
                    warn!(upstream = %name, host = %host.label, error = %why, "upstream response body failed before it began")
                );
                Err(GatewayError::InvalidResponse {
                    upstream: name.clone(),
                }
                .respond(context))
            }
            Attempt::TimedOut => {
                permit.record(false);
                failed(Outcome::Timeout);
                request_event!(
                    context,
                    warn!(upstream = %name, host = %host.label, timeout = ?self.upstream_timeout, "upstream timed out")
                );
                Err(GatewayError::Timeout {
                    upstream: name.clone(),
                }
                .respond(context))
            }
        }
    }

    /// 413 when the request's own body was over the limit, else 400: the client failed, not
    /// the upstream.
    fn body_failed(
        name: &str,
        error: &(dyn std::error::Error + 'static),
        context: &RequestContext,
    ) -> http::Response<EdgeBody> {
        let too_long = std::iter::successors(Some(error), |cause| cause.source())
            .any(|cause| cause.is::<http_body_util::LengthLimitError>());
        request_event!(
            context,
            info!(upstream = %name, error = %error_chain(error), "request body failed")
        );
        if too_long {
            GatewayError::PayloadTooLarge
        } else {
            GatewayError::BodyUnreadable
        }
        .respond(context)
    }

    /// The request to send upstream (hop-by-hop headers removed, origin-form URI), and the
    /// headers the gateway sets on it in place of the client's: `Host` (the host's; the
    /// client's kept in `X-Forwarded-Host`), `X-Forwarded-For` (`client` added to the hops
    /// before), `-Proto`, `-Prefix`, `traceparent` (`trace` its parent span) and the caller's
    /// identity (removed when there is none). They are not put in the request's header map:
    /// for most requests the pool writes them straight into the head it sends.
    #[allow(clippy::too_many_arguments)]
    fn outgoing_request(
        &self,
        request: Request<Incoming>,
        client: &Downstream,
        uri: Uri,
        host: &Host,
        prefix: Option<&crate::routing::Prefix>,
        trace: common::request::TraceParent,
        caller: &Caller<'_>,
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
        let mut set = Forwarding::new([
            (header::HOST, Some(host.host_header.clone())),
            (X_FORWARDED_FOR, forwarded_for),
            (X_FORWARDED_PROTO, Some(proto)),
            (X_FORWARDED_HOST, original_host),
            (
                X_FORWARDED_PREFIX,
                prefix.and_then(|prefix| prefix.header.clone()),
            ),
            (TRACEPARENT, Some(trace.to_header())),
        ]);
        // The identity headers are the gateway's: set from the verified token, or removed.
        let names = self.identity.all();
        if caller.identity.is_some() || names.iter().any(|name| headers.contains_key(*name)) {
            let claims = caller.identity;
            let value = |text: Option<&str>| text.and_then(|t| HeaderValue::from_str(t).ok());
            let legacy = claims.and_then(|c| c.legacy_user_id).map(HeaderValue::from);
            set.push(
                self.identity.subject.clone(),
                value(claims.map(|c| c.sub.as_str())),
            );
            set.push(
                self.identity.scopes.clone(),
                value(claims.map(|c| c.scope.as_str())),
            );
            set.push(
                self.identity.client_id.clone(),
                value(claims.map(|c| c.client_id.as_str())),
            );
            set.push(self.identity.legacy_user_id.clone(), legacy);
        }
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

/// The upstream's response as ours: hop-by-hop headers removed, a relative `Location` given
/// the prefix back, left as is otherwise (not turned into a problem).
fn pass_through(
    response: http::Response<UpstreamResponseBody>,
    prefix: Option<&str>,
) -> http::Response<EdgeBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let (Some(prefix), Some(location)) = (prefix, parts.headers.get(header::LOCATION))
        && let Some(rewritten) = rewrite_location(location, prefix)
    {
        parts.headers.insert(header::LOCATION, rewritten);
    }
    http::Response::from_parts(parts, Either::Left(body))
}

impl Route {
    /// The path the upstream is asked for, given the path the client asked for: the prefix
    /// removed (unless the route keeps it).
    pub fn upstream_path<'p>(&self, full: &'p str) -> &'p str {
        match &self.prefix {
            Some(prefix) if self.strip => match full.get(prefix.path.len()..) {
                Some("") | None => "/",
                Some(rest) => rest,
            },
            _ => full,
        }
    }
}

impl Cluster {
    /// Counts a request under way to `host` while the guard lives (only where the balancing
    /// policy reads the count: the shared counter costs every core a cache line).
    pub(crate) fn begin<'h>(&self, host: &'h Host) -> Option<crate::cluster::InFlight<'h>> {
        (self.config.balance == crate::config::Balance::LeastRequest).then(|| host.begin())
    }
}

/// `uri` (made for host `from`) made for host `to`: the base path swapped.
fn rebase(uri: &Uri, from: &Host, to: &Host) -> Option<Uri> {
    let target = uri.path_and_query()?.as_str();
    let rest = target.strip_prefix(from.base_path())?;
    let mut text = String::with_capacity(to.base_path().len() + rest.len());
    text.push_str(to.base_path());
    text.push_str(rest);
    Uri::try_from(text).ok()
}

/// The headers the gateway sets on a forwarded request (see [`Proxy::outgoing_request`]):
/// six always, four more for the caller's identity when there is one or a client sent those
/// names.
pub(crate) struct Forwarding {
    set: [(HeaderName, Option<HeaderValue>); 11],
    len: usize,
}

impl Forwarding {
    fn new(base: [(HeaderName, Option<HeaderValue>); 6]) -> Self {
        let [a, b, c, d, e, f] = base;
        let unused = || (header::HOST, None);
        Self {
            set: [
                a,
                b,
                c,
                d,
                e,
                f,
                unused(),
                unused(),
                unused(),
                unused(),
                unused(),
            ],
            len: 6,
        }
    }

    pub(crate) fn push(&mut self, name: HeaderName, value: Option<HeaderValue>) {
        if let Some(slot) = self.set.get_mut(self.len) {
            *slot = (name, value);
            self.len += 1;
        }
    }

    /// Points `Host` at `host`.
    fn host(&mut self, host: &Host) {
        self.set[0].1 = Some(host.host_header.clone());
    }

    pub(crate) fn headers(&self) -> &[(HeaderName, Option<HeaderValue>)] {
        &self.set[..self.len]
    }
}

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
pub(crate) fn has_dot_segments(path: &str) -> bool {
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
        let config = GatewayConfig::from_env(&env).unwrap();
        Proxy::new(
            &config,
            Routing::new(&config, &common::metrics::Metrics::new()),
            0,
        )
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
        let config = GatewayConfig::from_env(&env).unwrap();
        let proxy = Proxy::new(
            &config,
            Routing::new(&config, &common::metrics::Metrics::new()),
            0,
        );
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
        let table = proxy(None).table();
        let target = table.resolve("/accounts/healthz").unwrap();
        assert_eq!(
            (target.route.primary.name.as_str(), target.path),
            ("accounts", "/healthz")
        );
        assert_eq!(table.resolve("/payments").unwrap().path, "/");
        assert_eq!(table.resolve("/payments/").unwrap().path, "/");
        assert!(table.resolve("/paymentsx/1").is_none());
        assert!(table.resolve("/other").is_none());
    }

    #[test]
    fn other_paths_go_to_the_fallback_unchanged() {
        let table = proxy(Some("http://127.0.0.1:9000/legacy/")).table();
        let target = table.resolve("/admin/login/").unwrap();
        assert_eq!(target.route.primary.name, "fallback");
        assert_eq!(
            target.route.primary.hosts[0]
                .uri(target.path, Some("next=/"))
                .unwrap(),
            "/legacy/admin/login/?next=/"
        );
        assert!(target.route.prefix.is_none());
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
