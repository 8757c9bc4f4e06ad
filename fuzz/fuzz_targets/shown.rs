//! Fuzz target `shown`: [`shown::name`] then [`shown::escaped`] on arbitrary bytes, the way a
//! file name reaches a log line, `status` or a report.
//!
//! Proves: neither panics; what is shown never holds a control character (C0, DEL, C1) or a
//! bidirectional override, so no name can break a log line or drive a terminal; a name that
//! is valid UTF-8 is shown exactly, and one that is not is flagged as inexact.
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use extdrop::shown;
use libfuzzer_sys::fuzz_target;

fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fuzz_target!(|bytes: &[u8]| {
    let (text, exact) = shown::name(OsStr::from_bytes(bytes));
    assert_eq!(exact, std::str::from_utf8(bytes).is_ok());
    if exact {
        assert_eq!(text.as_bytes(), bytes);
    }
    let shown = shown::escaped(&text);
    assert!(
        !shown.chars().any(unsafe_char),
        "unsafe character in {shown:?}"
    );
    // Escaping is the identity on text that needs none, so plain names are shown as they are.
    if !text.chars().any(unsafe_char) {
        assert_eq!(shown, text);
    }
});
