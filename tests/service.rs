//! Running under systemd: readiness, status and watchdog through a real `NOTIFY_SOCKET`, and
//! configuration reloads on SIGHUP.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::harness::{PATIENCE, Sandbox};

/// A datagram socket standing in for systemd's notification socket.
struct NotifySocket {
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind(s: &mut Sandbox) -> NotifySocket {
        let path = s.path("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        s.env
            .push(("NOTIFY_SOCKET".to_owned(), path.display().to_string()));
        NotifySocket { socket }
    }

    /// Receives messages until one contains `needle`; returns it.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if message.contains(needle) {
                    return message;
                }
            }
        }
        panic!("no notification containing {needle:?}");
    }
}

#[test]
fn ready_comes_only_once_a_file_dropped_right_after_it_is_processed() {
    let mut s = Sandbox::new();
    let notify = NotifySocket::bind(&mut s);
    let daemon = s.start();
    notify.wait_for("READY=1");
    s.drop_named("right_after_ready", "Build");
    s.wait_until("the file in done", Some(&daemon), || {
        s.files("done").len() == 1
    });
    notify.wait_for("STATUS=0 waiting, 0 in progress, 1 done, 0 failed");
}

#[test]
fn the_watchdog_is_pinged_at_half_its_timeout() {
    let mut s = Sandbox::new();
    let notify = NotifySocket::bind(&mut s);
    s.watchdog = Some(Duration::from_millis(400));
    let _daemon = s.start();
    notify.wait_for("WATCHDOG=1");
    let started = Instant::now();
    for _ in 0..10 {
        notify.wait_for("WATCHDOG=1");
    }
    // Ten pings at one per 200 ms: well under the 400 ms timeout each, and not a flood.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took <= Duration::from_secs(6),
        "{took:?}"
    );
}

#[test]
fn sighup_adds_a_watch_whose_files_are_then_uploaded() {
    let mut s = Sandbox::new();
    let daemon = s.start();
    s.more_watches = r#"
[[watch]]
name = "second"
inbox = "inbox2"
done = "done2"
failed = "failed2"
settle = "300ms"

[[watch.rule]]
template = "{plugin_name}__{business_type}.zip"
"#
    .to_owned();
    s.write_config();
    daemon.signal(Signal::HUP);
    daemon.wait_for_log("configuration reloaded");
    let staged = s.path("staging/second__Gate.zip");
    extdrop::package::write_sample(&staged, "second", "Gate", "1.0.0").expect("sample");
    std::fs::rename(&staged, s.path("inbox2/second__Gate.zip")).expect("drop");
    s.wait_until("the new watch's file in done2", Some(&daemon), || {
        s.files("done2") == ["second__Gate.zip"]
    });
    assert_eq!(s.report("done2", "second__Gate.zip")["watch"], "second");
    // The first watch still works.
    s.drop_named("first", "Build");
    s.wait_until("the first watch's file in done", Some(&daemon), || {
        s.files("done").len() == 1
    });
}

#[test]
fn a_broken_config_on_sighup_leaves_the_old_one_working() {
    let s = Sandbox::new();
    let daemon = s.start();
    std::fs::write(s.path("config.toml"), "[codearts]\nendpoint = 42\n").expect("break config");
    daemon.signal(Signal::HUP);
    daemon.wait_for_log("reload refused");
    assert!(
        daemon.log().contains("config.toml:2:"),
        "the log names the place:\n{}",
        daemon.log()
    );
    s.drop_named("still", "Build");
    s.wait_until(
        "the file in done under the old configuration",
        Some(&daemon),
        || s.files("done").len() == 1,
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_fields() {
    let mut s = Sandbox::new();
    s.log_format = "json".to_owned();
    let daemon = s.start();
    daemon.wait_for_log("every watch is armed");
    s.drop_named("json", "Build");
    s.wait_until("the file in done", Some(&daemon), || {
        s.files("done").len() == 1
    });
    daemon.wait_for_log("\"filed\"");
    let mut filed = 0;
    for line in daemon.log().lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if value["message"] == "filed" {
            filed += 1;
            assert_eq!(value["watch"], "extensions");
            assert_eq!(value["file"], "json__Build.zip");
            assert_eq!(value["outcome"], "done");
        }
    }
    assert_eq!(filed, 1);
}
