//! The command line around the daemon: check, explain, status, retry.

use crate::harness::Sandbox;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The example's token_file is the service's systemd credential, which a shell never has:
/// `check` says so in a note, not a warning (it used to warn on every run).
#[test]
fn check_accepts_the_example_configuration_without_a_warning() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_extdrop"))
        .args(["check", "--config", example])
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("EXTDROP_TOKEN")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("watch \"extensions\""));
    assert!(stdout(&out).contains("rule 2: regex"));
    assert_eq!(stderr(&out), "", "no warning expected");
    assert!(
        stdout(&out).contains(
            "credentials: /run/credentials/extdrop.service/token is put there by systemd for the running service only"
        ),
        "{}",
        stdout(&out)
    );
}

/// A token file that cannot be read anywhere but under /run/credentials/ is still warned
/// about: nothing but the operator will make it appear.
#[test]
fn check_warns_of_an_unreadable_token_file_elsewhere() {
    let mut s = Sandbox::new();
    let missing = s.path("nowhere/token");
    s.auth = format!(
        "method = \"token\"\ntoken_file = {:?}",
        missing.display().to_string()
    );
    let out = s.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("extdrop: warning: cannot read the"), "{err}");
    assert!(err.contains("nowhere/token"), "{err}");
    assert!(!stdout(&out).contains("credentials:"), "{}", stdout(&out));
}

#[test]
fn check_names_a_bad_key_with_line_and_column() {
    let mut s = Sandbox::new();
    s.watch_extra = "setle = \"2s\"".to_owned();
    let out = s.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let line = s
        .config_text()
        .lines()
        .position(|l| l.starts_with("setle"))
        .expect("line")
        + 1;
    assert!(err.contains(&format!("config.toml:{line}:1:")), "{err}");
    assert!(err.contains("setle"), "{err}");

    s.watch_extra = "poll_interval = \"forever\"".to_owned();
    let out = s.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("watch[0].poll_interval"),
        "{}",
        stderr(&out)
    );

    s.watch_extra = "settle = \"1s\"".to_owned();
    let out = s.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("duplicate key: `settle`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn explain_shows_the_rule_and_the_names() {
    let s = Sandbox::new();
    let out = s.run(&["explain", "demo_task__deploy.zip"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("plugin_name=demo_task business_type=Deploy"),
        "{text}"
    );
    assert!(text.contains("watch \"extensions\", rule 1"), "{text}");

    let out = s.run(&[
        "explain",
        "demo_task__deploy.zip",
        "notes.txt",
        "x__Nope.zip",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(text.contains("notes.txt: not matched"), "{text}");
    assert!(text.contains("x__Nope.zip: not matched"), "{text}");
}

#[test]
fn status_counts_match_the_folders_and_retry_sends_failed_files_again() {
    let s = Sandbox::new();
    s.drop_named("fine", "Build");
    s.drop_package("manifest__Build.zip", "wrong", "Build");
    s.drop_bytes("waiting__Build.zip.part", b"x");
    assert_eq!(s.once().0, 2);

    let out = s.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status[0]["watch"], "extensions");
    assert_eq!(status[0]["done"], 1);
    assert_eq!(status[0]["failed"], 1);
    assert_eq!(status[0]["waiting"], 0);
    assert_eq!(status[0]["in_progress"], 0);
    assert!(
        status[0]["recent_failures"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("wrong")
    );

    // Fix the package in place, then send it again.
    extdrop::package::write_sample(
        &s.path("failed/manifest__Build.zip"),
        "manifest",
        "Build",
        "1.0.0",
    )
    .expect("fix");
    let out = s.run(&["retry", "--all"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        s.files("inbox"),
        ["manifest__Build.zip", "waiting__Build.zip.part"]
    );
    assert!(s.files("failed").is_empty());
    assert!(!s.path("failed/manifest__Build.zip.result.json").exists());
    assert_eq!(s.once().0, 0);
    assert_eq!(s.files("done"), ["fine__Build.zip", "manifest__Build.zip"]);

    let out = s.run(&["retry", "nothing-here.zip"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn demo_runs_a_sandbox_end_to_end() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("temp dir");
    let sandbox = dir.path().join("demo");
    let log = dir.path().join("demo.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_extdrop"))
        .args(["demo", "--dir"])
        .arg(&sandbox)
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let deadline = std::time::Instant::now() + crate::harness::PATIENCE;
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "demo: timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    };
    wait("the banner", &|| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Ctrl-C stops the demo")
    });
    for sample in ["demo_task__Deploy.zip", "wrong_name__Build.zip"] {
        std::fs::copy(
            sandbox.join("samples").join(sample),
            sandbox.join("staging-copy"),
        )
        .expect("copy");
        std::fs::rename(
            sandbox.join("staging-copy"),
            sandbox.join("inbox").join(sample),
        )
        .expect("drop");
    }
    wait("the good sample in done", &|| {
        sandbox
            .join("done/demo_task__Deploy.zip.result.json")
            .exists()
    });
    wait("the bad sample in failed", &|| {
        sandbox
            .join("failed/wrong_name__Build.zip.result.json")
            .exists()
    });
    // The release watch registers, uploads and publishes an extension the stand-in did not
    // know.
    std::fs::copy(
        sandbox.join("samples/release_task__Build.zip"),
        sandbox.join("staging-copy"),
    )
    .expect("copy");
    std::fs::rename(
        sandbox.join("staging-copy"),
        sandbox.join("release/inbox/release_task__Build.zip"),
    )
    .expect("drop");
    let released = sandbox.join("release/done/release_task__Build.zip.result.json");
    wait("the release sample in release/done", &|| released.exists());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&released).expect("report")).expect("JSON");
    assert_eq!(report["registered"], true, "{report}");
    assert_eq!(report["published"], true, "{report}");
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "demo did not stop on SIGINT"
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    };
    assert_eq!(status.code(), Some(0));
    let out = std::fs::read_to_string(&log).expect("log");
    assert!(
        out.contains(
            "holds 2 done, 1 failed (as `extdrop status` counts them); 2 upload(s) accepted"
        ),
        "{out}"
    );
    // The demo shows the recommended set-up: the upload was signed with the agency's
    // temporary keys, which the stand-in's AK/SK verifier accepted.
    assert!(out.contains("(method = \"agency\")"), "{out}");
    let config = std::fs::read_to_string(sandbox.join("config.toml")).expect("config");
    assert!(config.contains("method = \"agency\""), "{config}");
}

#[test]
fn upload_sends_one_file_and_reports_by_exit_code() {
    let s = Sandbox::new();
    let package = s.path("staging/single.zip");
    extdrop::package::write_sample(&package, "single", "Test", "1.0.0").expect("sample");
    let path = package.display().to_string();
    let args = [
        "upload",
        path.as_str(),
        "--plugin-name",
        "single",
        "--business-type",
        "Test",
    ];
    let out = s.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("uploaded single.zip"),
        "{}",
        stdout(&out)
    );
    let uploads = s.stub.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].plugin_name.as_deref(), Some("single"));
    assert!(package.exists(), "upload leaves the file where it is");

    s.faults([extdrop::stub::Fault::status(400)]);
    let out = s.run(&args);
    assert_eq!(out.status.code(), Some(2), "rejected");
    assert!(stderr(&out).contains("400"), "{}", stderr(&out));

    let out = s.run(&[
        "upload",
        "/nonexistent.zip",
        "--plugin-name",
        "x",
        "--business-type",
        "Test",
    ]);
    assert_eq!(out.status.code(), Some(1), "fatal");
}

/// Regression (issue 7, defect 5): `done` as a symbolic link to the inbox passed `check`, and
/// `run` then uploaded every file twice.
#[test]
fn check_refuses_a_done_that_links_to_the_inbox() {
    let s = Sandbox::new();
    std::fs::remove_dir(s.path("done")).expect("remove done");
    std::os::unix::fs::symlink(s.path("inbox"), s.path("done")).expect("link");
    let out = s.run(&["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = s
        .config_text()
        .lines()
        .position(|l| l.starts_with("done = "))
        .expect("line")
        + 1;
    assert!(
        err.contains(&format!("config.toml:{line}:8: watch[0].done: ")),
        "{err}"
    );
    assert!(err.contains("is the inbox itself"), "{err}");
}

/// Progress is for terminals only: piped (scripts, journald) the output of an upload of a
/// large file is exactly the one line it always was, with no bar, rate or ETA on stderr.
#[test]
fn a_large_upload_to_a_pipe_prints_no_progress() {
    let s = Sandbox::new();
    let package = s.path("staging/big__Test.zip");
    let bytes: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&package, bytes).expect("write");
    let path = package.display().to_string();
    let out = s.run(&[
        "upload",
        path.as_str(),
        "--plugin-name",
        "big",
        "--business-type",
        "Test",
        "--no-check",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("uploaded big__Test.zip as big (Test); request id "),
        "{text}"
    );
    let err = stderr(&out);
    for progress in ["\r", "\x1b[", "ETA", "/s"] {
        assert!(!err.contains(progress), "{progress:?} in {err}");
    }
    assert_eq!(s.stub.uploads().len(), 1);
}

/// `once` shows files filed out of files found on a terminal only: piped, its output is the
/// log and the one summary line it always was, with no bar, carriage return or escape.
#[test]
fn once_to_a_pipe_prints_no_progress() {
    let s = Sandbox::new();
    for name in ["first", "second", "third"] {
        s.drop_named(name, "Build");
    }
    s.drop_package("manifest__Build.zip", "wrong", "Build");
    let out = s.run(&["once"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stdout(&out), "3 done, 1 failed\n");
    for text in [stdout(&out), stderr(&out)] {
        for progress in ["\r", "\x1b", "files filed", "[=", "/4"] {
            assert!(!text.contains(progress), "{progress:?} in {text}");
        }
    }
    // The log is there as before, one line per file filed.
    assert_eq!(stderr(&out).matches("filed").count(), 4, "{}", stderr(&out));
}

/// Regression: `extdrop status | head` closed the pipe and `println!` panicked (exit code 101).
/// Every command that prints is run with stdout and stderr into pipes nobody reads any more:
/// each must end with the exit code it has when its output is read, and its work must stand
/// (`retry` moves its files back even though it cannot say so).
#[test]
fn every_command_that_prints_survives_a_reader_that_has_gone() {
    let s = Sandbox::new();
    s.drop_package("broken__Build.zip", "wrong", "Build");
    assert_eq!(s.once().0, 2, "once exits 2 when a file failed");
    let closed = || {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        writer
    };
    let commands: [&[&str]; 8] = [
        &["check"],
        &["explain", "demo_task__deploy.zip", "notes.txt"],
        &["status"],
        &["status", "--json"],
        &["retry", "nothing-here.zip"],
        &["completions", "bash"],
        &["--help"],
        &["retry", "--all"],
    ];
    for args in commands {
        let heard = if args == ["retry", "--all"] {
            0 // run once only: it moves the file, then there is nothing left to move
        } else {
            let out = s.run(args);
            out.status.code().expect("an exit code")
        };
        let status = s
            .command(args)
            .stdout(closed())
            .stderr(closed())
            .status()
            .expect("run");
        assert_eq!(
            status.code(),
            Some(heard),
            "`extdrop {}` with nobody reading its output",
            args.join(" ")
        );
    }
    assert_eq!(
        s.files("inbox"),
        ["broken__Build.zip"],
        "retry did its work"
    );
    assert!(s.files("failed").is_empty());
}
