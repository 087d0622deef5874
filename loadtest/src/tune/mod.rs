//! `synack-load tune`: the main job. For each backlog, sweeps the offered rate (with bursts)
//! upwards until clients start to suffer; then recommends the smallest backlog that absorbs
//! the rate and bursts asked for with zero drops. The server is one of three
//! ([`ServerUnderTest`]): a synack server started here with a simulated handler, the user's
//! own server started per backlog from its command line, or a server already running whose
//! backlog is fixed (then: whether it absorbs the traffic, and what backlog would).

pub mod process;
mod simulated;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use simulated::{ANSWER, ServiceClock, start_server};

use crate::error::LoadError;
use crate::exchange::Exchange;
use crate::flood::{self, Output};
use crate::outcome::Outcome;
use crate::plan::{CloseMode, Load, Plan, PlanBuilder, resolve};
use crate::report::fmt_rate as rate;
use crate::report::sweep::{Step, Verdict};
use crate::report::tune::{BacklogResult, CapacityRun, SCHEMA, TuneReport, TunedServer};
use crate::sweep;
use process::ServerProcess;

/// How the simulated handler's service time is drawn.
///
/// ```
/// use std::time::Duration;
/// use synack_load::tune::{ServerUnderTest, ServiceDist, TuneSpec};
///
/// // tune's own server draws its service times exponentially around a 2 ms mean unless
/// // told otherwise (`--service-dist fixed`: always the mean).
/// let ServerUnderTest::Simulated(sim) = TuneSpec::default().server else { unreachable!() };
/// assert_eq!((sim.dist, sim.service_time), (ServiceDist::Exp, Duration::from_millis(2)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceDist {
    /// Exponentially distributed around the mean.
    Exp,
    /// Always the mean.
    Fixed,
}

/// tune's own server: synack here with a simulated handler.
///
/// ```
/// use std::time::Duration;
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command};
/// use synack_load::tune::{ServerUnderTest, ServiceDist, Simulated};
///
/// let line = "synack-load tune --service-time 4ms --max-connections 32";
/// let Command::Tune(t) = Cli::try_parse_from(line.split(' '))?.command else { unreachable!() };
/// // Capacity 32 / 4 ms = 8000 a second; the rest are the defaults.
/// let service_time = Duration::from_millis(4);
/// let sim = Simulated { service_time, dist: ServiceDist::Exp, workers: 1, max_connections: 32 };
/// assert_eq!(t.spec()?.server, ServerUnderTest::Simulated(sim));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Simulated {
    /// The handler's mean service time (it holds its connection slot meanwhile).
    pub service_time: Duration,
    /// How service times are drawn.
    pub dist: ServiceDist,
    /// Worker threads.
    pub workers: usize,
    /// The connection limit: with the service time, it sets the capacity.
    pub max_connections: usize,
}

/// The user's server, started once per backlog (`--server-cmd`).
///
/// ```
/// use std::time::Duration;
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command};
/// use synack_load::tune::{ServerCommand, ServerUnderTest};
///
/// let line = "./my-server --port {port} --backlog {backlog}";
/// let args = ["synack-load", "tune", "--server-cmd", line];
/// let Command::Tune(t) = Cli::try_parse_from(args)?.command else { unreachable!() };
/// let ServerUnderTest::Command(cmd) = t.spec()?.server else { unreachable!() };
/// assert_eq!(cmd, ServerCommand {
///     command: line.into(),
///     addr: None, // {port} is a free loopback port
///     startup_timeout: Duration::from_secs(10),
///     grace: Duration::from_secs(3),
/// });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ServerCommand {
    /// The command line, with [`process::BACKLOG`] and [`process::PORT`] to fill.
    pub command: String,
    /// Where it listens, when the command has no `{port}` (`--server-addr`).
    pub addr: Option<String>,
    /// How long it may take to listen.
    pub startup_timeout: Duration,
    /// How long it may take to exit after SIGTERM.
    pub grace: Duration,
}

/// The server tune measures.
///
/// ```
/// use clap::Parser;
/// use synack_load::cli::{Cli, Command};
/// use synack_load::tune::ServerUnderTest;
///
/// let server = |args: &[&str]| -> Result<ServerUnderTest, Box<dyn std::error::Error>> {
///     let Command::Tune(t) = Cli::try_parse_from(args)?.command else { unreachable!() };
///     Ok(t.spec()?.server)
/// };
/// assert!(matches!(server(&["synack-load", "tune"])?, ServerUnderTest::Simulated(_)));
/// let cmd = server(&["synack-load", "tune", "--server-cmd", "./my-server --port {port}"])?;
/// assert!(matches!(cmd, ServerUnderTest::Command(_)));
/// let running = server(&["synack-load", "tune", "127.0.0.1:8080"])?;
/// assert_eq!(running, ServerUnderTest::Running("127.0.0.1:8080".into()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum ServerUnderTest {
    /// synack here, a simulated handler.
    Simulated(Simulated),
    /// The user's server, started per backlog.
    Command(ServerCommand),
    /// A server already running at this address, its backlog its own.
    Running(String),
}

/// Everything a tune run needs: the server, the backlogs, the traffic to absorb, how the
/// generator runs and what each connection says.
///
/// ```no_run
/// use std::time::Duration;
/// use synack_load::exchange::{Exchange, HttpRequest};
/// use synack_load::tune::{ServerUnderTest, TuneSpec};
///
/// let spec = TuneSpec {
///     server: ServerUnderTest::Running("127.0.0.1:8080".into()),
///     exchange: Exchange {
///         http: Some(HttpRequest::parse("GET /health").unwrap()),
///         ..Exchange::default()
///     },
///     ..TuneSpec::default()
/// };
/// let report = synack_load::tune::run(&spec, |line| eprintln!("{line}"))?;
/// println!("absorbs: {:?}", report.absorbs);
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TuneSpec {
    /// The server measured.
    pub server: ServerUnderTest,
    /// The backlogs to try (simulated, command).
    pub backlogs: Vec<u32>,
    /// The offered rates per backlog, as fractions of the capacity.
    pub load: Vec<f64>,
    /// Connections arriving at once each second, besides the rate.
    pub burst: u64,
    /// The share of the backlog to keep free at the target rate.
    pub headroom: f64,
    /// The rate to absorb (`None`: half the capacity).
    pub rate: Option<f64>,
    /// Each step's length.
    pub step_duration: Duration,
    /// An attempt not established after this long is a timeout.
    pub connect_timeout: Duration,
    /// Generator threads.
    pub threads: usize,
    /// A start-lag p99 above this means a step was not delivered.
    pub lag_limit: Duration,
    /// How many times a step the generator did not deliver is run again before it stands
    /// as generator-bound.
    pub retries: u32,
    /// The CPUs the generator threads run on (`--cpus`).
    pub cpus: Option<Vec<usize>>,
    /// With `--server-cmd`: the CPUs the server it starts runs on (`--server-cpus`).
    pub server_cpus: Option<Vec<usize>>,
    /// What each connection says and must hear back (the user's server only).
    pub exchange: Exchange,
    /// TLS on every connection (`--tls`); with the simulated server, tune makes it a
    /// self-signed certificate for `localhost` and trusts just that one.
    pub tls: Option<crate::tls::TlsOptions>,
}

impl Default for TuneSpec {
    /// The command line's defaults: the simulated server (2 ms, exponential, 1 worker, 8
    /// connections), backlogs 16 to 4096, loads of a quarter, half and three quarters of the
    /// capacity, bursts of 200, 25% headroom, 1.5 s steps and connect timeout, one thread, two
    /// reruns of a step the generator did not deliver.
    fn default() -> Self {
        TuneSpec {
            server: ServerUnderTest::Simulated(Simulated {
                service_time: Duration::from_millis(2),
                dist: ServiceDist::Exp,
                workers: 1,
                max_connections: 8,
            }),
            backlogs: vec![16, 64, 256, 1024, 4096],
            load: vec![0.25, 0.5, 0.75],
            burst: 200,
            headroom: 0.25,
            rate: None,
            step_duration: Duration::from_millis(1500),
            connect_timeout: Duration::from_millis(1500),
            threads: 1,
            lag_limit: Duration::from_millis(1),
            retries: 2,
            cpus: None,
            server_cpus: None,
            exchange: Exchange::default(),
            tls: None,
        }
    }
}

/// The inet_diag sampling interval of every step (the listener is on this host).
const WATCH: Duration = Duration::from_millis(2);

/// The most attempts in flight while a real server's capacity is measured.
const CAPACITY_CONCURRENCY: usize = 64;

/// Runs the whole tune; `progress` gets a line per step.
///
/// # Errors
///
/// [`LoadError::Usage`] for a spec that cannot work (see the checks: backlogs, fractions,
/// headroom, a command without its placeholders, a port already taken, a server that exits
/// or never listens); [`LoadError::Run`] when a flood fails or a real server answers no
/// connection as asked.
pub fn run(spec: &TuneSpec, mut progress: impl FnMut(&str)) -> Result<TuneReport, LoadError> {
    check(spec).map_err(LoadError::Usage)?;
    match &spec.server {
        ServerUnderTest::Simulated(sim) => run_simulated(spec, sim, &mut progress),
        ServerUnderTest::Command(cmd) => run_command(spec, cmd, &mut progress),
        ServerUnderTest::Running(addr) => run_running(spec, addr, &mut progress),
    }
}

/// The offered rates for each backlog: the `--load` fractions of the capacity, and always
/// the target itself (the recommendation is judged there).
fn rates(load: &[f64], capacity: f64, target: f64) -> Vec<f64> {
    // A fraction that comes within half a connection per second of the target gives way to
    // it: the target step must run at the target itself.
    let mut rates: Vec<f64> = load
        .iter()
        .map(|f| (capacity * f).round().max(1.0))
        .filter(|r| (r - target).abs() >= 0.5)
        .collect();
    rates.push(target);
    rates.sort_by(f64::total_cmp);
    rates.dedup_by(|a, b| (*a - *b).abs() < 0.5);
    rates
}

/// The rate to absorb (`--rate`, or half the capacity) and the rates to try for it.
fn offered(spec: &TuneSpec, capacity: f64) -> (f64, Vec<f64>) {
    let target = spec.rate.unwrap_or(capacity * 0.5);
    (target, rates(&spec.load, capacity, target))
}

fn sorted_backlogs(spec: &TuneSpec) -> Vec<u32> {
    let mut b = spec.backlogs.clone();
    b.sort_unstable();
    b.dedup();
    b
}

/// The plan every step starts from: an open loop (its rate set per step) that closes with
/// RST.
fn base_plan(spec: &TuneSpec, addr: &str, probe: bool, other_fds: u64) -> Result<Plan, LoadError> {
    PlanBuilder::new(
        addr,
        Load::Open {
            from: 1.0,
            to: 1.0,
            burst: 0,
        },
        spec.step_duration,
    )
    .exchange(spec.exchange.clone())
    .close(CloseMode::Rst)
    .threads(Some(spec.threads))
    .connect_timeout(spec.connect_timeout)
    .probe(probe)
    .lag_limit(spec.lag_limit)
    .cpus(spec.cpus.clone())
    .other_fds(other_fds)
    .tls(spec.tls.clone())
    .build()
}

/// The listener a backlog's steps run against.
struct Listening {
    /// The backlog asked for.
    backlog: u32,
    /// What the kernel granted, where it can be read.
    effective: Option<u32>,
    /// The inet_diag sampling interval (the listener is on this host).
    watch: Option<Duration>,
}

/// Runs the steps at `rates` for one backlog, stopping at the first that is not clean.
fn measure_backlog(
    spec: &TuneSpec,
    base: &Plan,
    rates: &[f64],
    target_rate: f64,
    at: Listening,
    progress: &mut impl FnMut(&str),
) -> Result<BacklogResult, LoadError> {
    let Listening {
        backlog,
        effective,
        watch,
    } = at;
    let mut steps: Vec<Step> = Vec::new();
    let mut reruns = 0;
    let runner = sweep::Steps {
        base,
        burst: spec.burst,
        duration: spec.step_duration,
        watch,
        p99_limit: Duration::from_secs(3600),
        retries: spec.retries,
    };
    for (i, &r) in rates.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        let (st, again) = runner
            .run(r, |st, tries| {
                progress(&format!(
                    "backlog {backlog}: {} + bursts of {}: {}",
                    rate(r),
                    spec.burst,
                    match st.verdict {
                        Verdict::Saturated => format!("saturated ({})", st.reasons.join(", ")),
                        Verdict::Clean => format!("clean, connect p99 {} us", st.connect.p99),
                        Verdict::GeneratorBound => {
                            format!("generator-bound, no verdict ({})", st.reasons.join("; "))
                        }
                        Verdict::HostBound => {
                            format!("host-bound, no verdict ({})", st.reasons.join("; "))
                        }
                    }
                ));
                if !st.verdict.judged_server() && tries < spec.retries {
                    progress(&format!(
                        "backlog {backlog}: {} again ({} of --retries {})",
                        rate(r),
                        tries + 1,
                        spec.retries
                    ));
                }
            })
            .map_err(|e| LoadError::Run(e.to_string()))?;
        reruns += again;
        let stop = st.verdict != Verdict::Clean;
        steps.push(st);
        if stop {
            break;
        }
    }
    let clean = steps.iter().rev().find(|s| s.verdict == Verdict::Clean);
    let bound = steps.iter().find(|s| !s.verdict.judged_server());
    let past = steps.iter().find(|s| s.saturated).map(|s| {
        let attempts = s.flood.attempts.max(1) as f64;
        format!(
            "at {}: {:.1}% timeouts, {:.1}% unserved, {} SYN-retransmitted, {} bad responses, connect p99 {:.0} ms",
            rate(s.rate),
            100.0 * s.timeouts as f64 / attempts,
            100.0 * s.unserved as f64 / attempts,
            s.retransmitted,
            s.bad_responses,
            s.connect.p99 as f64 / 1000.0
        )
    });
    Ok(BacklogResult {
        backlog,
        effective_backlog: effective,
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
        reruns,
        steps,
    })
}

fn run_simulated(
    spec: &TuneSpec,
    sim: &Simulated,
    progress: &mut impl FnMut(&str),
) -> Result<TuneReport, LoadError> {
    let capacity = sim.max_connections as f64 / sim.service_time.as_secs_f64();
    let (target_rate, rates) = offered(spec, capacity);
    let served = Arc::new(ServiceClock::default());
    let mut results = Vec::new();
    // With --tls: a certificate made for this run, trusted by the generator alone.
    let made = match &spec.tls {
        Some(o) => Some(simulated::self_signed(o)?),
        None => None,
    };
    // The handler answers ANSWER: read it, so a connection is done when it is served.
    let spec_here = TuneSpec {
        exchange: Exchange {
            answer: crate::exchange::Answer::Bytes(ANSWER.len()),
            ..Exchange::default()
        },
        tls: made.as_ref().map(|m| m.client.clone()),
        ..spec.clone()
    };
    let server_tls = made.as_ref().map(|m| m.server.clone());
    for backlog in sorted_backlogs(spec) {
        let server = start_server(sim, backlog, served.clone(), server_tls.clone()).map_err(
            |e| match e {
                synack::Error::InvalidConfig { .. } => LoadError::Usage(e.to_string()),
                _ => LoadError::Run(e.to_string()),
            },
        )?;
        let addr = server.local_addr().to_string();
        let base = base_plan(&spec_here, &addr, true, sim.max_connections as u64 + 32)?;
        let effective = server.listeners()[0].effective_backlog;
        results.push(measure_backlog(
            &spec_here,
            &base,
            &rates,
            target_rate,
            Listening {
                backlog,
                effective,
                watch: Some(WATCH),
            },
            progress,
        )?);
        server.shutdown_blocking(Duration::from_millis(500));
    }
    let measured_service = served.mean();
    let capacity_seen = measured_service
        .filter(|m| !m.is_zero())
        .map(|m| (sim.max_connections as f64 / m.as_secs_f64(), m));
    let mut report = recommend(spec, capacity, target_rate, results, capacity_seen);
    report.server = TunedServer {
        kind: "simulated".into(),
        service_time_us: Some(sim.service_time.as_micros() as u64),
        service_dist: Some(
            match sim.dist {
                ServiceDist::Exp => "exp",
                ServiceDist::Fixed => "fixed",
            }
            .into(),
        ),
        workers: Some(sim.workers),
        max_connections: Some(sim.max_connections),
        ..TunedServer::default()
    };
    report.capacity_source = "model".into();
    Ok(report)
}

/// Measures a real server's capacity: a closed loop, at most the backlog plus one in flight
/// (so its queue cannot overflow), for one step's length; `ok` per second.
fn measure_capacity(
    spec: &TuneSpec,
    addr: &str,
    effective: Option<u32>,
    progress: &mut impl FnMut(&str),
) -> Result<CapacityRun, LoadError> {
    let concurrency = effective
        .map_or(CAPACITY_CONCURRENCY, |b| {
            (b as usize + 1).min(CAPACITY_CONCURRENCY)
        })
        .max(1);
    let plan = PlanBuilder::new(addr, Load::Closed { concurrency }, spec.step_duration)
        .exchange(spec.exchange.clone())
        .close(CloseMode::Rst)
        .threads(Some(spec.threads))
        .connect_timeout(spec.connect_timeout)
        .lag_limit(spec.lag_limit)
        .build()?;
    let rep = flood::flood(&plan, &Output::default()).map_err(|e| LoadError::Run(e.to_string()))?;
    let ok = rep.outcome(Outcome::Ok);
    let not_ok = rep.classified().saturating_sub(ok);
    let elapsed = rep.elapsed_s.max(1e-3);
    if ok == 0 {
        let seen: Vec<String> = rep
            .outcomes
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(o, n)| format!("{o} {n}"))
            .collect();
        return Err(LoadError::Run(format!(
            "no connection to {addr} ended as asked while its capacity was measured ({}){}: check --http, --send-text, --read and --expect against what the server answers",
            seen.join(", "),
            rep.unexpected.first().map_or_else(String::new, |u| format!(
                "; first unexpected answer: {}",
                u.why
            ))
        )));
    }
    let run = CapacityRun {
        backlog: effective,
        concurrency,
        ok,
        not_ok,
        elapsed_s: elapsed,
        rate: ok as f64 / elapsed,
        generator_busy_max: rep.generator.thread_busy.iter().copied().reduce(f64::max),
    };
    progress(&format!(
        "capacity: {} ({} ok in {:.1} s with {} in flight{}){}",
        rate(run.rate),
        ok,
        elapsed,
        concurrency,
        if not_ok > 0 {
            format!(", {not_ok} not ok")
        } else {
            String::new()
        },
        if run.generator_bound() {
            "; the generator was the bottleneck"
        } else {
            ""
        }
    ));
    Ok(run)
}

/// The CPUs of the server and of the generator (`None`: any).
pub type CpuSplit = (Option<Vec<usize>>, Option<Vec<usize>>);

/// The CPUs of the server `--server-cmd` starts and of the generator: as given, the one not
/// given taking the rest; neither given, on a host of two CPUs or more, split in halves (the
/// server the first). Each list must name CPUs this process may run on.
///
/// # Errors
///
/// [`LoadError::Usage`] naming the flag and the CPU it may not use.
pub fn split_cpus(
    server: Option<&[usize]>,
    generator: Option<&[usize]>,
) -> Result<CpuSplit, LoadError> {
    let allowed = crate::plan::allowed_cpus();
    for (flag, list) in [("--server-cpus", server), ("--cpus", generator)] {
        crate::plan::check_cpus(flag, list.unwrap_or_default(), &allowed)?;
    }
    let rest = |taken: &[usize]| {
        let r: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|c| !taken.contains(c))
            .collect();
        (!r.is_empty()).then_some(r)
    };
    Ok(match (server, generator) {
        (Some(s), Some(g)) => (Some(s.to_vec()), Some(g.to_vec())),
        (Some(s), None) => (Some(s.to_vec()), rest(s)),
        (None, Some(g)) => (rest(g), Some(g.to_vec())),
        (None, None) if allowed.len() >= 2 => {
            let (s, g) = allowed.split_at(allowed.len() / 2);
            (Some(s.to_vec()), Some(g.to_vec()))
        }
        (None, None) => (None, None),
    })
}

fn run_command(
    spec: &TuneSpec,
    cmd: &ServerCommand,
    progress: &mut impl FnMut(&str),
) -> Result<TuneReport, LoadError> {
    let (server_cpus, generator_cpus) =
        split_cpus(spec.server_cpus.as_deref(), spec.cpus.as_deref())?;
    let list = |c: &Option<Vec<usize>>| {
        c.as_deref()
            .map_or_else(|| "any CPU".into(), synack_sys::cpu::format_list)
    };
    progress(&format!(
        "CPUs: the server on {}, the generator on {}{}",
        list(&server_cpus),
        list(&generator_cpus),
        if spec.server_cpus.is_none() && spec.cpus.is_none() {
            " (split, so neither takes the other's CPU; --server-cpus and --cpus choose)"
        } else {
            ""
        }
    ));
    let spec = &TuneSpec {
        cpus: generator_cpus,
        server_cpus,
        ..spec.clone()
    };
    let fixed_addr = match &cmd.addr {
        Some(a) => Some(resolve(a)?),
        None => None,
    };
    let backlogs = sorted_backlogs(spec);
    // The largest backlog first: its capacity run may keep the most in flight without an
    // overflow; then the rest, smallest first.
    let mut order = backlogs.clone();
    order.rotate_right(1);
    let mut results = Vec::new();
    let mut runs = Vec::new();
    let mut capacity: Option<CapacityRun> = None;
    let mut target_rate = 0.0;
    let mut rate_list = Vec::new();
    for backlog in order {
        let addr: SocketAddr = match fixed_addr {
            Some(a) => a,
            None => SocketAddr::from(([127, 0, 0, 1], process::free_port()?)),
        };
        if let Some(q) = process::already_listening(addr)? {
            return Err(LoadError::Usage(format!(
                "{addr}: something already listens there ({} socket{}, backlog {}), so the server started could not be told from it; stop it, or give another --server-addr",
                q.sockets,
                if q.sockets == 1 { "" } else { "s" },
                q.backlog
            )));
        }
        let line = process::fill(&cmd.command, addr.port(), backlog);
        progress(&format!("backlog {backlog}: starting {line}"));
        let mut server = ServerProcess::start_on(&line, backlog, spec.server_cpus.as_deref())?;
        let listening = server.wait_listening(addr, cmd.startup_timeout)?;
        let effective = Some(listening.backlog);
        progress(&format!(
            "backlog {backlog}: listening on {addr}, effective backlog {} (inet_diag)",
            listening.backlog
        ));
        let addr_text = addr.to_string();
        if capacity.is_none() {
            let c = measure_capacity(spec, &addr_text, effective, progress)?;
            (target_rate, rate_list) = offered(spec, c.rate);
            capacity = Some(c);
            std::thread::sleep(Duration::from_millis(300));
        }
        let base = base_plan(spec, &addr_text, false, 0)?;
        let measured = measure_backlog(
            spec,
            &base,
            &rate_list,
            target_rate,
            Listening {
                backlog,
                effective,
                watch: Some(WATCH),
            },
            progress,
        );
        let stopped = server.stop(cmd.grace);
        progress(&format!(
            "backlog {backlog}: stopped ({}{})",
            stopped.exit,
            if stopped.killed {
                ", after SIGKILL"
            } else {
                ""
            }
        ));
        runs.push(stopped);
        results.push(measured?);
    }
    results.sort_by_key(|b| b.backlog);
    let cap = capacity.as_ref().map_or(0.0, |c| c.rate);
    let mut report = recommend(spec, cap, target_rate, results, None);
    report
        .reasoning
        .extend(capacity.as_ref().and_then(capacity_caveat));
    report.server = TunedServer {
        kind: "command".into(),
        command: Some(cmd.command.clone()),
        addr: cmd.addr.clone(),
        ..TunedServer::default()
    };
    report.capacity_source = "measured".into();
    report.capacity_run = capacity;
    report.server_runs = runs;
    Ok(report)
}

fn run_running(
    spec: &TuneSpec,
    addr_text: &str,
    progress: &mut impl FnMut(&str),
) -> Result<TuneReport, LoadError> {
    let addr = resolve(addr_text)?;
    // Its listener can be read only from its own host.
    let local = crate::watch::is_local(addr.ip());
    let effective = if local {
        match process::already_listening(addr)? {
            Some(q) => Some(q.backlog),
            None => {
                return Err(LoadError::Usage(format!(
                    "ADDR {addr_text}: nothing listens there (inet_diag); start the server first, or give --server-cmd to have tune start it"
                )));
            }
        }
    } else {
        None
    };
    if let Some(b) = effective {
        progress(&format!("{addr}: effective backlog {b} (inet_diag)"));
    }
    let c = measure_capacity(spec, addr_text, effective, progress)?;
    let (target_rate, rate_list) = offered(spec, c.rate);
    std::thread::sleep(Duration::from_millis(300));
    let base = base_plan(spec, addr_text, false, 0)?;
    let result = measure_backlog(
        spec,
        &base,
        &rate_list,
        target_rate,
        Listening {
            backlog: effective.unwrap_or(0),
            effective,
            watch: local.then_some(WATCH),
        },
        progress,
    )?;
    let cap = c.rate;
    let mut report = recommend(spec, cap, target_rate, vec![result], None);
    let absorbs = report.recommended_backlog.is_some();
    report.absorbs = (!report.generator_bound).then_some(absorbs);
    if absorbs
        && let Some(first) = report
            .reasoning
            .iter_mut()
            .find(|l| l.starts_with("recommended backlog"))
    {
        let b = &report.backlogs[0];
        *first = format!(
            "the server's backlog{} absorbs {} plus bursts of {} with zero drops{}.",
            b.effective_backlog
                .map_or_else(String::new, |e| format!(" ({e})")),
            rate(target_rate),
            spec.burst,
            match b.peak_queue_at_target {
                Some(p) => format!(
                    ", its deepest queue ({p}) within {:.0}% headroom",
                    spec.headroom * 100.0
                ),
                None => " (its queue not readable from here)".into(),
            }
        );
    }
    if !absorbs && !report.generator_bound {
        let b = &report.backlogs[0];
        let line = format!(
            "the server's backlog{} does not absorb {} plus bursts of {} without drops and {:.0}% headroom{}.",
            b.effective_backlog
                .map_or_else(String::new, |e| format!(" ({e})")),
            rate(target_rate),
            spec.burst,
            spec.headroom * 100.0,
            b.past_it
                .as_ref()
                .map_or_else(String::new, |p| format!(": {p}"))
        );
        if let Some(first) = report.reasoning.first_mut() {
            *first = line;
        }
        report.estimated_backlog = estimate_backlog(target_rate, spec.burst, cap, spec.headroom);
        report.reasoning.push(match report.estimated_backlog {
            Some(b) => format!(
                "estimate (the queue model, not measured): a backlog of about {b} would hold the bursts with {:.0}% headroom; restart the server with it and run tune again, or give --server-cmd with {{backlog}} to have tune try backlogs",
                spec.headroom * 100.0
            ),
            None => "no backlog would: the target is at or past the measured capacity".into(),
        });
    }
    report.recommended_backlog = None;
    report.reasoning.extend(capacity_caveat(&c));
    report.server = TunedServer {
        kind: "running".into(),
        addr: Some(addr_text.to_string()),
        ..TunedServer::default()
    };
    report.capacity_source = "measured".into();
    report.capacity_run = Some(c);
    if !local {
        report.reasoning.push(format!(
            "{addr} is not on this host: its backlog and accept queue cannot be read from here (inet_diag), so only the clients' side judged it"
        ));
    }
    Ok(report)
}

/// What a capacity the generator may have set means for the rates tried, in a line.
fn capacity_caveat(c: &CapacityRun) -> Option<String> {
    c.generator_bound().then(|| {
        format!(
            "the capacity ({}) is a lower bound: a generator thread was {:.0}% busy while it was measured, so it may be the generator's limit, not the server's; the rates tried are fractions of it. Give --threads, or run synack-load from another host, for the server's own.",
            rate(c.rate),
            c.generator_busy_max.unwrap_or(0.0) * 100.0
        )
    })
}

/// The queue model's backlog for a target and bursts (see [`reasoning`]), with headroom,
/// rounded up to a power of two; `None` at or past the capacity.
fn estimate_backlog(target: f64, burst: u64, capacity: f64, headroom: f64) -> Option<u32> {
    if capacity <= 0.0 || target >= capacity {
        return None;
    }
    let needed = target / capacity + burst as f64;
    let with_room = (needed / (1.0 - headroom)).ceil().max(1.0) as u32;
    Some(with_room.next_power_of_two())
}

/// From the backlogs' results: the recommendation, the reasoning, whether the generator
/// bound it. `measured` is the simulated handler's capacity from its measured service time.
fn recommend(
    spec: &TuneSpec,
    capacity: f64,
    target_rate: f64,
    results: Vec<BacklogResult>,
    measured: Option<(f64, Duration)>,
) -> TuneReport {
    let somaxconn = synack_sys::somaxconn();
    // Clean at the target rate, with the deepest queue there inside the headroom (where the
    // queue cannot be read, a clean step stands alone).
    let fits = |b: &BacklogResult| {
        let Some(st) = b.steps.iter().find(|s| s.rate >= target_rate * 0.999) else {
            return false;
        };
        let limit = b.effective_backlog.unwrap_or(b.backlog) as f64 * (1.0 - spec.headroom);
        st.verdict == Verdict::Clean
            && match (st.peak_queue, b.effective_backlog) {
                (Some(p), _) => p as f64 <= limit,
                (None, None) => true,
                (None, Some(_)) => false,
            }
    };
    // A backlog the generator could not test at the target leaves its answer unknown: the
    // smallest fitting backlog stands only if every smaller one was judged.
    let unjudged_at_target = |b: &BacklogResult| {
        b.generator_bound_at
            .is_some_and(|r| r <= target_rate * 1.001)
    };
    let mut recommended = None;
    let mut unjudged: Option<&BacklogResult> = None;
    for b in &results {
        if unjudged_at_target(b) {
            unjudged = Some(b);
            break;
        }
        if fits(b) {
            recommended = Some(b.backlog);
            break;
        }
    }
    let mut lines = reasoning(
        spec.headroom,
        measured,
        &results,
        recommended,
        target_rate,
        spec.burst,
        capacity,
        somaxconn,
    );
    let generator_bound = unjudged.is_some();
    if let Some(b) = unjudged {
        lines = vec![format!(
            "no recommendation: the generator could not deliver {} plus bursts of {} to backlog {} ({}), so what the server absorbs there was not measured. \
             Give the generator more: --threads (now {}), a lower --rate or --burst, or run synack-load from another host.",
            rate(target_rate),
            spec.burst,
            b.backlog,
            b.generator_reasons.join("; "),
            spec.threads
        )];
        recommended = None;
    }
    TuneReport {
        schema: SCHEMA.into(),
        server: TunedServer::default(),
        capacity,
        capacity_source: String::new(),
        capacity_run: None,
        burst: spec.burst,
        target_rate,
        somaxconn,
        backlogs: results,
        recommended_backlog: recommended,
        absorbs: None,
        estimated_backlog: None,
        reasoning: lines,
        generator_bound,
        server_runs: Vec::new(),
    }
}

/// The spec's values, checked together before anything runs.
fn check(spec: &TuneSpec) -> Result<(), String> {
    let many_backlogs = !matches!(spec.server, ServerUnderTest::Running(_));
    if many_backlogs && (spec.backlogs.is_empty() || spec.backlogs.contains(&0)) {
        return Err(format!(
            "--backlogs {:?}: give backlogs of at least 1",
            spec.backlogs
        ));
    }
    if spec.load.is_empty() || spec.load.iter().any(|f| !(*f > 0.0 && f.is_finite())) {
        return Err(format!(
            "--load {:?}: give fractions of the capacity above 0, such as 0.25,0.5,0.75",
            spec.load
        ));
    }
    if !(0.0..1.0).contains(&spec.headroom) {
        return Err(format!(
            "--headroom {}: give a fraction from 0 (none) to below 1",
            spec.headroom
        ));
    }
    if spec.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    match &spec.server {
        ServerUnderTest::Simulated(sim) => {
            if spec.exchange.talks() {
                return Err(
                    "the simulated server answers \"ok\" to any connection: a request and an expected answer are for your server (ADDR or --server-cmd)".into(),
                );
            }
            if sim.max_connections == 0 || sim.workers == 0 {
                return Err("--max-connections and --workers must be at least 1".into());
            }
            if sim.service_time.is_zero() {
                return Err("--service-time must be above zero".into());
            }
        }
        ServerUnderTest::Command(cmd) => {
            let distinct = sorted_backlogs(spec).len();
            if distinct > 1 && !cmd.command.contains(process::BACKLOG) {
                return Err(format!(
                    "--server-cmd {:?}: the command has no {} to fill, so the {distinct} backlogs asked would all be the same server; put {} where the server takes its backlog, or give one --backlogs",
                    cmd.command,
                    process::BACKLOG,
                    process::BACKLOG
                ));
            }
            if cmd.addr.is_none() && !cmd.command.contains(process::PORT) {
                return Err(format!(
                    "--server-cmd {:?}: the command has no {} to fill; put {} where the server takes its port, or give --server-addr where it listens",
                    cmd.command,
                    process::PORT,
                    process::PORT
                ));
            }
            if cmd.command.trim().is_empty() {
                return Err("--server-cmd \"\": give the server's command line".into());
            }
            if !spec.exchange.talks() {
                return Err(needs_exchange());
            }
        }
        ServerUnderTest::Running(_) => {
            if !spec.exchange.talks() {
                return Err(needs_exchange());
            }
        }
    }
    Ok(())
}

fn needs_exchange() -> String {
    "tune needs to know what a connection to your server does and when it is served: give --http \"GET /path\" (an HTTP server), or --send-text and --read/--expect (any other)".into()
}

#[allow(clippy::too_many_arguments)]
fn reasoning(
    headroom: f64,
    measured: Option<(f64, Duration)>,
    results: &[BacklogResult],
    recommended: Option<u32>,
    target: f64,
    burst: u64,
    capacity: f64,
    somaxconn: Option<u32>,
) -> Vec<String> {
    let mut out = Vec::new();
    let capacity = match measured {
        Some((c, m)) if !results.is_empty() => {
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
    let stall_s = 1.0 / capacity.max(1e-9);
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
             that is at or past the server's capacity (~{}), where the queue only grows whatever its size; raise the server's connection limit or workers, or lower --rate.",
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
            reruns: 0,
        }
    }

    #[test]
    fn the_reasoning_names_the_recommendation_and_its_queue() {
        let results = [backlog(16, Some(17)), backlog(256, Some(195))];
        // 8 slots of 2 ms: 4k/s; the target 2k/s, bursts of 200.
        let lines = reasoning(
            0.25,
            Some((4000.0, Duration::from_millis(2))),
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
        let lines = reasoning(0.25, None, &results, None, 4000.0, 200, 4000.0, None);
        assert!(
            lines[0].contains("at or past the server's capacity"),
            "{lines:?}"
        );
        // Below it: a larger backlog would.
        let lines = reasoning(0.25, None, &results, None, 1000.0, 200, 4000.0, None);
        assert!(lines[0].contains("try larger --backlogs"), "{lines:?}");
        assert!(
            lines[0].contains("the largest backlog tried 16"),
            "{lines:?}"
        );
    }

    #[test]
    fn the_rates_hold_the_fractions_and_the_target() {
        assert_eq!(
            rates(&[0.25, 0.5, 0.75], 4000.0, 2000.0),
            vec![1000.0, 2000.0, 3000.0]
        );
        assert_eq!(rates(&[0.5], 100.0, 80.0), vec![50.0, 80.0]);
        // A measured capacity: half of it rounds near the target, which stays.
        assert_eq!(rates(&[0.5], 340.86, 170.43), vec![170.43]);
        assert_eq!(rates(&[0.25, 0.5], 340.86, 170.43), vec![85.0, 170.43]);
    }

    #[test]
    fn the_estimate_holds_a_burst_with_headroom() {
        // 200 at once plus a fraction of a connection: 201 / 0.75 = 268 -> 512.
        assert_eq!(estimate_backlog(1000.0, 200, 4000.0, 0.25), Some(512));
        assert_eq!(estimate_backlog(10.0, 0, 4000.0, 0.0), Some(1));
        assert_eq!(estimate_backlog(4000.0, 10, 4000.0, 0.25), None);
    }

    #[test]
    fn a_command_must_say_where_the_backlog_and_port_go() {
        let cmd = |c: &str, addr: Option<&str>| TuneSpec {
            server: ServerUnderTest::Command(ServerCommand {
                command: c.into(),
                addr: addr.map(Into::into),
                startup_timeout: Duration::from_secs(1),
                grace: Duration::from_secs(1),
            }),
            backlogs: vec![16, 64],
            exchange: Exchange {
                answer: crate::exchange::Answer::Bytes(1),
                ..Exchange::default()
            },
            ..TuneSpec::default()
        };
        let e = check(&cmd("srv --port {port}", None)).unwrap_err();
        assert!(e.contains("no {backlog}"), "{e}");
        let e = check(&cmd("srv --backlog {backlog}", None)).unwrap_err();
        assert!(e.contains("no {port}"), "{e}");
        assert!(check(&cmd("srv --backlog {backlog}", Some("127.0.0.1:9"))).is_ok());
        assert!(check(&cmd("srv {port} {backlog}", None)).is_ok());
        let mut quiet = cmd("srv {port} {backlog}", None);
        quiet.exchange = Exchange::default();
        assert!(check(&quiet).unwrap_err().contains("--http"));
        // The simulated server takes no request.
        let talking = TuneSpec {
            exchange: Exchange {
                answer: crate::exchange::Answer::Bytes(1),
                ..Exchange::default()
            },
            ..TuneSpec::default()
        };
        assert!(check(&talking).unwrap_err().contains("simulated server"));
        assert!(check(&TuneSpec::default()).is_ok());
    }
}
