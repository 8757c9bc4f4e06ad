//! The configuration file as written: every key optional, unknown keys refused.
//!
//! Values whose meaning is checked later carry their span so that the error can point at them.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub codearts: Option<CodeArts>,
    pub auth: Option<Auth>,
    pub upload: Option<Upload>,
    pub retry: Option<Retry>,
    pub metrics: Option<Metrics>,
    pub log: Option<Log>,
    #[serde(default)]
    pub watch: Vec<Watch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeArts {
    pub endpoint: Option<Spanned<String>>,
    pub domain_id: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub request_timeout: Option<Spanned<String>>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub method: Option<Spanned<String>>,
    pub token_file: Option<String>,
    pub token: Option<String>,
    pub iam_endpoint: Option<String>,
    pub user_name: Option<String>,
    pub domain_name: Option<String>,
    pub project: Option<String>,
    pub password_file: Option<String>,
    pub access_key_file: Option<String>,
    pub secret_key_file: Option<String>,
    pub security_token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    pub concurrency: Option<i64>,
    pub max_file_size: Option<Spanned<String>>,
    pub validate_package: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub initial_delay: Option<Spanned<String>>,
    pub max_delay: Option<Spanned<String>>,
    pub multiplier: Option<f64>,
    pub jitter: Option<f64>,
    pub max_attempts: Option<i64>,
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
    pub level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    pub name: Option<Spanned<String>>,
    pub inbox: Option<Spanned<String>>,
    pub done: Option<Spanned<String>>,
    pub failed: Option<Spanned<String>>,
    pub recursive: Option<bool>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub settle: Option<Spanned<String>>,
    pub poll: Option<bool>,
    pub poll_interval: Option<Spanned<String>>,
    pub rescan_interval: Option<Spanned<String>>,
    pub business_types: Option<Vec<String>>,
    #[serde(default)]
    pub rule: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub template: Option<Spanned<String>>,
    pub regex: Option<Spanned<String>>,
    pub business_type: Option<String>,
}
