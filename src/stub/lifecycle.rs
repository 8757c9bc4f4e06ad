//! The stand-in's release-lifecycle endpoints (SPEC §6): list versions, version detail,
//! register and publish, answered from the [`super::catalog::Catalog`].
//!
//! Invariants:
//! - Checks run in the gateway's order: route (404), authentication (401), domain (403), then
//!   the API's own checks (400). A scripted [`Fault`] from the API's own queue is applied
//!   before any check, as for uploads.
//! - The body is read whole (JSON bodies are small, at most [`API_BODY_LIMIT`]) before any
//!   answer, and AK/SK signatures are verified with the body's real SHA-256, as the SDK signs
//!   JSON bodies.
//! - Every request is recorded ([`ApiRecord`]) the moment it is read, and completed with its
//!   answer.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde_json::Value;
use tokio::sync::Notify;

use super::catalog::Refusal;
use super::credentials::auth_kind;
use super::http::{Rejection, json_response, query_pairs, read_small_body, redirect_response};
use super::{AuthKind, Fault, Shared, error_codes};

/// JSON bodies of these APIs are a few hundred bytes; anything far larger is refused.
pub const API_BODY_LIMIT: usize = 64 * 1024;

/// The four lifecycle APIs, each with its own fault queue ([`super::Stub::push_api_faults`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// `GET /v1/{domain_id}/agent-plugin/query` (ListPLuginVersion).
    List,
    /// `GET /v1/{domain_id}/agent-plugin/detail` (ShowPluginVersion).
    Detail,
    /// `POST /v3/{domain_id}/extension/info/add` (CreateBasicPlugin).
    Register,
    /// `POST /v1/{domain_id}/agent-plugin/publish-draft` (PublishPluginDraft).
    Publish,
}

impl Api {
    /// The method, version prefix and path suffix of the API's route.
    fn route(self) -> (Method, &'static str, &'static str) {
        match self {
            Api::List => (Method::GET, "/v1/", "/agent-plugin/query"),
            Api::Detail => (Method::GET, "/v1/", "/agent-plugin/detail"),
            Api::Register => (Method::POST, "/v3/", "/extension/info/add"),
            Api::Publish => (Method::POST, "/v1/", "/agent-plugin/publish-draft"),
        }
    }

    /// Which API (and which `domain_id`) `method` and `path` name, if any.
    pub(super) fn recognise<'p>(method: &Method, path: &'p str) -> Option<(Api, &'p str)> {
        [Api::List, Api::Detail, Api::Register, Api::Publish]
            .into_iter()
            .find_map(|api| {
                let (want, prefix, suffix) = api.route();
                let domain = path.strip_prefix(prefix)?.strip_suffix(suffix)?;
                (want == method && !domain.is_empty() && !domain.contains('/'))
                    .then_some((api, domain))
            })
    }
}

/// One lifecycle request as the stand-in saw it.
#[derive(Clone, Debug)]
pub struct ApiRecord {
    /// Which API was called.
    pub api: Api,
    /// The `X-Request-Id` answered.
    pub request_id: String,
    /// When the request was read.
    pub received: Instant,
    /// The `domain_id` segment of the path.
    pub domain_id: String,
    /// The query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// The `Content-Type` header, if sent.
    pub content_type: Option<String>,
    /// The body parsed as JSON; `None` when empty or not JSON.
    pub body: Option<Value>,
    /// The credentials the request carried.
    pub auth: AuthKind,
    /// The fault consumed by this request, if any.
    pub fault: Option<Fault>,
    /// The HTTP status answered; `None` while in progress and for dropped or hung requests.
    pub status: Option<u16>,
    /// The `error_code` answered, for error answers.
    pub error_code: Option<String>,
}

impl ApiRecord {
    /// The query parameter `name`, if sent.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find_map(|(k, v)| (k == name).then_some(v.as_str()))
    }

    /// Whether the answer was a 200.
    pub fn succeeded(&self) -> bool {
        self.status == Some(200)
    }
}

impl Shared {
    /// Serves one lifecycle request: read, record, fault, check, answer.
    pub(super) async fn handle_api(
        &self,
        request_id: &str,
        api: Api,
        domain_id: String,
        parts: Parts,
        body: Incoming,
        kill: &Notify,
    ) -> Response<Full<Bytes>> {
        let Some(body) = read_small_body(body, API_BODY_LIMIT).await else {
            return Rejection::bad_request(
                error_codes::INVALID_PARAMETER,
                "The request body is too large.",
            )
            .response(request_id);
        };
        let query = query_pairs(parts.uri.query().unwrap_or(""));
        let (index, fault) = {
            let mut state = self.lock();
            let fault = state.api_faults.get_mut(&api).and_then(|q| q.pop_front());
            state.api_requests.push(ApiRecord {
                api,
                request_id: request_id.to_owned(),
                received: Instant::now(),
                domain_id: domain_id.clone(),
                query: query.clone(),
                content_type: parts
                    .headers
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: serde_json::from_slice(&body).ok(),
                auth: auth_kind(&parts),
                fault: fault.clone(),
                status: None,
                error_code: None,
            });
            (state.api_requests.len() - 1, fault)
        };
        tracing::debug!(request_id, ?api, ?fault, "stub lifecycle request");
        let answer = match fault {
            Some(Fault::Drop) => {
                kill.notify_one();
                return std::future::pending().await;
            }
            Some(Fault::Hang) => return std::future::pending().await,
            Some(Fault::Status {
                status,
                error_code,
                error_msg,
                retry_after: _,
            }) => Err(Rejection {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                error_code,
                error_msg,
            }),
            Some(Fault::Redirect { status, location }) => {
                let response = redirect_response(status, &location);
                if let Some(record) = self.lock().api_requests.get_mut(index) {
                    record.status = Some(response.status().as_u16());
                }
                return response;
            }
            Some(Fault::False) => Ok("false".to_owned()),
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                self.answer_api(api, &domain_id, &parts, &query, &body)
            }
            None => self.answer_api(api, &domain_id, &parts, &query, &body),
        };
        let (status, error_code, response) = match answer {
            Ok(json) => (StatusCode::OK, None, json_response(StatusCode::OK, json)),
            Err(rejection) => (
                rejection.status,
                Some(rejection.error_code.clone()),
                rejection.response(request_id),
            ),
        };
        if let Some(record) = self.lock().api_requests.get_mut(index) {
            record.status = Some(status.as_u16());
            record.error_code = error_code;
        }
        response
    }

    /// The checks and the work of one API; `Ok` holds the JSON answer of a 200.
    fn answer_api(
        &self,
        api: Api,
        domain_id: &str,
        parts: &Parts,
        query: &[(String, String)],
        body: &[u8],
    ) -> Result<String, Rejection> {
        self.authenticate(parts, Some(body))?;
        self.check_domain(domain_id)?;
        let param = |name: &str| {
            query
                .iter()
                .find_map(|(k, v)| (k == name).then_some(v.as_str()))
        };
        match api {
            Api::List => {
                let plugin_name = required(param("plugin_name"), "plugin_name")?;
                let offset = number(param("offset"), "offset", 0)?;
                let limit = number(param("limit"), "limit", 10)?;
                let rows = self.lock().catalog.versions(plugin_name);
                let total = rows.len();
                let data: Vec<_> = rows.into_iter().skip(offset).take(limit).collect();
                Ok(serde_json::json!({
                    "offset": offset, "limit": limit, "total": total, "data": data,
                })
                .to_string())
            }
            Api::Detail => {
                let plugin_name = required(param("plugin_name"), "plugin_name")?;
                let version = required(param("version"), "version")?;
                let row = self
                    .lock()
                    .catalog
                    .detail(plugin_name, version)
                    .map_err(refused)?;
                serde_json::to_string(&row).map_err(|e| {
                    Rejection::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        error_codes::INTERNAL_ERROR,
                        e.to_string(),
                    )
                })
            }
            Api::Register => {
                let body = json_object(parts, body)?;
                let field = |name: &str| body.get(name).and_then(Value::as_str);
                let plugin_name = valid_name(field("plugin_name"), "plugin_name")?;
                let business_type = valid_name(field("business_type"), "business_type")?;
                let display_name = required(field("display_name"), "display_name")?;
                required(
                    field("business_type_display_name"),
                    "business_type_display_name",
                )?;
                expect(
                    field("plugin_composition_type"),
                    "plugin_composition_type",
                    "single",
                )?;
                expect(field("runtime_attribution"), "runtime_attribution", "agent")?;
                let description = field("description").unwrap_or("");
                self.lock()
                    .catalog
                    .register(plugin_name, display_name, business_type, description)
                    .map_err(refused)?;
                Ok("true".to_owned())
            }
            Api::Publish => {
                let body = json_object(parts, body)?;
                let field = |name: &str| body.get(name).and_then(Value::as_str);
                let plugin_name = valid_name(field("plugin_name"), "plugin_name")?;
                required(field("display_name"), "display_name")?;
                let version = required(field("version"), "version")?;
                expect(field("plugin_attribution"), "plugin_attribution", "custom")?;
                expect(field("version_attribution"), "version_attribution", "draft")?;
                self.lock()
                    .catalog
                    .publish(plugin_name, version)
                    .map_err(refused)?;
                Ok("true".to_owned())
            }
        }
    }
}

/// A catalog refusal as the gateway answers it.
fn refused(refusal: Refusal) -> Rejection {
    Rejection::bad_request(refusal.error_code, refusal.error_msg)
}

fn invalid(why: String) -> Rejection {
    Rejection::bad_request(error_codes::INVALID_PARAMETER, why)
}

fn required<'v>(value: Option<&'v str>, name: &str) -> Result<&'v str, Rejection> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid(format!("Invalid parameter: {name} is required.")))
}

fn expect(value: Option<&str>, name: &str, wanted: &str) -> Result<(), Rejection> {
    if value == Some(wanted) {
        Ok(())
    } else {
        Err(invalid(format!(
            "Invalid parameter: {name} must be {wanted}."
        )))
    }
}

/// A required `plugin_name` or `business_type` that follows the documented rules.
fn valid_name<'v>(value: Option<&'v str>, name: &str) -> Result<&'v str, Rejection> {
    let value = required(value, name)?;
    if crate::rules::is_valid_plugin_name(value) {
        Ok(value)
    } else {
        Err(invalid(format!(
            "Invalid parameter: {name} must be 1 to 50 letters, digits, _ or -."
        )))
    }
}

fn number(value: Option<&str>, name: &str, default: usize) -> Result<usize, Rejection> {
    match value {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| invalid(format!("Invalid parameter: {name} must be a number."))),
    }
}

/// The body as a JSON object; the content type must say JSON.
fn json_object(parts: &Parts, body: &[u8]) -> Result<serde_json::Map<String, Value>, Rejection> {
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err(Rejection::bad_request(
            error_codes::INVALID_CONTENT_TYPE,
            "Content-Type must be application/json.",
        ));
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(invalid(
            "The request body must be a JSON object.".to_owned(),
        )),
    }
}
