//! A flood: run a plan with a live view, then build its report (the `flood` command, sweep
//! and tune all run their floods through here).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::{self, Progress};
use crate::plan::Plan;
use crate::report::{self, FloodReport};
use crate::watch::Watcher;

/// What a flood does besides building its report (the commands write `--json` and
/// `--report` themselves, with every command's outputs).
///
/// ```no_run
/// use std::time::Duration;
/// use synack_load::flood::{Output, flood};
/// use synack_load::plan::{Load, PlanBuilder};
///
/// let load = Load::Open { from: 1000.0, to: 1000.0, burst: 0 };
/// let plan = PlanBuilder::new("127.0.0.1:7878", load, Duration::from_secs(5)).build()?;
/// let out = Output { hlog: Some("run.hlog".into()), live: true, ..Output::default() };
/// let report = flood(&plan, &out)?;
/// // Not watched (`watch: None`): the report has no accept-queue series.
/// assert!(report.listener_queue.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct Output {
    /// `--hlog FILE`.
    pub hlog: Option<PathBuf>,
    /// Show the live progress line (only on a terminal).
    pub live: bool,
    /// Sample the target listener's queue through inet_diag, at this interval.
    pub watch: Option<Duration>,
}

/// Runs a flood and builds its report, writing `--hlog` when asked.
pub fn flood(plan: &Plan, out: &Output) -> std::io::Result<FloodReport> {
    let mut notes = Vec::new();
    notes.extend(crate::plan::raise_nofile_limit());
    let bar = (out.live && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::new_spinner();
        b.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
        b
    });
    let offered = plan.offered_rate();
    let watcher = match out.watch {
        Some(interval) => Some(Watcher::start(plan.target, interval)?),
        None => None,
    };
    let mut host_view = crate::hostview::HostSampler::start(plan.target);
    if let Some(cpus) = &plan.cpus {
        host_view.generator_cpus(cpus);
    }
    let before = report::kernel_snapshot();
    let mut cpu_seen: (Duration, Vec<(String, Duration)>) = (Duration::ZERO, Vec::new());
    let run = engine::run(plan, |elapsed: Duration, p: &Progress, so_far| {
        if let Some(b) = &bar {
            // The generator threads' CPU over the last second (/proc/self/task/*/stat).
            let now_cpu = engine::generator_cpu();
            let span = elapsed.saturating_sub(cpu_seen.0).as_secs_f64().max(1e-3);
            let busy: Vec<String> = now_cpu
                .iter()
                .map(|(name, c)| {
                    let was = cpu_seen.1.iter().find(|(n, _)| n == name).map(|(_, c)| *c);
                    let used = c.saturating_sub(was.unwrap_or_default()).as_secs_f64();
                    format!("{:.0}%", 100.0 * used / span)
                })
                .collect();
            cpu_seen = (elapsed, now_cpu);
            let secs = elapsed.as_secs_f64().max(1e-3);
            let attempts = p.attempts.load(std::sync::atomic::Ordering::Relaxed);
            let est = p.established.load(std::sync::atomic::Ordering::Relaxed);
            let done = p.finished.load(std::sync::atomic::Ordering::Relaxed);
            let errors = p.errors.load(std::sync::atomic::Ordering::Relaxed);
            let late = p.late.load(std::sync::atomic::Ordering::Relaxed);
            let not_started = p.not_started.load(std::sync::atomic::Ordering::Relaxed);
            // Open loop: how far the starts trail the schedule right now.
            let behind = offered
                .map(|_| {
                    plan.scheduled_before(elapsed.min(plan.duration))
                        .saturating_sub(attempts)
                })
                .unwrap_or(0);
            // More than 10 ms of the schedule behind is not a jitter.
            let far_behind = offered.is_some_and(|o| behind as f64 > o * 0.01 + 64.0);
            let bound = if late > 0 || not_started > 0 || far_behind {
                format!(
                    "  GENERATOR-BOUND: behind {behind}, late {late}, not started {not_started}"
                )
            } else {
                String::new()
            };
            b.set_message(format!(
                "{:>5.1}s  offered {}  achieved {:.0}/s  in flight {}  errors {}  connect p50 {} us p99 {} us  gen CPU {}{bound}",
                secs,
                offered.map_or_else(|| "closed loop".to_string(), |o| format!("{o:.0}/s")),
                est as f64 / secs,
                attempts.saturating_sub(done),
                errors,
                so_far.value_at_quantile(0.5),
                so_far.value_at_quantile(0.99),
                busy.join(" "),
            ));
            b.tick();
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let after = report::kernel_snapshot();
    let mut rep = FloodReport::build(plan, &run, &report::HostFacts::read(), before, after, notes);
    rep.host = Some(host_view.finish(&run.thread_cpu));
    if let Some(w) = watcher {
        // A watch that failed at the end loses its series, not the flood's report.
        match w.finish() {
            Ok(q) => rep.listener_queue = Some(q),
            Err(e) => rep
                .notes
                .push(format!("the listener watch (inet_diag) failed: {e}")),
        }
    }
    crate::judge::flood(&mut rep);
    if let Some(path) = &out.hlog {
        report::hlog::write(
            path,
            run.started_at,
            &[
                (report::hlog::CONNECT_TAG, &run.intervals),
                (report::hlog::RESPONSE_TAG, &run.response_intervals),
                (report::hlog::TLS_TAG, &run.tls_intervals),
            ],
        )?;
    }
    Ok(rep)
}
