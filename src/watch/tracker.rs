//! The tracker: every candidate of every inbox, kept once and compact, and when each is due
//! for a look or ready (see [`Tracker`] for the invariants and its memory note).

use super::*;

/// Slots per chunk of [`Candidates`]: the store grows a chunk at a time, never copying what it
/// holds (a doubling `Vec` would need both copies at once, at the worst moment).
const CHUNK: usize = 4_096;

/// A candidate with what identifies it: 56 bytes.
#[derive(Debug)]
struct Slot {
    /// Its path relative to its watch's inbox, as the file system spells it.
    name: Box<OsStr>,
    /// Its watch's index in [`Tracker::watches`].
    watch: u32,
    candidate: Candidate,
}

/// The tracker's candidates, each kept once, found by watch and name. Compact on purpose (see
/// [`Tracker`]'s memory note): slots in fixed chunks reused through a free list, and an index
/// from a 64-bit hash of the watch and name to the slot; the rare names whose hash is taken
/// by another name are indexed by name in `collided`.
#[derive(Debug, Default)]
struct Candidates {
    chunks: Vec<Vec<Option<Slot>>>,
    free: Vec<Id>,
    by_hash: HashMap<u64, Id>,
    collided: HashMap<(u32, Box<OsStr>), Id>,
    hasher: std::hash::RandomState,
    /// Per watch: how many.
    counts: Vec<usize>,
}

impl Candidates {
    fn new(watches: usize) -> Candidates {
        Candidates {
            counts: vec![0; watches],
            ..Candidates::default()
        }
    }

    fn hash(&self, watch: u32, name: &OsStr) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((watch, name))
    }

    fn len(&self) -> usize {
        self.counts.iter().sum()
    }

    fn slot(&self, id: Id) -> Option<&Slot> {
        let id = id as usize;
        self.chunks.get(id / CHUNK)?.get(id % CHUNK)?.as_ref()
    }

    fn slot_mut(&mut self, id: Id) -> Option<&mut Slot> {
        let id = id as usize;
        self.chunks
            .get_mut(id / CHUNK)?
            .get_mut(id % CHUNK)?
            .as_mut()
    }

    fn find(&self, watch: u32, name: &OsStr) -> Option<Id> {
        let id = *self.by_hash.get(&self.hash(watch, name))?;
        match self.slot(id) {
            Some(slot) if slot.watch == watch && *slot.name == *name => Some(id),
            _ => self.collided.get(&(watch, Box::from(name))).copied(),
        }
    }

    /// Keeps a candidate not kept yet (see [`Candidates::find`]).
    fn insert(&mut self, watch: u32, name: &OsStr, candidate: Candidate) -> Id {
        let slot = Slot {
            name: Box::from(name),
            watch,
            candidate,
        };
        let id = match self.free.pop() {
            Some(id) => {
                let id_ = id as usize;
                self.chunks[id_ / CHUNK][id_ % CHUNK] = Some(slot);
                id
            }
            None => {
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                let full = (self.chunks.len() - 1) * CHUNK;
                let last = self.chunks.len() - 1;
                let chunk = &mut self.chunks[last];
                chunk.push(Some(slot));
                // Ids are u32: four thousand million candidates would not fit in memory anyway.
                (full + chunk.len() - 1) as Id
            }
        };
        let hash = self.hash(watch, name);
        if let Some(taken) = self.by_hash.insert(hash, id) {
            // Another name has this hash: it keeps its place, this one goes by name.
            self.by_hash.insert(hash, taken);
            self.collided.insert((watch, Box::from(name)), id);
        }
        self.counts[watch as usize] += 1;
        id
    }

    fn remove(&mut self, id: Id) -> Option<Slot> {
        let index = id as usize;
        let slot = self
            .chunks
            .get_mut(index / CHUNK)?
            .get_mut(index % CHUNK)?
            .take()?;
        let hash = self.hash(slot.watch, &slot.name);
        if self.by_hash.get(&hash) == Some(&id) {
            self.by_hash.remove(&hash);
        } else {
            self.collided.remove(&(slot.watch, slot.name.clone()));
        }
        self.counts[slot.watch as usize] -= 1;
        self.free.push(id);
        if self.len() == 0 {
            // The backlog is gone: give its memory back.
            *self = Candidates::new(self.counts.len());
        } else {
            compact_map(&mut self.by_hash);
        }
        Some(slot)
    }

    fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.chunks.iter().flatten().flatten()
    }
}

/// What the tracker knows of a file in an inbox: 32 bytes. Compact on purpose (see
/// [`Tracker`]'s memory note): no path, no watch, no display text — those are rebuilt from the
/// key when the file is handed out — and times in 8 bytes rather than 16.
#[derive(Debug)]
struct Candidate {
    /// `u64::MAX` (no file's size) while never looked at.
    size: u64,
    /// The modification time, as [`wall`] writes it; only compared.
    mtime: i64,
    /// Since when unchanged, as [`since_epoch`] writes it; [`READY`] once ready (and queued
    /// in [`Tracker`]'s `ready`, waiting for an upload slot).
    unchanged_since: u64,
    /// When first noticed, as [`wall`] writes it.
    first_seen: i64,
}

/// [`Candidate::unchanged_since`] of a ready candidate: no instant the tracker meets.
const READY: u64 = u64::MAX;

/// The instant the times of [`Candidate`]s count from: an hour before the first tracker's
/// making, so that a file found at start-up already unchanged for its settle (by its
/// modification time, see [`settled_already`]) can be dated before it.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
    })
}

/// How long before now a file was last written, by its modification time, counted towards
/// its settle (at most `settle`; nanoseconds): a finished file moved into the inbox, or found
/// there at start, has been unchanged since it was last written, not only since it was seen,
/// and is ready at its first look. Zero for a watch whose files' times cannot be trusted (see
/// [`Tracker::new`]), and for a time in the future.
fn settled_already(trusted: bool, mtime: Option<SystemTime>, settle: Duration) -> u64 {
    // The kernel stamps files from a clock that lags by up to a tick (10 ms at HZ=100): the
    // write may be that much younger than its time says.
    const TICK: Duration = Duration::from_millis(20);
    let age = mtime
        .filter(|_| trusted)
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .map_or(Duration::ZERO, |age| age.saturating_sub(TICK));
    u64::try_from(age.min(settle).as_nanos()).unwrap_or(0)
}

/// `t` as nanoseconds since [`epoch`] (584 years fit; an instant before it counts as it).
fn since_epoch(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(READY - 1)
}

/// A wall-clock time as nanoseconds since the Unix epoch (negative before it, saturated past
/// ±292 years); `i64::MIN` for none.
fn wall(t: Option<SystemTime>) -> i64 {
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    match t.map(|t| t.duration_since(SystemTime::UNIX_EPOCH)) {
        None => i64::MIN,
        Some(Ok(after)) => nanos(after),
        Some(Err(before)) => -nanos(before.duration()),
    }
}

/// The time [`wall`] wrote as `n` (not `i64::MIN`).
fn from_wall(n: i64) -> SystemTime {
    let d = Duration::from_nanos(n.unsigned_abs());
    if n >= 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    }
}

impl Candidate {
    /// A candidate first noticed now: `seen` is its size and modification time when the
    /// caller has them (its settle started `already(mtime)` nanoseconds ago, see
    /// [`settled_already`]), `None` for one never looked at.
    fn new(
        seen: Option<(u64, Option<SystemTime>)>,
        already: impl FnOnce(Option<SystemTime>) -> u64,
        now: Instant,
    ) -> Candidate {
        // `u64::MAX` is no file's size, so the first look records the file and starts its
        // settle.
        let (size, mtime, already) = seen.map_or((u64::MAX, None, 0), |(s, m)| (s, m, already(m)));
        Candidate {
            size,
            mtime: wall(mtime),
            unchanged_since: since_epoch(now).saturating_sub(already),
            first_seen: wall(Some(SystemTime::now())),
        }
    }

    fn is_ready(&self) -> bool {
        self.unchanged_since == READY
    }

    /// Records what a look or an event saw; a change starts its settle again, `already(mtime)`
    /// nanoseconds before `now` (see [`settled_already`]; not asked when nothing changed).
    /// Returns whether it changed.
    fn saw(
        &mut self,
        size: u64,
        mtime: Option<SystemTime>,
        already: impl FnOnce(Option<SystemTime>) -> u64,
        now: Instant,
    ) -> bool {
        let wall_mtime = wall(mtime);
        let changed = (size, wall_mtime) != (self.size, self.mtime);
        if changed {
            self.unchanged_since = since_epoch(now).saturating_sub(already(mtime));
            (self.size, self.mtime) = (size, wall_mtime);
        }
        changed
    }

    fn first_seen(&self) -> SystemTime {
        from_wall(self.first_seen)
    }

    /// When this candidate is next looked at (as [`since_epoch`] writes it): at once when
    /// never looked at, else when it will have been unchanged for `settle`.
    fn due(&self, settle: Duration) -> u64 {
        if self.size == u64::MAX {
            self.unchanged_since
        } else {
            let settle = u64::try_from(settle.as_nanos()).unwrap_or(READY);
            self.unchanged_since.saturating_add(settle).min(READY - 1)
        }
    }
}

/// The candidates of all inboxes and their readiness, and the ready files waiting for an
/// upload slot.
///
/// Memory: a waiting file costs one compact entry — a [`Slot`] in [`Candidates`] (its name
/// relative to the inbox, once, and a 32-byte [`Candidate`]), its index entry, and its 4-byte
/// id in exactly one queue (`unseen` until its first look, `due` while it settles, `ready`
/// once ready) — about 150 bytes, whatever the backlog. A [`Found`] (full path, display name,
/// watch) is built, and its path held in [`Busy`], only when it is handed out with a slot
/// ([`Tracker::take_ready`]).
///
/// Invariants:
/// - Every candidate not ready has exactly one entry, in `unseen` (found by a scan, never
///   looked at: due at once, first found first) or in `due` (at or before the time it is due:
///   an event that restarts its settle leaves the entry early, and it is put back at the
///   later time when it comes up), so the earliest look is found at the queues' heads, not by
///   a search.
/// - Every ready candidate has exactly one entry in `ready`, in the order it became ready
///   (arrival order); it is no longer looked at, and events about it change nothing.
/// - A ready file is still unclaimed in its inbox and counted by [`Tracker::waiting`]; once
///   handed out it leaves the tracker and its path is in [`Busy`] until its handler lets go,
///   and a path in [`Busy`] never becomes a candidate: a path is never handed out twice.
#[derive(Debug)]
pub struct Tracker {
    watches: Vec<Arc<Watch>>,
    /// Per watch, whether its files' modification times count towards their settle (see
    /// [`Tracker::new`]).
    trusted: Vec<bool>,
    /// Every candidate, ready or not.
    candidates: Candidates,
    /// Candidates found by a scan and never looked at, in the order found.
    unseen: VecDeque<Id>,
    /// Candidates settling, by when they are next due for a look, earliest first.
    due: BinaryHeap<Reverse<(u64, Id)>>,
    /// Ready candidates waiting for an upload slot, in the order they became ready.
    ready: VecDeque<Id>,
    busy: Busy,
}

impl Tracker {
    /// A tracker for these watches; `busy` is shared with the handlers.
    ///
    /// A file's modification time counts towards its settle only in an inbox watched by
    /// inotify on a local file system: a polled inbox is usually written by other hosts,
    /// whose clocks (and a network file system's times) need not agree with this one's, so
    /// there a file is unchanged for `settle` only once seen so.
    pub fn new(watches: Vec<Arc<Watch>>, busy: Busy) -> Tracker {
        // Set before any candidate's time counts from it.
        epoch();
        let trusted = watches
            .iter()
            .map(|w| !(w.poll_set && w.poll) && super::remote_file_system(&w.inbox).is_none())
            .collect();
        Tracker {
            candidates: Candidates::new(watches.len()),
            trusted,
            watches,
            unseen: VecDeque::new(),
            due: BinaryHeap::new(),
            ready: VecDeque::new(),
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
    /// it will have been unchanged for its `settle` (possibly a little earlier, after an event
    /// restarted it). `None` when no candidate waits for a look. Constant time.
    pub fn next_check(&self) -> Option<Instant> {
        let unseen = self.unseen.front().map(|id| {
            self.candidates.slot(*id).map_or_else(
                || since_epoch(Instant::now()),
                |s| s.candidate.unchanged_since,
            )
        });
        let settling = self.due.peek().map(|Reverse((due, _))| *due);
        let due = unseen.into_iter().chain(settling).min()?;
        Some(epoch() + Duration::from_nanos(due))
    }

    /// Whether no file waits: none settling, none ready.
    pub fn is_empty(&self) -> bool {
        self.candidates.len() == 0
    }

    /// How many files wait in the inboxes: settling, or ready and waiting for an upload slot
    /// (files handed out and not yet claimed are in [`Busy`], not here).
    pub fn waiting(&self) -> usize {
        self.candidates.len()
    }

    /// Whether a ready file waits for an upload slot.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Per watch (in the order of [`Tracker::watches`]): files waiting in the inbox — not yet
    /// ready, ready and waiting for an upload slot, or handed out and not yet claimed — and
    /// when the oldest was first seen.
    pub fn waiting_per_watch(&self) -> Vec<(u64, Option<SystemTime>)> {
        // One pass over the candidates for every watch's oldest.
        let mut oldest: Vec<Option<i64>> = vec![None; self.watches.len()];
        for slot in self.candidates.iter() {
            if let Some(o) = oldest.get_mut(slot.watch as usize) {
                let seen = slot.candidate.first_seen;
                *o = Some(o.map_or(seen, |o| o.min(seen)));
            }
        }
        self.watches
            .iter()
            .zip(&self.candidates.counts)
            .zip(oldest)
            .map(|((w, count), oldest)| {
                let (n, busy_oldest) = self.busy.under(&w.inbox);
                let oldest = oldest.map(from_wall).into_iter().chain(busy_oldest).min();
                (n + *count as u64, oldest)
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
        self.scan_folder(index, &watch, &watch.inbox);
    }

    /// Notes the files under `folder` as they are listed, never holding the list.
    fn scan_folder(&mut self, index: usize, watch: &Watch, folder: &Path) {
        each_admitted_file(watch, folder, |rel, path| {
            self.note_file(index, &path, rel, None);
        });
    }

    /// Notes a path an event named: a file becomes a candidate, a new folder is scanned.
    pub fn note(&mut self, path: &Path) {
        let Some(index) = self.owner(path) else {
            return;
        };
        let watch = self.watches[index].clone();
        let Some(rel) = relative(&watch, path) else {
            return;
        };
        if !watch.recursive && rel.text.contains('/') {
            return;
        }
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() && watch.recursive && admits_folder(&watch, &rel.text) => {
                self.scan_folder(index, &watch, path);
            }
            Ok(meta) if meta.is_file() => self.note_file(index, path, rel, Some(&meta)),
            _ => {}
        }
    }

    /// Notes a file of watch `index`; `meta` is its `lstat` when the caller has one (an
    /// event), so that its settle starts now and a change an event reports restarts it at
    /// once, rather than at the candidate's next look.
    fn note_file(&mut self, index: usize, path: &Path, rel: RelPath, meta: Option<&fs::Metadata>) {
        let Some(watch) = self.watches.get(index) else {
            return;
        };
        let Ok(name) = path.strip_prefix(&watch.inbox) else {
            return;
        };
        let name = name.as_os_str();
        let seen = meta.map(|m| (m.len(), m.modified().ok()));
        let (trusted, settle) = (self.trusted.get(index) == Some(&true), watch.settle);
        let already = |mtime| settled_already(trusted, mtime, settle);
        let now = Instant::now();
        // Watches are few: their indexes fit.
        let w = index as u32;
        if let Some(id) = self.candidates.find(w, name) {
            // A ready file is no longer looked at (see the invariants); its entry in `due`
            // (for one settling) is put back at the new time when it comes up.
            if let Some((size, mtime)) = seen
                && let Some(slot) = self.candidates.slot_mut(id)
                && !slot.candidate.is_ready()
            {
                slot.candidate.saw(size, mtime, already, now);
            }
            return;
        }
        if !watch.admits(&rel.text) || self.busy.contains(path) {
            return;
        }
        let mut candidate = Candidate::new(seen, already, now);
        let due = candidate.due(watch.settle);
        // The event's `lstat` found it unchanged for its settle already (a finished file
        // moved in): ready without a second look.
        let ready = seen.is_some() && due <= since_epoch(now);
        if ready {
            candidate.unchanged_since = READY;
        }
        let id = self.candidates.insert(w, name, candidate);
        match seen {
            _ if ready => self.ready.push_back(id),
            Some(_) => self.due.push(Reverse((due, id))),
            None => self.unseen.push_back(id),
        }
    }

    /// The index of the watch whose inbox holds `path` (the longest inbox that is a prefix).
    fn owner(&self, path: &Path) -> Option<usize> {
        self.watches
            .iter()
            .enumerate()
            .filter(|(_, w)| path.starts_with(&w.inbox) && path != w.inbox)
            .max_by_key(|(_, w)| w.inbox.as_os_str().len())
            .map(|(i, _)| i)
    }

    /// Looks at the candidates due by `now` (see [`Tracker::next_check`]), at most
    /// [`LOOKS_PER_ROUND`] of them (the rest stay due, so [`Tracker::next_check`] says to come
    /// back at once), and queues those unchanged for `settle` as ready, for
    /// [`Tracker::take_ready`]. Files that vanished or stopped being regular files are
    /// forgotten. A candidate not yet due is not looked at: a change it meets before then is
    /// seen at its look, which then starts its settle again. Returns how many became ready.
    ///
    /// Settling candidates are looked at before the first looks of those a scan found: only
    /// they can become ready, so a large backlog found at start begins to flow after one
    /// `settle`, not after every file of it has been looked at once.
    pub fn ready(&mut self, now: Instant) -> usize {
        let mut looks = 0;
        let mut became = 0;
        let at = since_epoch(now);
        while looks < LOOKS_PER_ROUND
            && let Some(Reverse((due, _))) = self.due.peek()
            && *due <= at
        {
            let Some(Reverse((_, key))) = self.due.pop() else {
                break;
            };
            let (looked, ready) = self.look(key, now);
            looks += usize::from(looked);
            became += usize::from(ready);
        }
        while looks < LOOKS_PER_ROUND
            && let Some(key) = self.unseen.pop_front()
        {
            let (looked, ready) = self.look(key, now);
            looks += usize::from(looked);
            became += usize::from(ready);
        }
        compact_heap(&mut self.due);
        compact_deque(&mut self.unseen);
        became
    }

    /// Looks at the candidate `key`, just taken from its queue, if it is due by `now`, and
    /// puts it where it belongs next: in `due` (not due yet, or settling), in `ready`, or
    /// nowhere (gone). Returns whether it was looked at (an `lstat`) and whether it is ready.
    fn look(&mut self, id: Id, now: Instant) -> (bool, bool) {
        let Some(slot) = self.candidates.slot_mut(id) else {
            return (false, false); // cannot happen (see the invariants); nothing to look at
        };
        let watch = &self.watches[slot.watch as usize];
        let settle = watch.settle;
        let trusted = self.trusted.get(slot.watch as usize) == Some(&true);
        let c = &mut slot.candidate;
        let at = since_epoch(now);
        if c.due(settle) > at {
            // An event restarted its settle since this entry was made.
            self.due.push(Reverse((c.due(settle), id)));
            return (false, false);
        }
        let meta = match fs::symlink_metadata(watch.inbox.join(&*slot.name)) {
            Ok(meta) if meta.is_file() => meta,
            _ => {
                self.candidates.remove(id);
                return (true, false);
            }
        };
        c.saw(
            meta.len(),
            meta.modified().ok(),
            |mtime| settled_already(trusted, mtime, settle),
            now,
        );
        // A zero settle means "ready when seen": no second look needed.
        if c.due(settle) > at {
            self.due.push(Reverse((c.due(settle), id)));
            return (true, false);
        }
        c.unchanged_since = READY;
        self.ready.push_back(id);
        (true, true)
    }

    /// Hands out the ready file first in line, for a handler that has an upload slot: from
    /// now on it is no longer the tracker's, and its path is held in [`Busy`] until the
    /// handler lets go of it. `None` when no file is ready.
    pub fn take_ready(&mut self) -> Option<Found> {
        while let Some(id) = self.ready.pop_front() {
            compact_deque(&mut self.ready);
            let Some(slot) = self.candidates.remove(id) else {
                continue; // cannot happen (see the invariants)
            };
            let watch = &self.watches[slot.watch as usize];
            let path = watch.inbox.join(&*slot.name);
            let Some(rel) = relative(watch, &path) else {
                continue; // cannot happen: the name is not empty
            };
            let first_seen = slot.candidate.first_seen();
            self.busy.insert(path.clone(), first_seen);
            return Some(Found {
                watch: watch.clone(),
                rel_path: rel.text,
                path,
                exact_name: rel.exact,
                first_seen,
            });
        }
        None
    }

    /// Takes over `old`'s ready files (a reload or a re-arm replaces the tracker), in their
    /// order and with their first sighting, so they keep their place in line rather than
    /// settle again. Only files of an inbox `same(old_index, new_index)` says is the same
    /// folder, and that the new watch still admits; the others are left to the scan. Call it
    /// before the first scan.
    pub fn adopt_ready(&mut self, old: &mut Tracker, same: impl Fn(usize, usize) -> bool) {
        for id in std::mem::take(&mut old.ready) {
            let Some(slot) = old.candidates.remove(id) else {
                continue;
            };
            let old_index = slot.watch as usize;
            let Some(index) = (0..self.watches.len()).find(|&new| same(old_index, new)) else {
                continue;
            };
            let watch = &self.watches[index];
            let admitted = relative(watch, &watch.inbox.join(&*slot.name))
                .is_some_and(|rel| watch.admits(&rel.text));
            // Watches are few: their indexes fit.
            let w = index as u32;
            if admitted && self.candidates.find(w, &slot.name).is_none() {
                let id = self.candidates.insert(w, &slot.name, slot.candidate);
                self.ready.push_back(id);
            }
        }
    }
}

/// Gives back most of a map's memory once a large backlog has drained (amortised: only when
/// it is a quarter full).
fn compact_map<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 1024 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// As [`compact_map`], for a queue.
fn compact_deque<T>(queue: &mut VecDeque<T>) {
    if queue.capacity() > 1024 && queue.len() * 4 < queue.capacity() {
        queue.shrink_to(queue.len() * 2);
    }
}

/// As [`compact_map`], for a heap.
fn compact_heap<T: Ord>(heap: &mut BinaryHeap<T>) {
    if heap.capacity() > 1024 && heap.len() * 4 < heap.capacity() {
        heap.shrink_to(heap.len() * 2);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A scratch folder holding an empty `inbox`, and that inbox's path.
    fn scratch_inbox() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("a scratch folder");
        let inbox = dir.path().join("inbox");
        fs::create_dir(&inbox).expect("the inbox");
        (dir, inbox)
    }

    /// A watch of `inbox` whose files settle in `settle`.
    pub(in crate::watch) fn watch(inbox: &Path, settle: &str) -> Arc<Watch> {
        watch_with(inbox, settle, "")
    }

    /// The same, with `extra` keys in the `[[watch]]` table.
    fn watch_with(inbox: &Path, settle: &str, extra: &str) -> Arc<Watch> {
        let text = format!(
            r#"
[codearts]
endpoint = "http://127.0.0.1:9"
domain_id = "ce8df55870164338a72d7e828a966a2a"
[auth]
token = "t"
[[watch]]
name = "w"
inbox = "{inbox}"
done = "{inbox}/../done"
failed = "{inbox}/../failed"
settle = "{settle}"
{extra}
[[watch.rule]]
template = "{{plugin_name}}__{{business_type}}.zip"
"#,
            inbox = inbox.display()
        );
        let config = crate::config::Config::parse(&text, Path::new("/etc/x.toml"))
            .unwrap_or_else(|e| panic!("the test configuration: {e}"));
        Arc::new(config.watches.into_iter().next().expect("a watch"))
    }

    /// Looks until nothing more is due by `at`.
    fn look_until_idle(tracker: &mut Tracker, at: Instant) -> usize {
        let mut became = 0;
        while tracker.next_check().is_some_and(|due| due <= at) {
            became += tracker.ready(at);
        }
        became
    }

    #[test]
    fn waiting_files_are_compact_entries_until_one_is_taken_with_a_slot() {
        const FILES: usize = 5_000;
        let (_dir, inbox) = scratch_inbox();
        for i in 0..FILES {
            fs::write(inbox.join(format!("p{i:05}__Build.zip")), b"x").expect("a file");
        }
        let busy = Busy::default();
        // A settle longer than writing the files can take, however slow the machine: none
        // is unchanged for it yet by its modification time.
        let mut tracker = Tracker::new(vec![watch(&inbox, "1h")], busy.clone());
        tracker.scan_all();
        assert_eq!(tracker.waiting(), FILES, "every file is noted once");
        tracker.scan_all();
        assert_eq!(tracker.waiting(), FILES, "a rescan notes nothing twice");
        let start = Instant::now();
        // The first look is in rounds, and records each file; none is ready before its settle.
        assert_eq!(tracker.ready(start), 0);
        assert!(
            tracker.next_check().is_some_and(|due| due <= start),
            "a round left files due: come back at once"
        );
        assert_eq!(look_until_idle(&mut tracker, start), 0);
        let settled = start + Duration::from_secs(7200);
        assert_eq!(look_until_idle(&mut tracker, settled), FILES);
        assert_eq!(tracker.next_check(), None, "nothing settles any more");
        // Ready and waiting: still the tracker's compact entries, no handed-out path.
        assert!(tracker.has_ready());
        assert!(busy.is_empty(), "no waiting file is held as a busy path");
        assert_eq!(tracker.waiting(), FILES);
        assert_eq!(tracker.waiting_per_watch()[0].0, FILES as u64);
        // One taken with a slot: only it becomes a `Found` and a busy path; still counted.
        let first = tracker.take_ready().expect("a ready file");
        assert_eq!(busy.len(), 1);
        assert_eq!(tracker.waiting(), FILES - 1);
        assert_eq!(tracker.waiting_per_watch()[0].0, FILES as u64);
        assert_eq!(first.path, inbox.join(&first.rel_path));
        // Handed out, it is never noted again until its handler lets go.
        tracker.scan_all();
        assert_eq!(tracker.waiting(), FILES - 1);
        let mut taken = 1;
        while let Some(found) = tracker.take_ready() {
            busy.release(&found.path);
            taken += 1;
        }
        assert_eq!(taken, FILES);
        assert!(tracker.is_empty());
    }

    #[test]
    fn a_file_last_written_a_settle_ago_is_ready_at_its_first_look_where_times_are_trusted() {
        let (_dir, inbox) = scratch_inbox();
        let now = SystemTime::now();
        let file = |name: &str, mtime: SystemTime| {
            let path = inbox.join(name);
            fs::write(&path, b"x").expect("a file");
            let f = fs::File::options().write(true).open(&path).expect("open");
            f.set_modified(mtime).expect("set its time");
            path
        };
        let minute = Duration::from_secs(60);
        let hour = Duration::from_secs(3600);
        file("moved_in__Build.zip", now - minute);
        file("fresh__Build.zip", now);
        // A clock that went back, or a writer's future stamp: no credit.
        file("future__Build.zip", now + hour);
        let ready_names = |tracker: &mut Tracker| {
            let mut names = Vec::new();
            while let Some(found) = tracker.take_ready() {
                names.push(found.rel_path);
            }
            names.sort();
            names
        };

        // Found by a scan: the file last written a minute ago, with a settle of 30 s, is
        // ready at its first look; the others wait for theirs.
        let mut tracker = Tracker::new(vec![watch(&inbox, "30s")], Busy::default());
        tracker.scan_all();
        let start = Instant::now();
        assert_eq!(look_until_idle(&mut tracker, start), 1);
        assert_eq!(ready_names(&mut tracker), ["moved_in__Build.zip"]);
        assert_eq!(
            look_until_idle(&mut tracker, start + Duration::from_secs(31)),
            2,
            "the others are ready a settle after they were first seen"
        );
        // Named by an event: ready from the event's own `lstat`, with no look at all.
        let event = file("event__Build.zip", now - minute);
        tracker.note(&event);
        assert_eq!(ready_names(&mut tracker).len(), 2 + 1);
        let event_fresh = file("event_fresh__Build.zip", now);
        tracker.note(&event_fresh);
        assert!(!tracker.has_ready(), "a fresh file waits for its settle");
        // Credit is never more than the settle: a longer one still waits for the rest.
        let mut tracker = Tracker::new(vec![watch(&inbox, "2h")], Busy::default());
        tracker.scan_all();
        assert_eq!(look_until_idle(&mut tracker, Instant::now()), 0);

        // A polled inbox (written from other hosts, whose clocks need not agree): a file is
        // unchanged for its settle only once seen so.
        let polled = watch_with(&inbox, "30s", "poll = true");
        let mut tracker = Tracker::new(vec![polled], Busy::default());
        tracker.scan_all();
        let start = Instant::now();
        assert_eq!(look_until_idle(&mut tracker, start), 0);
        tracker.note(&event);
        assert!(!tracker.has_ready());
        assert_eq!(
            look_until_idle(&mut tracker, start + Duration::from_secs(31)),
            5
        );
    }

    #[test]
    fn a_waiting_files_entry_stays_compact() {
        // Each waiting file holds one of each (see `Tracker`'s memory note): growing them
        // grows a backlog of 100,000 by 100,000 times as much.
        assert!(std::mem::size_of::<Candidate>() <= 32);
        assert!(std::mem::size_of::<Option<Slot>>() <= 56);
        assert!(std::mem::size_of::<Reverse<(u64, Id)>>() <= 16);
        // Set first, as a tracker does: an instant before it counts as it.
        epoch();
        let now = Instant::now();
        let mut c = Candidate::new(None, |_| 0, now);
        assert!(!c.is_ready() && c.due(Duration::from_secs(1)) == since_epoch(now));
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert!(c.saw(10, Some(mtime), |_| 0, now));
        assert!(
            !c.saw(10, Some(mtime), |_| 0, now + Duration::from_secs(1)),
            "unchanged"
        );
        assert_eq!(
            c.due(Duration::from_secs(1)),
            since_epoch(now + Duration::from_secs(1))
        );
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(from_wall(wall(Some(before))), before);
    }

    #[test]
    fn a_name_whose_hash_is_taken_is_kept_by_name() {
        epoch();
        let mut candidates = Candidates::new(1);
        let a = candidates.insert(
            0,
            OsStr::new("a"),
            Candidate::new(None, |_| 0, Instant::now()),
        );
        // As if "b" hashed like "a": its hash's place is taken by another name.
        let hash_b = candidates.hash(0, OsStr::new("b"));
        candidates.by_hash.insert(hash_b, a);
        let b = candidates.insert(
            0,
            OsStr::new("b"),
            Candidate::new(None, |_| 0, Instant::now()),
        );
        assert_eq!(candidates.find(0, OsStr::new("b")), Some(b));
        assert_eq!(candidates.find(0, OsStr::new("a")), Some(a));
        assert_eq!(candidates.len(), 2);
        assert!(candidates.remove(b).is_some());
        assert_eq!(candidates.find(0, OsStr::new("b")), None);
        assert_eq!(candidates.find(0, OsStr::new("a")), Some(a));
        assert!(candidates.collided.is_empty());
    }

    #[test]
    fn ready_files_are_taken_in_the_order_they_became_ready_and_vanished_ones_are_forgotten() {
        let (_dir, inbox) = scratch_inbox();
        let busy = Busy::default();
        let mut tracker = Tracker::new(vec![watch(&inbox, "100ms")], busy);
        let start = Instant::now();
        for name in ["c__B.zip", "a__B.zip", "b__B.zip"] {
            let path = inbox.join(name);
            fs::write(&path, b"x").expect("a file");
            // As an event names it: its settle starts now.
            tracker.note(&path);
        }
        fs::remove_file(inbox.join("a__B.zip")).expect("removed");
        // `b` changes: its settle starts again, after the others'.
        fs::write(inbox.join("b__B.zip"), b"longer").expect("rewritten");
        tracker.note(&inbox.join("b__B.zip"));
        let later = start + Duration::from_secs(5);
        assert_eq!(look_until_idle(&mut tracker, later), 2);
        let order: Vec<String> = std::iter::from_fn(|| tracker.take_ready())
            .map(|found| found.rel_path)
            .collect();
        assert_eq!(order, ["c__B.zip", "b__B.zip"]);
        assert!(tracker.is_empty(), "the vanished file is forgotten");
    }

    #[test]
    fn a_new_tracker_adopts_the_ready_files_in_their_order() {
        let (_dir, inbox) = scratch_inbox();
        for name in ["x__B.zip", "y__B.zip"] {
            fs::write(inbox.join(name), b"x").expect("a file");
        }
        let busy = Busy::default();
        let mut old = Tracker::new(vec![watch(&inbox, "0s")], busy.clone());
        old.scan_all();
        assert_eq!(look_until_idle(&mut old, Instant::now()), 2);
        let first_seen: Vec<SystemTime> = old
            .candidates
            .iter()
            .map(|slot| slot.candidate.first_seen())
            .collect();
        let mut new = Tracker::new(vec![watch(&inbox, "1h")], busy);
        new.adopt_ready(&mut old, |_, _| true);
        new.scan_all();
        assert!(old.is_empty());
        assert_eq!(new.waiting(), 2);
        let found = new
            .take_ready()
            .expect("adopted, ready without a new settle");
        assert!(
            first_seen.contains(&found.first_seen),
            "its first sighting is kept"
        );
    }
}
