//! The ways obtaining or using credentials can fail.
//!
//! Job: one enum, each variant carrying the context an operator needs (which key, file,
//! variable, user, endpoint), displayed as one sentence that says what to fix.
//!
//! Invariant: no variant holds a secret, so no message can leak one.

use std::io;
use std::path::PathBuf;

/// Why credentials could not be found, obtained or renewed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No place holds a required secret.
    #[error(
        "no {what} is configured: set {keys} in [auth], load the systemd credential `{credential}` (LoadCredential=), or set the environment variable {env}"
    )]
    MissingSecret {
        /// The secret, in the operator's words.
        what: &'static str,
        /// The `[auth]` key(s) that could name it.
        keys: String,
        /// The credential file name under `$CREDENTIALS_DIRECTORY`.
        credential: &'static str,
        /// The environment variable(s).
        env: String,
    },

    /// A secret file exists (or was named) but cannot be read.
    #[error("cannot read the {what} from {}: {reason}", path.display())]
    UnreadableSecret {
        /// The secret, in the operator's words.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said (permission denied, no such file...).
        reason: io::Error,
    },

    /// A secret is empty (after trimming a file's trailing whitespace).
    #[error("the {what} from {origin} is empty")]
    EmptySecret {
        /// The secret, in the operator's words.
        what: &'static str,
        /// Where it came from ("file /run/...", "environment variable ...").
        origin: String,
    },

    /// A secret that goes into an HTTP header holds spaces, control or non-ASCII characters.
    #[error(
        "the {what} from {origin} contains spaces, control or non-ASCII characters, which cannot be sent in an HTTP header; check that the right value was stored"
    )]
    SecretNotHeaderSafe {
        /// The secret, in the operator's words.
        what: &'static str,
        /// Where it came from.
        origin: String,
    },

    /// A secret's environment variable is not valid UTF-8.
    #[error("the {what} in the environment variable {env} is not valid UTF-8")]
    SecretNotUnicode {
        /// The secret, in the operator's words.
        what: &'static str,
        /// The environment variable.
        env: &'static str,
    },

    /// `iam_endpoint` is not an http(s) URL.
    #[error("[auth] iam_endpoint {endpoint:?} is not a valid http(s) URL: {reason}")]
    BadIamEndpoint {
        /// The configured value.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },

    /// IAM could not be reached, or did not answer in time.
    #[error("cannot obtain an IAM token for user {user} from {endpoint}: {reason}")]
    IamUnreachable {
        /// The IAM user name.
        user: String,
        /// The IAM endpoint.
        endpoint: String,
        /// The network failure, with its causes.
        reason: String,
    },

    /// IAM answered with an error status.
    #[error(
        "IAM at {endpoint} refused a token for user {user} in domain {domain} with HTTP {status}{}",
        detail(.message)
    )]
    IamRefused {
        /// The IAM user name.
        user: String,
        /// The account (domain) name.
        domain: String,
        /// The IAM endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// IAM's own error message, if it sent one.
        message: Option<String>,
    },

    /// IAM said yes but its answer lacks the token or a readable expiry.
    #[error(
        "IAM at {endpoint} answered HTTP {status} for user {user} but {problem}; check that iam_endpoint points at IAM"
    )]
    IamBadAnswer {
        /// The IAM user name.
        user: String,
        /// The IAM endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// What is missing or malformed.
        problem: String,
    },

    /// The server refused file-backed credentials and the file still holds the same value.
    #[error(
        "the server refused the {what} from {origin} (HTTP 401) and it has not changed since; {advice}"
    )]
    CredentialsRefused {
        /// The credentials, in the operator's words.
        what: &'static str,
        /// Where they came from.
        origin: String,
        /// What the operator should check.
        advice: &'static str,
    },

    /// The server refused credentials that cannot change while the daemon runs.
    #[error(
        "the server refused the {what} from {origin} (HTTP 401), and extdrop cannot renew credentials given that way; {advice}"
    )]
    CredentialsNotRenewable {
        /// The credentials, in the operator's words.
        what: &'static str,
        /// Where they came from.
        origin: String,
        /// What the operator should do.
        advice: &'static str,
    },

    /// The ECS metadata service could not be reached, or did not answer in time.
    #[error(
        "cannot obtain temporary credentials from the ECS metadata service at {endpoint}: {reason}; method = \"agency\" works only on a Huawei Cloud ECS instance (or with metadata_endpoint pointing at a stand-in)"
    )]
    MetadataUnreachable {
        /// The metadata endpoint.
        endpoint: String,
        /// The network failure, with its causes.
        reason: String,
    },

    /// The instance has no cloud service agency: the metadata service said so.
    #[error(
        "this ECS instance has no cloud service agency (the metadata service at {endpoint} says \"Please configure Cloud Service Agency first\"): attach an agency that may use CodeArts Pipeline to the instance in the ECS console; waiting files go on by themselves once it is there"
    )]
    NoAgency {
        /// The metadata endpoint.
        endpoint: String,
    },

    /// The metadata service answered with an error status.
    #[error("the ECS metadata service at {endpoint} refused {what} with HTTP {status}{}", detail(.message))]
    MetadataRefused {
        /// The metadata endpoint.
        endpoint: String,
        /// What was asked for ("a metadata token", "the temporary credentials").
        what: &'static str,
        /// The HTTP status.
        status: u16,
        /// The service's own words, if it sent a short text (never the credentials: only
        /// error answers are quoted).
        message: Option<String>,
    },

    /// The metadata service said yes but its answer is not usable credentials.
    #[error(
        "the ECS metadata service at {endpoint} answered HTTP 200 but {problem}; check that metadata_endpoint points at the metadata service"
    )]
    MetadataBadAnswer {
        /// The metadata endpoint.
        endpoint: String,
        /// What is missing or malformed (never a value from the answer).
        problem: String,
    },

    /// The HTTP client for the metadata service could not be built.
    #[error("cannot set up the HTTP client for the ECS metadata service: {reason}")]
    MetadataClient {
        /// What reqwest said.
        reason: String,
    },

    /// A failure shared by every caller that asked while it was fresh (see the IAM token
    /// cache); it reads and judges exactly like the failure itself.
    #[error(transparent)]
    Shared(std::sync::Arc<AuthError>),

    /// The request cannot be signed because its URL has no host.
    #[error("cannot sign the request to {url}: the URL has no host")]
    Unsignable {
        /// The request URL.
        url: String,
    },
}

/// Formats a service's message as a clause, or nothing.
fn detail(message: &Option<String>) -> String {
    match message {
        Some(message) => format!(": {message}"),
        None => String::new(),
    }
}

impl AuthError {
    /// Whether waiting and trying again may help: IAM unreachable, timing out or failing with
    /// 5xx/408/429, or a credential file that may yet be rotated. Wrong passwords, locked
    /// users, missing or unreadable secrets and bad configuration are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            AuthError::Shared(inner) => inner.is_transient(),
            AuthError::IamUnreachable { .. }
            | AuthError::CredentialsRefused { .. }
            | AuthError::MetadataUnreachable { .. } => true,
            AuthError::IamRefused { status, .. } | AuthError::MetadataRefused { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            // Like missing credentials: the operator's to fix; the daemon waits for it.
            AuthError::NoAgency { .. }
            | AuthError::MetadataBadAnswer { .. }
            | AuthError::MetadataClient { .. } => false,
            AuthError::MissingSecret { .. }
            | AuthError::UnreadableSecret { .. }
            | AuthError::EmptySecret { .. }
            | AuthError::SecretNotHeaderSafe { .. }
            | AuthError::SecretNotUnicode { .. }
            | AuthError::BadIamEndpoint { .. }
            | AuthError::IamBadAnswer { .. }
            | AuthError::CredentialsNotRenewable { .. }
            | AuthError::Unsignable { .. } => false,
        }
    }
}
