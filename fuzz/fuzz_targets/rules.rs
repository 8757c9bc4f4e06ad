//! Fuzz target `rules`: a watch's naming rules ([`RuleSet::derive`]) on arbitrary relative
//! paths.
//!
//! The rules come from a fixed configuration parsed by [`Config::parse`], so they are compiled
//! exactly as the daemon compiles them: templates with `{plugin_name}`, `{business_type}`,
//! `{version}`, `*` and a subfolder, and regexes with named groups and a constant
//! business_type.
//!
//! Proves: `derive` never panics; a `Named` answer carries a plugin_name and a business_type
//! of 1–50 letters, digits, `_` and `-`, the business_type spelled exactly as in the watch's
//! `business_types`, the plugin_name taken from the path itself; every reason is one line.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use extdrop::config::Config;
use extdrop::rules::{Derivation, RuleSet};
use libfuzzer_sys::fuzz_target;

/// The watch's rules; the first three mirror config.example.toml and README's subfolder rule.
const CONFIG: &str = r#"
[codearts]
endpoint = "https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com"
domain_id = "ce8df55870164338a72d7e828a966a2a"

[auth]
method = "token"
token = "fuzz"

[[watch]]
name = "fuzz"
inbox = "/fuzz/inbox"
done = "/fuzz/done"
failed = "/fuzz/failed"
recursive = true
business_types = ["Build", "Gate", "Deploy", "Test", "Normal", "my-Type_2"]

[[watch.rule]]
template = "{plugin_name}__{business_type}.zip"

[[watch.rule]]
regex = '^(?P<plugin_name>[A-Za-z0-9_-]{1,50})-(?P<version>\d+\.\d+\.\d+)\.zip$'
business_type = "Normal"

[[watch.rule]]
template = "{business_type}/{plugin_name}.zip"

[[watch.rule]]
template = "*/{plugin_name}-{version}*.zip"
business_type = "gate"

[[watch.rule]]
regex = '^(?:.*/)?(?P<business_type>[^/_]*)_(?P<plugin_name>[^/]*?)(?:\.v(?P<version>[0-9.]+))?\.(?:zip|ZIP)$'
"#;

fn rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| {
        match Config::parse(CONFIG, Path::new("/fuzz/config.toml")) {
            Ok(config) => match config.watches.into_iter().next() {
                Some(watch) => watch.rules,
                None => panic!("the fuzz configuration has no watch"),
            },
            // A broken fixed configuration is the harness's bug; stop at once and say why.
            Err(err) => panic!("the fuzz configuration is refused: {err}"),
        }
    })
}

fn documented(name: &str) -> bool {
    (1..=50).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fuzz_target!(|rel_path: &str| {
    let rules = rules();
    match rules.derive(rel_path) {
        Derivation::Named {
            rule,
            plugin_name,
            business_type,
            ..
        } => {
            assert!(rule < rules.rules().len());
            assert!(documented(&plugin_name), "plugin_name {plugin_name:?}");
            assert!(
                documented(&business_type),
                "business_type {business_type:?}"
            );
            assert!(
                rules.business_types().contains(&business_type),
                "business_type {business_type:?} is not spelled as listed"
            );
            assert!(rel_path.contains(plugin_name.as_str()));
        }
        Derivation::Invalid { rule, reason } => {
            assert!(rule < rules.rules().len());
            assert!(!reason.is_empty() && !reason.contains('\n'), "{reason:?}");
        }
        Derivation::NoMatch { reason } => {
            assert!(!reason.is_empty() && !reason.contains('\n'), "{reason:?}");
        }
    }
});
