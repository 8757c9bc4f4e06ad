//! A quiet inbox costs nothing: per watch mode (inotify on one folder, inotify on a tree of
//! folders, polling), the daemon spends next to no CPU and its memory stays flat while nothing
//! happens. A busy loop or a leak fails here even when every file still lands where it should
//! (as the recursive watch once did: each scan of a subfolder announced it again).
//!
//! Nor does the daemon's own work wake the watchers: every claim renames its file out of the
//! inbox, and the inbox's watcher is not told.
//!
//! The ten seconds below are not a wait for something to happen but the span measured.

use std::time::{Duration, Instant};

use crate::harness::{Daemon, Sandbox, Usage};

/// How long the quiet inbox is watched.
const QUIET: Duration = Duration::from_secs(10);
/// CPU the daemon may spend in [`QUIET`]: 3 % of a core, far above what waiting costs and far
/// below what any loop costs.
const QUIET_CPU: f64 = 0.3;
/// Growth of resident memory allowed in [`QUIET`].
const QUIET_RSS_KIB: u64 = 2 * 1024;
/// Wake-ups per second allowed in [`QUIET`]: generous (a polled inbox wakes its poller each
/// second), yet a fixed tick of the main loop (once every `settle/4`, 13 per second here)
/// fails it.
const QUIET_WAKEUPS_PER_SECOND: f64 = 5.0;

/// Warms the daemon up with one upload (so that connection pools and buffers exist), then
/// measures it through [`QUIET`].
fn stays_quiet(s: &Sandbox, daemon: &Daemon, drop_as: &str, business_type: &str) {
    s.drop_package(&drop_as.replace("NAME", "warmup"), "warmup", business_type);
    s.wait_until("the warm-up file in done", Some(daemon), || {
        s.files("done").len() == 1
    });
    let before = daemon.usage();
    let slept_before = daemon.sleeps();
    let start = Instant::now();
    let mut peak = before.rss_kib;
    while start.elapsed() < QUIET {
        std::thread::sleep(Duration::from_millis(500));
        let now: Usage = daemon.usage();
        peak = peak.max(now.rss_kib);
    }
    let after = daemon.usage();
    let wakeups =
        daemon.sleeps().saturating_sub(slept_before) as f64 / start.elapsed().as_secs_f64();
    let cpu = after.cpu - before.cpu;
    eprintln!("idle: {wakeups:.2} wake-ups per second, {cpu:.2} s CPU in {QUIET:?}");
    assert!(
        wakeups < QUIET_WAKEUPS_PER_SECOND,
        "an idle daemon woke up {wakeups:.1} times a second (allowed {QUIET_WAKEUPS_PER_SECOND})\nlog:\n{}",
        daemon.log()
    );
    assert!(
        cpu <= QUIET_CPU,
        "an idle daemon used {cpu:.2} s of CPU in {QUIET:?} (allowed {QUIET_CPU} s)\nlog:\n{}",
        daemon.log()
    );
    assert!(
        peak <= before.rss_kib + QUIET_RSS_KIB,
        "an idle daemon's memory grew from {} KiB to {peak} KiB in {QUIET:?}",
        before.rss_kib
    );
    // Still awake: quiet, not dead.
    s.drop_package(&drop_as.replace("NAME", "after"), "after", business_type);
    s.wait_until(
        "the file dropped after the quiet span in done",
        Some(daemon),
        || s.files("done").len() == 2,
    );
}

#[test]
fn a_quiet_flat_inbox_costs_nothing() {
    let s = Sandbox::new();
    let daemon = s.start();
    stays_quiet(&s, &daemon, "NAME__Build.zip", "Build");
}

#[test]
fn a_quiet_tree_of_folders_costs_nothing() {
    let mut s = Sandbox::new();
    s.watch_extra = "recursive = true".to_owned();
    s.rules = "[[watch.rule]]\ntemplate = \"{business_type}/{plugin_name}.zip\"".to_owned();
    for folder in [
        "inbox/Build",
        "inbox/sub",
        "inbox/a/b/c/d",
        "inbox/Deploy/empty",
    ] {
        std::fs::create_dir_all(s.path(folder)).expect("subfolders");
    }
    let daemon = s.start();
    stays_quiet(&s, &daemon, "Build/NAME.zip", "Build");
}

#[test]
fn a_quiet_polled_inbox_costs_nothing() {
    let mut s = Sandbox::new();
    s.watch_extra = "poll = true\npoll_interval = \"1s\"".to_owned();
    let daemon = s.start();
    stays_quiet(&s, &daemon, "NAME__Build.zip", "Build");
}

/// Files found by the start-up scan raise no event; claiming them renames each out of the
/// inbox, which inotify reports only to a watcher that asked for files leaving. The inbox's
/// watcher does not ask (the main loop had no use for those events, and each woke notify's
/// thread), so a backlog of 200 claimed and filed wakes no watcher thread. Asking for every
/// event, this counted well over a hundred.
#[test]
fn claiming_a_backlog_wakes_no_watcher_thread() {
    const FILES: usize = 200;
    let s = Sandbox::new();
    for i in 0..FILES {
        s.drop_named(&format!("backlog{i}"), "Build");
    }
    let daemon = s.start();
    let before = daemon.sleeps_in("notify-rs");
    s.wait_until("the backlog in done", Some(&daemon), || {
        s.files("done").len() == FILES
    });
    let woke = daemon.sleeps_in("notify-rs").saturating_sub(before);
    eprintln!("watcher threads: {woke} wake-ups while {FILES} files were claimed and filed");
    assert!(
        woke <= 5,
        "the watcher threads woke {woke} times while {FILES} files were claimed and filed\nlog:\n{}",
        daemon.log()
    );
}
