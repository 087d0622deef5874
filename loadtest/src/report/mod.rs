//! What a flood reports: one [`FloodReport`], printed as a table, written as JSON, and its
//! connect-latency intervals as an HdrHistogram log.

pub mod charts;
pub mod diagnose;
pub mod hlog;
pub mod html;
pub mod merge;
pub mod sweep;
pub mod table;
pub mod tune;

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::engine::RunResult;
use crate::exchange::{Answer, Payload, first_line};
use crate::hostview::HostView;
use crate::outcome::Outcome;
use crate::plan::{CloseMode, Load, Plan};
use crate::record::{MAX_RETRANS_BUCKET, Recorder};
use crate::watch::QueueWatch;

/// The JSON schema identifier; bumped on any incompatible change. See `loadtest/SCHEMA.md`.
pub const SCHEMA: &str = "synack-load/flood/4";

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
///
/// ```
/// use synack_load::record::{latency_histogram, record_us};
/// use synack_load::report::Percentiles;
///
/// let mut h = latency_histogram();
/// for us in 1..=100 {
///     record_us(&mut h, std::time::Duration::from_micros(us));
/// }
/// let p = Percentiles::of(&h);
/// assert_eq!((p.count, p.p50, p.max), (100, 50, 100));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

/// The latencies a report holds, by their JSON names (`latency_us` keys).
///
/// ```
/// use synack_load::report::Latency;
///
/// assert_eq!(Latency::FromSchedule.name(), "from_schedule");
/// assert_eq!(Latency::ALL[0], Latency::Connect);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// `connect()` to established.
    Connect,
    /// Open loop: scheduled start to established.
    FromSchedule,
    /// With `--tls`: established to the TLS handshake done (ClientHello to the server's
    /// Finished processed).
    TlsHandshake,
    /// `connect()` to the first byte read.
    FirstByte,
    /// `connect()` to the answer's end (an HTTP response read to its end).
    Response,
    /// Open loop: the generator's lateness.
    StartLag,
    /// Open loop with bursts: the lateness of the attempts outside bursts.
    StartLagSteady,
    /// Probe: the handshake (= connect).
    Handshake,
    /// Probe: established to the server's accept.
    QueueWait,
    /// Probe: accept to the handler's start.
    Dispatch,
    /// Probe: the handler's start to its first byte.
    Rest,
}

impl Latency {
    /// Every latency, in table order.
    pub const ALL: [Latency; 11] = [
        Latency::Connect,
        Latency::TlsHandshake,
        Latency::FromSchedule,
        Latency::FirstByte,
        Latency::Response,
        Latency::StartLag,
        Latency::StartLagSteady,
        Latency::Handshake,
        Latency::QueueWait,
        Latency::Dispatch,
        Latency::Rest,
    ];

    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Latency::Connect => "connect",
            Latency::FromSchedule => "from_schedule",
            Latency::TlsHandshake => "tls_handshake",
            Latency::FirstByte => "first_byte",
            Latency::Response => "response",
            Latency::StartLag => "start_lag",
            Latency::StartLagSteady => "start_lag_steady",
            Latency::Handshake => "handshake",
            Latency::QueueWait => "queue_wait",
            Latency::Dispatch => "dispatch",
            Latency::Rest => "rest",
        }
    }

    /// The label in the table.
    pub fn label(self) -> &'static str {
        match self {
            Latency::Connect => "connect",
            Latency::FromSchedule => "from schedule",
            Latency::TlsHandshake => "tls handshake",
            Latency::FirstByte => "first byte",
            Latency::Response => "full answer",
            Latency::StartLag => "start lag",
            Latency::StartLagSteady => "  steady",
            Latency::Handshake => "probe: handshake",
            Latency::QueueWait => "  accept queue",
            Latency::Dispatch => "  dispatch",
            Latency::Rest => "  handler",
        }
    }
}

/// Connections by SYN retransmissions.
///
/// ```
/// # use std::collections::BTreeMap;
/// # use std::time::{Duration, SystemTime};
/// # use synack_load::engine::RunResult;
/// # use synack_load::plan::{Load, PlanBuilder};
/// use synack_load::record::Recorder;
/// use synack_load::report::{FloodReport, HostFacts, RetransBucket};
///
/// # let load = Load::Closed { concurrency: 8 };
/// # let plan = PlanBuilder::new("127.0.0.1:7878", load, Duration::from_secs(1)).build()?;
/// # let run = |rec| RunResult {
/// #     rec, intervals: BTreeMap::new(), response_intervals: BTreeMap::new(), tls_intervals: BTreeMap::new(),
/// #     started_at: SystemTime::now(), elapsed: Duration::from_secs(1),
/// #     active: Duration::from_secs(1), thread_cpu: Vec::new(), start_lateness: None,
/// # };
/// // `plan`: a 1 s flood to 127.0.0.1:7878; `run(rec)`: a finished run that recorded `rec`.
/// let mut rec = Recorder::default();
/// rec.retrans[0] = 90; // established at the first SYN
/// rec.retrans[1] = 10; // after one retransmission, about 1 s later
/// let report = FloodReport::build(&plan, &run(rec), &HostFacts::default(), None, None, vec![]);
/// let once = RetransBucket { retransmits: 1, or_more: false, connections: 10 };
/// assert_eq!(report.syn_retransmits[1], once);
/// assert!(report.syn_retransmits.last().unwrap().or_more); // 8 or more
/// assert_eq!(report.syn_retransmitted(), 10);
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
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
///
/// ```
/// # use std::collections::BTreeMap;
/// # use std::time::{Duration, SystemTime};
/// # use synack_load::engine::RunResult;
/// # use synack_load::plan::{Load, PlanBuilder};
/// use synack_load::record::Recorder;
/// use synack_load::report::{FloodReport, HostFacts, KERNEL_COUNTERS};
///
/// # let load = Load::Closed { concurrency: 8 };
/// # let plan = PlanBuilder::new("127.0.0.1:7878", load, Duration::from_secs(1)).build()?;
/// # let run = |rec| RunResult {
/// #     rec, intervals: BTreeMap::new(), response_intervals: BTreeMap::new(), tls_intervals: BTreeMap::new(),
/// #     started_at: SystemTime::now(), elapsed: Duration::from_secs(1),
/// #     active: Duration::from_secs(1), thread_cpu: Vec::new(), start_lateness: None,
/// # };
/// // `plan`: a 1 s flood to 127.0.0.1:7878; `run(rec)`: a finished run that recorded `rec`.
/// let at = |n: u64| Some(BTreeMap::from([("TcpExt.ListenOverflows".to_string(), n)]));
/// let (host, run) = (HostFacts::default(), run(Recorder::default()));
/// let report = FloodReport::build(&plan, &run, &host, at(10), at(17), vec![]);
/// let kernel = report.kernel.as_ref().unwrap();
/// assert_eq!(kernel.scope, "host"); // every socket of the host counts, not only the flood's
/// assert_eq!(kernel.counters["TcpExt.ListenOverflows"], 7);
/// // Every reported counter is there, zeros included.
/// assert_eq!(kernel.counters.len(), KERNEL_COUNTERS.len());
/// assert_eq!(report.kernel_delta("Tcp.ActiveOpens"), Some(0));
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelDelta {
    /// Always "host" (the network namespace's counters, every socket on it, not only ours).
    pub scope: String,
    /// Counter name to its change over the run.
    pub counters: BTreeMap<String, i64>,
}

/// Whether the generator delivered the load asked, with the figures that say so. Every
/// figure here is the generator's own, not the server's.
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
/// // `plan`: 1000 a second for 1 s; `run(rec)`: a finished run that recorded `rec`.
/// // The generator started 600 of the 1000.
/// let mut rec = Recorder::default();
/// rec.attempts = 600;
/// (0..400).for_each(|_| rec.outcome(Outcome::NotStarted, None));
/// let mut report = FloodReport::build(&plan, &run(rec), &HostFacts::default(), None, None, vec![]);
/// synack_load::judge::flood(&mut report); // the judge says whether it was delivered
/// let g = &report.generator;
/// assert!(!g.delivered);
/// assert_eq!((g.scheduled, g.started, g.not_started), (Some(1000), 600, 400));
/// assert!(g.reasons[0].starts_with("400 of 1000 scheduled attempts were never started"));
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorReport {
    /// True when the generator started what was asked, on schedule, and saw every attempt
    /// through in time: the run measured the server, not the generator. Set by
    /// [`crate::judge::flood`] from the figures below (false until judged).
    pub delivered: bool,
    /// Why not, in words, each with its evidence (empty when delivered), by the judge.
    pub reasons: Vec<String>,
    /// Open loop: attempts the schedule held.
    pub scheduled: Option<u64>,
    /// Attempts started.
    pub started: u64,
    /// Open loop: scheduled attempts never started.
    pub not_started: u64,
    /// Attempts the generator got to after their deadline (outcome `late`).
    pub late: u64,
    /// Open loop: the mean offered rate, per second.
    pub offered_rate: Option<f64>,
    /// Attempts started per second: over the duration (open loop), over the time it ran
    /// (closed loop, which `--connections` may end early).
    pub started_rate: f64,
    /// Open loop: start-lag p99 of the steady attempts (bursts apart), us, by rank: of 200
    /// starts, the second-worst (see [`rank_p99`]).
    pub start_lag_p99_us: Option<u64>,
    /// Steady starts that fell due while their second's burst was still going out: their lag
    /// runs from the burst's last start (the schedule put them there, not the generator).
    #[serde(default)]
    pub behind_burst: u64,
    /// The latest start of a burst's attempt after its second began, us (how long a burst
    /// took to go out); 0 without bursts.
    #[serde(default)]
    pub burst_spread_us: u64,
    /// Open loop: the share of steady starts that began in another 10 ms window than the one
    /// the schedule had them in ([`crate::record::ARRIVAL_WINDOW`]): how far the generator
    /// clumped or smeared the arrivals the server saw.
    #[serde(default)]
    pub arrivals_displaced: Option<f64>,
    /// The start-lag p99 above which the schedule counts as not kept, us (`--lag-limit`).
    pub lag_limit_us: u64,
    /// The in-flight bound, over all threads (`--max-in-flight`, or from the descriptor limit).
    pub max_in_flight: usize,
    /// The most attempts in flight at once (the threads' peaks summed: an upper bound).
    pub peak_in_flight: u64,
    /// The process's open-file limit (soft) at the end of the run.
    pub fd_limit: Option<u64>,
    /// Each generator thread's CPU time over the run as a share of the run's elapsed time
    /// (`/proc/thread-self/schedstat` read by each thread); empty where unknown.
    pub thread_busy: Vec<f64>,
    /// The longest turn of a generator thread's loop, us: no event was seen meanwhile.
    pub turn_max_us: u64,
    /// The longest any generator thread waited, runnable, for a CPU over the run, as a share
    /// of the run (the run queue's delay, schedstat): others held its CPU. `None` where not
    /// published.
    #[serde(default)]
    pub cpu_wait: Option<f64>,
}

/// What each connection sent and what its answer had to be.
///
/// ```
/// # use std::collections::BTreeMap;
/// # use std::time::{Duration, SystemTime};
/// # use synack_load::engine::RunResult;
/// # use synack_load::plan::{Load, PlanBuilder};
/// use synack_load::exchange::HttpRequest;
/// use synack_load::record::Recorder;
/// use synack_load::report::{FloodReport, HostFacts};
///
/// # let run = |rec| RunResult {
/// #     rec, intervals: BTreeMap::new(), response_intervals: BTreeMap::new(), tls_intervals: BTreeMap::new(),
/// #     started_at: SystemTime::now(), elapsed: Duration::from_secs(1),
/// #     active: Duration::from_secs(1), thread_cpu: Vec::new(), start_lateness: None,
/// # };
/// // `run(rec)`: a finished 1 s run that recorded `rec`.
/// let load = Load::Closed { concurrency: 8 };
/// let plan = PlanBuilder::new("127.0.0.1:8080", load, Duration::from_secs(1))
///     .http(Some(HttpRequest::parse("GET /health").unwrap()))
///     .expect(Some(b"HTTP/1.1 200".to_vec()))
///     .build()?;
/// let host = HostFacts::default();
/// let report = FloodReport::build(&plan, &run(Recorder::default()), &host, None, None, vec![]);
/// let e = &report.exchange;
/// assert_eq!((e.payload.as_str(), e.answer.as_str()), ("http", "http"));
/// assert_eq!(e.http_request.as_deref(), Some("GET /health HTTP/1.1"));
/// assert_eq!(e.expect.as_deref(), Some("HTTP/1.1 200"));
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExchangeReport {
    /// Bytes written once connected.
    pub payload_bytes: usize,
    /// "filler" (`--send N`), "bytes" (`--send-text`, `--send-file`) or "http".
    pub payload: String,
    /// With `--http`: the request line, such as `GET /health HTTP/1.1`.
    pub http_request: Option<String>,
    /// How the answer was read: "ignored", "bytes" (`--read`) or "http" (to its end).
    pub answer: String,
    /// With `--read N`: N.
    pub read_bytes: Option<usize>,
    /// `--expect`'s bytes, control characters escaped.
    pub expect: Option<String>,
}

impl ExchangeReport {
    fn of(plan: &Plan) -> Self {
        let http = matches!(plan.answer, Answer::Http { .. });
        ExchangeReport {
            payload_bytes: plan.payload.len(),
            payload: match (&plan.payload, http) {
                (_, true) => "http",
                (Payload::Filler(_), _) => "filler",
                (Payload::Bytes(_), _) => "bytes",
            }
            .into(),
            http_request: match (&plan.payload, http) {
                (Payload::Bytes(b), true) => Some(first_line(b)),
                _ => None,
            },
            answer: match plan.answer {
                Answer::Ignored => "ignored",
                Answer::Bytes(_) => "bytes",
                Answer::Http { .. } => "http",
            }
            .into(),
            read_bytes: match plan.answer {
                Answer::Bytes(n) => Some(n),
                _ => None,
            },
            expect: plan
                .expect
                .as_deref()
                .map(|e| String::from_utf8_lossy(e).escape_default().to_string()),
        }
    }
}

/// Answers that were not what was asked, by why (and their first line).
///
/// ```
/// # use std::collections::BTreeMap;
/// # use std::time::{Duration, SystemTime};
/// # use synack_load::engine::RunResult;
/// # use synack_load::plan::{Load, PlanBuilder};
/// use synack_load::record::Recorder;
/// use synack_load::report::{FloodReport, HostFacts, UnexpectedAnswer};
///
/// # let load = Load::Closed { concurrency: 8 };
/// # let plan = PlanBuilder::new("127.0.0.1:7878", load, Duration::from_secs(1)).build()?;
/// # let run = |rec| RunResult {
/// #     rec, intervals: BTreeMap::new(), response_intervals: BTreeMap::new(), tls_intervals: BTreeMap::new(),
/// #     started_at: SystemTime::now(), elapsed: Duration::from_secs(1),
/// #     active: Duration::from_secs(1), thread_cpu: Vec::new(), start_lateness: None,
/// # };
/// // `plan`: a 1 s flood to 127.0.0.1:7878; `run(rec)`: a finished run that recorded `rec`.
/// let why = "did not start with --expect: HTTP/1.1 503 Service Unavailable";
/// let mut rec = Recorder::default();
/// rec.unexpected(why, 3);
/// let report = FloodReport::build(&plan, &run(rec), &HostFacts::default(), None, None, vec![]);
/// assert_eq!(report.unexpected, [UnexpectedAnswer { why: why.into(), count: 3 }]);
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnexpectedAnswer {
    /// Why, with the answer's first line: `did not start with --expect: HTTP/1.1 503 ...`.
    pub why: String,
    /// Attempts that ended so (`bad_response`).
    pub count: u64,
}

fn default_close() -> String {
    "rst".into()
}

/// Everything a flood measured. Serialised as the `--json` output (schema [`SCHEMA`]).
///
/// ```
/// # use std::collections::BTreeMap;
/// # use std::time::{Duration, SystemTime};
/// # use synack_load::engine::RunResult;
/// # use synack_load::plan::{Load, PlanBuilder};
/// use synack_load::outcome::Outcome;
/// use synack_load::record::Recorder;
/// use synack_load::report::{FloodReport, HostFacts, SCHEMA};
///
/// # let load = Load::Closed { concurrency: 8 };
/// # let plan = PlanBuilder::new("127.0.0.1:7878", load, Duration::from_secs(1)).build()?;
/// # let run = |rec| RunResult {
/// #     rec, intervals: BTreeMap::new(), response_intervals: BTreeMap::new(), tls_intervals: BTreeMap::new(),
/// #     started_at: SystemTime::now(), elapsed: Duration::from_secs(1),
/// #     active: Duration::from_secs(1), thread_cpu: Vec::new(), start_lateness: None,
/// # };
/// // `plan`: a 1 s flood to 127.0.0.1:7878; `run(rec)`: a finished run that recorded `rec`.
/// let mut rec = Recorder::default();
/// (rec.attempts, rec.established) = (3, 2);
/// [Outcome::Ok, Outcome::Ok, Outcome::Refused].map(|o| rec.outcome(o, None));
/// let report = FloodReport::build(&plan, &run(rec), &HostFacts::default(), None, None, vec![]);
/// assert_eq!((report.schema.as_str(), report.outcome(Outcome::Refused)), (SCHEMA, 1));
/// assert_eq!(report.outcomes.len(), Outcome::ALL.len()); // every class, zeros included
/// // What `--json` writes reads back as the same report.
/// let json = serde_json::to_string(&report).unwrap();
/// assert_eq!(serde_json::from_str::<FloodReport>(&json).unwrap(), report);
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
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
    /// How connections were closed: "rst" or "fin" (absent: "rst"; see SCHEMA.md).
    #[serde(default = "default_close")]
    pub close: String,
    /// Whether sockets were reused after an RST (`--fresh-sockets` not given, RST closes,
    /// Linux); absent: false (see SCHEMA.md).
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
    /// What each connection sent and how its answer was read and checked.
    #[serde(default)]
    pub exchange: ExchangeReport,
    /// HTTP responses by status code (`"200"`: count): every response whose head came,
    /// whatever became of the attempt after. Empty without `--http`.
    #[serde(default)]
    pub http_statuses: BTreeMap<String, u64>,
    /// Up to 5 distinct unexpected answers (the `bad_response` class), with their counts;
    /// further distinct ones count only in the class.
    #[serde(default)]
    pub unexpected: Vec<UnexpectedAnswer>,
    /// Kernel counter deltas, where the OS publishes them.
    pub kernel: Option<KernelDelta>,
    /// Sysctls as read at the end of the run.
    pub sysctls: BTreeMap<String, String>,
    /// With `--watch-listener`: the target listener's accept queue over the run (inet_diag).
    pub listener_queue: Option<QueueWatch>,
    /// Established connections whose SYN retransmissions could not be read (`TCP_INFO`
    /// failed): in no `syn_retransmits` bucket.
    #[serde(default)]
    pub syn_retransmits_unknown: u64,
    /// Timeouts whose SYN the kernel had retransmitted (`TCP_INFO` at the deadline).
    #[serde(default)]
    pub timeouts_retransmitted: u64,
    /// With `--tls`: what was offered and what the server did.
    #[serde(default)]
    pub tls: Option<TlsReport>,
    /// This generator's part of a shared run (`--agents`, `--start-at`), with the run's id.
    #[serde(default)]
    pub agent: Option<AgentReport>,
    /// Each latency of `latency_us` as its whole histogram (HdrHistogram V2 deflate, base64),
    /// so that reports of several agents merge exactly (`synack-load merge`).
    #[serde(default)]
    pub histograms: BTreeMap<String, String>,
    /// Attempts by the second they started in and how they ended (classes with a count
    /// only): a moment of the run, a server restart say, shows as what clients saw then.
    #[serde(default)]
    pub per_second: Vec<SecondOutcomes>,
    /// Whether the generator delivered the load asked.
    pub generator: GeneratorReport,
    /// Where the CPU went over the run: the generator's, the server's (a target on this host
    /// whose process could be found) and the host's (`/proc`); `None` where not read.
    #[serde(default)]
    pub host: Option<HostView>,
    /// Observations worth a sentence (limits hit, what retransmits mean, ...).
    pub notes: Vec<String>,
}

/// One agent's part of a run several generators share.
/// # Examples
///
/// ```
/// use synack_load::report::AgentReport;
///
/// let a: AgentReport = serde_json::from_str(r#"{"run_id": "5be0f1d2a3c4b596", "count": 4,
///     "index": 1, "start_at_unix_s": 1796137200.0, "start_lateness_us": 180}"#)?;
/// assert_eq!((a.index, a.count), (1, 4));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentReport {
    /// The run's id, the same for every agent of it (see `Plan::run_id`).
    pub run_id: String,
    /// Agents in the run.
    pub count: u64,
    /// This one.
    pub index: u64,
    /// `--start-at`, Unix seconds (`None`: it started at once).
    pub start_at_unix_s: Option<f64>,
    /// How late its first attempt started against its scheduled time, microseconds.
    pub start_lateness_us: Option<u64>,
}

/// A flood's TLS: what the generator offered, and what the server did (from rustls after each
/// handshake, not from what was asked).
/// # Examples
///
/// ```
/// use synack_load::report::TlsReport;
///
/// let t: TlsReport = serde_json::from_str(r#"{"sni": "localhost", "alpn": [], "resumption": "on",
///     "versions": "Both", "handshakes": 10, "full": 1, "resumed": 9, "offered_resumption": 10,
///     "failures": {}}"#)?;
/// assert_eq!(t.full + t.resumed, t.handshakes);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsReport {
    /// The server name sent.
    pub sni: String,
    /// ALPN protocols offered.
    pub alpn: Vec<String>,
    /// `--tls-resumption` as asked: off, on, or the share.
    pub resumption: String,
    /// The versions offered (`Both`, `Tls13`, `Tls12`).
    pub versions: String,
    /// The key-exchange groups offered (`--tls-kx`; empty: rustls's default).
    #[serde(default)]
    pub kx: Vec<String>,
    /// Handshakes done.
    pub handshakes: u64,
    /// Of those, full (the server did not resume).
    pub full: u64,
    /// Of those, resumed (the server accepted the ticket or session).
    pub resumed: u64,
    /// Handshakes that offered resumption.
    pub offered_resumption: u64,
    /// `tls_failed` attempts by kind.
    pub failures: BTreeMap<String, u64>,
}

/// One second of a flood: the attempts that started in it, by how they ended.
/// # Examples
///
/// ```
/// use synack_load::report::SecondOutcomes;
///
/// let s: SecondOutcomes = serde_json::from_str(r#"{"second": 3, "started": 10, "outcomes": {"ok": 9, "reset": 1}}"#)?;
/// assert_eq!(s.count("ok"), 9);
/// assert_eq!(s.count("timeout"), 0);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondOutcomes {
    /// Seconds since the run's start (`started_at`).
    pub second: u64,
    /// Attempts started in it.
    pub started: u64,
    /// By class name, classes with a count only.
    pub outcomes: BTreeMap<String, u64>,
}

impl SecondOutcomes {
    /// The count of class `name` in this second (0 when absent).
    pub fn count(&self, name: &str) -> u64 {
        self.outcomes.get(name).copied().unwrap_or(0)
    }
}

/// The per-second rows of a recording.
fn per_second(rec: &Recorder) -> Vec<SecondOutcomes> {
    rec.per_second
        .iter()
        .enumerate()
        .filter(|(_, row)| row.iter().any(|&n| n > 0))
        .map(|(i, row)| SecondOutcomes {
            second: i as u64,
            started: row.iter().sum(),
            outcomes: Outcome::ALL
                .iter()
                .filter(|o| row[o.slot()] > 0)
                .map(|o| (o.name().to_string(), row[o.slot()]))
                .collect(),
        })
        .collect()
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
    synack_sys::tcp_counters().ok().flatten()
}

/// What a report needs to know of the host besides the run, read once at its end (the
/// report itself is built without I/O).
///
/// ```
/// use synack_load::report::{HostFacts, SYSCTLS};
///
/// let host = HostFacts::read();
/// // The sysctls of SYSCTLS this host publishes, by their dotted names.
/// assert!(host.sysctls.keys().all(|name| SYSCTLS.contains(&name.as_str())));
/// assert!(host.fd_limit.is_some_and(|soft| soft > 0));
/// // A report built from the default knows nothing of the host.
/// assert_eq!(HostFacts::default().sysctls.len(), 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostFacts {
    /// [`SYSCTLS`], as read.
    pub sysctls: BTreeMap<String, String>,
    /// The open-file limit (soft).
    pub fd_limit: Option<u64>,
}

impl HostFacts {
    /// Reads them now.
    pub fn read() -> Self {
        HostFacts {
            sysctls: read_sysctls(),
            fd_limit: synack_sys::nofile_limit().ok().map(|(soft, _)| soft),
        }
    }
}

fn read_sysctls() -> BTreeMap<String, String> {
    SYSCTLS
        .iter()
        .filter_map(|name| Some((name.to_string(), synack_sys::sysctl_text(name)?)))
        .collect()
}

impl FloodReport {
    /// Builds the report of a finished run, from the run, the host's facts and the kernel's
    /// counters before and after (no I/O).
    pub fn build(
        plan: &Plan,
        run: &RunResult,
        host: &HostFacts,
        before: Option<BTreeMap<String, u64>>,
        after: Option<BTreeMap<String, u64>>,
        mut notes: Vec<String>,
    ) -> Self {
        let rec = &run.rec;
        let (mode, rate_from, rate_to, concurrency) = match plan.load {
            Load::Open { from, to, .. } => ("open", Some(from), Some(to), None),
            Load::Closed { concurrency } => ("closed", None, None, Some(concurrency)),
        };
        let burst = match plan.load {
            Load::Open { burst, .. } => burst,
            Load::Closed { .. } => 0,
        };
        let open = mode == "open";
        let mut latency_us = BTreeMap::new();
        let mut histograms = BTreeMap::new();
        let answers = plan.answer != Answer::Ignored || plan.expect.is_some();
        for (l, h, kept) in [
            (Latency::Connect, &rec.connect, true),
            (
                Latency::TlsHandshake,
                &rec.tls_handshake,
                plan.tls.is_some(),
            ),
            (
                Latency::FirstByte,
                &rec.first_byte,
                !rec.first_byte.is_empty() || answers,
            ),
            (Latency::Response, &rec.response, answers),
            (Latency::Handshake, &rec.connect, plan.probe),
            (Latency::QueueWait, &rec.queue_wait, plan.probe),
            (Latency::Dispatch, &rec.dispatch, plan.probe),
            (Latency::Rest, &rec.rest, plan.probe && answers),
            (Latency::FromSchedule, &rec.from_schedule, open),
            (Latency::StartLag, &rec.start_lag, open),
            (Latency::StartLagSteady, &rec.steady_lag, open && burst > 0),
        ] {
            if kept {
                latency_us.insert(l.name().to_string(), Percentiles::of(h));
                histograms.insert(l.name().to_string(), hlog::encode_histogram(h));
            }
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
        let sysctls = host.sysctls.clone();
        let generator = generator_figures(plan, run, host);
        notes.extend(explain(rec, &sysctls, kernel.as_ref(), &generator));
        FloodReport {
            schema: SCHEMA.into(),
            target: plan.target_text.clone(),
            resolved: plan.target.to_string(),
            mode: mode.into(),
            rate_from,
            rate_to,
            concurrency,
            burst,
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
            exchange: ExchangeReport::of(plan),
            http_statuses: rec
                .statuses
                .iter()
                .map(|(c, n)| (c.to_string(), *n))
                .collect(),
            unexpected: rec
                .unexpected
                .iter()
                .map(|(why, count)| UnexpectedAnswer {
                    why: why.clone(),
                    count: *count,
                })
                .collect(),
            kernel,
            sysctls,
            listener_queue: None,
            syn_retransmits_unknown: rec.retrans_unknown,
            timeouts_retransmitted: rec.timeout_retransmitted,
            per_second: per_second(rec),
            histograms,
            agent: (plan.agent.count > 1 || plan.start_at.is_some()).then(|| AgentReport {
                run_id: plan.run_id(),
                count: plan.agent.count,
                index: plan.agent.index,
                start_at_unix_s: plan
                    .start_at
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs_f64()),
                start_lateness_us: run.start_lateness.map(|d| d.as_micros() as u64),
            }),
            tls: plan.tls.as_ref().map(|t| TlsReport {
                sni: t.name.to_str().into_owned(),
                alpn: t.options.alpn.clone(),
                resumption: match t.options.resumption {
                    crate::tls::Resumption::Off => "off".into(),
                    crate::tls::Resumption::On => "on".into(),
                    crate::tls::Resumption::Ratio(r) => format!("{r}"),
                },
                versions: format!("{:?}", t.options.versions),
                kx: t.options.kx.clone(),
                handshakes: rec.tls_full + rec.tls_resumed,
                full: rec.tls_full,
                resumed: rec.tls_resumed,
                offered_resumption: rec.tls_offered,
                failures: rec.tls_failures.clone(),
            }),
            generator,
            host: None,
            notes,
        }
    }

    /// Attempts the run classified: those started and, open loop, those never started. The
    /// outcomes sum to this.
    pub fn classified(&self) -> u64 {
        self.attempts + self.outcome(Outcome::NotStarted)
    }

    /// Established connections that needed at least one SYN retransmission.
    pub fn syn_retransmitted(&self) -> u64 {
        self.syn_retransmits
            .iter()
            .filter(|b| b.retransmits > 0)
            .map(|b| b.connections)
            .sum()
    }

    /// One latency's percentiles, if the run measured it.
    pub fn latency(&self, l: Latency) -> Option<&Percentiles> {
        self.latency_us.get(l.name())
    }

    /// A host-wide kernel counter's change over the run.
    pub fn kernel_delta(&self, name: &str) -> Option<i64> {
        self.kernel
            .as_ref()
            .and_then(|k| k.counters.get(name).copied())
    }

    /// The count of one outcome class.
    pub fn outcome(&self, o: Outcome) -> u64 {
        self.outcomes.get(o.name()).copied().unwrap_or(0)
    }
}

/// The value at the 99th percentile by rank: of `n` values, the one at rank
/// `floor(0.99 n) + 1` (the second-worst of 200, the worst below 100), so a step of a few
/// hundred starts is not condemned by its single worst one.
///
/// ```
/// use synack_load::record::latency_histogram;
/// use synack_load::report::rank_p99;
///
/// let mut h = latency_histogram();
/// (0..198).for_each(|_| h.record(10).unwrap());
/// h.record(900).unwrap();
/// h.record(5000).unwrap();
/// assert_eq!(h.len(), 200);
/// assert!((899..=901).contains(&rank_p99(&h))); // the second-worst, not the worst
/// ```
pub fn rank_p99(h: &Histogram<u64>) -> u64 {
    let n = h.len();
    if n == 0 {
        return 0;
    }
    let rank = (n * 99 / 100 + 1).min(n);
    let mut seen = 0;
    for v in h.iter_recorded() {
        seen += v.count_at_value();
        if seen >= rank {
            return h.highest_equivalent(v.value_iterated_to());
        }
    }
    h.max()
}

/// The generator's figures over a run: what it started, how late, how it spaced arrivals,
/// what it ran out of, its threads' CPU. Only figures: [`crate::judge::flood`] decides from
/// them whether the load was delivered.
pub fn generator_figures(plan: &Plan, run: &RunResult, host: &HostFacts) -> GeneratorReport {
    let rec = &run.rec;
    // Over the schedule (open loop), or the time the closed loop ran (it may end early, at
    // --connections).
    let d = match plan.load {
        Load::Open { .. } => plan.duration,
        Load::Closed { .. } => plan.duration.min(run.elapsed),
    }
    .as_secs_f64();
    let started_rate = if d > 0.0 {
        rec.attempts as f64 / d
    } else {
        0.0
    };
    let open = matches!(plan.load, Load::Open { .. });
    let burst = match plan.load {
        Load::Open { burst, .. } => burst,
        Load::Closed { .. } => 0,
    };
    let lag_hist = if burst > 0 {
        &rec.steady_lag
    } else {
        &rec.start_lag
    };
    let start_lag_p99_us = (open && !lag_hist.is_empty()).then(|| rank_p99(lag_hist));
    let scheduled_steady: u64 = rec.arrivals.iter().map(|w| u64::from(w[0])).sum();
    let displaced: u64 = rec
        .arrivals
        .iter()
        .map(|w| u64::from(w[1].saturating_sub(w[0])))
        .sum();
    let arrivals_displaced =
        (open && scheduled_steady > 0).then(|| displaced as f64 / scheduled_steady as f64);
    let elapsed = run.elapsed.as_secs_f64();
    let thread_busy: Vec<f64> = if elapsed > 0.0 {
        run.thread_cpu
            .iter()
            .map(|c| c.as_secs_f64() / elapsed)
            .collect()
    } else {
        Vec::new()
    };
    GeneratorReport {
        delivered: false,
        reasons: Vec::new(),
        scheduled: plan.planned(),
        started: rec.attempts,
        not_started: rec.count(Outcome::NotStarted),
        late: rec.count(Outcome::Late),
        offered_rate: plan.offered_rate(),
        started_rate,
        start_lag_p99_us,
        behind_burst: rec.behind_burst,
        burst_spread_us: rec.burst_spread_us,
        arrivals_displaced,
        lag_limit_us: plan.lag_limit.as_micros() as u64,
        max_in_flight: plan.max_in_flight,
        peak_in_flight: rec.peak_in_flight,
        fd_limit: host.fd_limit,
        thread_busy,
        turn_max_us: if rec.turn.is_empty() {
            0
        } else {
            rec.turn.max()
        },
        cpu_wait: rec
            .cpu_wait
            .filter(|_| elapsed > 0.0)
            .map(|w| w.as_secs_f64() / elapsed),
    }
}

/// What the host-wide counters say of drops at a listen queue: the sentence of evidence.
fn queue_evidence(kernel: Option<&KernelDelta>) -> (bool, String) {
    let Some(k) = kernel else {
        return (false, "the kernel's counters are not available here".into());
    };
    let get = |n: &str| k.counters.get(n).copied().unwrap_or(0);
    let (over, drops) = (get("TcpExt.ListenOverflows"), get("TcpExt.ListenDrops"));
    if over > 0 || drops > 0 {
        (
            true,
            format!(
                "the kernel counted {over:+} ListenOverflows and {drops:+} ListenDrops (host-wide: any listener here): a full accept queue drops SYNs and final ACKs"
            ),
        )
    } else {
        (
            false,
            "the kernel counted no listen overflow or drop (host-wide), so no accept queue here overflowed".into(),
        )
    }
}

fn explain(
    rec: &crate::record::Recorder,
    sysctls: &BTreeMap<String, String>,
    kernel: Option<&KernelDelta>,
    generator: &GeneratorReport,
) -> Vec<String> {
    let mut notes = Vec::new();
    let refused_cert: u64 = rec
        .tls_failures
        .iter()
        .filter(|(k, _)| k.starts_with("certificate refused"))
        .map(|(_, n)| n)
        .sum();
    if refused_cert > 0 {
        let kinds: Vec<&str> = rec
            .tls_failures
            .keys()
            .filter(|k| k.starts_with("certificate refused"))
            .map(String::as_str)
            .collect();
        notes.push(format!(
            "{refused_cert} TLS handshakes failed because this generator refused the server's certificate ({}): \
             give --cacert FILE with the CA that signed it (a self-signed certificate is its own CA), \
             --sni NAME with a name the certificate holds, or --insecure for a test server",
            kinds.join("; ")
        ));
    }
    let (overflowed, evidence) = queue_evidence(kernel);
    let retrans: u64 = rec.retrans[1..].iter().sum();
    if retrans > 0 {
        let linear = sysctls
            .get("net.ipv4.tcp_syn_linear_timeouts")
            .map_or("unknown".to_string(), |v| v.clone());
        notes.push(format!(
            "{retrans} connections needed SYN retransmissions (TCP_INFO at establishment): a SYN or its SYN-ACK was lost; {evidence}. \
             Each retry waits about 1 s (tcp_syn_linear_timeouts={linear}: that many retries at 1 s, then doubling), hence connect times near 1 s, 2 s, 3 s."
        ));
    }
    let timeouts = rec.count(Outcome::Timeout);
    if timeouts > 0 {
        let why = if rec.timeout_retransmitted > 0 || overflowed {
            format!(
                "{} of them had retransmitted their SYN (TCP_INFO at the deadline); {evidence}",
                rec.timeout_retransmitted
            )
        } else {
            format!(
                "none had retransmitted its SYN (TCP_INFO at the deadline) and {evidence}: the deadline (--connect-timeout) may be shorter than the first retransmission (1 s), or the SYNs went where nothing answers"
            )
        };
        notes.push(format!(
            "{timeouts} attempts timed out, the kernel still waiting for a SYN-ACK at the deadline: {why}"
        ));
    }
    if rec.count(Outcome::FdLimit) > 0 {
        let soft = generator.fd_limit.unwrap_or(0);
        notes.push(format!(
            "the generator's open-file limit ({soft}) was reached (EMFILE/ENFILE), with at most {} attempts in flight: lower --max-in-flight, --concurrency or --hold, or raise the hard limit",
            generator.max_in_flight
        ));
    }
    if rec.count(Outcome::PortsExhausted) > 0 {
        notes.push(
            "local ports ran out for this destination (EADDRNOTAVAIL): spread over source addresses with --source 127.0.0.2-127.0.0.9, \
             or close with RST (--close rst) so ports do not wait in TIME_WAIT"
                .into(),
        );
    }
    if rec.count(Outcome::Unserved) > 0 {
        let why = if overflowed {
            format!(
                "{evidence}; with syncookies on, a client whose final ACK was dropped believes it is connected while the server never saw it"
            )
        } else {
            format!(
                "{evidence}: the server held them in its accept queue (paused, at its connection limit, or slow to accept) or accepted them and did not answer"
            )
        };
        notes.push(format!(
            "{} connections completed the handshake but got no byte in time: {why}",
            rec.count(Outcome::Unserved)
        ));
    }
    let half = rec.count(Outcome::HalfOpen);
    if half > 0 {
        notes.push(format!(
            "{half} connections were half-open: each sent nothing and got no data, yet received its SYN-ACK again (TCP_INFO segments in): \
             the final ACK of its handshake never reached the server, which kept it in SYN-RECV and never had it in its accept queue \
             (a lossy path, or the listener dropping ACKs: {evidence})"
        ));
    }
    let bad = rec.count(Outcome::BadResponse);
    if bad > 0 {
        let first = rec.unexpected.first().map_or_else(String::new, |(why, n)| {
            format!(" (the first kind seen: {why}, {n})")
        });
        notes.push(format!(
            "{bad} connections got an answer that was not what was asked{first}: the server answered, \
             so its accept path worked; what it answered is its application's"
        ));
    }
    notes
}
