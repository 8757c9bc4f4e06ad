//! How the server's answers are judged: permanent refusals, transient failures with backoff,
//! throttling, `false`, and expired tokens.

use std::time::Duration;

use extdrop::stub::Fault;

use crate::harness::{Sandbox, TOKEN};

fn status(code: u16, error_code: &str, error_msg: &str) -> Fault {
    Fault::Status {
        status: code,
        error_code: error_code.to_owned(),
        error_msg: error_msg.to_owned(),
        retry_after: None,
    }
}

#[test]
fn bad_request_fails_after_one_attempt_with_the_servers_words() {
    let s = Sandbox::new();
    s.faults([status(
        400,
        "DEVPIPE.00011104",
        "the extension version already exists",
    )]);
    s.drop_named("refused", "Build");
    let (code, _) = s.once();
    assert_eq!(code, 2);
    assert_eq!(s.requests().len(), 1);
    let report = s.report("failed", "refused__Build.zip");
    assert_eq!(report["attempts"], 1);
    assert_eq!(report["http_status"], 400);
    assert_eq!(report["error_code"], "DEVPIPE.00011104");
    assert_eq!(report["error_msg"], "the extension version already exists");
    assert!(
        report["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("400")
    );
    assert_eq!(report["request_id"].as_str().map(str::len), Some(32));
}

#[test]
fn server_errors_are_retried_until_success() {
    let s = Sandbox::new();
    s.faults([status(500, "X.500", "boom"), status(503, "X.503", "busy")]);
    s.drop_named("flaky", "Deploy");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    let report = s.report("done", "flaky__Deploy.zip");
    assert_eq!(report["attempts"], 3);
    assert_eq!(report["http_status"], 200);
    assert_eq!(s.requests().len(), 3);
}

#[test]
fn retries_stop_at_max_attempts() {
    let s = Sandbox::new();
    s.faults((0..5).map(|_| status(502, "X.502", "bad gateway")));
    s.drop_named("doomed", "Deploy");
    let (code, _) = s.once();
    assert_eq!(code, 2);
    let report = s.report("failed", "doomed__Deploy.zip");
    assert_eq!(report["attempts"], 5);
    assert_eq!(report["http_status"], 502);
    let reason = report["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("502") && reason.contains("max_attempts"),
        "{reason}"
    );
}

#[test]
fn a_false_body_is_never_done() {
    let s = Sandbox::new();
    s.faults([Fault::False]);
    s.drop_named("denied", "Gate");
    let (code, _) = s.once();
    assert_eq!(code, 2);
    assert!(s.files("done").is_empty());
    let report = s.report("failed", "denied__Gate.zip");
    assert_eq!(report["http_status"], 200);
    assert!(
        report["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("false")
    );
}

/// A redirect is an answer, never followed: a POST turned into a bodiless GET could not
/// upload anything, and the token would go to whichever host `Location` names. Each status
/// that reqwest would follow, each to a listener of its own that must see no connection.
#[test]
fn a_redirect_is_refused_and_never_followed() {
    for code in [301, 302, 303, 307, 308] {
        let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").expect("bind elsewhere");
        elsewhere.set_nonblocking(true).expect("non-blocking");
        let location = format!(
            "http://{}/v3/elsewhere/extension/upload",
            elsewhere.local_addr().expect("address")
        );
        let s = Sandbox::new();
        s.faults([Fault::Redirect {
            status: code,
            location,
        }]);
        s.drop_named("moved", "Build");
        let (exit, log) = s.once();
        assert_eq!(exit, 2, "{code}: {log}");
        assert_eq!(s.requests().len(), 1, "{code}: retried or followed");
        let report = s.report("failed", "moved__Build.zip");
        assert_eq!(report["http_status"], code);
        assert_eq!(report["attempts"], 1);
        let reason = report["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(&code.to_string()), "{code}: {reason}");
        // The run is over: a followed redirect would have left its connection queued here.
        match elsewhere.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("{code}: the redirect was followed (from {peer})"),
            Err(e) => panic!("{code}: accept: {e}"),
        }
    }
}

#[test]
fn throttling_honours_retry_after() {
    let s = Sandbox::new();
    s.faults([Fault::throttled("1")]);
    s.drop_named("throttled", "Build");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    let requests = s.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].status, Some(429));
    let waited = requests[1]
        .received
        .duration_since(requests[0].answered.unwrap_or(requests[0].received));
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    assert_eq!(s.report("done", "throttled__Build.zip")["attempts"], 2);
}

#[test]
fn dropped_connections_are_transient() {
    let s = Sandbox::new();
    s.faults([Fault::Drop]);
    s.drop_named("dropped", "Build");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(s.report("done", "dropped__Build.zip")["attempts"], 2);
}

#[test]
fn a_rotated_token_file_is_read_again_after_401() {
    let mut s = Sandbox::new();
    let token_file = s.path("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    s.auth = format!("token_file = \"{}\"", token_file.display());
    let daemon = s.start();
    s.drop_named("first", "Build");
    s.wait_until("first in done", Some(&daemon), || {
        s.files("done").len() == 1
    });

    // The token is rotated: the server only accepts the new one, the file holds it.
    s.stub.set_tokens(vec!["rotated-token".to_owned()]);
    std::fs::write(&token_file, "rotated-token\n").expect("token");
    s.drop_named("second", "Build");
    s.wait_until("second in done", Some(&daemon), || {
        s.files("done").len() == 2
    });
    let report = s.report("done", "second__Build.zip");
    assert_eq!(report["attempts"], 1, "the 401 retry is free");
    let statuses: Vec<_> = s.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(200), Some(401), Some(200)]);
}

#[test]
fn request_timeouts_408_are_retried() {
    let s = Sandbox::new();
    s.faults([Fault::status(408)]);
    s.drop_named("slowpoke", "Build");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(s.report("done", "slowpoke__Build.zip")["attempts"], 2);
}

#[test]
fn retries_stop_at_max_elapsed() {
    let mut s = Sandbox::new();
    s.retry = "initial_delay = \"300ms\"\nmax_delay = \"300ms\"\njitter = 0.0\nmax_attempts = 100\nmax_elapsed = \"1s\"".to_owned();
    s.faults((0..20).map(|_| Fault::status(503)));
    s.drop_named("patience", "Build");
    let (code, _) = s.once();
    assert_eq!(code, 2);
    let report = s.report("failed", "patience__Build.zip");
    let reason = report["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("max_elapsed"), "{reason}");
    let attempts = report["attempts"].as_u64().unwrap_or(0);
    assert!(
        (2..=5).contains(&attempts),
        "about 1 s of 300 ms waits: {attempts}"
    );
}
