//! `extdrop retry`: moving a failed file back into its inbox, crash-safe on one file system
//! (an intent, the report set aside, one no-replace rename) and across two (an intent, a
//! staged copy, and the removal of the source as the one commit point), completed or undone
//! after a kill.

use super::*;

/// Moves a failed file back into its inbox under the name it was dropped with (from its
/// report, else its name without the `~n` suffix filing may have added) and removes its report,
/// so the daemon takes it again. Returns the file's new path.
///
/// Within one file system the file moves with one no-replace rename; its report is set aside
/// first and removed after (or put back if the move fails), so a kill never leaves a stale
/// report blocking the name. The setting aside is written down first (a [`RetryIntent`] with
/// `aside`), so that a kill between it and the move never loses the report either: the next
/// `retry` or daemon start puts it back while the file is still in `failed`, and removes it
/// once the file has gone (see [`recover_retries`]).
///
/// Across file systems see [`recover_retries`]: the copy is staged in the inbox's work folder
/// under a written intent, and the removal of the source is the one commit point, so a kill at
/// any moment is completed or undone by the next `retry` or daemon start, never duplicated.
pub fn unfail(watch: &Watch, failed_file: &Path) -> Result<PathBuf, StoreError> {
    recover_retries(watch);
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
    ensure_folder(&watch.work_dir())?;
    let failed_dir = failed_file.parent().unwrap_or(Path::new(".")).to_owned();
    let (intent, intent_path) = intent(watch, failed_file, &report_file, &folder, &base, true)?;
    let aside = intent.staged.clone();
    let set_aside = match fs::rename(&report_file, &aside) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            let _ = fs::remove_file(&intent_path);
            return Err(StoreError::new("set aside", &report_file)(e));
        }
    };
    fault::crash_point("retry.set_aside", failed_file);
    let put_back = || {
        if set_aside {
            let _ = rename_noreplace(&aside, &report_file);
        }
        let _ = fs::remove_file(&intent_path);
    };
    loop {
        let dest = match inbox_name(&folder, &base) {
            Ok(free) => folder.join(free),
            Err(e) => {
                put_back();
                return Err(e);
            }
        };
        match fault::hit("retry.move", &dest).and_then(|()| rename_noreplace(failed_file, &dest)) {
            Ok(()) => {
                fault::crash_point("retry.moved", failed_file);
                sync_dir(&folder)?;
                for done_with in [&aside, &intent_path] {
                    match fs::remove_file(done_with) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(StoreError::new("remove", done_with)(e)),
                    }
                }
                sync_dir(&failed_dir)?;
                return Ok(dest);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
                put_back();
                return unfail_across(watch, failed_file, &report_file, &folder, &base);
            }
            Err(e) => {
                put_back();
                return Err(StoreError::new("move back", failed_file)(e));
            }
        }
    }
}

/// The name a retried file goes back under: the name it was dropped with if free (an inbox
/// file has no report, so a long name needs no shortening), else a numbered free one.
pub(super) fn inbox_name(folder: &Path, base: &str) -> Result<String, StoreError> {
    let path = folder.join(base);
    if !exists("retry.stat", &path).map_err(StoreError::new("inspect", &path))? {
        return Ok(base.to_owned());
    }
    free_name(folder, base)
}

/// Prefix, in the inbox's work folder, of a retry across file systems in progress:
/// `<prefix><pid>-<n>` is the staged copy and `<prefix><pid>-<n>.json` its [`RetryIntent`].
pub(super) const RETRY_PREFIX: &str = ".extdrop-retry-";

/// What a retry across file systems is doing, written before the copy is made.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RetryIntent {
    /// The failed file; its removal is the commit point.
    source: PathBuf,
    /// Its device and inode, to tell it from a later file filed under the same name.
    source_id: (u64, u64),
    /// Its report, removed once the source is gone.
    report: PathBuf,
    /// The copy, in the inbox's work folder (same file system as the inbox).
    staged: PathBuf,
    /// The inbox folder the file goes back to, and the name it goes back under.
    folder: PathBuf,
    base: String,
    /// A move within one file system: `staged` is the report set aside (in `failed`), not a
    /// copy. (Absent in the intents of older versions, which staged copies only.)
    #[serde(default)]
    aside: bool,
}

/// The cross-file-system half of [`unfail`]: intent, staged copy, commit (removal of the
/// source), then placing the copy in the inbox.
pub(super) fn unfail_across(
    watch: &Watch,
    source: &Path,
    report: &Path,
    folder: &Path,
    base: &str,
) -> Result<PathBuf, StoreError> {
    let work = watch.work_dir();
    let (intent, intent_path) = intent(watch, source, report, folder, base, false)?;
    let undo = || {
        let _ = fs::remove_file(&intent.staged);
        let _ = fs::remove_file(&intent_path);
    };
    // The copy is complete and synced before the source may go.
    let copied = fault::hit("retry.copy", &intent.staged).and_then(|()| {
        let mut src = open_payload(source)?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&intent.staged)?;
        io::copy(&mut src, &mut dst)?;
        dst.sync_all()?;
        File::open(&work)?.sync_all()
    });
    if let Err(e) = copied {
        undo();
        return Err(StoreError::new("copy", source)(e));
    }
    fault::crash_point("retry.staged", source);
    // The commit point: from here the staged copy is the file.
    if let Err(e) = fault::hit("retry.commit", source).and_then(|()| fs::remove_file(source)) {
        undo();
        return Err(StoreError::new("remove", source)(e));
    }
    if let Some(failed_dir) = source.parent() {
        let _ = sync_dir(failed_dir);
    }
    fault::crash_point("retry.committed", source);
    complete_retry(&intent, &intent_path, true)
}

/// Writes down (durably) the retry of `source` about to begin: its [`RetryIntent`], in the
/// watch's work folder, and its path. `aside`: a move within one file system, whose `staged`
/// is where the report is set aside (beside it, under a name the start-up sweep leaves);
/// otherwise a copy across file systems, staged in the work folder.
fn intent(
    watch: &Watch,
    source: &Path,
    report: &Path,
    folder: &Path,
    base: &str,
    aside: bool,
) -> Result<(RetryIntent, PathBuf), StoreError> {
    use std::os::unix::fs::MetadataExt;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let work = watch.work_dir();
    let id = format!(
        "{RETRY_PREFIX}{}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let meta = fs::symlink_metadata(source).map_err(StoreError::new("inspect", source))?;
    let staged = match (aside, report.parent()) {
        (true, Some(failed_dir)) => failed_dir.join(format!("{id}.report")),
        _ => work.join(&id),
    };
    let intent = RetryIntent {
        source: source.to_owned(),
        source_id: (meta.dev(), meta.ino()),
        report: report.to_owned(),
        staged,
        folder: folder.to_owned(),
        base: base.to_owned(),
        aside,
    };
    let intent_path = work.join(format!("{id}.json"));
    let bytes = serde_json::to_vec_pretty(&intent).map_err(|e| StoreError {
        action: "encode retry intent",
        path: intent_path.clone(),
        source: io::Error::other(e),
    })?;
    write_atomic(&intent_path, &bytes)?;
    Ok((intent, intent_path))
}

/// Finishes a committed retry: removes the stale report (with `remove_report`) and places the
/// staged copy in the inbox under a free name.
pub(super) fn complete_retry(
    intent: &RetryIntent,
    intent_path: &Path,
    remove_report: bool,
) -> Result<PathBuf, StoreError> {
    if remove_report {
        match fs::remove_file(&intent.report) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::new("remove", &intent.report)(e)),
        }
    }
    loop {
        let dest = intent
            .folder
            .join(inbox_name(&intent.folder, &intent.base)?);
        match rename_noreplace(&intent.staged, &dest) {
            Ok(()) => {
                sync_dir(&intent.folder)?;
                match fs::remove_file(intent_path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::new("remove", intent_path)(e)),
                }
                return Ok(dest);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(StoreError::new("move back", &intent.staged)(e)),
        }
    }
}

/// Completes or undoes the retries that a killed `extdrop retry` left in the watch's work
/// folder (those whose process is gone). The source still there, the same file (device and
/// inode) → not committed: the staged copy goes (or, within one file system, the report set
/// aside comes back) and the file stays failed. Otherwise the source was removed → committed:
/// its report goes and the copy is placed in the inbox (within one file system, the file is
/// there already). Called by `retry` and at the daemon's start; best effort, logged.
pub fn recover_retries(watch: &Watch) {
    use std::os::unix::fs::MetadataExt;
    let work = watch.work_dir();
    let Ok(entries) = fs::read_dir(&work) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name
            .strip_prefix(RETRY_PREFIX)
            .and_then(|r| r.strip_suffix(".json"))
        else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
        if pid.is_none_or(writer_alive) {
            continue;
        }
        let intent_path = entry.path();
        let intent = match fs::read(&intent_path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<RetryIntent>(&b).map_err(|e| e.to_string()))
        {
            Ok(intent) => intent,
            Err(e) => {
                tracing::warn!(watch = %watch.name, file = %intent_path.display(), error = %e, "cannot read an interrupted retry; it is left");
                continue;
            }
        };
        let source = match stat("retry.stat", &intent.source) {
            Ok(source) => source,
            Err(e) => {
                tracing::warn!(watch = %watch.name, file = %intent.source.display(), error = %e, "cannot check an interrupted retry; it is left for later");
                continue;
            }
        };
        let committed = source
            .as_ref()
            .is_none_or(|m| (m.dev(), m.ino()) != intent.source_id);
        if intent.aside {
            set_aside_report_back(watch, &intent, &intent_path, committed);
            continue;
        }
        if !committed {
            let _ = fs::remove_file(&intent.staged);
            let _ = fs::remove_file(&intent_path);
            tracing::info!(watch = %watch.name, file = %intent.source.display(), "undid an interrupted retry; the file stays failed");
            continue;
        }
        if !exists("retry.stat", &intent.staged).unwrap_or(true) {
            // Placed already; only the intent was left.
            let _ = fs::remove_file(&intent_path);
            continue;
        }
        // A later failure may have taken the name since: then the report there is its own.
        match complete_retry(&intent, &intent_path, source.is_none()) {
            Ok(dest) => {
                tracing::info!(watch = %watch.name, file = %dest.display(), "completed an interrupted retry")
            }
            Err(e) => {
                tracing::warn!(watch = %watch.name, error = %e, "cannot complete an interrupted retry; it is tried again later")
            }
        }
    }
}

/// Ends a retry within one file system that a kill interrupted (see [`unfail`]): while the
/// file is still in `failed` (not `committed`), its report set aside goes back beside it;
/// once the file has gone back to the inbox, the report set aside goes.
fn set_aside_report_back(watch: &Watch, intent: &RetryIntent, intent_path: &Path, committed: bool) {
    let ended = if committed {
        fs::remove_file(&intent.staged)
    } else {
        rename_noreplace(&intent.staged, &intent.report)
    };
    match ended {
        Ok(()) => {}
        // Never set aside (killed before), or already ended.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(watch = %watch.name, file = %intent.staged.display(), error = %e, "cannot end an interrupted retry; it is tried again later");
            return;
        }
    }
    if let Err(e) = fs::remove_file(intent_path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(watch = %watch.name, file = %intent_path.display(), error = %e, "cannot remove an interrupted retry's intent");
        return;
    }
    if committed {
        tracing::info!(watch = %watch.name, file = %intent.source.display(), "completed an interrupted retry");
    } else {
        tracing::info!(watch = %watch.name, file = %intent.source.display(), "undid an interrupted retry; the file stays failed with its report");
    }
}
