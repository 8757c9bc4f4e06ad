//! The command line of SPEC §1: argument parsing, one function per subcommand, and the one
//! place where errors become a sentence on stderr and an exit status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{self, Config};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: a fatal error (bad configuration, unusable inbox, …).
pub const EXIT_FATAL: u8 = 1;
/// Exit status: the command ran but some file or name did not make it.
pub const EXIT_PARTIAL: u8 = 2;

/// extdrop turns folders into an upload queue for CodeArts Pipeline extensions.
#[derive(Debug, Parser)]
#[command(name = "extdrop", version, about, propagate_version = true)]
pub struct Cli {
    /// The configuration file.
    #[arg(short, long, global = true, env = "EXTDROP_CONFIG", default_value = config::DEFAULT_PATH, value_name = "PATH")]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch every configured inbox until SIGTERM/SIGINT; SIGHUP reloads the configuration.
    Run,
    /// Process every file present in the inboxes now, then exit (2 if any went to failed).
    Once,
    /// Validate the configuration and print a summary of watches and rules.
    Check {
        /// Also obtain credentials / a token to prove they work.
        #[arg(long)]
        online: bool,
    },
    /// Show which watch and rule match file names, and the derived names.
    Explain {
        /// File names, or paths relative to an inbox.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Only consider this watch.
        #[arg(long, value_name = "W")]
        watch: Option<String>,
    },
    /// Per watch: files waiting, in progress, done and failed, and the newest failures.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Move failed files back into their inbox, removing their reports.
    Retry(RetryArgs),
    /// Upload one file with the configured endpoint and credentials, no folders involved.
    Upload {
        /// The package to upload.
        file: PathBuf,
        /// The extension name.
        #[arg(long, value_name = "P")]
        plugin_name: String,
        /// The business type.
        #[arg(long, value_name = "B")]
        business_type: String,
        /// Skip the daemon's checks (names, size, empty file, the package check).
        #[arg(long)]
        no_check: bool,
        /// Also publish the uploaded version as official (it can never be replaced).
        #[arg(long)]
        publish: bool,
    },
    /// The extension's versions in CodeArts and their attribution (draft, formal).
    Versions {
        /// The extension.
        plugin_name: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    ///
    /// The packages install them; for a build from source, e.g.
    /// `extdrop completions bash > ~/.local/share/bash-completion/completions/extdrop`.
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// A zero-setup sandbox with a built-in loopback stand-in of the CodeArts endpoint.
    ///
    /// The demo writes and uses its own configuration (DIR/config.toml): `-c` is refused.
    Demo {
        /// Where to create the sandbox.
        #[arg(long, value_name = "DIR", default_value = "./extdrop-demo")]
        dir: PathBuf,
        /// Start only the stand-ins (no daemon), to try `extdrop -c DIR/config.toml once`.
        #[arg(long)]
        stand_in_only: bool,
    },
}

/// Arguments of `extdrop retry`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Failed files (names in a failed folder, or paths).
    #[arg(value_name = "FILE", required_unless_present = "all")]
    pub files: Vec<PathBuf>,
    /// Every failed file.
    #[arg(long, conflicts_with = "files")]
    pub all: bool,
    /// Only this watch.
    #[arg(long, value_name = "W")]
    pub watch: Option<String>,
}

/// Parses the process arguments, runs the command and returns its exit status.
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if matches!(cli.command, Command::Demo { .. }) && config_given(&matches) {
        // The demo always writes its own configuration; silently ignoring `-c` made people
        // believe their file was in use.
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "`demo` writes and uses its own configuration (DIR/config.toml), so -c/--config \
                 does not apply: use `extdrop demo --dir DIR`, or run other commands with -c",
            )
            .exit();
    }
    ExitCode::from(run(cli))
}

/// The completion script for `shell`, generated from these clap definitions (so it cannot
/// drift from the command line). The packages ship the same text, kept current by a test.
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "extdrop", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `-c/--config` was written on the command line (before or after the subcommand),
/// as opposed to coming from `EXTDROP_CONFIG` or the default.
fn config_given(matches: &ArgMatches) -> bool {
    let given = |m: &ArgMatches| m.value_source("config") == Some(ValueSource::CommandLine);
    given(matches) || matches.subcommand().is_some_and(|(_, sub)| given(sub))
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Run => crate::service::run(&cli.config),
        Command::Once => crate::service::once(&cli.config),
        Command::Check { online } => check(&cli.config, online),
        Command::Explain { names, watch } => explain(&cli.config, &names, watch.as_deref()),
        Command::Status { json } => crate::service::status(&cli.config, json),
        Command::Retry(args) => {
            crate::service::retry(&cli.config, &args.files, args.all, args.watch.as_deref())
        }
        Command::Upload {
            file,
            plugin_name,
            business_type,
            no_check,
            publish,
        } => crate::direct::upload(
            &cli.config,
            crate::direct::UploadRequest {
                file: &file,
                plugin_name: &plugin_name,
                business_type: &business_type,
                no_check,
                publish,
            },
        ),
        Command::Versions { plugin_name, json } => {
            crate::direct::versions(&cli.config, &plugin_name, json)
        }
        Command::Completions { shell } => {
            crate::out!("{}", completions(shell));
            EXIT_OK
        }
        Command::Demo { dir, stand_in_only } => crate::demo::run(&dir, stand_in_only),
    }
}

/// Loads the configuration or prints why not.
pub fn load(path: &Path) -> Option<Config> {
    match Config::load(path) {
        Ok(config) => Some(config),
        Err(e) => {
            crate::errln!("extdrop: {e}");
            None
        }
    }
}

fn check(path: &Path, online: bool) -> u8 {
    let Some(config) = load(path) else {
        return EXIT_FATAL;
    };
    crate::out!("{}", summary(&config));
    for warning in inline_secret_warnings(&config) {
        crate::errln!("extdrop: warning: {warning}");
    }
    // What `run` would do first, without the network: read the CA file and find the secrets.
    match crate::upload::http_client(&config.codearts) {
        Err(e) => {
            crate::errln!("extdrop: {e}");
            return EXIT_FATAL;
        }
        Ok(client) => {
            if let Err(e) = crate::auth::Auth::new(&config.auth, client) {
                let in_service = std::env::var_os(crate::auth::CREDENTIALS_DIRECTORY).is_some();
                match service_only_credential(&e, in_service) {
                    // Expected from a shell (the example configuration is so): a note, no
                    // warning, or every `check` of a correct set-up would warn.
                    Some(path) => crate::outln!(
                        "credentials: {} is put there by systemd for the running service only (LoadCredential=), so it is not read here; `check --online` run through systemd-run with the same LoadCredential= reads it",
                        path.display()
                    ),
                    // A service gets its secrets through LoadCredential=, which this shell lacks.
                    None => crate::errln!(
                        "extdrop: warning: {e} (fine if the service gets it through LoadCredential=; `run` stops otherwise)"
                    ),
                }
            }
        }
    }
    if online {
        match crate::service::probe(&config) {
            Ok((credentials, endpoint)) => {
                crate::outln!("credentials: {credentials}");
                crate::outln!("endpoint: {endpoint}");
            }
            Err(e) => {
                crate::errln!("extdrop: credentials check failed: {e}");
                return EXIT_FATAL;
            }
        }
    }
    crate::outln!("configuration OK");
    EXIT_OK
}

/// Where systemd puts each service's credentials (`LoadCredential=`): `/run/credentials/UNIT/`.
const SYSTEMD_CREDENTIALS: &str = "/run/credentials/";

/// The secret file `error` could not read, when not reading it is what `check` should expect:
/// the file is one systemd makes under `/run/credentials/` for the running service, and this
/// process is not that service (`in_service`: `$CREDENTIALS_DIRECTORY` is set only inside
/// one), so the file is absent or its folder closed to us.
fn service_only_credential(error: &crate::auth::AuthError, in_service: bool) -> Option<&Path> {
    use std::io::ErrorKind;
    match error {
        crate::auth::AuthError::UnreadableSecret { path, reason, .. }
            if !in_service
                && path.starts_with(SYSTEMD_CREDENTIALS)
                && matches!(
                    reason.kind(),
                    ErrorKind::NotFound | ErrorKind::PermissionDenied
                ) =>
        {
            Some(path)
        }
        _ => None,
    }
}

/// The human summary printed by `check`.
pub fn summary(config: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let c = &config.codearts;
    let _ = writeln!(out, "configuration {}", config.path.display());
    let _ = writeln!(out, "endpoint {} (domain {})", c.endpoint, c.domain_id);
    let _ = writeln!(
        out,
        "auth {}, upload concurrency {}, max file size {}, package check {}",
        method_name(&config.auth),
        config.upload.concurrency,
        bytesize::ByteSize(config.upload.max_file_size)
            .display()
            .iec(),
        if config.upload.validate_package {
            "on"
        } else {
            "off"
        }
    );
    let r = &config.retry;
    let _ = writeln!(
        out,
        "retry up to {} attempts within {}, delays {}..{} x{} (jitter {})",
        r.max_attempts,
        humantime::format_duration(r.max_elapsed),
        humantime::format_duration(r.initial_delay),
        humantime::format_duration(r.max_delay),
        r.multiplier,
        r.jitter
    );
    if let Some(listen) = config.metrics_listen {
        let _ = writeln!(out, "metrics on http://{listen}/metrics");
    }
    for w in &config.watches {
        let _ = writeln!(out, "watch \"{}\"", w.name);
        let _ = writeln!(
            out,
            "  inbox  {}{}",
            w.inbox.display(),
            if w.recursive { " (recursive)" } else { "" }
        );
        let _ = writeln!(out, "  done   {}", w.done.display());
        let _ = writeln!(out, "  failed {}", w.failed.display());
        let _ = writeln!(
            out,
            "  include {:?} exclude {:?}, settle {}, {}",
            w.include.patterns(),
            w.exclude.patterns(),
            humantime::format_duration(w.settle),
            match (w.poll_set, crate::watch::remote_file_system(&w.inbox)) {
                (false, Some(kind)) => format!(
                    "polling every {} (the inbox is on {kind}, where inotify misses changes made elsewhere)",
                    humantime::format_duration(w.poll_interval)
                ),
                _ if w.poll => format!(
                    "polling every {}",
                    humantime::format_duration(w.poll_interval)
                ),
                _ => "inotify".to_owned(),
            }
        );
        let _ = writeln!(
            out,
            "  business types {}",
            w.rules.business_types().join(", ")
        );
        let _ = writeln!(
            out,
            "  release: {}",
            match (w.register, w.publish) {
                (false, false) => "upload only (drafts)",
                (true, false) => "register unknown extensions, upload (drafts)",
                (false, true) => "upload and publish",
                (true, true) => "register unknown extensions, upload and publish",
            }
        );
        for (i, rule) in w.rules.rules().iter().enumerate() {
            let publish = match w.rule_publish.get(i).copied().flatten() {
                Some(true) => " (publishes)",
                Some(false) => " (drafts only)",
                None => "",
            };
            let _ = writeln!(out, "  rule {}: {}{publish}", i + 1, rule.describe());
        }
    }
    out
}

fn explain(path: &Path, names: &[String], only: Option<&str>) -> u8 {
    let Some(config) = load(path) else {
        return EXIT_FATAL;
    };
    if let Some(name) = only
        && !config.watches.iter().any(|w| w.name == name)
    {
        crate::errln!("extdrop: no watch is named \"{name}\"");
        return EXIT_FATAL;
    }
    let mut all_matched = true;
    for name in names {
        let (line, matched) = explain_one(&config, name, only);
        crate::outln!("{line}");
        all_matched &= matched;
    }
    if all_matched { EXIT_OK } else { EXIT_PARTIAL }
}

/// One line of `explain` for one name, and whether it matched.
pub fn explain_one(config: &Config, name: &str, only: Option<&str>) -> (String, bool) {
    use crate::rules::Derivation;
    let watches: Vec<_> = config
        .watches
        .iter()
        .filter(|w| only.is_none_or(|o| o == w.name))
        .collect();
    let mut notes = Vec::new();
    for w in watches {
        // Accept a path inside the inbox (absolute or as given) as well as a bare name.
        let candidate = Path::new(name);
        let rel = config::absolute(candidate, &std::env::current_dir().unwrap_or_default())
            .strip_prefix(&w.inbox)
            .ok()
            .and_then(|p| p.to_str().map(str::to_owned))
            .unwrap_or_else(|| name.trim_start_matches("./").to_owned());
        if !w.recursive && rel.contains('/') {
            notes.push(format!(
                "watch \"{}\": in a subfolder, but the watch is not recursive",
                w.name
            ));
            continue;
        }
        if let Some(why) = w.refusal(&rel) {
            notes.push(format!("watch \"{}\": ignored: {why}", w.name));
            continue;
        }
        match w.rules.derive(&rel) {
            Derivation::Named {
                rule,
                plugin_name,
                business_type,
                version,
            } => {
                let rule_text = w
                    .rules
                    .rules()
                    .get(rule)
                    .map(|r| r.describe())
                    .unwrap_or_default();
                let version = version.map(|v| format!(" version={v}")).unwrap_or_default();
                return (
                    format!(
                        "{name}: watch \"{}\", rule {} ({rule_text}): plugin_name={plugin_name} business_type={business_type}{version}",
                        w.name,
                        rule + 1
                    ),
                    true,
                );
            }
            Derivation::Invalid { rule, reason } => {
                notes.push(format!(
                    "watch \"{}\", rule {}: matched, but {reason}",
                    w.name,
                    rule + 1
                ));
            }
            Derivation::NoMatch { reason } => notes.push(format!("watch \"{}\": {reason}", w.name)),
        }
    }
    if notes.is_empty() {
        notes.push("no watch to try".to_owned());
    }
    (format!("{name}: not matched: {}", notes.join("; ")), false)
}

/// The `[auth] method` as written in the file.
fn method_name(auth: &crate::auth::AuthConfig) -> &'static str {
    auth.method_name()
}

/// Warnings for a secret written into a configuration file that others may read.
pub fn inline_secret_warnings(config: &Config) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let inline = matches!(
        &config.auth,
        crate::auth::AuthConfig::Token { token: Some(_), .. }
    );
    let mode = std::fs::metadata(&config.path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if inline && mode & 0o007 != 0 {
        vec![format!(
            "{} holds auth.token inline and is readable by other users (mode {:o}); run `chmod o-rwx` on it or move the token to token_file / LoadCredential=",
            config.path.display(),
            mode & 0o777
        )]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthError;

    fn unreadable(path: &str, kind: std::io::ErrorKind) -> AuthError {
        AuthError::UnreadableSecret {
            what: "token",
            path: PathBuf::from(path),
            reason: kind.into(),
        }
    }

    /// `check` on config.example.toml warned every time: its token_file is the service's
    /// credential, which no shell has.
    #[test]
    fn a_service_credential_missing_outside_the_service_is_expected() {
        use std::io::ErrorKind::{NotFound, PermissionDenied};
        let path = "/run/credentials/extdrop.service/token";
        for kind in [NotFound, PermissionDenied] {
            let error = unreadable(path, kind);
            assert_eq!(
                service_only_credential(&error, false),
                Some(Path::new(path))
            );
            // Inside the service, systemd should have put it there: that is worth a warning.
            assert_eq!(service_only_credential(&error, true), None);
        }
        // Anywhere else, a file that cannot be read is the operator's to fix.
        let error = unreadable("/etc/extdrop/token", NotFound);
        assert_eq!(service_only_credential(&error, false), None);
        // A look-alike prefix is not systemd's folder.
        let error = unreadable("/run/credentials-old/token", NotFound);
        assert_eq!(service_only_credential(&error, false), None);
        // The file is there but unusable (a folder, bad bytes): warned.
        let error = unreadable(path, std::io::ErrorKind::InvalidData);
        assert_eq!(service_only_credential(&error, false), None);
    }
}
