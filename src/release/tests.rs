//! The request builders against the official SDK's own requests
//! (`sdk-lifecycle-requests.json`), and their AK/SK signatures against the stand-in.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::auth::AuthConfig;
use crate::config::DomainId;
use crate::stub::{Stub, StubAuth, StubConfig};

const VECTOR: &str = include_str!("../auth/testdata/sdk-lifecycle-requests.json");

fn vector() -> serde_json::Value {
    serde_json::from_str(VECTOR).unwrap()
}

fn sdk_request(api: &str) -> serde_json::Value {
    vector()["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["api"] == api)
        .cloned()
        .unwrap()
}

/// The method, path and query of a request line.
fn request_line(line: &str) -> (String, String, BTreeMap<String, String>) {
    let mut words = line.split(' ');
    let method = words.next().unwrap().to_owned();
    let target = words.next().unwrap();
    let url = reqwest::Url::parse(&format!("http://x{target}")).unwrap();
    let query = url.query_pairs().into_owned().collect();
    (method, url.path().to_owned(), query)
}

fn sdk_header<'a>(request: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    request["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .and_then(|h| h[1].as_str())
}

/// A releaser with the vector's keys for `endpoint` and the vector's tenant.
fn releaser(endpoint: &str, keys: &tempfile::TempDir) -> Releaser {
    let v = vector();
    let (ak, sk) = (keys.path().join("ak"), keys.path().join("sk"));
    std::fs::write(&ak, v["access_key"].as_str().unwrap()).unwrap();
    std::fs::write(&sk, v["secret_key"].as_str().unwrap()).unwrap();
    let config = AuthConfig::Aksk {
        access_key_file: Some(ak),
        secret_key_file: Some(sk),
        security_token_file: None,
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let auth = Auth::new(&config, client.clone()).unwrap();
    let codearts = CodeArts {
        endpoint: endpoint.to_owned(),
        domain_id: DomainId::parse("ce8df55870164338a72d7e828a966a2a").unwrap(),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        ca_file: None,
    };
    Releaser::new(&codearts, client, auth)
}

fn registration() -> Registration {
    Registration {
        plugin_name: "demo_task".to_owned(),
        display_name: "Demo task".to_owned(),
        business_type: "Deploy".to_owned(),
        description: "Deploys the demo".to_owned(),
    }
}

fn publication() -> Publication {
    Publication {
        plugin_name: "demo_task".to_owned(),
        display_name: "Demo task".to_owned(),
        version: "1.2.0".to_owned(),
    }
}

/// Every builder against its SDK request: method, path, query, content type, JSON keys and
/// values.
#[test]
fn requests_have_the_sdks_shape() {
    let keys = tempfile::tempdir().unwrap();
    let r = releaser("http://127.0.0.1:39367", &keys);
    let built = [
        ("ListPLuginVersion", r.list_request("demo_task", 0).unwrap()),
        (
            "ShowPluginVersion",
            r.detail_request("demo_task", "1.2.0").unwrap(),
        ),
        (
            "CreateBasicPlugin",
            r.register_request(&registration()).unwrap(),
        ),
        (
            "PublishPluginDraft",
            r.publish_request(&publication()).unwrap(),
        ),
    ];
    for (api, ours) in built {
        let sdk = sdk_request(api);
        let (method, path, query) = request_line(sdk["request_line"].as_str().unwrap());
        assert_eq!(ours.method().as_str(), method, "{api}");
        assert_eq!(ours.url().path(), path, "{api}");
        let our_query: BTreeMap<String, String> = ours.url().query_pairs().into_owned().collect();
        assert_eq!(our_query, query, "{api}");
        assert_eq!(
            ours.headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            sdk_header(&sdk, "Content-Type"),
            "{api}"
        );
        let sdk_body = sdk["body"].as_str().unwrap();
        let our_body = ours.body().and_then(reqwest::Body::as_bytes);
        if sdk_body.is_empty() {
            assert!(our_body.is_none_or(<[u8]>::is_empty), "{api}");
        } else {
            let sdk_json: serde_json::Value = serde_json::from_str(sdk_body).unwrap();
            let our_json: serde_json::Value = serde_json::from_slice(our_body.unwrap()).unwrap();
            assert_eq!(our_json, sdk_json, "{api}: same keys and values");
        }
    }
}

/// Each request, signed by extdrop, is accepted by the stand-in's AK/SK verifier, which hashes
/// JSON bodies as the gateway does; and the answers come back as data.
#[tokio::test]
async fn signed_requests_pass_the_stand_ins_verifier_and_answers_parse() {
    let v = vector();
    let mut config = StubConfig::new("ce8df55870164338a72d7e828a966a2a");
    config.auto_register = false;
    config.auth = StubAuth::aksk(vec![(
        v["access_key"].as_str().unwrap().to_owned(),
        v["secret_key"].as_str().unwrap().to_owned(),
    )]);
    let stub = Stub::start(config).await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let r = releaser(&stub.endpoint(), &keys);

    let (versions, _) = r.versions("demo_task").await.unwrap();
    assert!(!versions.exists());
    r.register(&registration()).await.unwrap();
    let (versions, _) = r.versions("demo_task").await.unwrap();
    assert!(versions.exists());
    assert_eq!(versions.display_name(), Some("Demo task"));
    // Publishing what is not a draft is refused for good, with the server's words.
    match r.publish(&publication()).await {
        Err(verdict @ Verdict::Rejected { .. }) => {
            let reason = verdict_reason(&verdict);
            assert!(reason.contains("HTTP 400"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    stub.with_catalog(|c| c.upload("demo_task", "1.2.0"))
        .unwrap();
    r.publish(&publication()).await.unwrap();
    let (detail, answer) = r.detail("demo_task", "1.2.0").await.unwrap();
    assert!(detail.is_formal("1.2.0"), "{detail:?}");
    assert_eq!(answer.status, 200);

    let records = stub.api_requests();
    assert!(
        records
            .iter()
            .all(|r| matches!(r.auth, crate::stub::AuthKind::Signed { .. })),
        "{records:?}"
    );
    assert!(
        records.iter().all(|r| r.status != Some(401)),
        "every signature accepted: {records:?}"
    );
}

#[test]
fn the_list_answer_of_the_vector_parses() {
    let answer = vector()["answers"]["/agent-plugin/query"].to_string();
    let versions: Versions = parse_json(&answer).unwrap();
    assert!(versions.exists());
    assert!(!versions.is_formal("1.2.0"), "a draft is not official");
    let detail: VersionInfo =
        parse_json(&vector()["answers"]["/agent-plugin/detail"].to_string()).unwrap();
    assert!(detail.is_formal("1.2.0"));
}

/// An official version beyond the first page of 100 is still found.
#[tokio::test]
async fn the_look_up_reads_every_page() {
    let mut config = StubConfig::new("ce8df55870164338a72d7e828a966a2a");
    config.auth = StubAuth::Any;
    let stub = Stub::start(config).await.unwrap();
    stub.with_catalog(|c| {
        c.register("many", "Many", "Build", "").unwrap();
        for minor in 0..99 {
            for patch in [0, 1, 2] {
                let version = format!("1.{minor}.{patch}");
                c.upload("many", &version).unwrap();
                c.publish("many", &version).unwrap();
            }
        }
    });
    let keys = tempfile::tempdir().unwrap();
    let r = releaser(&stub.endpoint(), &keys);
    let (versions, _) = r.versions("many").await.unwrap();
    assert_eq!(versions.data.len(), 297);
    assert!(versions.is_formal("1.0.0"), "the oldest, on the third page");
    let lists = stub
        .api_requests()
        .iter()
        .filter(|a| a.api == crate::stub::Api::List)
        .count();
    assert_eq!(lists, 3);
}

#[test]
fn console_names_of_business_types() {
    assert_eq!(business_type_display_name("Gate"), "Check");
    assert_eq!(business_type_display_name("deploy"), "Deploy");
    assert_eq!(business_type_display_name("Custom"), "Custom");
}
