//! Observing a request from start to answer: its id and trace context set, its span made,
//! then at the end its duration in the RED metrics, the access line, and `X-Request-ID` on
//! the response. The services' middleware ([`request_context`]) and the gateway (which
//! serves forwarded requests without a router) both use [`RequestObserver`].

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, Method};
use tracing::{Instrument, field::Empty};

use super::RequestContext;
use super::access_log::{AccessLine, ProxyFields};
use super::id::{CURRENT, X_REQUEST_ID, is_sane_request_id, new_request_id};
use super::problems::problem_for_bare_error;
use super::trace::{TRACEPARENT, TraceParent, exported_trace, own_trace, rename_exported};
use crate::metrics::{Metrics, RouteLabel, UNMATCHED_ROUTE};

/// Middleware: request id and trace context in, span and access log around the request,
/// `X-Request-ID` out, and bare error statuses (axum's 404/405/413, ...) as problem+json.
pub async fn request_context(
    State(observer): State<RequestObserver>,
    mut request: Request,
    next: Next,
) -> Response {
    let observation = observer.start(&mut request);
    let mut response = observation
        .scope(async move { problem_for_bare_error(next.run(request).await) })
        .await;
    let route = response.extensions().get::<RouteLabel>().cloned();
    observer.finish(
        observation,
        route.as_ref().map(|r| r.0.as_str()),
        &mut response,
    );
    response
}

/// One request being observed: when it started, its id, its trace and its span.
pub struct Observation {
    started: Instant,
    method: Method,
    context: RequestContext,
    /// The request id as a header value, for the response.
    header: Option<HeaderValue>,
    span: tracing::Span,
    /// The URI (its path), kept for the access log line when there is no span to carry it
    /// (a clone of a parsed URI shares its bytes).
    uri: Option<http::Uri>,
    /// Counts the request in `http_server_active_requests` until it is answered.
    _active: crate::metrics::ActiveRequest,
}

impl RequestObserver {
    /// Starts observing `request`: its id (the caller's, if sane; else a new one) and this
    /// hop's trace context set on it (header and [`RequestContext`] extension, for handlers),
    /// and its span made (see [`RequestSpans`]).
    pub fn start<B>(&self, request: &mut http::Request<B>) -> Observation {
        let observation = self.begin(request);
        request.extensions_mut().insert(observation.context.clone());
        observation
    }

    /// [`RequestObserver::start`] without the extension: for a request that is passed on
    /// rather than handled (the gateway's), which takes [`Observation::context`] instead.
    pub fn begin<B>(&self, request: &mut http::Request<B>) -> Observation {
        let started = Instant::now();
        // The caller's id if it is sane (left on the request as it came), else a new one in
        // its place: one look-up of the header either way.
        let (request_id, header) = match request.headers_mut().entry(X_REQUEST_ID) {
            http::header::Entry::Occupied(mut given)
                if given.get().to_str().is_ok_and(is_sane_request_id) =>
            {
                let value = given.get().clone();
                if given.iter().nth(1).is_some() {
                    // One id goes on, not several.
                    given.insert(value.clone());
                }
                let id = value.to_str().unwrap_or_default().to_owned();
                (id, Some(value))
            }
            entry => {
                let id = new_request_id();
                let header = HeaderValue::from_str(&id).ok();
                if let Some(value) = &header {
                    match entry {
                        http::header::Entry::Occupied(mut given) => {
                            given.insert(value.clone());
                        }
                        http::header::Entry::Vacant(none) => {
                            none.insert(value.clone());
                        }
                    }
                }
                (id, header)
            }
        };
        let incoming = request
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse);
        let service = self.service;
        // `otel.*`: the exported span's kind and, on a 5xx, its error status. Its name becomes
        // `{method} {route}` once the route is known.
        macro_rules! request_span {
            ($trace_id:expr, $span_id:expr) => {
                tracing::info_span!(
                    "http_request",
                    otel.kind = "server",
                    otel.status_code = Empty,
                    service,
                    request_id = %request_id,
                    trace_id = $trace_id,
                    span_id = $span_id,
                    http.request.method = %request.method(),
                    url.path = %request.uri().path(),
                    url.scheme = "http",
                    http.route = Empty,
                    http.response.status_code = Empty,
                    enduser.id = Empty,
                )
            };
        }
        // With trace export on, the exported span's ids are the ones logged and forwarded;
        // without it, this hop's span gets ids of its own in the caller's trace (or a new one),
        // set when the span is made (recording them later costs a little on every request).
        let exporting = crate::telemetry::exporting();
        let (span, trace) = if exporting {
            let span = request_span!(Empty, Empty);
            let trace = exported_trace(&span, incoming).unwrap_or_else(|| own_trace(incoming));
            span.record("trace_id", trace.trace_id_hex());
            span.record("span_id", trace.span_id_hex());
            (span, trace)
        } else if self.spans == RequestSpans::Always {
            let trace = own_trace(incoming);
            let span = request_span!(
                tracing::field::display(trace.trace_id_hex()),
                tracing::field::display(trace.span_id_hex())
            );
            (span, trace)
        } else {
            (tracing::Span::none(), own_trace(incoming))
        };
        Observation {
            started,
            method: request.method().clone(),
            context: RequestContext { request_id, trace },
            header,
            uri: span.is_none().then(|| request.uri().clone()),
            span,
            _active: self.metrics.active_request(),
        }
    }

    /// Ends observing: the status on the span, the duration in the metrics under `route`
    /// (the route template, if one matched), the access log line, and `X-Request-ID` on
    /// `response`.
    pub fn finish<B>(
        &self,
        observation: Observation,
        route: Option<&str>,
        response: &mut http::Response<B>,
    ) {
        self.finish_proxied(observation, route, response, ProxyFields::default());
    }

    /// [`Self::finish`] for a proxied request: the access line also says where it went.
    pub fn finish_proxied<B>(
        &self,
        observation: Observation,
        route: Option<&str>,
        response: &mut http::Response<B>,
        proxy: ProxyFields<'_>,
    ) {
        let Observation {
            started,
            method,
            context,
            header,
            span,
            uri,
            _active,
        } = observation;
        let status = response.status().as_u16();
        span.record("http.response.status_code", status);
        if status >= 500 {
            span.record("otel.status_code", "error");
        }
        let route = route.unwrap_or(UNMATCHED_ROUTE);
        let elapsed = started.elapsed();
        self.metrics
            .observe_http(&method, route, status, elapsed.as_secs_f64());
        rename_exported(&span, || {
            if route == UNMATCHED_ROUTE {
                method.to_string()
            } else {
                format!("{method} {route}")
            }
        });
        // Microseconds are precision enough, and keep the number short.
        let latency_micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let latency_ms = latency_micros as f64 / 1000.0;
        match uri {
            Some(uri) => AccessLine {
                level: if status >= 500 { "WARN" } else { "INFO" },
                latency_micros,
                method: method.as_str(),
                status,
                route: (route != UNMATCHED_ROUTE).then_some(route),
                outcome: (status >= 500).then_some("error"),
                request_id: &context.request_id,
                service: self.service,
                trace: context.trace,
                path: uri.path(),
                proxy,
            }
            .log(),
            None => span.in_scope(|| {
                if status >= 500 {
                    tracing::warn!(
                        latency_ms,
                        upstream = proxy.upstream,
                        upstream.address = proxy.host,
                        split = proxy.split,
                        mirror = proxy.mirror,
                        "request completed"
                    );
                } else {
                    tracing::info!(
                        latency_ms,
                        upstream = proxy.upstream,
                        upstream.address = proxy.host,
                        split = proxy.split,
                        mirror = proxy.mirror,
                        "request completed"
                    );
                }
            }),
        }
        if let Some(value) = header {
            response.headers_mut().insert(X_REQUEST_ID, value);
        }
    }
}

impl Observation {
    /// The request's id and this hop's trace context.
    pub fn context(&self) -> &RequestContext {
        &self.context
    }

    /// The request's span: a disabled one when `info` spans are filtered out, or when the
    /// observer makes spans [`RequestSpans::WhenExported`] and none are exported.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Runs `future` (what serves the request) inside the request's span, with its id as the
    /// task's [`current_request_id`](super::id::current_request_id).
    pub fn scope<F: std::future::Future>(
        &self,
        future: F,
    ) -> impl std::future::Future<Output = F::Output> {
        CURRENT
            .scope(self.context.clone(), future)
            .instrument(self.span.clone())
    }
}

/// Route-level middleware: records the matched route template on the request span and on the
/// response (for the `http_route` metric label).
pub async fn record_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    if let Some(route) = &route {
        tracing::Span::current().record("http.route", route.as_str());
    }
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteLabel(route));
    }
    response
}

/// What the request-context middleware needs: the service's name and its metrics.
#[derive(Clone)]
pub struct RequestObserver {
    /// The service's name, on every span.
    pub service: &'static str,
    /// Where request durations are recorded.
    pub metrics: Metrics,
    /// When a request gets a span.
    pub spans: RequestSpans,
}

/// When a request gets a span of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestSpans {
    /// Always: its handler's log lines carry the request's fields (the services).
    Always,
    /// Only when spans are exported; otherwise the access log line carries the request's
    /// fields itself, and the few lines logged while serving it add `request_id` and
    /// `trace_id` from [`Observation::context`] themselves (the gateway's forwarded requests,
    /// which log nothing else unless something fails).
    WhenExported,
}
