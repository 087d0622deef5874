//! The generator: one mio event loop per thread, each running attempts through
//! connect -> send -> read (the answer: bytes, or an HTTP response to its end) -> hold -> close.
//!
//! Open loop: attempt `i` belongs to thread `i % threads` and starts at its scheduled time;
//! latency is also measured from the schedule, so a stall cannot hide (wrk2's correction of
//! coordinated omission). Closed loop: each thread keeps its share of `--concurrency` in flight.
//!
//! Past its capacity the generator degrades instead of collapsing. Each turn of the loop
//! first handles what the kernel reported for attempts already started (deadlines, then
//! events), and only then starts new ones: at most [`START_BATCH`] per turn, and never more
//! than the thread's share of [`Plan::max_in_flight`] at once. A late generator keeps the
//! schedule as a schedule: overdue attempts start in order as soon as it can, their lag counted;
//! those still unstarted when the duration ends are classed `not_started`. At a deadline the
//! kernel is asked (`SO_ERROR`, `TCP_INFO`) before anything is blamed on the server: an attempt
//! the kernel had established is the generator's lateness (`late`), not a timeout.

//!
//! The parts: `attempt` (an attempt, and the decisions about it that need no
//! socket), the slots and their sockets (`pool`), the deadlines (`timers`), and the event
//! loop that drives them (`event_loop`); the schedule is [`crate::pacer`]'s.

mod answer;
mod attempt;
mod event_loop;
mod pool;
mod timers;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use mio::Poll;

use crate::plan::Plan;
use crate::record::{Recorder, latency_histogram};
use event_loop::Generator;

/// Connects faster than this cannot have retransmitted their SYN: Linux's first SYN
/// retransmission waits the initial RTO, 1 s (`TCP_TIMEOUT_INIT`), and only a BPF program
/// (`BPF_SOCK_OPS_TIMEOUT_INIT`) can lower it; this leaves room down to 150 ms.
pub(super) const RETRANS_POSSIBLE: Duration = Duration::from_millis(150);

/// The largest buffer `--send` is written from.
pub(super) const PAYLOAD_CHUNK: usize = 64 * 1024;

/// The most attempts a thread starts in one turn of its loop, so that a generator behind its
/// schedule still turns back to the events of the attempts it has started.
pub const START_BATCH: usize = 64;

/// After a start failed before the attempt existed (no descriptor, no port, no route), the
/// closed loop waits this long before it tries again, doubling up to [`RETRY_MAX`].
pub(super) const RETRY_FIRST: Duration = Duration::from_millis(1);
pub(super) const RETRY_MAX: Duration = Duration::from_millis(100);

/// Counters every thread updates, read by the live view.
///
/// ```no_run
/// use std::sync::atomic::Ordering::Relaxed;
/// use std::time::Duration;
/// use synack_load::plan::{Load, PlanBuilder};
///
/// let load = Load::Closed { concurrency: 8 };
/// let plan = PlanBuilder::new("127.0.0.1:7878", load, Duration::from_secs(3)).build()?;
/// let run = synack_load::engine::run(&plan, |elapsed, p, _| {
///     let in_flight = p.attempts.load(Relaxed) - p.finished.load(Relaxed);
///     eprintln!("{elapsed:?}: {in_flight} in flight, {} errors", p.errors.load(Relaxed));
/// })?;
/// assert!(run.rec.established <= run.rec.attempts);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Progress {
    /// Attempts started.
    pub attempts: AtomicU64,
    /// Attempts established.
    pub established: AtomicU64,
    /// Attempts that ended in an error class.
    pub errors: AtomicU64,
    /// Attempts finished (any class).
    pub finished: AtomicU64,
    /// Closed loop: attempts handed out, against `--connections`.
    pub issued: AtomicU64,
    /// Attempts the generator was late for (see [`crate::outcome::Outcome::Late`]).
    pub late: AtomicU64,
    /// Open loop: attempts never started (see [`crate::outcome::Outcome::NotStarted`]).
    pub not_started: AtomicU64,
    /// Set when the run must stop at once (for example, no probe header where one was asked).
    pub fatal: Mutex<Option<String>>,
    /// Whether `fatal` is set (checked on every loop turn without the lock).
    pub failed: AtomicBool,
}

impl Progress {
    pub(super) fn fail(&self, msg: String) {
        if let Ok(mut f) = self.fatal.lock()
            && f.is_none()
        {
            *f = Some(msg);
        }
        self.failed.store(true, Relaxed);
    }
}

/// One second of connect latency from one thread, for the interval log and the live view.
///
/// Each thread sends one for every second to [`run`], which adds them up per second over the
/// threads into [`RunResult::intervals`] and [`RunResult::response_intervals`].
#[derive(Debug)]
pub(crate) struct Interval {
    /// Seconds since the start.
    pub(crate) second: u64,
    /// Connect latency recorded in that second, us.
    pub(crate) connect: Histogram<u64>,
    /// `connect()` to the answer's end, for the answers that ended in that second, us.
    pub(crate) response: Histogram<u64>,
    /// With `--tls`: the handshakes done in that second, us.
    pub(crate) tls: Histogram<u64>,
}

/// What a whole run measured.
///
/// Returned by [`run`]; a report is built from it with
/// [`FloodReport::build`](crate::report::FloodReport::build).
///
/// ```
/// # use std::collections::BTreeMap;
/// # use std::time::{Duration, SystemTime};
/// # use synack_load::plan::{Load, PlanBuilder};
/// # use synack_load::report::{FloodReport, HostFacts};
/// use synack_load::engine::RunResult;
/// use synack_load::record::Recorder;
///
/// # let load = Load::Closed { concurrency: 8 };
/// # let plan = PlanBuilder::new("127.0.0.1:7878", load, Duration::from_secs(3));
/// # let plan = plan.threads(Some(1)).build()?;
/// let mut rec = Recorder::default();
/// (rec.attempts, rec.established) = (1000, 1000);
/// let run = RunResult {
///     rec, intervals: BTreeMap::new(), response_intervals: BTreeMap::new(), tls_intervals: BTreeMap::new(),
///     started_at: SystemTime::now(), elapsed: Duration::from_secs(3),
///     active: Duration::from_secs(2), thread_cpu: Vec::new(), start_lateness: None,
/// };
/// let report = FloodReport::build(&plan, &run, &HostFacts::default(), None, None, Vec::new());
/// // The achieved rate is over `active` (to the last connection established), not `elapsed`.
/// assert_eq!(report.achieved_rate, 500.0);
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
#[derive(Debug)]
pub struct RunResult {
    /// All threads merged.
    pub rec: Recorder,
    /// Connect latency per second since the start.
    pub intervals: BTreeMap<u64, Histogram<u64>>,
    /// `connect()` to the answer's end, per second since the start (empty when no answer
    /// was read).
    pub response_intervals: BTreeMap<u64, Histogram<u64>>,
    /// With `--tls`: the TLS handshake per second since the start (empty without it).
    pub tls_intervals: BTreeMap<u64, Histogram<u64>>,
    /// Wall-clock time of the start.
    pub started_at: SystemTime,
    /// From the start to the last thread's end.
    pub elapsed: Duration,
    /// From the start to the last connection established (the span the achieved rate uses).
    pub active: Duration,
    /// Each generator thread's CPU time over the run (`/proc/thread-self/schedstat`), where known.
    pub thread_cpu: Vec<Duration>,
    /// How late the first attempt started against its scheduled time (`None` when none
    /// started): with `--start-at`, how late this agent really began.
    pub start_lateness: Option<Duration>,
}

/// Runs a flood to its end, calling `tick` about once a second with the progress so far and
/// the connect-latency histogram of the seconds completed.
pub fn run(
    plan: &Plan,
    mut tick: impl FnMut(Duration, &Progress, &Histogram<u64>),
) -> io::Result<RunResult> {
    let progress = Arc::new(Progress::default());
    let (tx, rx) = channel();
    // A short head start so every thread is up before the first scheduled attempt; with
    // --start-at, the wall-clock instant asked (then the monotonic clock from there).
    let lead = match plan.start_at {
        Some(at) => {
            let lead = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            // Sleep to shortly before it, so the threads are up when it comes.
            std::thread::sleep(lead.saturating_sub(Duration::from_millis(20)));
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        }
        None => Duration::from_millis(20),
    };
    let t0 = Instant::now() + lead;
    let started_at = plan.start_at.unwrap_or_else(|| SystemTime::now() + lead);
    let mut handles = Vec::with_capacity(plan.threads);
    for index in 0..plan.threads {
        let plan = plan.clone();
        let progress = progress.clone();
        let tx = tx.clone();
        let poll = Poll::new()?;
        let h = std::thread::Builder::new()
            .name(format!("synack-load-{index}"))
            .spawn(move || {
                if let Some(cpus) = plan.cpus.as_deref().filter(|c| !c.is_empty()) {
                    // Checked against the allowed CPUs when the plan was built.
                    let _ = synack_sys::pin_to_cpu(cpus[index % cpus.len()]);
                }
                let cpu = || synack_sys::current_thread_cpu().ok().flatten();
                let waited = || synack_sys::current_thread_run_delay().ok().flatten();
                let (before, waited_before) = (cpu(), waited());
                let mut t = Generator::new(&plan, index, t0, poll, tx, &progress);
                t.run();
                let used = cpu().zip(before).map(|(a, b)| a.saturating_sub(b));
                t.rec.cpu_wait = waited()
                    .zip(waited_before)
                    .map(|(a, b)| a.saturating_sub(b));
                (t.rec, t.last_established, used, t.first_started)
            })?;
        handles.push(h);
    }
    drop(tx);
    let (intervals, response_intervals, tls_intervals, so_far) =
        collect(&rx, t0, &progress, &mut tick);
    let mut rec = Recorder::default();
    let mut last = None;
    let mut thread_cpu = Vec::new();
    let mut first: Option<Instant> = None;
    for h in handles {
        let (r, l, cpu, f) = h
            .join()
            .map_err(|_| io::Error::other("a generator thread panicked"))?;
        rec.merge(&r);
        last = last.max(l);
        thread_cpu.extend(cpu);
        first = match (first, f) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    // How late the first attempt started against the schedule (its due time from t0).
    let due0 = plan.due(plan.agent.index).map_or(Duration::ZERO, |d| d.at);
    let start_lateness = first.map(|f| f.saturating_duration_since(t0 + due0));
    drop(so_far);
    if let Some(msg) = progress.fatal.lock().ok().and_then(|f| f.clone()) {
        return Err(io::Error::other(msg));
    }
    let end = Instant::now();
    Ok(RunResult {
        rec,
        intervals,
        response_intervals,
        tls_intervals,
        started_at,
        elapsed: end.saturating_duration_since(t0),
        active: last.map_or(Duration::ZERO, |l| l.saturating_duration_since(t0)),
        thread_cpu,
        start_lateness,
    })
}

/// The CPU time of this process's generator threads (named `synack-load-N`) by name.
pub fn generator_cpu() -> Vec<(String, Duration)> {
    let mut v: Vec<(String, Duration)> = synack_sys::thread_cpu_times()
        .ok()
        .flatten()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.name.starts_with("synack-load-"))
        .map(|t| (t.name, t.cpu))
        .collect();
    v.sort();
    v
}

type Collected = (
    BTreeMap<u64, Histogram<u64>>,
    BTreeMap<u64, Histogram<u64>>,
    BTreeMap<u64, Histogram<u64>>,
    Histogram<u64>,
);

/// Adds `h` to second `second` of `by_second`.
fn add_second(by_second: &mut BTreeMap<u64, Histogram<u64>>, second: u64, h: Histogram<u64>) {
    match by_second.get_mut(&second) {
        Some(have) => {
            let _ = have.add(&h);
        }
        None => {
            by_second.insert(second, h);
        }
    }
}

fn collect(
    rx: &Receiver<Interval>,
    t0: Instant,
    progress: &Progress,
    tick: &mut impl FnMut(Duration, &Progress, &Histogram<u64>),
) -> Collected {
    let mut intervals: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    let mut responses: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    let mut tls: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    let mut so_far = latency_histogram();
    let mut next_tick = t0 + Duration::from_secs(1);
    loop {
        // Every thread holds a sender until it ends: disconnected means all are done.
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(iv) => {
                let _ = so_far.add(&iv.connect);
                if !iv.connect.is_empty() {
                    add_second(&mut intervals, iv.second, iv.connect);
                }
                if !iv.response.is_empty() {
                    add_second(&mut responses, iv.second, iv.response);
                }
                if !iv.tls.is_empty() {
                    add_second(&mut tls, iv.second, iv.tls);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if now >= next_tick {
            tick(now.saturating_duration_since(t0), progress, &so_far);
            next_tick += Duration::from_secs(1);
        }
    }
    (intervals, responses, tls, so_far)
}
