//! Faults, injected on purpose: an endpoint that is down and comes back, answers slower than
//! `request_timeout`, a connection cut in the middle of the body, every kind of error status,
//! and a `done` folder that is full or read-only. Each ends the way an operator expects: the
//! file waits or retries and lands once, or fails with the server's reason — never lost.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use extdrop::stub::{Fault, Stub, StubAuth, StubConfig};

use crate::harness::{DOMAIN, Sandbox, TOKEN};

/// A loopback port nobody listens on (for now).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[test]
fn an_endpoint_down_then_back_gets_the_file_once_it_is_back() {
    let mut s = Sandbox::new();
    let port = free_port();
    s.endpoint = Some(format!("http://127.0.0.1:{port}"));
    s.retry = "initial_delay = \"50ms\"\nmax_delay = \"200ms\"\njitter = 0.0\nmax_attempts = 200\nmax_elapsed = \"1m\"".to_owned();
    let daemon = s.start();
    s.drop_named("patient", "Build");
    // One sentence a person reads, not reqwest's chain of wrappers.
    let sentence = format!("cannot connect to 127.0.0.1:{port}: connection refused");
    s.wait_until("a refused connection retried", Some(&daemon), || {
        daemon.log().matches(&sentence).count() >= 2
    });
    assert!(
        !daemon.log().contains("error sending request"),
        "{}",
        daemon.log()
    );
    let mut config = StubConfig::new(DOMAIN);
    config.auth = StubAuth::Tokens(vec![TOKEN.to_owned()]);
    config.port = port;
    let back = Stub::start_background(config).expect("the endpoint comes back");
    s.wait_until("the file in done", Some(&daemon), || {
        s.files("done") == ["patient__Build.zip"]
    });
    assert_eq!(back.uploads().len(), 1);
    let report = s.report("done", "patient__Build.zip");
    assert!(report["attempts"].as_u64().unwrap_or(0) >= 3, "{report}");
}

#[test]
fn an_answer_slower_than_request_timeout_is_retried() {
    let s = Sandbox::new();
    let config = s
        .config_text()
        .replace("request_timeout = \"20s\"", "request_timeout = \"1s\"");
    std::fs::write(s.path("slow.toml"), config).expect("config");
    s.faults([Fault::Delay(Duration::from_secs(5))]);
    s.drop_named("slow", "Build");
    let out = s
        .command(&["once"])
        .arg("-c")
        .arg(s.path("slow.toml"))
        .output()
        .expect("once");
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    let report = s.report("done", "slow__Build.zip");
    assert_eq!(report["attempts"], 2, "{report}");
    assert!(log.contains("did not complete within 1s"), "{log}");
}

#[test]
fn a_connection_cut_in_the_middle_of_the_body_is_retried() {
    let mut s = Sandbox::new();
    s.upload = "concurrency = 1\nvalidate_package = false".to_owned();
    // Large enough that the body is still being sent when the server hangs up.
    let bytes: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    s.drop_bytes("big__Build.zip", &bytes);
    s.faults([Fault::Drop]);
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    let report = s.report("done", "big__Build.zip");
    assert_eq!(report["attempts"], 2, "{report}");
    assert!(
        log.contains("the connection failed during the upload") || log.contains("cannot connect"),
        "{log}"
    );
    let accepted = s.stub.uploads();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].size, Some(bytes.len() as u64));
    // A file this large is hashed beside its send (`upload::HASH_BESIDE_FROM`): the hash of
    // the cut attempt is dropped, the whole one's is the report's, and it is the sent bytes'.
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    assert_eq!(accepted[0].sha256.as_deref(), Some(sha256.as_str()));
    assert_eq!(report["sha256"].as_str(), Some(sha256.as_str()), "{report}");
}

#[test]
fn every_error_status_is_judged_transient_or_permanent() {
    // Transient: retried, then done. Permanent: failed after one attempt, with the status.
    let transient = [408u16, 429, 500, 501, 502, 503, 504, 599];
    let permanent = [204u16, 302, 400, 403, 404, 405, 409, 413, 415, 422, 451];
    for status in transient.iter().chain(&permanent).copied() {
        let s = Sandbox::new();
        s.faults([Fault::status(status)]);
        s.drop_named("judged", "Build");
        let (code, log) = s.once();
        if transient.contains(&status) {
            assert_eq!(code, 0, "{status}: {log}");
            let report = s.report("done", "judged__Build.zip");
            assert_eq!(report["attempts"], 2, "{status}: {report}");
        } else {
            assert_eq!(code, 2, "{status}: {log}");
            let report = s.report("failed", "judged__Build.zip");
            assert_eq!(report["attempts"], 1, "{status}: {report}");
            assert_eq!(report["http_status"], status, "{report}");
            let reason = report["reason"].as_str().unwrap_or_default();
            assert!(reason.contains(&status.to_string()), "{status}: {reason}");
        }
        assert_eq!(s.claims(), 0);
    }
}

/// A small tmpfs mounted over a folder of the sandbox, unmounted when dropped.
struct Tmpfs {
    target: PathBuf,
}

impl Tmpfs {
    /// Mounts, or says why not (the test then skips): it needs root.
    fn mount(target: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(target)
            .output()
            .map_err(|e| format!("mount cannot run: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed (not root?): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            target: target.to_owned(),
        })
    }

    fn remount(&self, options: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.target)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.target).status();
    }
}

#[test]
fn a_full_done_folder_keeps_the_file_until_there_is_room() {
    let mut s = Sandbox::new();
    let done = match Tmpfs::mount(&s.path("done"), "64k") {
        Ok(done) => done,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    s.upload = "concurrency = 2\nvalidate_package = false".to_owned();
    let bytes: Vec<u8> = (0..512 * 1024u32).map(|i| (i % 253) as u8).collect();
    let daemon = s.start();
    s.drop_bytes("roomy__Build.zip", &bytes);
    s.wait_until("the filing refused for lack of room", Some(&daemon), || {
        daemon.log().contains("cannot file")
    });
    assert_eq!(s.stub.uploads().len(), 1, "uploaded once");
    done.remount("size=8m");
    s.wait_until("the file in done", Some(&daemon), || {
        s.files("done") == ["roomy__Build.zip"] && s.claims() == 0
    });
    assert_eq!(
        std::fs::read(s.path("done/roomy__Build.zip")).expect("read"),
        bytes
    );
    assert_eq!(s.report("done", "roomy__Build.zip")["outcome"], "done");
    assert_eq!(
        s.stub.uploads().len(),
        1,
        "never uploaded again while waiting"
    );
    drop(daemon);
}

#[test]
fn a_read_only_done_folder_keeps_the_file_until_it_is_writable() {
    let s = Sandbox::new();
    let done = match Tmpfs::mount(&s.path("done"), "8m") {
        Ok(done) => done,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    done.remount("ro");
    let daemon = s.start();
    s.drop_named("patient", "Build");
    s.wait_until("the filing refused", Some(&daemon), || {
        daemon.log().contains("cannot file")
    });
    done.remount("rw");
    s.wait_until("the file in done", Some(&daemon), || {
        s.files("done") == ["patient__Build.zip"] && s.claims() == 0
    });
    assert_eq!(s.stub.uploads().len(), 1);
    drop(daemon);
}

/// Where Debian's `faketime` package puts the library that fakes the wall clock.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[test]
fn a_clock_stepped_forward_does_not_spend_the_retry_budget() {
    if !Path::new(LIBFAKETIME).exists() {
        eprintln!("skipped: {LIBFAKETIME} is missing (Debian: faketime)");
        return;
    }
    let mut s = Sandbox::new();
    // The wall clock as the daemon sees it: stepped by writing this file; the monotonic clock
    // is left alone, as an NTP step leaves it.
    let offset = s.path("clock-offset");
    std::fs::write(&offset, "+0").expect("offset");
    s.env.extend(
        [
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", offset.to_str().expect("utf-8")),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    s.retry = "initial_delay = \"200ms\"\nmax_delay = \"300ms\"\njitter = 0.0\nmax_attempts = 10\nmax_elapsed = \"1m\"".to_owned();
    s.faults((0..6).map(|_| Fault::status(503)));
    let daemon = s.start();
    s.drop_named("stepped", "Build");
    s.wait_until("the first attempt", Some(&daemon), || {
        s.stub.uploads_started() >= 1
    });
    std::fs::write(&offset, "+3h").expect("step the clock");
    s.wait_until("the file filed", Some(&daemon), || {
        s.files("done").len() + s.files("failed").len() == 1
    });
    assert_eq!(
        s.files("done"),
        ["stepped__Build.zip"],
        "a clock step is not time spent; log:\n{}",
        daemon.log()
    );
    assert_eq!(s.report("done", "stepped__Build.zip")["attempts"], 7);
}

/// Regression: with its stderr closed (journald restarted, a pipe whose reader went away)
/// every log line panicked the thread that wrote it — `tracing`'s fallback for a failed write
/// is `eprintln!` — so handlers "crashed" and a group commit's leader died holding its round,
/// hanging every later claim and the shutdown. The log is lost; nothing else is.
#[test]
fn a_closed_stderr_loses_the_log_not_the_files() {
    let s = Sandbox::new();
    let mut child = s
        .command(&["run"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Read the first line (the daemon is up), then hang up.
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut first).expect("first log line");
    drop(stderr);
    let names: Vec<String> = (0..12).map(|i| format!("quiet{i}")).collect();
    for name in &names {
        s.drop_named(name, "Build");
    }
    s.wait_until("every file filed", None, || {
        s.files("done").len() + s.files("failed").len() == names.len()
    });
    assert_eq!(
        s.files("done").len(),
        names.len(),
        "{:?}",
        s.files("failed")
    );
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon did not stop on SIGTERM with its stderr closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "a clean stop");
}
