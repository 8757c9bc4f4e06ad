//! `method = "token"`: a ready IAM token sent as `X-Auth-Token`.
//!
//! Job: hold the token, put it on requests, and after a 401 read its file again.
//!
//! Invariants:
//! - The generation counter goes up exactly when the token value changes; a [`Stamp`] carries
//!   the generation it was issued under, so a renewal that another task already did is not
//!   repeated.
//! - A token from the environment or the config cannot change, so a 401 on it is final and
//!   says so; a token file that still holds the refused token is reported as transient, since
//!   whatever rotates the file may not have run yet.

use reqwest::header::{HeaderName, HeaderValue};
use tokio::sync::Mutex;

use super::secret::{EnvLookup, Source, TOKEN};
use super::{AuthError, Stamp};

/// The header an IAM token travels in.
const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");

/// The token method's state.
#[derive(Debug)]
pub(super) struct TokenAuth {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    source: Source,
    generation: u64,
}

impl TokenAuth {
    /// Finds the token now, so a missing one stops start-up.
    pub fn new(
        token_file: Option<&std::path::Path>,
        token: Option<&super::Secret>,
        env: &EnvLookup<'_>,
    ) -> Result<Self, AuthError> {
        let source = Source::resolve(&TOKEN, token_file, token, env)?;
        Ok(TokenAuth {
            state: Mutex::new(State {
                source,
                generation: 0,
            }),
        })
    }

    /// Sets `X-Auth-Token`.
    pub async fn authorize(&self, request: &mut reqwest::Request) -> Result<Stamp, AuthError> {
        let state = self.state.lock().await;
        let value = header_value(&state.source)?;
        request.headers_mut().insert(X_AUTH_TOKEN, value);
        Ok(Stamp {
            generation: state.generation,
        })
    }

    /// Re-reads the token file after a 401, unless another task did since `stamp`.
    pub async fn renew(&self, stamp: Stamp) -> Result<(), AuthError> {
        let mut state = self.state.lock().await;
        if state.generation != stamp.generation {
            return Ok(());
        }
        let origin = state.source.origin().to_string();
        if !state.source.is_reloadable() {
            return Err(AuthError::CredentialsNotRenewable {
                what: TOKEN.what,
                origin,
                advice: "set a fresh token and restart, or use token_file or method = \"password\"",
            });
        }
        if state.source.reload()? {
            state.generation += 1;
            tracing::info!(origin = %origin, "read a new IAM token after the server refused the old one");
            Ok(())
        } else {
            Err(AuthError::CredentialsRefused {
                what: TOKEN.what,
                origin,
                advice: "write a valid token there (IAM tokens expire after 24 hours)",
            })
        }
    }

    /// Describes where the token comes from, without checking it.
    pub async fn probe(&self) -> String {
        let state = self.state.lock().await;
        format!("IAM token (X-Auth-Token) from {}", state.source.origin())
    }
}

/// The token as a header value, marked sensitive so `Debug` of the request hides it.
fn header_value(source: &Source) -> Result<HeaderValue, AuthError> {
    let mut value = HeaderValue::from_str(source.value().expose()).map_err(|_| {
        // `Source` already insisted on visible ASCII; this only guards that promise.
        AuthError::SecretNotHeaderSafe {
            what: TOKEN.what,
            origin: source.origin().to_string(),
        }
    })?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::ffi::OsString;
    use std::path::Path;

    use super::super::{Auth, AuthConfig, Secret};
    use super::*;

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn request() -> reqwest::Request {
        reqwest::Request::new(
            reqwest::Method::POST,
            "https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com/v3/x/extension/upload"
                .parse()
                .unwrap(),
        )
    }

    async fn sent_token(auth: &Auth) -> (String, Stamp) {
        let mut req = request();
        let stamp = auth.authorize(&mut req).await.unwrap();
        let value = req.headers()["x-auth-token"].to_str().unwrap().to_owned();
        (value, stamp)
    }

    fn token_file_auth(path: &Path) -> Auth {
        let config = AuthConfig::Token {
            token_file: Some(path.to_path_buf()),
            token: None,
        };
        Auth::with_env(&config, reqwest::Client::new(), &no_env).unwrap()
    }

    #[tokio::test]
    async fn token_file_is_reread_on_renew() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "first-token\n").unwrap();
        let auth = token_file_auth(&file);
        assert_eq!(auth.method_name(), "token");

        let (value, stamp) = sent_token(&auth).await;
        assert_eq!(value, "first-token");

        std::fs::write(&file, "second-token\n").unwrap();
        // Without a 401 nothing is re-read.
        assert_eq!(sent_token(&auth).await.0, "first-token");
        auth.renew(stamp).await.unwrap();
        let (value, new_stamp) = sent_token(&auth).await;
        assert_eq!(value, "second-token");
        assert_ne!(stamp, new_stamp);
    }

    #[tokio::test]
    async fn stale_stamp_does_not_renew_twice() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "first-token").unwrap();
        let auth = token_file_auth(&file);
        let (_, stamp) = sent_token(&auth).await;

        std::fs::write(&file, "second-token").unwrap();
        auth.renew(stamp).await.unwrap();
        // A second task that got the 401 for the same old token: already renewed, no re-read.
        std::fs::write(&file, "third-token").unwrap();
        auth.renew(stamp).await.unwrap();
        assert_eq!(sent_token(&auth).await.0, "second-token");
    }

    #[tokio::test]
    async fn unchanged_token_file_is_a_transient_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "same-token").unwrap();
        let auth = token_file_auth(&file);
        let (_, stamp) = sent_token(&auth).await;
        let err = auth.renew(stamp).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        let text = err.to_string();
        assert!(text.contains(&*file.to_string_lossy()), "{text}");
        assert!(!text.contains("same-token"), "{text}");
    }

    #[tokio::test]
    async fn env_token_cannot_be_renewed() {
        let env = |name: &str| (name == "EXTDROP_TOKEN").then(|| OsString::from("env-token"));
        let config = AuthConfig::Token {
            token_file: None,
            token: Some(Secret::new("inline-token".to_owned())),
        };
        let auth = Auth::with_env(&config, reqwest::Client::new(), &env).unwrap();
        let (value, stamp) = sent_token(&auth).await;
        assert_eq!(value, "env-token");
        let err = auth.renew(stamp).await.unwrap_err();
        assert!(!err.is_transient());
        assert!(err.to_string().contains("EXTDROP_TOKEN"), "{err}");

        let probe = auth.probe().await.unwrap();
        assert!(probe.contains("EXTDROP_TOKEN") && !probe.contains("env-token"));
    }

    #[tokio::test]
    async fn header_is_sensitive_and_debug_hides_token() {
        let config = AuthConfig::Token {
            token_file: None,
            token: Some(Secret::new("inline-secret-token".to_owned())),
        };
        let auth = Auth::with_env(&config, reqwest::Client::new(), &no_env).unwrap();
        let mut req = request();
        auth.authorize(&mut req).await.unwrap();
        assert!(req.headers()["x-auth-token"].is_sensitive());
        for text in [
            format!("{config:?}"),
            format!("{auth:?}"),
            format!("{:?}", req.headers()),
        ] {
            assert!(!text.contains("inline-secret-token"), "{text}");
        }
    }

    #[test]
    fn missing_token_fails_at_start() {
        let config = AuthConfig::Token {
            token_file: None,
            token: None,
        };
        let err = Auth::with_env(&config, reqwest::Client::new(), &no_env).unwrap_err();
        assert!(err.to_string().contains("EXTDROP_TOKEN"), "{err}");
    }
}
