//! Payment routes: create (idempotent, 202), read, list, cancel.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use common::auth::Authenticated;
use common::extract::{Json, JsonBytes, Path, Query};
use common::problem::FieldError;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ApiError, AppState};
use crate::domain::events::state_changed;
use crate::domain::money::{Money, parse_currency};
use crate::domain::payment::{DEFAULT_PAYMENT_METHOD, PAYMENT_METHODS, Payment, PaymentStatus};
use crate::idempotency::{self, Begun};

pub(super) const READ: &str = "payments:read";
const WRITE: &str = "payments:write";
pub(super) const ADMIN: &str = "payments:admin";

/// The body of `POST /v1/payments`.
#[derive(Debug, Deserialize)]
pub struct CreatePayment {
    amount: Box<RawValue>,
    currency: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    payment_method: Option<String>,
}

/// Where the payment can be read, through the gateway when the request came through it.
fn location(headers: &HeaderMap, id: &str) -> HeaderValue {
    let prefix = headers
        .get("x-forwarded-prefix")
        .and_then(|v| v.to_str().ok())
        .filter(|p| p.starts_with('/') && !p.contains(['?', '#']))
        .unwrap_or("")
        .trim_end_matches('/');
    HeaderValue::from_str(&format!("{prefix}/v1/payments/{id}"))
        .unwrap_or(HeaderValue::from_static("/"))
}

fn json_response(
    status: StatusCode,
    body: String,
    headers: &HeaderMap,
    payment_id: Option<&str>,
) -> Response {
    let mut response = (status, body).into_response();
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(id) = payment_id {
        out.insert(header::LOCATION, location(headers, id));
    }
    response
}

/// Checks the body and builds the payment it asks for.
fn new_payment(body: CreatePayment, owner: &str) -> Result<Payment, ApiError> {
    let mut errors = Vec::new();
    let currency = parse_currency(&body.currency)
        .map_err(|e| errors.push(FieldError::new(e.field, e.message)));
    let raw = body.amount.get();
    let amount_text = if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).ok()
    } else if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Some(raw.to_owned())
    } else {
        None
    };
    let money = match (amount_text, &currency) {
        (None, _) => {
            errors.push(FieldError::new(
                "amount",
                "must be a number or a decimal string in major units",
            ));
            None
        }
        (Some(text), Ok((currency, exponent))) => Money::from_major(&text, *currency, *exponent)
            .map_err(|e| errors.push(FieldError::new(e.field, e.message)))
            .ok(),
        (Some(_), Err(())) => None,
    };
    let method = body
        .payment_method
        .unwrap_or_else(|| DEFAULT_PAYMENT_METHOD.to_owned());
    if !PAYMENT_METHODS.contains(&method.as_str()) {
        errors.push(FieldError::new(
            "payment_method",
            format!("must be one of {}", PAYMENT_METHODS.join(", ")),
        ));
    }
    if body.description.chars().count() > 1000 {
        errors.push(FieldError::new(
            "description",
            "must be at most 1000 characters",
        ));
    }
    let Some(money) = money.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let now = Utc::now();
    Ok(Payment {
        id: format!("pay_{}", uuid::Uuid::now_v7().simple()),
        owner: owner.to_owned(),
        status: PaymentStatus::Pending.as_str().to_owned(),
        amount_minor: money.minor(),
        currency: money.currency_code().to_owned(),
        description: body.description,
        payment_method: method,
        failure_code: None,
        failure_message: None,
        attempts: 0,
        lease_until: None,
        created_at: now,
        updated_at: now,
    })
}

/// `POST /payments`, `POST /v1/payments` → 202 with the payment and `Location`; idempotent by
/// `Idempotency-Key` (scoped to the caller).
pub async fn create(
    State(state): State<AppState>,
    caller: Authenticated,
    headers: HeaderMap,
    uri: Uri,
    body: Result<JsonBytes<CreatePayment>, common::Problem>,
) -> Result<Response, ApiError> {
    caller.require_scope(WRITE)?;
    let key = idempotency::Key::from_headers(&headers)?;
    let JsonBytes(request, body) = body?;
    let payment = new_payment(request, &caller.0.sub)?;

    let fingerprint = idempotency::fingerprint("POST", uri.path(), &body);
    let settings = idempotency::Settings {
        ttl: state.config.idempotency_ttl,
        lock_timeout: state.config.idempotency_lock_timeout,
    };
    let lock = match idempotency::begin(&*state.store, &caller.0.sub, key, &fingerprint, settings)
        .await?
    {
        Begun::Run(lock) => lock,
        Begun::Replay(replay) => {
            let status =
                StatusCode::from_u16(replay.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response =
                json_response(status, replay.body, &headers, replay.payment_id.as_deref());
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(response);
        }
    };

    let body = payment.to_json().to_string();
    let event = state_changed(&payment, payment.created_at);
    let saved = lock.response(202, &body);
    if let Err(error) = state
        .store
        .create_payment(&payment, &event, Some(saved))
        .await
    {
        return Err(lock.abandon(&*state.store, error).await.into());
    }
    state.wake.notify_waiters();
    tracing::info!(payment_id = %payment.id, amount_minor = payment.amount_minor, currency = %payment.currency, "payment accepted");
    Ok(json_response(
        StatusCode::ACCEPTED,
        body,
        &headers,
        Some(&payment.id),
    ))
}

/// The payment if the caller may see it (its owner, or `payments:admin`); else 404.
async fn visible(state: &AppState, caller: &Authenticated, id: &str) -> Result<Payment, ApiError> {
    let payment = state.store.payment(id).await?.ok_or(ApiError::NotFound)?;
    if payment.owner == caller.0.sub || caller.0.has_scope(ADMIN) {
        Ok(payment)
    } else {
        Err(ApiError::NotFound)
    }
}

/// `GET /v1/payments/{id}`.
pub async fn get_one(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require_scope(READ)?;
    Ok(Json(visible(&state, &caller, &id).await?.to_json()))
}

/// `GET /v1/payments?limit=&starting_after=` → newest first, `{"data","has_more"}`.
pub async fn list(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require_scope(READ)?;
    let limit = match params.get("limit").map(|l| l.parse::<i64>()) {
        None => 10,
        Some(Ok(limit)) if (1..=100).contains(&limit) => limit,
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "limit",
                "must be a whole number from 1 to 100",
            )]));
        }
    };
    let before = match params.get("starting_after") {
        None => None,
        Some(id) => {
            let cursor = visible(&state, &caller, id)
                .await
                .map_err(|error| match error {
                    ApiError::NotFound => ApiError::Validation(vec![FieldError::new(
                        "starting_after",
                        "no such payment",
                    )]),
                    other => other,
                })?;
            Some((cursor.created_at, cursor.id))
        }
    };
    let owner = (!caller.0.has_scope(ADMIN)).then_some(caller.0.sub.as_str());
    let mut page = state.store.list_payments(owner, before, limit + 1).await?;
    let has_more = page.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    page.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(Json(serde_json::json!({
        "object": "list",
        "data": page.iter().map(Payment::to_json).collect::<Vec<_>>(),
        "has_more": has_more,
    })))
}

/// `POST /v1/payments/{id}/cancel` → the canceled payment, or 409 `invalid_state`.
pub async fn cancel(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require_scope(WRITE)?;
    let payment = visible(&state, &caller, &id).await?;
    if payment
        .status()
        .transition(PaymentStatus::Canceled)
        .is_err()
    {
        return Err(ApiError::InvalidState(payment.status()));
    }
    match state.store.cancel_payment(&id, Utc::now()).await? {
        Some(canceled) => Ok(Json(canceled.to_json())),
        // A processor took it between our read and our write.
        None => {
            let current = state.store.payment(&id).await?.ok_or(ApiError::NotFound)?;
            Err(ApiError::InvalidState(current.status()))
        }
    }
}
