//! The integration-test harness: a sandbox with inbox/done/failed, a running loopback stand-in
//! with scripted faults, and the real `extdrop` binary started on it, so that a test reads like
//! the operator's story: drop these files, the server fails twice, expect done with attempts 3.
//!
//! Waiting is always "poll a condition until a deadline", never "sleep and hope"; a deadline
//! that passes fails the test with the daemon's log attached.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use extdrop::stub::{Fault, Stub, StubConfig, UploadRecord};
use serde_json::Value;

/// The tenant every sandbox uses.
pub const DOMAIN: &str = "ce8df55870164338a72d7e828a966a2a";
/// The token the stand-in accepts unless a test changes it.
pub const TOKEN: &str = "test-token";
/// How long any single wait may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A temporary installation: folders, configuration and a stand-in endpoint.
pub struct Sandbox {
    dir: tempfile::TempDir,
    /// The loopback stand-in of CodeArts.
    pub stub: Stub,
    /// Extra keys for the `[[watch]]` table.
    pub watch_extra: String,
    /// Extra rules appended after the default one.
    pub rules: String,
    /// The `[auth]` table body.
    pub auth: String,
    /// Extra top-level tables (`[upload]`, `[retry]` overrides are merged by hand).
    pub tables: String,
    /// `[retry]` table body.
    pub retry: String,
    /// `[upload]` table body.
    pub upload: String,
    /// `settle` of the main watch.
    pub settle: String,
    /// `[log] format`.
    pub log_format: String,
    /// More `[[watch]]` tables, appended at the end.
    pub more_watches: String,
    /// Environment variables for `extdrop` (secrets, `CREDENTIALS_DIRECTORY`, `NOTIFY_SOCKET`,
    /// …); nothing else that could hold credentials is inherited.
    pub env: Vec<(String, String)>,
    /// The endpoint in the configuration, when it is not the stand-in's (a port where nothing
    /// listens yet, say).
    pub endpoint: Option<String>,
    /// `WatchdogSec=` as systemd would pass it (`WATCHDOG_USEC`, and `WATCHDOG_PID` = the
    /// daemon's own pid, which needs a shell that `exec`s it to be known in advance).
    pub watchdog: Option<Duration>,
    /// A slow disk: every `fsync`, `fdatasync` and `syncfs` of the daemon made to take this
    /// much longer (`strace`'s delay injection; see [`slow_disk`]). The process the test
    /// holds is then `strace`: signals and `/proc` readings reach it, not the daemon, so only
    /// a test that lets the daemon end by itself (a `once`, an injected kill) may use this.
    pub slow_fsync: Option<Duration>,
}

/// Whether a slow disk can be made up here ([`Sandbox::slow_fsync`]): `strace` is installed and
/// may trace (it needs `ptrace`, which some containers forbid). Says why not, once per caller.
pub fn slow_disk() -> bool {
    let traced = Command::new("strace")
        .args([
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "inject=fsync:delay_exit=1",
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !traced {
        eprintln!("SKIPPED: strace is missing or may not trace here, so no slow disk");
    }
    traced
}

/// Variables through which credentials could leak into a test from the caller's environment.
const CREDENTIAL_VARIABLES: [&str; 9] = [
    "EXTDROP_TOKEN",
    "EXTDROP_PASSWORD",
    "EXTDROP_ACCESS_KEY",
    "EXTDROP_SECRET_KEY",
    "EXTDROP_SECURITY_TOKEN",
    "CREDENTIALS_DIRECTORY",
    "HUAWEICLOUD_SDK_AK",
    "HUAWEICLOUD_SDK_SK",
    "HUAWEICLOUD_SDK_SECURITY_TOKEN",
];

impl Sandbox {
    /// A sandbox whose stand-in accepts [`TOKEN`].
    pub fn new() -> Sandbox {
        let mut config = StubConfig::new(DOMAIN);
        config.auth = extdrop::stub::StubAuth::Tokens(vec![TOKEN.to_owned()]);
        Sandbox::with_stub_config(config)
    }

    /// A sandbox whose stand-in runs with `config` (its `domain_id` should be [`DOMAIN`]); the
    /// `[auth]` table still holds [`TOKEN`] until the test sets another.
    pub fn with_stub_config(config: StubConfig) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("extdrop-test-")
            .tempdir()
            .expect("temp dir");
        let stub = Stub::start_background(config).expect("stub starts");
        for sub in ["inbox", "done", "failed", "staging"] {
            fs::create_dir_all(dir.path().join(sub)).expect("folders");
        }
        Sandbox {
            dir,
            stub,
            watch_extra: String::new(),
            rules: String::new(),
            auth: format!("token = \"{TOKEN}\""),
            tables: String::new(),
            retry: "initial_delay = \"50ms\"\nmax_delay = \"200ms\"\njitter = 0.0\nmax_attempts = 5\nmax_elapsed = \"1m\"".to_owned(),
            upload: "concurrency = 2".to_owned(),
            more_watches: String::new(),
            env: Vec::new(),
            log_format: "text".to_owned(),
            settle: "300ms".to_owned(),
            watchdog: None,
            endpoint: None,
            slow_fsync: None,
        }
    }

    /// The sandbox folder.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A folder of the sandbox, e.g. `inbox`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The configuration text.
    pub fn config_text(&self) -> String {
        format!(
            r#"[codearts]
endpoint = "{endpoint}"
domain_id = "{DOMAIN}"
connect_timeout = "2s"
request_timeout = "20s"

[auth]
{auth}

[upload]
{upload}

[retry]
{retry}

[log]
format = "{log_format}"
level = "extdrop=debug,info"

{tables}

[[watch]]
name = "extensions"
inbox = "inbox"
done = "done"
failed = "failed"
settle = "{settle}"
rescan_interval = "1h"
{watch_extra}

[[watch.rule]]
template = "{{plugin_name}}__{{business_type}}.zip"
{rules}
{more_watches}
"#,
            endpoint = self
                .endpoint
                .clone()
                .unwrap_or_else(|| self.stub.endpoint()),
            auth = self.auth,
            upload = self.upload,
            retry = self.retry,
            tables = self.tables,
            watch_extra = self.watch_extra,
            rules = self.rules,
            more_watches = self.more_watches,
            log_format = self.log_format,
            settle = self.settle,
        )
    }

    /// Writes the configuration and returns its path.
    pub fn write_config(&self) -> PathBuf {
        let path = self.path("config.toml");
        fs::write(&path, self.config_text()).expect("write config");
        path
    }

    /// Drops a valid package into the inbox (written aside, then renamed in, as a careful
    /// operator would).
    pub fn drop_package(&self, rel: &str, plugin_name: &str, business_type: &str) -> PathBuf {
        let staged = self.path("staging").join(rel.replace('/', "_"));
        extdrop::package::write_sample(&staged, plugin_name, business_type, "1.0.0")
            .expect("sample package");
        self.drop_file(rel, &staged)
    }

    /// Drops a package named `{plugin_name}__{business_type}.zip`.
    pub fn drop_named(&self, plugin_name: &str, business_type: &str) -> PathBuf {
        self.drop_package(
            &format!("{plugin_name}__{business_type}.zip"),
            plugin_name,
            business_type,
        )
    }

    /// Renames a prepared file into the inbox at `rel`.
    pub fn drop_file(&self, rel: &str, prepared: &Path) -> PathBuf {
        let target = self.path("inbox").join(rel);
        fs::create_dir_all(target.parent().expect("parent")).expect("subfolder");
        fs::rename(prepared, &target).expect("drop");
        target
    }

    /// Writes arbitrary bytes into the inbox at `rel`.
    pub fn drop_bytes(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let staged = self.path("staging").join(rel.replace('/', "_"));
        fs::write(&staged, bytes).expect("write");
        self.drop_file(rel, &staged)
    }

    /// The `extdrop` command with this sandbox's configuration.
    pub fn command(&self, args: &[&str]) -> Command {
        let config = self.write_config();
        let mut cmd = match (self.watchdog, self.slow_fsync) {
            (None, None) => Command::new(env!("CARGO_BIN_EXE_extdrop")),
            (None, Some(delay)) => {
                let syncs = "fsync,fdatasync,syncfs";
                let mut strace = Command::new("strace");
                strace
                    .args(["-f", "-qq", "-o", "/dev/null", "-e"])
                    .arg(format!("trace={syncs}"))
                    .arg("-e")
                    .arg(format!("inject={syncs}:delay_exit={}", delay.as_micros()))
                    .arg(env!("CARGO_BIN_EXE_extdrop"));
                strace
            }
            // A watchdog's pid must be the daemon's own, which it is not under strace: a
            // watchdog test runs on the real disk.
            (Some(timeout), _) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
                    .arg(env!("CARGO_BIN_EXE_extdrop"))
                    .env("WATCHDOG_USEC", timeout.as_micros().to_string());
                sh
            }
        };
        cmd.arg("-c")
            .arg(config)
            .args(args)
            .current_dir(self.root());
        for name in CREDENTIAL_VARIABLES {
            cmd.env_remove(name);
        }
        // A panic's backtrace, symbolised from a debug build's DWARF, costs over 100 MiB: the
        // tests that inject panics would exceed the memory bound for that alone.
        cmd.env("RUST_BACKTRACE", "0")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_PID")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs `extdrop ARGS` to completion (bounded by [`PATIENCE`]).
    pub fn run(&self, args: &[&str]) -> Output {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn extdrop");
        let (started, deadline) = (Instant::now(), Instant::now() + PATIENCE);
        let mut usage = Usage::default();
        loop {
            // Read before reaping: an exited child's final CPU time stays readable until then.
            if let Some(now) = Usage::of(child.id()) {
                usage = Usage {
                    peak_rss_kib: now.peak_rss_kib.max(usage.peak_rss_kib),
                    ..now
                };
            }
            if child.try_wait().expect("wait").is_some() {
                let out = child.wait_with_output().expect("output");
                check_usage(
                    usage,
                    started,
                    Bounds::default(),
                    &String::from_utf8_lossy(&out.stderr),
                );
                return out;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "extdrop {args:?} did not finish within {PATIENCE:?}\nstderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `extdrop once`, returning its exit code and stderr.
    pub fn once(&self) -> (i32, String) {
        let out = self.run(&["once"]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts `extdrop run` and waits until every watch is armed.
    pub fn start(&self) -> Daemon {
        let daemon = self.spawn_run();
        daemon.wait_for_log("every watch is armed");
        daemon
    }

    /// Starts `extdrop run` while another one holds the inbox, and waits until it says it is
    /// on standby.
    pub fn start_standby(&self) -> Daemon {
        let daemon = self.spawn_run();
        daemon.wait_for_log("standby: inbox");
        daemon
    }

    /// Starts `extdrop run` without waiting for it to arm its watches.
    pub fn spawn_run(&self) -> Daemon {
        let log = self.path(&format!("daemon-{}.log", fastrand::u32(..)));
        let child = self
            .command(&["run"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn extdrop run");
        let mut daemon = Daemon::new(child, log);
        daemon.traced = self.slow_fsync.is_some() && self.watchdog.is_none();
        daemon
    }

    /// Names of the files (not reports, not files extdrop is still writing) in a folder of the
    /// sandbox, sorted.
    pub fn files(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path(rel))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter(|n| !n.ends_with(".result.json") && !is_being_written(n))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The report of a filed file, e.g. `report("done", "a__Build.zip")`.
    pub fn report(&self, folder: &str, name: &str) -> Value {
        let path = self.path(folder).join(format!("{name}.result.json"));
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("no report {}: {e}", path.display()));
        serde_json::from_str(&text).expect("report is JSON")
    }

    /// Claim folders left in the inbox's work folder.
    pub fn claims(&self) -> usize {
        // One folder per claim; the inbox lock file and the hidden folder of claim folders
        // kept for reuse are not claims.
        fs::read_dir(self.path("inbox/.extdrop"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    }

    /// How many uploads of `plugin_name` the stand-in accepted.
    pub fn accepted(&self, plugin_name: &str) -> usize {
        self.stub
            .uploads()
            .iter()
            .filter(|u| u.plugin_name.as_deref() == Some(plugin_name))
            .count()
    }

    /// Upload requests the stand-in received.
    pub fn requests(&self) -> Vec<UploadRecord> {
        self.stub.requests()
    }

    /// Scripts the stand-in's next answers.
    pub fn faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.stub.push_faults(faults);
    }

    /// Polls `condition` until it holds, or fails the test naming `what`.
    pub fn wait_until(&self, what: &str, daemon: Option<&Daemon>, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition() {
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\ninbox {:?} done {:?} failed {:?} requests {}\ndaemon log:\n{}",
                    self.files("inbox"),
                    self.files("done"),
                    self.files("failed"),
                    self.requests().len(),
                    daemon.map(Daemon::log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// Whether `name` is the hidden temporary extdrop writes a report (or a claim record) to
/// before renaming it into place: counting it made "one file in done" come true too early.
fn is_being_written(name: &str) -> bool {
    name.starts_with(extdrop::store::TEMP_PREFIX)
        || (name.starts_with('.') && name.contains(".tmp-"))
}

/// A running `extdrop run`; killed when dropped. Every daemon's CPU time and peak memory are
/// checked against [`Bounds`] when it exits or is dropped, so that a busy loop or a leak fails
/// whatever test it happens in.
pub struct Daemon {
    child: Child,
    log: PathBuf,
    started: Instant,
    usage: std::cell::Cell<Usage>,
    /// What this daemon may cost; a test that drives much work may raise it.
    pub bounds: Bounds,
    /// Whether `child` is the `strace` of a slow disk, the daemon its child.
    traced: bool,
}

/// What a daemon may cost: generous, so that only a runaway process fails, never a slow
/// machine.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// CPU seconds allowed regardless of run time (start-up, the test's uploads).
    pub cpu_base: f64,
    /// Further CPU seconds per second of run time (a busy loop costs about 1.0).
    pub cpu_per_second: f64,
    /// Peak resident memory (`VmHWM`), in MiB.
    pub peak_rss_mib: u64,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            cpu_base: 1.5,
            cpu_per_second: 0.25,
            peak_rss_mib: 100,
        }
    }
}

/// A process's cost so far, read from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User plus system CPU time, in seconds.
    pub cpu: f64,
    /// Peak resident memory (`VmHWM`), in KiB; 0 once the process is a zombie.
    pub peak_rss_kib: u64,
    /// Resident memory now (`VmRSS`), in KiB.
    pub rss_kib: u64,
}

/// Fails the test if a process that ran since `started` cost more than `bounds` allow.
fn check_usage(usage: Usage, started: Instant, bounds: Bounds, log: &str) {
    let wall = started.elapsed().as_secs_f64();
    let cpu_allowed = bounds.cpu_base + bounds.cpu_per_second * wall;
    if std::env::var_os("EXTDROP_TEST_USAGE").is_some() {
        eprintln!(
            "extdrop usage: cpu {:.2} s over {wall:.1} s, peak RSS {} MiB",
            usage.cpu,
            usage.peak_rss_kib / 1024
        );
    }
    assert!(
        usage.cpu <= cpu_allowed,
        "extdrop used {:.2} s of CPU in {wall:.1} s (allowed {cpu_allowed:.1} s): a busy loop?\nlog:\n{log}",
        usage.cpu,
    );
    assert!(
        usage.peak_rss_kib <= bounds.peak_rss_mib * 1024,
        "extdrop's peak memory was {} MiB (allowed {} MiB): a leak?\nlog:\n{log}",
        usage.peak_rss_kib / 1024,
        bounds.peak_rss_mib
    );
}

impl Usage {
    /// Reads the usage of process `pid`; `None` once it is gone (reaped).
    pub fn of(pid: u32) -> Option<Usage> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) in its parentheses; utime and
        // stime are fields 14 and 15 of the line, in USER_HZ ticks (100 per second on Linux).
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Some(Usage {
            cpu: ticks as f64 / 100.0,
            peak_rss_kib: kib("VmHWM:"),
            rss_kib: kib("VmRSS:"),
        })
    }
}

impl Daemon {
    fn new(child: Child, log: PathBuf) -> Daemon {
        Daemon {
            child,
            log,
            started: Instant::now(),
            usage: Default::default(),
            bounds: Bounds::default(),
            traced: false,
        }
    }

    /// The daemon's own process: under `strace` (a slow disk), its child, which a signal
    /// must reach (`strace` killed leaves it running, detached).
    fn daemon_pid(&self) -> Option<rustix::process::Pid> {
        let pid = self.child.id();
        let pid = if self.traced {
            fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?
        } else {
            pid
        };
        rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)
    }

    /// The process's cost now (the last one seen, once it has exited).
    pub fn usage(&self) -> Usage {
        if let Some(now) = Usage::of(self.child.id()) {
            let seen = self.usage.get();
            self.usage.set(Usage {
                peak_rss_kib: now.peak_rss_kib.max(seen.peak_rss_kib),
                ..now
            });
        }
        self.usage.get()
    }

    /// Fails the test if the daemon cost more than its [`Bounds`].
    fn check_bounds(&self) {
        check_usage(self.usage.get(), self.started, self.bounds, &self.log());
    }

    /// The `host:port` of the metrics endpoint, as the daemon logged it (with `[metrics]`
    /// listening on port 0).
    pub fn metrics_address(&self) -> String {
        self.log()
            .split("metrics on http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("the log names the metrics address")
            .to_owned()
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "daemon never logged {needle:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = self.daemon_pid().expect("the daemon's pid");
        rustix::process::kill_process(pid, signal).expect("kill");
    }

    /// Waits for the process to exit (bounded by [`PATIENCE`]).
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.wait_exit_unless(|| false)
            .expect("a condition that never holds")
    }

    /// Waits for the process to exit, or for `settled` to hold while it still runs (then
    /// `None`, the process left running), whichever comes first; bounded by [`PATIENCE`].
    pub fn wait_exit_unless(&mut self, settled: impl Fn() -> bool) -> Option<ExitStatus> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            // Read before reaping: an exited child's final CPU time stays readable until then.
            self.usage();
            if let Some(status) = self.child.try_wait().expect("wait") {
                self.check_bounds();
                return Some(status);
            }
            if settled() {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many times the daemon's threads have gone to sleep so far (voluntary context
    /// switches, summed over its threads): each is a wake-up to come. Threads that ended
    /// take their counts with them, so compare two readings with `saturating_sub`.
    pub fn sleeps(&self) -> u64 {
        self.sleeps_in("")
    }

    /// As [`Daemon::sleeps`], over the threads whose name starts with `thread` (a Linux thread
    /// name is cut at 15 bytes: notify's watchers are `notify-rs inoti`).
    pub fn sleeps_in(&self, thread: &str) -> u64 {
        let Ok(threads) = fs::read_dir(format!("/proc/{}/task", self.child.id())) else {
            return 0;
        };
        threads
            .flatten()
            .filter_map(|t| fs::read_to_string(t.path().join("status")).ok())
            .filter(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Name:"))
                    .is_some_and(|name| name.trim().starts_with(thread))
            })
            .filter_map(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .sum()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        self.usage();
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.check_bounds();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let running = self.child.try_wait().ok().flatten().is_none();
        if running {
            self.usage();
            if let Some(pid) = self.daemon_pid().filter(|_| self.traced) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if running && !std::thread::panicking() {
            self.check_bounds();
        }
    }
}

/// A `[[watch]]` table for a second watch, "second", over `inbox2`/`done2`/`failed2`, with
/// `extra` keys.
pub fn second_watch(extra: &str) -> String {
    format!(
        r#"
[[watch]]
name = "second"
inbox = "inbox2"
done = "done2"
failed = "failed2"
settle = "300ms"
{extra}

[[watch.rule]]
template = "{{plugin_name}}__{{business_type}}.zip"
"#
    )
}

impl Sandbox {
    /// Drops `{name}__Gate.zip` into the second watch's inbox (see [`second_watch`]).
    pub fn drop_second(&self, name: &str) {
        let staged = self.path(&format!("staging/{name}__Gate.zip"));
        extdrop::package::write_sample(&staged, name, "Gate", "1.0.0").expect("sample");
        std::fs::create_dir_all(self.path("inbox2")).expect("inbox2");
        std::fs::rename(&staged, self.path(&format!("inbox2/{name}__Gate.zip"))).expect("drop");
    }
}
