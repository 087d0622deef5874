//! `synack-load tune`: the main job. Starts a synack server here on 127.0.0.1 with a simulated
//! handler, and for each backlog sweeps the offered rate (with bursts) upwards until clients
//! start to suffer; then recommends the smallest backlog that absorbs the rate and bursts asked
//! for with zero drops.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use synack::Server;
use tokio::io::AsyncWriteExt;

use crate::cli::{ServiceDist, TuneArgs};
use crate::error::LoadError;
use crate::plan::{CloseMode, Load, Plan, PlanBuilder};
use crate::report::charts::{self, Series};
use crate::report::fmt_rate as rate;
use crate::report::html::{self, Page};
use crate::sweep::{self, Step, Verdict};

/// The tune JSON schema identifier.
pub const SCHEMA: &str = "synack-load/tune/2";

/// The results for one backlog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BacklogResult {
    /// The backlog asked for.
    pub backlog: u32,
    /// What the kernel granted.
    pub effective_backlog: Option<u32>,
    /// The steps run, lowest rate first (stopping at the first saturated one).
    pub steps: Vec<Step>,
    /// The highest offered rate (plus bursts) with zero drops.
    pub max_clean_rate: Option<f64>,
    /// Connect p99 at that rate, us.
    pub p99_at_max_clean_us: Option<u64>,
    /// The deepest accept queue seen at that rate.
    pub peak_queue_at_max_clean: Option<u32>,
    /// The deepest accept queue seen at the target rate (the first step at or above it).
    pub peak_queue_at_target: Option<u32>,
    /// What clients saw past it, in words.
    pub past_it: Option<String>,
    /// The first rate the generator could not deliver for this backlog, if any: its steps
    /// from there on judge nothing.
    #[serde(default)]
    pub generator_bound_at: Option<f64>,
    /// Why the generator fell short there.
    #[serde(default)]
    pub generator_reasons: Vec<String>,
}

/// What tune found and recommends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneReport {
    /// [`SCHEMA`].
    pub schema: String,
    /// Simulated mean service time, us.
    pub service_time_us: u64,
    /// "exp" or "fixed".
    pub service_dist: String,
    /// The server's workers.
    pub workers: usize,
    /// The server's connection limit.
    pub max_connections: usize,
    /// max-connections / service-time, per second.
    pub capacity: f64,
    /// Connections arriving at once each second.
    pub burst: u64,
    /// The rate the recommendation must absorb, per second (besides bursts).
    pub target_rate: f64,
    /// `net.core.somaxconn`.
    pub somaxconn: Option<u32>,
    /// Per backlog.
    pub backlogs: Vec<BacklogResult>,
    /// The smallest backlog that absorbs the target rate and bursts with zero drops.
    pub recommended_backlog: Option<u32>,
    /// The reasoning, in one or two lines.
    pub reasoning: Vec<String>,
    /// True when the generator could not deliver the target load to some backlog, so no
    /// recommendation could be made (the command then exits 1).
    #[serde(default)]
    pub generator_bound: bool,
}

fn service_time(mean: Duration, dist: ServiceDist) -> Duration {
    match dist {
        ServiceDist::Fixed => mean,
        ServiceDist::Exp => {
            // Inverse transform: -ln(U) * mean, U in (0, 1].
            let u = 1.0 - fastrand::f64();
            mean.mul_f64(-u.ln())
        }
    }
}

/// Starts the simulated server: probe on, queue sampling off (inet_diag watches it), a handler
/// that holds its slot for a service time, then answers `ok`.
pub fn start_server(
    args: &TuneArgs,
    backlog: u32,
    served: Arc<ServiceClock>,
) -> Result<Server, synack::Error> {
    let mean = args.service_time;
    let dist = args.service_dist;
    Server::builder()
        .bind("127.0.0.1:0")?
        .backlog(backlog)
        .workers(args.workers)
        .max_connections(args.max_connections)
        .probe(true)
        .serve(move |mut conn: synack::Connection| {
            let served = served.clone();
            async move {
                let t = std::time::Instant::now();
                let want = service_time(mean, dist);
                // Sleep short by the timer's usual overshoot, so the mean comes out as asked.
                tokio::time::sleep(want.saturating_sub(served.overshoot())).await;
                served.add(want, t.elapsed());
                conn.write_all(b"ok\n").await
            }
        })
}

/// The service times the simulated handler really took (tokio's timer rounds sleeps up to
/// its millisecond tick, so they run longer than asked).
#[derive(Debug, Default)]
pub struct ServiceClock {
    total_ns: AtomicU64,
    count: AtomicU64,
    /// Running mean of (slept - asked), ns: what the timer adds to a sleep.
    overshoot_ns: AtomicU64,
}

impl ServiceClock {
    fn overshoot(&self) -> Duration {
        Duration::from_nanos(self.overshoot_ns.load(Relaxed))
    }

    fn add(&self, asked: Duration, took: Duration) {
        self.total_ns.fetch_add(took.as_nanos() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
        // An exponential moving average (1/64) of how far past the asked time sleeps end,
        // counted from what was really slept.
        let slept = asked.saturating_sub(self.overshoot());
        let over = took.saturating_sub(slept).as_nanos() as u64;
        let old = self.overshoot_ns.load(Relaxed);
        self.overshoot_ns.store(old - old / 64 + over / 64, Relaxed);
    }

    /// The mean service time so far.
    pub fn mean(&self) -> Option<Duration> {
        let n = self.count.load(Relaxed);
        (n > 0).then(|| Duration::from_nanos(self.total_ns.load(Relaxed) / n))
    }
}

fn base_plan(args: &TuneArgs, addr: &str) -> Result<Plan, LoadError> {
    PlanBuilder::new(
        addr,
        Load::Open {
            from: 1.0,
            to: 1.0,
            burst: 0,
        },
        args.step_duration,
    )
    .read(Some(3))
    .read_timeout(Duration::from_secs(2))
    .close(CloseMode::Rst)
    .threads(Some(args.threads as usize))
    .connect_timeout(args.connect_timeout)
    .probe(true)
    .lag_limit(args.lag_limit)
    .other_fds(args.max_connections as u64 + 32)
    .build()
}

/// Runs the whole tune; `progress` gets a line per step.
pub fn run(args: &TuneArgs, mut progress: impl FnMut(&str)) -> Result<TuneReport, LoadError> {
    check(args).map_err(LoadError::Usage)?;
    let capacity = args.max_connections as f64 / args.service_time.as_secs_f64();
    let target_rate = args.rate.unwrap_or(capacity * 0.5);
    // The --load fractions, and always the target itself: the recommendation is judged there.
    let mut rates: Vec<f64> = args
        .load
        .iter()
        .map(|f| (capacity * f).round().max(1.0))
        .collect();
    rates.push(target_rate);
    rates.sort_by(f64::total_cmp);
    rates.dedup_by(|a, b| (*a - *b).abs() < 0.5);
    let mut backlogs = args.backlogs.clone();
    backlogs.sort_unstable();
    backlogs.dedup();
    let mut results = Vec::new();
    let served = Arc::new(ServiceClock::default());
    for &backlog in &backlogs {
        let server = start_server(args, backlog, served.clone()).map_err(|e| match e {
            synack::Error::InvalidConfig { .. } => LoadError::Usage(e.to_string()),
            _ => LoadError::Run(e.to_string()),
        })?;
        let addr = server.local_addr().to_string();
        let base = base_plan(args, &addr)?;
        let mut steps: Vec<Step> = Vec::new();
        for (i, &r) in rates.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(300));
            }
            let st = sweep::run_step(
                &base,
                r,
                args.burst,
                args.step_duration,
                base.probe.then_some(Duration::from_millis(2)),
                Duration::from_secs(3600),
            )
            .map_err(|e| LoadError::Run(e.to_string()))?;
            progress(&format!(
                "backlog {backlog}: {} + bursts of {}: {}",
                rate(r),
                args.burst,
                match st.verdict {
                    Verdict::Saturated => format!("drops ({})", st.reasons.join(", ")),
                    Verdict::Clean => format!("clean, connect p99 {} us", st.connect.p99),
                    Verdict::GeneratorBound => {
                        format!("generator-bound, no verdict ({})", st.reasons.join("; "))
                    }
                }
            ));
            let stop = st.verdict != Verdict::Clean;
            steps.push(st);
            if stop {
                break;
            }
        }
        let clean = steps.iter().rev().find(|s| s.verdict == Verdict::Clean);
        let bound = steps.iter().find(|s| s.verdict == Verdict::GeneratorBound);
        let past = steps.iter().find(|s| s.saturated).map(|s| {
            let attempts = s.flood.attempts.max(1) as f64;
            format!(
                "at {}: {:.1}% timeouts, {:.1}% unserved, {} SYN-retransmitted, connect p99 {:.0} ms",
                rate(s.rate),
                100.0 * s.timeouts as f64 / attempts,
                100.0 * s.unserved as f64 / attempts,
                s.retransmitted,
                s.connect.p99 as f64 / 1000.0
            )
        });
        results.push(BacklogResult {
            backlog,
            effective_backlog: server.listeners()[0].effective_backlog,
            max_clean_rate: clean.map(|s| s.rate),
            p99_at_max_clean_us: clean.map(|s| s.connect.p99),
            peak_queue_at_max_clean: clean.and_then(|s| s.peak_queue),
            peak_queue_at_target: steps
                .iter()
                .find(|s| s.rate >= target_rate * 0.999)
                .and_then(|s| s.peak_queue),
            past_it: past,
            generator_bound_at: bound.map(|s| s.rate),
            generator_reasons: bound.map(|s| s.reasons.clone()).unwrap_or_default(),
            steps,
        });
        server.shutdown_blocking(Duration::from_millis(500));
    }
    let somaxconn = synack_sys::somaxconn();
    // Clean at the target rate, with the deepest queue there inside the headroom.
    let fits = |b: &BacklogResult| {
        let Some(st) = b.steps.iter().find(|s| s.rate >= target_rate * 0.999) else {
            return false;
        };
        let limit = b.effective_backlog.unwrap_or(b.backlog) as f64 * (1.0 - args.headroom);
        st.verdict == Verdict::Clean && st.peak_queue.is_some_and(|p| p as f64 <= limit)
    };
    // A backlog the generator could not test at the target leaves its answer unknown: the
    // smallest fitting backlog stands only if every smaller one was judged.
    let unjudged_at_target = |b: &BacklogResult| {
        b.generator_bound_at
            .is_some_and(|r| r <= target_rate * 1.001)
    };
    let mut recommended = None;
    let mut unjudged: Vec<&BacklogResult> = Vec::new();
    for b in &results {
        if unjudged_at_target(b) {
            unjudged.push(b);
            break;
        }
        if fits(b) {
            recommended = Some(b.backlog);
            break;
        }
    }
    let measured_service = served.mean();
    let mut reasoning = reasoning(
        args.headroom,
        args.max_connections,
        measured_service,
        &results,
        recommended,
        target_rate,
        args.burst,
        capacity,
        somaxconn,
    );
    let generator_bound = !unjudged.is_empty();
    if let Some(b) = unjudged.first() {
        reasoning = vec![format!(
            "no recommendation: the generator could not deliver {} plus bursts of {} to backlog {} ({}), so what the server absorbs there was not measured. \
             Give the generator more: --threads (now {}), a lower --rate or --burst, or run synack-load from another host.",
            rate(target_rate),
            args.burst,
            b.backlog,
            b.generator_reasons.join("; "),
            args.threads
        )];
    }
    Ok(TuneReport {
        schema: SCHEMA.into(),
        service_time_us: args.service_time.as_micros() as u64,
        service_dist: match args.service_dist {
            ServiceDist::Exp => "exp".into(),
            ServiceDist::Fixed => "fixed".into(),
        },
        workers: args.workers,
        max_connections: args.max_connections,
        capacity,
        burst: args.burst,
        target_rate,
        somaxconn,
        backlogs: results,
        recommended_backlog: recommended,
        reasoning,
        generator_bound,
    })
}

/// The flags' values, checked together before anything runs.
fn check(args: &TuneArgs) -> Result<(), String> {
    if args.backlogs.is_empty() || args.backlogs.contains(&0) {
        return Err(format!(
            "--backlogs {:?}: give backlogs of at least 1",
            args.backlogs
        ));
    }
    if args.load.is_empty() || args.load.iter().any(|f| !(*f > 0.0 && f.is_finite())) {
        return Err(format!(
            "--load {:?}: give fractions of the capacity above 0, such as 0.25,0.5,0.75",
            args.load
        ));
    }
    if !(0.0..1.0).contains(&args.headroom) {
        return Err(format!(
            "--headroom {}: give a fraction from 0 (none) to below 1",
            args.headroom
        ));
    }
    if args.max_connections == 0 || args.workers == 0 {
        return Err("--max-connections and --workers must be at least 1".into());
    }
    if args.service_time.is_zero() {
        return Err("--service-time must be above zero".into());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn reasoning(
    headroom: f64,
    slots: usize,
    measured_service: Option<Duration>,
    results: &[BacklogResult],
    recommended: Option<u32>,
    target: f64,
    burst: u64,
    capacity: f64,
    somaxconn: Option<u32>,
) -> Vec<String> {
    let mut out = Vec::new();
    let capacity = match (measured_service, results.first()) {
        (Some(m), Some(_)) if !m.is_zero() => {
            let c = slots as f64 / m.as_secs_f64();
            out.push(format!(
                "the handler's service time measured {:.2} ms on average (its sleeps are shortened by the timer's measured overshoot): capacity ~{}.",
                m.as_secs_f64() * 1e3,
                rate(c)
            ));
            c
        }
        _ => capacity,
    };
    // At the connection limit the acceptor stalls until a handler frees a slot: about one
    // service time spread over the slots. Arrivals during a stall, plus a burst, must fit in
    // the queue.
    let stall_s = 1.0 / capacity;
    let needed = target * stall_s + burst as f64;
    let peak = |b: u32| {
        results
            .iter()
            .find(|r| r.backlog == b)
            .and_then(|r| r.peak_queue_at_target)
    };
    match recommended {
        Some(b) => out.push(format!(
            "recommended backlog: {b}, the smallest tried with zero drops at {} plus bursts of {burst} \
             and its deepest queue within {:.0}% headroom. Queue needed ~ arrival rate x longest accept stall + burst \
             = {:.0}/s x {:.2} ms + {burst} ~ {needed:.0} (deepest queue measured there: {}).",
            rate(target),
            headroom * 100.0,
            target,
            stall_s * 1e3,
            peak(b).map_or_else(|| "unknown".into(), |p| p.to_string())
        )),
        None if target >= capacity => out.push(format!(
            "no backlog tried absorbs {} with bursts of {burst} without drops and {:.0}% headroom: \
             that is at or past the server's capacity (~{}), where the queue only grows whatever its size; raise --max-connections or workers, or lower --rate.",
            rate(target),
            headroom * 100.0,
            rate(capacity)
        )),
        None => out.push(format!(
            "no backlog tried absorbs {} with bursts of {burst} without drops and {:.0}% headroom (queue needed ~ {needed:.0}, the largest backlog tried {}): \
             below the capacity (~{}) a larger backlog absorbs the bursts; try larger --backlogs (and raise net.core.somaxconn to match), or a smaller --burst.",
            rate(target),
            headroom * 100.0,
            results.iter().map(|r| r.backlog).max().unwrap_or(0),
            rate(capacity)
        )),
    }
    if let (Some(b), Some(s)) = (recommended, somaxconn)
        && b > s
    {
        out.push(format!(
            "{b} exceeds net.core.somaxconn = {s}, which caps every backlog: raise it with `sysctl -w net.core.somaxconn={b}` (and net.ipv4.tcp_max_syn_backlog likewise)."
        ));
    }
    out
}

/// The results as a table.
pub fn render(r: &TuneReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "synack-load tune: simulated handler {} us ({}) mean, {} workers, max {} connections: capacity ~{}; bursts of {} each second; target {}",
        r.service_time_us,
        r.service_dist,
        r.workers,
        r.max_connections,
        rate(r.capacity),
        r.burst,
        rate(r.target_rate)
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  {:>7} {:>9} {:>15} {:>14} {:>10}  past it, clients saw",
        "backlog", "effective", "max clean rate", "p99 connect", "peak queue",
    );
    for b in &r.backlogs {
        let _ = writeln!(
            s,
            "  {:>7} {:>9} {:>15} {:>14} {:>10}  {}",
            b.backlog,
            b.effective_backlog
                .map_or_else(|| "?".into(), |e| e.to_string()),
            b.max_clean_rate.map_or_else(
                || "none".into(),
                |r| format!("{}+{}", rate(r), r_burst(r, b))
            ),
            b.p99_at_max_clean_us
                .map_or_else(|| "-".into(), |u| format!("{:.1} ms", u as f64 / 1000.0)),
            b.peak_queue_at_max_clean
                .map_or_else(|| "-".into(), |q| q.to_string()),
            match (&b.past_it, b.generator_bound_at) {
                (Some(p), _) => p.clone(),
                (None, Some(g)) => format!("generator-bound from {}: no verdict there", rate(g)),
                (None, None) => "no drops at any rate tried".into(),
            }
        );
    }
    let _ = writeln!(s);
    for line in &r.reasoning {
        let _ = writeln!(s, "  {line}");
    }
    s
}

fn r_burst(_r: f64, b: &BacklogResult) -> u64 {
    b.steps.first().map_or(0, |s| s.burst)
}

/// `tune --report DIR`.
pub fn write_html(dir: &Path, r: &TuneReport) -> std::io::Result<std::path::PathBuf> {
    let title = "synack-load tune".to_string();
    let mut page = Page::new(&title);
    page.pre(&render(r));
    let series: Vec<Series> = r
        .backlogs
        .iter()
        .map(|b| Series {
            label: format!("backlog {}", b.backlog),
            points: b
                .steps
                .iter()
                .map(|s| (s.offered(), s.connect.p99 as f64))
                .collect(),
        })
        .collect();
    page.svg(&charts::latency_vs_rate(
        "connect p99 against offered rate (rate + bursts), one line per backlog",
        &series,
    )?);
    // The smallest backlog's first saturated step shows the cliff best.
    if let Some((b, st)) = r
        .backlogs
        .iter()
        .find_map(|b| b.steps.iter().find(|s| s.saturated).map(|s| (b.backlog, s)))
    {
        page.h2(&format!("backlog {b} at {}: past the knee", rate(st.rate)));
        html::flood_charts(&mut page, &st.flood)?;
    }
    page.write(dir, &title)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(b: u32, peak_at_target: Option<u32>) -> BacklogResult {
        BacklogResult {
            backlog: b,
            effective_backlog: Some(b),
            steps: Vec::new(),
            max_clean_rate: None,
            p99_at_max_clean_us: None,
            peak_queue_at_max_clean: None,
            peak_queue_at_target: peak_at_target,
            past_it: None,
            generator_bound_at: None,
            generator_reasons: Vec::new(),
        }
    }

    #[test]
    fn the_reasoning_names_the_recommendation_and_its_queue() {
        let results = [backlog(16, Some(17)), backlog(256, Some(195))];
        // 8 slots of 2 ms: 4k/s; the target 2k/s, bursts of 200.
        let lines = reasoning(
            0.25,
            8,
            Some(Duration::from_millis(2)),
            &results,
            Some(256),
            2000.0,
            200,
            4000.0,
            Some(4096),
        );
        assert!(lines[0].contains("measured 2.00 ms"), "{lines:?}");
        assert!(
            lines[1].starts_with("recommended backlog: 256"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("deepest queue measured there: 195"),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 2, "no sysctl line under somaxconn: {lines:?}");
        // Above somaxconn, the sysctl to raise is named.
        let lines = reasoning(
            0.25,
            8,
            None,
            &results,
            Some(256),
            2000.0,
            200,
            4000.0,
            Some(128),
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("sysctl -w net.core.somaxconn=256")),
            "{lines:?}"
        );
    }

    #[test]
    fn without_a_fit_the_reasoning_says_whether_capacity_or_backlog_is_short() {
        let results = [backlog(16, Some(17))];
        // At capacity: no backlog helps.
        let lines = reasoning(0.25, 8, None, &results, None, 4000.0, 200, 4000.0, None);
        assert!(
            lines[0].contains("at or past the server's capacity"),
            "{lines:?}"
        );
        // Below it: a larger backlog would.
        let lines = reasoning(0.25, 8, None, &results, None, 1000.0, 200, 4000.0, None);
        assert!(lines[0].contains("try larger --backlogs"), "{lines:?}");
        assert!(
            lines[0].contains("the largest backlog tried 16"),
            "{lines:?}"
        );
    }
}
