//! The lifecycle endpoints: the catalog's rules over HTTP, and the official SDK's own signed
//! requests accepted as they were sent.

use super::*;
use crate::stub::catalog::refusal_codes;

/// The SDK's requests for the four lifecycle APIs (shared test vector).
const SDK_LIFECYCLE: &str = include_str!("../../auth/testdata/sdk-lifecycle-requests.json");

fn strict_config() -> StubConfig {
    let mut config = StubConfig::new(DOMAIN);
    config.auto_register = false;
    config
}

fn api_url(stub: &Stub, path: &str) -> String {
    format!("{}{path}", stub.endpoint())
}

async fn get_json(stub: &Stub, path: &str) -> (u16, serde_json::Value) {
    let response = client()
        .get(api_url(stub, path))
        .header("X-Auth-Token", DEFAULT_TOKEN)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("body");
    (status, serde_json::from_slice(&body).expect("JSON"))
}

async fn post_json(stub: &Stub, path: &str, body: serde_json::Value) -> reqwest::Response {
    client()
        .post(api_url(stub, path))
        .header("X-Auth-Token", DEFAULT_TOKEN)
        .header("Content-Type", "application/json;charset=utf-8")
        .body(body.to_string())
        .send()
        .await
        .expect("sent")
}

fn list_path(plugin_name: &str) -> String {
    format!("/v1/{DOMAIN}/agent-plugin/query?plugin_name={plugin_name}&offset=0&limit=100")
}

fn register_body(plugin_name: &str) -> serde_json::Value {
    serde_json::json!({
        "plugin_name": plugin_name, "display_name": "Demo task", "business_type": "Deploy",
        "business_type_display_name": "Deploy", "description": "Deploys the demo",
        "plugin_composition_type": "single", "runtime_attribution": "agent",
    })
}

fn publish_body(plugin_name: &str, version: &str) -> serde_json::Value {
    serde_json::json!({
        "plugin_name": plugin_name, "display_name": "Demo task", "version": version,
        "plugin_attribution": "custom", "version_attribution": "draft",
    })
}

async fn upload_sample(stub: &Stub, plugin_name: &str, version: &str) -> reqwest::Response {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.zip");
    crate::package::write_sample(&path, plugin_name, "Deploy", version).expect("sample");
    let part = reqwest::multipart::Part::bytes(std::fs::read(&path).expect("read"))
        .file_name("p.zip")
        .mime_str("application/zip")
        .expect("mime");
    client()
        .post(upload_url(
            stub,
            DOMAIN,
            &format!("plugin_name={plugin_name}&business_type=Deploy"),
        ))
        .header("X-Auth-Token", DEFAULT_TOKEN)
        .multipart(reqwest::multipart::Form::new().part("upload_file", part))
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn an_extension_is_registered_uploaded_and_published_under_the_clouds_rules() {
    let stub = Stub::start(strict_config()).await.expect("stub starts");
    let (status, list) = get_json(&stub, &list_path("demo_task")).await;
    assert_eq!((status, &list["total"]), (200, &serde_json::json!(0)));

    // Unknown extension: the upload is refused, nothing joins the catalog.
    let response = upload_sample(&stub, "demo_task", "1.0.0").await;
    assert_error(response, 400, refusal_codes::EXTENSION_NOT_FOUND).await;

    let path = format!("/v3/{DOMAIN}/extension/info/add");
    assert_accepted(post_json(&stub, &path, register_body("demo_task")).await).await;
    let response = post_json(&stub, &path, register_body("demo_task")).await;
    assert_error(response, 400, refusal_codes::EXTENSION_EXISTS).await;
    let (_, list) = get_json(&stub, &list_path("demo_task")).await;
    assert_eq!(list["data"][0]["version_attribution"], "init");

    assert_accepted(upload_sample(&stub, "demo_task", "1.0.0").await).await;
    let (_, list) = get_json(&stub, &list_path("demo_task")).await;
    assert_eq!(list["data"][0]["version"], "1.0.0");
    assert_eq!(list["data"][0]["version_attribution"], "draft");
    assert_eq!(list["data"][0]["display_name"], "Demo task");

    let publish = format!("/v1/{DOMAIN}/agent-plugin/publish-draft");
    assert_accepted(post_json(&stub, &publish, publish_body("demo_task", "1.0.0")).await).await;
    let response = post_json(&stub, &publish, publish_body("demo_task", "1.0.0")).await;
    assert_error(response, 400, refusal_codes::NOT_A_DRAFT).await;
    let (status, detail) = get_json(
        &stub,
        &format!("/v1/{DOMAIN}/agent-plugin/detail?plugin_name=demo_task&version=1.0.0"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(detail["version_attribution"], "formal");

    // An official version is never replaced.
    let response = upload_sample(&stub, "demo_task", "1.0.0").await;
    assert_error(response, 400, refusal_codes::VERSION_OFFICIAL).await;
    assert_eq!(stub.uploads().len(), 1);
    assert_eq!(stub.api_successes(Api::Publish), 1);
}

#[tokio::test]
async fn lifecycle_calls_check_credentials_domain_names_and_content_type() {
    let stub = Stub::start(strict_config()).await.expect("stub starts");
    let path = format!("/v3/{DOMAIN}/extension/info/add");
    // No credentials, foreign domain: 401 first.
    let response = client()
        .post(api_url(
            &stub,
            "/v3/0123456789abcdef0123456789abcdef/extension/info/add",
        ))
        .header("Content-Type", "application/json")
        .body(register_body("demo").to_string())
        .send()
        .await
        .expect("sent");
    assert_error(response, 401, error_codes::IAM_AUTH_FAILED).await;
    let response = post_json(&stub, &path, register_body("bad name!")).await;
    assert_error(response, 400, error_codes::INVALID_PARAMETER).await;
    let response = client()
        .post(api_url(&stub, &path))
        .header("X-Auth-Token", DEFAULT_TOKEN)
        .body(register_body("demo").to_string())
        .send()
        .await
        .expect("sent");
    assert_error(response, 400, error_codes::INVALID_CONTENT_TYPE).await;
    // A wrong method on a lifecycle path is no route.
    let response = client()
        .get(api_url(&stub, &path))
        .header("X-Auth-Token", DEFAULT_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_error(response, 404, error_codes::API_NOT_FOUND).await;
}

#[tokio::test]
async fn api_faults_are_consumed_per_api() {
    let stub = Stub::start(strict_config()).await.expect("stub starts");
    stub.push_api_faults(Api::Publish, [Fault::status(503)]);
    let (status, _) = get_json(&stub, &list_path("x")).await;
    assert_eq!(status, 200, "the list has no fault queued");
    let publish = format!("/v1/{DOMAIN}/agent-plugin/publish-draft");
    let response = post_json(&stub, &publish, publish_body("x", "1.0.0")).await;
    assert_error(response, 503, error_codes::INTERNAL_ERROR).await;
    let response = post_json(&stub, &publish, publish_body("x", "1.0.0")).await;
    assert_error(response, 400, refusal_codes::EXTENSION_NOT_FOUND).await;
}

/// The SDK signs JSON bodies with their real SHA-256: each recorded request, sent byte for
/// byte, passes the stand-in's AK/SK verifier (with its clock at the recorded date).
#[tokio::test]
async fn the_sdks_signed_lifecycle_requests_are_accepted_as_sent() {
    let vector: serde_json::Value = serde_json::from_str(SDK_LIFECYCLE).expect("vector parses");
    let mut config = strict_config();
    config.auth = StubAuth::aksk(vec![(
        vector["access_key"].as_str().expect("ak").to_owned(),
        vector["secret_key"].as_str().expect("sk").to_owned(),
    )]);
    let stub = Stub::start(config).await.expect("stub starts");
    let requests = vector["requests"].as_array().expect("requests");
    let date = requests[0]["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .find(|h| h[0] == "X-Sdk-Date")
        .and_then(|h| h[1].as_str())
        .expect("date");
    set_clock(
        &stub,
        crate::auth::sign::parse_sdk_date(date).expect("date parses"),
    );
    // The publish needs a draft to publish.
    stub.with_catalog(|c| {
        c.upload("demo_task", "1.2.0")
            .expect_err("not yet registered")
    });
    let mut statuses = Vec::new();
    for request in requests {
        let mut raw = format!("{}\r\n", request["request_line"].as_str().expect("line"));
        for header in request["headers"].as_array().expect("headers") {
            let (name, value) = (
                header[0].as_str().expect("n"),
                header[1].as_str().expect("v"),
            );
            // Keep-alive would make the stand-in wait for another request.
            let value = if name == "Connection" { "close" } else { value };
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("\r\n");
        raw.push_str(request["body"].as_str().expect("body"));
        if request["api"] == "PublishPluginDraft" {
            stub.with_catalog(|c| c.upload("demo_task", "1.2.0").expect("draft"));
        }
        let (status, _, body) = raw_exchange(stub.addr(), raw.as_bytes()).await;
        statuses.push((
            request["api"].as_str().expect("api").to_owned(),
            status,
            String::from_utf8_lossy(&body).into_owned(),
        ));
    }
    let ok = |api: &str| {
        statuses
            .iter()
            .find(|(a, ..)| a == api)
            .map(|(_, status, body)| (*status, body.clone()))
    };
    assert_eq!(
        ok("ListPLuginVersion").map(|s| s.0),
        Some(200),
        "{statuses:?}"
    );
    assert_eq!(
        ok("CreateBasicPlugin"),
        Some((200, "true".to_owned())),
        "{statuses:?}"
    );
    assert_eq!(
        ok("PublishPluginDraft"),
        Some((200, "true".to_owned())),
        "{statuses:?}"
    );
    // The detail comes before the register in the vector: the version is unknown then, and
    // the 400 proves the signature passed (a bad one is a 401).
    assert_eq!(
        ok("ShowPluginVersion").map(|s| s.0),
        Some(400),
        "{statuses:?}"
    );
    assert!(stub.with_catalog(|c| c.contains("demo_task")));
}
