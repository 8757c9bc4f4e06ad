//! The file-system primitives filing is built on: atomic writes, folder fsyncs, no-replace
//! renames and moves across file systems, each passing its fault point.

use super::*;

/// A fresh temporary path in `dir` (see [`TEMP_PREFIX`]).
pub(super) fn temp_path(dir: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{TEMP_PREFIX}{}-{n:x}", pid()))
}

/// Writes `bytes` to a file that must not exist yet, at fault point `point`. Not fsynced: the
/// caller's [`commit::barrier`] makes it durable together with the rest of its step.
pub(super) fn create_new(point: &str, path: &Path, bytes: &[u8]) -> io::Result<File> {
    fault::hit(point, path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path)?;
    file.write_all(bytes)?;
    Ok(file)
}

/// Writes `bytes` to a new temporary file in `dir` (see [`create_new`]); removes it on failure.
pub(super) fn write_temp(point: &str, dir: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let tmp = temp_path(dir);
    match create_new(point, &tmp, bytes) {
        Ok(_) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Places a report at `path` without ever replacing one (`AlreadyExists` then), whole or not
/// at all for every reader (durable at the filing's barrier): written to a file with no name
/// yet, then linked at `path` ([`link_anonymous`]); where the file system or the process's
/// `/proc` does not allow that, written to a temporary file and renamed into place with
/// no-replace.
pub(super) fn place_report(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Some(placed) = link_anonymous(dir, path, bytes) {
        return placed;
    }
    let tmp = write_temp("report.write", dir, bytes)?;
    let placed = fault::hit("report.place", path).and_then(|()| rename_noreplace(&tmp, path));
    if placed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    placed
}

/// Writes `bytes` to a file with no name in `dir` (`O_TMPFILE`) and links it at `path`, which
/// it never replaces (`AlreadyExists` then). `None` where that cannot be done here: the file
/// system has no `O_TMPFILE` (network and FUSE ones, mostly), or `/proc`, through which an
/// unprivileged process names the file to link it, is not mounted.
///
/// Why: the report is the one file a filing makes in the destination folder, which grows with
/// every file filed. A temporary file renamed into place costs that folder an entry made, a
/// look-up and an entry removed more than a link does, and `perf` put the burst's filing
/// into `done` among the daemon's largest costs. A kill before the link leaves nothing: the
/// file has no name, and goes with the process.
fn link_anonymous(dir: &Path, path: &Path, bytes: &[u8]) -> Option<io::Result<()>> {
    use rustix::fs::{AtFlags, CWD, Mode, OFlags, linkat, openat};
    static PROC: OnceLock<bool> = OnceLock::new();
    // Tests make this point fail to take the classic way (an injected I/O error here means
    // "not available", as on a file system without O_TMPFILE).
    if !*PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir())
        || fault::hit("report.tmpfile", path).is_err()
    {
        return None;
    }
    if let Err(e) = fault::hit("report.write", path) {
        return Some(Err(e));
    }
    let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
    let fd = match openat(CWD, dir, flags, Mode::from_raw_mode(0o640)) {
        Ok(fd) => fd,
        // The folder is missing (the caller makes it), or cannot be written.
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::ACCESS => {
            return Some(Err(io::Error::from(e)));
        }
        // No O_TMPFILE here (EOPNOTSUPP, EISDIR, EINVAL on older kernels), or another
        // trouble the classic way reports as well as any.
        Err(_) => return None,
    };
    let mut file = File::from(fd);
    if let Err(e) = file.write_all(bytes) {
        return Some(Err(e));
    }
    let placed = fault::hit("report.place", path).and_then(|()| {
        let named = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
        linkat(CWD, named.as_str(), CWD, path, AtFlags::SYMLINK_FOLLOW).map_err(io::Error::from)
    });
    Some(placed)
}

/// Writes `bytes` to `path` through a temporary file in the same folder, so readers see the
/// old content or the new, never half of it, and makes it durable (a [`commit::barrier`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    replace(path, bytes).map_err(StoreError::new("write", path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    commit::barrier("sync", &[dir], &[path], &[]).map_err(StoreError::new("sync folder", dir))
}

/// [`write_atomic`] without the barrier: atomic for every reader and across `kill -9` (the
/// page cache outlives the process), durable at the caller's next barrier.
fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = write_temp("write", dir, bytes)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Rewrites a small file atomically for every reader and across `kill -9`: in place while old
/// and new fit in a page ([`overwrite_small`]), else (or when it is missing) through a
/// temporary file and a rename ([`replace`]). Durable at the caller's next barrier.
pub(super) fn rewrite(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match overwrite_small(path, bytes) {
        Ok(true) => Ok(()),
        Ok(false) => replace(path, bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => replace(path, bytes),
        Err(e) => Err(e),
    }
}

/// The most a record may hold to be rewritten in place: one page, which a single `pwrite`
/// replaces whole in the page cache (nothing a `kill -9` can cut in two).
pub(super) const IN_PLACE_MAX: u64 = 4096;

/// Rewrites a small file in place, with one `pwrite` at offset 0, padding the new content with
/// spaces to the old length (JSON ignores trailing whitespace). Cheaper than [`replace`]: no
/// new inode, no rename over the old one (which makes ext4 write the new data out at once and
/// free, and on some disks discard, the old blocks). `Ok(false)` when either content is larger
/// than [`IN_PLACE_MAX`]: use [`replace`] then.
pub(super) fn overwrite_small(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    if bytes.len() as u64 > IN_PLACE_MAX {
        return Ok(false);
    }
    fault::hit("write", path)?;
    let (file, old) = open_small(path)?;
    overwrite_small_at(&file, old, bytes)
}

/// Opens the file at `path` (never through a symbolic link) to be rewritten in place, with its
/// length (see [`overwrite_small_at`]).
pub(super) fn open_small(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

/// As [`overwrite_small`], through `file`, already open for writing and `old` bytes long (the
/// caller passes the fault point).
pub(super) fn overwrite_small_at(file: &File, old: u64, bytes: &[u8]) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    if bytes.len() as u64 > IN_PLACE_MAX || old > IN_PLACE_MAX {
        return Ok(false);
    }
    let mut padded = bytes.to_vec();
    padded.resize(bytes.len().max(old as usize), b' ');
    let written = file.write_at(&padded, 0)?;
    if written != padded.len() {
        return Err(io::Error::other(format!(
            "short write: {written} of {} bytes",
            padded.len()
        )));
    }
    Ok(true)
}

/// Makes what was written and renamed in a folder durable (see [`commit::barrier`]).
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    commit::barrier("sync", &[dir], &[], &[]).map_err(StoreError::new("sync folder", dir))
}

/// A path's metadata, `None` when nothing is there; any other failure is an error.
pub(super) fn stat(point: &str, path: &Path) -> io::Result<Option<fs::Metadata>> {
    fault::hit(point, path)?;
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether something is at `path`; an error is not a "no".
pub(super) fn exists(point: &str, path: &Path) -> io::Result<bool> {
    Ok(stat(point, path)?.is_some())
}

/// Moves `from` to `to` without ever replacing an existing `to`. Across file systems the file
/// is copied to a temporary file in `temp_dir` (on `to`'s file system), fsynced, renamed into
/// place, and only then removed from `from`. Returns whether it was renamed: then `to`'s
/// folder is on `from`'s file system (a rename crosses neither file systems nor mounts).
pub(super) fn move_noreplace(from: &Path, to: &Path, temp_dir: &Path) -> io::Result<bool> {
    fault::hit("file.move", to)?;
    match rename_noreplace(from, to) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
            copy_across(from, to, &temp_path(temp_dir)).map(|()| false)
        }
        Err(e) => Err(e),
    }
}

/// The cross-file-system half of [`move_noreplace`]. The partial copy is removed whatever
/// fails (a full disk), so failed tries leave nothing behind.
pub(super) fn copy_across(from: &Path, to: &Path, partial: &Path) -> io::Result<()> {
    let dest_dir = to.parent().unwrap_or(Path::new("."));
    let copied = (|| {
        fault::hit("file.copy", partial)?;
        let mut src = open_payload(from)?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(partial)?;
        io::copy(&mut src, &mut dst)?;
        dst.sync_all()?;
        rename_noreplace(partial, to)
    })();
    if let Err(e) = copied {
        let _ = fs::remove_file(partial);
        return Err(e);
    }
    // The copy must be on disk before the only other copy goes.
    commit::barrier("file.sync", &[dest_dir], &[], &[])?;
    fs::remove_file(from)
}

/// `rename` that fails with `AlreadyExists` instead of replacing the target.
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // File systems without RENAME_NOREPLACE (some network ones): a hard link is just as
        // exclusive, and where even that is missing, check-then-rename is the best left.
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            match fs::hard_link(from, to) {
                Ok(()) => fs::remove_file(from),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
                Err(_) => {
                    if exists("file.stat", to)? {
                        Err(io::Error::from(io::ErrorKind::AlreadyExists))
                    } else {
                        fs::rename(from, to)
                    }
                }
            }
        }
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Opens a claimed file for reading without following a symbolic link.
pub fn open_payload(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Filing makes the destination folder only when placing a report finds it missing.
    #[test]
    fn a_report_into_a_missing_folder_is_not_found_and_leaves_nothing() {
        each_way(|dir, _| {
            let gone = dir.join("gone");
            let placed = place_report(&gone.join("a.zip.result.json"), b"{}");
            assert_eq!(placed.map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));
            assert!(!gone.exists());
        });
    }

    /// Runs `test` in a scratch folder once per way of placing a report: linked from a file
    /// with no name, then (`classic`) renamed from a temporary one.
    fn each_way(test: impl Fn(&Path, bool)) {
        for classic in [false, true] {
            let dir = tempfile::tempdir().expect("a scratch folder");
            let _guard = classic.then(|| fault::inject(fault::Rule::new("report.tmpfile", "")));
            test(dir.path(), classic);
        }
    }

    /// Both ways of placing a report (linked from a file with no name, or renamed from a
    /// temporary one): whole, never over another, and nothing else left in the folder.
    #[test]
    fn a_report_is_placed_whole_and_never_over_another() {
        each_way(|dir, classic| {
            let report = dir.join("a.zip.result.json");
            place_report(&report, b"{\"ours\": 1}").expect("placed");
            assert_eq!(fs::read(&report).expect("read"), b"{\"ours\": 1}");
            let again = place_report(&report, b"{\"theirs\": 2}");
            assert_eq!(
                again.map_err(|e| e.kind()),
                Err(io::ErrorKind::AlreadyExists)
            );
            assert_eq!(
                fs::read(&report).expect("read"),
                b"{\"ours\": 1}",
                "untouched"
            );
            let names: Vec<_> = fs::read_dir(dir)
                .expect("list")
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert_eq!(names, ["a.zip.result.json"], "classic: {classic}");
            let mode = fs::metadata(&report).expect("stat").permissions().mode();
            assert_eq!(
                mode & 0o027,
                0,
                "not writable by the group, nothing for others"
            );
        });
    }
}
