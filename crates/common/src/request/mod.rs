//! Per-request context, one concern a module: the request id ([`id`]), W3C trace context
//! ([`trace`]), the request's span and its observation from start to answer ([`observer`]:
//! RED metrics and the access line written at the end, [`access_log`]), and turning bare error
//! statuses into problem responses ([`problems`]).

pub mod access_log;
pub mod id;
pub mod observer;
pub mod problems;
pub mod trace;

pub use access_log::ProxyFields;
pub use id::{X_REQUEST_ID, current_request_id, is_sane_request_id};
pub use observer::{Observation, RequestObserver, RequestSpans, record_route, request_context};
pub use trace::{TRACEPARENT, TraceParent, exported_trace, rename_exported};

/// What the request-context middleware learned, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id (the caller's, if sane; else a new one).
    pub request_id: String,
    /// This hop's span within the caller's trace (or a new trace).
    pub trace: TraceParent,
}

#[cfg(test)]
mod tests {
    use super::access_log::AccessLine;
    use super::*;
    use crate::Problem;
    use crate::metrics::Metrics;
    use axum::response::{IntoResponse, Response};

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
            proxy: Default::default(),
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
