//! Credentials: who extdrop is when it talks to CodeArts.
//!
//! Job: turn the `[auth]` table into something every upload can use to authorize its request,
//! and renew what the server refuses. Four methods (SPEC §2, §5):
//! - `token`: a ready IAM token sent as `X-Auth-Token` (`auth/token.rs`);
//! - `password`: an IAM token obtained from IAM with the user's password, cached and renewed
//!   ahead of expiry (`auth/iam.rs`);
//! - `aksk`: every request signed with SDK-HMAC-SHA256 (`auth/aksk.rs`; [`sign`] holds the
//!   algorithm itself);
//! - `agency`: temporary AK/SK with a security token from the ECS metadata service, cached,
//!   renewed ahead of expiry and signed like `aksk` (`auth/agency.rs`, SPEC §7).
//!
//! Secrets are looked up by `auth/secret.rs`; errors are [`AuthError`] (`auth/error.rs`).
//!
//! Invariants:
//! - Secrets are found and read in [`Auth::new`] (no network), so a missing or unreadable one
//!   stops start-up with a sentence naming the key, file or variable to fix.
//! - Secrets live only in [`Secret`] and sensitive header values: no `Display`, `Debug`,
//!   error or tracing event ever shows one.
//! - [`Auth::authorize`] never reads the request body, so streamed uploads stay streamed.
//! - Renewal is single-flight: every [`Stamp`] records the credentials it was issued under,
//!   and [`Auth::renew`] does nothing if they were replaced since, so a burst of 401s from
//!   concurrent uploads causes one renewal.

mod agency;
mod aksk;
mod error;
mod iam;
mod secret;
pub mod sign;
mod token;

use std::path::PathBuf;
use std::sync::Arc;

pub use agency::RENEW_BEFORE as AGENCY_RENEW_BEFORE;
pub use error::AuthError;
pub(crate) use secret::CREDENTIALS_DIRECTORY;
pub use secret::Secret;
pub use sign::clock_skew_hint;

use secret::EnvLookup;

/// The `[auth]` table, as the config module checked it (keys present, none unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// `method = "token"`: a ready IAM token.
    Token {
        /// `token_file`: a file holding the token, re-read after a 401.
        token_file: Option<PathBuf>,
        /// `token`: the token written in the config, the last resort.
        token: Option<Secret>,
    },
    /// `method = "password"`: IAM password authentication.
    Password {
        /// `iam_endpoint`, e.g. `https://iam.myhuaweicloud.com`.
        iam_endpoint: String,
        /// `user_name`: the IAM user.
        user_name: String,
        /// `domain_name`: the account (domain) the user belongs to.
        domain_name: String,
        /// `project`: a project scope (e.g. `cn-north-4`); domain scope when absent.
        project: Option<String>,
        /// `password_file`: a file holding the password.
        password_file: Option<PathBuf>,
    },
    /// `method = "aksk"`: SDK-HMAC-SHA256 request signing.
    Aksk {
        /// `access_key_file`: a file holding the access key (AK).
        access_key_file: Option<PathBuf>,
        /// `secret_key_file`: a file holding the secret key (SK).
        secret_key_file: Option<PathBuf>,
        /// `security_token_file`: a file holding the security token of temporary credentials.
        security_token_file: Option<PathBuf>,
    },
    /// `method = "agency"`: temporary AK/SK from the ECS metadata service.
    Agency {
        /// `metadata_endpoint`, `http://169.254.169.254` unless a test or proxy says otherwise.
        metadata_endpoint: String,
    },
}

impl AuthConfig {
    /// The method as written in `[auth] method`.
    pub fn method_name(&self) -> &'static str {
        match self {
            AuthConfig::Token { .. } => "token",
            AuthConfig::Password { .. } => "password",
            AuthConfig::Aksk { .. } => "aksk",
            AuthConfig::Agency { .. } => "agency",
        }
    }
}

/// Identifies the credentials a request was authorized with, to hand back to
/// [`Auth::renew`] when the server answers 401.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Bumped every time the credentials change.
    generation: u64,
}

/// The credentials of one configuration, shared by all uploads; cloning is cheap.
#[derive(Clone)]
pub struct Auth {
    method: Arc<Method>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the method: the internals hold secrets (redacted, but why risk it).
        f.debug_struct("Auth")
            .field("method", &self.method_name())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Method {
    Token(token::TokenAuth),
    Password(iam::IamAuth),
    Aksk(aksk::AkskAuth),
    Agency(agency::AgencyAuth),
}

impl Auth {
    /// Finds and reads every secret the configured method needs, without any network
    /// traffic; fails with a sentence naming the key, file or environment variable to fix.
    ///
    /// `http` is used for IAM token requests (method `password`), with a 30-second timeout
    /// of their own.
    pub fn new(config: &AuthConfig, http: reqwest::Client) -> Result<Auth, AuthError> {
        Self::with_env(config, http, &|name| std::env::var_os(name))
    }

    /// [`Auth::new`] with the environment supplied by the caller, so tests need not touch
    /// the process environment.
    fn with_env(
        config: &AuthConfig,
        http: reqwest::Client,
        env: &EnvLookup<'_>,
    ) -> Result<Auth, AuthError> {
        let method = match config {
            AuthConfig::Token { token_file, token } => Method::Token(token::TokenAuth::new(
                token_file.as_deref(),
                token.as_ref(),
                env,
            )?),
            AuthConfig::Password {
                iam_endpoint,
                user_name,
                domain_name,
                project,
                password_file,
            } => Method::Password(iam::IamAuth::new(
                iam_endpoint,
                user_name,
                domain_name,
                project.as_deref(),
                password_file.as_deref(),
                http,
                env,
            )?),
            AuthConfig::Aksk {
                access_key_file,
                secret_key_file,
                security_token_file,
            } => Method::Aksk(aksk::AkskAuth::new(
                access_key_file.as_deref(),
                secret_key_file.as_deref(),
                security_token_file.as_deref(),
                env,
            )?),
            AuthConfig::Agency { metadata_endpoint } => {
                Method::Agency(agency::AgencyAuth::new(metadata_endpoint)?)
            }
        };
        Ok(Auth {
            method: Arc::new(method),
        })
    }

    /// Adds credentials to a fully built request (after multipart has set its
    /// `Content-Type`): `X-Auth-Token` for `token` and `password` (obtaining or renewing the
    /// IAM token first when due), or the SDK-HMAC-SHA256 headers for `aksk` (`Host`,
    /// `X-Sdk-Date`, `X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD`, `X-Security-Token` when set,
    /// `Authorization`). Never reads the body. Call it right before sending: an AK/SK
    /// signature is only accepted for 15 minutes.
    pub async fn authorize(&self, request: &mut reqwest::Request) -> Result<Stamp, AuthError> {
        match &*self.method {
            Method::Token(token) => token.authorize(request).await,
            Method::Password(iam) => iam.authorize(request).await,
            Method::Aksk(aksk) => aksk.authorize(request).await,
            Method::Agency(agency) => agency.authorize(request).await,
        }
    }

    /// The server answered 401 to a request authorized with `stamp`: renew the credentials
    /// (re-read the token file, obtain a new IAM token, re-read the key files). Does nothing
    /// if another task renewed them since `stamp`, so concurrent 401s cause one renewal.
    ///
    /// Fails when nothing new can be had: credentials from the environment or the config
    /// cannot change (not transient); files that still hold the refused values may yet be
    /// rotated (transient). For `aksk`, check [`clock_skew_hint`] on the 401 first: a skewed
    /// clock looks like a bad key.
    pub async fn renew(&self, stamp: Stamp) -> Result<(), AuthError> {
        match &*self.method {
            Method::Token(token) => token.renew(stamp).await,
            Method::Password(iam) => iam.renew(stamp).await,
            Method::Aksk(aksk) => aksk.renew(stamp).await,
            Method::Agency(agency) => agency.renew(stamp).await,
        }
    }

    /// For `extdrop check --online` (and `status`, for `agency`): `password` obtains a token
    /// from IAM, `agency` temporary credentials from the metadata service (saying when they
    /// expire); `token` and `aksk` describe where their secrets come from (the endpoint judges them, see
    /// [`crate::upload::Uploader::probe`]). Returns one line for the operator without any
    /// secret, e.g. "IAM token for user deployer in domain my-account obtained from
    /// `https://iam.myhuaweicloud.com`, expires 2026-11-29T01:02:03Z".
    pub async fn probe(&self) -> Result<String, AuthError> {
        match &*self.method {
            Method::Token(token) => Ok(token.probe().await),
            Method::Password(iam) => iam.probe().await,
            Method::Aksk(aksk) => Ok(aksk.probe().await),
            Method::Agency(agency) => agency.probe().await,
        }
    }

    /// The configured method as written in `[auth] method`: `token`, `password`, `aksk` or
    /// `agency`.
    pub fn method_name(&self) -> &'static str {
        match &*self.method {
            Method::Token(_) => "token",
            Method::Password(_) => "password",
            Method::Aksk(_) => "aksk",
            Method::Agency(_) => "agency",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn debug_of_config_shows_no_secret() {
        let config = AuthConfig::Token {
            token_file: None,
            token: Some(Secret::new("MIIvery-secret-token".to_owned())),
        };
        let text = format!("{config:?}");
        assert!(text.contains("Secret(***)"), "{text}");
        assert!(!text.contains("MIIvery"), "{text}");
    }

    #[test]
    fn auth_is_cheap_to_share() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<Auth>();
    }
}
