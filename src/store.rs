//! The folders: claiming a file out of the inbox, resuming claims after a crash, and filing a
//! file into `done` or `failed` with its report.
//!
//! Invariants, which together mean that no file is lost or silently uploaded twice:
//! - A claimed file lives at `<inbox>/.extdrop/<id>/file` beside `claim.json`, its record. The
//!   record is written (atomically) before the file is renamed in, so a claim folder with a file
//!   always has a record. Claim folders are reused (`recycle`): a record names the folder it was
//!   written for, and one naming another folder is not trusted.
//! - The outcome and the chosen destination name are written into the record before anything
//!   leaves the claim folder. A file whose record has an outcome is never uploaded again; after
//!   a crash its filing is simply completed.
//! - Nothing is overwritten: a destination name is chosen free of a file while holding the
//!   folder's lock (filings into one folder take turns in this process) — the name as dropped
//!   unless a filing in progress holds it or it was found taken before, else one free of both
//!   the file and its report. The name is then *taken* by placing the report, never over
//!   another (a link of a file with no name yet, or a no-replace rename), so of two writers
//!   racing for one name (two processes, or two spellings of one folder) exactly one gets it
//!   and the other never touches the winner's report; the file
//!   follows with a no-replace rename. A collision picks the next free name (`name~2.zip`,
//!   `name~3.zip`, …), and a report found at a name chosen just now is never taken for ours.
//! - A destination name leaves room for `~N` and `.result.json` within 255 bytes (a long stem is
//!   shortened; the report's `file` keeps the name as dropped), and temporary files have short
//!   names starting with [`TEMP_PREFIX`], which the start-up sweep removes when a kill left them.
//! - An error is never taken for absence: a path whose state cannot be read is "try again
//!   later", never "nothing there" (which would lead to deleting or filing twice).
//! - A resumed filing whose file already stands at its destination (a copy across file systems
//!   that finished just before a crash) is recognised by its content and not filed twice.
//! - A move across file systems copies to a hidden temporary name, fsyncs, renames into place
//!   and only then removes the source.
//! - Durability comes from two barriers per file (`commit`: shared `syncfs` rounds): the
//!   claim's, before anything is sent, and the filing's, before the claim folder is put aside. Records
//!   saved between them are atomic but wait for the next barrier (README, "What is fsynced
//!   when").
//!
//! Everything here is blocking file-system work; async callers use `spawn_blocking`, except
//! for [`claim_at_async`] and [`file_async`], which do a small file's few metadata calls in
//! place and await their barriers without holding a thread. The steps
//! of claiming, resuming and filing pass through [`fault::hit`] (a named point each), where
//! tests inject I/O errors.
//!
//! The rooms: claiming, resuming and filing live here; [`lock`] keeps one process per inbox,
//! `names` chooses destination names, `disk` holds the file-system primitives (atomic writes,
//! no-replace moves), `commit` makes them durable in shared rounds, `recycle` reuses claim
//! folders, `retry` is `extdrop retry`,
//! `sweep` removes what a kill left, and [`fault`] is the seam where tests inject I/O errors.

mod commit;
mod disk;
pub mod fault;
mod held;
pub mod lock;
mod names;
mod recycle;
mod retry;
mod sweep;

pub use disk::{open_payload, sync_dir, write_atomic};
pub use lock::{InboxLock, LockError, lock_inbox};
pub use names::{free_name, numbered, report_path, unnumbered};
pub use retry::{recover_retries, unfail};
pub use sweep::sweep_temporaries;

use held::HeldRecord;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

// The rooms share their helpers with this module and with each other (they `use super::*`).
#[allow(unused_imports)]
use disk::*;
#[allow(unused_imports)]
use names::*;
#[allow(unused_imports)]
use sweep::*;

use crate::config::Watch;
use crate::outcome::{Outcome, Report};

/// Name of the hidden work folder inside every inbox.
pub const WORK_DIR: &str = ".extdrop";
const RECORD: &str = "claim.json";
const PAYLOAD: &str = "file";
const LOCK: &str = "lock";
/// Suffix of the report written beside a filed file.
pub const REPORT_SUFFIX: &str = ".result.json";
/// Prefix of every temporary file extdrop writes (reports and claim records before they are
/// placed, copies across file systems), followed by the writer's pid: short, so that a
/// 255-byte name still fits, and recognisable, so that the start-up sweep finds those a kill
/// left behind.
pub const TEMP_PREFIX: &str = ".extdrop-tmp-";
/// The longest file name Linux file systems take, in bytes.
const NAME_MAX: usize = 255;

/// This process's id, asked of the kernel once: it names every claim and temporary file.
fn pid() -> u32 {
    static PID: OnceLock<u32> = OnceLock::new();
    *PID.get_or_init(std::process::id)
}

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
    /// The name of the claim folder this record was written for. Claim folders are reused
    /// (`recycle`): a record naming another folder is a former claim's, whose replacement a
    /// power cut undid, and is not trusted. Empty in records of older versions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub claim: String,
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
    /// Folders whose fsync failed after the claim's rename: the file is claimed all the same,
    /// and they are synced again before the upload and the filing.
    unsynced: Vec<PathBuf>,
    /// The file's size as it was claimed (looked at just before its rename into the claim),
    /// when this process claimed it; `None` for a claim read back from disk.
    claimed_size: Option<u64>,
    /// The file system the claim is on (from the same look: the file's, which its rename
    /// into the claim folder did not leave), so that its barriers need not `stat` its
    /// folders; `None` for a claim read back from disk.
    dev: Option<u64>,
    /// The record, held open for its saves (see `held`) when this process made the claim.
    held: Option<HeldRecord>,
}

impl Claim {
    /// The file's size: as claimed, or looked at now for a claim read back from disk (0 when
    /// it cannot be).
    pub fn size(&self) -> u64 {
        self.claimed_size
            .unwrap_or_else(|| fs::symlink_metadata(self.payload()).map_or(0, |meta| meta.len()))
    }

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

    /// Writes the record into the claim folder atomically: a restart after `kill -9` sees the
    /// old record or the new one (a record of up to a page is rewritten in place by one
    /// `pwrite`, through the descriptor held since the claim when there is one (see `held`); a
    /// larger one through a temporary file and a rename; see `disk::overwrite_small`). It is
    /// not fsynced here: the claim and the filing each end with a barrier that makes their
    /// records durable with everything else they changed (README, "What is fsynced when"); a
    /// record saved between them (an attempt counted, a release step done) reaches the disk
    /// with the next barrier or the kernel's writeback. A record may be missing (an orphan's,
    /// made when it is filed).
    pub fn save(&mut self) -> Result<(), StoreError> {
        let (path, bytes) = (
            self.dir.join(RECORD),
            encode_record(&self.dir, &self.record)?,
        );
        held::save(&mut self.held, &path, &bytes).map_err(StoreError::new("write", &path))
    }

    /// The claim folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Folders to fsync before the claim may be relied on after a power cut (empty unless an
    /// fsync failed right after the claim).
    pub fn unsynced(&self) -> &[PathBuf] {
        &self.unsynced
    }

    /// The folders of [`Claim::unsynced`] have been synced (with [`sync_claim`]).
    pub fn synced(&mut self) {
        self.unsynced.clear();
    }

    /// The claim's id: its folder's name, unique among claims.
    pub fn id(&self) -> &str {
        self.dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("claim")
    }
}

fn encode_record(dir: &Path, record: &ClaimRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec_pretty(record).map_err(|e| StoreError {
        action: "encode claim record",
        path: dir.to_owned(),
        source: io::Error::other(e),
    })
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
/// it, or it was replaced by a link): there is nothing to do then. An error means the file was
/// not claimed and is still in the inbox; once the rename has succeeded the claim is returned
/// whatever fails after it (folders whose fsync failed are listed in [`Claim::unsynced`]), so a
/// claimed file is never reported as left in the inbox and forgotten.
pub fn claim(
    watch: &Watch,
    rel_path: &str,
    first_seen: SystemTime,
) -> Result<Option<Claim>, StoreError> {
    let source = watch.inbox.join(rel_path);
    let Some(mut claim) = take(watch, &source, rel_path, true, first_seen)? else {
        return Ok(None);
    };
    if sync_claim_on(&claim.dir, &claim.unsynced, claim.dev).is_ok() {
        claim.unsynced.clear();
    }
    Ok(Some(claim))
}

/// As [`claim`], for the file at `source`, known as `rel_path` (the text form of its path
/// relative to the inbox, exact or not: see [`ClaimRecord::name_not_utf8`]), and for a caller
/// on the async runtime: the claim is made in place (metadata, one small record, one rename:
/// cheaper than a hand-off to the blocking pool), and its barrier is awaited without holding a
/// thread.
pub async fn claim_at_async(
    watch: &Watch,
    source: &Path,
    rel_path: &str,
    exact_name: bool,
    first_seen: SystemTime,
) -> Result<Option<Claim>, StoreError> {
    let Some(mut claim) = take(watch, source, rel_path, exact_name, first_seen)? else {
        return Ok(None);
    };
    if sync_claim_async(&claim.dir, &claim.unsynced, claim.dev)
        .await
        .is_ok()
    {
        claim.unsynced.clear();
    }
    Ok(Some(claim))
}

/// The claim up to its barrier: the file renamed into a claim folder beside its record. The
/// claim's [`Claim::unsynced`] lists the folders its barrier is to sync.
fn take(
    watch: &Watch,
    source: &Path,
    rel_path: &str,
    exact_name: bool,
    first_seen: SystemTime,
) -> Result<Option<Claim>, StoreError> {
    use std::os::unix::fs::MetadataExt;
    let source = source.to_owned();
    let (size, dev) = match fs::symlink_metadata(&source) {
        Ok(meta) if meta.file_type().is_file() => (meta.len(), meta.dev()),
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::new("inspect", &source)(e)),
    };
    let work = watch.work_dir();
    let now = SystemTime::now();
    let mut claim = Claim {
        dir: PathBuf::new(),
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
            claim: String::new(),
        },
        unsynced: Vec::new(),
        claimed_size: Some(size),
        dev: Some(dev),
        held: None,
    };
    // The work folder is made when a claim finds it missing (an operator removed it), not
    // looked for at every claim.
    (claim.dir, claim.held) = match open_claim_folder(&work, &mut claim.record) {
        Err(e) if e.source.kind() == io::ErrorKind::NotFound => {
            ensure_folder(&work)?;
            open_claim_folder(&work, &mut claim.record)?
        }
        opened => opened?,
    };
    match fault::hit("claim.rename", &source).and_then(|()| fs::rename(&source, claim.payload())) {
        Ok(()) => {
            // The file is claimed from here on. A folder that cannot be synced now is synced
            // again before the upload: until then a power cut could only undo the rename,
            // which puts the file back in the inbox (its record alone is swept at start-up).
            // One barrier for the record and the rename (shared with every claim made in the
            // same moment, see `commit`), which the caller passes.
            let mut folders = vec![claim.dir.clone(), work];
            folders.extend(source.parent().map(Path::to_owned));
            claim.unsynced = folders;
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

/// The claim's barrier: makes the claim in `dir` durable — its record, its file's data, and
/// the rename through `folders` (the claim folder, the work folder, the inbox folder the file
/// came from; those of [`Claim::unsynced`] when synced again). Nothing when `folders` is empty.
pub fn sync_claim(dir: &Path, folders: &[PathBuf]) -> Result<(), StoreError> {
    sync_claim_on(dir, folders, None)
}

/// As [`sync_claim`], with the claim's file system when known (see [`Claim::dev`]).
fn sync_claim_on(dir: &Path, folders: &[PathBuf], dev: Option<u64>) -> Result<(), StoreError> {
    let Some(barrier) = claim_barrier(dir, folders, dev) else {
        return Ok(());
    };
    let ClaimBarrier { dirs, files, known } = &barrier;
    commit::barrier("claim.sync", dirs, &[&files[0], &files[1]], known)
        .map_err(StoreError::new("sync folder", dirs[0]))
}

/// As [`sync_claim_on`], awaited without holding a thread.
async fn sync_claim_async(
    dir: &Path,
    folders: &[PathBuf],
    dev: Option<u64>,
) -> Result<(), StoreError> {
    let Some(barrier) = claim_barrier(dir, folders, dev) else {
        return Ok(());
    };
    let ClaimBarrier { dirs, files, known } = &barrier;
    let synced = commit::barrier_async("claim.sync", dirs, &[&files[0], &files[1]], known).await;
    synced.map_err(StoreError::new("sync folder", dirs[0]))
}

/// What a claim's barrier names: its folders, the record and the file, and the file system
/// of every folder when the claim's is known (all of a claim's folders are on it).
struct ClaimBarrier<'a> {
    dirs: Vec<&'a Path>,
    files: [PathBuf; 2],
    known: Vec<(&'a Path, u64)>,
}

/// The claim's barrier for the claim folder `dir` and `folders` to sync; `None` when there
/// are none.
fn claim_barrier<'a>(
    dir: &Path,
    folders: &'a [PathBuf],
    dev: Option<u64>,
) -> Option<ClaimBarrier<'a>> {
    (!folders.is_empty()).then(|| {
        let dirs: Vec<&Path> = folders.iter().map(PathBuf::as_path).collect();
        let known = dev
            .map(|dev| dirs.iter().map(|dir| (*dir, dev)).collect())
            .unwrap_or_default();
        ClaimBarrier {
            dirs,
            files: [dir.join(RECORD), dir.join(PAYLOAD)],
            known,
        }
    })
}

/// Makes a claim folder, under a name no other claim has used, holding `record` (which is
/// given that name): a reused one when one is kept (see `recycle`), else a new one. Returns
/// it, with its record held open when the budget allows.
fn open_claim_folder(
    work: &Path,
    record: &mut ClaimRecord,
) -> Result<(PathBuf, Option<HeldRecord>), StoreError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        record.claim = format!("{nanos:x}-{:x}-{n:x}", pid());
        let dir = work.join(&record.claim);
        match recycle::open(work, &dir, &encode_record(&dir, record)?) {
            Ok(held) => return Ok((dir, held)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(StoreError::new("create claim folder", &dir)(e)),
        }
    }
}

/// Reads a claim back from its folder (after a filing that failed half-way); `None` when the
/// folder is gone, that is, the filing was complete after all.
pub fn reopen(dir: &Path) -> Result<Option<Claim>, StoreError> {
    let path = dir.join(RECORD);
    let bytes = match fault::hit("resume.read", &path).and_then(|()| fs::read(&path)) {
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
        unsynced: Vec::new(),
        claimed_size: None,
        dev: None,
        held: None,
    }))
}

/// How many files are claimed in the watch's work folder (read-only: for `status`).
pub fn claimed(watch: &Watch) -> usize {
    fs::read_dir(watch.work_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| is_claim_name(&e.file_name()))
        // A payload that cannot be looked at is still claimed: only "not found" is absence.
        .filter(|e| {
            !matches!(
                fs::symlink_metadata(e.path().join(PAYLOAD)),
                Err(err) if err.kind() == io::ErrorKind::NotFound
            )
        })
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
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
    /// A claim folder whose state could not be read (an I/O error): look again later with
    /// [`inspect`]; it is neither removed nor taken for empty meanwhile.
    Unsure {
        /// The claim folder.
        dir: PathBuf,
        /// What failed.
        error: StoreError,
    },
}

/// Lists the claims a previous run left in the watch's work folder. With `clean_up`, also
/// removes the leftovers of claims that were never completed and temporary files a kill left
/// (see [`sweep_temporaries`]) — only safe while nothing else claims in this inbox (at
/// start-up, under the inbox lock), since a claim in the making looks the same. A leftover that
/// cannot be removed is logged and skipped: it costs that one folder, not the watch.
pub fn resume(watch: &Watch, clean_up: bool) -> Result<Vec<Resumed>, StoreError> {
    let work = watch.work_dir();
    let entries = match fs::read_dir(&work) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::new("list", &work)(e)),
    };
    if clean_up {
        sweep_temporaries(watch);
        recycle::clear(&work);
    }
    let mut found = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(watch = %watch.name, folder = %work.display(), error = %e, "cannot list the work folder completely");
                break;
            }
        };
        if !is_claim_name(&entry.file_name()) {
            continue;
        }
        let dir = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => {}
            Ok(_) => continue,
            Err(e) => {
                found.push(Resumed::Unsure {
                    error: StoreError::new("inspect", &dir)(e),
                    dir,
                });
                continue;
            }
        }
        match inspect(watch, &dir, clean_up) {
            Ok(Some(item)) => found.push(item),
            Ok(None) => {}
            Err(error) => found.push(Resumed::Unsure { dir, error }),
        }
    }
    Ok(found)
}

/// What one claim folder holds: a claim to carry on with, an orphan, or `None` (nothing: a
/// claim that never happened, or a folder that is gone). With `clean_up`, a claim that never
/// happened is removed (see [`resume`]). An error means the folder's state is unknown: try
/// again later.
pub fn inspect(watch: &Watch, dir: &Path, clean_up: bool) -> Result<Option<Resumed>, StoreError> {
    let payload = dir.join(PAYLOAD);
    let has_payload =
        exists("resume.stat", &payload).map_err(StoreError::new("inspect", &payload))?;
    let record_path = dir.join(RECORD);
    let record = match fault::hit("resume.read", &record_path).and_then(|()| fs::read(&record_path))
    {
        Ok(bytes) => serde_json::from_slice::<ClaimRecord>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|record| written_for(record, dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e.to_string()),
        Err(e) => return Err(StoreError::new("read", &record_path)(e)),
    };
    match record {
        Ok(record) if has_payload || record.decided.is_some() => {
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
            Ok(Some(Resumed::Claim(Box::new(Claim {
                dir: dir.to_owned(),
                record,
                unsynced: Vec::new(),
                claimed_size: None,
                dev: None,
                held: None,
            }))))
        }
        Err(why) if has_payload => Ok(Some(Resumed::Orphan { path: payload, why })),
        _ => {
            // Claimed on paper only: the rename never happened (or the folder is gone).
            if clean_up
                && let Err(e) =
                    fault::hit("resume.remove", dir).and_then(|()| fs::remove_dir_all(dir))
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(watch = %watch.name, folder = %dir.display(), error = %e, "cannot remove the leftover of a claim that never happened; it is skipped");
            }
            Ok(None)
        }
    }
}

/// Whether a work folder entry can be a claim folder: hidden names are not (the lock, the
/// temporaries, the folders kept for reuse).
fn is_claim_name(name: &std::ffi::OsStr) -> bool {
    !name.as_encoded_bytes().starts_with(b".")
}

/// `record` if it was written for the claim folder `dir` (or names none: an older version's).
fn written_for(record: ClaimRecord, dir: &Path) -> Result<ClaimRecord, String> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if record.claim.is_empty() || record.claim == name {
        Ok(record)
    } else {
        Err(format!(
            "the record was written for claim folder {}: a reused folder whose new record did not reach the disk",
            record.claim
        ))
    }
}

/// Files a claimed file: records the decision, takes a free name, places the report and moves
/// the file into `done` or `failed`. Safe to call again on a claim whose filing was cut short by
/// a crash or an error. Returns where the file now is.
pub fn file(watch: &Watch, mut claim: Claim, report: Report) -> Result<PathBuf, StoreError> {
    // Filing removes the claim: the rename that made it must be durable first.
    sync_claim_on(&claim.dir, &claim.unsynced, claim.dev)?;
    claim.unsynced.clear();
    let held = folder_lock(destination(watch, &claim, &report)).blocking_lock_owned();
    let placed = place(watch, claim, report, held)?;
    commit::barrier(
        "file.sync",
        &placed.dirs(),
        &placed.files(),
        &placed.known(),
    )
    .map_err(StoreError::new("sync folder", &placed.dest_dir))?;
    placed.finish(watch)
}

/// As [`file`], for a caller on the async runtime: the filing is done in place (meant for a
/// small file, since a move across file systems copies it) and its barriers are awaited
/// without holding a thread.
pub async fn file_async(
    watch: &Watch,
    mut claim: Claim,
    report: Report,
) -> Result<PathBuf, StoreError> {
    sync_claim_async(&claim.dir, &claim.unsynced, claim.dev).await?;
    claim.unsynced.clear();
    // Another filing into the same folder holds the lock for a few metadata calls: its task
    // waits for it, the worker goes on with other tasks.
    let held = folder_lock(destination(watch, &claim, &report))
        .lock_owned()
        .await;
    let placed = place(watch, claim, report, held)?;
    commit::barrier_async(
        "file.sync",
        &placed.dirs(),
        &placed.files(),
        &placed.known(),
    )
    .await
    .map_err(StoreError::new("sync folder", &placed.dest_dir))?;
    placed.finish(watch)
}

/// A filing whose file and report stand at their destination, waiting for its barrier.
struct Placed {
    dest: PathBuf,
    dest_dir: PathBuf,
    name: String,
    claim_dir: PathBuf,
    report: PathBuf,
    record: PathBuf,
    /// The claim's file system, when known (see [`Claim::dev`]).
    claim_dev: Option<u64>,
    /// The destination folder's file system, when known: the claim's, when the file was
    /// renamed into it.
    dest_dev: Option<u64>,
    /// The claim's record, held open (see `held`): it goes with the folder to its next claim.
    held: Option<HeldRecord>,
}

impl Placed {
    /// The folders the filing's barrier syncs: the destination and the claim folder.
    fn dirs(&self) -> [&Path; 2] {
        [&self.dest_dir, &self.claim_dir]
    }

    /// The files the filing's barrier syncs: the report and the record with the decision.
    fn files(&self) -> [&Path; 2] {
        [&self.report, &self.record]
    }

    /// The file systems of the claim folder and the destination, where known.
    fn known(&self) -> Vec<(&Path, u64)> {
        let claim = self.claim_dev.map(|dev| (self.claim_dir.as_path(), dev));
        let dest = self.dest_dev.map(|dev| (self.dest_dir.as_path(), dev));
        claim.into_iter().chain(dest).collect()
    }

    /// After the barrier: the claim folder, holding only its record now, goes aside for the
    /// next claim (`recycle`). Not synced: if a power cut brings the claim folder back,
    /// filing it again finds the file at its destination and only removes the folder.
    fn finish(self, watch: &Watch) -> Result<PathBuf, StoreError> {
        match fault::hit("file.remove", &self.claim_dir)
            .and_then(|()| recycle::give(&watch.work_dir(), &self.claim_dir, self.held))
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::new("remove", &self.claim_dir)(e)),
        }
        release(&self.dest_dir, &self.name);
        Ok(self.dest)
    }
}

/// Where a claim is filed: by the decision on record, else by `report`.
fn destination<'w>(watch: &'w Watch, claim: &Claim, report: &Report) -> &'w Path {
    let outcome = claim
        .record
        .decided
        .as_ref()
        .map_or(report.outcome, |decided| decided.report.outcome);
    match outcome {
        Outcome::Done => &watch.done,
        Outcome::Failed => &watch.failed,
    }
}

/// The filing up to its barrier (see [`file`]): the decision on record, a free name taken by
/// the report, and the file moved beside it. `held` is the destination folder's lock
/// ([`folder_lock`] of [`destination`]), given up once the name is taken.
fn place(
    watch: &Watch,
    mut claim: Claim,
    report: Report,
    held: FolderHeld,
) -> Result<Placed, StoreError> {
    // The outcome is written down before anything leaves the claim folder, in one save with
    // the name it is filed under — or alone, when no name can be chosen now (see
    // `decided_anyway`): from then on the file is only filed, never uploaded again.
    let mut unsaved = claim.record.decided.is_none();
    if unsaved {
        claim.record.decided = Some(Decision {
            report,
            dest_name: None,
        });
    }
    let Some(mut decision) = claim.record.decided.clone() else {
        return Err(StoreError::new("file", &claim.dir)(io::Error::other(
            "no decision",
        )));
    };
    // Choosing a free name and taking it must not interleave with another filing into the same
    // folder (two `a.zip` from different subfolders or watches finishing at once): `held` is
    // this folder's lock, as `destination` tells it by the same decision.
    let dest_dir = match decision.report.outcome {
        Outcome::Done => &watch.done,
        Outcome::Failed => &watch.failed,
    };
    let payload = claim.payload();
    // A claim this process made holds its file until it is filed (only filing moves it); one
    // read back, after a crash or a filing cut short, is looked at. (Should the file be gone
    // all the same, the move fails, and the filing is tried again on the claim read back.)
    let has_payload = claim.claimed_size.is_some()
        || exists("file.stat", &payload)
            .map_err(StoreError::new("inspect", &payload))
            .map_err(|e| decided_anyway(&mut claim, unsaved, e))?;
    // The report's bytes are the same at every try (the report is in the record), which is how
    // a report already standing at our name is told to be ours.
    let report_bytes = report_bytes(&decision.report);
    // The destination folder is made when placing the report finds it missing (once), not
    // looked for at every filing.
    let mut folder_made = false;
    // Whether a name this filing tried was taken: from then on, names are looked for.
    let mut collided = false;
    loop {
        // A name chosen by an earlier, interrupted filing of this claim is kept while it is
        // still ours; otherwise a free one is taken and written down.
        // Whether the name was chosen just now: then neither a report nor a file there can be
        // ours, so the move (which never replaces) need not look for our file there first.
        let mut fresh = false;
        let name = match decision.dest_name.clone() {
            Some(name) if still_ours(dest_dir, &name, &payload, has_payload, &report_bytes)? => {
                name
            }
            _ => {
                fresh = true;
                let first = if collided {
                    Ok(None)
                } else {
                    first_try(dest_dir, claim.file_name())
                };
                let name = match first.map_err(|e| decided_anyway(&mut claim, unsaved, e))? {
                    Some(name) => name,
                    None => free_name(dest_dir, claim.file_name())
                        .map_err(|e| decided_anyway(&mut claim, unsaved, e))?,
                };
                reserve(dest_dir, &name);
                decision.dest_name = Some(name.clone());
                claim.record.decided = Some(decision.clone());
                if let Err(e) = claim.save() {
                    // Not ours unless written down: a retry chooses again (often this name).
                    release(dest_dir, &name);
                    return Err(e);
                }
                unsaved = false;
                name
            }
        };
        let dest = dest_dir.join(&name);
        // The report first, so that whoever watches the folder finds it with the file; placed
        // without replacing, it is what takes the name.
        let report = report_path(&dest);
        match place_report(&report, &report_bytes) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && !folder_made => {
                // The name chosen stays ours (written down, nothing stands there).
                ensure_folder(dest_dir).map_err(|e| decided_anyway(&mut claim, unsaved, e))?;
                folder_made = true;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A report at a name chosen just now is never ours, even with our very bytes
                // (the same file dropped twice in one second): only one an interrupted filing
                // of this claim may have placed can be.
                let ours = !fresh
                    && same_bytes(&report, &report_bytes)
                        .map_err(StoreError::new("read", &report))?;
                if !ours {
                    // Another writer took this name first: its report stays untouched.
                    release(dest_dir, &name);
                    taken(dest_dir, claim.file_name());
                    collided = true;
                    decision.dest_name = None;
                    continue;
                }
            }
            Err(e) => return Err(StoreError::new("write", &report)(e)),
        }
        // The destination's file system, when the move tells it.
        let mut dest_dev = None;
        if has_payload {
            let moved = match if fresh {
                Ok(false)
            } else {
                same_content(&payload, &dest)
            } {
                // Moved before a crash (a finished copy, or the hard-link fallback): only the
                // source is left to remove.
                Ok(true) => {
                    fault::hit("file.remove", &payload).and_then(|()| fs::remove_file(&payload))
                }
                Ok(false) => move_noreplace(&payload, &dest, dest_dir).map(|renamed| {
                    dest_dev = claim.dev.filter(|_| renamed);
                }),
                Err(e) => Err(e),
            };
            match moved {
                Ok(()) => {}
                // The file this claim holds, taken to be there (see `has_payload`), is gone:
                // removed from the claim folder by hand. Its report is filed alone now, as for
                // a claim read back without its file, not after a failed filing and a pause.
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        && claim.claimed_size.is_some()
                        && matches!(exists("file.stat", &payload), Ok(false)) =>
                {
                    tracing::warn!(watch = %watch.name, file = %claim.record.rel_path, "the claimed file was removed before it was filed; its report is filed alone");
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // A file was put at this name without a report, from outside extdrop: our
                    // report (placed by us just now, so ours to take back) goes, and another
                    // name is chosen.
                    match fault::hit("file.remove", &report).and_then(|()| fs::remove_file(&report))
                    {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(StoreError::new("remove", &report)(e)),
                    }
                    release(dest_dir, &name);
                    taken(dest_dir, claim.file_name());
                    collided = true;
                    decision.dest_name = None;
                    continue;
                }
                Err(e) => return Err(StoreError::new("move", &payload)(e)),
            }
        }
        // The name is taken (report and file stand there): other filings into this folder may
        // go on while this one waits for its barrier, and share its round. That one barrier
        // puts the decision, the report and the move on disk before the claim folder goes.
        drop(held);
        return Ok(Placed {
            dest,
            dest_dir: dest_dir.to_owned(),
            name,
            record: claim.dir.join(RECORD),
            claim_dev: claim.dev,
            dest_dev,
            held: claim.held,
            claim_dir: claim.dir,
            report,
        });
    }
}

/// An error met before the decision's first save (no name could be chosen): the decision is
/// saved alone, without a name, so that a crash before the retry still never uploads the file
/// again; then the error is returned (or the save's own, if it fails too).
fn decided_anyway(claim: &mut Claim, unsaved: bool, error: StoreError) -> StoreError {
    match unsaved.then(|| claim.save()) {
        Some(Err(save)) => save,
        _ => error,
    }
}

/// Whether a destination name an interrupted filing chose is still this claim's: nothing
/// stands there but perhaps our own report, or our file does (moved, or copied before a
/// crash). An error is not an answer: the filing is tried again later.
fn still_ours(
    dest_dir: &Path,
    name: &str,
    payload: &Path,
    has_payload: bool,
    report_bytes: &[u8],
) -> Result<bool, StoreError> {
    let dest = dest_dir.join(name);
    let report = report_path(&dest);
    let report_ours = || match same_bytes(&report, report_bytes) {
        Ok(ours) => Ok(ours),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(StoreError::new("read", &report)(e)),
    };
    match stat("file.stat", &dest).map_err(StoreError::new("inspect", &dest))? {
        None => report_ours(),
        // The file has left the claim, so what stands at its name is ours.
        Some(_) if !has_payload => Ok(true),
        Some(_) => Ok(
            same_content(payload, &dest).map_err(StoreError::new("compare", &dest))?
                && report_ours()?,
        ),
    }
}

/// What holding a folder's lock looks like (see [`folder_lock`]).
type FolderHeld = tokio::sync::OwnedMutexGuard<()>;

/// The lock that serialises filings into one folder within this process: a `tokio` lock, so
/// that a filing on the runtime waits for it as a task (`file_async`), not as a blocked
/// worker; blocking callers (`file`) take it from the blocking pool.
fn folder_lock(dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    locks.entry(dir.to_owned()).or_default().clone()
}

/// Whether `b` is `a` (a hard link) or holds the same bytes: the sign that a move into `b` was
/// done before a crash and only the removal of `a` is left. `false` when `b` does not exist;
/// any other failure is an error, never a "no" (which would file a second copy).
fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let Some(meta_b) = stat("file.stat", b)? else {
        return Ok(false);
    };
    fault::hit("file.read", a)?;
    let meta_a = fs::symlink_metadata(a)?;
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

/// Whether the file at `path` holds exactly `bytes` (NotFound is an error for the caller).
fn same_bytes(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    fault::hit("file.read", path)?;
    Ok(fs::read(path)? == bytes)
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
    let mut claim = Claim {
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
            claim: String::new(),
        },
        unsynced: Vec::new(),
        claimed_size: None,
        dev: None,
        held: None,
    };
    // The record written when it is filed names its folder, as every record does.
    claim.record.claim = claim.id().to_owned();
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

    /// A filing on the runtime that finds its folder's lock held waits as a task: the worker
    /// it ran on goes on with other tasks (with a blocking lock, this one-thread runtime would
    /// stop until the holder let go, and the holder waits for that other task).
    #[test]
    fn a_filing_waiting_for_its_folders_lock_does_not_hold_the_worker()
    -> Result<(), Box<dyn std::error::Error>> {
        use std::time::Duration;
        let dir = tempfile::tempdir()?;
        let watch = Arc::new(watch(dir.path())?);
        let claim = claimed(&watch, "Build/a.zip", b"x")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (done, outcome) = std::sync::mpsc::channel();
        let watch_in = watch.clone();
        // On a thread of its own, so that a runtime stuck for good fails this test instead of
        // hanging it.
        std::thread::spawn(move || {
            let watch = watch_in;
            let filed = runtime.block_on(async {
                let held = folder_lock(&watch.done).lock_owned().await;
                let filing = tokio::spawn({
                    let watch = watch.clone();
                    async move { file_async(&watch, claim, report_for("a.zip")).await }
                });
                let (went_on, wait) = tokio::sync::oneshot::channel::<()>();
                let other = tokio::spawn(async move {
                    let _ = went_on.send(());
                });
                // The filing runs first, up to the lock; the other task runs only if the
                // waiting filing gave the one worker back.
                let _ = wait.await;
                let _ = other.await;
                let waited = !filing.is_finished();
                drop(held);
                (waited, filing.await.map_err(|e| e.to_string()))
            });
            let _ = done.send(filed);
        });
        let (waited, filed) = outcome
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| "the runtime's one worker was held by a filing waiting for a lock")?;
        assert!(waited, "filed while its folder's lock was held");
        assert_eq!(filed??, watch.done.join("a.zip"));
        assert!(watch.done.join("a.zip.result.json").exists());
        Ok(())
    }

    /// Files `claim`, reading it back and trying again after every error, as the daemon does.
    fn file_until_done(
        watch: &Watch,
        claim: Claim,
        report: Report,
    ) -> Result<PathBuf, Box<dyn std::error::Error>> {
        let dir = claim.dir().to_owned();
        let mut claim = Some(claim);
        for _ in 0..1000 {
            let next = match claim.take() {
                Some(claim) => claim,
                None => match reopen(&dir) {
                    Ok(Some(claim)) => claim,
                    Ok(None) => return Err("the claim vanished without being filed".into()),
                    Err(_) => continue,
                },
            };
            if let Ok(dest) = file(watch, next, report.clone()) {
                return Ok(dest);
            }
        }
        Err("never filed".into())
    }

    /// Regression (issue 11.1): the claim's rename succeeded but a folder sync failed, and the
    /// daemon was told "it stays in the inbox" while the file sat claimed and forgotten.
    #[test]
    fn regression_a_sync_failure_after_the_claim_rename_still_returns_the_claim()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        fs::write(watch.inbox.join("a.zip"), b"x")?;
        let guard = fault::inject(fault::Rule::new("claim.sync", dir.path()).times(3));
        let claimed = claim(&watch, "a.zip", SystemTime::now())?.ok_or("not claimed")?;
        drop(guard);
        assert_eq!(claimed.unsynced().len(), 3);
        assert!(claimed.payload().exists());
        assert!(!watch.inbox.join("a.zip").exists());
        let filed = file(&watch, claimed, report_for("a.zip"))?;
        assert_eq!(fs::read(&filed)?, b"x");
        Ok(())
    }

    /// When rounds fsync one by one (much dirty data in the system), each barrier must name
    /// everything its step changed, or a power cut could undo it: the claim its record, the
    /// file's data, the claim folder, the work folder and the inbox; the filing the report,
    /// the record with the decision, the destination folder and the claim folder.
    #[test]
    fn one_by_one_the_barriers_name_everything_their_step_changed()
    -> Result<(), Box<dyn std::error::Error>> {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        commit::tests::ONE_BY_ONE.store(true, Relaxed);
        let held = claimed(&watch, "a.zip", b"payload");
        let filed = held.and_then(|held| {
            let claim_dir = held.dir().to_owned();
            for path in [
                claim_dir.join(RECORD),
                claim_dir.join(PAYLOAD),
                claim_dir.clone(),
                watch.work_dir(),
                watch.inbox.clone(),
            ] {
                assert!(
                    commit::tests::was_synced(&path),
                    "claim: {}",
                    path.display()
                );
            }
            let filed = file(&watch, held, report_for("a.zip"))?;
            Ok((claim_dir, filed))
        });
        commit::tests::ONE_BY_ONE.store(false, Relaxed);
        let (claim_dir, filed) = filed?;
        for path in [
            report_path(&filed),
            watch.done.clone(),
            claim_dir.join(RECORD),
            claim_dir,
        ] {
            assert!(
                commit::tests::was_synced(&path),
                "filing: {}",
                path.display()
            );
        }
        Ok(())
    }

    /// A filed claim's folder, record and all, is the next claim's: no inode made or freed.
    /// Its record is the new claim's, names the new folder, and nothing of the old one shows.
    #[test]
    fn a_filed_claims_folder_is_reused_by_the_next_claim() -> Result<(), Box<dyn std::error::Error>>
    {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        fs::write(watch.inbox.join("a.zip"), b"a")?;
        let first = claim(&watch, "a.zip", SystemTime::now())?.ok_or("not claimed")?;
        let (first_dir, first_record) = (first.dir().to_owned(), first.dir().join(RECORD));
        let inodes = (
            fs::metadata(&first_dir)?.ino(),
            fs::metadata(&first_record)?.ino(),
        );
        file(&watch, first, report_for("a.zip"))?;
        assert!(
            !first_dir.exists(),
            "the filed claim is gone from the work folder"
        );
        assert!(
            resume(&watch, false)?.is_empty(),
            "a kept folder is no claim"
        );
        assert_eq!(super::claimed(&watch), 0);

        fs::write(watch.inbox.join("b.zip"), b"b")?;
        let second = claim(&watch, "b.zip", SystemTime::now())?.ok_or("not claimed")?;
        let second_dir = second.dir().to_owned();
        assert_ne!(second_dir, first_dir);
        let record = second_dir.join(RECORD);
        assert_eq!(
            (
                fs::metadata(&second_dir)?.ino(),
                fs::metadata(&record)?.ino()
            ),
            inodes,
            "the folder and its record were reused"
        );
        let resumed = resume(&watch, false)?;
        let [Resumed::Claim(again)] = resumed.as_slice() else {
            panic!("{resumed:?}");
        };
        assert_eq!(again.record.rel_path, "b.zip");
        assert!(
            again.record.decided.is_none(),
            "nothing of the first claim's decision"
        );
        assert_eq!(again.record.claim, again.id());
        assert_eq!(fs::read(second.payload())?, b"b");
        Ok(())
    }

    /// A resource bound on inode churn: every folder of a burst's claims in flight at once
    /// (here 200, more than the 64 once kept) is kept, and the next burst claims into those
    /// same folders. With fewer kept, each round of filings removed folders the next claims
    /// made again, an inode freed and one made per file (measured in the benchmark's bursts).
    #[test]
    fn every_folder_of_a_burst_in_flight_is_reused_by_the_next_burst()
    -> Result<(), Box<dyn std::error::Error>> {
        use std::collections::HashSet;
        use std::os::unix::fs::MetadataExt;
        const IN_FLIGHT: usize = 200;
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        let folders = |claims: &[Claim]| -> io::Result<HashSet<u64>> {
            claims
                .iter()
                .map(|claim| Ok(fs::metadata(claim.dir())?.ino()))
                .collect()
        };
        let mut first = Vec::new();
        for i in 0..IN_FLIGHT {
            first.push(claimed(&watch, &format!("a{i}.zip"), b"a")?);
        }
        let made = folders(&first)?;
        for claim in first {
            let name = claim.record.rel_path.clone();
            file(&watch, claim, report_for(&name))?;
        }
        let mut second = Vec::new();
        for i in 0..IN_FLIGHT {
            second.push(claimed(&watch, &format!("b{i}.zip"), b"b")?);
        }
        let reused = folders(&second)?;
        assert_eq!(
            reused.difference(&made).count(),
            0,
            "claim folders made anew for the second burst"
        );
        assert_eq!(reused.len(), IN_FLIGHT);
        // The pool outlives the test, and its records' descriptors are the process's budget.
        drop(second);
        recycle::clear(&watch.work_dir());
        Ok(())
    }

    /// A kept folder removed behind the pool's back (another run's start-up clean-up) costs
    /// nothing: the claim makes a new folder instead.
    #[test]
    fn a_kept_folder_that_is_gone_is_replaced_by_a_new_one()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        let first = claimed(&watch, "a.zip", b"a")?;
        file(&watch, first, report_for("a.zip"))?;
        for entry in fs::read_dir(watch.work_dir())? {
            let entry = entry?;
            if recycle::is_kept(&entry.file_name()) {
                fs::remove_dir_all(entry.path())?;
            }
        }
        let second = claimed(&watch, "b.zip", b"b")?;
        assert_eq!(fs::read(second.payload())?, b"b");
        let resumed = resume(&watch, false)?;
        assert!(
            matches!(resumed.as_slice(), [Resumed::Claim(c)] if c.record.rel_path == "b.zip"),
            "{resumed:?}"
        );
        Ok(())
    }

    /// Should a power cut undo a reused folder's new record but keep its new name and the file
    /// renamed in, the folder would hold a former claim's record, decision and all. That record
    /// names its own folder, so it is not trusted: the file is an orphan (filed in `failed`
    /// with the reason), never filed under the former claim's outcome without an upload.
    #[test]
    fn a_record_written_for_another_claim_folder_is_not_trusted()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        let mut held = claimed(&watch, "a.zip", b"payload")?;
        held.record.claim = "another-claim".to_owned();
        held.record.decided = Some(Decision {
            report: report_for("old.zip"),
            dest_name: None,
        });
        held.save()?;
        let resumed = resume(&watch, true)?;
        let [Resumed::Orphan { path, why }] = resumed.as_slice() else {
            panic!("{resumed:?}");
        };
        assert!(why.contains("another-claim"), "{why}");
        assert_eq!(fs::read(path)?, b"payload");
        Ok(())
    }

    /// Regression (issue 11.2): an I/O error reading a claim's payload at start-up was taken
    /// for "no file", and the claim folder, file and all, was removed as garbage.
    #[test]
    fn regression_an_unreadable_payload_is_not_taken_for_absent_at_resume()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        let held = claimed(&watch, "Build/a.zip", b"payload")?;
        let claim_dir = held.dir().to_owned();
        drop(held);
        let guard = fault::inject(fault::Rule::new("resume.stat", &claim_dir));
        let resumed = resume(&watch, true)?;
        drop(guard);
        assert!(
            matches!(resumed.as_slice(), [Resumed::Unsure { .. }]),
            "{resumed:?}"
        );
        assert_eq!(
            fs::read(claim_dir.join(PAYLOAD))?,
            b"payload",
            "not removed"
        );
        let resumed = inspect(&watch, &claim_dir, true)?;
        assert!(matches!(resumed, Some(Resumed::Claim(_))), "{resumed:?}");
        Ok(())
    }

    /// Regression (issue 11.2): a read error while comparing a resumed payload with what stands
    /// at its destination was taken for "different", filing a second copy without a report.
    #[test]
    fn regression_a_read_error_while_comparing_is_not_a_second_copy()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        let mut claim = claimed(&watch, "Build/x.zip", b"payload")?;
        claim.record.decided = Some(Decision {
            report: report_for("Build/x.zip"),
            dest_name: Some("x.zip".to_owned()),
        });
        claim.save()?;
        fs::copy(claim.payload(), watch.done.join("x.zip"))?;
        let guard = fault::inject(fault::Rule::new("file.read", dir.path()).times(1));
        let report = report_for("Build/x.zip");
        assert!(
            file(&watch, claim, report.clone()).is_err(),
            "an error, not a guess"
        );
        drop(guard);
        let Some(Resumed::Claim(claim)) = resume(&watch, true)?.into_iter().next() else {
            return Err("not a claim".into());
        };
        let filed = file(&watch, *claim, report)?;
        assert_eq!(filed, watch.done.join("x.zip"));
        assert!(!watch.done.join("x~2.zip").exists(), "not filed twice");
        assert!(report_path(&filed).exists());
        Ok(())
    }

    /// Regression (issue 11.3): two writers racing for one name (two processes, or two
    /// spellings of one folder, which take different in-process locks) each wrote the report
    /// with a replacing rename, and the loser of the file's rename deleted the winner's report.
    #[test]
    fn regression_two_writers_racing_for_one_name_each_keep_their_report()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        let mut other = watch.clone();
        other.done = dir.path().join("done-link");
        std::os::unix::fs::symlink(&watch.done, &other.done)?;
        for round in 0..40 {
            let a = claimed(&watch, &format!("Build/r{round}.zip"), b"from Build")?;
            let b = claimed(&watch, &format!("Deploy/r{round}.zip"), b"from Deploy")?;
            let (wa, wb) = (watch.clone(), other.clone());
            let (ra, rb) = (
                report_for(&format!("Build/r{round}.zip")),
                report_for(&format!("Deploy/r{round}.zip")),
            );
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let (ba, bb) = (barrier.clone(), barrier);
            let ta = std::thread::spawn(move || {
                ba.wait();
                file(&wa, a, ra)
            });
            let tb = std::thread::spawn(move || {
                bb.wait();
                file(&wb, b, rb)
            });
            ta.join().map_err(|_| "panic")??;
            tb.join().map_err(|_| "panic")??;
            for origin in ["Build", "Deploy"] {
                let with_report = fs::read_dir(&watch.done)?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| !p.to_string_lossy().ends_with(REPORT_SUFFIX))
                    .filter(|p| fs::read(p).is_ok_and(|b| b == format!("from {origin}").as_bytes()))
                    .filter(|p| {
                        fs::read(report_path(p))
                            .ok()
                            .and_then(|b| serde_json::from_slice::<Report>(&b).ok())
                            .is_some_and(|r| r.file.starts_with(origin))
                    })
                    .count();
                assert_eq!(
                    with_report,
                    round + 1,
                    "round {round}: every {origin} file has its own report"
                );
            }
        }
        Ok(())
    }

    /// A record is rewritten in place while it fits in a page (a shorter one padded with
    /// spaces), through a temporary file when it does not; either way it reads back whole.
    #[test]
    fn records_are_rewritten_in_place_or_replaced_and_read_back_whole()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        let mut claim = claimed(&watch, "a.zip", b"x")?;
        let record = claim.dir().join(RECORD);
        let inode = |p: &Path| fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        let first = inode(&record)?;
        claim.record.attempts = 123_456;
        claim.save()?;
        claim.record.attempts = 1;
        claim.save()?;
        assert_eq!(inode(&record)?, first, "rewritten in place");
        assert!(
            fs::read(&record)?.ends_with(b" "),
            "padded to the old length"
        );
        assert_eq!(reopen(claim.dir())?.ok_or("gone")?.record.attempts, 1);
        let mut big = report_for("a.zip");
        big.reason = Some("x".repeat(5000));
        claim.record.decided = Some(Decision {
            report: big,
            dest_name: None,
        });
        claim.save()?;
        assert_ne!(inode(&record)?, first, "too large for a page: replaced");
        let back = reopen(claim.dir())?.ok_or("gone")?;
        assert_eq!(
            back.record.decided.map(|d| d.report.reason),
            Some(Some("x".repeat(5000)))
        );
        Ok(())
    }

    /// The decision and the name are saved together; when no name can be chosen (the
    /// destination cannot be looked at), the decision is saved alone all the same.
    #[test]
    fn a_decision_is_on_record_even_when_no_name_can_be_chosen()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        let claim = claimed(&watch, "a.zip", b"x")?;
        let claim_dir = claim.dir().to_owned();
        let guard = fault::inject(fault::Rule::new("name.stat", &watch.done));
        assert!(file(&watch, claim, report_for("a.zip")).is_err());
        drop(guard);
        let claim = reopen(&claim_dir)?.ok_or("claim gone")?;
        let decision = claim
            .record
            .decided
            .clone()
            .ok_or("no decision on record")?;
        assert_eq!(decision.dest_name, None);
        assert_eq!(
            file(&watch, claim, report_for("a.zip"))?,
            watch.done.join("a.zip")
        );
        Ok(())
    }

    /// Regression (issue 11.5): a name reserved by a filing whose record could not be saved
    /// stayed reserved, so each retry took `N~2`, `N~3`, …
    #[test]
    fn regression_a_reserved_name_is_released_when_saving_fails()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        let claim = claimed(&watch, "a.zip", b"x")?;
        let claim_dir = claim.dir().to_owned();
        // The record's first write in the filing is the one that names the destination.
        let guard = fault::inject(fault::Rule::new("write", &claim_dir).nth(1));
        assert!(file(&watch, claim, report_for("a.zip")).is_err());
        drop(guard);
        let claim = reopen(&claim_dir)?.ok_or("claim gone")?;
        let filed = file(&watch, claim, report_for("a.zip"))?;
        assert_eq!(filed, watch.done.join("a.zip"));
        Ok(())
    }

    /// Regression (issue 11.5): `free_name` probed from 1 on every filing.
    #[test]
    fn free_name_continues_after_the_last_number_given() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        for name in ["a.zip", "a~2.zip", "a~3.zip"] {
            fs::write(dir.path().join(name), b"x")?;
        }
        assert_eq!(free_name(dir.path(), "a.zip")?, "a~4.zip");
        fs::write(dir.path().join("a~4.zip"), b"x")?;
        fs::remove_file(dir.path().join("a~2.zip"))?;
        assert_eq!(
            free_name(dir.path(), "a.zip")?,
            "a~5.zip",
            "no probing from 1"
        );
        Ok(())
    }

    /// Regression (issue 11.4/11.5): temporary files a kill left were never swept.
    #[test]
    fn regression_temporaries_a_kill_left_are_swept_at_start_up()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        let held = claimed(&watch, "a.zip", b"x")?;
        let mut child = std::process::Command::new("true").spawn()?;
        let dead = child.id();
        child.wait()?;
        let stale = [
            watch.done.join(format!("{TEMP_PREFIX}{dead}-1")),
            watch.failed.join(format!("{TEMP_PREFIX}{dead}-2")),
            watch.work_dir().join(format!("{TEMP_PREFIX}{dead}-3")),
            watch.work_dir().join(format!("partial-{dead}")),
            held.dir().join(format!("{TEMP_PREFIX}{dead}-4")),
        ];
        // pid 1 is alive: its file may be in the making.
        let live = watch.done.join(format!("{TEMP_PREFIX}1-1"));
        for path in stale.iter().chain([&live]) {
            fs::write(path, b"left")?;
        }
        let resumed = resume(&watch, true)?;
        assert_eq!(resumed.len(), 1);
        for path in &stale {
            assert!(!path.exists(), "{} swept", path.display());
        }
        assert!(live.exists());
        assert!(held.payload().exists());
        Ok(())
    }

    /// Regression (issue 11.5): one leftover that could not be removed at start-up failed the
    /// whole resume, and with it every watch.
    #[test]
    fn regression_an_unremovable_leftover_does_not_stop_the_resume()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        let garbage = claimed(&watch, "gone.zip", b"x")?;
        fs::remove_file(garbage.payload())?; // a record whose rename never happened
        let real = claimed(&watch, "real.zip", b"y")?;
        let guard = fault::inject(fault::Rule::new("resume.remove", garbage.dir()));
        let resumed = resume(&watch, true)?;
        drop(guard);
        assert_eq!(resumed.len(), 1);
        assert!(matches!(&resumed[0], Resumed::Claim(c) if c.dir() == real.dir()));
        Ok(())
    }

    /// Issue 7 defect 2: a name of 244 bytes or more was never filed (its report's name passed
    /// 255 bytes).
    #[test]
    fn numbered_names_leave_room_for_the_number_and_the_report() {
        let ascii = format!("{}.zip", "n".repeat(251));
        let wide = format!("{}.zip", "é".repeat(125)); // 254 bytes
        let no_ext = "x".repeat(255);
        for name in [&ascii, &wide, &no_ext] {
            for n in [1, 2, 99_999] {
                let numbered = numbered(name, n);
                assert!(
                    numbered.len() + REPORT_SUFFIX.len() <= NAME_MAX,
                    "{} bytes",
                    numbered.len()
                );
                if name.ends_with(".zip") {
                    assert!(numbered.ends_with(".zip"), "{numbered}");
                }
                if n > 1 {
                    assert!(numbered.contains(&format!("~{n}")));
                }
            }
        }
        assert_eq!(numbered("short.zip", 2), "short~2.zip");
    }

    /// Issue 7 defect 2, end to end in the store: a 255-byte name is filed with its report,
    /// twice, and the report keeps the name as dropped.
    #[test]
    fn regression_a_255_byte_name_is_filed_with_its_report()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        let name = format!("{}.zip", "n".repeat(251));
        assert_eq!(name.len(), 255);
        for _ in 0..2 {
            let claim = claimed(&watch, &name, b"x")?;
            let filed = file(&watch, claim, report_for(&name))?;
            let report: Report = serde_json::from_slice(&fs::read(report_path(&filed))?)?;
            assert_eq!(report.file, name);
        }
        assert_eq!(fs::read_dir(&watch.done)?.count(), 4);
        Ok(())
    }

    /// Issue 11: many files through random I/O errors at every point of the store: each ends
    /// in `done` exactly once with its report, and nothing is left claimed or half-written.
    #[test]
    fn many_files_through_random_io_errors_are_all_filed_once()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let watch = watch(dir.path())?;
        let guard = fault::inject(fault::Rule::new("*", dir.path()).chance(0.15));
        const FILES: usize = 300;
        for i in 0..FILES {
            let rel = format!("Build/f{}.zip", i % 37);
            fs::create_dir_all(watch.inbox.join("Build"))?;
            fs::write(watch.inbox.join(&rel), format!("content {i}"))?;
            let claim = loop {
                match claim(&watch, &rel, SystemTime::now()) {
                    Ok(Some(claim)) => break claim,
                    Ok(None) => return Err(format!("{rel} lost").into()),
                    Err(_) => assert!(watch.inbox.join(&rel).exists(), "an error leaves it"),
                }
            };
            file_until_done(&watch, claim, report_for(&rel))?;
        }
        drop(guard);
        let mut files = 0;
        let mut contents = std::collections::HashSet::new();
        for entry in fs::read_dir(&watch.done)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            assert!(!name.starts_with(TEMP_PREFIX), "left behind: {name}");
            if name.ends_with(REPORT_SUFFIX) {
                continue;
            }
            files += 1;
            assert!(report_path(&path).exists(), "{name} has its report");
            assert!(contents.insert(fs::read(&path)?), "{name} filed once");
        }
        assert_eq!(files, FILES);
        let left: Vec<_> = fs::read_dir(watch.work_dir())?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && is_claim_name(&e.file_name()))
            .collect();
        assert!(left.is_empty(), "claims left: {left:?}");
        Ok(())
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

    /// What may stand at a name in `done` before a filing: a file alone, a report alone (another
    /// writer's, or one with the very bytes our filing writes), or both.
    #[derive(Debug, Clone, Copy)]
    enum Standing {
        File,
        Report,
        ReportLikeOurs,
        Both,
    }

    fn standing() -> impl proptest::strategy::Strategy<Value = Vec<(u64, Standing)>> {
        use proptest::prelude::*;
        let kind = prop_oneof![
            Just(Standing::File),
            Just(Standing::Report),
            Just(Standing::ReportLikeOurs),
            Just(Standing::Both),
        ];
        proptest::collection::vec((1u64..5, kind), 0..6)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// A filing tries the name as dropped without looking for its report. Whatever stands
        /// in `done` (files, reports, both, at that name and its numbered ones; a report with
        /// our very bytes among them), filing that name several times — with its file, after
        /// the file was removed from the claim by hand, or read back without it — leaves every
        /// one of them as it was, and files each claim once with its own report, under a name
        /// of its own.
        #[test]
        fn filings_never_touch_what_stands_in_the_folder(
            standing in standing(),
            filings in proptest::collection::vec(0u8..3, 1..4),
        ) {
            let dir = tempfile::tempdir().expect("a scratch folder");
            let watch = watch(dir.path()).expect("a watch");
            let ours = report_bytes(&report_for("Build/a.zip"));
            for (n, kind) in standing {
                let path = watch.done.join(numbered("a.zip", n));
                let (file, report) = match kind {
                    Standing::File => (true, None),
                    Standing::Report => (false, Some(b"{}".to_vec())),
                    Standing::ReportLikeOurs => (false, Some(ours.clone())),
                    Standing::Both => (true, Some(b"{}".to_vec())),
                };
                if file && !path.exists() {
                    fs::write(&path, format!("standing {n}")).expect("write");
                }
                if let Some(bytes) = report.filter(|_| !report_path(&path).exists()) {
                    fs::write(report_path(&path), bytes).expect("write");
                }
            }
            let before: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&watch.done)
                .expect("list")
                .map(|entry| {
                    let path = entry.expect("entry").path();
                    let bytes = fs::read(&path).expect("read");
                    (path, bytes)
                })
                .collect();
            let mut added = 0;
            for (i, how) in filings.into_iter().enumerate() {
                let mut claim = claimed(&watch, "Build/a.zip", format!("drop {i}").as_bytes())
                    .expect("claimed");
                // 1: the file removed from the claim by hand; 2: also read back after a restart.
                if how > 0 {
                    fs::remove_file(claim.payload()).expect("remove the claimed file");
                }
                if how == 2 {
                    claim = reopen(claim.dir()).expect("read back").expect("a claim");
                }
                let path = file(&watch, claim, report_for("Build/a.zip")).expect("filed");
                if how == 0 {
                    proptest::prop_assert_eq!(fs::read(&path).expect("read"), format!("drop {i}").into_bytes());
                    added += 1;
                }
                proptest::prop_assert_eq!(&fs::read(report_path(&path)).expect("its report"), &ours);
                proptest::prop_assert!(!before.iter().any(|(p, _)| *p == path || *p == report_path(&path)));
                added += 1;
            }
            for (path, bytes) in &before {
                proptest::prop_assert_eq!(&fs::read(path).expect("still there"), bytes, "{} was touched", path.display());
            }
            let count = fs::read_dir(&watch.done).expect("list").count();
            proptest::prop_assert_eq!(count, before.len() + added);
        }
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
        assert_eq!(free_name(dir.path(), "a.zip")?, "a.zip");
        fs::write(dir.path().join("a.zip"), b"x")?;
        fs::write(dir.path().join("a~2.zip.result.json"), b"{}")?;
        assert_eq!(free_name(dir.path(), "a.zip")?, "a~3.zip");
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
