//! Several agents' flood reports of one run merged into one: counts and outcomes summed
//! exactly, latency percentiles from the merged histograms (each report carries its own), the
//! offered and achieved rates of the whole, and a row per agent (its start lateness, whether
//! it delivered its part, its host's kernel counters). Reports of different runs or schema
//! versions are refused, naming the file. With `--server`, the report of `synack-load
//! diagnose` run on the server's host during the run joins it, with whether its watch covered
//! the run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::hlog::{decode_histogram, encode_histogram};
use super::{FloodReport, KernelDelta, Percentiles, SCHEMA, SecondOutcomes, log_buckets};
use crate::error::LoadError;

/// The merge's JSON schema.
pub const MERGE_SCHEMA: &str = "synack-load/merge/1";

/// One agent of a merged run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRow {
    /// The report it came from.
    pub file: PathBuf,
    /// Its agent index (0 for a report without one).
    pub index: u64,
    /// How late its first attempt started, microseconds.
    pub start_lateness_us: Option<u64>,
    /// Its attempts and `ok`s.
    pub attempts: u64,
    /// Of those, ok.
    pub ok: u64,
    /// Whether it delivered its part of the load (the generator's own verdict).
    pub delivered: bool,
    /// Why not, if not.
    pub reasons: Vec<String>,
    /// Its host's kernel counters over its run (host-wide on that host).
    pub kernel: Option<KernelDelta>,
}

/// A merged run: the whole as one flood report, and a row per agent.
///
/// ```
/// use synack_load::report::merge::MergedReport;
///
/// // The shape of `synack-load merge --json`: the whole, then the agents.
/// let fields = ["schema", "run_id", "agents", "total"];
/// # let _ = fields;
/// # let _: Option<MergedReport> = None;
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergedReport {
    /// [`MERGE_SCHEMA`].
    pub schema: String,
    /// The run's id, the same in every report merged (`None` for reports without one).
    pub run_id: Option<String>,
    /// One row per report, by agent index.
    pub agents: Vec<AgentRow>,
    /// The whole run, as a flood report (its rates those of the whole).
    pub total: FloodReport,
    /// The agents' shared start (`--start-at`), Unix seconds.
    #[serde(default)]
    pub started_at_unix_s: Option<f64>,
    /// The server's side (`--server`): what `synack-load diagnose` saw on its host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSide>,
}

/// The report of `synack-load diagnose` on the server's host, beside the agents'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerSide {
    /// The report it came from.
    pub file: PathBuf,
    /// Whether its watch began before the agents' start and lasted past their end (`None`
    /// when either time is unknown).
    pub covered_run: Option<bool>,
    /// The report.
    pub diagnose: super::diagnose::DiagnoseReport,
}

/// Reads the report of `synack-load diagnose --json` from `file` into `m`, as its server side.
///
/// ```no_run
/// use synack_load::report::merge;
///
/// let mut m = merge::merge_files(&["agent-0.json".into(), "agent-1.json".into()])?;
/// merge::attach_server(&mut m, "server.json".as_ref())?;
/// assert!(m.server.is_some());
/// print!("{}", merge::render(&m));
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
///
/// # Errors
///
/// A file that cannot be read or is not a diagnose report of [`super::diagnose::SCHEMA`]:
/// [`LoadError::Usage`] naming it.
pub fn attach_server(m: &mut MergedReport, file: &Path) -> Result<(), LoadError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| LoadError::Usage(format!("merge: --server {}: {e}", file.display())))?;
    let not_diagnose = |why: String| {
        LoadError::Usage(format!(
            "merge: --server {}: not a synack-load diagnose report ({why}); give the --json of `synack-load diagnose` run on the server's host",
            file.display()
        ))
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| not_diagnose(e.to_string()))?;
    let schema = value.get("schema").and_then(|s| s.as_str()).unwrap_or("");
    if schema != super::diagnose::SCHEMA {
        return Err(not_diagnose(format!(
            "schema {schema:?} where {} is merged",
            super::diagnose::SCHEMA
        )));
    }
    let diagnose: super::diagnose::DiagnoseReport =
        serde_json::from_value(value).map_err(|e| not_diagnose(e.to_string()))?;
    let covered_run = match (m.started_at_unix_s, diagnose.started_at_unix_s) {
        (Some(run), Some(watch)) => {
            Some(watch <= run && watch + diagnose.duration_s >= run + m.total.elapsed_s)
        }
        _ => None,
    };
    m.server = Some(ServerSide {
        file: file.to_path_buf(),
        covered_run,
        diagnose,
    });
    Ok(())
}

/// Reads and merges flood reports (JSON, `--json`).
///
/// # Errors
///
/// [`LoadError::Usage`] naming the file: one that cannot be read or is not a flood report,
/// of another schema version, of another run (its run id differs), or without histograms.
pub fn merge_files(files: &[PathBuf]) -> Result<MergedReport, LoadError> {
    let mut reports = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| LoadError::Usage(format!("merge: {}: {e}", f.display())))?;
        let rep: FloodReport = serde_json::from_str(&text).map_err(|e| {
            LoadError::Usage(format!(
                "merge: {}: not a synack-load flood report ({e})",
                f.display()
            ))
        })?;
        reports.push((f.clone(), rep));
    }
    merge(reports)
}

/// The sum of two optional figures: either alone where the other is absent.
fn add_some<T: std::ops::Add<Output = T>>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

fn bad(f: &Path, why: String) -> LoadError {
    LoadError::Usage(format!("merge: {}: {why}", f.display()))
}

/// Merges reports already read.
///
/// # Errors
///
/// As [`merge_files`].
pub fn merge(mut reports: Vec<(PathBuf, FloodReport)>) -> Result<MergedReport, LoadError> {
    let Some((first_file, first)) = reports.first().cloned() else {
        return Err(LoadError::Usage("merge: no report given".into()));
    };
    let run_id = first.agent.as_ref().map(|a| a.run_id.clone());
    for (f, r) in &reports {
        if r.schema != SCHEMA {
            return Err(bad(
                f,
                format!("schema {} where {SCHEMA} is merged", r.schema),
            ));
        }
        let id = r.agent.as_ref().map(|a| a.run_id.clone());
        if id != run_id {
            return Err(bad(
                f,
                format!(
                    "run {} where {} is run {}: reports of different runs do not merge",
                    id.as_deref().unwrap_or("(none)"),
                    first_file.display(),
                    run_id.as_deref().unwrap_or("(none)")
                ),
            ));
        }
        if r.histograms.is_empty() {
            return Err(bad(
                f,
                "no histograms in it (written before they were kept?)".into(),
            ));
        }
    }
    reports.sort_by_key(|(_, r)| r.agent.as_ref().map_or(0, |a| a.index));
    let mut total = first.clone();
    let mut hists: BTreeMap<String, hdrhistogram::Histogram<u64>> = BTreeMap::new();
    let mut per_second: BTreeMap<u64, SecondOutcomes> = BTreeMap::new();
    let sum = |a: &mut BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
        for (k, v) in b {
            *a.entry(k.clone()).or_default() += v;
        }
    };
    total.attempts = 0;
    total.established = 0;
    total.achieved_rate = 0.0;
    total.offered_rate = None;
    total.outcomes.values_mut().for_each(|v| *v = 0);
    total.other_errors.clear();
    total.http_statuses.clear();
    total.syn_retransmits_unknown = 0;
    total.timeouts_retransmitted = 0;
    for b in &mut total.syn_retransmits {
        b.connections = 0;
    }
    // Per host, so in each agent's row rather than the whole's.
    total.kernel = None;
    total.listener_queue = None;
    total.notes.clear();
    total.unexpected.clear();
    total.elapsed_s = 0.0;
    if let Some(t) = &mut total.tls {
        (t.handshakes, t.full, t.resumed, t.offered_resumption) = (0, 0, 0, 0);
        t.failures.clear();
    }
    let g = &mut total.generator;
    g.scheduled = None;
    g.started = 0;
    g.not_started = 0;
    g.late = 0;
    g.offered_rate = None;
    g.started_rate = 0.0;
    g.peak_in_flight = 0;
    g.max_in_flight = 0;
    // Each agent's own process limit: in its row's report, not the whole's.
    g.fd_limit = None;
    g.thread_busy.clear();
    total.threads = 0;
    g.turn_max_us = 0;
    let mut agents = Vec::new();
    for (f, r) in &reports {
        total.attempts += r.attempts;
        total.established += r.established;
        total.achieved_rate += r.achieved_rate;
        total.offered_rate = add_some(total.offered_rate, r.offered_rate);
        sum(&mut total.outcomes, &r.outcomes);
        sum(&mut total.other_errors, &r.other_errors);
        sum(&mut total.http_statuses, &r.http_statuses);
        let (g, rg) = (&mut total.generator, &r.generator);
        g.scheduled = add_some(g.scheduled, rg.scheduled);
        g.started += rg.started;
        g.not_started += rg.not_started;
        g.late += rg.late;
        g.offered_rate = add_some(g.offered_rate, rg.offered_rate);
        g.started_rate += rg.started_rate;
        g.peak_in_flight += rg.peak_in_flight;
        g.max_in_flight += rg.max_in_flight;
        total.threads += r.threads;
        g.thread_busy.extend(&rg.thread_busy);
        g.turn_max_us = g.turn_max_us.max(rg.turn_max_us);
        total.elapsed_s = total.elapsed_s.max(r.elapsed_s);
        for u in &r.unexpected {
            match total.unexpected.iter_mut().find(|t| t.why == u.why) {
                Some(t) => t.count += u.count,
                None => total.unexpected.push(u.clone()),
            }
        }
        if let (Some(t), Some(rt)) = (&mut total.tls, &r.tls) {
            t.handshakes += rt.handshakes;
            t.full += rt.full;
            t.resumed += rt.resumed;
            t.offered_resumption += rt.offered_resumption;
            sum(&mut t.failures, &rt.failures);
        }
        total.syn_retransmits_unknown += r.syn_retransmits_unknown;
        total.timeouts_retransmitted += r.timeouts_retransmitted;
        for (a, b) in total.syn_retransmits.iter_mut().zip(&r.syn_retransmits) {
            a.connections += b.connections;
        }
        for (name, text) in &r.histograms {
            let h = decode_histogram(text).map_err(|e| bad(f, format!("histogram {name}: {e}")))?;
            match hists.get_mut(name) {
                Some(have) => {
                    let _ = have.add(&h);
                }
                None => {
                    hists.insert(name.clone(), h);
                }
            }
        }
        for s in &r.per_second {
            let e = per_second
                .entry(s.second)
                .or_insert_with(|| SecondOutcomes {
                    second: s.second,
                    started: 0,
                    outcomes: BTreeMap::new(),
                });
            e.started += s.started;
            sum(&mut e.outcomes, &s.outcomes);
        }
        for n in &r.notes {
            total.notes.push(format!(
                "agent {}: {n}",
                r.agent.as_ref().map_or(0, |a| a.index)
            ));
        }
        agents.push(AgentRow {
            file: f.clone(),
            index: r.agent.as_ref().map_or(0, |a| a.index),
            start_lateness_us: r.agent.as_ref().and_then(|a| a.start_lateness_us),
            attempts: r.attempts,
            ok: r.outcomes.get("ok").copied().unwrap_or(0),
            delivered: r.generator.delivered,
            reasons: r.generator.reasons.clone(),
            kernel: r.kernel.clone(),
        });
    }
    total.latency_us = hists
        .iter()
        .map(|(k, h)| (k.clone(), Percentiles::of(h)))
        .collect();
    if let Some(c) = hists.get("connect") {
        total.connect_buckets = log_buckets(c);
    }
    total.histograms = hists
        .iter()
        .map(|(k, h)| (k.clone(), encode_histogram(h)))
        .collect();
    total.per_second = per_second.into_values().collect();
    let bound: Vec<String> = agents
        .iter()
        .filter(|a| !a.delivered)
        .map(|a| a.index.to_string())
        .collect();
    total.generator.delivered = bound.is_empty();
    total.generator.start_lag_p99_us = total.latency_us.get("start_lag").map(|p| p.p99);
    total.generator.reasons = if bound.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "agents {} of {} did not deliver their part (their rows below, and their notes, say why)",
            bound.join(", "),
            agents.len()
        )]
    };
    let started_at_unix_s = first.agent.as_ref().and_then(|a| a.start_at_unix_s);
    total.agent = None;
    Ok(MergedReport {
        schema: MERGE_SCHEMA.into(),
        run_id,
        agents,
        total,
        started_at_unix_s,
        server: None,
    })
}

/// The merged run as text: the whole as a flood table, then a row per agent.
pub fn render(m: &MergedReport) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "merged {} reports of run {}:\n",
        m.agents.len(),
        m.run_id.as_deref().unwrap_or("(no run id)")
    );
    s.push_str(&super::table::render(&m.total));
    let _ = writeln!(
        s,
        "\n  agents (each row is that agent's own; kernel counters are host-wide on its host)"
    );
    for a in &m.agents {
        let _ = writeln!(
            s,
            "    agent {:>3}: {:>9} attempts, {:>9} ok, started {} late, {}{}",
            a.index,
            a.attempts,
            a.ok,
            a.start_lateness_us
                .map_or_else(|| "?".to_string(), |us| format!("{us} us")),
            if a.delivered {
                "delivered"
            } else {
                "GENERATOR-BOUND"
            },
            a.kernel
                .as_ref()
                .map(|k| {
                    let over = k
                        .counters
                        .get("TcpExt.ListenOverflows")
                        .copied()
                        .unwrap_or(0);
                    let retr = k.counters.get("Tcp.RetransSegs").copied().unwrap_or(0);
                    format!("; its host: ListenOverflows {over:+}, RetransSegs {retr:+}")
                })
                .unwrap_or_default()
        );
    }
    if let Some(server) = &m.server {
        let _ = writeln!(
            s,
            "\n  the server's host ({}, synack-load diagnose there; its counters are host-wide on that host): {}",
            server.file.display(),
            match server.covered_run {
                Some(true) => "its watch covered the whole run",
                Some(false) =>
                    "its watch did NOT cover the whole run (started after the agents or ended before them): what it saw is only part of the run",
                None => "whether its watch covered the run is unknown (a start time is missing)",
            }
        );
        for line in super::diagnose::render(&server.diagnose).lines() {
            let _ = writeln!(s, "    {line}");
        }
    }
    s
}
