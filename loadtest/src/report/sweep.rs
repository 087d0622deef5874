//! What a sweep reports: each step's verdict (clean, saturated, or generator-bound) judged
//! from its flood report without I/O, the saturation point and the last clean rate; as a
//! table, JSON (schema [`SCHEMA`]) and an HTML page. A step the generator could not deliver
//! is `generator_bound`: neither clean nor saturated, never the saturation point.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::charts::{self, Series};
use super::html::{self, Page};
use super::{FloodReport, Latency, Percentiles, fmt_rate as rate};
use crate::outcome::Outcome;

/// The sweep JSON schema identifier.
pub const SCHEMA: &str = "synack-load/sweep/3";

/// What a step says of the server.
///
/// ```
/// use synack_load::report::sweep::Verdict;
///
/// // A step the generator did not deliver judges nothing of the server.
/// assert_eq!(Verdict::GeneratorBound.name(), "generator-bound");
/// assert_eq!(serde_json::to_string(&Verdict::GeneratorBound).unwrap(), "\"generator_bound\"");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The generator delivered the load and the server absorbed it.
    Clean,
    /// The generator delivered the load and the server did not absorb it.
    Saturated,
    /// The generator did not deliver the load asked: the step says nothing of the server.
    GeneratorBound,
    /// The host ran out of CPU (every CPU busy, neither the generator nor the server alone at
    /// its limit): the step says nothing of the server either.
    HostBound,
}

impl Verdict {
    /// The name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::Saturated => "saturated",
            Verdict::GeneratorBound => "generator-bound",
            Verdict::HostBound => "host-bound",
        }
    }

    /// Whether the step judged the server (clean or saturated) rather than its own setting.
    pub fn judged_server(self) -> bool {
        matches!(self, Verdict::Clean | Verdict::Saturated)
    }
}

/// One step of a sweep.
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Offered rate (besides bursts), per second.
    pub rate: f64,
    /// Attempts started at once every second.
    pub burst: u64,
    /// Connections established per second.
    pub achieved_rate: f64,
    /// Connect latency.
    pub connect: Percentiles,
    /// With --probe: accept-queue wait p99, us.
    pub queue_wait_p99: Option<u64>,
    /// With --probe: the longest accept-queue wait, us.
    pub queue_wait_max: Option<u64>,
    /// Connections that needed SYN retransmissions.
    pub retransmitted: u64,
    /// Attempts timed out.
    pub timeouts: u64,
    /// Attempts established but never served.
    pub unserved: u64,
    /// Attempts refused or reset.
    pub refused_or_reset: u64,
    /// Answers that were not what was asked (`bad_response`: `--expect` not matched, an HTTP
    /// response malformed or cut short).
    #[serde(default)]
    pub bad_responses: u64,
    /// `TcpExt.ListenOverflows` change (host-wide: every listener here counts).
    pub overflows: Option<i64>,
    /// With --watch-listener: the SYNs and final ACKs the target listener itself dropped
    /// (its `sk_drops`).
    #[serde(default)]
    pub listener_drops: Option<u64>,
    /// With --watch-listener: the deepest accept queue seen.
    pub peak_queue: Option<u32>,
    /// With --watch-listener: the effective backlog.
    pub effective_backlog: Option<u32>,
    /// Whether the step counts as saturated (`verdict` is `saturated`).
    pub saturated: bool,
    /// Clean, saturated, or generator-bound.
    pub verdict: Verdict,
    /// Why, in words (for a generator-bound step: why the generator fell short).
    pub reasons: Vec<String>,
    /// The step's whole flood report.
    pub flood: FloodReport,
}

impl Step {
    /// The rate offered, bursts counted as often as the schedule had them (the x of charts).
    pub fn offered(&self) -> f64 {
        self.flood
            .offered_rate
            .unwrap_or(self.rate + self.burst as f64)
    }

    /// A step of `rep`, the flood at `rate` (and `burst`), with the judge's verdict (see
    /// [`crate::judge::step`], which calls this).
    pub fn new(
        rep: FloodReport,
        rate: f64,
        burst: u64,
        verdict: Verdict,
        reasons: Vec<String>,
    ) -> Step {
        let q = rep.latency(Latency::QueueWait);
        Step {
            rate,
            burst,
            achieved_rate: rep.achieved_rate,
            connect: rep.latency(Latency::Connect).cloned().unwrap_or_default(),
            queue_wait_p99: q.map(|q| q.p99),
            queue_wait_max: q.map(|q| q.max),
            retransmitted: rep.syn_retransmitted(),
            timeouts: rep.outcome(Outcome::Timeout),
            unserved: rep.outcome(Outcome::Unserved)
                + rep.outcome(Outcome::NoAnswer)
                + rep.outcome(Outcome::HalfOpen),
            refused_or_reset: rep.outcome(Outcome::Refused) + rep.outcome(Outcome::Reset),
            bad_responses: rep.outcome(Outcome::BadResponse),
            overflows: rep.kernel_delta("TcpExt.ListenOverflows"),
            listener_drops: rep.listener_queue.as_ref().and_then(|q| q.drops),
            peak_queue: rep.listener_queue.as_ref().map(|q| q.peak),
            effective_backlog: rep.listener_queue.as_ref().map(|q| q.effective_backlog),
            saturated: verdict == Verdict::Saturated,
            verdict,
            reasons,
            flood: rep,
        }
    }
}

/// What a sweep found.
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
/// use synack_load::report::sweep::SweepReport;
///
/// // `flood(rate, timeouts)`: a delivered 1 s flood, every connect 50 us but `timeouts`.
/// let p99_limit = Duration::from_millis(1);
/// let at = |rate, timeouts| step(flood(rate, timeouts), rate, 0, p99_limit);
/// let steps = vec![at(1000.0, 0), at(2000.0, 0), at(3000.0, 12)];
/// let r = SweepReport::new("127.0.0.1:7878", Duration::from_secs(1), p99_limit, steps);
/// assert_eq!((r.saturation_rate, r.last_good_rate), (Some(3000.0), Some(2000.0)));
/// assert_eq!(r.saturation_reasons, ["12 timeouts"]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// [`SCHEMA`].
    pub schema: String,
    /// The target as given.
    pub target: String,
    /// Each step's length, seconds.
    pub step_duration_s: f64,
    /// The p99 connect latency that counts as leaving the fast band, us.
    pub p99_limit_us: u64,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The first saturated step's rate.
    pub saturation_rate: Option<f64>,
    /// Why it counts as saturated.
    pub saturation_reasons: Vec<String>,
    /// The last step before it that was clean.
    pub last_good_rate: Option<f64>,
    /// The first step the generator could not deliver, if any: no verdict from there on.
    #[serde(default)]
    pub generator_bound_from: Option<f64>,
}

impl SweepReport {
    /// Finds the saturation point of a list of steps.
    pub fn new(
        target: &str,
        step_duration: Duration,
        p99_limit: Duration,
        steps: Vec<Step>,
    ) -> Self {
        let first = steps.iter().position(|s| s.verdict == Verdict::Saturated);
        // The last clean step below the saturation point (or of the whole sweep).
        let last_good = steps[..first.unwrap_or(steps.len())]
            .iter()
            .rev()
            .find(|s| s.verdict == Verdict::Clean)
            .map(|s| s.rate);
        let generator_bound_from = steps
            .iter()
            .find(|s| s.verdict == Verdict::GeneratorBound)
            .map(|s| s.rate);
        SweepReport {
            schema: SCHEMA.into(),
            target: target.into(),
            step_duration_s: step_duration.as_secs_f64(),
            p99_limit_us: p99_limit.as_micros() as u64,
            saturation_rate: first.map(|i| steps[i].rate),
            saturation_reasons: first.map(|i| steps[i].reasons.clone()).unwrap_or_default(),
            last_good_rate: last_good,
            generator_bound_from,
            steps,
        }
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The step table.
pub fn render_steps(steps: &[Step]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>7} {:>8} {:>8} {:>9} {:>6}  verdict",
        "offered",
        "achieved",
        "p50 us",
        "p99 us",
        "p99.9",
        "sched p99",
        "resp p99",
        "qwait p99",
        "retrans",
        "timeouts",
        "unserved",
        "overflows",
        "peak q",
    );
    for st in steps {
        let offered = if st.burst > 0 {
            format!("{}+{}", rate(st.rate), st.burst)
        } else {
            rate(st.rate)
        };
        // Whose overflow figure: the listener's own drops where watched, else host-wide.
        let overflows = match st.listener_drops {
            Some(d) => format!("{d}"),
            None => st.overflows.map_or_else(|| "-".into(), |o| format!("{o}*")),
        };
        let _ = writeln!(
            s,
            "  {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>7} {:>8} {:>8} {:>9} {:>6}  {}",
            offered,
            rate(st.achieved_rate),
            st.connect.p50,
            st.connect.p99,
            st.connect.p999,
            opt(st.flood.latency(Latency::FromSchedule).map(|p| p.p99)),
            opt(st.flood.latency(Latency::Response).map(|p| p.p99)),
            opt(st.queue_wait_p99),
            st.retransmitted,
            st.timeouts,
            st.unserved,
            overflows,
            opt(st.peak_queue),
            match st.verdict {
                Verdict::Clean => "ok".to_string(),
                Verdict::Saturated => format!("SATURATED: {}", st.reasons.join(", ")),
                Verdict::GeneratorBound => {
                    format!("GENERATOR-BOUND (no verdict): {}", st.reasons.join("; "))
                }
                Verdict::HostBound => {
                    format!("HOST-BOUND (no verdict): {}", st.reasons.join("; "))
                }
            }
        );
    }
    if steps.iter().any(|st| st.listener_drops.is_none()) {
        let _ = writeln!(
            s,
            "  overflows: * = TcpExt.ListenOverflows, host-wide (every listener here); without a * the listener's own drops (--watch-listener)"
        );
    }
    s
}

/// The sweep's table and verdict.
pub fn render(r: &SweepReport) -> String {
    let mut s = format!(
        "synack-load sweep {}: {} steps of {:.1} s\n",
        r.target,
        r.steps.len(),
        r.step_duration_s
    );
    s.push_str(&render_steps(&r.steps));
    s.push('\n');
    if let Some(g) = r.generator_bound_from {
        let _ = writeln!(
            s,
            "  from {} the generator could not deliver the load asked: those steps judge nothing (add --threads, lower the rates, or run the generator on another host)",
            rate(g)
        );
    }
    match (r.saturation_rate, r.last_good_rate) {
        (Some(sat), good) => {
            let _ = writeln!(
                s,
                "  saturation point: {} ({}); last good rate: {}",
                rate(sat),
                r.saturation_reasons.join(", "),
                good.map_or_else(|| "none (the first step already saturated)".into(), rate)
            );
            if let Some(g) = r.generator_bound_from.filter(|g| *g < sat) {
                let _ = writeln!(
                    s,
                    "  (steps from {} to below {} were not judged: the server may saturate anywhere in that range)",
                    rate(g),
                    rate(sat)
                );
            }
        }
        (None, Some(good)) => {
            let _ = writeln!(
                s,
                "  no saturation up to {} (connect p99 under {} us, no listener drops, retransmissions or timeouts)",
                rate(good),
                r.p99_limit_us
            );
        }
        (None, None) => {
            let _ = writeln!(s, "  no step was delivered clean: no verdict on the server");
        }
    }
    s
}

/// `sweep --report DIR`.
pub fn write_html(dir: &Path, r: &SweepReport) -> std::io::Result<std::path::PathBuf> {
    let title = format!("synack-load sweep {}", r.target);
    let mut page = Page::new(&title);
    page.pre(&render(r));
    let pick = |f: fn(&Percentiles) -> u64| -> Vec<(f64, f64)> {
        r.steps
            .iter()
            .map(|s| (s.offered(), f(&s.connect) as f64))
            .collect()
    };
    page.svg(&charts::latency_vs_rate(
        "connect latency against offered rate",
        &[
            Series {
                label: "p50".into(),
                points: pick(|p| p.p50),
            },
            Series {
                label: "p99".into(),
                points: pick(|p| p.p99),
            },
            Series {
                label: "p99.9".into(),
                points: pick(|p| p.p999),
            },
        ],
    )?);
    let worst = r
        .steps
        .iter()
        .find(|s| s.verdict != Verdict::Clean)
        .or(r.steps.last());
    if let Some(w) = worst {
        page.h2(&format!("the step at {}", rate(w.rate)));
        html::flood_charts(&mut page, &w.flood)?;
    }
    page.write(dir, &title)
}
