//! How the stand-in authenticates a request, as the API gateway does: IAM tokens in
//! `X-Auth-Token` (static or issued by the stand-in's IAM endpoint), or SDK-HMAC-SHA256
//! signatures verified against the stand-in's own clock ([`super::StubAuth`]).
//!
//! Invariant: every refusal is a 401 with the gateway's `APIG.0301` code; the wording of a
//! clock-skew refusal is the gateway's, since clients tell a wrong clock from a wrong key by it.

use std::time::{Duration, Instant, SystemTime};

use hyper::http::request::Parts;
use sha2::Digest;

use super::http::{Rejection, query_pairs};
use super::{AuthKind, Shared, State, StubAuth};

impl Shared {
    /// Decides whether the request's credentials are acceptable, as [`StubAuth`] says.
    pub(super) fn authenticate(&self, parts: &Parts, body: Option<&[u8]>) -> Result<(), Rejection> {
        let state = self.lock();
        let token = parts
            .headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        match &state.auth {
            StubAuth::Any => Ok(()),
            StubAuth::Tokens(tokens) => {
                let token = token.ok_or_else(|| {
                    Rejection::unauthorized(
                        "Incorrect IAM authentication information: x-auth-token not found",
                    )
                })?;
                check_token(&state, tokens, token)
            }
            StubAuth::Aksk { keys, max_skew } => match token {
                // The gateway takes either kind of IAM credentials on the same API.
                Some(token) => check_token(&state, &[], token),
                None => verify_signature(parts, keys, *max_skew, state.now(), body),
            },
        }
    }
}

/// Accepts `token` if it is one of the static `tokens` or an unexpired IAM-issued one.
pub(super) fn check_token(state: &State, tokens: &[String], token: &str) -> Result<(), Rejection> {
    if tokens.iter().any(|t| t == token) {
        return Ok(());
    }
    match state.issued.get(token) {
        Some(issued) if Instant::now() < issued.expires => Ok(()),
        Some(issued) => Err(Rejection::unauthorized(format!(
            "Incorrect IAM authentication information: token expires, expires_at: {}",
            issued.expires_at
        ))),
        None => Err(Rejection::unauthorized(
            "Incorrect IAM authentication information: decrypt token fail",
        )),
    }
}

/// Verifies an SDK-HMAC-SHA256 signature the way the API gateway does (see
/// [`StubAuth::Aksk`]), judging `X-Sdk-Date` by `now`, the stub's clock.
pub(super) fn verify_signature(
    parts: &Parts,
    keys: &[(String, String)],
    max_skew: Duration,
    now: SystemTime,
    body: Option<&[u8]>,
) -> Result<(), Rejection> {
    use crate::auth::sign;
    let refuse = |why: &str| {
        Rejection::unauthorized(format!("Incorrect IAM authentication information: {why}"))
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let authorization = header("authorization")
        .ok_or_else(|| refuse("neither x-auth-token nor authorization was found"))?;
    let parsed = sign::parse_authorization(authorization)
        .ok_or_else(|| refuse("verify aksk signature fail: unsupported authorization"))?;
    let signed = |name: &str| parsed.signed_headers.iter().any(|h| h == name);
    if !signed("host") || !signed(sign::HEADER_SDK_DATE) {
        return Err(refuse(
            "verify aksk signature fail: host and x-sdk-date must be signed",
        ));
    }
    if header(sign::HEADER_SECURITY_TOKEN).is_some() && !signed(sign::HEADER_SECURITY_TOKEN) {
        return Err(refuse(
            "verify aksk signature fail: x-security-token must be signed",
        ));
    }
    let date = header(sign::HEADER_SDK_DATE).unwrap_or_default();
    let signed_at = sign::parse_sdk_date(date)
        .ok_or_else(|| refuse("verify aksk signature fail: x-sdk-date is malformed"))?;
    let skew = now
        .duration_since(signed_at)
        .or_else(|_| signed_at.duration_since(now))
        .unwrap_or_default();
    if skew > max_skew {
        // The gateway's wording, which clients use to tell a wrong clock from a wrong key.
        return Err(refuse(&format!(
            "calc ak sk signature fail:signature expired, signature time:{date},server time:{}",
            sign::sdk_date(now)
        )));
    }
    let Some((_, secret_key)) = keys.iter().find(|(ak, _)| *ak == parsed.access) else {
        return Err(refuse(
            "verify aksk signature fail: the access key is not found",
        ));
    };
    let has_body = header("transfer-encoding").is_some()
        || header("content-length").is_some_and(|n| n.trim() != "0");
    // A body read whole (JSON) is hashed as the SDK signs it; a streamed one (multipart)
    // must declare its hash.
    let body_hash = body.map(|b| hex::encode(sha2::Sha256::digest(b)));
    let payload_hash = match (header(sign::HEADER_CONTENT_SHA256), body_hash.as_deref()) {
        (Some(hash), _) => hash,
        (None, Some(hash)) => hash,
        (None, None) if !has_body => sign::EMPTY_PAYLOAD_SHA256,
        (None, None) => {
            return Err(refuse(
                "verify aksk signature fail: the stand-in verifies streamed bodies only with x-sdk-content-sha256",
            ));
        }
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let query = query_pairs(parts.uri.query().unwrap_or(""));
    let request = sign::SignRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: &query,
        headers: &headers,
        payload_hash,
    };
    if sign::verify(secret_key, &request, &parsed) {
        Ok(())
    } else {
        Err(refuse("verify aksk signature fail"))
    }
}

/// The credentials a request carries, for the record.
pub(super) fn auth_kind(parts: &Parts) -> AuthKind {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(token) = header("x-auth-token") {
        return AuthKind::Token(token.to_owned());
    }
    match header("authorization") {
        None => AuthKind::None,
        Some(value) => match value.strip_prefix("SDK-HMAC-SHA256 ") {
            Some(params) => AuthKind::Signed {
                access_key: params
                    .split(',')
                    .find_map(|p| p.trim().strip_prefix("Access="))
                    .unwrap_or("")
                    .to_owned(),
            },
            None => AuthKind::Other,
        },
    }
}
