//! The check before the upload: size, emptiness and the package (ZIP and manifest), with the
//! file's snapshot to notice a change later. Blocking: callers run it with `spawn_blocking`.
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
}

/// Why a file will not be uploaded, learned before any attempt.
pub(super) struct Refusal {
    /// The file's size, for the report.
    pub size: u64,
    /// Why, in one sentence.
    pub reason: String,
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
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| refuse(0, format!("the file cannot be inspected: {e}")))?;
    let size = meta.len();
    if size > limit {
        return Err(refuse(
            size,
            format!(
                "the file is {} which is larger than upload.max_file_size ({})",
                bytesize::ByteSize(size).display().iec(),
                bytesize::ByteSize(limit).display().iec()
            ),
        ));
    }
    if size == 0 {
        return Err(refuse(size, "the file is empty".to_owned()));
    }
    let manifest = if validate {
        Some(
            crate::package::check_package(path, plugin_name, business_type)
                .map_err(|e| refuse(size, e.to_string()))?,
        )
    } else {
        None
    };
    // A file the daemon may not read is refused now, not retried until the budget is spent
    // (the package check has read it already).
    if !validate {
        drop(
            store::open_payload(path)
                .map_err(|e| refuse(size, format!("the file cannot be read: {e}")))?,
        );
    }
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
    Ok(Facts { snapshot, manifest })
}
