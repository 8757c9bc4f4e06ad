//! The multipart `filename` as browsers write it.
//!
//! reqwest puts the name into `Content-Disposition: form-data; …; filename="…"` with only
//! backslash escapes, so a CR or LF in a file name would end up raw inside the part header,
//! where it ends the header line (a server then reads a forged header, or a broken part).
//! Linux allows such names, so extdrop encodes the name itself first, the way the WHATWG HTML
//! standard tells browsers to encode multipart/form-data names: `"` becomes `%22`, CR `%0D`, LF
//! `%0A`. The other C0 controls and DEL are percent-encoded too: they have no place in a header
//! either. Everything else, `%` included, is left as it is, as browsers do.

/// Encodes a file name for the `filename` parameter of a multipart part header: `"`, the C0
/// controls (CR and LF among them) and DEL become `%XX`; every other character is unchanged.
pub fn encode_filename(name: &str) -> String {
    let mut encoded = String::with_capacity(name.len());
    for c in name.chars() {
        if c == '"' || c.is_ascii_control() {
            // ASCII, so the code point is the byte.
            encoded.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            encoded.push(c);
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quotes_line_breaks_and_controls_are_percent_encoded() {
        assert_eq!(
            encode_filename("say \"hi\"\r\nX-Forged: 1.zip"),
            "say %22hi%22%0D%0AX-Forged: 1.zip"
        );
        assert_eq!(encode_filename("tab\there\u{7f}\0"), "tab%09here%7F%00");
        // Not a control: left alone, as browsers leave it.
        assert_eq!(encode_filename("100%_ü\\x.zip"), "100%_ü\\x.zip");
    }

    proptest! {
        #[test]
        fn encoded_names_hold_no_quote_or_control(name in any::<String>()) {
            let encoded = encode_filename(&name);
            prop_assert!(!encoded.chars().any(|c| c == '"' || c.is_ascii_control()), "{encoded:?}");
        }

        #[test]
        fn ordinary_names_are_unchanged(name in "[^\"\\x00-\\x1f\\x7f]*") {
            prop_assert_eq!(encode_filename(&name), name);
        }
    }
}
