//! The commands that act on CodeArts directly, no folders involved: `extdrop upload` (with
//! `--publish`) and `extdrop versions`.
//!
//! Invariants:
//! - `upload` checks the file like the daemon does (names, size, not empty, the package check
//!   when `validate_package` is on) before anything is sent, unless `--no-check`; a refused
//!   file sends nothing and exits 2.
//! - Exit statuses follow SPEC §1: 0 done, 2 refused (by a check or the server) or no such
//!   extension, 1 fatal (configuration, credentials, network).

use std::path::Path;

use crate::cli::{EXIT_FATAL, EXIT_OK, EXIT_PARTIAL};
use crate::config::Config;
use crate::package::Manifest;
use crate::release::{Publication, Releaser, VersionInfo, verdict_reason};
use crate::service::with_runtime;
use crate::upload::{Package, Snapshot, Uploader, Verdict};

/// What `extdrop upload` was asked to do.
#[derive(Debug, Clone, Copy)]
pub struct UploadRequest<'a> {
    /// The package.
    pub file: &'a Path,
    /// `--plugin-name`.
    pub plugin_name: &'a str,
    /// `--business-type`.
    pub business_type: &'a str,
    /// `--no-check`: skip the daemon's checks.
    pub no_check: bool,
    /// `--publish`: publish the uploaded version as official.
    pub publish: bool,
}

/// Checks a file as the daemon would before uploading it; the manifest when the package check
/// ran. The error is one sentence for the operator.
pub fn check(
    file: &Path,
    plugin_name: &str,
    business_type: &str,
    config: &Config,
) -> Result<Option<Manifest>, String> {
    if !crate::rules::is_valid_plugin_name(plugin_name) {
        return Err(format!(
            "plugin name {plugin_name:?} is not valid: it must be 1 to 50 letters, digits, _ or -"
        ));
    }
    // The API's rule for business_type is the plugin_name's (issue 8).
    if !crate::rules::is_valid_plugin_name(business_type) {
        return Err(format!(
            "business type {business_type:?} is not valid: it must be 1 to 50 letters, digits, _ or -"
        ));
    }
    let size = std::fs::symlink_metadata(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?
        .len();
    crate::upload::size_refusal(size, config.upload.max_file_size)?;
    if !config.upload.validate_package {
        return Ok(None);
    }
    crate::package::check_package(file, plugin_name, business_type)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// `extdrop upload FILE --plugin-name P --business-type B [--no-check] [--publish]`.
pub fn upload(path: &Path, request: UploadRequest<'_>) -> u8 {
    let UploadRequest {
        file,
        plugin_name,
        business_type,
        no_check,
        publish,
    } = request;
    let checked = match std::fs::symlink_metadata(file) {
        Ok(meta) if meta.is_file() => Snapshot::of(&meta),
        Ok(_) => {
            crate::errln!("extdrop: {} is not a regular file", file.display());
            return EXIT_FATAL;
        }
        Err(e) => {
            crate::errln!("extdrop: cannot read {}: {e}", file.display());
            return EXIT_FATAL;
        }
    };
    let file_name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("package.zip")
        .to_owned();
    with_runtime(path, |config| async move {
        let manifest = if no_check {
            None
        } else {
            match check(file, plugin_name, business_type, &config) {
                Ok(manifest) => manifest,
                Err(reason) => {
                    crate::errln!(
                        "extdrop: refused, nothing was sent: {reason} (--no-check skips the checks)"
                    );
                    return EXIT_PARTIAL;
                }
            }
        };
        // Publishing names a version, which only the manifest gives.
        let version = match (publish, manifest) {
            (false, _) => None,
            (true, Some(manifest)) => Some(manifest.version),
            (true, None) => match crate::package::read_manifest(file) {
                Ok(manifest) => Some(manifest.version),
                Err(e) => {
                    crate::errln!(
                        "extdrop: refused, nothing was sent: --publish needs the version in the package's codearts-extension.json: {e}"
                    );
                    return EXIT_PARTIAL;
                }
            },
        };
        let (uploader, releaser) = match clients(&config) {
            Ok(clients) => clients,
            Err(e) => {
                crate::errln!("extdrop: {e}");
                return EXIT_FATAL;
            }
        };
        if let Some(version) = &version {
            // Refused early what cannot succeed, as the daemon does.
            match releaser.versions(plugin_name).await {
                Ok((versions, _)) if !versions.exists() => {
                    crate::errln!(
                        "extdrop: refused, nothing was sent: extension {plugin_name} does not exist in CodeArts; register it or drop the package into a watch with register = true"
                    );
                    return EXIT_PARTIAL;
                }
                Ok((versions, _)) if versions.is_formal(version) => {
                    crate::errln!(
                        "extdrop: refused, nothing was sent: version {version} of {plugin_name} is already published; official versions cannot be replaced: raise the version in codearts-extension.json"
                    );
                    return EXIT_PARTIAL;
                }
                Ok(_) => {}
                Err(verdict) => return fail("looking up the extension failed", &verdict),
            }
        }
        let package = Package {
            path: file,
            file_name: &file_name,
            checked,
            // Not hashed beforehand: the size, time and inode still catch a file that changes.
            plugin_name,
            business_type,
        };
        // Bytes, rate and ETA on a terminal; nothing at all otherwise (scripts, journald).
        let progress = crate::progress::UploadProgress::new(&file_name, checked.size);
        let (uploader, progress) = (&uploader, &progress);
        let attempt = |package| async move {
            let attempt = uploader
                .attempt_observed(package, |tally| progress.follow(tally))
                .await;
            progress.finish();
            attempt.verdict
        };
        let mut verdict = attempt(package).await;
        if let Verdict::Unauthorized { answer, stamp } = &verdict {
            let (answer, stamp) = (answer.clone(), *stamp);
            match uploader.auth().renew(stamp).await {
                Ok(()) => verdict = attempt(package).await,
                Err(e) => {
                    crate::errln!("extdrop: {e} (the server said {})", answer.describe());
                    return EXIT_FATAL;
                }
            }
        }
        let answer = match verdict {
            Verdict::Uploaded(answer) => answer,
            other => return upload_failed(other),
        };
        crate::outln!(
            "uploaded {file_name} as {plugin_name} ({business_type}); request id {}",
            answer.request_id.as_deref().unwrap_or("-")
        );
        let Some(version) = version else {
            return EXIT_OK;
        };
        publish_now(&releaser, plugin_name, &version).await
    })
}

/// Publishes `version` and verifies it is official; one attempt each, the operator is there.
async fn publish_now(releaser: &Releaser, plugin_name: &str, version: &str) -> u8 {
    const FAILED: &str = "uploaded as a draft, but publishing failed";
    let display_name = match releaser.versions(plugin_name).await {
        Ok((versions, _)) => versions.display_name().unwrap_or(plugin_name).to_owned(),
        Err(verdict) => return fail(FAILED, &verdict),
    };
    let publication = Publication {
        plugin_name: plugin_name.to_owned(),
        display_name,
        version: version.to_owned(),
    };
    if let Err(verdict) = releaser.publish(&publication).await {
        return fail(FAILED, &verdict);
    }
    match releaser.detail(plugin_name, version).await {
        Ok((detail, answer)) if detail.is_formal(version) => {
            crate::outln!(
                "published version {version} of {plugin_name}; request id {}",
                answer.request_id.as_deref().unwrap_or("-")
            );
            EXIT_OK
        }
        Ok((detail, _)) => {
            crate::errln!(
                "extdrop: {FAILED}: version {version} is {} after publishing",
                detail.version_attribution
            );
            EXIT_PARTIAL
        }
        Err(verdict) => fail(FAILED, &verdict),
    }
}

/// `extdrop versions PLUGIN_NAME [--json]`.
pub fn versions(path: &Path, plugin_name: &str, json: bool) -> u8 {
    with_runtime(path, |config| async move {
        let (_, releaser) = match clients(&config) {
            Ok(clients) => clients,
            Err(e) => {
                crate::errln!("extdrop: {e}");
                return EXIT_FATAL;
            }
        };
        let versions = match releaser.versions(plugin_name).await {
            Ok((versions, _)) => versions,
            Err(verdict) => return fail("cannot list the versions", &verdict),
        };
        if !versions.exists() {
            crate::errln!("extdrop: extension {plugin_name} does not exist in CodeArts");
            return EXIT_PARTIAL;
        }
        let rows = newest_first(versions.data);
        if json {
            let list: Vec<serde_json::Value> = rows
                .iter()
                .map(|v| {
                    serde_json::json!({
                        "version": v.version,
                        "version_attribution": v.version_attribution,
                    })
                })
                .collect();
            crate::outln!("{}", serde_json::Value::Array(list));
        } else if rows.is_empty() {
            crate::errln!("extdrop: extension {plugin_name} is registered but has no version yet");
        } else {
            for v in &rows {
                crate::outln!(
                    "{:<10} {}",
                    v.version.as_deref().unwrap_or(""),
                    v.version_attribution
                );
            }
        }
        EXIT_OK
    })
}

/// The uploaded versions (not the `init` placeholder), newest first by number.
fn newest_first(mut rows: Vec<VersionInfo>) -> Vec<VersionInfo> {
    rows.retain(VersionInfo::has_version);
    let key = |v: &VersionInfo| -> Vec<u32> {
        v.version
            .as_deref()
            .unwrap_or("")
            .split('.')
            .map(|n| n.parse().unwrap_or(0))
            .collect()
    };
    rows.sort_by_key(|v| std::cmp::Reverse(key(v)));
    rows
}

fn clients(config: &Config) -> Result<(Uploader, Releaser), String> {
    let client = crate::upload::http_client(&config.codearts).map_err(|e| e.to_string())?;
    let auth = crate::auth::Auth::new(&config.auth, client.clone()).map_err(|e| e.to_string())?;
    Ok((
        Uploader::new(&config.codearts, client.clone(), auth.clone()),
        Releaser::new(&config.codearts, client, auth),
    ))
}

/// A failed call: refusals exit 2, anything that might work later exits 1.
fn fail(what: &str, verdict: &Verdict) -> u8 {
    crate::errln!("extdrop: {what}: {}", verdict_reason(verdict));
    match verdict {
        Verdict::Rejected { .. } | Verdict::Unauthorized { .. } => EXIT_PARTIAL,
        _ => EXIT_FATAL,
    }
}

fn upload_failed(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Uploaded(_) => EXIT_OK,
        Verdict::Rejected { reason, .. } => {
            crate::errln!("extdrop: rejected: {reason}");
            EXIT_PARTIAL
        }
        Verdict::Unauthorized { .. } => {
            crate::errln!(
                "extdrop: rejected: the server answered 401: the credentials were refused even after renewing them"
            );
            EXIT_PARTIAL
        }
        Verdict::Transient { why, .. } => {
            crate::errln!("extdrop: {why}");
            EXIT_FATAL
        }
        Verdict::NoCredentials(e) => {
            crate::errln!("extdrop: {e}");
            EXIT_FATAL
        }
    }
}
