//! The release flow (SPEC §6, issue 8): look up, register when needed, upload, publish,
//! verify — against a stand-in that keeps extensions and versions like the cloud.

use extdrop::stub::{Api, Fault, StubAuth, StubConfig};

use crate::harness::{DOMAIN, Sandbox, TOKEN};

/// A sandbox whose stand-in refuses uploads for extensions it does not know, as the cloud
/// does, with `watch_extra` on the watch.
fn release_sandbox(watch_extra: &str) -> Sandbox {
    let mut config = StubConfig::new(DOMAIN);
    config.auth = StubAuth::Tokens(vec![TOKEN.to_owned()]);
    config.auto_register = false;
    let mut s = Sandbox::with_stub_config(config);
    s.watch_extra = watch_extra.to_owned();
    s
}

/// The version rows (version, attribution) the stand-in holds for `plugin_name`.
fn versions(s: &Sandbox, plugin_name: &str) -> Vec<(String, String)> {
    s.stub.with_catalog(|c| {
        c.versions(plugin_name)
            .into_iter()
            .map(|r| {
                let attribution = serde_json::to_value(r.version_attribution)
                    .expect("serializes")
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                (r.version, attribution)
            })
            .collect()
    })
}

fn api_requests(s: &Sandbox, api: Api) -> usize {
    s.stub
        .api_requests()
        .iter()
        .filter(|r| r.api == api)
        .count()
}

fn known(s: &Sandbox, plugin_name: &str, official: &[&str]) {
    s.stub.with_catalog(|c| {
        c.register(plugin_name, plugin_name, "Deploy", "")
            .expect("registers");
        for version in official {
            c.upload(plugin_name, version).expect("uploads");
            c.publish(plugin_name, version).expect("publishes");
        }
    });
}

#[test]
fn a_new_extension_is_registered_uploaded_and_published() {
    let s = release_sandbox("register = true\npublish = true");
    s.drop_named("fresh", "Deploy");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(s.files("done"), ["fresh__Deploy.zip"]);
    let report = s.report("done", "fresh__Deploy.zip");
    assert_eq!(report["version"], "1.0.0");
    assert_eq!(report["registered"], true);
    assert_eq!(report["published"], true);
    assert_eq!(report["http_status"], 200, "the upload's answer");
    assert_eq!(report["attempts"], 1);
    assert_eq!(versions(&s, "fresh"), [("1.0.0".into(), "formal".into())]);
    assert_eq!(s.stub.uploads().len(), 1);
    assert_eq!(s.stub.api_successes(Api::Register), 1);
    assert_eq!(s.stub.api_successes(Api::Publish), 1);
    // The registration carries the manifest's description.
    let description = s
        .stub
        .with_catalog(|c| c.description("fresh").map(str::to_owned));
    assert_eq!(
        description.as_deref(),
        Some("Sample extension fresh, written by extdrop")
    );
    assert_eq!(s.claims(), 0);
    let status = s.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(status[0]["release"]["registered"], 1, "{status}");
    assert_eq!(status[0]["release"]["published"], 1, "{status}");
}

/// The manifest's friendlyName is the display name of the registration and of the publish.
#[test]
fn the_friendly_name_is_the_display_name() {
    let s = release_sandbox("register = true\npublish = true");
    let staged = s.path("staging/friendly__Build.zip");
    let manifest = r#"{"type": "Task", "name": "friendly", "friendlyName": "Friendly task",
        "description": "Says hello", "category": "Build", "version": "0.1.0"}"#;
    extdrop::package::write_zip(&staged, Some(manifest), &[]).expect("package");
    s.drop_file("friendly__Build.zip", &staged);
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    let bodies: Vec<serde_json::Value> = s
        .stub
        .api_requests()
        .into_iter()
        .filter(|r| matches!(r.api, Api::Register | Api::Publish))
        .filter_map(|r| r.body)
        .collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    for body in &bodies {
        assert_eq!(body["display_name"], "Friendly task", "{body}");
    }
    assert_eq!(bodies[0]["description"], "Says hello");
    assert_eq!(bodies[0]["business_type_display_name"], "Build");
}

#[test]
fn an_unknown_extension_without_register_fails_unsent() {
    let s = release_sandbox("publish = true");
    s.drop_named("stranger", "Deploy");
    let (code, log) = s.once();
    assert_eq!(code, 2, "{log}");
    let report = s.report("failed", "stranger__Deploy.zip");
    let reason = report["reason"].as_str().expect("reason");
    assert_eq!(
        reason,
        "extension stranger does not exist in CodeArts; register it or set register = true"
    );
    assert_eq!(report["registered"], false);
    assert_eq!(report["published"], false, "asked for, did not happen");
    assert_eq!(report["version"], "1.0.0");
    assert!(s.requests().is_empty(), "no upload was sent");
    assert_eq!(api_requests(&s, Api::Register), 0);
}

#[test]
fn an_official_version_is_refused_before_upload() {
    let s = release_sandbox("register = true\npublish = true");
    known(&s, "settled", &["1.0.0"]);
    s.drop_named("settled", "Deploy");
    let (code, log) = s.once();
    assert_eq!(code, 2, "{log}");
    let report = s.report("failed", "settled__Deploy.zip");
    assert_eq!(
        report["reason"],
        "version 1.0.0 of settled is already published; official versions cannot be replaced: raise the version in codearts-extension.json"
    );
    assert_eq!(report["attempts"], 0);
    assert!(s.requests().is_empty(), "no upload was sent");
    assert_eq!(api_requests(&s, Api::Register), 0, "it exists");
    assert_eq!(api_requests(&s, Api::Publish), 0);
    let status = s.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(status[0]["release"]["refused_official"], 1, "{status}");
    let shown = text(&s.run(&["status"]).stdout);
    assert!(
        shown.contains("0 registered, 0 published, 1 refused as already official"),
        "{shown}"
    );
}

#[test]
fn draft_only_uploads_a_draft_and_publishes_nothing() {
    let s = release_sandbox("register = true");
    s.drop_named("drafty", "Build");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    let report = s.report("done", "drafty__Build.zip");
    assert_eq!(report["registered"], true);
    assert!(report["published"].is_null(), "not asked for");
    assert_eq!(versions(&s, "drafty"), [("1.0.0".into(), "draft".into())]);
    assert_eq!(api_requests(&s, Api::Publish), 0);
}

#[test]
fn a_rule_overrides_its_watchs_publish() {
    let mut s = release_sandbox("publish = true");
    s.rules = "publish = false".to_owned();
    known(&s, "ruled", &[]);
    s.drop_named("ruled", "Deploy");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    let report = s.report("done", "ruled__Deploy.zip");
    assert!(report["published"].is_null(), "the rule said no");
    assert_eq!(report["registered"], false, "it existed");
    assert_eq!(versions(&s, "ruled"), [("1.0.0".into(), "draft".into())]);
    assert_eq!(api_requests(&s, Api::Publish), 0);
}

#[test]
fn a_publish_failing_transiently_is_retried_without_uploading_again() {
    let s = release_sandbox("register = true\npublish = true");
    s.stub
        .push_api_faults(Api::Publish, [Fault::status(503), Fault::status(502)]);
    s.drop_named("bumpy", "Test");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    let report = s.report("done", "bumpy__Test.zip");
    assert_eq!(report["published"], true);
    assert_eq!(s.stub.uploads().len(), 1, "one upload only");
    assert_eq!(s.requests().len(), 1);
    assert_eq!(api_requests(&s, Api::Publish), 3);
    assert_eq!(versions(&s, "bumpy"), [("1.0.0".into(), "formal".into())]);
}

#[test]
fn a_publish_that_keeps_failing_names_the_step() {
    let s = release_sandbox("register = true\npublish = true");
    s.stub.push_api_faults(Api::Publish, [Fault::status(400)]);
    s.drop_named("stuck", "Test");
    let (code, log) = s.once();
    assert_eq!(code, 2, "{log}");
    let report = s.report("failed", "stuck__Test.zip");
    let reason = report["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("uploaded as a draft, but publishing failed: "),
        "{reason}"
    );
    assert_eq!(report["published"], false);
    assert_eq!(report["http_status"], 400);
    assert_eq!(versions(&s, "stuck"), [("1.0.0".into(), "draft".into())]);
}

/// A redirect from a lifecycle API is its answer, never followed (the token would go to the
/// `Location`'s host): the publish fails, the version stays a draft.
#[test]
fn a_redirected_publish_is_refused_not_followed() {
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").expect("bind elsewhere");
    elsewhere.set_nonblocking(true).expect("non-blocking");
    let location = format!("http://{}/", elsewhere.local_addr().expect("address"));
    let s = release_sandbox("register = true\npublish = true");
    s.stub.push_api_faults(
        Api::Publish,
        [Fault::Redirect {
            status: 302,
            location,
        }],
    );
    s.drop_named("moved", "Test");
    let (code, log) = s.once();
    assert_eq!(code, 2, "{log}");
    let report = s.report("failed", "moved__Test.zip");
    let reason = report["reason"].as_str().expect("reason");
    assert!(reason.contains("302"), "{reason}");
    assert_eq!(report["published"], false);
    assert_eq!(api_requests(&s, Api::Publish), 1);
    assert_eq!(versions(&s, "moved"), [("1.0.0".into(), "draft".into())]);
    match elsewhere.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the redirect was followed (from {peer})"),
        Err(e) => panic!("accept: {e}"),
    }
}

/// SIGKILL while the publish is in flight, then a restart: the upload and the registration
/// are not repeated, and the publish whose answer was lost (the stand-in made the version
/// official) is settled by the version's detail, not sent again.
#[test]
fn a_kill_during_the_publish_resumes_without_a_second_upload_or_registration() {
    let s = release_sandbox("register = true\npublish = true");
    s.stub.push_api_faults(Api::Publish, [Fault::Hang]);
    s.drop_named("killed", "Gate");
    let mut daemon = s.start();
    s.wait_until("the publish is in flight", Some(&daemon), || {
        api_requests(&s, Api::Publish) == 1
    });
    // The publish took effect; only its answer is lost with the process.
    s.stub
        .with_catalog(|c| c.publish("killed", "1.0.0"))
        .expect("publishes");
    daemon.kill9();
    assert_eq!(s.claims(), 1);

    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    let report = s.report("done", "killed__Gate.zip");
    assert_eq!(report["published"], true);
    assert_eq!(
        report["registered"], true,
        "registered for this file, before the kill"
    );
    assert_eq!(s.requests().len(), 1, "one upload");
    assert_eq!(api_requests(&s, Api::Register), 1, "one registration");
    assert_eq!(api_requests(&s, Api::Publish), 1, "settled by the detail");
    assert!(api_requests(&s, Api::Detail) >= 1);
}

/// The same kill, but the publish never reached the stand-in: the restart publishes.
#[test]
fn a_kill_before_the_publish_took_effect_publishes_at_restart() {
    let s = release_sandbox("register = true\npublish = true");
    s.stub.push_api_faults(Api::Publish, [Fault::Hang]);
    s.drop_named("again", "Gate");
    let mut daemon = s.start();
    s.wait_until("the publish is in flight", Some(&daemon), || {
        api_requests(&s, Api::Publish) == 1
    });
    daemon.kill9();
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert_eq!(s.report("done", "again__Gate.zip")["published"], true);
    assert_eq!(s.requests().len(), 1, "one upload");
    assert_eq!(api_requests(&s, Api::Register), 1, "one registration");
    assert_eq!(versions(&s, "again"), [("1.0.0".into(), "formal".into())]);
}

/// SIGKILL while the register is in flight, its answer lost (the stand-in registered): the
/// restart's look-up settles it, and no second registration is sent.
#[test]
fn a_kill_during_the_register_is_settled_by_the_look_up() {
    let s = release_sandbox("register = true\npublish = true");
    s.stub.push_api_faults(Api::Register, [Fault::Hang]);
    s.drop_named("midway", "Build");
    let mut daemon = s.start();
    s.wait_until("the register is in flight", Some(&daemon), || {
        api_requests(&s, Api::Register) == 1
    });
    s.stub
        .with_catalog(|c| c.register("midway", "midway", "Build", ""))
        .expect("registers");
    daemon.kill9();
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    let report = s.report("done", "midway__Build.zip");
    assert_eq!(report["registered"], true, "registered for this file");
    assert_eq!(report["published"], true);
    assert_eq!(api_requests(&s, Api::Register), 1, "not sent again");
    assert_eq!(s.requests().len(), 1);
}

#[test]
fn register_or_publish_without_validate_package_is_a_config_error() {
    for (watch_extra, rules, key) in [
        ("register = true", "", "watch[0].register"),
        ("", "publish = true", "watch[0].rule[0].publish"),
    ] {
        let mut s = release_sandbox(watch_extra);
        s.rules = rules.to_owned();
        s.upload = "concurrency = 2\nvalidate_package = false".to_owned();
        let out = s.run(&["check"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&format!(": {key}: ")), "{stderr}");
        assert!(stderr.contains("config.toml:"), "line and column: {stderr}");
        assert!(stderr.contains("upload.validate_package"), "{stderr}");
    }
}

#[test]
fn without_register_or_publish_nothing_but_the_upload_is_sent() {
    let s = Sandbox::new();
    s.drop_named("plain", "Build");
    let (code, log) = s.once();
    assert_eq!(code, 0, "{log}");
    assert!(s.stub.api_requests().is_empty());
    let report = s.report("done", "plain__Build.zip");
    assert_eq!(report["version"], "1.0.0");
    assert_eq!(report["registered"], false);
    assert!(report["published"].is_null());
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn versions_lists_newest_first_as_a_table_and_as_json() {
    let s = release_sandbox("");
    known(&s, "listed", &["1.2.0", "1.10.0"]);
    s.stub
        .with_catalog(|c| c.upload("listed", "2.0.0"))
        .expect("draft");
    let out = s.run(&["versions", "listed"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<Vec<String>> = text(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(
        lines,
        [
            ["2.0.0", "draft"],
            ["1.10.0", "formal"],
            ["1.2.0", "formal"]
        ]
    );
    let out = s.run(&["versions", "listed", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        json,
        serde_json::json!([
            {"version": "2.0.0", "version_attribution": "draft"},
            {"version": "1.10.0", "version_attribution": "formal"},
            {"version": "1.2.0", "version_attribution": "formal"},
        ])
    );
    let out = s.run(&["versions", "nobody"]);
    assert_eq!(out.status.code(), Some(2), "no such extension");
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
}

/// Regression (issue 8): `extdrop upload` sent an empty file, a README and a bad plugin name
/// without a word and exited 0.
#[test]
fn upload_refuses_what_the_daemon_would_refuse_unless_no_check() {
    let s = Sandbox::new();
    let empty = s.path("staging/empty.zip");
    std::fs::write(&empty, b"").expect("write");
    let readme = s.path("staging/README.md");
    std::fs::write(&readme, b"# not a package\n").expect("write");
    let good = s.path("staging/good.zip");
    extdrop::package::write_sample(&good, "good", "Build", "1.0.0").expect("sample");
    for (file, plugin_name, why) in [
        (&empty, "good", "empty"),
        (&readme, "good", "ZIP"),
        (&good, "bad name!", "plugin name"),
    ] {
        let path = file.display().to_string();
        let out = s.run(&[
            "upload",
            &path,
            "--plugin-name",
            plugin_name,
            "--business-type",
            "Build",
        ]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{why}: {stderr}");
        assert!(stderr.contains("nothing was sent"), "{stderr}");
        assert!(stderr.contains(why), "{why}: {stderr}");
    }
    assert!(s.requests().is_empty(), "nothing was sent");
    let path = readme.display().to_string();
    let out = s.run(&[
        "upload",
        &path,
        "--plugin-name",
        "good",
        "--business-type",
        "Build",
        "--no-check",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(s.requests().len(), 1);
}

#[test]
fn upload_publish_makes_the_version_official() {
    let s = release_sandbox("");
    known(&s, "manual", &[]);
    let package = s.path("staging/manual.zip");
    extdrop::package::write_sample(&package, "manual", "Deploy", "3.1.0").expect("sample");
    let path = package.display().to_string();
    let args = [
        "upload",
        path.as_str(),
        "--plugin-name",
        "manual",
        "--business-type",
        "Deploy",
        "--publish",
    ];
    let out = s.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("published version 3.1.0 of manual"));
    assert_eq!(versions(&s, "manual"), [("3.1.0".into(), "formal".into())]);
    // Again: the version is official now, refused before anything is sent.
    let out = s.run(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("already published"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s.requests().len(), 1);
}

/// The release steps are counted in `/metrics`, per watch and step.
#[test]
fn metrics_count_the_release_steps() {
    let mut s = release_sandbox("register = true\npublish = true");
    s.tables = "[metrics]\nlisten = \"127.0.0.1:0\"".to_owned();
    known(&s, "old", &["1.0.0"]);
    let daemon = s.start();
    let addr = daemon.metrics_address();
    s.drop_named("new", "Build");
    s.drop_named("old", "Deploy");
    s.wait_until("one done, one failed", Some(&daemon), || {
        s.files("done").len() == 1 && s.files("failed").len() == 1
    });
    let body = crate::service::http_get(&addr, "/metrics").1;
    for (step, count) in [("registered", 1), ("published", 1), ("refused_official", 1)] {
        let line =
            format!("extdrop_release_steps_total{{watch=\"extensions\",step=\"{step}\"}} {count}");
        assert!(body.contains(&line), "{line} in:\n{body}");
    }
}
