//! `method = "agency"` (SPEC §7) end to end: the real binary, the CodeArts stand-in verifying
//! AK/SK signatures, and the ECS metadata stand-in handing out temporary credentials of a
//! lifetime each test chooses. Uploads signed with the temporary keys and security token,
//! renewal 40 minutes before expiry (an upload in flight keeping its keys), an expired metadata
//! token fetched again once, a service without metadata tokens, credentials the server
//! refuses, "no agency" waited out with one log line, `check --online` and `status`, the
//! systemd unit reaching the metadata address, and no temporary secret in any output at debug
//! level.

use std::process::Output;
use std::time::Duration;

use extdrop::auth::AGENCY_RENEW_BEFORE;
use extdrop::stub::metadata::{self, MetadataConfig, MetadataStub};
use extdrop::stub::{AuthKind, Fault, StubAuth, StubConfig, UploadRecord};

use crate::harness::{DOMAIN, Sandbox};

/// How many of the metadata stand-in's credentials the CodeArts stand-in accepts.
const KEYS: usize = 50;

/// A sandbox with `method = "agency"` against a metadata stand-in started with `meta`, whose
/// CodeArts stand-in verifies signatures made with the metadata stand-in's keys.
fn agency_sandbox(meta: MetadataConfig) -> (Sandbox, MetadataStub) {
    let metadata = MetadataStub::start_background(meta).expect("metadata stand-in starts");
    let mut config = StubConfig::new(DOMAIN);
    config.auth = StubAuth::aksk(metadata::accepted_keys(KEYS));
    let mut s = Sandbox::with_stub_config(config);
    s.auth = format!(
        "method = \"agency\"\nmetadata_endpoint = \"{}\"",
        metadata.endpoint()
    );
    (s, metadata)
}

/// Credentials due for renewal `after` they are issued.
fn due_after(after: Duration) -> MetadataConfig {
    MetadataConfig {
        lifetime: AGENCY_RENEW_BEFORE + after,
        ..MetadataConfig::default()
    }
}

/// Which of the metadata stand-in's credentials signed an accepted upload (1-based), checking
/// that its security token is the one issued with that key.
fn credential_of(record: &UploadRecord) -> usize {
    assert!(record.accepted, "{record:?}");
    let AuthKind::Signed { access_key } = &record.auth else {
        panic!("not signed: {record:?}");
    };
    let n = (1..=KEYS)
        .find(|n| metadata::access_key(*n) == *access_key)
        .unwrap_or_else(|| panic!("unknown key: {record:?}"));
    assert_eq!(
        record.security_token.as_deref(),
        Some(metadata::security_token(n).as_str()),
        "the security token must travel with its key"
    );
    n
}

/// The credential that signed the accepted upload of `plugin_name`.
fn credential_for(s: &Sandbox, plugin_name: &str) -> usize {
    let uploads = s.stub.uploads();
    let record = uploads
        .iter()
        .find(|u| u.plugin_name.as_deref() == Some(plugin_name))
        .unwrap_or_else(|| panic!("no upload of {plugin_name}"));
    credential_of(record)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn uploads_are_signed_with_the_agencys_keys_and_renewed_before_expiry() {
    let (s, meta) = agency_sandbox(due_after(Duration::from_secs(3)));
    let daemon = s.start();
    // Nothing is fetched before an upload needs it.
    assert_eq!(meta.key_requests(), 0);
    s.drop_named("first", "Build");
    s.drop_named("second", "Deploy");
    s.wait_until("two files in done", Some(&daemon), || {
        s.files("done").len() == 2
    });
    assert_eq!(credential_for(&s, "first"), 1);
    assert_eq!(credential_for(&s, "second"), 1);
    assert_eq!(meta.credentials_issued(), 1, "{}", daemon.log());

    // Past the renewal point (40 minutes before expires_at), well before expiry.
    std::thread::sleep(Duration::from_millis(3500));
    s.drop_named("third", "Test");
    s.wait_until("the third file in done", Some(&daemon), || {
        s.files("done").len() == 3
    });
    assert_eq!(credential_for(&s, "third"), 2, "{}", daemon.log());
    assert_eq!(meta.credentials_issued(), 2);
    // The metadata token lives six hours: one was enough.
    assert_eq!(meta.tokens_issued(), 1);
    assert_eq!(meta.requested_ttls(), ["21600"]);
    for name in s.files("done") {
        assert_eq!(s.report("done", &name)["attempts"], 1, "{name}");
    }
    assert!(s.files("failed").is_empty());
    assert!(!daemon.log().contains("uploads wait"), "{}", daemon.log());
}

#[test]
fn an_upload_in_flight_keeps_the_credentials_it_started_with() {
    let (s, meta) = agency_sandbox(due_after(Duration::from_millis(1500)));
    // The first upload is still in flight when the credentials are renewed.
    s.faults([Fault::Delay(Duration::from_secs(3))]);
    let daemon = s.start();
    s.drop_named("slow", "Build");
    s.wait_until("the slow upload in flight", Some(&daemon), || {
        s.stub.uploads_started() == 1
    });
    std::thread::sleep(Duration::from_millis(1700));
    s.drop_named("quick", "Build");
    s.wait_until("both in done", Some(&daemon), || s.files("done").len() == 2);
    assert_eq!(credential_for(&s, "slow"), 1, "{}", daemon.log());
    assert_eq!(credential_for(&s, "quick"), 2, "{}", daemon.log());
    assert_eq!(meta.credentials_issued(), 2);
    assert_eq!(s.requests().len(), 2, "nothing was sent twice");
    for name in s.files("done") {
        assert_eq!(s.report("done", &name)["attempts"], 1, "{name}");
    }
}

#[test]
fn an_expired_metadata_token_is_fetched_again_once() {
    let (s, meta) = agency_sandbox(due_after(Duration::from_secs(2)));
    let daemon = s.start();
    s.drop_named("before", "Build");
    s.wait_until("the first file in done", Some(&daemon), || {
        s.files("done").len() == 1
    });
    meta.expire_tokens();
    std::thread::sleep(Duration::from_millis(2500));
    s.drop_named("after", "Build");
    s.wait_until("the second file in done", Some(&daemon), || {
        s.files("done").len() == 2
    });
    assert_eq!(credential_for(&s, "after"), 2);
    // The renewal: 401 with the old token, one new token, the request once more.
    assert_eq!(meta.tokens_issued(), 2, "{}", daemon.log());
    assert_eq!(meta.key_requests(), 3, "{}", daemon.log());
    assert!(s.files("failed").is_empty());
}

#[test]
fn a_service_without_metadata_tokens_still_works() {
    let (s, meta) = agency_sandbox(MetadataConfig {
        tokens: false,
        ..MetadataConfig::default()
    });
    s.drop_named("tokenless", "Gate");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(s.files("done"), ["tokenless__Gate.zip"]);
    assert_eq!(credential_for(&s, "tokenless"), 1);
    assert_eq!(meta.tokens_issued(), 0);
    assert_eq!(meta.token_requests(), 1);
}

#[test]
fn credentials_the_server_refuses_are_renewed_at_no_cost() {
    let (s, meta) = agency_sandbox(MetadataConfig::default());
    // The first key is refused (revoked, say); the next one is accepted.
    s.stub
        .set_auth(StubAuth::aksk(metadata::accepted_keys(KEYS).split_off(1)));
    s.drop_named("refused_once", "Build");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(credential_for(&s, "refused_once"), 2);
    assert_eq!(meta.credentials_issued(), 2);
    assert_eq!(s.requests().len(), 2);
    assert_eq!(s.report("done", "refused_once__Build.zip")["attempts"], 1);
}

#[test]
fn no_agency_leaves_files_waiting_with_one_log_line() {
    let (s, meta) = agency_sandbox(MetadataConfig {
        agency: false,
        ..MetadataConfig::default()
    });
    let daemon = s.start();
    for i in 0..3 {
        s.drop_named(&format!("waiting{i}"), "Build");
    }
    daemon.wait_for_log("no cloud service agency");
    // Several rounds of waiting (retry.max_delay is 200 ms here; the failure is shared for
    // five seconds, so the metadata service sees few requests).
    std::thread::sleep(Duration::from_secs(3));
    let log = daemon.log();
    assert_eq!(
        log.matches("no cloud service agency").count(),
        1,
        "said more than once:\n{log}"
    );
    assert!(s.files("failed").is_empty(), "{log}");
    assert!(s.files("done").is_empty(), "{log}");
    assert!(s.requests().is_empty(), "nothing is sent unsigned:\n{log}");
    assert!(meta.key_requests() <= 2, "{} requests", meta.key_requests());

    // `status` says why; `check --online` fails with the same sentence.
    let (out, _) = text(&s.run(&["status"]));
    assert!(
        out.contains("credentials: none: this ECS instance has no cloud service agency"),
        "{out}"
    );
    let check = s.run(&["check", "--online"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(text(&check).1.contains("no cloud service agency"));

    // Attaching an agency needs no restart: the waiting files go.
    meta.set_agency(true);
    s.wait_until("all three in done", Some(&daemon), || {
        s.files("done").len() == 3
    });
    assert!(s.files("failed").is_empty());
    daemon.wait_for_log("the credentials work again");
}

#[test]
fn no_agency_in_once_leaves_the_file_claimed() {
    let (s, _meta) = agency_sandbox(MetadataConfig {
        agency: false,
        ..MetadataConfig::default()
    });
    s.drop_named("claimed", "Build");
    let (code, log) = s.once();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("no cloud service agency"), "{log}");
    assert!(s.files("failed").is_empty());
    assert_eq!(s.claims(), 1);
}

#[test]
fn check_online_and_status_show_the_agency_and_its_expiry() {
    let (s, meta) = agency_sandbox(MetadataConfig::default());
    let out = s.run(&["check", "--online"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("auth agency"), "{stdout}");
    assert!(
        stdout.contains(
            "credentials: temporary AK/SK (cloud service agency) with access key AGEN…0001"
        ),
        "{stdout}"
    );
    assert!(stdout.contains(", expires 20"), "{stdout}");
    assert!(
        stdout.contains("accepted the agency credentials"),
        "{stdout}"
    );
    assert!(s.stub.uploads().is_empty());

    let (stdout, _) = text(&s.run(&["status"]));
    assert!(stdout.contains("extensions: 0 waiting"), "{stdout}");
    assert!(
        stdout.contains("credentials: temporary AK/SK") && stdout.contains(", expires 20"),
        "{stdout}"
    );
    // --json stays the list of watches that scripts parse.
    let (json, _) = text(&s.run(&["status", "--json"]));
    assert!(
        serde_json::from_str::<serde_json::Value>(&json)
            .expect("JSON")
            .is_array()
    );
    assert_eq!(meta.credentials_issued(), 2);
}

#[test]
fn no_temporary_secret_in_any_output_at_debug_level() {
    let (mut s, meta) = agency_sandbox(due_after(Duration::from_secs(2)));
    s.env = vec![("RUST_LOG".to_owned(), "debug".to_owned())];
    let mut outputs: Vec<(String, String)> = Vec::new();
    for args in [&["check", "--online"][..], &["status"][..]] {
        let (stdout, stderr) = text(&s.run(args));
        outputs.push((format!("{args:?} stdout"), stdout));
        outputs.push((format!("{args:?} stderr"), stderr));
    }
    let daemon = s.start();
    s.drop_named("one", "Build");
    s.wait_until("one in done", Some(&daemon), || s.files("done").len() == 1);
    meta.expire_tokens();
    std::thread::sleep(Duration::from_millis(2500));
    s.drop_named("two", "Build");
    s.wait_until("two in done", Some(&daemon), || s.files("done").len() == 2);
    meta.set_agency(false);
    std::thread::sleep(Duration::from_millis(2500));
    s.drop_named("three", "Build");
    daemon.wait_for_log("no cloud service agency");
    let log = daemon.log();
    assert!(log.contains("DEBUG"), "the log is at debug level:\n{log}");
    outputs.push(("daemon log".to_owned(), log));
    for entry in walk(s.root()) {
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap_or_default()).into_owned();
        outputs.push((entry.display().to_string(), text));
    }
    assert!(
        outputs
            .iter()
            .any(|(what, _)| what.ends_with(".result.json"))
    );

    let issued = meta.credentials_issued();
    assert!(issued >= 3, "{issued}");
    let mut secrets = Vec::new();
    for n in 1..=issued {
        secrets.extend([
            metadata::access_key(n),
            metadata::secret_key(n),
            metadata::security_token(n),
        ]);
    }
    for (what, text) in &outputs {
        // Metadata tokens, secret keys and security tokens all carry this mark.
        assert!(
            !text.contains("never-print-me"),
            "{what} shows a secret:\n{text}"
        );
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} shows {secret}:\n{text}"
            );
        }
    }
}

/// Every file under `dir` except claimed payloads (the packages themselves).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_none_or(|e| e != "zip")
                && path.file_name().is_some_and(|n| n != "file")
            {
                found.push(path);
            }
        }
    }
    found
}

/// The shipped unit's sandbox must keep the ECS metadata service (169.254.169.254) reachable:
/// IPv4 sockets allowed, no private network, and any address deny list allowing it.
#[test]
fn the_systemd_unit_lets_the_daemon_reach_the_metadata_service() {
    let unit = include_str!("../systemd/extdrop.service");
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let values = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect()
    };
    let families = values("RestrictAddressFamilies").join(" ");
    assert!(
        families.split_whitespace().any(|f| f == "AF_INET") && !families.starts_with('~'),
        "{families}"
    );
    assert!(values("PrivateNetwork").iter().all(|v| *v == "no"));
    if !values("IPAddressDeny").is_empty() {
        let allowed = values("IPAddressAllow").join(" ");
        assert!(
            allowed.contains("169.254.169.254") || allowed.contains("link-local"),
            "IPAddressDeny without allowing the metadata service: {allowed}"
        );
    }
}
