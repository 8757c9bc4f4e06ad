//! Fuzz target `config`: [`Config::parse`] on arbitrary UTF-8 text.
//!
//! Proves: parsing any text never panics, and a refusal always has something to say (its
//! message is not empty), since the operator reads nothing else.
#![no_main]

use std::path::Path;

use extdrop::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    // A fixed absolute path: relative folders resolve against it without touching the disk.
    if let Err(err) = Config::parse(text, Path::new("/etc/extdrop/config.toml")) {
        assert!(!err.to_string().trim().is_empty(), "empty error: {err:?}");
    }
});
