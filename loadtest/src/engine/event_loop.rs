//! One generator thread: a mio event loop that starts attempts on the schedule (or keeps the
//! closed loop's share in flight) and drives each through connect -> send -> read -> hold ->
//! close. Each turn, the work of attempts already started comes first: their deadlines, then
//! (after the poll) the deadlines again and their events; new starts last, bounded.

use std::io::{self, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, SockAddr};

use synack::probe::{self, MonoClock, ProbeHeader};
use synack_sys::timer::PollTimer;

use super::answer::{AnswerReader, Fed};
use super::attempt::{
    Attempt, Ending, KERNEL_TICK, Phase, ReadStep, errno, flush_tls, judge_deadline, kernel_view,
    next_phase, read_attempt,
};
use super::pool::{Pool, Spare, new_socket};
use super::timers::{Timer, Timers};
use super::{
    Interval, PAYLOAD_CHUNK, Progress, RETRANS_POSSIBLE, RETRY_FIRST, RETRY_MAX, START_BATCH,
};
use crate::exchange::{Answer, Payload};
use crate::outcome::Outcome;
use crate::plan::{Load, Plan};
use crate::record::{
    ARRIVAL_WINDOW, MAX_RETRANS_BUCKET, Recorder, decompose, latency_histogram, record_signed_ns,
    record_us,
};

/// The poll token of the pacing timer (slots are small indices: never this one).
const TIMER: Token = Token(usize::MAX);

/// When a thread's loop should look at its starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Nothing to start until an attempt ends (or never again).
    Idle,
    /// The next start falls due then.
    At(Instant),
    /// Starts are overdue: behind schedule.
    Now,
}

/// One generator thread's state.
pub(super) struct Generator<'a> {
    plan: &'a Plan,
    t0: Instant,
    clock: MonoClock,
    target: SockAddr,
    domain: Domain,
    poll: Poll,
    /// The attempts in flight, by slot (= poll token), and the sockets kept for reuse.
    pool: Pool,
    timers: Timers,
    seq: u64,
    pub(super) rec: Recorder,
    interval: Histogram<u64>,
    interval_response: Histogram<u64>,
    interval_tls: Histogram<u64>,
    interval_no: u64,
    intervals: Sender<Interval>,
    progress: &'a Progress,
    next_i: u64,
    /// Between this thread's attempt indices: every thread of every agent takes its turn.
    stride: u64,
    /// When this thread started its first attempt.
    pub(super) first_started: Option<Instant>,
    quota: usize,
    /// Closed loop with `--connections`: this agent's share of them (its threads count
    /// against it together, through `progress.issued`).
    connections: Option<u64>,
    /// This thread's share of [`Plan::max_in_flight`].
    in_flight_max: usize,
    issuing: bool,
    /// Closed loop: no start before this (a back-off after a start failed).
    retry_at: Option<Instant>,
    retry_wait: Duration,
    source: usize,
    buf: Vec<u8>,
    /// `--send N`'s filler bytes, written again and again.
    filler: Vec<u8>,
    pub(super) last_established: Option<Instant>,
    /// Wakes the poll at the next start to the microsecond (`None` where there is no
    /// timerfd: the poll's millisecond timeout, then a spin through its last millisecond).
    timer: Option<PollTimer>,
    /// Events that come between two starts of one turn (see [`Self::settle`]).
    ready: Option<Events>,
    /// When the current second's burst had its last start so far, and the instant it was
    /// due (see [`Recorder::behind_burst`]).
    burst_end: Option<(Instant, Instant)>,
}

impl<'a> Generator<'a> {
    pub(super) fn new(
        plan: &'a Plan,
        index: usize,
        t0: Instant,
        poll: Poll,
        intervals: Sender<Interval>,
        progress: &'a Progress,
    ) -> Self {
        let share = |n: usize| n / plan.threads + usize::from(index < n % plan.threads);
        let in_flight_max = share(plan.max_in_flight).max(1);
        // The closed loop's share (this agent's, then this thread's), never past the
        // in-flight bound.
        let quota = match plan.load {
            Load::Closed { concurrency } => {
                share(plan.agent.share(concurrency as u64) as usize).min(in_flight_max)
            }
            Load::Open { .. } => 0,
        };
        let (first_i, stride) = plan.thread_indices(index);
        Generator {
            plan,
            t0,
            clock: MonoClock::new(),
            target: plan.target.into(),
            domain: Domain::for_address(plan.target),
            poll,
            pool: Pool::default(),
            timers: Timers::default(),
            seq: 0,
            rec: Recorder::default(),
            interval: latency_histogram(),
            interval_response: latency_histogram(),
            interval_tls: latency_histogram(),
            interval_no: 0,
            intervals,
            progress,
            next_i: first_i,
            stride,
            first_started: None,
            quota,
            connections: plan.connections.map(|max| plan.agent.share(max)),
            in_flight_max,
            issuing: true,
            retry_at: None,
            retry_wait: RETRY_FIRST,
            source: index,
            buf: vec![0; 64 * 1024],
            // `--send` of any size goes out of one buffer of at most this, again and again.
            filler: match plan.payload {
                Payload::Filler(n) => vec![b'x'; n.min(PAYLOAD_CHUNK)],
                Payload::Bytes(_) => Vec::new(),
            },
            last_established: None,
            timer: None,
            ready: Some(Events::with_capacity(256)),
            burst_end: None,
        }
    }

    /// Sets up the pacing timer: a timerfd in the poll set, and the thread's timer slack
    /// at its least, so the poll's own timeouts are not stretched either. Without a timerfd
    /// the loop falls back to the poll's milliseconds and spins their last one.
    fn pace_with_timer(&mut self) {
        let _ = synack_sys::cpu::set_timer_slack(Duration::from_nanos(1));
        let Ok(t) = PollTimer::new() else {
            return;
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&t);
        if self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), TIMER, Interest::READABLE)
            .is_ok()
        {
            self.timer = Some(t);
        }
    }

    pub(super) fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        if matches!(self.plan.load, Load::Open { .. }) {
            self.pace_with_timer();
        }
        let end_issuing = self.t0 + self.plan.duration;
        // Past this, nothing can still be legitimately in flight.
        let hard_end = end_issuing + self.plan.attempt_budget() + Duration::from_secs(1);
        while Instant::now() < self.t0 {
            std::thread::sleep(self.t0.saturating_duration_since(Instant::now()));
        }
        let mut now = Instant::now();
        loop {
            self.roll_interval(now);
            if now >= end_issuing && self.issuing {
                // What fell due before the end goes out first (one bounded batch): only a real
                // backlog is left `not_started`.
                self.issue(now);
                self.stop_issuing();
            }
            // The work of attempts already started comes first: their deadlines, then (below,
            // after the poll) their events; new starts last, bounded.
            self.expire_timers(now);
            let mut next = self.issue(now);
            if !self.issuing && self.pool.live() == 0 {
                break;
            }
            if self.progress.failed.load(Relaxed) {
                self.abandon_all();
                break;
            }
            if now >= hard_end {
                self.abandon_all();
                break;
            }
            // Timers, the interval and the ends are kept to the millisecond epoll gives; only
            // a start is worth spinning for.
            let mut wake = hard_end.min(self.t0 + Duration::from_secs(self.interval_no + 1));
            if self.issuing {
                wake = wake.min(end_issuing);
            }
            if let Some(t) = self.timers.next_at() {
                wake = wake.min(t);
            }
            let at = Instant::now();
            let timeout = match (next, self.timer.as_mut()) {
                (Next::Now, _) => Duration::ZERO,
                // The timer wakes the poll at the start itself; the poll's own timeout keeps
                // the rest (deadlines, the interval, the end) to its milliseconds.
                (Next::At(t), Some(timer)) => match timer.arm_at(t) {
                    Ok(()) => wake.saturating_duration_since(at),
                    Err(e) => {
                        self.progress
                            .fail(format!("the generator's pacing timer failed: {e}"));
                        Duration::ZERO
                    }
                },
                // No timer: epoll waits in whole milliseconds, rounded up, so sleep short of
                // the start and spin its last millisecond.
                (Next::At(t), None)
                    if t.saturating_duration_since(at) <= Duration::from_millis(2) =>
                {
                    Duration::ZERO
                }
                (Next::At(t), None) => (t.saturating_duration_since(at) - Duration::from_millis(1))
                    .min(wake.saturating_duration_since(at)),
                (Next::Idle, _) => wake.saturating_duration_since(at),
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                self.progress
                    .fail(format!("the generator's poll failed: {e}"));
                self.abandon_all();
                break;
            }
            let turn = Instant::now();
            // Deadlines that passed while the thread was away are judged before the events
            // that came meanwhile: an attempt the kernel established in time but the generator
            // saw too late is the generator's lateness, and `expire_timers` says so.
            self.expire_timers(turn);
            let mut started = 0;
            for ev in events.iter() {
                if !self.on_polled(ev, turn) {
                    continue;
                }
                // Open loop, on schedule: a start that falls due while a long batch of events
                // is handled goes out now, not after the batch.
                if let Next::At(t) = next
                    && started < START_BATCH
                    && Instant::now() >= t
                {
                    started += 1;
                    next = match self.issue_one_due() {
                        // One went out; the next may be due already.
                        Next::Now => Next::At(Instant::now()),
                        other => other,
                    };
                }
            }
            now = Instant::now();
            record_us(&mut self.rec.turn, now.saturating_duration_since(turn));
        }
        self.flush_interval();
    }

    /// The duration is over: no more starts. Open loop: the schedule's attempts this thread
    /// has not started are counted `not_started`.
    fn stop_issuing(&mut self) {
        self.issuing = false;
        if matches!(self.plan.load, Load::Open { .. }) {
            let planned = self.plan.planned_total().unwrap_or(0);
            let stride = self.stride;
            let left = planned.saturating_sub(self.next_i).div_ceil(stride);
            if left > 0 {
                self.next_i += left * stride;
                self.rec.outcomes[Outcome::NotStarted.slot()] += left;
                self.progress.not_started.fetch_add(left, Relaxed);
            }
        }
    }

    /// Starts what is due, at most [`START_BATCH`] and never past the thread's in-flight
    /// bound; says when to look again.
    fn issue(&mut self, now: Instant) -> Next {
        if !self.issuing {
            return Next::Idle;
        }
        match self.plan.load {
            Load::Open { .. } => {
                for n in 0..START_BATCH {
                    // After the first start of the turn, what came meanwhile is handled
                    // before the next (see `settle`).
                    match self.issue_one(now, n > 0) {
                        Next::Now => {}
                        other => return other,
                    }
                }
                // More are due: behind schedule.
                Next::Now
            }
            Load::Closed { .. } => {
                if self.retry_at.is_some_and(|t| now < t) {
                    return self.retry_at.map_or(Next::Idle, Next::At);
                }
                self.retry_at = None;
                let mut n = 0;
                while self.pool.live() < self.quota && n < START_BATCH {
                    let k = self.progress.issued.fetch_add(1, Relaxed);
                    if self.connections.is_some_and(|max| k >= max) {
                        self.issuing = false;
                        return Next::Idle;
                    }
                    n += 1;
                    if !self.start(None) {
                        // Failed before it existed (it is counted): try again after a pause,
                        // doubling, so a start that cannot work does not spin the thread.
                        let at = Instant::now() + self.retry_wait;
                        self.retry_wait = (self.retry_wait * 2).min(RETRY_MAX);
                        self.retry_at = Some(at);
                        return Next::At(at);
                    }
                    self.retry_wait = RETRY_FIRST;
                }
                if self.quota == 0 {
                    self.issuing = false;
                    return Next::Idle;
                }
                if self.pool.live() < self.quota {
                    Next::Now
                } else {
                    Next::Idle
                }
            }
        }
    }

    /// Open loop: starts the next attempt if it is due and a slot is free; with `settle`,
    /// handles the events that came since the turn's last start first.
    fn issue_one(&mut self, now: Instant, settle: bool) -> Next {
        let Some(due) = self.plan.due(self.next_i) else {
            self.issuing = false;
            return Next::Idle;
        };
        let at = self.t0 + due.at;
        if at > now {
            return Next::At(at);
        }
        if self.pool.live() >= self.in_flight_max {
            // Wait for an attempt to end: events, not a spin.
            return Next::Idle;
        }
        if settle {
            self.settle();
        }
        self.next_i += self.stride;
        self.start_scheduled(at, due.burst);
        Next::Now
    }

    /// Between two starts of one turn: the events that came meanwhile (on loopback, the
    /// handshake of the attempt just started completes inside its `connect()`) are handled
    /// now, so each attempt's connect time runs from its own `connect()` to its own
    /// establishment, not to the end of the batch it was started in.
    fn settle(&mut self) {
        let Some(mut events) = self.ready.take() else {
            return;
        };
        if self.poll.poll(&mut events, Some(Duration::ZERO)).is_ok() {
            let turn = Instant::now();
            for ev in events.iter() {
                self.on_polled(ev, turn);
            }
        }
        self.ready = Some(events);
    }

    /// One event of a poll at `turn`: the pacing timer's (seen, edge-triggered: the next
    /// arming sets it even for the same instant), or an attempt's. False for the timer's.
    fn on_polled(&mut self, ev: &mio::event::Event, turn: Instant) -> bool {
        if ev.token() == TIMER {
            if let Some(t) = self.timer.as_mut() {
                t.expired();
            }
            return false;
        }
        self.on_event(ev.token().0, ev.is_error(), turn);
        true
    }

    fn issue_one_due(&mut self) -> Next {
        if !self.issuing || !matches!(self.plan.load, Load::Open { .. }) {
            return Next::Idle;
        }
        self.issue_one(Instant::now(), false)
    }

    /// Starts an attempt of the open loop's schedule, due `at` (one of a burst or not), its
    /// lateness recorded.
    fn start_scheduled(&mut self, at: Instant, burst: bool) {
        let now = Instant::now();
        let lag = now.saturating_duration_since(at);
        record_us(&mut self.rec.start_lag, lag);
        let window = |t: Instant| {
            (t.saturating_duration_since(self.t0).as_micros() / ARRIVAL_WINDOW.as_micros()) as u64
        };
        if burst {
            self.rec.burst_spread_us = self.rec.burst_spread_us.max(lag.as_micros() as u64);
            self.start_at(Some(at), now);
            // Kept after the start, so a steady attempt due meanwhile knows it.
            self.burst_end = Some((Instant::now(), at));
            return;
        }
        // A steady attempt due while its second's burst was still going out waited for the
        // schedule, not for the generator: its lag runs from the burst's last start.
        let from = match self.burst_end {
            Some((end, due)) if at >= due && at < end => {
                self.rec.behind_burst += 1;
                end
            }
            _ => at,
        };
        if matches!(self.plan.load, Load::Open { burst, .. } if burst > 0) {
            // Only a schedule with bursts has steady attempts apart from the rest.
            record_us(
                &mut self.rec.steady_lag,
                now.saturating_duration_since(from),
            );
        }
        self.rec.arrival(window(from), window(now));
        self.start_at(Some(at), now);
    }

    /// Starts one attempt; false when it failed before it existed (counted by its errno).
    fn start(&mut self, sched: Option<Instant>) -> bool {
        self.start_at(sched, Instant::now())
    }

    fn start_at(&mut self, sched: Option<Instant>, now: Instant) -> bool {
        if self.rec.attempts == 0 {
            self.first_started = Some(now);
        }
        self.rec.attempts += 1;
        self.progress.attempts.fetch_add(1, Relaxed);
        let (slot, spare) = self.pool.take();
        let (sock, registered) = match spare {
            Some(spare) => (spare.sock, spare.registered),
            None => {
                self.source += 1;
                match new_socket(self.plan, self.domain, self.source - 1) {
                    Ok(s) => (s, false),
                    Err(e) => return self.unstarted(slot, &e),
                }
            }
        };
        let connected = match sock.connect(&self.target) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => false,
            Err(e) => return self.unstarted(slot, &e),
        };
        if !registered {
            // Readable too from the start when we will read: no re-registration later.
            let interest = if self.plan.watches_reads() {
                Interest::WRITABLE | Interest::READABLE
            } else {
                Interest::WRITABLE
            };
            let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut SourceFd(&fd), Token(slot), interest)
            {
                return self.unstarted(slot, &e);
            }
        }
        self.seq += 1;
        let answer = AnswerReader::new(self.plan.answer, self.plan.expect.as_deref());
        self.pool
            .put(slot, Attempt::new(sock, self.seq, now, sched, answer));
        self.rec.peak_in_flight = self.rec.peak_in_flight.max(self.pool.live() as u64);
        if connected {
            self.established(slot, Instant::now());
            return true;
        }
        self.timers.push(Timer {
            at: now + self.plan.connect_timeout,
            slot,
            seq: self.seq,
            phase: Phase::Connecting,
        });
        true
    }

    /// An attempt that failed before it existed (no socket, no connect, no registration): its
    /// slot goes back and its errno is counted. Returns false, for `start`.
    fn unstarted(&mut self, slot: usize, e: &io::Error) -> bool {
        self.pool.give_back(slot);
        self.account(Ending::errno(errno(e)), Instant::now());
        false
    }

    /// An event the poll returned at `polled` for a slot: a slot whose attempt ended and was
    /// taken by a new one since (this turn) has an event that is not the new attempt's.
    fn on_event(&mut self, slot: usize, error: bool, polled: Instant) {
        let Some(a) = self.pool.get(slot) else {
            return;
        };
        if a.started > polled {
            return;
        }
        match a.phase {
            // Writable without EPOLLERR means connected: SO_ERROR is read only on errors.
            Phase::Connecting if !error => self.established(slot, Instant::now()),
            Phase::Connecting => match a.sock.take_error() {
                Ok(None) => self.established(slot, Instant::now()),
                Ok(Some(e)) | Err(e) => self.end(slot, Ending::errno(errno(&e))),
            },
            Phase::TlsHandshake => self.drive_tls(slot),
            Phase::Sending => self.send(slot),
            Phase::Reading => self.read(slot),
            Phase::Holding => {}
        }
    }

    fn established(&mut self, slot: usize, now: Instant) {
        let Some(a) = self.pool.get_mut(slot) else {
            return;
        };
        a.established = Some(now);
        let a = &*a;
        self.rec.established += 1;
        self.progress.established.fetch_add(1, Relaxed);
        self.last_established = Some(now);
        let took = now.saturating_duration_since(a.started);
        record_us(&mut self.rec.connect, took);
        record_us(&mut self.interval, took);
        if let Some(s) = a.sched {
            record_us(
                &mut self.rec.from_schedule,
                now.saturating_duration_since(s),
            );
        }
        // A SYN is first retransmitted after the initial RTO (1 s): a faster handshake had
        // none, and skipping TCP_INFO saves a system call on the hot path.
        if took < RETRANS_POSSIBLE {
            self.rec.retrans[0] += 1;
        } else if let Ok(Some(info)) = synack_sys::tcp_info(&a.sock) {
            self.rec.retrans[(info.total_retrans as usize).min(MAX_RETRANS_BUCKET)] += 1;
        } else {
            self.rec.retrans_unknown += 1;
        }
        // The plan outlives the loop: its TLS clients are borrowed, not counted per attempt.
        let plan = self.plan;
        if let Some(tls) = &plan.tls {
            return self.start_tls(slot, tls, now);
        }
        self.advance(slot);
    }

    /// Starts the TLS handshake of an established attempt (`--tls`), bounded by
    /// `--read-timeout`.
    fn start_tls(&mut self, slot: usize, tls: &crate::tls::TlsPlan, now: Instant) {
        let Some(a) = self.pool.get_mut(slot) else {
            return;
        };
        match tls.connect(a.seq) {
            Ok((c, offers)) => {
                self.rec.tls_offered += u64::from(offers);
                a.tls = Some(Box::new(c));
                a.phase = Phase::TlsHandshake;
                self.timers.push(Timer {
                    at: now + self.plan.read_timeout,
                    slot,
                    seq: a.seq,
                    phase: Phase::TlsHandshake,
                });
                self.drive_tls(slot);
            }
            Err(e) => self.tls_failed(slot, crate::tls::failure_kind(&e)),
        }
    }

    /// Moves a TLS handshake on as far as the socket allows; once done, records it and goes
    /// to the attempt's next phase.
    fn drive_tls(&mut self, slot: usize) {
        let Some(a) = self.pool.get_mut(slot) else {
            return;
        };
        let Attempt {
            sock,
            tls,
            tls_got,
            established,
            started,
            ..
        } = a;
        let Some(c) = tls.as_deref_mut() else {
            return self.advance(slot);
        };
        // A request follows: the handshake's last flight waits for it, and both leave in one
        // write (two small writes in a row would meet Nagle's algorithm and the server's
        // delayed ACK, 40 ms, where the server has nothing to send in between: TLS 1.2's
        // resumed handshake).
        let request_follows = a.sent < self.plan.payload.len();
        loop {
            if request_follows && !c.is_handshaking() {
                break;
            }
            match flush_tls(sock, c) {
                Ok(_) => {}
                Err(e) => return self.end(slot, Ending::errno(errno(&e))),
            }
            if !c.is_handshaking() {
                break;
            }
            if !c.wants_read() {
                // What it must write waits for the socket to drain.
                return;
            }
            match c.read_tls(&mut &*sock) {
                Ok(0) => return self.tls_failed(slot, "closed during the handshake".into()),
                Ok(_) => {
                    *tls_got = true;
                    if let Err(e) = c.process_new_packets() {
                        // The alert it owes the server, if the socket takes it.
                        let _ = flush_tls(sock, c);
                        return self.tls_failed(slot, crate::tls::failure_kind(&e));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.end(slot, Ending::errno(errno(&e))),
            }
        }
        let took = Instant::now().saturating_duration_since(established.unwrap_or(*started));
        record_us(&mut self.rec.tls_handshake, took);
        record_us(&mut self.interval_tls, took);
        if c.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            self.rec.tls_resumed += 1;
        } else {
            self.rec.tls_full += 1;
        }
        self.advance(slot);
    }

    /// A TLS session that failed: its kind tallied, the attempt ended.
    fn tls_failed(&mut self, slot: usize, kind: String) {
        *self.rec.tls_failures.entry(kind).or_default() += 1;
        self.end(slot, Ending::of(Outcome::TlsFailed));
    }

    /// Moves an established attempt to its next phase (send, read, hold) or ends it. Each
    /// phase is entered once, with its own deadline.
    fn advance(&mut self, slot: usize) {
        let now = Instant::now();
        let Some(a) = self.pool.get_mut(slot) else {
            return;
        };
        let Some((phase, within)) = next_phase(self.plan, a) else {
            return self.end(slot, Ending::of(Outcome::Ok));
        };
        if a.phase != phase {
            a.phase = phase;
            self.timers.push(Timer {
                at: now + within,
                slot,
                seq: a.seq,
                phase,
            });
            if phase == Phase::Holding {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&a.sock);
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
        }
        match phase {
            Phase::Sending => self.send(slot),
            Phase::Reading => self.read(slot),
            Phase::Holding | Phase::Connecting | Phase::TlsHandshake => {}
        }
    }

    fn send(&mut self, slot: usize) {
        let Some(a) = self.pool.get_mut(slot) else {
            return;
        };
        let total = self.plan.payload.len();
        loop {
            if a.sent < total {
                let chunk = match &self.plan.payload {
                    Payload::Filler(_) => &self.filler[..(total - a.sent).min(self.filler.len())],
                    Payload::Bytes(b) => &b[a.sent..],
                };
                let wrote = match a.tls.as_deref_mut() {
                    Some(c) => c.writer().write(chunk),
                    None => (&a.sock).write(chunk),
                };
                match wrote {
                    Ok(n) => a.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return self.end(slot, Ending::errno(errno(&e))),
                }
            }
            // With TLS, what rustls holds (the handshake's last flight, then the request) goes
            // out together.
            if let Some(c) = a.tls.as_deref_mut() {
                match flush_tls(&a.sock, c) {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => return self.end(slot, Ending::errno(errno(&e))),
                }
            }
            if a.sent >= total {
                break;
            }
        }
        self.advance(slot);
    }

    /// Reads the probe header (with `--probe`), then the answer: `--read` bytes or to the
    /// close, an HTTP response to its end, and at least `--expect`'s bytes, which it must
    /// start with (else `bad_response`). A close before any byte of an answer asked for is
    /// `no_answer`: the server took the connection but did not answer.
    fn read(&mut self, slot: usize) {
        let plan = self.plan;
        let probe = plan.probe;
        let expect = plan.expect.as_deref();
        let wants_answer = plan.answer != Answer::Ignored || expect.is_some();
        let Some(a) = self.pool.get_mut(slot) else {
            return;
        };
        if probe && a.header_got < probe::LEN {
            loop {
                match read_attempt(&a.sock, a.tls.as_deref_mut(), &mut a.header[a.header_got..]) {
                    ReadStep::Eof => {
                        return self.end(slot, Ending::Other("closed before the probe header"));
                    }
                    ReadStep::Data(n) => {
                        a.header_got += n;
                        let seen = a.header_got.min(probe::MAGIC.len());
                        if a.header_got == probe::LEN || a.header[..seen] != probe::MAGIC[..seen] {
                            break;
                        }
                    }
                    ReadStep::Wait => return,
                    ReadStep::Failed(n) => return self.end(slot, Ending::errno(n)),
                    ReadStep::TlsFailed(kind) => return self.tls_failed(slot, kind),
                }
            }
            let Some(h) = ProbeHeader::decode(&a.header) else {
                self.progress.fail(format!(
                    "no synack probe header from {}: is the server started with probe enabled? \
                     (first bytes: {:?})",
                    plan.target,
                    String::from_utf8_lossy(&a.header)
                ));
                return self.end(slot, Ending::Other("no synack probe header"));
            };
            // The handshake is the connect histogram; the rest comes with the first byte.
            let [_, wait, dispatch, _] = decompose(
                self.clock.ns(a.started),
                self.clock.ns(a.established.unwrap_or(a.started)),
                h.accept_ns,
                h.dispatch_ns,
                h.dispatch_ns,
            );
            record_signed_ns(&mut self.rec.queue_wait, wait);
            record_signed_ns(&mut self.rec.dispatch, dispatch);
            a.dispatch_ns = h.dispatch_ns;
            if !wants_answer {
                a.read_done = true;
                return self.advance(slot);
            }
        }
        loop {
            match read_attempt(&a.sock, a.tls.as_deref_mut(), &mut self.buf) {
                // The server closed before a byte of its answer: it took the connection (a
                // FIN comes only from an accepted socket) but did not answer.
                ReadStep::Eof if a.answer.got == 0 && wants_answer => {
                    return self.end(slot, Ending::of(Outcome::NoAnswer));
                }
                ReadStep::Eof => match a.answer.eof(plan.answer) {
                    Fed::Bad(why) => return self.bad_response(slot, &why),
                    Fed::More | Fed::Done => break,
                },
                ReadStep::Data(n) => {
                    if a.answer.got == 0 {
                        let now = Instant::now();
                        record_us(
                            &mut self.rec.first_byte,
                            now.saturating_duration_since(a.started),
                        );
                        if probe {
                            let [.., rest] = decompose(0, 0, 0, a.dispatch_ns, self.clock.ns(now));
                            record_signed_ns(&mut self.rec.rest, rest);
                        }
                    }
                    match a.answer.feed(plan.answer, expect, &self.buf[..n]) {
                        Fed::More => {}
                        Fed::Done => break,
                        Fed::Bad(why) => return self.bad_response(slot, &why),
                    }
                }
                ReadStep::Wait => return,
                ReadStep::Failed(n) => return self.end(slot, Ending::errno(n)),
                ReadStep::TlsFailed(kind) => return self.tls_failed(slot, kind),
            }
        }
        if wants_answer {
            let took = Instant::now().saturating_duration_since(a.started);
            record_us(&mut self.rec.response, took);
            record_us(&mut self.interval_response, took);
        }
        a.read_done = true;
        self.advance(slot);
    }

    /// An answer that is not what was asked: its sample kept, the attempt ended.
    fn bad_response(&mut self, slot: usize, why: &str) {
        self.rec.unexpected(why, 1);
        self.end(slot, Ending::of(Outcome::BadResponse));
    }

    fn expire_timers(&mut self, now: Instant) {
        while let Some(t) = self.timers.pop_due(now) {
            // A deadline that outlived its attempt, or the phase it was set for, is no more.
            if self
                .pool
                .get(t.slot)
                .is_some_and(|a| a.seq == t.seq && a.phase == t.phase)
            {
                self.judge_at_deadline(t.slot, t.at);
            }
        }
    }

    /// An attempt reached its phase's `deadline`: ask the kernel what really happened, and
    /// when, before classing it (see [`judge_deadline`]).
    fn judge_at_deadline(&mut self, slot: usize, deadline: Instant) {
        let Some(a) = self.pool.get(slot) else {
            return;
        };
        let view = kernel_view(a);
        let now = Instant::now();
        // Whether a kernel stamp of `ms_ago` (at its tick's resolution) is by the deadline.
        let by_deadline =
            |ms_ago: u32| now - Duration::from_millis(ms_ago.into()) <= deadline + KERNEL_TICK;
        let (ending, retransmitted) =
            judge_deadline(a, view, self.plan.connect_timeout, by_deadline);
        self.rec.timeout_retransmitted += u64::from(retransmitted);
        if ending == Ending::of(Outcome::TlsFailed) {
            let kind = if a.tls_got {
                "the handshake stalled (not done within --read-timeout)"
            } else {
                "closed before any of the handshake"
            };
            return self.tls_failed(slot, kind.into());
        }
        if ending == Ending::of(Outcome::BadResponse) {
            let why = format!(
                "not complete within --read-timeout ({} bytes): {}",
                a.answer.got,
                a.answer.sample()
            );
            return self.bad_response(slot, &why);
        }
        self.end(slot, ending);
    }

    /// Where every started attempt ends: its socket kept for the next attempt (a connection
    /// that ended well is reset by a disconnect instead of a close) or closed (with RST), its
    /// slot freed, its ending counted.
    fn end(&mut self, slot: usize, ending: Ending) {
        let Some(a) = self.pool.end(slot) else {
            return;
        };
        if let Some(code) = a.answer.status {
            *self.rec.statuses.entry(code).or_default() += 1;
        }
        if ending == Ending::of(Outcome::Ok)
            && self.plan.uses_socket_reuse()
            && synack_sys::disconnect(&a.sock).is_ok()
        {
            self.pool.keep(
                slot,
                Spare {
                    registered: a.phase != Phase::Holding,
                    sock: a.sock,
                },
            );
        }
        self.account(ending, a.started);
    }

    /// Counts an ending: of a started attempt (from [`Self::end`]) or of one that failed before
    /// it existed, in the totals and in the second it `started`.
    fn account(&mut self, ending: Ending, started: Instant) {
        match ending {
            Ending::Class(o, errno) => self.rec.outcome(o, errno),
            Ending::Other(msg) => self.rec.other(msg),
        }
        let o = ending.outcome();
        let second = started.saturating_duration_since(self.t0).as_secs();
        self.rec.in_second(second, o);
        if o != Outcome::Ok {
            self.progress.errors.fetch_add(1, Relaxed);
        }
        if o == Outcome::Late {
            self.progress.late.fetch_add(1, Relaxed);
        }
        self.progress.finished.fetch_add(1, Relaxed);
    }

    /// The run stops early (a fatal error, or past the hard end): every attempt still in
    /// flight is judged as at its deadline, by what the kernel says of it.
    fn abandon_all(&mut self) {
        let now = Instant::now();
        for slot in self.pool.indices() {
            self.judge_at_deadline(slot, now);
        }
    }

    fn roll_interval(&mut self, now: Instant) {
        while now >= self.t0 + Duration::from_secs(self.interval_no + 1) {
            self.flush_interval();
            self.interval_no += 1;
        }
    }

    fn flush_interval(&mut self) {
        if self.interval.is_empty()
            && self.interval_response.is_empty()
            && self.interval_tls.is_empty()
        {
            return;
        }
        let connect = self.interval.clone();
        let response = self.interval_response.clone();
        let tls = self.interval_tls.clone();
        self.interval.reset();
        self.interval_response.reset();
        self.interval_tls.reset();
        let _ = self.intervals.send(Interval {
            second: self.interval_no,
            connect,
            response,
            tls,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::net::{SocketAddr, TcpListener};
    use std::sync::mpsc::channel;

    use super::*;

    fn plan(target: SocketAddr, read: Option<usize>) -> Plan {
        let mut p = Plan::for_tests(target, Load::Closed { concurrency: 1 });
        p.duration = Duration::from_secs(1);
        p.answer = read.map_or(Answer::Ignored, Answer::Bytes);
        p.read_timeout = Duration::from_millis(50);
        p.reuse_sockets = false;
        p.connect_timeout = Duration::from_millis(50);
        p.max_in_flight = 16;
        p
    }

    /// The slot of the one attempt in flight.
    fn live_slot(t: &Generator<'_>) -> usize {
        t.pool.indices().find(|&i| t.pool.get(i).is_some()).unwrap()
    }

    fn thread<'a>(plan: &'a Plan, progress: &'a Progress) -> Generator<'a> {
        let (tx, rx) = channel();
        // The receiver may go: interval sends then fail, which the engine ignores.
        drop(rx);
        Generator::new(plan, 0, Instant::now(), Poll::new().unwrap(), tx, progress)
    }

    /// Polls until the slot's attempt is past connecting (bounded: 5 s).
    fn poll_until_established(t: &mut Generator<'_>) {
        let mut events = Events::with_capacity(8);
        let before = t.rec.established;
        for _ in 0..500 {
            if t.rec.established > before {
                return;
            }
            t.poll
                .poll(&mut events, Some(Duration::from_millis(10)))
                .unwrap();
            for ev in events.iter() {
                t.on_event(ev.token().0, ev.is_error(), Instant::now());
            }
        }
        panic!("not established");
    }

    #[test]
    fn a_connection_the_kernel_established_but_the_engine_never_polled_is_late() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let plan = plan(listener.local_addr().unwrap(), None);
        let progress = Progress::default();
        let mut t = thread(&plan, &progress);
        let mut stalled = 0;
        // connect() on loopback usually returns EINPROGRESS with the handshake done by the
        // time it returns; then only the event says so, and the engine, stalled here, never
        // reads it before the deadline.
        for _ in 0..20 {
            assert!(t.start(None));
            if t.pool.live() == 1 {
                stalled += 1;
                let sock = &t.pool.get(live_slot(&t)).unwrap().sock;
                for _ in 0..500 {
                    let state = synack_sys::tcp_info(sock).unwrap().unwrap().state;
                    if state == synack_sys::TCP_ESTABLISHED {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                std::thread::sleep(plan.connect_timeout + Duration::from_millis(10));
                t.expire_timers(Instant::now());
                assert_eq!(t.pool.live(), 0);
            }
            let _ = listener.accept();
        }
        assert!(stalled > 0, "every connect completed at once");
        assert_eq!(t.rec.count(Outcome::Late), stalled);
        assert_eq!(t.rec.count(Outcome::Timeout), 0);
        assert_eq!(progress.late.load(Relaxed), stalled);
    }

    #[test]
    fn a_connection_the_server_closed_before_the_late_engine_looked_is_late() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let plan = plan(listener.local_addr().unwrap(), None);
        let progress = Progress::default();
        let mut t = thread(&plan, &progress);
        let mut stalled = 0;
        for _ in 0..20 {
            assert!(t.start(None));
            // The server takes it and closes it at once: the client's side is in CLOSE_WAIT
            // by the deadline, past SYN_SENT all the same.
            let (server_side, _) = listener.accept().unwrap();
            drop(server_side);
            if t.pool.live() == 1 {
                stalled += 1;
                std::thread::sleep(plan.connect_timeout + Duration::from_millis(10));
                t.expire_timers(Instant::now());
                assert_eq!(t.pool.live(), 0);
            }
        }
        assert!(stalled > 0, "every connect completed at once");
        assert_eq!(t.rec.count(Outcome::Late), stalled);
        assert_eq!(t.rec.count(Outcome::Timeout), 0);
    }

    #[test]
    fn a_late_burst_start_is_the_bursts_spread_and_a_late_steady_one_its_lag() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut plan = plan(listener.local_addr().unwrap(), None);
        plan.load = Load::Open {
            from: 10.0,
            to: 10.0,
            burst: 5,
        };
        let progress = Progress::default();
        let mut t = thread(&plan, &progress);
        let due = Instant::now() - Duration::from_millis(20);
        t.start_scheduled(due, true);
        assert!(t.rec.burst_spread_us >= 20_000, "{}", t.rec.burst_spread_us);
        assert!(t.rec.steady_lag.is_empty());
        t.start_scheduled(due, false);
        assert_eq!(t.rec.steady_lag.len(), 1);
        assert_eq!(t.rec.start_lag.len(), 2);
    }

    #[test]
    fn an_event_polled_before_an_attempt_began_is_not_its_own() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let plan = plan(listener.local_addr().unwrap(), None);
        let progress = Progress::default();
        let mut t = thread(&plan, &progress);
        let polled = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(t.start(None));
        if t.pool.live() == 1 {
            let slot = live_slot(&t);
            // A writable event from the poll of the turn before: ignored, the attempt waits
            // for its own.
            t.on_event(slot, false, polled);
            assert_eq!(t.rec.established, 0);
            t.on_event(slot, false, Instant::now());
            assert_eq!(t.rec.established, 1);
        }
    }

    #[test]
    fn an_answer_waiting_at_the_read_deadline_is_late_not_unserved() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let plan = plan(listener.local_addr().unwrap(), Some(2));
        let progress = Progress::default();
        let mut t = thread(&plan, &progress);
        assert!(t.start(None));
        poll_until_established(&mut t);
        let (mut peer, _) = listener.accept().unwrap();
        // The server answers in time; the engine stalls past the deadline without looking.
        peer.write_all(b"hi").unwrap();
        std::thread::sleep(plan.read_timeout + Duration::from_millis(10));
        t.expire_timers(Instant::now());
        assert_eq!(t.rec.count(Outcome::Late), 1);
        assert_eq!(t.rec.count(Outcome::Unserved), 0);
        // And one that got nothing is unserved.
        assert!(t.start(None));
        poll_until_established(&mut t);
        std::thread::sleep(plan.read_timeout + Duration::from_millis(10));
        t.expire_timers(Instant::now());
        assert_eq!(t.rec.count(Outcome::Unserved), 1);
    }

    #[test]
    fn a_syn_a_full_queue_dropped_is_a_timeout() {
        // Backlog 0 holds one connection: with it there, the kernel drops further SYNs.
        let l = socket2::Socket::new(Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        l.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        l.listen(0).unwrap();
        let addr = l.local_addr().unwrap().as_socket().unwrap();
        let _first = std::net::TcpStream::connect(addr).unwrap();
        let plan = plan(addr, None);
        let progress = Progress::default();
        let mut t = thread(&plan, &progress);
        assert!(t.start(None));
        assert_eq!(t.pool.live(), 1);
        std::thread::sleep(plan.connect_timeout + Duration::from_millis(10));
        t.expire_timers(Instant::now());
        assert_eq!(t.rec.count(Outcome::Timeout), 1);
        assert_eq!(t.rec.count(Outcome::Late), 0);
        // 50 ms is well before the first SYN retransmission (1 s).
        assert_eq!(t.rec.timeout_retransmitted, 0);
    }

    #[test]
    fn a_closed_loop_backs_off_after_a_start_that_cannot_work() {
        // Multicast: the kernel refuses a TCP connect at once (ENETUNREACH), no packet sent.
        let plan = plan("224.0.0.1:80".parse().unwrap(), None);
        let progress = Progress::default();
        let mut t = thread(&plan, &progress);
        t.quota = 4;
        let now = Instant::now();
        assert!(matches!(t.issue(now), Next::At(_)));
        assert_eq!(
            t.rec.count(Outcome::Unreachable),
            1,
            "one try, then a pause"
        );
        // Within the pause, nothing is tried.
        assert!(matches!(t.issue(now), Next::At(_)));
        assert_eq!(t.rec.attempts, 1);
        assert_eq!(t.retry_wait, RETRY_FIRST * 2);
    }
}
