//! The inbox lock: one extdrop process per inbox (an `flock` on `<inbox>/.extdrop/lock`), and
//! the note in the lock file that names its holder.

use super::*;

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
