//! What a flood reports: one [`FloodReport`], printed as a table, written as JSON, and its
//! connect-latency intervals as an HdrHistogram log.

pub mod charts;
pub mod hlog;
pub mod html;
pub mod table;

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::engine::RunResult;
use crate::outcome::Outcome;
use crate::plan::{CloseMode, Load, Plan};
use crate::record::MAX_RETRANS_BUCKET;
use crate::watch::QueueWatch;

/// The JSON schema identifier; bumped on any incompatible change. See `loadtest/SCHEMA.md`.
pub const SCHEMA: &str = "synack-load/flood/1";

/// The kernel counters reported, as `/proc/net/{netstat,snmp}` name them.
pub const KERNEL_COUNTERS: [&str; 8] = [
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
    "TcpExt.TCPReqQFullDrop",
    "TcpExt.TCPReqQFullDoCookies",
    "TcpExt.SyncookiesSent",
    "Tcp.ActiveOpens",
    "Tcp.AttemptFails",
    "Tcp.RetransSegs",
];

/// The sysctls that shape what a flood sees, reported as read at the end of the run.
pub const SYSCTLS: [&str; 7] = [
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_abort_on_overflow",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_syn_linear_timeouts",
    "net.ipv4.ip_local_port_range",
];

/// Percentiles of one histogram, microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// Summarises a histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            count: h.len(),
            min: if h.is_empty() { 0 } else { h.min() },
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// Connections by SYN retransmissions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetransBucket {
    /// `tcpi_total_retrans` at establishment.
    pub retransmits: u32,
    /// True for the last bucket: this many or more.
    pub or_more: bool,
    /// Connections.
    pub connections: u64,
}

/// Kernel counters' change over the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelDelta {
    /// Always "host" (the network namespace's counters, every socket on it, not only ours).
    pub scope: String,
    /// Counter name to its change over the run.
    pub counters: BTreeMap<String, i64>,
}

fn default_close() -> String {
    "rst".into()
}

/// Everything a flood measured. Serialised as the `--json` output (schema [`SCHEMA`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloodReport {
    /// [`SCHEMA`].
    pub schema: String,
    /// The target as given.
    pub target: String,
    /// The address it resolved to.
    pub resolved: String,
    /// "open" or "closed".
    pub mode: String,
    /// Open loop: rate at the start, per second.
    pub rate_from: Option<f64>,
    /// Open loop: rate at the end, per second.
    pub rate_to: Option<f64>,
    /// Closed loop: attempts in flight.
    pub concurrency: Option<usize>,
    /// Open loop: attempts started together at the start of every second, besides the rate.
    #[serde(default)]
    pub burst: u64,
    /// Generator threads.
    pub threads: usize,
    /// How connections were closed: "rst" or "fin" (reports before this field: "rst").
    #[serde(default = "default_close")]
    pub close: String,
    /// Whether sockets were reused after an RST (`--fresh-sockets` not given, RST closes,
    /// Linux); reports before this field made a new socket for every connection.
    #[serde(default)]
    pub reuse_sockets: bool,
    /// `--duration`, seconds.
    pub duration_s: f64,
    /// `--connections`, if given.
    pub connections_limit: Option<u64>,
    /// Start to end of the run, seconds.
    pub elapsed_s: f64,
    /// Attempts started.
    pub attempts: u64,
    /// Attempts that got a connection.
    pub established: u64,
    /// Open loop: the mean offered rate, per second.
    pub offered_rate: Option<f64>,
    /// Connections established per second, from the start to the last one.
    pub achieved_rate: f64,
    /// Latency summaries, us: `connect` (connect() to established), `from_schedule` (open loop:
    /// scheduled start to established), `first_byte` (connect() to the first byte read),
    /// `start_lag` (open loop: the generator's own lateness); with `--probe`: `handshake`
    /// (= connect), `queue_wait` (established to the server's accept), `dispatch` (accept to
    /// handler start) and `rest` (handler start to its first byte, with `--read`).
    pub latency_us: BTreeMap<String, Percentiles>,
    /// Connect latency as log-spaced buckets `[upper bound us, count]` (each bound 1.25x the
    /// last), for charts: the SYN-retransmission modes near 1 s, 2 s, 3 s show here.
    #[serde(default)]
    pub connect_buckets: Vec<(u64, u64)>,
    /// Established connections by SYN retransmissions.
    pub syn_retransmits: Vec<RetransBucket>,
    /// Attempts by how they ended (every class, zeros included; they sum to `attempts`).
    pub outcomes: BTreeMap<String, u64>,
    /// Errors of class `other`, by OS message.
    pub other_errors: BTreeMap<String, u64>,
    /// Kernel counter deltas, where the OS publishes them.
    pub kernel: Option<KernelDelta>,
    /// Sysctls as read at the end of the run.
    pub sysctls: BTreeMap<String, String>,
    /// With `--watch-listener`: the target listener's accept queue over the run (inet_diag).
    pub listener_queue: Option<QueueWatch>,
    /// Observations worth a sentence (limits hit, what retransmits mean, ...).
    pub notes: Vec<String>,
}

/// A rate per second, short: `850/s`, `2.5k/s`.
pub fn fmt_rate(r: f64) -> String {
    if r >= 1000.0 {
        format!("{:.1}k/s", r / 1000.0)
    } else {
        format!("{r:.0}/s")
    }
}

/// A histogram as log-spaced `(upper bound, count)` buckets, empty buckets left out.
pub fn log_buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_log(1, 1.25)
        .filter(|v| v.count_since_last_iteration() > 0)
        .map(|v| (v.value_iterated_to(), v.count_since_last_iteration()))
        .collect()
}

/// Reads the reported kernel counters now.
pub fn kernel_snapshot() -> Option<BTreeMap<String, u64>> {
    synack::sys::tcp_counters().ok().flatten()
}

fn read_sysctls() -> BTreeMap<String, String> {
    SYSCTLS
        .iter()
        .filter_map(|name| {
            let path = format!("/proc/sys/{}", name.replace('.', "/"));
            let v = std::fs::read_to_string(path).ok()?;
            Some((
                name.to_string(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            ))
        })
        .collect()
}

impl FloodReport {
    /// Builds the report of a finished run.
    pub fn build(
        plan: &Plan,
        run: &RunResult,
        before: Option<BTreeMap<String, u64>>,
        after: Option<BTreeMap<String, u64>>,
        mut notes: Vec<String>,
    ) -> Self {
        let rec = &run.rec;
        let (mode, rate_from, rate_to, concurrency) = match plan.load {
            Load::Open { from, to, .. } => ("open", Some(from), Some(to), None),
            Load::Closed { concurrency } => ("closed", None, None, Some(concurrency)),
        };
        let mut latency_us = BTreeMap::new();
        latency_us.insert("connect".into(), Percentiles::of(&rec.connect));
        if !rec.first_byte.is_empty() || plan.read.is_some() {
            latency_us.insert("first_byte".into(), Percentiles::of(&rec.first_byte));
        }
        if plan.probe {
            latency_us.insert("handshake".into(), Percentiles::of(&rec.connect));
            latency_us.insert("queue_wait".into(), Percentiles::of(&rec.queue_wait));
            latency_us.insert("dispatch".into(), Percentiles::of(&rec.dispatch));
            if plan.read.is_some() {
                latency_us.insert("rest".into(), Percentiles::of(&rec.rest));
            }
        }
        if mode == "open" {
            latency_us.insert("from_schedule".into(), Percentiles::of(&rec.from_schedule));
            latency_us.insert("start_lag".into(), Percentiles::of(&rec.start_lag));
        }
        let syn_retransmits = rec
            .retrans
            .iter()
            .enumerate()
            .map(|(i, &n)| RetransBucket {
                retransmits: i as u32,
                or_more: i == MAX_RETRANS_BUCKET,
                connections: n,
            })
            .collect();
        let outcomes = Outcome::ALL
            .iter()
            .map(|o| (o.name().to_string(), rec.count(*o)))
            .collect();
        let kernel = match (before, after) {
            (Some(b), Some(a)) => Some(KernelDelta {
                scope: "host".into(),
                counters: KERNEL_COUNTERS
                    .iter()
                    .map(|k| {
                        let d = a.get(*k).copied().unwrap_or(0) as i64
                            - b.get(*k).copied().unwrap_or(0) as i64;
                        (k.to_string(), d)
                    })
                    .collect(),
            }),
            _ => None,
        };
        let active = run.active.as_secs_f64();
        let achieved_rate = if active > 0.0 {
            rec.established as f64 / active
        } else {
            0.0
        };
        let sysctls = read_sysctls();
        notes.extend(explain(rec, &sysctls));
        FloodReport {
            schema: SCHEMA.into(),
            target: plan.target_text.clone(),
            resolved: plan.target.to_string(),
            mode: mode.into(),
            rate_from,
            rate_to,
            concurrency,
            burst: match plan.load {
                Load::Open { burst, .. } => burst,
                Load::Closed { .. } => 0,
            },
            threads: plan.threads,
            close: match plan.close {
                CloseMode::Rst => "rst",
                CloseMode::Fin => "fin",
            }
            .into(),
            reuse_sockets: plan.uses_socket_reuse(),
            duration_s: plan.duration.as_secs_f64(),
            connections_limit: plan.connections,
            elapsed_s: run.elapsed.as_secs_f64(),
            attempts: rec.attempts,
            established: rec.established,
            offered_rate: plan.offered_rate(),
            achieved_rate,
            latency_us,
            syn_retransmits,
            connect_buckets: log_buckets(&rec.connect),
            outcomes,
            other_errors: rec.other_errors.clone(),
            kernel,
            sysctls,
            listener_queue: None,
            notes,
        }
    }

    /// The count of one outcome class.
    pub fn outcome(&self, o: Outcome) -> u64 {
        self.outcomes.get(o.name()).copied().unwrap_or(0)
    }
}

fn explain(rec: &crate::record::Recorder, sysctls: &BTreeMap<String, String>) -> Vec<String> {
    let mut notes = Vec::new();
    let retrans: u64 = rec.retrans[1..].iter().sum();
    if retrans > 0 {
        let linear = sysctls
            .get("net.ipv4.tcp_syn_linear_timeouts")
            .map_or("unknown".to_string(), |v| v.clone());
        notes.push(format!(
            "{retrans} connections needed SYN retransmissions: their SYN (or final ACK) was dropped, \
             typically by a full accept queue. Each retry waits about 1 s (tcp_syn_linear_timeouts={linear}: \
             that many retries at 1 s, then doubling), hence connect times near 1 s, 2 s, 3 s."
        ));
    }
    if rec.count(Outcome::FdLimit) > 0 {
        let (soft, _) = synack::sys::nofile_limit().unwrap_or((0, 0));
        notes.push(format!(
            "the generator's open-file limit ({soft}) was the bottleneck: lower --concurrency or --hold, or raise the hard limit"
        ));
    }
    if rec.count(Outcome::PortsExhausted) > 0 {
        notes.push(
            "local ports ran out for this destination: spread over source addresses with --source 127.0.0.2-127.0.0.9, \
             or close with RST (--close rst) so ports do not wait in TIME_WAIT"
                .into(),
        );
    }
    if rec.count(Outcome::Unserved) > 0 {
        notes.push(
            "unserved connections completed the handshake but got no byte in time: with syncookies on, a client \
             whose final ACK was dropped by a full accept queue believes it is connected while the server never saw it"
                .into(),
        );
    }
    notes
}
