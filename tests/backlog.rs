//! A backlog costs memory per upload slot, not per file: files ready and waiting for a slot
//! are compact entries of the readiness tracker (a name and its state, a few hundred bytes),
//! not a task each (once 8 KB or so apiece), nor a path held two or three times over.
//!
//! All the files below are present at the start, so they become ready within moments of each
//! other: once the first one is filed, nearly every one of them is waiting for a slot.

use std::time::Duration;

use rustix::process::Signal;

use extdrop::stub::Fault;

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

/// Writes one sample package and `files` copies of it into `folder` of the sandbox, named
/// `p00000__Build.zip`, …; returns their names.
fn copies_of_a_sample(s: &Sandbox, folder: &str, files: usize) -> Vec<String> {
    let sample = s.path("staging/sample.zip");
    extdrop::package::write_sample(&sample, "sample", "Build", "1.0.0").expect("sample");
    let names: Vec<String> = (0..files).map(|i| format!("p{i:05}__Build.zip")).collect();
    for name in &names {
        std::fs::copy(&sample, s.path(&format!("{folder}/{name}"))).expect("copy the sample");
    }
    names
}

/// The daemon's peak resident memory (KiB) with `files` present at start, once the first is
/// filed and (for the large backlog) nearly all the others wait for one of the two slots.
fn peak_rss_kib_with(files: usize) -> u64 {
    let mut s = Sandbox::new();
    s.settle = "50ms".to_owned();
    copies_of_a_sample(&s, "inbox", files);
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

/// Claims run ahead of the uploads, so that their barriers overlap the uploads, but only by
/// [`CLAIMS_AHEAD`] files: the rest of a backlog stays unclaimed in the inbox, where an
/// operator can still take a file back, however long the uploads take.
#[test]
fn claims_run_ahead_of_a_slow_upload_by_a_bounded_number_of_files() {
    use extdrop::daemon::CLAIMS_AHEAD;
    let files = CLAIMS_AHEAD + 8;
    let mut s = Sandbox::new();
    s.upload = "concurrency = 1\nvalidate_package = false".to_owned();
    // The one upload slot is held by each of the first two uploads for long enough that an
    // unbounded claimer would have taken every file out of the inbox many times over.
    let slow = Fault::Delay(Duration::from_secs(2));
    s.faults([slow.clone(), slow]);
    for i in 0..files {
        s.drop_bytes(&format!("p{i:02}__Build.zip"), b"package");
    }
    let daemon = s.start();
    s.wait_until(
        "the claims ahead of the first upload",
        Some(&daemon),
        || s.stub.uploads_started() == 1 && s.claims() == CLAIMS_AHEAD + 1,
    );
    // Once the first upload has ended, the next file has the slot and one more file a claim;
    // the first one may still be being filed.
    s.wait_until("the second upload", Some(&daemon), || {
        s.stub.uploads_started() == 2
    });
    let (claims, waiting, done) = (s.claims(), s.files("inbox").len(), s.files("done").len());
    // (A claim folder is counted from the moment it is made, before its file is renamed in:
    // the three counts may add up to more than the files.)
    assert!(
        claims <= CLAIMS_AHEAD + 2 && waiting + CLAIMS_AHEAD + 2 + done >= files,
        "{claims} claimed, {waiting} in the inbox, {done} done: claims ran ahead of the uploads by more than {CLAIMS_AHEAD}"
    );
    s.wait_until("every file filed", Some(&daemon), || {
        s.files("done").len() == files
    });
}

/// The daemon's open descriptors now.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |fds| fds.count())
}

/// A resource bound on descriptors, as the harness keeps on CPU and memory: a descriptor left
/// open per file (a report, a record, a file sent, a connection) runs a long-lived daemon into
/// its limit. The ones it keeps on purpose are bounded: a claim's record held open for its
/// saves, also while its folder waits for reuse (`store::held`), and the upload connections.
#[test]
fn open_descriptors_stay_bounded_however_many_files_are_filed() {
    /// Files filed: several times the claims in flight at once, whose folders are the ones
    /// kept for reuse, so that a descriptor kept per file would show.
    const FILES: usize = 400;
    /// Descriptors allowed above the idle daemon's: the claims in flight (32 ahead, the upload
    /// slots and the filings waiting for a barrier), whose records stay open while their
    /// folders wait for reuse, and, per upload slot, the file sent and its connection, with
    /// room to spare.
    const ABOVE_IDLE: usize = 160;
    let mut s = Sandbox::new();
    s.settle = "50ms".to_owned();
    // The package check is not what is measured: every file is one sample, under its own name.
    s.upload = "validate_package = false".to_owned();
    let names = copies_of_a_sample(&s, "staging", FILES);
    let mut daemon = s.start();
    let pid = daemon.pid();
    let idle = descriptors(pid);
    for name in names {
        std::fs::rename(
            s.path(&format!("staging/{name}")),
            s.path(&format!("inbox/{name}")),
        )
        .expect("drop");
    }
    let peak = std::cell::Cell::new(idle);
    s.wait_until("every file filed", Some(&daemon), || {
        peak.set(peak.get().max(descriptors(pid)));
        s.files("done").len() + s.files("failed").len() == FILES
    });
    let after = descriptors(pid);
    eprintln!(
        "descriptors: idle {idle}, peak {}, after {FILES} files {after}",
        peak.get()
    );
    assert_eq!(
        s.files("done").len(),
        FILES,
        "every file uploaded and filed in done"
    );
    assert!(
        peak.get() <= idle + ABOVE_IDLE,
        "the daemon held {} descriptors while filing {FILES} files, {idle} when idle (allowed {ABOVE_IDLE} more)",
        peak.get()
    );
    assert!(
        after <= idle + ABOVE_IDLE,
        "{after} descriptors stayed open after {FILES} files were filed, {idle} before"
    );
    daemon.signal(Signal::TERM);
    daemon.wait_exit();
}
