//! Per-request context: the request id, W3C trace context, the request span, the access log,
//! and turning bare error statuses into problem responses.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use tracing::{Instrument, field::Empty};

use crate::metrics::{Metrics, RouteLabel, UNMATCHED_ROUTE};
use crate::problem::{PROBLEM_JSON, Problem};

/// The header carrying the request id, in and out.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The W3C trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served by this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
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
        format!("{:032x}", self.trace_id)
    }

    /// The header value.
    pub fn to_header(&self) -> HeaderValue {
        let text = format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
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

/// Marks a response that came from an upstream as is (the gateway's), so it is not rewritten.
#[derive(Debug, Clone, Copy)]
pub struct PassThrough;

/// Middleware: request id and trace context in, span and access log around the request,
/// `X-Request-ID` out, and bare error statuses (axum's 404/405/413, ...) as problem+json.
pub async fn request_context(
    State(RequestObserver { service, metrics }): State<RequestObserver>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let incoming = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let method = request.method().as_str().to_owned();
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
    let (span, trace) = if crate::telemetry::exporting() {
        let span = request_span!(Empty, Empty);
        let trace = exported_trace(&span, incoming).unwrap_or_else(|| own_trace(incoming));
        span.record("trace_id", trace.trace_id_hex());
        span.record("span_id", format!("{:016x}", trace.span_id));
        (span, trace)
    } else {
        let trace = own_trace(incoming);
        let span = request_span!(
            tracing::field::display(trace.trace_id_hex()),
            tracing::field::display(format_args!("{:016x}", trace.span_id))
        );
        (span, trace)
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        request.headers_mut().insert(X_REQUEST_ID, value);
    }
    request.extensions_mut().insert(RequestContext {
        request_id: request_id.clone(),
        trace,
    });

    let response = REQUEST_ID
        .scope(request_id.clone(), async move {
            let response = next.run(request).await;
            problem_for_bare_error(response)
        })
        .instrument(span.clone())
        .await;

    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map_or(UNMATCHED_ROUTE, |r| r.0.as_str());
    metrics.observe_http(&method, route, status, elapsed);
    rename_exported(&span, || {
        if route == UNMATCHED_ROUTE {
            method.clone()
        } else {
            format!("{method} {route}")
        }
    });
    let latency_ms = elapsed * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(latency_ms, "request completed");
        } else {
            tracing::info!(latency_ms, "request completed");
        }
    });

    let mut response = response;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
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
}

/// Error responses that are not already JSON (framework defaults) become problem+json,
/// keeping headers such as `Allow` and `Retry-After`.
fn problem_for_bare_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<PassThrough>().is_some()
        || is_json(response.headers())
    {
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
