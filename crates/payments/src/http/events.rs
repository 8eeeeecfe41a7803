//! `GET /v1/events?after=&limit=`: the event feed, oldest first, as CloudEvents. A principal
//! sees the events of its own payments; `payments:admin` sees all.

use axum::extract::State;
use common::auth::Authenticated;
use common::extract::{Json, Query};
use common::problem::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::payments::{ADMIN, READ};
use super::{ApiError, AppState};
use crate::domain::events::CloudEvent;

/// The parameters of `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedParams {
    /// The cursor: the `next` of the previous page (absent: from the beginning).
    #[param(value_type = Option<String>, pattern = "^[0-9]+$", example = "0")]
    after: Option<String>,
    /// How many, from 1 to 500 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
}

/// A page of the event feed, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// CloudEvents 1.0, oldest first.
    #[schema(value_type = Vec<CloudEvent>)]
    data: Vec<serde_json::Value>,
    /// Whether more events follow at once.
    has_more: bool,
    /// The cursor to pass as `after` for the following page (the same one when there is
    /// nothing new yet).
    #[schema(example = "42")]
    next: String,
}

/// The feed page: `{"data": [...], "has_more": bool, "next": "<cursor>"}`. `next` is the cursor
/// to pass as `after` for the following page (the same one when there is nothing new yet).
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    operation_id = "list_events",
    summary = "Read the event feed",
    description = "Every state change of the caller's payments (everyone's with `payments:admin`) as CloudEvents, oldest first, from a cursor: the same events that are published to NATS, for consumers without it.",
    params(FeedParams),
    responses((status = 200, description = "A page of events", body = EventPage)),
    security(("bearer" = ["payments:read"]), ("oauth2" = ["payments:read"]))
)]
pub async fn feed(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(params): Query<FeedParams>,
) -> Result<Json<EventPage>, ApiError> {
    caller.require_scope(READ)?;
    let mut errors = Vec::new();
    let limit = match params.limit.as_deref().map(str::parse::<i64>) {
        None => 50,
        Some(Ok(limit)) if (1..=500).contains(&limit) => limit,
        Some(_) => {
            errors.push(FieldError::new(
                "limit",
                "must be a whole number from 1 to 500",
            ));
            0
        }
    };
    let after = match params.after.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(after)) if after >= 0 => after,
        Some(_) => {
            errors.push(FieldError::new(
                "after",
                "must be a cursor returned as `next` by this feed",
            ));
            0
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let owner = (!caller.0.has_scope(ADMIN)).then_some(caller.0.sub.as_str());
    let mut page = state.store.events_page(owner, after, limit + 1).await?;
    let has_more = page.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    page.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = page.last().map_or(after, |(seq, _)| *seq);
    Ok(Json(EventPage {
        data: page.into_iter().map(|(_, event)| event).collect(),
        has_more,
        next: next.to_string(),
    }))
}
