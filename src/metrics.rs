//! Prometheus metrics and the health check: what the daemon counts, and the small HTTP server
//! of `[metrics] listen` that shows it (`GET /metrics`, `GET /healthz`).
//!
//! Invariants:
//! - Recording is cheap and never waits: every call updates atomics inside prometheus-client's
//!   families (a short, uncontended `RwLock` read, or a write the first time a label set is
//!   seen). No lock is held across an `.await`, here or in the server.
//! - Label values are the watch names of the configuration and the fixed words documented on
//!   each method, so the number of series is bounded by the configuration.
//! - A scrape encodes the registry into a fresh `String`; it never blocks the daemon.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;

/// The values of `outcome` in `extdrop_files_total`.
pub const OUTCOMES: [&str; 2] = ["done", "failed"];

/// The values of `result` in `extdrop_upload_attempts_total`.
pub const ATTEMPT_RESULTS: [&str; 5] = [
    "uploaded",
    "rejected",
    "transient",
    "unauthorized",
    "no_credentials",
];

/// The values of `step` in `extdrop_release_steps_total` (SPEC §6): extensions registered,
/// versions published, files refused because their version was already official.
pub const RELEASE_STEPS: [&str; 3] = ["registered", "published", "refused_official"];

/// The values of `result` in `extdrop_credential_renewals_total`.
pub const RENEWAL_RESULTS: [&str; 2] = ["ok", "error"];

/// Upper bounds (seconds) of the upload duration buckets: from a small package on a fast link
/// (0.05 s) to a 1 GiB package on a slow one (30 min), in steps an operator reads at a glance.
pub const UPLOAD_DURATION_BUCKETS: [f64; 15] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
];

/// Content type of the OpenMetrics text format, which [`Metrics::encode`] produces.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of the classic Prometheus text format, served to clients that do not ask for
/// OpenMetrics (curl, older scrapers).
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Connections served at once; more are closed on accept. A scraper needs one, a person with
/// curl another; the bound keeps a misbehaving client from piling up tasks.
const MAX_CONNECTIONS: usize = 32;

/// How long a client may take to send its request headers before the connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabel {
    watch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    watch: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    watch: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    watch: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenewalLabel {
    result: String,
}

type DurationFamily = Family<WatchLabel, Histogram, fn() -> Histogram>;

/// The daemon's metrics: cheap to clone (one `Arc`), safe to record from any task.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    files: Family<OutcomeLabels, Counter>,
    attempts: Family<ResultLabels, Counter>,
    uploaded_bytes: Family<WatchLabel, Counter>,
    upload_duration: DurationFamily,
    waiting: Family<WatchLabel, Gauge>,
    oldest_waiting: Family<WatchLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    in_progress: Family<WatchLabel, Gauge>,
    renewals: Family<RenewalLabel, Counter>,
    release_steps: Family<StepLabels, Counter>,
    last_success: Family<WatchLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

/// Seconds since the Unix epoch, now (0 if the clock is before 1970, which no alert can use).
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Builds the registry with every extdrop metric, `extdrop_build_info`, and
    /// `extdrop_start_time_seconds` set to now: the daemon builds its one registry as it
    /// starts.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("extdrop");
        let files = Family::<OutcomeLabels, Counter>::default();
        let attempts = Family::<ResultLabels, Counter>::default();
        let uploaded_bytes = Family::<WatchLabel, Counter>::default();
        let upload_duration: DurationFamily =
            Family::new_with_constructor(|| Histogram::new(UPLOAD_DURATION_BUCKETS));
        let waiting = Family::<WatchLabel, Gauge>::default();
        let oldest_waiting = Family::default();
        let in_progress = Family::<WatchLabel, Gauge>::default();
        let renewals = Family::<RenewalLabel, Counter>::default();
        let release_steps = Family::<StepLabels, Counter>::default();
        let last_success = Family::default();

        registry.register(
            "build",
            "The version of the running extdrop, as a label",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        // Alerts on "no success for a while" count from here when nothing was accepted since
        // the start (the last success is not kept across restarts), and `changes()` of it
        // counts restarts.
        let start_time = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        start_time.set(unix_now());
        registry.register_with_unit(
            "start_time",
            "Unix time the daemon started",
            Unit::Seconds,
            start_time,
        );
        registry.register(
            "files",
            "Files filed into done or failed, by watch and outcome",
            files.clone(),
        );
        registry.register(
            "upload_attempts",
            "Upload attempts, by watch and result (uploaded, rejected, transient, unauthorized, no_credentials)",
            attempts.clone(),
        );
        registry.register_with_unit(
            "uploaded",
            "Bytes of packages the server accepted, by watch",
            Unit::Bytes,
            uploaded_bytes.clone(),
        );
        registry.register_with_unit(
            "upload_duration",
            "Duration of one upload attempt, request sent to answer judged, by watch",
            Unit::Seconds,
            upload_duration.clone(),
        );
        registry.register(
            "files_waiting",
            "Files in the inbox that are admitted but not yet claimed, by watch",
            waiting.clone(),
        );
        registry.register_with_unit(
            "oldest_waiting",
            "Age of the oldest file waiting in the inbox (0 when none), by watch",
            Unit::Seconds,
            oldest_waiting.clone(),
        );
        registry.register(
            "files_in_progress",
            "Claimed files: being checked, uploaded or waiting to retry, by watch",
            in_progress.clone(),
        );
        registry.register(
            "credential_renewals",
            "Credential renewals (new IAM token, re-read credential files), by result",
            renewals.clone(),
        );
        registry.register(
            "release_steps",
            "Release steps, by watch and step (registered, published, refused_official)",
            release_steps.clone(),
        );
        registry.register_with_unit(
            "last_success_timestamp",
            "Unix time of the last upload the server accepted, by watch",
            Unit::Seconds,
            last_success.clone(),
        );

        // Both renewal results exist from the start, so that `increase(...{result="error"})`
        // is 0 rather than absent before the first error.
        for result in RENEWAL_RESULTS {
            let _ = renewals.get_or_create(&RenewalLabel {
                result: result.to_owned(),
            });
        }

        Metrics {
            inner: Arc::new(Inner {
                registry,
                files,
                attempts,
                uploaded_bytes,
                upload_duration,
                waiting,
                oldest_waiting,
                in_progress,
                renewals,
                release_steps,
                last_success,
            }),
        }
    }

    /// Creates a watch's series at zero, so that dashboards and alerts (`rate`, `increase`,
    /// `absent`) see the watch before its first file. Call once per watch at start-up; calling
    /// again (after a reload) is harmless. `extdrop_last_success_timestamp_seconds` is left
    /// out: 0 would claim a success in 1970.
    pub fn add_watch(&self, watch: &str) {
        let m = &self.inner;
        for outcome in OUTCOMES {
            let _ = m.files.get_or_create(&outcome_labels(watch, outcome));
        }
        for result in ATTEMPT_RESULTS {
            let _ = m.attempts.get_or_create(&result_labels(watch, result));
        }
        for step in RELEASE_STEPS {
            let _ = m.release_steps.get_or_create(&step_labels(watch, step));
        }
        let label = watch_label(watch);
        let _ = m.uploaded_bytes.get_or_create(&label);
        let _ = m.upload_duration.get_or_create(&label);
        let _ = m.waiting.get_or_create(&label);
        let _ = m.oldest_waiting.get_or_create(&label);
        let _ = m.in_progress.get_or_create(&label);
    }

    /// A file was filed; `outcome` is `"done"` or `"failed"`.
    pub fn file_filed(&self, watch: &str, outcome: &str) {
        debug_assert!(OUTCOMES.contains(&outcome), "unknown outcome {outcome:?}");
        self.inner
            .files
            .get_or_create(&outcome_labels(watch, outcome))
            .inc();
    }

    /// An upload attempt ended; `result` is one of [`ATTEMPT_RESULTS`].
    pub fn attempt(&self, watch: &str, result: &str) {
        debug_assert!(
            ATTEMPT_RESULTS.contains(&result),
            "unknown attempt result {result:?}"
        );
        self.inner
            .attempts
            .get_or_create(&result_labels(watch, result))
            .inc();
    }

    /// The server accepted a package of `bytes` bytes.
    pub fn uploaded_bytes(&self, watch: &str, bytes: u64) {
        self.inner
            .uploaded_bytes
            .get_or_create(&watch_label(watch))
            .inc_by(bytes);
    }

    /// One upload attempt took `seconds` (any result). Negative values count as 0; NaN is
    /// ignored, since it would poison the histogram's sum for good.
    pub fn upload_duration(&self, watch: &str, seconds: f64) {
        if seconds.is_nan() {
            return;
        }
        self.inner
            .upload_duration
            .get_or_create(&watch_label(watch))
            .observe(seconds.max(0.0));
    }

    /// The inbox holds `files` admitted files not yet claimed, the oldest `oldest_age_seconds`
    /// old (0 when there are none).
    pub fn set_waiting(&self, watch: &str, files: u64, oldest_age_seconds: f64) {
        let label = watch_label(watch);
        self.inner
            .waiting
            .get_or_create(&label)
            .set(saturating_i64(files));
        self.inner
            .oldest_waiting
            .get_or_create(&label)
            .set(non_negative(oldest_age_seconds));
    }

    /// `files` files of the watch are claimed (checked, uploading or waiting to retry).
    pub fn set_in_progress(&self, watch: &str, files: u64) {
        self.inner
            .in_progress
            .get_or_create(&watch_label(watch))
            .set(saturating_i64(files));
    }

    /// A release step happened; `step` is one of [`RELEASE_STEPS`].
    pub fn release_step(&self, watch: &str, step: &str) {
        debug_assert!(RELEASE_STEPS.contains(&step), "unknown step {step:?}");
        self.inner
            .release_steps
            .get_or_create(&step_labels(watch, step))
            .inc();
    }

    /// The count of release `step` for `watch` so far.
    pub fn release_steps(&self, watch: &str, step: &str) -> u64 {
        self.inner
            .release_steps
            .get_or_create(&step_labels(watch, step))
            .get()
    }

    /// Credentials were renewed; `result` is `"ok"` or `"error"`.
    pub fn credential_renewal(&self, result: &str) {
        debug_assert!(
            RENEWAL_RESULTS.contains(&result),
            "unknown renewal result {result:?}"
        );
        self.inner
            .renewals
            .get_or_create(&RenewalLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// The server accepted an upload of this watch just now.
    pub fn last_success(&self, watch: &str) {
        self.inner
            .last_success
            .get_or_create(&watch_label(watch))
            .set(unix_now());
    }

    /// The OpenMetrics text exposition of every metric (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; the encoder only forwards the writer's errors.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    /// The classic Prometheus text exposition (version 0.0.4) of every metric.
    pub fn encode_prometheus(&self) -> String {
        let mut text = String::new();
        let _ =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.inner.registry);
        text
    }
}

fn watch_label(watch: &str) -> WatchLabel {
    WatchLabel {
        watch: watch.to_owned(),
    }
}

fn outcome_labels(watch: &str, outcome: &str) -> OutcomeLabels {
    OutcomeLabels {
        watch: watch.to_owned(),
        outcome: outcome.to_owned(),
    }
}

fn result_labels(watch: &str, result: &str) -> ResultLabels {
    ResultLabels {
        watch: watch.to_owned(),
        result: result.to_owned(),
    }
}

fn step_labels(watch: &str, step: &str) -> StepLabels {
    StepLabels {
        watch: watch.to_owned(),
        step: step.to_owned(),
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn non_negative(seconds: f64) -> f64 {
    if seconds.is_nan() {
        0.0
    } else {
        seconds.max(0.0)
    }
}

/// The metrics server could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr} for metrics: {why}")]
    Listen {
        /// `[metrics] listen`.
        addr: SocketAddr,
        /// What went wrong and what to do about it, in the operator's words.
        why: String,
        /// The error the operating system gave.
        #[source]
        source: std::io::Error,
    },
}

impl MetricsError {
    fn listen(addr: SocketAddr, source: std::io::Error) -> MetricsError {
        use std::io::ErrorKind;
        let why = match source.kind() {
            ErrorKind::AddrInUse => {
                "address in use; another process holds the port (change [metrics] listen)"
                    .to_owned()
            }
            ErrorKind::PermissionDenied => {
                "permission denied; ports below 1024 need CAP_NET_BIND_SERVICE (use a higher port in [metrics] listen)".to_owned()
            }
            ErrorKind::AddrNotAvailable => {
                "address not available; no interface of this host has that address (change [metrics] listen)".to_owned()
            }
            _ => source.to_string(),
        };
        MetricsError::Listen { addr, why, source }
    }
}

/// What the server answers from: the metrics and the health verdict.
struct Endpoint {
    metrics: Metrics,
    healthy: Box<dyn Fn() -> bool + Send + Sync>,
}

/// Binds `listen` and serves, on a task of the current tokio runtime, `GET /metrics` (the
/// exposition: OpenMetrics when the client asks for it in `Accept`, as Prometheus does, else
/// the classic text format) and `GET /healthz` (200 `ok` while `healthy()` is true, 503
/// otherwise) until `stop` resolves; then open connections are closed. Returns the bound
/// address (`listen` may use port 0) once the socket is listening, or an error naming the
/// address.
pub async fn serve(
    listen: SocketAddr,
    metrics: Metrics,
    healthy: impl Fn() -> bool + Send + Sync + 'static,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, MetricsError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| MetricsError::listen(listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| MetricsError::listen(listen, e))?;
    let endpoint = Arc::new(Endpoint {
        metrics,
        healthy: Box::new(healthy),
    });
    tokio::spawn(crate::accept::accept_until(
        listener,
        stop,
        MAX_CONNECTIONS,
        "metrics",
        move |stream| connection(stream, Arc::clone(&endpoint)),
    ));
    tracing::info!(%addr, "metrics on http://{addr}/metrics, health on http://{addr}/healthz");
    Ok(addr)
}

/// Serves HTTP/1.1 on one connection until the client closes it.
async fn connection(stream: tokio::net::TcpStream, endpoint: Arc<Endpoint>) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let endpoint = Arc::clone(&endpoint);
        async move { Ok::<_, Infallible>(endpoint.answer(&request)) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, "metrics connection ended with an error");
    }
}

impl Endpoint {
    fn answer<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        if path != "/metrics" && path != "/healthz" {
            return text(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found\n",
            );
        }
        // hyper answers HEAD with the headers of the GET answer and no body.
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "method not allowed\n",
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        if path == "/metrics" {
            if wants_openmetrics(request) {
                text(
                    StatusCode::OK,
                    OPENMETRICS_CONTENT_TYPE,
                    self.metrics.encode(),
                )
            } else {
                text(
                    StatusCode::OK,
                    PROMETHEUS_CONTENT_TYPE,
                    self.metrics.encode_prometheus(),
                )
            }
        } else if (self.healthy)() {
            text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n")
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                "unhealthy\n",
            )
        }
    }
}

/// Whether the client's `Accept` names OpenMetrics (Prometheus sends it, with a fallback to
/// the classic format at a lower weight).
fn wants_openmetrics<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            // `q=0` means "not acceptable".
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::{BTreeMap, HashMap};
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn release_steps_are_counted_per_watch_and_step_from_zero() {
        let m = Metrics::new();
        m.add_watch("w");
        let text = m.encode();
        for step in RELEASE_STEPS {
            let line = format!("extdrop_release_steps_total{{watch=\"w\",step=\"{step}\"}} 0");
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        m.release_step("w", "published");
        m.release_step("w", "published");
        assert_eq!(m.release_steps("w", "published"), 2);
        assert_eq!(m.release_steps("w", "registered"), 0);
    }

    /// One sample line of an exposition.
    #[derive(Debug, Clone, PartialEq)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    /// An exposition, parsed and checked for the rules a scraper relies on.
    #[derive(Debug, Default)]
    struct Exposition {
        /// Family name → type, from `# TYPE`.
        types: HashMap<String, String>,
        samples: Vec<Sample>,
        eof: bool,
    }

    impl Exposition {
        /// The value of the sample `name` whose labels include `labels`; panics if there is
        /// not exactly one.
        fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
            let found: Vec<&Sample> = self
                .samples
                .iter()
                .filter(|s| {
                    s.name == name
                        && labels
                            .iter()
                            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                })
                .collect();
            assert_eq!(found.len(), 1, "{name} {labels:?} in {:#?}", self.samples);
            found[0].value
        }

        fn has(&self, name: &str) -> bool {
            self.samples.iter().any(|s| s.name == name)
        }
    }

    /// A small parser of the OpenMetrics and Prometheus text formats: `# TYPE`/`# HELP`/
    /// `# UNIT` comments, `name{label="value",...} value` samples. It insists that every
    /// sample belongs to a family declared before it, with a suffix its type allows.
    fn parse(text: &str) -> Exposition {
        let mut exposition = Exposition::default();
        assert!(text.ends_with('\n'), "exposition must end with a newline");
        for line in text.lines() {
            assert!(!exposition.eof, "text after # EOF: {line}");
            if line == "# EOF" {
                exposition.eof = true;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut words = rest.splitn(3, ' ');
                let (kind, name) = (words.next().unwrap(), words.next().unwrap());
                assert!(valid_name(name), "bad metric name in {line}");
                match kind {
                    "TYPE" => {
                        let t = words.next().unwrap().to_owned();
                        assert!(
                            [
                                "counter",
                                "gauge",
                                "histogram",
                                "info",
                                "summary",
                                "unknown"
                            ]
                            .contains(&t.as_str()),
                            "bad type in {line}"
                        );
                        exposition.types.insert(name.to_owned(), t);
                    }
                    "HELP" | "UNIT" => assert!(words.next().is_some(), "empty {kind}: {line}"),
                    _ => panic!("unknown comment {line}"),
                }
                continue;
            }
            let sample = parse_sample(line);
            let family = exposition
                .types
                .iter()
                .find(|(family, t)| {
                    let suffixes: &[&str] = match t.as_str() {
                        "counter" => &["_total", ""],
                        "histogram" => &["_bucket", "_sum", "_count"],
                        "info" => &["_info"],
                        _ => &[""],
                    };
                    suffixes
                        .iter()
                        .any(|suffix| sample.name == format!("{family}{suffix}"))
                })
                .map(|(family, _)| family.clone());
            assert!(family.is_some(), "sample without a # TYPE: {line}");
            exposition.samples.push(sample);
        }
        exposition
    }

    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn parse_sample(line: &str) -> Sample {
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        assert!(valid_name(name), "bad sample name in {line}");
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            loop {
                let (start, c) = chars.next().unwrap();
                if c == '}' {
                    rest = &inner[start + 1..];
                    break;
                }
                if c == ',' {
                    continue;
                }
                let eq = inner[start..].find('=').unwrap() + start;
                let key = &inner[start..eq];
                assert!(valid_name(key), "bad label name in {line}");
                while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                    chars.next();
                }
                assert_eq!(
                    chars.next().map(|(_, c)| c),
                    Some('"'),
                    "unquoted value: {line}"
                );
                let mut value = String::new();
                loop {
                    match chars.next().unwrap().1 {
                        '"' => break,
                        '\\' => match chars.next().unwrap().1 {
                            'n' => value.push('\n'),
                            other => value.push(other),
                        },
                        other => value.push(other),
                    }
                }
                assert!(
                    labels.insert(key.to_owned(), value).is_none(),
                    "duplicate label in {line}"
                );
            }
        }
        let value = rest.trim_start_matches(' ').split(' ').next().unwrap();
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("bad value {other:?} in {line}")),
        };
        Sample {
            name: name.to_owned(),
            labels,
            value,
        }
    }

    fn sample_metrics() -> Metrics {
        let m = Metrics::new();
        m.file_filed("extensions", "done");
        m.file_filed("extensions", "done");
        m.file_filed("extensions", "failed");
        m.file_filed("other", "failed");
        m.attempt("extensions", "transient");
        m.attempt("extensions", "uploaded");
        m.attempt("extensions", "uploaded");
        m.attempt("other", "no_credentials");
        m.uploaded_bytes("extensions", 1000);
        m.uploaded_bytes("extensions", 234);
        m.upload_duration("extensions", 0.3);
        m.upload_duration("extensions", 4.0);
        m.upload_duration("extensions", 4000.0);
        m.set_waiting("extensions", 3, 12.5);
        m.set_in_progress("extensions", 2);
        m.credential_renewal("ok");
        m.last_success("extensions");
        m
    }

    #[test]
    fn counters_gauges_and_histogram_carry_their_labels_and_values() {
        let text = sample_metrics().encode();
        let e = parse(&text);
        assert!(e.eof, "OpenMetrics ends with # EOF");
        assert_eq!(e.types["extdrop_files"], "counter");
        let files = |watch, outcome| {
            e.value(
                "extdrop_files_total",
                &[("watch", watch), ("outcome", outcome)],
            )
        };
        assert_eq!(files("extensions", "done"), 2.0);
        assert_eq!(files("extensions", "failed"), 1.0);
        assert_eq!(files("other", "failed"), 1.0);
        let attempts = |watch, result| {
            e.value(
                "extdrop_upload_attempts_total",
                &[("watch", watch), ("result", result)],
            )
        };
        assert_eq!(attempts("extensions", "uploaded"), 2.0);
        assert_eq!(attempts("extensions", "transient"), 1.0);
        assert_eq!(attempts("other", "no_credentials"), 1.0);
        assert_eq!(e.types["extdrop_uploaded_bytes"], "counter");
        assert!(text.contains("# UNIT extdrop_uploaded_bytes bytes\n"));
        assert_eq!(
            e.value("extdrop_uploaded_bytes_total", &[("watch", "extensions")]),
            1234.0
        );

        assert_eq!(e.types["extdrop_upload_duration_seconds"], "histogram");
        let bucket = |le| {
            e.value(
                "extdrop_upload_duration_seconds_bucket",
                &[("watch", "extensions"), ("le", le)],
            )
        };
        assert_eq!(bucket("0.25"), 0.0);
        assert_eq!(bucket("0.5"), 1.0);
        assert_eq!(bucket("5.0"), 2.0);
        assert_eq!(bucket("1800.0"), 2.0);
        assert_eq!(bucket("+Inf"), 3.0);
        let buckets = e
            .samples
            .iter()
            .filter(|s| s.name == "extdrop_upload_duration_seconds_bucket")
            .count();
        assert_eq!(buckets, UPLOAD_DURATION_BUCKETS.len() + 1);
        assert_eq!(
            e.value(
                "extdrop_upload_duration_seconds_count",
                &[("watch", "extensions")]
            ),
            3.0
        );
        assert_eq!(
            e.value(
                "extdrop_upload_duration_seconds_sum",
                &[("watch", "extensions")]
            ),
            4004.3
        );

        assert_eq!(e.types["extdrop_files_waiting"], "gauge");
        assert_eq!(
            e.value("extdrop_files_waiting", &[("watch", "extensions")]),
            3.0
        );
        assert_eq!(
            e.value("extdrop_oldest_waiting_seconds", &[("watch", "extensions")]),
            12.5
        );
        assert_eq!(
            e.value("extdrop_files_in_progress", &[("watch", "extensions")]),
            2.0
        );
        assert_eq!(
            e.value("extdrop_credential_renewals_total", &[("result", "ok")]),
            1.0
        );
        assert_eq!(
            e.value("extdrop_credential_renewals_total", &[("result", "error")]),
            0.0,
            "both renewal results exist from the start"
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let last = e.value(
            "extdrop_last_success_timestamp_seconds",
            &[("watch", "extensions")],
        );
        assert!((now - last).abs() < 60.0, "last success {last}, now {now}");
        assert_eq!(e.types["extdrop_start_time_seconds"], "gauge");
        let started = e.value("extdrop_start_time_seconds", &[]);
        assert!(
            started <= now && now - started < 60.0,
            "started {started}, now {now}"
        );
        assert_eq!(
            e.value(
                "extdrop_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            1.0
        );
    }

    #[test]
    fn gauges_follow_the_latest_value_and_odd_inputs_stay_sane() {
        let m = Metrics::new();
        m.set_waiting("w", 5, 100.0);
        m.set_waiting("w", 0, 0.0);
        m.set_in_progress("w", 4);
        m.set_in_progress("w", 1);
        m.set_waiting("x", u64::MAX, -3.0);
        m.upload_duration("w", f64::NAN);
        m.upload_duration("w", -1.0);
        let e = parse(&m.encode());
        assert_eq!(e.value("extdrop_files_waiting", &[("watch", "w")]), 0.0);
        assert_eq!(
            e.value("extdrop_oldest_waiting_seconds", &[("watch", "w")]),
            0.0
        );
        assert_eq!(e.value("extdrop_files_in_progress", &[("watch", "w")]), 1.0);
        assert_eq!(
            e.value("extdrop_files_waiting", &[("watch", "x")]),
            i64::MAX as f64
        );
        assert_eq!(
            e.value("extdrop_oldest_waiting_seconds", &[("watch", "x")]),
            0.0
        );
        assert_eq!(
            e.value("extdrop_upload_duration_seconds_count", &[("watch", "w")]),
            1.0,
            "NaN is dropped, a negative duration counts as 0"
        );
        assert_eq!(
            e.value("extdrop_upload_duration_seconds_sum", &[("watch", "w")]),
            0.0
        );
    }

    #[test]
    fn an_added_watch_shows_zeros_before_its_first_file() {
        let m = Metrics::new();
        m.add_watch("extensions");
        m.add_watch("extensions");
        let e = parse(&m.encode());
        for outcome in OUTCOMES {
            assert_eq!(
                e.value(
                    "extdrop_files_total",
                    &[("watch", "extensions"), ("outcome", outcome)]
                ),
                0.0
            );
        }
        for result in ATTEMPT_RESULTS {
            assert_eq!(
                e.value(
                    "extdrop_upload_attempts_total",
                    &[("watch", "extensions"), ("result", result)]
                ),
                0.0
            );
        }
        assert_eq!(
            e.value("extdrop_files_waiting", &[("watch", "extensions")]),
            0.0
        );
        assert_eq!(
            e.value(
                "extdrop_upload_duration_seconds_count",
                &[("watch", "extensions")]
            ),
            0.0
        );
        assert!(
            !e.has("extdrop_last_success_timestamp_seconds"),
            "no success yet means no timestamp, not 1970"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.file_filed("a \"quoted\" \\ name", "done");
        let e = parse(&m.encode());
        assert_eq!(
            e.value(
                "extdrop_files_total",
                &[("watch", "a \"quoted\" \\ name"), ("outcome", "done")]
            ),
            1.0
        );
    }

    #[test]
    fn the_classic_prometheus_format_carries_the_same_samples() {
        let m = sample_metrics();
        let text = m.encode_prometheus();
        let e = parse(&text);
        assert!(!e.eof, "the classic format has no # EOF");
        assert_eq!(e.types["extdrop_files_total"], "counter");
        assert_eq!(
            e.value(
                "extdrop_files_total",
                &[("watch", "extensions"), ("outcome", "done")]
            ),
            2.0
        );
        assert_eq!(
            e.value(
                "extdrop_upload_duration_seconds_bucket",
                &[("watch", "extensions"), ("le", "+Inf")]
            ),
            3.0
        );
        // Same series and values; only the spelling of bucket bounds differs ("1" here,
        // "1.0" in OpenMetrics), so they are compared as numbers.
        let series = |e: &Exposition| {
            let mut all: Vec<String> = e
                .samples
                .iter()
                .map(|s| {
                    let mut labels = s.labels.clone();
                    if let Some(le) = labels.get_mut("le") {
                        *le = le
                            .parse::<f64>()
                            .map(|f| f.to_string())
                            .unwrap_or(le.clone());
                    }
                    let value = if s.name.starts_with("extdrop_last_success") {
                        0.0 // a timestamp, taken twice
                    } else {
                        s.value
                    };
                    format!("{} {labels:?} {value}", s.name)
                })
                .collect();
            all.sort();
            all
        };
        assert_eq!(series(&e), series(&parse(&m.encode())));
    }

    #[test]
    fn prometheus_accept_headers_get_openmetrics_and_others_the_classic_format() {
        let with = |accept: Option<&str>| {
            let mut request = Request::builder().uri("/metrics");
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            wants_openmetrics(&request.body(()).unwrap())
        };
        // What Prometheus 2 and 3 send.
        assert!(with(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(with(Some(
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        )));
        assert!(!with(None), "curl sends */*");
        assert!(!with(Some("*/*")));
        assert!(!with(Some("text/plain;version=0.0.4")));
        assert!(!with(Some("application/openmetrics-text; q=0")));
        assert!(!with(Some(
            "application/openmetrics-text;version=1.0.0;q=0.0, */*"
        )));
        assert!(with(Some("Application/OpenMetrics-Text; q=0.1")));
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    #[tokio::test]
    async fn the_server_answers_metrics_health_and_nothing_else_until_stopped() {
        let metrics = sample_metrics();
        let healthy = Arc::new(AtomicBool::new(true));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            metrics.clone(),
            {
                let healthy = Arc::clone(&healthy);
                move || healthy.load(Ordering::Relaxed)
            },
            async move {
                let _ = stop_rx.await;
            },
        )
        .await
        .unwrap();
        assert_ne!(addr.port(), 0, "the bound port is returned");
        let client = client();
        let url = |path: &str| format!("http://{addr}{path}");

        // As Prometheus scrapes.
        let scraped = client
            .get(url("/metrics"))
            .header(ACCEPT, "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
            .send()
            .await
            .unwrap();
        assert_eq!(scraped.status(), 200);
        assert_eq!(scraped.headers()[CONTENT_TYPE], OPENMETRICS_CONTENT_TYPE);
        let e = parse(&scraped.text().await.unwrap());
        assert!(e.eof);
        assert_eq!(
            e.value(
                "extdrop_files_total",
                &[("watch", "extensions"), ("outcome", "done")]
            ),
            2.0
        );
        assert_eq!(
            e.value(
                "extdrop_upload_duration_seconds_count",
                &[("watch", "extensions")]
            ),
            3.0
        );

        // Recording after the server started shows in the next scrape; curl gets the classic
        // format.
        metrics.file_filed("extensions", "done");
        let scraped = client.get(url("/metrics")).send().await.unwrap();
        assert_eq!(scraped.status(), 200);
        assert_eq!(scraped.headers()[CONTENT_TYPE], PROMETHEUS_CONTENT_TYPE);
        let e = parse(&scraped.text().await.unwrap());
        assert!(!e.eof);
        assert_eq!(
            e.value(
                "extdrop_files_total",
                &[("watch", "extensions"), ("outcome", "done")]
            ),
            3.0
        );

        let health = client.get(url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        assert_eq!(health.text().await.unwrap(), "ok\n");
        healthy.store(false, Ordering::Relaxed);
        let health = client.get(url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 503);
        healthy.store(true, Ordering::Relaxed);
        assert_eq!(
            client
                .get(url("/healthz?verbose"))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "a query string does not change the path"
        );
        let head = client.head(url("/metrics")).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert!(head.text().await.unwrap().is_empty());

        assert_eq!(client.get(url("/")).send().await.unwrap().status(), 404);
        assert_eq!(
            client.get(url("/metrics/x")).send().await.unwrap().status(),
            404
        );
        let post = client.post(url("/metrics")).send().await.unwrap();
        assert_eq!(post.status(), 405);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");

        // Stopped: the port closes.
        stop_tx.send(()).unwrap();
        let mut closed = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(closed, "the listener is closed after stop");
    }

    #[tokio::test]
    async fn a_port_in_use_is_reported_with_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve(addr, Metrics::new(), || true, std::future::pending())
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "cannot listen on {addr} for metrics: address in use"
            )),
            "{message}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}
