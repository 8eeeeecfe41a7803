//! Payment routes: create (idempotent, 202), read, list, cancel, capture.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use common::auth::Authenticated;
use common::extract::{Json, JsonBytes, Path, Query};
use common::problem::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState};
use crate::domain::events::state_changed;
use crate::domain::money::{Money, chargeable_currencies, parse_currency};
use crate::domain::payment::{
    CaptureMethod, DEFAULT_PAYMENT_METHOD, PAYMENT_METHODS, Payment, PaymentStatus, PaymentView,
};
use crate::idempotency::{self, Begun, KeyError, Lock};
use crate::processor::{release_at_provider, within};

pub(super) const READ: &str = "payments:read";
pub(super) const WRITE: &str = "payments:write";
pub(super) const ADMIN: &str = "payments:admin";

/// The body of `POST /v1/payments`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({
    "amount": "100.00",
    "currency": "USD",
    "description": "Order 1042",
    "payment_method": "pm_card_visa"
}))]
pub struct CreatePayment {
    /// The amount in major units, converted exactly (never through a float) to the currency's
    /// minor units: more decimal places than the currency has, zero and negatives are refused.
    #[schema(value_type = Amount)]
    amount: Box<RawValue>,
    /// ISO 4217 code of a currency that can be charged (case-insensitive).
    #[schema(value_type = CurrencyCode)]
    currency: String,
    /// Free text, at most 1000 characters.
    #[serde(default)]
    #[schema(max_length = 1000, example = "Order 1042")]
    description: String,
    /// The sandbox payment method; `pm_card_visa` when absent.
    #[serde(default)]
    #[schema(value_type = Option<PaymentMethod>)]
    payment_method: Option<String>,
    /// `automatic` (default): an approved payment succeeds at once; `manual`: it is only
    /// authorized, and waits in `requires_capture` for `POST /v1/payments/{id}/capture`.
    #[serde(default)]
    #[schema(value_type = Option<CaptureMethod>)]
    capture_method: Option<String>,
}

/// An amount in major units: a JSON number (`100.5`) or a decimal string (`"100.50"`).
/// Documentation only: the handler reads the amount's exact text.
pub struct Amount;

impl utoipa::PartialSchema for Amount {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .exclusive_minimum(Some(0)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[0-9]{1,15}(\.[0-9]{1,4})?$")),
            )
            .description(Some(
                "The amount in major units, as a JSON number or a decimal string; at most as many decimal places as the currency has.",
            ))
            .examples(["100.00"])
            .into()
    }
}

impl ToSchema for Amount {}

/// An ISO 4217 code of a currency that can be charged. Documentation only.
pub struct CurrencyCode;

impl utoipa::PartialSchema for CurrencyCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(chargeable_currencies()))
            .description(Some(
                "ISO 4217 code of a currency that can be charged (case-insensitive).",
            ))
            .examples(["USD"])
            .into()
    }
}

impl ToSchema for CurrencyCode {}

/// The sandbox's payment methods: `pm_card_visa` succeeds, `pm_card_declined` and
/// `pm_card_insufficient_funds` fail, `pm_card_flaky` fails transiently a few times, then
/// succeeds; `pm_card_refund_declined` succeeds but its refunds are refused,
/// `pm_card_refund_flaky` succeeds and its refunds fail transiently a few times first.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code, clippy::enum_variant_names)]
pub enum PaymentMethod {
    /// Succeeds.
    PmCardVisa,
    /// Fails with `card_declined`.
    PmCardDeclined,
    /// Fails with `insufficient_funds`.
    PmCardInsufficientFunds,
    /// Fails transiently a few times, is retried, then succeeds.
    PmCardFlaky,
    /// Succeeds; its refunds are refused (`refund_declined`).
    PmCardRefundDeclined,
    /// Succeeds; its refunds fail transiently a few times, are retried, then succeed.
    PmCardRefundFlaky,
}

/// The `Idempotency-Key` header of a create request.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKeyHeader {
    /// 1–255 printable ASCII characters, scoped to the caller: a retry with the same key and
    /// body gets the first response again (`Idempotent-Replayed: true`); keys are kept 24 hours.
    #[serde(rename = "Idempotency-Key")]
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = "^[ -~]+$",
        example = "order-1042-attempt-1"
    )]
    idempotency_key: String,
}

/// A page of payments, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentList {
    /// `list`.
    #[schema(value_type = String, example = "list")]
    object: &'static str,
    /// The payments.
    data: Vec<PaymentView>,
    /// Whether older payments follow (pass the last `id` as `starting_after`).
    has_more: bool,
}

/// The parameters of `GET /v1/payments`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// How many, from 1 to 100 (default 10).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// A payment `id`: the page starts after it (the next older one).
    starting_after: Option<String>,
}

/// Where the payment (`pay_...`) or refund (`re_...`) can be read, through the gateway when
/// the request came through it.
fn location(headers: &HeaderMap, id: &str) -> HeaderValue {
    let prefix = headers
        .get("x-forwarded-prefix")
        .and_then(|v| v.to_str().ok())
        .filter(|p| p.starts_with('/') && !p.contains(['?', '#']))
        .unwrap_or("")
        .trim_end_matches('/');
    let collection = if id.starts_with("re_") {
        "refunds"
    } else {
        "payments"
    };
    HeaderValue::from_str(&format!("{prefix}/v1/{collection}/{id}"))
        .unwrap_or(HeaderValue::from_static("/"))
}

/// A JSON response, with `Location` pointing at `resource_id` when there is one.
pub(super) fn json_response(
    status: StatusCode,
    body: String,
    headers: &HeaderMap,
    resource_id: Option<&str>,
) -> Response {
    let mut response = (status, body).into_response();
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(id) = resource_id {
        out.insert(header::LOCATION, location(headers, id));
    }
    response
}

/// Checks the body and builds the payment it asks for.
fn new_payment(body: CreatePayment, owner: &str) -> Result<Payment, ApiError> {
    let mut errors = Vec::new();
    let currency = parse_currency(&body.currency)
        .map_err(|e| errors.push(FieldError::new(e.field, e.message)));
    let money = match (amount_text(&body.amount), &currency) {
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
    let capture_method = match body.capture_method.as_deref() {
        None | Some("automatic") => CaptureMethod::Automatic,
        Some("manual") => CaptureMethod::Manual,
        Some(_) => {
            errors.push(FieldError::new(
                "capture_method",
                "must be automatic or manual",
            ));
            CaptureMethod::Automatic
        }
    };
    if body.description.chars().count() > 1000 {
        errors.push(FieldError::new(
            "description",
            "must be at most 1000 characters",
        ));
    }
    let Some(money) = money.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    Ok(Payment::new(
        owner,
        money,
        body.description,
        method,
        capture_method,
        Utc::now(),
    ))
}

/// An amount field's exact text: a JSON number, or a decimal string.
pub(super) fn amount_text(raw: &RawValue) -> Option<String> {
    let raw = raw.get();
    if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).ok()
    } else if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Some(raw.to_owned())
    } else {
        None
    }
}

/// `raw` as minor units of `currency` (a stored payment's), or the field's error.
pub(super) fn amount_of(raw: &RawValue, currency: &str, field: &str) -> Result<i64, FieldError> {
    let text = amount_text(raw).ok_or_else(|| {
        FieldError::new(field, "must be a number or a decimal string in major units")
    })?;
    let (currency, exponent) =
        parse_currency(currency).map_err(|e| FieldError::new(field, e.message))?;
    Money::from_major(&text, currency, exponent)
        .map(|money| money.minor())
        .map_err(|e| FieldError::new(field, e.message))
}

/// How long keys live and are locked, as configured.
fn key_settings(state: &AppState) -> idempotency::Settings {
    idempotency::Settings {
        ttl: state.config.idempotency_ttl,
        lock_timeout: state.config.idempotency_lock_timeout,
    }
}

/// Claims the request's `Idempotency-Key` (scoped to the caller; the fingerprint covers
/// method, path and body), or answers with the response saved under it before.
pub(super) async fn begin_or_replay(
    state: &AppState,
    caller: &Authenticated,
    key: idempotency::Key,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
) -> Result<Result<Lock, Response>, ApiError> {
    let fingerprint = idempotency::fingerprint("POST", uri.path(), body);
    let settings = key_settings(state);
    match idempotency::begin(&*state.store, &caller.0.sub, key, &fingerprint, settings).await? {
        Begun::Run(lock) => Ok(Ok(lock)),
        Begun::Replay(replay) => {
            let status =
                StatusCode::from_u16(replay.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response =
                json_response(status, replay.body, headers, replay.payment_id.as_deref());
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(Err(response))
        }
    }
}

/// `POST /v1/payments` → 202 with the payment and `Location`; idempotent by `Idempotency-Key`
/// (scoped to the caller).
#[utoipa::path(
    post,
    path = "/v1/payments",
    tag = "payments",
    operation_id = "create_payment",
    summary = "Create a payment",
    description = "Accepts a payment for processing: 202 with the payment (`pending`) and its `Location`. Idempotent by `Idempotency-Key`: the same key and body return the first response again, byte for byte, with `Idempotent-Replayed: true`; N concurrent identical requests create one payment.",
    params(IdempotencyKeyHeader),
    request_body = CreatePayment,
    responses(
        (status = 202, description = "Accepted: the payment, pending", body = PaymentView,
            headers(("Location" = String, description = "Where the payment can be read"),
                    ("Idempotent-Replayed" = String, description = "`true` when this is the saved response of an earlier request with the same key")),
            links(
                ("get_payment" = (operation_id = "get_payment", parameters(("id" = "$response.body#/id")), description = "Read the payment")),
                ("cancel_payment" = (operation_id = "cancel_payment", parameters(("id" = "$response.body#/id")), description = "Cancel the payment"))
            )),
        (status = 400, description = "`missing_idempotency_key`, `invalid_idempotency_key`: the Idempotency-Key header is absent, or not 1-255 printable ASCII characters"),
        (status = 409, description = "`idempotency_key_in_use`: a request with this key is still running; retry after `Retry-After`",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 422, description = "`idempotency_key_reused`, `validation_failed`: the key was used for a different request, or a field is not acceptable"),
    ),
    security(("bearer" = ["payments:write"]), ("oauth2" = ["payments:write"]))
)]
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
    let response_body = payment.to_json().to_string();
    let event = state_changed(&payment, payment.created_at);

    // Most keys are new: the key, already finished with this response, and the payment are
    // one write. A live key (a retry, a concurrent duplicate, a request that died holding it)
    // goes the long way: claimed (or replayed, or refused), then the payment fenced by its lock.
    let fingerprint = idempotency::fingerprint("POST", uri.path(), &body);
    let finished = idempotency::finished(
        &caller.0.sub,
        &key,
        &fingerprint,
        key_settings(&state),
        (202, &response_body),
    );
    if !state
        .store
        .create_payment_under_new_key(&payment, &event, finished)
        .await?
    {
        let lock = match begin_or_replay(&state, &caller, key, &headers, &uri, &body).await? {
            Ok(lock) => lock,
            Err(replay) => return Ok(replay),
        };
        let saved = lock.response(202, &response_body);
        if let Err(error) = state
            .store
            .create_payment(&payment, &event, Some(saved))
            .await
        {
            return Err(lock.abandon(&*state.store, error).await.into());
        }
    }
    state.wake.work_accepted();
    tracing::info!(payment_id = %payment.id, amount_minor = payment.amount_minor, currency = %payment.currency, "payment accepted");
    Ok(json_response(
        StatusCode::ACCEPTED,
        response_body,
        &headers,
        Some(&payment.id),
    ))
}

/// The payment if the caller may see it (its owner, or `payments:admin`); else 404.
pub(super) async fn visible(
    state: &AppState,
    caller: &Authenticated,
    id: &str,
) -> Result<Payment, ApiError> {
    let payment = state.store.payment(id).await?.ok_or(ApiError::NotFound)?;
    if payment.owner == caller.0.sub || caller.0.has_scope(ADMIN) {
        Ok(payment)
    } else {
        Err(ApiError::NotFound)
    }
}

/// `GET /v1/payments/{id}`.
#[utoipa::path(
    get,
    path = "/v1/payments/{id}",
    tag = "payments",
    operation_id = "get_payment",
    summary = "Read a payment",
    params(("id" = String, Path, description = "The payment's id (`pay_...`)")),
    responses(
        (status = 200, description = "The payment", body = PaymentView),
        (status = 404, description = "`not_found`: no such payment, or another principal's"),
    ),
    security(("bearer" = ["payments:read"]), ("oauth2" = ["payments:read"]))
)]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<PaymentView>, ApiError> {
    caller.require_scope(READ)?;
    Ok(Json(visible(&state, &caller, &id).await?.view()))
}

/// `GET /v1/payments?limit=&starting_after=` → newest first, `{"data","has_more"}`.
#[utoipa::path(
    get,
    path = "/v1/payments",
    tag = "payments",
    operation_id = "list_payments",
    summary = "List payments",
    description = "The caller's payments (everyone's with `payments:admin`), newest first, a page at a time: pass the last `id` of a page as `starting_after` for the next.",
    params(ListParams),
    responses(
        (status = 200, description = "A page of payments", body = PaymentList),
    ),
    security(("bearer" = ["payments:read"]), ("oauth2" = ["payments:read"]))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(params): Query<ListParams>,
) -> Result<Json<PaymentList>, ApiError> {
    caller.require_scope(READ)?;
    let limit = page_limit(params.limit.as_deref())?;
    let before = match &params.starting_after {
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
    let page = state.store.list_payments(owner, before, limit + 1).await?;
    let (page, has_more) = one_page(page, limit);
    Ok(Json(PaymentList {
        object: "list",
        data: page.iter().map(Payment::view).collect(),
        has_more,
    }))
}

/// A page's `limit` parameter: 1 to 100, 10 when absent.
pub(super) fn page_limit(raw: Option<&str>) -> Result<i64, ApiError> {
    match raw.map(str::parse::<i64>) {
        None => Ok(10),
        Some(Ok(limit)) if (1..=100).contains(&limit) => Ok(limit),
        Some(_) => Err(ApiError::Validation(vec![FieldError::new(
            "limit",
            "must be a whole number from 1 to 100",
        )])),
    }
}

/// `rows` (fetched with `limit + 1`) cut to `limit`, and whether more follow.
pub(super) fn one_page<T>(mut rows: Vec<T>, limit: i64) -> (Vec<T>, bool) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    (rows, has_more)
}

/// `POST /v1/payments/{id}/cancel` → the canceled payment, or 409 `invalid_state`.
#[utoipa::path(
    post,
    path = "/v1/payments/{id}/cancel",
    tag = "payments",
    operation_id = "cancel_payment",
    summary = "Cancel a payment",
    description = "Cancels a `pending` payment, or releases an authorization (`requires_capture`, no capture asked for); any other status is final for this purpose (409).",
    params(("id" = String, Path, description = "The payment's id (`pay_...`)")),
    responses(
        (status = 200, description = "The canceled payment (`cancellation_reason: requested`)", body = PaymentView),
        (status = 404, description = "`not_found`: no such payment, or another principal's"),
        (status = 409, description = "`invalid_state`: the payment is neither pending nor an authorization"),
    ),
    security(("bearer" = ["payments:write"]), ("oauth2" = ["payments:write"]))
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<PaymentView>, ApiError> {
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
        Some(canceled) => {
            if payment.status() == PaymentStatus::RequiresCapture {
                state.counters.released("requested");
                let timeout = state.config.processor.provider_timeout;
                release_at_provider(&*state.provider, &canceled, timeout).await;
            }
            tracing::info!(payment_id = %id, "payment canceled");
            Ok(Json(canceled.view()))
        }
        // A processor took it between our read and our write, or a capture began.
        None => {
            let current = state.store.payment(&id).await?.ok_or(ApiError::NotFound)?;
            Err(refused_state(&current))
        }
    }
}

/// Why `payment` cannot be canceled or captured now.
fn refused_state(payment: &Payment) -> ApiError {
    if payment.status() == PaymentStatus::RequiresCapture
        && payment.capture_requested_minor.is_some()
    {
        ApiError::Conflict("a capture of this payment is already under way".into())
    } else {
        ApiError::InvalidState(payment.status())
    }
}

/// The body of `POST /v1/payments/{id}/capture` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"amount_to_capture": "60.00"}))]
pub struct CapturePayment {
    /// How much of the authorization to take, in major units (at most what was authorized;
    /// the rest is released). All of it when absent.
    #[serde(default)]
    #[schema(value_type = Option<Amount>)]
    amount_to_capture: Option<Box<RawValue>>,
}

/// `POST /v1/payments/{id}/capture` → 200 with the succeeded payment.
#[utoipa::path(
    post,
    path = "/v1/payments/{id}/capture",
    tag = "payments",
    operation_id = "capture_payment",
    summary = "Capture an authorization",
    description = "Takes the money of a payment created with `capture_method: manual` and now `requires_capture`: all of it, or `amount_to_capture` (once; the rest is released). 200 with the `succeeded` payment. If the provider does not confirm in time, 202 with the payment still `requires_capture`: the capture is finished in the background (`payments.payment.succeeded` follows) and is never asked twice. An optional `Idempotency-Key` makes a retry replay the first answer.",
    params(
        ("id" = String, Path, description = "The payment's id (`pay_...`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Optional: a retry with the same key and body gets the first response again"),
    ),
    request_body(content = Option<CapturePayment>, description = "Optional"),
    responses(
        (status = 200, description = "Captured: the payment, succeeded", body = PaymentView),
        (status = 202, description = "The provider has not confirmed yet: the capture finishes in the background", body = PaymentView),
        (status = 400, description = "`invalid_idempotency_key`: an Idempotency-Key that is not 1-255 printable ASCII characters"),
        (status = 404, description = "`not_found`: no such payment, or another principal's"),
        (status = 409, description = "`invalid_state`, `idempotency_key_in_use`: the payment is not `requires_capture`, or a capture is already under way; or a request with this key is still running",
            headers(("Retry-After" = u32, description = "Seconds to wait (idempotency_key_in_use)"))),
        (status = 422, description = "`amount_too_large`, `validation_failed`, `idempotency_key_reused`: more than was authorized, not an amount, or the key was used for a different request"),
    ),
    security(("bearer" = ["payments:write"]), ("oauth2" = ["payments:write"]))
)]
pub async fn capture(
    State(state): State<AppState>,
    caller: Authenticated,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require_scope(WRITE)?;
    let key = match idempotency::Key::from_headers(&headers) {
        Ok(key) => Some(key),
        Err(KeyError::Missing) => None,
        Err(error) => return Err(error.into()),
    };
    let request = optional_json::<CapturePayment>(&headers, &body)?;
    let payment = visible(&state, &caller, &id).await?;
    let amount = match &request.amount_to_capture {
        None => payment.amount_minor,
        Some(raw) => amount_of(raw, &payment.currency, "amount_to_capture")
            .map_err(|error| ApiError::Validation(vec![error]))?,
    };
    if amount > payment.amount_minor {
        return Err(ApiError::AmountTooLarge(format!(
            "amount_to_capture is more than the {} {} authorized",
            payment.view().amount,
            payment.currency
        )));
    }
    let lock = match key {
        None => None,
        Some(key) => match begin_or_replay(&state, &caller, key, &headers, &uri, &body).await? {
            Ok(lock) => Some(lock),
            Err(replay) => return Ok(replay),
        },
    };
    let now = Utc::now();
    let lease = state.config.processor.lease;
    let begun = match state.store.begin_capture(&id, amount, now, lease).await {
        Ok(Some(begun)) => begun,
        Ok(None) => {
            release(&state, lock).await;
            let current = state.store.payment(&id).await?.ok_or(ApiError::NotFound)?;
            return Err(refused_state(&current));
        }
        Err(error) => {
            release(&state, lock).await;
            return Err(error.into());
        }
    };
    let attempt = u32::try_from(begun.attempts).unwrap_or(1);
    let timeout = state.config.processor.provider_timeout;
    if let Err(error) = within(timeout, state.provider.capture(&begun, amount, attempt)).await {
        // Not confirmed: a worker asks the provider once this request's lease runs out.
        tracing::warn!(payment_id = %id, %error, "capture not confirmed; it finishes in the background");
        state.counters.capture("unconfirmed");
        release(&state, lock).await;
        let body = begun.to_json().to_string();
        return Ok(json_response(StatusCode::ACCEPTED, body, &headers, None));
    }
    // The response is saved in the transaction that records the capture: the payment as
    // that update leaves it.
    let finished_at = Utc::now();
    let mut captured = begun.clone();
    captured.status = PaymentStatus::Succeeded.as_str().to_owned();
    captured.amount_captured_minor = amount;
    captured.capture_requested_minor = None;
    captured.updated_at = finished_at;
    let body = captured.to_json().to_string();
    let saved = lock.as_ref().map(|lock| lock.response(200, &body));
    match state.store.finish_capture(&id, finished_at, saved).await? {
        Some(_) => {
            state.counters.capture("captured");
            tracing::info!(payment_id = %id, amount_minor = amount, "payment captured");
            Ok(json_response(StatusCode::OK, body, &headers, None))
        }
        // A worker confirmed it first (this request outlived its lease).
        None => {
            let current = state.store.payment(&id).await?.ok_or(ApiError::NotFound)?;
            Ok(json_response(
                StatusCode::OK,
                current.to_json().to_string(),
                &headers,
                None,
            ))
        }
    }
}

/// Frees a key whose request wrote nothing, so a retry runs again.
pub(super) async fn release(state: &AppState, lock: Option<Lock>) {
    if let Some(lock) = lock {
        lock.release(&*state.store).await;
    }
}

/// An optional JSON body: empty is `T::default()`; otherwise it must be JSON.
fn optional_json<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let essence = v.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence.to_ascii_lowercase().ends_with("+json")
        });
    if !json {
        return Err(common::Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        )
        .into());
    }
    serde_json::from_slice(body).map_err(|error| {
        common::Problem::malformed(format!("the body is not the expected JSON: {error}")).into()
    })
}
