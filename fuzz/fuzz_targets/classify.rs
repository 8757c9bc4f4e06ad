//! Fuzz target `classify`: the answer classifier ([`upload::classify`]) on an arbitrary
//! status, arbitrary `Retry-After` and `X-Request-Id` headers and an arbitrary body.
//!
//! Proves: classification never panics; a 200 whose body is `true` (blanks aside) is always
//! `Uploaded`, and nothing else is; the request id is reported as the server sent it; a
//! `Retry-After` never asks for more than a day; a refusal or a transient failure always
//! says why.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use extdrop::auth::Stamp;
use extdrop::upload::{self, Verdict};
use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Answer<'a> {
    status: u16,
    retry_after: Option<&'a [u8]>,
    request_id: Option<&'a [u8]>,
    /// Last, so it takes the rest of the input.
    body: &'a str,
}

fuzz_target!(|answer: Answer<'_>| {
    let mut headers = HeaderMap::new();
    // Bytes that cannot be a header value never reach classify: the HTTP client refuses them.
    if let Some(value) = answer
        .retry_after
        .and_then(|v| HeaderValue::from_bytes(v).ok())
    {
        headers.insert(RETRY_AFTER, value);
    }
    let request_id = answer
        .request_id
        .and_then(|v| HeaderValue::from_bytes(v).ok());
    if let Some(value) = &request_id {
        headers.insert(HeaderName::from_static("x-request-id"), value.clone());
    }

    let verdict = upload::classify(answer.status, &headers, answer.body, Stamp::default());
    let accepted = answer.status == 200 && answer.body.trim() == "true";
    assert_eq!(
        matches!(verdict, Verdict::Uploaded(_)),
        accepted,
        "{verdict:?}"
    );
    let reported = match &verdict {
        Verdict::Uploaded(a) | Verdict::Rejected { answer: a, .. } => Some(a),
        Verdict::Unauthorized { answer: a, .. } => Some(a),
        Verdict::Transient { answer, .. } => answer.as_ref(),
        Verdict::NoCredentials(_) => panic!("classify never lacks credentials"),
    };
    if let Some(reported) = reported {
        assert_eq!(reported.status, answer.status);
        let sent = request_id.as_ref().and_then(|v| v.to_str().ok());
        assert_eq!(reported.request_id.as_deref(), sent);
    }
    match &verdict {
        Verdict::Rejected { reason: why, .. } | Verdict::Transient { why, .. } => {
            assert!(!why.trim().is_empty(), "{verdict:?}");
        }
        _ => {}
    }
    if let Verdict::Transient {
        retry_after: Some(wait),
        ..
    } = &verdict
    {
        assert!(
            *wait <= Duration::from_secs(24 * 3600),
            "Retry-After of {wait:?}"
        );
    }

    // Whatever else the server sent, 200 `true` is an upload.
    assert!(matches!(
        upload::classify(200, &headers, "true", Stamp::default()),
        Verdict::Uploaded(_)
    ));
});
