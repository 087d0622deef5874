//! The deadlines of a thread's attempts, soonest first. A deadline names the attempt (slot
//! and sequence number) and the phase it was set for; one that outlived its attempt or phase
//! is skipped when it comes up, rather than searched for and removed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::attempt::Phase;

/// One deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Timer {
    /// When (first, so the heap orders by it).
    pub at: Instant,
    pub slot: usize,
    pub seq: u64,
    pub phase: Phase,
}

/// A thread's deadlines.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    pub fn push(&mut self, t: Timer) {
        self.heap.push(Reverse(t));
    }

    /// The soonest deadline.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(t)| t.at)
    }

    /// The soonest deadline, taken, if it is due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        if self.next_at()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(t)| t)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn deadlines_come_due_soonest_first() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for (ms, slot) in [(30, 0), (10, 1), (20, 2)] {
            t.push(Timer {
                at: t0 + Duration::from_millis(ms),
                slot,
                seq: 1,
                phase: Phase::Connecting,
            });
        }
        assert_eq!(t.next_at(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(t.pop_due(t0), None);
        let due: Vec<usize> = std::iter::from_fn(|| t.pop_due(t0 + Duration::from_millis(25)))
            .map(|t| t.slot)
            .collect();
        assert_eq!(due, vec![1, 2]);
        assert_eq!(
            t.pop_due(t0 + Duration::from_secs(1)).map(|t| t.slot),
            Some(0)
        );
        assert_eq!(t.next_at(), None);
    }
}
