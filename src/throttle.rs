//! A warning that is logged at most once a second, with the count of those held back: the
//! accept loop's error and limit logs, and the dispatch's "no worker alive" log.

use std::time::{Duration, Instant};

/// Lets one message through per second and counts those held back in between.
#[derive(Debug, Default)]
pub(crate) struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    /// `Some(held back since the last one)` when a message may be logged at `now`.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}
