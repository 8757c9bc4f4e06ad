//! Reusing claim folders, so that claiming and filing a file allocates no inode and frees none.
//!
//! Why: on ext4 without a journal (common on cloud VMs, and the benchmark's disk), allocating
//! an inode skips every inode freed in the last seconds, reading each one's inode-table entry
//! to find out. When each file's claim made a folder and a record and its filing deleted both,
//! a burst's every claim scanned past all the inodes the burst had just freed: `perf` put most
//! of the daemon's CPU there (`recently_deleted`, `find_inode_bit`). Now a filed claim's folder,
//! which holds nothing but its record by then, is renamed to a hidden name ([`FREE_PREFIX`])
//! in the same work folder and handed to the next claim, record and all: the record is
//! overwritten in place and the folder renamed to the new claim's name. Both renames stay
//! within the work folder: a rename across folders takes the file system's rename lock, which
//! every claim and filing already takes twice.
//!
//! Invariants:
//! - A folder named [`FREE_PREFIX`]… is no claim: resume and `status` skip hidden names, and
//!   the start-up clean-up removes them all (nothing of a free folder is worth keeping).
//! - A reused folder's record is overwritten *before* the folder takes the claim's name, so
//!   after `kill -9` a claim folder never holds a former claim's record. The record names its
//!   folder ([`ClaimRecord::claim`]); should a power cut undo the overwrite but keep the
//!   rename, `inspect` sees a record naming another folder and does not trust it.
//! - Few folders are kept ([`KEPT`] per work folder); the rest are removed as before.

use super::*;

/// The start of the name under which a filed claim's folder waits in the work folder to be
/// reused.
pub const FREE_PREFIX: &str = ".free-";

/// Free folders kept per work folder: enough for every claim a burst has in flight at once
/// (up to 32 claimed ahead, the upload slots, and the filings waiting for their barrier, which
/// a slow disk makes many: 140 at the peak of a 5,000-file burst on the benchmark's disk).
/// Fewer made the pool churn in every burst, each round's filings removing folders the next
/// claims made again: inodes freed and allocated per file, which is what reuse is for. The
/// kept folders' open records count against the process-wide budget of held records
/// (`held::MAX_HELD`, also 256), which bounds the descriptors whatever is kept.
const KEPT: usize = 256;

/// The free folders of each work folder, in this process.
fn pool() -> &'static Mutex<HashMap<PathBuf, Vec<Free>>> {
    static POOL: OnceLock<Mutex<HashMap<PathBuf, Vec<Free>>>> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

/// Whether a work folder entry is a folder kept for reuse.
pub(super) fn is_kept(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(FREE_PREFIX.as_bytes())
}

/// A folder kept for reuse, with its record held open when it was (see `held`).
type Free = (PathBuf, Option<HeldRecord>);

/// Adds `free` to the folders of `work` kept for reuse.
fn keep(work: &Path, free: Free) {
    let mut pool = pool().lock().unwrap_or_else(|e| e.into_inner());
    pool.entry(work.to_owned()).or_default().push(free);
}

/// A free folder of `work` to reuse, if one is kept.
pub(super) fn take(work: &Path) -> Option<Free> {
    let mut pool = pool().lock().unwrap_or_else(|e| e.into_inner());
    pool.get_mut(work)?.pop()
}

/// Puts a filed claim's folder (holding its record only, `held` open or not) aside for the
/// next claim of `work`, or removes it when enough are kept. `Ok` also when the folder is
/// already gone.
pub(super) fn give(work: &Path, dir: &Path, held: Option<HeldRecord>) -> io::Result<()> {
    let kept = {
        let pool = pool().lock().unwrap_or_else(|e| e.into_inner());
        pool.get(work).map_or(0, Vec::len)
    };
    let aside = dir.file_name().map(|name| {
        let mut hidden = std::ffi::OsString::from(FREE_PREFIX);
        hidden.push(name);
        work.join(hidden)
    });
    let Some(aside) = aside.filter(|_| kept < KEPT) else {
        return remove(dir);
    };
    match fs::rename(dir, &aside) {
        Ok(()) => {
            keep(work, (aside, held));
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        // Whatever stops the rename (a name taken, odd permissions), removing still works.
        Err(_) => remove(dir),
    }
}

fn remove(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Makes the claim folder `dir` in `work` holding `bytes` as its record: a free folder reused
/// when one is kept, else a new one. `AlreadyExists` when `dir` is taken (choose another name).
/// Returns the record held open, when the budget allows (see `held`).
pub(super) fn open(work: &Path, dir: &Path, bytes: &[u8]) -> io::Result<Option<HeldRecord>> {
    while let Some(mut free) = take(work) {
        match reuse(&mut free, dir, bytes) {
            Ok(()) => return Ok(free.1),
            // Removed under us (the start-up clean-up of another run's folder): make a new one.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // `dir` is taken, not the free folder's fault: it waits for the next claim.
                keep(work, free);
                return Err(e);
            }
            Err(e) => {
                let _ = remove(&free.0);
                return Err(e);
            }
        }
    }
    fs::DirBuilder::new().mode(0o750).create(dir)?;
    match disk::create_new("write", &dir.join(RECORD), bytes) {
        Ok(record) => Ok(HeldRecord::new(record, bytes.len() as u64)),
        Err(e) => {
            // A claim folder without a record is garbage; the file was never touched.
            let _ = remove(dir);
            Err(e)
        }
    }
}

/// The record first (see `disk::rewrite`), then the name. `NotFound` when the folder is gone.
fn reuse(free: &mut Free, dir: &Path, bytes: &[u8]) -> io::Result<()> {
    let (folder, held) = free;
    held::save(held, &folder.join(RECORD), bytes)?;
    disk::rename_noreplace(folder, dir)
}

/// Removes the work folder's free folders (at start-up, before any claim: see the invariants).
pub(super) fn clear(work: &Path) {
    pool()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(work);
    let Ok(entries) = fs::read_dir(work) else {
        return;
    };
    for entry in entries.flatten() {
        if is_kept(&entry.file_name())
            && let Err(e) = remove(&entry.path())
        {
            tracing::warn!(folder = %entry.path().display(), error = %e, "cannot remove a folder kept for reuse; it is left");
        }
    }
}
