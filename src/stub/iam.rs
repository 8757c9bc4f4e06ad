//! The stand-in's IAM token endpoint, `POST /v3/auth/tokens` with the password method.
//!
//! Invariant: a token is recorded as issued before it is answered, so that a client that
//! receives it can use it at once; its validity is measured on the monotonic clock.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::http::{json_response, read_small_body};
use super::{IAM_BODY_LIMIT, IssuedToken, Shared};

impl Shared {
    /// IAM's `POST /v3/auth/tokens` with the password method.
    pub(super) async fn handle_iam(&self, body: Incoming) -> Response<Full<Bytes>> {
        self.lock().iam_requests += 1;
        let request = read_small_body(body, IAM_BODY_LIMIT)
            .await
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
        let Some(request) = request else {
            return iam_error(StatusCode::BAD_REQUEST, "The request body is invalid.");
        };
        let text = |pointer: &str| request.pointer(pointer).and_then(|v| v.as_str());
        let uses_password = request
            .pointer("/auth/identity/methods")
            .and_then(|v| v.as_array())
            .is_some_and(|methods| methods.iter().any(|m| m == "password"));
        let user = "/auth/identity/password/user";
        let (Some(name), Some(password), Some(domain), true) = (
            text(&format!("{user}/name")),
            text(&format!("{user}/password")),
            text(&format!("{user}/domain/name")),
            uses_password,
        ) else {
            return iam_error(StatusCode::BAD_REQUEST, "The request body is invalid.");
        };
        let known = self
            .users
            .iter()
            .any(|u| u.name == name && u.domain == domain && u.password == password);
        if !known {
            return iam_error(
                StatusCode::UNAUTHORIZED,
                "The username or password is wrong.",
            );
        }

        let token = format!(
            "MIIstub{:032x}{:032x}",
            fastrand::u128(..),
            fastrand::u128(..)
        );
        let now = self.lock().now();
        let expires_at = humantime::format_rfc3339_micros(now + self.token_lifetime).to_string();
        let mut token_body = serde_json::json!({
            "expires_at": expires_at,
            "issued_at": humantime::format_rfc3339_micros(now).to_string(),
            "methods": ["password"],
            "user": {
                "name": name,
                "id": format!("{:032x}", fastrand::u128(..)),
                "domain": { "name": domain, "id": self.domain_id },
            },
        });
        // Echo the scope as IAM does, so clients can check what they asked for.
        if let Some(project) = text("/auth/scope/project/name") {
            token_body["project"] = serde_json::json!({ "name": project });
        } else if let Some(scope_domain) = text("/auth/scope/domain/name") {
            token_body["domain"] = serde_json::json!({ "name": scope_domain });
        }
        {
            let mut state = self.lock();
            state.tokens_issued += 1;
            state.issued.insert(
                token.clone(),
                IssuedToken {
                    expires: Instant::now() + self.token_lifetime,
                    expires_at,
                },
            );
        }
        tracing::debug!(user = name, "stub issued a token");
        let mut response = json_response(
            StatusCode::CREATED,
            serde_json::json!({ "token": token_body }).to_string(),
        );
        if let Ok(value) = HeaderValue::from_str(&token) {
            response
                .headers_mut()
                .insert(HeaderName::from_static("x-subject-token"), value);
        }
        response
    }
}

/// IAM's error shape, which differs from the gateway's.
fn iam_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "error": {
            "code": status.as_u16(),
            "message": message,
            "title": status.canonical_reason().unwrap_or(""),
        }
    });
    json_response(status, body.to_string())
}
