//! What happened to a file: the `<name>.result.json` report of SPEC §3.
//!
//! The field names and their order are a contract with outside tools; do not rename them.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Where a file ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Uploaded; the file is in `done`.
    Done,
    /// Not uploaded; the file is in `failed` and `reason` says why.
    Failed,
}

impl Outcome {
    /// `done` or `failed`, as in reports and folder names.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
        }
    }
}

/// The report written beside a filed file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The file's path relative to its inbox, as it was dropped.
    pub file: String,
    /// The watch that took it.
    pub watch: String,
    /// `done` or `failed`.
    pub outcome: Outcome,
    /// Derived from the name, when a rule matched.
    pub plugin_name: Option<String>,
    /// Derived from the name (canonical spelling), when a rule matched.
    pub business_type: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the content, when it was read.
    pub sha256: Option<String>,
    /// Upload attempts made (0 when the file was refused before any).
    pub attempts: u32,
    /// HTTP status of the last answer, if any.
    pub http_status: Option<u16>,
    /// `error_code` of the last error answer.
    pub error_code: Option<String>,
    /// `error_msg` of the last error answer.
    pub error_msg: Option<String>,
    /// `X-Request-Id` of the last answer.
    pub request_id: Option<String>,
    /// For a failure: one human sentence saying why.
    pub reason: Option<String>,
    /// When extdrop first saw the file (RFC 3339, UTC).
    pub first_seen: String,
    /// When the outcome was decided (RFC 3339, UTC).
    pub finished: String,
    /// The release steps' keys (`version`, `registered`, `published`), written at the top
    /// level; absent from reports of older versions, which read as their defaults.
    #[serde(flatten)]
    pub release: ReleaseFacts,
}

/// What a report says about the release steps (SPEC §6).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReleaseFacts {
    /// The manifest's version whenever the package was checked, else null.
    pub version: Option<String>,
    /// Whether extdrop registered the extension for this file (across restarts).
    pub registered: bool,
    /// True when published; false when publishing was asked for but did not happen; null
    /// when it was not asked for.
    pub published: Option<bool>,
}

/// Formats a time as RFC 3339 UTC with whole seconds, the form used in reports.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    /// A report as versions before the release flow wrote it.
    const OLD: &str = r#"{"file":"a__Build.zip","watch":"w","outcome":"done","plugin_name":"a",
        "business_type":"Build","size":1,"sha256":null,"attempts":1,"http_status":200,
        "error_code":null,"error_msg":null,"request_id":"r","reason":null,
        "first_seen":"2026-11-27T10:00:00Z","finished":"2026-11-27T10:00:01Z"}"#;

    #[test]
    fn old_reports_still_load_and_new_keys_sit_at_the_top_level() {
        let mut report: Report = serde_json::from_str(OLD).unwrap();
        assert_eq!(report.release, ReleaseFacts::default());
        report.release = ReleaseFacts {
            version: Some("1.0.0".to_owned()),
            registered: true,
            published: Some(false),
        };
        let json = serde_json::to_value(&report).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let old: serde_json::Value = serde_json::from_str(OLD).unwrap();
        for key in old.as_object().unwrap().keys() {
            assert_eq!(json[key], old[key], "{key} kept as it was");
        }
        assert!(keys.contains(&"version") && keys.contains(&"registered"));
        assert_eq!(json["version"], "1.0.0");
        assert_eq!(json["registered"], true);
        assert_eq!(json["published"], false);
        assert!(json.get("release").is_none(), "flattened");
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }
}
