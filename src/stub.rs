//! Loopback stand-in of the CodeArts "Upload a basic extension" endpoint and of IAM's token
//! endpoint, for integration tests, benchmarks and `extdrop demo`.
//!
//! The stub answers the way the cloud does, so that the client code under test cannot tell it
//! apart from the real service:
//!
//! - `POST /v3/{domain_id}/extension/upload?plugin_name=P&business_type=B` with a
//!   `multipart/form-data` body whose `upload_file` part carries the package. Success is
//!   `200` with the body `true`.
//! - `POST /v3/auth/tokens` with IAM's password body: `201`, the token in `X-Subject-Token`.
//!
//! Upload requests are authenticated as [`StubAuth`] says: IAM tokens in `X-Auth-Token`, or
//! SDK-HMAC-SHA256 signatures verified with [`crate::auth::sign`] against the stub's own clock,
//! which tests can put off ([`Stub::set_clock_offset`]) to see how clients take clock skew.
//! A `POST` to the upload path without query parameters is how `extdrop check --online`
//! proves its credentials: it is authenticated like an upload, then refused with 400, so
//! nothing is uploaded.
//!
//! Invariants:
//!
//! - Every response carries an `X-Request-Id` header (32 random hex digits), and every error of
//!   the upload endpoint is a JSON object `{"error_code": "...", "error_msg": "..."}`.
//! - Checks run in this order, the first failing one answers: route (404), domain (403),
//!   authentication (401), query parameters (400), content type (400), `upload_file` part
//!   (400). The error codes are listed in [`error_codes`]. A foreign `domain_id` answers 403,
//!   not 404: the route exists and the caller lacks permission on that tenant (the stub's
//!   choice; the API page lists both statuses without saying which). Only `POST`s to the upload
//!   route are upload requests; anything else is a 404 and is not recorded.
//! - The `upload_file` part is streamed: its size and SHA-256 are computed chunk by chunk, the
//!   file is never held whole in memory.
//! - The request body is always read to its end before an answer is sent (errors and scripted
//!   faults included). Answering early and closing a connection with unread data makes the
//!   kernel send a TCP reset, which can destroy the answer before the client reads it; draining
//!   first makes the status the client sees deterministic.
//! - Every upload request is recorded the moment its headers arrive ([`Stub::requests`]), and
//!   the record is completed when the answer is known. State sits behind a `std` mutex so
//!   synchronous tests can read it.
//! - Scripted [`Fault`]s are consumed in FIFO order, one per upload request, before any check.
//! - Dropping a [`Stub`] stops it and closes every connection, hung ones included.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot, watch};

pub mod metadata;

/// The token accepted by a default [`StubConfig`].
pub const DEFAULT_TOKEN: &str = "stub-token";
/// The IAM user name of the default [`StubConfig`]'s only user.
pub const DEFAULT_USER: &str = "stub-user";
/// The password of the default [`StubConfig`]'s only user.
pub const DEFAULT_PASSWORD: &str = "stub-password";
/// The account (domain) name of the default [`StubConfig`]'s only user.
pub const DEFAULT_DOMAIN_NAME: &str = "stub-domain";

/// Path of IAM's token endpoint, served by the same listener as the upload endpoint.
const IAM_TOKENS_PATH: &str = "/v3/auth/tokens";
/// IAM request bodies are a few hundred bytes; anything far larger is not a token request.
const IAM_BODY_LIMIT: usize = 64 * 1024;
/// The form field that carries the package, as on the API page.
const UPLOAD_FIELD: &str = "upload_file";

/// The `error_code` values the stub answers with.
///
/// The `APIG.*` codes and their messages are the API gateway's public ones (`APIG.0101` for an
/// unknown route, `APIG.0301` for every IAM authentication failure, `APIG.0308` for
/// throttling). The `DEVPIPE.*` codes are the stub's own choice in CodeArts' style: the API
/// page does not list the service's codes, so clients must judge by HTTP status, never by
/// these strings.
pub mod error_codes {
    /// 404: unknown path, or a method other than `POST` on a known one.
    pub const API_NOT_FOUND: &str = "APIG.0101";
    /// 401: `X-Auth-Token` missing, unknown or expired.
    pub const IAM_AUTH_FAILED: &str = "APIG.0301";
    /// 429: throttled by the gateway (used by [`super::Fault::throttled`]).
    pub const THROTTLED: &str = "APIG.0308";
    /// 400: `plugin_name` or `business_type` missing or empty.
    pub const INVALID_PARAMETER: &str = "DEVPIPE.00011001";
    /// 400: the body is not `multipart/form-data` (or has no boundary).
    pub const INVALID_CONTENT_TYPE: &str = "DEVPIPE.00011002";
    /// 400: no `upload_file` part, or a malformed multipart body.
    pub const UPLOAD_FILE_MISSING: &str = "DEVPIPE.00011003";
    /// 403: the `domain_id` in the path is not the stub's tenant.
    pub const NO_PERMISSION: &str = "DEVPIPE.00011004";
    /// 5xx: internal error (used by [`super::Fault::status`] for server errors).
    pub const INTERNAL_ERROR: &str = "DEVPIPE.00010500";
}

/// How the stub starts: the tenant, who may call it, and where it listens.
#[derive(Clone, Debug)]
pub struct StubConfig {
    /// The tenant (`domain_id`) the upload path must name; any other answers 403.
    pub domain_id: String,
    /// Which upload requests are authenticated.
    pub auth: StubAuth,
    /// How long a token issued by the IAM endpoint stays valid.
    pub token_lifetime: Duration,
    /// The IAM users that may obtain tokens.
    pub users: Vec<StubUser>,
    /// The loopback port to listen on; 0 picks a free one.
    pub port: u16,
}

impl StubConfig {
    /// A configuration for `domain_id` that accepts [`DEFAULT_TOKEN`], issues 24-hour tokens
    /// to one user ([`DEFAULT_USER`] / [`DEFAULT_PASSWORD`] in [`DEFAULT_DOMAIN_NAME`]) and
    /// listens on any free port.
    pub fn new(domain_id: impl Into<String>) -> Self {
        Self {
            domain_id: domain_id.into(),
            auth: StubAuth::Tokens(vec![DEFAULT_TOKEN.to_owned()]),
            token_lifetime: Duration::from_secs(24 * 60 * 60),
            users: vec![StubUser::new(
                DEFAULT_USER,
                DEFAULT_PASSWORD,
                DEFAULT_DOMAIN_NAME,
            )],
            port: 0,
        }
    }
}

/// Which upload requests the stub authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StubAuth {
    /// `X-Auth-Token` must be one of these, or a token issued by the IAM endpoint that has not
    /// expired yet.
    Tokens(Vec<String>),
    /// Requests must be signed with SDK-HMAC-SHA256 by one of these keys, as the API gateway
    /// checks them: `Host` and `X-Sdk-Date` signed, `X-Sdk-Date` within `max_skew` of the
    /// stub's clock (else the gateway's "signature expired" answer), the signature recomputed
    /// from the method, path, query and signed headers as received. `X-Security-Token`, when
    /// sent, must be signed; its value is recorded, not checked. The payload hash is the
    /// `X-Sdk-Content-Sha256` header (`UNSIGNED-PAYLOAD` for uploads); without it only a
    /// request without a body can be verified (empty-body hash), since the stub does not
    /// buffer bodies to hash them. Tokens issued by the IAM endpoint are accepted as well.
    Aksk {
        /// (access key, secret key) pairs.
        keys: Vec<(String, String)>,
        /// How far `X-Sdk-Date` may be from the stub's clock; the gateway allows 15 minutes.
        max_skew: Duration,
    },
    /// Every request is authenticated, with or without credentials.
    Any,
}

impl StubAuth {
    /// AK/SK verification with the gateway's 15-minute tolerance for the signing time.
    pub fn aksk(keys: Vec<(String, String)>) -> Self {
        Self::Aksk {
            keys,
            max_skew: MAX_SIGNATURE_SKEW,
        }
    }
}

/// How far the API gateway lets `X-Sdk-Date` stray from its own clock.
pub const MAX_SIGNATURE_SKEW: Duration = Duration::from_secs(15 * 60);

/// An IAM user that may obtain tokens from the stub's `/v3/auth/tokens`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StubUser {
    /// The IAM user name.
    pub name: String,
    /// The user's password.
    pub password: String,
    /// The account (domain) name the user belongs to.
    pub domain: String,
}

impl StubUser {
    /// A user `name` with `password` in the account `domain`.
    pub fn new(
        name: impl Into<String>,
        password: impl Into<String>,
        domain: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            password: password.into(),
            domain: domain.into(),
        }
    }
}

/// A scripted misbehaviour for one upload request, queued with [`Stub::push_faults`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status and error JSON without any check. The body is read to its end first
    /// (see the module invariants), then the answer is sent.
    Status {
        /// The HTTP status; a value that is not a valid status answers 500.
        status: u16,
        /// The `error_code` of the JSON body.
        error_code: String,
        /// The `error_msg` of the JSON body.
        error_msg: String,
        /// The `Retry-After` header's value, sent verbatim when set (if it is a valid header
        /// value).
        retry_after: Option<String>,
    },
    /// Read the body, then answer `200` with the body `false` (the API's "the call failed").
    False,
    /// Wait this long after the headers arrive, then handle the request normally.
    Delay(Duration),
    /// Close the connection as soon as the headers arrive, without any response.
    Drop,
    /// Read the body, then never answer. The connection stays open until the client gives up
    /// or the stub stops.
    Hang,
}

impl Fault {
    /// A [`Fault::Status`] with a plausible error code and message for `status`: the
    /// gateway's throttling error for 429, an internal error for 5xx, a generic one otherwise.
    pub fn status(status: u16) -> Self {
        let (error_code, error_msg) = match status {
            429 => (
                error_codes::THROTTLED,
                "The throttling threshold has been reached.",
            ),
            500..=599 => (error_codes::INTERNAL_ERROR, "Internal server error."),
            _ => (error_codes::INVALID_PARAMETER, "The request is invalid."),
        };
        Self::Status {
            status,
            error_code: error_code.to_owned(),
            error_msg: error_msg.to_owned(),
            retry_after: None,
        }
    }

    /// The gateway's 429 throttling answer with `Retry-After: retry_after`.
    pub fn throttled(retry_after: impl Into<String>) -> Self {
        match Self::status(429) {
            Self::Status {
                status,
                error_code,
                error_msg,
                ..
            } => Self::Status {
                status,
                error_code,
                error_msg,
                retry_after: Some(retry_after.into()),
            },
            other => other,
        }
    }
}

/// The credentials an upload request carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthKind {
    /// Neither `X-Auth-Token` nor `Authorization`.
    None,
    /// An IAM token in `X-Auth-Token` (takes precedence when both headers are present).
    Token(String),
    /// `Authorization: SDK-HMAC-SHA256 Access=AK, ...`; holds the access key (empty if the
    /// header names none). Whether the signature was good shows in the record's status.
    Signed {
        /// The `Access=` value of the header.
        access_key: String,
    },
    /// An `Authorization` header of another scheme.
    Other,
}

/// One upload request as the stub saw it, accepted or not.
#[derive(Clone, Debug)]
pub struct UploadRecord {
    /// The `X-Request-Id` the stub answered (or would have answered) with.
    pub request_id: String,
    /// When the request's headers arrived, for measuring intervals (backoff, delays).
    pub received: Instant,
    /// When the request's headers arrived, as wall-clock time.
    pub received_at: SystemTime,
    /// When the answer was sent; `None` while in progress, and for dropped or hung requests.
    pub answered: Option<Instant>,
    /// The `domain_id` segment of the path.
    pub domain_id: String,
    /// The `plugin_name` query parameter, percent-decoded, if present.
    pub plugin_name: Option<String>,
    /// The `business_type` query parameter, percent-decoded, if present.
    pub business_type: Option<String>,
    /// The credentials the request carried.
    pub auth: AuthKind,
    /// The `X-Security-Token` header (temporary AK/SK credentials), if sent.
    pub security_token: Option<String>,
    /// The fault consumed by this request, if any.
    pub fault: Option<Fault>,
    /// The `filename` of the `upload_file` part, once read.
    pub filename: Option<String>,
    /// The size in bytes of the `upload_file` part, once read completely.
    pub size: Option<u64>,
    /// The lowercase hex SHA-256 of the `upload_file` part, once read completely.
    pub sha256: Option<String>,
    /// The HTTP status answered; `None` while in progress, and for dropped or hung requests.
    pub status: Option<u16>,
    /// The `error_code` answered, for error answers.
    pub error_code: Option<String>,
    /// Whether the answer was the success `200 true`.
    pub accepted: bool,
}

/// The running stand-in. Dropping it stops the server and closes all its connections.
#[derive(Debug)]
pub struct Stub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    runner: Option<Runner>,
}

/// What runs the accept loop, so that stopping can wait for it.
#[derive(Debug)]
enum Runner {
    /// A task on the caller's tokio runtime ([`Stub::start`]).
    Task(tokio::task::JoinHandle<()>),
    /// A thread with its own runtime ([`Stub::start_background`]); the receiver fires once the
    /// runtime is gone.
    Thread(std::thread::JoinHandle<()>, oneshot::Receiver<()>),
}

impl Stub {
    /// Binds `127.0.0.1:{config.port}` and serves on the current tokio runtime.
    pub async fn start(config: StubConfig) -> std::io::Result<Stub> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, config.port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, Arc::clone(&shared), stopped));
        tracing::debug!(%addr, "stub listening");
        Ok(Stub {
            addr,
            shared,
            stop,
            runner: Some(Runner::Task(task)),
        })
    }

    /// Convenience for synchronous tests: starts its own multi-thread tokio runtime on a
    /// background thread.
    pub fn start_background(config: StubConfig) -> std::io::Result<Stub> {
        // Bind here rather than on the thread so that a busy port is reported to the caller.
        let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, config.port))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("extdrop-stub")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::new(config));
        let (stop, stopped) = watch::channel(false);
        let (done_tx, done_rx) = oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("extdrop-stub".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(std_listener) {
                        Ok(listener) => serve(listener, thread_shared, stopped).await,
                        Err(error) => tracing::error!(%error, "stub cannot use its listener"),
                    }
                });
                drop(runtime);
                let _ = done_tx.send(());
            })?;
        tracing::debug!(%addr, "stub listening on a background thread");
        Ok(Stub {
            addr,
            shared,
            stop,
            runner: Some(Runner::Thread(thread, done_rx)),
        })
    }

    /// The base URL of both endpoints, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the stub listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The tenant the upload path must name.
    pub fn domain_id(&self) -> &str {
        &self.shared.domain_id
    }

    /// Appends faults to the queue; each upload request consumes the oldest one.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.lock().faults.extend(faults);
    }

    /// Faults still queued.
    pub fn pending_faults(&self) -> usize {
        self.shared.lock().faults.len()
    }

    /// Replaces the accepted static tokens (switching to [`StubAuth::Tokens`] if the stub
    /// accepted anything). Tokens issued by the IAM endpoint stay valid until they expire.
    pub fn set_tokens(&self, tokens: Vec<String>) {
        self.shared.lock().auth = StubAuth::Tokens(tokens);
    }

    /// Replaces the authentication mode.
    pub fn set_auth(&self, auth: StubAuth) {
        self.shared.lock().auth = auth;
    }

    /// All upload requests, in arrival order, including those still in progress.
    pub fn requests(&self) -> Vec<UploadRecord> {
        self.shared.lock().requests.clone()
    }

    /// The accepted upload requests (answered `200 true`), in arrival order.
    pub fn uploads(&self) -> Vec<UploadRecord> {
        let state = self.shared.lock();
        state
            .requests
            .iter()
            .filter(|r| r.accepted)
            .cloned()
            .collect()
    }

    /// Upload requests whose headers have arrived, answered or not.
    pub fn uploads_started(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Upload requests that have been answered, with any status.
    pub fn uploads_completed(&self) -> usize {
        let state = self.shared.lock();
        state.requests.iter().filter(|r| r.status.is_some()).count()
    }

    /// Requests received by the IAM token endpoint, successful or not.
    pub fn iam_requests(&self) -> usize {
        self.shared.lock().iam_requests
    }

    /// Tokens issued by the IAM token endpoint.
    pub fn tokens_issued(&self) -> usize {
        self.shared.lock().tokens_issued
    }

    /// The values of the tokens the IAM endpoint issued, e.g. to make sure a client never
    /// prints one.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.lock().issued.keys().cloned().collect()
    }

    /// Puts the stub's clock `offset` ahead of (or, with `ahead = false`, behind) this
    /// machine's. The stub's clock judges `X-Sdk-Date` and stamps IAM tokens' `issued_at` and
    /// `expires_at` (their validity is still measured on the monotonic clock).
    pub fn set_clock_offset(&self, offset: Duration, ahead: bool) {
        self.shared.lock().clock_offset = (offset, ahead);
    }

    /// Stops accepting, closes every connection and waits until the server is gone.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        match self.runner.take() {
            Some(Runner::Task(task)) => {
                let _ = task.await;
            }
            Some(Runner::Thread(thread, done)) => {
                // Wait without blocking the caller's runtime; the join after it is immediate.
                let _ = done.await;
                let _ = thread.join();
            }
            None => {}
        }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        // A background thread is joined so that the port is closed when `drop` returns; it
        // finishes promptly because every connection task is aborted. A task on the caller's
        // runtime cannot be awaited here; it ends on its own.
        if let Some(Runner::Thread(thread, _)) = self.runner.take() {
            let _ = thread.join();
        }
    }
}

/// Serves until `stopped` turns true (or its sender is gone); every connection task is then
/// aborted, so that hung requests do not outlive the stub.
async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await (it is not `Send`).
    let stop = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    crate::accept::accept_until(listener, stop, usize::MAX, "stub", move |stream| {
        serve_connection(stream, Arc::clone(&shared))
    })
    .await;
}

/// Serves HTTP/1.1 on one connection until it closes or a [`Fault::Drop`] kills it.
async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    // Dropping the connection future is the only way to close the socket without writing a
    // response, so a request that wants that signals here and the future is dropped below.
    let kill = Arc::new(Notify::new());
    let service_kill = Arc::clone(&kill);
    let service = hyper::service::service_fn(move |request| {
        let shared = Arc::clone(&shared);
        let kill = Arc::clone(&service_kill);
        async move { Ok::<_, Infallible>(shared.handle(request, &kill).await) }
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%error, "stub connection ended with an error");
            }
        }
        () = kill.notified() => tracing::debug!("stub dropped a connection"),
    }
}

/// A token issued by the IAM endpoint.
#[derive(Debug)]
struct IssuedToken {
    expires: Instant,
    expires_at: String,
}

/// The mutable part of the stub.
#[derive(Debug)]
struct State {
    auth: StubAuth,
    issued: HashMap<String, IssuedToken>,
    faults: VecDeque<Fault>,
    requests: Vec<UploadRecord>,
    iam_requests: usize,
    tokens_issued: usize,
    /// How far the stub's clock is from this machine's, and whether ahead.
    clock_offset: (Duration, bool),
}

impl State {
    /// The time on the stub's clock.
    fn now(&self) -> SystemTime {
        let (offset, ahead) = self.clock_offset;
        let now = SystemTime::now();
        // Offsets beyond what `SystemTime` can hold pin the clock rather than panic.
        if ahead {
            now.checked_add(offset).unwrap_or(now)
        } else {
            now.checked_sub(offset).unwrap_or(std::time::UNIX_EPOCH)
        }
    }
}

/// Everything a request handler needs; one per stub, shared by all connections.
#[derive(Debug)]
struct Shared {
    domain_id: String,
    token_lifetime: Duration,
    users: Vec<StubUser>,
    state: Mutex<State>,
}

/// An error answer of the upload endpoint.
#[derive(Debug)]
struct Rejection {
    status: StatusCode,
    error_code: String,
    error_msg: String,
}

impl Rejection {
    fn new(status: StatusCode, error_code: &str, error_msg: impl Into<String>) -> Self {
        Self {
            status,
            error_code: error_code.to_owned(),
            error_msg: error_msg.into(),
        }
    }

    fn unauthorized(error_msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            error_codes::IAM_AUTH_FAILED,
            error_msg,
        )
    }

    fn bad_request(error_code: &str, error_msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error_code, error_msg)
    }

    fn response(&self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({
            "error_code": self.error_code,
            "error_msg": self.error_msg,
        });
        json_response(self.status, body.to_string())
    }
}

/// The `upload_file` part, as far as it was read.
#[derive(Debug, Default)]
struct FilePart {
    filename: Option<String>,
    size: u64,
    sha256: String,
}

/// Why a multipart body could not be used.
#[derive(Debug)]
enum BodyError {
    NotMultipart(String),
    Malformed(String),
    NoUploadFile,
}

impl Shared {
    fn new(config: StubConfig) -> Self {
        Self {
            domain_id: config.domain_id,
            token_lifetime: config.token_lifetime,
            users: config.users,
            state: Mutex::new(State {
                auth: config.auth,
                issued: HashMap::new(),
                faults: VecDeque::new(),
                requests: Vec::new(),
                iam_requests: 0,
                tokens_issued: 0,
                clock_offset: (Duration::ZERO, true),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide every later assertion.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes one request and stamps the request id on the answer.
    async fn handle(&self, request: Request<Incoming>, kill: &Notify) -> Response<Full<Bytes>> {
        let request_id = format!("{:032x}", fastrand::u128(..));
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let mut response = if path == IAM_TOKENS_PATH && parts.method == Method::POST {
            self.handle_iam(body).await
        } else if let (Some(domain_id), true) = (upload_domain(&path), parts.method == Method::POST)
        {
            let domain_id = domain_id.to_owned();
            self.handle_upload(&request_id, domain_id, parts, body, kill)
                .await
        } else {
            drain(body).await;
            Rejection::new(
                StatusCode::NOT_FOUND,
                error_codes::API_NOT_FOUND,
                "The API does not exist or has not been published in the environment.",
            )
            .response()
        };
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response
                .headers_mut()
                .insert(HeaderName::from_static("x-request-id"), value);
        }
        response
    }

    /// The upload endpoint: record, apply a queued fault, then check and read the request.
    async fn handle_upload(
        &self,
        request_id: &str,
        domain_id: String,
        parts: Parts,
        body: Incoming,
        kill: &Notify,
    ) -> Response<Full<Bytes>> {
        let query = parts.uri.query().unwrap_or("");
        let record = UploadRecord {
            request_id: request_id.to_owned(),
            received: Instant::now(),
            received_at: SystemTime::now(),
            answered: None,
            domain_id,
            plugin_name: query_param(query, "plugin_name"),
            business_type: query_param(query, "business_type"),
            auth: auth_kind(&parts),
            security_token: parts
                .headers
                .get(crate::auth::sign::HEADER_SECURITY_TOKEN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            fault: None,
            filename: None,
            size: None,
            sha256: None,
            status: None,
            error_code: None,
            accepted: false,
        };
        let index = {
            let mut state = self.lock();
            state.requests.push(record);
            state.requests.len() - 1
        };
        let fault = {
            let mut state = self.lock();
            let fault = state.faults.pop_front();
            if let Some(record) = state.requests.get_mut(index) {
                record.fault.clone_from(&fault);
            }
            fault
        };
        tracing::debug!(request_id, ?fault, "stub upload request");

        match fault {
            Some(Fault::Drop) => {
                kill.notify_one();
                return std::future::pending().await;
            }
            Some(Fault::Hang) => {
                let file = consume_body(&parts, body).await;
                self.update(index, |r| r.set_file(file));
                return std::future::pending().await;
            }
            Some(Fault::Status {
                status,
                error_code,
                error_msg,
                retry_after,
            }) => {
                let file = consume_body(&parts, body).await;
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let rejection = Rejection {
                    status,
                    error_code,
                    error_msg,
                };
                let mut response = rejection.response();
                if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    response.headers_mut().insert(RETRY_AFTER, value);
                }
                self.update(index, |r| {
                    r.set_file(file);
                    r.set_answer(status, Some(&rejection.error_code), false);
                });
                return response;
            }
            Some(Fault::False) => {
                let file = consume_body(&parts, body).await;
                self.update(index, |r| {
                    r.set_file(file);
                    r.set_answer(StatusCode::OK, None, false);
                });
                return json_response(StatusCode::OK, "false");
            }
            Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
            None => {}
        }

        match self.check_upload(index, &parts, body).await {
            Ok(()) => {
                self.update(index, |r| r.set_answer(StatusCode::OK, None, true));
                json_response(StatusCode::OK, "true")
            }
            Err(rejection) => {
                self.update(index, |r| {
                    r.set_answer(rejection.status, Some(&rejection.error_code), false);
                });
                rejection.response()
            }
        }
    }

    /// The checks of a normal upload, in the cloud's order; reads the body in every case.
    async fn check_upload(
        &self,
        index: usize,
        parts: &Parts,
        body: Incoming,
    ) -> Result<(), Rejection> {
        if let Err(rejection) = self.check_head(index, parts) {
            drain(body).await;
            return Err(rejection);
        }
        match read_upload(parts, body).await {
            Ok(file) => {
                self.update(index, |r| r.set_file(Some(file)));
                Ok(())
            }
            Err(BodyError::NotMultipart(why)) => Err(Rejection::bad_request(
                error_codes::INVALID_CONTENT_TYPE,
                format!("Content-Type must be multipart/form-data: {why}."),
            )),
            Err(BodyError::Malformed(why)) => Err(Rejection::bad_request(
                error_codes::UPLOAD_FILE_MISSING,
                format!("The multipart body is malformed: {why}."),
            )),
            Err(BodyError::NoUploadFile) => Err(Rejection::bad_request(
                error_codes::UPLOAD_FILE_MISSING,
                "The form field upload_file is required.",
            )),
        }
    }

    /// The checks that need only the request head: domain, credentials, query.
    fn check_head(&self, index: usize, parts: &Parts) -> Result<(), Rejection> {
        let (domain_id, plugin_name, business_type) = {
            let state = self.lock();
            let record = state.requests.get(index);
            (
                record.map(|r| r.domain_id.clone()).unwrap_or_default(),
                record.and_then(|r| r.plugin_name.clone()),
                record.and_then(|r| r.business_type.clone()),
            )
        };
        if domain_id != self.domain_id {
            return Err(Rejection::new(
                StatusCode::FORBIDDEN,
                error_codes::NO_PERMISSION,
                format!("You do not have permission to access tenant {domain_id}."),
            ));
        }
        self.authenticate(parts)?;
        for (name, value) in [
            ("plugin_name", plugin_name),
            ("business_type", business_type),
        ] {
            if value.is_none_or(|v| v.is_empty()) {
                return Err(Rejection::bad_request(
                    error_codes::INVALID_PARAMETER,
                    format!("Invalid parameter: {name} is required."),
                ));
            }
        }
        Ok(())
    }

    /// Decides whether the request's credentials are acceptable, as [`StubAuth`] says.
    fn authenticate(&self, parts: &Parts) -> Result<(), Rejection> {
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
                None => verify_signature(parts, keys, *max_skew, state.now()),
            },
        }
    }

    /// IAM's `POST /v3/auth/tokens` with the password method.
    async fn handle_iam(&self, body: Incoming) -> Response<Full<Bytes>> {
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

    fn update(&self, index: usize, change: impl FnOnce(&mut UploadRecord)) {
        if let Some(record) = self.lock().requests.get_mut(index) {
            change(record);
        }
    }
}

impl UploadRecord {
    fn set_file(&mut self, file: Option<FilePart>) {
        if let Some(file) = file {
            self.filename = file.filename;
            self.size = Some(file.size);
            self.sha256 = Some(file.sha256);
        }
    }

    fn set_answer(&mut self, status: StatusCode, error_code: Option<&str>, accepted: bool) {
        self.answered = Some(Instant::now());
        self.status = Some(status.as_u16());
        self.error_code = error_code.map(str::to_owned);
        self.accepted = accepted;
    }
}

/// The `domain_id` of an upload path `/v3/{domain_id}/extension/upload`.
fn upload_domain(path: &str) -> Option<&str> {
    let domain_id = path
        .strip_prefix("/v3/")?
        .strip_suffix("/extension/upload")?;
    (!domain_id.is_empty() && !domain_id.contains('/')).then_some(domain_id)
}

/// Accepts `token` if it is one of the static `tokens` or an unexpired IAM-issued one.
fn check_token(state: &State, tokens: &[String], token: &str) -> Result<(), Rejection> {
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
fn verify_signature(
    parts: &Parts,
    keys: &[(String, String)],
    max_skew: Duration,
    now: SystemTime,
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
    let payload_hash = match header(sign::HEADER_CONTENT_SHA256) {
        Some(hash) => hash,
        None if !has_body => sign::EMPTY_PAYLOAD_SHA256,
        None => {
            return Err(refuse(
                "verify aksk signature fail: the stand-in verifies bodies only with x-sdk-content-sha256",
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
fn auth_kind(parts: &Parts) -> AuthKind {
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

/// The percent-decoded value of query parameter `name`, if present.
fn query_param(query: &str, name: &str) -> Option<String> {
    query_pairs(query)
        .into_iter()
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// Every query parameter, percent-decoded, in order; empty pieces (`a=1&&b=2`) are skipped,
/// as URL parsers do.
fn query_pairs(query: &str) -> Vec<(String, String)> {
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
fn percent_decode(text: &str) -> String {
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

/// A JSON answer with `status`.
fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
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

/// Reads and discards the rest of a body; a broken connection simply ends it.
async fn drain(mut body: Incoming) {
    while let Some(Ok(_)) = body.frame().await {}
}

/// Reads a body of at most `limit` bytes; a larger one is drained and yields `None`.
async fn read_small_body(mut body: Incoming, limit: usize) -> Option<Vec<u8>> {
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

/// Reads a faulted request's body, recording the `upload_file` part if the body is a usable
/// multipart one.
async fn consume_body(parts: &Parts, body: Incoming) -> Option<FilePart> {
    read_upload(parts, body).await.ok()
}

/// Streams a multipart body, hashing the first `upload_file` part; always reads the body to
/// its end, whatever happens.
async fn read_upload(parts: &Parts, body: Incoming) -> Result<FilePart, BodyError> {
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = match multer::parse_boundary(content_type) {
        Ok(boundary) => boundary,
        Err(error) => {
            drain(body).await;
            return Err(BodyError::NotMultipart(error.to_string()));
        }
    };
    let body = SharedBody::new(body);
    let result = {
        let mut multipart = multer::Multipart::new(BodyDataStream::new(body.clone()), boundary);
        read_parts(&mut multipart).await
    };
    // multer stops at the first error and may stop before the end of the body.
    if let Some(rest) = body.take() {
        drain(rest).await;
    }
    result
}

async fn read_parts(multipart: &mut multer::Multipart<'_>) -> Result<FilePart, BodyError> {
    let malformed = |error: multer::Error| BodyError::Malformed(error.to_string());
    let mut file = None;
    while let Some(mut field) = multipart.next_field().await.map_err(malformed)? {
        // Only the first upload_file counts; other fields are skipped by `next_field`.
        if file.is_some() || field.name() != Some(UPLOAD_FIELD) {
            continue;
        }
        let filename = field.file_name().map(str::to_owned);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = field.chunk().await.map_err(malformed)? {
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        file = Some(FilePart {
            filename,
            size,
            sha256: hex::encode(hasher.finalize()),
        });
    }
    file.ok_or(BodyError::NoUploadFile)
}

/// A request body that multer can own while the handler keeps a way to drain what multer
/// leaves unread.
#[derive(Clone, Debug)]
struct SharedBody(Arc<Mutex<Option<Incoming>>>);

impl SharedBody {
    fn new(body: Incoming) -> Self {
        Self(Arc::new(Mutex::new(Some(body))))
    }

    fn take(&self) -> Option<Incoming> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Body for SharedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut body = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The tenant of the recorded SDK request.
    const DOMAIN: &str = "ce8df55870164338a72d7e828a966a2a";

    /// A request made by the official Python SDK (huaweicloudsdkcodeartspipeline, AK/SK
    /// signed), captured byte for byte: the project's shared test vector.
    const SDK_UPLOAD_REQUEST: &str = include_str!("auth/testdata/sdk-upload-request.json");

    /// The empty ZIP (end-of-central-directory record only) the SDK request carries.
    const EMPTY_ZIP: &[u8] = b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

    fn client() -> reqwest::Client {
        // Environment proxies would send loopback requests elsewhere.
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client builds")
    }

    fn upload_url(stub: &Stub, domain: &str, query: &str) -> String {
        format!("{}/v3/{domain}/extension/upload?{query}", stub.endpoint())
    }

    fn good_url(stub: &Stub) -> String {
        upload_url(stub, DOMAIN, "plugin_name=demo_task&business_type=Deploy")
    }

    fn zip_form() -> reqwest::multipart::Form {
        let part = reqwest::multipart::Part::bytes(EMPTY_ZIP)
            .file_name("demo_task__Deploy.zip")
            .mime_str("application/zip")
            .expect("mime parses");
        reqwest::multipart::Form::new().part("upload_file", part)
    }

    async fn upload(stub: &Stub, token: Option<&str>) -> reqwest::Result<reqwest::Response> {
        let mut request = client().post(good_url(stub)).multipart(zip_form());
        if let Some(token) = token {
            request = request.header("X-Auth-Token", token);
        }
        request.send().await
    }

    fn request_id(response: &reqwest::Response) -> String {
        let id = response
            .headers()
            .get("x-request-id")
            .expect("X-Request-Id present")
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        id
    }

    /// Asserts an error answer of the gateway/CodeArts shape and returns its message.
    async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> String {
        assert_eq!(response.status().as_u16(), status);
        request_id(&response);
        assert_eq!(
            response.headers().get(CONTENT_TYPE).expect("content type"),
            "application/json"
        );
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON body");
        assert_eq!(body["error_code"], code, "{body}");
        body["error_msg"].as_str().expect("error_msg").to_owned()
    }

    async fn assert_accepted(response: reqwest::Response) {
        assert_eq!(response.status().as_u16(), 200);
        request_id(&response);
        assert_eq!(
            response.headers().get(CONTENT_TYPE).expect("content type"),
            "application/json"
        );
        assert_eq!(response.text().await.expect("body"), "true");
    }

    /// Sends raw bytes and reads one `Content-Length` response: (status, headers, body).
    async fn raw_exchange(
        addr: SocketAddr,
        request: &[u8],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut buffer = Vec::new();
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before the response head");
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buffer[..head_end].to_vec()).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .expect("content-length");
        let mut body = buffer[head_end + 4..].to_vec();
        while body.len() < length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before the response body");
            body.extend_from_slice(&chunk[..n]);
        }
        (status, headers, body)
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Rebuilds the SDK's request exactly: request line, headers in order, body.
    fn sdk_request_bytes() -> Vec<u8> {
        let vectors: serde_json::Value =
            serde_json::from_str(SDK_UPLOAD_REQUEST).expect("vector parses");
        let vector = &vectors[0];
        let mut request = format!(
            "POST {} HTTP/1.1\r\n",
            vector["path"].as_str().expect("path")
        );
        for (name, value) in vector["headers"].as_object().expect("headers") {
            request.push_str(&format!("{name}: {}\r\n", value.as_str().expect("value")));
        }
        request.push_str("\r\n");
        let body = vector["body_head"].as_str().expect("body");
        assert_eq!(body.len(), 186);
        assert_eq!(vector["body_len"], 186);
        request.push_str(body);
        request.into_bytes()
    }

    #[tokio::test]
    async fn sdk_request_is_accepted_byte_for_byte_in_any_mode() {
        let mut config = StubConfig::new(DOMAIN);
        config.auth = StubAuth::Any;
        let stub = Stub::start(config).await.expect("stub starts");

        let (status, headers, body) = raw_exchange(stub.addr(), &sdk_request_bytes()).await;

        assert_eq!(status, 200);
        assert_eq!(body, b"true");
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        let id = header(&headers, "x-request-id").expect("X-Request-Id");
        let uploads = stub.uploads();
        assert_eq!(uploads.len(), 1);
        let upload = &uploads[0];
        assert_eq!(upload.request_id, id);
        assert_eq!(upload.domain_id, DOMAIN);
        assert_eq!(upload.plugin_name.as_deref(), Some("demo_task"));
        assert_eq!(upload.business_type.as_deref(), Some("Deploy"));
        assert_eq!(upload.filename.as_deref(), Some("demo_task__Deploy.zip"));
        assert_eq!(upload.size, Some(22));
        assert_eq!(
            upload.sha256.as_deref(),
            Some(hex::encode(Sha256::digest(EMPTY_ZIP)).as_str())
        );
        assert_eq!(
            upload.auth,
            AuthKind::Signed {
                access_key: "AKEXAMPLE0123456789".to_owned()
            }
        );
        assert_eq!(upload.status, Some(200));
        assert!(upload.accepted);
        stub.shutdown().await;
    }

    #[tokio::test]
    async fn sdk_request_without_token_is_unauthorized_in_token_mode() {
        let stub = Stub::start(StubConfig::new(DOMAIN))
            .await
            .expect("stub starts");
        let (status, headers, body) = raw_exchange(stub.addr(), &sdk_request_bytes()).await;
        assert_eq!(status, 401);
        assert!(header(&headers, "x-request-id").is_some());
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["error_code"], error_codes::IAM_AUTH_FAILED);
        assert!(stub.uploads().is_empty());
        assert_eq!(stub.requests()[0].status, Some(401));
    }

    #[tokio::test]
    async fn streamed_multi_mib_upload_is_hashed_correctly() {
        let stub = Stub::start(StubConfig::new(DOMAIN))
            .await
            .expect("stub starts");
        let mut rng = fastrand::Rng::with_seed(7);
        let data: Vec<u8> = (0..5 * 1024 * 1024 + 123).map(|_| rng.u8(..)).collect();
        let expected = hex::encode(Sha256::digest(&data));
        // Sent in chunks without a length, so the request uses chunked transfer encoding.
        let chunks: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let part = reqwest::multipart::Part::stream(body)
            .file_name("big__Build.zip")
            .mime_str("application/zip")
            .expect("mime parses");
        let form = reqwest::multipart::Form::new()
            .text("comment", "ignored")
            .part("upload_file", part);

        let response = client()
            .post(upload_url(
                &stub,
                DOMAIN,
                "plugin_name=big&business_type=Build",
            ))
            .header("X-Auth-Token", DEFAULT_TOKEN)
            .multipart(form)
            .send()
            .await
            .expect("request succeeds");

        assert_accepted(response).await;
        let uploads = stub.uploads();
        assert_eq!(uploads.len(), 1);
        assert_eq!(uploads[0].size, Some(data.len() as u64));
        assert_eq!(uploads[0].sha256.as_deref(), Some(expected.as_str()));
        assert_eq!(uploads[0].filename.as_deref(), Some("big__Build.zip"));
        assert_eq!(uploads[0].auth, AuthKind::Token(DEFAULT_TOKEN.to_owned()));
        stub.shutdown().await;
    }

    #[tokio::test]
    async fn every_rejection_answers_its_status_code_and_request_id() {
        let stub = Stub::start(StubConfig::new(DOMAIN))
            .await
            .expect("stub starts");
        let client = client();
        let token = DEFAULT_TOKEN;

        // Routes: not recorded as uploads.
        let response = client
            .get(good_url(&stub))
            .header("X-Auth-Token", token)
            .send()
            .await
            .expect("sent");
        assert_error(response, 404, error_codes::API_NOT_FOUND).await;
        let response = client
            .post(format!("{}/v3/{DOMAIN}/extension/uploads", stub.endpoint()))
            .header("X-Auth-Token", token)
            .multipart(zip_form())
            .send()
            .await
            .expect("sent");
        assert_error(response, 404, error_codes::API_NOT_FOUND).await;
        let response = client
            .get(format!("{}{IAM_TOKENS_PATH}", stub.endpoint()))
            .send()
            .await
            .expect("sent");
        assert_error(response, 404, error_codes::API_NOT_FOUND).await;
        assert_eq!(stub.uploads_started(), 0);

        // The domain is checked before the credentials.
        let response = client
            .post(upload_url(
                &stub,
                "0123456789abcdef0123456789abcdef",
                "plugin_name=a&business_type=Build",
            ))
            .multipart(zip_form())
            .send()
            .await
            .expect("sent");
        assert_error(response, 403, error_codes::NO_PERMISSION).await;

        let response = upload(&stub, None).await.expect("sent");
        let msg = assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
        assert!(msg.contains("x-auth-token not found"), "{msg}");
        let response = upload(&stub, Some("wrong")).await.expect("sent");
        let msg = assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
        assert!(msg.contains("decrypt token fail"), "{msg}");
        let response = client
            .post(good_url(&stub))
            .header(
                "Authorization",
                "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, Signature=00",
            )
            .multipart(zip_form())
            .send()
            .await
            .expect("sent");
        assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;

        // Credentials are checked before the query.
        for query in [
            "business_type=Build",
            "plugin_name=a&business_type=",
            "plugin_name=&business_type=Build",
            "",
        ] {
            let response = client
                .post(upload_url(&stub, DOMAIN, query))
                .header("X-Auth-Token", token)
                .multipart(zip_form())
                .send()
                .await
                .expect("sent");
            assert_error(response, 400, error_codes::INVALID_PARAMETER).await;
        }
        let response = client
            .post(upload_url(
                &stub,
                DOMAIN,
                "plugin_name=a&business_type=Build",
            ))
            .multipart(zip_form())
            .send()
            .await
            .expect("sent");
        assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;

        let response = client
            .post(good_url(&stub))
            .header("X-Auth-Token", token)
            .header(CONTENT_TYPE, "application/zip")
            .body(EMPTY_ZIP)
            .send()
            .await
            .expect("sent");
        assert_error(response, 400, error_codes::INVALID_CONTENT_TYPE).await;
        let response = client
            .post(good_url(&stub))
            .header("X-Auth-Token", token)
            .header(CONTENT_TYPE, "multipart/form-data")
            .body(EMPTY_ZIP)
            .send()
            .await
            .expect("sent");
        assert_error(response, 400, error_codes::INVALID_CONTENT_TYPE).await;

        let form = reqwest::multipart::Form::new().text("file", "not the upload_file field");
        let response = client
            .post(good_url(&stub))
            .header("X-Auth-Token", token)
            .multipart(form)
            .send()
            .await
            .expect("sent");
        let msg = assert_error(response, 400, error_codes::UPLOAD_FILE_MISSING).await;
        assert!(msg.contains("upload_file"), "{msg}");
        let response = client
            .post(good_url(&stub))
            .header("X-Auth-Token", token)
            .header(CONTENT_TYPE, "multipart/form-data; boundary=xyz")
            .body("this is no multipart body")
            .send()
            .await
            .expect("sent");
        assert_error(response, 400, error_codes::UPLOAD_FILE_MISSING).await;

        let statuses: Vec<Option<u16>> = stub.requests().iter().map(|r| r.status).collect();
        let mut expected = vec![Some(403), Some(401), Some(401), Some(401)];
        expected.extend([Some(400); 4]);
        expected.extend([Some(401), Some(400), Some(400), Some(400), Some(400)]);
        assert_eq!(statuses, expected);
        assert_eq!(stub.uploads_completed(), expected.len());
        assert!(stub.uploads().is_empty());
        let ids: std::collections::HashSet<String> =
            stub.requests().into_iter().map(|r| r.request_id).collect();
        assert_eq!(ids.len(), expected.len(), "request ids are unique");
        stub.shutdown().await;
    }

    #[tokio::test]
    async fn early_rejection_of_a_large_body_reaches_the_client() {
        // Regression guard for answering before the body is read. A client that writes the
        // whole request before reading (as simple clients do) must get the 401, not a stalled
        // write or a connection reset, however large the body.
        let stub = Stub::start(StubConfig::new(DOMAIN))
            .await
            .expect("stub starts");
        let boundary = "b0undary";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"upload_file\"; \
             filename=\"x.zip\"\r\n\r\n"
        )
        .into_bytes();
        body.extend(std::iter::repeat_n(7u8, 8 * 1024 * 1024));
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut request = format!(
            "POST /v3/{DOMAIN}/extension/upload?plugin_name=x&business_type=Test HTTP/1.1\r\n\
             Host: {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
             Content-Length: {}\r\n\r\n",
            stub.addr(),
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);

        let (status, headers, body) =
            tokio::time::timeout(Duration::from_secs(20), raw_exchange(stub.addr(), &request))
                .await
                .expect("the answer arrives");
        assert_eq!(status, 401);
        assert!(header(&headers, "x-request-id").is_some());
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["error_code"], error_codes::IAM_AUTH_FAILED);
        stub.shutdown().await;
    }

    #[tokio::test]
    async fn faults_are_applied_in_queue_order() {
        let stub = Stub::start(StubConfig::new(DOMAIN))
            .await
            .expect("stub starts");
        let unavailable = Fault::Status {
            status: 503,
            error_code: "CUSTOM.503".to_owned(),
            error_msg: "busy".to_owned(),
            retry_after: None,
        };
        let delay = Duration::from_millis(300);
        stub.push_faults([
            Fault::throttled("3"),
            Fault::False,
            Fault::Delay(delay),
            Fault::Drop,
        ]);
        stub.push_faults([unavailable.clone()]);
        assert_eq!(stub.pending_faults(), 5);
        let token = Some(DEFAULT_TOKEN);

        let response = upload(&stub, token).await.expect("sent");
        assert_eq!(
            response.headers().get(RETRY_AFTER).expect("Retry-After"),
            "3"
        );
        assert_error(response, 429, error_codes::THROTTLED).await;

        let response = upload(&stub, token).await.expect("sent");
        assert_eq!(response.status().as_u16(), 200);
        request_id(&response);
        assert_eq!(response.text().await.expect("body"), "false");

        let started = Instant::now();
        let response = upload(&stub, token).await.expect("sent");
        assert!(started.elapsed() >= delay);
        assert_accepted(response).await;

        let error = upload(&stub, token).await.expect_err("connection dropped");
        assert!(!error.is_status() && !error.is_timeout(), "{error:?}");

        let response = upload(&stub, token).await.expect("sent");
        let msg = assert_error(response, 503, "CUSTOM.503").await;
        assert_eq!(msg, "busy");

        assert_eq!(stub.pending_faults(), 0);
        assert_accepted(upload(&stub, token).await.expect("sent")).await;

        let requests = stub.requests();
        let faults: Vec<Option<Fault>> = requests.iter().map(|r| r.fault.clone()).collect();
        assert_eq!(
            faults,
            [
                Some(Fault::throttled("3")),
                Some(Fault::False),
                Some(Fault::Delay(delay)),
                Some(Fault::Drop),
                Some(unavailable),
                None,
            ]
        );
        let statuses: Vec<Option<u16>> = requests.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [Some(429), Some(200), Some(200), None, Some(503), Some(200)]
        );
        // Faulted requests that read the body still record the file.
        assert_eq!(requests[1].size, Some(22));
        assert_eq!(stub.uploads().len(), 2);
        assert_eq!(stub.uploads_started(), 6);
        assert_eq!(stub.uploads_completed(), 5);
        stub.shutdown().await;
    }

    #[tokio::test]
    async fn a_hung_request_is_recorded_and_does_not_block_shutdown() {
        let stub = Stub::start(StubConfig::new(DOMAIN))
            .await
            .expect("stub starts");
        stub.push_faults([Fault::Hang]);
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(500))
            .build()
            .expect("client builds");
        let error = client
            .post(good_url(&stub))
            .header("X-Auth-Token", DEFAULT_TOKEN)
            .multipart(zip_form())
            .send()
            .await
            .expect_err("no answer");
        assert!(error.is_timeout(), "{error:?}");

        let requests = stub.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].fault, Some(Fault::Hang));
        assert_eq!(requests[0].status, None);
        assert_eq!(requests[0].size, Some(22));
        assert_eq!(stub.uploads_started(), 1);
        assert_eq!(stub.uploads_completed(), 0);
        tokio::time::timeout(Duration::from_secs(5), stub.shutdown())
            .await
            .expect("shutdown does not wait for the hung request");
    }

    async fn obtain_token(
        stub: &Stub,
        name: &str,
        password: &str,
        domain: &str,
    ) -> reqwest::Response {
        let body = serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": name, "password": password, "domain": {"name": domain}}}},
            "scope": {"domain": {"name": domain}}}});
        client()
            .post(format!("{}/v3/auth/tokens", stub.endpoint()))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("sent")
    }

    #[tokio::test]
    async fn iam_tokens_are_issued_accepted_and_expire() {
        let mut config = StubConfig::new(DOMAIN);
        config.token_lifetime = Duration::from_secs(2);
        let stub = Stub::start(config).await.expect("stub starts");

        let response = obtain_token(&stub, DEFAULT_USER, "wrong", DEFAULT_DOMAIN_NAME).await;
        assert_eq!(response.status().as_u16(), 401);
        request_id(&response);
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON");
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": 401,
                "message": "The username or password is wrong.", "title": "Unauthorized"}})
        );
        let response = obtain_token(&stub, DEFAULT_USER, DEFAULT_PASSWORD, "other-domain").await;
        assert_eq!(response.status().as_u16(), 401);
        let response = client()
            .post(format!("{}/v3/auth/tokens", stub.endpoint()))
            .body("{not json")
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), 400);
        request_id(&response);

        let before = SystemTime::now();
        let response =
            obtain_token(&stub, DEFAULT_USER, DEFAULT_PASSWORD, DEFAULT_DOMAIN_NAME).await;
        assert_eq!(response.status().as_u16(), 201);
        request_id(&response);
        let token = response
            .headers()
            .get("x-subject-token")
            .expect("X-Subject-Token")
            .to_str()
            .expect("ASCII")
            .to_owned();
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON");
        let expires_at = body["token"]["expires_at"].as_str().expect("expires_at");
        // RFC 3339, UTC, microseconds: 2026-11-28T01:02:03.000000Z
        assert_eq!(expires_at.len(), 27, "{expires_at}");
        assert_eq!(&expires_at[19..20], ".");
        assert!(expires_at.ends_with('Z'));
        let expires = humantime::parse_rfc3339(expires_at).expect("RFC 3339");
        let lifetime = expires.duration_since(before).expect("in the future");
        assert!(lifetime >= Duration::from_millis(1900) && lifetime < Duration::from_secs(3));
        assert_eq!(body["token"]["methods"], serde_json::json!(["password"]));
        assert_eq!(body["token"]["user"]["name"], DEFAULT_USER);

        let second = obtain_token(&stub, DEFAULT_USER, DEFAULT_PASSWORD, DEFAULT_DOMAIN_NAME).await;
        let second = second
            .headers()
            .get("x-subject-token")
            .expect("X-Subject-Token")
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert_ne!(token, second);

        // A new token does not invalidate older ones.
        assert_accepted(upload(&stub, Some(&token)).await.expect("sent")).await;
        assert_accepted(upload(&stub, Some(&second)).await.expect("sent")).await;

        tokio::time::sleep_until((Instant::now() + Duration::from_millis(2100)).into()).await;
        let response = upload(&stub, Some(&token)).await.expect("sent");
        let msg = assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
        assert!(msg.contains("token expires"), "{msg}");
        // Static tokens never expire.
        assert_accepted(upload(&stub, Some(DEFAULT_TOKEN)).await.expect("sent")).await;

        assert_eq!(stub.iam_requests(), 5);
        assert_eq!(stub.tokens_issued(), 2);
        stub.shutdown().await;
    }

    #[tokio::test]
    async fn tokens_rotate_at_runtime_and_any_accepts_everything() {
        let stub = Stub::start(StubConfig::new(DOMAIN))
            .await
            .expect("stub starts");
        stub.set_tokens(vec!["rotated".to_owned()]);
        let response = upload(&stub, Some(DEFAULT_TOKEN)).await.expect("sent");
        assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
        assert_accepted(upload(&stub, Some("rotated")).await.expect("sent")).await;
        stub.set_auth(StubAuth::Any);
        assert_accepted(upload(&stub, None).await.expect("sent")).await;
        assert_eq!(stub.uploads()[1].auth, AuthKind::None);
        stub.shutdown().await;
    }

    #[tokio::test]
    async fn a_busy_port_is_an_error() {
        let first = Stub::start(StubConfig::new(DOMAIN))
            .await
            .expect("stub starts");
        let mut config = StubConfig::new(DOMAIN);
        config.port = first.addr().port();
        let error = Stub::start(config).await.expect_err("port in use");
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    }

    #[test]
    fn background_stub_serves_synchronous_callers_and_stops_on_drop() {
        use std::io::{Read, Write};

        let stub = Stub::start_background(StubConfig::new(DOMAIN)).expect("stub starts");
        let addr = stub.addr();
        assert_eq!(stub.endpoint(), format!("http://{addr}"));
        let boundary = "b0undary";
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"upload_file\"; \
             filename=\"x__Test.zip\"\r\n\r\nhello\r\n--{boundary}--\r\n"
        );
        let request = format!(
            "POST /v3/{DOMAIN}/extension/upload?plugin_name=x&business_type=Test HTTP/1.1\r\n\
             Host: {addr}\r\nX-Auth-Token: {DEFAULT_TOKEN}\r\n\
             Content-Type: multipart/form-data; boundary={boundary}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.write_all(request.as_bytes()).expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.to_ascii_lowercase().contains("x-request-id: "),
            "{response}"
        );
        assert!(response.ends_with("\r\n\r\ntrue"), "{response}");
        let uploads = stub.uploads();
        assert_eq!(uploads.len(), 1);
        assert_eq!(uploads[0].size, Some(5));
        assert_eq!(uploads[0].filename.as_deref(), Some("x__Test.zip"));

        drop(stub);
        let error = std::net::TcpStream::connect(addr).expect_err("stub stopped");
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    /// The access key of the recorded SDK request; its secret key is the first vector's.
    const SDK_ACCESS_KEY: &str = "AKEXAMPLE0123456789";

    fn sdk_secret_key() -> String {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("auth/testdata/aksk-sdk-hmac-sha256.json"))
                .expect("vectors parse");
        vectors[0]["secret_key"]
            .as_str()
            .expect("secret_key")
            .to_owned()
    }

    /// When the SDK signed the recorded request.
    fn sdk_signed_at() -> SystemTime {
        let vectors: serde_json::Value =
            serde_json::from_str(SDK_UPLOAD_REQUEST).expect("vector parses");
        let date = vectors[0]["headers"]["X-Sdk-Date"].as_str().expect("date");
        crate::auth::sign::parse_sdk_date(date).expect("date parses")
    }

    /// Sets the stub's clock to `at`.
    fn set_clock(stub: &Stub, at: SystemTime) {
        let now = SystemTime::now();
        match now.duration_since(at) {
            Ok(behind) => stub.set_clock_offset(behind, false),
            Err(ahead) => stub.set_clock_offset(ahead.duration(), true),
        }
    }

    async fn aksk_stub(secret_key: &str) -> Stub {
        let mut config = StubConfig::new(DOMAIN);
        config.auth = StubAuth::aksk(vec![(SDK_ACCESS_KEY.to_owned(), secret_key.to_owned())]);
        Stub::start(config).await.expect("stub starts")
    }

    async fn error_of(body: &[u8]) -> (String, String) {
        let body: serde_json::Value = serde_json::from_slice(body).expect("JSON");
        (
            body["error_code"].as_str().expect("code").to_owned(),
            body["error_msg"].as_str().expect("msg").to_owned(),
        )
    }

    #[tokio::test]
    async fn sdk_request_is_verified_against_the_stubs_clock() {
        let stub = aksk_stub(&sdk_secret_key()).await;
        let signed_at = sdk_signed_at();

        set_clock(&stub, signed_at);
        let (status, _, body) = raw_exchange(stub.addr(), &sdk_request_bytes()).await;
        assert_eq!((status, body.as_slice()), (200, b"true".as_slice()));
        assert_eq!(
            stub.uploads()[0].auth,
            AuthKind::Signed {
                access_key: SDK_ACCESS_KEY.to_owned()
            }
        );

        // Within the gateway's 15 minutes either way: still good.
        set_clock(&stub, signed_at - Duration::from_secs(14 * 60));
        let (status, _, _) = raw_exchange(stub.addr(), &sdk_request_bytes()).await;
        assert_eq!(status, 200);

        // 20 minutes off: the gateway's "signature expired", which clients read as skew.
        set_clock(&stub, signed_at + Duration::from_secs(20 * 60));
        let (status, _, body) = raw_exchange(stub.addr(), &sdk_request_bytes()).await;
        assert_eq!(status, 401);
        let (code, msg) = error_of(&body).await;
        assert_eq!(code, error_codes::IAM_AUTH_FAILED);
        assert!(msg.contains("signature expired"), "{msg}");
        assert!(msg.contains("server time:20261128T0015"), "{msg}");
        assert!(crate::auth::clock_skew_hint(
            401,
            &String::from_utf8_lossy(&body)
        ));

        // A changed query no longer matches the signature, and that is not skew.
        set_clock(&stub, signed_at);
        let tampered = String::from_utf8(sdk_request_bytes())
            .expect("ASCII")
            .replace("plugin_name=demo_task", "plugin_name=demo_tasx");
        let (status, _, body) = raw_exchange(stub.addr(), tampered.as_bytes()).await;
        assert_eq!(status, 401);
        let (_, msg) = error_of(&body).await;
        assert!(msg.ends_with("verify aksk signature fail"), "{msg}");
        assert!(!crate::auth::clock_skew_hint(
            401,
            &String::from_utf8_lossy(&body)
        ));
        assert_eq!(stub.uploads().len(), 2);
        stub.shutdown().await;

        // The right access key with the wrong secret key.
        let stub = aksk_stub("not-the-secret-key").await;
        set_clock(&stub, signed_at);
        let (status, _, body) = raw_exchange(stub.addr(), &sdk_request_bytes()).await;
        assert_eq!(status, 401);
        let (_, msg) = error_of(&body).await;
        assert!(msg.contains("verify aksk signature fail"), "{msg}");
        stub.shutdown().await;
    }

    /// An `Auth` for `method = "aksk"` reading its keys from files in `dir`.
    fn file_keys(
        dir: &std::path::Path,
        secret_key: &str,
        token: Option<&str>,
    ) -> crate::auth::Auth {
        let write = |name: &str, value: &str| {
            let path = dir.join(name);
            std::fs::write(&path, format!("{value}\n")).expect("write key");
            path
        };
        let config = crate::auth::AuthConfig::Aksk {
            access_key_file: Some(write("ak", SDK_ACCESS_KEY)),
            secret_key_file: Some(write("sk", secret_key)),
            security_token_file: token.map(|t| write("token", t)),
        };
        crate::auth::Auth::new(&config, client()).expect("keys load")
    }

    #[tokio::test]
    async fn extdrop_signatures_are_verified_with_the_security_token() {
        let stub = aksk_stub("SK-of-the-stub").await;
        let dir = tempfile::tempdir().expect("temp dir");
        let auth = file_keys(dir.path(), "SK-of-the-stub", Some("temporary-token"));

        let mut request = client()
            .post(good_url(&stub))
            .multipart(zip_form())
            .build()
            .expect("request builds");
        auth.authorize(&mut request).await.expect("signed");
        assert_accepted(client().execute(request).await.expect("sent")).await;
        let upload = &stub.uploads()[0];
        assert_eq!(upload.security_token.as_deref(), Some("temporary-token"));
        assert_eq!(
            upload.auth,
            AuthKind::Signed {
                access_key: SDK_ACCESS_KEY.to_owned()
            }
        );

        // What `check --online` sends: signed, no parameters, no body; nothing is uploaded.
        let probe_url = upload_url(&stub, DOMAIN, "").replace('?', "");
        let mut request = client().post(&probe_url).build().expect("request builds");
        auth.authorize(&mut request).await.expect("signed");
        let response = client().execute(request).await.expect("sent");
        assert_error(response, 400, error_codes::INVALID_PARAMETER).await;
        let response = client().post(&probe_url).send().await.expect("sent");
        let msg = assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
        assert!(msg.contains("authorization"), "{msg}");

        // A security token sent but left out of the signature could be swapped in transit.
        let mut request = client().post(&probe_url).build().expect("request builds");
        file_keys(dir.path(), "SK-of-the-stub", None)
            .authorize(&mut request)
            .await
            .expect("signed");
        request
            .headers_mut()
            .insert("x-security-token", HeaderValue::from_static("added-later"));
        let response = client().execute(request).await.expect("sent");
        let msg = assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
        assert!(msg.contains("x-security-token must be signed"), "{msg}");

        // A wrong secret key.
        let mut request = client()
            .post(good_url(&stub))
            .multipart(zip_form())
            .build()
            .expect("request builds");
        file_keys(dir.path(), "SK-wrong", None)
            .authorize(&mut request)
            .await
            .expect("signed");
        let response = client().execute(request).await.expect("sent");
        let msg = assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
        assert!(msg.ends_with("verify aksk signature fail"), "{msg}");
        assert_eq!(stub.uploads().len(), 1);
        stub.shutdown().await;
    }

    #[tokio::test]
    async fn aksk_mode_also_takes_iam_tokens() {
        let stub = aksk_stub("SK").await;
        let response =
            obtain_token(&stub, DEFAULT_USER, DEFAULT_PASSWORD, DEFAULT_DOMAIN_NAME).await;
        let token = response
            .headers()
            .get("x-subject-token")
            .expect("X-Subject-Token")
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert_eq!(stub.issued_tokens(), std::slice::from_ref(&token));
        assert_accepted(upload(&stub, Some(&token)).await.expect("sent")).await;
        // Static tokens belong to token mode only.
        let response = upload(&stub, Some(DEFAULT_TOKEN)).await.expect("sent");
        let msg = assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
        assert!(msg.contains("decrypt token fail"), "{msg}");
        stub.shutdown().await;
    }

    #[tokio::test]
    async fn a_skewed_stub_stamps_iam_tokens_with_its_own_clock() {
        let stub = Stub::start(StubConfig::new(DOMAIN))
            .await
            .expect("stub starts");
        stub.set_clock_offset(Duration::from_secs(3600), true);
        let response =
            obtain_token(&stub, DEFAULT_USER, DEFAULT_PASSWORD, DEFAULT_DOMAIN_NAME).await;
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON");
        let issued = body["token"]["issued_at"].as_str().expect("issued_at");
        let issued = humantime::parse_rfc3339(issued).expect("RFC 3339");
        let ahead = issued
            .duration_since(SystemTime::now())
            .expect("issued in the future");
        assert!(ahead > Duration::from_secs(3590), "{ahead:?}");
        stub.shutdown().await;
    }

    #[test]
    fn upload_domain_matches_only_the_upload_path() {
        assert_eq!(upload_domain("/v3/abc/extension/upload"), Some("abc"));
        assert_eq!(upload_domain("/v3//extension/upload"), None);
        assert_eq!(upload_domain("/v3/a/b/extension/upload"), None);
        assert_eq!(upload_domain("/v3/abc/extension/upload/"), None);
        assert_eq!(upload_domain("/v3/auth/tokens"), None);
    }

    #[test]
    fn query_params_are_percent_decoded() {
        let query = "business_type=Deploy&plugin_name=demo%5Ftask+x&empty=&bad=%zz";
        assert_eq!(
            query_param(query, "plugin_name").as_deref(),
            Some("demo_task x")
        );
        assert_eq!(
            query_param(query, "business_type").as_deref(),
            Some("Deploy")
        );
        assert_eq!(query_param(query, "empty").as_deref(), Some(""));
        assert_eq!(query_param(query, "bad").as_deref(), Some("%zz"));
        assert_eq!(query_param(query, "missing"), None);
    }
}
