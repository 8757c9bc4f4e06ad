//! The folders: claiming a file out of the inbox, resuming claims after a crash, and filing a
//! file into `done` or `failed` with its report.
//!
//! Invariants, which together mean that no file is lost or silently uploaded twice:
//! - A claimed file lives at `<inbox>/.extdrop/<id>/file` beside `claim.json`, its record. The
//!   record is written (atomically) before the file is renamed in, so a claim folder with a file
//!   always has a record.
//! - The outcome and the chosen destination name are written into the record before anything
//!   leaves the claim folder. A file whose record has an outcome is never uploaded again; after
//!   a crash its filing is simply completed.
//! - Nothing is overwritten: a destination name is chosen free of both the file and its report
//!   while holding the folder's lock (filings into one folder take turns in this process), the
//!   report is written first, and the file is moved in with a no-replace rename; a collision
//!   with another process picks the next free name (`name~2.zip`, `name~3.zip`, …).
//! - A resumed filing whose file already stands at its destination (a copy across file systems
//!   that finished just before a crash) is recognised by its content and not filed twice.
//! - A move across file systems copies to a hidden temporary name, fsyncs, renames into place
//!   and only then removes the source. Directories are fsynced after renames.
//!
//! Everything here is blocking file-system work; async callers use `spawn_blocking`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::Watch;
use crate::outcome::{Outcome, Report};

/// Name of the hidden work folder inside every inbox.
pub const WORK_DIR: &str = ".extdrop";
const RECORD: &str = "claim.json";
const PAYLOAD: &str = "file";
const LOCK: &str = "lock";
/// Suffix of the report written beside a filed file.
pub const REPORT_SUFFIX: &str = ".result.json";

/// A file-system step that failed, with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct StoreError {
    /// What was being done, e.g. "create folder".
    pub action: &'static str,
    /// The path it was done to.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl StoreError {
    fn new(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.to_owned();
        move |source| StoreError {
            action,
            path,
            source,
        }
    }
}

/// The durable record of a claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// The watch that claimed the file.
    pub watch: String,
    /// Path relative to the inbox when it was claimed (`/` separators).
    pub rel_path: String,
    /// When the file was first seen (RFC 3339).
    pub first_seen: String,
    /// When it was claimed (RFC 3339); the retry budget's `max_elapsed` counts from here.
    pub claimed_at: String,
    /// Upload attempts started so far, across restarts.
    pub attempts: u32,
    /// Seconds spent waiting for usable credentials: not the file's fault, so not counted
    /// against `retry.max_elapsed`.
    #[serde(default)]
    pub credential_wait_secs: u64,
    /// Set once the outcome is known: from then on the file is only filed, never uploaded.
    pub decided: Option<Decision>,
    /// The file's name was not valid UTF-8: `rel_path` shows its invalid bytes as `\xNN`, so
    /// it is not the real name and the file can only be refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub name_not_utf8: bool,
    /// How far the file got through the release steps (SPEC §6); empty when the watch asks
    /// for none, and in records of older versions.
    #[serde(
        default,
        skip_serializing_if = "crate::release::Progress::is_untouched"
    )]
    pub release: crate::release::Progress,
}

/// An outcome that has been decided but perhaps not yet filed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    /// The report to write.
    pub report: Report,
    /// The name taken in the destination folder, once one is chosen.
    #[serde(default)]
    pub dest_name: Option<String>,
}

/// A file this process owns: it sits in the work folder and nobody else will touch it.
#[derive(Debug)]
pub struct Claim {
    dir: PathBuf,
    /// The durable record.
    pub record: ClaimRecord,
}

impl Claim {
    /// The claimed file itself.
    pub fn payload(&self) -> PathBuf {
        self.dir.join(PAYLOAD)
    }

    /// The file's own name (last segment of its path in the inbox).
    pub fn file_name(&self) -> &str {
        self.record
            .rel_path
            .rsplit('/')
            .next()
            .unwrap_or(&self.record.rel_path)
    }

    /// Writes the record atomically (temporary file, fsync, rename, fsync folder).
    pub fn save(&self) -> Result<(), StoreError> {
        save_record(&self.dir, &self.record)
    }

    /// The claim folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The claim's id: its folder's name, unique among claims.
    pub fn id(&self) -> &str {
        self.dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("claim")
    }
}

/// Writes a claim record into its claim folder atomically.
pub fn save_record(dir: &Path, record: &ClaimRecord) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| StoreError {
        action: "encode claim record",
        path: dir.to_owned(),
        source: io::Error::other(e),
    })?;
    write_atomic(&dir.join(RECORD), &bytes)
}

/// Creates a folder and its parents with mode 0750 if it does not exist.
pub fn ensure_folder(path: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(path)
        .map_err(StoreError::new("create folder", path))
}

/// Creates the watch's inbox, work folder, done and failed folders where missing.
pub fn ensure_folders(watch: &Watch) -> Result<(), StoreError> {
    for folder in [&watch.inbox, &watch.work_dir(), &watch.done, &watch.failed] {
        ensure_folder(folder)?;
    }
    Ok(())
}

/// Claims `rel_path` (relative to the watch's inbox) by renaming it into a fresh claim folder.
///
/// Returns `Ok(None)` when the file is gone or is no longer a regular file (someone else took
/// it, or it was replaced by a link): there is nothing to do then.
pub fn claim(
    watch: &Watch,
    rel_path: &str,
    first_seen: SystemTime,
) -> Result<Option<Claim>, StoreError> {
    claim_at(
        watch,
        &watch.inbox.join(rel_path),
        rel_path,
        true,
        first_seen,
    )
}

/// Claims the file at `source`, known as `rel_path` (the text form of its path relative to the
/// inbox, exact or not: see [`ClaimRecord::name_not_utf8`]); as [`claim`] otherwise.
pub fn claim_at(
    watch: &Watch,
    source: &Path,
    rel_path: &str,
    exact_name: bool,
    first_seen: SystemTime,
) -> Result<Option<Claim>, StoreError> {
    let source = source.to_owned();
    match fs::symlink_metadata(&source) {
        Ok(meta) if meta.file_type().is_file() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::new("inspect", &source)(e)),
    }
    let work = watch.work_dir();
    ensure_folder(&work)?;
    let dir = new_claim_dir(&work)?;
    let now = SystemTime::now();
    let claim = Claim {
        dir,
        record: ClaimRecord {
            watch: watch.name.clone(),
            rel_path: rel_path.to_owned(),
            first_seen: crate::outcome::timestamp(first_seen),
            // Sub-second precision: `retry.max_elapsed` is measured from here.
            claimed_at: humantime::format_rfc3339_micros(now).to_string(),
            attempts: 0,
            credential_wait_secs: 0,
            decided: None,
            name_not_utf8: !exact_name,
            release: Default::default(),
        },
    };
    claim.save()?;
    match fs::rename(&source, claim.payload()) {
        Ok(()) => {
            sync_dir(&claim.dir)?;
            sync_dir(&work)?;
            if let Some(parent) = source.parent() {
                sync_dir(parent)?;
            }
            Ok(Some(claim))
        }
        Err(e) => {
            // The record without a file is garbage; remove it so resume does not see it.
            let _ = fs::remove_dir_all(&claim.dir);
            if e.kind() == io::ErrorKind::NotFound {
                Ok(None)
            } else {
                Err(StoreError::new("claim", &source)(e))
            }
        }
    }
}

/// Makes a new, empty claim folder with a name no other claim has used.
fn new_claim_dir(work: &Path) -> Result<PathBuf, StoreError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = work.join(format!("{nanos:x}-{:x}-{n:x}", std::process::id()));
        match fs::DirBuilder::new().mode(0o750).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(StoreError::new("create claim folder", &dir)(e)),
        }
    }
}

/// Reads a claim back from its folder (after a filing that failed half-way); `None` when the
/// folder is gone, that is, the filing was complete after all.
pub fn reopen(dir: &Path) -> Result<Option<Claim>, StoreError> {
    let path = dir.join(RECORD);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::new("read", &path)(e)),
    };
    let record = serde_json::from_slice(&bytes).map_err(|e| StoreError {
        action: "decode claim record",
        path: path.clone(),
        source: io::Error::other(e),
    })?;
    Ok(Some(Claim {
        dir: dir.to_owned(),
        record,
    }))
}

/// An exclusive hold on an inbox's work folder: one extdrop process per inbox, so that a second
/// daemon, or an `extdrop once` next to the service, never resumes claims a live one is
/// working on. Released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct InboxLock {
    _file: File,
}

/// Why an inbox could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "another extdrop process ({holder}) is handling inbox {} (it holds {}); stop it first — `extdrop status` shows the folders without taking files",
        inbox.display(),
        lock.display()
    )]
    Busy {
        /// The inbox.
        inbox: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// Who holds it, as the holder wrote it into the lock file (`pid N on HOST`), escaped.
        holder: String,
    },
    /// The lock file could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Takes the watch's inbox lock (`<inbox>/.extdrop/lock`) without waiting, and writes into the
/// lock file who holds it (`pid N on HOST`), so that a process turned away can say whom it
/// waits for.
pub fn lock_inbox(watch: &Watch) -> Result<InboxLock, LockError> {
    use rustix::fs::{FlockOperation, flock};
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let work = watch.work_dir();
    ensure_folder(&work)?;
    let path = work.join(LOCK);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o640)
        .open(&path)
        .map_err(StoreError::new("open", &path))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {
            let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let holder = format!("pid {} on {}\n", std::process::id(), host.trim());
            // Only informative: a lock whose note cannot be written still locks.
            let _ = file
                .set_len(0)
                .and_then(|()| file.write_all_at(holder.as_bytes(), 0));
            Ok(InboxLock { _file: file })
        }
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            let mut note = Vec::new();
            let _ = (&mut file).take(256).read_to_end(&mut note);
            let note = String::from_utf8_lossy(&note);
            let holder = match note.trim() {
                "" => "holder unknown".to_owned(),
                text => crate::shown::escaped(text).into_owned(),
            };
            Err(LockError::Busy {
                inbox: watch.inbox.clone(),
                lock: path,
                holder,
            })
        }
        Err(e) => Err(StoreError::new("lock", &path)(io::Error::from(e)).into()),
    }
}

/// How many files are claimed in the watch's work folder (read-only: for `status`).
pub fn claimed(watch: &Watch) -> usize {
    fs::read_dir(watch.work_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| fs::symlink_metadata(e.path().join(PAYLOAD)).is_ok())
        .count()
}

/// What resume found in the work folder.
#[derive(Debug)]
pub enum Resumed {
    /// A claimed file to carry on with (its record says whether it is already decided).
    Claim(Box<Claim>),
    /// A file in the work folder without a readable record: it cannot be uploaded safely.
    Orphan {
        /// The file.
        path: PathBuf,
        /// Why its record is unusable.
        why: String,
    },
}

/// Lists the claims a previous run left in the watch's work folder. With `clean_up`, also
/// removes the leftovers of claims that were never completed — only safe while nothing else
/// claims in this inbox (at start-up, under the inbox lock), since a claim in the making looks
/// the same.
pub fn resume(watch: &Watch, clean_up: bool) -> Result<Vec<Resumed>, StoreError> {
    let work = watch.work_dir();
    let entries = match fs::read_dir(&work) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::new("list", &work)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::new("list", &work))?;
        let dir = entry.path();
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let payload = dir.join(PAYLOAD);
        let has_payload = fs::symlink_metadata(&payload).is_ok();
        let record = fs::read(dir.join(RECORD))
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<ClaimRecord>(&bytes).map_err(|e| e.to_string())
            });
        match record {
            Ok(record) => {
                if has_payload || record.decided.is_some() {
                    // A name chosen before the stop stays this claim's.
                    if let Some(decision) = &record.decided
                        && let Some(name) = &decision.dest_name
                    {
                        let dest_dir = match decision.report.outcome {
                            Outcome::Done => &watch.done,
                            Outcome::Failed => &watch.failed,
                        };
                        reserve(dest_dir, name);
                    }
                    found.push(Resumed::Claim(Box::new(Claim { dir, record })));
                } else if clean_up {
                    // Claimed on paper only: the rename never happened.
                    fs::remove_dir_all(&dir).map_err(StoreError::new("remove", &dir))?;
                }
            }
            Err(why) if has_payload => found.push(Resumed::Orphan { path: payload, why }),
            Err(_) if clean_up => {
                fs::remove_dir_all(&dir).map_err(StoreError::new("remove", &dir))?;
            }
            Err(_) => {}
        }
    }
    Ok(found)
}

/// Files a claimed file: records the decision, writes the report and moves the file into
/// `done` or `failed` under a free name. Safe to call again on a claim whose filing was cut
/// short by a crash. Returns where the file now is.
pub fn file(watch: &Watch, mut claim: Claim, report: Report) -> Result<PathBuf, StoreError> {
    // The outcome is written down before anything else: from here on the file is only filed,
    // never uploaded again, whatever fails below.
    if claim.record.decided.is_none() {
        claim.record.decided = Some(Decision {
            report,
            dest_name: None,
        });
        claim.save()?;
    }
    let Some(mut decision) = claim.record.decided.clone() else {
        return Err(StoreError::new("file", &claim.dir)(io::Error::other(
            "no decision",
        )));
    };
    let dest_dir = match decision.report.outcome {
        Outcome::Done => &watch.done,
        Outcome::Failed => &watch.failed,
    };
    ensure_folder(dest_dir)?;
    // Choosing a free name and taking it must not interleave with another filing into the same
    // folder (two `a.zip` from different subfolders or watches finishing at once).
    let lock = folder_lock(dest_dir);
    let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
    let payload = claim.payload();
    let has_payload = fs::symlink_metadata(&payload).is_ok();
    loop {
        // A name chosen by an earlier, interrupted filing of this claim is kept while it is
        // still ours; otherwise a free one is taken and written down.
        let name = match decision.dest_name.clone() {
            Some(name) if still_ours(dest_dir, &name, &payload, has_payload) => name,
            _ => {
                let name = free_name(dest_dir, claim.file_name());
                reserve(dest_dir, &name);
                decision.dest_name = Some(name.clone());
                claim.record.decided = Some(decision.clone());
                claim.save()?;
                name
            }
        };
        let dest = dest_dir.join(&name);
        // The report first, so that whoever watches the folder finds it with the file.
        let report = report_path(&dest);
        write_atomic(&report, &report_bytes(&decision.report))?;
        if has_payload {
            let partial = dest_dir.join(format!(".extdrop-partial-{}", claim.id()));
            let moved = if same_content(&payload, &dest).unwrap_or(false) {
                // Moved before a crash (a finished copy, or the hard-link fallback): only the
                // source is left to remove.
                fs::remove_file(&payload)
            } else {
                move_noreplace(&payload, &dest, &partial)
            };
            match moved {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // The name was taken from outside this process: take back our report and
                    // choose again.
                    let _ = fs::remove_file(&report);
                    decision.dest_name = None;
                    continue;
                }
                Err(e) => return Err(StoreError::new("move", &payload)(e)),
            }
        }
        sync_dir(dest_dir)?;
        fs::remove_dir_all(&claim.dir).map_err(StoreError::new("remove", &claim.dir))?;
        if let Some(work) = claim.dir.parent() {
            sync_dir(work)?;
        }
        release(dest_dir, &name);
        return Ok(dest);
    }
}

/// Whether a destination name an interrupted filing chose is still this claim's: nothing
/// stands there, or our file does (moved, or copied before a crash). Its report, if any, was
/// written by us: the name was reserved from the moment it was chosen.
fn still_ours(dest_dir: &Path, name: &str, payload: &Path, has_payload: bool) -> bool {
    let dest = dest_dir.join(name);
    match fs::symlink_metadata(&dest) {
        Err(_) => true,
        Ok(_) if !has_payload => true,
        Ok(_) => same_content(payload, &dest).unwrap_or(false),
    }
}

/// Names chosen for filings not yet complete, per destination folder: `free_name` skips them,
/// so a filing that failed half-way (a full disk) keeps its name until it is retried.
fn reserved() -> std::sync::MutexGuard<'static, HashMap<PathBuf, std::collections::HashSet<String>>>
{
    static RESERVED: OnceLock<Mutex<HashMap<PathBuf, std::collections::HashSet<String>>>> =
        OnceLock::new();
    RESERVED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn reserve(dir: &Path, name: &str) {
    reserved()
        .entry(dir.to_owned())
        .or_default()
        .insert(name.to_owned());
}

fn release(dir: &Path, name: &str) {
    if let Some(names) = reserved().get_mut(dir) {
        names.remove(name);
    }
}

fn is_reserved(dir: &Path, name: &str) -> bool {
    reserved()
        .get(dir)
        .is_some_and(|names| names.contains(name))
}

/// The lock that serialises filings into one folder within this process.
fn folder_lock(dir: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    locks.entry(dir.to_owned()).or_default().clone()
}

/// Whether `b` is `a` (a hard link) or holds the same bytes: the sign that a move into `b` was
/// done before a crash and only the removal of `a` is left.
fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let (meta_a, meta_b) = match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(x), Ok(y)) => (x, y),
        _ => return Ok(false),
    };
    if (meta_a.dev(), meta_a.ino()) == (meta_b.dev(), meta_b.ino()) {
        return Ok(true);
    }
    if !meta_b.is_file() || meta_a.len() != meta_b.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (open_payload(a)?, open_payload(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Moves an orphan (a work-folder file without a usable record) to `failed` with a report, so
/// an operator sees it instead of it being uploaded blindly or left behind.
pub fn file_orphan(watch: &Watch, payload: &Path, why: &str) -> Result<PathBuf, StoreError> {
    let dir = payload.parent().unwrap_or(payload).to_owned();
    let size = fs::symlink_metadata(payload).map(|m| m.len()).unwrap_or(0);
    let now = crate::outcome::timestamp(SystemTime::now());
    let name = format!(
        "recovered-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("claim")
    );
    let claim = Claim {
        dir,
        record: ClaimRecord {
            watch: watch.name.clone(),
            rel_path: name.clone(),
            first_seen: now.clone(),
            claimed_at: now.clone(),
            attempts: 0,
            credential_wait_secs: 0,
            decided: None,
            name_not_utf8: false,
            release: Default::default(),
        },
    };
    let report = Report {
        file: name,
        watch: watch.name.clone(),
        outcome: Outcome::Failed,
        plugin_name: None,
        business_type: None,
        size,
        sha256: None,
        attempts: 0,
        http_status: None,
        error_code: None,
        error_msg: None,
        request_id: None,
        reason: Some(format!(
            "extdrop found this file in its work folder without a readable claim record ({why}), so its original name and upload state are unknown"
        )),
        first_seen: now.clone(),
        finished: now,
        release: Default::default(),
    };
    file(watch, claim, report)
}

/// Moves a failed file back into its inbox under the name it was dropped with (from its
/// report, else its name without the `~n` suffix filing may have added) and removes its report,
/// so the daemon takes it again. Returns the file's new path.
pub fn unfail(watch: &Watch, failed_file: &Path) -> Result<PathBuf, StoreError> {
    let report_file = report_path(failed_file);
    let name = failed_file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let rel = fs::read(&report_file)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Report>(&bytes).ok())
        .filter(|report| {
            report.watch == watch.name && !report.file.split('/').any(|s| s == ".." || s.is_empty())
        })
        .map(|report| report.file)
        .unwrap_or_else(|| unnumbered(&name));
    let target = watch.inbox.join(&rel);
    let folder = target.parent().unwrap_or(&watch.inbox).to_owned();
    ensure_folder(&folder)?;
    let base = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(&name)
        .to_owned();
    // A copy across file systems goes through the inbox's work folder, which rules never see.
    let work = watch.work_dir();
    ensure_folder(&work)?;
    let partial = work.join(format!("partial-{}", std::process::id()));
    loop {
        let dest = folder.join(free_name(&folder, &base));
        match move_noreplace(failed_file, &dest, &partial) {
            Ok(()) => {
                sync_dir(&folder)?;
                match fs::remove_file(&report_file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::new("remove", &report_file)(e)),
                }
                sync_dir(&watch.failed)?;
                return Ok(dest);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(StoreError::new("move back", failed_file)(e)),
        }
    }
}

/// The report path for a filed file.
pub fn report_path(filed: &Path) -> PathBuf {
    let mut name = filed.file_name().unwrap_or_default().to_os_string();
    name.push(REPORT_SUFFIX);
    filed.with_file_name(name)
}

fn report_bytes(report: &Report) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(report).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The first of `name`, `stem~2.ext`, `stem~3.ext`, … that neither exists in `dir`, nor has a
/// report there, nor is reserved by a filing in progress.
pub fn free_name(dir: &Path, name: &str) -> String {
    (1u64..)
        .map(|n| numbered(name, n))
        .find(|candidate| {
            let path = dir.join(candidate);
            fs::symlink_metadata(&path).is_err()
                && fs::symlink_metadata(report_path(&path)).is_err()
                && !is_reserved(dir, candidate)
        })
        .unwrap_or_else(|| name.to_owned())
}

/// `name` for n = 1, else the name with `~n` before its extension.
pub fn numbered(name: &str, n: u64) -> String {
    if n == 1 {
        return name.to_owned();
    }
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{}~{n}{}", &name[..dot], &name[dot..]),
        _ => format!("{name}~{n}"),
    }
}

/// Strips a `~n` suffix added by [`numbered`], giving back the name as dropped.
pub fn unnumbered(name: &str) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    };
    match stem.rsplit_once('~') {
        Some((base, n)) if !base.is_empty() && n.parse::<u64>().is_ok_and(|n| n >= 2) => {
            format!("{base}{ext}")
        }
        _ => name.to_owned(),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder, so readers see the
/// old content or the new, never half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::new("write", path)(e));
    }
    sync_dir(dir)
}

/// fsyncs a folder so that renames into and out of it survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::new("sync folder", dir))
}

/// Moves `from` to `to` without ever replacing an existing `to`. Across file systems the file
/// is copied to `partial` (a hidden name on `to`'s file system, fixed per claim so that a
/// crashed copy is overwritten by the retry rather than left twice), fsynced, renamed into
/// place, and only then removed from `from`.
fn move_noreplace(from: &Path, to: &Path, partial: &Path) -> io::Result<()> {
    match rename_noreplace(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
            copy_across(from, to, partial)
        }
        Err(e) => Err(e),
    }
}

/// The cross-file-system half of [`move_noreplace`].
fn copy_across(from: &Path, to: &Path, partial: &Path) -> io::Result<()> {
    let dest_dir = to.parent().unwrap_or(Path::new("."));
    {
        let mut src = open_payload(from)?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(partial)?;
        io::copy(&mut src, &mut dst)?;
        dst.sync_all()?;
    }
    if let Err(e) = rename_noreplace(partial, to) {
        let _ = fs::remove_file(partial);
        return Err(e);
    }
    File::open(dest_dir)?.sync_all()?;
    fs::remove_file(from)
}

/// `rename` that fails with `AlreadyExists` instead of replacing the target.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // File systems without RENAME_NOREPLACE (some network ones): a hard link is just as
        // exclusive, and where even that is missing, check-then-rename is the best left.
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            match fs::hard_link(from, to) {
                Ok(()) => fs::remove_file(from),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
                Err(_) => {
                    if fs::symlink_metadata(to).is_ok() {
                        Err(io::Error::from(io::ErrorKind::AlreadyExists))
                    } else {
                        fs::rename(from, to)
                    }
                }
            }
        }
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Opens a claimed file for reading without following a symbolic link.
pub fn open_payload(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watch over `root/inbox` filing into `root/done` and `root/failed`.
    fn watch(root: &Path) -> Result<Watch, Box<dyn std::error::Error>> {
        let text = r#"
[codearts]
endpoint = "http://127.0.0.1:9"
domain_id = "ce8df55870164338a72d7e828a966a2a"
[[watch]]
name = "w"
inbox = "inbox"
done = "done"
failed = "failed"
recursive = true
[[watch.rule]]
template = "{business_type}/{plugin_name}.zip"
"#;
        let config = crate::config::Config::parse(text, &root.join("config.toml"))?;
        let watch = config.watches.into_iter().next().ok_or("no watch")?;
        ensure_folders(&watch)?;
        Ok(watch)
    }

    fn report_for(file: &str) -> Report {
        Report {
            file: file.to_owned(),
            watch: "w".to_owned(),
            outcome: Outcome::Done,
            plugin_name: None,
            business_type: None,
            size: 0,
            sha256: None,
            attempts: 1,
            http_status: Some(200),
            error_code: None,
            error_msg: None,
            request_id: None,
            reason: None,
            first_seen: String::new(),
            finished: String::new(),
            release: Default::default(),
        }
    }

    fn claimed(
        watch: &Watch,
        rel: &str,
        content: &[u8],
    ) -> Result<Claim, Box<dyn std::error::Error>> {
        let path = watch.inbox.join(rel);
        fs::create_dir_all(path.parent().ok_or("parent")?)?;
        fs::write(&path, content)?;
        Ok(claim(watch, rel, SystemTime::now())?.ok_or("not claimed")?)
    }

    #[test]
    fn same_names_filed_at_once_each_keep_their_report() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        for round in 0..20 {
            let a = claimed(&watch, &format!("Build/a{round}.zip"), b"from Build")?;
            let b = claimed(&watch, &format!("Deploy/a{round}.zip"), b"from Deploy")?;
            let (wa, wb) = (watch.clone(), watch.clone());
            let ra = report_for(&format!("Build/a{round}.zip"));
            let rb = report_for(&format!("Deploy/a{round}.zip"));
            let ta = std::thread::spawn(move || file(&wa, a, ra));
            let tb = std::thread::spawn(move || file(&wb, b, rb));
            let pa = ta.join().map_err(|_| "panic")??;
            let pb = tb.join().map_err(|_| "panic")??;
            assert_ne!(pa, pb);
            for (filed, origin) in [(pa, "Build"), (pb, "Deploy")] {
                assert_eq!(fs::read(&filed)?, format!("from {origin}").as_bytes());
                let report: Report = serde_json::from_slice(&fs::read(report_path(&filed))?)?;
                assert_eq!(report.file, format!("{origin}/a{round}.zip"));
            }
        }
        Ok(())
    }

    #[test]
    fn a_move_finished_before_a_crash_is_not_filed_twice() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        let mut claim = claimed(&watch, "Build/x.zip", b"payload")?;
        // The state a crash leaves after a cross-file-system copy reached its place but before
        // the source was removed: decided, the copy in done, the payload still claimed.
        claim.record.decided = Some(Decision {
            report: report_for("Build/x.zip"),
            dest_name: Some("x.zip".to_owned()),
        });
        claim.save()?;
        fs::copy(claim.payload(), watch.done.join("x.zip"))?;
        let claim_dir = claim.dir().to_owned();
        let resumed = resume(&watch, true)?;
        assert_eq!(resumed.len(), 1);
        let Some(Resumed::Claim(claim)) = resumed.into_iter().next() else {
            return Err("not a claim".into());
        };
        let report = claim.record.decided.clone().ok_or("undecided")?.report;
        let filed = file(&watch, *claim, report)?;
        assert_eq!(filed, watch.done.join("x.zip"));
        assert!(!watch.done.join("x~2.zip").exists(), "not filed twice");
        assert!(report_path(&filed).exists());
        assert!(!claim_dir.exists());
        Ok(())
    }

    #[test]
    fn numbered_names_keep_the_extension() {
        assert_eq!(numbered("a__Deploy.zip", 1), "a__Deploy.zip");
        assert_eq!(numbered("a__Deploy.zip", 2), "a__Deploy~2.zip");
        assert_eq!(numbered("noext", 3), "noext~3");
        assert_eq!(numbered(".hidden", 2), ".hidden~2");
        assert_eq!(unnumbered("a__Deploy~2.zip"), "a__Deploy.zip");
        assert_eq!(unnumbered("a__Deploy.zip"), "a__Deploy.zip");
        assert_eq!(unnumbered("x~1.zip"), "x~1.zip");
        assert_eq!(unnumbered("noext~3"), "noext");
    }

    #[test]
    fn free_name_skips_taken_names_and_reports() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        assert_eq!(free_name(dir.path(), "a.zip"), "a.zip");
        fs::write(dir.path().join("a.zip"), b"x")?;
        fs::write(dir.path().join("a~2.zip.result.json"), b"{}")?;
        assert_eq!(free_name(dir.path(), "a.zip"), "a~3.zip");
        Ok(())
    }

    #[test]
    fn copy_across_moves_whole_files_and_never_replaces() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let (from, to, partial) = (
            dir.path().join("from"),
            dir.path().join("to"),
            dir.path().join(".extdrop-partial-claim-1"),
        );
        fs::write(&from, b"payload")?;
        copy_across(&from, &to, &partial)?;
        assert_eq!(fs::read(&to)?, b"payload");
        assert!(!from.exists());
        assert!(!partial.exists());

        fs::write(&from, b"second")?;
        let err = copy_across(&from, &to, &partial).err().ok_or("replaced")?;
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&to)?, b"payload");
        assert_eq!(
            fs::read(&from)?,
            b"second",
            "the source stays when the target is taken"
        );
        Ok(())
    }

    #[test]
    fn rename_noreplace_never_replaces() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"new")?;
        fs::write(&b, b"old")?;
        let err = rename_noreplace(&a, &b).err().ok_or("rename replaced")?;
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b)?, b"old");
        assert_eq!(fs::read(&a)?, b"new");
        Ok(())
    }
}
