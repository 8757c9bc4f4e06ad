//! A seam for injecting faults into the store's file operations, so tests can prove that an I/O
//! error (or a panic) at any named point leaves no file stuck, lost or uploaded twice.
//!
//! Every file operation of the store first calls [`hit`] with a *point* (`"claim.sync"`,
//! `"report.place"`, …: where in a file's life it is) and the path it works on. A rule whose
//! point and path match makes that call fail with EIO, or panic.
//!
//! Safety: rules exist only in unit tests (added with [`inject`]) and in debug builds (read once
//! from `EXTDROP_FAULTS`). A release build — what is packaged and deployed — compiles [`hit`]
//! to nothing and never reads the variable.
//!
//! `EXTDROP_FAULTS` holds rules separated by `;`, each a list of `key=value` separated by `,`:
//! `point` (exact, or a prefix ending in `*`; `*` alone matches every point), `path` (a
//! substring the path must contain), `nth` (fail only the n-th matching call, counting from 1),
//! `times` (fail the first n matching calls), `chance` (fail each matching call with this
//! probability, 0–1), `seed` (for `chance`) and the flags `panic` (panic instead of failing)
//! and `kill` (the process sends itself SIGKILL: a crash at exactly that point), and `hang`
//! (the calling thread blocks for good: a call stuck in the kernel).
//! With neither `nth`, `times` nor `chance`, every matching call fails.
//! Example: `point=claim.sync,nth=1;point=check,path=CRASH,panic`.

use std::io;
use std::path::Path;

/// One injected fault.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// The point: exact, a prefix ending in `*`, or `*` for all.
    pub point: String,
    /// A substring the operation's path must contain (empty: any path).
    pub path: String,
    /// Fail only the n-th matching call (1-based).
    pub nth: Option<u64>,
    /// Fail the first n matching calls.
    pub times: Option<u64>,
    /// Fail each matching call with this probability.
    pub chance: Option<f64>,
    /// Panic instead of returning EIO.
    pub panic: bool,
    /// SIGKILL the process instead of returning EIO.
    pub kill: bool,
    /// Block the calling thread for good instead (a call stuck in the kernel, as on a hung
    /// network file system).
    pub hang: bool,
}

impl Rule {
    /// A rule failing every call of `point` on paths containing `path`.
    pub fn new(point: &str, path: impl AsRef<Path>) -> Rule {
        Rule {
            point: point.to_owned(),
            path: path.as_ref().to_string_lossy().into_owned(),
            ..Rule::default()
        }
    }

    /// Only the n-th matching call fails.
    pub fn nth(mut self, n: u64) -> Rule {
        self.nth = Some(n);
        self
    }

    /// The first n matching calls fail.
    pub fn times(mut self, n: u64) -> Rule {
        self.times = Some(n);
        self
    }

    /// Each matching call fails with probability `p`.
    pub fn chance(mut self, p: f64) -> Rule {
        self.chance = Some(p);
        self
    }

    /// Panic instead of failing.
    pub fn panicking(mut self) -> Rule {
        self.panic = true;
        self
    }

    #[cfg(any(test, debug_assertions))]
    fn matches(&self, point: &str, path: &Path, exact: bool) -> bool {
        let point_ok = match self.point.strip_suffix('*') {
            Some(prefix) => !exact && point.starts_with(prefix),
            None => self.point == point,
        };
        point_ok && (self.path.is_empty() || path.to_string_lossy().contains(&self.path))
    }
}

#[cfg(any(test, debug_assertions))]
mod active {
    use super::Rule;
    use std::path::Path;
    use std::sync::{Mutex, MutexGuard, OnceLock};

    pub(super) struct State {
        pub(super) rules: Vec<(u64, Rule, u64)>,
        #[cfg_attr(not(test), allow(dead_code))]
        pub(super) next_id: u64,
        pub(super) rng: fastrand::Rng,
    }

    pub(super) fn state() -> MutexGuard<'static, State> {
        static STATE: OnceLock<Mutex<State>> = OnceLock::new();
        STATE
            .get_or_init(|| {
                let (rules, seed) = std::env::var("EXTDROP_FAULTS")
                    .map(|text| super::parse(&text))
                    .unwrap_or_default();
                Mutex::new(State {
                    rules: rules
                        .into_iter()
                        .enumerate()
                        .map(|(i, r)| (i as u64, r, 0))
                        .collect(),
                    next_id: u64::MAX / 2,
                    rng: fastrand::Rng::with_seed(seed),
                })
            })
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a rule fires for this call, and which.
    pub(super) fn fires(point: &str, path: &Path, exact: bool) -> Option<Rule> {
        let mut state = state();
        let State { rules, rng, .. } = &mut *state;
        for (_, rule, calls) in rules.iter_mut() {
            if !rule.matches(point, path, exact) {
                continue;
            }
            *calls += 1;
            let fire = match (rule.nth, rule.times, rule.chance) {
                (Some(n), _, _) => *calls == n,
                (_, Some(n), _) => *calls <= n,
                (_, _, Some(p)) => rng.f64() < p,
                _ => true,
            };
            if fire {
                return Some(rule.clone());
            }
        }
        None
    }
}

/// Parses `EXTDROP_FAULTS` (see the module's documentation) into rules and a seed.
#[cfg(any(test, debug_assertions))]
fn parse(text: &str) -> (Vec<Rule>, u64) {
    let mut seed = 0;
    let mut rules = Vec::new();
    for spec in text.split(';').filter(|s| !s.trim().is_empty()) {
        let mut rule = Rule::default();
        for field in spec.split(',') {
            let (key, value) = field.split_once('=').unwrap_or((field, ""));
            match key.trim() {
                "point" => rule.point = value.to_owned(),
                "path" => rule.path = value.to_owned(),
                "nth" => rule.nth = value.parse().ok(),
                "times" => rule.times = value.parse().ok(),
                "chance" => rule.chance = value.parse().ok(),
                "seed" => seed = value.parse().unwrap_or(0),
                "panic" => rule.panic = true,
                "kill" => rule.kill = true,
                "hang" => rule.hang = true,
                _ => {}
            }
        }
        rules.push(rule);
    }
    (rules, seed)
}

/// A file operation at `point` on `path` is about to run: fails it (EIO) or panics if an
/// injected rule says so. Compiled to nothing in release builds.
#[inline]
pub fn hit(point: &str, path: &Path) -> io::Result<()> {
    #[cfg(any(test, debug_assertions))]
    if let Some(rule) = active::fires(point, path, false) {
        act(&rule, point, path);
        return Err(io::Error::other(format!(
            "injected I/O error at {point} (os error {})",
            rustix::io::Errno::IO.raw_os_error()
        )));
    }
    let _ = (point, path);
    Ok(())
}

/// A place where a test may ask for a panic (no I/O to fail there): panics if a rule names
/// this point exactly (wildcard rules, meant for I/O errors, do not count). Compiled to nothing
/// in release builds.
#[inline]
pub fn crash_point(point: &str, subject: &Path) {
    #[cfg(any(test, debug_assertions))]
    if let Some(rule) = active::fires(point, subject, true) {
        act(&rule, point, subject);
        panic!("injected panic at {point} ({})", subject.display());
    }
    let _ = (point, subject);
}

/// Panics or kills the process if the rule says so.
#[cfg(any(test, debug_assertions))]
fn act(rule: &Rule, point: &str, path: &Path) {
    if rule.kill {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
    if rule.panic {
        panic!("injected panic at {point} ({})", path.display());
    }
    if rule.hang {
        tracing::error!(point, path = %path.display(), "injected hang: this thread blocks for good");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// Removes its rule when dropped (unit tests).
#[cfg(test)]
pub struct Injected(u64);

#[cfg(test)]
impl Drop for Injected {
    fn drop(&mut self) {
        active::state().rules.retain(|(id, _, _)| *id != self.0);
    }
}

/// Adds a rule for the lifetime of the returned guard (unit tests; scope it with
/// [`Rule::path`] to the test's own folder, since tests run in parallel).
#[cfg(test)]
pub fn inject(rule: Rule) -> Injected {
    let mut state = active::state();
    state.next_id += 1;
    let id = state.next_id;
    state.rules.push((id, rule, 0));
    Injected(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_fire_as_written() {
        let (rules, seed) =
            parse("point=claim.sync,nth=2;point=file.*,path=x,times=1,seed=7;point=check,panic");
        assert_eq!(seed, 7);
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].nth, Some(2));
        assert!(rules[1].matches("file.move", Path::new("/a/x"), false));
        assert!(!rules[1].matches("file.move", Path::new("/a/y"), false));
        assert!(!rules[1].matches("file.move", Path::new("/a/x"), true));
        assert!(rules[2].panic);
        let scope = "/fault-test-unique-scope/";
        let _guard = inject(Rule::new("claim.sync", scope).nth(2));
        let path = Path::new(scope).join("f");
        assert!(hit("claim.sync", &path).is_ok());
        assert!(hit("claim.sync", &path).is_err());
        assert!(hit("claim.sync", &path).is_ok());
        assert!(hit("claim.sync", Path::new("/elsewhere")).is_ok());
    }
}
