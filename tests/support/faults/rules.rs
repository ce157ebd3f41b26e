//! The control side both fault stand-ins share: queued rules, each matching some requests and
//! applying its fault a number of times (after letting some matching requests through), and the
//! log of the requests seen.

/// One queued fault and the requests it applies to.
struct Rule<M, F> {
    matcher: M,
    fault: F,
    /// Matching requests let through before the fault applies.
    skip: usize,
    /// `None`: forever.
    remaining: Option<usize>,
}

/// The rules of a proxy, in the order they were queued, and its request log.
pub struct FaultQueue<M, F, S> {
    rules: Vec<Rule<M, F>>,
    log: Vec<S>,
}

impl<M, F, S> Default for FaultQueue<M, F, S> {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            log: Vec::new(),
        }
    }
}

#[allow(dead_code)] // each proxy uses part of it
impl<M, F: Clone, S: Clone> FaultQueue<M, F, S> {
    /// Queues `fault` for the requests `matcher` matches: after `skip` of them, `times` times
    /// (`None`: until cleared; `Some(0)`: not at all).
    pub fn push(&mut self, matcher: M, fault: F, skip: usize, times: Option<usize>) {
        if times != Some(0) {
            self.rules.push(Rule {
                matcher,
                fault,
                skip,
                remaining: times,
            });
        }
    }

    /// The fault of the first rule matching a request (as `matches` says), used up once.
    pub fn take(&mut self, matches: impl Fn(&M) -> bool) -> Option<F> {
        let index = self.rules.iter().position(|rule| matches(&rule.matcher))?;
        let rule = &mut self.rules[index];
        if rule.skip > 0 {
            rule.skip -= 1;
            return None;
        }
        let fault = rule.fault.clone();
        if let Some(remaining) = rule.remaining.as_mut() {
            *remaining -= 1;
            if *remaining == 0 {
                self.rules.remove(index);
            }
        }
        Some(fault)
    }

    /// Drops every queued rule.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Rules not used up yet.
    pub fn pending(&self) -> usize {
        self.rules.len()
    }

    /// Logs a request.
    pub fn record(&mut self, seen: S) {
        self.log.push(seen);
    }

    /// The requests seen so far, oldest first.
    pub fn log(&self) -> &[S] {
        &self.log
    }

    /// Forgets the requests seen so far.
    pub fn clear_log(&mut self) {
        self.log.clear();
    }
}
