//! Error responses the framework makes without a body of ours (axum's 404, 405, 413 ...) as
//! RFC 9457 problems.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::problem::{PROBLEM_JSON, Problem};

/// Error responses that are neither JSON nor an HTML page of ours (framework defaults are
/// plain text or empty) become problem+json, keeping headers such as `Allow` and
/// `Retry-After`.
pub(super) fn problem_for_bare_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_ours(response.headers()) {
        return response;
    }
    let kept: Vec<(HeaderName, HeaderValue)> = response
        .headers()
        .iter()
        .filter(|(name, _)| {
            [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE].contains(name)
        })
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let mut problem = Problem::from_status(status).into_response();
    problem.headers_mut().extend(kept);
    problem
}

fn is_ours(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with(PROBLEM_JSON) || ct.contains("json") || ct.starts_with("text/html")
        })
}
