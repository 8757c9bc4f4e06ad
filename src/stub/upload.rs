//! The stand-in's upload endpoint, `POST /v3/{domain_id}/extension/upload`: records each
//! request, applies a scripted fault, then checks and reads it in the cloud's order.
//!
//! Invariants: the `upload_file` part is streamed and hashed chunk by chunk; it is held whole
//! only up to [`MANIFEST_SCAN_LIMIT`], to read its manifest's version for the catalog. The
//! body is read to its end before any answer (see the module invariants of [`super`]).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyDataStream, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::credentials::auth_kind;
use super::http::{Rejection, drain, json_response, query_param, redirect_response};
use super::{Fault, Shared, UPLOAD_FIELD, UploadRecord, error_codes};

/// The `upload_file` part, as far as it was read.
#[derive(Debug, Default)]
pub(super) struct FilePart {
    filename: Option<String>,
    size: u64,
    sha256: String,
    /// The manifest's version, when the part is a readable package of at most
    /// [`MANIFEST_SCAN_LIMIT`] bytes.
    version: Option<String>,
}

/// Largest upload the stand-in keeps in memory to read its manifest's version; larger ones
/// are only hashed (streamed), and count as packages without a readable version.
const MANIFEST_SCAN_LIMIT: u64 = 16 << 20;

/// Why a multipart body could not be used.
#[derive(Debug)]
pub(super) enum BodyError {
    NotMultipart(String),
    Malformed(String),
    NoUploadFile,
}

impl Shared {
    /// The upload endpoint: record, apply a queued fault, then check and read the request.
    pub(super) async fn handle_upload(
        &self,
        request_id: &str,
        domain_id: String,
        parts: Parts,
        body: Incoming,
        kill: &Notify,
    ) -> Response<Full<Bytes>> {
        let query = parts.uri.query().unwrap_or("");
        let record = UploadRecord {
            request_id: request_id.to_owned(),
            received: Instant::now(),
            received_at: SystemTime::now(),
            answered: None,
            domain_id,
            plugin_name: query_param(query, "plugin_name"),
            business_type: query_param(query, "business_type"),
            auth: auth_kind(&parts),
            security_token: parts
                .headers
                .get(crate::auth::sign::HEADER_SECURITY_TOKEN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            fault: None,
            filename: None,
            size: None,
            sha256: None,
            version: None,
            status: None,
            error_code: None,
            accepted: false,
        };
        let index = {
            let mut state = self.lock();
            state.requests.push(record);
            state.requests.len() - 1
        };
        let fault = {
            let mut state = self.lock();
            let fault = state.faults.pop_front();
            if let Some(record) = state.requests.get_mut(index) {
                record.fault.clone_from(&fault);
            }
            fault
        };
        tracing::debug!(request_id, ?fault, "stub upload request");

        match fault {
            Some(Fault::Drop) => {
                kill.notify_one();
                return std::future::pending().await;
            }
            Some(Fault::Hang) => {
                let file = consume_body(&parts, body).await;
                self.update(index, |r| r.set_file(file));
                return std::future::pending().await;
            }
            Some(Fault::Status {
                status,
                error_code,
                error_msg,
                retry_after,
            }) => {
                let file = consume_body(&parts, body).await;
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let rejection = Rejection {
                    status,
                    error_code,
                    error_msg,
                };
                let mut response = rejection.response(request_id);
                if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    response.headers_mut().insert(RETRY_AFTER, value);
                }
                self.update(index, |r| {
                    r.set_file(file);
                    r.set_answer(status, Some(&rejection.error_code), false);
                });
                return response;
            }
            Some(Fault::Redirect { status, location }) => {
                let file = consume_body(&parts, body).await;
                let response = redirect_response(status, &location);
                self.update(index, |r| {
                    r.set_file(file);
                    r.set_answer(response.status(), None, false);
                });
                return response;
            }
            Some(Fault::False) => {
                let file = consume_body(&parts, body).await;
                self.update(index, |r| {
                    r.set_file(file);
                    r.set_answer(StatusCode::OK, None, false);
                });
                return json_response(StatusCode::OK, "false");
            }
            Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
            None => {}
        }

        match self
            .check_upload(index, &parts, body)
            .await
            .and_then(|()| self.admit_upload(index))
        {
            Ok(()) => {
                self.update(index, |r| r.set_answer(StatusCode::OK, None, true));
                json_response(StatusCode::OK, "true")
            }
            Err(rejection) => {
                self.update(index, |r| {
                    r.set_answer(rejection.status, Some(&rejection.error_code), false);
                });
                rejection.response(request_id)
            }
        }
    }

    /// The checks of a normal upload, in the cloud's order; reads the body in every case.
    pub(super) async fn check_upload(
        &self,
        index: usize,
        parts: &Parts,
        body: Incoming,
    ) -> Result<(), Rejection> {
        if let Err(rejection) = self.check_head(index, parts) {
            drain(body).await;
            return Err(rejection);
        }
        match read_upload(parts, body).await {
            Ok(file) => {
                self.update(index, |r| r.set_file(Some(file)));
                Ok(())
            }
            Err(BodyError::NotMultipart(why)) => Err(Rejection::bad_request(
                error_codes::INVALID_CONTENT_TYPE,
                format!("Content-Type must be multipart/form-data: {why}."),
            )),
            Err(BodyError::Malformed(why)) => Err(Rejection::bad_request(
                error_codes::UPLOAD_FILE_MISSING,
                format!("The multipart body is malformed: {why}."),
            )),
            Err(BodyError::NoUploadFile) => Err(Rejection::bad_request(
                error_codes::UPLOAD_FILE_MISSING,
                "The form field upload_file is required.",
            )),
        }
    }

    /// The checks that need only the request head, in the gateway's order: credentials,
    /// domain, then the query (present, and following the documented rules).
    pub(super) fn check_head(&self, index: usize, parts: &Parts) -> Result<(), Rejection> {
        let (domain_id, plugin_name, business_type) = {
            let state = self.lock();
            let record = state.requests.get(index);
            (
                record.map(|r| r.domain_id.clone()).unwrap_or_default(),
                record.and_then(|r| r.plugin_name.clone()),
                record.and_then(|r| r.business_type.clone()),
            )
        };
        self.authenticate(parts, None)?;
        self.check_domain(&domain_id)?;
        for (name, value) in [
            ("plugin_name", plugin_name),
            ("business_type", business_type),
        ] {
            let Some(value) = value.filter(|v| !v.is_empty()) else {
                return Err(Rejection::bad_request(
                    error_codes::INVALID_PARAMETER,
                    format!("Invalid parameter: {name} is required."),
                ));
            };
            // The same rule holds for both (1-50 of letters, digits, _ and -).
            if !crate::rules::is_valid_plugin_name(&value) {
                return Err(Rejection::bad_request(
                    error_codes::INVALID_PARAMETER,
                    format!("Invalid parameter: {name} must be 1 to 50 letters, digits, _ or -."),
                ));
            }
        }
        Ok(())
    }

    /// The catalog's say on a read upload: the extension must be known (or is registered on
    /// the way when `auto_register` is on), and the package's version must not be official.
    fn admit_upload(&self, index: usize) -> Result<(), Rejection> {
        let mut state = self.lock();
        let Some(record) = state.requests.get(index) else {
            return Ok(());
        };
        let plugin_name = record.plugin_name.clone().unwrap_or_default();
        let business_type = record.business_type.clone().unwrap_or_default();
        let version = record.version.clone();
        let refused =
            |r: super::catalog::Refusal| Rejection::bad_request(r.error_code, r.error_msg);
        if !state.catalog.contains(&plugin_name) {
            if !self.auto_register {
                return Err(Rejection::bad_request(
                    super::catalog::refusal_codes::EXTENSION_NOT_FOUND,
                    format!("The extension {plugin_name} does not exist."),
                ));
            }
            // Tests of the upload alone send any bytes; only a readable package joins the
            // catalog, as a draft.
            if version.is_none() {
                return Ok(());
            }
            state
                .catalog
                .register(&plugin_name, &plugin_name, &business_type, "")
                .map_err(refused)?;
        }
        match version {
            Some(version) => state
                .catalog
                .upload(&plugin_name, &version)
                .map_err(refused),
            None if self.auto_register => Ok(()),
            None => Err(Rejection::bad_request(
                error_codes::UPLOAD_FILE_MISSING,
                "The upload_file is not an extension package with a readable codearts-extension.json.",
            )),
        }
    }

    pub(super) fn update(&self, index: usize, change: impl FnOnce(&mut UploadRecord)) {
        if let Some(record) = self.lock().requests.get_mut(index) {
            change(record);
        }
    }
}

impl UploadRecord {
    fn set_file(&mut self, file: Option<FilePart>) {
        if let Some(file) = file {
            self.filename = file.filename;
            self.size = Some(file.size);
            self.sha256 = Some(file.sha256);
            self.version = file.version;
        }
    }

    fn set_answer(&mut self, status: StatusCode, error_code: Option<&str>, accepted: bool) {
        self.answered = Some(Instant::now());
        self.status = Some(status.as_u16());
        self.error_code = error_code.map(str::to_owned);
        self.accepted = accepted;
    }
}

/// The `domain_id` of an upload path `/v3/{domain_id}/extension/upload`.
pub(super) fn upload_domain(path: &str) -> Option<&str> {
    let domain_id = path
        .strip_prefix("/v3/")?
        .strip_suffix("/extension/upload")?;
    (!domain_id.is_empty() && !domain_id.contains('/')).then_some(domain_id)
}

/// Reads a faulted request's body, recording the `upload_file` part if the body is a usable
/// multipart one.
async fn consume_body(parts: &Parts, body: Incoming) -> Option<FilePart> {
    read_upload(parts, body).await.ok()
}

/// Streams a multipart body, hashing the first `upload_file` part; always reads the body to
/// its end, whatever happens.
async fn read_upload(parts: &Parts, body: Incoming) -> Result<FilePart, BodyError> {
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = match multer::parse_boundary(content_type) {
        Ok(boundary) => boundary,
        Err(error) => {
            drain(body).await;
            return Err(BodyError::NotMultipart(error.to_string()));
        }
    };
    let body = SharedBody::new(body);
    let result = {
        let mut multipart = multer::Multipart::new(BodyDataStream::new(body.clone()), boundary);
        read_parts(&mut multipart).await
    };
    // multer stops at the first error and may stop before the end of the body.
    if let Some(rest) = body.take() {
        drain(rest).await;
    }
    result
}

async fn read_parts(multipart: &mut multer::Multipart<'_>) -> Result<FilePart, BodyError> {
    let malformed = |error: multer::Error| BodyError::Malformed(error.to_string());
    let mut file = None;
    while let Some(mut field) = multipart.next_field().await.map_err(malformed)? {
        // Only the first upload_file counts; other fields are skipped by `next_field`.
        if file.is_some() || field.name() != Some(UPLOAD_FIELD) {
            continue;
        }
        let filename = field.file_name().map(str::to_owned);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        // Kept only while small enough to read the manifest from (see MANIFEST_SCAN_LIMIT).
        let mut kept = Some(Vec::new());
        while let Some(chunk) = field.chunk().await.map_err(malformed)? {
            size += chunk.len() as u64;
            hasher.update(&chunk);
            kept = kept
                .filter(|_| size <= MANIFEST_SCAN_LIMIT)
                .map(|mut bytes| {
                    bytes.extend_from_slice(&chunk);
                    bytes
                });
        }
        let version = kept.and_then(|bytes| {
            crate::package::manifest_of(std::io::Cursor::new(bytes))
                .ok()
                .map(|manifest| manifest.version)
        });
        file = Some(FilePart {
            filename,
            size,
            sha256: hex::encode(hasher.finalize()),
            version,
        });
    }
    file.ok_or(BodyError::NoUploadFile)
}

/// A request body that multer can own while the handler keeps a way to drain what multer
/// leaves unread.
#[derive(Clone, Debug)]
struct SharedBody(Arc<Mutex<Option<Incoming>>>);

impl SharedBody {
    fn new(body: Incoming) -> Self {
        Self(Arc::new(Mutex::new(Some(body))))
    }

    fn take(&self) -> Option<Incoming> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Body for SharedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut body = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }
}
