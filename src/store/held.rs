//! A claim's record kept open: saving the record of a claim this process made is one `pwrite`
//! on a descriptor it already holds, not an `open` (a walk of the whole path), a look and a
//! `close` — three times per file (claimed, attempt counted, decided). The descriptor goes
//! with the claim folder when that is kept for reuse (`recycle`), so a reused folder's record
//! is not opened again either.
//!
//! Invariants:
//! - A held record is the inode at `<claim folder>/claim.json`: only a rewrite in place keeps
//!   it so; a save that must replace the file (a record over a page) drops the descriptor
//!   first, and every later save goes by path.
//! - At most [`MAX_HELD`] descriptors are held in the whole process. A claim that cannot
//!   have one (an outage holding many claims in their retry pauses) saves by path, and holds
//!   its record from the first save after the budget has room again, as a claim read back
//!   from disk does: the bound is on descriptors, never on correctness.

use std::sync::atomic::AtomicUsize;

use super::*;

/// Descriptors held at most, process-wide: well under the 1,024 that systemd's default soft
/// limit allows, beside the upload sockets and the files being sent.
const MAX_HELD: usize = 256;

/// Descriptors held now.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// An open record file (see the module doc).
#[derive(Debug)]
pub(super) struct HeldRecord {
    file: File,
    /// The file's length as this process last left it: a held record is written by nobody
    /// else (its claim folder is this process's, under the work folder's lock), so a rewrite
    /// need not `statx` it to learn how much to pad.
    len: u64,
}

impl HeldRecord {
    /// Holds `file`, `len` bytes long, when the process-wide budget allows; `None` (and
    /// `file` closed) when not.
    pub(super) fn new(file: File, len: u64) -> Option<HeldRecord> {
        // Never above the budget, even for a moment: the count is only raised while below it.
        HELD.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            (held < MAX_HELD).then_some(held + 1)
        })
        .ok()?;
        Some(HeldRecord { file, len })
    }

    /// Rewrites the record `path` names through the held descriptor (see
    /// [`disk::overwrite_small_at`]); `Ok(false)` when it must be replaced instead.
    pub(super) fn overwrite(&mut self, path: &Path, bytes: &[u8]) -> io::Result<bool> {
        fault::hit("write", path)?;
        let written = disk::overwrite_small_at(&self.file, self.len, bytes)?;
        if written {
            self.len = self.len.max(bytes.len() as u64);
        }
        Ok(written)
    }
}

impl Drop for HeldRecord {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Saves `bytes` as the record at `path` through `held` when it can be rewritten in place,
/// else by path, dropping `held` first (the replacement is another inode). A record not held
/// (its folder made while the budget was spent, or its claim read back from disk) is held from
/// this save on when the budget allows: otherwise a folder made in a burst that outgrew the
/// budget would be saved by path for as long as it is reused.
pub(super) fn save(held: &mut Option<HeldRecord>, path: &Path, bytes: &[u8]) -> io::Result<()> {
    if held.is_none() && bytes.len() as u64 <= disk::IN_PLACE_MAX {
        *held = reopen(path)?;
    }
    if let Some(record) = held.as_mut() {
        match record.overwrite(path, bytes) {
            Ok(true) => return Ok(()),
            Ok(false) => *held = None,
            Err(e) => {
                // Whatever failed, the next save opens the path afresh.
                *held = None;
                return Err(e);
            }
        }
    }
    disk::rewrite(path, bytes)
}

/// The record at `path` held, when the budget has room and it can be rewritten in place;
/// `None` when not, or when nothing is there (the save by path then makes it).
fn reopen(path: &Path) -> io::Result<Option<HeldRecord>> {
    if HELD.load(Ordering::Relaxed) >= MAX_HELD {
        return Ok(None);
    }
    let (file, len) = match disk::open_small(path) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok((len <= disk::IN_PLACE_MAX)
        .then(|| HeldRecord::new(file, len))
        .flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_grown_past_a_page_is_replaced_and_no_longer_written_through_the_old_descriptor()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(RECORD);
        fs::write(&path, b"{\"a\": 1}")?;
        let mut held = HeldRecord::new(File::options().write(true).open(&path)?, 8);
        assert!(held.is_some(), "one descriptor is within the budget");
        save(&mut held, &path, b"{\"b\": 2}")?;
        assert_eq!(
            fs::read(&path)?,
            b"{\"b\": 2}",
            "rewritten in place, same length"
        );
        assert!(held.is_some());
        // Grown, then shrunk: the padding covers all the longer record left, with no `statx`
        // to say how long that was.
        let long = b"{\"long\": 1234567890}";
        save(&mut held, &path, long)?;
        save(&mut held, &path, b"{}")?;
        assert_eq!(
            fs::read_to_string(&path)?,
            format!("{{}}{}", " ".repeat(long.len() - 2))
        );
        let big = format!("{{\"c\": \"{}\"}}", "x".repeat(5000));
        save(&mut held, &path, big.as_bytes())?;
        assert!(held.is_none(), "a replaced record is not the held inode");
        assert_eq!(fs::read(&path)?, big.as_bytes());
        save(&mut held, &path, b"{\"d\": 4}")?;
        let text = fs::read_to_string(&path)?;
        assert_eq!(
            text.trim_end(),
            "{\"d\": 4}",
            "saved by path, padded in place"
        );
        Ok(())
    }

    /// Taken by the tests that spend the whole budget, so that none spends it under another.
    static WHOLE_BUDGET: Mutex<()> = Mutex::new(());

    /// Holds descriptors of `path` until the budget is spent; never more than the budget.
    fn spend_budget(path: &Path) -> io::Result<Vec<HeldRecord>> {
        let mut spent = Vec::new();
        while let Some(one) = HeldRecord::new(File::open(path)?, 2) {
            spent.push(one);
            assert!(spent.len() <= MAX_HELD, "more than {MAX_HELD} held");
        }
        Ok(spent)
    }

    /// A folder made while the budget was spent, reused once it has room again, is saved
    /// through a held descriptor from its next save on, not by path for as long as it lives;
    /// with the budget spent, a save still goes by path.
    #[test]
    fn a_record_not_held_is_held_from_its_next_save_when_the_budget_has_room()
    -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::MetadataExt;
        let _some_budget = WHOLE_BUDGET.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(RECORD);
        fs::write(&path, b"{\"a\": 1}")?;
        let spent = spend_budget(&path)?;
        let mut held = None;
        save(&mut held, &path, b"{\"b\": 2}")?;
        assert!(held.is_none(), "no budget: saved by path");
        assert_eq!(fs::read(&path)?, b"{\"b\": 2}");
        drop(spent);
        save(&mut held, &path, b"{\"c\": 3}")?;
        let record = held
            .as_ref()
            .ok_or("the record is held once the budget has room")?;
        assert_eq!(record.file.metadata()?.ino(), fs::metadata(&path)?.ino());
        save(&mut held, &path, b"{}")?;
        assert_eq!(
            fs::read_to_string(&path)?,
            "{}      ",
            "saved through the held descriptor, padded to the length it knew"
        );
        Ok(())
    }

    #[test]
    fn descriptors_beyond_the_budget_are_not_held() -> Result<(), Box<dyn std::error::Error>> {
        let _whole_budget = WHOLE_BUDGET.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(RECORD);
        fs::write(&path, b"{}")?;
        let kept = spend_budget(&path)?;
        assert!(HELD.load(Ordering::Relaxed) <= MAX_HELD);
        drop(kept);
        assert!(
            HeldRecord::new(File::open(&path)?, 2).is_some(),
            "dropped descriptors give their budget back"
        );
        Ok(())
    }
}
