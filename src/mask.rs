//! Masking of personal data (email addresses) before it reaches a log line, and the one way a
//! service's free text (a SCIM Error's `detail`) is shown: emails masked, length bounded.

/// Most characters of a service's `detail` kept in messages, reports and logs.
pub const MAX_DETAIL_CHARS: usize = 300;

/// Masks an email address as `a***@example.com`; other text is returned with its middle masked.
pub fn mask_email(value: &str) -> String {
    match value.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => {
            let first: String = value.chars().take(1).collect();
            format!("{first}***")
        }
    }
}

/// A service's free text as shown anywhere: every email-like word masked, control characters
/// (line breaks) turned into spaces, and at most [`MAX_DETAIL_CHARS`] characters kept.
pub fn masked_detail(text: &str) -> String {
    masked_text(text, MAX_DETAIL_CHARS)
}

/// Free text for a log line or message: emails masked (first, so that no address is cut into
/// an unmasked piece), control characters as spaces, at most `max_chars` characters.
pub fn masked_text(text: &str, max_chars: usize) -> String {
    bounded(&mask_emails_in(text), max_chars)
}

/// Free text with every word holding an `@` between two non-empty parts masked as an email;
/// control characters become spaces (one log line stays one line).
pub fn mask_emails_in(text: &str) -> String {
    // Words end where an address cannot continue: space, quotes, brackets, list punctuation.
    let separator = |c: char| {
        c.is_whitespace()
            || c.is_control()
            || matches!(
                c,
                '"' | '\''
                    | '`'
                    | '<'
                    | '>'
                    | '('
                    | ')'
                    | '['
                    | ']'
                    | '{'
                    | '}'
                    | ','
                    | ';'
                    | ':'
                    | '='
                    | '/'
                    | '\\'
                    | '|'
            )
    };
    let mut out = String::with_capacity(text.len());
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if separator(c) {
            push_word(&mut out, &text[start..i]);
            out.push(if c.is_control() { ' ' } else { c });
            start = i + c.len_utf8();
        }
    }
    push_word(&mut out, &text[start..]);
    out
}

fn push_word(out: &mut String, word: &str) {
    // A sentence's full stop after an address is not part of it.
    let core = word.trim_end_matches(['.', '!', '?']);
    match core.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
            out.push_str(&mask_email(core));
            out.push_str(&word[core.len()..]);
        }
        _ => out.push_str(word),
    }
}

/// At most `max_chars` characters of `text` (cut on a character boundary), `…` marking a cut.
pub fn bounded(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_local_part() {
        assert_eq!(mask_email("ada.lovelace@example.com"), "a***@example.com");
        assert_eq!(mask_email("jsmith"), "j***");
        assert_eq!(mask_email(""), "***");
        assert_eq!(mask_email("élodie@exemple.fr"), "é***@exemple.fr");
    }

    #[test]
    fn emails_inside_free_text_are_masked() {
        assert_eq!(
            mask_emails_in("User 'ada.lovelace@example.com' already exists."),
            "User 'a***@example.com' already exists."
        );
        assert_eq!(
            mask_emails_in("userName=bob@x.org, email:<carol@y.net>. Also dave@z.io."),
            "userName=b***@x.org, email:<c***@y.net>. Also d***@z.io."
        );
        // Not addresses: a bare `@`, a handle, a trailing `@`.
        assert_eq!(mask_emails_in("a @ b, @handle, x@"), "a @ b, @handle, x@");
        assert_eq!(mask_emails_in("line\nbreak\r\ttab"), "line break  tab");
    }

    #[test]
    fn details_are_masked_then_bounded_on_a_character_boundary() {
        let long = format!("{} é", "é".repeat(MAX_DETAIL_CHARS));
        let shown = masked_detail(&long);
        assert_eq!(shown.chars().count(), MAX_DETAIL_CHARS + 1);
        assert!(shown.ends_with('…'));
        assert_eq!(masked_detail("short"), "short");
        // Masking comes first: an address straddling the cut is never shown in clear.
        let straddling = format!("{}ada.lovelace@example.com", "x ".repeat(140));
        let shown = masked_detail(&straddling);
        assert!(!shown.contains("ada.lovelace"), "{shown}");
        assert!(shown.contains("a***@example.com"), "{shown}");
        assert_eq!(bounded("abc", 3), "abc");
        assert_eq!(bounded("abcd", 3), "abc…");
    }
}
