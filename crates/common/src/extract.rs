//! Extractors whose rejections are the service's own problem responses.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// A JSON body (`Content-Type: application/json`). Rejections: 415 without the content type,
/// 400 `malformed_request` for bad JSON or the wrong shape, 413 over the body limit.
/// As a response, serializes `T` as `application/json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection_problem(rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The problem for each way a JSON body can be refused.
pub fn json_rejection_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(e) => {
            Problem::malformed(format!("the body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => Problem::malformed(format!(
            "the body does not have the expected shape: {}",
            e.body_text()
        )),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::from_status(StatusCode::PAYLOAD_TOO_LARGE)
        }
        JsonRejection::BytesRejection(e) => {
            Problem::malformed(format!("the body could not be read: {}", e.body_text()))
        }
        other => Problem::malformed(other.body_text()),
    }
}
