//! The configuration file: parse, then prove.
//!
//! The TOML is deserialized into the raw structs of [`raw`] (unknown keys are errors there), then
//! [`Config::load`] turns them into a [`Config`] whose types leave no bad state to check later:
//! absolute folders, compiled rules and globs, [`Duration`]s, a checked [`DomainId`]. Nothing
//! downstream validates again. Every error names the key, and — where the TOML says where it
//! is — the line and column.

mod raw;
pub mod region;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::auth::{AuthConfig, Secret};
use crate::rules::{Pattern, Rule, RuleSet};

/// Default location of the configuration file when neither `-c` nor `$EXTDROP_CONFIG` is given.
pub const DEFAULT_PATH: &str = "/etc/extdrop/config.toml";

/// The ECS metadata service, where `method = "agency"` gets its credentials by default.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://169.254.169.254";

/// The business types CodeArts uses today; a watch accepts these unless it says otherwise.
pub const DEFAULT_BUSINESS_TYPES: [&str; 5] = ["Build", "Gate", "Deploy", "Test", "Normal"];

/// A fully validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (absolute).
    pub path: PathBuf,
    /// Where and as whom uploads go.
    pub codearts: CodeArts,
    /// The credentials of `[auth]`.
    pub auth: AuthConfig,
    /// `[upload]`.
    pub upload: Upload,
    /// `[retry]`.
    pub retry: RetryPolicy,
    /// `[metrics] listen`, if metrics are on.
    pub metrics_listen: Option<SocketAddr>,
    /// `[log]`.
    pub log: Log,
    /// The `[[watch]]` tables, in file order; at least one.
    pub watches: Vec<Watch>,
}

/// `[codearts]`: the endpoint and the tenant.
#[derive(Debug, Clone)]
pub struct CodeArts {
    /// Base URL without a trailing slash, e.g. `https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com`.
    pub endpoint: String,
    /// The tenant (domain) id in the upload path.
    pub domain_id: DomainId,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one whole upload attempt.
    pub request_timeout: Duration,
    /// Extra trusted CA bundle (PEM) for private endpoints.
    pub ca_file: Option<PathBuf>,
}

/// A CodeArts domain (tenant) id: exactly 32 ASCII letters and digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainId(String);

impl DomainId {
    /// Checks the shape the API page prescribes.
    pub fn parse(value: &str) -> Result<DomainId, String> {
        if value.len() == 32 && value.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(DomainId(value.to_owned()))
        } else {
            Err(format!(
                "\"{value}\" is not a domain id: it must be 32 letters and digits"
            ))
        }
    }

    /// The id as it goes into the URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[upload]`.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Uploads in flight at once, all watches together (≥ 1).
    pub concurrency: usize,
    /// Larger files go to failed unread.
    pub max_file_size: u64,
    /// Check the ZIP and its manifest before uploading.
    pub validate_package: bool,
}

/// `[retry]`: the per-file retry budget and the shape of the backoff.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the second attempt.
    pub initial_delay: Duration,
    /// Upper bound of one delay (before jitter).
    pub max_delay: Duration,
    /// Growth factor per attempt (≥ 1).
    pub multiplier: f64,
    /// Randomisation factor in `[0, 1]`: a delay `d` becomes uniform in `d·(1±jitter)`.
    pub jitter: f64,
    /// Attempts per file, the first included (≥ 1).
    pub max_attempts: u32,
    /// Time per file from its first attempt after which no new attempt starts.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            multiplier: 2.0,
            jitter: 0.5,
            max_attempts: 10,
            max_elapsed: Duration::from_secs(3600),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct Log {
    /// Output format.
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `extdrop=debug`.
    pub level: String,
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Plain lines without colours or timestamps under journald, coloured text on a terminal.
    Auto,
    /// Plain text with timestamps.
    Text,
    /// One JSON object per line.
    Json,
}

/// One `[[watch]]`: an inbox, where its files end up, and how their names are read.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Unique name, shown in logs, status and reports.
    pub name: String,
    /// The watched folder (absolute).
    pub inbox: PathBuf,
    /// Where uploaded files go (absolute).
    pub done: PathBuf,
    /// Where files that could not be uploaded go (absolute).
    pub failed: PathBuf,
    /// Also watch subfolders of the inbox.
    pub recursive: bool,
    /// Which file names are candidates.
    pub include: Globs,
    /// Which names are never touched (checked on every path segment).
    pub exclude: Globs,
    /// A file is ready once its size and mtime have not changed this long.
    pub settle: Duration,
    /// Poll instead of inotify.
    pub poll: bool,
    /// Whether `poll` was set in the file; when it was not, an inbox on a network or FUSE
    /// file system is polled anyway (see [`crate::watch::polled`]).
    pub poll_set: bool,
    /// Poll period when `poll` is on.
    pub poll_interval: Duration,
    /// Period of the safety-net full scan.
    pub rescan_interval: Duration,
    /// The naming rules, with the accepted business types.
    pub rules: RuleSet,
    /// `register`: create an extension CodeArts does not know yet before uploading (SPEC §6).
    pub register: bool,
    /// `publish`: publish each uploaded version as official, unless a rule says otherwise.
    pub publish: bool,
    /// Each rule's own `publish`, by rule index; `None` follows the watch.
    pub rule_publish: Vec<Option<bool>>,
}

impl Watch {
    /// Whether a file named by rule `rule` is published after its upload.
    pub fn publishes(&self, rule: usize) -> bool {
        self.rule_publish
            .get(rule)
            .copied()
            .flatten()
            .unwrap_or(self.publish)
    }

    /// The hidden work folder inside the inbox that holds claimed files.
    pub fn work_dir(&self) -> PathBuf {
        self.inbox.join(crate::store::WORK_DIR)
    }

    /// Why [`Watch::admits`] refuses a path, in the operator's words naming the pattern that
    /// decided it; `None` when it is admitted. Kept next to `admits` so the two agree.
    pub fn refusal(&self, rel_path: &str) -> Option<String> {
        if self.admits(rel_path) {
            return None;
        }
        let mut segments = rel_path.split('/').peekable();
        while let Some(segment) = segments.next() {
            if segment.is_empty() {
                return Some("an empty path segment".to_owned());
            }
            if segment == crate::store::WORK_DIR {
                return Some(format!("inside the work folder {}", crate::store::WORK_DIR));
            }
            if let Some(pattern) = self.exclude.first_match(segment) {
                return Some(format!(
                    "\"{segment}\" matches exclude pattern \"{pattern}\""
                ));
            }
            if segments.peek().is_none() {
                return Some(format!(
                    "\"{segment}\" matches no include pattern ({})",
                    self.include.patterns().join(", ")
                ));
            }
        }
        Some("an empty name".to_owned())
    }

    /// Whether a path relative to the inbox (with `/` separators) is a candidate: no segment is
    /// excluded or the work folder, and the file name is included.
    pub fn admits(&self, rel_path: &str) -> bool {
        let mut segments = rel_path.split('/').peekable();
        while let Some(segment) = segments.next() {
            if segment.is_empty()
                || segment == crate::store::WORK_DIR
                || self.exclude.matches(segment)
            {
                return false;
            }
            if segments.peek().is_none() {
                return self.include.matches(segment);
            }
        }
        false
    }
}

/// A compiled list of globs that remembers how it was written.
#[derive(Debug, Clone)]
pub struct Globs {
    patterns: Vec<String>,
    set: GlobSet,
}

impl Globs {
    fn compile(patterns: Vec<String>) -> Result<Globs, (usize, globset::Error)> {
        let mut builder = GlobSetBuilder::new();
        for (i, pattern) in patterns.iter().enumerate() {
            builder.add(glob(pattern).map_err(|e| (i, e))?);
        }
        let set = builder.build().map_err(|e| (0, e))?;
        Ok(Globs { patterns, set })
    }

    /// The first glob (as written) that matches a file name, for `explain` to say which.
    pub fn first_match(&self, name: &str) -> Option<&str> {
        let index = self.set.matches(name).into_iter().min()?;
        self.patterns.get(index).map(String::as_str)
    }

    /// Whether a file name matches any of the globs.
    pub fn matches(&self, name: &str) -> bool {
        self.set.is_match(name)
    }

    /// The globs as written.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    // Globs apply to one name, so `*` must not cross a `/`.
    GlobBuilder::new(pattern).literal_separator(true).build()
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// There is no file at the path: a newcomer's first command, usually, so say where the
    /// path came from and how to get going without one.
    #[error(
        "no configuration file at {}: name one with -c PATH or the EXTDROP_CONFIG variable \
         (default {DEFAULT_PATH}), start from config.example.toml, or try `extdrop demo`, which needs none",
        path.display(),
        DEFAULT_PATH = DEFAULT_PATH
    )]
    Missing {
        /// The file that is not there.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read the configuration {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has a key of the wrong type or an unknown key.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What toml/serde said, on one line.
        message: String,
    },
    /// A key has a value that is not acceptable.
    #[error("{}{}: {key}: {message}", path.display(), at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Line and column of the value, or of its table when a required key is missing; `None`
        /// only when the file has nothing to point at (no `[codearts]`, no `[[watch]]`).
        at: Option<(usize, usize)>,
        /// The key, spelled as in the file, e.g. `watch[0].rule[1].regex`.
        key: String,
        /// Why, in one sentence.
        message: String,
    },
}

impl Config {
    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let path = absolute(
            path,
            &std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        );
        let text = std::fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::Missing { path: path.clone() }
            } else {
                ConfigError::Read {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        Config::parse(&text, &path)
    }

    /// Parses and validates configuration text as if read from `path` (which anchors relative
    /// folders).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: raw::File = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let (line, column) = line_column(text, span.start);
            let mut message = e.message().trim().replace('\n', " ");
            // Some messages ("duplicate key") do not say which key: quote what the span covers.
            let quoted = text
                .get(span)
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
                .trim();
            if !quoted.is_empty() && quoted.len() <= 60 && !message.contains(quoted) {
                message = format!("{message}: `{quoted}`");
            }
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        })?;
        Builder { text, path }.build(raw)
    }
}

/// Turns a byte offset into a 1-based line and column.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, column)
}

/// Joins `path` onto `base` when relative and removes `.` and `..` lexically (folders need not
/// exist yet, so the file system cannot be asked).
pub fn absolute(path: &Path, base: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    };
    let mut clean = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    clean
}

/// Where `path` really is: `path` with every symbolic link resolved, as far as the folders
/// exist (the longest existing ancestor is canonicalized and the rest appended, since done and
/// failed may not exist yet). Folder overlaps are judged on these: a `done` that is a link to
/// the inbox is the inbox.
pub fn resolved(path: &Path) -> PathBuf {
    resolve_within(path, 40)
}

/// [`resolved`], following at most `links` dangling links (a loop of them ends there).
fn resolve_within(path: &Path, links: u32) -> PathBuf {
    if let Ok(real) = path.canonicalize() {
        return real;
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return path.to_owned();
    };
    // A dangling link (to a folder that is yet to be made) points where that folder will be.
    if links > 0
        && let Ok(target) = std::fs::read_link(path)
    {
        return resolve_within(&absolute(&target, parent), links - 1);
    }
    resolve_within(parent, links).join(name)
}

/// How a folder is shown in an overlap error: as written, and where it leads when that is
/// elsewhere.
fn shown(path: &Path, real: &Path) -> String {
    if path == real {
        path.display().to_string()
    } else {
        format!("{} (which resolves to {})", path.display(), real.display())
    }
}

/// Validation context: the text (for locations) and the file (for errors and relative paths).
struct Builder<'a> {
    text: &'a str,
    path: &'a Path,
}

type Spanned<T> = toml::Spanned<T>;

/// A byte range of the configuration text.
type Span = std::ops::Range<usize>;

/// Where a watch's name and folders are written, for the errors of [`Builder::check_folders`]
/// (the validated [`Watch`] keeps no spans).
struct WatchSpans {
    name: Span,
    inbox: Span,
    done: Span,
    failed: Span,
}

impl Builder<'_> {
    fn error(
        &self,
        key: impl Into<String>,
        at: Option<Span>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            at: at.map(|span| line_column(self.text, span.start)),
            key: key.into(),
            message: message.into(),
        }
    }

    fn duration(
        &self,
        key: &str,
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let parsed = humantime::parse_duration(value.get_ref().trim()).map_err(|e| {
            self.error(
                key,
                Some(value.span()),
                format!("\"{}\" is not a duration ({e}); write e.g. \"500ms\", \"2s\", \"5m\" or \"1h\"", value.get_ref()),
            )
        })?;
        Ok(parsed)
    }

    fn positive_duration(
        &self,
        key: &str,
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let parsed = self.duration(key, value, default)?;
        if parsed.is_zero() {
            return Err(self.error(key, value.map(|v| v.span()), "must be longer than zero"));
        }
        Ok(parsed)
    }

    fn folder(&self, key: &str, value: &Spanned<String>) -> Result<PathBuf, ConfigError> {
        if value.get_ref().trim().is_empty() {
            return Err(self.error(key, Some(value.span()), "must not be empty"));
        }
        let base = self.path.parent().unwrap_or(Path::new("/"));
        Ok(absolute(Path::new(value.get_ref()), base))
    }

    fn optional_path(&self, value: Option<Spanned<String>>) -> Option<PathBuf> {
        let base = self.path.parent().unwrap_or(Path::new("/"));
        value.map(|v| absolute(Path::new(v.get_ref()), base))
    }

    fn build(&self, raw: raw::File) -> Result<Config, ConfigError> {
        let codearts = self.codearts(raw.codearts)?;
        let auth = self.auth(raw.auth)?;
        let upload = self.upload(raw.upload.unwrap_or_default())?;
        let retry = self.retry(raw.retry.unwrap_or_default())?;
        let metrics_listen = match raw.metrics.and_then(|m| m.listen) {
            None => None,
            Some(listen) => Some(listen.get_ref().parse::<SocketAddr>().map_err(|_| {
                self.error(
                    "metrics.listen",
                    Some(listen.span()),
                    format!(
                        "\"{}\" is not an address with a port, e.g. \"127.0.0.1:9464\"",
                        listen.get_ref()
                    ),
                )
            })?),
        };
        let log = self.log(raw.log.unwrap_or_default())?;
        if raw.watch.is_empty() {
            return Err(self.error(
                "watch",
                None,
                "no [[watch]] table: add at least one inbox to watch",
            ));
        }
        let mut watches = Vec::with_capacity(raw.watch.len());
        let mut spans = Vec::with_capacity(raw.watch.len());
        for (i, w) in raw.watch.into_iter().enumerate() {
            let (watch, watch_spans) = self.watch(i, w, upload.validate_package)?;
            watches.push(watch);
            spans.push(watch_spans);
        }
        self.check_folders(&watches, &spans)?;
        Ok(Config {
            path: self.path.to_owned(),
            codearts,
            auth,
            upload,
            retry,
            metrics_listen,
            log,
            watches,
        })
    }

    fn codearts(&self, raw: Option<Spanned<raw::CodeArts>>) -> Result<CodeArts, ConfigError> {
        let Some(raw) = raw else {
            return Err(self.error(
                "codearts",
                None,
                "the [codearts] table is missing: it needs endpoint and domain_id",
            ));
        };
        let table = raw.span();
        let raw = raw.into_inner();
        // An unknown region is an error even when endpoint wins: it is a typo either way.
        let from_region = match &raw.region {
            None => None,
            Some(region) => Some(region::endpoint(region.get_ref().trim()).ok_or_else(|| {
                self.error(
                    "codearts.region",
                    Some(region.span()),
                    format!(
                        "\"{}\" is not a known region: use one of {} (or set endpoint)",
                        region.get_ref(),
                        region::known()
                    ),
                )
            })?),
        };
        let endpoint = match (raw.endpoint, from_region) {
            (Some(endpoint), _) => endpoint,
            // The table's hosts are valid URLs; the checks below hold for them too.
            (None, Some(url)) => Spanned::new(table.clone(), url),
            (None, None) => {
                return Err(self.error(
                    "codearts.endpoint",
                    Some(table),
                    "missing: set region (e.g. \"cn-north-4\") or the CodeArts endpoint, e.g. \"https://cloudpipeline-ext.cn-north-4.myhuaweicloud.com\"",
                ));
            }
        };
        let url = reqwest::Url::parse(endpoint.get_ref().trim()).map_err(|e| {
            self.error(
                "codearts.endpoint",
                Some(endpoint.span()),
                format!("\"{}\" is not a URL ({e})", endpoint.get_ref()),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(self.error(
                "codearts.endpoint",
                Some(endpoint.span()),
                "must be an http:// or https:// URL with a host",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.error(
                "codearts.endpoint",
                Some(endpoint.span()),
                "must not have a query or fragment",
            ));
        }
        let Some(domain_id) = raw.domain_id else {
            return Err(self.error(
                "codearts.domain_id",
                Some(table),
                "missing: set the 32-character domain (tenant) id",
            ));
        };
        let domain = DomainId::parse(domain_id.get_ref())
            .map_err(|m| self.error("codearts.domain_id", Some(domain_id.span()), m))?;
        Ok(CodeArts {
            endpoint: url.as_str().trim_end_matches('/').to_owned(),
            domain_id: domain,
            connect_timeout: self.positive_duration(
                "codearts.connect_timeout",
                raw.connect_timeout.as_ref(),
                Duration::from_secs(10),
            )?,
            request_timeout: self.positive_duration(
                "codearts.request_timeout",
                raw.request_timeout.as_ref(),
                Duration::from_secs(600),
            )?,
            ca_file: match raw.ca_file {
                Some(ca_file) if ca_file.get_ref().trim().is_empty() => {
                    return Err(self.error(
                        "codearts.ca_file",
                        Some(ca_file.span()),
                        "must not be empty: leave it out to trust only the default CAs",
                    ));
                }
                ca_file => self.optional_path(ca_file),
            },
        })
    }

    fn auth(&self, raw: Option<Spanned<raw::Auth>>) -> Result<AuthConfig, ConfigError> {
        // A key that is missing points at the [auth] table; without one there is nothing to
        // point at (and nothing but the default method, which needs no key).
        let (table, raw) = match raw {
            Some(raw) => (Some(raw.span()), raw.into_inner()),
            None => (None, raw::Auth::default()),
        };
        let method = raw
            .method
            .as_ref()
            .map_or("token", |m| m.get_ref().as_str());
        // Keys of another method are refused rather than ignored: they signal a config that
        // does not do what its author thinks.
        let used: &[(&str, Option<&Spanned<String>>)] = &[
            ("token_file", raw.token_file.as_ref()),
            ("token", raw.token.as_ref()),
            ("iam_endpoint", raw.iam_endpoint.as_ref()),
            ("user_name", raw.user_name.as_ref()),
            ("domain_name", raw.domain_name.as_ref()),
            ("project", raw.project.as_ref()),
            ("password_file", raw.password_file.as_ref()),
            ("access_key_file", raw.access_key_file.as_ref()),
            ("secret_key_file", raw.secret_key_file.as_ref()),
            ("security_token_file", raw.security_token_file.as_ref()),
            ("metadata_endpoint", raw.metadata_endpoint.as_ref()),
        ];
        let allowed: &[&str] = match method {
            "token" => &["token_file", "token"],
            "password" => &[
                "iam_endpoint",
                "user_name",
                "domain_name",
                "project",
                "password_file",
            ],
            "aksk" => &["access_key_file", "secret_key_file", "security_token_file"],
            "agency" => &["metadata_endpoint"],
            other => {
                return Err(self.error(
                    "auth.method",
                    raw.method.as_ref().map(|m| m.span()),
                    format!("\"{other}\" is not a method: use \"token\", \"password\", \"aksk\" or \"agency\""),
                ));
            }
        };
        let misplaced = used
            .iter()
            .filter(|(key, _)| !allowed.contains(key))
            .find_map(|(key, value)| value.map(|value| (key, value)));
        if let Some((key, value)) = misplaced {
            return Err(self.error(
                format!("auth.{key}"),
                Some(value.span()),
                format!("is not used with method = \"{method}\""),
            ));
        }
        Ok(match method {
            "token" => AuthConfig::Token {
                token_file: self.optional_path(raw.token_file),
                token: raw.token.map(|t| Secret::new(t.into_inner())),
            },
            "password" => {
                // An empty value counts as missing; it points at itself, a missing key at the
                // table.
                let required = |key: &str, value: Option<Spanned<String>>| match value {
                    Some(v) if !v.get_ref().trim().is_empty() => Ok(v.into_inner()),
                    v => Err(self.error(
                        format!("auth.{key}"),
                        v.map(|v| v.span()).or_else(|| table.clone()),
                        "missing: method = \"password\" needs it",
                    )),
                };
                let (iam_endpoint, iam_span) = match raw.iam_endpoint {
                    Some(e) => (e.get_ref().clone(), Some(e.span())),
                    None => ("https://iam.myhuaweicloud.com".to_owned(), None),
                };
                match reqwest::Url::parse(&iam_endpoint) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                    _ => {
                        return Err(self.error(
                            "auth.iam_endpoint",
                            iam_span,
                            format!("\"{iam_endpoint}\" is not an http:// or https:// URL"),
                        ));
                    }
                }
                AuthConfig::Password {
                    iam_endpoint: iam_endpoint.trim_end_matches('/').to_owned(),
                    user_name: required("user_name", raw.user_name)?,
                    domain_name: required("domain_name", raw.domain_name)?,
                    project: raw.project.map(Spanned::into_inner),
                    password_file: self.optional_path(raw.password_file),
                }
            }
            "agency" => {
                let (endpoint, span) = match raw.metadata_endpoint {
                    Some(e) => (e.get_ref().trim().to_owned(), Some(e.span())),
                    None => (DEFAULT_METADATA_ENDPOINT.to_owned(), None),
                };
                match reqwest::Url::parse(&endpoint) {
                    Ok(url)
                        if matches!(url.scheme(), "http" | "https")
                            && url.host_str().is_some()
                            && url.query().is_none() => {}
                    _ => {
                        return Err(self.error(
                            "auth.metadata_endpoint",
                            span,
                            format!("\"{endpoint}\" is not an http:// URL such as \"{DEFAULT_METADATA_ENDPOINT}\""),
                        ));
                    }
                }
                AuthConfig::Agency {
                    metadata_endpoint: endpoint.trim_end_matches('/').to_owned(),
                }
            }
            _ => AuthConfig::Aksk {
                access_key_file: self.optional_path(raw.access_key_file),
                secret_key_file: self.optional_path(raw.secret_key_file),
                security_token_file: self.optional_path(raw.security_token_file),
            },
        })
    }

    fn upload(&self, raw: raw::Upload) -> Result<Upload, ConfigError> {
        let concurrency = match raw.concurrency {
            None => 4,
            Some(n) if (1..=256).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                return Err(self.error(
                    "upload.concurrency",
                    Some(n.span()),
                    format!("{} is out of range: use 1 to 256", n.get_ref()),
                ));
            }
        };
        let max_file_size = match raw.max_file_size {
            None => 1 << 30,
            Some(size) => {
                let parsed: bytesize::ByteSize = size.get_ref().trim().parse().map_err(|_| {
                    self.error(
                        "upload.max_file_size",
                        Some(size.span()),
                        format!(
                            "\"{}\" is not a size; write e.g. \"512KiB\", \"100MB\" or \"1GiB\"",
                            size.get_ref()
                        ),
                    )
                })?;
                if parsed.as_u64() == 0 {
                    return Err(self.error(
                        "upload.max_file_size",
                        Some(size.span()),
                        "must be larger than zero",
                    ));
                }
                parsed.as_u64()
            }
        };
        Ok(Upload {
            concurrency: concurrency as usize,
            max_file_size,
            validate_package: raw.validate_package.unwrap_or(true),
        })
    }

    fn retry(&self, raw: raw::Retry) -> Result<RetryPolicy, ConfigError> {
        let defaults = RetryPolicy::default();
        let policy = RetryPolicy {
            initial_delay: self.positive_duration(
                "retry.initial_delay",
                raw.initial_delay.as_ref(),
                defaults.initial_delay,
            )?,
            max_delay: self.positive_duration(
                "retry.max_delay",
                raw.max_delay.as_ref(),
                defaults.max_delay,
            )?,
            multiplier: raw
                .multiplier
                .as_ref()
                .map_or(defaults.multiplier, |m| *m.get_ref()),
            jitter: raw
                .jitter
                .as_ref()
                .map_or(defaults.jitter, |j| *j.get_ref()),
            max_attempts: match raw.max_attempts {
                None => defaults.max_attempts,
                Some(n) if (1..=1000).contains(n.get_ref()) => *n.get_ref() as u32,
                Some(n) => {
                    return Err(self.error(
                        "retry.max_attempts",
                        Some(n.span()),
                        format!("{} is out of range: use 1 to 1000", n.get_ref()),
                    ));
                }
            },
            max_elapsed: self.positive_duration(
                "retry.max_elapsed",
                raw.max_elapsed.as_ref(),
                defaults.max_elapsed,
            )?,
        };
        if !(1.0..=100.0).contains(&policy.multiplier) {
            return Err(self.error(
                "retry.multiplier",
                raw.multiplier.as_ref().map(|m| m.span()),
                format!("{} is out of range: use 1.0 to 100.0", policy.multiplier),
            ));
        }
        if !(0.0..=1.0).contains(&policy.jitter) {
            return Err(self.error(
                "retry.jitter",
                raw.jitter.as_ref().map(|j| j.span()),
                format!("{} is out of range: use 0.0 (none) to 1.0", policy.jitter),
            ));
        }
        if policy.max_delay < policy.initial_delay {
            // Point at what was written: max_delay, or initial_delay when max_delay is the
            // default.
            return Err(match (&raw.max_delay, &raw.initial_delay) {
                (None, Some(initial)) => self.error(
                    "retry.initial_delay",
                    Some(initial.span()),
                    format!(
                        "must not be longer than retry.max_delay ({} by default)",
                        humantime::format_duration(defaults.max_delay)
                    ),
                ),
                (max_delay, _) => self.error(
                    "retry.max_delay",
                    max_delay.as_ref().map(|d| d.span()),
                    "must not be shorter than retry.initial_delay",
                ),
            });
        }
        Ok(policy)
    }

    fn log(&self, raw: raw::Log) -> Result<Log, ConfigError> {
        let format = match raw.format.as_ref().map(|f| f.get_ref().as_str()) {
            None | Some("auto") => LogFormat::Auto,
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(self.error(
                    "log.format",
                    raw.format.as_ref().map(|f| f.span()),
                    format!("\"{other}\" is not a format: use \"auto\", \"text\" or \"json\""),
                ));
            }
        };
        let (level, level_span) = match raw.level {
            Some(level) => (level.get_ref().clone(), Some(level.span())),
            None => ("info".to_owned(), None),
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
            return Err(self.error(
                "log.level",
                level_span,
                format!(
                    "\"{level}\" is not a level or filter ({e}); use e.g. \"info\" or \"debug\""
                ),
            ));
        }
        Ok(Log { format, level })
    }

    fn watch(
        &self,
        i: usize,
        raw: Spanned<raw::Watch>,
        validate_package: bool,
    ) -> Result<(Watch, WatchSpans), ConfigError> {
        let key = |k: &str| format!("watch[{i}].{k}");
        // A missing key points at its [[watch]] table.
        let table = raw.span();
        let raw = raw.into_inner();
        let name = match raw.name {
            None => {
                return Err(self.error(
                    key("name"),
                    Some(table.clone()),
                    "missing: every watch needs a unique name",
                ));
            }
            Some(n) => n,
        };
        if name.get_ref().is_empty()
            || !name
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(self.error(
                key("name"),
                Some(name.span()),
                format!(
                    "\"{}\" is not a name: use letters, digits, '_', '-' and '.'",
                    name.get_ref()
                ),
            ));
        }
        let folder = |k: &str, value: Option<Spanned<String>>| match value {
            None => Err(self.error(
                key(k),
                Some(table.clone()),
                "missing: every watch needs inbox, done and failed folders",
            )),
            Some(v) => Ok((self.folder(&key(k), &v)?, v.span())),
        };
        let (inbox, inbox_span) = folder("inbox", raw.inbox)?;
        let (done, done_span) = folder("done", raw.done)?;
        let (failed, failed_span) = folder("failed", raw.failed)?;
        let spans = WatchSpans {
            name: name.span(),
            inbox: inbox_span,
            done: done_span,
            failed: failed_span,
        };
        let recursive = raw.recursive.unwrap_or(false);

        let globs = |k: &str, patterns: Option<Vec<Spanned<String>>>, default: &[&str]| {
            let (patterns, places): (Vec<String>, Vec<Option<Span>>) = match patterns {
                Some(written) => written
                    .into_iter()
                    .map(|p| {
                        let span = p.span();
                        (p.into_inner(), Some(span))
                    })
                    .unzip(),
                None => default.iter().map(|s| ((*s).to_owned(), None)).unzip(),
            };
            Globs::compile(patterns.clone()).map_err(|(j, e)| {
                self.error(
                    format!("{}[{j}]", key(k)),
                    places.get(j).cloned().flatten(),
                    format!(
                        "\"{}\" is not a glob ({})",
                        patterns.get(j).map_or("", String::as_str),
                        e.kind()
                    ),
                )
            })
        };
        let include = globs("include", raw.include, &["*.zip"])?;
        let exclude = globs(
            "exclude",
            raw.exclude,
            &[".*", "*.part", "*.tmp", "*.swp", "*~", "*.crdownload"],
        )?;

        let business_types = match raw.business_types {
            None => DEFAULT_BUSINESS_TYPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
            Some(list) if list.get_ref().is_empty() => {
                return Err(self.error(
                    key("business_types"),
                    Some(list.span()),
                    "must list at least one business type",
                ));
            }
            Some(list) => {
                let mut seen = HashSet::new();
                for bt in list.get_ref() {
                    let (span, bt) = (bt.span(), bt.get_ref());
                    if bt.is_empty()
                        || !bt
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        return Err(self.error(
                            key("business_types"),
                            Some(span),
                            format!(
                                "\"{bt}\" is not a business type: use letters, digits, '_' and '-'"
                            ),
                        ));
                    }
                    if !seen.insert(bt.to_ascii_lowercase()) {
                        return Err(self.error(
                            key("business_types"),
                            Some(span),
                            format!(
                                "\"{bt}\" is listed twice (they are compared case-insensitively)"
                            ),
                        ));
                    }
                }
                list.into_inner()
                    .into_iter()
                    .map(Spanned::into_inner)
                    .collect()
            }
        };

        if raw.rule.is_empty() {
            return Err(self.error(
                key("rule"),
                Some(table.clone()),
                "no [[watch.rule]]: add at least one, e.g. template = \"{plugin_name}__{business_type}.zip\"",
            ));
        }
        // Registering and publishing need the package's version, which only the package
        // check reads (SPEC §6).
        let release_key = |key: String, value: &Option<Spanned<bool>>| {
            match value {
            Some(v) if *v.get_ref() && !validate_package => Err(self.error(
                key,
                Some(v.span()),
                "needs upload.validate_package = true: registering and publishing take the version from the package's codearts-extension.json",
            )),
            _ => Ok(value.as_ref().map(|v| *v.get_ref())),
        }
        };
        let register = release_key(key("register"), &raw.register)?.unwrap_or(false);
        let publish = release_key(key("publish"), &raw.publish)?.unwrap_or(false);
        let mut rule_publish = Vec::with_capacity(raw.rule.len());
        let mut rules = Vec::with_capacity(raw.rule.len());
        for (j, rule) in raw.rule.into_iter().enumerate() {
            let rule_key = |k: &str| format!("watch[{i}].rule[{j}].{k}");
            let rule_span = rule.span();
            let rule = rule.into_inner();
            rule_publish.push(release_key(rule_key("publish"), &rule.publish)?);
            let (pattern, pattern_key, span) = match (rule.template, rule.regex) {
                (Some(t), None) => (
                    Pattern::Template(t.get_ref().clone()),
                    rule_key("template"),
                    t.span(),
                ),
                (None, Some(r)) => (
                    Pattern::Regex(r.get_ref().clone()),
                    rule_key("regex"),
                    r.span(),
                ),
                _ => {
                    return Err(self.error(
                        format!("watch[{i}].rule[{j}]"),
                        Some(rule_span),
                        "a rule needs exactly one of template or regex",
                    ));
                }
            };
            if let Some(bt) = &rule.business_type
                && !business_types
                    .iter()
                    .any(|b| b.eq_ignore_ascii_case(bt.get_ref()))
            {
                return Err(self.error(
                    rule_key("business_type"),
                    Some(bt.span()),
                    format!(
                        "\"{}\" is not one of the watch's business_types ({})",
                        bt.get_ref(),
                        business_types.join(", ")
                    ),
                ));
            }
            let constant = rule.business_type.map(Spanned::into_inner);
            let compiled = Rule::compile(pattern, constant)
                .map_err(|e| self.error(pattern_key.clone(), Some(span.clone()), e.to_string()))?;
            if compiled.needs_subfolders() && !recursive {
                return Err(self.error(
                    pattern_key,
                    Some(span),
                    "this rule only matches files in subfolders: set recursive = true on the watch",
                ));
            }
            rules.push(compiled);
        }

        let settle = self.duration(&key("settle"), raw.settle.as_ref(), Duration::from_secs(2))?;
        let watch = Watch {
            name: name.into_inner(),
            inbox,
            done,
            failed,
            recursive,
            include,
            exclude,
            settle,
            poll: raw.poll.unwrap_or(false),
            poll_set: raw.poll.is_some(),
            poll_interval: self.positive_duration(
                &key("poll_interval"),
                raw.poll_interval.as_ref(),
                Duration::from_secs(5),
            )?,
            rescan_interval: self.positive_duration(
                &key("rescan_interval"),
                raw.rescan_interval.as_ref(),
                Duration::from_secs(60),
            )?,
            rules: RuleSet::new(rules, business_types),
            register,
            publish,
            rule_publish,
        };
        Ok((watch, spans))
    }

    /// Folder relations that would make files loop, collide or vanish, judged on the folders'
    /// [`resolved`] paths (a link to the inbox is the inbox). Errors point at the offending
    /// value of watch `i`, from `spans[i]`.
    fn check_folders(&self, watches: &[Watch], spans: &[WatchSpans]) -> Result<(), ConfigError> {
        let real: Vec<[PathBuf; 3]> = watches
            .iter()
            .map(|w| [resolved(&w.inbox), resolved(&w.done), resolved(&w.failed)])
            .collect();
        let mut names = HashSet::new();
        for (i, ((w, at), [inbox, done, failed])) in
            watches.iter().zip(spans).zip(&real).enumerate()
        {
            let key = |k: &str| format!("watch[{i}].{k}");
            if !names.insert(w.name.as_str()) {
                return Err(self.error(
                    key("name"),
                    Some(at.name.clone()),
                    format!(
                        "\"{}\" is used by two watches: names must be unique",
                        w.name
                    ),
                ));
            }
            let work = inbox.join(crate::store::WORK_DIR);
            for (k, folder, real, span) in [
                ("done", &w.done, done, &at.done),
                ("failed", &w.failed, failed, &at.failed),
            ] {
                if real == inbox {
                    return Err(self.error(
                        key(k),
                        Some(span.clone()),
                        format!(
                            "{} is the inbox itself: files would be picked up again",
                            shown(folder, real)
                        ),
                    ));
                }
                // Claims live there: a filed file would look like a claim, and be counted and
                // resumed as one.
                if real.starts_with(&work) {
                    return Err(self.error(
                        key(k),
                        Some(span.clone()),
                        format!(
                            "{} is inside the inbox's work folder {}: it is extdrop's own",
                            shown(folder, real),
                            work.display()
                        ),
                    ));
                }
                if w.recursive && real.starts_with(inbox) {
                    return Err(self.error(
                        key(k),
                        Some(span.clone()),
                        format!("{} is inside the inbox of a recursive watch: files would be picked up again", shown(folder, real)),
                    ));
                }
            }
            if done == failed {
                return Err(self.error(
                    key("failed"),
                    Some(at.failed.clone()),
                    "is the same folder as done: keep uploaded and failed files apart",
                ));
            }
            for (j, (other, other_real)) in watches.iter().zip(&real).enumerate() {
                if i == j {
                    continue;
                }
                for (k, folder, real) in [
                    ("inbox", &other.inbox, &other_real[0]),
                    ("done", &other.done, &other_real[1]),
                    ("failed", &other.failed, &other_real[2]),
                ] {
                    if real.starts_with(inbox) {
                        return Err(self.error(
                            key("inbox"),
                            Some(at.inbox.clone()),
                            format!(
                                "{} equals or contains watch \"{}\"'s {k} folder {}: each inbox must be its own",
                                shown(&w.inbox, inbox),
                                other.name,
                                shown(folder, real)
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
