//! `extdrop demo`: a newcomer's first minute. Creates a sandbox folder with `inbox/ done/
//! failed/`, a second watch `release/` that registers and publishes (the whole release flow
//! of SPEC §6), a configuration and sample packages, starts the loopback stand-ins of the
//! CodeArts endpoint and of the ECS metadata service, and runs the real daemon against them
//! until Ctrl-C. The configuration uses `method = "agency"`, the recommended set-up on ECS, so
//! the demo shows the whole path: temporary AK/SK from the metadata service, requests signed
//! with them and checked by the stand-in's AK/SK verifier.
//!
//! With `--stand-in-only` it starts the stand-ins and writes the configuration but runs no
//! daemon, so that `extdrop once` (or `run`, `upload`, `versions`) can be tried against them
//! from another terminal until Ctrl-C.
//!
//! Nothing the operator already has in the sandbox is deleted; the configuration is rewritten
//! on every start because the stand-in's port changes. The stop summary counts the files in
//! the sandbox's folders exactly as `extdrop status` does, so the two always agree.

use std::path::Path;

use crate::cli::{EXIT_FATAL, EXIT_OK};
use crate::config::Config;
use crate::daemon::{self, Mode};
use crate::stub::metadata::{self, MetadataConfig, MetadataStub};
use crate::stub::{Stub, StubConfig};

/// The made-up tenant of the sandbox.
pub const DEMO_DOMAIN_ID: &str = "ce8df55870164338a72d7e828a966a2a";
/// How many of the metadata stand-in's successive credentials the CodeArts stand-in accepts:
/// they live a day, so a demo would have to run for years to use them up.
const DEMO_KEYS: usize = 1000;

/// The sandbox configuration for a CodeArts stand-in at `endpoint` and a metadata stand-in at
/// `metadata_endpoint`.
pub fn demo_config(endpoint: &str, metadata_endpoint: &str) -> String {
    format!(
        r#"# Written by `extdrop demo` for its loopback stand-in; rewritten at every demo start.
[codearts]
endpoint = "{endpoint}"
domain_id = "{DEMO_DOMAIN_ID}"

[auth]
# On a real ECS instance, leave metadata_endpoint out (http://169.254.169.254).
method = "agency"
metadata_endpoint = "{metadata_endpoint}"

[retry]
initial_delay = "500ms"
max_delay = "5s"
max_attempts = 5

[log]
format = "text"

[[watch]]
name = "demo"
inbox = "inbox"
done = "done"
failed = "failed"
settle = "1s"
rescan_interval = "30s"

[[watch.rule]]
template = "{{plugin_name}}__{{business_type}}.zip"

[[watch.rule]]
regex = '^(?P<plugin_name>[A-Za-z0-9_-]{{1,50}})-(?P<version>\d+\.\d+\.\d+)\.zip$'
business_type = "Normal"

# The whole release: an extension CodeArts does not know yet is registered, the package
# uploaded, and its version published as official.
[[watch]]
name = "release"
inbox = "release/inbox"
done = "release/done"
failed = "release/failed"
settle = "1s"
rescan_interval = "30s"
register = true
publish = true

[[watch.rule]]
template = "{{plugin_name}}__{{business_type}}.zip"
"#
    )
}

/// Runs the demo in `dir`; with `stand_in_only`, the stand-ins alone (no daemon).
pub fn run(dir: &Path, stand_in_only: bool) -> u8 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::errln!("extdrop: cannot start the async runtime: {e}");
            return EXIT_FATAL;
        }
    };
    rt.block_on(async {
        let metadata = match MetadataStub::start_background(MetadataConfig::default()) {
            Ok(metadata) => metadata,
            Err(e) => {
                crate::errln!("extdrop: cannot start the loopback metadata stand-in: {e}");
                return EXIT_FATAL;
            }
        };
        let mut stub_config = StubConfig::new(DEMO_DOMAIN_ID);
        stub_config.auth = crate::stub::StubAuth::aksk(metadata::accepted_keys(DEMO_KEYS));
        // As the cloud: an upload for an unknown extension is refused. The samples of the
        // plain watch are known; release_task is not, for the release watch to register.
        stub_config.auto_register = false;
        let stub = match Stub::start(stub_config).await {
            Ok(stub) => stub,
            Err(e) => {
                crate::errln!("extdrop: cannot start the loopback stand-in: {e}");
                return EXIT_FATAL;
            }
        };
        let known = stub.with_catalog(|catalog| {
            catalog
                .register("demo_task", "Demo task", "Deploy", "The demo's sample")
                .and_then(|()| catalog.register("hello", "Hello", "Normal", "The demo's sample"))
        });
        if let Err(refusal) = known {
            crate::errln!("extdrop: cannot set up the stand-in: {}", refusal.error_msg);
            return EXIT_FATAL;
        }
        let config = match prepare(dir, &stub.endpoint(), &metadata.endpoint()) {
            Ok(config) => config,
            Err(e) => {
                crate::errln!("extdrop: cannot prepare the demo folder {}: {e}", dir.display());
                return EXIT_FATAL;
            }
        };
        crate::service::init_logging(&config.log);
        if stand_in_only {
            return stand_ins_only(&config, &stub.endpoint(), &metadata.endpoint(), stub).await;
        }
        let root = config.path.parent().unwrap_or(dir).to_owned();
        let show = |p: &str| root.join(p).display().to_string();
        let announce = || {
            crate::outln!(
                "\nextdrop demo is running: a stand-in CodeArts endpoint on {}, a stand-in ECS metadata service on {} \
                 handing out temporary credentials (method = \"agency\"), and the daemon watching {}\n\n\
                 Try, in another terminal:\n  \
                 cp {} {}/                # a good package: watch it move to done/\n  \
                 cat {}\n  \
                 cp {} {}/   # a package whose manifest disagrees with its name: it goes to failed/\n  \
                 cat {}\n  \
                 cargo run --release -- -c {} status\n  \
                 cargo run --release -- -c {} explain my_ext__Build.zip hello-1.0.0.zip notes.txt\n\n\
                 The whole release (register, upload, publish) for an extension the stand-in does not know yet:\n  \
                 cp {} {}/\n  \
                 cat {}   # registered: true, published: true\n  \
                 cargo run --release -- -c {} versions release_task   # 1.0.0 formal\n  \
                 cp {} {}/   # again: 1.0.0 is official now, refused before any upload\n\n\
                 Ctrl-C stops the demo.\n",
                stub.endpoint(),
                metadata.endpoint(),
                show("inbox"),
                show("samples/demo_task__Deploy.zip"),
                show("inbox"),
                show("done/demo_task__Deploy.zip.result.json"),
                show("samples/wrong_name__Build.zip"),
                show("inbox"),
                show("failed/wrong_name__Build.zip.result.json"),
                config.path.display(),
                config.path.display(),
                show("samples/release_task__Build.zip"),
                show("release/inbox"),
                show("release/done/release_task__Build.zip.result.json"),
                config.path.display(),
                show("samples/release_task__Build.zip"),
                show("release/inbox"),
            );
        };
        let result = daemon::run(&config, Mode::Watch, crate::service::controls(None), announce).await;
        let uploads = stub.uploads().len();
        stub.shutdown().await;
        match result {
            Ok(_) => {
                // Counted from the folders as `status` counts them, not from the run's filing
                // events (a file retried and failed again is one file, filed twice).
                let (done, failed) = filed_files(&config);
                crate::outln!(
                    "demo stopped: the sandbox holds {done} done, {failed} failed (as `extdrop status` counts them); {uploads} upload(s) accepted by the stand-in"
                );
                EXIT_OK
            }
            Err(e) => {
                crate::errln!("extdrop: {e}");
                EXIT_FATAL
            }
        }
    })
}

/// Files in the done and failed folders of every watch, counted as `extdrop status` does.
fn filed_files(config: &Config) -> (usize, usize) {
    config
        .watches
        .iter()
        .map(crate::service::watch_status)
        .fold((0, 0), |(done, failed), s| {
            (done + s.done, failed + s.failed)
        })
}

/// `demo --stand-in-only`: keeps the stand-ins serving until Ctrl-C or SIGTERM, with no daemon
/// holding the inboxes, so `extdrop once` can be tried in the sandbox.
async fn stand_ins_only(
    config: &Config,
    endpoint: &str,
    metadata_endpoint: &str,
    stub: Stub,
) -> u8 {
    let path = config.path.display();
    let root = config.path.parent().unwrap_or(Path::new(".")).to_owned();
    let show = |p: &str| root.join(p).display().to_string();
    crate::outln!(
        "\nextdrop demo --stand-in-only: a stand-in CodeArts endpoint on {endpoint} and a stand-in ECS metadata \
         service on {metadata_endpoint} are running; no daemon is (configuration {path})\n\n\
         Try, in another terminal:\n  \
         cp {} {}/\n  \
         cargo run --release -- -c {path} once      # exits 0 when every file went to done, 2 when any failed\n  \
         cargo run --release -- -c {path} status\n  \
         cargo run --release -- -c {path} run       # the daemon, until Ctrl-C\n\n\
         Ctrl-C stops the stand-ins.\n",
        show("samples/demo_task__Deploy.zip"),
        show("inbox"),
    );
    let mut controls = crate::service::controls(None);
    while let Some(control) = controls.recv().await {
        if matches!(control, daemon::Control::Shutdown) {
            break;
        }
    }
    let uploads = stub.uploads().len();
    stub.shutdown().await;
    crate::outln!("stand-ins stopped: {uploads} upload(s) accepted");
    EXIT_OK
}

/// Creates the sandbox folders, the configuration and the sample packages.
fn prepare(
    dir: &Path,
    endpoint: &str,
    metadata_endpoint: &str,
) -> Result<Config, Box<dyn std::error::Error>> {
    for sub in [
        "inbox",
        "done",
        "failed",
        "samples",
        "release/inbox",
        "release/done",
        "release/failed",
    ] {
        crate::store::ensure_folder(&dir.join(sub))?;
    }
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, demo_config(endpoint, metadata_endpoint))?;
    let samples = dir.join("samples");
    crate::package::write_sample(
        &samples.join("demo_task__Deploy.zip"),
        "demo_task",
        "Deploy",
        "1.0.0",
    )?;
    // Named for Build, but its manifest says another name: the package check refuses it.
    crate::package::write_sample(
        &samples.join("wrong_name__Build.zip"),
        "other_name",
        "Build",
        "1.0.0",
    )?;
    crate::package::write_sample(&samples.join("hello-1.0.0.zip"), "hello", "Normal", "1.0.0")?;
    // An extension the stand-in does not know: the release watch registers and publishes it.
    crate::package::write_sample(
        &samples.join("release_task__Build.zip"),
        "release_task",
        "Build",
        "1.0.0",
    )?;
    Ok(Config::load(&config_path)?)
}
