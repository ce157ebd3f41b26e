//! How the CLI shows numbers and reasons: thousands separators, and reasons grouped with their
//! counts (emails in them masked).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::mask::mask_emails_in;
use crate::report::ReportLine;

/// A reason and how many operations or rows it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// What happened, in words.
    pub reason: String,
    /// How many times.
    pub count: u64,
}

/// Counts identical reasons, most frequent first (then alphabetically, for a stable order).
pub fn group<I: IntoIterator<Item = String>>(reasons: I) -> Vec<Reason> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for reason in reasons {
        *counts.entry(reason).or_default() += 1;
    }
    let mut grouped: Vec<Reason> = counts
        .into_iter()
        .map(|(reason, count)| Reason { reason, count })
        .collect();
    grouped.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    grouped
}

/// Groups the reasons of report lines with the given status.
pub fn group_report(lines: &[ReportLine], status: &str) -> Vec<Reason> {
    group(
        lines
            .iter()
            .filter(|l| l.status == status)
            .map(|l| match l.http_status {
                Some(code) => format!("HTTP {code}: {}", mask_emails_in(&l.reason)),
                None => mask_emails_in(&l.reason),
            }),
    )
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn addresses_in_reasons_are_masked() {
        assert_eq!(
            mask_emails_in("userName \"ada@example.com\" is taken; ask bob@x.io."),
            "userName \"a***@example.com\" is taken; ask b***@x.io."
        );
        assert_eq!(mask_emails_in("HTTP 503"), "HTTP 503");
    }
}
