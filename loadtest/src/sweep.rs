//! `synack-load sweep`: one bounded open-loop flood per offered rate, a table per step, and the
//! saturation point: the first step where the queue overflows (listen overflows, SYN
//! retransmissions, timeouts, unserved or refused connections) or connect p99 leaves the
//! sub-millisecond band.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cli::SweepArgs;
use crate::flood::{self, Output};
use crate::plan::{Load, Plan};
use crate::report::charts::{self, Series};
use crate::report::html::{self, Page};
use crate::report::{FloodReport, Percentiles, fmt_rate as rate};

/// The sweep JSON schema identifier.
pub const SCHEMA: &str = "synack-load/sweep/1";

/// One step of a sweep.
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
    /// `TcpExt.ListenOverflows` change (host-wide).
    pub overflows: Option<i64>,
    /// With --watch-listener: the deepest accept queue seen.
    pub peak_queue: Option<u32>,
    /// With --watch-listener: the effective backlog.
    pub effective_backlog: Option<u32>,
    /// Whether the step counts as saturated.
    pub saturated: bool,
    /// Why, in words.
    pub reasons: Vec<String>,
    /// The step's whole flood report.
    pub flood: FloodReport,
}

/// Judges a flood: saturated or not, and why.
pub fn judge(rep: &FloodReport, p99_limit: Duration) -> (bool, Vec<String>) {
    let mut why = Vec::new();
    let overflows = rep
        .kernel
        .as_ref()
        .and_then(|k| k.counters.get("TcpExt.ListenOverflows").copied())
        .unwrap_or(0);
    // The counter is host-wide: when the watched listener's queue never reached its backlog,
    // the overflows were some other listener's.
    let ours = rep
        .listener_queue
        .as_ref()
        .is_none_or(|q| q.peak >= q.effective_backlog);
    if overflows > 0 && ours {
        why.push(format!("{overflows} listen overflows"));
    }
    let retrans: u64 = rep
        .syn_retransmits
        .iter()
        .filter(|b| b.retransmits > 0)
        .map(|b| b.connections)
        .sum();
    if retrans > 0 {
        why.push(format!("{retrans} SYN-retransmitted connections"));
    }
    for (class, what) in [
        ("timeout", "timeouts"),
        ("unserved", "unserved"),
        ("refused", "refused"),
        ("reset", "reset"),
    ] {
        let n = rep.outcomes.get(class).copied().unwrap_or(0);
        if n > 0 {
            why.push(format!("{n} {what}"));
        }
    }
    if let Some(c) = rep.latency_us.get("connect")
        && c.count > 0
        && c.p99 as u128 >= p99_limit.as_micros()
    {
        why.push(format!(
            "connect p99 {} us >= {} us",
            c.p99,
            p99_limit.as_micros()
        ));
    }
    (!why.is_empty(), why)
}

/// Summarises a step's flood.
pub fn step(rep: FloodReport, rate: f64, burst: u64, p99_limit: Duration) -> Step {
    let (saturated, reasons) = judge(&rep, p99_limit);
    let q = rep.latency_us.get("queue_wait");
    Step {
        rate,
        burst,
        achieved_rate: rep.achieved_rate,
        connect: rep.latency_us["connect"].clone(),
        queue_wait_p99: q.map(|q| q.p99),
        queue_wait_max: q.map(|q| q.max),
        retransmitted: rep
            .syn_retransmits
            .iter()
            .filter(|b| b.retransmits > 0)
            .map(|b| b.connections)
            .sum(),
        timeouts: rep.outcomes.get("timeout").copied().unwrap_or(0),
        unserved: rep.outcomes.get("unserved").copied().unwrap_or(0),
        refused_or_reset: rep.outcomes.get("refused").copied().unwrap_or(0)
            + rep.outcomes.get("reset").copied().unwrap_or(0),
        overflows: rep
            .kernel
            .as_ref()
            .and_then(|k| k.counters.get("TcpExt.ListenOverflows").copied()),
        peak_queue: rep.listener_queue.as_ref().map(|q| q.peak),
        effective_backlog: rep.listener_queue.as_ref().map(|q| q.effective_backlog),
        saturated,
        reasons,
        flood: rep,
    }
}

/// Runs one open-loop step at `rate` (plus `burst` each second) from a base plan.
pub fn run_step(
    base: &Plan,
    rate: f64,
    burst: u64,
    duration: Duration,
    watch: Option<Duration>,
    p99_limit: Duration,
) -> std::io::Result<Step> {
    let mut plan = base.clone();
    plan.load = Load::Open {
        from: rate,
        to: rate,
        burst,
    };
    plan.duration = duration;
    let out = Output {
        json: None,
        hlog: None,
        live: false,
        watch,
    };
    let rep = flood::flood(&plan, &out)?;
    Ok(step(rep, rate, burst, p99_limit))
}

/// What a sweep found.
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
}

impl SweepReport {
    /// Finds the saturation point of a list of steps.
    pub fn new(
        target: &str,
        step_duration: Duration,
        p99_limit: Duration,
        steps: Vec<Step>,
    ) -> Self {
        let first = steps.iter().position(|s| s.saturated);
        let last_good = match first {
            Some(0) => None,
            Some(i) => Some(steps[i - 1].rate),
            None => steps.last().map(|s| s.rate),
        };
        SweepReport {
            schema: SCHEMA.into(),
            target: target.into(),
            step_duration_s: step_duration.as_secs_f64(),
            p99_limit_us: p99_limit.as_micros() as u64,
            saturation_rate: first.map(|i| steps[i].rate),
            saturation_reasons: first.map(|i| steps[i].reasons.clone()).unwrap_or_default(),
            last_good_rate: last_good,
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
        "  {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>7} {:>8} {:>8} {:>9} {:>6}  verdict",
        "offered",
        "achieved",
        "p50 us",
        "p99 us",
        "p99.9",
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
        let _ = writeln!(
            s,
            "  {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>7} {:>8} {:>8} {:>9} {:>6}  {}",
            offered,
            rate(st.achieved_rate),
            st.connect.p50,
            st.connect.p99,
            st.connect.p999,
            opt(st.queue_wait_p99),
            st.retransmitted,
            st.timeouts,
            st.unserved,
            opt(st.overflows),
            opt(st.peak_queue),
            if st.saturated {
                format!("SATURATED: {}", st.reasons.join(", "))
            } else {
                "ok".into()
            }
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
    match (r.saturation_rate, r.last_good_rate) {
        (Some(sat), good) => {
            let _ = writeln!(
                s,
                "  saturation point: {} ({}); last good rate: {}",
                rate(sat),
                r.saturation_reasons.join(", "),
                good.map_or_else(|| "none (the first step already saturated)".into(), rate)
            );
        }
        (None, Some(good)) => {
            let _ = writeln!(
                s,
                "  no saturation up to {} (p99 connect under {} us, no overflows, retransmissions or timeouts)",
                rate(good),
                r.p99_limit_us
            );
        }
        (None, None) => {}
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
            .map(|s| (s.rate + s.burst as f64, f(&s.connect) as f64))
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
    let worst = r.steps.iter().find(|s| s.saturated).or(r.steps.last());
    if let Some(w) = worst {
        page.h2(&format!("the step at {}", rate(w.rate)));
        html::flood_charts(&mut page, &w.flood)?;
    }
    page.write(dir, &title)
}

/// The rates a sweep's flags ask for.
pub fn rates(args: &SweepArgs) -> Result<Vec<f64>, String> {
    if !args.rates.is_empty() {
        return Ok(args.rates.clone());
    }
    match (args.from, args.to) {
        (Some(a), Some(b)) => {
            if b < a {
                return Err(format!("--from {a} --to {b}: the sweep must not go down"));
            }
            let n = args.steps.max(1);
            if n == 1 {
                return Ok(vec![a]);
            }
            Ok((0..n)
                .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
                .collect())
        }
        _ => Err("give the rates: --rates 1k,2k,5k or --from 1k --to 10k --steps 5".into()),
    }
}

/// `synack-load sweep`: returns the exit status.
pub fn command(args: &SweepArgs) -> i32 {
    let rates = match rates(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("synack-load sweep: {e}");
            return 2;
        }
    };
    let (server, addr) = match flood::target(&args.target, args.conn.probe) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let base = match args.conn.plan(
        &addr,
        Load::Open {
            from: rates[0],
            to: rates[0],
            burst: args.burst,
        },
        args.step_duration,
        None,
        flood::embedded_fds(server.as_ref()),
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("synack-load sweep: {e}");
            return 2;
        }
    };
    let mut steps = Vec::new();
    for (i, &r) in rates.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(args.settle);
        }
        if !args.quiet {
            eprintln!("step {}/{}: {}", i + 1, rates.len(), rate(r));
        }
        match run_step(
            &base,
            r,
            args.burst,
            args.step_duration,
            args.conn.watch(),
            args.p99_limit,
        ) {
            Ok(s) => steps.push(s),
            Err(e) => {
                eprintln!("synack-load sweep: {e}");
                return flood::exit_code(&e);
            }
        }
    }
    let rep = SweepReport::new(&base.target_text, args.step_duration, args.p99_limit, steps);
    print!("{}", render(&rep));
    if let Some(s) = server {
        print!("\n{}", crate::embedded::summary(&s));
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rep).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("synack-load sweep: {}: {e}", path.display());
            return 1;
        }
    }
    if let Some(dir) = &args.report {
        match write_html(dir, &rep) {
            Ok(p) => println!("\nreport: {}", p.display()),
            Err(e) => {
                eprintln!("synack-load sweep: report: {e}");
                return 1;
            }
        }
    }
    0
}
