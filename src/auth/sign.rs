//! SDK-HMAC-SHA256 request signing (Huawei Cloud AK/SK), as pure functions.
//!
//! Job: turn a request's method, path, query and headers into the `Authorization` value the
//! API gateway (APIG) expects, and take such a value apart again, so that both the client and
//! a loopback stand-in of the service can use the same code.
//!
//! Invariants (those of the official SDK's `Signer`, checked byte for byte against its output
//! in the tests):
//! - Canonical URI: the path is percent-decoded, split on `/`, each segment percent-encoded
//!   keeping only RFC 3986 unreserved characters (`A-Z a-z 0-9 - _ . ~`), joined with `/`, and
//!   always ends in `/`.
//! - Canonical query: pairs sorted by key, then value (on the decoded strings), each side
//!   encoded like a path segment, joined as `k=v` with `&`.
//! - Canonical headers: `lowercase-name:trimmed-value\n` for each signed header, in the sorted
//!   order of the signed header names.
//! - Nothing here reads a clock or the request body: the caller passes `X-Sdk-Date` among the
//!   headers and the payload hash (usually [`UNSIGNED_PAYLOAD`]).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The algorithm name that opens the string to sign and the `Authorization` value.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";

/// The payload hash (and `X-Sdk-Content-Sha256` value) for bodies that are not hashed, such as
/// streamed multipart uploads.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The hex SHA-256 of an empty body, the payload hash of requests without one.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The header carrying the signing time, `YYYYMMDDTHHMMSSZ` in UTC.
pub const HEADER_SDK_DATE: &str = "x-sdk-date";

/// The header announcing the payload hash; its value is then the payload hash that is signed.
pub const HEADER_CONTENT_SHA256: &str = "x-sdk-content-sha256";

/// The header carrying the security token of temporary credentials.
pub const HEADER_SECURITY_TOKEN: &str = "x-security-token";

type HmacSha256 = Hmac<Sha256>;

/// The parts of a request that enter the signature.
#[derive(Debug, Clone, Copy)]
pub struct SignRequest<'a> {
    /// HTTP method, any case (it is upper-cased).
    pub method: &'a str,
    /// The path as sent on the wire (percent-encoded or not: it is decoded first).
    pub path: &'a str,
    /// Decoded query pairs, in any order.
    pub query: &'a [(String, String)],
    /// Headers, names in any case; must include `X-Sdk-Date` and `Host` for a valid signature.
    pub headers: &'a [(String, String)],
    /// The payload hash: [`UNSIGNED_PAYLOAD`], [`EMPTY_PAYLOAD_SHA256`] or a hex SHA-256.
    pub payload_hash: &'a str,
}

impl SignRequest<'_> {
    /// The value of a header (last one wins, as in the SDK's dictionary), names compared
    /// case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An `Authorization` value taken apart, for verifying a signature on the server side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAuthorization {
    /// The access key (AK) that claims to have signed.
    pub access: String,
    /// The signed header names, as listed (lowercase, `;`-separated on the wire).
    pub signed_headers: Vec<String>,
    /// The hex signature.
    pub signature: String,
}

/// Percent-encodes bytes, keeping RFC 3986 unreserved characters, like the SDK's
/// `quote(s, safe='~')`.
fn encode_into(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Decodes `%XX` escapes; malformed escapes stay as they are, like Python's `unquote`.
fn decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| char::from(*b).to_digit(16)),
                bytes.get(i + 2).and_then(|b| char::from(*b).to_digit(16)),
            )
        {
            // Two hex digits make at most 0xFF, so the cast is lossless.
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The canonical URI of a path: decoded, split on `/`, segments encoded, ending in `/`.
pub fn canonical_uri(path: &str) -> String {
    let decoded = decode(path);
    let mut out = String::with_capacity(decoded.len() + 1);
    // Decoding first means an encoded `%2F` splits segments too, exactly as the SDK does.
    for (i, segment) in decoded.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        encode_into(&mut out, segment);
    }
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The canonical query string: pairs sorted by key then value, both sides encoded.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = query.iter().collect();
    // `str` ordering is by code point, the same as the SDK's Python string sort.
    pairs.sort();
    let mut out = String::new();
    for (i, (key, value)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_into(&mut out, key.as_bytes());
        out.push('=');
        encode_into(&mut out, value.as_bytes());
    }
    out
}

/// The names of all given headers, lowercased, sorted and without duplicates: what
/// [`authorization`] signs.
pub fn signed_header_names(headers: &[(String, String)]) -> Vec<String> {
    let mut names: Vec<String> = headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The canonical request: method, URI, query, headers, signed header names and payload hash,
/// one per line.
///
/// `signed_headers` must be lowercase and sorted (as [`signed_header_names`] returns them or
/// as a parsed `Authorization` lists them); a listed header that is absent signs as empty.
pub fn canonical_request(req: &SignRequest, signed_headers: &[String]) -> String {
    let mut out = String::new();
    out.push_str(&req.method.to_ascii_uppercase());
    out.push('\n');
    out.push_str(&canonical_uri(req.path));
    out.push('\n');
    out.push_str(&canonical_query(req.query));
    out.push('\n');
    for name in signed_headers {
        out.push_str(name);
        out.push(':');
        out.push_str(req.header(name).unwrap_or_default().trim());
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(req.payload_hash);
    out
}

/// The string to sign: algorithm, `X-Sdk-Date` value and hex SHA-256 of the canonical request.
pub fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    let hash = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    format!("{ALGORITHM}\n{sdk_date}\n{hash}")
}

/// The hex HMAC-SHA256 of the string to sign, keyed with the secret key.
pub fn signature(secret_key: &str, string_to_sign: &str) -> String {
    // HMAC accepts keys of any length (long ones are hashed first), so this never fails; the
    // fallback only keeps the code free of panics and would merely yield a wrong signature.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret_key.as_bytes()) else {
        return String::new();
    };
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The `Authorization` header value signing every header in `req.headers`.
///
/// The signing time is the request's `X-Sdk-Date` header, which the caller must have set (an
/// absent one signs as empty and the gateway will refuse it).
pub fn authorization(access_key: &str, secret_key: &str, req: &SignRequest) -> String {
    let signed = signed_header_names(req.headers);
    let canonical = canonical_request(req, &signed);
    let to_sign = string_to_sign(req.header(HEADER_SDK_DATE).unwrap_or_default(), &canonical);
    format!(
        "{ALGORITHM} Access={access_key}, SignedHeaders={}, Signature={}",
        signed.join(";"),
        signature(secret_key, &to_sign)
    )
}

/// Takes an `Authorization` value apart; `None` unless it is a complete SDK-HMAC-SHA256 one.
pub fn parse_authorization(value: &str) -> Option<ParsedAuthorization> {
    let rest = value.trim().strip_prefix(ALGORITHM)?;
    // A space must separate the algorithm from its parameters.
    if !rest.starts_with(' ') {
        return None;
    }
    let (mut access, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, val) = part.trim().split_once('=')?;
        let val = val.trim();
        match key.trim() {
            "Access" => access = Some(val.to_owned()),
            "SignedHeaders" => {
                signed_headers = Some(val.split(';').map(str::to_owned).collect::<Vec<_>>())
            }
            "Signature" => signature = Some(val.to_owned()),
            _ => return None,
        }
    }
    let (access, signed_headers, signature) = (access?, signed_headers?, signature?);
    if access.is_empty() || signature.is_empty() || signed_headers.iter().any(String::is_empty) {
        return None;
    }
    Some(ParsedAuthorization {
        access,
        signed_headers,
        signature,
    })
}

/// Server side: whether `parsed` is a valid signature of `req` made with `secret_key`.
///
/// Only the headers listed in `parsed.signed_headers` count; the caller should also insist
/// that `host` and `x-sdk-date` are among them and that the date is recent.
pub fn verify(secret_key: &str, req: &SignRequest, parsed: &ParsedAuthorization) -> bool {
    let canonical = canonical_request(req, &parsed.signed_headers);
    let to_sign = string_to_sign(req.header(HEADER_SDK_DATE).unwrap_or_default(), &canonical);
    let expected = signature(secret_key, &to_sign);
    // Compare without an early exit so timing does not reveal how much of a guess was right.
    expected.len() == parsed.signature.len()
        && expected
            .bytes()
            .zip(parsed.signature.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Formats a time as `X-Sdk-Date` wants it: `YYYYMMDDTHHMMSSZ` in UTC.
///
/// Times before 1970 (a badly broken clock) are written as 1970-01-01T00:00:00Z.
pub fn sdk_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Reads an `X-Sdk-Date` value back, for a server checking the signing time.
pub fn parse_sdk_date(value: &str) -> Option<SystemTime> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u64> {
        let s = value.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (year, month, day) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hour, minute, second) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    if !(1..=12).contains(&month) || day == 0 || day > 31 || hour > 23 || minute > 59 {
        return None;
    }
    // Leap seconds never appear in X-Sdk-Date; 60 is refused rather than folded.
    if second > 59 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    // Reject dates like February 30th by formatting back.
    if civil_from_days(days) != (year, month, day) {
        return None;
    }
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01, for years from 1970 on.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// Whether a 401/403 answer says the signing time (`X-Sdk-Date`) is too far from the
/// gateway's clock, i.e. the operator should fix this machine's clock (NTP).
///
/// APIG refuses signatures more than 15 minutes off with `APIG.0303` "Incorrect app
/// authentication information: signature expired, signature time:…,server time:…"
/// (<https://support.huaweicloud.com/intl/en-us/apig_faq/apig-faq-0009.html>), and for IAM
/// AK/SK with `APIG.0301` "Incorrect IAM authentication information: calc ak sk signature
/// fail:signature expired" (<https://support.huaweicloud.com/intl/en-us/sis_faq/sis_04_0087.html>);
/// newer gateways spell the prefix `APIGW.`. The message is what tells skew apart from a wrong
/// key (`verify aksk signature fail`) or an expired token (`token expires`), so both the code
/// and the wording are checked.
pub fn clock_skew_hint(status: u16, body: &str) -> bool {
    if status != 401 && status != 403 {
        return false;
    }
    let (code, message) = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(json) => (
            json.get("error_code")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned(),
            json.get("error_msg")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_ascii_lowercase(),
        ),
        // A proxy may answer plain text; judge by the words alone.
        Err(_) => (String::new(), body.to_ascii_lowercase()),
    };
    let code_fits = code.is_empty()
        || matches!(
            code.as_str(),
            "APIG.0301" | "APIG.0303" | "APIGW.0301" | "APIGW.0303"
        );
    code_fits
        && (message.contains("signature expired")
            || message.contains("server time")
            || message.contains("request time"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    /// One case of `testdata/aksk-sdk-hmac-sha256.json`, produced by the official Python SDK.
    #[derive(Deserialize)]
    struct Vector {
        name: String,
        access_key: String,
        secret_key: String,
        method: String,
        path: String,
        query: Vec<(String, String)>,
        headers_in: serde_json::Map<String, serde_json::Value>,
        signed_headers_out: serde_json::Map<String, serde_json::Value>,
        authorization: String,
    }

    fn vectors() -> Vec<Vector> {
        serde_json::from_str(include_str!("testdata/aksk-sdk-hmac-sha256.json")).unwrap()
    }

    fn pairs(map: &serde_json::Map<String, serde_json::Value>) -> Vec<(String, String)> {
        map.iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn reproduces_every_sdk_vector() {
        let vectors = vectors();
        assert_eq!(vectors.len(), 3);
        for v in vectors {
            // Headers as the SDK signed them: the input ones plus the two it adds.
            let mut headers = pairs(&v.headers_in);
            headers.push((
                "X-Sdk-Content-Sha256".to_owned(),
                UNSIGNED_PAYLOAD.to_owned(),
            ));
            let host = v.signed_headers_out["Host"].as_str().unwrap().to_owned();
            headers.push(("Host".to_owned(), host));
            let req = SignRequest {
                method: &v.method,
                path: &v.path,
                query: &v.query,
                headers: &headers,
                payload_hash: UNSIGNED_PAYLOAD,
            };
            assert_eq!(
                authorization(&v.access_key, &v.secret_key, &req),
                v.authorization,
                "vector {}",
                v.name
            );
            assert_eq!(
                v.signed_headers_out["Authorization"].as_str().unwrap(),
                v.authorization
            );

            // And the server side accepts it.
            let parsed = parse_authorization(&v.authorization).unwrap();
            assert_eq!(parsed.access, v.access_key);
            assert!(verify(&v.secret_key, &req, &parsed), "vector {}", v.name);
            assert!(!verify("wrong", &req, &parsed));
        }
    }

    /// The real `UploadBasicPlugin` call captured from the SDK (`sdk-upload-request.json`),
    /// which also signs `User-Agent` and `X-Project-Id`; its key is the first vector's.
    #[test]
    fn reproduces_captured_sdk_upload() {
        let captured: serde_json::Value =
            serde_json::from_str(include_str!("testdata/sdk-upload-request.json")).unwrap();
        let captured = &captured[0];
        let secret_key = &vectors()[0].secret_key;
        let (path, query) = captured["path"].as_str().unwrap().split_once('?').unwrap();
        let query: Vec<(String, String)> = query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let all = pairs(captured["headers"].as_object().unwrap());
        let wire_auth = captured["headers"]["Authorization"].as_str().unwrap();
        let parsed = parse_authorization(wire_auth).unwrap();
        // Sign exactly the headers the SDK listed (it did not sign Accept, Content-Length...).
        let headers: Vec<(String, String)> = all
            .into_iter()
            .filter(|(n, _)| parsed.signed_headers.contains(&n.to_ascii_lowercase()))
            .collect();
        assert_eq!(headers.len(), 6);
        let req = SignRequest {
            method: "POST",
            path,
            query: &query,
            headers: &headers,
            payload_hash: UNSIGNED_PAYLOAD,
        };
        assert_eq!(
            authorization("AKEXAMPLE0123456789", secret_key, &req),
            wire_auth
        );
        assert!(verify(secret_key, &req, &parsed));
    }

    #[test]
    fn canonical_request_shape() {
        let query = vec![
            ("plugin_name".to_owned(), "demo task".to_owned()),
            ("business_type".to_owned(), "Deploy".to_owned()),
            ("a".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1/~".to_owned()),
        ];
        let headers = vec![
            ("Host".to_owned(), " example.com ".to_owned()),
            ("X-Sdk-Date".to_owned(), "20260101T000000Z".to_owned()),
        ];
        let req = SignRequest {
            method: "post",
            path: "/v3/a%20b/ü/upload",
            query: &query,
            headers: &headers,
            payload_hash: UNSIGNED_PAYLOAD,
        };
        let names = signed_header_names(&headers);
        assert_eq!(names, ["host", "x-sdk-date"]);
        assert_eq!(
            canonical_request(&req, &names),
            "POST\n/v3/a%20b/%C3%BC/upload/\n\
             a=1%2F~&a=2&business_type=Deploy&plugin_name=demo%20task\n\
             host:example.com\nx-sdk-date:20260101T000000Z\n\n\
             host;x-sdk-date\nUNSIGNED-PAYLOAD"
        );
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/a/"), "/a/");
        // Encoded slashes split segments, as in the SDK (which unquotes before splitting).
        assert_eq!(canonical_uri("/a%2Fb"), "/a/b/");
        // Malformed escapes are kept and then encoded.
        assert_eq!(canonical_uri("/100%zz"), "/100%25zz/");
    }

    #[test]
    fn parse_authorization_rejects_incomplete_values() {
        let good = "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date, Signature=abc";
        let parsed = parse_authorization(good).unwrap();
        assert_eq!(parsed.signed_headers, ["host", "x-sdk-date"]);
        assert_eq!(parsed.signature, "abc");
        for bad in [
            "",
            "SDK-HMAC-SHA256",
            "SDK-HMAC-SHA256Access=AK, SignedHeaders=host, Signature=abc",
            "AWS4-HMAC-SHA256 Access=AK, SignedHeaders=host, Signature=abc",
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host",
            "SDK-HMAC-SHA256 Access=, SignedHeaders=host, Signature=abc",
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;, Signature=abc",
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, Signature=abc, Extra=1",
        ] {
            assert_eq!(parse_authorization(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sdk_date_round_trips() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_823_689);
        assert_eq!(sdk_date(t), "20261127T235449Z");
        assert_eq!(parse_sdk_date("20261127T235449Z"), Some(t));
        assert_eq!(sdk_date(UNIX_EPOCH), "19700101T000000Z");
        assert_eq!(
            sdk_date(UNIX_EPOCH - Duration::from_secs(5)),
            "19700101T000000Z"
        );
        let leap = parse_sdk_date("20240229T120000Z").unwrap();
        assert_eq!(sdk_date(leap), "20240229T120000Z");
        for bad in [
            "20230229T000000Z",
            "20261127T235449",
            "2026-11-27T23:54",
            "20261327T000000Z",
            "20261127T240000Z",
            "+0261127T235449Z",
        ] {
            assert_eq!(parse_sdk_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn clock_skew_is_recognised() {
        let skew = r#"{"error_msg":"Incorrect app authentication information: signature expired, signature time:20230527T000431Z,server time:20230527T020608Z","error_code":"APIG.0303","request_id":"fd65"}"#;
        assert!(clock_skew_hint(401, skew));
        let iam_skew = r#"{"error_msg":"Incorrect IAM authentication information: calc ak sk signature fail:signature expired","error_code":"APIG.0301"}"#;
        assert!(clock_skew_hint(401, iam_skew));
        assert!(clock_skew_hint(403, "signature expired"));
        // Same words, wrong status or unrelated failures: no hint.
        assert!(!clock_skew_hint(400, skew));
        let wrong_key = r#"{"error_msg":"Incorrect IAM authentication information: verify aksk signature fail, ...","error_code":"APIG.0301"}"#;
        assert!(!clock_skew_hint(401, wrong_key));
        let token = r#"{"error_msg":"Incorrect IAM authentication information: token expires, expires_at: 2026","error_code":"APIG.0301"}"#;
        assert!(!clock_skew_hint(401, token));
        let other = r#"{"error_msg":"signature expired","error_code":"DEV.00001"}"#;
        assert!(!clock_skew_hint(401, other));
    }

    proptest! {
        #[test]
        fn canonical_request_never_panics(
            method in "\\PC{0,8}",
            path in "\\PC{0,64}",
            query in proptest::collection::vec(("\\PC{0,16}", "\\PC{0,16}"), 0..6),
            headers in proptest::collection::vec(("[A-Za-z-]{1,16}", "\\PC{0,32}"), 0..6),
            hash in "\\PC{0,64}",
        ) {
            let req = SignRequest { method: &method, path: &path, query: &query, headers: &headers, payload_hash: &hash };
            let names = signed_header_names(&headers);
            let canonical = canonical_request(&req, &names);
            let uri = canonical_uri(&path);
            prop_assert!(uri.ends_with('/'));
            prop_assert!(uri.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%/".contains(&b)));
            prop_assert!(canonical.starts_with(&method.to_ascii_uppercase()));
            let auth = authorization("AK", "SK", &req);
            let parsed = parse_authorization(&auth);
            prop_assert!(parsed.is_some() || headers.is_empty());
            if let Some(parsed) = parsed {
                prop_assert!(verify("SK", &req, &parsed));
            }
        }

        #[test]
        fn sdk_date_parses_back(secs in 0u64..253_402_300_800) {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            prop_assert_eq!(parse_sdk_date(&sdk_date(t)), Some(t));
        }
    }
}
