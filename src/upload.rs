//! One upload attempt through the "Upload a basic extension" API, and the classification of
//! its answer.
//!
//! `POST {endpoint}/v3/{domain_id}/extension/upload?plugin_name=P&business_type=B` with the file
//! streamed from disk as the multipart field `upload_file` (memory does not grow with the file).
//! The answer becomes a [`Verdict`]; deciding what to do with it (retry, renew, file) is the
//! caller's job, in one place.
//!
//! The body is the file as it is read during the attempt, hashed on the way or beside it
//! ([`Sent`]); a file that turns out to have changed since it was checked makes the attempt a
//! permanent refusal, whatever the server said.

mod filename;
mod sent;

pub use filename::encode_filename;
pub use sent::{FILE_CHANGED, HASH_BESIDE_FROM, READ_IN_PLACE, Sent, Snapshot, Tally};

use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;

use crate::auth::{Auth, AuthError, Stamp, clock_skew_hint};
use crate::config::CodeArts;

/// What extdrop says when the server refuses a signature for its time: the fix is this
/// machine's clock, not the file or the keys.
pub const CLOCK_SKEW: &str =
    "the server says this machine's clock is off (clock skew): sync it with NTP/chrony";

/// What the server (or the network) said about one attempt.
#[derive(Debug)]
pub enum Verdict {
    /// 200 with body `true`.
    Uploaded(Answer),
    /// A permanent refusal: do not retry.
    Rejected {
        /// The server's answer.
        answer: Answer,
        /// One sentence for the report.
        reason: String,
    },
    /// Worth retrying later.
    Transient {
        /// The server's answer, when there was one.
        answer: Option<Answer>,
        /// One sentence for the log and, if retries run out, for the report.
        why: String,
        /// The server's `Retry-After`, a floor for the next wait.
        retry_after: Option<Duration>,
    },
    /// 401: renew the credentials behind `stamp`, then try again.
    Unauthorized {
        /// The server's answer.
        answer: Answer,
        /// The credentials that were refused.
        stamp: Stamp,
    },
    /// The credentials could not be put on the request at all.
    NoCredentials(AuthError),
}

impl Verdict {
    /// The result class used in metrics: `uploaded`, `rejected`, `transient`, `unauthorized`
    /// or `no_credentials`.
    pub fn class(&self) -> &'static str {
        match self {
            Verdict::Uploaded(_) => "uploaded",
            Verdict::Rejected { .. } => "rejected",
            Verdict::Transient { .. } => "transient",
            Verdict::Unauthorized { .. } => "unauthorized",
            Verdict::NoCredentials(_) => "no_credentials",
        }
    }
}

/// The parts of an HTTP answer that go into the report.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, Deserialize)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `error_code` of an error body.
    pub error_code: Option<String>,
    /// `error_msg` of an error body.
    pub error_msg: Option<String>,
    /// `X-Request-Id` header.
    pub request_id: Option<String>,
}

impl Answer {
    /// The answer in one clause for a log line: `HTTP 401: APIG.0301 message`.
    pub fn describe(&self) -> String {
        let words: Vec<&str> = [&self.error_code, &self.error_msg]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if words.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            format!("HTTP {}: {}", self.status, words.join(" "))
        }
    }
}

/// What to upload.
#[derive(Debug, Clone, Copy)]
pub struct Package<'a> {
    /// The file on disk (a claimed file).
    pub path: &'a Path,
    /// The name sent as the part's `filename` (encoded on the way, see [`encode_filename`]).
    pub file_name: &'a str,
    /// The file as it was checked; its size is sent as the part's length. A file that no longer
    /// matches it, or yields other bytes, fails the attempt for good.
    pub checked: Snapshot,
    /// Query parameter `plugin_name`.
    pub plugin_name: &'a str,
    /// Query parameter `business_type`.
    pub business_type: &'a str,
}

/// One attempt: the verdict, and how much of the file went out.
#[derive(Debug)]
pub struct Attempt {
    /// What to make of the attempt.
    pub verdict: Verdict,
    /// What the body sent; its hash is the one to report when it is complete.
    pub sent: Sent,
    /// The file changed since it was checked (the verdict says how): it is no longer the file
    /// that was hashed.
    pub changed: bool,
}

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The extra CA file could not be read.
    #[error("cannot read codearts.ca_file {}: {source}", path.display())]
    CaRead {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The extra CA file holds no usable certificate.
    #[error("codearts.ca_file {} holds no PEM certificate: {source}", path.display())]
    CaParse {
        /// The file.
        path: std::path::PathBuf,
        /// What the parser said.
        #[source]
        source: reqwest::Error,
    },
    /// The TLS or HTTP stack could not start.
    #[error("cannot set up the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// Builds the one HTTP client shared by uploads and credential requests.
pub fn http_client(codearts: &CodeArts) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("extdrop/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(codearts.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        // A redirect is the server's answer, judged as any other: following it would turn an
        // upload's POST into a bodiless GET (301, 302, 303) and carry `X-Auth-Token`, which
        // reqwest strips only from standard headers, to whatever host `Location` names.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &codearts.ca_file {
        let pem = std::fs::read(path).map_err(|source| ClientError::CaRead {
            path: path.clone(),
            source,
        })?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| ClientError::CaParse {
                path: path.clone(),
                source,
            })?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(ClientError::Build)
}

/// Why a file of `size` bytes is refused before it is read, if it is: larger than
/// `upload.max_file_size` (`limit`), or empty. The daemon's check and `extdrop upload` say it
/// in the same words.
pub fn size_refusal(size: u64, limit: u64) -> Result<(), String> {
    if size > limit {
        return Err(format!(
            "the file is {} which is larger than upload.max_file_size ({})",
            bytesize::ByteSize(size).display().iec(),
            bytesize::ByteSize(limit).display().iec()
        ));
    }
    if size == 0 {
        return Err("the file is empty".to_owned());
    }
    Ok(())
}

/// Sends uploads to one endpoint with one set of credentials.
#[derive(Debug, Clone)]
pub struct Uploader {
    client: reqwest::Client,
    url: String,
    /// `url` parsed once (the error kept, to be each upload's refusal): cloned per request
    /// and given its query, rather than parsed again per file.
    parsed: Result<reqwest::Url, String>,
    request_timeout: Duration,
    auth: Auth,
}

impl Uploader {
    /// An uploader for the configured endpoint and tenant.
    pub fn new(codearts: &CodeArts, client: reqwest::Client, auth: Auth) -> Uploader {
        let url = format!(
            "{}/v3/{}/extension/upload",
            codearts.endpoint, codearts.domain_id
        );
        Uploader {
            client,
            parsed: reqwest::Url::parse(&url).map_err(|e| e.to_string()),
            url,
            request_timeout: codearts.request_timeout,
            auth,
        }
    }

    /// The credentials in use.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Makes one attempt and classifies its outcome, with what was sent. Never panics, never
    /// retries. `opened` is the file at `package.path` when the caller has it open already
    /// (the handle its snapshot was taken through): it is read instead of opening the path
    /// again.
    pub async fn attempt(&self, package: Package<'_>, opened: Option<std::fs::File>) -> Attempt {
        self.attempt_from(package, opened, |_| ()).await
    }

    /// As [`Uploader::attempt`], handing `observe` the tally of the bytes read into the body
    /// before they are sent, so a person at a terminal can watch them go
    /// ([`crate::progress`]).
    pub async fn attempt_observed(
        &self,
        package: Package<'_>,
        observe: impl FnOnce(Tally),
    ) -> Attempt {
        self.attempt_from(package, None, observe).await
    }

    /// The attempt, reading `opened` when given, else the file at `package.path`.
    async fn attempt_from(
        &self,
        package: Package<'_>,
        opened: Option<std::fs::File>,
        observe: impl FnOnce(Tally),
    ) -> Attempt {
        let file = match opened.map_or_else(|| crate::store::open_payload(package.path), Ok) {
            Ok(file) => file,
            Err(e) => {
                let verdict = Verdict::Transient {
                    answer: None,
                    why: format!("cannot open the file for reading: {e}"),
                    retry_after: None,
                };
                return self.judge(package, verdict, Sent::Partial).await;
            }
        };
        let (body, tally) = sent::SentBody::new(file, package.checked.size);
        observe(tally.clone());
        let verdict = self.send(package, body).await;
        let hashed_beside = tally.hashed_beside();
        let mut tried = self.judge(package, verdict, tally.sent().await).await;
        if tried.changed && hashed_beside {
            // A hash taken by a second read names the sent bytes only while the file stays
            // the same; this one changed, so what went out has no known hash.
            tried.sent = Sent::Partial;
        }
        tried
    }

    /// The verdict of an attempt once the file is compared with what was checked: a file that
    /// changed is refused for good, whatever the server or the network said, because what went
    /// out (or would go out again) is not what was checked.
    async fn judge(&self, package: Package<'_>, verdict: Verdict, sent: Sent) -> Attempt {
        // Credentials that could not be put on the request: nothing was read, nothing judged.
        if matches!(verdict, Verdict::NoCredentials(_)) {
            return Attempt {
                verdict,
                sent,
                changed: false,
            };
        }
        // One `lstat`, run here as the open above is: a hand-off to the blocking pool would
        // cost more than the call (two thread wake-ups per upload).
        let now = std::fs::symlink_metadata(package.path)
            .ok()
            .map(|meta| Snapshot::of(&meta));
        let Some(reason) = sent::changed(&package.checked, &sent, now.as_ref()) else {
            return Attempt {
                verdict,
                sent,
                changed: false,
            };
        };
        let answer = match verdict {
            Verdict::Uploaded(answer)
            | Verdict::Rejected { answer, .. }
            | Verdict::Unauthorized { answer, .. } => answer,
            Verdict::Transient { answer, .. } => answer.unwrap_or_default(),
            Verdict::NoCredentials(_) => Answer::default(),
        };
        Attempt {
            verdict: Verdict::Rejected { answer, reason },
            sent,
            changed: true,
        }
    }

    /// Sends the request with `reader` as the file's content, and classifies the answer.
    async fn send(&self, package: Package<'_>, body: sent::SentBody) -> Verdict {
        let body = reqwest::Body::wrap_stream(body);
        let part = reqwest::multipart::Part::stream_with_length(body, package.checked.size)
            .file_name(encode_filename(package.file_name));
        let form = reqwest::multipart::Form::new().part("upload_file", part);
        let url = match self.parsed.clone() {
            Ok(mut url) => {
                url.query_pairs_mut().extend_pairs([
                    ("plugin_name", package.plugin_name),
                    ("business_type", package.business_type),
                ]);
                url
            }
            Err(e) => {
                return Verdict::Rejected {
                    answer: Answer::default(),
                    reason: format!("the upload URL could not be built: {e}"),
                };
            }
        };
        let request = self
            .client
            .post(url)
            .timeout(self.request_timeout)
            .multipart(form)
            .build();
        let mut request = match request {
            Ok(request) => request,
            Err(e) => {
                return Verdict::Rejected {
                    answer: Answer::default(),
                    reason: format!("the upload request could not be built: {e}"),
                };
            }
        };
        let stamp = match self.auth.authorize(&mut request).await {
            Ok(stamp) => stamp,
            Err(e) => return Verdict::NoCredentials(e),
        };
        let response = match self.client.execute(request).await {
            Ok(response) => response,
            Err(e) => return transport_failure(&e, self.request_timeout, "upload"),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        // Bodies of this API are tiny (`true` or an error object); bound what is read anyway.
        let body = match read_bounded(response, 64 * 1024).await {
            Ok(body) => body,
            Err(e) => return transport_failure(&e, self.request_timeout, "upload"),
        };
        classify(status, &headers, &body, stamp)
    }
}

impl Uploader {
    /// For `extdrop check --online`: proves that the endpoint accepts the credentials, without
    /// uploading anything, and returns one line for the operator.
    ///
    /// Sends `POST {endpoint}/v3/{domain_id}/extension/upload` with the credentials but no
    /// query parameters and no body. The API gateway authenticates it like an upload (401
    /// when it refuses the credentials, "signature expired" when this machine's clock is
    /// off); CodeArts then refuses it for the missing `plugin_name` (400), which is the
    /// answer that proves the credentials work. An answer of 403 means the credentials were
    /// accepted but may not upload to this domain.
    pub async fn probe(&self) -> Result<String, String> {
        let mut request = self
            .client
            .post(&self.url)
            .timeout(self.request_timeout.min(Duration::from_secs(30)))
            .build()
            .map_err(|e| format!("cannot build the request to {}: {e}", self.url))?;
        self.auth
            .authorize(&mut request)
            .await
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| format!("cannot reach {}: {}", self.url, error_chain(&e)))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = read_bounded(response, 64 * 1024).await.map_err(|e| {
            format!(
                "cannot read the answer of {}: {}",
                self.url,
                error_chain(&e)
            )
        })?;
        let answer = parse_answer(status, &headers, &body);
        let said = server_words(&answer, &body);
        let id = answer
            .request_id
            .as_deref()
            .map(|id| format!(", request id {id}"))
            .unwrap_or_default();
        if clock_skew_hint(status, &body) {
            return Err(format!("{CLOCK_SKEW} (HTTP {status}{said}{id})"));
        }
        match status {
            401 => Err(format!(
                "{} refused the {} credentials (HTTP 401{said}{id})",
                self.url,
                self.auth.method_name()
            )),
            403 => Err(format!(
                "{} accepted the credentials but refuses them access (HTTP 403{said}{id}): check codearts.domain_id and the user's permissions",
                self.url
            )),
            404 => Err(format!(
                "{} does not exist (HTTP 404{said}{id}): check codearts.endpoint",
                self.url
            )),
            408 | 429 | 500..=599 => Err(format!(
                "{} could not judge the credentials (HTTP {status}{said}{id}); try again later",
                self.url
            )),
            _ => Ok(format!(
                "{} accepted the {} credentials (a POST without parameters, answered HTTP {status}{said}{id}; nothing was uploaded)",
                self.url,
                self.auth.method_name()
            )),
        }
    }
}

/// Reads at most `limit` bytes of an answer's body, as text.
pub(crate) async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A request that got no answer, as a transient verdict; `what` names the request in the
/// sentence ("upload", "publish request").
pub(crate) fn transport_failure(e: &reqwest::Error, timeout: Duration, what: &str) -> Verdict {
    let why = if e.is_timeout() {
        format!(
            "the {what} did not complete within {} (codearts.request_timeout)",
            humantime::format_duration(timeout)
        )
    } else if e.is_connect() {
        connect_failure(e)
    } else {
        format!(
            "the connection failed during the {what}: {}",
            error_chain(e)
        )
    };
    Verdict::Transient {
        answer: None,
        why,
        retry_after: None,
    }
}

/// A connection failure as one sentence a person reads, "cannot connect to 127.0.0.1:45937:
/// connection refused", instead of reqwest's chain of wrappers ("error sending request for
/// url (…): client error (Connect): tcp connect error: …"). The host comes from the request's
/// URL; the cause from the innermost error of the chain (the OS error, or the resolver's),
/// which is the only part that tells the operator what to fix.
pub fn connect_failure(e: &reqwest::Error) -> String {
    let host = e.url().and_then(|url| {
        let host = url.host_str()?;
        Some(match url.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        })
    });
    let mut innermost: &dyn std::error::Error = e;
    let mut io_error = None;
    while let Some(inner) = innermost.source() {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            io_error = Some(io);
        }
        innermost = inner;
    }
    let cause = match io_error {
        Some(io) => cause_sentence(&io.to_string()),
        None => cause_sentence(&innermost.to_string()),
    };
    match host {
        Some(host) => format!("cannot connect to {host}: {cause}"),
        None => format!("cannot connect to the endpoint: {cause}"),
    }
}

/// An OS or resolver message as the end of a sentence: "Connection refused (os error 111)"
/// becomes "connection refused" (the errno means nothing to an operator).
fn cause_sentence(message: &str) -> String {
    let trimmed = match message.rfind(" (os error ") {
        Some(at) if message.ends_with(')') => &message[..at],
        _ => message,
    };
    let mut chars = trimmed.chars();
    match chars.next() {
        // Lower-case only a capitalised word ("Connection"), not an acronym ("DNS").
        Some(first)
            if first.is_uppercase() && chars.clone().next().is_some_and(char::is_lowercase) =>
        {
            first.to_lowercase().chain(chars).collect()
        }
        _ => trimmed.to_owned(),
    }
}

/// An error and its sources on one line: reqwest's own message alone says little.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<String>,
    error_msg: Option<String>,
}

/// Classifies an HTTP answer (SPEC §3.6): 200 `true` is success; 200 `false` and other 4xx are
/// permanent; 401 asks for renewed credentials; 408, 429 and 5xx are transient, honouring
/// `Retry-After`.
pub fn classify(status: u16, headers: &HeaderMap, body: &str, stamp: Stamp) -> Verdict {
    let answer = parse_answer(status, headers, body);
    let said = || server_words(&answer, body);
    match status {
        200 => match body.trim() {
            "true" => Verdict::Uploaded(answer),
            "false" => Verdict::Rejected {
                answer,
                reason: "the server answered 200 with body false: it did not accept the extension"
                    .to_owned(),
            },
            other => Verdict::Rejected {
                reason: format!(
                    "the server answered 200 with an unexpected body: {}",
                    snippet(other)
                ),
                answer,
            },
        },
        // A signature refused for its time looks like a bad key, but renewing keys cannot
        // help: the operator must fix the clock, and the file may go once that is done.
        401 | 403 if clock_skew_hint(status, body) => Verdict::Transient {
            why: format!("{CLOCK_SKEW} (HTTP {status}{})", said()),
            retry_after: None,
            answer: Some(answer),
        },
        401 => Verdict::Unauthorized { answer, stamp },
        408 | 429 => Verdict::Transient {
            why: format!("the server answered {status}{}", said()),
            retry_after: retry_after(headers),
            answer: Some(answer),
        },
        500..=599 => Verdict::Transient {
            why: format!("the server answered {status}{}", said()),
            retry_after: retry_after(headers),
            answer: Some(answer),
        },
        _ => Verdict::Rejected {
            reason: format!("the server refused the upload with {status}{}", said()),
            answer,
        },
    }
}

/// The parts of an answer that go into the report.
fn parse_answer(status: u16, headers: &HeaderMap, body: &str) -> Answer {
    // Only an object (or an array, which serde also reads into a struct) can hold them: the
    // usual answer `true` is not handed to the parser, whose refusal is an error built and
    // formatted for nothing, once per upload.
    let structured = body.trim_start().starts_with(['{', '[']);
    let parsed: Option<ErrorBody> = structured
        .then(|| serde_json::from_str(body).ok())
        .flatten();
    Answer {
        status,
        error_code: parsed.as_ref().and_then(|b| b.error_code.clone()),
        error_msg: parsed.as_ref().and_then(|b| b.error_msg.clone()),
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

/// What the server said, as a clause to append (": CODE message"), or nothing.
fn server_words(answer: &Answer, body: &str) -> String {
    match (&answer.error_code, &answer.error_msg) {
        (Some(code), Some(msg)) => format!(": {code} {msg}"),
        (Some(code), None) => format!(": {code}"),
        (None, Some(msg)) => format!(": {msg}"),
        (None, None) if body.trim().is_empty() => String::new(),
        (None, None) => format!(": {}", snippet(body)),
    }
}

fn snippet(body: &str) -> String {
    let line: String = body.trim().chars().take(200).collect();
    line.replace(['\n', '\r'], " ")
}

/// The longest wait a server's `Retry-After` can ask for. A server that asks for more is
/// mistaken or hostile; the retry policy's `max_elapsed` still decides whether to wait at all.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After` as seconds or as an HTTP date, at most [`MAX_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    };
    // Both forms share the cap: a date in the year 9999 must not ask for more than a number.
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn a_cause_reads_as_the_end_of_a_sentence() {
        assert_eq!(
            cause_sentence("Connection refused (os error 111)"),
            "connection refused"
        );
        assert_eq!(
            cause_sentence("DNS error: failed to lookup"),
            "DNS error: failed to lookup"
        );
        assert_eq!(cause_sentence(""), "");
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn true_is_success_and_false_is_permanent() {
        let h = headers(&[("x-request-id", "abc")]);
        assert!(
            matches!(classify(200, &h, "true", Stamp::default()), Verdict::Uploaded(a) if a.request_id.as_deref() == Some("abc"))
        );
        assert!(matches!(
            classify(200, &h, " false\n", Stamp::default()),
            Verdict::Rejected { .. }
        ));
        assert!(matches!(
            classify(200, &h, "<html>", Stamp::default()),
            Verdict::Rejected { .. }
        ));
    }

    #[test]
    fn client_errors_are_permanent_with_the_servers_words() {
        let body = r#"{"error_code":"DEVPIPE.00011104","error_msg":"plugin not found"}"#;
        for status in [400, 403, 404, 409, 413] {
            match classify(status, &HeaderMap::new(), body, Stamp::default()) {
                Verdict::Rejected { answer, reason } => {
                    assert_eq!(answer.error_code.as_deref(), Some("DEVPIPE.00011104"));
                    assert!(reason.contains("plugin not found"), "{reason}");
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn throttling_timeouts_and_server_errors_are_transient() {
        let h = headers(&[("retry-after", "3")]);
        for status in [408, 429, 500, 502, 503, 504] {
            match classify(status, &h, "", Stamp::default()) {
                Verdict::Transient { retry_after, .. } => {
                    assert_eq!(retry_after, Some(Duration::from_secs(3)))
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    /// Found by the `classify` fuzz target: a `Retry-After` date far ahead asked for
    /// thousands of years, while the same wait in seconds was capped at a day.
    #[test]
    fn a_retry_after_date_far_ahead_is_capped_like_seconds() {
        for value in ["Fri, 31 Dec 9999 23:59:59 GMT", "99999999999999"] {
            let h = headers(&[("retry-after", value)]);
            match classify(503, &h, "", Stamp::default()) {
                Verdict::Transient { retry_after, .. } => {
                    assert_eq!(retry_after, Some(MAX_RETRY_AFTER), "{value}")
                }
                other => panic!("{value}: {other:?}"),
            }
        }
        let past = headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert!(matches!(
            classify(503, &past, "", Stamp::default()),
            Verdict::Transient {
                retry_after: Some(Duration::ZERO),
                ..
            }
        ));
    }

    #[test]
    fn unauthorized_asks_for_renewal() {
        assert!(matches!(
            classify(401, &HeaderMap::new(), "", Stamp::default()),
            Verdict::Unauthorized { .. }
        ));
    }

    #[test]
    fn clock_skew_is_transient_and_says_so() {
        let body = r#"{"error_code":"APIG.0301","error_msg":"Incorrect IAM authentication information: calc ak sk signature fail:signature expired, signature time:20261128T000000Z,server time:20261128T002000Z"}"#;
        for status in [401, 403] {
            match classify(status, &HeaderMap::new(), body, Stamp::default()) {
                Verdict::Transient {
                    why,
                    answer,
                    retry_after,
                } => {
                    assert!(why.starts_with(CLOCK_SKEW), "{why}");
                    assert!(why.contains("signature expired"), "{why}");
                    assert_eq!(answer.map(|a| a.status), Some(status));
                    assert_eq!(retry_after, None);
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        // A wrong key is not skew: renew and retry as for any 401.
        let wrong_key = r#"{"error_code":"APIG.0301","error_msg":"Incorrect IAM authentication information: verify aksk signature fail"}"#;
        assert!(matches!(
            classify(401, &HeaderMap::new(), wrong_key, Stamp::default()),
            Verdict::Unauthorized { .. }
        ));
    }

    #[test]
    fn retry_after_accepts_http_dates() {
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let mut h = HeaderMap::new();
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&later).unwrap_or(HeaderValue::from_static("0")),
        );
        let d = retry_after(&h).unwrap_or_default();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
    }
}
