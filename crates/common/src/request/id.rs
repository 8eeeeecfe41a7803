//! The request id: the caller's `X-Request-ID` when it is sane, else a new UUIDv7; and the
//! id of the request a task is serving.

use http::HeaderName;

use super::RequestContext;

/// The header carrying the request id, in and out.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The request the task serves (set by [`super::Observation::scope`]).
    pub(super) static CURRENT: RequestContext;
}

/// The id of the request being served by this task, if any.
pub fn current_request_id() -> Option<String> {
    CURRENT.try_with(|context| context.request_id.clone()).ok()
}

/// Whether a caller-supplied request id is worth keeping: 1–128 characters of
/// `A-Z a-z 0-9 - _ . : /+=`, so it is safe in logs and headers.
pub fn is_sane_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}

/// A new request id: a UUIDv7 (time-ordered), hyphenated.
pub(super) fn new_request_id() -> String {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    // Without the process-wide context `Uuid::now_v7` locks to order ids made in the same
    // millisecond: request ids need to be unique, not ordered within a millisecond.
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let timestamp = uuid::Timestamp::from_unix(
        uuid::NoContext,
        since_epoch.as_secs(),
        since_epoch.subsec_nanos(),
    );
    uuid::Uuid::new_v7(timestamp)
        .hyphenated()
        .encode_lower(&mut text)
        .to_owned()
}
