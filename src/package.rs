//! The extension package check, and a writer for sample packages.
//!
//! An extension package is a ZIP whose root holds `codearts-extension.json`, a JSON object with
//! at least `type`, `name` (the plugin_name), `category` (the business type) and `version`
//! (`X.Y.Z`, each 0–99) (SPEC §5). Before uploading, the daemon checks that a package is such a
//! ZIP and that its manifest agrees with the names derived from the file name (SPEC §3 step 4),
//! so that a mislabelled package fails fast with a clear reason instead of reaching the server.
//!
//! Invariants:
//! - The check reads only the ZIP's central directory and the manifest entry, and at most
//!   [`MAX_MANIFEST_SIZE`] bytes of that, so memory stays bounded whatever the archive holds.
//! - Every [`PackageError`] displays as one sentence meant for the operator; it becomes the
//!   `reason` of the file's report verbatim.
//! - The writers never leave a half-written package under the target name: they write a hidden
//!   sibling file and rename it into place.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use zip::result::ZipError;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

/// Name of the manifest entry, which must sit at the root of the ZIP.
pub const MANIFEST_NAME: &str = "codearts-extension.json";

/// Largest manifest the check reads, in bytes. Real manifests are a few hundred bytes; the bound
/// keeps a hostile or broken package from making the daemon allocate without limit.
pub const MAX_MANIFEST_SIZE: u64 = 1 << 20;

/// The fields of `codearts-extension.json` the check relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `name`: the extension's plugin_name.
    pub name: String,
    /// `category`: the extension's business type.
    pub category: String,
    /// `version`: `X.Y.Z`, each part 0–99.
    pub version: String,
    /// `type` (normally `"Task"`), when present as a string. Not checked: the server judges it.
    pub kind: Option<String>,
    /// `friendlyName`, when present as a string: the display name used to register and
    /// publish (SPEC §6).
    pub friendly_name: Option<String>,
    /// `description`, when present as a string: the description used to register.
    pub description: Option<String>,
}

/// Why a package cannot be uploaded as it is.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The file could not be opened or its size read.
    #[error("the package could not be opened: {0}")]
    Open(#[source] io::Error),
    /// The file has no bytes at all.
    #[error("the package is an empty file, not a ZIP archive")]
    Empty,
    /// The file is not a ZIP, or its central directory is damaged.
    #[error("the package is not a readable ZIP archive ({0})")]
    NotZip(String),
    /// The ZIP uses a feature the reader does not support.
    #[error("the package uses a ZIP feature extdrop cannot read ({0})")]
    UnsupportedZip(String),
    /// Reading the archive failed at the operating-system level.
    #[error("the package could not be read: {0}")]
    Read(#[source] io::Error),
    /// No manifest anywhere in the archive.
    #[error("the package has no codearts-extension.json at its root")]
    ManifestMissing,
    /// A manifest exists, but only below a folder: the folder was zipped instead of its contents.
    #[error(
        "the package has codearts-extension.json only in a subfolder ({path:?}); it must be at \
         the root of the ZIP, so zip the folder's contents rather than the folder itself"
    )]
    ManifestInSubfolder {
        /// The entry's path inside the ZIP.
        path: String,
    },
    /// A root entry whose name differs from the manifest's only in letter case.
    #[error(
        "the package's manifest is named {name:?} at its root, but it must be exactly \
         codearts-extension.json (the name is case-sensitive)"
    )]
    ManifestMisnamed {
        /// The entry's name inside the ZIP.
        name: String,
    },
    /// The manifest entry is encrypted.
    #[error(
        "codearts-extension.json is encrypted inside the package; extension packages must not be encrypted"
    )]
    ManifestEncrypted,
    /// The manifest entry uses a compression method the reader lacks.
    #[error(
        "codearts-extension.json is compressed with a method extdrop cannot read ({0}); \
         use deflate or no compression"
    )]
    ManifestCompression(String),
    /// The manifest is larger than [`MAX_MANIFEST_SIZE`].
    #[error(
        "codearts-extension.json is larger than the {limit} bytes extdrop reads; a manifest is normally a few hundred bytes"
    )]
    ManifestTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The manifest's bytes could not be decompressed or failed their checksum.
    #[error("codearts-extension.json could not be read from the package: {0}")]
    ManifestUnreadable(#[source] io::Error),
    /// The manifest is not JSON.
    #[error("codearts-extension.json is not valid JSON: {0}")]
    ManifestNotJson(#[source] serde_json::Error),
    /// The manifest is JSON, but not an object.
    #[error("codearts-extension.json must hold a JSON object, but it holds {0}")]
    ManifestNotObject(&'static str),
    /// Required fields are absent.
    #[error("codearts-extension.json lacks the required {}", field_list(.0))]
    MissingFields(Vec<&'static str>),
    /// A field has the wrong JSON type.
    #[error("the {field:?} field of codearts-extension.json must be a string, but it is {found}")]
    FieldNotString {
        /// The field's name.
        field: &'static str,
        /// What it is instead, e.g. "a number".
        found: &'static str,
    },
    /// `name` differs from the plugin_name derived from the file name.
    #[error(
        "codearts-extension.json has name {manifest:?}, but the file name gives plugin_name \
         {expected:?}; they must be equal"
    )]
    NameMismatch {
        /// The manifest's `name`.
        manifest: String,
        /// The plugin_name from the file name.
        expected: String,
    },
    /// `category` differs from the business type derived from the file name.
    #[error(
        "codearts-extension.json has category {manifest:?}, but the file name gives business \
         type {expected:?}; they must be equal (letter case aside)"
    )]
    CategoryMismatch {
        /// The manifest's `category`.
        manifest: String,
        /// The business type from the file name.
        expected: String,
    },
    /// `version` is not `X.Y.Z` with each part 0–99.
    #[error(
        "codearts-extension.json has version {0:?}, but a version must be three numbers from 0 \
         to 99 separated by dots, such as 1.0.0"
    )]
    BadVersion(String),
}

fn field_list(fields: &[&str]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| format!("{f:?}")).collect();
    match quoted.as_slice() {
        [one] => format!("field {one}"),
        [init @ .., last] => format!("fields {} and {last}", init.join(", ")),
        [] => "fields".to_owned(),
    }
}

/// Checks that `path` is an extension package whose manifest agrees with `plugin_name` and
/// `business_type`, and returns the manifest.
///
/// Blocking (the caller uses `spawn_blocking`). Reads only the ZIP central directory and the one
/// manifest entry. `name` must equal `plugin_name` exactly; `category` must equal
/// `business_type` ignoring letter case, the same way business types from file names are
/// accepted, because the server is sent the watch's canonical spelling anyway.
pub fn check_package(
    path: &Path,
    plugin_name: &str,
    business_type: &str,
) -> Result<Manifest, PackageError> {
    agrees(read_manifest(path)?, plugin_name, business_type)
}

/// [`check_package`] on a package held in memory: the same checks and the same errors, for
/// callers (the fuzz targets) that have bytes rather than a file.
pub fn check_package_bytes(
    bytes: &[u8],
    plugin_name: &str,
    business_type: &str,
) -> Result<Manifest, PackageError> {
    if bytes.is_empty() {
        return Err(PackageError::Empty);
    }
    agrees(
        manifest_of(io::Cursor::new(bytes))?,
        plugin_name,
        business_type,
    )
}

/// The manifest, if it agrees with the names derived from the file name and has a valid
/// version.
fn agrees(
    manifest: Manifest,
    plugin_name: &str,
    business_type: &str,
) -> Result<Manifest, PackageError> {
    if manifest.name != plugin_name {
        return Err(PackageError::NameMismatch {
            manifest: manifest.name,
            expected: plugin_name.to_owned(),
        });
    }
    if manifest.category.to_lowercase() != business_type.to_lowercase() {
        return Err(PackageError::CategoryMismatch {
            manifest: manifest.category,
            expected: business_type.to_owned(),
        });
    }
    if !is_valid_version(&manifest.version) {
        return Err(PackageError::BadVersion(manifest.version));
    }
    Ok(manifest)
}

/// Reads and parses the root manifest of the package at `path`, without comparing it to any
/// names.
pub fn read_manifest(path: &Path) -> Result<Manifest, PackageError> {
    // The claimed file is never a link, but the check must not follow one if it were.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(PackageError::Open)?;
    if file.metadata().map_err(PackageError::Open)?.len() == 0 {
        return Err(PackageError::Empty);
    }
    manifest_of(BufReader::new(file))
}

/// Reads and parses the root manifest of a package held by `reader` (a file, or bytes in
/// memory as the stand-in holds an upload), reading only the central directory and the
/// manifest entry.
pub fn manifest_of<R: Read + io::Seek>(reader: R) -> Result<Manifest, PackageError> {
    let mut archive = ZipArchive::new(reader).map_err(archive_error)?;

    let Some(index) = archive.index_for_name(MANIFEST_NAME) else {
        return Err(explain_missing_manifest(&archive));
    };
    let entry = archive.by_index_data(index).map_err(archive_error)?;
    if entry.encrypted() {
        return Err(PackageError::ManifestEncrypted);
    }
    // The declared size is only a hint (it can lie); the bounded read below is what protects
    // memory. Checking it first merely avoids decompressing a megabyte to learn the obvious.
    if entry.size() > MAX_MANIFEST_SIZE {
        return Err(PackageError::ManifestTooLarge {
            limit: MAX_MANIFEST_SIZE,
        });
    }
    let reader = archive.by_index(index).map_err(|err| match err {
        ZipError::CompressionMethodNotSupported(method) => {
            PackageError::ManifestCompression(format!("method {method}"))
        }
        ZipError::UnsupportedArchive(what) => PackageError::ManifestCompression(what.to_owned()),
        other => archive_error(other),
    })?;
    let mut bytes = Vec::new();
    reader
        .take(MAX_MANIFEST_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(PackageError::ManifestUnreadable)?;
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(PackageError::ManifestTooLarge {
            limit: MAX_MANIFEST_SIZE,
        });
    }
    parse_manifest(&bytes)
}

fn archive_error(err: ZipError) -> PackageError {
    match err {
        ZipError::Io(io) => PackageError::Read(io),
        ZipError::InvalidArchive(why) => PackageError::NotZip(why.into_owned()),
        ZipError::UnsupportedArchive(why) => PackageError::UnsupportedZip(why.to_owned()),
        ZipError::CompressionMethodNotSupported(method) => {
            PackageError::UnsupportedZip(format!("compression method {method}"))
        }
        other => PackageError::NotZip(other.to_string()),
    }
}

fn explain_missing_manifest<R: Read + io::Seek>(archive: &ZipArchive<R>) -> PackageError {
    // Some Windows tools write '\' separators; treat them as folders too.
    let misplaced = archive.file_names().flatten().find_map(|name| {
        let base = name.rsplit(['/', '\\']).next().unwrap_or(&name);
        base.eq_ignore_ascii_case(MANIFEST_NAME)
            .then(|| (name.len() != base.len(), name.to_string()))
    });
    match misplaced {
        Some((true, path)) => PackageError::ManifestInSubfolder { path },
        Some((false, name)) => PackageError::ManifestMisnamed { name },
        None => PackageError::ManifestMissing,
    }
}

fn parse_manifest(bytes: &[u8]) -> Result<Manifest, PackageError> {
    // Editors on Windows like to prepend a byte-order mark, which JSON parsers reject.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let value: Value = serde_json::from_slice(bytes).map_err(PackageError::ManifestNotJson)?;
    let Value::Object(object) = value else {
        return Err(PackageError::ManifestNotObject(json_kind(&value)));
    };
    let missing: Vec<&'static str> = ["name", "category", "version"]
        .into_iter()
        .filter(|field| !object.contains_key(*field))
        .collect();
    if !missing.is_empty() {
        return Err(PackageError::MissingFields(missing));
    }
    Ok(Manifest {
        name: string_field(&object, "name")?,
        category: string_field(&object, "category")?,
        version: string_field(&object, "version")?,
        kind: optional_string(&object, "type"),
        friendly_name: optional_string(&object, "friendlyName"),
        description: optional_string(&object, "description"),
    })
}

fn optional_string(object: &Map<String, Value>, field: &str) -> Option<String> {
    object.get(field).and_then(Value::as_str).map(str::to_owned)
}

fn string_field(object: &Map<String, Value>, field: &'static str) -> Result<String, PackageError> {
    match object.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(PackageError::FieldNotString {
            field,
            found: json_kind(other),
        }),
        None => Err(PackageError::MissingFields(vec![field])),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether `version` is `X.Y.Z` with each part an integer 0–99 (SPEC §5).
///
/// Parts are one or two ASCII digits, so `01` is accepted as 1 but `001`, `+1` and `1.2.3-rc`
/// are not.
pub fn is_valid_version(version: &str) -> bool {
    let parts: Vec<&str> = version.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes a valid minimal extension package (ZIP, deflated) at `path`: a root
/// `codearts-extension.json` `{"type":"Task","name":..,"category":..,"version":..,
/// "description":..}` plus an executable `scripts/run.sh`. Used by `extdrop demo` and tests.
///
/// The file appears atomically (see [`write_zip`]).
pub fn write_sample(
    path: &Path,
    plugin_name: &str,
    business_type: &str,
    version: &str,
) -> io::Result<()> {
    let manifest = serde_json::json!({
        "type": "Task",
        "name": plugin_name,
        "category": business_type,
        "version": version,
        "description": format!("Sample extension {plugin_name}, written by extdrop"),
    });
    let manifest = serde_json::to_string_pretty(&manifest).map_err(io::Error::other)?;
    let script = format!("#!/bin/sh\necho \"hello from {plugin_name} {version}\"\n");
    write_zip(
        path,
        Some(&manifest),
        &[("scripts/run.sh", script.as_bytes())],
    )
}

/// Writes a ZIP (deflated) at `path` whose root `codearts-extension.json` holds `manifest_json`
/// verbatim (`None`: no manifest entry), followed by the `extra` entries (name, contents), so
/// tests can build broken packages. Entries ending in `.sh` are marked executable.
///
/// The archive is written to a hidden sibling (`.NAME.partial`, which the default `exclude`
/// globs ignore), synced, then renamed into place, so a watcher never sees it half-written.
pub fn write_zip(
    path: &Path,
    manifest_json: Option<&str>,
    extra: &[(&str, &[u8])],
) -> io::Result<()> {
    let partial = partial_path(path)?;
    let result =
        write_zip_to(&partial, manifest_json, extra).and_then(|()| std::fs::rename(&partial, path));
    if result.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn partial_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(name);
    hidden.push(".partial");
    Ok(path.with_file_name(hidden))
}

fn write_zip_to(
    path: &Path,
    manifest_json: Option<&str>,
    extra: &[(&str, &[u8])],
) -> io::Result<()> {
    let mut zip = ZipWriter::new(BufWriter::new(File::create(path)?));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .unix_permissions(0o644);
    let entries = manifest_json
        .map(|json| (MANIFEST_NAME, json.as_bytes()))
        .into_iter()
        .chain(extra.iter().copied());
    for (name, contents) in entries {
        let mode = if name.ends_with(".sh") { 0o755 } else { 0o644 };
        zip.start_file(name, options.unix_permissions(mode))?;
        zip.write_all(contents)?;
    }
    let file = zip.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its message
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn check(path: &Path) -> Result<Manifest, PackageError> {
        check_package(path, "demo_task", "Deploy")
    }

    fn with_manifest(json: &str) -> (tempfile::TempDir, PathBuf) {
        let d = dir();
        let p = d.path().join("p.zip");
        write_zip(&p, Some(json), &[]).unwrap();
        (d, p)
    }

    fn manifest_json(name: &str, category: &str, version: &str) -> String {
        serde_json::json!({"type": "Task", "name": name, "category": category, "version": version})
            .to_string()
    }

    #[test]
    fn valid_sample_passes() {
        let d = dir();
        let p = d.path().join("demo_task__Deploy.zip");
        write_sample(&p, "demo_task", "Deploy", "1.0.0").unwrap();
        assert_eq!(
            check(&p).unwrap(),
            Manifest {
                name: "demo_task".into(),
                category: "Deploy".into(),
                version: "1.0.0".into(),
                kind: Some("Task".into()),
                friendly_name: None,
                description: Some("Sample extension demo_task, written by extdrop".into()),
            }
        );
        // The writer leaves no partial file behind.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        // And the sample is a real, deflated ZIP with an executable script.
        let mut archive = ZipArchive::new(File::open(&p).unwrap()).unwrap();
        let script = archive.by_name("scripts/run.sh").unwrap();
        assert_eq!(script.compression(), CompressionMethod::Deflated);
        assert_eq!(script.unix_mode().map(|m| m & 0o777), Some(0o755));
    }

    #[test]
    fn category_compares_case_insensitively() {
        let (_d, p) = with_manifest(&manifest_json("demo_task", "deploy", "1.2.3"));
        assert!(check(&p).is_ok());
    }

    #[test]
    fn not_a_zip() {
        let d = dir();
        let p = d.path().join("p.zip");
        std::fs::write(&p, "this is a text file, not an archive\n").unwrap();
        let err = check(&p).unwrap_err();
        assert!(matches!(err, PackageError::NotZip(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("the package is not a readable ZIP archive"),
            "{err}"
        );
    }

    #[test]
    fn truncated_zip() {
        let d = dir();
        let p = d.path().join("p.zip");
        write_sample(&p, "demo_task", "Deploy", "1.0.0").unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 30]).unwrap();
        assert!(matches!(check(&p), Err(PackageError::NotZip(_))));
    }

    #[test]
    fn empty_file() {
        let d = dir();
        let p = d.path().join("p.zip");
        std::fs::write(&p, "").unwrap();
        let err = check(&p).unwrap_err();
        assert!(matches!(err, PackageError::Empty));
        assert_eq!(
            err.to_string(),
            "the package is an empty file, not a ZIP archive"
        );
    }

    #[test]
    fn missing_file() {
        let d = dir();
        assert!(matches!(
            check(&d.path().join("nope.zip")),
            Err(PackageError::Open(_))
        ));
    }

    #[test]
    fn manifest_missing() {
        let d = dir();
        let p = d.path().join("p.zip");
        write_zip(&p, None, &[("scripts/run.sh", b"#!/bin/sh\n")]).unwrap();
        let err = check(&p).unwrap_err();
        assert!(matches!(err, PackageError::ManifestMissing));
        assert_eq!(
            err.to_string(),
            "the package has no codearts-extension.json at its root"
        );
    }

    #[test]
    fn empty_zip_has_no_manifest() {
        let d = dir();
        let p = d.path().join("p.zip");
        write_zip(&p, None, &[]).unwrap();
        assert!(matches!(check(&p), Err(PackageError::ManifestMissing)));
    }

    #[test]
    fn manifest_in_subfolder() {
        let d = dir();
        let p = d.path().join("p.zip");
        let json = manifest_json("demo_task", "Deploy", "1.0.0");
        write_zip(
            &p,
            None,
            &[("demo_task/codearts-extension.json", json.as_bytes())],
        )
        .unwrap();
        let err = check(&p).unwrap_err();
        assert!(
            matches!(&err, PackageError::ManifestInSubfolder { path } if path == "demo_task/codearts-extension.json")
        );
        assert!(err.to_string().contains("only in a subfolder"), "{err}");
    }

    #[test]
    fn manifest_with_wrong_case() {
        let d = dir();
        let p = d.path().join("p.zip");
        let json = manifest_json("demo_task", "Deploy", "1.0.0");
        write_zip(&p, None, &[("CodeArts-Extension.json", json.as_bytes())]).unwrap();
        assert!(matches!(
            check(&p),
            Err(PackageError::ManifestMisnamed { .. })
        ));
    }

    #[test]
    fn invalid_json() {
        let (_d, p) = with_manifest("{\"name\": \"demo_task\",");
        let err = check(&p).unwrap_err();
        assert!(matches!(err, PackageError::ManifestNotJson(_)));
        assert!(
            err.to_string()
                .starts_with("codearts-extension.json is not valid JSON: "),
            "{err}"
        );
    }

    #[test]
    fn json_but_not_an_object() {
        let (_d, p) = with_manifest("[1, 2]");
        let err = check(&p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "codearts-extension.json must hold a JSON object, but it holds an array"
        );
    }

    #[test]
    fn byte_order_mark_is_tolerated() {
        let json = format!("\u{feff}{}", manifest_json("demo_task", "Deploy", "1.0.0"));
        let (_d, p) = with_manifest(&json);
        assert!(check(&p).is_ok());
    }

    #[test]
    fn missing_fields_are_named() {
        let (_d, p) = with_manifest(r#"{"type": "Task", "category": "Deploy"}"#);
        let err = check(&p).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"codearts-extension.json lacks the required fields "name" and "version""#
        );
        let (_d, p) = with_manifest(r#"{"name": "demo_task", "category": "Deploy"}"#);
        assert_eq!(
            check(&p).unwrap_err().to_string(),
            r#"codearts-extension.json lacks the required field "version""#
        );
        let (_d, p) = with_manifest("{}");
        assert_eq!(
            check(&p).unwrap_err().to_string(),
            r#"codearts-extension.json lacks the required fields "name", "category" and "version""#
        );
    }

    #[test]
    fn field_of_wrong_type() {
        let (_d, p) =
            with_manifest(r#"{"name": "demo_task", "category": "Deploy", "version": 1.0}"#);
        assert_eq!(
            check(&p).unwrap_err().to_string(),
            r#"the "version" field of codearts-extension.json must be a string, but it is a number"#
        );
    }

    #[test]
    fn name_mismatch() {
        let (_d, p) = with_manifest(&manifest_json("Demo_Task", "Deploy", "1.0.0"));
        let err = check(&p).unwrap_err();
        assert!(matches!(err, PackageError::NameMismatch { .. }));
        assert_eq!(
            err.to_string(),
            r#"codearts-extension.json has name "Demo_Task", but the file name gives plugin_name "demo_task"; they must be equal"#
        );
    }

    #[test]
    fn category_mismatch() {
        let (_d, p) = with_manifest(&manifest_json("demo_task", "Build", "1.0.0"));
        let err = check(&p).unwrap_err();
        assert!(matches!(err, PackageError::CategoryMismatch { .. }));
        assert!(err.to_string().contains(r#"category "Build""#), "{err}");
    }

    #[test]
    fn bad_versions() {
        for version in [
            "1.2", "1.2.3.4", "1.100.0", "a.b.c", "", "1..2", "1.2.3-rc", "001.0.0",
        ] {
            let (_d, p) = with_manifest(&manifest_json("demo_task", "Deploy", version));
            let err = check(&p).unwrap_err();
            assert!(
                matches!(&err, PackageError::BadVersion(v) if v == version),
                "{version}: {err:?}"
            );
        }
        let (_d, p) = with_manifest(&manifest_json("demo_task", "Deploy", "1.2"));
        assert_eq!(
            check(&p).unwrap_err().to_string(),
            r#"codearts-extension.json has version "1.2", but a version must be three numbers from 0 to 99 separated by dots, such as 1.0.0"#
        );
    }

    #[test]
    fn good_versions() {
        for version in ["0.0.0", "99.99.99", "1.0.10", "01.2.3"] {
            assert!(is_valid_version(version), "{version}");
        }
    }

    #[test]
    fn oversized_manifest() {
        let padding = " ".repeat(MAX_MANIFEST_SIZE as usize);
        let json = format!("{}{padding}", manifest_json("demo_task", "Deploy", "1.0.0"));
        let (_d, p) = with_manifest(&json);
        let err = check(&p).unwrap_err();
        assert!(
            matches!(err, PackageError::ManifestTooLarge { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("larger than the 1048576 bytes"),
            "{err}"
        );
        // Compressed well below the limit: the check must not be fooled by the small entry.
        assert!(std::fs::metadata(&p).unwrap().len() < 64 * 1024);
    }

    #[test]
    fn manifest_exactly_at_the_limit_is_read() {
        let base = manifest_json("demo_task", "Deploy", "1.0.0");
        let padding = " ".repeat(MAX_MANIFEST_SIZE as usize - base.len());
        let (_d, p) = with_manifest(&format!("{base}{padding}"));
        assert!(check(&p).is_ok());
    }

    #[test]
    fn the_check_in_memory_answers_as_the_check_on_disk() {
        let d = dir();
        let good = d.path().join("good.zip");
        write_sample(&good, "demo_task", "Deploy", "1.0.0").unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let cases: [(&[u8], &str); 4] = [
            (&bytes, "demo_task"),
            (&bytes, "other_task"),
            (&bytes[..bytes.len() - 30], "demo_task"),
            (b"", "demo_task"),
        ];
        for (content, plugin_name) in cases {
            let p = d.path().join("p.zip");
            std::fs::write(&p, content).unwrap();
            let on_disk = check_package(&p, plugin_name, "Deploy").map_err(|e| e.to_string());
            let in_memory =
                check_package_bytes(content, plugin_name, "Deploy").map_err(|e| e.to_string());
            assert_eq!(on_disk, in_memory);
        }
    }

    #[test]
    fn write_zip_rejects_a_path_without_file_name() {
        assert_eq!(
            write_zip(Path::new("/"), None, &[]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
