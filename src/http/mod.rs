//! The control plane's HTTP plumbing that the voice API's routes ([`crate::control`]) and the
//! cluster's proxy ([`crate::cluster`]) share: body types, request-size and id checks, hyper's
//! I/O over glommio ([`io`]) and the metric families of `GET /metrics` ([`exposition`]).

pub mod exposition;
pub mod io;

use bytes::Bytes;
use hyper::header;

use crate::sfu::api::ApiError;

/// Response body type of every route (JSON or an SSE stream).
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;
/// Request body as a route reads it: as received, or already read (cluster mode reads a POST
/// body to find its channel).
pub type RequestBody = http_body_util::Either<hyper::body::Incoming, http_body_util::Full<Bytes>>;

/// Request bodies above this are refused with 413.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest channelId / userId accepted.
const MAX_ID_LEN: usize = 256;

/// A channelId or userId: not empty, not too long, no control characters.
pub fn check_id(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::bad_request(format!("{field} must not be empty")));
    }
    if value.len() > MAX_ID_LEN {
        return Err(ApiError::bad_request(format!(
            "{field} is longer than {MAX_ID_LEN} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}

/// 413 for a body whose `Content-Length` declares more than [`MAX_BODY`] bytes (nothing of it
/// is read; the connection closes after the reply).
pub fn check_declared_length(headers: &hyper::HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared.is_some_and(|n| n > MAX_BODY as u64) {
        true => Err(body_too_large()),
        false => Ok(()),
    }
}

/// 413: a request body larger than [`MAX_BODY`].
pub fn body_too_large() -> ApiError {
    ApiError::new(413, format!("request body is larger than {MAX_BODY} bytes"))
}
