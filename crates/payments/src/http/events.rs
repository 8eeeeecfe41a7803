//! `GET /v1/events?after=&limit=`: the event feed, oldest first, as CloudEvents. A principal
//! sees the events of its own payments; `payments:admin` sees all.

use std::collections::HashMap;

use axum::extract::State;
use common::auth::Authenticated;
use common::extract::{Json, Query};
use common::problem::FieldError;

use super::payments::{ADMIN, READ};
use super::{ApiError, AppState};

/// The feed page: `{"data": [...], "has_more": bool, "next": "<cursor>"}`. `next` is the cursor
/// to pass as `after` for the following page (the same one when there is nothing new yet).
pub async fn feed(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require_scope(READ)?;
    let mut errors = Vec::new();
    let limit = match params.get("limit").map(|l| l.parse::<i64>()) {
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
    let after = match params.get("after").map(|a| a.parse::<i64>()) {
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
    Ok(Json(serde_json::json!({
        "data": page.into_iter().map(|(_, event)| event).collect::<Vec<_>>(),
        "has_more": has_more,
        "next": next.to_string(),
    })))
}
