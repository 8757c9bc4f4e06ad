//! Sweeping the temporary files a killed extdrop left behind.

use super::*;

/// Removes the temporary files ([`TEMP_PREFIX`], and the `partial-<pid>` of older versions)
/// that a killed extdrop left in the watch's work folder, its claim folders, `done` and
/// `failed`. A file is removed only when its writer is gone: its pid is this process's (at
/// start-up nothing of ours is being written yet) or no longer a live process here. On a
/// folder shared with another host a pid says nothing, so a file of a live writer there may be
/// swept; that writer's step then fails and is retried, nothing is lost. Best effort: what
/// cannot be removed is logged and left.
pub fn sweep_temporaries(watch: &Watch) {
    let work = watch.work_dir();
    let mut folders = vec![work.clone(), watch.done.clone(), watch.failed.clone()];
    if let Ok(entries) = fs::read_dir(&work) {
        folders.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    for folder in folders {
        let Ok(entries) = fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let pid = name
                .strip_prefix(TEMP_PREFIX)
                .or_else(|| name.strip_prefix("partial-").filter(|_| folder == work))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<i32>().ok());
            let Some(pid) = pid else { continue };
            if writer_alive(pid) {
                continue;
            }
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(watch = %watch.name, file = %path.display(), "removed a temporary file a stopped extdrop left")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(watch = %watch.name, file = %path.display(), error = %e, "cannot remove a temporary file a stopped extdrop left")
                }
            }
        }
    }
}

/// Whether the process that wrote a temporary file may still be writing it.
pub(super) fn writer_alive(pid: i32) -> bool {
    if pid == std::process::id() as i32 {
        return false;
    }
    match rustix::process::Pid::from_raw(pid) {
        Some(pid) => !matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        ),
        None => false,
    }
}
