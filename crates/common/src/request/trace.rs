//! W3C trace context: the `traceparent` a request came with, this hop's span in that trace,
//! and the ids of exported OpenTelemetry spans.

use http::{HeaderName, HeaderValue};

use crate::logline;

/// The W3C trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

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

/// This hop's span in the caller's trace, or a new trace.
pub(super) fn own_trace(incoming: Option<TraceParent>) -> TraceParent {
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
