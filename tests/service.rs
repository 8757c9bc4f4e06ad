//! Running under systemd: readiness, status and watchdog through a real `NOTIFY_SOCKET`, and
//! configuration reloads on SIGHUP.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::harness::{PATIENCE, Sandbox, second_watch};

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

    /// Reads every message already queued, until none comes for the socket's read timeout.
    fn drain(&self) {
        let mut buf = vec![0u8; 4096];
        while self.socket.recv(&mut buf).is_ok() {}
    }

    /// Whether a message containing `needle` arrives within `window` (the whole window is
    /// waited out when none does).
    fn comes_within(&self, needle: &str, window: Duration) -> bool {
        let deadline = Instant::now() + window;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n]).contains(needle)
            {
                return true;
            }
        }
        false
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

/// The pings come from the main loop itself, not from a thread of their own: when every
/// runtime worker is stuck (here in file handlers blocked for good, as in a call to a hung
/// network file system), the pings stop, and systemd's watchdog restarts the service.
#[test]
fn a_wedged_runtime_stops_the_watchdog_pings() {
    // The runtime has a worker per CPU: one stuck handler for each, and a slot for each.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut s = Sandbox::new();
    let notify = NotifySocket::bind(&mut s);
    s.watchdog = Some(Duration::from_millis(400));
    s.upload = format!("concurrency = {workers}");
    s.env.push((
        "EXTDROP_FAULTS".to_owned(),
        "point=handler,path=wedge,hang".to_owned(),
    ));
    let daemon = s.start();
    // Pinged while healthy.
    notify.wait_for("WATCHDOG=1");
    notify.wait_for("WATCHDOG=1");
    for i in 0..workers {
        s.drop_named(&format!("wedge{i}"), "Build");
    }
    s.wait_until("every worker stuck", Some(&daemon), || {
        daemon.log().matches("injected hang").count() == workers
    });
    // The pings sent before the last worker stuck wait in the socket: read them.
    notify.drain();
    assert!(
        !notify.comes_within("WATCHDOG=1", Duration::from_millis(1200)),
        "pinged with every worker stuck (a ping is due every 200 ms)"
    );
}

#[test]
fn sighup_adds_a_watch_whose_files_are_then_uploaded() {
    let mut s = Sandbox::new();
    let daemon = s.start();
    s.more_watches = second_watch("");
    s.write_config();
    daemon.signal(Signal::HUP);
    daemon.wait_for_log("configuration reloaded");
    s.drop_second("second");
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
            assert_eq!(value["plugin_name"], "json");
            assert_eq!(value["business_type"], "Build");
            assert_eq!(value["status"], 200);
            assert_eq!(value["request_id"].as_str().map(str::len), Some(32));
        }
    }
    assert_eq!(filed, 1);
}

/// GET over a plain socket: the test needs no HTTP client of its own.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Parses the Prometheus text exposition into (name, sorted labels, value) samples, checking
/// every line's shape on the way.
type Sample = (String, Vec<(String, String)>, f64);

fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            assert!(
                comment.starts_with(" TYPE ")
                    || comment.starts_with(" HELP ")
                    || comment.starts_with(" UNIT ")
                    || comment == " EOF",
                "bad comment line: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut labels: Vec<(String, String)> = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair
                            .split_once("=\"")
                            .unwrap_or_else(|| panic!("bad label: {line}"));
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                labels.sort();
                (name.to_owned(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        samples.push((name, labels, value));
    }
    samples
}

#[test]
fn metrics_match_what_happened() {
    use extdrop::stub::Fault;
    let mut s = Sandbox::new();
    s.tables = "[metrics]\nlisten = \"127.0.0.1:0\"".to_owned();
    s.faults([Fault::status(503)]);
    let daemon = s.start();
    let addr = daemon.metrics_address();
    assert_eq!(http_get(&addr, "/healthz").0, 200);

    s.drop_named("one", "Build");
    s.drop_named("two", "Build");
    s.drop_bytes("three__Build.zip", b"not a zip");
    s.wait_until("two done, one failed", Some(&daemon), || {
        s.files("done").len() == 2 && s.files("failed").len() == 1
    });

    // "waiting" is sampled on the daemon's tick and "in progress" drops just after the move, so
    // both may trail the files appearing in done by a moment.
    s.wait_until("the waiting gauge to drop to 0", Some(&daemon), || {
        let body = http_get(&addr, "/metrics").1;
        body.contains("extdrop_files_waiting{watch=\"extensions\"} 0")
            && body.contains("extdrop_files_in_progress{watch=\"extensions\"} 0")
    });
    let (status, body) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    let samples = parse_exposition(&body);
    let value = |name: &str, labels: &[(&str, &str)]| {
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.sort();
        samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{body}"))
    };
    let watch = ("watch", "extensions");
    assert_eq!(
        value("extdrop_files_total", &[watch, ("outcome", "done")]),
        2.0
    );
    assert_eq!(
        value("extdrop_files_total", &[watch, ("outcome", "failed")]),
        1.0
    );
    assert_eq!(
        value(
            "extdrop_upload_attempts_total",
            &[watch, ("result", "uploaded")]
        ),
        2.0
    );
    assert_eq!(
        value(
            "extdrop_upload_attempts_total",
            &[watch, ("result", "transient")]
        ),
        1.0
    );
    let sizes: u64 = s.stub.uploads().iter().filter_map(|u| u.size).sum();
    assert_eq!(
        value("extdrop_uploaded_bytes_total", &[watch]),
        sizes as f64
    );
    assert_eq!(
        value("extdrop_upload_duration_seconds_count", &[watch]),
        3.0
    );
    assert_eq!(value("extdrop_files_waiting", &[watch]), 0.0);
    assert_eq!(value("extdrop_files_in_progress", &[watch]), 0.0);
    assert!(value("extdrop_last_success_timestamp_seconds", &[watch]) > 1.7e9);
    assert_eq!(http_get(&addr, "/nothing").0, 404);
}

#[test]
fn under_journald_auto_logs_are_plain_lines() {
    let mut s = Sandbox::new();
    s.log_format = "auto".to_owned();
    s.env
        .push(("JOURNAL_STREAM".to_owned(), "8:12345".to_owned()));
    let daemon = s.start();
    s.drop_named("journal", "Build");
    s.wait_until("the file in done", Some(&daemon), || {
        s.files("done").len() == 1
    });
    daemon.wait_for_log("filed");
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("filed"))
        .expect("a filed line");
    assert!(
        line.starts_with(" INFO") || line.starts_with("INFO"),
        "no timestamp: {line:?}"
    );
    assert!(!log.contains('\u{1b}'), "no colours");
    assert!(
        line.contains("watch=extensions") && line.contains("outcome=\"done\""),
        "{line}"
    );
}

#[test]
fn a_standby_reports_ready_with_a_status_naming_the_holder() {
    let mut s = Sandbox::new();
    let active = s.start();
    // Only the second process talks to this socket.
    let notify = NotifySocket::bind(&mut s);
    let _standby = s.start_standby();
    notify.wait_for("READY=1");
    let status = notify.wait_for("STATUS=standby");
    assert!(
        status.contains(&format!("pid {} on ", active.pid())),
        "{status}"
    );
}
