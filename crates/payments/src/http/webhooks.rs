//! Webhook endpoint routes (`payments:admin`): register, read, list, change, delete, rotate
//! the secret; the delivery log; redeliver an event.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use common::auth::Authenticated;
use common::extract::{Json, Path, Query};
use common::problem::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::payments::{ADMIN, one_page, page_limit};
use super::{ApiError, AppState};
use crate::domain::webhook::{DeliveryView, EVENT_TYPES, EndpointView, WebhookEndpoint};
use crate::webhooks::{check_resolves, check_url};

/// The body of `POST /v1/webhook_endpoints`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({
    "url": "https://shop.example.com/webhooks/payments",
    "enabled_events": ["payments.payment.succeeded", "payments.refund.succeeded"],
    "description": "the shop"
}))]
pub struct CreateEndpoint {
    /// Where deliveries are POSTed: `https`, a public address.
    url: String,
    /// Event types (`payments.payment.succeeded`, ...) or `["*"]` for every event.
    enabled_events: Vec<String>,
    /// Free text, at most 1000 characters.
    #[serde(default)]
    description: String,
}

/// The body of `PATCH /v1/webhook_endpoints/{id}`: only what changes.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct UpdateEndpoint {
    /// A new URL (checked like at registration).
    url: Option<String>,
    /// New event types.
    enabled_events: Option<Vec<String>>,
    /// A new description.
    description: Option<String>,
    /// `true` stops deliveries (pending ones fail); `false` enables the endpoint again.
    disabled: Option<bool>,
}

/// The body of `POST /v1/webhook_endpoints/{id}/rotate_secret` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RotateSecret {
    /// How long the old secret keeps signing beside the new one, in seconds (default
    /// `PAYMENTS_WEBHOOK_SECRET_OVERLAP_HOURS`; 0 ends it at once).
    #[schema(minimum = 0, maximum = 604_800)]
    overlap_seconds: Option<u64>,
}

/// A page of webhook endpoints, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    /// `list`.
    #[schema(value_type = String, example = "list")]
    object: &'static str,
    /// The endpoints (without their secrets).
    data: Vec<EndpointView>,
    /// Whether older endpoints follow (pass the last `id` as `starting_after`).
    has_more: bool,
}

/// The answer to `DELETE /v1/webhook_endpoints/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedEndpoint {
    /// The endpoint's id.
    id: String,
    /// `webhook_endpoint`.
    #[schema(value_type = String, example = "webhook_endpoint")]
    object: &'static str,
    /// `true`.
    deleted: bool,
}

/// A page of an endpoint's delivery log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    /// `list`.
    #[schema(value_type = String, example = "list")]
    object: &'static str,
    /// The deliveries, each with its attempts.
    data: Vec<DeliveryView>,
    /// Whether older deliveries follow (pass `next` as `before`).
    has_more: bool,
    /// The cursor of the next (older) page.
    next: Option<String>,
}

/// The parameters of the lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EndpointListParams {
    /// How many, from 1 to 100 (default 10).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// An endpoint `id`: the page starts after it.
    starting_after: Option<String>,
}

/// The parameters of the delivery log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryListParams {
    /// How many, from 1 to 100 (default 10).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The `next` of the previous page.
    before: Option<String>,
}

fn check_events(events: &[String], errors: &mut Vec<FieldError>) {
    if events.is_empty() {
        errors.push(FieldError::new(
            "enabled_events",
            "must name at least one event type, or *",
        ));
    } else if events.iter().any(|e| e == "*") && events.len() > 1 {
        errors.push(FieldError::new(
            "enabled_events",
            "* (every event) stands alone",
        ));
    } else if let Some(unknown) = events
        .iter()
        .find(|e| *e != "*" && !EVENT_TYPES.contains(&e.as_str()))
    {
        errors.push(FieldError::new(
            "enabled_events",
            format!(
                "{unknown:?} is not an event type ({})",
                EVENT_TYPES.join(", ")
            ),
        ));
    }
}

async fn check_endpoint_url(state: &AppState, url: &str, errors: &mut Vec<FieldError>) {
    let settings = &state.config.webhooks;
    match check_url(url, settings) {
        Err(reason) => errors.push(FieldError::new("url", reason)),
        Ok(parsed) => {
            if let Err(reason) = check_resolves(&parsed, settings).await {
                errors.push(FieldError::new("url", reason));
            }
        }
    }
}

fn check_description(description: &str, errors: &mut Vec<FieldError>) {
    if description.chars().count() > 1000 {
        errors.push(FieldError::new(
            "description",
            "must be at most 1000 characters",
        ));
    }
}

async fn endpoint(state: &AppState, id: &str) -> Result<WebhookEndpoint, ApiError> {
    state
        .store
        .webhook_endpoint(id)
        .await?
        .ok_or(ApiError::NoSuchEndpoint)
}

/// `POST /v1/webhook_endpoints` → 201 with the endpoint and its secret (shown once).
#[utoipa::path(
    post,
    path = "/v1/webhook_endpoints",
    tag = "webhooks",
    operation_id = "create_webhook_endpoint",
    summary = "Register a webhook endpoint",
    description = "Every event of the subscribed types is POSTed to `url` as its CloudEvent JSON, signed per Standard Webhooks with the secret returned here (once). The URL must be `https` and must not reach a loopback, private, link-local or metadata address (checked now and at every delivery), unless the operator allows them.",
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "Registered: the endpoint, with its `secret`", body = EndpointView),
        (status = 422, description = "`validation_failed`: a URL that is not allowed, an unknown event type"),
    ),
    security(("bearer" = ["payments:admin"]), ("oauth2" = ["payments:admin"]))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Authenticated,
    Json(body): Json<CreateEndpoint>,
) -> Result<Response, ApiError> {
    caller.require_scope(ADMIN)?;
    let mut errors = Vec::new();
    check_endpoint_url(&state, &body.url, &mut errors).await;
    check_events(&body.enabled_events, &mut errors);
    check_description(&body.description, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let endpoint =
        WebhookEndpoint::new(body.url, body.description, &body.enabled_events, Utc::now());
    state.store.create_webhook_endpoint(&endpoint).await?;
    tracing::info!(endpoint_id = %endpoint.id, events = %endpoint.enabled_events, "webhook endpoint registered");
    Ok((StatusCode::CREATED, Json(endpoint.view(true))).into_response())
}

/// `GET /v1/webhook_endpoints`.
#[utoipa::path(
    get,
    path = "/v1/webhook_endpoints",
    tag = "webhooks",
    operation_id = "list_webhook_endpoints",
    summary = "List webhook endpoints",
    params(EndpointListParams),
    responses((status = 200, description = "A page of endpoints, newest first", body = EndpointList)),
    security(("bearer" = ["payments:admin"]), ("oauth2" = ["payments:admin"]))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(params): Query<EndpointListParams>,
) -> Result<Json<EndpointList>, ApiError> {
    caller.require_scope(ADMIN)?;
    let limit = page_limit(params.limit.as_deref())?;
    let before = match &params.starting_after {
        None => None,
        Some(id) => match state.store.webhook_endpoint(id).await? {
            Some(cursor) => Some((cursor.created_at, cursor.id)),
            None => {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "starting_after",
                    "no such webhook endpoint",
                )]));
            }
        },
    };
    let rows = state
        .store
        .list_webhook_endpoints(before, limit + 1)
        .await?;
    let (page, has_more) = one_page(rows, limit);
    Ok(Json(EndpointList {
        object: "list",
        data: page.iter().map(|e| e.view(false)).collect(),
        has_more,
    }))
}

/// `GET /v1/webhook_endpoints/{id}`.
#[utoipa::path(
    get,
    path = "/v1/webhook_endpoints/{id}",
    tag = "webhooks",
    operation_id = "get_webhook_endpoint",
    summary = "Read a webhook endpoint",
    params(("id" = String, Path, description = "The endpoint's id (`we_...`)")),
    responses(
        (status = 200, description = "The endpoint (without its secret)", body = EndpointView),
        (status = 404, description = "`not_found`: no such endpoint"),
    ),
    security(("bearer" = ["payments:admin"]), ("oauth2" = ["payments:admin"]))
)]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, ApiError> {
    caller.require_scope(ADMIN)?;
    Ok(Json(endpoint(&state, &id).await?.view(false)))
}

/// `PATCH /v1/webhook_endpoints/{id}`.
#[utoipa::path(
    patch,
    path = "/v1/webhook_endpoints/{id}",
    tag = "webhooks",
    operation_id = "update_webhook_endpoint",
    summary = "Change a webhook endpoint",
    description = "Changes the URL, the event types or the description, or disables (`disabled: true`) or enables again (`disabled: false`) the endpoint.",
    params(("id" = String, Path, description = "The endpoint's id (`we_...`)")),
    request_body = UpdateEndpoint,
    responses(
        (status = 200, description = "The endpoint as changed", body = EndpointView),
        (status = 404, description = "`not_found`: no such endpoint"),
        (status = 422, description = "`validation_failed`: a URL that is not allowed, an unknown event type"),
    ),
    security(("bearer" = ["payments:admin"]), ("oauth2" = ["payments:admin"]))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    Json(body): Json<UpdateEndpoint>,
) -> Result<Json<EndpointView>, ApiError> {
    caller.require_scope(ADMIN)?;
    let mut endpoint = endpoint(&state, &id).await?;
    let mut errors = Vec::new();
    if let Some(url) = &body.url {
        check_endpoint_url(&state, url, &mut errors).await;
    }
    if let Some(events) = &body.enabled_events {
        check_events(events, &mut errors);
    }
    if let Some(description) = &body.description {
        check_description(description, &mut errors);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let now = Utc::now();
    if let Some(url) = body.url {
        endpoint.url = url;
    }
    if let Some(events) = body.enabled_events {
        endpoint.enabled_events = events.join(" ");
    }
    if let Some(description) = body.description {
        endpoint.description = description;
    }
    match body.disabled {
        Some(true) if endpoint.is_enabled() => {
            endpoint.status = "disabled".into();
            endpoint.disabled_reason = Some("disabled by request".into());
        }
        Some(false) => {
            endpoint.status = "enabled".into();
            endpoint.disabled_reason = None;
            endpoint.failing_since = None;
        }
        _ => {}
    }
    endpoint.updated_at = now;
    if !state.store.update_webhook_endpoint(&endpoint).await? {
        return Err(ApiError::NoSuchEndpoint);
    }
    tracing::info!(endpoint_id = %endpoint.id, status = %endpoint.status, "webhook endpoint changed");
    Ok(Json(endpoint.view(false)))
}

/// `DELETE /v1/webhook_endpoints/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/webhook_endpoints/{id}",
    tag = "webhooks",
    operation_id = "delete_webhook_endpoint",
    summary = "Delete a webhook endpoint",
    description = "Deletes the endpoint, its pending deliveries and its delivery log.",
    params(("id" = String, Path, description = "The endpoint's id (`we_...`)")),
    responses(
        (status = 200, description = "Deleted", body = DeletedEndpoint),
        (status = 404, description = "`not_found`: no such endpoint"),
    ),
    security(("bearer" = ["payments:admin"]), ("oauth2" = ["payments:admin"]))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<DeletedEndpoint>, ApiError> {
    caller.require_scope(ADMIN)?;
    if !state.store.delete_webhook_endpoint(&id).await? {
        return Err(ApiError::NoSuchEndpoint);
    }
    tracing::info!(endpoint_id = %id, "webhook endpoint deleted");
    Ok(Json(DeletedEndpoint {
        id,
        object: "webhook_endpoint",
        deleted: true,
    }))
}

/// `POST /v1/webhook_endpoints/{id}/rotate_secret` → the endpoint with its new secret.
#[utoipa::path(
    post,
    path = "/v1/webhook_endpoints/{id}/rotate_secret",
    tag = "webhooks",
    operation_id = "rotate_webhook_secret",
    summary = "Rotate an endpoint's signing secret",
    description = "Makes a new secret (returned once). Until `previous_secret_expires_at` every delivery carries two signatures, one per secret, so the receiver can switch when it likes.",
    params(("id" = String, Path, description = "The endpoint's id (`we_...`)")),
    request_body(content = Option<RotateSecret>, description = "Optional"),
    responses(
        (status = 200, description = "The endpoint, with its new `secret`", body = EndpointView),
        (status = 404, description = "`not_found`: no such endpoint"),
        (status = 422, description = "`validation_failed`: an overlap over 7 days"),
    ),
    security(("bearer" = ["payments:admin"]), ("oauth2" = ["payments:admin"]))
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    body: Option<Json<RotateSecret>>,
) -> Result<Json<EndpointView>, ApiError> {
    caller.require_scope(ADMIN)?;
    let request = body.map(|Json(body)| body).unwrap_or_default();
    let overlap = match request.overlap_seconds {
        None => state.config.webhooks.secret_overlap,
        Some(seconds) if seconds <= 604_800 => std::time::Duration::from_secs(seconds),
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "overlap_seconds",
                "must be at most 604800 (7 days)",
            )]));
        }
    };
    let mut endpoint = endpoint(&state, &id).await?;
    let now = Utc::now();
    let new = crate::domain::webhook::new_secret();
    endpoint.previous_secret = Some(std::mem::replace(&mut endpoint.secret, new));
    endpoint.previous_secret_until =
        Some(now + chrono::Duration::from_std(overlap).unwrap_or(chrono::Duration::zero()));
    endpoint.updated_at = now;
    if !state.store.update_webhook_endpoint(&endpoint).await? {
        return Err(ApiError::NoSuchEndpoint);
    }
    tracing::info!(endpoint_id = %endpoint.id, overlap_seconds = overlap.as_secs(), "webhook secret rotated");
    Ok(Json(endpoint.view(true)))
}

/// `GET /v1/webhook_endpoints/{id}/deliveries` → the delivery log, newest first.
#[utoipa::path(
    get,
    path = "/v1/webhook_endpoints/{id}/deliveries",
    tag = "webhooks",
    operation_id = "list_webhook_deliveries",
    summary = "An endpoint's delivery log",
    description = "Each event sent (or to be sent) to the endpoint, newest first, with every attempt: when, the status code, the latency, the error, and when the next try is due.",
    params(("id" = String, Path, description = "The endpoint's id (`we_...`)"), DeliveryListParams),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryList),
        (status = 404, description = "`not_found`: no such endpoint"),
    ),
    security(("bearer" = ["payments:admin"]), ("oauth2" = ["payments:admin"]))
)]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    Query(params): Query<DeliveryListParams>,
) -> Result<Json<DeliveryList>, ApiError> {
    caller.require_scope(ADMIN)?;
    let limit = page_limit(params.limit.as_deref())?;
    let before = match params.before.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(cursor)) => Some(cursor),
        Some(Err(_)) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "before",
                "must be the next of an earlier page",
            )]));
        }
    };
    endpoint(&state, &id).await?;
    let (rows, attempts) = state
        .store
        .webhook_deliveries(&id, before, limit + 1)
        .await?;
    let (page, has_more) = one_page(rows, limit);
    Ok(Json(DeliveryList {
        object: "list",
        data: page.iter().map(|d| d.view(&attempts)).collect(),
        has_more,
        next: page.last().filter(|_| has_more).map(|d| d.id.to_string()),
    }))
}

/// `POST /v1/webhook_endpoints/{id}/deliveries/{event_id}/redeliver` → 202.
#[utoipa::path(
    post,
    path = "/v1/webhook_endpoints/{id}/deliveries/{event_id}/redeliver",
    tag = "webhooks",
    operation_id = "redeliver_webhook",
    summary = "Send an event to an endpoint again",
    description = "Queues the event for the endpoint at once, whatever became of earlier deliveries (the receiver sees the same `webhook-id`).",
    params(
        ("id" = String, Path, description = "The endpoint's id (`we_...`)"),
        ("event_id" = String, Path, description = "The event's id (`evt_...`)"),
    ),
    responses(
        (status = 202, description = "Queued: the delivery, pending", body = DeliveryView),
        (status = 404, description = "`not_found`: no such endpoint, or no such event kept"),
    ),
    security(("bearer" = ["payments:admin"]), ("oauth2" = ["payments:admin"]))
)]
pub async fn redeliver(
    State(state): State<AppState>,
    caller: Authenticated,
    Path((id, event_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require_scope(ADMIN)?;
    let endpoint = endpoint(&state, &id).await?;
    let delivery = state
        .store
        .redeliver(&endpoint.id, &event_id, Utc::now())
        .await?
        .ok_or(ApiError::NoSuchEvent)?;
    state.wake.events_written();
    tracing::info!(endpoint_id = %endpoint.id, event_id, "webhook redelivery queued");
    Ok((StatusCode::ACCEPTED, Json(delivery.view(&[]))).into_response())
}
