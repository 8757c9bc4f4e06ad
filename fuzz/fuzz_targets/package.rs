//! Fuzz target `package`: the manifest/ZIP check ([`check_package_bytes`], the in-memory form
//! of the check the daemon runs on every claimed file) on arbitrary bytes.
//!
//! Proves: no byte sequence makes the check panic, and its memory stays bounded whatever the
//! archive claims about itself (ZIP bombs, lying sizes, huge entry counts): run with
//! `-rss_limit_mb=2048`, which libFuzzer also applies to any single allocation. A package that
//! passes has the names it was checked against and a valid version; every refusal is one
//! non-empty sentence, because it becomes the report's `reason` verbatim.
#![no_main]

use extdrop::package::{check_package_bytes, is_valid_version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    match check_package_bytes(bytes, "demo_task", "Deploy") {
        Ok(manifest) => {
            assert_eq!(manifest.name, "demo_task");
            assert_eq!(manifest.category.to_lowercase(), "deploy");
            assert!(is_valid_version(&manifest.version));
        }
        Err(err) => {
            let reason = err.to_string();
            assert!(!reason.trim().is_empty(), "empty reason: {err:?}");
            assert!(
                !reason.contains('\n'),
                "reason on several lines: {reason:?}"
            );
        }
    }
});
