//! The process around the daemon: logging, the tokio runtime, signals, systemd notifications,
//! and the commands that act on the folders of a configured (possibly running) daemon:
//! `status`, `retry`, `upload`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::cli::{EXIT_FATAL, EXIT_OK, EXIT_PARTIAL, load};
use crate::config::{Config, Log, LogFormat, Watch};
use crate::daemon::{self, Control, Mode};
use crate::outcome::Report;
use crate::store;
use tokio::sync::mpsc;

/// Sets up `tracing` on stderr as `[log]` says; `RUST_LOG` overrides the level.
pub fn init_logging(log: &Log) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // stderr, stepping around a progress bar shown there (see `progress`). A line that
        // cannot be written is lost, never fatal: the subscriber's fallback for a failed write
        // is `eprintln!`, which panics on a closed stderr (journald restarting, a pipe whose
        // reader went away) — in whatever thread was logging.
        .with_writer(crate::progress::log_writer)
        .log_internal_errors(false);
    // Text lines carry file names and server words: their values are escaped so that none can
    // forge a line (JSON escapes every value itself).
    let fields = crate::shown::log_fields();
    let result = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.fmt_fields(fields).with_ansi(false).try_init(),
        // journald stamps each line itself and shows no colours.
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => builder
            .fmt_fields(fields)
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .try_init(),
        LogFormat::Auto => builder
            .fmt_fields(fields)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    // A subscriber already set (tests driving the library) is fine.
    let _ = result;
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            crate::errln!("extdrop: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Turns signals into [`Control`] messages: SIGTERM and SIGINT shut down; SIGHUP re-reads the
/// configuration at `reload_from` and hands it over if valid (an invalid file is logged and
/// the old configuration stays). Without `reload_from`, SIGHUP is logged and ignored.
pub fn controls(reload_from: Option<PathBuf>) -> mpsc::UnboundedReceiver<Control> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = mpsc::unbounded_channel();
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = handlers else {
        tracing::error!(
            "cannot install signal handlers; SIGTERM will end the process without a graceful shutdown"
        );
        // Keep the sender alive so the daemon does not read a closed channel as "stop".
        tokio::spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        return rx;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!("SIGTERM received");
                    let _ = tx.send(Control::Shutdown);
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT received");
                    let _ = tx.send(Control::Shutdown);
                }
                _ = hup.recv() => match &reload_from {
                    None => tracing::info!("SIGHUP ignored: only `extdrop run` reloads"),
                    Some(path) => {
                        tracing::info!(config = %path.display(), "SIGHUP received: reloading the configuration");
                        match Config::load(path) {
                            Ok(config) => {
                                let _ = tx.send(Control::Reload(Box::new(config)));
                            }
                            Err(e) => tracing::error!("reload refused, the previous configuration stays in force: {e}"),
                        }
                    }
                },
            }
        }
    });
    rx
}

/// The preamble of every command that works with the endpoint: load the configuration, set up
/// logging and the runtime, then run `body`.
pub(crate) fn with_runtime<F, Fut>(path: &Path, body: F) -> u8
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = u8>,
{
    let Some(config) = load(path) else {
        return EXIT_FATAL;
    };
    init_logging(&config.log);
    let Some(rt) = runtime() else {
        return EXIT_FATAL;
    };
    let status = rt.block_on(body(config));
    // Blocking work still running (a copy, a hash) must not hold the exit past systemd's stop
    // timeout: its file stays claimed and is resumed at the next start.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    status
}

/// `extdrop run`.
pub fn run(path: &Path) -> u8 {
    with_runtime(path, |config| async move {
        tracing::info!(config = %config.path.display(), watches = config.watches.len(), "extdrop starting");
        let ready = || {
            crate::systemd::ready();
            tracing::info!("every watch is armed");
        };
        match on_a_worker(async move {
            daemon::run(
                &config,
                Mode::Watch,
                controls(Some(config.path.clone())),
                ready,
            )
            .await
        })
        .await
        {
            Ok(summary) => {
                tracing::info!(done = summary.done, failed = summary.failed, "stopped");
                EXIT_OK
            }
            Err(e) => {
                tracing::error!("{e}");
                crate::errln!("extdrop: {e}");
                EXIT_FATAL
            }
        }
    })
}

/// Runs the daemon's main loop as a task on the runtime's workers, not on the thread that
/// started the runtime: its many wake-ups in a burst (a file event, a freed claim slot) are
/// then a task scheduled on a busy worker, not a sleeping thread woken (two switches each).
async fn on_a_worker(
    main_loop: impl std::future::Future<Output = Result<daemon::Summary, daemon::DaemonError>>
    + Send
    + 'static,
) -> Result<daemon::Summary, daemon::DaemonError> {
    tokio::spawn(main_loop)
        .await
        .unwrap_or_else(|e| Err(daemon::DaemonError::Crashed(e.to_string())))
}

/// `extdrop once`.
pub fn once(path: &Path) -> u8 {
    with_runtime(path, |config| async move {
        let pass = async move { daemon::run(&config, Mode::Once, controls(None), || {}).await };
        match on_a_worker(pass).await {
            Ok(summary) => {
                crate::outln!("{} done, {} failed", summary.done, summary.failed);
                if summary.waiting > 0 {
                    crate::errln!(
                        "extdrop: {} file(s) could not be uploaded because the credentials are unusable (see the log); they stay claimed and the next run takes them up",
                        summary.waiting
                    );
                    EXIT_FATAL
                } else if summary.interrupted {
                    crate::errln!(
                        "extdrop: interrupted; files not yet filed stay for the next run"
                    );
                    EXIT_FATAL
                } else if summary.errors > 0 {
                    crate::errln!(
                        "extdrop: {} file(s) could not be claimed or filed because of an error (see the log); they stay where they are",
                        summary.errors
                    );
                    EXIT_FATAL
                } else if summary.failed > 0 {
                    EXIT_PARTIAL
                } else {
                    EXIT_OK
                }
            }
            Err(e) => {
                crate::errln!("extdrop: {e}");
                EXIT_FATAL
            }
        }
    })
}

/// `extdrop check --online`: proves the credentials work, without uploading anything.
///
/// On success, two lines for the operator: what the credentials are (for `password`, the IAM
/// token just obtained), and the endpoint's answer to a request made with them (see
/// [`crate::upload::Uploader::probe`]). The error is one sentence saying what to fix.
pub fn probe(config: &Config) -> Result<(String, String), String> {
    let rt = runtime().ok_or("cannot start the async runtime")?;
    rt.block_on(async {
        let client = crate::upload::http_client(&config.codearts).map_err(|e| e.to_string())?;
        let auth =
            crate::auth::Auth::new(&config.auth, client.clone()).map_err(|e| e.to_string())?;
        let credentials = auth.probe().await.map_err(|e| e.to_string())?;
        let uploader = crate::upload::Uploader::new(&config.codearts, client, auth);
        let endpoint = uploader.probe().await?;
        Ok((credentials, endpoint))
    })
}

/// One watch's line in `status`.
#[derive(Debug, Serialize)]
pub struct WatchStatus {
    /// The watch.
    pub watch: String,
    /// Admitted files in the inbox, not yet claimed.
    pub waiting: usize,
    /// Claimed files (being checked, uploaded, waiting to retry, or resumed at the next start).
    pub in_progress: usize,
    /// Files in done.
    pub done: usize,
    /// Files in failed.
    pub failed: usize,
    /// Age in seconds of the oldest waiting file (by modification time).
    pub oldest_waiting_seconds: Option<u64>,
    /// The newest failures, newest first.
    pub recent_failures: Vec<Failure>,
    /// The release steps of the filed files, when the watch registers or publishes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseCounts>,
}

/// How many filed files went through each release step (SPEC §6), from their reports.
#[derive(Debug, Default, Serialize)]
pub struct ReleaseCounts {
    /// Files for which extdrop registered the extension.
    pub registered: usize,
    /// Files whose version extdrop published.
    pub published: usize,
    /// Files refused because their version was already official.
    pub refused_official: usize,
}

/// A failure as `status` shows it.
#[derive(Debug, Serialize)]
pub struct Failure {
    /// The file's name in failed.
    pub file: String,
    /// When it failed.
    pub finished: String,
    /// Why.
    pub reason: String,
}

/// Counts a watch's folders (works with or without a running daemon).
pub fn watch_status(watch: &Watch) -> WatchStatus {
    let now = SystemTime::now();
    // Counted as listed, not collected: an inbox can hold a large backlog.
    let mut waiting = 0;
    let mut oldest: Option<SystemTime> = None;
    crate::watch::each_admitted_file(watch, &watch.inbox, |_, path| {
        waiting += 1;
        let modified = std::fs::symlink_metadata(&path).and_then(|m| m.modified());
        if let Ok(modified) = modified {
            oldest = Some(oldest.map_or(modified, |o| o.min(modified)));
        }
    });
    let in_progress = store::claimed(watch);
    let filed = |folder: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(folder)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.') && !n.ends_with(store::REPORT_SUFFIX))
            })
            .collect()
    };
    let failed_files = filed(&watch.failed);
    let mut recent_failures: Vec<Failure> = failed_files
        .iter()
        .filter_map(|p| {
            let report: Report =
                serde_json::from_slice(&std::fs::read(store::report_path(p)).ok()?).ok()?;
            Some(Failure {
                file: crate::shown::name(p.file_name()?).0,
                finished: report.finished,
                reason: report.reason.unwrap_or_default(),
            })
        })
        .collect();
    recent_failures.sort_by(|a, b| b.finished.cmp(&a.finished));
    recent_failures.truncate(5);
    let done_files = filed(&watch.done);
    let release = (watch.register || watch.publish || watch.rule_publish.contains(&Some(true)))
        .then(|| {
            let mut counts = ReleaseCounts::default();
            for p in done_files.iter().chain(&failed_files) {
                let Some(report) = std::fs::read(store::report_path(p))
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Report>(&bytes).ok())
                else {
                    continue;
                };
                counts.registered += usize::from(report.release.registered);
                counts.published += usize::from(report.release.published == Some(true));
                counts.refused_official += usize::from(
                    report
                        .reason
                        .is_some_and(|r| r.contains(crate::release::OFFICIAL_REFUSAL)),
                );
            }
            counts
        });
    WatchStatus {
        watch: watch.name.clone(),
        waiting,
        in_progress,
        done: done_files.len(),
        failed: failed_files.len(),
        oldest_waiting_seconds: oldest
            .map(|o| now.duration_since(o).unwrap_or(Duration::ZERO).as_secs()),
        recent_failures,
        release,
    }
}

/// `extdrop status`.
pub fn status(path: &Path, json: bool) -> u8 {
    let Some(config) = load(path) else {
        return EXIT_FATAL;
    };
    let all: Vec<WatchStatus> = config.watches.iter().map(watch_status).collect();
    if json {
        match serde_json::to_string_pretty(&all) {
            Ok(text) => crate::outln!("{text}"),
            Err(e) => {
                crate::errln!("extdrop: {e}");
                return EXIT_FATAL;
            }
        }
        return EXIT_OK;
    }
    for s in &all {
        crate::outln!(
            "{}: {} waiting, {} in progress, {} done, {} failed{}",
            s.watch,
            s.waiting,
            s.in_progress,
            s.done,
            s.failed,
            s.oldest_waiting_seconds
                .map(|age| format!(
                    " (oldest waiting {})",
                    humantime::format_duration(Duration::from_secs(age))
                ))
                .unwrap_or_default()
        );
        if let Some(r) = &s.release {
            crate::outln!(
                "  release: {} registered, {} published, {} refused as already official",
                r.registered,
                r.published,
                r.refused_official
            );
        }
        for f in &s.recent_failures {
            crate::outln!(
                "  {} {}: {}",
                f.finished,
                crate::shown::escaped(&f.file),
                crate::shown::escaped(&f.reason)
            );
        }
    }
    if let Some(line) = agency_status(&config) {
        crate::outln!("{line}");
    }
    EXIT_OK
}

/// For `method = "agency"`, the line `status` adds: the credentials the metadata service hands
/// out now and when they expire (SPEC §7), or why none can be had (no agency, no metadata
/// service). `status` is a separate process from the daemon, so it asks the service itself;
/// the daemon renews to what the service hands out 40 minutes before its own expire. Other
/// methods have nothing that expires on its own schedule to show. `--json` stays the
/// per-watch list that scripts parse.
fn agency_status(config: &Config) -> Option<String> {
    if !matches!(config.auth, crate::auth::AuthConfig::Agency { .. }) {
        return None;
    }
    let rt = runtime()?;
    let text = rt.block_on(async {
        let client = crate::upload::http_client(&config.codearts).map_err(|e| e.to_string())?;
        let auth = crate::auth::Auth::new(&config.auth, client).map_err(|e| e.to_string())?;
        auth.probe().await.map_err(|e| e.to_string())
    });
    Some(match text {
        Ok(text) => format!("credentials: {text}"),
        Err(e) => format!("credentials: none: {e}"),
    })
}

/// The watch a failed file belongs to: the one its report names, when several watches share
/// the folder; else the first whose failed folder holds it.
fn owner<'a>(watches: &[&'a Watch], failed_file: &Path) -> Option<&'a Watch> {
    let folder = failed_file.parent()?;
    let holders: Vec<&Watch> = watches
        .iter()
        .copied()
        .filter(|w| w.failed == folder)
        .collect();
    let named = std::fs::read(store::report_path(failed_file))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Report>(&bytes).ok())
        .and_then(|report| holders.iter().copied().find(|w| w.name == report.watch));
    named.or_else(|| holders.first().copied())
}

/// `extdrop retry`.
pub fn retry(path: &Path, files: &[PathBuf], all: bool, only: Option<&str>) -> u8 {
    let Some(config) = load(path) else {
        return EXIT_FATAL;
    };
    let watches: Vec<&Watch> = config
        .watches
        .iter()
        .filter(|w| only.is_none_or(|o| o == w.name))
        .collect();
    if let Some(name) = only
        && watches.is_empty()
    {
        crate::errln!("extdrop: no watch is named \"{name}\"");
        return EXIT_FATAL;
    }
    // A retry across file systems that a kill interrupted is completed or undone first.
    watches.iter().for_each(|w| store::recover_retries(w));
    // The failed files asked for, each once, whichever watches share its folder.
    let mut missing = false;
    let mut wanted: Vec<PathBuf> = Vec::new();
    if all {
        for w in &watches {
            for entry in std::fs::read_dir(&w.failed).into_iter().flatten().flatten() {
                let p = entry.path();
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if p.is_file() && !name.starts_with('.') && !name.ends_with(store::REPORT_SUFFIX) {
                    wanted.push(p);
                }
            }
        }
    } else {
        let cwd = std::env::current_dir().unwrap_or_default();
        for file in files {
            let absolute = crate::config::absolute(file, &cwd);
            let found = watches.iter().find_map(|w| {
                let candidate = if absolute.starts_with(&w.failed) {
                    absolute.clone()
                } else {
                    w.failed.join(file)
                };
                (candidate.parent() == Some(w.failed.as_path()) && candidate.is_file())
                    .then_some(candidate)
            });
            match found {
                Some(path) => wanted.push(path),
                None => {
                    crate::errln!(
                        "extdrop: {} is not a file in a failed folder",
                        file.display()
                    );
                    missing = true;
                }
            }
        }
    }
    wanted.sort();
    wanted.dedup();
    let targets: Vec<(&Watch, PathBuf)> = wanted
        .into_iter()
        .filter_map(|path| Some((owner(&watches, &path)?, path)))
        .collect();
    let mut moved = 0;
    for (watch, failed_file) in targets {
        match store::unfail(watch, &failed_file) {
            Ok(back) => {
                moved += 1;
                crate::outln!("{} -> {}", failed_file.display(), back.display());
            }
            Err(e) => {
                crate::errln!("extdrop: {e}");
                missing = true;
            }
        }
    }
    if all {
        crate::outln!("{moved} file(s) moved back to their inbox");
    }
    if missing { EXIT_PARTIAL } else { EXIT_OK }
}
