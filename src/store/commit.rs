//! Group commit: the durability barriers of many files paid for by one `syncfs(2)`.
//!
//! Filing used to fsync each record, report and folder one at a time (about 14 fsyncs per
//! file); the disk, not the CPU, set the pace. Now a step that needs its changes on disk calls
//! [`barrier`] with the folders it changed. Barriers on one file system are served in rounds:
//! one `syncfs` per round, and every caller that arrived while a round was running is served by
//! the next one. A burst of files at the same step therefore shares one flush, with no timer and
//! no added wait when the disk is idle.
//!
//! Invariants:
//! - A barrier returns `Ok` only after a `syncfs` that *began after the barrier was asked for*
//!   has succeeded: everything the caller wrote or renamed before asking (file data, renames,
//!   removals, on every path of that file system) is on disk.
//! - A round that fails fails every caller it would have served (and, conservatively, callers
//!   of earlier rounds that have not yet looked): an error is never taken for durability.
//! - Rounds on different file systems are independent; a barrier over folders on two file
//!   systems waits for a round on each.
//!
//! Why `syncfs` rather than many fsyncs: on a journalling file system an fsync forces a journal
//! commit and a cache flush whatever it covers, so it costs the same for one file as for the
//! whole batch. The price is that a round also writes out data other processes have left dirty
//! on the same file system; README's "What is fsynced when" says so.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::fault;

/// How long a round waits for more callers before it syncs, when the file system is busy (a
/// round ended less than [`BUSY`] ago): in a burst, the files a few milliseconds behind share the
/// flush instead of paying for the next one. A lone file on an idle disk does not wait.
const GATHER: Duration = Duration::from_millis(2);

/// See [`GATHER`].
const BUSY: Duration = Duration::from_millis(10);

/// Rounds of `syncfs` on one file system.
#[derive(Default)]
struct Rounds {
    state: Mutex<State>,
    finished: Condvar,
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
    /// The latest round that failed, with its error.
    failed: Option<(u64, io::ErrorKind, String)>,
}

/// Makes everything written so far under `dirs` durable: one shared `syncfs` round per file
/// system among them. `point` is the fault point tests inject errors at (hit once per folder).
pub(super) fn barrier(point: &str, dirs: &[&Path]) -> io::Result<()> {
    let mut devices: Vec<(u64, &Path)> = Vec::with_capacity(dirs.len());
    for dir in dirs {
        fault::hit(point, dir)?;
        let dev = rustix::fs::stat(*dir).map_err(io::Error::from)?.st_dev;
        if !devices.iter().any(|(d, _)| *d == dev) {
            devices.push((dev, dir));
        }
    }
    devices
        .into_iter()
        .try_for_each(|(dev, dir)| rounds(dev).wait(|| sync_file_system(dir)))
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

impl Rounds {
    /// Waits for a round that begins after this call, leading it (running `sync`) when no
    /// round is running.
    fn wait(&self, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut sync = Some(sync);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // A round already running may have begun before our changes: the next one serves us.
        let wanted = state.begun + 1;
        state.queued += 1;
        loop {
            if state.done >= wanted {
                return match &state.failed {
                    Some((round, kind, message)) if *round >= wanted => {
                        Err(io::Error::new(*kind, message.clone()))
                    }
                    _ => Ok(()),
                };
            }
            if !state.running {
                // Lead: everyone waiting now, and everyone who comes while it gathers, is
                // served by this round (its number is taken after the gathering, so that they
                // want this one).
                state.running = true;
                if state.last.is_some_and(|last| last.elapsed() < BUSY) {
                    drop(state);
                    std::thread::sleep(GATHER);
                    state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                }
                state.begun += 1;
                let (round, callers) = (state.begun, std::mem::take(&mut state.queued));
                drop(state);
                tracing::debug!(round, callers, "group commit");
                // Tests kill the daemon here, with the round's other callers waiting on it
                // (`path=shared` picks a round that serves more than one).
                fault::crash_point(
                    "commit.round",
                    Path::new(if callers > 1 { "shared" } else { "single" }),
                );
                // The round ends whatever happens in it: should the leader unwind (a panic),
                // the round fails its callers instead of leaving them waiting for ever.
                let mut ending = RoundEnd {
                    rounds: self,
                    round,
                    result: Err((io::ErrorKind::Other, "the round was cut short".to_owned())),
                };
                // A caller leads at most once: the round it leads begins after its call.
                ending.result = sync
                    .take()
                    .map_or(Ok(()), |sync| sync())
                    .map_err(|e| (e.kind(), e.to_string()));
                drop(ending);
                state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            state = self.finished.wait(state).unwrap_or_else(|e| e.into_inner());
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
    }
}

/// One `syncfs` of the file system holding `dir`. (Its faults are injected per caller, at the
/// barrier's own point: a round is shared, and an injected failure must stay with the test
/// that asked for it.)
fn sync_file_system(dir: &Path) -> io::Result<()> {
    let folder = File::open(dir)?;
    rustix::fs::syncfs(&folder).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

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
                    barrier("test.sync", &[&path])
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

    /// Regression: a leader that panicked (a log line to a closed stderr did) left its round
    /// running for ever, and every later barrier on the file system waited for it.
    #[test]
    fn a_leader_that_panics_fails_its_round_and_the_next_one_runs() {
        let rounds = Rounds::default();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rounds.wait(|| panic!("the leader dies"))
        }));
        assert!(unwound.is_err());
        a_new_round_runs(&rounds);
    }

    #[test]
    fn a_failed_round_fails_its_callers_and_the_next_round_is_new() {
        let rounds = Rounds::default();
        let failed = rounds.wait(|| Err(io::Error::other("EIO")));
        assert!(failed.is_err(), "a failed round is not durability");
        a_new_round_runs(&rounds);
    }

    /// The next caller leads a round of its own, which succeeds.
    fn a_new_round_runs(rounds: &Rounds) {
        let mut ran = false;
        let next = rounds.wait(|| {
            ran = true;
            Ok(())
        });
        assert!(
            next.is_ok() && ran,
            "the next caller leads a round of its own"
        );
    }
}
