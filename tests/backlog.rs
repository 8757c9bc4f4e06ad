//! A backlog costs memory per upload slot, not per file: files ready and waiting for a slot
//! are a queue of paths in the main loop, not a task each (once 8 KB or so apiece).
//!
//! All the files below are present at the start, so they become ready in the same look and
//! are handed out together: once the first one is filed, every one of them is waiting.

use std::time::Duration;

use rustix::process::Signal;

use crate::harness::Sandbox;

/// Files waiting at once, with two upload slots.
const BACKLOG: usize = 3_000;
/// Peak resident memory allowed while they wait. Measured in a debug build: 24 MiB with 10
/// files waiting; with 3,000, 54 MiB when each waiting file was a task (about 10 KiB apiece)
/// and 29 MiB as a queue (about 1.5 KiB apiece, the readiness tracker's entry included).
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
