//! What tune reports: per backlog, the steps and the highest clean rate; the capacity and
//! where it came from; the recommendation and its reasoning. As a table, JSON (schema
//! [`SCHEMA`]) and an HTML page.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::charts::{self, Series};
use super::fmt_rate as rate;
use super::html::{self, Page};
use super::sweep::Step;

/// The tune JSON schema identifier.
pub const SCHEMA: &str = "synack-load/tune/3";

/// The results for one backlog.
///
/// ```
/// use synack_load::report::tune::BacklogResult;
///
/// // One backlog's row of `tune --json`, without the fields tune/2 added.
/// let json = r#"{"backlog": 64, "effective_backlog": 64, "steps": [],
///     "max_clean_rate": 1500.0, "p99_at_max_clean_us": 310, "peak_queue_at_max_clean": 12,
///     "past_it": "at 3.0k/s: 4.2% timeouts, 0.0% unserved, 37 SYN-retransmitted"}"#;
/// let b: BacklogResult = serde_json::from_str(json)?;
/// assert_eq!((b.max_clean_rate, b.peak_queue_at_target), (Some(1500.0), None));
/// // Those read as none.
/// assert!(b.generator_bound_at.is_none() && b.generator_reasons.is_empty());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BacklogResult {
    /// The backlog asked for (for a running server: its effective backlog, 0 when unknown).
    pub backlog: u32,
    /// What the kernel granted (inet_diag; `None` when not readable from here).
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
    /// Steps run again because the generator had not delivered them (`--retries`); only a
    /// delivered run judges the server.
    #[serde(default)]
    pub reruns: u32,
}

/// The server tune measured.
///
/// ```
/// use synack_load::report::tune::TunedServer;
///
/// let server = TunedServer {
///     kind: "command".into(),
///     command: Some("./my-server --port {port} --backlog {backlog}".into()),
///     ..TunedServer::default()
/// };
/// let json = serde_json::to_value(&server)?;
/// assert_eq!(json["command"], "./my-server --port {port} --backlog {backlog}");
/// // The simulated server's figures are null for any other kind.
/// assert!(json["service_time_us"].is_null() && json["workers"].is_null());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TunedServer {
    /// "simulated" (synack here, a simulated handler), "command" (`--server-cmd`, started
    /// per backlog) or "running" (ADDR, started by the user, its backlog fixed).
    pub kind: String,
    /// `--server-cmd`'s template, placeholders unfilled.
    pub command: Option<String>,
    /// A running server's address as given, or `--server-addr`.
    pub addr: Option<String>,
    /// Simulated: the mean service time, us.
    pub service_time_us: Option<u64>,
    /// Simulated: "exp" or "fixed".
    pub service_dist: Option<String>,
    /// Simulated: worker threads.
    pub workers: Option<usize>,
    /// Simulated: the connection limit.
    pub max_connections: Option<usize>,
}

/// The closed-loop run that measured a real server's capacity.
///
/// ```
/// use synack_load::report::tune::CapacityRun;
///
/// let run = CapacityRun {
///     backlog: Some(128), concurrency: 64, ok: 12_000, not_ok: 0,
///     elapsed_s: 1.5, rate: 8000.0, generator_busy_max: Some(0.97),
/// };
/// // A generator thread 97% busy: the 8k/s may be the generator's limit, not the server's.
/// assert!(run.generator_bound());
/// assert!(!CapacityRun { generator_busy_max: Some(0.4), ..run.clone() }.generator_bound());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityRun {
    /// The backlog the server listened with meanwhile (effective, when known).
    pub backlog: Option<u32>,
    /// Attempts kept in flight (at most the backlog plus one, so the queue cannot overflow).
    pub concurrency: usize,
    /// Connections that ended as asked (`ok`).
    pub ok: u64,
    /// Those that did not (any other class).
    pub not_ok: u64,
    /// The run's length, seconds.
    pub elapsed_s: f64,
    /// `ok` per second: the capacity.
    pub rate: f64,
    /// The busiest generator thread's CPU share meanwhile: near 1, the capacity measured may
    /// be the generator's.
    pub generator_busy_max: Option<f64>,
}

impl CapacityRun {
    /// A generator thread at or above this CPU share: the capacity may be the generator's.
    pub const BUSY_LIMIT: f64 = 0.9;

    /// Whether the generator may have set the capacity measured (a thread at or above
    /// [`Self::BUSY_LIMIT`] busy).
    pub fn generator_bound(&self) -> bool {
        self.generator_busy_max
            .is_some_and(|b| b >= Self::BUSY_LIMIT)
    }
}

/// One start of the user's server (`tune --server-cmd`) and how it ended.
///
/// ```no_run
/// use std::time::Duration;
/// use synack_load::tune::process::ServerProcess;
///
/// // A server that ignores SIGTERM, and a child of its own that does too.
/// let mut server = ServerProcess::start("trap '' TERM; sleep 30 & wait", 64)?;
/// std::thread::sleep(Duration::from_millis(100)); // the shell sets its trap
/// let stopped = server.stop(Duration::from_millis(200));
/// // The grace period passed: SIGKILL stopped the whole group, and tune's table says so.
/// assert!(stopped.killed);
/// assert_eq!((stopped.backlog, stopped.exit.as_str()), (64, "killed by SIGKILL"));
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopped {
    /// The backlog it was started with.
    pub backlog: u32,
    /// The command line run.
    pub command: String,
    /// How it exited, in words (`exit status 0`, `stopped by SIGTERM`, `killed by SIGKILL`).
    pub exit: String,
    /// Whether SIGTERM was not enough within the grace period and SIGKILL stopped it.
    pub killed: bool,
}

/// What tune found and recommends.
///
/// ```
/// use synack_load::report::tune::{TuneReport, render};
///
/// // `tune --json` for a server already running, read back.
/// let json = r#"{"schema": "synack-load/tune/3",
///     "server": {"kind": "running", "addr": "127.0.0.1:8080"},
///     "capacity": 4000.0, "capacity_source": "measured", "burst": 200, "target_rate": 2000.0,
///     "backlogs": [], "absorbs": false, "estimated_backlog": 512, "reasoning": [],
///     "generator_bound": false, "server_runs": []}"#;
/// let r: TuneReport = serde_json::from_str(json)?;
/// assert_eq!((r.absorbs, r.estimated_backlog), (Some(false), Some(512)));
/// let table = render(&r);
/// assert!(table.starts_with("synack-load tune: the server running at 127.0.0.1:8080"));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneReport {
    /// [`SCHEMA`].
    pub schema: String,
    /// The server measured.
    pub server: TunedServer,
    /// The connections per second the server completes: the model's (simulated:
    /// max-connections / service-time) or measured ([`CapacityRun`]).
    pub capacity: f64,
    /// "model" or "measured".
    pub capacity_source: String,
    /// The capacity run, for a real server.
    pub capacity_run: Option<CapacityRun>,
    /// Connections arriving at once each second.
    pub burst: u64,
    /// The rate the recommendation must absorb, per second (besides bursts).
    pub target_rate: f64,
    /// `net.core.somaxconn`.
    pub somaxconn: Option<u32>,
    /// Per backlog.
    pub backlogs: Vec<BacklogResult>,
    /// The smallest backlog tried that absorbs the target rate and bursts with zero drops,
    /// its deepest queue within the headroom.
    pub recommended_backlog: Option<u32>,
    /// A running server: whether its backlog absorbs the traffic asked.
    pub absorbs: Option<bool>,
    /// A running server that does not absorb it: the backlog the queue model says would
    /// (an estimate, not measured: start the server with it, or use --server-cmd, to check).
    pub estimated_backlog: Option<u32>,
    /// The reasoning, in one or two lines.
    pub reasoning: Vec<String>,
    /// True when the generator could not deliver the target load to some backlog, so no
    /// recommendation could be made (the command then exits 1).
    pub generator_bound: bool,
    /// `--server-cmd`: each start of the server and how it was stopped.
    pub server_runs: Vec<Stopped>,
}

/// The results as a table.
pub fn render(r: &TuneReport) -> String {
    let mut s = String::new();
    let sv = &r.server;
    let what = match sv.kind.as_str() {
        "simulated" => format!(
            "simulated handler {} us ({}) mean, {} workers, max {} connections",
            sv.service_time_us.unwrap_or(0),
            sv.service_dist.as_deref().unwrap_or("?"),
            sv.workers.unwrap_or(0),
            sv.max_connections.unwrap_or(0),
        ),
        "command" => format!(
            "your server, started per backlog: {}",
            sv.command.as_deref().unwrap_or("?")
        ),
        _ => format!(
            "the server running at {} (its own backlog)",
            sv.addr.as_deref().unwrap_or("?")
        ),
    };
    let capacity = match &r.capacity_run {
        Some(c) => format!(
            "capacity ~{} (measured: {} ok in {:.1} s, {} in flight{}{})",
            rate(r.capacity),
            c.ok,
            c.elapsed_s,
            c.concurrency,
            if c.not_ok > 0 {
                format!(", {} not ok", c.not_ok)
            } else {
                String::new()
            },
            c.generator_busy_max.map_or_else(String::new, |b| format!(
                ", generator thread busy {:.0}%",
                b * 100.0
            ))
        ),
        None => format!("capacity ~{}", rate(r.capacity)),
    };
    let _ = writeln!(
        s,
        "synack-load tune: {what}: {capacity}; bursts of {} each second; target {}",
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
            if b.backlog == 0 {
                "?".to_string()
            } else {
                b.backlog.to_string()
            },
            b.effective_backlog
                .map_or_else(|| "?".into(), |e| e.to_string()),
            b.max_clean_rate.map_or_else(
                || "none".into(),
                |r| format!("{}+{}", rate(r), b.steps.first().map_or(0, |s| s.burst))
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
    let reruns: u32 = r.backlogs.iter().map(|b| b.reruns).sum();
    if reruns > 0 {
        let _ = writeln!(
            s,
            "  note: {reruns} step{} run again because the generator had not delivered {} (--retries); only delivered runs judge the server",
            if reruns == 1 { " was" } else { "s were" },
            if reruns == 1 { "it" } else { "them" }
        );
    }
    let kills: Vec<String> = r
        .server_runs
        .iter()
        .filter(|x| x.killed)
        .map(|x| format!("backlog {}", x.backlog))
        .collect();
    if !kills.is_empty() {
        let _ = writeln!(
            s,
            "  note: the server did not exit within the grace period after SIGTERM ({}): SIGKILL stopped it",
            kills.join(", ")
        );
    }
    s
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
