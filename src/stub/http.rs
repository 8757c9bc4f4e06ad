//! The stand-in's HTTP plumbing, shared by every endpoint: the gateway's error answer
//! ([`Rejection`]), JSON answers, reading bodies and parsing query strings.
//!
//! Invariant: an error answer is always the JSON object `{"error_code", "error_msg"}`; the
//! request id is added by the router (`Shared::handle`), for every answer.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use super::error_codes;

/// An error answer of the upload endpoint.
#[derive(Debug)]
pub(super) struct Rejection {
    pub(super) status: StatusCode,
    pub(super) error_code: String,
    pub(super) error_msg: String,
}

impl Rejection {
    pub(super) fn new(status: StatusCode, error_code: &str, error_msg: impl Into<String>) -> Self {
        Self {
            status,
            error_code: error_code.to_owned(),
            error_msg: error_msg.into(),
        }
    }

    pub(super) fn unauthorized(error_msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            error_codes::IAM_AUTH_FAILED,
            error_msg,
        )
    }

    pub(super) fn bad_request(error_code: &str, error_msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error_code, error_msg)
    }

    /// The gateway's error answer, carrying the request's id in the body as well.
    pub(super) fn response(&self, request_id: &str) -> Response<Full<Bytes>> {
        let body = serde_json::json!({
            "error_code": self.error_code,
            "error_msg": self.error_msg,
            "request_id": request_id,
        });
        json_response(self.status, body.to_string())
    }
}

/// The percent-decoded value of query parameter `name`, if present.
pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    query_pairs(query)
        .into_iter()
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// Every query parameter, percent-decoded, in order; empty pieces (`a=1&&b=2`) are skipped,
/// as URL parsers do.
pub(super) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (a space in query strings); malformed escapes stay as-is.
pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) => hex_digit(*high).zip(hex_digit(*low)),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some((high, low)), _) => {
                out.push(high << 4 | low);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(byte: u8) -> Option<u8> {
    (byte as char)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The answer of a [`super::Fault::Redirect`]: `status` (500 when it is not one) with
/// `Location: location` (left out when it is not a valid header value).
pub(super) fn redirect_response(status: u16, location: &str) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, "");
    if let Ok(value) = HeaderValue::from_str(location) {
        response
            .headers_mut()
            .insert(hyper::header::LOCATION, value);
    }
    response
}

/// A JSON answer with `status`.
pub(super) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Reads and discards the rest of a body; a broken connection simply ends it.
pub(super) async fn drain(mut body: Incoming) {
    while let Some(Ok(_)) = body.frame().await {}
}

/// Reads a body of at most `limit` bytes; a larger one is drained and yields `None`.
pub(super) async fn read_small_body(mut body: Incoming, limit: usize) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return None };
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                drain(body).await;
                return None;
            }
            bytes.extend_from_slice(&data);
        }
    }
    Some(bytes)
}
