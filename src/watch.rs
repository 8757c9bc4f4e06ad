//! Finding files in the inboxes and deciding when they are ready.
//!
//! Three sources say "look here": inotify (or polling) events through `notify`, the start-up
//! scan and the periodic rescan (the safety net for missed events and queue overflows). They
//! only nominate candidates; readiness is decided by [`Tracker`] alone, from `lstat`: a file is
//! ready once its size and modification time have not changed for the watch's `settle`.
//! A candidate is looked at when it is due ([`Tracker::next_check`]), not on a tick: once
//! when first noted (or at once, when an event brings its `lstat`), then when its settle
//! would be over; an event that reports a change starts its settle again.
//! Symbolic links and special files are never candidates, and scans do not descend into
//! linked folders. A path handed out stays out of the tracker until its handler lets go of it,
//! so a file is never handed out twice at once.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::config::Watch;

/// A file that is ready to be claimed.
#[derive(Debug, Clone)]
pub struct Found {
    /// The watch whose inbox holds it.
    pub watch: Arc<Watch>,
    /// Path relative to the inbox, `/`-separated, as text (see [`Found::exact_name`]).
    pub rel_path: String,
    /// The file's absolute path in the inbox.
    pub path: PathBuf,
    /// Whether `rel_path` is the file's real name; false when the name is not valid UTF-8
    /// and `rel_path` shows its invalid bytes as `\xNN` (such a file can only be refused).
    pub exact_name: bool,
    /// When extdrop first noticed it.
    pub first_seen: SystemTime,
}

/// Paths handed out and not yet let go of, shared between the tracker and the handlers.
#[derive(Debug, Clone, Default)]
pub struct Busy(Arc<Mutex<HashMap<PathBuf, SystemTime>>>);

impl Busy {
    fn insert(&self, path: PathBuf, first_seen: SystemTime) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path, first_seen);
    }

    /// Handed-out paths under `folder`: how many, and when the oldest was first seen.
    fn under(&self, folder: &Path) -> (u64, Option<SystemTime>) {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut oldest: Option<SystemTime> = None;
        let mut n = 0;
        for (_, seen) in map.iter().filter(|(path, _)| path.starts_with(folder)) {
            n += 1;
            oldest = Some(oldest.map_or(*seen, |o| o.min(*seen)));
        }
        (n, oldest)
    }

    fn contains(&self, path: &Path) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(path)
    }

    /// The handler of `path` is finished with it (claimed, or found gone).
    pub fn release(&self, path: &Path) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path);
    }

    /// How many paths are handed out.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is handed out.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why the inboxes could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The per-user inotify watch limit is reached.
    #[error(
        "cannot watch {}: the inotify watch limit is reached; raise it with `sysctl fs.inotify.max_user_watches=524288` (and persist it in /etc/sysctl.d/), or set poll = true on this watch",
        path.display()
    )]
    TooManyWatches {
        /// The folder that could not be watched.
        path: PathBuf,
    },
    /// The per-user inotify instance limit is reached.
    #[error(
        "cannot start inotify: the per-user instance limit is reached; raise it with `sysctl fs.inotify.max_user_instances=1024` or stop other watchers"
    )]
    TooManyInstances,
    /// Any other failure to watch an inbox.
    #[error("cannot watch inbox {}: {message}", path.display())]
    Inbox {
        /// The inbox.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn translate(error: notify::Error, path: &Path) -> WatchError {
    match &error.kind {
        notify::ErrorKind::MaxFilesWatch => WatchError::TooManyWatches {
            path: path.to_owned(),
        },
        notify::ErrorKind::Io(e)
            if e.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error()) =>
        {
            WatchError::TooManyInstances
        }
        notify::ErrorKind::Io(e)
            if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) =>
        {
            WatchError::TooManyWatches {
                path: path.to_owned(),
            }
        }
        _ => WatchError::Inbox {
            path: path.to_owned(),
            message: error.to_string(),
        },
    }
}

/// What the file-system watchers report to the loop.
#[derive(Debug)]
pub enum Nudge {
    /// Something happened at these paths.
    Paths(Vec<PathBuf>),
    /// Events were lost (queue overflow): scan everything.
    Rescan,
    /// The watcher reported an error.
    Error(WatchError),
}

/// The armed `notify` watchers; dropping this disarms them.
pub struct Armed {
    _watchers: Vec<Box<dyn notify::Watcher + Send>>,
}

impl std::fmt::Debug for Armed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Armed({} watchers)", self._watchers.len())
    }
}

/// Arms one inotify watcher for all inboxes that do not poll, and one polling watcher per
/// inbox that does. Events arrive on `nudges`.
pub fn arm(
    watches: &[Arc<Watch>],
    nudges: mpsc::UnboundedSender<Nudge>,
) -> Result<Armed, WatchError> {
    let handler = move |tx: mpsc::UnboundedSender<Nudge>| {
        move |event: notify::Result<notify::Event>| {
            let nudge = match event {
                Ok(event) if event.need_rescan() => Nudge::Rescan,
                Ok(event) if !worth_a_look(&event.kind) => return,
                Ok(event) => Nudge::Paths(event.paths),
                Err(e) => {
                    let path = e.paths.first().cloned().unwrap_or_default();
                    Nudge::Error(translate(e, &path))
                }
            };
            let _ = tx.send(nudge);
        }
    };
    let mode = |w: &Watch| {
        if w.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        }
    };
    let mut watchers: Vec<Box<dyn notify::Watcher + Send>> = Vec::new();
    let polled: Vec<bool> = watches.iter().map(|w| polled(w)).collect();
    let inotify_watches: Vec<_> = watches
        .iter()
        .zip(&polled)
        .filter_map(|(w, polled)| (!polled).then_some(w))
        .collect();
    if !inotify_watches.is_empty() {
        let config = notify::Config::default().with_follow_symlinks(false);
        let mut watcher = notify::RecommendedWatcher::new(handler(nudges.clone()), config)
            .map_err(|e| translate(e, Path::new("/")))?;
        for w in inotify_watches {
            watcher
                .watch(&w.inbox, mode(w))
                .map_err(|e| translate(e, &w.inbox))?;
        }
        watchers.push(Box::new(watcher));
    }
    for w in watches
        .iter()
        .zip(&polled)
        .filter_map(|(w, polled)| polled.then_some(w))
    {
        let config = notify::Config::default()
            .with_follow_symlinks(false)
            .with_poll_interval(w.poll_interval);
        let mut watcher = notify::PollWatcher::new(handler(nudges.clone()), config)
            .map_err(|e| translate(e, &w.inbox))?;
        watcher
            .watch(&w.inbox, mode(w))
            .map_err(|e| translate(e, &w.inbox))?;
        watchers.push(Box::new(watcher));
    }
    Ok(Armed {
        _watchers: watchers,
    })
}

/// A folder's identity (device and inode): the same path can name a new folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderId(u64, u64);

/// The identity of the folder at `path`; `None` when there is none (or it cannot be read).
pub fn folder_id(path: &Path) -> Option<FolderId> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| FolderId(m.dev(), m.ino()))
}

/// Whether the watch's inbox is polled: when `poll` says so, or when `poll` is not set and
/// the inbox is on a network or FUSE file system, where files written by other hosts (or
/// behind the FUSE mount) raise no inotify event here. Says so in the log when it decides for
/// the operator.
pub fn polled(watch: &Watch) -> bool {
    if watch.poll_set {
        return watch.poll;
    }
    match remote_file_system(&watch.inbox) {
        Some(kind) => {
            tracing::info!(
                watch = %watch.name,
                file_system = kind,
                every = %humantime::format_duration(watch.poll_interval),
                "the inbox is on a network or FUSE file system, where changes made elsewhere raise no inotify event: polling it (set poll = false to use inotify anyway)"
            );
            true
        }
        None => false,
    }
}

/// The kind of file system `path` is on, if it is one whose changes made elsewhere inotify
/// cannot see: network file systems and FUSE (by `statfs` magic number, see statfs(2)).
pub fn remote_file_system(path: &Path) -> Option<&'static str> {
    let stat = rustix::fs::statfs(path).ok()?;
    // The kernel's magic numbers are 32-bit; the field is a signed word on most targets.
    let magic = (stat.f_type as u64) & 0xFFFF_FFFF;
    Some(match magic {
        0x6969 => "nfs",
        0x517B => "smb",
        0xFF53_4D42 => "cifs",
        0xFE53_4D42 => "smb2",
        0x6573_5546 => "fuse",
        0x0102_1997 => "9p",
        0x00C3_6400 => "ceph",
        0x5346_414F => "afs",
        0x7375_7245 => "coda",
        0x0BD0_0BD0 => "lustre",
        0x4750_4653 => "gpfs",
        0x0116_1970 => "gfs2",
        0x7461_636F => "ocfs2",
        _ => return None,
    })
}

/// Whether an event can mean a new or changed file. Opening a folder or a file raises an
/// event too (inotify's `IN_OPEN`, which `notify` always asks for): a scan opens the folders
/// it lists, so in a recursive watch each scan of a subfolder would announce that subfolder
/// again and start the next scan, for ever. Opening and reading change nothing; closing a
/// file written to does.
fn worth_a_look(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

#[derive(Debug)]
struct Candidate {
    watch: Arc<Watch>,
    rel_path: String,
    exact_name: bool,
    size: u64,
    mtime: Option<SystemTime>,
    unchanged_since: Instant,
    first_seen: SystemTime,
}

impl Candidate {
    /// When this candidate is next looked at: at once when never looked at, else when it will
    /// have been unchanged for its settle.
    fn due(&self) -> Instant {
        if self.size == u64::MAX {
            self.unchanged_since
        } else {
            self.unchanged_since + self.watch.settle
        }
    }
}

/// The candidates of all inboxes and their readiness.
#[derive(Debug)]
pub struct Tracker {
    watches: Vec<Arc<Watch>>,
    candidates: HashMap<PathBuf, Candidate>,
    busy: Busy,
}

impl Tracker {
    /// A tracker for these watches; `busy` is shared with the handlers.
    pub fn new(watches: Vec<Arc<Watch>>, busy: Busy) -> Tracker {
        Tracker {
            watches,
            candidates: HashMap::new(),
            busy,
        }
    }

    /// The watches it serves.
    pub fn watches(&self) -> &[Arc<Watch>] {
        &self.watches
    }

    /// A short delay for looking again after an event that may have removed or replaced an
    /// inbox: long enough for a rename and a new folder to settle, short enough to go unnoticed.
    pub fn glance(&self) -> Duration {
        let shortest = self
            .watches
            .iter()
            .map(|w| w.settle)
            .min()
            .unwrap_or(Duration::from_secs(1));
        (shortest / 4).clamp(Duration::from_millis(20), Duration::from_millis(500))
    }

    /// When the next candidate is due for a look: at once for one never looked at, else when
    /// it will have been unchanged for its `settle`. `None` when no candidate waits.
    pub fn next_check(&self) -> Option<Instant> {
        self.candidates.values().map(Candidate::due).min()
    }

    /// Whether no candidate is waiting to become ready.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// How many candidates are waiting to become ready.
    pub fn waiting(&self) -> usize {
        self.candidates.len()
    }

    /// Per watch (in the order of [`Tracker::watches`]): files waiting in the inbox — not yet
    /// ready, or ready and waiting for an upload slot — and when the oldest was first seen.
    pub fn waiting_per_watch(&self) -> Vec<(u64, Option<SystemTime>)> {
        self.watches
            .iter()
            .map(|w| {
                let (mut n, mut oldest) = self.busy.under(&w.inbox);
                for c in self
                    .candidates
                    .values()
                    .filter(|c| Arc::ptr_eq(&c.watch, w))
                {
                    n += 1;
                    oldest = Some(oldest.map_or(c.first_seen, |o| o.min(c.first_seen)));
                }
                (n, oldest)
            })
            .collect()
    }

    /// Scans every inbox.
    pub fn scan_all(&mut self) {
        for i in 0..self.watches.len() {
            self.scan(i);
        }
    }

    /// Scans one inbox (and its subfolders when recursive) and notes every admitted file.
    pub fn scan(&mut self, index: usize) {
        let Some(watch) = self.watches.get(index).cloned() else {
            return;
        };
        self.scan_folder(&watch, &watch.inbox.clone());
    }

    fn scan_folder(&mut self, watch: &Arc<Watch>, folder: &Path) {
        for (rel, path) in admitted_files(watch, folder) {
            self.note_file(watch, path, rel, None);
        }
    }

    /// Notes a path an event named: a file becomes a candidate, a new folder is scanned.
    pub fn note(&mut self, path: &Path) {
        let Some(watch) = self.owner(path) else {
            return;
        };
        let Some(rel) = relative(&watch, path) else {
            return;
        };
        if !watch.recursive && rel.text.contains('/') {
            return;
        }
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() && watch.recursive && admits_folder(&watch, &rel.text) => {
                self.scan_folder(&watch, path);
            }
            Ok(meta) if meta.is_file() => self.note_file(&watch, path.to_owned(), rel, Some(&meta)),
            _ => {}
        }
    }

    /// Notes a file; `meta` is its `lstat` when the caller has one (an event), so that its
    /// settle starts now and a change an event reports restarts it at once, rather than at
    /// the candidate's next look.
    fn note_file(
        &mut self,
        watch: &Arc<Watch>,
        path: PathBuf,
        rel: RelPath,
        meta: Option<&fs::Metadata>,
    ) {
        let RelPath { text: rel, exact } = rel;
        let seen = meta.map(|m| (m.len(), m.modified().ok()));
        if let Some(c) = self.candidates.get_mut(&path) {
            if let Some((size, mtime)) = seen
                && (size, mtime) != (c.size, c.mtime)
            {
                (c.size, c.mtime, c.unchanged_since) = (size, mtime, Instant::now());
            }
            return;
        }
        if !watch.admits(&rel) || self.busy.contains(&path) {
            return;
        }
        // Never looked at (from a scan): `u64::MAX` is no file's size, so the first look
        // records the file and starts its settle.
        let (size, mtime) = seen.unwrap_or((u64::MAX, None));
        self.candidates.insert(
            path,
            Candidate {
                watch: watch.clone(),
                rel_path: rel,
                exact_name: exact,
                size,
                mtime,
                unchanged_since: Instant::now(),
                first_seen: SystemTime::now(),
            },
        );
    }

    /// The watch whose inbox holds `path` (the longest inbox that is a prefix).
    fn owner(&self, path: &Path) -> Option<Arc<Watch>> {
        self.watches
            .iter()
            .filter(|w| path.starts_with(&w.inbox) && path != w.inbox)
            .max_by_key(|w| w.inbox.as_os_str().len())
            .cloned()
    }

    /// Looks at every candidate due by `now` (see [`Tracker::next_check`]) and hands out those
    /// unchanged for `settle`. Files that vanished or stopped being regular files are
    /// forgotten. A candidate not yet due is not looked at: a change it meets before then is
    /// seen at its look, which then starts its settle again.
    pub fn ready(&mut self, now: Instant) -> Vec<Found> {
        let mut ready = Vec::new();
        self.candidates.retain(|path, c| {
            if c.due() > now {
                return true;
            }
            let meta = match fs::symlink_metadata(path) {
                Ok(meta) if meta.is_file() => meta,
                _ => return false,
            };
            let mtime = meta.modified().ok();
            if meta.len() != c.size || mtime != c.mtime {
                c.size = meta.len();
                c.mtime = mtime;
                c.unchanged_since = now;
                // A zero settle means "ready when seen": no second look needed.
                if !c.watch.settle.is_zero() {
                    return true;
                }
            }
            if now.duration_since(c.unchanged_since) < c.watch.settle {
                return true;
            }
            ready.push((
                path.clone(),
                Found {
                    watch: c.watch.clone(),
                    rel_path: c.rel_path.clone(),
                    path: path.clone(),
                    exact_name: c.exact_name,
                    first_seen: c.first_seen,
                },
            ));
            false
        });
        ready
            .into_iter()
            .map(|(path, found)| {
                self.busy.insert(path, found.first_seen);
                found
            })
            .collect()
    }
}

/// Every admitted regular file under `folder` (the inbox, or one of its subfolders): its path
/// relative to the inbox and its full path. Subfolders are entered only when the watch is
/// recursive, never through a link, and never the work folder or an excluded one. Names that
/// are not valid UTF-8 are found too (see [`RelPath`]): such a file must be refused, not
/// ignored.
pub fn admitted_files(watch: &Watch, folder: &Path) -> Vec<(RelPath, PathBuf)> {
    let mut found = Vec::new();
    let mut folders = vec![folder.to_owned()];
    while let Some(folder) = folders.pop() {
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(watch = %watch.name, folder = %folder.display(), error = %e, "cannot scan folder");
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(rel) = relative(watch, &path) else {
                continue;
            };
            // The dirent's type does not follow links, so linked folders are never entered.
            match entry.file_type() {
                Ok(t) if t.is_dir() && watch.recursive && admits_folder(watch, &rel.text) => {
                    folders.push(path);
                }
                Ok(t) if t.is_file() && watch.admits(&rel.text) => found.push((rel, path)),
                _ => {}
            }
        }
    }
    found
}

/// A path relative to an inbox, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath {
    /// `/`-separated; invalid UTF-8 shown as `\xNN` (see [`crate::shown::name`]).
    pub text: String,
    /// Whether `text` is the path's real spelling.
    pub exact: bool,
}

/// `path` relative to the watch's inbox with `/` separators, if it is inside it.
fn relative(watch: &Watch, path: &Path) -> Option<RelPath> {
    let rel = path.strip_prefix(&watch.inbox).ok()?;
    let mut exact = true;
    let parts: Vec<String> = rel
        .components()
        .map(|c| {
            let (text, same) = crate::shown::name(c.as_os_str());
            exact &= same;
            text
        })
        .collect();
    let text = parts.join("/");
    (!text.is_empty()).then_some(RelPath { text, exact })
}

/// Whether a subfolder may hold candidates: none of its segments is excluded or the work folder.
fn admits_folder(watch: &Watch, rel: &str) -> bool {
    rel.split('/')
        .all(|segment| segment != crate::store::WORK_DIR && !watch.exclude.matches(segment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_limit_error_names_the_sysctl_to_raise() {
        let limit = translate(
            notify::Error::new(notify::ErrorKind::MaxFilesWatch),
            Path::new("/srv/inbox"),
        );
        let text = limit.to_string();
        assert!(
            text.contains("fs.inotify.max_user_watches") && text.contains("/srv/inbox"),
            "{text}"
        );
        let enospc = notify::Error::io(std::io::Error::from_raw_os_error(
            rustix::io::Errno::NOSPC.raw_os_error(),
        ));
        assert!(matches!(
            translate(enospc, Path::new("/x")),
            WatchError::TooManyWatches { .. }
        ));
        let emfile = notify::Error::io(std::io::Error::from_raw_os_error(
            rustix::io::Errno::MFILE.raw_os_error(),
        ));
        assert!(
            translate(emfile, Path::new("/x"))
                .to_string()
                .contains("fs.inotify.max_user_instances")
        );
    }
}
