//! A newcomer's first steps from a fresh clone (issue 10's rough edges): each test holds one
//! edge that was found, so it cannot come back.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::harness::{PATIENCE, Sandbox};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn extdrop() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_extdrop"));
    cmd.env_remove("EXTDROP_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG");
    cmd
}

/// Waits until `cond` holds, or fails the test naming `what`.
fn wait(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// Stops a demo with Ctrl-C (SIGINT) and returns its exit code.
fn interrupt(mut child: Child) -> Option<i32> {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        assert!(Instant::now() < deadline, "the demo did not stop on SIGINT");
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// Copies a sample into an inbox the way a careful writer does: under another name, then a
/// rename, so the daemon never sees half a file.
/// Starts `extdrop demo ARGS --dir ROOT/demo` (its output in `ROOT/demo.log`) and waits for
/// its banner to say `ready`.
fn start_demo(root: &Path, args: &[&str], ready: &str) -> Child {
    let log = root.join("demo.log");
    let child = extdrop()
        .arg("demo")
        .args(args)
        .arg("--dir")
        .arg(root.join("demo"))
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    wait("the banner", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(ready)
    });
    child
}

fn drop_sample(sandbox: &Path, sample: &str, inbox: &str) {
    let staged = sandbox.join("staging-copy");
    std::fs::copy(sandbox.join("samples").join(sample), &staged).expect("copy");
    std::fs::rename(&staged, sandbox.join(inbox).join(sample)).expect("drop");
}

#[test]
fn demo_refuses_a_config_it_would_ignore() {
    for args in [
        &["-c", "/nonexistent.toml", "demo"][..],
        &["demo", "--config", "/nonexistent.toml"][..],
    ] {
        let out = extdrop().args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--dir"), "{}", stderr(&out));
    }
}

#[test]
fn a_missing_configuration_says_how_to_name_one_or_try_the_demo() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.toml");
    for command in ["check", "status", "once"] {
        let out = extdrop()
            .arg("-c")
            .arg(&missing)
            .arg(command)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{command}");
        let err = stderr(&out);
        for needle in ["-c", "EXTDROP_CONFIG", "extdrop demo", "nope.toml"] {
            assert!(err.contains(needle), "{command}: {needle} missing in {err}");
        }
        assert!(!err.contains("os error"), "{err}");
    }
}

#[test]
fn explain_and_status_exit_1_as_the_table_says() {
    let s = Sandbox::new();
    let out = s.run(&["explain", "--watch", "nope", "a__Build.zip"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = s.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = extdrop()
        .args(["-c", "/nonexistent/config.toml", "status"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn explain_names_the_pattern_that_excluded_a_name() {
    let s = Sandbox::new();
    let out = s.run(&["explain", "a__Build.zip.part", "notes.txt"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("\"a__Build.zip.part\" matches exclude pattern \"*.part\""),
        "{text}"
    );
    assert!(
        text.contains("\"notes.txt\" matches no include pattern (*.zip)"),
        "{text}"
    );
}

#[test]
fn a_file_filed_in_failed_is_logged_at_warn_and_done_at_info() {
    let s = Sandbox::new();
    s.drop_named("good", "Build");
    s.drop_bytes("bad__Build.zip", b"not a zip");
    let (code, log) = s.once();
    assert_eq!(code, 2, "{log}");
    let filed: Vec<&str> = log.lines().filter(|l| l.contains(" filed ")).collect();
    assert_eq!(filed.len(), 2, "{log}");
    for line in filed {
        let level = if line.contains("outcome=\"failed\"") {
            " WARN "
        } else {
            " INFO "
        };
        assert!(line.contains(level), "{line}");
    }
}

#[test]
fn the_demo_config_checks_clean_and_the_stand_in_alone_serves_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sandbox = dir.path().join("demo");
    let child = start_demo(
        dir.path(),
        &["--stand-in-only"],
        "Ctrl-C stops the stand-ins",
    );
    let config = sandbox.join("config.toml");
    // The demo's own configuration is one `check` has nothing to warn about.
    let out = extdrop()
        .arg("-c")
        .arg(&config)
        .arg("check")
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));

    // No daemon holds the inbox: `once` takes the files and ends.
    drop_sample(&sandbox, "demo_task__Deploy.zip", "inbox");
    drop_sample(&sandbox, "wrong_name__Build.zip", "inbox");
    let out = extdrop()
        .arg("-c")
        .arg(&config)
        .arg("once")
        .output()
        .expect("once");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        sandbox
            .join("done/demo_task__Deploy.zip.result.json")
            .exists()
    );
    assert!(
        sandbox
            .join("failed/wrong_name__Build.zip.result.json")
            .exists()
    );
    assert_eq!(interrupt(child), Some(0));
    let out = std::fs::read_to_string(dir.path().join("demo.log")).expect("log");
    assert!(out.contains("1 upload(s) accepted"), "{out}");
}

#[test]
fn the_demo_stop_summary_counts_files_as_status_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sandbox = dir.path().join("demo");
    let child = start_demo(dir.path(), &[], "Ctrl-C stops the demo");
    // A file that fails, is retried and fails again is one failed file, filed twice.
    drop_sample(&sandbox, "wrong_name__Build.zip", "inbox");
    let report = sandbox.join("failed/wrong_name__Build.zip.result.json");
    wait("the bad sample in failed", || report.exists());
    let config = sandbox.join("config.toml");
    let out = extdrop()
        .arg("-c")
        .arg(&config)
        .args(["retry", "--all"])
        .output()
        .expect("retry");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait("the bad sample in failed again", || report.exists());
    let status = extdrop()
        .arg("-c")
        .arg(&config)
        .args(["status"])
        .output()
        .expect("status");
    assert!(
        stdout(&status).contains("demo: 0 waiting, 0 in progress, 0 done, 1 failed"),
        "{}",
        stdout(&status)
    );
    assert_eq!(interrupt(child), Some(0));
    let out = std::fs::read_to_string(dir.path().join("demo.log")).expect("log");
    assert!(out.contains("holds 0 done, 1 failed"), "{out}");
}
