//! `method = "aksk"`: every request signed with SDK-HMAC-SHA256.
//!
//! Job: hold the access key, secret key and optional security token, sign fully built
//! requests with [`super::sign`], and re-read the key files after a 401.
//!
//! Invariants:
//! - A streamed body (the multipart upload) is never read: its payload hash is
//!   `UNSIGNED-PAYLOAD` (announced in `X-Sdk-Content-Sha256`). A JSON body held in full (the
//!   lifecycle APIs) is signed with its real SHA-256 and no such header, and a request
//!   without a body signs the empty hash, as the SDK does.
//! - What is signed is what is sent: `Host` is written into the request (the HTTP client keeps
//!   an explicit `Host`), and headers a proxy or the HTTP stack may add or rewrite
//!   (`Content-Length`, `Connection`, ...) are left out of the signature, as the SDK's own
//!   wire capture shows.
//! - The generation counter goes up exactly when a key changes, so concurrent 401s re-read the
//!   files once.

use std::time::SystemTime;

use reqwest::header::{AUTHORIZATION, HOST, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::secret::{ACCESS_KEY, EnvLookup, SECRET_KEY, SECURITY_TOKEN, Secret, Source};
use super::sign::{self, SignRequest};
use super::{AuthError, Stamp};

/// Headers never signed: the transport may add, drop or rewrite them on the way.
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "expect",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The AK/SK method's state.
#[derive(Debug)]
pub(super) struct AkskAuth {
    state: Mutex<Keys>,
}

#[derive(Debug)]
struct Keys {
    access_key: Source,
    secret_key: Source,
    security_token: Option<Source>,
    generation: u64,
}

/// The values used for one signature, copied out so the lock is not held while signing.
pub(super) struct Snapshot {
    /// The access key (AK).
    pub access_key: Secret,
    /// The secret key (SK).
    pub secret_key: Secret,
    /// The security token of temporary credentials.
    pub security_token: Option<Secret>,
}

impl AkskAuth {
    /// Finds all keys now, so a missing one stops start-up.
    pub fn new(
        access_key_file: Option<&std::path::Path>,
        secret_key_file: Option<&std::path::Path>,
        security_token_file: Option<&std::path::Path>,
        env: &EnvLookup<'_>,
    ) -> Result<Self, AuthError> {
        let keys = Keys {
            access_key: Source::resolve(&ACCESS_KEY, access_key_file, None, env)?,
            secret_key: Source::resolve(&SECRET_KEY, secret_key_file, None, env)?,
            security_token: Source::resolve_optional(
                &SECURITY_TOKEN,
                security_token_file,
                None,
                env,
            )?,
            generation: 0,
        };
        Ok(AkskAuth {
            state: Mutex::new(keys),
        })
    }

    /// Signs the request with the current keys at the current time.
    pub async fn authorize(&self, request: &mut reqwest::Request) -> Result<Stamp, AuthError> {
        let (snapshot, generation) = {
            let keys = self.state.lock().await;
            let snapshot = Snapshot {
                access_key: keys.access_key.value().clone(),
                secret_key: keys.secret_key.value().clone(),
                security_token: keys.security_token.as_ref().map(|s| s.value().clone()),
            };
            (snapshot, keys.generation)
        };
        sign_request(request, &snapshot, SystemTime::now())?;
        Ok(Stamp { generation })
    }

    /// Re-reads the key files after a 401, unless another task did since `stamp`.
    pub async fn renew(&self, stamp: Stamp) -> Result<(), AuthError> {
        let mut keys = self.state.lock().await;
        if keys.generation != stamp.generation {
            return Ok(());
        }
        let keys = &mut *keys;
        let mut sources: Vec<&mut Source> = vec![&mut keys.access_key, &mut keys.secret_key];
        sources.extend(keys.security_token.as_mut());
        let origins = sources
            .iter()
            .map(|s| s.origin().to_string())
            .collect::<Vec<_>>()
            .join(" and ");
        if !sources.iter().any(|s| s.is_reloadable()) {
            return Err(AuthError::CredentialsNotRenewable {
                what: "AK/SK credentials",
                origin: origins,
                advice: "check the keys and this machine's clock, then restart",
            });
        }
        let mut changed = false;
        for source in sources {
            changed |= source.reload()?;
        }
        if changed {
            keys.generation += 1;
            tracing::info!(origin = %origins, "read new AK/SK credentials after the server refused the old ones");
            Ok(())
        } else {
            Err(AuthError::CredentialsRefused {
                what: "AK/SK credentials",
                origin: origins,
                advice: "check the keys (temporary ones expire with their security token) and this machine's clock",
            })
        }
    }

    /// Describes the keys without revealing them.
    pub async fn probe(&self) -> String {
        let keys = self.state.lock().await;
        let mut text = format!(
            "AK/SK signing (SDK-HMAC-SHA256) with access key {} from {}, secret key from {}",
            mask(keys.access_key.value().expose()),
            keys.access_key.origin(),
            keys.secret_key.origin()
        );
        if let Some(token) = &keys.security_token {
            text.push_str(&format!(", security token from {}", token.origin()));
        }
        text
    }
}

/// Shows enough of an access key to tell keys apart, but not all of it.
pub(super) fn mask(access_key: &str) -> String {
    let chars: Vec<char> = access_key.chars().collect();
    if chars.len() < 12 {
        return "***".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// A header value that `Debug` of the request will not print.
fn sensitive(value: &str, url: &reqwest::Url) -> Result<HeaderValue, AuthError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| AuthError::Unsignable {
        // Secrets were checked to be visible ASCII when loaded, so this cannot happen; the
        // error names only the URL, never the value.
        url: url.to_string(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Adds `Host`, `X-Sdk-Date`, `X-Sdk-Content-Sha256`, `X-Security-Token` and `Authorization`.
pub(super) fn sign_request(
    request: &mut reqwest::Request,
    keys: &Snapshot,
    now: SystemTime,
) -> Result<(), AuthError> {
    let url = request.url().clone();
    let Some(host) = url.host_str() else {
        return Err(AuthError::Unsignable {
            url: url.to_string(),
        });
    };
    // `Url::port` is `None` for the scheme's default port, which is exactly when the HTTP
    // client leaves the port out of `Host`; IPv6 hosts come bracketed, as on the wire.
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let date = sign::sdk_date(now);

    let has_body = request.body().is_some();
    // JSON bodies (the lifecycle APIs) are signed with their real hash, as the SDK signs them;
    // any other body is taken for a stream (the multipart upload) and goes unsigned.
    let is_json = request
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body_bytes = request
        .body()
        .and_then(reqwest::Body::as_bytes)
        .filter(|_| is_json)
        .map(<[u8]>::to_vec);
    let headers = request.headers_mut();
    headers.remove(AUTHORIZATION);
    headers.insert(HOST, header(&host, &url)?);
    headers.insert(
        HeaderName::from_static(sign::HEADER_SDK_DATE),
        header(&date, &url)?,
    );
    let content_sha256 = HeaderName::from_static(sign::HEADER_CONTENT_SHA256);
    // A caller that hashed its body itself says so in this header; otherwise the body is
    // streamed and goes unsigned.
    let payload_hash = match (
        headers.get(&content_sha256).map(HeaderValue::to_str),
        &body_bytes,
    ) {
        (Some(Ok(hash)), _) => hash.to_owned(),
        (_, Some(bytes)) => hex::encode(Sha256::digest(bytes)),
        _ if has_body => {
            headers.insert(
                content_sha256,
                HeaderValue::from_static(sign::UNSIGNED_PAYLOAD),
            );
            sign::UNSIGNED_PAYLOAD.to_owned()
        }
        _ => {
            headers.remove(&content_sha256);
            sign::EMPTY_PAYLOAD_SHA256.to_owned()
        }
    };
    let security_token_name = HeaderName::from_static(sign::HEADER_SECURITY_TOKEN);
    match &keys.security_token {
        Some(token) => {
            headers.insert(security_token_name, sensitive(token.expose(), &url)?);
        }
        None => {
            headers.remove(security_token_name);
        }
    }

    let mut signed: Vec<(String, String)> = Vec::new();
    for name in headers.keys() {
        if UNSIGNED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let mut values = headers.get_all(name).iter();
        // A repeated header or one that is not text cannot be put in canonical form the way
        // the gateway does it; it is sent but left out of the signature.
        if let (Some(value), None) = (values.next(), values.next())
            && let Ok(value) = value.to_str()
        {
            signed.push((name.as_str().to_owned(), value.to_owned()));
        }
    }
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let req = SignRequest {
        method: request.method().as_str(),
        path: url.path(),
        query: &query,
        headers: &signed,
        payload_hash: &payload_hash,
    };
    let authorization =
        sign::authorization(keys.access_key.expose(), keys.secret_key.expose(), &req);
    let authorization = sensitive(&authorization, &url)?;
    request.headers_mut().insert(AUTHORIZATION, authorization);
    Ok(())
}

/// A plain header value; host names and dates are always valid ones.
fn header(value: &str, url: &reqwest::Url) -> Result<HeaderValue, AuthError> {
    HeaderValue::from_str(value).map_err(|_| AuthError::Unsignable {
        url: url.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::ffi::OsString;
    use std::time::Duration;

    use serde::Deserialize;

    use super::super::{Auth, AuthConfig};
    use super::*;

    #[derive(Deserialize)]
    struct Vector {
        access_key: String,
        secret_key: String,
        path: String,
        query: Vec<(String, String)>,
        headers_in: serde_json::Map<String, serde_json::Value>,
        signed_headers_out: serde_json::Map<String, serde_json::Value>,
        authorization: String,
    }

    fn keys(ak: &str, sk: &str, token: Option<&str>) -> Snapshot {
        Snapshot {
            access_key: Secret::new(ak.to_owned()),
            secret_key: Secret::new(sk.to_owned()),
            security_token: token.map(|t| Secret::new(t.to_owned())),
        }
    }

    type Pairs = Vec<(String, String)>;

    /// The request as the server will see it: headers and decoded query.
    fn server_view(req: &reqwest::Request) -> (Pairs, Pairs) {
        let headers = req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        let query = req.url().query_pairs().into_owned().collect();
        (headers, query)
    }

    /// Signing a real `reqwest::Request` built like the vectors' requests gives the SDK's
    /// `Authorization` byte for byte, `Content-Length` and all.
    #[test]
    fn reqwest_requests_reproduce_sdk_vectors() {
        let vectors: Vec<Vector> =
            serde_json::from_str(include_str!("testdata/aksk-sdk-hmac-sha256.json")).unwrap();
        let client = reqwest::Client::new();
        for v in vectors {
            let host = v.signed_headers_out["Host"].as_str().unwrap();
            let url = format!("https://{host}{}", v.path)
                .replace("https://127.0.0.1", "http://127.0.0.1");
            let url = reqwest::Url::parse_with_params(&url, &v.query).unwrap();
            let mut builder = client
                .post(url)
                .header("Content-Length", "186")
                .body("not read");
            let mut token = None;
            for (name, value) in &v.headers_in {
                let value = value.as_str().unwrap();
                match name.as_str() {
                    "X-Sdk-Date" => {}
                    "X-Security-Token" => token = Some(value),
                    _ => builder = builder.header(name, value),
                }
            }
            let mut req = builder.build().unwrap();
            let date = v.headers_in["X-Sdk-Date"].as_str().unwrap();
            let now = sign::parse_sdk_date(date).unwrap();
            sign_request(&mut req, &keys(&v.access_key, &v.secret_key, token), now).unwrap();

            let h = req.headers();
            assert_eq!(h["authorization"].to_str().unwrap(), v.authorization);
            assert_eq!(h["host"], host);
            assert_eq!(h["x-sdk-date"], date);
            assert_eq!(h["x-sdk-content-sha256"], "UNSIGNED-PAYLOAD");
            assert!(h["authorization"].is_sensitive());
            if let Some(token) = token {
                assert_eq!(h["x-security-token"], token);
                assert!(h["x-security-token"].is_sensitive());
            }
        }
    }

    #[test]
    fn host_follows_the_url_and_extra_headers_are_signed() {
        let client = reqwest::Client::new();
        let cases = [
            ("https://example.com:443/v3/x", "example.com"),
            ("http://example.com:80/v3/x", "example.com"),
            ("http://127.0.0.1:36361/v3/x", "127.0.0.1:36361"),
            ("https://[::1]:8443/v3/x", "[::1]:8443"),
        ];
        for (url, host) in cases {
            let url = reqwest::Url::parse_with_params(
                url,
                [("plugin_name", "demo task"), ("business_type", "Deploy")],
            )
            .unwrap();
            let mut req = client
                .post(url.clone())
                .header("User-Agent", "extdrop/test")
                .header("X-Project-Id", "p1")
                .header("Authorization", "stale")
                .body("x")
                .build()
                .unwrap();
            let now = at(1_795_823_704);
            sign_request(&mut req, &keys("AK0", "SK0", None), now).unwrap();
            assert_eq!(req.headers()["host"], host, "{url}");
            assert!(req.url().query().unwrap().contains("demo+task"));
            let (headers, query) = server_view(&req);
            let parsed =
                sign::parse_authorization(req.headers()["authorization"].to_str().unwrap())
                    .unwrap();
            assert_eq!(
                parsed.signed_headers,
                [
                    "host",
                    "user-agent",
                    "x-project-id",
                    "x-sdk-content-sha256",
                    "x-sdk-date"
                ]
            );
            let view = SignRequest {
                method: "POST",
                path: req.url().path(),
                query: &query,
                headers: &headers,
                payload_hash: "UNSIGNED-PAYLOAD",
            };
            assert!(sign::verify("SK0", &view, &parsed), "{url}");
        }
    }

    fn at(secs: u64) -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn bodiless_requests_sign_the_empty_hash() {
        let mut req = reqwest::Client::new()
            .get("https://example.com/v3/x")
            .build()
            .unwrap();
        sign_request(&mut req, &keys("AK0", "SK0", None), SystemTime::now()).unwrap();
        assert!(req.headers().get("x-sdk-content-sha256").is_none());
        let (headers, query) = server_view(&req);
        let parsed =
            sign::parse_authorization(req.headers()["authorization"].to_str().unwrap()).unwrap();
        let view = SignRequest {
            method: "GET",
            path: "/v3/x",
            query: &query,
            headers: &headers,
            payload_hash: sign::EMPTY_PAYLOAD_SHA256,
        };
        assert!(sign::verify("SK0", &view, &parsed));
    }

    #[tokio::test]
    async fn key_files_are_reread_on_renew() {
        let dir = tempfile::tempdir().unwrap();
        let ak = dir.path().join("ak");
        let sk = dir.path().join("sk");
        std::fs::write(&ak, "AKEXAMPLE0123456789\n").unwrap();
        std::fs::write(&sk, "secret-one\n").unwrap();
        let config = AuthConfig::Aksk {
            access_key_file: Some(ak.clone()),
            secret_key_file: Some(sk.clone()),
            security_token_file: None,
        };
        let no_env = |_: &str| -> Option<OsString> { None };
        let auth = Auth::with_env(&config, reqwest::Client::new(), &no_env).unwrap();
        assert_eq!(auth.method_name(), "aksk");

        let verify_with = |req: &reqwest::Request, sk: &str| {
            let (headers, query) = server_view(req);
            let parsed =
                sign::parse_authorization(req.headers()["authorization"].to_str().unwrap())
                    .unwrap();
            let view = SignRequest {
                method: "POST",
                path: req.url().path(),
                query: &query,
                headers: &headers,
                payload_hash: "UNSIGNED-PAYLOAD",
            };
            sign::verify(sk, &view, &parsed)
        };
        let build = || {
            reqwest::Client::new()
                .post("https://example.com/v3/x")
                .body("x")
                .build()
                .unwrap()
        };

        let mut req = build();
        let stamp = auth.authorize(&mut req).await.unwrap();
        assert!(verify_with(&req, "secret-one"));

        // Nothing changed: the refusal is reported, naming the files and the clock.
        let err = auth.renew(stamp).await.unwrap_err();
        assert!(err.is_transient());
        assert!(err.to_string().contains("clock"), "{err}");
        assert!(!err.to_string().contains("secret-one"), "{err}");

        std::fs::write(&sk, "secret-two\n").unwrap();
        auth.renew(stamp).await.unwrap();
        // A second 401 for the same old stamp does not read again.
        std::fs::write(&sk, "secret-three\n").unwrap();
        auth.renew(stamp).await.unwrap();
        let mut req = build();
        auth.authorize(&mut req).await.unwrap();
        assert!(verify_with(&req, "secret-two"));

        let probe = auth.probe().await.unwrap();
        assert!(probe.contains("AKEX…6789"), "{probe}");
        assert!(!probe.contains("AKEXAMPLE0123456789") && !probe.contains("secret-"));
        for text in [format!("{auth:?}"), format!("{:?}", req.headers())] {
            assert!(
                !text.contains("secret-two") && !text.contains("secret-three"),
                "{text}"
            );
        }
    }

    #[test]
    fn missing_secret_key_fails_at_start() {
        let env = |name: &str| (name == "EXTDROP_ACCESS_KEY").then(|| OsString::from("AK"));
        let config = AuthConfig::Aksk {
            access_key_file: None,
            secret_key_file: None,
            security_token_file: None,
        };
        let err = Auth::with_env(&config, reqwest::Client::new(), &env).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("secret_key_file") && text.contains("EXTDROP_SECRET_KEY"));
    }
}
