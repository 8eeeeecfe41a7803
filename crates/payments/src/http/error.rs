//! The payments error type and its one mapping to problem responses.

use axum::response::{IntoResponse, Response};
use common::Problem;
use common::db::StoreError;

/// Everything a payments handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
            Self::NotImplemented(what) => {
                Problem::not_implemented(format!("{what} is not available yet"))
            }
            Self::Store(error) => Problem::from(error),
        };
        problem.into_response()
    }
}
