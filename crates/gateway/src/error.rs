//! The gateway's own answers: every way it refuses or fails a request, and the one mapping of
//! each to its RFC 9457 problem response (with the request's id).

use std::time::Duration;

use axum::response::IntoResponse;
use common::Problem;
use common::problem::retry_after_seconds;
use common::request::RequestContext;
use http::{HeaderValue, StatusCode, header};

use crate::body::EdgeBody;

/// Why the gateway answers a request itself instead of passing on an upstream's answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// 404 `not_found`: no route for the path (or the path is blocked).
    #[error("no route for {path}")]
    NoRoute {
        /// The path asked for.
        path: String,
    },
    /// 400 `malformed_request`: `.` or `..` segments, which could step out of a prefix.
    #[error("the path has dot segments")]
    DotSegments,
    /// 400 `malformed_request`: the path cannot be made into the upstream's URI.
    #[error("the path cannot be forwarded")]
    Unforwardable,
    /// 400 `malformed_request`: the client's body failed while it was being sent on.
    #[error("the request body could not be read")]
    BodyUnreadable,
    /// 413 `payload_too_large`: the body is over `MAX_BODY_BYTES` (declared or found
    /// while streaming).
    #[error("the request body is over the limit")]
    PayloadTooLarge,
    /// 429 `rate_limited` with `Retry-After` (the `RateLimit` headers are added by the edge).
    #[error("rate limited; retry in {0:?}")]
    RateLimited(Duration),
    /// 502 `upstream_unavailable`: the upstream could not be reached, or the connection
    /// failed before its answer.
    #[error("the {upstream} service could not be reached")]
    Unreachable {
        /// The upstream's name.
        upstream: String,
    },
    /// 502 `upstream_unavailable`: the upstream's response was invalid before any of it went
    /// out (a malformed head or first chunk).
    #[error("the {upstream} service sent an invalid response")]
    InvalidResponse {
        /// The upstream's name.
        upstream: String,
    },
    /// 503 `circuit_open` with `Retry-After`: the upstream's breaker is open.
    #[error("the {upstream} service is failing; not calling it for {retry_after:?}")]
    CircuitOpen {
        /// The upstream's name.
        upstream: String,
        /// Until the breaker lets a trial through.
        retry_after: Duration,
    },
    /// 504 `upstream_timeout`: no response head in time, or no first body byte.
    #[error("the {upstream} service did not answer in time")]
    Timeout {
        /// The upstream's name.
        upstream: String,
    },
    /// 401, 403 or 503 from the token check at the edge: the problem the services would give.
    #[error("the access token was refused")]
    Refused(Box<Problem>),
    /// 500 `internal_error`: forwarding panicked (the cause is logged, never sent).
    #[error("forwarding panicked")]
    Panicked,
}

impl GatewayError {
    /// The problem this error is answered with.
    pub fn problem(&self) -> Problem {
        let detail = self.to_string();
        match self {
            Self::NoRoute { .. } => Problem::not_found(detail),
            Self::DotSegments => Problem::malformed("the path may not contain . or .. segments"),
            Self::Unforwardable | Self::BodyUnreadable => Problem::malformed(detail),
            Self::PayloadTooLarge => Problem::from_status(StatusCode::PAYLOAD_TOO_LARGE),
            Self::RateLimited(wait) => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many requests; retry in {} s",
                    retry_after_seconds(*wait)
                ),
            )
            .with_header(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_seconds(*wait)),
            ),
            Self::Unreachable { .. } | Self::InvalidResponse { .. } => {
                Problem::new(StatusCode::BAD_GATEWAY, "upstream_unavailable", detail)
            }
            Self::CircuitOpen {
                upstream,
                retry_after,
            } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "circuit_open",
                format!("the {upstream} service is failing; not calling it for now"),
            )
            .with_header(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_seconds(*retry_after)),
            ),
            Self::Timeout { .. } => {
                Problem::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", detail)
            }
            Self::Refused(problem) => (**problem).clone(),
            Self::Panicked => Problem::internal(),
        }
    }

    /// The gateway's answer to the request of `context`, with its request id.
    pub fn respond(&self, context: &RequestContext) -> http::Response<EdgeBody> {
        let mut problem = self.problem();
        problem.request_id = Some(context.request_id.clone());
        problem.into_response().map(http_body_util::Either::Right)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_status_and_code() {
        let upstream = || "payments".to_owned();
        for (error, status, code) in [
            (
                GatewayError::NoRoute { path: "/x".into() },
                404,
                "not_found",
            ),
            (GatewayError::DotSegments, 400, "malformed_request"),
            (GatewayError::PayloadTooLarge, 413, "payload_too_large"),
            (
                GatewayError::RateLimited(Duration::from_millis(1500)),
                429,
                "rate_limited",
            ),
            (
                GatewayError::Unreachable {
                    upstream: upstream(),
                },
                502,
                "upstream_unavailable",
            ),
            (
                GatewayError::InvalidResponse {
                    upstream: upstream(),
                },
                502,
                "upstream_unavailable",
            ),
            (
                GatewayError::CircuitOpen {
                    upstream: upstream(),
                    retry_after: Duration::from_secs(4),
                },
                503,
                "circuit_open",
            ),
            (
                GatewayError::Timeout {
                    upstream: upstream(),
                },
                504,
                "upstream_timeout",
            ),
            (GatewayError::Panicked, 500, "internal_error"),
        ] {
            let problem = error.problem();
            assert_eq!(
                (problem.status, problem.code.as_ref()),
                (status, code),
                "{error}"
            );
        }
    }
}
