//! Per-thread recording: histograms and counters, merged once at the end (no sharing on the
//! hot path).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::outcome::Outcome;

/// The largest SYN-retransmission count kept apart; more are counted in the last bucket.
pub const MAX_RETRANS_BUCKET: usize = 8;

/// The window steady arrivals are counted in against the schedule: a server sees the load
/// as arrivals per such window, so a generator that starts each attempt in its window
/// delivered the arrival pattern asked, however it clumped starts within one.
pub const ARRIVAL_WINDOW: std::time::Duration = std::time::Duration::from_millis(10);

/// How many distinct unexpected answers a run keeps as samples.
pub const UNEXPECTED_KEPT: usize = 5;

/// A microsecond histogram: 1 us to 1 hour, 3 significant figures.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

/// What one generator thread measured.
///
/// ```
/// use synack_load::outcome::Outcome;
/// use synack_load::record::Recorder;
///
/// let (mut one, mut two) = (Recorder::default(), Recorder::default());
/// one.outcome(Outcome::Refused, None);
/// two.outcome(Outcome::Other, Some(libc::EACCES));
/// one.merge(&two);
/// assert_eq!((one.count(Outcome::Refused), one.count(Outcome::Other)), (1, 1));
/// // An `other` ending keeps the OS's message for its errno.
/// let (msg, n) = one.other_errors.iter().next().unwrap();
/// assert!(msg.ends_with("(os error 13)") && *n == 1);
/// ```
#[derive(Debug, Clone)]
pub struct Recorder {
    /// `connect()` to established, us.
    pub connect: Histogram<u64>,
    /// Scheduled start to established (open loop), us.
    pub from_schedule: Histogram<u64>,
    /// `connect()` to the first byte read, us.
    pub first_byte: Histogram<u64>,
    /// `connect()` to the answer's end (an HTTP response read to its end, `--read`'s bytes
    /// or the close), us.
    pub response: Histogram<u64>,
    /// HTTP responses by status code (every response whose head came).
    pub statuses: BTreeMap<u16, u64>,
    /// Up to [`UNEXPECTED_KEPT`] distinct unexpected answers (why, and the first line), with
    /// how many attempts each ended `bad_response`; the rest count only in the class.
    pub unexpected: Vec<(String, u64)>,
    /// Probe: established (as the client saw it) to the server's `accept()`, us.
    pub queue_wait: Histogram<u64>,
    /// Probe: the server's `accept()` to its handler's dispatch, us.
    pub dispatch: Histogram<u64>,
    /// Probe: dispatch to the first byte of the handler's data, us.
    pub rest: Histogram<u64>,
    /// Generator lateness: actual start minus scheduled start (open loop), us.
    pub start_lag: Histogram<u64>,
    /// The same, for the attempts that are not part of a burst (open loop with bursts), us.
    pub steady_lag: Histogram<u64>,
    /// The latest start of a burst attempt after its second began, us (how long a burst took
    /// to go out).
    pub burst_spread_us: u64,
    /// Steady attempts that fell due while their second's burst was still being started: the
    /// schedule put them behind the burst, so their lag in `steady_lag` counts from the
    /// burst's last start, not from their due time.
    pub behind_burst: u64,
    /// Steady starts per [`ARRIVAL_WINDOW`] since the run's start: `[scheduled, started]`
    /// (index: the window), for how far the generator clumped arrivals against the schedule.
    pub arrivals: Vec<[u32; 2]>,
    /// How long this thread waited, runnable, for a CPU over the run (the run queue's delay,
    /// `/proc/thread-self/schedstat`); merged, the longest of the threads'. `None` where not
    /// published.
    pub cpu_wait: Option<std::time::Duration>,
    /// The longest turn of a generator thread's event loop (from poll's return to its next
    /// call), us: while a turn lasts, no event is seen.
    pub turn: Histogram<u64>,
    /// Connections by `tcpi_total_retrans` at establishment (last bucket: that many or more).
    pub retrans: [u64; MAX_RETRANS_BUCKET + 1],
    /// Established connections whose `TCP_INFO` could not be read (in no retransmission
    /// bucket).
    pub retrans_unknown: u64,
    /// Timeouts whose SYN the kernel had retransmitted at least once (`TCP_INFO` at expiry).
    pub timeout_retransmitted: u64,
    /// Attempts started.
    pub attempts: u64,
    /// The most attempts this thread had in flight at once.
    pub peak_in_flight: u64,
    /// Attempts that got a connection.
    pub established: u64,
    /// Attempts by how they ended.
    pub outcomes: [u64; Outcome::ALL.len()],
    /// Errors of class `other`, by OS message.
    pub other_errors: BTreeMap<String, u64>,
    /// Attempts by the second they started in (since the run's start) and how they ended:
    /// `per_second[s][o.slot()]`, so a moment (a restart) shows as what clients saw then.
    pub per_second: Vec<[u64; Outcome::ALL.len()]>,
    /// With `--tls`: the handshake (established to done), us.
    pub tls_handshake: Histogram<u64>,
    /// Handshakes done full, and resumed (as the server did them).
    pub tls_full: u64,
    pub tls_resumed: u64,
    /// Handshakes that offered resumption.
    pub tls_offered: u64,
    /// `tls_failed` endings by kind (the alert, what rustls refused, a stall, a close).
    pub tls_failures: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            connect: latency_histogram(),
            from_schedule: latency_histogram(),
            first_byte: latency_histogram(),
            response: latency_histogram(),
            statuses: BTreeMap::new(),
            unexpected: Vec::new(),
            start_lag: latency_histogram(),
            steady_lag: latency_histogram(),
            burst_spread_us: 0,
            behind_burst: 0,
            arrivals: Vec::new(),
            cpu_wait: None,
            turn: latency_histogram(),
            queue_wait: latency_histogram(),
            dispatch: latency_histogram(),
            rest: latency_histogram(),
            retrans: [0; MAX_RETRANS_BUCKET + 1],
            retrans_unknown: 0,
            timeout_retransmitted: 0,
            attempts: 0,
            peak_in_flight: 0,
            established: 0,
            outcomes: [0; Outcome::ALL.len()],
            other_errors: BTreeMap::new(),
            per_second: Vec::new(),
            tls_handshake: latency_histogram(),
            tls_full: 0,
            tls_resumed: 0,
            tls_offered: 0,
            tls_failures: BTreeMap::new(),
        }
    }
}

impl Recorder {
    /// Counts an ending; for `Other`, remembers the errno.
    pub fn outcome(&mut self, o: Outcome, errno: Option<i32>) {
        self.outcomes[o.slot()] += 1;
        if o == Outcome::Other {
            let msg = errno.map_or_else(
                || "unknown".to_string(),
                |e| std::io::Error::from_raw_os_error(e).to_string(),
            );
            *self.other_errors.entry(msg).or_default() += 1;
        }
    }

    /// Counts an ending in the second its attempt started (see [`per_second`](Self::per_second));
    /// [`outcome`](Self::outcome) counts it in the totals.
    pub fn in_second(&mut self, second: u64, o: Outcome) {
        // A day of seconds at most: a longer run's later seconds share the last row.
        let s = usize::try_from(second.min(86_400)).unwrap_or(86_400);
        if self.per_second.len() <= s {
            self.per_second.resize(s + 1, [0; Outcome::ALL.len()]);
        }
        self.per_second[s][o.slot()] += 1;
    }

    /// Counts an `Other` ending with a message of our own.
    pub fn other(&mut self, msg: &str) {
        self.outcomes[Outcome::Other.slot()] += 1;
        *self.other_errors.entry(msg.to_string()).or_default() += 1;
    }

    /// Remembers an unexpected answer (a `bad_response`), if it is one of the first
    /// [`UNEXPECTED_KEPT`] distinct ones (or one of those again).
    pub fn unexpected(&mut self, why: &str, n: u64) {
        if let Some(e) = self.unexpected.iter_mut().find(|(w, _)| w == why) {
            e.1 += n;
        } else if self.unexpected.len() < UNEXPECTED_KEPT {
            self.unexpected.push((why.to_string(), n));
        }
    }

    /// Counts a steady start, due in window `due` and started in window `started` (each a
    /// count of [`ARRIVAL_WINDOW`]s since the run's start).
    pub fn arrival(&mut self, due: u64, started: u64) {
        // A day of windows at most: later ones share the last.
        let cap = 86_400_000 / ARRIVAL_WINDOW.as_millis() as u64;
        let (d, s) = (due.min(cap) as usize, started.min(cap) as usize);
        if self.arrivals.len() <= d.max(s) {
            self.arrivals.resize(d.max(s) + 1, [0; 2]);
        }
        self.arrivals[d][0] += 1;
        self.arrivals[s][1] += 1;
    }

    /// The count of one class.
    pub fn count(&self, o: Outcome) -> u64 {
        self.outcomes[o.slot()]
    }

    /// Adds another thread's recording to this one.
    pub fn merge(&mut self, other: &Recorder) {
        let _ = self.connect.add(&other.connect);
        let _ = self.from_schedule.add(&other.from_schedule);
        let _ = self.first_byte.add(&other.first_byte);
        let _ = self.response.add(&other.response);
        for (code, n) in &other.statuses {
            *self.statuses.entry(*code).or_default() += n;
        }
        for (why, n) in &other.unexpected {
            self.unexpected(why, *n);
        }
        let _ = self.start_lag.add(&other.start_lag);
        let _ = self.steady_lag.add(&other.steady_lag);
        self.burst_spread_us = self.burst_spread_us.max(other.burst_spread_us);
        self.behind_burst += other.behind_burst;
        self.cpu_wait = self.cpu_wait.max(other.cpu_wait);
        if self.arrivals.len() < other.arrivals.len() {
            self.arrivals.resize(other.arrivals.len(), [0; 2]);
        }
        for (mine, theirs) in self.arrivals.iter_mut().zip(&other.arrivals) {
            mine[0] += theirs[0];
            mine[1] += theirs[1];
        }
        let _ = self.turn.add(&other.turn);
        let _ = self.queue_wait.add(&other.queue_wait);
        let _ = self.dispatch.add(&other.dispatch);
        let _ = self.rest.add(&other.rest);
        for (a, b) in self.retrans.iter_mut().zip(other.retrans) {
            *a += b;
        }
        self.retrans_unknown += other.retrans_unknown;
        self.timeout_retransmitted += other.timeout_retransmitted;
        self.attempts += other.attempts;
        // Threads reach their peaks at different moments: the sum bounds the run's peak.
        self.peak_in_flight += other.peak_in_flight;
        self.established += other.established;
        for (a, b) in self.outcomes.iter_mut().zip(other.outcomes) {
            *a += b;
        }
        for (k, v) in &other.other_errors {
            *self.other_errors.entry(k.clone()).or_default() += v;
        }
        let _ = self.tls_handshake.add(&other.tls_handshake);
        self.tls_full += other.tls_full;
        self.tls_resumed += other.tls_resumed;
        self.tls_offered += other.tls_offered;
        for (k, v) in &other.tls_failures {
            *self.tls_failures.entry(k.clone()).or_default() += v;
        }
        if self.per_second.len() < other.per_second.len() {
            self.per_second
                .resize(other.per_second.len(), [0; Outcome::ALL.len()]);
        }
        for (mine, theirs) in self.per_second.iter_mut().zip(&other.per_second) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
    }
}

/// Records a duration in microseconds (at least 1).
pub fn record_us(h: &mut Histogram<u64>, d: std::time::Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

/// Records a signed span of nanoseconds in microseconds; a span that came out negative (the
/// client noticed an event after the server acted on it) is recorded at the floor, 1 us.
pub fn record_signed_ns(h: &mut Histogram<u64>, ns: i64) {
    h.saturating_record((ns.max(0) as u64 / 1000).max(1));
}

/// A connection's life split at the server's accept, from `CLOCK_MONOTONIC` readings (ns):
/// `[handshake, accept-queue wait, dispatch, rest]`, signed, summing exactly to
/// `first_byte - start`.
pub fn decompose(
    start: u64,
    established: u64,
    accept: u64,
    dispatch: u64,
    first_byte: u64,
) -> [i64; 4] {
    let d = |a: u64, b: u64| b as i64 - a as i64;
    [
        d(start, established),
        d(established, accept),
        d(accept, dispatch),
        d(dispatch, first_byte),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decomposition_sums_to_the_whole() {
        let cases = [
            [100, 150, 400, 420, 900],
            // The client noticed its connection after the server accepted it: a negative wait.
            [100, 500, 450, 470, 900],
            [0, 0, 0, 0, 0],
        ];
        for [s, e, a, d, f] in cases {
            let parts = decompose(s, e, a, d, f);
            assert_eq!(parts.iter().sum::<i64>(), f as i64 - s as i64, "{parts:?}");
        }
        assert_eq!(decompose(100, 150, 400, 420, 900), [50, 250, 20, 480]);
    }
}
