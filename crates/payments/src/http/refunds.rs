//! Refund routes: create (idempotent, 202), read one, list a payment's.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use chrono::Utc;
use common::auth::Authenticated;
use common::extract::{Json, JsonBytes, Path, Query};
use common::problem::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::payments::{
    ADMIN, Amount, IdempotencyKeyHeader, READ, WRITE, amount_of, begin_or_replay, json_response,
    one_page, page_limit, visible,
};
use super::{ApiError, AppState};
use crate::domain::payment::{Payment, decimal};
use crate::domain::refund::{Refund, RefundReason, RefundView};
use crate::store::RefundCreated;

/// The body of `POST /v1/payments/{id}/refunds`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"amount": "25.00", "reason": "requested_by_customer"}))]
pub struct CreateRefund {
    /// How much to give back, in major units of the payment's currency; all that is left
    /// when absent.
    #[serde(default)]
    #[schema(value_type = Option<Amount>)]
    amount: Option<Box<RawValue>>,
    /// Why: `requested_by_customer`, `duplicate` or `fraudulent`.
    #[serde(default)]
    #[schema(value_type = Option<RefundReason>)]
    reason: Option<String>,
}

/// A page of a payment's refunds, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundList {
    /// `list`.
    #[schema(value_type = String, example = "list")]
    object: &'static str,
    /// The refunds.
    data: Vec<RefundView>,
    /// Whether older refunds follow (pass the last `id` as `starting_after`).
    has_more: bool,
}

/// The parameters of `GET /v1/payments/{id}/refunds`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RefundListParams {
    /// How many, from 1 to 100 (default 10).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// A refund `id` of this payment: the page starts after it (the next older one).
    starting_after: Option<String>,
}

fn reason_of(raw: Option<&str>) -> Result<Option<RefundReason>, FieldError> {
    raw.map(|raw| {
        serde_json::from_value(serde_json::Value::String(raw.to_owned())).map_err(|_| {
            FieldError::new(
                "reason",
                "must be requested_by_customer, duplicate or fraudulent",
            )
        })
    })
    .transpose()
}

fn nothing_left(payment: &Payment) -> ApiError {
    ApiError::AmountTooLarge(format!(
        "only {} {} of this payment is left to refund",
        decimal(payment.refundable_minor(), &payment.currency),
        payment.currency
    ))
}

/// `POST /v1/payments/{id}/refunds` → 202 with the refund and `Location`.
#[utoipa::path(
    post,
    path = "/v1/payments/{id}/refunds",
    tag = "refunds",
    operation_id = "create_refund",
    summary = "Refund a payment",
    description = "Gives back all (no `amount`) or part of a `succeeded` payment: 202 with the refund (`pending`) and its `Location`; the provider's answer makes it `succeeded` or `failed` (a failed refund's amount can be refunded again). Refunds never add up to more than was captured, however many run at once. Idempotent by `Idempotency-Key`, as payment creation.",
    params(("id" = String, Path, description = "The payment's id (`pay_...`)"), IdempotencyKeyHeader),
    request_body = CreateRefund,
    responses(
        (status = 202, description = "Accepted: the refund, pending", body = RefundView,
            headers(("Location" = String, description = "Where the refund can be read"),
                    ("Idempotent-Replayed" = String, description = "`true` when this is the saved response of an earlier request with the same key")),
            links(("get_refund" = (operation_id = "get_refund", parameters(("id" = "$response.body#/id")), description = "Read the refund")))),
        (status = 400, description = "`missing_idempotency_key`, `invalid_idempotency_key`: the Idempotency-Key header is absent, or not 1-255 printable ASCII characters"),
        (status = 404, description = "`not_found`: no such payment, or another principal's"),
        (status = 409, description = "`invalid_state`, `idempotency_key_in_use`: the payment is not `succeeded`, or a request with this key is still running (retry after `Retry-After`)",
            headers(("Retry-After" = u32, description = "Seconds to wait (idempotency_key_in_use)"))),
        (status = 422, description = "`amount_too_large`, `validation_failed`, `idempotency_key_reused`: more than is left to refund, a field is not acceptable, or the key was used for a different request"),
    ),
    security(("bearer" = ["payments:write"]), ("oauth2" = ["payments:write"]))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Authenticated,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    body: Result<JsonBytes<CreateRefund>, common::Problem>,
) -> Result<Response, ApiError> {
    caller.require_scope(WRITE)?;
    let key = crate::idempotency::Key::from_headers(&headers)?;
    let JsonBytes(request, body) = body?;
    let mut payment = visible(&state, &caller, &id).await?;
    let mut errors = Vec::new();
    let amount = request
        .amount
        .as_deref()
        .map(|raw| amount_of(raw, &payment.currency, "amount"))
        .transpose()
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let reason = reason_of(request.reason.as_deref())
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let lock = match begin_or_replay(&state, &caller, key, &headers, &uri, &body).await? {
        Ok(lock) => lock,
        Err(replay) => return Ok(replay),
    };
    // "All that is left" is read, then reserved conditionally: a refund that ran in between
    // makes the reservation fail, and the rest is read again.
    for _ in 0..3 {
        let amount_minor = amount.unwrap_or_else(|| payment.refundable_minor());
        if amount_minor <= 0 {
            lock.release(&*state.store).await;
            return Err(
                if payment.status() == crate::domain::payment::PaymentStatus::Succeeded {
                    nothing_left(&payment)
                } else {
                    ApiError::InvalidState(payment.status())
                },
            );
        }
        let refund = Refund::new(&payment, amount_minor, reason, Utc::now());
        let json = refund.to_json().to_string();
        let created = state
            .store
            .create_refund(&refund, Some(lock.response(202, &json)))
            .await;
        match created {
            Ok(RefundCreated::Created(_)) => {
                state.wake.work_accepted();
                tracing::info!(refund_id = %refund.id, payment_id = %id, amount_minor, "refund accepted");
                return Ok(json_response(
                    StatusCode::ACCEPTED,
                    json,
                    &headers,
                    Some(&refund.id),
                ));
            }
            Ok(RefundCreated::TooLarge(current))
                if amount.is_none() && current.refundable_minor() > 0 =>
            {
                payment = current;
            }
            Ok(RefundCreated::TooLarge(current)) => {
                lock.release(&*state.store).await;
                return Err(nothing_left(&current));
            }
            Ok(RefundCreated::NotRefundable(current)) => {
                lock.release(&*state.store).await;
                return Err(ApiError::InvalidState(current.status()));
            }
            Ok(RefundCreated::NoPayment) => {
                lock.release(&*state.store).await;
                return Err(ApiError::NotFound);
            }
            Err(error) => return Err(lock.abandon(&*state.store, error).await.into()),
        }
    }
    lock.release(&*state.store).await;
    Err(ApiError::Conflict(
        "other refunds of this payment kept changing what is left; retry".into(),
    ))
}

/// The refund if the caller may see it (its payment's owner, or `payments:admin`); else 404.
async fn visible_refund(
    state: &AppState,
    caller: &Authenticated,
    id: &str,
) -> Result<Refund, ApiError> {
    let refund = state
        .store
        .refund(id)
        .await?
        .ok_or(ApiError::NoSuchRefund)?;
    if refund.owner == caller.0.sub || caller.0.has_scope(ADMIN) {
        Ok(refund)
    } else {
        Err(ApiError::NoSuchRefund)
    }
}

/// `GET /v1/refunds/{id}`.
#[utoipa::path(
    get,
    path = "/v1/refunds/{id}",
    tag = "refunds",
    operation_id = "get_refund",
    summary = "Read a refund",
    params(("id" = String, Path, description = "The refund's id (`re_...`)")),
    responses(
        (status = 200, description = "The refund", body = RefundView),
        (status = 404, description = "`not_found`: no such refund, or another principal's"),
    ),
    security(("bearer" = ["payments:read"]), ("oauth2" = ["payments:read"]))
)]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<RefundView>, ApiError> {
    caller.require_scope(READ)?;
    Ok(Json(visible_refund(&state, &caller, &id).await?.view()))
}

/// `GET /v1/payments/{id}/refunds` → newest first, `{"data","has_more"}`.
#[utoipa::path(
    get,
    path = "/v1/payments/{id}/refunds",
    tag = "refunds",
    operation_id = "list_refunds",
    summary = "List a payment's refunds",
    description = "The payment's refunds, newest first, a page at a time: pass the last `id` of a page as `starting_after` for the next.",
    params(("id" = String, Path, description = "The payment's id (`pay_...`)"), RefundListParams),
    responses(
        (status = 200, description = "A page of refunds", body = RefundList),
        (status = 404, description = "`not_found`: no such payment, or another principal's"),
    ),
    security(("bearer" = ["payments:read"]), ("oauth2" = ["payments:read"]))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    Query(params): Query<RefundListParams>,
) -> Result<Json<RefundList>, ApiError> {
    caller.require_scope(READ)?;
    let limit = page_limit(params.limit.as_deref())?;
    let payment = visible(&state, &caller, &id).await?;
    let before = match &params.starting_after {
        None => None,
        Some(cursor) => match state.store.refund(cursor).await? {
            Some(refund) if refund.payment_id == payment.id => Some((refund.created_at, refund.id)),
            _ => {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "starting_after",
                    "no such refund of this payment",
                )]));
            }
        },
    };
    let rows = state
        .store
        .list_refunds(&payment.id, before, limit + 1)
        .await?;
    let (page, has_more) = one_page(rows, limit);
    Ok(Json(RefundList {
        object: "list",
        data: page.iter().map(Refund::view).collect(),
        has_more,
    }))
}
