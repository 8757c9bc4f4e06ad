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
//! - The release-lifecycle APIs of SPEC §6 (list versions, version detail, register,
//!   publish), answered from the stub's [`catalog::Catalog`] of extensions and versions.
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
//!   the gateway's endpoints is a JSON object `{"error_code", "error_msg", "request_id"}`.
//! - Checks run in this order, the first failing one answers: route (404), authentication
//!   (401), domain (403), query parameters (400, including `plugin_name` and `business_type`
//!   that break the documented rules), content type (400), `upload_file` part (400), then the
//!   catalog (400: unknown extension, official version). The error codes are listed in
//!   [`error_codes`] and [`catalog::refusal_codes`]. A foreign `domain_id` answers 403,
//!   not 404: the route exists and the caller lacks permission on that tenant (the stub's
//!   choice; the API page lists both statuses without saying which). Only `POST`s to the upload
//!   route are upload requests; anything else is a 404 and is not recorded.
//! - The `upload_file` part is streamed: its size and SHA-256 are computed chunk by chunk; the
//!   file is held whole only up to 16 MiB, to read its manifest's version for the catalog.
//! - The request body is always read to its end before an answer is sent (errors and scripted
//!   faults included). Answering early and closing a connection with unread data makes the
//!   kernel send a TCP reset, which can destroy the answer before the client reads it; draining
//!   first makes the status the client sees deterministic.
//! - Every upload request is recorded the moment its headers arrive ([`Stub::requests`]), and
//!   the record is completed when the answer is known. State sits behind a `std` mutex so
//!   synchronous tests can read it.
//! - Scripted [`Fault`]s are consumed in FIFO order, one per upload request, before any check.
//! - Dropping a [`Stub`] stops it and closes every connection, hung ones included.
//!
//! Layout: this file holds the public face (configuration, faults, records, [`Stub`]) and the
//! router; `upload` serves the upload endpoint, `iam` the token endpoint, `credentials`
//! authenticates, `http` holds the answers and parsing they share.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot, watch};

pub mod catalog;
mod credentials;
mod http;
mod iam;
mod lifecycle;
pub mod metadata;
#[cfg(test)]
mod tests;
mod upload;

use self::catalog::Catalog;
use self::http::{Rejection, drain};
pub use self::lifecycle::{Api, ApiRecord};
use self::upload::upload_domain;

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
    /// Whether an upload for an extension the stand-in does not know registers it on the
    /// way (the default, so that tests of the upload alone need no set-up). `false` is the
    /// cloud's behaviour (SPEC §6): such an upload is refused with 400, and so is an upload
    /// that is not a readable extension package.
    pub auto_register: bool,
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
            auto_register: true,
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
    /// Read the body, then answer this 3xx status with `Location: location` (a gateway or
    /// proxy sending the client elsewhere).
    Redirect {
        /// The HTTP status; a value that is not a valid status answers 500.
        status: u16,
        /// The `Location` header's value.
        location: String,
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
    /// The version in the package's manifest, when the part was a readable package.
    pub version: Option<String>,
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

    /// Appends faults to the queue of one lifecycle API; each request to it consumes the
    /// oldest one.
    pub fn push_api_faults(&self, api: Api, faults: impl IntoIterator<Item = Fault>) {
        self.shared
            .lock()
            .api_faults
            .entry(api)
            .or_default()
            .extend(faults);
    }

    /// Every lifecycle request (list, detail, register, publish), in arrival order.
    pub fn api_requests(&self) -> Vec<ApiRecord> {
        self.shared.lock().api_requests.clone()
    }

    /// The lifecycle requests to `api` that were answered 200.
    pub fn api_successes(&self, api: Api) -> usize {
        let state = self.shared.lock();
        state
            .api_requests
            .iter()
            .filter(|r| r.api == api && r.succeeded())
            .count()
    }

    /// Reads or changes the registered extensions, e.g. to set up an official version.
    pub fn with_catalog<T>(&self, change: impl FnOnce(&mut Catalog) -> T) -> T {
        change(&mut self.shared.lock().catalog)
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
    /// The registered extensions and their versions.
    catalog: Catalog,
    /// Scripted faults of the lifecycle APIs, one queue per API.
    api_faults: HashMap<Api, VecDeque<Fault>>,
    /// Every lifecycle request, in arrival order.
    api_requests: Vec<ApiRecord>,
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
    auto_register: bool,
    state: Mutex<State>,
}

impl Shared {
    fn new(config: StubConfig) -> Self {
        Self {
            domain_id: config.domain_id,
            token_lifetime: config.token_lifetime,
            users: config.users,
            auto_register: config.auto_register,
            state: Mutex::new(State {
                auth: config.auth,
                issued: HashMap::new(),
                faults: VecDeque::new(),
                requests: Vec::new(),
                iam_requests: 0,
                tokens_issued: 0,
                clock_offset: (Duration::ZERO, true),
                catalog: Catalog::default(),
                api_faults: HashMap::new(),
                api_requests: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide every later assertion.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses a `domain_id` that is not the stub's tenant. Checked after authentication, as
    /// the gateway does: a stranger learns nothing about which tenants exist.
    fn check_domain(&self, domain_id: &str) -> Result<(), Rejection> {
        if domain_id == self.domain_id {
            return Ok(());
        }
        Err(Rejection::new(
            StatusCode::FORBIDDEN,
            error_codes::NO_PERMISSION,
            format!("You do not have permission to access tenant {domain_id}."),
        ))
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
        } else if let Some((api, domain_id)) = Api::recognise(&parts.method, &path) {
            let domain_id = domain_id.to_owned();
            self.handle_api(&request_id, api, domain_id, parts, body, kill)
                .await
        } else {
            drain(body).await;
            Rejection::new(
                StatusCode::NOT_FOUND,
                error_codes::API_NOT_FOUND,
                "The API does not exist or has not been published in the environment.",
            )
            .response(&request_id)
        };
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response
                .headers_mut()
                .insert(HeaderName::from_static("x-request-id"), value);
        }
        response
    }
}
