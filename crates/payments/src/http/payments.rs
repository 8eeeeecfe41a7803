//! Payment routes. Creation, reads and the event feed are the next milestone; until then they
//! say so with a 501 problem instead of pretending.

use super::ApiError;

/// `POST /payments`, `POST /v1/payments`.
pub async fn create() -> ApiError {
    ApiError::NotImplemented("payment creation")
}

/// `GET /v1/payments`.
pub async fn list() -> ApiError {
    ApiError::NotImplemented("listing payments")
}

/// `GET /v1/payments/{id}`.
pub async fn get_one() -> ApiError {
    ApiError::NotImplemented("reading a payment")
}

/// `POST /v1/payments/{id}/cancel`.
pub async fn cancel() -> ApiError {
    ApiError::NotImplemented("canceling a payment")
}

/// `GET /v1/events`.
pub async fn events() -> ApiError {
    ApiError::NotImplemented("the event feed")
}
