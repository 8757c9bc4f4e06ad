//! What gets picked up and how it is named: rules, recursion, exclusions, links.

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
