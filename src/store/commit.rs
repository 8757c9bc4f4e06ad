//! Group commit: the durability barriers of many files paid for together, in shared rounds.
//!
//! Filing used to fsync each record, report and folder one at a time (about 14 fsyncs per
//! file); the disk, not the CPU, set the pace. Now a step that needs its changes on disk calls
//! [`barrier`] with the folders it changed and the files it wrote. Barriers on one file system
//! are served in rounds: every caller that arrived while a round was running is served by the
//! next one, so a burst of files at the same step shares one flush, with no timer and no added
//! wait when the disk is idle.
//!
//! A round is one `syncfs(2)` of the file system: on a journalling file system an fsync forces
//! a journal commit and a cache flush whatever it covers, so one `syncfs` costs about what one
//! fsync does, for the whole batch. But `syncfs` also writes out whatever *other* writers left
//! dirty on that file system: right after someone wrote 400 MB there (a backlog copied in), the
//! first round took 0.8 s instead of a millisecond. So when the system holds more than
//! [`DIRTY_LIMIT`] of dirty data, a round instead fsyncs exactly the files and folders its
//! callers named (more fsyncs, none of them waiting for anyone else's data).
//!
//! Invariants:
//! - A barrier returns `Ok` only after a round that *began after the barrier was asked for*
//!   has succeeded: the folders and files the caller named (the renames and removals in those
//!   folders, the data of those files) are on disk — in a `syncfs` round, with everything else
//!   on the file system.
//! - A round that fails fails every caller it would have served (and, conservatively, callers
//!   of earlier rounds that have not yet looked): an error is never taken for durability.
//! - Rounds on different file systems are independent; a barrier over folders on two file
//!   systems waits for a round on each.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::fault;

/// How long a round waits for more callers before it syncs, when the file system is busy (a
/// round ended less than [`BUSY`] ago): in a burst, the files a few milliseconds behind share the
/// flush instead of paying for the next one. A lone file on an idle disk does not wait.
const GATHER: Duration = Duration::from_millis(2);

/// See [`GATHER`].
const BUSY: Duration = Duration::from_millis(10);

/// Above this much dirty data in the system (`Dirty:` in `/proc/meminfo`), a round fsyncs its
/// callers' files and folders one by one instead of running `syncfs` (see the module doc): about
/// a tenth of a second of writing for a modest disk.
const DIRTY_LIMIT: u64 = 64 << 20;

/// Rounds of barriers on one file system.
#[derive(Default)]
struct Rounds {
    state: Mutex<State>,
    /// Wakes blocking callers when a round ends.
    finished: Condvar,
    /// Wakes async callers when a round ends.
    finished_async: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// Rounds begun so far (the number of the latest).
    begun: u64,
    /// Rounds finished so far.
    done: u64,
    /// Whether a round is running now (gathering callers, or syncing).
    running: bool,
    /// When the last round ended.
    last: Option<Instant>,
    /// Callers waiting for the next round (all of them want the same one).
    queued: usize,
    /// The files and folders those callers named, for a round that fsyncs them one by one.
    named: Named,
    /// The latest round that failed, with its error.
    failed: Option<(u64, io::ErrorKind, String)>,
}

/// Files and folders to fsync, kept apart so that files go first (a folder's new entry must
/// never name data not yet written).
#[derive(Debug, Default)]
struct Named {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Named {
    fn extend(&mut self, other: Named) {
        self.files.extend(other.files);
        self.dirs.extend(other.dirs);
    }
}

/// Makes durable the changes in `dirs` (renames, removals, new entries) and the data of
/// `files` (each in one of `dirs`, or on the file system of the first): one shared round per
/// file system among them. `point` is the fault point tests inject errors at (hit once per
/// folder). The file system of a folder in `known` is taken from there instead of a `stat`
/// (see [`plan`]).
pub(super) fn barrier(
    point: &str,
    dirs: &[&Path],
    files: &[&Path],
    known: &[(&Path, u64)],
) -> io::Result<()> {
    plan(point, dirs, files, known)?
        .into_iter()
        .try_for_each(|(dev, any, named)| {
            rounds(dev).wait(named, |named, one_by_one| {
                sync_round(any, &named, one_by_one)
            })
        })
}

/// As [`barrier`], for a caller on the async runtime: its task waits, no thread does. A round
/// that none is running for is led from the blocking pool (one hand-off per round, not one
/// per caller), and serves blocking and async callers alike.
pub(super) async fn barrier_async(
    point: &str,
    dirs: &[&Path],
    files: &[&Path],
    known: &[(&Path, u64)],
) -> io::Result<()> {
    let planned: Vec<(u64, PathBuf, Named)> = plan(point, dirs, files, known)?
        .into_iter()
        .map(|(dev, any, named)| (dev, any.to_owned(), named))
        .collect();
    for (dev, any, named) in planned {
        rounds(dev).wait_async(any, named).await?;
    }
    Ok(())
}

/// Per file system: a path to `syncfs` it through, and everything named on it. A folder's file
/// system is `stat`ed unless the caller knows it (`known`: a claim's folders are all on the
/// file system of the file it renamed through them, since a rename does not cross one).
fn plan<'p>(
    point: &str,
    dirs: &[&'p Path],
    files: &[&'p Path],
    known: &[(&Path, u64)],
) -> io::Result<Vec<(u64, &'p Path, Named)>> {
    let mut wanted: Vec<(u64, &Path, Named)> = Vec::new();
    let mut dir_devices = Vec::with_capacity(dirs.len());
    for dir in dirs {
        fault::hit(point, dir)?;
        let dev = match known.iter().find(|(path, _)| path == dir) {
            Some((_, dev)) => *dev,
            None => rustix::fs::stat(*dir).map_err(io::Error::from)?.st_dev,
        };
        dir_devices.push((*dir, dev));
        round_on(&mut wanted, dev, dir).dirs.push(dir.to_path_buf());
    }
    for file in files {
        // A file is on its folder's file system: no `stat` of its own when that was listed.
        let listed = dir_devices
            .iter()
            .find(|(dir, _)| file.parent() == Some(*dir));
        let dev = match listed {
            Some((_, dev)) => *dev,
            None => rustix::fs::stat(*file).map_err(io::Error::from)?.st_dev,
        };
        round_on(&mut wanted, dev, file)
            .files
            .push(file.to_path_buf());
    }
    Ok(wanted)
}

/// What `barrier` names on the file system `dev` (`path` is one of its paths).
fn round_on<'a, 'p>(
    wanted: &'a mut Vec<(u64, &'p Path, Named)>,
    dev: u64,
    path: &'p Path,
) -> &'a mut Named {
    let at = match wanted.iter().position(|(d, _, _)| *d == dev) {
        Some(at) => at,
        None => {
            wanted.push((dev, path, Named::default()));
            wanted.len() - 1
        }
    };
    &mut wanted[at].2
}

/// The rounds of the file system `dev`.
fn rounds(dev: u64) -> Arc<Rounds> {
    static ALL: OnceLock<Mutex<HashMap<u64, Arc<Rounds>>>> = OnceLock::new();
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    all.entry(dev).or_default().clone()
}

impl State {
    /// Counts a caller in, with what it named; the round it waits for. A round already
    /// running may have begun before the caller's changes: the next one serves it.
    fn join(&mut self, named: Named) -> u64 {
        self.queued += 1;
        self.named.extend(named);
        self.begun + 1
    }

    /// The result for a caller waiting for round `wanted`, once that round has ended.
    fn result_for(&self, wanted: u64) -> Option<io::Result<()>> {
        (self.done >= wanted).then(|| match &self.failed {
            Some((round, kind, message)) if *round >= wanted => {
                Err(io::Error::new(*kind, message.clone()))
            }
            _ => Ok(()),
        })
    }
}

impl Rounds {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a round that begins after this call, leading it (running `sync` with what
    /// every caller of the round named) when no round is running.
    fn wait(
        &self,
        named: Named,
        sync: impl FnOnce(Named, bool) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut sync = Some(sync);
        let mut state = self.lock();
        let wanted = state.join(named);
        loop {
            if let Some(result) = state.result_for(wanted) {
                return result;
            }
            if !state.running {
                // A caller leads at most once: the round it leads begins after its call.
                state.running = true;
                state = self.lead(state, sync.take());
                continue;
            }
            state = self.finished.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// As [`Rounds::wait`], for an async caller: a round it must lead is led from the
    /// blocking pool, through `any` (a path on this file system).
    async fn wait_async(self: Arc<Self>, any: PathBuf, named: Named) -> io::Result<()> {
        let wanted = self.lock().join(named);
        loop {
            // Listening before looking: a round that ends in between still wakes this task.
            let ended = self.finished_async.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(result) = state.result_for(wanted) {
                    return result;
                }
                if !state.running {
                    state.running = true;
                    drop(state);
                    let lead = Lead(Some((self.clone(), any.clone())));
                    tokio::task::spawn_blocking(move || lead.run());
                }
            }
            ended.await;
        }
    }

    /// Leads one round (`state.running` is set): everyone waiting now, and everyone who comes
    /// while it gathers, is served by it (its number is taken after the gathering, so that
    /// they want this one). Returns the state locked again once the round has ended.
    fn lead<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        sync: Option<impl FnOnce(Named, bool) -> io::Result<()>>,
    ) -> MutexGuard<'a, State> {
        if state.last.is_some_and(|last| last.elapsed() < BUSY) {
            drop(state);
            std::thread::sleep(GATHER);
            state = self.lock();
        }
        state.begun += 1;
        let (round, callers) = (state.begun, std::mem::take(&mut state.queued));
        let named = std::mem::take(&mut state.named);
        drop(state);
        // The kind of round is chosen, and said, before the point where tests kill the daemon.
        let one_by_one = one_by_one_now();
        if one_by_one {
            let paths = named.files.len() + named.dirs.len();
            tracing::debug!(
                round,
                callers,
                paths,
                "group commit: much dirty data, fsyncing one by one"
            );
        } else {
            tracing::debug!(round, callers, "group commit");
        }
        // Tests kill the daemon here, with the round's other callers waiting on it
        // (`path=shared` picks a round that serves more than one).
        fault::crash_point(
            "commit.round",
            Path::new(if callers > 1 { "shared" } else { "single" }),
        );
        // The round ends whatever happens in it: should the leader unwind (a panic), the round
        // fails its callers instead of leaving them waiting for ever.
        let mut ending = RoundEnd {
            rounds: self,
            round,
            result: Err((io::ErrorKind::Other, "the round was cut short".to_owned())),
        };
        ending.result = sync
            .map_or(Ok(()), |sync| sync(named, one_by_one))
            .map_err(|e| (e.kind(), e.to_string()));
        drop(ending);
        self.lock()
    }
}

/// A round an async caller asked the blocking pool to lead. Dropped without running (the
/// runtime shutting down), it gives the lead back, so that no caller waits for a round that
/// never comes.
struct Lead(Option<(Arc<Rounds>, PathBuf)>);

impl Lead {
    fn run(mut self) {
        if let Some((rounds, any)) = self.0.take() {
            let state = rounds.lock();
            let sync = |named: Named, one_by_one| sync_round(&any, &named, one_by_one);
            drop(rounds.lead(state, Some(sync)));
        }
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if let Some((rounds, _)) = self.0.take() {
            rounds.lock().running = false;
            rounds.finished.notify_all();
            rounds.finished_async.notify_waiters();
        }
    }
}

/// Ends a round when dropped: records its result, lets the next round begin and wakes the
/// callers — also when the leader unwinds.
struct RoundEnd<'a> {
    rounds: &'a Rounds,
    round: u64,
    result: Result<(), (io::ErrorKind, String)>,
}

impl Drop for RoundEnd<'_> {
    fn drop(&mut self) {
        let mut state = self.rounds.state.lock().unwrap_or_else(|e| e.into_inner());
        state.running = false;
        state.done = self.round;
        state.last = Some(Instant::now());
        if let Err((kind, message)) = &self.result {
            state.failed = Some((self.round, *kind, message.clone()));
        }
        self.rounds.finished.notify_all();
        self.rounds.finished_async.notify_waiters();
    }
}

/// One round: a `syncfs` of the file system holding `any` — or, `one_by_one` (while the
/// system holds much dirty data, see [`one_by_one_now`]), an fsync of each of `named`, files
/// first. (Faults are
/// injected per caller, at the barrier's own point: a round is shared, and an injected failure
/// must stay with the test that asked for it.)
fn sync_round(any: &Path, named: &Named, one_by_one: bool) -> io::Result<()> {
    if one_by_one {
        match sync_each(named) {
            // A folder extdrop may write in but not list cannot be opened to be fsynced: a
            // `syncfs` covers it, and the rest, at the price this round meant to avoid.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => sync_file_system(any),
            other => other,
        }
    } else {
        sync_file_system(any)
    }
}

fn sync_file_system(any: &Path) -> io::Result<()> {
    let file = File::open(any)?;
    rustix::fs::syncfs(&file).map_err(io::Error::from)
}

/// fsyncs each file, then each folder, each once.
fn sync_each(named: &Named) -> io::Result<()> {
    let each = |paths: &[PathBuf]| {
        let mut paths: Vec<&PathBuf> = paths.iter().collect();
        paths.sort();
        paths.dedup();
        paths
            .into_iter()
            .try_for_each(|path| match File::open(path) {
                Ok(file) => {
                    #[cfg(test)]
                    tests::synced(path);
                    file.sync_all()
                }
                // Gone since it was named (an inbox removed): nothing of it is left to keep, and
                // the callers sharing the round must not fail for it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            })
    };
    each(&named.files)?;
    each(&named.dirs)
}

/// Whether a round beginning now fsyncs one by one: the system holds at least
/// [`dirty_limit`] of dirty data. (At the limit counts as above it, so that a limit of 0 means
/// every round: the kernel folds its per-CPU counts into `Dirty:` late, and it may read 0
/// right after a write.)
fn one_by_one_now() -> bool {
    dirty_bytes().is_some_and(|dirty| dirty >= dirty_limit())
}

/// [`DIRTY_LIMIT`]; in debug builds, `EXTDROP_DIRTY_LIMIT` (bytes) when set, so that tests
/// can run every round one by one (`0`) — as `EXTDROP_FAULTS`, a seam release builds lack.
fn dirty_limit() -> u64 {
    #[cfg(test)]
    if tests::ONE_BY_ONE.load(std::sync::atomic::Ordering::Relaxed) {
        return 0;
    }
    if cfg!(debug_assertions)
        && let Some(limit) = std::env::var("EXTDROP_DIRTY_LIMIT")
            .ok()
            .and_then(|v| v.parse().ok())
    {
        return limit;
    }
    DIRTY_LIMIT
}

/// The system's dirty page-cache data waiting to be written (`Dirty:` of `/proc/meminfo`),
/// `None` where it cannot be read (then `syncfs` it is).
///
/// `/proc/meminfo` is opened once and read whole at offset 0 at every round (the kernel
/// writes it afresh for each read from the start): one `pread` per round instead of the open,
/// `statx`, the doubling reads of `read_to_string` and the close, about ten calls.
fn dirty_bytes() -> Option<u64> {
    use std::os::unix::fs::FileExt;
    static MEMINFO: OnceLock<Option<File>> = OnceLock::new();
    let file = MEMINFO
        .get_or_init(|| File::open("/proc/meminfo").ok())
        .as_ref()?;
    // About 1.5 KiB today; `Dirty:` is in its first lines, so even a longer one is read far
    // enough.
    let mut buf = [0u8; 8192];
    let read = file.read_at(&mut buf, 0).ok()?;
    dirty_in(&String::from_utf8_lossy(&buf[..read]))
}

fn dirty_in(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("Dirty:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Makes every round of this test process fsync one by one (safe for the other tests
    /// running beside: both kinds of round keep every guarantee).
    pub(in crate::store) static ONE_BY_ONE: AtomicBool = AtomicBool::new(false);

    /// Every path a one-by-one round has fsynced, in this test process.
    static SYNCED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub(super) fn synced(path: &Path) {
        SYNCED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.to_owned());
    }

    /// Whether a one-by-one round has fsynced `path`.
    pub(in crate::store) fn was_synced(path: &Path) -> bool {
        SYNCED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|p| p == path)
    }

    #[test]
    fn many_barriers_at_once_share_rounds_and_all_return() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let dev = rustix::fs::stat(dir.path())?.st_dev;
        let before = rounds(dev).state.lock().map(|s| s.done).unwrap_or(0);
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let path = dir.path().to_owned();
                std::thread::spawn(move || {
                    std::fs::write(path.join(format!("f{i}")), b"x")?;
                    barrier("test.sync", &[&path], &[], &[])
                })
            })
            .collect();
        for thread in threads {
            thread.join().map_err(|_| "a thread panicked")??;
        }
        let after = rounds(dev).state.lock().map(|s| s.done).unwrap_or(0);
        // Other tests may share the file system; this one alone asked 32 times.
        assert!(after > before, "no round ran");
        Ok(())
    }

    fn named_dir(path: &str) -> Named {
        Named {
            files: Vec::new(),
            dirs: vec![PathBuf::from(path)],
        }
    }

    /// A round that fsyncs one by one must cover what every caller it serves named: the
    /// leader is handed the union, its own and the others' gathered while it waited.
    #[test]
    fn a_round_is_handed_what_every_caller_it_serves_named() {
        let rounds = Arc::new(Rounds::default());
        let seen = Arc::new(Mutex::new(Vec::<Vec<PathBuf>>::new()));
        let (entered, release) = (
            Arc::new(std::sync::Barrier::new(2)),
            Arc::new(Mutex::new(())),
        );
        // A first round holds the rounds busy while three callers queue for the next.
        let held = release.lock().unwrap_or_else(|e| e.into_inner());
        let first = {
            let (rounds, entered, release) = (rounds.clone(), entered.clone(), release.clone());
            std::thread::spawn(move || {
                rounds.wait(named_dir("/first"), |_, _| {
                    entered.wait();
                    drop(release.lock());
                    Ok(())
                })
            })
        };
        entered.wait();
        let queued: Vec<_> = ["/a", "/b", "/c"]
            .into_iter()
            .map(|name| {
                let (rounds, seen) = (rounds.clone(), seen.clone());
                std::thread::spawn(move || {
                    rounds.wait(named_dir(name), |named, _| {
                        seen.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(named.dirs);
                        Ok(())
                    })
                })
            })
            .collect();
        // All three are queued once the state says so; then the first round may end.
        while rounds.state.lock().map(|s| s.queued).unwrap_or(0) < 3 {
            std::thread::yield_now();
        }
        drop(held);
        assert!(first.join().is_ok_and(|r| r.is_ok()));
        for caller in queued {
            assert!(caller.join().is_ok_and(|r| r.is_ok()));
        }
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut named: Vec<PathBuf> = seen.iter().flatten().cloned().collect();
        named.sort();
        assert_eq!(seen.len(), 1, "one round served the three: {seen:?}");
        assert_eq!(named, ["/a", "/b", "/c"].map(PathBuf::from));
    }

    #[test]
    fn fsyncing_one_by_one_covers_files_and_folders_and_skips_what_is_gone()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("record");
        std::fs::write(&file, b"x")?;
        sync_each(&Named {
            files: vec![file.clone(), file.clone()],
            dirs: vec![dir.path().to_owned()],
        })?;
        sync_each(&Named {
            files: vec![file],
            dirs: vec![dir.path().join("gone")],
        })?;
        Ok(())
    }

    /// A folder extdrop may write in but not list (a drop box, mode 0o300) cannot be opened to
    /// be fsynced: a one-by-one round then syncs the whole file system rather than failing
    /// every caller it serves. Root is never refused, so the test takes away, from its own
    /// thread only, the two capabilities that bypass the check.
    #[test]
    fn a_folder_that_cannot_be_listed_is_synced_with_its_file_system()
    -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let drop_box = dir.path().join("done");
        std::fs::create_dir(&drop_box)?;
        std::fs::set_permissions(&drop_box, std::fs::Permissions::from_mode(0o300))?;
        let named = Named {
            files: Vec::new(),
            dirs: vec![drop_box.clone()],
        };
        // Capabilities belong to a thread: the tests running beside keep theirs.
        let (alone, round) = std::thread::scope(|s| {
            s.spawn(|| {
                without_permission_override()?;
                Ok::<_, io::Error>((sync_each(&named), sync_round(dir.path(), &named, true)))
            })
            .join()
        })
        .map_err(|_| "the thread panicked")??;
        std::fs::set_permissions(&drop_box, std::fs::Permissions::from_mode(0o700))?;
        assert_eq!(
            alone.err().map(|e| e.kind()),
            Some(io::ErrorKind::PermissionDenied),
            "fsyncing the folder itself is refused, so the fallback is what is tested"
        );
        round?;
        Ok(())
    }

    /// Takes `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH` out of this thread's effective set.
    fn without_permission_override() -> io::Result<()> {
        use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
        let mut sets = capabilities(None)?;
        sets.effective -= CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH;
        set_capabilities(None, sets)?;
        Ok(())
    }

    #[test]
    fn dirty_data_is_read_from_meminfo() {
        let text = "MemTotal:       24000000 kB\nDirty:             424460 kB\nWriteback:             0 kB\n";
        assert_eq!(dirty_in(text), Some(424_460 * 1024));
        assert_eq!(dirty_in("MemTotal: 1 kB\n"), None);
        assert!(
            dirty_bytes().is_some(),
            "this is Linux: /proc/meminfo has Dirty"
        );
        assert!(
            dirty_bytes().is_some(),
            "read again from its start through the descriptor kept open"
        );
    }

    /// Regression: a leader that panicked (a log line to a closed stderr did) left its round
    /// running for ever, and every later barrier on the file system waited for it.
    #[test]
    fn a_leader_that_panics_fails_its_round_and_the_next_one_runs() {
        let rounds = Rounds::default();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rounds.wait(Named::default(), |_, _| panic!("the leader dies"))
        }));
        assert!(unwound.is_err());
        a_new_round_runs(&rounds);
    }

    #[test]
    fn a_failed_round_fails_its_callers_and_the_next_round_is_new() {
        let rounds = Rounds::default();
        let failed = rounds.wait(Named::default(), |_, _| Err(io::Error::other("EIO")));
        assert!(failed.is_err(), "a failed round is not durability");
        a_new_round_runs(&rounds);
    }

    #[test]
    fn a_folder_whose_file_system_is_known_is_not_looked_at()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        // Gone: a `stat` of it would fail, so a plan that succeeds did not look.
        let gone = dir.path().join("gone");
        let here = dir.path();
        let dev = rustix::fs::stat(here)?.st_dev;
        let record = gone.join("record");
        let planned = plan("test.sync", &[&gone, here], &[&record], &[(&gone, dev)])?;
        assert_eq!(planned.len(), 1, "one file system, one round");
        let (planned_dev, _, named) = &planned[0];
        assert_eq!(*planned_dev, dev);
        assert_eq!(named.dirs, [gone.clone(), here.to_owned()]);
        assert_eq!(named.files, std::slice::from_ref(&record));
        assert!(
            plan("test.sync", &[&gone], &[], &[]).is_err(),
            "a folder not known is looked at, and a look that fails is an error"
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_and_blocking_barriers_at_once_share_rounds_and_all_return()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let rounds = Arc::new(Rounds::default());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..32 {
            let (rounds, path) = (rounds.clone(), dir.path().to_owned());
            if i % 4 == 0 {
                // A blocking caller, as the resume and `retry` are.
                tasks.spawn_blocking(move || {
                    rounds.wait(named_dir(&path.to_string_lossy()), |_, _| {
                        sync_file_system(&path)
                    })
                });
            } else {
                tasks.spawn(async move {
                    let named = named_dir(&path.to_string_lossy());
                    rounds.wait_async(path, named).await
                });
            }
        }
        while let Some(joined) = tasks.join_next().await {
            joined??;
        }
        let state = rounds.lock();
        assert!(!state.running && state.queued == 0, "no round left running");
        assert!(
            state.done < 32,
            "{} rounds for 32 callers: none shared",
            state.done
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_async_callers_failed_round_fails_it_and_the_next_round_is_new() {
        let rounds = Arc::new(Rounds::default());
        // Under a file, not a folder: opening it fails (ENOTDIR), whichever kind of round
        // runs (a `syncfs` through it, or an fsync of it).
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let broken = file.path().join("x");
        let named = Named {
            files: vec![broken.clone()],
            dirs: Vec::new(),
        };
        let failed = rounds.clone().wait_async(broken, named).await;
        assert!(failed.is_err(), "a failed round is not durability");
        let here = std::env::temp_dir();
        let next = rounds.clone().wait_async(here, Named::default()).await;
        assert!(next.is_ok(), "the next round is new: {next:?}");
    }

    #[test]
    fn a_lead_that_never_runs_gives_the_lead_back() {
        let rounds = Arc::new(Rounds::default());
        // As an async caller does before it hands the round to the blocking pool, which drops
        // the task unrun when the runtime shuts down.
        rounds.lock().running = true;
        drop(Lead(Some((rounds.clone(), std::env::temp_dir()))));
        assert!(!rounds.lock().running, "the lead is given back");
        a_new_round_runs(&rounds);
    }

    /// The next caller leads a round of its own, which succeeds.
    fn a_new_round_runs(rounds: &Rounds) {
        let mut ran = false;
        let next = rounds.wait(Named::default(), |_, _| {
            ran = true;
            Ok(())
        });
        assert!(
            next.is_ok() && ran,
            "the next caller leads a round of its own"
        );
    }
}
