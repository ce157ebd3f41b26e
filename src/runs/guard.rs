//! The deactivation guard: a run that would deactivate more users than an operator allows is
//! held until approved (a truncated or broken export must not disable half the company).

use crate::mask::mask_email;

/// Users shown (masked) in a held run's summary.
pub const SAMPLE_SIZE: usize = 10;

/// The limits (`MAX_DEACTIVATIONS`, `MAX_DEACTIVATION_PERCENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    /// Deactivations one run may send without approval.
    pub max: u64,
    /// Percent of the users (the ledger's or the file's, whichever is more) one run may
    /// deactivate without approval.
    pub percent: u64,
}

impl Default for GuardLimits {
    fn default() -> Self {
        Self {
            max: 50,
            percent: 10,
        }
    }
}

impl GuardLimits {
    /// Whether `deactivations` exceed either limit; `known` is the users the ledger knows for
    /// the tenant, `named` the users the file names (the larger is the base of the percentage,
    /// so a first run is not held for its leavers).
    pub fn holds(&self, deactivations: u64, known: u64, named: u64) -> bool {
        let base = known.max(named);
        deactivations > self.max
            || u128::from(deactivations) * 100 > u128::from(self.percent) * u128::from(base)
    }
}

/// A masked sample of the userNames to deactivate, for a held run's summary.
pub fn sample<'a>(user_names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    user_names
        .into_iter()
        .take(SAMPLE_SIZE)
        .map(mask_email)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_limit_holds_a_run() {
        let limits = GuardLimits::default();
        assert!(!limits.holds(0, 0, 0));
        assert!(!limits.holds(5, 1000, 900));
        assert!(!limits.holds(50, 1000, 1000));
        assert!(limits.holds(51, 10_000, 10_000), "more than 50");
        assert!(
            limits.holds(11, 100, 40),
            "more than 10% of the larger base"
        );
        assert!(!limits.holds(10, 100, 40));
        // A first run: the ledger knows nobody yet, the file's users are the base.
        assert!(!limits.holds(30, 0, 1000));
        assert!(!GuardLimits {
            max: u64::MAX,
            percent: 100
        }
        .holds(u64::MAX, u64::MAX, 1));
    }

    #[test]
    fn samples_are_masked_and_short() {
        let names: Vec<String> = (0..20).map(|i| format!("person{i}@example.com")).collect();
        let sample = sample(names.iter().map(String::as_str));
        assert_eq!(sample.len(), SAMPLE_SIZE);
        assert!(sample.iter().all(|s| !s.contains("person1@example.com")));
    }
}
