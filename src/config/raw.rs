//! The configuration file as written: every key optional, unknown keys refused.
//!
//! Values whose meaning is checked later carry their span so that the error can point at them;
//! so do the tables whose required keys are checked later (a missing key points at its table).
//! Only the booleans go without, every value of theirs being acceptable, except `register` and
//! `publish`, whose `true` needs `validate_package`.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub codearts: Option<Spanned<CodeArts>>,
    pub auth: Option<Spanned<Auth>>,
    pub upload: Option<Upload>,
    pub retry: Option<Retry>,
    pub metrics: Option<Metrics>,
    pub log: Option<Log>,
    #[serde(default)]
    pub watch: Vec<Spanned<Watch>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeArts {
    pub endpoint: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub domain_id: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub request_timeout: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub method: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
    pub iam_endpoint: Option<Spanned<String>>,
    pub user_name: Option<Spanned<String>>,
    pub domain_name: Option<Spanned<String>>,
    pub project: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub access_key_file: Option<Spanned<String>>,
    pub secret_key_file: Option<Spanned<String>>,
    pub security_token_file: Option<Spanned<String>>,
    pub metadata_endpoint: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    pub concurrency: Option<Spanned<i64>>,
    pub max_file_size: Option<Spanned<String>>,
    pub validate_package: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub initial_delay: Option<Spanned<String>>,
    pub max_delay: Option<Spanned<String>>,
    pub multiplier: Option<Spanned<f64>>,
    pub jitter: Option<Spanned<f64>>,
    pub max_attempts: Option<Spanned<i64>>,
    pub max_elapsed: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub format: Option<Spanned<String>>,
    pub level: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    pub name: Option<Spanned<String>>,
    pub inbox: Option<Spanned<String>>,
    pub done: Option<Spanned<String>>,
    pub failed: Option<Spanned<String>>,
    pub recursive: Option<bool>,
    pub include: Option<Vec<Spanned<String>>>,
    pub exclude: Option<Vec<Spanned<String>>>,
    pub settle: Option<Spanned<String>>,
    pub poll: Option<bool>,
    pub poll_interval: Option<Spanned<String>>,
    pub rescan_interval: Option<Spanned<String>>,
    pub business_types: Option<Spanned<Vec<Spanned<String>>>>,
    pub register: Option<Spanned<bool>>,
    pub publish: Option<Spanned<bool>>,
    #[serde(default)]
    pub rule: Vec<Spanned<Rule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub template: Option<Spanned<String>>,
    pub regex: Option<Spanned<String>>,
    pub business_type: Option<Spanned<String>>,
    pub publish: Option<Spanned<bool>>,
}
