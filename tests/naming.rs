//! What gets picked up and how it is named: rules, recursion, exclusions, links.

use proptest::prelude::*;

use crate::harness::Sandbox;

#[test]
fn recursive_and_regex_rules() {
    let mut s = Sandbox::new();
    s.watch_extra = "recursive = true".to_owned();
    s.rules = r#"
[[watch.rule]]
template = "{business_type}/{plugin_name}.zip"

[[watch.rule]]
regex = '^(?P<plugin_name>[A-Za-z0-9_-]{1,50})-(?P<version>\d+\.\d+\.\d+)\.zip$'
business_type = "Normal"
"#
    .to_owned();
    s.drop_package("Gate/checker.zip", "checker", "Gate");
    s.drop_package("hello-1.2.3.zip", "hello", "Normal");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(s.files("done"), ["checker.zip", "hello-1.2.3.zip"]);
    let checker = s.report("done", "checker.zip");
    assert_eq!(checker["file"], "Gate/checker.zip");
    assert_eq!(checker["business_type"], "Gate");
    let uploads = s.stub.uploads();
    let hello = uploads
        .iter()
        .find(|u| u.plugin_name.as_deref() == Some("hello"))
        .expect("hello");
    assert_eq!(hello.business_type.as_deref(), Some("Normal"));
}

#[test]
fn no_matching_rule_fails_with_a_reason_and_sends_nothing() {
    let s = Sandbox::new();
    s.drop_package("release.zip", "release", "Build");
    s.drop_package("bad name__Build.zip", "bad name", "Build");
    s.drop_package("ok__Unknown.zip", "ok", "Unknown");
    let (code, _) = s.once();
    assert_eq!(code, 2);
    assert!(s.requests().is_empty());
    let reason = |name: &str| {
        s.report("failed", name)["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        reason("release.zip").contains("rule"),
        "{}",
        reason("release.zip")
    );
    assert!(
        reason("bad name__Build.zip").contains("plugin_name"),
        "{}",
        reason("bad name__Build.zip")
    );
    assert!(
        reason("ok__Unknown.zip").contains("Unknown"),
        "{}",
        reason("ok__Unknown.zip")
    );
}

#[test]
fn excluded_and_hidden_names_are_untouched() {
    let s = Sandbox::new();
    let daemon = s.start();
    let untouched = [
        "upload__Build.zip.part",
        ".hidden__Build.zip",
        "notes.txt",
        "draft__Build.zip~",
    ];
    for name in untouched {
        s.drop_bytes(name, b"keep me");
    }
    s.drop_named("real", "Build");
    s.wait_until("the real package in done", Some(&daemon), || {
        s.files("done") == ["real__Build.zip"]
    });
    // A rescan happens at start-up and on every event; nothing excluded was taken meanwhile.
    let mut inbox = s.files("inbox");
    inbox.sort();
    let mut expected: Vec<String> = untouched.iter().map(|n| n.to_string()).collect();
    expected.sort();
    assert_eq!(inbox, expected);
    for name in untouched {
        assert_eq!(
            std::fs::read(s.path("inbox").join(name)).expect("still there"),
            b"keep me"
        );
    }
    assert_eq!(s.requests().len(), 1);
}

#[test]
fn symbolic_links_are_never_uploaded_and_their_targets_untouched() {
    let s = Sandbox::new();
    let target = s.path("staging/target__Build.zip");
    extdrop::package::write_sample(&target, "target", "Build", "1.0.0").expect("sample");
    let before = std::fs::read(&target).expect("read");
    std::os::unix::fs::symlink(&target, s.path("inbox/target__Build.zip")).expect("symlink");
    let (code, _) = s.once();
    assert_eq!(code, 0);
    assert!(s.requests().is_empty());
    assert!(
        std::fs::symlink_metadata(s.path("inbox/target__Build.zip"))
            .expect("link")
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&target).expect("target"), before);
    assert!(s.files("done").is_empty() && s.files("failed").is_empty());
}

/// The text log and `status` of a run, with every control character the name could smuggle in.
fn assert_no_raw_controls(what: &str, text: &str) {
    let raw: Vec<char> = text
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(
        raw.is_empty(),
        "{what} holds raw control characters {raw:?}:\n{text}"
    );
}

#[test]
fn a_name_that_is_not_utf8_is_refused_with_a_reason() {
    use std::os::unix::ffi::OsStrExt;
    let s = Sandbox::new();
    let name = std::ffi::OsStr::from_bytes(b"bad\xff__Build.zip");
    let staged = s.path("staging/bad.zip");
    extdrop::package::write_sample(&staged, "bad", "Build", "1.0.0").expect("sample");
    std::fs::rename(&staged, s.path("inbox").join(name)).expect("drop");
    let status = s.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("1 waiting"),
        "status must count it: {}",
        String::from_utf8_lossy(&status.stdout)
    );
    let (code, log) = s.once();
    assert_eq!(code, 2, "a refusal: {log}");
    assert!(
        s.requests().is_empty(),
        "nothing is sent for a name that is not text"
    );
    assert_eq!(s.files("failed"), ["bad\\xFF__Build.zip"]);
    let report = s.report("failed", "bad\\xFF__Build.zip");
    assert_eq!(report["file"], "bad\\xFF__Build.zip");
    assert!(
        report["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not valid UTF-8"),
        "{report}"
    );
    assert!(
        log.contains("bad\\xFF__Build.zip"),
        "the log names it:\n{log}"
    );
    assert!(s.files("inbox").is_empty() && s.claims() == 0);
}

#[test]
fn a_name_cannot_forge_log_lines_or_drive_a_terminal() {
    let s = Sandbox::new();
    let forged = "x\n2026-11-30T00:00:00.000000Z  INFO extdrop::daemon: filed watch=extensions \
                  file=fake__Build.zip outcome=done\x1b[2J\x07__Build.zip";
    s.drop_bytes(forged, b"not a zip");
    let (_, log) = s.once();
    assert_no_raw_controls("the log", &log);
    for line in log.lines() {
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()),
            "every log line starts with its own time stamp; this one was forged:\n{line}\n\nlog:\n{log}"
        );
    }
    let filed_lines = log
        .lines()
        .filter(|line| line.split_whitespace().nth(3) == Some("filed"))
        .count();
    assert_eq!(filed_lines, 1, "one file, one 'filed' line:\n{log}");
    assert!(
        log.contains("x\\n2026-11-30"),
        "the name is shown escaped:\n{log}"
    );
    let status = s.run(&["status"]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert_no_raw_controls("status", &shown);
    assert!(shown.contains("\\u{1b}[2J\\u{7}"), "{shown}");
    // The report is JSON: the name is there exactly, escaped by JSON itself.
    let report = std::fs::read_dir(s.path("failed"))
        .expect("failed")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".result.json"))
        .expect("a report");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.path()).expect("read")).expect("JSON");
    assert_eq!(report["file"], forged);
}

proptest::proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..Default::default() })]

    /// Any names Linux allows — invalid UTF-8, control characters, up to 255 bytes, a leading
    /// `-` — each get a clear outcome in one pass: filed in done or failed with a report that
    /// names it, or (excluded by the watch) left untouched. Nothing is stuck or silent, and
    /// neither the log nor `status` shows a raw control character.
    #[test]
    fn any_name_linux_allows_gets_a_clear_outcome(
        names in proptest::collection::hash_set(
            (
                proptest::collection::vec(
                    proptest::prop_oneof![
                        2 => any::<u8>().prop_filter("not / or NUL", |b| *b != b'/' && *b != 0),
                        3 => proptest::sample::select(b"-_.~abzAZ09\n\r\x1b\"".to_vec()),
                    ],
                    1..=255,
                ),
                // Mostly names the watch admits (`*.zip`), some that a rule can name.
                proptest::sample::select(vec![&b"__Build.zip"[..], b".zip", b"__Deploy.zip", b""]),
            )
                .prop_map(|(mut stem, suffix)| {
                    stem.truncate(255 - suffix.len());
                    stem.extend_from_slice(suffix);
                    stem
                }),
            1..12,
        )
    ) {
        use std::os::unix::ffi::OsStrExt;
        let s = Sandbox::new();
        let config = extdrop::config::Config::parse(&s.config_text(), &s.path("config.toml"))
            .expect("config");
        let watch = &config.watches[0];
        let mut expected = std::collections::BTreeSet::new();
        let mut untouched = Vec::new();
        for bytes in names.iter().filter(|b| b.as_slice() != b"." && b.as_slice() != b"..") {
            let name = std::ffi::OsStr::from_bytes(bytes);
            std::fs::write(s.path("inbox").join(name), b"package bytes").expect("drop");
            let (text, _) = extdrop::shown::name(name);
            if watch.admits(&text) {
                expected.insert(text);
            } else {
                untouched.push(name.to_owned());
            }
        }
        let (code, log) = s.once();
        proptest::prop_assert!(code == 0 || code == 2, "exit {code}:\n{log}");
        assert_no_raw_controls("the log", &log);
        let mut reported = std::collections::BTreeSet::new();
        for folder in ["done", "failed"] {
            for entry in std::fs::read_dir(s.path(folder)).expect("folder").flatten() {
                if entry.file_name().to_string_lossy().ends_with(".result.json") {
                    let report: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(entry.path()).expect("read"))
                            .expect("JSON");
                    reported.insert(report["file"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        proptest::prop_assert_eq!(&reported, &expected, "log:\n{}", log);
        for name in &untouched {
            proptest::prop_assert!(s.path("inbox").join(name).exists(), "excluded {name:?} untouched");
        }
        proptest::prop_assert_eq!(s.claims(), 0);
        let status = s.run(&["status"]);
        let shown = String::from_utf8_lossy(&status.stdout).into_owned();
        assert_no_raw_controls("status", &shown);
        proptest::prop_assert!(shown.contains(" 0 in progress"), "{}", shown);
    }
}

/// Regression (issue 7, defect 7): reqwest escapes a CR in the multipart `filename` as a
/// backslash and the raw CR, so a name holding `"` and CR LF broke the part header on the wire.
/// The name now goes percent-encoded, as browsers send it.
#[test]
fn a_name_with_quotes_and_line_breaks_is_sent_encoded() {
    let mut s = Sandbox::new();
    // The default rule needs `__`; this one's `*` takes any characters.
    s.rules = "[[watch.rule]]\ntemplate = \"{plugin_name}-{business_type}-*.zip\"".to_owned();
    let name = "demo_task-Build-say \"hi\"\r\nForged: yes.zip";
    s.drop_package(name, "demo_task", "Build");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    let uploads = s.stub.uploads();
    assert_eq!(uploads.len(), 1, "{log}");
    assert_eq!(
        uploads[0].filename.as_deref(),
        Some("demo_task-Build-say %22hi%22%0D%0AForged: yes.zip")
    );
    assert_eq!(s.report("done", name)["outcome"], "done");
}
