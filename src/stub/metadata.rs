//! Loopback stand-in of the ECS metadata service, for the agency credentials of SPEC §7.
//!
//! Job: answer the two requests `method = "agency"` makes, on its own listener, with
//! credentials of a lifetime the test chooses:
//!
//! - `PUT /meta-data/latest/api/token` with `X-Metadata-Token-Ttl-Seconds`: `200` and a fresh
//!   metadata token as the body; `404` while the service "has no tokens"
//!   ([`MetadataStub::set_tokens`]); `400` without the TTL header.
//! - `GET /openstack/latest/securitykey`: `200`
//!   `{"credential": {"access", "secret", "securitytoken", "expires_at"}}`. While tokens are on,
//!   `X-Metadata-Token` must be a token it issued and has not expired
//!   ([`MetadataStub::expire_tokens`]), else `401` (a body without the agency sentence); without
//!   an agency ([`MetadataStub::set_agency`]) it is the service's `401` "Please configure Cloud
//!   Service Agency first".
//!
//! Invariants:
//! - Every successful security-key request issues the next credential: the `n`-th (from 1) has
//!   the access key [`access_key`]`(n)`, the secret key [`secret_key`]`(n)` and the security
//!   token [`security_token`]`(n)`, so a test knows them in advance and can hand them to the
//!   main stand-in's AK/SK verifier ([`accepted_keys`]) without any hook between the two.
//! - `expires_at` is the issue time plus the configured lifetime, in the service's format
//!   (`2026-11-30T12:00:00.000000Z`).
//! - Dropping a [`MetadataStub`] stops it and closes its connections, as for the main stub.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The path of the metadata token request.
pub const TOKEN_PATH: &str = "/meta-data/latest/api/token";
/// The path of the temporary credentials.
pub const SECURITY_KEY_PATH: &str = "/openstack/latest/securitykey";
/// The sentence with which the service says the instance has no agency.
pub const NO_AGENCY: &str = "Please configure Cloud Service Agency first";

/// The access key of the `n`-th credential issued (from 1).
pub fn access_key(n: usize) -> String {
    format!("AGENCYAK{n:012}")
}

/// The secret key of the `n`-th credential issued.
pub fn secret_key(n: usize) -> String {
    format!("agency-sk-{n:04}-never-print-me")
}

/// The security token of the `n`-th credential issued.
pub fn security_token(n: usize) -> String {
    format!("agency-st-{n:04}-never-print-me")
}

/// The (AK, SK) pairs of the first `count` credentials, for
/// [`super::StubAuth::aksk`], so that the main stand-in verifies signatures made with them.
pub fn accepted_keys(count: usize) -> Vec<(String, String)> {
    (1..=count)
        .map(|n| (access_key(n), secret_key(n)))
        .collect()
}

/// How the metadata stand-in starts.
#[derive(Clone, Debug)]
pub struct MetadataConfig {
    /// How long each issued credential lives (its `expires_at` is this far ahead).
    pub lifetime: Duration,
    /// Whether the token endpoint exists (`false`: it answers 404 and no token is needed).
    pub tokens: bool,
    /// Whether the instance has an agency (`false`: the security key answers the 401).
    pub agency: bool,
}

impl Default for MetadataConfig {
    /// Tokens on, an agency, credentials living 24 hours.
    fn default() -> Self {
        MetadataConfig {
            lifetime: Duration::from_secs(24 * 3600),
            tokens: true,
            agency: true,
        }
    }
}

/// The running metadata stand-in.
#[derive(Debug)]
pub struct MetadataStub {
    addr: SocketAddr,
    shared: Arc<Mutex<State>>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct State {
    config: MetadataConfig,
    /// Metadata tokens issued and still valid.
    tokens: Vec<String>,
    tokens_issued: usize,
    token_requests: usize,
    key_requests: usize,
    credentials_issued: usize,
    /// The TTL each token request asked for, as sent.
    ttls: Vec<String>,
}

impl MetadataStub {
    /// Binds a free loopback port and serves on a background thread with its own runtime.
    pub fn start_background(config: MetadataConfig) -> std::io::Result<MetadataStub> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Mutex::new(State {
            config,
            tokens: Vec::new(),
            tokens_issued: 0,
            token_requests: 0,
            key_requests: 0,
            credentials_issued: 0,
            ttls: Vec::new(),
        }));
        let (stop, mut stopped) = watch::channel(false);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("extdrop-metadata".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            tracing::error!(%error, "metadata stub cannot use its listener");
                            return;
                        }
                    };
                    let stop = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    crate::accept::accept_until(listener, stop, 64, "metadata stub", |stream| {
                        serve_connection(stream, Arc::clone(&thread_shared))
                    })
                    .await;
                });
            })?;
        Ok(MetadataStub {
            addr,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The base URL, `http://127.0.0.1:PORT`, for `[auth] metadata_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives the instance an agency, or takes it away.
    pub fn set_agency(&self, agency: bool) {
        self.lock().config.agency = agency;
    }

    /// Turns the token endpoint on, or off (404, no token needed).
    pub fn set_tokens(&self, tokens: bool) {
        self.lock().config.tokens = tokens;
    }

    /// Changes the lifetime of the credentials issued from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.lock().config.lifetime = lifetime;
    }

    /// Makes every metadata token issued so far expired: the next security-key request made
    /// with one is answered 401.
    pub fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Token requests received (`PUT`), answered or not.
    pub fn token_requests(&self) -> usize {
        self.lock().token_requests
    }

    /// Metadata tokens issued.
    pub fn tokens_issued(&self) -> usize {
        self.lock().tokens_issued
    }

    /// Security-key requests received (`GET`), answered or not.
    pub fn key_requests(&self) -> usize {
        self.lock().key_requests
    }

    /// Credentials issued; the last one has the keys of this number.
    pub fn credentials_issued(&self) -> usize {
        self.lock().credentials_issued
    }

    /// The `X-Metadata-Token-Ttl-Seconds` of each token request, as sent.
    pub fn requested_ttls(&self) -> Vec<String> {
        self.lock().ttls.clone()
    }
}

impl Drop for MetadataStub {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Mutex<State>>) {
    let service = hyper::service::service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(&shared, request).await) }
    });
    if let Err(error) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%error, "metadata stub connection ended with an error");
    }
}

fn answer(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn handle(shared: &Mutex<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    // The requests carry no body worth reading; reading it keeps the connection reusable.
    let _ = body.collect().await;
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
    match (&parts.method, parts.uri.path()) {
        (&Method::PUT, TOKEN_PATH) => {
            state.token_requests += 1;
            if !state.config.tokens {
                return answer(StatusCode::NOT_FOUND, "404 Not Found");
            }
            let Some(ttl) = header("x-metadata-token-ttl-seconds") else {
                return answer(
                    StatusCode::BAD_REQUEST,
                    "X-Metadata-Token-Ttl-Seconds is required",
                );
            };
            state.ttls.push(ttl);
            state.tokens_issued += 1;
            let token = format!("metadata-token-{:04}-never-print-me", state.tokens_issued);
            state.tokens.push(token.clone());
            answer(StatusCode::OK, token)
        }
        (&Method::GET, SECURITY_KEY_PATH) => {
            state.key_requests += 1;
            if state.config.tokens {
                let valid = header("x-metadata-token").is_some_and(|t| state.tokens.contains(&t));
                if !valid {
                    return answer(
                        StatusCode::UNAUTHORIZED,
                        "401 Unauthorized: the metadata token is missing, invalid or expired",
                    );
                }
            }
            if !state.config.agency {
                let body = serde_json::json!({ "error": { "message": NO_AGENCY, "code": 401 } });
                return answer(StatusCode::UNAUTHORIZED, body.to_string());
            }
            state.credentials_issued += 1;
            let n = state.credentials_issued;
            let expires = SystemTime::now() + state.config.lifetime;
            let body = serde_json::json!({
                "credential": {
                    "access": access_key(n),
                    "secret": secret_key(n),
                    "securitytoken": security_token(n),
                    "expires_at": humantime::format_rfc3339_micros(expires).to_string(),
                }
            });
            answer(StatusCode::OK, body.to_string())
        }
        _ => answer(StatusCode::NOT_FOUND, "404 Not Found"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    #[tokio::test]
    async fn tokens_keys_and_the_no_agency_answer() {
        let stub = MetadataStub::start_background(MetadataConfig {
            lifetime: Duration::from_secs(3600),
            ..MetadataConfig::default()
        })
        .unwrap();
        let http = client();
        let base = stub.endpoint();
        let token = http
            .put(format!("{base}{TOKEN_PATH}"))
            .header("X-Metadata-Token-Ttl-Seconds", "21600")
            .send()
            .await
            .unwrap();
        assert_eq!(token.status(), 200);
        let token = token.text().await.unwrap();
        assert_eq!(stub.requested_ttls(), ["21600"]);

        let key = |t: Option<String>| {
            let mut request = http.get(format!("{base}{SECURITY_KEY_PATH}"));
            if let Some(t) = t {
                request = request.header("X-Metadata-Token", t);
            }
            request.send()
        };
        // Without the token, 401 that does not speak of agencies.
        let refused = key(None).await.unwrap();
        assert_eq!(refused.status(), 401);
        assert!(!refused.text().await.unwrap().contains(NO_AGENCY));

        let body = key(Some(token.clone()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let credential = &json["credential"];
        assert_eq!(credential["access"], access_key(1));
        assert_eq!(credential["secret"], secret_key(1));
        assert_eq!(credential["securitytoken"], security_token(1));
        let expires = humantime::parse_rfc3339(credential["expires_at"].as_str().unwrap()).unwrap();
        let ahead = expires.duration_since(SystemTime::now()).unwrap();
        assert!(ahead > Duration::from_secs(3590) && ahead <= Duration::from_secs(3600));

        stub.expire_tokens();
        assert_eq!(key(Some(token.clone())).await.unwrap().status(), 401);

        stub.set_tokens(false);
        let no_tokens = http
            .put(format!("{base}{TOKEN_PATH}"))
            .header("X-Metadata-Token-Ttl-Seconds", "21600")
            .send()
            .await
            .unwrap();
        assert_eq!(no_tokens.status(), 404);
        assert_eq!(key(None).await.unwrap().status(), 200);
        assert_eq!(stub.credentials_issued(), 2);

        stub.set_agency(false);
        let refused = key(None).await.unwrap();
        assert_eq!(refused.status(), 401);
        assert!(refused.text().await.unwrap().contains(NO_AGENCY));
        assert_eq!(accepted_keys(2)[1], (access_key(2), secret_key(2)));
    }
}
