//! Destination names: free names (`name~2.zip`, …) that leave room for the report's suffix
//! within 255 bytes, the names reserved by filings in progress, and report paths.

use super::*;

/// The report path for a filed file.
pub fn report_path(filed: &Path) -> PathBuf {
    let mut name = filed.file_name().unwrap_or_default().to_os_string();
    name.push(REPORT_SUFFIX);
    filed.with_file_name(name)
}

pub(super) fn report_bytes(report: &Report) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(report).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// A free name for `name` in `dir`: `name` itself if free, else one of `stem~2.ext`,
/// `stem~3.ext`, … that neither exists in `dir`, nor has a report there, nor is reserved by a
/// filing in progress. Probing continues after the number last given for this name in this
/// folder, so the k-th drop of one name does not probe k names under the folder's lock; a
/// number freed since is simply not reused. An error reading the folder is an error, never
/// "free".
pub fn free_name(dir: &Path, name: &str) -> Result<String, StoreError> {
    let is_free = |candidate: &str| -> Result<bool, StoreError> {
        let path = dir.join(candidate);
        let report = report_path(&path);
        Ok(!is_reserved(dir, candidate)
            && !exists("name.stat", &path).map_err(StoreError::new("inspect", &path))?
            && !exists("name.stat", &report).map_err(StoreError::new("inspect", &report))?)
    };
    let plain = numbered(name, 1);
    if is_free(&plain)? {
        return Ok(plain);
    }
    static LAST: OnceLock<Mutex<HashMap<(PathBuf, String), u64>>> = OnceLock::new();
    let last = || {
        LAST.get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    };
    let key = (dir.to_owned(), name.to_owned());
    let start = last().get(&key).map_or(2, |n| n + 1);
    for n in start.. {
        let candidate = numbered(name, n);
        if is_free(&candidate)? {
            let mut last = last();
            // A bound on the memory, not on correctness: forgetting only means probing again.
            if last.len() >= 4096 {
                last.clear();
            }
            last.insert(key, n);
            return Ok(candidate);
        }
    }
    Ok(plain)
}

/// The name to try first for `name` in `dir`: `name` itself, when no file stands there, no
/// filing in progress holds it and no filing in this process found it taken (`None`:
/// [`free_name`] chooses). Its report's name is not looked at: most are free, and the
/// no-replace rename that places the report finds out when one is not (the filing then calls
/// [`taken`] and chooses with [`free_name`]). The file's name is: a report placed beside a file
/// that is not ours would pair them until it is taken back, or for good after a crash.
pub(super) fn first_try(dir: &Path, name: &str) -> Result<Option<String>, StoreError> {
    let plain = numbered(name, 1);
    let path = dir.join(&plain);
    if taken_names().contains(&path) || is_reserved(dir, &plain) {
        return Ok(None);
    }
    let standing = exists("name.stat", &path).map_err(StoreError::new("inspect", &path))?;
    Ok((!standing).then_some(plain))
}

/// Notes that a filing of `name` into `dir` found the name taken: later filings of that name
/// look before they choose (see [`first_try`]).
pub(super) fn taken(dir: &Path, name: &str) {
    let mut taken = taken_names();
    // A bound on the memory, not on correctness: forgetting only means trying the name again.
    if taken.len() >= 4096 {
        taken.clear();
    }
    taken.insert(dir.join(numbered(name, 1)));
}

/// The names (as paths) that filings in this process found taken.
fn taken_names() -> std::sync::MutexGuard<'static, std::collections::HashSet<PathBuf>> {
    static TAKEN: OnceLock<Mutex<std::collections::HashSet<PathBuf>>> = OnceLock::new();
    TAKEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// `name` for n = 1, else the name with `~n` before its extension; shortened (at a character
/// boundary, keeping a short extension) so that it and its report's name, with `~n`, fit in
/// 255 bytes.
pub fn numbered(name: &str, n: u64) -> String {
    let suffix = if n == 1 {
        String::new()
    } else {
        format!("~{n}")
    };
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    };
    let budget = NAME_MAX - REPORT_SUFFIX.len();
    if stem.len() + suffix.len() + ext.len() <= budget {
        return format!("{stem}{suffix}{ext}");
    }
    // A very long "extension" is part of the name, not a type worth keeping whole.
    let (stem, ext) = if ext.len() <= 32 {
        (stem, ext)
    } else {
        (name, "")
    };
    let mut cut = budget
        .saturating_sub(suffix.len() + ext.len())
        .min(stem.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}{ext}", &stem[..cut])
}

/// Strips a `~n` suffix added by [`numbered`], giving back the name as dropped.
pub fn unnumbered(name: &str) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    };
    match stem.rsplit_once('~') {
        Some((base, n)) if !base.is_empty() && n.parse::<u64>().is_ok_and(|n| n >= 2) => {
            format!("{base}{ext}")
        }
        _ => name.to_owned(),
    }
}

/// Names chosen for filings not yet complete, per destination folder: `free_name` skips them,
/// so a filing that failed half-way (a full disk) keeps its name until it is retried.
pub(super) fn reserved()
-> std::sync::MutexGuard<'static, HashMap<PathBuf, std::collections::HashSet<String>>> {
    static RESERVED: OnceLock<Mutex<HashMap<PathBuf, std::collections::HashSet<String>>>> =
        OnceLock::new();
    RESERVED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

pub(super) fn reserve(dir: &Path, name: &str) {
    reserved()
        .entry(dir.to_owned())
        .or_default()
        .insert(name.to_owned());
}

pub(super) fn release(dir: &Path, name: &str) {
    let mut reserved = reserved();
    if let Some(names) = reserved.get_mut(dir) {
        names.remove(name);
        if names.is_empty() {
            reserved.remove(dir);
        }
    }
}

pub(super) fn is_reserved(dir: &Path, name: &str) -> bool {
    reserved()
        .get(dir)
        .is_some_and(|names| names.contains(name))
}
