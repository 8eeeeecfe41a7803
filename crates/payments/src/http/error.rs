//! The payments error type and its one mapping to problem responses.

use axum::response::{IntoResponse, Response};
use common::Problem;
use common::db::StoreError;
use common::problem::FieldError;
use http::{HeaderValue, StatusCode, header};

use crate::domain::payment::PaymentStatus;
use crate::idempotency::{KeyError, Refused};

/// Everything a payments handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `missing_idempotency_key` or `invalid_idempotency_key`.
    #[error(transparent)]
    IdempotencyKey(#[from] KeyError),
    /// 422 `idempotency_key_reused`: same key, different method, path or body.
    #[error("idempotency key reused")]
    KeyReused,
    /// 409 `idempotency_key_in_use` with `Retry-After`: the first request is still running.
    #[error("idempotency key in use")]
    KeyInUse,
    /// 404 `not_found`: unknown id, or another principal's payment.
    #[error("no such payment")]
    NotFound,
    /// 404 `not_found`: unknown refund id, or another principal's refund.
    #[error("no such refund")]
    NoSuchRefund,
    /// 404 `not_found`: unknown webhook endpoint.
    #[error("no such webhook endpoint")]
    NoSuchEndpoint,
    /// 404 `not_found`: no such event kept.
    #[error("no such event")]
    NoSuchEvent,
    /// 409 `invalid_state` with its own explanation.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 422 `amount_too_large`: a refund or capture over what is left.
    #[error("amount too large: {0}")]
    AmountTooLarge(String),
    /// 409 `invalid_state`: the transition is not allowed from this status.
    #[error("invalid state: {0}")]
    InvalidState(PaymentStatus),
    /// 422 `validation_failed`, listing the fields.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// An extractor's own problem (401, 403, 400, 413, 415), passed through.
    #[error("{}", .0.detail)]
    Problem(Box<Problem>),
    /// 503 `dependency_unavailable` or 500, from the database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::InUse => Self::KeyInUse,
            Refused::Reused => Self::KeyReused,
            Refused::Store(error) => Self::Store(error),
        }
    }
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        Self::Problem(Box::new(problem))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::IdempotencyKey(KeyError::Missing) => Problem::new(
                StatusCode::BAD_REQUEST,
                "missing_idempotency_key",
                "this request needs an Idempotency-Key header (1-255 printable ASCII characters)",
            ),
            Self::IdempotencyKey(KeyError::Invalid) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "the Idempotency-Key must be 1-255 printable ASCII characters",
            ),
            Self::KeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request (method, path or body)",
            ),
            Self::KeyInUse => Problem::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed; retry shortly",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            Self::NotFound => Problem::not_found("no such payment"),
            Self::NoSuchRefund => Problem::not_found("no such refund"),
            Self::NoSuchEndpoint => Problem::not_found("no such webhook endpoint"),
            Self::NoSuchEvent => Problem::not_found("no such event is kept"),
            Self::Conflict(detail) => Problem::new(StatusCode::CONFLICT, "invalid_state", detail),
            Self::AmountTooLarge(detail) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "amount_too_large", detail)
            }
            Self::InvalidState(status) => Problem::new(
                StatusCode::CONFLICT,
                "invalid_state",
                format!("the payment is {status}; this is not allowed from that state"),
            ),
            Self::Validation(errors) => Problem::validation(errors),
            Self::Problem(problem) => *problem,
            Self::Store(error) => Problem::from(error),
        };
        problem.into_response()
    }
}
