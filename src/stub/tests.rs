//! The stand-in's own tests: it must answer as the cloud does, byte for byte where the SDK
//! vectors say so.

use super::http::query_param;
use super::upload::upload_domain;
use super::*;
use hyper::header::{CONTENT_TYPE, RETRY_AFTER};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod lifecycle;

/// The tenant of the recorded SDK request.
const DOMAIN: &str = "ce8df55870164338a72d7e828a966a2a";

/// A request made by the official Python SDK (huaweicloudsdkcodeartspipeline, AK/SK
/// signed), captured byte for byte: the project's shared test vector.
const SDK_UPLOAD_REQUEST: &str = include_str!("../auth/testdata/sdk-upload-request.json");

/// The empty ZIP (end-of-central-directory record only) the SDK request carries.
const EMPTY_ZIP: &[u8] = b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

fn client() -> reqwest::Client {
    // Environment proxies would send loopback requests elsewhere.
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client builds")
}

fn upload_url(stub: &Stub, domain: &str, query: &str) -> String {
    format!("{}/v3/{domain}/extension/upload?{query}", stub.endpoint())
}

fn good_url(stub: &Stub) -> String {
    upload_url(stub, DOMAIN, "plugin_name=demo_task&business_type=Deploy")
}

fn zip_form() -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(EMPTY_ZIP)
        .file_name("demo_task__Deploy.zip")
        .mime_str("application/zip")
        .expect("mime parses");
    reqwest::multipart::Form::new().part("upload_file", part)
}

async fn upload(stub: &Stub, token: Option<&str>) -> reqwest::Result<reqwest::Response> {
    let mut request = client().post(good_url(stub)).multipart(zip_form());
    if let Some(token) = token {
        request = request.header("X-Auth-Token", token);
    }
    request.send().await
}

fn request_id(response: &reqwest::Response) -> String {
    let id = response
        .headers()
        .get("x-request-id")
        .expect("X-Request-Id present")
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    id
}

/// Asserts an error answer of the gateway/CodeArts shape and returns its message.
async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status().as_u16(), status);
    let id = request_id(&response);
    assert_eq!(
        response.headers().get(CONTENT_TYPE).expect("content type"),
        "application/json"
    );
    let body: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON body");
    assert_eq!(body["error_code"], code, "{body}");
    assert_eq!(
        body["request_id"],
        id.as_str(),
        "the body repeats the request id"
    );
    body["error_msg"].as_str().expect("error_msg").to_owned()
}

async fn assert_accepted(response: reqwest::Response) {
    assert_eq!(response.status().as_u16(), 200);
    request_id(&response);
    assert_eq!(
        response.headers().get(CONTENT_TYPE).expect("content type"),
        "application/json"
    );
    assert_eq!(response.text().await.expect("body"), "true");
}

/// Sends raw bytes and reads one `Content-Length` response: (status, headers, body).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before the response head");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .expect("content-length");
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before the response body");
        body.extend_from_slice(&chunk[..n]);
    }
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Rebuilds the SDK's request exactly: request line, headers in order, body.
fn sdk_request_bytes() -> Vec<u8> {
    let vectors: serde_json::Value =
        serde_json::from_str(SDK_UPLOAD_REQUEST).expect("vector parses");
    let vector = &vectors[0];
    let mut request = format!(
        "POST {} HTTP/1.1\r\n",
        vector["path"].as_str().expect("path")
    );
    for (name, value) in vector["headers"].as_object().expect("headers") {
        request.push_str(&format!("{name}: {}\r\n", value.as_str().expect("value")));
    }
    request.push_str("\r\n");
    let body = vector["body_head"].as_str().expect("body");
    assert_eq!(body.len(), 186);
    assert_eq!(vector["body_len"], 186);
    request.push_str(body);
    request.into_bytes()
}

#[tokio::test]
async fn sdk_request_is_accepted_byte_for_byte_in_any_mode() {
    let mut config = StubConfig::new(DOMAIN);
    config.auth = StubAuth::Any;
    let stub = Stub::start(config).await.expect("stub starts");

    let (status, headers, body) = raw_exchange(stub.addr(), &sdk_request_bytes()).await;

    assert_eq!(status, 200);
    assert_eq!(body, b"true");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let id = header(&headers, "x-request-id").expect("X-Request-Id");
    let uploads = stub.uploads();
    assert_eq!(uploads.len(), 1);
    let upload = &uploads[0];
    assert_eq!(upload.request_id, id);
    assert_eq!(upload.domain_id, DOMAIN);
    assert_eq!(upload.plugin_name.as_deref(), Some("demo_task"));
    assert_eq!(upload.business_type.as_deref(), Some("Deploy"));
    assert_eq!(upload.filename.as_deref(), Some("demo_task__Deploy.zip"));
    assert_eq!(upload.size, Some(22));
    assert_eq!(
        upload.sha256.as_deref(),
        Some(hex::encode(Sha256::digest(EMPTY_ZIP)).as_str())
    );
    assert_eq!(
        upload.auth,
        AuthKind::Signed {
            access_key: "AKEXAMPLE0123456789".to_owned()
        }
    );
    assert_eq!(upload.status, Some(200));
    assert!(upload.accepted);
    stub.shutdown().await;
}

#[tokio::test]
async fn sdk_request_without_token_is_unauthorized_in_token_mode() {
    let stub = Stub::start(StubConfig::new(DOMAIN))
        .await
        .expect("stub starts");
    let (status, headers, body) = raw_exchange(stub.addr(), &sdk_request_bytes()).await;
    assert_eq!(status, 401);
    assert!(header(&headers, "x-request-id").is_some());
    let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["error_code"], error_codes::IAM_AUTH_FAILED);
    assert!(stub.uploads().is_empty());
    assert_eq!(stub.requests()[0].status, Some(401));
}

#[tokio::test]
async fn streamed_multi_mib_upload_is_hashed_correctly() {
    let stub = Stub::start(StubConfig::new(DOMAIN))
        .await
        .expect("stub starts");
    let mut rng = fastrand::Rng::with_seed(7);
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 123).map(|_| rng.u8(..)).collect();
    let expected = hex::encode(Sha256::digest(&data));
    // Sent in chunks without a length, so the request uses chunked transfer encoding.
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let part = reqwest::multipart::Part::stream(body)
        .file_name("big__Build.zip")
        .mime_str("application/zip")
        .expect("mime parses");
    let form = reqwest::multipart::Form::new()
        .text("comment", "ignored")
        .part("upload_file", part);

    let response = client()
        .post(upload_url(
            &stub,
            DOMAIN,
            "plugin_name=big&business_type=Build",
        ))
        .header("X-Auth-Token", DEFAULT_TOKEN)
        .multipart(form)
        .send()
        .await
        .expect("request succeeds");

    assert_accepted(response).await;
    let uploads = stub.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].size, Some(data.len() as u64));
    assert_eq!(uploads[0].sha256.as_deref(), Some(expected.as_str()));
    assert_eq!(uploads[0].filename.as_deref(), Some("big__Build.zip"));
    assert_eq!(uploads[0].auth, AuthKind::Token(DEFAULT_TOKEN.to_owned()));
    stub.shutdown().await;
}

#[tokio::test]
async fn every_rejection_answers_its_status_code_and_request_id() {
    let stub = Stub::start(StubConfig::new(DOMAIN))
        .await
        .expect("stub starts");
    let client = client();
    let token = DEFAULT_TOKEN;

    // Routes: not recorded as uploads.
    let response = client
        .get(good_url(&stub))
        .header("X-Auth-Token", token)
        .send()
        .await
        .expect("sent");
    assert_error(response, 404, error_codes::API_NOT_FOUND).await;
    let response = client
        .post(format!("{}/v3/{DOMAIN}/extension/uploads", stub.endpoint()))
        .header("X-Auth-Token", token)
        .multipart(zip_form())
        .send()
        .await
        .expect("sent");
    assert_error(response, 404, error_codes::API_NOT_FOUND).await;
    let response = client
        .get(format!("{}{IAM_TOKENS_PATH}", stub.endpoint()))
        .send()
        .await
        .expect("sent");
    assert_error(response, 404, error_codes::API_NOT_FOUND).await;
    assert_eq!(stub.uploads_started(), 0);

    // Regression (issue 8): the credentials are checked before the domain, as the gateway
    // does, so a foreign domain with bad credentials is a 401, with good ones a 403.
    let foreign = upload_url(
        &stub,
        "0123456789abcdef0123456789abcdef",
        "plugin_name=a&business_type=Build",
    );
    let response = client
        .post(&foreign)
        .multipart(zip_form())
        .send()
        .await
        .expect("sent");
    assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
    let response = client
        .post(&foreign)
        .header("X-Auth-Token", DEFAULT_TOKEN)
        .multipart(zip_form())
        .send()
        .await
        .expect("sent");
    assert_error(response, 403, error_codes::NO_PERMISSION).await;

    // Regression (issue 8): names that break the documented rules are refused.
    for query in [
        "plugin_name=bad%20name!&business_type=Build",
        "plugin_name=ok&business_type=Bu%2Fild",
    ] {
        let response = client
            .post(upload_url(&stub, DOMAIN, query))
            .header("X-Auth-Token", DEFAULT_TOKEN)
            .multipart(zip_form())
            .send()
            .await
            .expect("sent");
        assert_error(response, 400, error_codes::INVALID_PARAMETER).await;
    }

    let response = upload(&stub, None).await.expect("sent");
    let msg = assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
    assert!(msg.contains("x-auth-token not found"), "{msg}");
    let response = upload(&stub, Some("wrong")).await.expect("sent");
    let msg = assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
    assert!(msg.contains("decrypt token fail"), "{msg}");
    let response = client
        .post(good_url(&stub))
        .header(
            "Authorization",
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, Signature=00",
        )
        .multipart(zip_form())
        .send()
        .await
        .expect("sent");
    assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;

    // Credentials are checked before the query.
    for query in [
        "business_type=Build",
        "plugin_name=a&business_type=",
        "plugin_name=&business_type=Build",
        "",
    ] {
        let response = client
            .post(upload_url(&stub, DOMAIN, query))
            .header("X-Auth-Token", token)
            .multipart(zip_form())
            .send()
            .await
            .expect("sent");
        assert_error(response, 400, error_codes::INVALID_PARAMETER).await;
    }
    let response = client
        .post(upload_url(
            &stub,
            DOMAIN,
            "plugin_name=a&business_type=Build",
        ))
        .multipart(zip_form())
        .send()
        .await
        .expect("sent");
    assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;

    let response = client
        .post(good_url(&stub))
        .header("X-Auth-Token", token)
        .header(CONTENT_TYPE, "application/zip")
        .body(EMPTY_ZIP)
        .send()
        .await
        .expect("sent");
    assert_error(response, 400, error_codes::INVALID_CONTENT_TYPE).await;
    let response = client
        .post(good_url(&stub))
        .header("X-Auth-Token", token)
        .header(CONTENT_TYPE, "multipart/form-data")
        .body(EMPTY_ZIP)
        .send()
        .await
        .expect("sent");
    assert_error(response, 400, error_codes::INVALID_CONTENT_TYPE).await;

    let form = reqwest::multipart::Form::new().text("file", "not the upload_file field");
    let response = client
        .post(good_url(&stub))
        .header("X-Auth-Token", token)
        .multipart(form)
        .send()
        .await
        .expect("sent");
    let msg = assert_error(response, 400, error_codes::UPLOAD_FILE_MISSING).await;
    assert!(msg.contains("upload_file"), "{msg}");
    let response = client
        .post(good_url(&stub))
        .header("X-Auth-Token", token)
        .header(CONTENT_TYPE, "multipart/form-data; boundary=xyz")
        .body("this is no multipart body")
        .send()
        .await
        .expect("sent");
    assert_error(response, 400, error_codes::UPLOAD_FILE_MISSING).await;

    let statuses: Vec<Option<u16>> = stub.requests().iter().map(|r| r.status).collect();
    let mut expected = vec![Some(401), Some(403), Some(400), Some(400)];
    expected.extend([Some(401), Some(401), Some(401)]);
    expected.extend([Some(400); 4]);
    expected.extend([Some(401), Some(400), Some(400), Some(400), Some(400)]);
    assert_eq!(statuses, expected);
    assert_eq!(stub.uploads_completed(), expected.len());
    assert!(stub.uploads().is_empty());
    let ids: std::collections::HashSet<String> =
        stub.requests().into_iter().map(|r| r.request_id).collect();
    assert_eq!(ids.len(), expected.len(), "request ids are unique");
    stub.shutdown().await;
}

#[tokio::test]
async fn early_rejection_of_a_large_body_reaches_the_client() {
    // Regression guard for answering before the body is read. A client that writes the
    // whole request before reading (as simple clients do) must get the 401, not a stalled
    // write or a connection reset, however large the body.
    let stub = Stub::start(StubConfig::new(DOMAIN))
        .await
        .expect("stub starts");
    let boundary = "b0undary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"upload_file\"; \
         filename=\"x.zip\"\r\n\r\n"
    )
    .into_bytes();
    body.extend(std::iter::repeat_n(7u8, 8 * 1024 * 1024));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut request = format!(
        "POST /v3/{DOMAIN}/extension/upload?plugin_name=x&business_type=Test HTTP/1.1\r\n\
         Host: {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\n\r\n",
        stub.addr(),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);

    let (status, headers, body) =
        tokio::time::timeout(Duration::from_secs(20), raw_exchange(stub.addr(), &request))
            .await
            .expect("the answer arrives");
    assert_eq!(status, 401);
    assert!(header(&headers, "x-request-id").is_some());
    let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["error_code"], error_codes::IAM_AUTH_FAILED);
    stub.shutdown().await;
}

#[tokio::test]
async fn faults_are_applied_in_queue_order() {
    let stub = Stub::start(StubConfig::new(DOMAIN))
        .await
        .expect("stub starts");
    let unavailable = Fault::Status {
        status: 503,
        error_code: "CUSTOM.503".to_owned(),
        error_msg: "busy".to_owned(),
        retry_after: None,
    };
    let delay = Duration::from_millis(300);
    stub.push_faults([
        Fault::throttled("3"),
        Fault::False,
        Fault::Delay(delay),
        Fault::Drop,
    ]);
    stub.push_faults([unavailable.clone()]);
    assert_eq!(stub.pending_faults(), 5);
    let token = Some(DEFAULT_TOKEN);

    let response = upload(&stub, token).await.expect("sent");
    assert_eq!(
        response.headers().get(RETRY_AFTER).expect("Retry-After"),
        "3"
    );
    assert_error(response, 429, error_codes::THROTTLED).await;

    let response = upload(&stub, token).await.expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    request_id(&response);
    assert_eq!(response.text().await.expect("body"), "false");

    let started = Instant::now();
    let response = upload(&stub, token).await.expect("sent");
    assert!(started.elapsed() >= delay);
    assert_accepted(response).await;

    let error = upload(&stub, token).await.expect_err("connection dropped");
    assert!(!error.is_status() && !error.is_timeout(), "{error:?}");

    let response = upload(&stub, token).await.expect("sent");
    let msg = assert_error(response, 503, "CUSTOM.503").await;
    assert_eq!(msg, "busy");

    assert_eq!(stub.pending_faults(), 0);
    assert_accepted(upload(&stub, token).await.expect("sent")).await;

    let requests = stub.requests();
    let faults: Vec<Option<Fault>> = requests.iter().map(|r| r.fault.clone()).collect();
    assert_eq!(
        faults,
        [
            Some(Fault::throttled("3")),
            Some(Fault::False),
            Some(Fault::Delay(delay)),
            Some(Fault::Drop),
            Some(unavailable),
            None,
        ]
    );
    let statuses: Vec<Option<u16>> = requests.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [Some(429), Some(200), Some(200), None, Some(503), Some(200)]
    );
    // Faulted requests that read the body still record the file.
    assert_eq!(requests[1].size, Some(22));
    assert_eq!(stub.uploads().len(), 2);
    assert_eq!(stub.uploads_started(), 6);
    assert_eq!(stub.uploads_completed(), 5);
    stub.shutdown().await;
}

#[tokio::test]
async fn a_hung_request_is_recorded_and_does_not_block_shutdown() {
    let stub = Stub::start(StubConfig::new(DOMAIN))
        .await
        .expect("stub starts");
    stub.push_faults([Fault::Hang]);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client builds");
    let error = client
        .post(good_url(&stub))
        .header("X-Auth-Token", DEFAULT_TOKEN)
        .multipart(zip_form())
        .send()
        .await
        .expect_err("no answer");
    assert!(error.is_timeout(), "{error:?}");

    let requests = stub.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].fault, Some(Fault::Hang));
    assert_eq!(requests[0].status, None);
    assert_eq!(requests[0].size, Some(22));
    assert_eq!(stub.uploads_started(), 1);
    assert_eq!(stub.uploads_completed(), 0);
    tokio::time::timeout(Duration::from_secs(5), stub.shutdown())
        .await
        .expect("shutdown does not wait for the hung request");
}

async fn obtain_token(stub: &Stub, name: &str, password: &str, domain: &str) -> reqwest::Response {
    let body = serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": name, "password": password, "domain": {"name": domain}}}},
        "scope": {"domain": {"name": domain}}}});
    client()
        .post(format!("{}/v3/auth/tokens", stub.endpoint()))
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn iam_tokens_are_issued_accepted_and_expire() {
    let mut config = StubConfig::new(DOMAIN);
    config.token_lifetime = Duration::from_secs(2);
    let stub = Stub::start(config).await.expect("stub starts");

    let response = obtain_token(&stub, DEFAULT_USER, "wrong", DEFAULT_DOMAIN_NAME).await;
    assert_eq!(response.status().as_u16(), 401);
    request_id(&response);
    let body: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON");
    assert_eq!(
        body,
        serde_json::json!({"error": {"code": 401,
            "message": "The username or password is wrong.", "title": "Unauthorized"}})
    );
    let response = obtain_token(&stub, DEFAULT_USER, DEFAULT_PASSWORD, "other-domain").await;
    assert_eq!(response.status().as_u16(), 401);
    let response = client()
        .post(format!("{}/v3/auth/tokens", stub.endpoint()))
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 400);
    request_id(&response);

    let before = SystemTime::now();
    let response = obtain_token(&stub, DEFAULT_USER, DEFAULT_PASSWORD, DEFAULT_DOMAIN_NAME).await;
    assert_eq!(response.status().as_u16(), 201);
    request_id(&response);
    let token = response
        .headers()
        .get("x-subject-token")
        .expect("X-Subject-Token")
        .to_str()
        .expect("ASCII")
        .to_owned();
    let body: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON");
    let expires_at = body["token"]["expires_at"].as_str().expect("expires_at");
    // RFC 3339, UTC, microseconds: 2026-11-28T01:02:03.000000Z
    assert_eq!(expires_at.len(), 27, "{expires_at}");
    assert_eq!(&expires_at[19..20], ".");
    assert!(expires_at.ends_with('Z'));
    let expires = humantime::parse_rfc3339(expires_at).expect("RFC 3339");
    let lifetime = expires.duration_since(before).expect("in the future");
    assert!(lifetime >= Duration::from_millis(1900) && lifetime < Duration::from_secs(3));
    assert_eq!(body["token"]["methods"], serde_json::json!(["password"]));
    assert_eq!(body["token"]["user"]["name"], DEFAULT_USER);

    let second = obtain_token(&stub, DEFAULT_USER, DEFAULT_PASSWORD, DEFAULT_DOMAIN_NAME).await;
    let second = second
        .headers()
        .get("x-subject-token")
        .expect("X-Subject-Token")
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert_ne!(token, second);

    // A new token does not invalidate older ones.
    assert_accepted(upload(&stub, Some(&token)).await.expect("sent")).await;
    assert_accepted(upload(&stub, Some(&second)).await.expect("sent")).await;

    tokio::time::sleep_until((Instant::now() + Duration::from_millis(2100)).into()).await;
    let response = upload(&stub, Some(&token)).await.expect("sent");
    let msg = assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
    assert!(msg.contains("token expires"), "{msg}");
    // Static tokens never expire.
    assert_accepted(upload(&stub, Some(DEFAULT_TOKEN)).await.expect("sent")).await;

    assert_eq!(stub.iam_requests(), 5);
    assert_eq!(stub.tokens_issued(), 2);
    stub.shutdown().await;
}

#[tokio::test]
async fn tokens_rotate_at_runtime_and_any_accepts_everything() {
    let stub = Stub::start(StubConfig::new(DOMAIN))
        .await
        .expect("stub starts");
    stub.set_tokens(vec!["rotated".to_owned()]);
    let response = upload(&stub, Some(DEFAULT_TOKEN)).await.expect("sent");
    assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
    assert_accepted(upload(&stub, Some("rotated")).await.expect("sent")).await;
    stub.set_auth(StubAuth::Any);
    assert_accepted(upload(&stub, None).await.expect("sent")).await;
    assert_eq!(stub.uploads()[1].auth, AuthKind::None);
    stub.shutdown().await;
}

#[tokio::test]
async fn a_busy_port_is_an_error() {
    let first = Stub::start(StubConfig::new(DOMAIN))
        .await
        .expect("stub starts");
    let mut config = StubConfig::new(DOMAIN);
    config.port = first.addr().port();
    let error = Stub::start(config).await.expect_err("port in use");
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
}

#[test]
fn background_stub_serves_synchronous_callers_and_stops_on_drop() {
    use std::io::{Read, Write};

    let stub = Stub::start_background(StubConfig::new(DOMAIN)).expect("stub starts");
    let addr = stub.addr();
    assert_eq!(stub.endpoint(), format!("http://{addr}"));
    let boundary = "b0undary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"upload_file\"; \
         filename=\"x__Test.zip\"\r\n\r\nhello\r\n--{boundary}--\r\n"
    );
    let request = format!(
        "POST /v3/{DOMAIN}/extension/upload?plugin_name=x&business_type=Test HTTP/1.1\r\n\
         Host: {addr}\r\nX-Auth-Token: {DEFAULT_TOKEN}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("x-request-id: "),
        "{response}"
    );
    assert!(response.ends_with("\r\n\r\ntrue"), "{response}");
    let uploads = stub.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].size, Some(5));
    assert_eq!(uploads[0].filename.as_deref(), Some("x__Test.zip"));

    drop(stub);
    let error = std::net::TcpStream::connect(addr).expect_err("stub stopped");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// The access key of the recorded SDK request; its secret key is the first vector's.
const SDK_ACCESS_KEY: &str = "AKEXAMPLE0123456789";

fn sdk_secret_key() -> String {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../auth/testdata/aksk-sdk-hmac-sha256.json"))
            .expect("vectors parse");
    vectors[0]["secret_key"]
        .as_str()
        .expect("secret_key")
        .to_owned()
}

/// When the SDK signed the recorded request.
fn sdk_signed_at() -> SystemTime {
    let vectors: serde_json::Value =
        serde_json::from_str(SDK_UPLOAD_REQUEST).expect("vector parses");
    let date = vectors[0]["headers"]["X-Sdk-Date"].as_str().expect("date");
    crate::auth::sign::parse_sdk_date(date).expect("date parses")
}

/// Sets the stub's clock to `at`.
fn set_clock(stub: &Stub, at: SystemTime) {
    let now = SystemTime::now();
    match now.duration_since(at) {
        Ok(behind) => stub.set_clock_offset(behind, false),
        Err(ahead) => stub.set_clock_offset(ahead.duration(), true),
    }
}

async fn aksk_stub(secret_key: &str) -> Stub {
    let mut config = StubConfig::new(DOMAIN);
    config.auth = StubAuth::aksk(vec![(SDK_ACCESS_KEY.to_owned(), secret_key.to_owned())]);
    Stub::start(config).await.expect("stub starts")
}

async fn error_of(body: &[u8]) -> (String, String) {
    let body: serde_json::Value = serde_json::from_slice(body).expect("JSON");
    (
        body["error_code"].as_str().expect("code").to_owned(),
        body["error_msg"].as_str().expect("msg").to_owned(),
    )
}

#[tokio::test]
async fn sdk_request_is_verified_against_the_stubs_clock() {
    let stub = aksk_stub(&sdk_secret_key()).await;
    let signed_at = sdk_signed_at();

    set_clock(&stub, signed_at);
    let (status, _, body) = raw_exchange(stub.addr(), &sdk_request_bytes()).await;
    assert_eq!((status, body.as_slice()), (200, b"true".as_slice()));
    assert_eq!(
        stub.uploads()[0].auth,
        AuthKind::Signed {
            access_key: SDK_ACCESS_KEY.to_owned()
        }
    );

    // Within the gateway's 15 minutes either way: still good.
    set_clock(&stub, signed_at - Duration::from_secs(14 * 60));
    let (status, _, _) = raw_exchange(stub.addr(), &sdk_request_bytes()).await;
    assert_eq!(status, 200);

    // 20 minutes off: the gateway's "signature expired", which clients read as skew.
    set_clock(&stub, signed_at + Duration::from_secs(20 * 60));
    let (status, _, body) = raw_exchange(stub.addr(), &sdk_request_bytes()).await;
    assert_eq!(status, 401);
    let (code, msg) = error_of(&body).await;
    assert_eq!(code, error_codes::IAM_AUTH_FAILED);
    assert!(msg.contains("signature expired"), "{msg}");
    assert!(msg.contains("server time:20261128T0015"), "{msg}");
    assert!(crate::auth::clock_skew_hint(
        401,
        &String::from_utf8_lossy(&body)
    ));

    // A changed query no longer matches the signature, and that is not skew.
    set_clock(&stub, signed_at);
    let tampered = String::from_utf8(sdk_request_bytes())
        .expect("ASCII")
        .replace("plugin_name=demo_task", "plugin_name=demo_tasx");
    let (status, _, body) = raw_exchange(stub.addr(), tampered.as_bytes()).await;
    assert_eq!(status, 401);
    let (_, msg) = error_of(&body).await;
    assert!(msg.ends_with("verify aksk signature fail"), "{msg}");
    assert!(!crate::auth::clock_skew_hint(
        401,
        &String::from_utf8_lossy(&body)
    ));
    assert_eq!(stub.uploads().len(), 2);
    stub.shutdown().await;

    // The right access key with the wrong secret key.
    let stub = aksk_stub("not-the-secret-key").await;
    set_clock(&stub, signed_at);
    let (status, _, body) = raw_exchange(stub.addr(), &sdk_request_bytes()).await;
    assert_eq!(status, 401);
    let (_, msg) = error_of(&body).await;
    assert!(msg.contains("verify aksk signature fail"), "{msg}");
    stub.shutdown().await;
}

/// An `Auth` for `method = "aksk"` reading its keys from files in `dir`.
fn file_keys(dir: &std::path::Path, secret_key: &str, token: Option<&str>) -> crate::auth::Auth {
    let write = |name: &str, value: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{value}\n")).expect("write key");
        path
    };
    let config = crate::auth::AuthConfig::Aksk {
        access_key_file: Some(write("ak", SDK_ACCESS_KEY)),
        secret_key_file: Some(write("sk", secret_key)),
        security_token_file: token.map(|t| write("token", t)),
    };
    crate::auth::Auth::new(&config, client()).expect("keys load")
}

#[tokio::test]
async fn extdrop_signatures_are_verified_with_the_security_token() {
    let stub = aksk_stub("SK-of-the-stub").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let auth = file_keys(dir.path(), "SK-of-the-stub", Some("temporary-token"));

    let mut request = client()
        .post(good_url(&stub))
        .multipart(zip_form())
        .build()
        .expect("request builds");
    auth.authorize(&mut request).await.expect("signed");
    assert_accepted(client().execute(request).await.expect("sent")).await;
    let upload = &stub.uploads()[0];
    assert_eq!(upload.security_token.as_deref(), Some("temporary-token"));
    assert_eq!(
        upload.auth,
        AuthKind::Signed {
            access_key: SDK_ACCESS_KEY.to_owned()
        }
    );

    // What `check --online` sends: signed, no parameters, no body; nothing is uploaded.
    let probe_url = upload_url(&stub, DOMAIN, "").replace('?', "");
    let mut request = client().post(&probe_url).build().expect("request builds");
    auth.authorize(&mut request).await.expect("signed");
    let response = client().execute(request).await.expect("sent");
    assert_error(response, 400, error_codes::INVALID_PARAMETER).await;
    let response = client().post(&probe_url).send().await.expect("sent");
    let msg = assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
    assert!(msg.contains("authorization"), "{msg}");

    // A security token sent but left out of the signature could be swapped in transit.
    let mut request = client().post(&probe_url).build().expect("request builds");
    file_keys(dir.path(), "SK-of-the-stub", None)
        .authorize(&mut request)
        .await
        .expect("signed");
    request
        .headers_mut()
        .insert("x-security-token", HeaderValue::from_static("added-later"));
    let response = client().execute(request).await.expect("sent");
    let msg = assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
    assert!(msg.contains("x-security-token must be signed"), "{msg}");

    // A wrong secret key.
    let mut request = client()
        .post(good_url(&stub))
        .multipart(zip_form())
        .build()
        .expect("request builds");
    file_keys(dir.path(), "SK-wrong", None)
        .authorize(&mut request)
        .await
        .expect("signed");
    let response = client().execute(request).await.expect("sent");
    let msg = assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
    assert!(msg.ends_with("verify aksk signature fail"), "{msg}");
    assert_eq!(stub.uploads().len(), 1);
    stub.shutdown().await;
}

#[tokio::test]
async fn aksk_mode_also_takes_iam_tokens() {
    let stub = aksk_stub("SK").await;
    let response = obtain_token(&stub, DEFAULT_USER, DEFAULT_PASSWORD, DEFAULT_DOMAIN_NAME).await;
    let token = response
        .headers()
        .get("x-subject-token")
        .expect("X-Subject-Token")
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert_eq!(stub.issued_tokens(), std::slice::from_ref(&token));
    assert_accepted(upload(&stub, Some(&token)).await.expect("sent")).await;
    // Static tokens belong to token mode only.
    let response = upload(&stub, Some(DEFAULT_TOKEN)).await.expect("sent");
    let msg = assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
    assert!(msg.contains("decrypt token fail"), "{msg}");
    stub.shutdown().await;
}

#[tokio::test]
async fn a_skewed_stub_stamps_iam_tokens_with_its_own_clock() {
    let stub = Stub::start(StubConfig::new(DOMAIN))
        .await
        .expect("stub starts");
    stub.set_clock_offset(Duration::from_secs(3600), true);
    let response = obtain_token(&stub, DEFAULT_USER, DEFAULT_PASSWORD, DEFAULT_DOMAIN_NAME).await;
    let body: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON");
    let issued = body["token"]["issued_at"].as_str().expect("issued_at");
    let issued = humantime::parse_rfc3339(issued).expect("RFC 3339");
    let ahead = issued
        .duration_since(SystemTime::now())
        .expect("issued in the future");
    assert!(ahead > Duration::from_secs(3590), "{ahead:?}");
    stub.shutdown().await;
}

#[test]
fn upload_domain_matches_only_the_upload_path() {
    assert_eq!(upload_domain("/v3/abc/extension/upload"), Some("abc"));
    assert_eq!(upload_domain("/v3//extension/upload"), None);
    assert_eq!(upload_domain("/v3/a/b/extension/upload"), None);
    assert_eq!(upload_domain("/v3/abc/extension/upload/"), None);
    assert_eq!(upload_domain("/v3/auth/tokens"), None);
}

#[test]
fn query_params_are_percent_decoded() {
    let query = "business_type=Deploy&plugin_name=demo%5Ftask+x&empty=&bad=%zz";
    assert_eq!(
        query_param(query, "plugin_name").as_deref(),
        Some("demo_task x")
    );
    assert_eq!(
        query_param(query, "business_type").as_deref(),
        Some("Deploy")
    );
    assert_eq!(query_param(query, "empty").as_deref(), Some(""));
    assert_eq!(query_param(query, "bad").as_deref(), Some("%zz"));
    assert_eq!(query_param(query, "missing"), None);
}
