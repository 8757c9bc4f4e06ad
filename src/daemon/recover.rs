//! Picking claims up again: the claims a previous run left (at start-up, and in inboxes a
//! reload adds), orphans without a record (filed in `failed`), and the claim of a handler that
//! crashed (taken up again after a pause, or filed in `failed` once it keeps crashing).
//!
//! Invariant: one handler per claim — a claim a live handler owns is never resumed twice.

use super::*;

/// Starts handlers for the claims a previous run left in these watches' work folders, and
/// files orphans.
pub(super) async fn resume_claims(
    ctx: &Arc<Context>,
    watches: &[Arc<Watch>],
    clean_up: bool,
    tasks: &mut JoinSet<()>,
) -> Result<(), DaemonError> {
    for watch in watches {
        let resumed = {
            let watch = watch.clone();
            tokio::task::spawn_blocking(move || store::resume(&watch, clean_up))
                .await
                .unwrap_or_else(|e| Err(join_error(e)))?
        };
        for item in resumed {
            match item {
                Resumed::Claim(claim) if ctx.owns(&claim) => {}
                Resumed::Claim(claim) => {
                    tracing::info!(watch = %watch.name, file = %claim.record.rel_path, attempts = claim.record.attempts, "resuming a claimed file");
                    tasks.spawn(carry_on(ctx.clone(), watch.clone(), *claim, None));
                }
                Resumed::Orphan { path, why } => file_orphan(ctx, watch, path, why).await,
                Resumed::Unsure { dir, error } => {
                    // Neither removed nor taken for empty: looked at again after a pause.
                    tracing::warn!(watch = %watch.name, claim = %dir.display(), error = %error, "cannot read a claim folder; it is looked at again after a pause");
                    tasks.spawn(take_up_again(ctx.clone(), watch.clone(), dir, None));
                }
            }
        }
    }
    Ok(())
}

/// Files an orphan (a work-folder file without a usable claim record) in `failed`.
pub(super) async fn file_orphan(ctx: &Context, watch: &Arc<Watch>, path: PathBuf, why: String) {
    tracing::warn!(watch = %watch.name, file = %path.display(), why = %why, "work folder holds a file without a claim record");
    let owner = watch.clone();
    let filed = tokio::task::spawn_blocking(move || store::file_orphan(&owner, &path, &why)).await;
    match filed {
        Ok(Ok(dest)) => {
            ctx.failed.fetch_add(1, Ordering::Relaxed);
            ctx.progress.filed();
            ctx.metrics.file_filed(&watch.name, "failed");
            tracing::warn!(file = %dest.display(), outcome = "failed", "filed an orphan from the work folder");
        }
        Ok(Err(e)) => {
            tracing::error!(watch = %watch.name, error = %e, "cannot file an orphan from the work folder; it stays there");
            ctx.error();
        }
        Err(e) => {
            tracing::error!(error = %e, "orphan filing task failed");
            ctx.error();
        }
    }
}

/// A handler task ended with an error (a panic): the claims it held are taken up again after
/// a pause, in the running process.
pub(super) fn take_up_crashed(
    ctx: &Arc<Context>,
    error: tokio::task::JoinError,
    tasks: &mut JoinSet<()>,
) {
    let task = error.id();
    let why = panic_message(error);
    let crashed: Vec<_> = {
        let mut all = ctx.crashed.lock().unwrap_or_else(|e| e.into_inner());
        let (this, others) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|c| c.task.is_none_or(|id| id == task));
        *all = others;
        this
    };
    if crashed.is_empty() {
        // Crashed before it held a claim: its file is still in the inbox, for the next scan.
        tracing::error!(error = %why, "a file handler crashed before it claimed its file");
        ctx.error();
    }
    for Crashed { watch, dir, .. } in crashed {
        tracing::error!(watch = %watch.name, claim = %dir.display(), error = %why, "a file handler crashed; its claim is taken up again after a pause");
        tasks.spawn(take_up_again(ctx.clone(), watch, dir, Some(why.clone())));
    }
}

/// The message of a panic that ended a task (or why else it ended).
pub(super) fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload_message(payload.as_ref()),
        Err(error) => error.to_string(),
    }
}

/// The message a panic was raised with.
pub(super) fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Takes up a claim nobody handles any more after a pause: one whose handler crashed
/// (`crash` holds why), or whose folder could not be read. Looks again after every pause while
/// the folder cannot be read; at shutdown the claim waits for the next start.
pub(super) async fn take_up_again(
    ctx: Arc<Context>,
    watch: Arc<Watch>,
    dir: PathBuf,
    crash: Option<String>,
) {
    let mut logged = false;
    loop {
        if !ctx.pause(ctx.io_retry_delay()).await {
            return;
        }
        let inspected = {
            let (watch, dir) = (watch.clone(), dir.clone());
            tokio::task::spawn_blocking(move || store::inspect(&watch, &dir, false))
                .await
                .unwrap_or_else(|e| Err(join_error(e)))
        };
        let claim = match inspected {
            Ok(None) => return, // filed meanwhile, or never claimed after all
            Ok(Some(Resumed::Claim(claim))) => claim,
            Ok(Some(Resumed::Orphan { path, why })) => {
                file_orphan(&ctx, &watch, path, why).await;
                return;
            }
            Ok(Some(Resumed::Unsure { error, .. })) | Err(error) => {
                if !logged {
                    tracing::error!(watch = %watch.name, claim = %dir.display(), error = %error, "cannot read a claim folder; it is looked at again after a pause");
                    logged = true;
                }
                continue;
            }
        };
        if let Some(why) = &crash {
            let crashes = {
                let mut map = ctx.crashes.lock().unwrap_or_else(|e| e.into_inner());
                let n = map.entry(dir.clone()).or_default();
                *n += 1;
                *n
            };
            if crashes >= HANDLER_CRASHES && claim.record.decided.is_none() {
                // The file crashes its handler every time: refused, not tried forever.
                let Some(_handling) = ctx.handle(&watch, &claim) else {
                    return;
                };
                ctx.crashes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&dir);
                let report = Draft::new(&watch, &claim).failed(
                    format!("extdrop crashed {crashes} times while handling this file: {why}"),
                    None,
                );
                file(&ctx, &watch, *claim, report).await;
                return;
            }
        }
        carry_on(ctx.clone(), watch, *claim, None).await;
        if crash.is_some()
            && std::fs::symlink_metadata(&dir)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            // Filed: its count of crashes is no longer needed.
            ctx.crashes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&dir);
        }
        return;
    }
}
