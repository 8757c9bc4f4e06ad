//! The daemon: wiring the watchers, the handlers and shutdown together, and — in
//! `life_of_a_file` and `carry_on` — the whole life of one file, top to bottom. Its rooms:
//! `check` (the check before the upload), `attempts` (what an answer means, retries and the
//! budget), `steps` (the release steps around the upload), `recover` (claims picked up
//! again after a stop or a crashed handler), `backlog` (ready files waiting for a claim slot)
//! and `wake` (when the main loop must wake next).
//!
//! Concurrency: `[upload] concurrency` upload slots bound how many files are checked and
//! uploaded at once, across all watches, and [`CLAIMS_AHEAD`] claim slots how many are
//! claimed ahead of an upload slot. A ready file waits for a claim slot unclaimed in its
//! inbox, as a compact entry of the readiness tracker ([`Tracker`]), while the main loop waits
//! in line for one ([`backlog::Backlog`]); it becomes a [`Found`] and gets a task only with
//! one, so a backlog costs memory per slot, not per file. A task gives its upload slot back
//! while it waits to retry, so a file in backoff never blocks the others. On shutdown no new
//! file is claimed, waiting tasks stop at once (their files stay claimed and are resumed at
//! the next start), and uploads in flight get [`SHUTDOWN_GRACE`] to finish.
//!
//! Ownership: one process per inbox (the inbox lock, held until exit), one handler per claim
//! (a resume at a reload skips claims a live handler holds), and a file's outcome is written
//! into its claim before any work on its destination, so a decided file is only ever filed.
//!
//! Never stuck: a claimed file always progresses, waits for a retry after a pause, or is filed
//! in `failed` with the reason, in the running process. An I/O error on a claim (the attempt
//! count that cannot be saved, a folder that cannot be read at resume) is tried again after
//! [`FILING_RETRY`] (or `retry.max_delay` if shorter), like filing; a file that cannot be
//! claimed stays in the inbox and is tried again the same way. A panic in the package check is
//! a refusal of that package ("the package check crashed: …"). A handler that panics elsewhere
//! leaves its claim behind (the drop of its `Handling` notes it, by task), and the main loop
//! takes that claim up again after the same pause; after [`HANDLER_CRASHES`] crashes on one
//! undecided file, the file is filed in `failed` rather than crash its handler forever. Panics
//! are caught per task (tokio unwinds the task) rather than with `catch_unwind` around each
//! step, so that no step can be forgotten.
//!
//! Credentials: a file is never failed because the credentials are unusable (IAM down or
//! refusing the password, an ECS instance without an agency, a token the server refused that
//! cannot be renewed): that is the operator's to fix, not the file's. Such a file waits, its
//! attempt uncounted, and tries again every [`CREDENTIALS_PAUSE`] (or `retry.max_delay` if
//! shorter); the trouble is logged once for all files, and once more when it changes or is
//! over. `once` cannot wait for an operator: it leaves such files claimed for the next run and
//! reports them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch as signal};
use tokio::task::JoinSet;

use crate::auth::{Auth, AuthError};
use crate::config::{Config, RetryPolicy, Watch};
use crate::metrics::Metrics;
use crate::outcome::{Outcome, ReleaseFacts, Report, timestamp};
use crate::rules::Derivation;
use crate::standby::Standby;
use crate::store::{self, Claim, Resumed};
use crate::upload::{Answer, Package, Sent, Snapshot, Uploader, Verdict};
use crate::watch::{self, Busy, Found, Nudge, Tracker};
use attempts::{Attempts, Judged};
use check::{Facts, Refusal};
use recover::{resume_claims, take_up_crashed};

mod attempts;
mod backlog;
mod check;
mod recover;
mod steps;
mod wake;

/// How long uploads in flight may run on after SIGTERM before they are cut off (their files
/// stay claimed and are resumed at the next start). Below systemd's default stop timeout.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The longest a file waits before it tries again with credentials that were unusable.
pub const CREDENTIALS_PAUSE: Duration = Duration::from_secs(30);

/// How often a filing that failed (permissions, a full disk) is tried again (or
/// `retry.max_delay` if shorter).
pub const FILING_RETRY: Duration = Duration::from_secs(30);

/// How many times a handler may crash on one undecided file before the file is filed in
/// `failed` (with the panic's message) instead of being taken up again.
pub const HANDLER_CRASHES: u32 = 3;

/// How often `once` waits for briefly unusable credentials (IAM unreachable) before leaving a
/// file claimed for the next run: a one-shot run should not hang for long on an outage.
pub const ONCE_CREDENTIAL_WAITS: u32 = 2;

/// How many files may be claimed ahead of an upload slot. A claim waits for its barrier (a shared
/// `syncfs`, a few milliseconds); claiming ahead lets those waits overlap the uploads and share
/// rounds, instead of every upload slot paying one in turn (a burst of small files went from
/// about 1,900 to about 2,600 files per second). The rest of a backlog waits unclaimed in the
/// inbox, where an operator can still take a file back. (128 was tried: while rounds are slow
/// it kept the upload slots busier, 96 % of the time instead of 70 %, but each file cost more
/// CPU, 0.68 against 0.60 ms in five alternating pairs, and the burst was no faster.)
pub const CLAIMS_AHEAD: usize = 32;

/// The most file events the main loop takes in one turn (see `run`).
const NUDGES_PER_TURN: usize = 1024;

/// How the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Watch until told to stop.
    Watch,
    /// Handle what is in the inboxes now, then return.
    Once,
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Files filed in done.
    pub done: u64,
    /// Files filed in failed.
    pub failed: u64,
    /// Files left claimed because the credentials were unusable ([`Mode::Once`] only; the
    /// next run takes them up).
    pub waiting: u64,
    /// Files an error kept from their folder (left in the inbox or claimed; the log says why).
    pub errors: u64,
    /// A stop was asked for before the run was over ([`Mode::Once`]: files may be left).
    pub interrupted: bool,
}

/// A failure that stops the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A folder could not be created or read.
    #[error("inbox unusable: {0}")]
    Folder(#[from] store::StoreError),
    /// The inboxes could not be watched.
    #[error(transparent)]
    Watch(#[from] watch::WatchError),
    /// The HTTP client could not be set up.
    #[error(transparent)]
    Client(#[from] crate::upload::ClientError),
    /// The credentials are unusable.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// Another process handles one of the inboxes.
    #[error(transparent)]
    Locked(#[from] store::LockError),
    /// The metrics endpoint could not listen.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The main loop itself crashed (a bug): what it said.
    #[error("the main loop crashed: {0}")]
    Crashed(String),
}

/// What the process around the daemon asks of it.
#[derive(Debug)]
pub enum Control {
    /// Stop taking files and shut down.
    Shutdown,
    /// Switch to this (already validated) configuration without dropping uploads in flight.
    Reload(Box<Config>),
}

/// The settings a handler reads at each step; replaced as a whole by a reload, so a file in
/// backoff picks up new credentials or endpoints at its next attempt.
struct Settings {
    uploader: Uploader,
    releaser: crate::release::Releaser,
    retry: RetryPolicy,
    max_file_size: u64,
    validate_package: bool,
}

impl Settings {
    fn new(config: &Config) -> Result<Settings, DaemonError> {
        let client = crate::upload::http_client(&config.codearts)?;
        let auth = Auth::new(&config.auth, client.clone())?;
        Ok(Settings {
            releaser: crate::release::Releaser::new(&config.codearts, client.clone(), auth.clone()),
            uploader: Uploader::new(&config.codearts, client, auth),
            retry: config.retry.clone(),
            max_file_size: config.upload.max_file_size,
            validate_package: config.upload.validate_package,
        })
    }
}

/// Everything a file's handler needs, shared by all handlers.
struct Context {
    settings: RwLock<Arc<Settings>>,
    mode: Mode,
    /// Upload slots: `concurrency` files at a time are checked and uploaded.
    slots: Arc<Semaphore>,
    /// Claim slots ([`CLAIMS_AHEAD`]): a file is claimed with one and gives it up once it has
    /// an upload slot.
    claims: Arc<Semaphore>,
    concurrency: AtomicUsize,
    stop: signal::Receiver<bool>,
    busy: Busy,
    done: AtomicU64,
    failed: AtomicU64,
    metrics: Metrics,
    in_progress: Mutex<HashMap<String, u64>>,
    /// The inbox locks this process holds, by inbox; kept until the process ends, even for
    /// watches a reload removed, whose claims may still be in flight.
    locks: Mutex<HashMap<PathBuf, store::InboxLock>>,
    /// Claim folders a live handler owns, so a resume (at a reload) never starts a second one.
    owned: Mutex<HashSet<PathBuf>>,
    /// Files left in the inbox or claimed because of an error (a claim or filing that failed,
    /// a handler that panicked): `once` reports them with exit status 1.
    errors: AtomicU64,
    waiting: AtomicU64,
    trouble: CredentialTrouble,
    /// Claims whose handler panicked, noted by [`Handling`]'s drop during the unwind with the
    /// task's id, for the main loop to take up again when it joins that task.
    crashed: Mutex<Vec<Crashed>>,
    /// How many times each claim's handler has crashed.
    crashes: Mutex<HashMap<PathBuf, u32>>,
    /// Files filed out of files found, shown by `once` on a terminal.
    progress: crate::progress::FilesProgress,
}

/// A claim whose handler panicked.
struct Crashed {
    /// The handler's task.
    task: Option<tokio::task::Id>,
    watch: Arc<Watch>,
    dir: PathBuf,
}

/// A handler's hold on a claim: it owns the claim folder and counts as in progress for its
/// watch until dropped. Dropped by a panic's unwind, it notes the claim as crashed so that the
/// main loop takes it up again.
struct Handling<'a> {
    ctx: &'a Context,
    watch: Arc<Watch>,
    dir: PathBuf,
}

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        self.ctx
            .owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.dir);
        self.ctx.count_in_progress(&self.watch.name, false);
        if std::thread::panicking() {
            self.ctx
                .crashed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Crashed {
                    task: tokio::task::try_id(),
                    watch: self.watch.clone(),
                    dir: self.dir.clone(),
                });
        }
    }
}

impl Context {
    /// Takes hold of a claim, unless another handler already has it.
    fn handle(&self, watch: &Arc<Watch>, claim: &Claim) -> Option<Handling<'_>> {
        let dir = claim.dir().to_owned();
        if !self
            .owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.clone())
        {
            return None;
        }
        self.count_in_progress(&watch.name, true);
        Some(Handling {
            ctx: self,
            watch: watch.clone(),
            dir,
        })
    }

    fn owns(&self, claim: &Claim) -> bool {
        self.owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(claim.dir())
    }

    /// Takes the lock of every inbox not locked yet.
    fn lock_inboxes(&self, watches: &[Watch]) -> Result<(), DaemonError> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        let new: Vec<&Watch> = watches
            .iter()
            .filter(|w| !locks.contains_key(&w.inbox))
            .collect();
        // All or none, as at start-up: a reload refused half-way keeps no lock it took.
        locks.extend(crate::standby::lock_all(new)?);
        Ok(())
    }

    /// Files in progress, all watches together.
    fn in_progress_total(&self) -> u64 {
        self.in_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }

    /// Something kept a file from its folder; `once` must not report success.
    fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn count_in_progress(&self, watch: &str, up: bool) {
        let mut map = self.in_progress.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(watch.to_owned()).or_default();
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
        self.metrics.set_in_progress(watch, *n);
    }

    /// How long a claim that met an I/O error waits before it is tried again.
    fn io_retry_delay(&self) -> Duration {
        self.settings().retry.max_delay.min(FILING_RETRY)
    }

    fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits for an upload slot; `None` once shutdown has begun.
    async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.acquire(&self.slots).await
    }

    /// Waits for a claim slot; `None` once shutdown has begun.
    async fn claim_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.acquire(&self.claims).await
    }

    async fn acquire(&self, slots: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return None;
        }
        tokio::select! {
            permit = slots.clone().acquire_owned() => permit.ok(),
            _ = stop.wait_for(|s| *s) => None,
        }
    }

    /// Sleeps unless shutdown begins first; `false` when it did.
    async fn pause(&self, delay: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => !self.stopping(),
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    /// Changes the number of upload slots. Shrinking takes slots out as they come free, so
    /// uploads in flight are never interrupted.
    fn resize(&self, concurrency: usize) {
        let old = self.concurrency.swap(concurrency, Ordering::Relaxed);
        if concurrency > old {
            self.slots.add_permits(concurrency - old);
        } else if concurrency < old {
            let (slots, surplus) = (self.slots.clone(), (old - concurrency) as u32);
            tokio::spawn(async move {
                if let Ok(permits) = slots.acquire_many_owned(surplus).await {
                    permits.forget();
                }
            });
        }
    }

    /// A file cannot go because the credentials are unusable (`error`, after the server's
    /// `refusal` if there was one): reports that (once for all files), then waits for the
    /// operator or for IAM. `waits` counts this file's waits so far. `false` when the file
    /// should stop here and stay claimed: at shutdown, or in `once` when waiting cannot help
    /// (a permanent error, or [`ONCE_CREDENTIAL_WAITS`] waits).
    async fn wait_for_credentials(
        &self,
        watch: &Watch,
        claim: &Claim,
        error: &AuthError,
        refusal: Option<&Answer>,
        attempt_started: Instant,
        waits: &mut u32,
    ) -> bool {
        let text = match refusal {
            // The server's words tell a wrong key from an expired token or a locked user.
            Some(answer) => format!("{error} (the server said {})", answer.describe()),
            None => error.to_string(),
        };
        self.trouble.report(text, attempt_started);
        *waits += 1;
        if self.mode == Mode::Once && (!error.is_transient() || *waits >= ONCE_CREDENTIAL_WAITS) {
            self.waiting.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(watch = %watch.name, file = %claim.record.rel_path, "the credentials are unusable: the file stays claimed and the next run takes it up");
            return false;
        }
        tracing::debug!(watch = %watch.name, file = %claim.record.rel_path, "the file waits for usable credentials");
        self.pause(self.settings().retry.max_delay.min(CREDENTIALS_PAUSE))
            .await
    }
}

/// Logs credential trouble once however many files run into it, and once more when it is
/// over, so that a wrong password makes one clear line rather than one per file and retry.
/// Each sentence is logged once while the trouble lasts, not only when it differs from the
/// last one: attempts in flight meet different sentences at once (an operator rewriting the
/// password file makes some read it empty while others still meet the old refusal), and the
/// same refusal came back in the log after the "empty" line.
#[derive(Default)]
struct CredentialTrouble {
    state: Mutex<TroubleState>,
}

/// Distinct sentences remembered in one spell of credential trouble: a bound on memory (a
/// sentence quoting something that changes at every try would grow the list for ever), not
/// on what is logged in practice, which is a handful of sentences.
const MAX_TROUBLES: usize = 8;

#[derive(Default)]
struct TroubleState {
    /// The sentences reported while the trouble lasts (a few at most: see [`MAX_TROUBLES`]).
    reported: Vec<String>,
    /// When the credentials were last seen working.
    worked_at: Option<Instant>,
}

impl CredentialTrouble {
    /// Reports trouble met by an attempt that started at `attempt_started`. An attempt older
    /// than the last success is stale news (it met the trouble before it was fixed) and is not
    /// reported again.
    fn report(&self, text: String, attempt_started: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .worked_at
            .is_some_and(|worked| worked > attempt_started)
        {
            return;
        }
        if !state.reported.contains(&text) {
            tracing::error!(error = %text, "uploads wait until the credentials work");
            if state.reported.len() >= MAX_TROUBLES {
                state.reported.remove(0);
            }
            state.reported.push(text);
        }
    }

    fn over(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.worked_at = Some(Instant::now());
        if !std::mem::take(&mut state.reported).is_empty() {
            tracing::info!("the credentials work again; waiting uploads resume");
        }
    }
}

/// The watching half of the daemon: watches, their watchers and the readiness tracker. A
/// reload builds a new one and swaps it in only once it is fully armed.
struct Watching {
    watches: Vec<Arc<Watch>>,
    /// Kept for its `Drop`, which disarms the watchers.
    _armed: Option<watch::Armed>,
    tracker: Tracker,
    next_rescan: Vec<Instant>,
    /// Each inbox's identity when it was armed: an inbox removed or replaced (its watch gone
    /// with the old folder) is noticed by comparing.
    inboxes: Vec<Option<watch::FolderId>>,
}

impl Watching {
    /// Arms and scans the watches of `config`. Replacing `previous` (a reload, a re-arm), it
    /// takes over its ready files in inboxes that are still the same folders, so they keep
    /// their place in line; `previous` keeps the rest (it is dropped right after).
    fn new(
        config: &Config,
        mode: Mode,
        busy: &Busy,
        nudges: &mpsc::UnboundedSender<Nudge>,
        previous: Option<&mut Watching>,
    ) -> Result<Watching, DaemonError> {
        for watch in &config.watches {
            store::ensure_folders(watch)?;
        }
        let watches: Vec<Arc<Watch>> = config.watches.iter().cloned().map(Arc::new).collect();
        let armed = match mode {
            Mode::Watch => Some(watch::arm(&watches, nudges.clone())?),
            Mode::Once => None,
        };
        let inboxes: Vec<_> = watches.iter().map(|w| watch::folder_id(&w.inbox)).collect();
        let mut tracker = Tracker::new(watches.clone(), busy.clone());
        if let Some(previous) = previous {
            let same = |old: usize, new: usize| {
                previous.watches[old].inbox == watches[new].inbox
                    && previous.inboxes[old].is_some()
                    && previous.inboxes[old] == inboxes[new]
            };
            tracker.adopt_ready(&mut previous.tracker, same);
        }
        // A reload or a re-arm lists every inbox from the main loop's worker.
        offload(|| tracker.scan_all());
        let next_rescan = watches
            .iter()
            .map(|w| Instant::now() + w.rescan_interval)
            .collect();
        Ok(Watching {
            watches,
            _armed: armed,
            tracker,
            next_rescan,
            inboxes,
        })
    }

    /// The first inbox that was removed or replaced since it was armed.
    fn lost_inbox(&self) -> Option<&Watch> {
        self.watches
            .iter()
            .zip(&self.inboxes)
            .find(|(w, armed)| watch::folder_id(&w.inbox) != **armed)
            .map(|(w, _)| &**w)
    }

    /// When the main loop must next look at the inboxes: a candidate due (a few milliseconds
    /// late, see [`wake::COALESCE`]) or, when watching, a rescan.
    fn next_due(&self, mode: Mode) -> Option<Instant> {
        let rescan = match mode {
            Mode::Watch => self.next_rescan.iter().min().copied(),
            Mode::Once => None,
        };
        wake::earliest([
            self.tracker.next_check().map(|t| t + wake::COALESCE),
            rescan,
        ])
    }
}

/// Runs the daemon (or one pass of it) with `config` until [`Control::Shutdown`] arrives (or,
/// in [`Mode::Once`], until every file present at the start has been filed). `ready` is
/// called once every watch is armed and the start-up scan is queued.
pub async fn run(
    config: &Config,
    mode: Mode,
    mut control: mpsc::UnboundedReceiver<Control>,
    ready: impl FnOnce(),
) -> Result<Summary, DaemonError> {
    // One process per inbox. A second `run` waits on standby and takes over when the holder
    // is gone; `once` refuses instead, since a one-shot run must not wait on a service.
    let (config, locks) = match mode {
        Mode::Watch => match crate::standby::until_active(config.clone(), &mut control).await? {
            Standby::Active { config, locks } => (config, locks),
            Standby::Stopped => {
                return Ok(Summary {
                    interrupted: true,
                    ..Summary::default()
                });
            }
        },
        Mode::Once => (
            Box::new(config.clone()),
            crate::standby::lock_all(&config.watches)?,
        ),
    };
    let config = &*config;
    let (stop_tx, stop_rx) = signal::channel(false);
    let ctx = Arc::new(Context {
        settings: RwLock::new(Arc::new(Settings::new(config)?)),
        mode,
        slots: Arc::new(Semaphore::new(config.upload.concurrency)),
        claims: Arc::new(Semaphore::new(CLAIMS_AHEAD)),
        concurrency: AtomicUsize::new(config.upload.concurrency),
        stop: stop_rx,
        busy: Busy::default(),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        metrics: Metrics::new(),
        in_progress: Mutex::new(HashMap::new()),
        locks: Mutex::new(locks),
        owned: Mutex::new(HashSet::new()),
        errors: AtomicU64::new(0),
        waiting: AtomicU64::new(0),
        trouble: CredentialTrouble::default(),
        crashed: Mutex::new(Vec::new()),
        crashes: Mutex::new(HashMap::new()),
        progress: crate::progress::FilesProgress::new(mode == Mode::Once),
    });
    config
        .watches
        .iter()
        .for_each(|w| ctx.metrics.add_watch(&w.name));
    // Healthy while the main loop keeps its promise to wake (see `wake::Heartbeat`).
    let heartbeat = Arc::new(wake::Heartbeat::new());
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(listen) = config.metrics_listen {
        let (beat, stop) = (heartbeat.clone(), ctx.stop.clone());
        let healthy = move || !*stop.borrow() && beat.healthy();
        crate::metrics::serve(listen, ctx.metrics.clone(), healthy, async move {
            let _ = metrics_stopped.await;
        })
        .await?;
    }
    let mut current = config.clone();
    let (nudge_tx, mut nudges) = mpsc::unbounded_channel();
    // Before the start-up scan, so that a file a retry had committed is found with the rest.
    for watch in &config.watches {
        store::recover_retries(watch);
    }
    let mut watching = Watching::new(config, mode, &ctx.busy, &nudge_tx, None)?;
    let mut tasks = JoinSet::new();
    // Files a previous run claimed: they were dropped earliest. Nothing else claims in these
    // inboxes yet, so leftovers of claims never completed can be cleaned up.
    resume_claims(&ctx, &watching.watches, true, &mut tasks).await?;
    // What `once` has to file: the files found in the inboxes and the claims taken up.
    ctx.progress
        .found((watching.tracker.waiting() + tasks.len()) as u64);
    ready();

    let watchdog = crate::systemd::watchdog_interval();
    let mut next_ping = watchdog.map(|_| Instant::now());
    // A look for an inbox removed or replaced, due shortly after an event (its removal
    // raises one), and again while re-arming fails.
    let mut lost_check: Option<Instant> = None;
    // The next refresh of the status line and the waiting metrics: due after a change, and
    // every `STATUS_EVERY` while anything waits or is in progress.
    let mut refresh: Option<Instant> = Some(Instant::now());
    let mut status = String::new();
    let mut control_open = true;
    let mut interrupted = false;
    let mut rearm_failing = false;
    let mut backlog = backlog::Backlog::new(ctx.claims.clone());
    loop {
        let wake_at = wake::earliest([watching.next_due(mode), next_ping, lost_check, refresh]);
        heartbeat.asleep_until(wake_at);
        let mut changed = true;
        tokio::select! {
            command = control.recv(), if control_open => match command {
                Some(Control::Shutdown) => {
                    interrupted = true;
                    tracing::info!("shutting down: no new files are taken");
                    crate::systemd::stopping();
                    break;
                }
                Some(Control::Reload(new)) => {
                    crate::systemd::reloading();
                    match reload(&ctx, &current, &new, mode, &nudge_tx, &mut watching, &mut tasks).await {
                        Ok(swapped) => {
                            watching = swapped;
                            tracing::info!(watches = watching.watches.len(), "configuration reloaded");
                            current = *new;
                        }
                        Err(e) => tracing::error!("reload refused, the previous configuration stays in force: {e}"),
                    }
                    crate::systemd::ready();
                }
                None => control_open = false,
            },
            Some(nudge) = nudges.recv() => {
                // The events already queued are taken in this one turn (up to a bound, so that
                // a flood still lets the loop hand out files and hear signals): a burst of
                // arrivals costs a turn of the loop per wake-up, not per file, and one rescan.
                let mut rescan = false;
                let queued = std::iter::from_fn(|| nudges.try_recv().ok()).take(NUDGES_PER_TURN);
                for nudge in std::iter::once(nudge).chain(queued) {
                    match nudge {
                        Nudge::Paths(paths) => paths.iter().for_each(|p| watching.tracker.note(p)),
                        Nudge::Rescan => {
                            if !rescan {
                                tracing::warn!("file events were lost (queue overflow): rescanning every inbox");
                            }
                            rescan = true;
                        }
                        Nudge::Error(e) => {
                            tracing::error!(error = %e, "watcher error; rescanning");
                            rescan = true;
                        }
                    }
                }
                if rescan {
                    offload(|| watching.tracker.scan_all());
                }
                lost_check = lost_check.or(Some(Instant::now() + watching.tracker.glance()));
            }
            // `once` ends with its last task, so it wakes for each; a service reaps finished
            // tasks at whatever wakes it next (at the latest the status refresh, due while
            // tasks run), rather than waking once more per file in a burst.
            Some(joined) = tasks.join_next(), if mode == Mode::Once && !tasks.is_empty() => {
                if let Err(e) = joined {
                    take_up_crashed(&ctx, e, &mut tasks);
                }
            }
            permit = backlog.next(), if watching.tracker.has_ready() => {
                // Nothing between the guard and here takes a ready file.
                if let Some(found) = watching.tracker.take_ready() {
                    tasks.spawn(life_of_a_file(ctx.clone(), found, permit));
                }
            }
            _ = wake::until(wake_at) => changed = false,
        }
        heartbeat.awake();
        while let Some(joined) = tasks.try_join_next() {
            if let Err(e) = joined {
                take_up_crashed(&ctx, e, &mut tasks);
            }
        }
        let now = Instant::now();
        if let (Some(every), Some(due)) = (watchdog, next_ping)
            && now >= due
        {
            // Pinged from the main loop itself: if it wedges, the pings stop.
            crate::systemd::alive();
            next_ping = Some(now + every);
        }
        let rescan_due = watching.next_rescan.iter().any(|due| now >= *due);
        if mode == Mode::Watch && (lost_check.is_some_and(|at| now >= at) || rescan_due) {
            lost_check = None;
            if let Some(lost) = watching.lost_inbox() {
                let inbox = lost.inbox.clone();
                match rearm(&ctx, &current, &inbox, &nudge_tx, &mut watching) {
                    Ok(rearmed) => {
                        watching = rearmed;
                        rearm_failing = false;
                        tracing::warn!(inbox = %inbox.display(), "the inbox was removed or replaced: it is watched again (created anew where it was missing)");
                    }
                    Err(e) => {
                        if !rearm_failing {
                            tracing::error!(inbox = %inbox.display(), error = %e, "the inbox was removed or replaced and cannot be watched again; trying again");
                        }
                        rearm_failing = true;
                        lost_check = Some(now + watching.tracker.glance());
                    }
                }
            }
        }
        if mode == Mode::Watch {
            for (i, due) in watching.next_rescan.iter_mut().enumerate() {
                if now >= *due {
                    offload(|| watching.tracker.scan(i));
                    *due = now + watching.watches[i].rescan_interval;
                }
            }
        }
        // At most `LOOKS_PER_ROUND` `lstat`s, and none unless a file is due: run in place.
        if watching.tracker.ready(now) > 0 {
            changed = true;
        }
        while watching.tracker.has_ready()
            && let Some(permit) = backlog.try_next()
            && let Some(found) = watching.tracker.take_ready()
        {
            tasks.spawn(life_of_a_file(ctx.clone(), found, permit));
        }
        if !watching.tracker.has_ready() {
            backlog.leave_line();
        }
        if changed {
            refresh = refresh.or(Some(now + wake::STATUS_EVERY));
        }
        if refresh.is_some_and(|at| now >= at) {
            let wall = SystemTime::now();
            for (w, (files, oldest)) in watching
                .watches
                .iter()
                .zip(watching.tracker.waiting_per_watch())
            {
                let age = oldest
                    .and_then(|o| wall.duration_since(o).ok())
                    .unwrap_or_default();
                ctx.metrics.set_waiting(&w.name, files, age.as_secs_f64());
            }
            let line = format!(
                "{} waiting, {} in progress, {} done, {} failed",
                watching.tracker.waiting() + ctx.busy.len(),
                ctx.in_progress_total(),
                ctx.done.load(Ordering::Relaxed),
                ctx.failed.load(Ordering::Relaxed)
            );
            if line != status {
                crate::systemd::status(&line);
                status = line;
            }
            // Counts and ages move on their own while files wait or are in progress.
            let active = !watching.tracker.is_empty() || !ctx.busy.is_empty() || !tasks.is_empty();
            refresh = active.then(|| now + wake::STATUS_EVERY);
        }
        // Checked after every wake-up, a finished task's included, not on a tick.
        if mode == Mode::Once && watching.tracker.is_empty() && tasks.is_empty() {
            break;
        }
    }

    // Shutdown (or the end of a pass): stop claiming, let uploads in flight finish for a while.
    drop(watching);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "a file handler failed; its file stays claimed");
                ctx.error();
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "uploads still running after {}s are cut off; their files stay claimed and are resumed at the next start",
            SHUTDOWN_GRACE.as_secs()
        );
        tasks.abort_all();
    }
    let _ = metrics_stop.send(());
    ctx.progress.finish();
    Ok(Summary {
        done: ctx.done.load(Ordering::Relaxed),
        failed: ctx.failed.load(Ordering::Relaxed),
        waiting: ctx.waiting.load(Ordering::Relaxed),
        errors: ctx.errors.load(Ordering::Relaxed),
        interrupted,
    })
}

/// Applies a new configuration: builds and arms everything new first, and only then swaps it
/// in, so a reload that fails half-way leaves the old configuration running. Handlers in
/// flight keep the watch they started with.
async fn reload(
    ctx: &Arc<Context>,
    old: &Config,
    new: &Config,
    mode: Mode,
    nudges: &mpsc::UnboundedSender<Nudge>,
    watching: &mut Watching,
    tasks: &mut JoinSet<()>,
) -> Result<Watching, DaemonError> {
    let settings = Settings::new(new)?;
    ctx.lock_inboxes(&new.watches)?;
    let swapped = Watching::new(new, mode, &ctx.busy, nudges, Some(watching))?;
    new.watches
        .iter()
        .for_each(|w| ctx.metrics.add_watch(&w.name));
    *ctx.settings.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
    ctx.resize(new.upload.concurrency);
    if old.metrics_listen != new.metrics_listen {
        tracing::warn!("metrics.listen changed: it takes effect at the next restart");
    }
    if old.log.format != new.log.format || old.log.level != new.log.level {
        tracing::warn!("[log] changed: it takes effect at the next restart");
    }
    // Claims in inboxes watched before belong to handlers still running; only new inboxes
    // can hold claims nobody is working on.
    let known: HashSet<&std::path::Path> =
        watching.watches.iter().map(|w| w.inbox.as_path()).collect();
    let added: Vec<Arc<Watch>> = swapped
        .watches
        .iter()
        .filter(|w| !known.contains(w.inbox.as_path()))
        .cloned()
        .collect();
    // Handlers from before may still be claiming there (an inbox removed and added back), so
    // nothing that looks like an unfinished claim is cleaned up.
    if let Err(e) = resume_claims(ctx, &added, false, tasks).await {
        // The new configuration is in force already; its claims wait for the next start.
        tracing::error!(error = %e, "cannot resume the claims of the added watches");
    }
    Ok(swapped)
}

/// Watches the inboxes again after `inbox` was removed or replaced: its lock is taken anew on
/// the new folder (the old lock file went with the old folder), folders missing are created
/// as at start-up, and every watch is re-armed and scanned.
fn rearm(
    ctx: &Context,
    config: &Config,
    inbox: &std::path::Path,
    nudges: &mpsc::UnboundedSender<Nudge>,
    previous: &mut Watching,
) -> Result<Watching, DaemonError> {
    if let Some(watch) = config.watches.iter().find(|w| w.inbox == inbox) {
        store::ensure_folders(watch)?;
        let lock = store::lock_inbox(watch)?;
        ctx.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(inbox.to_owned(), lock);
    }
    Watching::new(config, Mode::Watch, &ctx.busy, nudges, Some(previous))
}

/// Runs a scan of the main loop without stalling the uploads that share its worker thread: a
/// large inbox can take a while to list.
fn offload<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

fn join_error(e: tokio::task::JoinError) -> store::StoreError {
    store::StoreError {
        action: "run blocking task for",
        path: Default::default(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// The life of a file, from the moment it is ready in the inbox and has a claim slot
/// (`permit`, given by the main loop's [`backlog::Backlog`]).
async fn life_of_a_file(ctx: Arc<Context>, found: Found, permit: OwnedSemaphorePermit) {
    let path = found.path.clone();
    // Ready → claimed: only with a claim slot, so that all but a few unclaimed files wait in
    // the inbox (where an operator can still take them back) rather than in the work folder.
    // A claim that fails leaves the file in the inbox; it is tried again after a pause (and a
    // new wait for a slot), the path held meanwhile so that no second handler takes it.
    let mut failures = 0u32;
    let mut first = Some(permit);
    let (claim, permit) = loop {
        let Some(permit) = (match first.take() {
            Some(permit) => Some(permit),
            None => ctx.claim_slot().await,
        }) else {
            ctx.busy.release(&path);
            return;
        };
        // In place, its barrier awaited (see `store::claim_at_async`).
        let claimed = store::claim_at_async(
            &found.watch,
            &found.path,
            &found.rel_path,
            found.exact_name,
            found.first_seen,
        )
        .await;
        let error = match claimed {
            Ok(Some(claim)) => break (claim, permit),
            Ok(None) => {
                // Gone, or replaced by something that is not a file.
                ctx.busy.release(&path);
                return;
            }
            Err(e) => e.to_string(),
        };
        drop(permit);
        if failures == 0 {
            tracing::error!(watch = %found.watch.name, file = %found.rel_path, error = %error, "cannot claim file; it stays in the inbox and is tried again after a pause");
        }
        failures += 1;
        if ctx.mode == Mode::Once || !ctx.pause(ctx.io_retry_delay()).await {
            ctx.error();
            ctx.busy.release(&path);
            return;
        }
    };
    ctx.busy.release(&path);
    if !claim.unsynced().is_empty() {
        tracing::warn!(watch = %found.watch.name, file = %found.rel_path, "claimed, but the folders could not be synced; they are synced again before the upload");
    }
    tracing::debug!(watch = %found.watch.name, file = %found.rel_path, "claimed");
    // Claimed → with an upload slot: the claim slot goes to the next file only then, so that
    // the next claim's wait for its barrier overlaps this file's upload. At shutdown the
    // claim waits for the next start, as every claim not yet filed does.
    let Some(slot) = ctx.slot().await else {
        return;
    };
    drop(permit);
    carry_on(ctx, found.watch, claim, Some(slot)).await;
}

/// The rest of a file's life once it is claimed: named, checked, uploaded, judged, filed. Also
/// the entry point for claims resumed after a restart.
async fn carry_on(
    ctx: Arc<Context>,
    watch: Arc<Watch>,
    mut claim: Claim,
    permit: Option<OwnedSemaphorePermit>,
) {
    let Some(_handling) = ctx.handle(&watch, &claim) else {
        return; // another handler has this claim
    };
    // Tests make handlers panic here (debug builds only, see `store::fault`).
    store::fault::crash_point("handler", std::path::Path::new(&claim.record.rel_path));
    // A claim taken up again (it comes without a slot) may have been filed by the handler
    // that had it, between the resume's look and now; a claim just made cannot have been.
    if permit.is_none()
        && let Err(e) = std::fs::symlink_metadata(claim.dir())
        && e.kind() == std::io::ErrorKind::NotFound
    {
        // (Any other error is not taken for "gone": the steps below meet it and retry or
        // refuse.)
        return;
    }
    // A decided claim was interrupted while being filed: finish that, never upload again.
    if let Some(decision) = claim.record.decided.clone() {
        file(&ctx, &watch, claim, decision.report).await;
        return;
    }
    let mut draft = Draft::new(&watch, &claim);

    // Named.
    if claim.record.name_not_utf8 {
        let reason = "the file name is not valid UTF-8 (its invalid bytes are shown as \\xNN): \
            rename it to a UTF-8 name and drop it again"
            .to_owned();
        file(&ctx, &watch, claim, draft.failed(reason, None)).await;
        return;
    }
    let (rule, plugin_name, business_type) = match watch.rules.derive(&claim.record.rel_path) {
        Derivation::Named {
            rule,
            plugin_name,
            business_type,
            ..
        } => (rule, plugin_name, business_type),
        Derivation::Invalid { reason, .. } | Derivation::NoMatch { reason } => {
            file(&ctx, &watch, claim, draft.failed(reason, None)).await;
            return;
        }
    };
    draft.plugin_name = Some(plugin_name.clone());
    draft.business_type = Some(business_type.clone());

    // Checked, with an upload slot: hashing and unzipping are work that `concurrency` bounds
    // too (a resumed claim arrives without one).
    let permit = match permit {
        Some(permit) => permit,
        None => match ctx.slot().await {
            Some(permit) => permit,
            None => return,
        },
    };
    let examined = {
        let settings = ctx.settings();
        let (limit, validate) = (settings.max_file_size, settings.validate_package);
        check::check(&claim, limit, validate, &plugin_name, &business_type).await
    };
    let mut facts = match examined {
        Ok(Ok(facts)) => {
            draft.size = facts.snapshot.size;
            facts
        }
        Ok(Err(Refusal { size, reason })) => {
            draft.size = size;
            // Filing may wait on a broken folder; it must not hold an upload slot meanwhile.
            drop(permit);
            file(&ctx, &watch, claim, draft.failed(reason, None)).await;
            return;
        }
        Err(check::Broke::Crashed(why)) => {
            // A package that crashes the check would crash it at every try: a refusal.
            drop(permit);
            let reason = format!("the package check crashed: {why}");
            file(&ctx, &watch, claim, draft.failed(reason, None)).await;
            return;
        }
        Err(check::Broke::Cancelled(e)) => {
            // Cancelled: only at shutdown, when the claim waits for the next start anyway.
            tracing::error!(error = %e, "check task failed; the file stays claimed");
            ctx.error();
            return;
        }
    };

    // Looked up, and registered when needed: the release steps (SPEC §6), when the watch or
    // its rule asks for them. What cannot succeed is refused before the upload; each step is
    // recorded in the claim before the next begins, so a restart continues where it stopped.
    let plan = steps::Plan::of(
        &watch,
        rule,
        &plugin_name,
        &business_type,
        facts.manifest.as_ref(),
        &mut draft,
    );
    let mut permit = Some(permit);
    if let Some(plan) = &plan
        && let Err(halted) =
            steps::look_up_and_register(&ctx, &watch, &mut claim, &mut draft, plan, &mut permit)
                .await
    {
        drop(permit);
        return halt(&ctx, &watch, claim, halted).await;
    }

    // Uploaded, with retries; `None` means the claim waits for the next start (shutdown came
    // first, or `once` could not get usable credentials). Never again once the claim says it
    // was.
    let report = match steps::uploaded_before(&claim, &draft) {
        Some(report) => report,
        None => match upload(&ctx, &watch, &mut claim, &mut draft, &mut facts, permit).await {
            Some(report) => report,
            None => return,
        },
    };

    // Published, then verified: after an upload that succeeded, when the plan says so.
    let report = match &plan {
        Some(plan) => {
            let published =
                steps::publish_and_verify(&ctx, &watch, &mut claim, &mut draft, plan, report).await;
            match published {
                Ok(report) => report,
                Err(halted) => return halt(&ctx, &watch, claim, halted).await,
            }
        }
        None => report,
    };

    // Filed.
    file(&ctx, &watch, claim, report).await;
}

/// Ends a file's life at a release step that halted: filed when decided, else left claimed.
async fn halt(ctx: &Context, watch: &Arc<Watch>, claim: Claim, halted: steps::Halt) {
    if let steps::Halt::File(report) = halted {
        file(ctx, watch, claim, *report).await;
    }
}

/// Upload attempts until success, a permanent refusal or the end of the retry budget (see
/// [`attempts`]); `None` when the file stays claimed instead.
async fn upload(
    ctx: &Context,
    watch: &Watch,
    claim: &mut Claim,
    draft: &mut Draft,
    checked: &mut Facts,
    mut permit: Option<OwnedSemaphorePermit>,
) -> Option<Report> {
    let counter: attempts::Counter = |record| &mut record.attempts;
    let refusal = |verdict: &Verdict| match verdict {
        Verdict::Rejected { reason, .. } => reason.clone(),
        other => crate::release::verdict_reason(other),
    };
    let mut attempts = match Attempts::begin(ctx, claim, "upload", counter, refusal) {
        Ok(attempts) => attempts,
        Err(why) => return Some(draft.failed(why, None)),
    };
    let (plugin_name, business_type) = (
        draft.plugin_name.clone().unwrap_or_default(),
        draft.business_type.clone().unwrap_or_default(),
    );
    loop {
        let attempt = attempts.next(ctx, watch, claim, &mut permit).await?;
        draft.attempts = attempt;
        tracing::info!(watch = %watch.name, file = %claim.record.rel_path, plugin_name = %plugin_name, business_type = %business_type, attempt, "uploading");
        let payload = claim.payload();
        let started = Instant::now();
        // The check's handle serves the first attempt; a retry opens the file again.
        let opened = checked.opened.take();
        let tried = ctx
            .settings()
            .uploader
            .attempt(
                Package {
                    path: &payload,
                    file_name: claim.file_name(),
                    checked: checked.snapshot,
                    plugin_name: &plugin_name,
                    business_type: &business_type,
                },
                opened,
            )
            .await;
        // The report names what went out; a file that changed on the way has its own verdict.
        match tried.sent {
            Sent::Complete { sha256 } => draft.sha256 = Some(sha256),
            // Nothing whole went out, and the file is no longer the one hashed: no hash
            // describes an upload of it.
            _ if tried.changed => draft.sha256 = None,
            _ => {}
        }
        let metrics = &ctx.metrics;
        metrics.attempt(&watch.name, tried.verdict.class());
        if !matches!(tried.verdict, Verdict::NoCredentials(_)) {
            metrics.upload_duration(&watch.name, started.elapsed().as_secs_f64());
        }
        if let Verdict::Uploaded(answer) = tried.verdict {
            metrics.uploaded_bytes(&watch.name, draft.size);
            metrics.last_success(&watch.name);
            ctx.trouble.over();
            return Some(draft.done(answer));
        }
        match attempts
            .judge(ctx, watch, claim, &mut permit, tried.verdict)
            .await
        {
            Judged::Again => {}
            Judged::Stay => return None,
            Judged::Failed { why, answer } => {
                draft.attempts = claim.record.attempts;
                return Some(draft.failed(why, answer));
            }
        }
    }
}

/// Saves the claim's record, after syncing the folders its claim could not sync.
async fn save(claim: &mut Claim) -> Result<(), String> {
    if !claim.unsynced().is_empty() {
        let (dir, unsynced) = (claim.dir().to_owned(), claim.unsynced().to_vec());
        tokio::task::spawn_blocking(move || store::sync_claim(&dir, &unsynced))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        claim.synced();
    }
    // A record rewritten in place, with no barrier to wait for: run here, as the upload's
    // `open` is, since a hand-off to the blocking pool and back costs more than the write.
    claim.save().map_err(|e| e.to_string())
}

/// Whether a claim is filed in place, its barrier awaited (`store::file_async`): when its
/// move cannot copy much (a move across file systems copies the file) and its claim's barrier
/// is not owed (one that failed is synced again from the blocking pool). A file uploaded is
/// the size its report says (it was found unchanged after its upload); any other is looked at.
fn in_place(claim: &Claim, report: &Report) -> bool {
    let small = |size| size <= crate::upload::READ_IN_PLACE;
    claim.unsynced().is_empty()
        && match report.outcome {
            Outcome::Done => small(report.size),
            Outcome::Failed => {
                std::fs::symlink_metadata(claim.payload()).map_or(true, |meta| small(meta.len()))
            }
        }
}

/// Writes the outcome down and moves the file to done or failed.
async fn file(ctx: &Context, watch: &Arc<Watch>, claim: Claim, report: Report) {
    let (name, outcome) = (report.file.clone(), report.outcome);
    let dir = claim.dir().to_owned();
    let mut claim = Some(claim);
    let mut failures = 0u32;
    loop {
        // After a failed filing the claim is read back: its record may hold the decision now.
        let attempt = match claim.take() {
            Some(claim) => Ok(Some(claim)),
            None => store::reopen(&dir),
        };
        let filed = match attempt {
            Ok(None) => return, // the failed filing had completed after all
            Ok(Some(claim)) if in_place(&claim, &report) => {
                store::file_async(watch, claim, report.clone()).await
            }
            Ok(Some(claim)) => {
                let (watch, report) = (watch.clone(), report.clone());
                tokio::task::spawn_blocking(move || store::file(&watch, claim, report))
                    .await
                    .unwrap_or_else(|e| Err(join_error(e)))
            }
            Err(e) => Err(e),
        };
        match filed {
            Ok(dest) => {
                match outcome {
                    Outcome::Done => ctx.done.fetch_add(1, Ordering::Relaxed),
                    Outcome::Failed => ctx.failed.fetch_add(1, Ordering::Relaxed),
                };
                ctx.progress.filed();
                ctx.metrics.file_filed(&watch.name, outcome.as_str());
                // Operators filter the journal on WARN: a file filed in failed needs a person,
                // one filed in done does not.
                macro_rules! filed {
                    ($level:expr) => {
                        tracing::event!(
                            $level,
                            watch = %watch.name,
                            file = %name,
                            outcome = outcome.as_str(),
                            to = %dest.display(),
                            plugin_name = report.plugin_name.as_deref().unwrap_or(""),
                            business_type = report.business_type.as_deref().unwrap_or(""),
                            attempt = report.attempts,
                            status = report.http_status,
                            request_id = report.request_id.as_deref().unwrap_or(""),
                            reason = report.reason.as_deref().unwrap_or(""),
                            "filed"
                        )
                    };
                }
                match outcome {
                    Outcome::Done => filed!(tracing::Level::INFO),
                    Outcome::Failed => filed!(tracing::Level::WARN),
                }
                return;
            }
            Err(e) => {
                // Usually the operator's to fix (permissions, a full disk): keep trying, so the
                // file lands once it is fixed, without a restart.
                if failures == 0 {
                    tracing::error!(watch = %watch.name, file = %name, error = %e, "cannot file; the file stays claimed and filing is tried again until it works");
                }
                failures += 1;
                let wait = ctx.io_retry_delay();
                if ctx.mode == Mode::Once || !ctx.pause(wait).await {
                    ctx.error();
                    return;
                }
            }
        }
    }
}

/// What is known about a file so far, for its report.
struct Draft {
    file: String,
    watch: String,
    first_seen: String,
    plugin_name: Option<String>,
    business_type: Option<String>,
    size: u64,
    sha256: Option<String>,
    attempts: u32,
    release: ReleaseFacts,
}

impl Draft {
    fn new(watch: &Watch, claim: &Claim) -> Draft {
        Draft {
            file: claim.record.rel_path.clone(),
            watch: watch.name.clone(),
            first_seen: claim.record.first_seen.clone(),
            plugin_name: None,
            business_type: None,
            size: claim.size(),
            sha256: None,
            attempts: claim.record.attempts,
            release: ReleaseFacts {
                registered: claim.record.release.registered,
                ..ReleaseFacts::default()
            },
        }
    }

    fn report(&self, outcome: Outcome, answer: Option<Answer>, reason: Option<String>) -> Report {
        let answer = answer.unwrap_or_default();
        Report {
            file: self.file.clone(),
            watch: self.watch.clone(),
            outcome,
            plugin_name: self.plugin_name.clone(),
            business_type: self.business_type.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
            attempts: self.attempts,
            http_status: (answer.status != 0).then_some(answer.status),
            error_code: answer.error_code,
            error_msg: answer.error_msg,
            request_id: answer.request_id,
            reason,
            first_seen: self.first_seen.clone(),
            finished: timestamp(SystemTime::now()),
            release: self.release.clone(),
        }
    }

    fn done(&self, answer: Answer) -> Report {
        self.report(Outcome::Done, Some(answer), None)
    }

    fn failed(&self, reason: String, answer: Option<Answer>) -> Report {
        self.report(Outcome::Failed, answer, Some(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a refusal met by an attempt that began before the credentials were fixed
    /// was logged again after "the credentials work again".
    #[test]
    fn trouble_older_than_the_last_success_is_not_reported_again() {
        let trouble = CredentialTrouble::default();
        let before_fix = Instant::now();
        trouble.report("IAM refused a token".to_owned(), before_fix);
        trouble.over();
        trouble.report("IAM refused a token".to_owned(), before_fix);
        let state = trouble.state.lock().unwrap_or_else(|e| e.into_inner());
        assert!(state.reported.is_empty(), "stale news is not news");
        drop(state);
        trouble.report("IAM refused a token".to_owned(), Instant::now());
        let state = trouble.state.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            !state.reported.is_empty(),
            "a new refusal after the success is reported"
        );
    }

    /// Regression (a CI run): attempts in flight while the password file was being rewritten
    /// met "the password is empty" and the old refusal by turns, and the refusal, already
    /// logged, was logged again after the "empty" line.
    #[test]
    fn each_sentence_of_one_trouble_is_reported_once_even_by_turns() {
        let trouble = CredentialTrouble::default();
        for text in ["IAM refused a token", "the password is empty"].repeat(3) {
            trouble.report(text.to_owned(), Instant::now());
        }
        let state = trouble.state.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(
            state.reported,
            ["IAM refused a token", "the password is empty"],
            "each logged once"
        );
    }
}
