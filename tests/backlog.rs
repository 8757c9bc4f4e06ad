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
/// well above the noise of the daemon's own memory.
const BACKLOG: usize = 20_000;
/// The small backlog the large one is measured against, so that what is measured is the cost
/// per waiting file, whatever the daemon's own memory on this machine (its runtime has a
/// thread per core).
const SMALL: usize = 200;
/// Peak resident memory allowed per waiting file beyond the small backlog. Measured in a debug
/// build: each waiting file was once a task (about 10 KiB apiece), then a queued `Found` plus
/// its tracker entry and busy path (about 1.5 KiB apiece); as one compact tracker entry it is
/// about 150 bytes, measured as 0 to 250 (the peak of either run moves by a few MiB with what
/// the first uploads touched).
const PEAK_BYTES_PER_WAITING_FILE: u64 = 600;

/// The daemon's peak resident memory (KiB) with `files` present at start, once the first is
/// filed and (for the large backlog) nearly all the others wait for one of the two slots.
fn peak_rss_kib_with(files: usize) -> u64 {
    let mut s = Sandbox::new();
    s.settle = "50ms".to_owned();
    let sample = s.path("staging/sample.zip");
    extdrop::package::write_sample(&sample, "sample", "Build", "1.0.0").expect("sample");
    for i in 0..files {
        std::fs::copy(&sample, s.path(&format!("inbox/p{i:05}__Build.zip"))).expect("backlog");
    }
    let mut daemon = s.start();
    s.wait_until("the first file of the backlog filed", Some(&daemon), || {
        s.files("done").len() + s.files("failed").len() >= 1
    });
    // A moment more, for the memory of whatever was handed out to be touched.
    std::thread::sleep(Duration::from_millis(300));
    let peak = daemon.usage().peak_rss_kib;
    eprintln!("backlog: peak RSS {peak} KiB with {files} files waiting");
    // The small backlog may be nearly done by now; the large one must be mostly waiting.
    assert!(
        files == SMALL || s.files("inbox").len() > files / 2,
        "most of the backlog still waits in the inbox, unclaimed"
    );
    daemon.signal(Signal::TERM);
    daemon.wait_exit();
    peak
}

#[test]
fn a_backlog_of_files_waiting_for_a_slot_costs_memory_per_slot_not_per_file() {
    let small = peak_rss_kib_with(SMALL);
    let large = peak_rss_kib_with(BACKLOG);
    let per_file = large.saturating_sub(small) * 1024 / (BACKLOG - SMALL) as u64;
    eprintln!("backlog: {per_file} bytes of peak memory per waiting file");
    assert!(
        per_file <= PEAK_BYTES_PER_WAITING_FILE,
        "{BACKLOG} files waiting for a slot took the daemon's peak memory to {large} KiB, {small} KiB with {SMALL}: {per_file} bytes per waiting file (allowed {PEAK_BYTES_PER_WAITING_FILE})"
    );
}
