//! The monitoring files in `contrib/` against the running daemon: every metric the Grafana
//! dashboard and the Prometheus rules name is one `/metrics` really exports, so a misspelt or
//! removed metric fails here rather than as a silent empty panel or an alert that never fires.

use std::collections::BTreeSet;
use std::path::Path;

use crate::harness::Sandbox;
use crate::service::http_get;

/// The files shipped for operators; each must name metrics, or the check would be vacuous.
const MONITORING_FILES: [&str; 2] = [
    "contrib/grafana/extdrop.json",
    "contrib/prometheus/extdrop.rules.yml",
];

/// Every metric name extdrop exports starts with this (the registry's prefix).
const PREFIX: &str = "extdrop_";

/// Recording rules the rules file defines are named `extdrop:...` (Prometheus's convention for
/// level:metric:operations), so they never look like an exported metric.
const RECORDING_PREFIX: &str = "extdrop:";

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Every identifier in `text` that starts with `prefix` at a name boundary and goes on past it,
/// whole (a metric name may hold `:`, so a name glued to more is reported as it stands, not
/// cut short).
fn names_with_prefix(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices(prefix) {
        if text[..at].chars().next_back().is_some_and(is_name_char) {
            continue; // inside a longer identifier, e.g. `my_extdrop_x`
        }
        let rest = &text[at..];
        let end = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
        // The prefix alone is prose ("extdrop: the inbox, ..."), not a name.
        if end > prefix.len() {
            names.insert(rest[..end].to_owned());
        }
    }
    names
}

/// The names a query may use for what the exposition declares with `# TYPE NAME KIND`: the
/// name itself, a histogram's `_bucket`, `_sum` and `_count`, and the `_total` / `_info`
/// spellings of OpenMetrics counters and info metrics (in the classic format the `# TYPE`
/// line carries them already).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(declared) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = declared.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            panic!("bad TYPE line: {line}");
        };
        names.insert(name.to_owned());
        let suffixes: &[&str] = match kind {
            "histogram" => &["_bucket", "_sum", "_count"],
            "counter" if !name.ends_with("_total") => &["_total"],
            "info" if !name.ends_with("_info") => &["_info"],
            _ => &[],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

#[test]
fn every_metric_the_dashboard_and_rules_name_is_exported() {
    let mut s = Sandbox::new();
    s.tables = "[metrics]\nlisten = \"127.0.0.1:0\"".to_owned();
    let daemon = s.start();
    let addr = daemon.metrics_address();
    // One accepted upload, so that every family has had its moment (the last success's
    // timestamp exists only after one).
    s.drop_named("monitored", "Build");
    s.wait_until("the file in done", Some(&daemon), || {
        s.files("done").len() == 1
    });
    let (status, exposition) = http_get(&addr, "/metrics");
    assert_eq!(status, 200, "{exposition}");
    let exported = exported_names(&exposition);
    // The derivation above is checked against the samples themselves: each one is named.
    for sample in exposition.lines().filter(|l| !l.starts_with('#')) {
        let name: String = sample.chars().take_while(|&c| is_name_char(c)).collect();
        assert!(
            name.is_empty() || exported.contains(&name),
            "sample {name} not derived from a # TYPE line"
        );
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |file: &str| {
        std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("cannot read {file}: {e}"))
    };
    // Recording rules used anywhere must be ones the rules file records.
    let recorded: BTreeSet<String> = read(MONITORING_FILES[1])
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- record:"))
        .map(|name| name.trim().to_owned())
        .collect();
    let mut unknown = Vec::new();
    for file in MONITORING_FILES {
        let text = read(file);
        let named = names_with_prefix(&text, PREFIX);
        assert!(
            named.len() >= 5,
            "{file} names only {named:?}: the check would prove nothing"
        );
        unknown.extend(
            named
                .difference(&exported)
                .map(|name| format!("{file}: {name}")),
        );
        unknown.extend(
            names_with_prefix(&text, RECORDING_PREFIX)
                .difference(&recorded)
                .map(|name| format!("{file}: {name} (no rule records it)")),
        );
    }
    assert!(
        unknown.is_empty(),
        "names the daemon does not export:\n  {}\nexported: {exported:?}",
        unknown.join("\n  ")
    );
}

#[test]
fn names_are_found_whole_and_only_at_a_boundary() {
    let text = r#"rate(extdrop_files_total{x="y"}[5m]) my_extdrop_no extdrop:rule:seconds extdrop: prose
        "extdrop_upload_duration_seconds_bucket" extdrop_x:y"#;
    assert_eq!(
        names_with_prefix(text, PREFIX),
        BTreeSet::from([
            "extdrop_files_total".to_owned(),
            "extdrop_upload_duration_seconds_bucket".to_owned(),
            "extdrop_x:y".to_owned(),
        ])
    );
    assert_eq!(
        names_with_prefix(text, RECORDING_PREFIX),
        BTreeSet::from(["extdrop:rule:seconds".to_owned()])
    );
    let exported = exported_names(
        "# TYPE extdrop_files counter\n# TYPE extdrop_d_seconds histogram\n# TYPE extdrop_g gauge\n",
    );
    for name in [
        "extdrop_files",
        "extdrop_files_total",
        "extdrop_d_seconds_bucket",
        "extdrop_d_seconds_count",
        "extdrop_g",
    ] {
        assert!(exported.contains(name), "{name}");
    }
    assert!(!exported.contains("extdrop_g_total"));
}
