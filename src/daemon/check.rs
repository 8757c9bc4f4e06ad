//! The check before the upload: size, emptiness and the package (ZIP and manifest), with the
//! file's snapshot to notice a change later. [`check`] runs it where it belongs: a package
//! check reads the file, on the blocking pool; without one, the check is an `open` and an
//! `fstat`, run in place as the upload's own `open` is (a hand-off to the pool and back costs
//! more than that: two thread wake-ups per file).
//!
//! The content is not hashed here: the upload hashes it as it sends it (see `upload::sent`),
//! and the snapshot — which includes the change time that every write moves — is what tells
//! that the file sent is the file checked.

use super::*;

/// Facts learned by reading a file before its upload.
pub(super) struct Facts {
    /// The file as it was checked: an upload compares it with the file as it is sent.
    pub snapshot: Snapshot,
    /// The package's manifest, when the package check ran.
    pub manifest: Option<crate::package::Manifest>,
    /// The file as the check opened it, when it did (no package check): the first attempt
    /// reads it rather than opening the path again.
    pub opened: Option<std::fs::File>,
}

/// Why a file will not be uploaded, learned before any attempt.
pub(super) struct Refusal {
    /// The file's size, for the report.
    pub size: u64,
    /// Why, in one sentence.
    pub reason: String,
}

/// How a check ended that did not return.
pub(super) enum Broke {
    /// It panicked: a package that crashes the check would crash it at every try.
    Crashed(String),
    /// It was cancelled (only at shutdown).
    Cancelled(String),
}

/// Checks `claim`'s file (see [`examine`]), in place or on the blocking pool (see the module
/// documentation); a panic is caught either way.
pub(super) async fn check(
    claim: &Claim,
    limit: u64,
    validate: bool,
    plugin_name: &str,
    business_type: &str,
) -> Result<Result<Facts, Refusal>, Broke> {
    let path = claim.payload();
    let rel = claim.record.rel_path.clone();
    let (p, b) = (plugin_name.to_owned(), business_type.to_owned());
    let work = move || {
        // Tests make the check panic here (debug builds only, see `store::fault`).
        store::fault::crash_point("check", std::path::Path::new(&rel));
        examine(&path, limit, validate, &p, &b)
    };
    if validate {
        return tokio::task::spawn_blocking(work).await.map_err(|e| {
            if e.is_panic() {
                Broke::Crashed(recover::panic_message(e))
            } else {
                Broke::Cancelled(e.to_string())
            }
        });
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .map_err(|payload| Broke::Crashed(recover::payload_message(payload.as_ref())))
}

/// Checks size and (optionally) the package. Blocking.
pub(super) fn examine(
    path: &std::path::Path,
    limit: u64,
    validate: bool,
    plugin_name: &str,
    business_type: &str,
) -> Result<Facts, Refusal> {
    let refuse = |size, reason: String| Refusal { size, reason };
    if !validate {
        // Nothing is read, so one look is the snapshot: the file opened (a file the daemon
        // may not read is refused now, not retried until the budget is spent) and measured
        // through what was opened, with no second walk of its path. Where the open fails, the
        // size is looked at first, so an empty or oversized file is refused for that.
        let opened = store::open_payload(path).and_then(|file| Ok((file.metadata()?, file)));
        return match opened {
            Ok((meta, file)) => {
                let snapshot = Snapshot::of(&meta);
                crate::upload::size_refusal(snapshot.size, limit)
                    .map_err(|reason| refuse(snapshot.size, reason))?;
                Ok(Facts {
                    snapshot,
                    manifest: None,
                    opened: Some(file),
                })
            }
            Err(unread) => {
                let size = measure(path, limit)?.len();
                Err(refuse(size, format!("the file cannot be read: {unread}")))
            }
        };
    }
    let meta = measure(path, limit)?;
    let size = meta.len();
    let manifest = crate::package::check_package(path, plugin_name, business_type)
        .map_err(|e| refuse(size, e.to_string()))?;
    // The package check must be of the file as it was measured.
    let snapshot = Snapshot::of(&meta);
    let after = std::fs::symlink_metadata(path)
        .map(|m| Snapshot::of(&m))
        .map_err(|e| refuse(size, format!("the file cannot be inspected: {e}")))?;
    if let Some(detail) = snapshot.difference(&after) {
        return Err(refuse(
            after.size,
            format!("the file changed while it was being checked: {detail}"),
        ));
    }
    Ok(Facts {
        snapshot,
        manifest: Some(manifest),
        opened: None,
    })
}

/// The file's metadata (`lstat`), unless it cannot be looked at or its size alone refuses it
/// (see [`crate::upload::size_refusal`]).
fn measure(path: &std::path::Path, limit: u64) -> Result<std::fs::Metadata, Refusal> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| Refusal {
        size: 0,
        reason: format!("the file cannot be inspected: {e}"),
    })?;
    crate::upload::size_refusal(meta.len(), limit).map_err(|reason| Refusal {
        size: meta.len(),
        reason,
    })?;
    Ok(meta)
}
