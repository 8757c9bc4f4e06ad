//! The pipeline benchmark of issue 9: the real `extdrop` binary against its alternatives (a bash
//! `curl -F` + `mv` loop, one `curl --parallel`, `curl -F`), in the same run, on the same files,
//! against a loopback sink fast enough not to be what is measured.
//!
//! Run with `cargo bench --bench pipeline` (release build). It prints one Markdown table, each
//! figure next to its target from issue 9 (PASS/MISS), and writes the table to
//! `target/bench-report.md` (or `$EXTDROP_BENCH_REPORT`). It exits 0 whatever the figures say:
//! they are figures, not assertions; it panics only when something broke (a file not filed,
//! a tool failing). Sizes shrink for a quick run through the `EXTDROP_BENCH_*` variables below.
//!
//! The sink is a purpose-built hyper server in this process, not nginx: nginx's `return 200`
//! answers before it has read the body, so its timings would not show the upload's speed; this
//! sink reads and discards every byte, then answers `true`, and records when each request's
//! head arrived and when its body ended (for MB/s at the sink and rename → request latency).

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;

const DOMAIN: &str = "ce8df55870164338a72d7e828a966a2a";
/// Settle of every watch in the benchmark, as in the issue's measurements.
const SETTLE_MS: u64 = 200;
/// Upload concurrency of extdrop and `--parallel-max` of curl.
const CONCURRENCY: usize = 8;
/// Size of each burst and backlog file.
const SMALL_FILE: usize = 4096;
/// Linux reports CPU time in /proc in USER_HZ, which the kernel ABI fixes at 100.
const TICK_MS: f64 = 10.0;

/// A number from the environment, or its default: the knobs that shrink a run.
fn knob(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {text:?}")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------------------------
// The sink

/// One request the sink answered.
#[derive(Clone, Debug)]
struct Hit {
    /// `plugin_name` from the query string: which file this was.
    plugin: String,
    /// When the request head had been read.
    arrived: Instant,
    /// When the last byte of the body had been read.
    finished: Instant,
    /// Body bytes read.
    bytes: u64,
}

/// The loopback CodeArts stand-in for throughput: reads every body, answers `true`.
struct Sink {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Kept alive for the server's tasks; dropped at the end of the run.
    _runtime: tokio::runtime::Runtime,
}

impl Sink {
    /// Starts the sink on 127.0.0.1 on its own two worker threads.
    fn start() -> Sink {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("sink runtime");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("sink bind");
        std_listener
            .set_nonblocking(true)
            .expect("sink non-blocking");
        let addr = std_listener.local_addr().expect("sink address");
        let hits = Arc::new(Mutex::new(Vec::new()));
        let path: Arc<str> = format!("/v3/{DOMAIN}/extension/upload").into();
        let shared = Arc::clone(&hits);
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("sink listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                // Small requests back to back: Nagle would only add delay.
                let _ = stream.set_nodelay(true);
                let hits = Arc::clone(&shared);
                let path = Arc::clone(&path);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        answer(request, Arc::clone(&hits), Arc::clone(&path))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Sink {
            addr,
            hits,
            _runtime: runtime,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn upload_url(&self) -> String {
        format!("{}/v3/{DOMAIN}/extension/upload", self.endpoint())
    }

    /// Requests answered since the last [`Sink::take`].
    fn count(&self) -> usize {
        self.hits.lock().expect("sink log").len()
    }

    /// The requests answered so far, emptying the log for the next scenario.
    fn take(&self) -> Vec<Hit> {
        std::mem::take(&mut *self.hits.lock().expect("sink log"))
    }
}

/// Reads and discards the whole body, then answers 200 `true` to an upload (404 otherwise).
async fn answer(
    request: Request<Incoming>,
    hits: Arc<Mutex<Vec<Hit>>>,
    path: Arc<str>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = Instant::now();
    let upload = request.method() == Method::POST && request.uri().path() == &*path;
    let plugin = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("plugin_name=")))
        .unwrap_or("")
        .to_owned();
    let mut body = request.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let finished = Instant::now();
    if !upload {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = hyper::StatusCode::NOT_FOUND;
        return Ok(response);
    }
    hits.lock().expect("sink log").push(Hit {
        plugin,
        arrived,
        finished,
        bytes,
    });
    Ok(Response::new(Full::new(Bytes::from_static(b"true"))))
}

// ---------------------------------------------------------------------------------------------
// The daemon and its /proc figures

/// A sandbox with inbox/done/failed and a staging folder on the same file system, so a drop
/// is a rename as an operator's tool would do it.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        // Each case starts with nothing dirty in the page cache: what the build or the case
        // before left unwritten is not paid for by this one (extdrop's barriers write out, or
        // step around, the dirty data they find; see `store::commit`).
        let synced = Command::new("sync").status().expect("run sync");
        assert!(synced.success(), "sync failed");
        let dir = tempfile::Builder::new()
            .prefix("extdrop-bench-")
            .tempdir()
            .expect("temp dir");
        for sub in ["inbox", "done", "failed", "stage", "moved"] {
            fs::create_dir_all(dir.path().join(sub)).expect("sandbox folders");
        }
        Sandbox { dir }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Writes the extdrop configuration for this sandbox and returns its path.
    fn config(&self, sink: &Sink) -> PathBuf {
        let path = self.path("config.toml");
        let text = format!(
            r#"[codearts]
endpoint = "{endpoint}"
domain_id = "{DOMAIN}"
[auth]
token = "bench"
[upload]
concurrency = {CONCURRENCY}
max_file_size = "4GiB"
validate_package = false
[log]
format = "text"
level = "warn"
[[watch]]
name = "bench"
inbox = "inbox"
done = "done"
failed = "failed"
settle = "{SETTLE_MS}ms"
[[watch.rule]]
template = "{{plugin_name}}__{{business_type}}.zip"
"#,
            endpoint = sink.endpoint()
        );
        fs::write(&path, text).expect("config");
        path
    }

    /// Writes `count` files of 4 KiB named `pkgN__Build.zip` into `sub`.
    fn small_files(&self, sub: &str, count: usize) -> Vec<String> {
        let dir = self.path(sub);
        (0..count)
            .map(|i| {
                let name = format!("pkg{i}__Build.zip");
                let content: Vec<u8> = name.bytes().cycle().take(SMALL_FILE).collect();
                fs::write(dir.join(&name), content).expect("write small file");
                name
            })
            .collect()
    }

    /// Files in `sub` that are packages, not reports.
    fn packages_in(&self, sub: &str) -> usize {
        fs::read_dir(self.path(sub))
            .expect("read folder")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".zip"))
            .count()
    }
}

/// A running `extdrop run`.
struct Daemon {
    child: Child,
    started: Instant,
}

impl Daemon {
    fn start(sandbox: &Sandbox, sink: &Sink) -> Daemon {
        // What the cases before wrote (a 1 GiB package) and what this one staged goes to disk
        // first: a daemon's shared `syncfs` would otherwise wait for it, and one run's
        // latency p99 measured the writeback of the large case's package.
        let synced = Command::new("sync").status().expect("run sync");
        assert!(synced.success(), "sync failed");
        let config = sandbox.config(sink);
        let log = fs::File::create(sandbox.path("daemon.log")).expect("daemon log");
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_extdrop"))
            .args(["run", "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn extdrop run");
        Daemon { child, started }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) so far, in ticks.
    fn cpu_ticks(&self) -> u64 {
        cpu_ticks(self.pid())
    }

    /// A `VmHWM`/`VmRSS` line of /proc/PID/status, in MiB.
    fn memory_mib(&self, field: &str) -> f64 {
        let text = fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status_kib(&text, field) / 1024.0
    }

    /// Voluntary context switches per thread (each is a sleep ended), by thread id.
    fn wakeups(&self) -> HashMap<String, u64> {
        let mut counts = HashMap::new();
        let tasks = fs::read_dir(format!("/proc/{}/task", self.pid())).expect("tasks");
        for task in tasks.filter_map(Result::ok) {
            if let Ok(text) = fs::read_to_string(task.path().join("status")) {
                let count = status_kib(&text, "voluntary_ctxt_switches:") as u64;
                counts.insert(task.file_name().to_string_lossy().into_owned(), count);
            }
        }
        counts
    }

    /// SIGTERM, as systemd would stop it; it must exit within 30 s.
    fn stop(mut self) {
        terminate(&mut self.child, "extdrop run");
    }
}

/// Sends SIGTERM and waits; a child that ignores it is killed and the run is broken.
fn terminate(child: &mut Child, what: &str) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("{what} did not stop within 30 s of SIGTERM");
}

fn cpu_ticks(pid: u32) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let rest = &text[text.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

/// The host's CPU time so far, in ticks: how much the hypervisor gave to others while this
/// machine wanted it (`steal` in /proc/stat), and the total of all the kinds of time there.
fn host_ticks() -> (u64, u64) {
    let text = fs::read_to_string("/proc/stat").expect("/proc/stat");
    let line = text.lines().next().expect("/proc/stat has a cpu line");
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|n| n.parse().expect("a tick count"))
        .collect();
    (ticks.get(7).copied().unwrap_or(0), ticks.iter().sum())
}

/// The per cent of the host's CPU time stolen since `before` (a [`host_ticks`] reading).
fn steal_since(before: (u64, u64)) -> f64 {
    let (steal, total) = host_ticks();
    (steal - before.0) as f64 * 100.0 / (total - before.1).max(1) as f64
}

/// The share of the host's CPU time stolen by the hypervisor during each case: on a shared
/// VM it is what makes one run's timings differ from the next, so the report says how much
/// of it there was.
#[derive(Default)]
struct Stolen {
    open: Option<(&'static str, (u64, u64))>,
    per_case: Vec<(&'static str, f64)>,
}

impl Stolen {
    /// Starts counting for `case` (ending the case before).
    fn begin(&mut self, case: &'static str) {
        self.end();
        self.open = Some((case, host_ticks()));
    }

    /// Ends the case being counted, if any.
    fn end(&mut self) {
        if let Some((case, host)) = self.open.take() {
            self.per_case.push((case, steal_since(host)));
        }
    }

    /// One line for the report, empty when no case ran.
    fn line(&self) -> String {
        if self.per_case.is_empty() {
            return String::new();
        }
        let cases: Vec<String> = self
            .per_case
            .iter()
            .map(|(case, percent)| format!("{case} {percent:.1} %"))
            .collect();
        format!(
            "\nHost CPU time stolen by the hypervisor during each case (`steal` in /proc/stat, \
             of all CPU time): {}. Above a few per cent, timings swing from one run to the next.\n",
            cases.join(", ")
        )
    }
}

/// The number after `field` in a /proc status text (kB for memory fields).
fn status_kib(text: &str, field: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `done` every 10 ms; a scenario that does not finish within `limit` is broken.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the sink has answered `count` requests and `count` packages are in `done`.
fn wait_filed(sandbox: &Sandbox, sink: &Sink, count: usize, limit: Duration) -> Instant {
    let at = wait_for("the uploads", limit, || sink.count() >= count);
    let filed = wait_for("the filing", limit, || {
        sandbox.packages_in("done") + sandbox.packages_in("failed") >= count
    });
    let failed = sandbox.packages_in("failed");
    assert_eq!(failed, 0, "{failed} files went to failed; see daemon.log");
    at.max(filed)
}

/// Moves every file in `from` to `to` (same file system), in name order.
fn move_all(sandbox: &Sandbox, names: &[String], from: &str, to: &str) {
    for name in names {
        fs::rename(sandbox.path(from).join(name), sandbox.path(to).join(name)).expect("rename");
    }
}

/// Runs a shell script whose last command is `times`, returning its wall time and the CPU
/// time of its children (what the bash builtin `times` prints on its second line).
fn shell(script: &str) -> (Duration, Duration) {
    let started = Instant::now();
    let out = Command::new("bash")
        .args(["-c", &format!("{script}\ntimes")])
        .stderr(Stdio::inherit())
        .output()
        .expect("run bash");
    let took = started.elapsed();
    assert!(out.status.success(), "script failed: {script}");
    let text = String::from_utf8_lossy(&out.stdout);
    let children = text.lines().last().expect("times output");
    let cpu: f64 = children.split_whitespace().map(minutes_seconds).sum();
    (took, Duration::from_secs_f64(cpu))
}

/// `0m1.234s` → 1.234.
fn minutes_seconds(text: &str) -> f64 {
    let (minutes, seconds) = text
        .trim_end_matches('s')
        .split_once('m')
        .expect("times format");
    minutes.parse::<f64>().expect("minutes") * 60.0 + seconds.parse::<f64>().expect("seconds")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn mb_per_s(hit: &Hit) -> f64 {
    hit.bytes as f64 / 1e6 / (hit.finished - hit.arrived).as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// Scenarios

struct Burst {
    files: usize,
    turns: usize,
    /// Each turn's files per second, extdrop's and curl's, in order.
    turn_rates: String,
    extdrop_rate: f64,
    extdrop_cpu_ms: f64,
    bash_rate: f64,
    bash_cpu_ms: f64,
    parallel_rate: f64,
    parallel_cpu_ms: f64,
    /// One more turn of extdrop right after the last turn's reports were deleted: what an
    /// operator's cleanup of `done` costs the next minutes' filing on ext4 without a journal.
    /// Its CPU ms per file and the share of the host's CPU stolen meanwhile.
    after_cleanup: (f64, f64),
}

/// N × 4 KiB dropped at once into a running daemon, then through the bash loop once and one
/// `curl --parallel`; extdrop and curl take `turns` turns about, each keeping its median (one
/// turn of either swings by 2× or more on a shared VM).
fn burst(sink: &Sink, files: usize, turns: usize) -> Burst {
    let sandbox = Sandbox::new();
    let names = sandbox.small_files("stage", files);
    let (mut extdrop_rates, mut extdrop_cpus) = (Vec::new(), Vec::new());
    let (mut parallel_rates, mut parallel_cpus) = (Vec::new(), Vec::new());
    let (mut extdrop_steal, mut parallel_steal) = (Vec::new(), Vec::new());
    let per_file_ms = |cpu: Duration| cpu.as_secs_f64() * 1000.0 / files as f64;
    let mut bash = None;
    let mut from = "stage";
    for turn in 0..turns {
        let host = host_ticks();
        let (rate, cpu_ms) = burst_turn(&sandbox, sink, &names, from, turn);
        extdrop_steal.push(steal_since(host));
        extdrop_rates.push(rate);
        extdrop_cpus.push(cpu_ms);
        if bash.is_none() {
            // The bash loop, once: what an operator writes without extdrop (upload, then move).
            move_all(&sandbox, &names, "done", "stage");
            bash = Some(bash_loop(&sandbox, sink, files));
        } else {
            move_all(&sandbox, &names, "done", "moved");
        }
        // One curl over all the files, 8 at a time: the ceiling of a client with no filing.
        let host = host_ticks();
        let (took, cpu) = curl_parallel(&sandbox, sink, &names);
        parallel_steal.push(steal_since(host));
        parallel_rates.push(files as f64 / took.as_secs_f64());
        parallel_cpus.push(per_file_ms(cpu));
        from = "moved";
    }
    let (bash_took, bash_cpu) = bash.expect("at least one turn");
    fs::remove_dir_all(sandbox.path(&format!("reports-{}", turns - 1))).expect("delete reports");
    let host = host_ticks();
    let (_, cpu_ms) = burst_turn(&sandbox, sink, &names, from, turns);
    let after_cleanup = (cpu_ms, steal_since(host));
    let turn_rates = format!(
        "turn about: extdrop {} (CPU {} ms/file), curl {}; host CPU stolen during extdrop's turns {} %, curl's {} %",
        slashed(&extdrop_rates, 0),
        slashed(&extdrop_cpus, 2),
        slashed(&parallel_rates, 0),
        slashed(&extdrop_steal, 0),
        slashed(&parallel_steal, 0)
    );
    Burst {
        files,
        turns,
        turn_rates,
        extdrop_rate: median(&mut extdrop_rates),
        extdrop_cpu_ms: median(&mut extdrop_cpus),
        bash_rate: files as f64 / bash_took.as_secs_f64(),
        bash_cpu_ms: per_file_ms(bash_cpu),
        parallel_rate: median(&mut parallel_rates),
        parallel_cpu_ms: median(&mut parallel_cpus),
        after_cleanup,
    }
}

/// One turn of extdrop: the files in `from` renamed into the inbox of a running daemon, all
/// at once. Returns files per second and CPU ms per file; leaves the files in `done` and
/// their reports in `reports-<turn>`, so that the next turn files them under the same names.
///
/// The reports are moved aside, not deleted: on ext4 without a journal (this VM's disk), every
/// inode freed in the last minutes is skipped, one lookup each, by every later inode made in
/// its group, so deleting 5,000 reports here would bill the next turn's reports for the
/// bench's own cleanup (measured: 30 % of extdrop's CPU in `recently_deleted` then). One
/// more turn, right after the reports are deleted ([`Burst::after_cleanup`]), measures that
/// on purpose.
fn burst_turn(
    sandbox: &Sandbox,
    sink: &Sink,
    names: &[String],
    from: &str,
    turn: usize,
) -> (f64, f64) {
    let files = names.len();
    let daemon = Daemon::start(sandbox, sink);
    std::thread::sleep(Duration::from_secs(1));
    sink.take();
    let cpu = daemon.cpu_ticks();
    let started = Instant::now();
    move_all(sandbox, names, from, "inbox");
    let filed = wait_filed(sandbox, sink, files, Duration::from_secs(3600));
    let took = (filed - started).as_secs_f64();
    let cpu_ms = (daemon.cpu_ticks() - cpu) as f64 * TICK_MS / files as f64;
    daemon.stop();
    sink.take();
    let aside = sandbox.path(&format!("reports-{turn}"));
    fs::create_dir(&aside).expect("a folder for this turn's reports");
    for entry in fs::read_dir(sandbox.path("done")).expect("done").flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".result.json") {
            fs::rename(entry.path(), aside.join(name)).expect("move a report aside");
        }
    }
    (files as f64 / took, cpu_ms)
}

/// The bash loop over the files in `stage`, moving each to `moved` once uploaded: its wall
/// and CPU time.
fn bash_loop(sandbox: &Sandbox, sink: &Sink, files: usize) -> (Duration, Duration) {
    let stage = sandbox.path("stage");
    let moved = sandbox.path("moved");
    let script = format!(
        "cd '{stage}' && for f in *.zip; do curl -sS -f -o /dev/null -H 'Expect:' -H 'X-Auth-Token: bench' \
         -F \"upload_file=@$f\" \"{url}?plugin_name=${{f%%__*}}&business_type=Build\" && mv -- \"$f\" '{moved}/'; done",
        stage = stage.display(),
        moved = moved.display(),
        url = sink.upload_url(),
    );
    let timed = shell(&script);
    assert_eq!(
        sink.take().len(),
        files,
        "the bash loop did not upload every file"
    );
    timed
}

/// One `curl --parallel-max 8` over the files in `moved`: its wall and CPU time.
fn curl_parallel(sandbox: &Sandbox, sink: &Sink, names: &[String]) -> (Duration, Duration) {
    let moved = sandbox.path("moved");
    let mut list = String::from("parallel\nparallel-max = 8\n");
    for name in names {
        let plugin = name.split("__").next().unwrap_or(name);
        let _ = write!(
            list,
            "url = \"{url}?plugin_name={plugin}&business_type=Build\"\noutput = \"/dev/null\"\n\
             silent\nshow-error\nfail\nheader = \"X-Auth-Token: bench\"\nheader = \"Expect:\"\nform = \"upload_file=@{path}\"\nnext\n",
            url = sink.upload_url(),
            path = moved.join(name).display(),
        );
    }
    let list_path = sandbox.path("curl-parallel.cfg");
    fs::write(&list_path, list.trim_end_matches("next\n")).expect("curl config");
    // curl 7.x draws its parallel progress meter even when silent; its stderr goes to a file
    // so the table stays readable, and a failed transfer still fails the script.
    let timed = shell(&format!(
        "curl -sS -K '{}' 2>'{}'",
        list_path.display(),
        sandbox.path("curl-parallel.err").display()
    ));
    assert_eq!(
        sink.take().len(),
        names.len(),
        "curl --parallel did not upload every file"
    );
    timed
}

struct Large {
    mib: u64,
    rounds: usize,
    /// Each turn's MB/s, in order.
    turns: String,
    extdrop_mb_s: f64,
    extdrop_peak_mib: f64,
    curl_mb_s: f64,
}

/// One large package through the daemon, then the same file through `curl -F`.
fn large(sink: &Sink, mib: u64, rounds: usize) -> Large {
    let sandbox = Sandbox::new();
    let name = "big__Build.zip";
    {
        use std::io::Write as _;
        let mut block = vec![0u8; 1 << 20];
        let mut file = std::io::BufWriter::new(
            fs::File::create(sandbox.path("stage").join(name)).expect("create large file"),
        );
        for i in 0..mib {
            // Different bytes per MiB, so nothing on the way can shortcut a run of zeros.
            block
                .iter_mut()
                .enumerate()
                .for_each(|(j, b)| *b = (i as usize ^ j) as u8);
            file.write_all(&block).expect("write large file");
        }
        file.flush().expect("flush large file");
    }
    // Loopback throughput on a shared VM swings by 2× from one second to the next: extdrop
    // and curl take turns, and each keeps its median.
    let daemon = Daemon::start(&sandbox, sink);
    std::thread::sleep(Duration::from_secs(1));
    sink.take();
    let (mut extdrop_runs, mut curl_runs) = (Vec::new(), Vec::new());
    let mut filed_runs = Vec::new();
    for round in 0..rounds {
        if round > 0 {
            fs::remove_file(report_in(&sandbox, "done", name)).expect("remove the report");
            move_all(&sandbox, &[name.to_owned()], "done", "stage");
        }
        move_all(&sandbox, &[name.to_owned()], "stage", "inbox");
        let filed = wait_filed(&sandbox, sink, 1, Duration::from_secs(1800));
        let hit = sink.take().pop().expect("the large upload");
        // The request does not wait for the hash (it is taken beside the send): the report
        // does, and this says what that costs.
        let whole = (filed - hit.arrived).as_secs_f64();
        filed_runs.push(hit.bytes as f64 / 1e6 / whole);
        assert!(
            hit.bytes >= mib << 20,
            "the sink read only {} bytes",
            hit.bytes
        );
        extdrop_runs.push(mb_per_s(&hit));

        let script = format!(
            "curl -sS -f -o /dev/null -H 'Expect:' -H 'X-Auth-Token: bench' -F 'upload_file=@{path}' \
             '{url}?plugin_name=big&business_type=Build'",
            path = sandbox.path("done").join(name).display(),
            url = sink.upload_url(),
        );
        shell(&script);
        curl_runs.push(mb_per_s(&sink.take().pop().expect("the curl upload")));
    }
    let extdrop_peak_mib = daemon.memory_mib("VmHWM:");
    daemon.stop();
    let turns = format!(
        "extdrop {}, curl {}; extdrop from request to filed with its report {} MB/s",
        slashed(&extdrop_runs, 0),
        slashed(&curl_runs, 0),
        slashed(&filed_runs, 0)
    );
    Large {
        mib,
        rounds,
        turns,
        extdrop_mb_s: median(&mut extdrop_runs),
        extdrop_peak_mib,
        curl_mb_s: median(&mut curl_runs),
    }
}

/// The report beside `name` in `folder`.
fn report_in(sandbox: &Sandbox, folder: &str, name: &str) -> PathBuf {
    sandbox.path(folder).join(format!("{name}.result.json"))
}

/// Each turn's figure with `decimals` decimals, in order: `1234/1180/1302` (0), `0.42/0.45` (2).
fn slashed(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join("/")
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct Backlog {
    files: usize,
    first_upload_s: f64,
    per_file_ms: f64,
    cpu_ms: f64,
    peak_mib: f64,
}

/// `files` already in the inbox when the daemon starts.
fn backlog(sink: &Sink, files: usize) -> Backlog {
    let sandbox = Sandbox::new();
    sandbox.small_files("inbox", files);
    sink.take();
    let daemon = Daemon::start(&sandbox, sink);
    let filed = wait_filed(&sandbox, sink, files, Duration::from_secs(7200));
    let peak_mib = daemon.memory_mib("VmHWM:");
    let cpu_ms = daemon.cpu_ticks() as f64 * TICK_MS / files as f64;
    let started = daemon.started;
    daemon.stop();
    let hits = sink.take();
    let first = hits.iter().map(|h| h.arrived).min().expect("an upload");
    Backlog {
        files,
        first_upload_s: (first - started).as_secs_f64(),
        per_file_ms: (filed - started).as_secs_f64() * 1000.0 / files as f64,
        cpu_ms,
        peak_mib,
    }
}

/// Seconds from start to the first upload with `files` already in the inbox and already
/// written back (`sync` before the start, as after downtime): the large backlog's first upload
/// without the flush of the packages the bench has just written, which the first claim's
/// `syncfs` otherwise pays for. The daemon is stopped once the first upload arrived.
fn backlog_written_back(sink: &Sink, files: usize) -> f64 {
    let sandbox = Sandbox::new();
    sandbox.small_files("inbox", files);
    let synced = Command::new("sync").status().expect("run sync");
    assert!(synced.success(), "sync failed");
    sink.take();
    let daemon = Daemon::start(&sandbox, sink);
    wait_for("the first upload", Duration::from_secs(600), || {
        sink.count() > 0
    });
    let started = daemon.started;
    daemon.stop();
    let first = sink
        .take()
        .iter()
        .map(|h| h.arrived)
        .min()
        .expect("an upload");
    (first - started).as_secs_f64()
}

struct Quiet {
    latency_files: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    idle_secs: u64,
    cpu_percent: f64,
    rss_mib: f64,
    wakeups_per_s: f64,
}

/// Files dropped one at a time (rename → request at the sink), then the same daemon left idle.
fn latency_then_idle(sink: &Sink, files: usize, idle_secs: u64) -> Quiet {
    let sandbox = Sandbox::new();
    let names = sandbox.small_files("stage", files);
    let daemon = Daemon::start(&sandbox, sink);
    std::thread::sleep(Duration::from_secs(1));
    sink.take();
    let mut dropped = HashMap::new();
    for name in &names {
        let plugin = name.split("__").next().unwrap_or(name).to_owned();
        // Written just now, as by `scp x.part` then `mv`: the whole settle applies (a file
        // last written a settle ago would be ready at once, see README's "How a file travels").
        fs::File::options()
            .write(true)
            .open(sandbox.path("stage").join(name))
            .and_then(|f| f.set_modified(SystemTime::now()))
            .expect("stamp the file as just written");
        fs::rename(
            sandbox.path("stage").join(name),
            sandbox.path("inbox").join(name),
        )
        .expect("rename");
        dropped.insert(plugin, Instant::now());
        // Spaced drops, not a burst: each file's latency is its own, not a queue's.
        std::thread::sleep(Duration::from_millis(137));
    }
    wait_filed(&sandbox, sink, files, Duration::from_secs(600));
    let mut latencies: Vec<f64> = sink
        .take()
        .iter()
        .map(|hit| {
            let at = dropped.get(&hit.plugin).expect("a dropped file");
            (hit.arrived - *at).as_secs_f64() * 1000.0
        })
        .collect();
    latencies.sort_by(f64::total_cmp);

    // Idle: let the last filing finish its work, then watch the daemon do nothing.
    std::thread::sleep(Duration::from_secs(2));
    let cpu = daemon.cpu_ticks();
    // Threads come and go (the blocking pool), so a sum over the threads of the moment can
    // shrink. Each thread's switches are counted from its first sighting (0 if it was born in
    // the window) to its last, sampling once a second: an exiting thread loses at most a second.
    let first = daemon.wakeups();
    let mut last = first.clone();
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(idle_secs) {
        std::thread::sleep(Duration::from_secs(1));
        last.extend(daemon.wakeups());
    }
    let woken: u64 = last
        .iter()
        .map(|(tid, n)| n.saturating_sub(first.get(tid).copied().unwrap_or(0)))
        .sum();
    let secs = window.elapsed().as_secs_f64();
    let quiet = Quiet {
        latency_files: files,
        p50: percentile(&latencies, 50.0),
        p95: percentile(&latencies, 95.0),
        p99: percentile(&latencies, 99.0),
        idle_secs,
        cpu_percent: (daemon.cpu_ticks() - cpu) as f64 * TICK_MS / 1000.0 / secs * 100.0,
        rss_mib: daemon.memory_mib("VmRSS:"),
        wakeups_per_s: woken as f64 / secs,
    };
    daemon.stop();
    quiet
}

struct Syscalls {
    files: usize,
    fsyncs: f64,
    total: f64,
    top: String,
}

/// A short burst under `strace -f -c`: where the syscalls go per file (including startup and
/// shutdown, which a short run makes visible). `None` when strace is missing.
fn syscalls(sink: &Sink, files: usize) -> Option<Syscalls> {
    if Command::new("strace").arg("-V").output().is_err() {
        return None;
    }
    let sandbox = Sandbox::new();
    let names = sandbox.small_files("stage", files);
    let config = sandbox.config(sink);
    let summary = sandbox.path("strace.txt");
    let log = fs::File::create(sandbox.path("daemon.log")).expect("daemon log");
    let mut strace = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&summary)
        .arg(env!("CARGO_BIN_EXE_extdrop"))
        .args(["run", "-c"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn strace");
    std::thread::sleep(Duration::from_secs(2));
    sink.take();
    move_all(&sandbox, &names, "stage", "inbox");
    wait_filed(&sandbox, sink, files, Duration::from_secs(1800));
    sink.take();
    // SIGTERM goes to extdrop, not strace, so the daemon shuts down as it would in service and
    // strace writes its summary when its tracee exits.
    let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id()))
        .expect("strace's children");
    let pid = children
        .split_whitespace()
        .next()
        .expect("extdrop under strace");
    let _ = Command::new("kill").args(["-TERM", pid]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while strace.try_wait().expect("wait strace").is_none() {
        assert!(
            Instant::now() < deadline,
            "extdrop under strace did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = fs::read_to_string(&summary).expect("strace summary");
    let mut calls: Vec<(String, u64)> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Rows: % time, seconds, usecs/call, calls, [errors], syscall.
        if fields.len() >= 5 && fields[0].parse::<f64>().is_ok() {
            let count = fields[3].parse().unwrap_or(0);
            calls.push((fields[fields.len() - 1].to_owned(), count));
        }
    }
    let count = |names: &[&str]| -> u64 {
        calls
            .iter()
            .filter(|(n, _)| names.contains(&n.as_str()))
            .map(|(_, c)| c)
            .sum()
    };
    let per = |n: u64| n as f64 / files as f64;
    let fsyncs = count(&["fsync", "fdatasync", "syncfs", "sync_file_range", "sync"]);
    let total = count(&["total"]);
    calls.retain(|(n, _)| n != "total");
    calls.sort_by_key(|c| std::cmp::Reverse(c.1));
    let top = calls
        .iter()
        .take(8)
        .map(|(n, c)| format!("{n} {:.1}", per(*c)))
        .collect::<Vec<_>>()
        .join(", ");
    Some(Syscalls {
        files,
        fsyncs: per(fsyncs),
        total: per(total),
        top,
    })
}

// ---------------------------------------------------------------------------------------------
// The table

/// One row: the case, the measured figure, the comparison of the same run, the target, and
/// whether the figure meets it (`None`: no target, figure only).
struct Row {
    case: String,
    measured: String,
    comparison: String,
    target: String,
    met: Option<bool>,
}

fn row(case: &str, measured: String, comparison: String, target: &str, met: Option<bool>) -> Row {
    Row {
        case: case.to_owned(),
        measured,
        comparison,
        target: target.to_owned(),
        met,
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn report_path() -> PathBuf {
    if let Ok(path) = std::env::var("EXTDROP_BENCH_REPORT") {
        return PathBuf::from(path);
    }
    // The bench runs as target/<profile>/deps/pipeline-*; the report goes beside <profile>.
    let exe = std::env::current_exe().expect("bench executable");
    exe.ancestors().nth(3).map_or_else(
        || PathBuf::from("bench-report.md"),
        |t| t.join("bench-report.md"),
    )
}

/// Which cases to run: all, or those named in `EXTDROP_BENCH_ONLY` (comma-separated:
/// `burst`, `large`, `latency`, `backlog`, `strace`), for profiling one case alone.
fn wanted(case: &str) -> bool {
    const CASES: [&str; 5] = ["burst", "large", "latency", "backlog", "strace"];
    match std::env::var("EXTDROP_BENCH_ONLY") {
        Ok(list) => {
            let names: Vec<&str> = list.split(',').map(str::trim).collect();
            if let Some(bad) = names.iter().find(|n| !CASES.contains(n)) {
                panic!("EXTDROP_BENCH_ONLY names {bad:?}; the cases are {CASES:?}");
            }
            names.contains(&case)
        }
        Err(_) => true,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this harness has no filters to honour.
    let burst_files = knob("EXTDROP_BENCH_BURST", 5_000) as usize;
    let burst_turns = knob("EXTDROP_BENCH_BURST_TURNS", 3).max(1) as usize;
    let large_mib = knob("EXTDROP_BENCH_LARGE_MIB", 1024);
    let large_rounds = knob("EXTDROP_BENCH_LARGE_ROUNDS", 5).max(1) as usize;
    let latency_files = knob("EXTDROP_BENCH_LATENCY", 100) as usize;
    let backlog_large = knob("EXTDROP_BENCH_BACKLOG", 100_000) as usize;
    let idle_secs = knob("EXTDROP_BENCH_IDLE_SECS", 60);
    let strace_files = knob("EXTDROP_BENCH_STRACE", 1_000) as usize;
    let sink = Sink::start();
    let started = Instant::now();
    let step = |what: &str| eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
    let mut stolen = Stolen::default();

    let b = wanted("burst").then(|| {
        stolen.begin("burst");
        step(&format!(
            "burst of {burst_files} × 4 KiB (extdrop, bash loop, curl --parallel)"
        ));
        burst(&sink, burst_files, burst_turns)
    });
    let l = wanted("large").then(|| {
        stolen.begin("large");
        step(&format!("one {large_mib} MiB package (extdrop, curl -F)"));
        large(&sink, large_mib, large_rounds)
    });
    let q = wanted("latency").then(|| {
        stolen.begin("latency and idle");
        step(&format!(
            "latency over {latency_files} spaced drops, then {idle_secs} s idle"
        ));
        let q = latency_then_idle(&sink, latency_files, idle_secs);
        step(&format!(
            "latency p99 {:.0} ms; idle {:.3} % CPU, {:.2} wake-ups/s, RSS {:.1} MiB",
            q.p99, q.cpu_percent, q.wakeups_per_s, q.rss_mib
        ));
        q
    });
    let backlogs = wanted("backlog").then(|| {
        stolen.begin("backlog");
        step("backlog of 1,000");
        let small = backlog(&sink, 1_000);
        step(&format!("backlog of {}", thousands(backlog_large)));
        let big = backlog(&sink, backlog_large);
        step(&format!(
            "backlog of {} written back: first upload",
            thousands(backlog_large)
        ));
        (small, big, backlog_written_back(&sink, backlog_large))
    });
    let s = wanted("strace").then(|| {
        stolen.begin("strace");
        step(&format!("strace -f -c over a burst of {strace_files}"));
        syscalls(&sink, strace_files)
    });
    stolen.end();
    step("done");

    let mut rows = Vec::new();
    if let Some(b) = &b {
        rows.extend([
            row(
                &format!(
                    "burst: {} × 4 KiB at once, throughput (median of {})",
                    thousands(b.files),
                    b.turns
                ),
                format!("{:.0} files/s", b.extdrop_rate),
                format!(
                    "bash `curl -F` + `mv` loop {:.0} files/s; `curl --parallel-max 8` {:.0} files/s",
                    b.bash_rate, b.parallel_rate
                ),
                "≥ 20× bash loop",
                Some(b.extdrop_rate >= 20.0 * b.bash_rate),
            ),
            row(
                "burst: vs the curl ceiling",
                format!(
                    "{:.0} % of curl --parallel",
                    100.0 * b.extdrop_rate / b.parallel_rate
                ),
                format!(
                    "{:.1}× the bash loop; {}",
                    b.extdrop_rate / b.bash_rate,
                    b.turn_rates
                ),
                "≥ 50 % of curl --parallel",
                Some(b.extdrop_rate >= 0.5 * b.parallel_rate),
            ),
            row(
                "burst: CPU per file",
                format!("{:.2} ms", b.extdrop_cpu_ms),
                format!(
                    "bash loop {:.2} ms; curl --parallel {:.2} ms",
                    b.bash_cpu_ms, b.parallel_cpu_ms
                ),
                "≤ 0.3 ms",
                Some(b.extdrop_cpu_ms <= 0.3),
            ),
            row(
                "… right after the previous turn's reports were deleted",
                format!("{:.2} ms", b.after_cleanup.0),
                format!(
                    "one more turn; host CPU stolen {:.0} %; on ext4 without a journal every \
                     inode freed in the last minutes taxes each new one (see README)",
                    b.after_cleanup.1
                ),
                "—",
                None,
            ),
        ]);
    }
    match &s {
        None => {}
        Some(Some(s)) => {
            rows.push(row(
                &format!(
                    "burst of {} under `strace -f -c`: fsyncs per file",
                    thousands(s.files)
                ),
                format!("{:.2}", s.fsyncs),
                "—".to_owned(),
                "≤ 1",
                Some(s.fsyncs <= 1.0),
            ));
            rows.push(row(
                "… syscalls per file",
                format!("{:.0}", s.total),
                format!("top: {}", s.top),
                "—",
                None,
            ));
        }
        Some(None) => rows.push(row(
            "fsyncs and syscalls per file",
            "skipped: strace is not installed".to_owned(),
            "—".to_owned(),
            "≤ 1 fsync",
            None,
        )),
    }
    if let Some(l) = &l {
        rows.extend([
            row(
                &format!(
                    "one {} MiB package: MB/s at the sink (median of {})",
                    l.mib, l.rounds
                ),
                format!("{:.0} MB/s", l.extdrop_mb_s),
                format!(
                    "`curl -F` {:.0} MB/s ({:.0} %); turn about: {}",
                    l.curl_mb_s,
                    100.0 * l.extdrop_mb_s / l.curl_mb_s,
                    l.turns
                ),
                "≥ 80 % of curl -F",
                Some(l.extdrop_mb_s >= 0.8 * l.curl_mb_s),
            ),
            row(
                &format!("one {} MiB package: peak RSS", l.mib),
                format!("{:.1} MiB", l.extdrop_peak_mib),
                "—".to_owned(),
                "≤ 32 MiB",
                Some(l.extdrop_peak_mib <= 32.0),
            ),
        ]);
    }
    if let Some(q) = &q {
        rows.extend([row(
            &format!("latency rename → request, {} spaced drops", q.latency_files),
            format!(
                "p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms",
                q.p50, q.p95, q.p99
            ),
            format!("settle itself: {SETTLE_MS} ms"),
            &format!("p99 ≤ {} ms", SETTLE_MS + 50),
            Some(q.p99 <= (SETTLE_MS + 50) as f64),
        )]);
    }
    if let Some((small, big, written_back)) = &backlogs {
        rows.extend([
            row(
                "backlog of 1,000 at start",
                format!(
                    "first upload {:.2} s, {:.2} ms/file, CPU {:.2} ms/file, peak RSS {:.1} MiB",
                    small.first_upload_s, small.per_file_ms, small.cpu_ms, small.peak_mib
                ),
                "the reference for the large backlog".to_owned(),
                "—",
                None,
            ),
            row(
                &format!("backlog of {} at start: first upload", thousands(big.files)),
                format!("{:.2} s", big.first_upload_s),
                format!(
                    "1,000: {:.2} s; the same backlog written back first: {:.2} s",
                    small.first_upload_s, written_back
                ),
                "≤ 1 s",
                Some(big.first_upload_s <= 1.0),
            ),
            row(
                &format!("backlog of {}: cost per file", thousands(big.files)),
                format!("{:.2} ms/file (CPU {:.2} ms)", big.per_file_ms, big.cpu_ms),
                format!(
                    "1,000: {:.2} ms/file ({:.2}×)",
                    small.per_file_ms,
                    big.per_file_ms / small.per_file_ms
                ),
                "≤ 1.5× that at 1,000",
                Some(big.per_file_ms <= 1.5 * small.per_file_ms),
            ),
            row(
                &format!("backlog of {}: peak RSS", thousands(big.files)),
                format!("{:.1} MiB", big.peak_mib),
                format!("1,000: {:.1} MiB", small.peak_mib),
                "≤ 48 MiB",
                Some(big.peak_mib <= 48.0),
            ),
        ]);
    }
    if let Some(q) = &q {
        rows.extend([
            row(
                &format!(
                    "idle {} s after {} uploads: CPU",
                    q.idle_secs, q.latency_files
                ),
                format!("{:.3} % of a core", q.cpu_percent),
                "a sleeping process: 0".to_owned(),
                "≤ 0.1 %",
                Some(q.cpu_percent <= 0.1),
            ),
            row(
                "idle: wake-ups per second",
                format!("{:.2}/s", q.wakeups_per_s),
                "a sleeping process: 0".to_owned(),
                "≤ 1/s",
                Some(q.wakeups_per_s <= 1.0),
            ),
            row(
                "idle: RSS",
                format!("{:.1} MiB", q.rss_mib),
                "—".to_owned(),
                "≤ 16 MiB",
                Some(q.rss_mib <= 16.0),
            ),
        ]);
    }

    let mut table = format!(
        "# extdrop benchmark\n\n{} cores, concurrency {CONCURRENCY}, settle {SETTLE_MS} ms, loopback \
         hyper sink that reads every body; all comparisons measured in this run on the same files.\n\n\
         | case | extdrop | comparison (same run) | target | verdict |\n|---|---|---|---|---|\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    for r in &rows {
        let verdict = match r.met {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "—",
        };
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} |",
            r.case, r.measured, r.comparison, r.target, verdict
        );
    }
    table.push_str(&stolen.line());
    println!("{table}");
    let path = report_path();
    fs::write(&path, &table).expect("write the report");
    println!("table written to {}", path.display());
}
