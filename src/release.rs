//! The release-lifecycle APIs of SPEC §6 as a client: list an extension's versions, one
//! version's detail, register an extension, publish a draft.
//!
//! Job: build each request in the official SDK's shape (method, path, query, JSON keys,
//! `Content-Type: application/json;charset=utf-8` for JSON bodies), put the credentials on it
//! like the upload's, and turn the answer into data: the parsed answer, or a [`Verdict`] that
//! says what the upload's classification would (permanent, transient, unauthorized).
//!
//! Invariants:
//! - A JSON body is sent as bytes known in full, so AK/SK signs its real SHA-256 (no
//!   `UNSIGNED-PAYLOAD`), as the SDK does.
//! - Nothing here decides a file's fate or retries: the caller does, by what the queries say.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::auth::Auth;
use crate::config::CodeArts;
use crate::upload::{Answer, Verdict, classify, read_bounded, transport_failure};

/// The words of the refusal of a version that is already official, which `status` counts.
pub const OFFICIAL_REFUSAL: &str = "official versions cannot be replaced";

/// The content type the SDK sends with JSON bodies.
pub const JSON_CONTENT_TYPE: &str = "application/json;charset=utf-8";

/// How many versions one list request asks for (the SDK's and the console's page size).
pub const LIST_LIMIT: u32 = 100;

/// The most list pages one look-up reads (10 000 versions).
pub const MAX_PAGES: u64 = 100;

/// Answers of these APIs are small; a larger one is cut here.
const ANSWER_LIMIT: usize = 1 << 20;

/// One version of an extension, as the list and detail answers give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The extension's plugin_name.
    #[serde(default)]
    pub plugin_name: String,
    /// The extension's display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// `X.Y.Z`; empty or absent for the `init` entry of an extension without versions.
    #[serde(default)]
    pub version: Option<String>,
    /// `init`, `draft` or `formal`.
    #[serde(default)]
    pub version_attribution: String,
}

impl VersionInfo {
    /// Whether this entry is the official version `version`.
    pub fn is_formal(&self, version: &str) -> bool {
        self.version.as_deref() == Some(version) && self.version_attribution == "formal"
    }

    /// Whether the entry names an uploaded version (not the `init` placeholder).
    pub fn has_version(&self) -> bool {
        self.version_attribution != "init" && self.version.as_deref().is_some_and(|v| !v.is_empty())
    }
}

/// The list answer: what CodeArts knows of an extension.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Versions {
    /// How many entries exist; 0 when the extension is unknown.
    #[serde(default)]
    pub total: u64,
    /// The entries of this page.
    #[serde(default)]
    pub data: Vec<VersionInfo>,
}

impl Versions {
    /// Whether CodeArts knows the extension at all.
    pub fn exists(&self) -> bool {
        self.total > 0 || !self.data.is_empty()
    }

    /// The display name CodeArts holds for the extension, if any.
    pub fn display_name(&self) -> Option<&str> {
        self.data
            .iter()
            .find_map(|v| v.display_name.as_deref())
            .filter(|n| !n.is_empty())
    }

    /// Whether `version` is an official version.
    pub fn is_formal(&self, version: &str) -> bool {
        self.data.iter().any(|v| v.is_formal(version))
    }
}

/// What to register (CreateBasicPlugin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The extension's plugin_name.
    pub plugin_name: String,
    /// Manifest `friendlyName`, else plugin_name.
    pub display_name: String,
    /// The business type, as sent with the upload.
    pub business_type: String,
    /// Manifest `description` (empty when absent).
    pub description: String,
}

/// What to publish (PublishPluginDraft).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The extension's plugin_name.
    pub plugin_name: String,
    /// Manifest `friendlyName`, else the looked-up display name, else plugin_name.
    pub display_name: String,
    /// The draft version to make official.
    pub version: String,
}

/// The type's name in the console, which registration also wants (SPEC §6); an unknown type
/// is sent as written.
pub fn business_type_display_name(business_type: &str) -> &str {
    match business_type.to_ascii_lowercase().as_str() {
        "build" => "Build",
        "gate" => "Check",
        "deploy" => "Deploy",
        "test" => "Test",
        "normal" => "Normal",
        _ => business_type,
    }
}

/// Why a request could not be built (an endpoint that is no URL, in practice).
#[derive(Debug, thiserror::Error)]
#[error("the request could not be built: {0}")]
pub struct BuildError(String);

/// A file's progress through the release steps, kept in its claim record so that a restart
/// continues at the first step not done (SPEC §6). Each flag is saved before the next step
/// begins; a `*_sent` flag without its result means the outcome is unknown, and is settled by
/// a query, never by sending again blindly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// A register request went out for this file.
    pub register_sent: bool,
    /// extdrop registered the extension for this file.
    pub registered: bool,
    /// The display name the look-up found, for the publish request.
    pub display_name: Option<String>,
    /// The upload's answer, once the upload succeeded: it is never sent again.
    pub uploaded: Option<Answer>,
    /// A publish request went out for this file.
    pub publish_sent: bool,
    /// The version was published (and verified).
    pub published: bool,
    /// The step whose attempts `step_attempts` counts (`look-up`, `register`, `publish`,
    /// `verify`).
    pub step: Option<String>,
    /// Attempts of `step` so far, across restarts.
    pub step_attempts: u32,
}

impl Progress {
    /// Whether nothing was recorded (the record is then left out of the claim).
    pub fn is_untouched(&self) -> bool {
        *self == Progress::default()
    }
}

/// Calls the lifecycle APIs of one endpoint and tenant with one set of credentials.
#[derive(Debug, Clone)]
pub struct Releaser {
    client: reqwest::Client,
    endpoint: String,
    domain_id: String,
    request_timeout: Duration,
    auth: Auth,
}

/// What a call yields: the parsed answer, or why not (never [`Verdict::Uploaded`]).
pub type Reply<T> = Result<(T, Answer), Verdict>;

impl Releaser {
    /// A client for the configured endpoint and tenant, sharing the upload's HTTP client.
    pub fn new(codearts: &CodeArts, client: reqwest::Client, auth: Auth) -> Releaser {
        Releaser {
            client,
            endpoint: codearts.endpoint.trim_end_matches('/').to_owned(),
            domain_id: codearts.domain_id.to_string(),
            request_timeout: codearts.request_timeout,
            auth,
        }
    }

    /// The credentials in use.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// `GET /v1/{domain_id}/agent-plugin/query?limit=100&offset=N&plugin_name=P`, unsigned.
    pub fn list_request(
        &self,
        plugin_name: &str,
        offset: u64,
    ) -> Result<reqwest::Request, BuildError> {
        let url = format!("{}/v1/{}/agent-plugin/query", self.endpoint, self.domain_id);
        let (limit, offset) = (LIST_LIMIT.to_string(), offset.to_string());
        // The SDK's order (alphabetical); the signature sorts anyway.
        let query = [
            ("limit", limit.as_str()),
            ("offset", offset.as_str()),
            ("plugin_name", plugin_name),
        ];
        self.get(&url, &query)
    }

    /// `GET /v1/{domain_id}/agent-plugin/detail?plugin_name=P&version=V`, unsigned.
    pub fn detail_request(
        &self,
        plugin_name: &str,
        version: &str,
    ) -> Result<reqwest::Request, BuildError> {
        let url = format!(
            "{}/v1/{}/agent-plugin/detail",
            self.endpoint, self.domain_id
        );
        self.get(&url, &[("plugin_name", plugin_name), ("version", version)])
    }

    /// `POST /v3/{domain_id}/extension/info/add` with the registration's JSON, unsigned.
    pub fn register_request(&self, r: &Registration) -> Result<reqwest::Request, BuildError> {
        let url = format!("{}/v3/{}/extension/info/add", self.endpoint, self.domain_id);
        let body = serde_json::json!({
            "plugin_name": r.plugin_name,
            "display_name": r.display_name,
            "business_type": r.business_type,
            "business_type_display_name": business_type_display_name(&r.business_type),
            "description": r.description,
            "plugin_composition_type": "single",
            "runtime_attribution": "agent",
        });
        self.post(&url, &body)
    }

    /// `POST /v1/{domain_id}/agent-plugin/publish-draft` with the publication's JSON,
    /// unsigned.
    pub fn publish_request(&self, p: &Publication) -> Result<reqwest::Request, BuildError> {
        let url = format!(
            "{}/v1/{}/agent-plugin/publish-draft",
            self.endpoint, self.domain_id
        );
        let body = serde_json::json!({
            "plugin_name": p.plugin_name,
            "display_name": p.display_name,
            "version": p.version,
            "plugin_attribution": "custom",
            "version_attribution": "draft",
        });
        self.post(&url, &body)
    }

    /// The extension's versions, every page of [`LIST_LIMIT`] (up to [`MAX_PAGES`]), so that an
    /// official version is found however many versions came before it.
    pub async fn versions(&self, plugin_name: &str) -> Reply<Versions> {
        let request = self.list_request(plugin_name, 0);
        let (mut all, mut answer) = self
            .call(request, "look-up", parse_json::<Versions>)
            .await?;
        for page in 1..MAX_PAGES {
            let offset = page * u64::from(LIST_LIMIT);
            // A short page, or the total reached: there is nothing more to read.
            if (all.data.len() as u64) < offset || offset >= all.total {
                break;
            }
            let request = self.list_request(plugin_name, offset);
            let (more, more_answer) = self
                .call(request, "look-up", parse_json::<Versions>)
                .await?;
            if more.data.is_empty() {
                break;
            }
            all.data.extend(more.data);
            answer = more_answer;
        }
        Ok((all, answer))
    }

    /// One version's detail.
    pub async fn detail(&self, plugin_name: &str, version: &str) -> Reply<VersionInfo> {
        let request = self.detail_request(plugin_name, version);
        self.call(request, "version query", parse_json).await
    }

    /// Registers the extension.
    pub async fn register(&self, registration: &Registration) -> Reply<()> {
        let request = self.register_request(registration);
        self.call(request, "register request", parse_true).await
    }

    /// Publishes the draft.
    pub async fn publish(&self, publication: &Publication) -> Reply<()> {
        let request = self.publish_request(publication);
        self.call(request, "publish request", parse_true).await
    }

    fn get(&self, url: &str, query: &[(&str, &str)]) -> Result<reqwest::Request, BuildError> {
        // reqwest is built without `query`; the URL's own encoder does the same job.
        let url =
            reqwest::Url::parse_with_params(url, query).map_err(|e| BuildError(e.to_string()))?;
        self.client
            .get(url)
            // The SDK sends it on its GETs too, and signs it.
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .timeout(self.request_timeout)
            .build()
            .map_err(|e| BuildError(e.to_string()))
    }

    fn post(&self, url: &str, body: &serde_json::Value) -> Result<reqwest::Request, BuildError> {
        self.client
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE))
            // Bytes known in full: AK/SK signs their real SHA-256.
            .body(body.to_string())
            .timeout(self.request_timeout)
            .build()
            .map_err(|e| BuildError(e.to_string()))
    }

    /// Signs and sends `request`, then parses a 200 with `parse`; anything else is
    /// classified like an upload's answer.
    async fn call<T>(
        &self,
        request: Result<reqwest::Request, BuildError>,
        what: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Reply<T> {
        let mut request = request.map_err(|e| Verdict::Rejected {
            answer: Answer::default(),
            reason: e.to_string(),
        })?;
        let stamp = self
            .auth
            .authorize(&mut request)
            .await
            .map_err(Verdict::NoCredentials)?;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| transport_failure(&e, self.request_timeout, what))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = read_bounded(response, ANSWER_LIMIT)
            .await
            .map_err(|e| transport_failure(&e, self.request_timeout, what))?;
        match classify(status, &headers, &body, stamp) {
            // 200 `true`: the answer of register and publish.
            Verdict::Uploaded(answer) => parse(&body)
                .map(|value| (value, answer.clone()))
                .map_err(|reason| Verdict::Rejected { answer, reason }),
            // Any other 200: a query's JSON, or `false`.
            Verdict::Rejected { answer, reason } if status == 200 => match parse(&body) {
                Ok(value) => Ok((value, answer)),
                Err(_) => Err(Verdict::Rejected { answer, reason }),
            },
            other => Err(other),
        }
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &str) -> Result<T, String> {
    serde_json::from_str(body)
        .map_err(|e| format!("the server's answer is not what the API documents: {e}"))
}

fn parse_true(body: &str) -> Result<(), String> {
    if body.trim() == "true" {
        Ok(())
    } else {
        Err("the server answered 200 without true: it did not do it".to_owned())
    }
}

/// Why a [`Verdict`] that is not a success failed, in one clause for a reason.
pub fn verdict_reason(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Uploaded(answer) => answer.describe(),
        // The upload's wording names the upload; say it for any call.
        Verdict::Rejected { answer, .. } if answer.status >= 300 => {
            format!("the server refused it with {}", answer.describe())
        }
        Verdict::Rejected { reason, .. } => reason.clone(),
        Verdict::Transient { why, .. } => why.clone(),
        Verdict::Unauthorized { answer, .. } => {
            format!("the server refused the credentials ({})", answer.describe())
        }
        Verdict::NoCredentials(e) => e.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
