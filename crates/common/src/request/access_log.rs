//! The access line of a request without a span, written by hand into the JSON log (see
//! `logline`), with the same fields under the same names as a `request completed` event
//! inside a request span.

use super::trace::TraceParent;
use crate::logline;

/// The `target` of every access line, however it is written.
pub(super) const TARGET: &str = "common::request";

/// The access log line of a request without a span: the same fields, under the same names,
/// as a `request completed` event inside a request span.
pub(super) struct AccessLine<'a> {
    pub(super) level: &'static str,
    pub(super) latency_micros: u64,
    pub(super) method: &'a str,
    pub(super) status: u16,
    pub(super) route: Option<&'a str>,
    pub(super) outcome: Option<&'static str>,
    pub(super) request_id: &'a str,
    pub(super) service: &'static str,
    pub(super) trace: TraceParent,
    pub(super) path: &'a str,
    pub(super) proxy: ProxyFields<'a>,
}

/// What a proxy adds to a request's access line: the upstream and host that served it, the
/// arm of a traffic split, whether a copy went to a mirror. Absent fields are left out.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyFields<'a> {
    /// The upstream's name (`upstream`).
    pub upstream: Option<&'a str>,
    /// The host, `address:port` (`upstream.address`).
    pub host: Option<&'a str>,
    /// The arm of a split (`split`).
    pub split: Option<&'a str>,
    /// The mirror's part (`mirror`).
    pub mirror: Option<&'a str>,
}

impl AccessLine<'_> {
    /// The line as the JSON log writes a `request completed` event in a request span (the
    /// same keys in the same order), newline included.
    pub(super) fn write_json(&self, out: &mut Vec<u8>) {
        use logline::{push_millis, push_str, push_uint};
        // Level, target, method (an HTTP token), request id (checked by
        // `is_sane_request_id`, or ours) and service name need no escaping.
        out.extend_from_slice(b"{\"level\":\"");
        out.extend_from_slice(self.level.as_bytes());
        out.extend_from_slice(b"\",\"target\":\"");
        out.extend_from_slice(TARGET.as_bytes());
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
        for (key, value) in [
            ("upstream", self.proxy.upstream),
            ("upstream.address", self.proxy.host),
            ("split", self.proxy.split),
            ("mirror", self.proxy.mirror),
        ] {
            if let Some(value) = value {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"\":\"");
                push_str(out, value);
                out.push(b'"');
            }
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

impl AccessLine<'_> {
    /// Writes the line to the JSON log directly, or, when that is not the subscriber (plain
    /// text, tests), logs it through `tracing` with the same fields.
    pub(super) fn log(self) {
        let line = self;
        macro_rules! event {
            ($level:expr) => {{
                if tracing::enabled!($level)
                    && !crate::telemetry::write_json_line(|out| line.write_json(out))
                {
                    tracing::event!(
                        target: TARGET,
                        $level,
                        latency_ms = line.latency_micros as f64 / 1000.0,
                        http.request.method = line.method,
                        http.response.status_code = line.status,
                        http.route = line.route,
                        upstream = line.proxy.upstream,
                        upstream.address = line.proxy.host,
                        split = line.proxy.split,
                        mirror = line.proxy.mirror,
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
