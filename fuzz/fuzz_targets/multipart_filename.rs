//! Fuzz target `multipart_filename`: [`encode_filename`] on arbitrary text, the way a dropped
//! file's name reaches the `filename="…"` of the upload's part header.
//!
//! Proves: it never panics; the encoded name holds no CR, LF, `"` or other ASCII control, so
//! it cannot end the header line or the quoted string; every other character passes
//! unchanged and in order, so ordinary names are sent as they are.
#![no_main]

use extdrop::upload::encode_filename;
use libfuzzer_sys::fuzz_target;

fn encoded(c: char) -> bool {
    c == '"' || c.is_ascii_control()
}

fuzz_target!(|name: &str| {
    let sent = encode_filename(name);
    assert!(
        !sent.chars().any(encoded),
        "a raw control character or quote in {sent:?}"
    );
    // Removing the encodings leaves exactly the characters that needed none.
    let kept: String = name.chars().filter(|c| !encoded(*c)).collect();
    let mut rest = sent.as_str();
    for c in kept.chars() {
        let at = rest
            .find(c)
            .unwrap_or_else(|| panic!("{c:?} of {name:?} is missing from {sent:?}"));
        assert!(
            rest[..at]
                .chars()
                .all(|d| d == '%' || d.is_ascii_hexdigit()),
            "only encodings stand between kept characters in {sent:?}"
        );
        rest = &rest[at + c.len_utf8()..];
    }
    if !name.chars().any(encoded) {
        assert_eq!(sent, name);
    }
});
