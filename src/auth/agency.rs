//! `method = "agency"`: temporary AK/SK from the ECS metadata service (SPEC §7).
//!
//! Job: obtain the instance's cloud-service-agency credentials — `PUT
//! {metadata_endpoint}/meta-data/latest/api/token`, then `GET
//! {metadata_endpoint}/openstack/latest/securitykey` with that token — keep them with their
//! `expires_at`, sign requests with them as for `aksk` plus `X-Security-Token`, and fetch new
//! ones before they expire or when the server refuses them.
//!
//! Invariants:
//! - Single flight, as for IAM tokens (`auth/iam.rs`): the cache sits behind one async mutex
//!   held while the metadata service is asked, so many uploads finding the credentials due
//!   cause one fetch; a generation counter, bumped per credentials obtained, lets [`Stamp`]s
//!   tell whether refused credentials were already replaced.
//! - Renewal when less than [`RENEW_BEFORE`] (40 minutes, the SDK's threshold) remains before
//!   `expires_at`; credentials handed out with less than that left are renewed halfway
//!   through what remains, so a service that keeps returning them is not asked in a loop.
//!   Remaining time is measured from when the request was sent, on the monotonic clock.
//! - Uploads in flight keep the credentials they were signed with: a signature is made once,
//!   from a copy of the keys taken under the lock, and renewal only affects later requests.
//! - Due-but-valid credentials outlive a failed renewal (used, with a warning and a pause,
//!   until they expire); credentials the server answered 401 to are replaced, never reused
//!   after a successful fetch.
//! - A failure is shared for [`FAILURE_PAUSE`]: however many files wait on an instance without
//!   an agency, the metadata service sees at most one fetch per pause, and the daemon's
//!   "credential trouble logged once" sees one unchanging sentence.
//! - The metadata token is a secret too and is cached for less than the TTL asked for. A 404,
//!   405 or 503 to the token request means the service has no tokens: go on without one. A
//!   401 to the credentials request without the agency sentence means the token expired: a new
//!   one is fetched and the request repeated once.
//! - No key, security token or metadata token ever reaches a log line, an error, a `Debug` or
//!   an output: they live in [`Secret`]s and sensitive header values; error messages quote only
//!   error answers, never a 200 answer's body; the access key is shown masked.
//! - The metadata service is asked directly, never through a proxy from the environment: it is
//!   a link-local address only the instance itself can reach.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Mutex;

use super::aksk::{Snapshot, mask, sign_request};
use super::iam::{error_chain, parse_time, read_capped};
use super::{AuthError, Secret, Stamp};

/// Renew the credentials once less than this remains before their `expires_at`.
pub const RENEW_BEFORE: Duration = Duration::from_secs(40 * 60);

/// The TTL asked for a metadata token (six hours, as the SDK asks).
const TOKEN_TTL_SECONDS: u64 = 21600;

/// A metadata token is reused for this long, well within the TTL asked for.
const TOKEN_REUSE: Duration = Duration::from_secs(TOKEN_TTL_SECONDS - 600);

/// How long one request to the metadata service may take: it is on the instance's own link.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Connecting to the link-local address either works at once or not at all.
const METADATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// After a failed renewal, the longest pause before the service is asked again while the
/// current credentials still work.
const RETRY_PAUSE: Duration = Duration::from_secs(30);

/// After the metadata service refused or could not be reached, how long that answer stands
/// for every caller before it is asked again.
const FAILURE_PAUSE: Duration = Duration::from_secs(5);

/// The longest piece of an error answer quoted to the operator.
const MAX_MESSAGE: usize = 200;

/// The sentence with which the service says the instance has no agency.
const NO_AGENCY: &str = "Please configure Cloud Service Agency first";

/// The agency method's configuration and cache.
#[derive(Debug)]
pub(super) struct AgencyAuth {
    http: reqwest::Client,
    endpoint: String,
    token_url: reqwest::Url,
    key_url: reqwest::Url,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    credentials: Option<Credentials>,
    metadata_token: Option<MetadataToken>,
    generation: u64,
    /// While set and in the future, due credentials are used without asking (a fetch failed).
    quiet_until: Option<Instant>,
    /// The last fetch's failure, shared with callers for [`FAILURE_PAUSE`].
    failure: Option<(Instant, Arc<AuthError>)>,
}

/// Temporary credentials from the metadata service.
#[derive(Debug, Clone)]
struct Credentials {
    access_key: Secret,
    secret_key: Secret,
    security_token: Secret,
    /// As the service stated it, for messages.
    expires_at: SystemTime,
    /// When to start fetching the next ones.
    renew_at: Instant,
    /// When they stop working.
    valid_until: Instant,
}

/// A metadata token and when to stop using it.
#[derive(Debug)]
struct MetadataToken {
    value: Secret,
    until: Instant,
}

impl AgencyAuth {
    /// Checks the endpoint; the metadata service is not contacted yet.
    pub fn new(metadata_endpoint: &str) -> Result<Self, AuthError> {
        let endpoint = metadata_endpoint.trim_end_matches('/').to_owned();
        let url = |path: &str| {
            reqwest::Url::parse(&format!("{endpoint}{path}")).map_err(|err| {
                AuthError::MetadataClient {
                    reason: format!("metadata_endpoint {endpoint:?} is not a URL: {err}"),
                }
            })
        };
        let token_url = url("/meta-data/latest/api/token")?;
        let key_url = url("/openstack/latest/securitykey")?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("extdrop/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .connect_timeout(METADATA_CONNECT_TIMEOUT)
            .timeout(METADATA_TIMEOUT)
            .build()
            .map_err(|err| AuthError::MetadataClient {
                reason: error_chain(&err),
            })?;
        Ok(AgencyAuth {
            http,
            endpoint,
            token_url,
            key_url,
            state: Mutex::new(State {
                credentials: None,
                metadata_token: None,
                generation: 0,
                quiet_until: None,
                failure: None,
            }),
        })
    }

    /// Signs the request with the current credentials, fetching or renewing them first when
    /// due.
    pub async fn authorize(&self, request: &mut reqwest::Request) -> Result<Stamp, AuthError> {
        let (snapshot, generation) = {
            let mut state = self.state.lock().await;
            let credentials = match &state.credentials {
                Some(c) if Instant::now() < c.renew_at => c.clone(),
                _ => self.refresh(&mut state).await?,
            };
            let snapshot = Snapshot {
                access_key: credentials.access_key,
                secret_key: credentials.secret_key,
                security_token: Some(credentials.security_token),
            };
            (snapshot, state.generation)
        };
        sign_request(request, &snapshot, SystemTime::now())?;
        Ok(Stamp { generation })
    }

    /// Replaces credentials the server answered 401 to, unless that was done since `stamp`.
    pub async fn renew(&self, stamp: Stamp) -> Result<(), AuthError> {
        let mut state = self.state.lock().await;
        if state.generation != stamp.generation {
            return Ok(());
        }
        let refused = state.credentials.take();
        state.quiet_until = None;
        let fresh = self.obtain(&mut state).await?;
        let same = refused
            .as_ref()
            .is_some_and(|old| old.access_key == fresh.access_key);
        state.credentials = Some(fresh);
        state.generation += 1;
        if same {
            // The service stands by the keys the server refused; asking again will not help
            // until something changes (the clock, the agency's permissions).
            return Err(AuthError::CredentialsRefused {
                what: "temporary AK/SK credentials",
                origin: format!("the ECS metadata service at {}", self.endpoint),
                advice: "the service hands out the same keys again: check this machine's clock and that the agency may use CodeArts Pipeline",
            });
        }
        Ok(())
    }

    /// Obtains credentials now and describes them without revealing them.
    pub async fn probe(&self) -> Result<String, AuthError> {
        let mut state = self.state.lock().await;
        state.failure = None;
        let credentials = self.fetch(&mut state).await?;
        let text = self.describe(&credentials);
        state.credentials = Some(credentials);
        state.generation += 1;
        state.quiet_until = None;
        Ok(text)
    }

    /// One line for the operator: where the credentials come from and when they expire.
    fn describe(&self, credentials: &Credentials) -> String {
        format!(
            "temporary AK/SK (cloud service agency) with access key {} from the ECS metadata service at {}, expires {}",
            mask(credentials.access_key.expose()),
            self.endpoint,
            humantime::format_rfc3339_seconds(credentials.expires_at)
        )
    }

    /// Gets new credentials for a caller holding the lock, falling back to the current ones
    /// while they still work if the service fails.
    async fn refresh(&self, state: &mut State) -> Result<Credentials, AuthError> {
        if let (Some(current), Some(quiet_until)) = (&state.credentials, state.quiet_until) {
            let now = Instant::now();
            if now < quiet_until && now < current.valid_until {
                return Ok(current.clone());
            }
        }
        match self.obtain(state).await {
            Ok(credentials) => {
                state.credentials = Some(credentials.clone());
                state.generation += 1;
                state.quiet_until = None;
                Ok(credentials)
            }
            Err(err) => {
                let now = Instant::now();
                let Some(current) = state.credentials.as_ref().filter(|c| now < c.valid_until)
                else {
                    return Err(err);
                };
                state.quiet_until = Some(now + RETRY_PAUSE.min((current.valid_until - now) / 2));
                tracing::warn!(
                    endpoint = %self.endpoint,
                    expires_at = %humantime::format_rfc3339_seconds(current.expires_at),
                    error = %err,
                    "could not renew the agency's temporary credentials; the current ones are used until they expire"
                );
                Ok(current.clone())
            }
        }
    }

    /// A fetch for a caller holding the lock, unless one failed less than [`FAILURE_PAUSE`]
    /// ago: then that failure is the answer.
    async fn obtain(&self, state: &mut State) -> Result<Credentials, AuthError> {
        if let Some((at, error)) = &state.failure
            && at.elapsed() < FAILURE_PAUSE
        {
            return Err(AuthError::Shared(Arc::clone(error)));
        }
        match self.fetch(state).await {
            Ok(credentials) => {
                state.failure = None;
                Ok(credentials)
            }
            Err(error) => {
                let error = Arc::new(error);
                state.failure = Some((Instant::now(), Arc::clone(&error)));
                Err(AuthError::Shared(error))
            }
        }
    }

    /// The metadata token and credentials requests, as SPEC §7 orders them.
    async fn fetch(&self, state: &mut State) -> Result<Credentials, AuthError> {
        let mut token = self.metadata_token(state).await?;
        let mut retried = false;
        loop {
            let started = Instant::now();
            let started_wall = SystemTime::now();
            let mut request = self.http.get(self.key_url.clone());
            if let Some(token) = &token {
                request = request.header("X-Metadata-Token", sensitive(token.expose())?);
            }
            let response = request.send().await.map_err(|err| self.unreachable(&err))?;
            let status = response.status();
            let answer = read_capped(response)
                .await
                .map_err(|err| self.unreachable(&err))?;
            if status == reqwest::StatusCode::UNAUTHORIZED {
                if String::from_utf8_lossy(&answer).contains(NO_AGENCY) {
                    return Err(AuthError::NoAgency {
                        endpoint: self.endpoint.clone(),
                    });
                }
                if !retried {
                    // The metadata token expired: a new one, and the request once more.
                    retried = true;
                    state.metadata_token = None;
                    token = self.metadata_token(state).await?;
                    continue;
                }
            }
            if !status.is_success() {
                return Err(AuthError::MetadataRefused {
                    endpoint: self.endpoint.clone(),
                    what: "the temporary credentials",
                    status: status.as_u16(),
                    message: message(&answer),
                });
            }
            return self.credentials(&answer, started, started_wall);
        }
    }

    /// The cached metadata token, or a new one; `None` when the service has no tokens.
    async fn metadata_token(&self, state: &mut State) -> Result<Option<Secret>, AuthError> {
        if let Some(token) = &state.metadata_token
            && Instant::now() < token.until
        {
            return Ok(Some(token.value.clone()));
        }
        let started = Instant::now();
        let response = self
            .http
            .put(self.token_url.clone())
            .header(
                "X-Metadata-Token-Ttl-Seconds",
                TOKEN_TTL_SECONDS.to_string(),
            )
            .send()
            .await
            .map_err(|err| self.unreachable(&err))?;
        let status = response.status();
        let answer = read_capped(response)
            .await
            .map_err(|err| self.unreachable(&err))?;
        match status.as_u16() {
            200 => {}
            // SPEC §7: the service has no tokens; the credentials request goes without one.
            404 | 405 | 503 => return Ok(None),
            status => {
                return Err(AuthError::MetadataRefused {
                    endpoint: self.endpoint.clone(),
                    what: "a metadata token",
                    status,
                    message: message(&answer),
                });
            }
        }
        let value = String::from_utf8(answer)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| AuthError::MetadataBadAnswer {
                endpoint: self.endpoint.clone(),
                problem: "the metadata token it sent is empty or not a header value".to_owned(),
            })?;
        let value = Secret::new(value);
        state.metadata_token = Some(MetadataToken {
            value: value.clone(),
            until: started + TOKEN_REUSE,
        });
        Ok(Some(value))
    }

    /// Reads `{"credential": {"access", "secret", "securitytoken", "expires_at"}}`.
    fn credentials(
        &self,
        answer: &[u8],
        started: Instant,
        started_wall: SystemTime,
    ) -> Result<Credentials, AuthError> {
        let bad = |problem: &str| AuthError::MetadataBadAnswer {
            endpoint: self.endpoint.clone(),
            problem: problem.to_owned(),
        };
        let json: serde_json::Value =
            serde_json::from_slice(answer).map_err(|_| bad("its answer is not JSON"))?;
        let field = |name: &str| {
            json["credential"][name]
                .as_str()
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let header_safe = |v: &&str| v.bytes().all(|b| b.is_ascii_graphic());
        let access_key = field("access")
            .filter(header_safe)
            .ok_or_else(|| bad("its answer has no usable credential.access"))?;
        let secret_key =
            field("secret").ok_or_else(|| bad("its answer has no usable credential.secret"))?;
        let security_token = field("securitytoken")
            .filter(header_safe)
            .ok_or_else(|| bad("its answer has no usable credential.securitytoken"))?;
        let expires_at = field("expires_at")
            .and_then(parse_time)
            .ok_or_else(|| bad("its answer has no readable credential.expires_at"))?;
        let lifetime = expires_at.duration_since(started_wall).map_err(|_| {
            bad(&format!(
                "the credentials' expires_at {} has already passed by this machine's clock",
                humantime::format_rfc3339_seconds(expires_at)
            ))
        })?;
        let renew_after = if lifetime > RENEW_BEFORE {
            lifetime - RENEW_BEFORE
        } else {
            lifetime / 2
        };
        let credentials = Credentials {
            access_key: Secret::new(access_key.to_owned()),
            secret_key: Secret::new(secret_key.to_owned()),
            security_token: Secret::new(security_token.to_owned()),
            expires_at,
            renew_at: started + renew_after,
            valid_until: started + lifetime,
        };
        tracing::info!(
            endpoint = %self.endpoint,
            access_key = %mask(access_key),
            expires_at = %humantime::format_rfc3339_seconds(expires_at),
            "obtained temporary credentials from the ECS metadata service"
        );
        Ok(credentials)
    }

    /// The error for a request that got no (complete) answer.
    fn unreachable(&self, err: &reqwest::Error) -> AuthError {
        let reason = if err.is_timeout() {
            format!(
                "no answer within {}",
                humantime::format_duration(METADATA_TIMEOUT)
            )
        } else {
            error_chain(err)
        };
        AuthError::MetadataUnreachable {
            endpoint: self.endpoint.clone(),
            reason,
        }
    }
}

/// A secret header value, which `Debug` of the request will not print.
fn sensitive(value: &str) -> Result<reqwest::header::HeaderValue, AuthError> {
    let mut value =
        reqwest::header::HeaderValue::from_str(value).map_err(|_| AuthError::MetadataClient {
            // Checked to be visible ASCII when received, so this cannot happen.
            reason: "the metadata token is not a header value".to_owned(),
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// An error answer's text, one line and short; `None` for an empty or HTML one. Only error
/// answers come here, so it cannot hold credentials.
fn message(answer: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(answer);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() || text.starts_with('<') {
        return None;
    }
    Some(text.chars().take(MAX_MESSAGE).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::ffi::OsString;

    use super::super::{Auth, AuthConfig};
    use super::*;
    use crate::stub::metadata::{self, MetadataConfig, MetadataStub};

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn agency(stub: &MetadataStub) -> Auth {
        let config = AuthConfig::Agency {
            metadata_endpoint: format!("{}/", stub.endpoint()),
        };
        Auth::with_env(&config, reqwest::Client::new(), &no_env).unwrap()
    }

    fn request() -> reqwest::Request {
        reqwest::Client::new()
            .post("https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com/v3/x/extension/upload")
            .body("streamed")
            .build()
            .unwrap()
    }

    /// The access key and security token a signed request carries.
    async fn signed(auth: &Auth) -> (String, String, Stamp) {
        let mut req = request();
        let stamp = auth.authorize(&mut req).await.unwrap();
        let h = req.headers();
        assert!(h["authorization"].is_sensitive() && h["x-security-token"].is_sensitive());
        let parsed =
            super::super::sign::parse_authorization(h["authorization"].to_str().unwrap()).unwrap();
        assert!(
            parsed
                .signed_headers
                .iter()
                .any(|n| n == "x-security-token")
        );
        let token = h["x-security-token"].to_str().unwrap().to_owned();
        (parsed.access, token, stamp)
    }

    fn start(lifetime: Duration) -> MetadataStub {
        MetadataStub::start_background(MetadataConfig {
            lifetime,
            ..MetadataConfig::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn fetches_caches_and_signs_with_the_security_token() {
        let stub = start(Duration::from_secs(24 * 3600));
        let auth = agency(&stub);
        assert_eq!(auth.method_name(), "agency");
        assert_eq!(stub.key_requests(), 0, "nothing is asked before a request");
        let (ak, token, stamp) = signed(&auth).await;
        assert_eq!(ak, metadata::access_key(1));
        assert_eq!(token, metadata::security_token(1));
        let (ak, _, same) = signed(&auth).await;
        assert_eq!(ak, metadata::access_key(1));
        assert_eq!(stamp, same);
        assert_eq!((stub.token_requests(), stub.key_requests()), (1, 1));
        assert_eq!(stub.requested_ttls(), ["21600"]);

        let probe = auth.probe().await.unwrap();
        assert!(
            probe.contains("AGEN…0002") && probe.contains(", expires 20"),
            "{probe}"
        );
        for secret in [metadata::secret_key(2), metadata::security_token(2)] {
            assert!(!probe.contains(&secret), "{probe}");
        }
        assert!(!format!("{auth:?}{:?}", auth.method).contains("never-print-me"));
    }

    #[tokio::test]
    async fn renews_forty_minutes_before_expiry() {
        // Due 1.5 s after issue: 40 minutes before expires_at.
        let stub = start(RENEW_BEFORE + Duration::from_millis(1500));
        let auth = agency(&stub);
        let (first, _, stamp) = signed(&auth).await;
        assert_eq!(first, metadata::access_key(1));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(signed(&auth).await.0, first);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let (second, token, new_stamp) = signed(&auth).await;
        assert_eq!(second, metadata::access_key(2));
        assert_eq!(token, metadata::security_token(2));
        assert_ne!(stamp, new_stamp);
        // The metadata token was reused.
        assert_eq!(stub.tokens_issued(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_401s_cause_one_renewal() {
        let stub = start(Duration::from_secs(3600 * 24));
        let auth = agency(&stub);
        let (_, _, stamp) = signed(&auth).await;
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move { auth.renew(stamp).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(stub.credentials_issued(), 2);
        assert_eq!(signed(&auth).await.0, metadata::access_key(2));
    }

    #[tokio::test]
    async fn an_expired_metadata_token_is_fetched_again_once() {
        let stub = start(Duration::from_secs(3600 * 24));
        let auth = agency(&stub);
        let (_, _, stamp) = signed(&auth).await;
        stub.expire_tokens();
        auth.renew(stamp).await.unwrap();
        assert_eq!(stub.tokens_issued(), 2);
        assert_eq!(stub.key_requests(), 3);
        assert_eq!(signed(&auth).await.0, metadata::access_key(2));
    }

    #[tokio::test]
    async fn a_service_without_tokens_still_works() {
        let stub = MetadataStub::start_background(MetadataConfig {
            tokens: false,
            ..MetadataConfig::default()
        })
        .unwrap();
        let auth = agency(&stub);
        assert_eq!(signed(&auth).await.0, metadata::access_key(1));
        assert_eq!((stub.token_requests(), stub.tokens_issued()), (1, 0));
    }

    #[tokio::test]
    async fn no_agency_is_one_clear_sentence_and_shared() {
        let stub = MetadataStub::start_background(MetadataConfig {
            agency: false,
            ..MetadataConfig::default()
        })
        .unwrap();
        let auth = agency(&stub);
        let err = auth.authorize(&mut request()).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("no cloud service agency"), "{text}");
        assert!(text.contains(&stub.endpoint()), "{text}");
        assert!(!err.is_transient());
        // Within the pause the service is not asked again, and the sentence is the same.
        let again = auth.authorize(&mut request()).await.unwrap_err();
        assert_eq!(again.to_string(), text);
        assert_eq!(stub.key_requests(), 1);

        // An agency attached later is picked up without a restart.
        stub.set_agency(true);
        tokio::time::sleep(FAILURE_PAUSE).await;
        assert_eq!(signed(&auth).await.0, metadata::access_key(1));
    }

    #[tokio::test]
    async fn unreachable_service_is_transient_and_says_where() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let config = AuthConfig::Agency {
            metadata_endpoint: endpoint.clone(),
        };
        let auth = Auth::with_env(&config, reqwest::Client::new(), &no_env).unwrap();
        let err = auth.authorize(&mut request()).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains(&endpoint), "{err}");
    }

    #[test]
    fn error_answers_are_quoted_short_and_html_is_not() {
        assert_eq!(message(b"<html>502</html>"), None);
        assert_eq!(
            message(b" token\nexpired ").as_deref(),
            Some("token expired")
        );
        assert_eq!(message(&[b'x'; 1000]).unwrap().len(), MAX_MESSAGE);
    }
}
