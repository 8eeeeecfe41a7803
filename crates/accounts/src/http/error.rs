//! The accounts error type and its one mapping to problem responses.

use axum::response::{IntoResponse, Response};
use common::Problem;
use common::db::StoreError;

/// Everything an accounts handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 `unauthorized`: no token, or one that does not verify.
    #[error("unauthorized")]
    Unauthorized {
        /// Whether a token was sent (then the challenge says `invalid_token`).
        token_presented: bool,
    },
    /// 501 `not_implemented`: part of the contract, not built yet.
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// 503 `dependency_unavailable` or 500, from the database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::Unauthorized { token_presented } => Problem::unauthorized(
                if token_presented {
                    "the access token is not valid"
                } else {
                    "an access token is required (Authorization: Bearer ...)"
                },
                token_presented,
            ),
            Self::NotImplemented(what) => {
                Problem::not_implemented(format!("{what} is not available yet"))
            }
            Self::Store(error) => Problem::from(error),
        };
        problem.into_response()
    }
}
