//! What a route reads from a request: a JSON body of bounded size (errors name the field),
//! path segments (percent-decoded) and the ids they carry (checked before any shard sees them).

use http_body_util::BodyExt;
use hyper::Request;
use serde::de::DeserializeOwned;

use super::RequestBody;
pub use crate::http::MAX_BODY;
pub(crate) use crate::http::{body_too_large, check_declared_length, check_id};
use crate::sfu::api::ApiError;

pub(super) fn check_ids(channel_id: &str, user_id: &str) -> Result<(), ApiError> {
    check_id("channelId", channel_id)?;
    check_id("userId", user_id)
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes; errors name the offending field. A body
/// declared (`Content-Length`) or found (while reading) larger is refused at once with 413:
/// nothing more of it is read, and the connection closes after the reply.
pub(super) async fn read_json<T: DeserializeOwned>(
    req: Request<RequestBody>,
) -> Result<T, ApiError> {
    check_declared_length(req.headers())?;
    let mut body = req.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("cannot read request body: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > MAX_BODY {
                return Err(body_too_large());
            }
            bytes.extend_from_slice(data);
        }
    }
    parse_json(&bytes)
}

/// Parses a JSON body into `T`; errors say whether the JSON is malformed or which field is
/// missing or mistyped (`rtpParameters.codecs[0].payloadType: invalid type: ...`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("malformed JSON body: {inner}"))
        } else if e.path().to_string() == "." {
            ApiError::bad_request(format!(
                "invalid body: {}",
                strip_position(&inner.to_string())
            ))
        } else {
            ApiError::bad_request(format!(
                "invalid field {}: {}",
                e.path(),
                strip_position(&inner.to_string())
            ))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
    Ok(value)
}

/// serde_json appends " at line L column C"; the field path says more.
fn strip_position(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

pub(crate) fn percent_decode(segment: &str) -> Result<String, ApiError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => out.push(b),
                None => {
                    return Err(ApiError::bad_request(format!(
                        "bad percent-encoding in path segment {segment:?}"
                    )))
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::bad_request(format!("path segment {segment:?} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::api::{CreateTransportRequest, ProduceRequest};

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<CreateTransportRequest>(br#"{"channelId":"c","direction":"send"}"#)
            .unwrap_err();
        assert_eq!(e.message, "invalid body: missing field `userId`");
        let e = parse_json::<CreateTransportRequest>(
            br#"{"channelId":"c","userId":"u","direction":"sideways"}"#,
        )
        .unwrap_err();
        assert!(
            e.message
                .starts_with("invalid field direction: unknown variant `sideways`"),
            "{}",
            e.message
        );
        let e = parse_json::<ProduceRequest>(
            br#"{"channelId":"c","userId":"u","kind":"audio","rtpParameters":{"codecs":[{"mimeType":"audio/opus","payloadType":"x","clockRate":48000}]}}"#,
        )
        .unwrap_err();
        assert!(
            e.message
                .starts_with("invalid field rtpParameters.codecs[0].payloadType: invalid type"),
            "{}",
            e.message
        );
        let e = parse_json::<CreateTransportRequest>(b"{nope").unwrap_err();
        assert!(
            e.message.starts_with("malformed JSON body"),
            "{}",
            e.message
        );
        let e = parse_json::<CreateTransportRequest>(
            br#"{"channelId":"c","userId":"u","direction":"send"} x"#,
        )
        .unwrap_err();
        assert!(
            e.message.starts_with("malformed JSON body"),
            "{}",
            e.message
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b").unwrap(), "a b");
        assert!(percent_decode("a%2").is_err());
        assert!(percent_decode("%ff").is_err());
    }
}
