//! The judge: every rule that turns a run's figures into a verdict, in one place. `report/`
//! holds the figures and renders them; the rules are here, each naming its evidence.
//!
//! - **Delivered** ([`delivery`]): the server received the load asked. Every attempt started,
//!   none late, steady starts on time (start lag p99 by rank within `--lag-limit`), the
//!   arrivals per 10 ms window as the schedule had them (within [`ARRIVAL_TOLERANCE`]),
//!   bursts out within [`BURST_SPREAD_LIMIT_US`]. Lateness the schedule itself causes (a
//!   burst's own issuing, steady starts due meanwhile) is not a failure.
//! - **Saturated** ([`verdict`]): the server's evidence. Its listener's own drops or a full
//!   queue while the arrivals asked were started, even when starts lagged; else, for a
//!   delivered step, timeouts, SYN retransmissions, unserved or refused connections, bad
//!   answers, or connect latency (from each attempt's own `connect()`) past `--p99-limit`. Latency from the schedule is what a user waits and stays in the report,
//!   but it holds the generator's own lag, so it judges nothing.
//! - **The limit** ([`limit`]): on a step the generator did not deliver, or one whose only
//!   sign is latency, which side ran out: the generator (a thread at its CPU limit), the
//!   server (its threads at theirs, or its listener dropping) or the **host** (every CPU
//!   busy, neither side alone at its limit: `host_bound`).
//!
//! ```
//! use synack_load::hostview::HostView;
//!
//! // Both CPUs busy, the generator's thread at 60%, no server thread at its limit: the host.
//! let v = HostView { cpus: 2, host_idle: Some(0.01), generator_cores: 0.6,
//!     generator_busiest: 0.6, generator_cpus: None, server: None };
//! assert!(v.host_busy() && !v.generator_at_limit() && !v.server_at_limit());
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hostview::HostView;
use crate::outcome::Outcome;
use crate::report::sweep::{Step, Verdict};
use crate::report::{FloodReport, Latency, fmt_rate};

/// A burst whose last start came more than this after its second began was not delivered as
/// one, us.
pub const BURST_SPREAD_LIMIT_US: u64 = 100_000;

/// The most steady starts that may begin in another 10 ms window than the schedule's, as a
/// share, for the arrivals to count as the schedule's.
pub const ARRIVAL_TOLERANCE: f64 = 0.02;

/// Why the generator did not deliver the load asked, each reason with its evidence; empty
/// when it did. Only the generator's own figures are read: its report, and the classes of
/// starts that failed for want of its own descriptors or ports.
///
/// ```
/// # use std::collections::BTreeMap;
/// # use std::time::{Duration, SystemTime};
/// # use synack_load::engine::RunResult;
/// # use synack_load::outcome::Outcome;
/// # use synack_load::plan::{Load, PlanBuilder};
/// # use synack_load::record::Recorder;
/// # use synack_load::report::{FloodReport, HostFacts};
/// use synack_load::judge::delivery;
///
/// # let load = Load::Open { from: 1000.0, to: 1000.0, burst: 0 };
/// # let plan = PlanBuilder::new("127.0.0.1:7878", load, Duration::from_secs(1)).build()?;
/// # let mut rec = Recorder::default();
/// # (rec.attempts, rec.established) = (1000, 1000);
/// # (0..1000).for_each(|_| rec.outcome(Outcome::Ok, None));
/// # let run = RunResult { rec, intervals: BTreeMap::new(), response_intervals: BTreeMap::new(),
/// #     tls_intervals: BTreeMap::new(), started_at: SystemTime::now(), elapsed: Duration::from_secs(1),
/// #     active: Duration::from_secs(1), thread_cpu: Vec::new(), start_lateness: None };
/// // `rep`: 1000 a second for 1 s, every attempt started on time.
/// let mut rep = FloodReport::build(&plan, &run, &HostFacts::default(), None, None, vec![]);
/// assert!(delivery(&rep).is_empty());
/// // A third of the steady starts in another 10 ms window than the schedule's.
/// rep.generator.arrivals_displaced = Some(0.3);
/// assert!(delivery(&rep)[0].contains("10 ms window"));
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
pub fn delivery(rep: &FloodReport) -> Vec<String> {
    let g = &rep.generator;
    let mut reasons = Vec::new();
    if g.not_started > 0 {
        reasons.push(format!(
            "{} of {} scheduled attempts were never started: it started {} of the {} asked",
            g.not_started,
            g.scheduled.unwrap_or(0),
            fmt_rate(g.started_rate),
            g.offered_rate.map_or_else(|| "?".into(), fmt_rate),
        ));
    }
    if g.late > 0 {
        reasons.push(format!(
            "{} attempts were late: at their deadline the kernel had established them (or held their answer), but the generator had not got to them",
            g.late
        ));
    }
    if let Some(p99) = g.start_lag_p99_us
        && p99 > g.lag_limit_us
        && lag_condemns(rep)
    {
        reasons.push(format!(
            "start lag p99 {p99} us is above the {} us limit (--lag-limit): the schedule was not kept",
            g.lag_limit_us
        ));
    }
    if let Some(d) = g.arrivals_displaced
        && d > ARRIVAL_TOLERANCE
    {
        reasons.push(format!(
            "{:.1}% of steady starts began in another 10 ms window than the schedule's (at most {:.0}%): the arrivals were not the schedule's",
            d * 100.0,
            ARRIVAL_TOLERANCE * 100.0
        ));
    }
    if g.burst_spread_us > BURST_SPREAD_LIMIT_US {
        reasons.push(format!(
            "bursts were not started together: a burst's start came {} ms after its second began (limit {} ms)",
            g.burst_spread_us / 1000,
            BURST_SPREAD_LIMIT_US / 1000
        ));
    }
    for (n, what) in [
        (rep.outcome(Outcome::FdLimit), "descriptors (EMFILE/ENFILE)"),
        (
            rep.outcome(Outcome::PortsExhausted),
            "local ports or source addresses (EADDRNOTAVAIL)",
        ),
    ] {
        if n > 0 {
            reasons.push(format!(
                "{n} attempts could not start: the generator ran out of {what}"
            ));
        }
    }
    if g.scheduled.is_some()
        && g.peak_in_flight >= g.max_in_flight as u64
        && (g.not_started > 0 || g.late > 0)
    {
        reasons.push(format!(
            "the in-flight bound ({}, --max-in-flight) was reached: starts waited for attempts to end",
            g.max_in_flight
        ));
    }
    if !reasons.is_empty() && !g.thread_busy.is_empty() {
        let busy: Vec<String> = g
            .thread_busy
            .iter()
            .map(|b| format!("{:.0}%", b * 100.0))
            .collect();
        reasons.push(format!(
            "generator threads' CPU over the run: {} (/proc/thread-self/schedstat)",
            busy.join(", ")
        ));
    }
    reasons
}

/// Whether a start-lag p99 past `--lag-limit` means the generator did not keep the schedule.
/// It does when the generator's busiest thread was at its CPU limit, when the host's CPUs
/// were all busy, when the arrivals left their 10 ms windows, or when there is no host view
/// to tell. Otherwise (the generator idle on an idle host, every arrival in its window) the
/// lateness is the host's wake-up latency, which the server could not see: it is reported
/// (a note), not judged.
fn lag_condemns(rep: &FloodReport) -> bool {
    let g = &rep.generator;
    if rep.host.is_none() {
        return true;
    }
    let busy = g.thread_busy.iter().copied().fold(0.0, f64::max) >= crate::hostview::AT_LIMIT;
    busy || crowded(rep) || g.arrivals_displaced.is_some_and(|d| d > ARRIVAL_TOLERANCE)
}

/// A generator thread that waited, runnable, for a CPU at least this share of the run (and
/// at least as long as it ran) was kept off its CPU by others.
pub const CPU_WAIT_LIMIT: f64 = 0.02;

/// Whether others held the generator's CPUs: every CPU of the host busy, or a generator
/// thread that waited for a CPU (the run queue's delay, its own schedstat) at least
/// [`CPU_WAIT_LIMIT`] of the run and at least as long as it ran.
fn crowded(rep: &FloodReport) -> bool {
    let g = &rep.generator;
    let ran = g.thread_busy.iter().copied().fold(0.0, f64::max);
    let waited = g.cpu_wait.is_some_and(|w| w >= CPU_WAIT_LIMIT && w >= ran);
    waited || rep.host.as_ref().is_some_and(HostView::host_busy)
}

/// Which side ran out, by the host view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// A generator thread was at its CPU limit.
    Generator,
    /// The server's threads were at their CPU limit.
    Server,
    /// Others held the CPUs: every CPU of the host busy, or the generator's threads kept
    /// waiting for theirs, and neither side alone at its limit.
    Host,
    /// Nothing in the host view points at either (or there is no host view).
    Unknown,
}

/// Names the CPU limit of a run from its host view and the generator's own waits.
pub fn limit(rep: &FloodReport) -> Limit {
    let Some(h) = rep.host.as_ref() else {
        return Limit::Unknown;
    };
    if h.generator_at_limit() {
        Limit::Generator
    } else if h.server_at_limit() {
        Limit::Server
    } else if crowded(rep) {
        Limit::Host
    } else {
        Limit::Unknown
    }
}

/// The fix for a host-bound run.
pub const HOST_FIX: &str = "pin the generator (--cpus) away from the server (tune --server-cpus), split the CPUs between them, or run the generator from another host";

/// Who used the CPU over the run, and how long the generator waited for one, in one line
/// (empty without a host view).
fn cpu_summary(rep: &FloodReport) -> String {
    let mut line = rep.host.as_ref().map(HostView::summary).unwrap_or_default();
    if let Some(w) = rep.generator.cpu_wait {
        line.push_str(&format!(
            "; a generator thread waited {:.1}% of the run for a CPU (run queue, schedstat)",
            w * 100.0
        ));
    }
    line
}

/// The reason a step is host-bound, with its evidence and the fix.
fn host_reason(rep: &FloodReport) -> String {
    format!("the host was the limit: {}; {HOST_FIX}", cpu_summary(rep))
}

/// Judges a flood's delivery: sets `generator.delivered` and its reasons, and adds the note
/// that says which side was the limit when it was not delivered.
///
/// ```
/// # use std::collections::BTreeMap;
/// # use std::time::{Duration, SystemTime};
/// # use synack_load::engine::RunResult;
/// # use synack_load::plan::{Load, PlanBuilder};
/// use synack_load::outcome::Outcome;
/// use synack_load::record::Recorder;
/// use synack_load::report::{FloodReport, HostFacts};
///
/// # let load = Load::Open { from: 1000.0, to: 1000.0, burst: 0 };
/// # let plan = PlanBuilder::new("127.0.0.1:7878", load, Duration::from_secs(1)).build()?;
/// # let run = |rec| RunResult {
/// #     rec, intervals: BTreeMap::new(), response_intervals: BTreeMap::new(), tls_intervals: BTreeMap::new(),
/// #     started_at: SystemTime::now(), elapsed: Duration::from_secs(1),
/// #     active: Duration::from_secs(1), thread_cpu: Vec::new(), start_lateness: None,
/// # };
/// let mut rec = Recorder::default();
/// rec.attempts = 600;
/// (0..400).for_each(|_| rec.outcome(Outcome::NotStarted, None));
/// let mut report = FloodReport::build(&plan, &run(rec), &HostFacts::default(), None, None, vec![]);
/// synack_load::judge::flood(&mut report);
/// assert!(!report.generator.delivered);
/// assert!(report.notes.iter().any(|n| n.starts_with("the generator did not deliver")));
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
pub fn flood(rep: &mut FloodReport) {
    let reasons = delivery(rep);
    rep.generator.delivered = reasons.is_empty();
    rep.generator.reasons = reasons;
    if rep.generator.behind_burst > 0 {
        rep.notes.push(format!(
            "{} steady starts fell due while their second's burst was still going out: the schedule put them behind it, so their lag is counted from the burst's last start (burst spread {} us)",
            rep.generator.behind_burst, rep.generator.burst_spread_us
        ));
    }
    if let Some(p99) = rep.generator.start_lag_p99_us
        && p99 > rep.generator.lag_limit_us
        && !lag_condemns(rep)
    {
        rep.notes.push(format!(
            "start lag p99 {p99} us is above the {} us limit (--lag-limit), but the generator was idle on an idle host ({}) and {:.1}% of arrivals left their 10 ms window: this host's wake-up latency, which the server could not see; not judged",
            rep.generator.lag_limit_us,
            cpu_summary(rep),
            rep.generator.arrivals_displaced.unwrap_or(0.0) * 100.0
        ));
    }
    if !rep.generator.delivered {
        let why = rep.generator.reasons.join("; ");
        let fix = match limit(rep) {
            Limit::Host => host_reason(rep),
            Limit::Generator => format!(
                "the generator was the limit ({}): add --threads, lower the rate, or run it on another host",
                cpu_summary(rep)
            ),
            _ => "add --threads, lower the rate, or run the generator on another host".into(),
        };
        rep.notes.push(format!(
            "the generator did not deliver the load asked, so this run measured the generator as much as the server: {why}. {fix}"
        ));
    }
}

/// What in a flood says the server did not absorb it, split into what its listener and its
/// clients showed (`hard`) and what is only latency.
struct Signs {
    /// The listener's own drops or a full queue (the server's kernel state).
    queue: Vec<String>,
    /// What its clients saw fail: timeouts, retransmissions, errors.
    failures: Vec<String>,
    /// Latency past the limit, from each attempt's own start.
    latency: Vec<String>,
}

impl Signs {
    /// Every sign, the queue's first.
    fn all(self) -> Vec<String> {
        self.queue
            .into_iter()
            .chain(self.failures)
            .chain(self.latency)
            .collect()
    }
}

fn server_signs(rep: &FloodReport, p99_limit: Duration) -> Signs {
    let mut queue = Vec::new();
    let overflows = rep.kernel_delta("TcpExt.ListenOverflows").unwrap_or(0);
    match rep.listener_queue.as_ref() {
        // The listener's own drop count is the evidence when the watch has it.
        Some(q) if q.drops.is_some() => {
            let d = q.drops.unwrap_or(0);
            if d > 0 {
                queue.push(format!(
                    "{d} SYNs/ACKs dropped by the listener (its sk_drops; peak queue {} of {})",
                    q.peak, q.effective_backlog
                ));
            }
        }
        // Without it, the sampled queue is only a lower bound of how full it got: the
        // host-wide counter stands, labelled as such.
        Some(q) => {
            if overflows > 0 {
                queue.push(format!(
                    "{overflows} listen overflows (host-wide; the listener's sampled peak {} of {})",
                    q.peak, q.effective_backlog
                ));
            }
        }
        None => {
            if overflows > 0 {
                queue.push(format!("{overflows} listen overflows (host-wide)"));
            }
        }
    }
    let mut failures = Vec::new();
    let retrans = rep.syn_retransmitted();
    if retrans > 0 {
        failures.push(format!("{retrans} SYN-retransmitted connections"));
    }
    for (o, what) in [
        (Outcome::Timeout, "timeouts"),
        (Outcome::HalfOpen, "half-open (final ACK lost)"),
        (Outcome::Unserved, "unserved"),
        (Outcome::NoAnswer, "not answered"),
        (Outcome::Refused, "refused"),
        (Outcome::Reset, "reset"),
    ] {
        let n = rep.outcome(o);
        if n > 0 {
            failures.push(format!("{n} {what}"));
        }
    }
    let bad = rep.outcome(Outcome::BadResponse);
    if bad > 0 {
        failures.push(format!(
            "{bad} bad responses{}",
            rep.unexpected
                .first()
                .map_or_else(String::new, |u| format!(" ({})", u.why))
        ));
    }
    let mut latency = Vec::new();
    // Connect latency runs from each attempt's own connect() call; latency from the
    // schedule adds the generator's lag to it and judges nothing.
    if let Some(c) = rep.latency(Latency::Connect)
        && c.count > 0
        && c.p99 as u128 >= p99_limit.as_micros()
    {
        latency.push(format!(
            "connect p99 {} us >= {} us",
            c.p99,
            p99_limit.as_micros()
        ));
    }
    Signs {
        queue,
        failures,
        latency,
    }
}

/// The rate the server served: attempts that ended `ok`, per second of the schedule.
fn served_rate(rep: &FloodReport) -> f64 {
    let d = rep.duration_s.max(1e-9);
    rep.outcome(Outcome::Ok) as f64 / d
}

/// Judges a flood: clean, saturated, generator-bound or host-bound, and why. `p99_limit`
/// applies to connect latency, from each attempt's own `connect()`.
///
/// ```
/// # use std::collections::BTreeMap;
/// # use std::time::{Duration, SystemTime};
/// # use synack_load::engine::RunResult;
/// # use synack_load::outcome::Outcome;
/// # use synack_load::plan::{Load, PlanBuilder};
/// # use synack_load::record::{Recorder, latency_histogram};
/// # use synack_load::report::{FloodReport, HostFacts};
/// use synack_load::judge::verdict;
/// use synack_load::report::sweep::Verdict;
///
/// # let load = Load::Open { from: 1000.0, to: 1000.0, burst: 0 };
/// # let plan = PlanBuilder::new("127.0.0.1:7878", load, Duration::from_secs(1)).build()?;
/// // 1000 connects of 300 us each, the generator 700 us late for each of them: the server
/// // answered in 300 us, and the lateness is the generator's.
/// let mut rec = Recorder::default();
/// (rec.attempts, rec.established) = (1000, 1000);
/// rec.connect.saturating_record_n(300, 1000);
/// rec.from_schedule.saturating_record_n(1000, 1000);
/// rec.start_lag.saturating_record_n(700, 1000);
/// (0..1000).for_each(|_| rec.outcome(Outcome::Ok, None));
/// # let run = RunResult { rec, intervals: BTreeMap::new(), response_intervals: BTreeMap::new(),
/// #     tls_intervals: BTreeMap::new(), started_at: SystemTime::now(), elapsed: Duration::from_secs(1),
/// #     active: Duration::from_secs(1), thread_cpu: Vec::new(), start_lateness: None };
/// let rep = FloodReport::build(&plan, &run, &HostFacts::default(), None, None, vec![]);
/// let (v, _) = verdict(&rep, Duration::from_millis(1));
/// assert_eq!(v, Verdict::Clean); // from-schedule p99 1000 us judges nothing
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
pub fn verdict(rep: &FloodReport, p99_limit: Duration) -> (Verdict, Vec<String>) {
    let signs = server_signs(rep, p99_limit);
    let reasons = delivery(rep);
    let delivered = reasons.is_empty();
    let g = &rep.generator;
    // The listener's own drops at arrivals the generator did start, faster than the server
    // served them: the server's saturation, however late the starts were.
    let all_started = g.not_started == 0 && g.started > 0;
    let served = served_rate(rep);
    if !signs.queue.is_empty() && all_started && g.started_rate > served {
        let mut why = signs.all();
        why.push(format!(
            "arrivals {} started, {} served",
            fmt_rate(g.started_rate),
            fmt_rate(served)
        ));
        if !delivered {
            why.push(format!(
                "the starts lagged (start lag p99 {} us, {} late): the server was saturated all the same",
                g.start_lag_p99_us.unwrap_or(0),
                g.late
            ));
        }
        return (Verdict::Saturated, why);
    }
    let lim = limit(rep);
    if !delivered {
        let mut why = reasons;
        let seen = signs.all();
        if !seen.is_empty() {
            // Said, but not judged: part of it may be the generator's own doing.
            why.push(format!("the server meanwhile showed: {}", seen.join(", ")));
        }
        if lim == Limit::Host {
            why.push(host_reason(rep));
            return (Verdict::HostBound, why);
        }
        return (Verdict::GeneratorBound, why);
    }
    if signs.queue.is_empty() && signs.failures.is_empty() {
        if signs.latency.is_empty() {
            return (Verdict::Clean, Vec::new());
        }
        // Only latency: with every CPU busy and the server not at its own limit, the
        // handshakes waited for a CPU, not for the server.
        if lim == Limit::Host {
            let mut why = signs.latency;
            why.push(host_reason(rep));
            return (Verdict::HostBound, why);
        }
    }
    let mut why = signs.all();
    if lim == Limit::Server {
        why.push(format!(
            "the server was at its CPU limit: {}",
            cpu_summary(rep)
        ));
    }
    (Verdict::Saturated, why)
}

/// Summarises a step's flood, with its verdict.
///
/// ```
/// # use std::collections::BTreeMap;
/// # use std::time::{Duration, SystemTime};
/// # use synack_load::engine::RunResult;
/// # use synack_load::outcome::Outcome;
/// # use synack_load::plan::{Load, PlanBuilder};
/// # use synack_load::record::Recorder;
/// # use synack_load::report::{FloodReport, HostFacts};
/// # // A delivered 1 s flood at `rate`: every attempt connected in 50 us, but `timeouts`.
/// # fn flood(rate: f64, timeouts: u64) -> FloodReport {
/// #     let load = Load::Open { from: rate, to: rate, burst: 0 };
/// #     let plan = PlanBuilder::new("127.0.0.1:7878", load, Duration::from_secs(1));
/// #     let plan = plan.build().unwrap();
/// #     let n = rate as u64;
/// #     let mut rec = Recorder::default();
/// #     (rec.attempts, rec.established) = (n, n - timeouts);
/// #     rec.connect.saturating_record_n(50, n - timeouts);
/// #     (0..n - timeouts).for_each(|_| rec.outcome(Outcome::Ok, None));
/// #     (0..timeouts).for_each(|_| rec.outcome(Outcome::Timeout, None));
/// #     let run = RunResult {
/// #         rec, intervals: BTreeMap::new(), response_intervals: BTreeMap::new(), tls_intervals: BTreeMap::new(),
/// #         started_at: SystemTime::now(), elapsed: Duration::from_secs(1),
/// #         active: Duration::from_secs(1), thread_cpu: Vec::new(), start_lateness: None,
/// #     };
/// #     FloodReport::build(&plan, &run, &HostFacts::default(), None, None, Vec::new())
/// # }
/// use synack_load::judge::step;
/// use synack_load::report::sweep::Verdict;
///
/// // `flood(rate, timeouts)`: a delivered 1 s flood, every connect 50 us but `timeouts`.
/// let p99_limit = Duration::from_millis(1);
/// let clean = step(flood(1000.0, 0), 1000.0, 0, p99_limit);
/// assert_eq!((clean.verdict, clean.connect.p99, clean.offered()), (Verdict::Clean, 50, 1000.0));
/// let past = step(flood(2000.0, 12), 2000.0, 0, p99_limit);
/// assert_eq!((past.verdict, past.saturated, past.timeouts), (Verdict::Saturated, true, 12));
/// assert_eq!(past.reasons, ["12 timeouts"]);
/// ```
pub fn step(rep: FloodReport, rate: f64, burst: u64, p99_limit: Duration) -> Step {
    let (verdict, reasons) = verdict(&rep, p99_limit);
    Step::new(rep, rate, burst, verdict, reasons)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    use super::*;
    use crate::engine::RunResult;
    use crate::plan::{Load, Plan};
    use crate::record::{Recorder, record_us};
    use crate::report::sweep::{SweepReport, render};
    use crate::watch::QueueWatch;

    fn plan(rate: f64) -> Plan {
        let mut p = Plan::for_tests(
            "127.0.0.1:1".parse().unwrap(),
            Load::Open {
                from: rate,
                to: rate,
                burst: 0,
            },
        );
        p.duration = Duration::from_secs(1);
        p
    }

    /// A flood that started `started` of 1000 scheduled attempts, each connecting in
    /// `connect_us` and `lag_us` late; `overflows` host-wide.
    fn report(started: u64, connect_us: u64, lag_us: u64, overflows: i64) -> FloodReport {
        let p = plan(1000.0);
        let mut rec = Recorder::default();
        for _ in 0..started {
            rec.attempts += 1;
            rec.established += 1;
            rec.retrans[0] += 1;
            rec.outcome(Outcome::Ok, None);
            record_us(&mut rec.connect, Duration::from_micros(connect_us));
            record_us(&mut rec.start_lag, Duration::from_micros(lag_us));
            record_us(
                &mut rec.from_schedule,
                Duration::from_micros(connect_us + lag_us),
            );
        }
        rec.outcomes[Outcome::NotStarted.slot()] += 1000 - started;
        let run = RunResult {
            rec,
            intervals: BTreeMap::new(),
            response_intervals: BTreeMap::new(),
            tls_intervals: BTreeMap::new(),
            started_at: SystemTime::now(),
            elapsed: Duration::from_secs(1),
            active: Duration::from_secs(1),
            thread_cpu: vec![Duration::from_millis(990)],
            start_lateness: None,
        };
        let counters = |o: i64| {
            Some(BTreeMap::from([(
                "TcpExt.ListenOverflows".to_string(),
                o as u64,
            )]))
        };
        FloodReport::build(
            &p,
            &run,
            &crate::report::HostFacts::default(),
            counters(0),
            counters(overflows),
            Vec::new(),
        )
    }

    const LIMIT: Duration = Duration::from_millis(1);

    #[test]
    fn a_delivered_quiet_step_is_clean() {
        let (v, why) = verdict(&report(1000, 50, 5, 0), LIMIT);
        assert_eq!(v, Verdict::Clean, "{why:?}");
    }

    #[test]
    fn a_step_with_unstarted_attempts_is_generator_bound_whatever_the_server_showed() {
        let (v, why) = verdict(&report(600, 50, 5, 7), LIMIT);
        assert_eq!(v, Verdict::GeneratorBound);
        assert!(
            why[0].contains("400 of 1000 scheduled attempts were never started"),
            "{why:?}"
        );
        assert!(
            why.iter().any(|w| w.contains("99%")),
            "the CPU evidence: {why:?}"
        );
        assert!(
            why.last()
                .unwrap()
                .contains("the server meanwhile showed: 7 listen overflows (host-wide)"),
            "{why:?}"
        );
    }

    #[test]
    fn a_late_generator_is_generator_bound_and_its_lag_judges_nothing_of_the_server() {
        // Lag above the lag limit: the generator did not keep the schedule.
        let (v, why) = verdict(&report(1000, 50, 5000, 0), LIMIT);
        assert_eq!(v, Verdict::GeneratorBound, "{why:?}");
        assert!(why[0].contains("start lag p99"), "{why:?}");
        // Within the lag limit, latency from the schedule (lag 700 + connect 400) is the
        // generator's lag plus the server's 400 us: clean.
        let (v, why) = verdict(&report(1000, 400, 700, 0), LIMIT);
        assert_eq!(v, Verdict::Clean, "{why:?}");
        // Connect latency itself past the limit is the server's.
        let (v, why) = verdict(&report(1000, 1500, 5, 0), LIMIT);
        assert_eq!(
            (v, why),
            (
                Verdict::Saturated,
                vec!["connect p99 1500 us >= 1000 us".to_string()]
            )
        );
    }

    #[test]
    fn listener_drops_at_the_arrivals_started_are_saturation_even_when_starts_lagged() {
        // Every attempt started, but 5 ms late at p99: the generator did not keep the
        // schedule, yet the listener dropped SYNs while fewer were served than arrived.
        let mut rep = report(1000, 50, 5000, 0);
        rep.outcomes.insert("ok".into(), 700);
        rep.outcomes.insert("timeout".into(), 300);
        rep.listener_queue = Some(QueueWatch {
            sockets: 1,
            effective_backlog: 50,
            peak: 51,
            samples: 10,
            full_samples: 4,
            interval_ms: 10.0,
            series: vec![],
            drops: Some(900),
        });
        let (v, why) = verdict(&rep, LIMIT);
        assert_eq!(v, Verdict::Saturated, "{why:?}");
        assert!(
            why[0].starts_with("900 SYNs/ACKs dropped by the listener"),
            "{why:?}"
        );
        assert!(
            why.iter()
                .any(|w| w.contains("the starts lagged (start lag p99 5")),
            "{why:?}"
        );
    }

    #[test]
    fn a_late_start_of_an_idle_generator_on_an_idle_host_is_a_note_not_a_verdict() {
        use crate::hostview::HostView;
        let idle = HostView {
            cpus: 2,
            host_idle: Some(0.9),
            generator_cores: 0.01,
            generator_busiest: 0.01,
            generator_cpus: None,
            server: None,
        };
        let mut rep = report(1000, 50, 5000, 0);
        rep.generator.thread_busy = vec![0.01];
        rep.generator.arrivals_displaced = Some(0.0);
        rep.host = Some(idle.clone());
        assert!(delivery(&rep).is_empty(), "{:?}", delivery(&rep));
        assert_eq!(verdict(&rep, LIMIT).0, Verdict::Clean);
        flood(&mut rep);
        assert!(
            rep.notes.iter().any(|n| n.contains("wake-up latency")),
            "{:?}",
            rep.notes
        );
        // The same lag while the generator's thread waited for its CPU longer than it ran:
        // others held it, and the host is the limit.
        rep.generator.cpu_wait = Some(0.12);
        assert_eq!(verdict(&rep, LIMIT).0, Verdict::HostBound);
        // Arrivals out of their windows: not delivered, whatever the CPUs.
        rep.generator.cpu_wait = None;
        rep.generator.arrivals_displaced = Some(0.1);
        assert_eq!(verdict(&rep, LIMIT).0, Verdict::GeneratorBound);
    }

    #[test]
    fn a_busy_host_with_neither_side_at_its_limit_is_host_bound() {
        use crate::hostview::{HostView, ServerView};
        let server = ServerView {
            pids: vec![1],
            command: "java".into(),
            in_generator_process: false,
            threads: 20,
            cores: 1.2,
            busiest_thread: 0.5,
            allowed: Some("0-1".into()),
            allowed_count: Some(2),
            ran_on: "0-1".into(),
        };
        let busy = HostView {
            cpus: 2,
            host_idle: Some(0.02),
            generator_cores: 0.7,
            generator_busiest: 0.7,
            generator_cpus: None,
            server: Some(server.clone()),
        };
        let mut rep = report(1000, 50, 5000, 0);
        rep.host = Some(busy.clone());
        let (v, why) = verdict(&rep, LIMIT);
        assert_eq!(v, Verdict::HostBound, "{why:?}");
        assert!(why.last().unwrap().contains("--cpus"), "{why:?}");
        // The generator's thread at its limit: the generator.
        rep.host = Some(HostView {
            generator_busiest: 0.99,
            ..busy.clone()
        });
        assert_eq!(verdict(&rep, LIMIT).0, Verdict::GeneratorBound);
        // An idle host: the generator, by its own figures.
        rep.host = Some(HostView {
            host_idle: Some(0.6),
            ..busy.clone()
        });
        assert_eq!(verdict(&rep, LIMIT).0, Verdict::GeneratorBound);
        // Delivered, only latency past the limit, the host busy, the server not at its limit:
        // the host; the server at its limit: saturated, and said.
        let mut rep = report(1000, 1500, 5, 0);
        rep.host = Some(busy.clone());
        assert_eq!(verdict(&rep, LIMIT).0, Verdict::HostBound);
        rep.host = Some(HostView {
            server: Some(ServerView {
                busiest_thread: 0.97,
                ..server
            }),
            ..busy
        });
        let (v, why) = verdict(&rep, LIMIT);
        assert_eq!(v, Verdict::Saturated);
        assert!(
            why.last()
                .unwrap()
                .contains("the server was at its CPU limit"),
            "{why:?}"
        );
    }

    #[test]
    fn overflows_are_labelled_host_wide_or_taken_from_the_listener() {
        let (v, why) = verdict(&report(1000, 50, 5, 3), LIMIT);
        assert_eq!(v, Verdict::Saturated);
        assert_eq!(why, vec!["3 listen overflows (host-wide)".to_string()]);
        let mut rep = report(1000, 50, 5, 3);
        let watch = QueueWatch {
            sockets: 1,
            effective_backlog: 16,
            peak: 4,
            samples: 10,
            full_samples: 0,
            interval_ms: 10.0,
            series: vec![],
            drops: Some(0),
        };
        // The listener's own count says it dropped nothing: the overflows were elsewhere.
        rep.listener_queue = Some(watch.clone());
        assert_eq!(verdict(&rep, LIMIT).0, Verdict::Clean);
        // A sampled peak below the backlog does not discard overflows the listener counted.
        rep.listener_queue = Some(QueueWatch {
            drops: Some(2),
            ..watch.clone()
        });
        let (v, why) = verdict(&rep, LIMIT);
        assert_eq!(v, Verdict::Saturated);
        assert!(
            why[0].starts_with("2 SYNs/ACKs dropped by the listener"),
            "{why:?}"
        );
        // Without the listener's count, the host-wide figure stands, labelled.
        rep.listener_queue = Some(QueueWatch {
            drops: None,
            ..watch
        });
        let (v, why) = verdict(&rep, LIMIT);
        assert_eq!(v, Verdict::Saturated);
        assert!(
            why[0].contains("(host-wide; the listener's sampled peak 4 of 16)"),
            "{why:?}"
        );
    }

    fn step_of(rep: FloodReport, rate: f64) -> Step {
        step(rep, rate, 0, LIMIT)
    }

    #[test]
    fn the_saturation_point_skips_generator_bound_steps() {
        let steps = vec![
            step_of(report(1000, 50, 5, 0), 1000.0),
            step_of(report(1000, 50, 5, 0), 2000.0),
            step_of(report(500, 50, 5, 0), 3000.0),
        ];
        let r = SweepReport::new("x", Duration::from_secs(1), LIMIT, steps);
        assert_eq!(r.saturation_rate, None);
        assert_eq!(r.last_good_rate, Some(2000.0));
        assert_eq!(r.generator_bound_from, Some(3000.0));
        let text = render(&r);
        assert!(
            text.contains("from 3.0k/s the generator could not deliver"),
            "{text}"
        );
        assert!(text.contains("GENERATOR-BOUND (no verdict)"), "{text}");
        let steps = vec![
            step_of(report(1000, 50, 5, 0), 1000.0),
            step_of(report(500, 50, 5, 0), 2000.0),
            step_of(report(1000, 50, 5, 9), 3000.0),
        ];
        let r = SweepReport::new("x", Duration::from_secs(1), LIMIT, steps);
        assert_eq!(r.saturation_rate, Some(3000.0));
        assert_eq!(r.last_good_rate, Some(1000.0));
    }
}
