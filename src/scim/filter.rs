//! SCIM filter values (RFC 7644 §3.4.2.2): the userName lookup used to resolve 409 conflicts.

/// The filter `userName eq "<value>"`, with `"` and `\` escaped as in a JSON string.
pub fn user_name_eq(user_name: &str) -> String {
    let mut out = String::with_capacity(user_name.len() + 16);
    out.push_str("userName eq \"");
    for c in user_name.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_quotes_and_backslashes() {
        assert_eq!(user_name_eq("ada"), r#"userName eq "ada""#);
        assert_eq!(user_name_eq(r#"o"neil\x"#), r#"userName eq "o\"neil\\x""#);
        assert_eq!(user_name_eq("zoë"), "userName eq \"zoë\"");
    }

    proptest! {
        // The quoted part must be a JSON string that decodes back to the input.
        #[test]
        fn round_trips_as_a_json_string(name in any::<String>()) {
            let filter = user_name_eq(&name);
            let quoted = filter.strip_prefix("userName eq ").unwrap();
            let decoded: String = serde_json::from_str(quoted).unwrap();
            prop_assert_eq!(decoded, name);
        }
    }
}
