//! The command line: clap structs only, and the way from their flags to a [`PlanBuilder`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::diagnose::{Target, parse_target};
use crate::error::LoadError;
use crate::exchange::{Answer, Exchange, HttpRequest, Payload, unescape};
use crate::plan::{CloseMode, Load, PlanBuilder};
use crate::tune::{ServerCommand, ServerUnderTest, ServiceDist, Simulated, TuneSpec};

/// Floods a TCP server with connects and measures what the handshake costs.
///
/// ```
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command};
///
/// let cli = Cli::try_parse_from(["synack-load", "flood", "127.0.0.1:7878", "--rate", "2.5k"])?;
/// let Command::Flood(flood) = cli.command else { unreachable!() };
/// assert_eq!(flood.rate, Some(2500.0));
/// // A subcommand is required: there is no default one.
/// assert!(Cli::try_parse_from(["synack-load"]).is_err());
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Debug, Parser)]
#[command(name = "synack-load", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
///
/// ```
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command};
///
/// let cli = Cli::try_parse_from(["synack-load", "tune"])?;
/// assert!(matches!(cli.command, Command::Tune(_)));
/// let cli = Cli::try_parse_from(["synack-load", "sweep", "127.0.0.1:7878", "--rates", "1k"])?;
/// assert!(matches!(cli.command, Command::Sweep(s) if s.rates == [1000.0]));
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open connections to ADDR as fast or as steadily as asked, and report.
    Flood(Box<FloodArgs>),
    /// One bounded flood per offered rate; names the saturation point and the last good rate.
    Sweep(Box<SweepArgs>),
    /// For each backlog, finds the highest rate a server absorbs and recommends a backlog: a
    /// synack server started here with a simulated handler (no arguments needed), your
    /// server's command (--server-cmd), or a server already running (ADDR).
    Tune(Box<TuneArgs>),
    /// Watch every TCP listener on this host (or those given) without sending a packet: its
    /// backlog, its accept queue over time, its own drops, its processes, the kernel's counters
    /// and log; then findings in plain words. Safe on a production host: it only reads.
    Diagnose(DiagnoseArgs),
    /// Merge the JSON reports of one run's agents (--agents) into one, or HdrHistogram interval logs (from --hlog) second by second, and print the combined percentiles.
    Merge(MergeArgs),
}

/// `synack-load diagnose`.
#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// Ports (8080) or addresses (127.0.0.1:8080, `[::1]:8080`) to watch. [default: every TCP
    /// listener on this host]
    #[arg(value_name = "PORT | ADDR", value_parser = parse_target)]
    pub targets: Vec<Target>,
    /// How long to watch.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, conflicts_with = "until_interrupted")]
    pub duration: Duration,
    /// Watch until Ctrl-C (or SIGTERM), then report.
    #[arg(long)]
    pub until_interrupted: bool,
    /// How often each accept queue is read.
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Serve Prometheus metrics on this address until stopped (per listener: queue depth, its
    /// peak since the last scrape, backlog, time full, drops, owner; and the kernel's counters,
    /// classified). Loopback unless another address is given. Runs until Ctrl-C (or SIGTERM),
    /// then reports.
    #[arg(long, value_name = "ADDR", conflicts_with = "duration")]
    pub serve: Option<std::net::SocketAddr>,
    /// Also write the report as JSON (schema synack-load/diagnose/1).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write DIR/report.html: each listener's queue over time against its backlog.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
}

/// `synack-load merge`.
///
/// ```
/// use std::path::PathBuf;
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command};
///
/// let cli = Cli::try_parse_from(["synack-load", "merge", "a.hlog", "b.hlog"])?;
/// let Command::Merge(merge) = cli.command else { unreachable!() };
/// assert_eq!(merge.files, [PathBuf::from("a.hlog"), PathBuf::from("b.hlog")]);
/// // At least one file.
/// assert!(Cli::try_parse_from(["synack-load", "merge"]).is_err());
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Interval logs written with --hlog, or JSON reports written with --json by the agents
    /// of one run (--agents): one kind at a time.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// With JSON reports: also write the merged report as JSON (schema synack-load/merge/1).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// With JSON reports: also write DIR/report.html for the whole run.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// With JSON reports: the --json of `synack-load diagnose` run on the server's host during
    /// the run; its listeners and findings join the merged report.
    #[arg(long, value_name = "FILE")]
    pub server: Option<PathBuf>,
    /// With interval logs: also write one merged interval log, the intervals that start at the
    /// same instant (the same second of a shared --start-at) added up, by tag.
    #[arg(long, value_name = "FILE")]
    pub hlog: Option<PathBuf>,
}

/// How connections close.
///
/// ```
/// use clap::{Parser, ValueEnum};
/// use synack_load::cli::{Cli, CloseArg, Command};
///
/// assert_eq!(CloseArg::from_str("fin", false), Ok(CloseArg::Fin));
/// assert!(CloseArg::from_str("linger", false).is_err());
/// // Without --close, connections end with an RST.
/// let cli = Cli::try_parse_from(["synack-load", "flood", "127.0.0.1:7878"])?;
/// let Command::Flood(flood) = cli.command else { unreachable!() };
/// assert_eq!(flood.conn.close, CloseArg::Rst);
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CloseArg {
    /// SO_LINGER 0: RST, so the generator keeps no TIME_WAIT and does not run out of ports.
    Rst,
    /// An orderly FIN.
    Fin,
}

/// Where to flood: an address, or a synack server started in this process.
///
/// ```
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command};
///
/// let args = ["synack-load", "flood", "--embedded", "--server-backlog", "64"];
/// let Command::Flood(f) = Cli::try_parse_from(args)?.command else { unreachable!() };
/// assert!(f.target.embedded && f.target.addr.is_none());
/// assert_eq!((f.target.server_backlog, f.target.stray_server_flag()), (Some(64), None));
/// // Without --embedded, a --server-* flag has nothing to configure: the command refuses it.
/// let args = ["synack-load", "flood", "127.0.0.1:7878", "--server-backlog", "64"];
/// let Command::Flood(f) = Cli::try_parse_from(args)?.command else { unreachable!() };
/// assert_eq!(f.target.stray_server_flag(), Some("--server-backlog"));
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The server, host:port (names resolved; IPv6 as `[::1]:port`). Not with --embedded.
    #[arg(required_unless_present = "embedded")]
    pub addr: Option<String>,
    /// Start a synack greeting server in this process on 127.0.0.1 and flood it: the quickest
    /// way to see the whole path (its statistics are printed after the run).
    #[arg(long, conflicts_with = "addr")]
    pub embedded: bool,
    /// With --embedded: the server's listen backlog. [default: 1024]
    #[arg(long, value_name = "N")]
    pub server_backlog: Option<u32>,
    /// With --embedded: the server's worker threads. [default: 1]
    #[arg(long, value_name = "N")]
    pub server_workers: Option<usize>,
    /// With --embedded: the server's connection limit. [default: 8192]
    #[arg(long, value_name = "N")]
    pub server_max_connections: Option<usize>,
    /// With --embedded: the server's workers accept for themselves (no acceptor thread).
    #[arg(long)]
    pub server_accept_in_workers: bool,
}

impl TargetArgs {
    /// The first `--server-*` flag given without `--embedded`, which they configure.
    /// (clap's `requires` cannot say this: a flag's default counts as present.)
    pub fn stray_server_flag(&self) -> Option<&'static str> {
        if self.embedded {
            return None;
        }
        [
            ("--server-backlog", self.server_backlog.is_some()),
            ("--server-workers", self.server_workers.is_some()),
            (
                "--server-max-connections",
                self.server_max_connections.is_some(),
            ),
            ("--server-accept-in-workers", self.server_accept_in_workers),
        ]
        .into_iter()
        .find_map(|(name, given)| given.then_some(name))
    }
}

/// What each connection says once connected and what its answer must be: the flags `flood`,
/// `sweep` and `tune` share.
///
/// ```
/// use std::time::Duration;
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command};
///
/// let args = ["synack-load", "flood", "127.0.0.1:8080", "--http", "GET /health",
///     "--header", "Accept: */*", "--expect", "HTTP/1.1 200"];
/// let Command::Flood(f) = Cli::try_parse_from(args)?.command else { unreachable!() };
/// let exchange = f.conn.exchange.exchange()?;
/// let request = exchange.http.unwrap();
/// assert_eq!(request.headers, [("Accept".to_string(), "*/*".to_string())]);
/// assert_eq!(exchange.expect.as_deref(), Some(&b"HTTP/1.1 200"[..]));
/// assert_eq!(exchange.read_timeout, Duration::from_secs(2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Args, Clone, Default)]
pub struct ExchangeArgs {
    /// Once connected, send this many filler bytes. [default: 0]
    #[arg(long, value_name = "BYTES", default_value_t = 0, group = "payload")]
    pub send: usize,
    /// Once connected, send this text; escapes \r \n \t \0 \\ and \xNN are turned into their
    /// bytes ("PING\r\n").
    #[arg(long, value_name = "TEXT", value_parser = parse_escaped, group = "payload")]
    pub send_text: Option<Escaped>,
    /// Once connected, send the bytes of this file (read once, before the run).
    #[arg(long, value_name = "FILE", group = "payload")]
    pub send_file: Option<PathBuf>,
    /// One HTTP/1.1 request per connection ("GET /health"), with Host: from the target and
    /// Connection: close; the response is read to its end (Content-Length, chunked, or the
    /// close), and the report tallies status codes. One request per connection: no keep-alive.
    #[arg(long, value_name = "METHOD PATH", group = "payload", value_parser = parse_http)]
    pub http: Option<HttpRequest>,
    /// With --http: a header line "Name: value" (repeatable; a Host here replaces the target's).
    #[arg(long, value_name = "K: V", requires = "http")]
    pub header: Vec<String>,
    /// With --http: the request body (escapes as in --send-text), sent with its Content-Length.
    #[arg(long, value_name = "TEXT", requires = "http", value_parser = parse_escaped, conflicts_with = "body_file")]
    pub body: Option<Escaped>,
    /// With --http: the request body from this file.
    #[arg(long, value_name = "FILE", requires = "http")]
    pub body_file: Option<PathBuf>,
    /// Once connected, read N bytes or until the server closes (measures time to first byte).
    #[arg(long, value_name = "N", value_parser = parse_positive, conflicts_with = "http")]
    pub read: Option<u64>,
    /// Every answer must start with these bytes (escapes as in --send-text; at least that many
    /// are read); otherwise the attempt is a bad_response, and the report shows the first
    /// line of up to 5 distinct unexpected answers.
    #[arg(long, value_name = "TEXT", value_parser = parse_escaped)]
    pub expect: Option<Escaped>,
    /// With --read, --send, --http, --expect or --probe: a connection that gets no first byte
    /// (or cannot send) within this long counts as "unserved"; an answer begun but not
    /// complete by then (an HTTP response, --expect's bytes) as "bad_response".
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub read_timeout: Duration,
}

impl ExchangeArgs {
    /// What these flags ask of each connection, reading the files they name.
    ///
    /// # Errors
    ///
    /// [`LoadError::Usage`] naming the flag: a file that cannot be read, a bad header line.
    pub fn exchange(&self) -> Result<Exchange, LoadError> {
        let read_file = |flag: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| {
                LoadError::Usage(format!(
                    "{flag} {}: cannot read it ({e}); give a readable file",
                    path.display()
                ))
            })
        };
        let payload = if let Some(t) = &self.send_text {
            Payload::Bytes(t.0.clone().into())
        } else if let Some(f) = &self.send_file {
            Payload::Bytes(read_file("--send-file", f)?.into())
        } else {
            Payload::Filler(self.send)
        };
        let http = match &self.http {
            Some(req) => {
                let mut req = req.clone();
                for h in &self.header {
                    req.header(h).map_err(LoadError::Usage)?;
                }
                if let Some(body) = &self.body {
                    req.body = body.0.clone();
                } else if let Some(f) = &self.body_file {
                    req.body = read_file("--body-file", f)?;
                }
                Some(req)
            }
            None => None,
        };
        Ok(Exchange {
            payload,
            answer: self
                .read
                .map_or(Answer::Ignored, |r| Answer::Bytes(r as usize)),
            http,
            expect: self.expect.as_ref().map(|e| e.0.clone()),
            read_timeout: self.read_timeout,
        })
    }
}

/// What each connection does, and how the generator runs.
///
/// ```
/// use std::time::Duration;
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command};
/// use synack_load::plan::{CloseMode, Load};
///
/// let args = ["synack-load", "flood", "127.0.0.1:7878", "--close", "fin", "--threads", "2",
///     "--watch-listener"];
/// let Command::Flood(f) = Cli::try_parse_from(args)?.command else { unreachable!() };
/// assert_eq!(f.conn.watch(), Some(Duration::from_millis(10)));
/// let load = Load::Closed { concurrency: 4 };
/// let plan = f.conn.plan_builder("127.0.0.1:7878", load, Duration::from_secs(1))?.build()?;
/// assert_eq!((plan.close, plan.threads), (CloseMode::Fin, 2));
/// assert!(!plan.uses_socket_reuse()); // a FIN close always takes a new socket
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// What each connection sends and must hear back.
    #[command(flatten)]
    pub exchange: ExchangeArgs,
    /// TLS on each connection.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Keep each connection open this long before closing it (fills a server's connection
    /// limit and backlog).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub hold: Option<Duration>,
    /// How to close: rst (SO_LINGER 0) or fin.
    #[arg(long, value_enum, default_value = "rst")]
    pub close: CloseArg,
    /// A new socket for every connection. By default, closing with rst reuses each socket for
    /// a later connection (connect(AF_UNSPEC), Linux): the same RST on the wire and a new
    /// local port, without a socket(), close() and epoll registration per connection, which
    /// opens more per generator core. fin always closes and uses a new socket.
    #[arg(long)]
    pub fresh_sockets: bool,
    /// Generator threads, each its own event loop. [default: the number of cores]
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub threads: Option<u64>,
    /// Source addresses to spread connections over: 127.0.0.2-127.0.0.9, or a comma list.
    /// Goes past the ~28k ephemeral ports per destination. [default: the kernel picks]
    #[arg(long, value_name = "ADDRS", value_parser = parse_sources)]
    pub source: Option<Sources>,
    /// An attempt not established after this long counts as a timeout.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Read the synack probe header each connection starts with (a server built with
    /// probe(true)) and split its life at the server's accept: handshake, accept-queue wait,
    /// dispatch, and the rest. Same host only (one monotonic clock).
    #[arg(long)]
    pub probe: bool,
    /// Sample the target listener's accept queue through inet_diag (what `ss -lnt` shows), for
    /// any server on this host, and report its peak depth, effective backlog and time series.
    #[arg(long)]
    pub watch_listener: bool,
    /// With --watch-listener: the sampling interval.
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = parse_duration)]
    pub watch_interval: Duration,
    /// The most attempts in flight at once, over all threads (each holds a descriptor). Past
    /// it, a generator behind its schedule waits for attempts to end instead of running out of
    /// descriptors. [default: what the open-file limit allows]
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub max_in_flight: Option<u64>,
    /// Open loop: a start-lag p99 (steady attempts, bursts apart) above this means the
    /// generator did not keep the schedule, and the run says so.
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = parse_duration)]
    pub lag_limit: Duration,
    /// Pin the generator threads to these CPUs (0-3,6), thread i on the i-th, round the list:
    /// on a host it shares with the server, keep the two apart. [default: unpinned]
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    pub cpus: Option<CpuList>,
}

/// `synack-load flood`.
///
/// ```
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command};
/// use synack_load::plan::Load;
///
/// let line = "synack-load flood 127.0.0.1:7878 --rate 10k --burst 500";
/// let Command::Flood(f) = Cli::try_parse_from(line.split(' '))?.command else { unreachable!() };
/// assert_eq!(f.load(), Load::Open { from: 10_000.0, to: 10_000.0, burst: 500 });
/// // Neither --rate nor --ramp: a closed loop of 64.
/// let line = "synack-load flood 127.0.0.1:7878";
/// let Command::Flood(f) = Cli::try_parse_from(line.split(' '))?.command else { unreachable!() };
/// assert_eq!(f.load(), Load::Closed { concurrency: 64 });
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Debug, Args)]
pub struct FloodArgs {
    /// The target.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Open loop: start this many connections per second on a fixed schedule (10k, 2.5k, 500).
    /// Latency is also measured from each scheduled start. [default: closed loop, --concurrency 64]
    #[arg(long, value_name = "N", value_parser = parse_rate, conflicts_with_all = ["concurrency", "ramp"])]
    pub rate: Option<f64>,
    /// Closed loop: keep N attempts in flight. [default: 64 when no --rate or --ramp]
    #[arg(long, value_name = "N", value_parser = parse_positive, conflicts_with = "ramp")]
    pub concurrency: Option<u64>,
    /// Open loop with a rate rising linearly from A to B per second over the run (1k..20k).
    #[arg(long, value_name = "A..B", value_parser = parse_ramp)]
    pub ramp: Option<(f64, f64)>,
    /// With --rate: also start N connections at once at the start of every second.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "rate")]
    pub burst: u64,
    /// Stop starting connections after this long (300ms, 10s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many attempts (whichever of this and --duration comes first).
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub connections: Option<u64>,
    /// Per connection.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Also write the report as JSON (schema synack-load/flood/4, see loadtest/SCHEMA.md).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write connect latency as an HdrHistogram interval log, one interval per second.
    #[arg(long, value_name = "FILE")]
    pub hlog: Option<PathBuf>,
    /// Also write DIR/report.html: charts of the run (self-contained SVG).
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// No live progress line (it is shown only on a terminal anyway).
    #[arg(long, short)]
    pub quiet: bool,
    /// Share the run with other generators: N agents, each running its exact part of the one
    /// schedule (the rate, the bursts, --connections, --concurrency and --source split among
    /// them, a remainder to the lowest indices).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_positive)]
    pub agents: u64,
    /// This agent's index, 0 to N-1. [default: $JOB_COMPLETION_INDEX (a Kubernetes Indexed
    /// Job's), else 0]
    #[arg(long, value_name = "I")]
    pub agent_index: Option<u64>,
    /// Start at this wall-clock time (RFC 3339 such as 2026-12-01T15:00:00Z, or Unix seconds),
    /// then keep the schedule on the monotonic clock: every agent begins together. A time
    /// already past is refused.
    #[arg(long, value_name = "TIME", value_parser = parse_start_at)]
    pub start_at: Option<std::time::SystemTime>,
}

/// `--start-at`: RFC 3339 or Unix seconds.
fn parse_start_at(s: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(std::time::UNIX_EPOCH + Duration::from_secs_f64(secs));
    }
    humantime::parse_rfc3339_weak(s).map_err(|e| {
        format!("{s:?}: {e}; give RFC 3339 (2026-12-01T15:00:00Z) or Unix seconds (1796137200)")
    })
}

impl FloodArgs {
    /// This agent's part: `--agents` and `--agent-index` (else `$JOB_COMPLETION_INDEX`).
    ///
    /// # Errors
    ///
    /// [`LoadError::Usage`] for a `JOB_COMPLETION_INDEX` that is not a number.
    pub fn agent(&self) -> Result<crate::plan::Agent, LoadError> {
        let index = match self.agent_index {
            Some(i) => i,
            None => match std::env::var("JOB_COMPLETION_INDEX") {
                Ok(v) => v.trim().parse().map_err(|_| {
                    LoadError::Usage(format!(
                        "JOB_COMPLETION_INDEX={v:?}: not an agent index; give --agent-index I"
                    ))
                })?,
                Err(_) => 0,
            },
        };
        Ok(crate::plan::Agent {
            count: self.agents,
            index,
        })
    }
}

/// `synack-load sweep`.
///
/// ```
/// use std::time::Duration;
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command};
///
/// let line = "synack-load sweep 127.0.0.1:7878 --rates 1k,2k,5k --step-duration 2s";
/// let Command::Sweep(s) = Cli::try_parse_from(line.split(' '))?.command else { unreachable!() };
/// assert_eq!(s.rates, [1000.0, 2000.0, 5000.0]);
/// assert_eq!((s.step_duration, s.settle), (Duration::from_secs(2), Duration::from_millis(500)));
/// // --from and --to go together.
/// let line = "synack-load sweep 127.0.0.1:7878 --from 1k";
/// assert!(Cli::try_parse_from(line.split(' ')).is_err());
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The target.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The offered rates, one step each: 1k,2k,5k.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_rate, conflicts_with_all = ["from", "to"])]
    pub rates: Vec<f64>,
    /// Instead of --rates: the first rate.
    #[arg(long, value_name = "N", value_parser = parse_rate, requires = "to")]
    pub from: Option<f64>,
    /// Instead of --rates: the last rate.
    #[arg(long, value_name = "N", value_parser = parse_rate, requires = "from")]
    pub to: Option<f64>,
    /// With --from/--to: the number of steps, evenly spaced.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub steps: usize,
    /// Each step's length.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    pub step_duration: Duration,
    /// Pause between steps, so the queue drains.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub settle: Duration,
    /// Connect p99 at or above this counts as saturated (leaving the sub-millisecond band).
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = parse_duration)]
    pub p99_limit: Duration,
    /// Also start N connections at once at the start of every second.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub burst: u64,
    /// A step the generator did not deliver is run again up to this many times; only a
    /// delivered run judges the server.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,
    /// Per connection.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Also write every step as JSON (schema synack-load/sweep/3).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write DIR/report.html with charts.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,
}

/// How the simulated handler's service time is drawn.
///
/// ```
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command};
/// use synack_load::tune::{ServerUnderTest, ServiceDist};
///
/// let line = "synack-load tune --service-dist fixed";
/// let Command::Tune(t) = Cli::try_parse_from(line.split(' '))?.command else { unreachable!() };
/// let ServerUnderTest::Simulated(sim) = t.spec()?.server else { unreachable!() };
/// assert_eq!(sim.dist, ServiceDist::Fixed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceDistArg {
    /// Exponentially distributed around the mean.
    Exp,
    /// Always the mean.
    Fixed,
}

/// `synack-load tune`.
///
/// ```
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command};
/// use synack_load::tune::ServerUnderTest;
///
/// let args = ["synack-load", "tune", "127.0.0.1:8080", "--http", "GET /health", "--rate", "2k"];
/// let Command::Tune(t) = Cli::try_parse_from(args)?.command else { unreachable!() };
/// let spec = t.spec()?;
/// assert_eq!(spec.server, ServerUnderTest::Running("127.0.0.1:8080".into()));
/// assert_eq!((spec.rate, spec.burst), (Some(2000.0), 200));
/// // The simulated server's flags configure nothing of a server already running.
/// let args = ["synack-load", "tune", "127.0.0.1:8080", "--workers", "4"];
/// let Command::Tune(t) = Cli::try_parse_from(args)?.command else { unreachable!() };
/// assert_eq!(t.spec().unwrap_err().exit_code(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Args)]
pub struct TuneArgs {
    /// A server already running at ADDR (host:port), whose backlog is its own: measures it
    /// at that backlog and says whether it absorbs the traffic asked, and what backlog
    /// would. Without ADDR or --server-cmd, tune starts a synack server here with a
    /// simulated handler.
    #[arg(conflicts_with = "server_cmd")]
    pub addr: Option<String>,
    /// Your server's command line, started (with sh -c, in its own process group) once per
    /// backlog with {backlog} and {port} filled in: {port} is a free loopback port, or the
    /// port of --server-addr. Stopped after its measurement with SIGTERM, then SIGKILL after
    /// --stop-grace; never left running.
    #[arg(long, value_name = "CMD")]
    pub server_cmd: Option<String>,
    /// With --server-cmd: where the server listens (when the command has no {port}). [default:
    /// 127.0.0.1:{port}]
    #[arg(long, value_name = "ADDR", requires = "server_cmd")]
    pub server_addr: Option<String>,
    /// With --server-cmd: how long the server may take to start listening.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, requires = "server_cmd")]
    pub startup_timeout: Duration,
    /// With --server-cmd: how long the server may take to exit after SIGTERM before SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration, requires = "server_cmd")]
    pub stop_grace: Duration,
    /// The simulated handler's mean service time (it holds a connection slot meanwhile).
    /// [default: 2ms]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub service_time: Option<Duration>,
    /// How the simulated handler's service times are drawn. [default: exp]
    #[arg(long, value_enum)]
    pub service_dist: Option<ServiceDistArg>,
    /// The simulated server's worker threads. [default: 1]
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub workers: Option<u64>,
    /// The simulated server's connection limit: with the service time, it sets the capacity
    /// (max-connections / service-time per second). [default: 8]
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub max_connections: Option<u64>,
    /// The backlogs to try (the simulated server or --server-cmd). [default:
    /// 16,64,256,1024,4096]
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub backlogs: Option<Vec<u32>>,
    /// The offered rates to try for each backlog, as fractions of the capacity (the simulated
    /// server's, or the one measured first for your server).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "0.25,0.5,0.75"
    )]
    pub load: Vec<f64>,
    /// Connections arriving at once at the start of every second, besides the rate.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub burst: u64,
    /// The share of the backlog left free at the target rate: the recommendation's deepest
    /// queue must stay under (1 - headroom) x backlog.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.25)]
    pub headroom: f64,
    /// The rate the recommendation must absorb (with the bursts). [default: half the capacity]
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Each step's length.
    #[arg(long, value_name = "DURATION", default_value = "1500ms", value_parser = parse_duration)]
    pub step_duration: Duration,
    /// An attempt not established after this long counts as a timeout (past the first SYN
    /// retransmission at 1 s).
    #[arg(long, value_name = "DURATION", default_value = "1500ms", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Generator threads.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_positive)]
    pub threads: u64,
    /// A step whose start-lag p99 (bursts apart) is above this was not delivered by the
    /// generator, and no recommendation stands on it.
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = parse_duration)]
    pub lag_limit: Duration,
    /// A step the generator did not deliver (a stall of a shared host, often passing) is run
    /// again up to this many times; only a delivered run judges the server.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub retries: u32,
    /// Pin the generator threads to these CPUs (0-3,6). With --server-cmd on a host of two
    /// CPUs or more and neither list given, tune splits the CPUs between the two and says so.
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    pub cpus: Option<CpuList>,
    /// With --server-cmd: the CPUs the server it starts may run on (0-3,6). [default: half
    /// of them, the generator the other half]
    #[arg(long, value_name = "LIST", value_parser = parse_cpus, requires = "server_cmd")]
    pub server_cpus: Option<CpuList>,
    /// What each connection says to your server and must hear back (ADDR or --server-cmd;
    /// the simulated server answers "ok" to any connection).
    #[command(flatten)]
    pub exchange: ExchangeArgs,
    /// TLS on each connection (with the simulated server: a certificate made for the run).
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Also write the results as JSON (schema synack-load/tune/3).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write DIR/report.html with charts.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,
}

impl TuneArgs {
    /// What the flags ask tune to do: the one way from them to a [`TuneSpec`].
    ///
    /// # Errors
    ///
    /// [`LoadError::Usage`] naming the flag: a simulated-server flag with your server, a
    /// request flag with the simulated one, `--backlogs` with ADDR, a file that cannot be
    /// read.
    pub fn spec(&self) -> Result<TuneSpec, LoadError> {
        let simulated_flags = [
            ("--service-time", self.service_time.is_some()),
            ("--service-dist", self.service_dist.is_some()),
            ("--workers", self.workers.is_some()),
            ("--max-connections", self.max_connections.is_some()),
        ];
        let exchange = self.exchange.exchange()?;
        let server = match (&self.addr, &self.server_cmd) {
            (None, None) => {
                if exchange.talks() {
                    return Err(LoadError::Usage(
                        "--send, --send-text, --send-file, --http, --read and --expect talk to your server: \
                         give its ADDR or --server-cmd (the simulated server answers \"ok\" to any connection)"
                            .into(),
                    ));
                }
                ServerUnderTest::Simulated(Simulated {
                    service_time: self.service_time.unwrap_or(Duration::from_millis(2)),
                    dist: match self.service_dist.unwrap_or(ServiceDistArg::Exp) {
                        ServiceDistArg::Exp => ServiceDist::Exp,
                        ServiceDistArg::Fixed => ServiceDist::Fixed,
                    },
                    workers: self.workers.unwrap_or(1) as usize,
                    max_connections: self.max_connections.unwrap_or(8) as usize,
                })
            }
            (addr, cmd) => {
                if let Some((flag, _)) = simulated_flags.iter().find(|(_, given)| *given) {
                    return Err(LoadError::Usage(format!(
                        "{flag} configures the simulated server: not with ADDR or --server-cmd (your server has its own)"
                    )));
                }
                match (addr, cmd) {
                    (Some(a), _) => {
                        if self.backlogs.is_some() {
                            return Err(LoadError::Usage(format!(
                                "--backlogs: the server at {a} listens with its own backlog; to try backlogs, give --server-cmd with {{backlog}}"
                            )));
                        }
                        ServerUnderTest::Running(a.clone())
                    }
                    (None, Some(c)) => ServerUnderTest::Command(ServerCommand {
                        command: c.clone(),
                        addr: self.server_addr.clone(),
                        startup_timeout: self.startup_timeout,
                        grace: self.stop_grace,
                    }),
                    (None, None) => unreachable!("matched above"),
                }
            }
        };
        Ok(TuneSpec {
            server,
            backlogs: self
                .backlogs
                .clone()
                .unwrap_or_else(|| vec![16, 64, 256, 1024, 4096]),
            load: self.load.clone(),
            burst: self.burst,
            headroom: self.headroom,
            rate: self.rate,
            step_duration: self.step_duration,
            connect_timeout: self.connect_timeout,
            threads: self.threads as usize,
            lag_limit: self.lag_limit,
            retries: self.retries,
            cpus: self.cpus.clone().map(|c| c.0),
            server_cpus: self.server_cpus.clone().map(|c| c.0),
            tls: self.tls.options(),
            exchange,
        })
    }
}

/// A list of source addresses.
///
/// ```
/// use std::net::IpAddr;
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command, Sources};
///
/// let line = "synack-load flood 127.0.0.1:7878 --source 127.0.0.2-127.0.0.4,127.0.0.9";
/// let Command::Flood(f) = Cli::try_parse_from(line.split(' '))?.command else { unreachable!() };
/// let ip = |s: &str| s.parse::<IpAddr>().unwrap();
/// let want = Sources(vec![ip("127.0.0.2"), ip("127.0.0.3"), ip("127.0.0.4"), ip("127.0.0.9")]);
/// assert_eq!(f.conn.source, Some(want));
/// // A range that goes down is refused.
/// let line = "synack-load flood 127.0.0.1:7878 --source 127.0.0.9-127.0.0.2";
/// assert!(Cli::try_parse_from(line.split(' ')).is_err());
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources(pub Vec<IpAddr>);

/// A list of CPUs (`--cpus`, `--server-cpus`), one value for clap.
///
/// ```
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command, CpuList};
///
/// let line = "synack-load flood 127.0.0.1:7878 --cpus 0-1,3";
/// let Command::Flood(f) = Cli::try_parse_from(line.split(' '))?.command else { unreachable!() };
/// assert_eq!(f.conn.cpus, Some(CpuList(vec![0, 1, 3])));
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Parses `10k`, `2.5k`, `1m`, `500`: a rate above zero, per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| "expected a rate per second such as 500, 2.5k or 1m".to_string())?;
    let v = v * mult;
    if !(v.is_finite() && v > 0.0) {
        return Err("the rate must be above 0 per second".into());
    }
    if v > 1e8 {
        return Err("the rate must be at most 100m per second".into());
    }
    Ok(v)
}

/// A text flag's bytes, its escapes turned into bytes (see [`unescape`]).
///
/// ```
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command, Escaped};
///
/// let args = ["synack-load", "flood", "127.0.0.1:6379", "--send-text", r"PING\r\n",
///     "--expect", "+PONG"];
/// let Command::Flood(f) = Cli::try_parse_from(args)?.command else { unreachable!() };
/// assert_eq!(f.conn.exchange.send_text, Some(Escaped(b"PING\r\n".to_vec())));
/// assert_eq!(f.conn.exchange.expect, Some(Escaped(b"+PONG".to_vec())));
/// // An escape that is not one of those is refused when the flags are parsed.
/// let args = ["synack-load", "flood", "127.0.0.1:6379", "--expect", r"\q"];
/// assert!(Cli::try_parse_from(args).is_err());
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escaped(pub Vec<u8>);

fn parse_escaped(s: &str) -> Result<Escaped, String> {
    unescape(s).map(Escaped)
}

fn parse_http(s: &str) -> Result<HttpRequest, String> {
    HttpRequest::parse(s)
}

fn parse_ramp(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| "expected A..B, such as 1k..20k".to_string())?;
    let a = if a.trim() == "0" { 0.0 } else { parse_rate(a)? };
    let b = parse_rate(b)?;
    if b < a {
        return Err(format!("the ramp must not go down ({a} > {b})"));
    }
    Ok((a, b))
}

/// A CPU list (`0-3,6`): each CPU a number below the most a CPU set holds.
fn parse_cpus(s: &str) -> Result<CpuList, String> {
    synack_sys::cpu::parse_list(s.trim()).map(CpuList)
}

fn parse_positive(s: &str) -> Result<u64, String> {
    let v: u64 = s
        .trim()
        .parse()
        .map_err(|_| "expected a whole number".to_string())?;
    if v == 0 {
        return Err("must be at least 1".into());
    }
    Ok(v)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a duration such as 300ms, 10s or 2m ({e})"))?;
    if d.is_zero() {
        return Err("the duration must be above zero".into());
    }
    Ok(d)
}

fn parse_sources(s: &str) -> Result<Sources, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if let Some((a, b)) = part.split_once('-') {
            let a: std::net::Ipv4Addr = a
                .trim()
                .parse()
                .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
            let b: std::net::Ipv4Addr = b
                .trim()
                .parse()
                .map_err(|_| format!("{b:?} is not an IPv4 address"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a {
                return Err(format!("the range {part} goes down"));
            }
            if b - a >= 65_536 {
                return Err(format!("the range {part} holds more than 65536 addresses"));
            }
            out.extend((a..=b).map(|x| IpAddr::V4(x.into())));
        } else {
            out.push(
                part.parse()
                    .map_err(|_| format!("{part:?} is not an IP address"))?,
            );
        }
    }
    Ok(Sources(out))
}

impl FloodArgs {
    /// The load model the flags ask for.
    pub fn load(&self) -> Load {
        match (self.rate, self.ramp, self.concurrency) {
            (Some(r), _, _) => Load::Open {
                from: r,
                to: r,
                burst: self.burst,
            },
            (_, Some((a, b)), _) => Load::Open {
                from: a,
                to: b,
                burst: 0,
            },
            (_, _, c) => Load::Closed {
                concurrency: c.unwrap_or(64) as usize,
            },
        }
    }
}

/// TLS on each connection: `--tls` and what goes with it.
///
/// ```
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command};
/// use synack_load::tls::Resumption;
///
/// let line = "synack-load flood 127.0.0.1:8443 --tls --insecure --alpn h2,http/1.1 --tls-resumption 0.5";
/// let Command::Flood(f) = Cli::try_parse_from(line.split(' '))?.command else { unreachable!() };
/// let o = f.conn.tls.options().unwrap();
/// assert_eq!(o.alpn, ["h2", "http/1.1"]);
/// assert_eq!(o.resumption, Resumption::Ratio(0.5));
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Debug, Args, Clone)]
pub struct TlsArgs {
    /// TLS on every connection (rustls): the handshake is timed apart from the TCP connect and
    /// the first byte, and whether the server resumed a session is counted from what it did.
    #[arg(long)]
    pub tls: bool,
    /// The server name sent (SNI) and checked. [default: the target's host]
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub sni: Option<String>,
    /// Trust the CA certificates of this PEM file. [default: the web's roots (webpki-roots)]
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls",
        conflicts_with = "insecure"
    )]
    pub cacert: Option<std::path::PathBuf>,
    /// Accept any server certificate (a test server's self-signed one); the handshake and its
    /// signatures are still real.
    #[arg(long, requires = "tls")]
    pub insecure: bool,
    /// ALPN protocols to offer, in order: h2,http/1.1.
    #[arg(long, value_name = "LIST", requires = "tls", value_delimiter = ',')]
    pub alpn: Vec<String>,
    /// Session resumption offered: off (every handshake full, no session kept), on (resume
    /// whenever a ticket is at hand), or a share of attempts (0.25). Resumption needs the
    /// answer read (--read, --expect, --http): tickets come after the handshake.
    #[arg(long, value_name = "off|on|RATIO", default_value = "off")]
    pub tls_resumption: crate::tls::Resumption,
    /// Offer TLS 1.3 only.
    #[arg(long, requires = "tls", conflicts_with = "tls12")]
    pub tls13_only: bool,
    /// Offer TLS 1.2 only.
    #[arg(long, requires = "tls")]
    pub tls12: bool,
    /// Key-exchange groups to offer, in order: x25519, p256, p384, x25519mlkem768.
    /// [default: rustls's, X25519MLKEM768 first]
    #[arg(long, value_name = "LIST", requires = "tls", value_delimiter = ',')]
    pub tls_kx: Vec<String>,
}

impl TlsArgs {
    /// What the flags ask for; `None` without `--tls`.
    pub fn options(&self) -> Option<crate::tls::TlsOptions> {
        use crate::tls::{TlsOptions, Versions};
        self.tls.then(|| TlsOptions {
            sni: self.sni.clone(),
            cacert: self.cacert.clone(),
            insecure: self.insecure,
            alpn: self.alpn.clone(),
            resumption: self.tls_resumption,
            versions: match (self.tls13_only, self.tls12) {
                (true, _) => Versions::Tls13,
                (_, true) => Versions::Tls12,
                _ => Versions::Both,
            },
            kx: self.tls_kx.clone(),
        })
    }
}

impl ConnArgs {
    /// A plan builder with these flags set: the one way from flags to a [`crate::plan::Plan`].
    ///
    /// # Errors
    ///
    /// As [`ExchangeArgs::exchange`]: a file that cannot be read, a bad header line.
    pub fn plan_builder(
        &self,
        addr: &str,
        load: Load,
        duration: Duration,
    ) -> Result<PlanBuilder, LoadError> {
        let b = PlanBuilder::new(addr, load, duration)
            .hold(self.hold)
            .close(match self.close {
                CloseArg::Rst => CloseMode::Rst,
                CloseArg::Fin => CloseMode::Fin,
            })
            .reuse_sockets(!self.fresh_sockets)
            .threads(self.threads.map(|t| t as usize))
            .sources(self.source.clone().map(|s| s.0).unwrap_or_default())
            .connect_timeout(self.connect_timeout)
            .probe(self.probe)
            .max_in_flight(self.max_in_flight)
            .lag_limit(self.lag_limit)
            .cpus(self.cpus.clone().map(|c| c.0))
            .tls(self.tls.options());
        Ok(b.exchange(self.exchange.exchange()?))
    }

    /// The inet_diag sampling interval, when asked for.
    pub fn watch(&self) -> Option<Duration> {
        self.watch_listener.then_some(self.watch_interval)
    }
}
