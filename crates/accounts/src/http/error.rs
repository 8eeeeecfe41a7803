//! The accounts error type and its one mapping to problem responses (the OAuth endpoints have
//! their own RFC 6749 error bodies, in `oauth.rs`).

use axum::response::{IntoResponse, Response};
use common::Problem;
use common::db::StoreError;
use common::problem::FieldError;
use http::{HeaderValue, StatusCode, header};

use crate::keys::KeyError;
use crate::passwords::PasswordError;
use crate::users::CreateUserError;

/// Everything an accounts handler outside the OAuth endpoints can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 `unauthorized`: the token does not (or no longer) verify.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// 403 `signup_disabled`: sign-up is switched off.
    #[error("sign-up is disabled")]
    SignupDisabled,
    /// 404 `not_found`.
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// 409 `email_taken`.
    #[error("email taken")]
    EmailTaken,
    /// 503 `temporarily_unavailable` with `Retry-After`: every password-hashing slot is busy.
    #[error("busy")]
    Busy,
    /// 422 `validation_failed`, listing the fields.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// An extractor's or a check's own problem (401, 403, 400 ...), passed through.
    #[error("{}", .0.detail)]
    Problem(Box<Problem>),
    /// 503 `dependency_unavailable` or 500, from the database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 500: signing keys could not be generated, decrypted or used (or 503 from the database).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// 500: anything else that should not happen; logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        Self::Problem(Box::new(problem))
    }
}

impl From<CreateUserError> for ApiError {
    fn from(error: CreateUserError) -> Self {
        match error {
            CreateUserError::EmailTaken => Self::EmailTaken,
            CreateUserError::Password(error) => error.into(),
            CreateUserError::Store(error) => Self::Store(error),
        }
    }
}

impl From<PasswordError> for ApiError {
    fn from(error: PasswordError) -> Self {
        match error {
            PasswordError::Busy => Self::Busy,
            PasswordError::Failed(cause) => Self::Internal(anyhow::anyhow!(cause)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::Unauthorized(detail) => Problem::unauthorized(detail, true),
            Self::SignupDisabled => Problem::new(
                StatusCode::FORBIDDEN,
                "signup_disabled",
                "sign-up is switched off; ask an administrator for an account",
            ),
            Self::NotFound(what) => Problem::not_found(format!("no such {what}")),
            Self::EmailTaken => Problem::new(
                StatusCode::CONFLICT,
                "email_taken",
                "an account with this email already exists",
            ),
            Self::Busy => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the service is busy hashing passwords; retry shortly",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            Self::Validation(errors) => Problem::validation(errors),
            Self::Problem(problem) => *problem,
            Self::Store(error) | Self::Key(KeyError::Store(error)) => Problem::from(error),
            Self::Key(error @ KeyError::Undecryptable { .. }) => {
                tracing::error!(%error, "signing key unusable");
                Problem::dependency_unavailable(
                    "the service cannot sign tokens now; it is misconfigured",
                )
            }
            Self::Key(KeyError::Crypto(cause)) => {
                tracing::error!(%cause, "signing key failure");
                Problem::internal()
            }
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}
