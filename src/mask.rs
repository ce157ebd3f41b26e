//! Masking of personal data (email addresses) before it reaches a log line.

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
}
