//! Per-request context: the request id, W3C trace context, the request span, the access log,
//! and turning bare error statuses into problem responses.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use tracing::{Instrument, field::Empty};

use crate::logline;
use crate::metrics::{Metrics, RouteLabel, UNMATCHED_ROUTE};
use crate::problem::{PROBLEM_JSON, Problem};

/// The header carrying the request id, in and out.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The W3C trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// The id of the request being served by this task, if any.
pub fn current_request_id() -> Option<String> {
    CURRENT.try_with(|context| context.request_id.clone()).ok()
}

/// Whether a caller-supplied request id is worth keeping: 1–128 characters of
/// `A-Z a-z 0-9 - _ . : /+=`, so it is safe in logs and headers.
pub fn is_sane_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}

/// A W3C `traceparent`: the trace this request belongs to and the span that is its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16-byte trace id.
    pub trace_id: u128,
    /// 8-byte id of the span that sent (or, after [`TraceParent::child`], is) this hop.
    pub span_id: u64,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parses a version-00 `traceparent` header; invalid ones are ignored, as the spec asks.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(version, 2)
            || version == "ff"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags: u8::from_str_radix(flags, 16).ok()?,
        })
    }

    /// A new trace (sampled), for requests that arrive without one.
    pub fn new_root() -> Self {
        Self {
            trace_id: rand::random::<u128>().max(1),
            span_id: rand::random::<u64>().max(1),
            flags: 1,
        }
    }

    /// The same trace with a new span id: this hop's own span.
    pub fn child(&self) -> Self {
        Self {
            span_id: rand::random::<u64>().max(1),
            ..*self
        }
    }

    /// This span as a remote parent for OpenTelemetry.
    pub fn remote_context(&self) -> opentelemetry::Context {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(self.trace_id.to_be_bytes()),
            SpanId::from_bytes(self.span_id.to_be_bytes()),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        ))
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex_string(&logline::hex::<32>(self.trace_id))
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex_string(&logline::hex::<16>(u128::from(self.span_id)))
    }

    /// The header value.
    pub fn to_header(&self) -> HeaderValue {
        let mut text = [b'-'; 55];
        text[..2].copy_from_slice(b"00");
        text[3..35].copy_from_slice(&logline::hex::<32>(self.trace_id));
        text[36..52].copy_from_slice(&logline::hex::<16>(u128::from(self.span_id)));
        text[53..].copy_from_slice(&logline::hex::<2>(u128::from(self.flags)));
        HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

fn hex_string(digits: &[u8]) -> String {
    digits.iter().map(|&digit| char::from(digit)).collect()
}

/// Starts `span` as an exported OpenTelemetry span, child of `parent` (a caller's
/// `traceparent`) if given, and returns its ids; `None` when spans are not exported.
pub fn exported_trace(span: &tracing::Span, parent: Option<TraceParent>) -> Option<TraceParent> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !crate::telemetry::exporting() {
        return None;
    }
    if let Some(parent) = parent {
        // Fails only when export is off (no layer) or the span is filtered out.
        let _ = span.set_parent(parent.remote_context());
    }
    let context = span.context();
    let exported = context.span().span_context().clone();
    exported.is_valid().then(|| TraceParent {
        trace_id: u128::from_be_bytes(exported.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(exported.span_id().to_bytes()),
        flags: exported.trace_flags().to_u8(),
    })
}

/// A new request id: a UUIDv7 (time-ordered), hyphenated.
fn new_request_id() -> String {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    // Without the process-wide context `Uuid::now_v7` locks to order ids made in the same
    // millisecond: request ids need to be unique, not ordered within a millisecond.
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let timestamp = uuid::Timestamp::from_unix(
        uuid::NoContext,
        since_epoch.as_secs(),
        since_epoch.subsec_nanos(),
    );
    uuid::Uuid::new_v7(timestamp)
        .hyphenated()
        .encode_lower(&mut text)
        .to_owned()
}

/// This hop's span in the caller's trace, or a new trace.
fn own_trace(incoming: Option<TraceParent>) -> TraceParent {
    incoming
        .map(|parent| parent.child())
        .unwrap_or_else(TraceParent::new_root)
}

/// Renames `span`'s exported OpenTelemetry span (a no-op when spans are not exported).
pub fn rename_exported(span: &tracing::Span, name: impl FnOnce() -> String) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if crate::telemetry::exporting() {
        span.context().span().update_name(name());
    }
}

/// What the request-context middleware learned, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id (the caller's, if sane; else a new one).
    pub request_id: String,
    /// This hop's span within the caller's trace (or a new trace).
    pub trace: TraceParent,
}

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
            Some(uri) => self.access_log(AccessLine {
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
            }),
            None => span.in_scope(|| {
                if status >= 500 {
                    tracing::warn!(latency_ms, "request completed");
                } else {
                    tracing::info!(latency_ms, "request completed");
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
    /// task's [`current_request_id`].
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

/// The access log line of a request without a span: the same fields, under the same names,
/// as a `request completed` event inside a request span.
struct AccessLine<'a> {
    level: &'static str,
    latency_micros: u64,
    method: &'a str,
    status: u16,
    route: Option<&'a str>,
    outcome: Option<&'static str>,
    request_id: &'a str,
    service: &'static str,
    trace: TraceParent,
    path: &'a str,
}

impl AccessLine<'_> {
    /// The line as the JSON log writes a `request completed` event in a request span (the
    /// same keys in the same order), newline included.
    fn write_json(&self, out: &mut Vec<u8>) {
        use logline::{push_millis, push_str, push_uint};
        // Level, target, method (an HTTP token), request id (checked by
        // `is_sane_request_id`, or ours) and service name need no escaping.
        out.extend_from_slice(b"{\"level\":\"");
        out.extend_from_slice(self.level.as_bytes());
        out.extend_from_slice(b"\",\"target\":\"");
        out.extend_from_slice(module_path!().as_bytes());
        out.extend_from_slice(b"\",\"timestamp\":\"");
        logline::push_timestamp(out, std::time::SystemTime::now());
        out.extend_from_slice(b"\",\"latency_ms\":");
        push_millis(out, self.latency_micros);
        out.extend_from_slice(b",\"message\":\"request completed\",\"http.request.method\":\"");
        out.extend_from_slice(self.method.as_bytes());
        out.extend_from_slice(b"\",\"http.response.status_code\":");
        push_uint(out, u64::from(self.status));
        if let Some(route) = self.route {
            out.extend_from_slice(b",\"http.route\":\"");
            push_str(out, route);
            out.push(b'"');
        }
        out.extend_from_slice(b",\"name\":\"http_request\",\"otel.kind\":\"server\"");
        if let Some(outcome) = self.outcome {
            out.extend_from_slice(b",\"otel.status_code\":\"");
            push_str(out, outcome);
            out.push(b'"');
        }
        out.extend_from_slice(b",\"request_id\":\"");
        out.extend_from_slice(self.request_id.as_bytes());
        out.extend_from_slice(b"\",\"service\":\"");
        out.extend_from_slice(self.service.as_bytes());
        out.extend_from_slice(b"\",\"span_id\":\"");
        out.extend_from_slice(&logline::hex::<16>(u128::from(self.trace.span_id)));
        out.extend_from_slice(b"\",\"trace_id\":\"");
        out.extend_from_slice(&logline::hex::<32>(self.trace.trace_id));
        out.extend_from_slice(b"\",\"url.path\":\"");
        push_str(out, self.path);
        out.extend_from_slice(b"\",\"url.scheme\":\"http\"}\n");
    }
}

impl RequestObserver {
    /// Writes `line` to the JSON log directly, or, when that is not the subscriber (plain
    /// text, tests), logs it through `tracing` with the same fields.
    fn access_log(&self, line: AccessLine<'_>) {
        macro_rules! event {
            ($level:expr) => {{
                if tracing::enabled!($level)
                    && !crate::telemetry::write_json_line(|out| line.write_json(out))
                {
                    tracing::event!(
                        $level,
                        latency_ms = line.latency_micros as f64 / 1000.0,
                        http.request.method = line.method,
                        http.response.status_code = line.status,
                        http.route = line.route,
                        otel.kind = "server",
                        otel.status_code = line.outcome,
                        request_id = line.request_id,
                        service = line.service,
                        span_id = line.trace.span_id_hex(),
                        trace_id = line.trace.trace_id_hex(),
                        url.path = line.path,
                        url.scheme = "http",
                        "request completed"
                    );
                }
            }};
        }
        if line.status >= 500 {
            event!(tracing::Level::WARN);
        } else {
            event!(tracing::Level::INFO);
        }
    }
}

/// Error responses that are not already JSON (framework defaults) become problem+json,
/// keeping headers such as `Allow` and `Retry-After`.
fn problem_for_bare_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let kept: Vec<(HeaderName, HeaderValue)> = response
        .headers()
        .iter()
        .filter(|(name, _)| {
            [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE].contains(name)
        })
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let mut problem = Problem::from_status(status).into_response();
    problem.headers_mut().extend(kept);
    problem
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(PROBLEM_JSON) || ct.contains("json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `request completed` line of one request observed with `spans`, and its response.
    fn completed_line(spans: RequestSpans) -> (serde_json::Value, Response) {
        let (log, _guard) = crate::testkit::CapturedLog::install();
        let observer = RequestObserver {
            service: "test",
            metrics: Metrics::new(),
            spans,
        };
        let mut request = http::Request::get("/a/b?c=d")
            .header(X_REQUEST_ID, "rid-1")
            .header(
                TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(())
            .unwrap();
        let observation = observer.start(&mut request);
        assert_eq!(request.headers()[X_REQUEST_ID], "rid-1");
        let context = request.extensions().get::<RequestContext>().unwrap();
        assert_eq!(
            context.trace.trace_id_hex(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // As the route-level middleware does.
        observation.span().record("http.route", "/a/{*rest}");
        let mut response = Problem::from_status(http::StatusCode::BAD_GATEWAY).into_response();
        observer.finish(observation, Some("/a/{*rest}"), &mut response);
        let line = log
            .lines()
            .into_iter()
            .find(|line| line["message"] == "request completed")
            .unwrap();
        (line, response)
    }

    fn keys(value: &serde_json::Value) -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    #[test]
    fn a_request_without_a_span_logs_the_line_one_with_a_span_does() {
        let (spanned, response) = completed_line(RequestSpans::Always);
        assert_eq!(response.headers()[X_REQUEST_ID], "rid-1");
        let (spanless, response) = completed_line(RequestSpans::WhenExported);
        assert_eq!(response.headers()[X_REQUEST_ID], "rid-1");
        for line in [&spanned, &spanless] {
            assert_eq!(line["level"], "WARN", "a 5xx is a warning: {line}");
            assert_eq!(line["request_id"], "rid-1");
            assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(line["http.route"], "/a/{*rest}");
            assert_eq!(line["http.response.status_code"], 502);
            assert_eq!(line["url.path"], "/a/b");
            assert_ne!(
                line["span_id"], "00f067aa0ba902b7",
                "this hop's own span id"
            );
        }
        // The span's name is the one key only a span brings.
        let mut expected = keys(&spanned);
        expected.retain(|key| key != "name");
        let mut actual = keys(&spanless);
        actual.retain(|key| key != "name");
        assert_eq!(actual, expected);
        // What goes straight to the JSON log is the line the spanless request logged through
        // `tracing`, but for the timestamp, and has the keys of the line with a span.
        let context = RequestContext {
            request_id: "rid-1".into(),
            trace: TraceParent {
                trace_id: u128::from_str_radix(spanless["trace_id"].as_str().unwrap(), 16).unwrap(),
                span_id: u64::from_str_radix(spanless["span_id"].as_str().unwrap(), 16).unwrap(),
                flags: 1,
            },
        };
        let mut out = Vec::new();
        AccessLine {
            level: "WARN",
            latency_micros: (spanless["latency_ms"].as_f64().unwrap() * 1000.0).round() as u64,
            method: "GET",
            status: 502,
            route: Some("/a/{*rest}"),
            outcome: Some("error"),
            request_id: &context.request_id,
            service: "test",
            trace: context.trace,
            path: "/a/b",
        }
        .write_json(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let direct: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(keys(&direct), keys(&spanned));
        for (key, value) in direct.as_object().unwrap() {
            if key != "timestamp" && key != "name" {
                assert_eq!(value, &spanless[key], "{key}");
            }
        }
        let timestamp = direct["timestamp"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(timestamp).is_ok() && timestamp.ends_with('Z'),
            "{timestamp}"
        );
    }

    #[test]
    fn a_request_goes_on_with_one_request_id() {
        let observer = RequestObserver {
            service: "test",
            metrics: Metrics::new(),
            spans: RequestSpans::WhenExported,
        };
        let mut twice = http::Request::get("/")
            .header(X_REQUEST_ID, "first")
            .header(X_REQUEST_ID, "second")
            .body(())
            .unwrap();
        let observation = observer.begin(&mut twice);
        assert_eq!(observation.context().request_id, "first");
        let ids: Vec<_> = twice.headers().get_all(X_REQUEST_ID).iter().collect();
        assert_eq!(ids, ["first"]);
        let mut insane = http::Request::get("/")
            .header(X_REQUEST_ID, "has space")
            .body(())
            .unwrap();
        let observation = observer.begin(&mut insane);
        let new = &observation.context().request_id;
        assert_eq!(new.len(), 36, "a new UUID: {new}");
        assert_eq!(insane.headers()[X_REQUEST_ID], new.as_str());
        let mut none = http::Request::get("/").body(()).unwrap();
        let observation = observer.begin(&mut none);
        assert_eq!(
            none.headers()[X_REQUEST_ID],
            observation.context().request_id.as_str()
        );
        assert_ne!(observation.context().request_id, *new);
    }

    #[test]
    fn sane_request_ids_are_kept_and_others_are_not() {
        assert!(is_sane_request_id("abc-123_x.y:z"));
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id("has space"));
        assert!(!is_sane_request_id("new\nline"));
        assert!(!is_sane_request_id(&"a".repeat(129)));
    }

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(header).unwrap();
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.to_header(), header);
        let child = parsed.child();
        assert_eq!(child.trace_id, parsed.trace_id);
        assert_ne!(child.span_id, parsed.span_id);
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }
}
