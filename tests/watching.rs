//! Watching while running: polling inboxes, subfolders that appear, the concurrency bound
//! across watches, and reloads that must not disturb uploads in flight.

use std::time::Duration;

use extdrop::stub::Fault;
use rustix::process::Signal;

use crate::harness::{Sandbox, second_watch};

#[test]
fn a_polled_inbox_is_picked_up() {
    let mut s = Sandbox::new();
    s.watch_extra = "poll = true\npoll_interval = \"200ms\"".to_owned();
    let daemon = s.start();
    s.drop_named("polled", "Build");
    s.wait_until("the polled file in done", Some(&daemon), || {
        s.files("done") == ["polled__Build.zip"]
    });
}

/// Filing does not look for its folder at every file: it makes `done` again when placing a
/// report finds it gone. An operator who removes it while extdrop runs sees the next file
/// filed at once, not an error and a pause.
#[test]
fn a_done_folder_removed_while_running_is_made_again_at_once() {
    let s = Sandbox::new();
    let daemon = s.start();
    s.drop_named("first", "Build");
    s.wait_until("the first file in done", Some(&daemon), || {
        s.files("done") == ["first__Build.zip"]
    });
    std::fs::remove_dir_all(s.path("done")).expect("remove done");
    s.drop_named("second", "Build");
    s.wait_until("the second file in a new done", Some(&daemon), || {
        s.files("done") == ["second__Build.zip"]
    });
    assert_eq!(s.report("done", "second__Build.zip")["outcome"], "done");
    assert!(!daemon.log().contains("cannot file"), "{}", daemon.log());
}

#[test]
fn a_subfolder_created_while_running_is_watched() {
    let mut s = Sandbox::new();
    s.watch_extra = "recursive = true".to_owned();
    s.rules = "[[watch.rule]]\ntemplate = \"{business_type}/{plugin_name}.zip\"".to_owned();
    let daemon = s.start();
    // A whole folder moved in at once, and a file written into a folder made afterwards.
    let staged = s.path("staging/Deploy");
    std::fs::create_dir_all(&staged).expect("staging");
    extdrop::package::write_sample(&staged.join("moved.zip"), "moved", "Deploy", "1.0.0")
        .expect("sample");
    std::fs::rename(&staged, s.path("inbox/Deploy")).expect("move folder in");
    std::fs::create_dir_all(s.path("inbox/Test/deeper")).expect("mkdir");
    s.drop_package("Test/made.zip", "made", "Test");
    s.wait_until("both in done", Some(&daemon), || {
        s.files("done") == ["made.zip", "moved.zip"]
    });
    assert_eq!(s.report("done", "moved.zip")["file"], "Deploy/moved.zip");
}

/// The largest number of requests the stand-in was serving at once.
fn peak_overlap(s: &Sandbox) -> usize {
    let requests = s.requests();
    requests
        .iter()
        .map(|r| {
            requests
                .iter()
                .filter(|o| o.received <= r.received && o.answered.is_none_or(|a| a > r.received))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn concurrency_bounds_uploads_across_all_watches() {
    let mut s = Sandbox::new();
    s.upload = "concurrency = 2".to_owned();
    s.more_watches = second_watch("");
    s.faults((0..6).map(|_| Fault::Delay(Duration::from_millis(400))));
    let daemon = s.start();
    for i in 0..3 {
        s.drop_named(&format!("first{i}"), "Build");
        s.drop_second(&format!("second{i}"));
    }
    s.wait_until("all six filed", Some(&daemon), || {
        s.files("done").len() == 3 && s.files("done2").len() == 3
    });
    assert_eq!(s.requests().len(), 6);
    assert_eq!(
        peak_overlap(&s),
        2,
        "two at a time, never more, across both watches"
    );
}

#[test]
fn a_reload_does_not_disturb_an_upload_in_flight() {
    let mut s = Sandbox::new();
    s.faults([Fault::Delay(Duration::from_millis(1500))]);
    let daemon = s.start();
    s.drop_named("inflight", "Build");
    s.wait_until("the upload in flight", Some(&daemon), || {
        s.stub.uploads_started() == 1
    });
    s.more_watches = second_watch("");
    s.write_config();
    daemon.signal(Signal::HUP);
    daemon.wait_for_log("configuration reloaded");
    s.wait_until("the file in done", Some(&daemon), || {
        s.files("done") == ["inflight__Build.zip"]
    });
    assert_eq!(s.requests().len(), 1, "not cut off, not sent again");
    assert_eq!(s.report("done", "inflight__Build.zip")["attempts"], 1);
}

/// Regression: removing a watch and adding it back while one of its files was uploading
/// started a second handler for the same claim, and the file was uploaded twice.
#[test]
fn removing_and_re_adding_a_watch_never_uploads_a_file_twice() {
    let mut s = Sandbox::new();
    s.more_watches = second_watch("");
    s.faults([Fault::Delay(Duration::from_millis(2000))]);
    let daemon = s.start();
    s.drop_second("busy");
    s.wait_until("the upload in flight", Some(&daemon), || {
        s.stub.uploads_started() == 1
    });

    s.more_watches = String::new();
    s.write_config();
    daemon.signal(Signal::HUP);
    s.wait_until("the first reload", Some(&daemon), || {
        daemon.log().matches("configuration reloaded").count() == 1
    });
    s.more_watches = second_watch("");
    s.write_config();
    daemon.signal(Signal::HUP);
    s.wait_until("the second reload", Some(&daemon), || {
        daemon.log().matches("configuration reloaded").count() == 2
    });

    s.wait_until("the file in done2", Some(&daemon), || {
        s.files("done2") == ["busy__Gate.zip"]
    });
    // A duplicate handler would have started its upload at the second reload, long before the
    // first upload ended; one more file afterwards shows nothing else was sent in between.
    s.drop_named("marker", "Build");
    s.wait_until("a later file in done", Some(&daemon), || {
        s.files("done").len() == 1
    });
    assert_eq!(s.requests().len(), 2, "busy once, marker once");
    assert_eq!(s.files("done2"), ["busy__Gate.zip"]);
}

#[test]
fn an_inbox_removed_or_replaced_while_running_is_watched_again() {
    // The sandbox's rescan_interval is 1h: the periodic rescan cannot be what finds the files
    // below, only a re-armed watch can.
    let s = Sandbox::new();
    let daemon = s.start();
    s.drop_named("before", "Build");
    s.wait_until("the first file in done", Some(&daemon), || {
        s.files("done").len() == 1
    });

    // Removed, work folder and lock included.
    std::fs::remove_dir_all(s.path("inbox")).expect("remove the inbox");
    daemon.wait_for_log("the inbox was removed or replaced");
    s.drop_named("recreated", "Build");
    s.wait_until(
        "the file dropped into the new inbox in done",
        Some(&daemon),
        || s.files("done").len() == 2,
    );

    // Replaced by another folder under the same name.
    std::fs::rename(s.path("inbox"), s.path("old-inbox")).expect("move the inbox away");
    std::fs::create_dir(s.path("inbox")).expect("a new inbox");
    s.wait_until("the replacement noticed", Some(&daemon), || {
        daemon
            .log()
            .matches("the inbox was removed or replaced")
            .count()
            >= 2
    });
    s.drop_named("replaced", "Build");
    s.wait_until(
        "the file dropped into the replacement in done",
        Some(&daemon),
        || s.files("done").len() == 3,
    );
    assert_eq!(
        s.files("done"),
        [
            "before__Build.zip",
            "recreated__Build.zip",
            "replaced__Build.zip"
        ]
    );

    // The new inbox is locked again: a second process is still turned away.
    let (code, log) = s.once();
    assert_eq!(code, 1, "the new inbox's lock is held: {log}");
}
