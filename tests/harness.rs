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
    /// `WatchdogSec=` as systemd would pass it (`WATCHDOG_USEC`, and `WATCHDOG_PID` = the
    /// daemon's own pid, which needs a shell that `exec`s it to be known in advance).
    pub watchdog: Option<Duration>,
}

/// Variables through which credentials could leak into a test from the caller's environment.
const CREDENTIAL_VARIABLES: [&str; 6] = [
    "EXTDROP_TOKEN",
    "EXTDROP_PASSWORD",
    "EXTDROP_ACCESS_KEY",
    "EXTDROP_SECRET_KEY",
    "EXTDROP_SECURITY_TOKEN",
    "CREDENTIALS_DIRECTORY",
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
            endpoint = self.stub.endpoint(),
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
        let mut cmd = match self.watchdog {
            None => Command::new(env!("CARGO_BIN_EXE_extdrop")),
            Some(timeout) => {
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
        cmd.env_remove("RUST_LOG")
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
        let deadline = Instant::now() + PATIENCE;
        loop {
            if child.try_wait().expect("wait").is_some() {
                return child.wait_with_output().expect("output");
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
        let log = self.path(&format!("daemon-{}.log", fastrand::u32(..)));
        let child = self
            .command(&["run"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn extdrop run");
        let daemon = Daemon { child, log };
        daemon.wait_for_log("every watch is armed");
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
        // One folder per claim; the inbox lock file is not a claim.
        fs::read_dir(self.path("inbox/.extdrop"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .count()
            })
            .unwrap_or(0)
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

/// A running `extdrop run`; killed when dropped.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
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
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("kill");
    }

    /// Waits for the process to exit (bounded by [`PATIENCE`]).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
