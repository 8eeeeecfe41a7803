//! RFC 9457 `application/problem+json` responses with a stable machine-readable `code`.

use std::borrow::Cow;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

use crate::request::id::current_request_id;

/// The media type of every problem response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One rejected field of a request, listed under `errors` in a `validation_failed` problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, as the client named it (`amount`, `email`).
    #[schema(example = "amount")]
    pub field: String,
    /// Why it was not accepted.
    #[schema(example = "has more decimal places than USD allows (2)")]
    pub message: String,
}

impl FieldError {
    /// A rejected field and why.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem (`application/problem+json`). `request_id` is filled in from the
/// request being served.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; derived from `code`.
    #[serde(rename = "type")]
    #[schema(example = "urn:problem-type:validation_failed")]
    pub type_uri: String,
    /// Short human summary (the status phrase).
    #[schema(value_type = String, example = "Unprocessable Entity")]
    pub title: Cow<'static, str>,
    /// The HTTP status, repeated in the body.
    #[schema(example = 422)]
    pub status: u16,
    /// Human explanation of this occurrence.
    #[schema(example = "invalid fields: amount")]
    pub detail: String,
    /// Stable machine-readable code: what a client branches on.
    #[schema(value_type = String, example = "validation_failed")]
    pub code: Cow<'static, str>,
    /// The `X-Request-ID` of the request that failed.
    #[schema(example = "0193a8e2-7c1f-7d2e-9b51-3f0e6c2d9a44")]
    pub request_id: Option<String>,
    /// Field-level errors for `validation_failed`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    headers: HeaderMap,
}

impl Problem {
    /// A problem with the given status, code and detail.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Self {
        let code = code.into();
        Self {
            type_uri: format!("urn:problem-type:{code}"),
            title: Cow::Borrowed(status.canonical_reason().unwrap_or("Error")),
            status: status.as_u16(),
            detail: detail.into(),
            code,
            request_id: None,
            errors: Vec::new(),
            headers: HeaderMap::new(),
        }
    }

    /// 400 `malformed_request`: the body is not JSON, or not of the expected shape.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_request", detail)
    }

    /// 422 `validation_failed` with the fields at fault.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        let mut problem = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("invalid fields: {}", fields.join(", ")),
        );
        problem.errors = errors;
        problem
    }

    /// 401 `unauthorized`. When a token was presented, RFC 6750 asks for `error="invalid_token"`.
    pub fn unauthorized(detail: impl Into<String>, token_presented: bool) -> Self {
        let challenge = if token_presented {
            "Bearer error=\"invalid_token\""
        } else {
            "Bearer"
        };
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )
    }

    /// 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 500 `internal_error`; the cause is logged, never sent.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the server failed to handle the request; it has been logged",
        )
    }

    /// 503 `dependency_unavailable`: the database or broker does not answer.
    pub fn dependency_unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency_unavailable",
            detail,
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }

    /// 501 `not_implemented`: the route is part of the contract but not built yet.
    pub fn not_implemented(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", detail)
    }

    /// Adds a response header (`Retry-After`, `WWW-Authenticate`, ...).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The problem a bare error status turns into when nothing more specific was said
    /// (axum's own 405, a body-limit 413, the router's 404, ...).
    pub fn from_status(status: StatusCode) -> Self {
        let (code, detail) = match status {
            StatusCode::BAD_REQUEST => ("malformed_request", "the request could not be read"),
            StatusCode::UNAUTHORIZED => ("unauthorized", "authentication is required"),
            StatusCode::FORBIDDEN => ("forbidden", "not allowed"),
            StatusCode::NOT_FOUND => ("not_found", "no such resource"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method_not_allowed",
                "the resource does not support this method",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => (
                "payload_too_large",
                "the request body is larger than the limit",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ),
            StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long"),
            StatusCode::UNPROCESSABLE_ENTITY => ("validation_failed", "the request is not valid"),
            StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests"),
            StatusCode::NOT_IMPLEMENTED => ("not_implemented", "not implemented"),
            StatusCode::SERVICE_UNAVAILABLE => {
                ("service_unavailable", "the service is unavailable")
            }
            s if s.is_server_error() => ("internal_error", "the server failed"),
            _ => ("client_error", "the request was not accepted"),
        };
        Self::new(status, code, detail)
    }
}

impl From<crate::db::StoreError> for Problem {
    /// Storage failures: an unreachable database is a 503 the client may retry; anything else
    /// is logged with its cause and answered with a bare 500.
    fn from(error: crate::db::StoreError) -> Self {
        use crate::db::StoreError;
        match error {
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                Self::dependency_unavailable("the database is not answering; try again shortly")
            }
            StoreError::Conflict(cause) | StoreError::Other(cause) => {
                tracing::error!(%cause, "storage error");
                Self::internal()
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(mut self) -> Response {
        if self.request_id.is_none() {
            self.request_id = current_request_id();
        }
        let status = self.status();
        let headers = std::mem::take(&mut self.headers);
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response.headers_mut().extend(headers);
        response
    }
}

/// Whole seconds in `wait`, rounded up: what the `RateLimit` headers carry.
pub fn seconds_rounded_up(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The `Retry-After` seconds for `wait`: rounded up, and at least 1 (a client told to retry
/// in 0 seconds retries at once).
pub fn retry_after_seconds(wait: Duration) -> u64 {
    seconds_rounded_up(wait).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up_and_retry_after_is_at_least_one() {
        assert_eq!(seconds_rounded_up(Duration::ZERO), 0);
        assert_eq!(seconds_rounded_up(Duration::from_millis(1500)), 2);
        assert_eq!(seconds_rounded_up(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn a_validation_problem_lists_each_field() {
        let problem = Problem::validation(vec![FieldError::new("amount", "must be positive")]);
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(json["status"], 422);
        assert_eq!(json["code"], "validation_failed");
        assert_eq!(json["errors"][0]["field"], "amount");
        assert_eq!(json["type"], "urn:problem-type:validation_failed");
    }

    #[test]
    fn a_response_is_problem_json_with_its_headers() {
        let response = Problem::unauthorized("no token", true).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
    }
}
