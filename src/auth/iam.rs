//! `method = "password"`: IAM tokens obtained with the user's password, cached and renewed.
//!
//! Job: `POST {iam_endpoint}/v3/auth/tokens`, keep the token from `X-Subject-Token` with its
//! `expires_at`, put it on requests as `X-Auth-Token`, and fetch a new one before it expires
//! or when the server refuses it.
//!
//! Invariants:
//! - Single flight: the cache sits behind one async mutex that is held while IAM is asked, so
//!   however many uploads find the token due at once, IAM sees one request and the others
//!   wait for its answer. A generation counter, bumped per token obtained, lets [`Stamp`]s
//!   tell whether a 401'd token has already been replaced.
//! - Renewal ahead of expiry: a token of lifetime `L` is renewed once `L - margin` has passed,
//!   with `margin = min(L / 4, 1 h)`. A 24-hour IAM token is renewed after 23 h, a 2-second
//!   test token after 1.5 s; either way uploads that start just before the renewal point still
//!   have a quarter of the lifetime (at most an hour) left. `L` is `expires_at - issued_at` as
//!   IAM states them, measured from when the request was sent on this machine's monotonic
//!   clock, so a wrong local wall clock cannot make a fresh token look expired.
//! - A due-but-unexpired token outlives a failed renewal: if IAM cannot be asked, the current
//!   token keeps being used (with a warning, and a pause between attempts) until it really
//!   expires. A token the server answered 401 to is dropped, never reused.
//! - A failure is shared too: for [`FAILURE_PAUSE`] after IAM refused or could not be
//!   reached, callers get that same error without IAM being asked again, unless the password
//!   file changed meanwhile (a fixed password is tried at once). However many files wait on a
//!   wrong password or an IAM outage, IAM sees at most one request per pause.
//! - Only `201 Created` with `X-Subject-Token` and `token.expires_at` is a token; any other
//!   answer is an error naming the user and the endpoint.
//! - The password is re-read from its file for every token request (so rotating it needs no
//!   restart) and never appears in a log line, an error or a `Debug`; IAM's error messages
//!   are scrubbed of it in case a server echoes it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use tokio::sync::Mutex;

use super::secret::{EnvLookup, PASSWORD, Secret, Source};
use super::{AuthError, Stamp};

/// The header an IAM token travels in.
const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");

/// The header IAM returns the new token in.
const X_SUBJECT_TOKEN: &str = "x-subject-token";

/// How long one token request may take; the shared client's timeout is sized for uploads.
const IAM_TIMEOUT: Duration = Duration::from_secs(30);

/// The most a token is renewed ahead of its expiry.
const MAX_MARGIN: Duration = Duration::from_secs(3600);

/// Tokens claiming to live longer are treated as living this long; IAM issues 24-hour ones.
const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// After a failed renewal, the longest pause before IAM is asked again while the current
/// token still works.
const RETRY_PAUSE: Duration = Duration::from_secs(30);

/// After IAM refused a token or could not be reached, how long that answer stands for every
/// caller before IAM is asked again (unless the password changed). Short enough that an IAM
/// blip delays uploads by seconds, long enough that waiting files do not hammer IAM.
const FAILURE_PAUSE: Duration = Duration::from_secs(5);

/// IAM's answer is read up to this size (it carries the service catalog, some tens of KiB);
/// anything larger is not IAM.
const MAX_ANSWER: usize = 4 << 20;

/// The longest piece of IAM's error message quoted to the operator.
const MAX_MESSAGE: usize = 300;

/// The password method's configuration and cache.
#[derive(Debug)]
pub(super) struct IamAuth {
    http: reqwest::Client,
    url: reqwest::Url,
    endpoint: String,
    user_name: String,
    domain_name: String,
    project: Option<String>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    password: Source,
    token: Option<Token>,
    generation: u64,
    /// While set and in the future, a due token is used without asking IAM (it just failed).
    quiet_until: Option<Instant>,
    /// The last token request's failure, shared with callers for [`FAILURE_PAUSE`].
    failure: Option<Failure>,
}

/// A failed token request, remembered so that callers share it instead of repeating it.
#[derive(Debug)]
struct Failure {
    at: Instant,
    error: Arc<AuthError>,
}

/// A token obtained from IAM.
#[derive(Debug, Clone)]
struct Token {
    /// The header value, marked sensitive.
    value: HeaderValue,
    /// As IAM stated it, for messages.
    expires_at: SystemTime,
    /// When to start asking for the next one.
    renew_at: Instant,
    /// When it stops working.
    valid_until: Instant,
}

impl IamAuth {
    /// Checks the endpoint and finds the password now; IAM is not contacted yet.
    pub fn new(
        iam_endpoint: &str,
        user_name: &str,
        domain_name: &str,
        project: Option<&str>,
        password_file: Option<&std::path::Path>,
        http: reqwest::Client,
        env: &EnvLookup<'_>,
    ) -> Result<Self, AuthError> {
        let endpoint = iam_endpoint.trim_end_matches('/').to_owned();
        let bad = |reason: String| AuthError::BadIamEndpoint {
            endpoint: iam_endpoint.to_owned(),
            reason,
        };
        let url = reqwest::Url::parse(&format!("{endpoint}/v3/auth/tokens"))
            .map_err(|err| bad(err.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!("the scheme is {:?}", url.scheme())));
        }
        let password = Source::resolve(&PASSWORD, password_file, None, env)?;
        Ok(IamAuth {
            http,
            url,
            endpoint,
            user_name: user_name.to_owned(),
            domain_name: domain_name.to_owned(),
            project: project.map(str::to_owned),
            state: Mutex::new(State {
                password,
                token: None,
                generation: 0,
                quiet_until: None,
                failure: None,
            }),
        })
    }

    /// Sets `X-Auth-Token` to the cached token, obtaining or renewing it first when due.
    pub async fn authorize(&self, request: &mut reqwest::Request) -> Result<Stamp, AuthError> {
        let mut state = self.state.lock().await;
        let value = match &state.token {
            Some(token) if Instant::now() < token.renew_at => token.value.clone(),
            _ => self.refresh(&mut state).await?,
        };
        let stamp = Stamp {
            generation: state.generation,
        };
        drop(state);
        request.headers_mut().insert(X_AUTH_TOKEN, value);
        Ok(stamp)
    }

    /// Replaces a token the server answered 401 to, unless that was done since `stamp`.
    pub async fn renew(&self, stamp: Stamp) -> Result<(), AuthError> {
        let mut state = self.state.lock().await;
        if state.generation != stamp.generation {
            return Ok(());
        }
        // The server refused it, so it must not serve as a fallback either.
        state.token = None;
        state.quiet_until = None;
        let token = self.obtain(&mut state).await?;
        state.token = Some(token);
        state.generation += 1;
        Ok(())
    }

    /// Obtains a token now and describes it.
    pub async fn probe(&self) -> Result<String, AuthError> {
        let mut state = self.state.lock().await;
        let token = self.fetch(&mut state.password).await?;
        let expires_at = humantime::format_rfc3339_seconds(token.expires_at);
        state.token = Some(token);
        state.generation += 1;
        state.quiet_until = None;
        state.failure = None;
        Ok(format!(
            "IAM token for user {} in domain {}{} obtained from {}, expires {expires_at}",
            self.user_name,
            self.domain_name,
            self.project
                .as_deref()
                .map(|p| format!(" (project {p})"))
                .unwrap_or_default(),
            self.endpoint,
        ))
    }

    /// Gets a new token for a caller holding the lock, falling back to the current one while
    /// it still works if IAM fails.
    async fn refresh(&self, state: &mut State) -> Result<HeaderValue, AuthError> {
        if let (Some(token), Some(quiet_until)) = (&state.token, state.quiet_until) {
            let now = Instant::now();
            if now < quiet_until && now < token.valid_until {
                return Ok(token.value.clone());
            }
        }
        match self.obtain(state).await {
            Ok(token) => {
                let value = token.value.clone();
                state.token = Some(token);
                state.generation += 1;
                state.quiet_until = None;
                Ok(value)
            }
            Err(err) => {
                let now = Instant::now();
                let Some(token) = state.token.as_ref().filter(|t| now < t.valid_until) else {
                    return Err(err);
                };
                let pause = RETRY_PAUSE.min((token.valid_until - now) / 2);
                state.quiet_until = Some(now + pause);
                tracing::warn!(
                    user = %self.user_name,
                    endpoint = %self.endpoint,
                    expires_at = %humantime::format_rfc3339_seconds(token.expires_at),
                    error = %err,
                    "could not renew the IAM token; the current one is used until it expires"
                );
                Ok(token.value.clone())
            }
        }
    }

    /// A token request for a caller holding the lock, unless one failed less than
    /// [`FAILURE_PAUSE`] ago with the same password: then that failure is the answer.
    async fn obtain(&self, state: &mut State) -> Result<Token, AuthError> {
        let recent = state
            .failure
            .as_ref()
            .filter(|f| f.at.elapsed() < FAILURE_PAUSE)
            .map(|f| Arc::clone(&f.error));
        // A password file fixed meanwhile deserves a try at once.
        if let Some(error) = recent
            && !state.password.reload()?
        {
            return Err(AuthError::Shared(error));
        }
        match self.fetch(&mut state.password).await {
            Ok(token) => {
                state.failure = None;
                Ok(token)
            }
            Err(error) => {
                let error = Arc::new(error);
                state.failure = Some(Failure {
                    at: Instant::now(),
                    error: Arc::clone(&error),
                });
                Err(AuthError::Shared(error))
            }
        }
    }

    /// One token request to IAM.
    async fn fetch(&self, password: &mut Source) -> Result<Token, AuthError> {
        // Picks up a rotated password file without a restart.
        password.reload()?;
        let scope = match &self.project {
            Some(project) => serde_json::json!({ "project": { "name": project } }),
            None => serde_json::json!({ "domain": { "name": self.domain_name } }),
        };
        let body = serde_json::json!({
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": self.user_name,
                            "password": password.value().expose(),
                            "domain": { "name": self.domain_name },
                        }
                    }
                },
                "scope": scope,
            }
        });
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let response = self
            .http
            .post(self.url.clone())
            .timeout(IAM_TIMEOUT)
            .header(CONTENT_TYPE, "application/json;charset=utf8")
            .body(body.to_string())
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        let status = response.status();
        let subject = response.headers().get(X_SUBJECT_TOKEN).cloned();
        let answer = read_capped(response)
            .await
            .map_err(|err| self.unreachable(&err))?;

        if !status.is_success() {
            return Err(AuthError::IamRefused {
                user: self.user_name.clone(),
                domain: self.domain_name.clone(),
                endpoint: self.endpoint.clone(),
                status: status.as_u16(),
                message: iam_message(&answer, password.value()),
            });
        }
        let bad_answer = |problem: String| AuthError::IamBadAnswer {
            user: self.user_name.clone(),
            endpoint: self.endpoint.clone(),
            status: status.as_u16(),
            problem,
        };
        if status != reqwest::StatusCode::CREATED {
            return Err(bad_answer(
                "IAM answers 201 Created when it issues a token".to_owned(),
            ));
        }
        let mut value = subject
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad_answer(format!("its answer has no {X_SUBJECT_TOKEN} header")))?;
        value.set_sensitive(true);

        let json: serde_json::Value = serde_json::from_slice(&answer)
            .map_err(|err| bad_answer(format!("its answer is not JSON ({err})")))?;
        let time = |field: &str| json["token"][field].as_str().and_then(parse_time);
        let expires_at = time("expires_at")
            .ok_or_else(|| bad_answer("its answer has no readable token.expires_at".to_owned()))?;
        let lifetime = match time("issued_at") {
            // IAM's own two timestamps give the lifetime regardless of this machine's clock.
            Some(issued_at) if issued_at < expires_at => expires_at.duration_since(issued_at),
            _ => expires_at.duration_since(started_wall),
        }
        .map_err(|_| {
            bad_answer(format!(
                "the token's expires_at {} has already passed by this machine's clock",
                humantime::format_rfc3339_seconds(expires_at)
            ))
        })?
        .min(MAX_LIFETIME);
        let margin = (lifetime / 4).min(MAX_MARGIN);

        tracing::info!(
            user = %self.user_name,
            endpoint = %self.endpoint,
            expires_at = %humantime::format_rfc3339_seconds(expires_at),
            "obtained an IAM token"
        );
        Ok(Token {
            value,
            expires_at,
            renew_at: started + (lifetime - margin),
            valid_until: started + lifetime,
        })
    }

    /// The error for a request that got no (complete) answer.
    fn unreachable(&self, err: &reqwest::Error) -> AuthError {
        let reason = if err.is_timeout() {
            format!(
                "no answer within {}",
                humantime::format_duration(IAM_TIMEOUT)
            )
        } else {
            error_chain(err)
        };
        AuthError::IamUnreachable {
            user: self.user_name.clone(),
            endpoint: self.endpoint.clone(),
            reason,
        }
    }
}

/// Reads a response body, refusing to buffer more than [`MAX_ANSWER`].
pub(super) async fn read_capped(
    mut response: reqwest::Response,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_ANSWER.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER {
            break;
        }
    }
    Ok(body)
}

/// Parses IAM's ISO 8601 times ("2026-11-29T01:02:03.456000Z").
pub(super) fn parse_time(value: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(value)
        .or_else(|_| humantime::parse_rfc3339_weak(value))
        .ok()
}

/// A network error's causes, which say what actually went wrong (refused, DNS, TLS); the
/// outermost message only repeats the URL the caller already names.
pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let Some(first) = err.source() else {
        return err.to_string();
    };
    let mut text = first.to_string();
    let mut source = first.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// IAM's error message, from either error shape it uses, made safe to print: one line, not
/// too long, and never containing the password.
fn iam_message(answer: &[u8], password: &Secret) -> Option<String> {
    let text = match serde_json::from_slice::<serde_json::Value>(answer) {
        // Keystone style: {"error": {"code": 401, "message": "...", "title": "Unauthorized"}}
        Ok(json) if json["error"]["message"].is_string() => {
            json["error"]["message"].as_str().map(str::to_owned)
        }
        // Huawei Cloud style: {"error_code": "IAM.0001", "error_msg": "..."}
        Ok(json) => json["error_msg"]
            .as_str()
            .map(|msg| match json["error_code"].as_str() {
                Some(code) => format!("{code}: {msg}"),
                None => msg.to_owned(),
            }),
        // Plain text from a proxy is worth quoting; an HTML error page is not.
        Err(_) => std::str::from_utf8(answer)
            .ok()
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.starts_with('<'))
            .map(str::to_owned),
    }?;
    let mut text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let secret = password.expose();
    if !secret.is_empty() && text.contains(secret) {
        text = text.replace(secret, "***");
    }
    if text.chars().count() > MAX_MESSAGE {
        text = text.chars().take(MAX_MESSAGE).collect::<String>() + "…";
    }
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::convert::Infallible;
    use std::ffi::OsString;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    use super::super::{Auth, AuthConfig};
    use super::*;

    const PASSWORD_OK: &str = "correct horse battery staple";

    /// A stand-in for IAM on a loopback port.
    struct Iam {
        addr: SocketAddr,
        shared: Arc<Shared>,
    }

    struct Shared {
        requests: AtomicUsize,
        /// The status to answer with; 2xx means "issue a token" (with that status).
        status: AtomicU16,
        lifetime: Duration,
        delay: Duration,
        omit_subject: bool,
        bodies: std::sync::Mutex<Vec<serde_json::Value>>,
    }

    impl Iam {
        async fn start(lifetime: Duration, delay: Duration) -> Iam {
            Self::start_with(lifetime, delay, false).await
        }

        async fn start_with(lifetime: Duration, delay: Duration, omit_subject: bool) -> Iam {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let shared = Arc::new(Shared {
                requests: AtomicUsize::new(0),
                status: AtomicU16::new(201),
                lifetime,
                delay,
                omit_subject,
                bodies: std::sync::Mutex::new(Vec::new()),
            });
            let server_shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let shared = server_shared.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| answer(shared.clone(), req));
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            Iam { addr, shared }
        }

        fn endpoint(&self) -> String {
            format!("http://{}", self.addr)
        }

        fn requests(&self) -> usize {
            self.shared.requests.load(Ordering::SeqCst)
        }
    }

    async fn answer(
        shared: Arc<Shared>,
        req: hyper::Request<Incoming>,
    ) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
        let n = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
        assert_eq!(req.method(), hyper::Method::POST);
        assert_eq!(req.uri().path(), "/v3/auth/tokens");
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        shared.bodies.lock().unwrap().push(json.clone());
        tokio::time::sleep(shared.delay).await;

        let user = &json["auth"]["identity"]["password"]["user"];
        let status = shared.status.load(Ordering::SeqCst);
        let (status, body) = if !(200..300).contains(&status) {
            (
                status,
                r#"{"error_code":"IAM.0000","error_msg":"try later"}"#.to_owned(),
            )
        } else if user["password"] != PASSWORD_OK {
            (
                401,
                r#"{"error":{"code":401,"message":"The username or password is wrong.","title":"Unauthorized"}}"#.to_owned(),
            )
        } else {
            let now = SystemTime::now();
            let body = serde_json::json!({"token": {
                "issued_at": humantime::format_rfc3339_micros(now).to_string(),
                "expires_at": humantime::format_rfc3339_micros(now + shared.lifetime).to_string(),
                "methods": ["password"],
            }});
            (status, body.to_string())
        };
        let mut response = hyper::Response::builder().status(status);
        if (200..300).contains(&status) && !shared.omit_subject {
            response = response.header("X-Subject-Token", format!("tok-{n}"));
        }
        Ok(response.body(Full::new(Bytes::from(body))).unwrap())
    }

    fn client() -> reqwest::Client {
        // Test machines may have proxy variables set; loopback must be reached directly.
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    fn password_auth(endpoint: &str, password: &str, project: Option<&str>) -> Auth {
        let password = OsString::from(password);
        let env = move |name: &str| (name == "EXTDROP_PASSWORD").then(|| password.clone());
        let config = AuthConfig::Password {
            iam_endpoint: endpoint.to_owned(),
            user_name: "deployer".to_owned(),
            domain_name: "my-account".to_owned(),
            project: project.map(str::to_owned),
            password_file: None,
        };
        Auth::with_env(&config, client(), &env).unwrap()
    }

    fn request() -> reqwest::Request {
        reqwest::Request::new(
            reqwest::Method::POST,
            "https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com/v3/x/extension/upload"
                .parse()
                .unwrap(),
        )
    }

    async fn token_of(auth: &Auth) -> (String, Stamp) {
        let mut req = request();
        let stamp = auth.authorize(&mut req).await.unwrap();
        assert!(req.headers()["x-auth-token"].is_sensitive());
        let value = req.headers()["x-auth-token"].to_str().unwrap().to_owned();
        (value, stamp)
    }

    #[tokio::test]
    async fn obtains_and_caches_a_domain_scoped_token() {
        let iam = Iam::start(Duration::from_secs(24 * 3600), Duration::ZERO).await;
        let auth = password_auth(&format!("{}/", iam.endpoint()), PASSWORD_OK, None);
        assert_eq!(auth.method_name(), "password");
        // Nothing is asked before the first request.
        assert_eq!(iam.requests(), 0);

        let (first, stamp) = token_of(&auth).await;
        assert_eq!(first, "tok-1");
        let (again, same_stamp) = token_of(&auth).await;
        assert_eq!(again, "tok-1");
        assert_eq!(stamp, same_stamp);
        assert_eq!(iam.requests(), 1);

        let body = iam.shared.bodies.lock().unwrap()[0].clone();
        assert_eq!(
            body,
            serde_json::json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": "deployer", "password": PASSWORD_OK, "domain": {"name": "my-account"}}}},
                "scope": {"domain": {"name": "my-account"}}}})
        );

        let probe = auth.probe().await.unwrap();
        assert!(
            probe.starts_with(
                "IAM token for user deployer in domain my-account obtained from http://127.0.0.1:"
            ),
            "{probe}"
        );
        assert!(probe.contains(", expires 20"), "{probe}");
        assert!(!probe.contains("tok-"), "{probe}");
    }

    #[tokio::test]
    async fn project_scope_when_configured() {
        let iam = Iam::start(Duration::from_secs(3600), Duration::ZERO).await;
        let auth = password_auth(&iam.endpoint(), PASSWORD_OK, Some("cn-north-4"));
        token_of(&auth).await;
        let body = iam.shared.bodies.lock().unwrap()[0].clone();
        assert_eq!(
            body["auth"]["scope"],
            serde_json::json!({"project": {"name": "cn-north-4"}})
        );
        let probe = auth.probe().await.unwrap();
        assert!(probe.contains("(project cn-north-4)"), "{probe}");
    }

    #[tokio::test]
    async fn renews_ahead_of_expiry() {
        let iam = Iam::start(Duration::from_secs(2), Duration::ZERO).await;
        let auth = password_auth(&iam.endpoint(), PASSWORD_OK, None);
        let start = Instant::now();
        let (first, stamp) = token_of(&auth).await;
        assert_eq!(first, "tok-1");

        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(token_of(&auth).await.0, "tok-1");
        assert_eq!(iam.requests(), 1);

        // Lifetime 2 s, margin 0.5 s: due after 1.5 s, still well before it expires.
        tokio::time::sleep_until((start + Duration::from_millis(1700)).into()).await;
        let (second, new_stamp) = token_of(&auth).await;
        assert_eq!(second, "tok-2");
        assert_ne!(stamp, new_stamp);
        assert_eq!(iam.requests(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn twenty_uploads_with_a_due_token_cause_one_iam_request() {
        let iam = Iam::start(Duration::from_secs(2), Duration::from_millis(200)).await;
        let auth = password_auth(&iam.endpoint(), PASSWORD_OK, None);
        let (_, old_stamp) = token_of(&auth).await;
        tokio::time::sleep(Duration::from_millis(1700)).await;

        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move { token_of(&auth).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().0, "tok-2");
        }
        assert_eq!(iam.requests(), 2);

        // Twenty 401s for the same token: one renewal.
        let (_, stamp) = token_of(&auth).await;
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move { auth.renew(stamp).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(iam.requests(), 3);
        assert_eq!(token_of(&auth).await.0, "tok-3");

        // A 401 for a long-replaced token changes nothing.
        auth.renew(old_stamp).await.unwrap();
        assert_eq!(iam.requests(), 3);
    }

    #[tokio::test]
    async fn wrong_password_is_a_clear_permanent_error() {
        let iam = Iam::start(Duration::from_secs(3600), Duration::ZERO).await;
        let auth = password_auth(&iam.endpoint(), "hunter2-wrong", None);
        let err = auth.authorize(&mut request()).await.unwrap_err();
        let text = err.to_string();
        assert!(!err.is_transient(), "{text}");
        for needle in [
            "deployer",
            "my-account",
            iam.endpoint().as_str(),
            "HTTP 401",
            "The username or password is wrong.",
        ] {
            assert!(text.contains(needle), "{text:?} lacks {needle:?}");
        }
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!format!("{err:?}").contains("hunter2"));
        assert!(!format!("{auth:?}").contains("hunter2"));

        // A locked user (403) is as permanent; IAM in trouble (503) is not.
        iam.shared.status.store(403, Ordering::SeqCst);
        assert!(!auth.probe().await.unwrap_err().is_transient());
        iam.shared.status.store(503, Ordering::SeqCst);
        let err = auth.probe().await.unwrap_err();
        assert!(err.is_transient());
        assert!(err.to_string().contains("IAM.0000: try later"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_iam_is_transient() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let auth = password_auth(&endpoint, PASSWORD_OK, None);
        let err = auth.authorize(&mut request()).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("deployer") && text.contains(&endpoint),
            "{text}"
        );
    }

    #[tokio::test]
    async fn answer_without_token_header_is_rejected() {
        let iam = Iam::start_with(Duration::from_secs(3600), Duration::ZERO, true).await;
        let auth = password_auth(&iam.endpoint(), PASSWORD_OK, None);
        let err = auth.authorize(&mut request()).await.unwrap_err();
        assert!(
            err.to_string().contains("X-Subject-Token")
                || err.to_string().contains("x-subject-token"),
            "{err}"
        );
        assert!(!err.is_transient());
    }

    #[tokio::test]
    async fn current_token_outlives_a_failed_renewal() {
        let iam = Iam::start(Duration::from_secs(4), Duration::ZERO).await;
        let auth = password_auth(&iam.endpoint(), PASSWORD_OK, None);
        let (first, stamp) = token_of(&auth).await;
        iam.shared.status.store(503, Ordering::SeqCst);
        // Due after 3 s, valid for 4 s.
        tokio::time::sleep(Duration::from_millis(3200)).await;
        assert_eq!(token_of(&auth).await.0, first);
        assert_eq!(iam.requests(), 2);
        // Within the pause IAM is not asked again.
        assert_eq!(token_of(&auth).await.0, first);
        assert_eq!(iam.requests(), 2);
        // But a 401 drops the token for good.
        let err = auth.renew(stamp).await.unwrap_err();
        assert!(err.is_transient());
        assert!(auth.authorize(&mut request()).await.is_err());
    }

    #[tokio::test]
    async fn password_file_is_reread_for_each_token() {
        let iam = Iam::start(Duration::from_secs(3600), Duration::ZERO).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "old-password\n").unwrap();
        let config = AuthConfig::Password {
            iam_endpoint: iam.endpoint(),
            user_name: "deployer".to_owned(),
            domain_name: "my-account".to_owned(),
            project: None,
            password_file: Some(file.clone()),
        };
        let no_env = |_: &str| -> Option<OsString> { None };
        let auth = Auth::with_env(&config, client(), &no_env).unwrap();
        assert!(auth.authorize(&mut request()).await.is_err());
        std::fs::write(&file, format!("{PASSWORD_OK}\n")).unwrap();
        assert_eq!(token_of(&auth).await.0, "tok-2");
        // Neither the public Debug nor that of the internals (cache, sources) shows it.
        let text = format!("{config:?}{auth:?}{:?}", auth.method);
        assert!(
            !text.contains(PASSWORD_OK) && !text.contains("tok-"),
            "{text}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_refusal_is_shared_until_the_password_file_changes() {
        let iam = Iam::start(Duration::from_secs(3600), Duration::from_millis(200)).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "wrong-password\n").unwrap();
        let config = AuthConfig::Password {
            iam_endpoint: iam.endpoint(),
            user_name: "deployer".to_owned(),
            domain_name: "my-account".to_owned(),
            project: None,
            password_file: Some(file.clone()),
        };
        let no_env = |_: &str| -> Option<OsString> { None };
        let auth = Auth::with_env(&config, client(), &no_env).unwrap();

        // Twenty uploads find no token: one IAM request, one refusal for all of them.
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move { auth.authorize(&mut request()).await })
            })
            .collect();
        for task in tasks {
            let err = task.await.unwrap().unwrap_err();
            assert!(
                err.to_string()
                    .contains("refused a token for user deployer"),
                "{err}"
            );
            assert!(!err.is_transient());
        }
        assert_eq!(iam.requests(), 1);
        // Files retrying within the pause do not ask IAM again, nor does a 401.
        assert!(auth.authorize(&mut request()).await.is_err());
        assert!(auth.renew(Stamp::default()).await.is_err());
        assert_eq!(iam.requests(), 1);

        // A fixed password file is tried at once.
        std::fs::write(&file, format!("{PASSWORD_OK}\n")).unwrap();
        assert_eq!(token_of(&auth).await.0, "tok-2");
        assert_eq!(iam.requests(), 2);
    }

    #[tokio::test]
    async fn only_201_is_a_token() {
        let iam = Iam::start(Duration::from_secs(3600), Duration::ZERO).await;
        iam.shared.status.store(200, Ordering::SeqCst);
        let auth = password_auth(&iam.endpoint(), PASSWORD_OK, None);
        let err = auth.authorize(&mut request()).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("HTTP 200") && text.contains("201"), "{text}");
        assert!(
            text.contains("deployer") && text.contains(&iam.endpoint()),
            "{text}"
        );
        assert!(!err.is_transient());
    }

    #[test]
    fn bad_endpoint_and_missing_password_fail_at_start() {
        let env = |_: &str| -> Option<OsString> { Some(OsString::from("pw")) };
        let mut config = AuthConfig::Password {
            iam_endpoint: "iam.myhuaweicloud.com".to_owned(),
            user_name: "deployer".to_owned(),
            domain_name: "my-account".to_owned(),
            project: None,
            password_file: None,
        };
        let err = Auth::with_env(&config, client(), &env).unwrap_err();
        assert!(err.to_string().contains("iam_endpoint"), "{err}");

        if let AuthConfig::Password { iam_endpoint, .. } = &mut config {
            *iam_endpoint = "https://iam.myhuaweicloud.com".to_owned();
        }
        let no_env = |_: &str| -> Option<OsString> { None };
        let err = Auth::with_env(&config, client(), &no_env).unwrap_err();
        assert!(err.to_string().contains("EXTDROP_PASSWORD"), "{err}");
    }

    #[test]
    fn iam_messages_are_scrubbed() {
        let pw = Secret::new("s3cret".to_owned());
        let keystone = br#"{"error":{"code":401,"message":"bad password s3cret\nfor user","title":"Unauthorized"}}"#;
        assert_eq!(
            iam_message(keystone, &pw).as_deref(),
            Some("bad password *** for user")
        );
        let huawei = br#"{"error_code":"IAM.0101","error_msg":"The user is locked."}"#;
        assert_eq!(
            iam_message(huawei, &pw).as_deref(),
            Some("IAM.0101: The user is locked.")
        );
        assert_eq!(iam_message(b"<html>502</html>", &pw), None);
        assert_eq!(
            iam_message(b"  upstream down ", &pw).as_deref(),
            Some("upstream down")
        );
        let long = "x".repeat(1000);
        assert_eq!(
            iam_message(long.as_bytes(), &pw).unwrap().chars().count(),
            MAX_MESSAGE + 1
        );
    }
}
