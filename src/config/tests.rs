use super::*;

const BASE: &str = r#"
[codearts]
endpoint = "https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com/"
domain_id = "ce8df55870164338a72d7e828a966a2a"

[auth]
token = "t"

[[watch]]
name = "ext"
inbox = "in"
done = "done"
failed = "failed"

[[watch.rule]]
template = "{plugin_name}__{business_type}.zip"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/extdrop/config.toml"))
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_example_configuration_is_valid() -> Result<(), ConfigError> {
    let config = parse(include_str!("../../config.example.toml"))?;
    assert_eq!(config.watches.len(), 1);
    assert_eq!(config.watches[0].rules.rules().len(), 2);
    assert_eq!(config.upload.max_file_size, 1 << 30);
    assert_eq!(config.retry, RetryPolicy::default());
    Ok(())
}

#[test]
fn defaults_and_relative_folders() -> Result<(), ConfigError> {
    let config = parse(BASE)?;
    assert_eq!(
        config.codearts.endpoint,
        "https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com"
    );
    assert_eq!(config.codearts.request_timeout, Duration::from_secs(600));
    let w = &config.watches[0];
    assert_eq!(w.inbox, Path::new("/etc/extdrop/in"));
    assert_eq!(w.settle, Duration::from_secs(2));
    assert!(w.admits("a__Build.zip"));
    assert!(!w.admits(".a__Build.zip"));
    assert!(!w.admits("a__Build.zip.part"));
    assert!(!w.admits("notes.txt"));
    assert!(!w.admits(".extdrop/x.zip"));
    assert_eq!(config.upload.concurrency, 4);
    assert_eq!(config.log.format, LogFormat::Auto);
    Ok(())
}

#[test]
fn syntax_errors_name_line_and_column() {
    let text = BASE.replace("name = \"ext\"", "name = \"ext\"\ninbx = \"typo\"");
    let e = error(&text);
    assert!(e.starts_with("/etc/extdrop/config.toml:11:1: "), "{e}");
    assert!(e.contains("inbx"), "{e}");

    let e = error("[codearts]\nendpoint = \n");
    assert!(e.starts_with("/etc/extdrop/config.toml:2:"), "{e}");
}

#[test]
fn wrong_types_name_the_line() {
    let e = error(&BASE.replace("[auth]", "[upload]\nconcurrency = \"four\"\n[auth]"));
    assert!(e.contains(":7:15:"), "{e}");
}

#[test]
fn invalid_values_name_the_key_and_place() {
    let e = error(&BASE.replace(
        "domain_id = \"ce8df55870164338a72d7e828a966a2a\"",
        "domain_id = \"short\"",
    ));
    assert!(e.contains(":4:13: codearts.domain_id: "), "{e}");

    let e = error(&BASE.replace(
        "failed = \"failed\"",
        "failed = \"failed\"\nsettle = \"soon\"",
    ));
    assert!(e.contains("watch[0].settle"), "{e}");
    assert!(e.contains("soon"), "{e}");

    let e = error(&BASE.replace(
        "template = \"{plugin_name}__{business_type}.zip\"",
        "regex = '(unclosed'",
    ));
    assert!(e.contains("watch[0].rule[0].regex"), "{e}");
}

#[test]
fn missing_required_keys_are_named() {
    assert!(
        error(&BASE.replace("domain_id = \"ce8df55870164338a72d7e828a966a2a\"", ""))
            .contains("codearts.domain_id: missing")
    );
    assert!(
        error(&BASE.replace(
            "endpoint = \"https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com/\"",
            ""
        ))
        .contains("codearts.endpoint: missing")
    );
    assert!(error(&BASE.replace("inbox = \"in\"", "")).contains("watch[0].inbox: missing"));
    let no_watch = BASE.split("[[watch]]").next().unwrap_or_default();
    assert!(error(no_watch).contains("no [[watch]]"));
}

#[test]
fn rules_need_exactly_one_pattern_and_a_plugin_name() {
    let both = BASE.replace(
        "template = \"{plugin_name}__{business_type}.zip\"",
        "template = \"{plugin_name}.zip\"\nregex = 'x'",
    );
    assert!(error(&both).contains("exactly one of template or regex"));
    let never = BASE.replace("{plugin_name}__{business_type}.zip", "{business_type}.zip");
    assert!(error(&never).contains("watch[0].rule[0].template"));
    let constant = BASE.replace(
        "template = \"{plugin_name}__{business_type}.zip\"",
        "template = \"{plugin_name}.zip\"\nbusiness_type = \"Nope\"",
    );
    assert!(error(&constant).contains("watch[0].rule[0].business_type"));
}

#[test]
fn subfolder_rules_need_recursive() {
    let text = BASE.replace(
        "{plugin_name}__{business_type}.zip",
        "{business_type}/{plugin_name}.zip",
    );
    assert!(error(&text).contains("recursive = true"));
    let text = text.replace(
        "failed = \"failed\"",
        "failed = \"failed\"\nrecursive = true",
    );
    assert!(parse(&text).is_ok());
}

fn two_watches(second: &str) -> String {
    format!(
        "{BASE}\n[[watch]]\nname = \"two\"\n{second}\n[[watch.rule]]\ntemplate = \"{{plugin_name}}__{{business_type}}.zip\"\n"
    )
}

#[test]
fn folders_must_not_overlap() {
    let e = error(
        &two_watches("inbox = \"in2\"\ndone = \"done\"\nfailed = \"failed\"")
            .replace("name = \"two\"", "name = \"ext\""),
    );
    assert!(e.contains("used by two watches"), "{e}");

    let e = error(&two_watches(
        "inbox = \"in/sub\"\ndone = \"d2\"\nfailed = \"f2\"",
    ));
    assert!(e.contains("watch[0].inbox"), "{e}");

    let e = error(&two_watches(
        "inbox = \"/\"\ndone = \"/x/d2\"\nfailed = \"/x/f2\"",
    ));
    assert!(e.contains("watch[1].inbox"), "{e}");

    // Sharing done and failed between watches is fine.
    assert!(
        parse(&two_watches(
            "inbox = \"in2\"\ndone = \"done\"\nfailed = \"failed\""
        ))
        .is_ok()
    );

    let e = error(&BASE.replace("done = \"done\"", "done = \"in\""));
    assert!(e.contains("watch[0].done"), "{e}");
    let e = error(&BASE.replace("failed = \"failed\"", "failed = \"done\""));
    assert!(e.contains("watch[0].failed"), "{e}");
}

#[test]
fn auth_keys_of_another_method_are_refused() {
    let e = error(&BASE.replace("token = \"t\"", "token = \"t\"\nuser_name = \"u\""));
    assert!(
        e.contains("auth.user_name: is not used with method = \"token\""),
        "{e}"
    );
    let e = error(&BASE.replace("token = \"t\"", "method = \"password\"\nuser_name = \"u\""));
    assert!(e.contains("auth.domain_name: missing"), "{e}");
    let e = error(&BASE.replace("token = \"t\"", "method = \"kerberos\""));
    assert!(e.contains("auth.method"), "{e}");
}

#[test]
fn retry_bounds_are_checked() {
    for (key, value) in [
        ("multiplier", "0.5"),
        ("jitter", "1.5"),
        ("max_attempts", "0"),
        ("max_delay", "\"1ms\""),
    ] {
        let e = error(&format!("{BASE}\n[retry]\n{key} = {value}\n"));
        assert!(e.contains(&format!("retry.{key}")), "{e}");
    }
}

#[test]
fn sizes_and_durations_use_human_units() -> Result<(), ConfigError> {
    let config = parse(&format!(
        "{BASE}\n[upload]\nmax_file_size = \"512KiB\"\n[retry]\ninitial_delay = \"500ms\"\n"
    ))?;
    assert_eq!(config.upload.max_file_size, 512 * 1024);
    assert_eq!(config.retry.initial_delay, Duration::from_millis(500));
    assert!(
        error(&format!("{BASE}\n[upload]\nmax_file_size = \"lots\"\n"))
            .contains("upload.max_file_size")
    );
    Ok(())
}

#[test]
fn absolute_cleans_dots() {
    assert_eq!(
        absolute(Path::new("../x/./y"), Path::new("/etc/extdrop")),
        Path::new("/etc/x/y")
    );
    assert_eq!(
        absolute(Path::new("/a/b"), Path::new("/etc")),
        Path::new("/a/b")
    );
}

/// Asserts that `text` is refused with an error about `key` at `line:column`.
#[track_caller]
fn assert_refused_at(text: &str, at: &str, key: &str) {
    let e = error(text);
    let expected = format!("/etc/extdrop/config.toml:{at}: {key}: ");
    assert!(
        e.starts_with(&expected),
        "expected {expected:?}…, got {e:?}"
    );
}

// The line numbers below count BASE's lines: it starts with an empty line, so `[codearts]` is
// line 2, `[auth]` line 6, `[[watch]]` line 9, `failed` line 13 and `[[watch.rule]]` line 15.
// Text appended after BASE starts on line 18.

#[test]
fn number_and_string_errors_point_at_the_value() {
    for (table, line, at, key) in [
        ("upload", "concurrency = 0", "19:15", "upload.concurrency"),
        ("retry", "multiplier = 0.5", "19:14", "retry.multiplier"),
        ("retry", "jitter = 1.5", "19:10", "retry.jitter"),
        (
            "retry",
            "max_attempts = 1001",
            "19:16",
            "retry.max_attempts",
        ),
        ("log", "level = \"extdrop=loud\"", "19:9", "log.level"),
        ("retry", "max_delay = \"1ms\"", "19:13", "retry.max_delay"),
        (
            "retry",
            "initial_delay = \"10m\"",
            "19:17",
            "retry.initial_delay",
        ),
    ] {
        assert_refused_at(&format!("{BASE}\n[{table}]\n{line}\n"), at, key);
    }
}

#[test]
fn a_whole_number_is_a_valid_multiplier() -> Result<(), ConfigError> {
    let config = parse(&format!("{BASE}\n[retry]\nmultiplier = 3\n"))?;
    assert_eq!(config.retry.multiplier, 3.0);
    Ok(())
}

#[test]
fn glob_errors_point_at_the_glob() {
    let text = BASE.replace(
        "failed = \"failed\"",
        "failed = \"failed\"\nexclude = [\".*\", \"[z\"]",
    );
    assert_refused_at(&text, "14:18", "watch[0].exclude[1]");
}

#[test]
fn business_type_errors_point_at_the_element() {
    let list = |list: &str| {
        BASE.replace(
            "failed = \"failed\"",
            &format!("failed = \"failed\"\nbusiness_types = {list}"),
        )
    };
    assert_refused_at(
        &list("[\"Build\", \"build\"]"),
        "14:28",
        "watch[0].business_types",
    );
    assert_refused_at(
        &list("[\"Build\", \"Gate!\"]"),
        "14:28",
        "watch[0].business_types",
    );
    assert_refused_at(&list("[]"), "14:18", "watch[0].business_types");
}

#[test]
fn rule_errors_point_at_the_rule_or_its_key() {
    let both = BASE.replace(
        "template = \"{plugin_name}__{business_type}.zip\"",
        "template = \"{plugin_name}.zip\"\nregex = 'x'",
    );
    assert_refused_at(&both, "15:1", "watch[0].rule[0]");
    let constant = BASE.replace(
        "template = \"{plugin_name}__{business_type}.zip\"",
        "template = \"{plugin_name}.zip\"\nbusiness_type = \"Nope\"",
    );
    assert_refused_at(&constant, "17:17", "watch[0].rule[0].business_type");
}

#[test]
fn auth_errors_point_at_the_key_or_the_table() {
    let auth = |keys: &str| BASE.replace("token = \"t\"", keys);
    assert_refused_at(
        &auth("token = \"t\"\nuser_name = \"u\""),
        "8:13",
        "auth.user_name",
    );
    // A missing key: the [auth] table.
    assert_refused_at(
        &auth("method = \"password\"\nuser_name = \"u\""),
        "6:1",
        "auth.domain_name",
    );
    // An empty one counts as missing but points at itself.
    assert_refused_at(
        &auth("method = \"password\"\nuser_name = \" \""),
        "8:13",
        "auth.user_name",
    );
    assert_refused_at(
        &auth("method = \"password\"\niam_endpoint = \"ftp://iam\""),
        "8:16",
        "auth.iam_endpoint",
    );
}

#[test]
fn folder_errors_point_at_the_folder() {
    assert_refused_at(
        &BASE.replace("done = \"done\"", "done = \"in\""),
        "12:8",
        "watch[0].done",
    );
    assert_refused_at(
        &BASE.replace("failed = \"failed\"", "failed = \"done\""),
        "13:10",
        "watch[0].failed",
    );
    assert_refused_at(
        &BASE.replace(
            "failed = \"failed\"",
            "failed = \"in/failed\"\nrecursive = true",
        ),
        "13:10",
        "watch[0].failed",
    );
    // The second watch: `[[watch]]` on line 18, `name` on 19, `inbox` on 20.
    assert_refused_at(
        &two_watches("inbox = \"/\"\ndone = \"/x/d2\"\nfailed = \"/x/f2\""),
        "20:9",
        "watch[1].inbox",
    );
    assert_refused_at(
        &two_watches("inbox = \"in2\"\ndone = \"done\"\nfailed = \"failed\"")
            .replace("name = \"two\"", "name = \"ext\""),
        "19:8",
        "watch[1].name",
    );
}

#[test]
fn a_missing_key_points_at_its_table() {
    assert_refused_at(&BASE.replace("inbox = \"in\"", ""), "9:1", "watch[0].inbox");
    assert_refused_at(&BASE.replace("name = \"ext\"", ""), "9:1", "watch[0].name");
    let no_rule = BASE.replace(
        "[[watch.rule]]\ntemplate = \"{plugin_name}__{business_type}.zip\"",
        "",
    );
    assert_refused_at(&no_rule, "9:1", "watch[0].rule");
    assert_refused_at(
        &BASE.replace(
            "endpoint = \"https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com/\"",
            "",
        ),
        "2:1",
        "codearts.endpoint",
    );
    assert_refused_at(
        &BASE.replace("domain_id = \"ce8df55870164338a72d7e828a966a2a\"", ""),
        "2:1",
        "codearts.domain_id",
    );
}

#[test]
fn codearts_values_point_at_the_value() {
    assert_refused_at(
        &BASE.replace(
            "domain_id = \"ce8df55870164338a72d7e828a966a2a\"",
            "domain_id = \"ce8df55870164338a72d7e828a966a2a\"\nca_file = \"\"",
        ),
        "5:11",
        "codearts.ca_file",
    );
    assert_refused_at(
        &format!("{BASE}\n[metrics]\nlisten = \"localhost\"\n"),
        "19:10",
        "metrics.listen",
    );
}

/// Parses `text` as if read from `dir/config.toml`, so that relative folders are in `dir`.
fn error_in(dir: &Path, text: &str) -> String {
    match Config::parse(text, &dir.join("config.toml")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// Regression (issue 7, defect 5): `done` as a symbolic link to the inbox passed `check`, and
/// every file was uploaded twice.
#[test]
fn a_done_that_links_to_the_inbox_is_the_inbox() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("in"))?;
    std::os::unix::fs::symlink(dir.path().join("in"), dir.path().join("done"))?;
    let e = error_in(dir.path(), BASE);
    let expected = format!(
        "{}:12:8: watch[0].done: ",
        dir.path().join("config.toml").display()
    );
    assert!(e.starts_with(&expected), "{e}");
    assert!(e.contains("is the inbox itself"), "{e}");

    // A link into the inbox of a recursive watch, through a folder not made yet.
    let text = BASE.replace(
        "failed = \"failed\"",
        "failed = \"failed\"\nrecursive = true",
    );
    std::fs::remove_file(dir.path().join("done"))?;
    std::os::unix::fs::symlink("in/later", dir.path().join("done"))?;
    let e = error_in(dir.path(), &text);
    assert!(e.contains("watch[0].done"), "{e}");
    assert!(e.contains("inside the inbox of a recursive watch"), "{e}");
    Ok(())
}

/// Regression (issue 7, defect 5): `failed = "<inbox>/.extdrop"` passed `check`, and `status`
/// counted each failure twice (as a failure and as a claim).
#[test]
fn the_work_folder_is_neither_done_nor_failed() {
    for folder in ["in/.extdrop", "in/.extdrop/failed", "in/sub/../.extdrop"] {
        assert_refused_at(
            &BASE.replace("failed = \"failed\"", &format!("failed = \"{folder}\"")),
            "13:10",
            "watch[0].failed",
        );
    }
    let e = error(&BASE.replace("done = \"done\"", "done = \"in/.extdrop\""));
    assert!(e.contains("watch[0].done"), "{e}");
    assert!(e.contains("work folder"), "{e}");
    // A subfolder of the inbox of a flat watch is not watched: it stays allowed.
    assert!(parse(&BASE.replace("done = \"done\"", "done = \"in/done\"")).is_ok());
}

/// Regression (issue 7, defect 5): another watch's folder that links into an inbox is in it.
#[test]
fn a_link_into_another_watchs_inbox_is_inside_it() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("in"))?;
    std::os::unix::fs::symlink(dir.path().join("in"), dir.path().join("elsewhere"))?;
    let e = error_in(
        dir.path(),
        &two_watches("inbox = \"in2\"\ndone = \"elsewhere/d2\"\nfailed = \"f2\""),
    );
    assert!(e.contains("watch[0].inbox"), "{e}");
    assert!(e.contains("resolves to"), "{e}");
    Ok(())
}

/// `region` instead of `endpoint`: every row of the SDK's table (SPEC §5), through the parser.
#[test]
fn region_resolves_every_row_of_the_table() -> Result<(), ConfigError> {
    for (name, host) in region::REGIONS {
        let text = BASE.replace(
            "endpoint = \"https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com/\"",
            &format!("region = \"{name}\""),
        );
        let config = parse(&text)?;
        assert_eq!(
            config.codearts.endpoint,
            format!("https://{host}"),
            "{name}"
        );
    }
    // The five regions the old example's pattern got wrong.
    let text = BASE.replace(
        "endpoint = \"https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com/\"",
        "region = \"tr-west-1\"",
    );
    assert_eq!(
        parse(&text)?.codearts.endpoint,
        "https://pipeline-external.tr-west-1.myhuaweicloud.com"
    );
    Ok(())
}

#[test]
fn endpoint_wins_over_region() -> Result<(), ConfigError> {
    let text = BASE.replace("domain_id =", "region = \"af-south-1\"\ndomain_id =");
    assert_eq!(
        parse(&text)?.codearts.endpoint,
        "https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com"
    );
    Ok(())
}

#[test]
fn an_unknown_region_is_named_with_the_known_ones() {
    let text = BASE.replace(
        "endpoint = \"https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com/\"",
        "region = \"cn-north-9\"",
    );
    assert_refused_at(&text, "3:10", "codearts.region");
    let e = error(&text);
    for needle in [
        "\"cn-north-9\" is not a known region",
        "cn-north-1",
        "tr-west-1",
        "af-south-1",
    ] {
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    }
    // Even next to an endpoint, a misspelt region is refused.
    let text = BASE.replace("domain_id =", "region = \"cn-nort-4\"\ndomain_id =");
    assert_refused_at(&text, "4:10", "codearts.region");
    // Neither key: the message offers both.
    let text = BASE.replace(
        "endpoint = \"https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com/\"",
        "",
    );
    assert!(error(&text).contains("set region"));
}

#[test]
fn agency_takes_only_the_metadata_endpoint() -> Result<(), ConfigError> {
    let config = parse(&BASE.replace("token = \"t\"", "method = \"agency\""))?;
    assert_eq!(
        config.auth,
        AuthConfig::Agency {
            metadata_endpoint: "http://169.254.169.254".to_owned()
        }
    );
    let config = parse(&BASE.replace(
        "token = \"t\"",
        "method = \"agency\"\nmetadata_endpoint = \"http://127.0.0.1:8080/\"",
    ))?;
    assert_eq!(
        config.auth,
        AuthConfig::Agency {
            metadata_endpoint: "http://127.0.0.1:8080".to_owned()
        }
    );
    assert_refused_at(
        &BASE.replace(
            "token = \"t\"",
            "method = \"agency\"\nmetadata_endpoint = \"169.254.169.254\"",
        ),
        "8:21",
        "auth.metadata_endpoint",
    );
    assert_refused_at(
        &BASE.replace(
            "token = \"t\"",
            "method = \"agency\"\naccess_key_file = \"ak\"",
        ),
        "8:19",
        "auth.access_key_file",
    );
    assert_refused_at(
        &BASE.replace(
            "token = \"t\"",
            "metadata_endpoint = \"http://169.254.169.254\"",
        ),
        "7:21",
        "auth.metadata_endpoint",
    );
    Ok(())
}

/// Registering and publishing read the package's version, so they need the package check;
/// the error points at the key that asks for them (issue 8).
#[test]
fn register_and_publish_need_validate_package() {
    let no_check = "\n[upload]\nvalidate_package = false\n";
    let watch_level = BASE.replace(
        "failed = \"failed\"\n",
        "failed = \"failed\"\nregister = true\n",
    );
    assert_refused_at(
        &format!("{watch_level}{no_check}"),
        "14:12",
        "watch[0].register",
    );
    let watch_level = BASE.replace(
        "failed = \"failed\"\n",
        "failed = \"failed\"\npublish = true\n",
    );
    assert_refused_at(
        &format!("{watch_level}{no_check}"),
        "14:11",
        "watch[0].publish",
    );
    let rule_level = format!("{BASE}publish = true\n{no_check}");
    assert_refused_at(&rule_level, "17:11", "watch[0].rule[0].publish");
    let e = error(&rule_level);
    assert!(e.contains("upload.validate_package"), "{e}");
    // Off is always fine.
    assert!(parse(&format!("{BASE}publish = false\n{no_check}")).is_ok());
}

#[test]
fn a_rule_overrides_its_watchs_publish() -> Result<(), ConfigError> {
    let text = BASE.replace(
        "failed = \"failed\"\n",
        "failed = \"failed\"\npublish = true\nregister = true\n",
    );
    let text = format!(
        "{text}publish = false\n\n[[watch.rule]]\ntemplate = \"r/{{plugin_name}}__{{business_type}}.zip\"\n"
    );
    let config = parse(&text.replace(
        "failed = \"failed\"\n",
        "failed = \"failed\"\nrecursive = true\n",
    ))?;
    let w = &config.watches[0];
    assert!(w.register);
    assert!(!w.publishes(0), "the rule says no");
    assert!(w.publishes(1), "the rule follows its watch");
    let plain = parse(BASE)?;
    assert!(
        !plain.watches[0].register && !plain.watches[0].publishes(0),
        "off by default"
    );
    Ok(())
}
