//! How untrusted text is shown to people: file names and server words in logs, `status` and
//! reports.
//!
//! Linux file names are bytes: anything but `/` and NUL, not necessarily UTF-8. A name is
//! never shown raw, because a newline in it would forge a log line and an escape sequence
//! would drive the operator's terminal. Invariants of everything this module returns: no
//! control character (C0, DEL, C1), no bidirectional override, and the bytes of invalid UTF-8
//! are shown as `\xNN` each, so the text still tells which bytes they were.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;

/// A name as text: `(text, exact)`, where `exact` is false when the name was not valid UTF-8
/// and its invalid bytes are shown as `\xNN` (the text is then not the file's real name).
pub fn name(name: &OsStr) -> (String, bool) {
    let bytes = name.as_bytes();
    if let Ok(text) = std::str::from_utf8(bytes) {
        return (text.to_owned(), true);
    }
    let mut text = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            let _ = write!(text, "\\x{byte:02X}");
        }
    }
    (text, false)
}

/// Whether `c` must not reach a log line or a terminal as it is.
fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every control character and bidirectional override escaped (`\n`, `\r`, `\t`,
/// else `\u{…}`): safe on one log line and on a terminal.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The field formatter of the text log: like `tracing-subscriber`'s default (the message,
/// then `name=value` pairs separated by spaces) but with every value [`escaped`], so that no
/// file name, path or server answer can break a line or forge another.
pub fn log_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static
{
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        if field.name() == "message" {
            write!(writer, "{}", escaped(&text))
        } else {
            write!(writer, "{}={}", field.name(), escaped(&text))
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn invalid_bytes_are_shown_as_hex_and_flagged() {
        let (text, exact) = name(OsStr::from_bytes(b"bad\xff__Build.zip"));
        assert_eq!(text, "bad\\xFF__Build.zip");
        assert!(!exact);
        let (text, exact) = name(OsStr::new("ok__Build.zip"));
        assert_eq!(text, "ok__Build.zip");
        assert!(exact);
    }

    #[test]
    fn a_forged_line_stays_on_one_line() {
        let forged = "a.zip\n2026-01-01T00:00:00Z INFO filed outcome=done\x1b[2J\x07";
        let shown = escaped(forged);
        assert!(!shown.contains('\n') && !shown.contains('\x1b') && !shown.contains('\x07'));
        assert_eq!(
            shown,
            "a.zip\\n2026-01-01T00:00:00Z INFO filed outcome=done\\u{1b}[2J\\u{7}"
        );
        assert!(matches!(escaped("plain name.zip"), Cow::Borrowed(_)));
    }

    proptest! {
        /// Any byte string Linux allows as a name comes out printable, on one line, and two
        /// different names never look the same when either is not valid UTF-8.
        #[test]
        fn any_name_is_shown_safely(a in proptest::collection::vec(1u8..=255, 1..255),
                                    b in proptest::collection::vec(1u8..=255, 1..255)) {
            let (ta, exact_a) = name(OsStr::from_bytes(&a));
            let shown = escaped(&ta);
            prop_assert!(!shown.chars().any(unsafe_char));
            let (tb, exact_b) = name(OsStr::from_bytes(&b));
            if a != b && (exact_a && exact_b) {
                prop_assert_ne!(&ta, &tb);
            }
            if exact_a {
                prop_assert_eq!(ta.as_bytes(), &a[..]);
            }
        }
    }
}
