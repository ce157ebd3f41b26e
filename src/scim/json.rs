//! JSON strings for hand-assembled documents (SCIM Users, BulkRequest envelopes): the common
//! value that needs no escaping is copied as is; anything else is escaped by serde_json.

/// Whether serde_json would write `value` unchanged between quotes (no control character, quote
/// or backslash; non-ASCII text is written as UTF-8, not escaped).
fn is_plain(value: &str) -> bool {
    // A fold without an early exit: the compiler checks many bytes per instruction.
    value.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    })
}

/// Appends `value` as a JSON string, exactly as `serde_json::to_writer` would write it.
pub fn push_str(out: &mut Vec<u8>, value: &str) {
    if is_plain(value) {
        out.reserve(value.len() + 2);
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

/// The length of `value` written by [`push_str`], computed without writing it in the usual case.
pub fn str_len(value: &str) -> usize {
    if is_plain(value) {
        value.len() + 2
    } else {
        let mut out = Vec::new();
        push_str(&mut out, value);
        out.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_what_json_needs_and_nothing_else() {
        for value in [
            "",
            "Zoë Ní Bhriain",
            "a\"b",
            "back\\slash",
            "tab\there",
            "nul\0",
            "del\x7f",
        ] {
            let mut out = Vec::new();
            push_str(&mut out, value);
            assert_eq!(out, serde_json::to_vec(value).unwrap(), "{value:?}");
            assert_eq!(str_len(value), out.len(), "{value:?}");
        }
    }

    proptest! {
        #[test]
        fn same_bytes_as_serde_json(value in any::<String>()) {
            let mut out = b"x".to_vec();
            push_str(&mut out, &value);
            let expected = serde_json::to_vec(&value).unwrap();
            prop_assert_eq!(&out[1..], expected.as_slice());
            prop_assert_eq!(str_len(&value), out.len() - 1);
        }
    }
}
