//! The main path: files present at start-up, files dropped while running, slow writers,
//! duplicates, and `once`'s exit codes.

use std::io::Write;
use std::time::{Duration, SystemTime};

use crate::harness::Sandbox;

#[test]
fn files_present_at_start_up_are_uploaded_and_filed() {
    let s = Sandbox::new();
    s.drop_named("alpha", "Build");
    s.drop_named("beta", "deploy");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(s.files("done"), ["alpha__Build.zip", "beta__deploy.zip"]);
    assert!(s.files("inbox").is_empty());
    assert_eq!(s.claims(), 0);

    let report = s.report("done", "beta__deploy.zip");
    assert_eq!(report["outcome"], "done");
    assert_eq!(report["watch"], "extensions");
    assert_eq!(report["plugin_name"], "beta");
    assert_eq!(
        report["business_type"], "Deploy",
        "sent in the configured spelling"
    );
    assert_eq!(report["attempts"], 1);
    assert_eq!(report["http_status"], 200);
    assert!(report["reason"].is_null());
    assert_eq!(report["request_id"].as_str().map(str::len), Some(32));

    let uploads = s.stub.uploads();
    assert_eq!(uploads.len(), 2);
    let beta = uploads
        .iter()
        .find(|u| u.plugin_name.as_deref() == Some("beta"))
        .expect("beta uploaded");
    assert_eq!(beta.business_type.as_deref(), Some("Deploy"));
    assert_eq!(beta.filename.as_deref(), Some("beta__deploy.zip"));
    assert_eq!(beta.sha256.as_deref(), report["sha256"].as_str());
    assert_eq!(beta.size, report["size"].as_u64());
}

#[test]
fn a_file_written_slowly_is_uploaded_once_and_whole() {
    let mut s = Sandbox::new();
    // Pauses of 100 ms against a settle of 1 s: a loaded machine may stretch a pause, rarely
    // tenfold.
    s.settle = "1s".to_owned();
    let daemon = s.start();
    let staged = s.path("staging/slow.zip");
    extdrop::package::write_sample(&staged, "slow", "Build", "1.0.0").expect("sample");
    let mut content = std::fs::read(&staged).expect("read");
    // Padding after the archive keeps it a valid ZIP while it grows.
    content.extend(std::iter::repeat_n(b'\n', 64 * 1024));
    let target = s.path("inbox/slow__Build.zip");
    let mut file = std::fs::File::create(&target).expect("create");
    // Thirty pieces, 100 ms apart: three seconds of writing, each pause shorter than settle.
    for piece in content.chunks(content.len().div_ceil(30)) {
        file.write_all(piece).expect("write");
        file.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(file);
    s.wait_until("the slow file in done", Some(&daemon), || {
        s.files("done") == ["slow__Build.zip"]
    });
    let requests = s.requests();
    assert_eq!(requests.len(), 1, "uploaded exactly once");
    assert_eq!(
        requests[0].size,
        Some(content.len() as u64),
        "uploaded whole"
    );
    let report = s.report("done", "slow__Build.zip");
    assert_eq!(report["size"], content.len() as u64);
}

#[test]
fn a_finished_file_moved_in_does_not_wait_another_settle() {
    let mut s = Sandbox::new();
    // A settle no test outlasts: a file is uploaded during the test only if the time since
    // its last write counted.
    s.settle = "1h".to_owned();
    let daemon = s.start();
    let stamped = |name: &str, written: SystemTime| {
        let staged = s.path("staging").join(format!("{name}__Build.zip"));
        extdrop::package::write_sample(&staged, name, "Build", "1.0.0").expect("sample");
        std::fs::File::options()
            .write(true)
            .open(&staged)
            .and_then(|f| f.set_modified(written))
            .expect("stamp its last write");
        s.drop_file(&format!("{name}__Build.zip"), &staged);
    };
    let now = SystemTime::now();
    // Dropped first, so that it has been seen by the time the other is filed.
    stamped("just_written", now);
    stamped("finished", now - Duration::from_secs(2 * 3600));
    s.wait_until("the finished file in done", Some(&daemon), || {
        s.files("done") == ["finished__Build.zip"]
    });
    assert_eq!(
        s.files("inbox"),
        ["just_written__Build.zip"],
        "a file written just now waits for its settle"
    );
    assert_eq!(s.requests().len(), 1);
}

#[test]
fn the_same_name_dropped_twice_is_kept_twice() {
    let s = Sandbox::new();
    let daemon = s.start();
    s.drop_named("twice", "Test");
    s.wait_until("first copy in done", Some(&daemon), || {
        s.files("done").len() == 1
    });
    s.drop_named("twice", "Test");
    s.wait_until("second copy in done", Some(&daemon), || {
        s.files("done").len() == 2
    });
    assert_eq!(s.files("done"), ["twice__Test.zip", "twice__Test~2.zip"]);
    assert_eq!(
        s.report("done", "twice__Test~2.zip")["file"],
        "twice__Test.zip"
    );
    assert_eq!(s.stub.uploads().len(), 2);
}

#[test]
fn once_exit_codes() {
    let s = Sandbox::new();
    assert_eq!(s.once().0, 0, "nothing to do is success");
    s.drop_named("good", "Build");
    s.drop_bytes("notes__Build.zip", b"not a zip");
    let (code, log) = s.once();
    assert_eq!(code, 2, "one went to failed: {log}");
    assert_eq!(s.files("done"), ["good__Build.zip"]);
    assert_eq!(s.files("failed"), ["notes__Build.zip"]);

    std::fs::write(s.path("broken.toml"), "[codearts\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_extdrop"))
        .args(["once", "-c"])
        .arg(s.path("broken.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "bad config is fatal");
}

#[test]
fn invalid_packages_fail_without_being_sent() {
    let s = Sandbox::new();
    s.drop_bytes("notzip__Build.zip", b"just text, not an archive");
    s.drop_package("mismatch__Build.zip", "other_name", "Build");
    s.drop_package("wrongcat__Build.zip", "wrongcat", "Deploy");
    let (code, log) = s.once();
    assert_eq!(code, 2, "{log}");
    assert_eq!(
        s.files("failed"),
        [
            "mismatch__Build.zip",
            "notzip__Build.zip",
            "wrongcat__Build.zip"
        ]
    );
    assert!(s.requests().is_empty(), "nothing sent");
    for name in s.files("failed") {
        let report = s.report("failed", &name);
        assert_eq!(report["outcome"], "failed");
        assert_eq!(report["attempts"], 0);
        let reason = report["reason"].as_str().expect("reason");
        assert!(!reason.is_empty() && !reason.contains('\n'), "{reason}");
    }
    assert!(
        s.report("failed", "mismatch__Build.zip")["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("other_name")
    );
}

#[test]
fn oversized_files_fail_unread() {
    let mut s = Sandbox::new();
    s.upload = "concurrency = 2\nmax_file_size = \"1KiB\"".to_owned();
    s.drop_bytes("big__Build.zip", &vec![0u8; 4096]);
    let (code, _) = s.once();
    assert_eq!(code, 2);
    let reason = s.report("failed", "big__Build.zip")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("max_file_size"), "{reason}");
    assert!(s.requests().is_empty());
}

/// A folder for `done` on another file system than the sandbox, if this machine has one.
fn other_file_system(s: &Sandbox) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let here = std::fs::metadata(s.root()).ok()?.dev();
    ["/dev/shm", "/run", "/var/tmp"].iter().find_map(|base| {
        let meta = std::fs::metadata(base).ok()?;
        let dir = std::path::Path::new(base).join(format!("extdrop-test-{}", fastrand::u64(..)));
        (meta.dev() != here && std::fs::create_dir(&dir).is_ok()).then_some(dir)
    })
}

#[test]
fn done_on_another_file_system_gets_whole_files() {
    let s = Sandbox::new();
    let Some(other) = other_file_system(&s) else {
        // The copy path itself is covered by store's unit tests; this machine has no second
        // file system to prove it end to end.
        eprintln!("no second file system: cross-device filing not exercised end to end");
        return;
    };
    let done = other.join("done");
    let text = s
        .config_text()
        .replace("done = \"done\"", &format!("done = \"{}\"", done.display()));
    std::fs::write(s.path("config.toml"), &text).expect("config");
    s.drop_named("across", "Build");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_extdrop"))
        .args(["once", "-c"])
        .arg(s.path("config.toml"))
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let filed = done.join("across__Build.zip");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(done.join("across__Build.zip.result.json")).expect("report"),
    )
    .expect("json");
    let uploaded = s.stub.uploads();
    assert_eq!(uploaded.len(), 1);
    assert_eq!(
        std::fs::metadata(&filed).expect("filed").len(),
        report["size"].as_u64().unwrap_or(0)
    );
    assert_eq!(uploaded[0].sha256.as_deref(), report["sha256"].as_str());
    let leftovers: Vec<_> = std::fs::read_dir(&done)
        .expect("done")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "the file and its report, no partial copies: {leftovers:?}"
    );
    assert!(s.files("inbox").is_empty() && s.claims() == 0);
    let _ = std::fs::remove_dir_all(&other);
}
