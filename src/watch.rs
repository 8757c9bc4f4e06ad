//! Finding files in the inboxes and deciding when they are ready.
//!
//! Three sources say "look here": inotify (or polling) events through `notify`, the start-up
//! scan and the periodic rescan (the safety net for missed events and queue overflows). They
//! only nominate candidates; readiness is decided by [`Tracker`] alone, from `lstat`: a file is
//! ready once its size and modification time have not changed for the watch's `settle`.
//! Where the file system's times can be trusted (a local inbox watched by inotify), the
//! settle counts from the file's last write, not from when it was first seen: a finished file
//! moved in is ready at its first look.
//! A candidate is looked at when it is due ([`Tracker::next_check`]), not on a tick: once
//! when first noted (or at once, when an event brings its `lstat`), then when its settle
//! would be over; an event that reports a change starts its settle again.
//! Symbolic links and special files are never candidates, and scans do not descend into
//! linked folders. A path handed out stays out of the tracker until its handler lets go of it,
//! so a file is never handed out twice at once.
//!
//! Ready files wait in the tracker, in the order they became ready, until the main loop has an
//! upload slot for one ([`Tracker::take_ready`]): a waiting file is one compact entry, not a
//! task, a [`Found`] or a [`Busy`] path, so 100,000 waiting files cost some 15 MiB
//! (see [`Tracker`] for the invariants).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::config::Watch;

mod tracker;
pub use tracker::Tracker;

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

/// Paths handed out and not yet let go of, shared between the tracker and the handlers: only
/// files that have an upload slot (or wait to claim again after a failed claim), never the
/// backlog, so it stays small and walking it is cheap.
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

/// The events an inbox watched by inotify is asked for: files appearing, changing, closed
/// after a write, and the inbox itself moved. Not files leaving (`IN_DELETE`, `IN_MOVED_FROM`):
/// every claim renames its file out of the inbox, so each claim raised an event that woke
/// notify's thread for nothing (see [`worth_a_look`]); in a burst, one more thread wake-up per
/// file, and 6 % of the daemon's CPU in `perf` (the thread, and the kernel queueing the
/// events). The kernel now drops them. Nor opens: listing the inbox opens it.
const INBOX_EVENTS: notify::EventKindMask = notify::EventKindMask::CREATE
    .union(notify::EventKindMask::ALL_MODIFY)
    .union(notify::EventKindMask::ACCESS_CLOSE);

/// The events the folder holding such an inbox is asked for: an entry removed or moved away.
/// That is how a removed inbox is noticed now that the inbox reports no removals: its own
/// removal (`IN_DELETE_SELF`) comes only once nothing holds it, and the inbox lock does.
const HOLDER_EVENTS: notify::EventKindMask = notify::EventKindMask::REMOVE;

/// Arms the watchers: for the flat inboxes that do not poll, one inotify watcher asking only
/// for [`INBOX_EVENTS`] and one on the folders holding them ([`HOLDER_EVENTS`]); one asking
/// for every event for recursive inboxes (notify follows folders moved in and out by their
/// events) and for a flat inbox whose holder cannot be watched; one polling watcher per inbox
/// that polls. Events arrive on `nudges`.
pub fn arm(
    watches: &[Arc<Watch>],
    nudges: mpsc::UnboundedSender<Nudge>,
) -> Result<Armed, WatchError> {
    let inboxes: Arc<[PathBuf]> = watches.iter().map(|w| w.inbox.clone()).collect();
    let mut watchers: Vec<Box<dyn notify::Watcher + Send>> = Vec::new();
    let polled: Vec<bool> = watches.iter().map(|w| polled(w)).collect();
    let (flat, mut every): (Vec<_>, Vec<_>) = watches
        .iter()
        .zip(&polled)
        .filter_map(|(w, polled)| (!polled).then_some(w))
        .partition(|w| !w.recursive);
    if !flat.is_empty() {
        every.extend(arm_flat(flat, &inboxes, &nudges, &mut watchers)?);
    }
    if !every.is_empty() {
        let handler = file_handler(inboxes.clone(), nudges.clone());
        let mut watcher =
            notify::RecommendedWatcher::new(handler, inotify(notify::EventKindMask::ALL))
                .map_err(|e| translate(e, Path::new("/")))?;
        for w in every {
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
        let handler = file_handler(inboxes.clone(), nudges.clone());
        let mut watcher =
            notify::PollWatcher::new(handler, config).map_err(|e| translate(e, &w.inbox))?;
        watcher
            .watch(&w.inbox, mode(w))
            .map_err(|e| translate(e, &w.inbox))?;
        watchers.push(Box::new(watcher));
    }
    Ok(Armed {
        _watchers: watchers,
    })
}

/// Arms the watchers of the flat inboxes `flat` that do not poll (see [`arm`]) into
/// `watchers`; returns those whose holding folder cannot be watched, to be armed for every
/// event.
fn arm_flat<'w>(
    flat: Vec<&'w Arc<Watch>>,
    inboxes: &Arc<[PathBuf]>,
    nudges: &mpsc::UnboundedSender<Nudge>,
    watchers: &mut Vec<Box<dyn notify::Watcher + Send>>,
) -> Result<Vec<&'w Arc<Watch>>, WatchError> {
    let handler = holder_handler(inboxes.clone(), nudges.clone());
    let mut holders = notify::RecommendedWatcher::new(handler, inotify(HOLDER_EVENTS))
        .map_err(|e| translate(e, Path::new("/")))?;
    let (mut narrow, mut unheld) = (Vec::new(), Vec::new());
    let mut held: Vec<&Path> = Vec::new();
    for w in flat {
        let holder = w.inbox.parent().filter(|h| !h.as_os_str().is_empty());
        let watched = match holder {
            Some(holder) if held.contains(&holder) => true,
            Some(holder) => match holders.watch(holder, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    held.push(holder);
                    true
                }
                Err(e) => {
                    tracing::debug!(inbox = %w.inbox.display(), holder = %holder.display(), error = %e, "cannot watch the folder holding the inbox; the inbox reports every event instead");
                    false
                }
            },
            None => false,
        };
        if watched {
            narrow.push(w);
        } else {
            unheld.push(w);
        }
    }
    if !narrow.is_empty() {
        let handler = file_handler(inboxes.clone(), nudges.clone());
        let mut watcher = notify::RecommendedWatcher::new(handler, inotify(INBOX_EVENTS))
            .map_err(|e| translate(e, Path::new("/")))?;
        for w in narrow {
            watcher
                .watch(&w.inbox, RecursiveMode::NonRecursive)
                .map_err(|e| translate(e, &w.inbox))?;
        }
        watchers.push(Box::new(watcher));
        watchers.push(Box::new(holders));
    }
    Ok(unheld)
}

/// An inotify watcher's configuration, asking for `events`.
fn inotify(events: notify::EventKindMask) -> notify::Config {
    notify::Config::default()
        .with_follow_symlinks(false)
        .with_event_kinds(events)
}

/// How deep `w`'s inbox is watched.
fn mode(w: &Watch) -> RecursiveMode {
    if w.recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    }
}

/// A watcher's handler: the paths `look` finds in an event are nudged, an event it finds
/// nothing in is dropped (in notify's thread: the main loop is not woken for it).
fn handler(
    inboxes: Arc<[PathBuf]>,
    tx: mpsc::UnboundedSender<Nudge>,
    look: fn(notify::Event, &[PathBuf]) -> Option<Vec<PathBuf>>,
) -> impl Fn(notify::Result<notify::Event>) + Send + 'static {
    move |event| {
        let nudge = match event {
            Ok(event) if event.need_rescan() => Nudge::Rescan,
            Ok(event) => match look(event, &inboxes) {
                Some(paths) => Nudge::Paths(paths),
                None => return,
            },
            Err(e) => {
                let path = e.paths.first().cloned().unwrap_or_default();
                Nudge::Error(translate(e, &path))
            }
        };
        let _ = tx.send(nudge);
    }
}

/// The handler of a watcher on inboxes: the paths of an event [`worth_a_look`].
fn file_handler(
    inboxes: Arc<[PathBuf]>,
    tx: mpsc::UnboundedSender<Nudge>,
) -> impl Fn(notify::Result<notify::Event>) + Send + 'static {
    handler(inboxes, tx, |event, inboxes| {
        worth_a_look(&event, inboxes).then_some(event.paths)
    })
}

/// The handler of the watcher on the folders holding inboxes: an inbox removed or moved away,
/// or the folder holding it (whose own removal or move inotify reports to its watch), is a
/// look at that inbox (the main loop then finds it lost); its siblings' comings and goings
/// are nothing.
fn holder_handler(
    inboxes: Arc<[PathBuf]>,
    tx: mpsc::UnboundedSender<Nudge>,
) -> impl Fn(notify::Result<notify::Event>) + Send + 'static {
    handler(inboxes, tx, |event, inboxes| {
        inbox_leaving(&event, inboxes).map(|inbox| vec![inbox])
    })
}

/// The inbox an event on a holding folder is about, if any: one it names, or one held by the
/// folder it names.
fn inbox_leaving(event: &notify::Event, inboxes: &[PathBuf]) -> Option<PathBuf> {
    event.paths.iter().find_map(|path| {
        inboxes
            .iter()
            .find(|inbox| *inbox == path || inbox.parent() == Some(path.as_path()))
            .cloned()
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

/// Whether an event can mean a new or changed file, or a lost inbox. (A flat inbox watched by
/// inotify is asked for [`INBOX_EVENTS`] only, so the kernel drops most of what is refused
/// here before it is read; recursive and polled inboxes report everything.) Opening a folder or
/// a file raises an event too (inotify's `IN_OPEN`): a scan opens the folders it lists, so in a
/// recursive watch each scan of a subfolder would announce that subfolder again and start the
/// next scan, for ever. Opening and reading change nothing; closing a file written to does. A
/// file leaving the top of an inbox (removed, or renamed away: every claim renames its file
/// out) leaves nothing to look at either: a waiting file that went is found gone at its next
/// look. Folders leaving, the work folder above all, stay worth a look: they are how a removed
/// recursive inbox is noticed (its own removal is reported only once nothing holds it).
fn worth_a_look(event: &notify::Event, inboxes: &[PathBuf]) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RemoveKind, RenameMode};
    let file_leaving = |path: &PathBuf| {
        path.parent()
            .is_some_and(|parent| inboxes.iter().any(|i| i == parent))
            && path.file_name() != Some(OsStr::new(crate::store::WORK_DIR))
    };
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Remove(RemoveKind::File)
        | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
            !event.paths.iter().all(file_leaving)
        }
        _ => true,
    }
}

/// How many candidates [`Tracker::ready`] looks at in one call: a large backlog found at start
/// is looked at in rounds, so the main loop hands out the first ready files (and serves events,
/// finished tasks and signals) between rounds instead of after `lstat`-ing every file.
const LOOKS_PER_ROUND: usize = 2_048;

/// Where a candidate is kept in [`Candidates`]: 4 bytes in the queues instead of its name.
type Id = u32;

/// Calls `each` with every admitted regular file under `folder` (the inbox, or one of its
/// subfolders) as it is listed: its path relative to the inbox and its full path. Subfolders
/// are entered only when the watch is recursive, never through a link, and never the work
/// folder or an excluded one. Names that are not valid UTF-8 are found too (see [`RelPath`]):
/// such a file must be refused, not ignored.
pub fn each_admitted_file(watch: &Watch, folder: &Path, mut each: impl FnMut(RelPath, PathBuf)) {
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
                Ok(t) if t.is_file() && watch.admits(&rel.text) => each(rel, path),
                _ => {}
            }
        }
    }
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
    fn a_file_leaving_an_inbox_is_not_worth_a_look_but_a_folder_or_the_inbox_leaving_is() {
        use notify::event::{
            AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind, RenameMode,
        };
        let inboxes = [PathBuf::from("/srv/inbox")];
        let event = |kind, path: &str| notify::Event::new(kind).add_path(PathBuf::from(path));
        let removed = EventKind::Remove(RemoveKind::File);
        let renamed_away = EventKind::Modify(ModifyKind::Name(RenameMode::From));
        for kind in [removed, renamed_away] {
            assert!(!worth_a_look(&event(kind, "/srv/inbox/a.zip"), &inboxes));
            for path in ["/srv/inbox", "/srv/inbox/.extdrop", "/srv/inbox/sub/a.zip"] {
                assert!(
                    worth_a_look(&event(kind, path), &inboxes),
                    "{kind:?} {path}"
                );
            }
        }
        let folder_gone = EventKind::Remove(RemoveKind::Folder);
        assert!(worth_a_look(
            &event(folder_gone, "/srv/inbox/.extdrop"),
            &inboxes
        ));
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
        ] {
            assert!(
                worth_a_look(&event(kind, "/srv/inbox/a.zip"), &inboxes),
                "{kind:?}"
            );
        }
        let opened = EventKind::Access(AccessKind::Open(AccessMode::Any));
        assert!(!worth_a_look(&event(opened, "/srv/inbox/a.zip"), &inboxes));
    }

    #[test]
    fn an_event_on_a_holding_folder_is_about_an_inbox_only_when_it_names_the_inbox_or_its_holder() {
        use notify::event::{EventKind, ModifyKind, RemoveKind, RenameMode};
        let inboxes = [PathBuf::from("/srv/drop/inbox"), PathBuf::from("/var/in")];
        let event = |kind, path: &str| notify::Event::new(kind).add_path(PathBuf::from(path));
        let removed = EventKind::Remove(RemoveKind::Folder);
        let moved_away = EventKind::Modify(ModifyKind::Name(RenameMode::From));
        for kind in [removed, moved_away] {
            for (path, inbox) in [
                ("/srv/drop/inbox", "/srv/drop/inbox"),
                ("/srv/drop", "/srv/drop/inbox"),
                ("/var/in", "/var/in"),
                ("/var", "/var/in"),
            ] {
                assert_eq!(
                    inbox_leaving(&event(kind, path), &inboxes),
                    Some(PathBuf::from(inbox)),
                    "{kind:?} {path}"
                );
            }
            for sibling in ["/srv/drop/done", "/srv/drop/inbox.old", "/var/log", "/srv"] {
                assert_eq!(
                    inbox_leaving(&event(kind, sibling), &inboxes),
                    None,
                    "{sibling}"
                );
            }
        }
    }

    /// The paths of the nudges `rx` gets, up to the first naming `marker` (a file made after
    /// the changes under test: inotify reports one watcher's events in order).
    fn nudges_until(rx: &mut mpsc::UnboundedReceiver<Nudge>, marker: &Path) -> Vec<PathBuf> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(Nudge::Paths(paths)) => {
                    let done = paths.iter().any(|p| p == marker);
                    seen.extend(paths);
                    if done {
                        return seen;
                    }
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(mpsc::error::TryRecvError::Empty) => {
                    assert!(
                        Instant::now() < deadline,
                        "no event for {marker:?}: {seen:?}"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("the watcher is gone: {e}"),
            }
        }
    }

    /// Arms a flat inbox in a folder of its own, removes its work folder, then makes a marker:
    /// whether the removal was reported before the marker.
    fn work_folder_removal_reported(holder_mode: u32) -> bool {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let holder = dir.path().join("holder");
        let inbox = holder.join("inbox");
        let work = inbox.join(crate::store::WORK_DIR);
        fs::create_dir_all(&work).expect("folders");
        fs::set_permissions(&holder, fs::Permissions::from_mode(holder_mode)).expect("chmod");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let armed = arm(&[tracker::tests::watch(&inbox, "1s")], tx).expect("armed");
        fs::remove_dir(&work).expect("remove the work folder");
        let marker = inbox.join("marker.zip");
        fs::write(&marker, b"m").expect("marker");
        let seen = nudges_until(&mut rx, &marker);
        drop(armed);
        fs::set_permissions(&holder, fs::Permissions::from_mode(0o755)).expect("chmod back");
        seen.contains(&work)
    }

    /// A flat inbox is not asked for entries leaving it (every claim is one): the kernel
    /// drops them, so not even the work folder's removal reaches the handler; the folder
    /// holding the inbox reports the inbox's own removal instead.
    #[test]
    fn a_flat_inbox_is_not_told_of_entries_leaving_it() {
        assert!(!work_folder_removal_reported(0o755));
    }

    /// Where the holding folder cannot be watched (it may be searched but not read, as a
    /// service user may meet it), the inbox is asked for every event, as before: its work
    /// folder's removal, a sign the inbox may be gone, is reported.
    #[test]
    fn a_flat_inbox_whose_holder_cannot_be_watched_reports_every_event() {
        // Run as root, the test takes the permission override out of the thread that arms
        // the watchers (and so out of notify's threads it starts).
        let reported = std::thread::spawn(|| {
            use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
            if let Ok(mut sets) = capabilities(None) {
                sets.effective -= CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH;
                set_capabilities(None, sets).expect("drop the permission override");
            }
            work_folder_removal_reported(0o311)
        })
        .join()
        .expect("the arming thread");
        assert!(reported);
    }

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
