//! [`request_event!`]: a log line about a forwarded request, with its ids. Forwarded requests
//! have no span of their own unless spans are exported, so the line carries the request's
//! `request_id` and `trace_id` itself when no span does.

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
