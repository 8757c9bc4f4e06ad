//! The pipeline benchmark: throughput and memory of the real `extdrop` binary against the
//! loopback stand-in. Timing and memory targets live here, never in the tests.
//!
//! Run with `cargo bench --bench pipeline` (release build). It prints one line per scenario and
//! a verdict against the targets below; it exits non-zero when a target is missed.
//!
//! Scenarios:
//! - many small packages through `extdrop once` (files per second, end to end: scan, settle,
//!   claim, check, hash, upload, file);
//! - one small and one large file: the peak resident memory of the daemon must not grow with
//!   the file size, because uploads are streamed from disk.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use extdrop::stub::{Stub, StubAuth, StubConfig};

const DOMAIN: &str = "ce8df55870164338a72d7e828a966a2a";
const SMALL_FILES: usize = 300;
const LARGE_FILE_MIB: u64 = 512;
/// Target: small files per second through `once`, with upload concurrency 4.
const TARGET_FILES_PER_SECOND: f64 = 50.0;
/// Target: extra peak memory of a large upload over a small one.
const TARGET_RSS_GROWTH_MIB: f64 = 32.0;

fn config(dir: &Path, endpoint: &str, validate: bool) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        r#"[codearts]
endpoint = "{endpoint}"
domain_id = "{DOMAIN}"
[auth]
token = "bench"
[upload]
concurrency = 4
max_file_size = "2GiB"
validate_package = {validate}
[log]
format = "text"
level = "warn"
[[watch]]
name = "bench"
inbox = "inbox"
done = "done"
failed = "failed"
settle = "100ms"
[[watch.rule]]
template = "{{plugin_name}}__{{business_type}}.zip"
"#
    );
    fs::write(&path, text).expect("config");
    path
}

/// Runs `extdrop once` and returns its wall time and the peak resident memory seen (VmHWM).
fn once(config: &Path) -> (Duration, f64) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_extdrop"))
        .args(["once", "-c"])
        .arg(config)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn extdrop");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0.0f64;
    loop {
        if let Ok(text) = fs::read_to_string(&status_file)
            && let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kib: f64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "extdrop once failed: {status}");
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (started.elapsed(), peak_kib / 1024.0)
}

fn sandbox() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("extdrop-bench-")
        .tempdir()
        .expect("temp dir");
    for sub in ["inbox", "done", "failed"] {
        fs::create_dir_all(dir.path().join(sub)).expect("folders");
    }
    dir
}

fn main() {
    let mut stub_config = StubConfig::new(DOMAIN);
    stub_config.auth = StubAuth::Tokens(vec!["bench".to_owned()]);
    let stub = Stub::start_background(stub_config).expect("stub");
    let mut missed = Vec::new();

    // Many small packages.
    let dir = sandbox();
    for i in 0..SMALL_FILES {
        let path = dir.path().join(format!("inbox/pkg{i}__Build.zip"));
        extdrop::package::write_sample(&path, &format!("pkg{i}"), "Build", "1.0.0")
            .expect("sample");
    }
    let (took, _) = once(&config(dir.path(), &stub.endpoint(), true));
    let rate = SMALL_FILES as f64 / took.as_secs_f64();
    println!(
        "small packages: {SMALL_FILES} in {took:.2?} = {rate:.0} files/s (target ≥ {TARGET_FILES_PER_SECOND})"
    );
    if rate < TARGET_FILES_PER_SECOND {
        missed.push("small-file throughput");
    }

    // Memory: a 1 MiB file, then a large one; the package check is off so both are plain bytes.
    let mut peaks = Vec::new();
    for mib in [1u64, LARGE_FILE_MIB] {
        let dir = sandbox();
        let path = dir.path().join("inbox/big__Build.zip");
        let file = fs::File::create(&path).expect("create");
        file.set_len(mib << 20).expect("size");
        drop(file);
        let (took, peak) = once(&config(dir.path(), &stub.endpoint(), false));
        let throughput = mib as f64 / took.as_secs_f64();
        println!(
            "one {mib} MiB file: {took:.2?} ({throughput:.0} MiB/s incl. hashing), peak RSS {peak:.1} MiB"
        );
        peaks.push(peak);
    }
    let growth = peaks[1] - peaks[0];
    println!(
        "peak RSS growth for {LARGE_FILE_MIB} MiB vs 1 MiB: {growth:.1} MiB (target ≤ {TARGET_RSS_GROWTH_MIB})"
    );
    if growth > TARGET_RSS_GROWTH_MIB {
        missed.push("streaming memory");
    }
    let accepted = stub.uploads().len();
    println!("stand-in accepted {accepted} uploads");
    if missed.is_empty() {
        println!("all targets met");
    } else {
        println!("missed: {}", missed.join(", "));
        std::process::exit(1);
    }
}
