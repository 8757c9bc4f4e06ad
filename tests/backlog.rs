//! A backlog costs memory per upload slot, not per file: files ready and waiting for a slot
//! are compact entries of the readiness tracker (a name and its state, a few hundred bytes),
//! not a task each (once 8 KB or so apiece), nor a path held two or three times over.
//!
//! All the files below are present at the start, so they become ready within moments of each
//! other: once the first one is filed, nearly every one of them is waiting for a slot.

use std::time::Duration;

use rustix::process::Signal;

use crate::harness::Sandbox;

/// Files waiting at once, with two upload slots: enough that a cost per waiting file shows
/// above the daemon's own memory.
const BACKLOG: usize = 20_000;
/// Peak resident memory allowed while they wait. Measured in a debug build: each waiting file
/// was once a task (about 10 KiB apiece), then a queued `Found` plus its tracker entry and busy
/// path (about 1.5 KiB apiece: some 55 MiB here); as one compact tracker entry it is 28 MiB
/// with 3,000 files and 32.5 MiB with 20,000 (about 250 bytes apiece).
const BACKLOG_PEAK_RSS_KIB: u64 = 40 * 1024;

#[test]
fn a_backlog_of_files_waiting_for_a_slot_costs_memory_per_slot_not_per_file() {
    let mut s = Sandbox::new();
    s.settle = "50ms".to_owned();
    let sample = s.path("staging/sample.zip");
    extdrop::package::write_sample(&sample, "sample", "Build", "1.0.0").expect("sample");
    for i in 0..BACKLOG {
        std::fs::copy(&sample, s.path(&format!("inbox/p{i:05}__Build.zip"))).expect("backlog");
    }
    let mut daemon = s.start();
    s.wait_until("the first file of the backlog filed", Some(&daemon), || {
        s.files("done").len() + s.files("failed").len() >= 1
    });
    // A moment more, for the memory of whatever was handed out to be touched.
    std::thread::sleep(Duration::from_millis(300));
    let peak = daemon.usage().peak_rss_kib;
    eprintln!("backlog: peak RSS {peak} KiB with {BACKLOG} files waiting");
    assert!(
        s.files("inbox").len() > BACKLOG / 2,
        "most of the backlog still waits in the inbox, unclaimed"
    );
    daemon.signal(Signal::TERM);
    daemon.wait_exit();
    assert!(
        peak <= BACKLOG_PEAK_RSS_KIB,
        "{BACKLOG} files waiting for a slot took the daemon's peak memory to {peak} KiB (allowed {BACKLOG_PEAK_RSS_KIB} KiB)"
    );
}
