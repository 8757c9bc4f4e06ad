//! A second host (or a second service) on an inbox another extdrop handles: it waits on
//! standby, naming the holder, touches nothing, and takes over — claims included — when the
//! holder dies, so that every file still lands exactly once.

use std::time::Duration;

use extdrop::stub::Fault;
use rustix::process::Signal;

use crate::harness::Sandbox;

#[test]
fn a_standby_takes_over_when_the_active_one_dies_and_every_file_lands_once() {
    let s = Sandbox::new();
    let mut active = s.start();
    let standby = s.start_standby();
    assert!(
        standby.log().contains(&format!(
            "another extdrop process (pid {} on ",
            active.pid()
        )),
        "the standby names the holder:\n{}",
        standby.log()
    );

    // The active one works while the other waits: it files these, the standby sends nothing.
    s.drop_named("first", "Build");
    s.wait_until("the first file in done", Some(&active), || {
        s.files("done") == ["first__Build.zip"]
    });

    // Killed with two uploads in flight: their files stay claimed for whoever comes next.
    s.faults([
        Fault::Delay(Duration::from_secs(60)),
        Fault::Delay(Duration::from_secs(60)),
    ]);
    s.drop_named("inflight1", "Build");
    s.drop_named("inflight2", "Build");
    s.wait_until("two uploads in flight", Some(&active), || {
        s.stub.uploads_started() >= 3
    });
    assert!(
        !standby.log().contains("uploading"),
        "the standby never touches the inbox:\n{}",
        standby.log()
    );
    active.kill9();

    standby.wait_for_log("taking over");
    standby.wait_for_log("every watch is armed");
    s.drop_named("after", "Build");
    s.wait_until("every file in done", Some(&standby), || {
        s.files("done").len() == 4 && s.claims() == 0
    });
    assert_eq!(
        s.files("done"),
        [
            "after__Build.zip",
            "first__Build.zip",
            "inflight1__Build.zip",
            "inflight2__Build.zip"
        ]
    );
    assert!(s.files("failed").is_empty() && s.files("inbox").is_empty());
    for name in ["first", "inflight1", "inflight2", "after"] {
        assert_eq!(s.accepted(name), 1, "{name} accepted exactly once");
    }
    assert!(
        standby.log().contains("resuming a claimed file"),
        "{}",
        standby.log()
    );
}

#[test]
fn a_standby_stops_cleanly_when_asked() {
    let s = Sandbox::new();
    let _active = s.start();
    let mut standby = s.start_standby();
    standby.signal(Signal::TERM);
    let status = standby.wait_exit();
    assert!(status.success(), "{status:?}\n{}", standby.log());
    assert!(!standby.log().contains("every watch is armed"));
}
