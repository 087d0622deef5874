//! The parent side: a server child process ([`ChildServer`]), the plan every flood uses, the
//! two phases of the server table and the table itself, and the memory phase.
//!
//! Phase 1 floods each server closed loop (64 in flight) for server CPU per connection; phase 2
//! offers a fixed 10k/s for dispatch latency and time to first byte. The servers take turns,
//! so drift on a shared machine hits all alike; each figure is a median over the runs.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use synack_load::engine;
use synack_load::plan::{Load, Plan, PlanBuilder};

use crate::servers::PAYLOAD;

/// A server in a child process: this executable re-run with `--server KIND`.
pub struct ChildServer {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    /// Where the server listens.
    pub addr: SocketAddr,
}

/// What a child reports on request.
pub struct Report {
    /// The child's user + system CPU time so far.
    pub cpu: Duration,
    /// From a synack child, `p50/p99/own`: dispatch latency in us, and the permille of its
    /// accepts the idle worker made for its acceptor thread (`-` where it does not); `-` from
    /// the others.
    pub dispatch: String,
    /// Resident set now, in bytes.
    pub rss: u64,
    /// Resident set once the server was ready, in bytes.
    pub base_rss: u64,
}

impl ChildServer {
    /// Starts server `kind`, pinned to CPU 0 when there are `cpus > 1`, and waits until it is
    /// ready.
    pub fn start(kind: &str, cpus: usize) -> Self {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--server", kind]);
        if cpus > 1 {
            cmd.args(["--cpu", "0"]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("READY ").unwrap().parse().unwrap();
        ChildServer {
            child,
            stdin,
            out,
            addr,
        }
    }

    /// Asks the child for its figures.
    pub fn report(&mut self) -> Report {
        writeln!(self.stdin, "report").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        Report {
            cpu: Duration::from_nanos(f[1].parse().unwrap()),
            dispatch: f[2].to_string(),
            rss: f[3].parse().unwrap(),
            base_rss: f[4].parse().unwrap(),
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins the parent (the generator) to CPU 1 when there are two, raises its descriptor limit,
/// and returns the CPU count.
pub fn setup() -> usize {
    // Counted before pinning: the mask narrows what available_parallelism sees.
    let cpus = num_cpus();
    if cpus > 1 {
        let _ = synack_sys::pin_to_cpu(1);
    }
    if let Ok((_, hard)) = synack_sys::nofile_limit() {
        let _ = synack_sys::set_nofile_limit(hard, hard);
    }
    cpus
}

/// The plan of every flood here: one thread against `addr`, each connection reading the
/// payload (or held for `hold`) and closed with RST, sockets reused.
pub fn plan(addr: SocketAddr, load: Load, duration: Duration, hold: Option<Duration>) -> Plan {
    PlanBuilder::new(&addr.to_string(), load, duration)
        .read(if hold.is_some() {
            None
        } else {
            Some(PAYLOAD.len())
        })
        .hold(hold)
        .threads(Some(1))
        .build()
        // The memory phase holds 15,000 connections: a host whose limits do not allow that
        // says so and stops.
        .unwrap_or_else(|e| {
            eprintln!("compare: {e}");
            std::process::exit(2)
        })
}

/// Phase 1 once: connections per second, the server's CPU per connection in us and its
/// context switches per connection (every thread, from /proc, where the OS says), the
/// segments per connection the host sent (Tcp.OutSegs, host-wide: on loopback both ends'),
/// and the permille of the accepts a synack worker made itself for its acceptor thread, where
/// it does.
struct Phase1 {
    rate: f64,
    cpu_us: f64,
    switches: Option<f64>,
    segments: Option<f64>,
    own: Option<f64>,
}

/// The host's Tcp.OutSegs, where the OS says.
fn out_segments() -> Option<u64> {
    synack_sys::tcp_counters()
        .ok()
        .flatten()?
        .get("Tcp.OutSegs")
        .copied()
}

fn phase1(kind: &str, cpus: usize, seconds: u64) -> Phase1 {
    let mut s = ChildServer::start(kind, cpus);
    let before = s.report();
    let pid = s.child.id();
    let switches = || synack_sys::context_switches(pid).ok().flatten();
    let switched_before = switches();
    let segments_before = out_segments();
    let run = engine::run(
        &plan(
            s.addr,
            Load::Closed { concurrency: 64 },
            Duration::from_secs(seconds),
            None,
        ),
        |_, _, _| {},
    )
    .unwrap();
    let switched = switches()
        .zip(switched_before)
        .map(|(a, b)| a.saturating_sub(b));
    let segments = out_segments()
        .zip(segments_before)
        .map(|(a, b)| a.saturating_sub(b));
    let after = s.report();
    drop(s);
    let served = run.rec.established;
    let rate = served as f64 / run.active.as_secs_f64();
    let cpu_us = (after.cpu - before.cpu).as_secs_f64() * 1e6 / served.max(1) as f64;
    let own = after
        .dispatch
        .split('/')
        .nth(2)
        .and_then(|o| o.parse().ok());
    std::thread::sleep(Duration::from_millis(300));
    Phase1 {
        rate,
        cpu_us,
        switches: switched.map(|n| n as f64 / served.max(1) as f64),
        segments: segments.map(|n| n as f64 / served.max(1) as f64),
        own,
    }
}

/// Phase 2 once, after the kernel has settled from the last flood: dispatch p50/p99 (servers
/// that report it), time to first byte p50/p99 and the generator's lag p99, in us.
fn phase2(kind: &str, cpus: usize) -> (Option<[u64; 2]>, [u64; 3]) {
    let mut s = ChildServer::start(kind, cpus);
    std::thread::sleep(Duration::from_secs(1));
    let run = engine::run(
        &plan(
            s.addr,
            Load::Open {
                from: 10_000.0,
                to: 10_000.0,
                burst: 0,
            },
            Duration::from_secs(3),
            None,
        ),
        |_, _, _| {},
    )
    .unwrap();
    let r = s.report();
    drop(s);
    // "p50/p99/own" from a synack child, "-" from the others.
    let mut fields = r.dispatch.split('/');
    let mut next = || fields.next().and_then(|f| f.parse().ok());
    let dispatch = (|| Some([next()?, next()?]))();
    let fb = &run.rec.first_byte;
    (
        dispatch,
        [
            fb.value_at_quantile(0.5),
            fb.value_at_quantile(0.99),
            run.rec.start_lag.value_at_quantile(0.99),
        ],
    )
}

/// The median of each field over runs.
fn medians<const N: usize>(runs: impl Iterator<Item = [u64; N]>) -> [u64; N] {
    let runs: Vec<[u64; N]> = runs.collect();
    std::array::from_fn(|k| median(runs.iter().map(|r| r[k] as f64).collect()) as u64)
}

/// The smallest and the largest of `v`.
fn spread(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// The median of `v` (the upper one of an even count); `v` must not be empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The lag an ideal pacer would see here: starts due every `1/rate` s, the thread doing nothing
/// but spin on the clock; returns p50 and p99 of (observed - due) in us. What the machine
/// (interrupts, the hypervisor, other threads) takes from any generator's pacing.
fn ideal_pacer_lag(rate: f64, duration: Duration) -> (u64, u64) {
    let mut h = synack_load::record::latency_histogram();
    let t0 = std::time::Instant::now();
    let step = Duration::from_secs_f64(1.0 / rate);
    let mut due = t0 + step;
    while due < t0 + duration {
        let mut now = std::time::Instant::now();
        while now < due {
            now = std::time::Instant::now();
        }
        synack_load::record::record_us(&mut h, now.duration_since(due));
        due += step;
    }
    (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
}

/// One line of the server table, its figures formatted.
struct Row<'a> {
    kind: &'a str,
    rate: f64,
    cpu: String,
    ratio: String,
    vs_fin: String,
    switched: String,
    segs: String,
    dispatch: String,
    first_byte: String,
    lag: u64,
    own: String,
}

/// The server table: phase 1 then phase 2 over `kinds` (the floor first: the ratios are to
/// it), `runs` rounds each, and the machine's own pacing floor measured before any flood.
pub fn table(kinds: &[&str], cpus: usize, seconds: u64, runs: usize) {
    println!("compare: {cpus} CPUs; servers pinned to CPU 0, the generator (1 thread) to CPU 1");
    println!(
        "phase 1: closed loop, 64 in flight, {seconds} s; phase 2: open loop 10k/s, 3 s; {runs} runs of each, interleaved (medians)\n"
    );
    // Before any flood (whose kernel clean-up lingers): what the machine leaves a pacer.
    let (p50, p99) = ideal_pacer_lag(10_000.0, Duration::from_secs(3));
    // Phase 1: as fast as the generator goes, the servers taking turns so drift hits all.
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = kinds.iter().map(|_| (vec![], vec![])).collect();
    let mut own: Vec<Vec<f64>> = kinds.iter().map(|_| vec![]).collect();
    let mut switches: Vec<Vec<f64>> = kinds.iter().map(|_| vec![]).collect();
    let mut segments: Vec<Vec<f64>> = kinds.iter().map(|_| vec![]).collect();
    for _ in 0..runs {
        for (i, kind) in kinds.iter().enumerate() {
            let p = phase1(kind, cpus, seconds);
            samples[i].0.push(p.rate);
            samples[i].1.push(p.cpu_us);
            own[i].extend(p.own);
            switches[i].extend(p.switches);
            segments[i].extend(p.segments);
        }
    }
    // Phase 2: a fixed 10k/s for time to first byte and dispatch latency, the servers taking
    // turns again; each percentile is the median over the runs, as tails move a lot here.
    let mut tails: Vec<Vec<_>> = kinds.iter().map(|_| vec![]).collect();
    for _ in 0..runs {
        for (i, kind) in kinds.iter().enumerate() {
            tails[i].push(phase2(kind, cpus));
        }
    }
    let mut rows = Vec::new();
    for (i, kind) in kinds.iter().copied().enumerate() {
        let rate = median(samples[i].0.clone());
        let cpu_us = median(samples[i].1.clone());
        let cpu_spread = spread(&samples[i].1);
        // Each round's CPU over the floor's of the same round (the servers took turns within
        // it), so that a slower stretch of the host divides out; the median of those.
        let ratios: Vec<f64> = samples[i]
            .1
            .iter()
            .zip(&samples[0].1)
            .map(|(c, f)| c / f)
            .collect();
        let ratio = (median(ratios.clone()), spread(&ratios));
        // The same over floor-fin's, where it ran: the cost over a floor that sends the same
        // segments.
        let vs_fin = kinds
            .iter()
            .position(|k| *k == "floor-fin")
            .map_or("-".into(), |f| {
                let r: Vec<f64> = samples[i]
                    .1
                    .iter()
                    .zip(&samples[f].1)
                    .map(|(c, f)| c / f)
                    .collect();
                format!("{:.2}x", median(r))
            });
        let dispatch: Option<Vec<[u64; 2]>> = tails[i].iter().map(|t| t.0).collect();
        let dispatch = dispatch.map_or("-".into(), |d| {
            let [p50, p99] = medians(d.into_iter());
            format!("{p50}/{p99} us")
        });
        let [fb50, fb99, lag99] = medians(tails[i].iter().map(|t| t.1));
        let own = match own[i].is_empty() {
            true => "-".to_string(),
            false => format!("{:.1}%", median(own[i].clone()) / 10.0),
        };
        let switched = match switches[i].is_empty() {
            true => "-".to_string(),
            false => format!("{:.3}", median(switches[i].clone())),
        };
        let segs = match segments[i].is_empty() {
            true => "-".to_string(),
            false => format!("{:.2}", median(segments[i].clone())),
        };
        rows.push(Row {
            kind,
            rate,
            cpu: format!("{cpu_us:.1} ({:.1}..{:.1})", cpu_spread.0, cpu_spread.1),
            ratio: format!("{:.2}x ({:.2}..{:.2})", ratio.0, ratio.1.0, ratio.1.1),
            vs_fin,
            switched,
            segs,
            dispatch,
            first_byte: format!("{fb50}/{fb99}"),
            lag: lag99,
            own,
        });
    }
    println!(
        "{:<16} {:>8} {:>22} {:>20} {:>13} {:>8} {:>9} {:>16} {:>16} {:>12} {:>12}",
        "server",
        "conn/s",
        "CPU us/conn (spread)",
        "vs floor (spread)",
        "vs floor-fin",
        "cs/conn",
        "segs/conn",
        "dispatch p50/p99",
        "TTFB p50/p99 us",
        "gen lag p99",
        "own accepts"
    );
    for r in &rows {
        println!(
            "{:<16} {:>8.0} {:>22} {:>20} {:>13} {:>8} {:>9} {:>16} {:>16} {:>12} {:>12}",
            r.kind,
            r.rate,
            r.cpu,
            r.ratio,
            r.vs_fin,
            r.switched,
            r.segs,
            r.dispatch,
            r.first_byte,
            r.lag,
            r.own
        );
    }
    println!(
        "\nvs floor: each round's CPU per connection over the floor's in the same round, the \
         median of the {runs} rounds and their spread."
    );
    println!(
        "\ncs/conn: the server's context switches per connection in phase 1, every thread, \
         voluntary and involuntary (/proc/PID/task/*/status), the median of the rounds: the \
         cost of a handoff between threads, in a count the host's noise hardly moves."
    );
    println!(
        "\nsegs/conn: TCP segments the host sent per connection in phase 1 (Tcp.OutSegs, \
         host-wide: on loopback both ends' count, the generator's too), the median of the rounds: \
         two fewer where the FIN rides in the segment of the data (floor-fin, and synack's \
         fin_with_data, the default) and the peer acknowledges both at once."
    );
    println!(
        "\nown accepts: of a synack server's accepts in phase 1, the share its idle worker made \
         itself for its acceptor thread (Stats::worker_accepted; the rest went through the \
         acceptor thread and a channel), the median of the rounds."
    );
    println!(
        "\ngen lag: the generator's start minus its schedule at 10k/s. This machine's own floor \
         for it, a pacer that only spins and does nothing else, on the generator's CPU before \
         the floods: p50 {p50} us, p99 {p99} us."
    );
}

/// The memory phase: 15,000 idle connections held against synack and tokio, and the resident
/// set each grew by.
pub fn memory(cpus: usize) {
    println!("\nmemory: 15,000 idle connections held (--hold), resident set growth");
    for kind in ["synack", "tokio"] {
        let mut s = ChildServer::start(&format!("{kind}-hold"), cpus);
        let addr = s.addr;
        // Connections the generator holds (established, not ended), as of its last tick.
        let held = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = held.clone();
        let holder = std::thread::spawn(move || {
            engine::run(
                &plan(
                    addr,
                    Load::Closed {
                        concurrency: 15_000,
                    },
                    Duration::from_secs(6),
                    Some(Duration::from_secs(6)),
                ),
                move |_, p, _| {
                    let est = p.established.load(std::sync::atomic::Ordering::Relaxed);
                    let done = p.finished.load(std::sync::atomic::Ordering::Relaxed);
                    seen.store(
                        est.saturating_sub(done),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                },
            )
            .unwrap()
        });
        std::thread::sleep(Duration::from_secs(5));
        let r = s.report();
        let grown = r.rss.saturating_sub(r.base_rss);
        let n = held.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "{:<8} resident +{:.1} MiB over {n} held = {:.0} bytes per held connection",
            kind,
            grown as f64 / (1 << 20) as f64,
            grown as f64 / n.max(1) as f64
        );
        let _ = holder.join();
        drop(s);
    }
}
