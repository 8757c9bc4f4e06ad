//! Credentials that last: IAM password tokens renewed while files keep coming, one IAM request
//! for many waiting uploads, AK/SK signatures checked by the stand-in's verifier, a wrong
//! password that fails no file, clock skew named as such, `check --online`, and secrets that
//! never reach any output.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use extdrop::stub::{
    AuthKind, DEFAULT_DOMAIN_NAME, DEFAULT_PASSWORD, DEFAULT_USER, StubAuth, StubConfig,
};

use crate::harness::{DOMAIN, Sandbox, TOKEN};

const ACCESS_KEY: &str = "AKTESTEXTDROP0000001";
const SECRET_KEY: &str = "sk-Zq8vX2-never-print-me";
const SECURITY_TOKEN: &str = "st-temporary-never-print-me";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A sandbox whose `[auth]` uses `method = "password"` with the stand-in as IAM, tokens living
/// `lifetime`, and the password in the file `password` (holding `password`).
fn password_sandbox(lifetime: Duration, password: &str) -> Sandbox {
    let mut config = StubConfig::new(DOMAIN);
    config.token_lifetime = lifetime;
    let mut s = Sandbox::with_stub_config(config);
    std::fs::write(s.path("password"), format!("{password}\n")).expect("password file");
    s.auth = format!(
        "method = \"password\"\niam_endpoint = \"{}\"\nuser_name = \"{DEFAULT_USER}\"\ndomain_name = \"{DEFAULT_DOMAIN_NAME}\"\npassword_file = \"password\"",
        s.stub.endpoint()
    );
    s
}

/// A sandbox whose stand-in verifies AK/SK signatures made with [`ACCESS_KEY`] and `secret_key`,
/// and whose `[auth]` reads the keys (and [`SECURITY_TOKEN`]) from files.
fn aksk_sandbox(secret_key: &str) -> Sandbox {
    let mut config = StubConfig::new(DOMAIN);
    config.auth = StubAuth::aksk(vec![(ACCESS_KEY.to_owned(), SECRET_KEY.to_owned())]);
    let mut s = Sandbox::with_stub_config(config);
    for (name, value) in [
        ("ak", ACCESS_KEY),
        ("sk", secret_key),
        ("security-token", SECURITY_TOKEN),
    ] {
        std::fs::write(s.path(name), format!("{value}\n")).expect("key file");
    }
    s.auth = "method = \"aksk\"\naccess_key_file = \"ak\"\nsecret_key_file = \"sk\"\nsecurity_token_file = \"security-token\"".to_owned();
    s
}

/// Every file under `dir`, as text, except claimed payloads.
/// Keeps a command's stdout and stderr for searching.
fn record(outputs: &mut Vec<(String, String)>, what: &str, out: &Output) {
    outputs.push((format!("{what} stdout"), stdout(out)));
    outputs.push((format!("{what} stderr"), stderr(out)));
}

fn texts_under(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "file") {
                let text =
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
                found.push((path.display().to_string(), text));
            }
        }
    }
    found
}

#[test]
fn password_tokens_are_renewed_while_files_keep_coming() {
    let s = password_sandbox(Duration::from_secs(2), DEFAULT_PASSWORD);
    let daemon = s.start();
    // One file every half second for ten seconds: five token lifetimes.
    for i in 0..20 {
        s.drop_named(&format!("steady{i:02}"), "Build");
        std::thread::sleep(Duration::from_millis(500));
    }
    s.wait_until("all twenty files in done", Some(&daemon), || {
        s.files("done").len() == 20
    });
    assert!(s.files("failed").is_empty(), "{}", daemon.log());
    assert!(
        s.stub.tokens_issued() >= 3,
        "only {} tokens issued",
        s.stub.tokens_issued()
    );
    for name in s.files("done") {
        let report = s.report("done", &name);
        assert_eq!(report["attempts"], 1, "{name}: {report}");
    }
    assert!(
        !daemon
            .log()
            .contains("uploads wait until the credentials work"),
        "{}",
        daemon.log()
    );
}

#[test]
fn twenty_uploads_waiting_on_an_expired_token_make_one_iam_request() {
    let lifetime = Duration::from_secs(5);
    let mut s = password_sandbox(lifetime, DEFAULT_PASSWORD);
    s.upload = "concurrency = 20".to_owned();
    let daemon = s.start();
    s.drop_named("warmup", "Build");
    s.wait_until("the first file in done", Some(&daemon), || {
        s.files("done").len() == 1
    });
    assert_eq!(s.stub.iam_requests(), 1);

    // The daemon asks IAM only when an upload needs a token, so waiting a whole lifetime
    // leaves the cached token expired.
    let expired = Instant::now() + lifetime;
    s.wait_until("the token to expire", Some(&daemon), || {
        Instant::now() >= expired
    });
    for i in 0..20 {
        s.drop_named(&format!("burst{i:02}"), "Deploy");
    }
    s.wait_until("all twenty in done", Some(&daemon), || {
        s.files("done").len() == 21
    });
    assert_eq!(s.stub.iam_requests(), 2, "{}", daemon.log());
    assert_eq!(s.stub.tokens_issued(), 2);
    let statuses: Vec<_> = s.requests().iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|st| *st == Some(200)), "{statuses:?}");
}

#[test]
fn aksk_uploads_are_accepted_by_the_stand_ins_verifier() {
    let mut s = aksk_sandbox(SECRET_KEY);
    // The keys from systemd credentials, the security token from the environment.
    let credentials = s.path("credentials");
    std::fs::create_dir(&credentials).expect("credentials dir");
    std::fs::write(credentials.join("access_key"), ACCESS_KEY).expect("ak");
    std::fs::write(credentials.join("secret_key"), SECRET_KEY).expect("sk");
    s.auth = "method = \"aksk\"".to_owned();
    s.env = vec![
        (
            "CREDENTIALS_DIRECTORY".to_owned(),
            credentials.display().to_string(),
        ),
        (
            "EXTDROP_SECURITY_TOKEN".to_owned(),
            SECURITY_TOKEN.to_owned(),
        ),
    ];
    s.drop_named("signed", "Build");
    s.drop_named("also_signed", "Gate");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        s.files("done"),
        ["also_signed__Gate.zip", "signed__Build.zip"]
    );
    let requests = s.requests();
    assert_eq!(requests.len(), 2);
    for request in requests {
        assert!(request.accepted, "{request:?}");
        assert_eq!(
            request.auth,
            AuthKind::Signed {
                access_key: ACCESS_KEY.to_owned()
            }
        );
        assert_eq!(request.security_token.as_deref(), Some(SECURITY_TOKEN));
    }

    // Keys from files, no security token.
    let mut s = aksk_sandbox(SECRET_KEY);
    s.auth = "method = \"aksk\"\naccess_key_file = \"ak\"\nsecret_key_file = \"sk\"".to_owned();
    s.drop_named("from_files", "Test");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(s.requests()[0].security_token, None);
    assert!(s.requests()[0].accepted);
}

#[test]
fn keys_the_verifier_refuses_fail_no_file() {
    let s = aksk_sandbox("sk-not-the-right-one");
    s.drop_named("refused", "Build");
    // `once` cannot wait for an operator: the file stays claimed for the next run.
    let (code, log) = s.once();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("verify aksk signature fail"), "{log}");
    assert!(log.contains("stay claimed"), "{log}");
    assert!(s.files("failed").is_empty());
    assert_eq!(s.claims(), 1);

    std::fs::write(s.path("sk"), SECRET_KEY).expect("fix the key");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(s.files("done"), ["refused__Build.zip"]);
    assert_eq!(s.report("done", "refused__Build.zip")["attempts"], 1);
}

#[test]
fn a_wrong_password_is_logged_once_and_fails_no_file() {
    let wrong = "wrong-password-Zq8";
    let s = password_sandbox(Duration::from_secs(3600), wrong);
    let daemon = s.start();
    for name in ["one", "two", "three"] {
        s.drop_named(name, "Build");
    }
    daemon.wait_for_log("refused a token");
    // IAM asked again after the failure pause: the files keep trying, quietly.
    s.wait_until("a second IAM request", Some(&daemon), || {
        s.stub.iam_requests() >= 2
    });
    s.wait_until("all three claimed", Some(&daemon), || s.claims() == 3);
    let refusals = |log: &str| {
        log.lines()
            .filter(|l| l.contains("refused a token"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let log = daemon.log();
    let lines = refusals(&log);
    assert_eq!(lines.len(), 1, "{log}");
    let line = &lines[0];
    assert!(line.contains(&format!("user {DEFAULT_USER}")), "{line}");
    assert!(line.contains(&s.stub.endpoint()), "{line}");
    assert!(
        line.contains("The username or password is wrong."),
        "{line}"
    );
    assert!(!log.contains(wrong), "{log}");
    assert!(s.files("failed").is_empty());
    assert_eq!(s.stub.tokens_issued(), 0);

    // The password file is read again for each token request: fixing it is enough.
    std::fs::write(s.path("password"), DEFAULT_PASSWORD).expect("fix the password");
    s.wait_until("all three in done", Some(&daemon), || {
        s.files("done").len() == 3
    });
    daemon.wait_for_log("the credentials work again");
    assert_eq!(refusals(&daemon.log()).len(), 1, "{}", daemon.log());
    assert!(s.files("failed").is_empty());
    for name in s.files("done") {
        assert_eq!(s.report("done", &name)["attempts"], 1);
    }
}

#[test]
fn clock_skew_is_named_as_such() {
    let s = aksk_sandbox(SECRET_KEY);
    s.stub.set_clock_offset(Duration::from_secs(20 * 60), true);
    s.drop_named("skewed", "Build");
    let (code, log) = s.once();
    assert_eq!(code, 2, "{log}");
    let report = s.report("failed", "skewed__Build.zip");
    let reason = report["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with(
            "the server says this machine's clock is off (clock skew): sync it with NTP/chrony"
        ),
        "{reason}"
    );
    assert!(reason.contains("signature expired"), "{reason}");
    assert_eq!(report["http_status"], 401);
    assert_eq!(report["attempts"], 5, "retried as transient");
    assert!(log.contains("clock skew"), "{log}");

    let out = s.run(&["check", "--online"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("clock skew"), "{}", stderr(&out));
}

#[test]
fn check_warns_about_an_inline_token_others_can_read() {
    let mut s = Sandbox::new();
    s.auth = format!("token = \"{TOKEN}\"");
    let config = s.write_config();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = s.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("readable by other users"), "{err}");
    assert!(err.contains("mode 644"), "{err}");
    assert!(
        !err.contains(TOKEN) && !stdout(&out).contains(TOKEN),
        "{err}"
    );

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = s.run(&["check"]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));

    // A token in a file is not the config's business.
    std::fs::write(s.path("token"), TOKEN).expect("token file");
    s.auth = "token_file = \"token\"".to_owned();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = s.run(&["check"]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn check_online_proves_each_method_without_uploading() {
    // password: a token from IAM, then the endpoint accepts it.
    let s = password_sandbox(Duration::from_secs(3600), DEFAULT_PASSWORD);
    let out = s.run(&["check", "--online"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "credentials: IAM token for user {DEFAULT_USER} in domain {DEFAULT_DOMAIN_NAME} obtained from {}",
            s.stub.endpoint()
        )),
        "{text}"
    );
    assert!(text.contains("accepted the password credentials"), "{text}");
    assert!(text.contains("nothing was uploaded"), "{text}");
    assert_eq!(s.stub.tokens_issued(), 1);
    assert!(s.stub.uploads().is_empty());

    let s = password_sandbox(Duration::from_secs(3600), "not-the-password");
    let out = s.run(&["check", "--online"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "IAM at {} refused a token for user {DEFAULT_USER}",
            s.stub.endpoint()
        )),
        "{err}"
    );
    assert!(!err.contains("not-the-password"), "{err}");

    // aksk: a signed request the stand-in verifies.
    let s = aksk_sandbox(SECRET_KEY);
    let out = s.run(&["check", "--online"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("AK/SK signing"), "{text}");
    assert!(text.contains("accepted the aksk credentials"), "{text}");
    assert!(s.stub.uploads().is_empty());
    assert_eq!(s.requests()[0].status, Some(400));

    let s = aksk_sandbox("sk-wrong");
    let out = s.run(&["check", "--online"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("refused the aksk credentials"), "{err}");
    assert!(err.contains("verify aksk signature fail"), "{err}");

    // token: the endpoint judges it as well.
    let mut s = Sandbox::new();
    let out = s.run(&["check", "--online"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("accepted the token credentials"));
    s.auth = "token = \"expired-token\"".to_owned();
    let out = s.run(&["check", "--online"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("refused the token credentials"));
    assert!(s.stub.uploads().is_empty());
}

#[test]
fn secrets_never_reach_any_output() {
    let password = "pw-Zq8vX2-never-print-me";
    let token = "tok-Zq8vX2-never-print-me";
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut issued = Vec::new();

    // password: check, check --online, once; then a wrong password, files left claimed.
    let mut config = StubConfig::new(DOMAIN);
    config.users[0].password = password.to_owned();
    let mut s = Sandbox::with_stub_config(config);
    std::fs::write(s.path("password"), password).expect("password");
    s.auth = format!(
        "method = \"password\"\niam_endpoint = \"{}\"\nuser_name = \"{DEFAULT_USER}\"\ndomain_name = \"{DEFAULT_DOMAIN_NAME}\"\npassword_file = \"password\"",
        s.stub.endpoint()
    );
    record(&mut outputs, "password check", &s.run(&["check"]));
    record(
        &mut outputs,
        "password check --online",
        &s.run(&["check", "--online"]),
    );
    s.drop_named("pw_ok", "Build");
    record(&mut outputs, "password once", &s.run(&["once"]));
    std::fs::write(s.path("password"), format!("{password}-changed")).expect("password");
    s.drop_named("pw_waiting", "Build");
    let out = s.run(&["once"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    record(&mut outputs, "password once, wrong password", &out);
    assert_eq!(s.claims(), 1);
    outputs.extend(
        texts_under(s.root())
            .into_iter()
            .filter(|(p, _)| !p.ends_with("/password")),
    );
    issued.extend(s.stub.issued_tokens());
    assert!(!issued.is_empty());

    // aksk with a security token: check --online, once, and a refused signature's report.
    let s = aksk_sandbox(SECRET_KEY);
    record(&mut outputs, "aksk check", &s.run(&["check"]));
    record(
        &mut outputs,
        "aksk check --online",
        &s.run(&["check", "--online"]),
    );
    s.drop_named("signed", "Build");
    record(&mut outputs, "aksk once", &s.run(&["once"]));
    s.stub.set_clock_offset(Duration::from_secs(3600), false);
    s.drop_named("skewed", "Build");
    record(&mut outputs, "aksk once, skewed", &s.run(&["once"]));
    assert_eq!(s.files("failed"), ["skewed__Build.zip"]);
    outputs.extend(texts_under(s.root()).into_iter().filter(|(p, _)| {
        !["/ak", "/sk", "/security-token"]
            .iter()
            .any(|key| p.ends_with(key))
    }));

    // token from the environment.
    let mut config = StubConfig::new(DOMAIN);
    config.auth = StubAuth::Tokens(vec![token.to_owned()]);
    let mut s = Sandbox::with_stub_config(config);
    s.auth = String::new();
    s.env = vec![("EXTDROP_TOKEN".to_owned(), token.to_owned())];
    record(
        &mut outputs,
        "token check --online",
        &s.run(&["check", "--online"]),
    );
    s.drop_named("tok", "Build");
    record(&mut outputs, "token once", &s.run(&["once"]));
    s.stub.set_tokens(vec!["rotated".to_owned()]);
    s.drop_named("tok_refused", "Build");
    record(&mut outputs, "token once, refused", &s.run(&["once"]));
    outputs.extend(texts_under(s.root()));

    assert!(
        outputs
            .iter()
            .any(|(what, text)| what.contains("result.json") && text.contains("sha256")),
        "reports were searched"
    );
    assert!(
        outputs.iter().any(|(what, _)| what.ends_with("claim.json")),
        "claim records were searched"
    );
    let mut secrets = vec![password, SECRET_KEY, SECURITY_TOKEN, ACCESS_KEY, token];
    secrets.extend(issued.iter().map(String::as_str));
    for (what, text) in &outputs {
        for secret in &secrets {
            assert!(
                !text.contains(secret),
                "{what} shows the secret {secret:?}:\n{text}"
            );
        }
    }
}

/// SPEC §7: the official SDK's variables work for `aksk` when extdrop's own are absent.
#[test]
fn the_sdks_environment_names_are_picked_up() {
    let mut s = aksk_sandbox(SECRET_KEY);
    s.auth = "method = \"aksk\"".to_owned();
    s.env = vec![
        ("HUAWEICLOUD_SDK_AK".to_owned(), ACCESS_KEY.to_owned()),
        ("HUAWEICLOUD_SDK_SK".to_owned(), SECRET_KEY.to_owned()),
        (
            "HUAWEICLOUD_SDK_SECURITY_TOKEN".to_owned(),
            SECURITY_TOKEN.to_owned(),
        ),
    ];
    let out = s.run(&["check", "--online"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("environment variable HUAWEICLOUD_SDK_AK"),
        "{}",
        stdout(&out)
    );
    s.drop_named("sdk_names", "Build");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(s.files("done"), ["sdk_names__Build.zip"]);
    let request = s.stub.uploads().pop().expect("one upload");
    assert!(request.accepted, "{request:?}");
    assert_eq!(
        request.auth,
        AuthKind::Signed {
            access_key: ACCESS_KEY.to_owned()
        }
    );
    assert_eq!(request.security_token.as_deref(), Some(SECURITY_TOKEN));

    // extdrop's own variable wins over the SDK's: a wrong SDK key is not used.
    s.env = vec![
        ("EXTDROP_ACCESS_KEY".to_owned(), ACCESS_KEY.to_owned()),
        ("EXTDROP_SECRET_KEY".to_owned(), SECRET_KEY.to_owned()),
        (
            "HUAWEICLOUD_SDK_AK".to_owned(),
            "AKNOTTHISONE0000000".to_owned(),
        ),
        (
            "HUAWEICLOUD_SDK_SK".to_owned(),
            "sk-not-this-one".to_owned(),
        ),
    ];
    s.drop_named("own_names", "Build");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(s.files("done").len(), 2);
}
