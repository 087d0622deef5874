//! One connection attempt and the decisions about it that need no socket: which phase comes
//! next, and how an attempt that reached its deadline ended, from what the kernel says of it.
//! The event loop does the I/O and asks these; they are unit-tested here on their own.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use socket2::Socket;
use synack::probe;

use super::answer::AnswerReader;
use crate::outcome::Outcome;
use crate::plan::Plan;

/// Linux's initial SYN retransmission timeout (`TCP_TIMEOUT_INIT`).
pub(super) const SYN_RTO: Duration = Duration::from_secs(1);

/// The resolution of the kernel's millisecond stamps in `TCP_INFO` (jiffies: 10 ms at the
/// slowest tick, HZ=100); a stamp within this of a deadline counts as by the deadline.
pub(super) const KERNEL_TICK: Duration = Duration::from_millis(10);

/// Where an attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Phase {
    Connecting,
    /// The TLS handshake (`--tls`), after the TCP one.
    TlsHandshake,
    Sending,
    Reading,
    Holding,
}

/// One connection attempt. Its socket is registered with the thread's poll (under its slot's
/// token) in every phase but `Holding`.
pub(super) struct Attempt {
    pub sock: Socket,
    /// Which attempt of the thread this is: a timer or an event for an earlier one in the
    /// same slot is not this one's.
    pub seq: u64,
    pub phase: Phase,
    pub started: Instant,
    pub sched: Option<Instant>,
    pub sent: usize,
    /// The answer read so far.
    pub answer: AnswerReader,
    pub read_done: bool,
    pub established: Option<Instant>,
    pub header: [u8; probe::LEN],
    pub header_got: usize,
    pub dispatch_ns: u64,
    /// With `--tls`: the client connection.
    pub tls: Option<Box<rustls::ClientConnection>>,
    /// Whether any of the server's handshake came.
    pub tls_got: bool,
}

impl Attempt {
    pub fn new(
        sock: Socket,
        seq: u64,
        started: Instant,
        sched: Option<Instant>,
        answer: AnswerReader,
    ) -> Self {
        Attempt {
            sock,
            seq,
            phase: Phase::Connecting,
            started,
            sched,
            sent: 0,
            answer,
            read_done: false,
            established: None,
            header: [0; probe::LEN],
            header_got: 0,
            dispatch_ns: 0,
            tls: None,
            tls_got: false,
        }
    }
}

/// How an attempt ended: a class (with its errno), or `other` with a message of our own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    Class(Outcome, Option<i32>),
    Other(&'static str),
}

impl Ending {
    pub fn of(o: Outcome) -> Self {
        Ending::Class(o, None)
    }

    pub fn errno(n: i32) -> Self {
        Ending::Class(Outcome::from_errno(n), Some(n))
    }

    pub fn outcome(self) -> Outcome {
        match self {
            Ending::Class(o, _) => o,
            Ending::Other(_) => Outcome::Other,
        }
    }
}

/// The phase an established attempt goes to next, with how long it may take there; `None`
/// when it is done. Each phase is entered once: send, then read (or the probe header), then
/// hold.
pub(super) fn next_phase(plan: &Plan, a: &Attempt) -> Option<(Phase, Duration)> {
    if a.sent < plan.payload.len() {
        Some((Phase::Sending, plan.read_timeout))
    } else if plan.reads() && !a.read_done {
        Some((Phase::Reading, plan.read_timeout))
    } else {
        plan.hold
            .filter(|_| a.phase != Phase::Holding)
            .map(|h| (Phase::Holding, h))
    }
}

/// What waits to be read on a socket, without taking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waiting {
    Nothing,
    /// The peer closed.
    Eof,
    Data,
    /// The connection's error, as an errno.
    Error(i32),
}

/// What the kernel says of an attempt at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KernelView {
    /// A pending `SO_ERROR`.
    pub so_error: Option<i32>,
    /// `TCP_INFO`, where it could be read.
    pub info: Option<synack_sys::TcpInfo>,
    /// Reading: what waits in the receive queue.
    pub waiting: Waiting,
}

/// Asks the kernel about an attempt at its deadline (the reads a verdict needs, no more).
pub(super) fn kernel_view(a: &Attempt) -> KernelView {
    let so_error = match a.sock.take_error() {
        Ok(Some(e)) | Err(e) => Some(errno(&e)),
        Ok(None) => None,
    };
    let waiting = if a.phase == Phase::Reading {
        let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match a.sock.peek(&mut b) {
            Ok(0) => Waiting::Eof,
            Ok(_) => Waiting::Data,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Waiting::Nothing,
            Err(e) => Waiting::Error(errno(&e)),
        }
    } else {
        Waiting::Nothing
    };
    KernelView {
        so_error,
        info: synack_sys::tcp_info(&a.sock).ok().flatten(),
        waiting,
    }
}

/// How an attempt that reached its phase's deadline ended, from what the kernel says, so
/// the server is blamed only for what it did. `by_deadline(ms_ago)` says whether a kernel
/// stamp of `ms_ago` milliseconds ago falls by the deadline. Also says whether a timeout's
/// SYN had been retransmitted.
pub(super) fn judge_deadline(
    a: &Attempt,
    view: KernelView,
    connect_timeout: Duration,
    by_deadline: impl Fn(u32) -> bool,
) -> (Ending, bool) {
    match a.phase {
        Phase::Connecting => {
            // An error the generator has not read yet (an RST, an ICMP error) is the
            // attempt's true ending.
            if let Some(n) = view.so_error {
                return (Ending::errno(n), false);
            }
            match view.info {
                Some(i) if i.state == synack_sys::TCP_SYN_SENT => {
                    (Ending::of(Outcome::Timeout), i.total_retrans > 0)
                }
                // Past SYN_SENT (established, or already closing): the handshake is done.
                // Without a SYN retransmission the SYN-ACK came within the first RTO, so by a
                // deadline at least that long; otherwise its time tells (the last ACK
                // received is the SYN-ACK or later).
                Some(i) => {
                    let in_time = (i.total_retrans == 0 && connect_timeout >= SYN_RTO)
                        || by_deadline(i.last_ack_recv_ms);
                    if in_time {
                        (Ending::of(Outcome::Late), false)
                    } else {
                        (Ending::of(Outcome::Timeout), i.total_retrans > 0)
                    }
                }
                // Where TCP_INFO is unknown, an unanswered connect is all there is to say.
                None => (Ending::of(Outcome::Timeout), false),
            }
        }
        Phase::TlsHandshake => {
            let came_in_time = view.info.is_none_or(|i| by_deadline(i.last_data_recv_ms));
            let ending = match view.waiting {
                Waiting::Data if came_in_time => Ending::of(Outcome::Late),
                Waiting::Error(n) => Ending::errno(n),
                // Some of the server's handshake came, then it stalled or closed.
                _ if a.tls_got => Ending::of(Outcome::TlsFailed),
                // It closed before a byte of its handshake: it took the connection.
                Waiting::Eof => Ending::of(Outcome::TlsFailed),
                // Nothing came: the server never took it from its queue, or never answered.
                Waiting::Data | Waiting::Nothing => Ending::of(Outcome::Unserved),
            };
            (ending, false)
        }
        Phase::Sending => (Ending::of(Outcome::Unserved), false),
        Phase::Reading => {
            // Whether what is waiting came by the deadline (the kernel's stamp of the last
            // data segment): then the generator was late to read it.
            let came_in_time = view.info.is_none_or(|i| by_deadline(i.last_data_recv_ms));
            let ending = match view.waiting {
                // Part of the answer came and more was asked (an HTTP response's end,
                // `--expect`'s bytes): short of it, unless the rest waits, in time.
                _ if a.answer.got > 0 && a.answer.incomplete() => {
                    if view.waiting == Waiting::Data && came_in_time {
                        Ending::of(Outcome::Late)
                    } else {
                        Ending::of(Outcome::BadResponse)
                    }
                }
                // `--read N`: done as far as it went.
                _ if a.answer.got > 0 => Ending::of(Outcome::Ok),
                // The server closed without a byte: it took the connection, no answer.
                Waiting::Eof => Ending::of(Outcome::NoAnswer),
                // What the kernel holds is what the server sent; whether it came in time, the
                // kernel's stamp of the last data segment says.
                Waiting::Data if came_in_time => Ending::of(Outcome::Late),
                Waiting::Data => Ending::of(Outcome::Unserved),
                Waiting::Error(n) => Ending::errno(n),
                // The probe header proves the server accepted it; its answer never came.
                Waiting::Nothing if a.header_got >= probe::LEN => Ending::of(Outcome::NoAnswer),
                // Nothing sent, nothing came, yet segments came in past the SYN-ACK: the
                // server re-sent its SYN-ACK, so its half of the handshake never completed
                // (the final ACK was lost). Data from the client would have completed it.
                Waiting::Nothing if a.sent == 0 && view.info.is_some_and(resent_syn_ack) => {
                    Ending::of(Outcome::HalfOpen)
                }
                Waiting::Nothing => Ending::of(Outcome::Unserved),
            };
            (ending, false)
        }
        Phase::Holding => (Ending::of(Outcome::Ok), false),
    }
}

/// Whether a connection that sent nothing and received no data got more than its SYN-ACK:
/// the server re-sent the SYN-ACK, because the final ACK of the handshake never reached it.
fn resent_syn_ack(i: synack_sys::TcpInfo) -> bool {
    i.state == synack_sys::TCP_ESTABLISHED && i.segs_in.is_some_and(|n| n >= 2)
}

/// What one non-blocking read gave.
pub(super) enum ReadStep {
    Data(usize),
    Eof,
    /// Nothing more for now: wait for readiness.
    Wait,
    /// Failed with this errno.
    Failed(i32),
    /// The TLS session failed (its kind, for the tally).
    TlsFailed(String),
}

/// Reads once from an attempt: the plain socket, or, with TLS, the decrypted stream (taking
/// more records from the socket as needed).
pub(super) fn read_attempt(
    sock: &Socket,
    tls: Option<&mut rustls::ClientConnection>,
    buf: &mut [u8],
) -> ReadStep {
    let Some(c) = tls else {
        return read_some(sock, buf);
    };
    loop {
        match c.reader().read(buf) {
            Ok(0) => return ReadStep::Eof,
            Ok(n) => return ReadStep::Data(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // Closed without close_notify: an end all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return ReadStep::Eof,
            Err(e) => return ReadStep::TlsFailed(e.to_string()),
        }
        match c.read_tls(&mut &*sock) {
            Ok(0) => return ReadStep::Eof,
            Ok(_) => {
                if let Err(e) = c.process_new_packets() {
                    return ReadStep::TlsFailed(crate::tls::failure_kind(&e));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadStep::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return ReadStep::Failed(errno(&e)),
        }
    }
}

/// Writes what TLS has pending to the socket: `Ok(true)` when all of it went, `Ok(false)`
/// when the socket is full (wait for writability).
pub(super) fn flush_tls(sock: &Socket, c: &mut rustls::ClientConnection) -> io::Result<bool> {
    while c.wants_write() {
        match c.write_tls(&mut &*sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads once (retrying on `EINTR`).
pub(super) fn read_some(sock: &Socket, buf: &mut [u8]) -> ReadStep {
    loop {
        return match (&*sock).read(buf) {
            Ok(0) => ReadStep::Eof,
            Ok(n) => ReadStep::Data(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ReadStep::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => ReadStep::Failed(errno(&e)),
        };
    }
}

pub(super) fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Answer, Payload};
    use crate::plan::Load;

    fn attempt(phase: Phase) -> Attempt {
        let sock = synack_sys::tcp_socket(socket2::Domain::IPV4).unwrap();
        let mut a = Attempt::new(sock, 1, Instant::now(), None, AnswerReader::default());
        a.phase = phase;
        a
    }

    fn info(state: u8, retrans: u32, last_ack: u32, last_data: u32) -> Option<synack_sys::TcpInfo> {
        Some(synack_sys::TcpInfo {
            state,
            total_retrans: retrans,
            last_ack_recv_ms: last_ack,
            last_data_recv_ms: last_data,
            ..Default::default()
        })
    }

    fn view(
        so_error: Option<i32>,
        info: Option<synack_sys::TcpInfo>,
        waiting: Waiting,
    ) -> KernelView {
        KernelView {
            so_error,
            info,
            waiting,
        }
    }

    const ESTABLISHED: u8 = synack_sys::TCP_ESTABLISHED;
    const SYN_SENT: u8 = synack_sys::TCP_SYN_SENT;
    const CLOSE_WAIT: u8 = 8;

    /// Stamps of at most 100 ms ago fall by the deadline.
    fn by(ms: u32) -> bool {
        ms <= 100
    }

    #[test]
    fn at_the_connect_deadline_the_kernel_decides() {
        let a = attempt(Phase::Connecting);
        let long = Duration::from_secs(3);
        let short = Duration::from_millis(200);
        let cases = [
            // An error waiting: its class.
            (
                view(Some(libc::ECONNREFUSED), info(7, 0, 0, 0), Waiting::Nothing),
                long,
                Ending::errno(libc::ECONNREFUSED),
                false,
            ),
            // Still SYN_SENT: the server's, with or without retransmissions.
            (
                view(None, info(SYN_SENT, 0, 0, 0), Waiting::Nothing),
                long,
                Ending::of(Outcome::Timeout),
                false,
            ),
            (
                view(None, info(SYN_SENT, 2, 0, 0), Waiting::Nothing),
                long,
                Ending::of(Outcome::Timeout),
                true,
            ),
            // Established, no retransmission, a deadline past the RTO: the generator's.
            (
                view(None, info(ESTABLISHED, 0, 5000, 0), Waiting::Nothing),
                long,
                Ending::of(Outcome::Late),
                false,
            ),
            // Or already closed by the server: still past SYN_SENT, still the generator's.
            (
                view(None, info(CLOSE_WAIT, 0, 5000, 0), Waiting::Nothing),
                long,
                Ending::of(Outcome::Late),
                false,
            ),
            // After a retransmission, the SYN-ACK's stamp: by the deadline is late...
            (
                view(None, info(ESTABLISHED, 1, 300, 0), Waiting::Nothing),
                long,
                Ending::of(Outcome::Late),
                false,
            ),
            // ...after it (the last ACK only 50 ms ago) is a timeout whose SYN was retransmitted.
            (
                view(None, info(ESTABLISHED, 1, 50, 0), Waiting::Nothing),
                long,
                Ending::of(Outcome::Timeout),
                true,
            ),
            // A deadline shorter than the RTO: the stamp decides even without retransmission.
            (
                view(None, info(ESTABLISHED, 0, 50, 0), Waiting::Nothing),
                short,
                Ending::of(Outcome::Timeout),
                false,
            ),
            (
                view(None, info(ESTABLISHED, 0, 150, 0), Waiting::Nothing),
                short,
                Ending::of(Outcome::Late),
                false,
            ),
            // No TCP_INFO: a timeout, all that can be said.
            (
                view(None, None, Waiting::Nothing),
                long,
                Ending::of(Outcome::Timeout),
                false,
            ),
        ];
        for (i, (v, timeout, want, retrans)) in cases.into_iter().enumerate() {
            // "by the deadline" here: at least 100 ms ago.
            assert_eq!(
                judge_deadline(&a, v, timeout, |ms| ms >= 100),
                (want, retrans),
                "case {i}"
            );
        }
    }

    #[test]
    fn at_the_read_deadline_the_kernel_decides() {
        let mut a = attempt(Phase::Reading);
        let t = Duration::from_secs(3);
        let est = info(ESTABLISHED, 0, 0, 500);
        let cases = [
            (
                view(None, est, Waiting::Nothing),
                Ending::of(Outcome::Unserved),
            ),
            (view(None, est, Waiting::Eof), Ending::of(Outcome::NoAnswer)),
            // Data waiting that came by the deadline: the generator's lateness.
            (
                view(None, info(ESTABLISHED, 0, 0, 50), Waiting::Data),
                Ending::of(Outcome::Late),
            ),
            // Data that came after it: the server was too slow.
            (
                view(None, info(ESTABLISHED, 0, 0, 500), Waiting::Data),
                Ending::of(Outcome::Unserved),
            ),
            (
                view(None, est, Waiting::Error(libc::ECONNRESET)),
                Ending::errno(libc::ECONNRESET),
            ),
        ];
        for (i, (v, want)) in cases.into_iter().enumerate() {
            assert_eq!(judge_deadline(&a, v, t, by).0, want, "case {i}");
        }
        // The probe header came, the answer did not: the server took it.
        a.header_got = probe::LEN;
        assert_eq!(
            judge_deadline(&a, view(None, est, Waiting::Nothing), t, by).0,
            Ending::of(Outcome::NoAnswer)
        );
        // Part of the answer came: done as far as it went.
        a.answer.feed(Answer::Bytes(5), None, b"h");
        assert_eq!(
            judge_deadline(&a, view(None, est, Waiting::Nothing), t, by).0,
            Ending::of(Outcome::Ok)
        );
        // Part of an HTTP response: short of its end, unless the rest waits in time.
        let http = Answer::Http {
            head_request: false,
        };
        a.answer = AnswerReader::new(http, None);
        a.answer.feed(http, None, b"HTTP/1.1 200 OK\r\n");
        assert_eq!(
            judge_deadline(&a, view(None, est, Waiting::Nothing), t, by).0,
            Ending::of(Outcome::BadResponse)
        );
        assert_eq!(
            judge_deadline(
                &a,
                view(None, info(ESTABLISHED, 0, 0, 50), Waiting::Data),
                t,
                by
            )
            .0,
            Ending::of(Outcome::Late)
        );
        // Holding ends well; a send that did not finish is unserved.
        assert_eq!(
            judge_deadline(
                &attempt(Phase::Holding),
                view(None, est, Waiting::Nothing),
                t,
                by
            )
            .0,
            Ending::of(Outcome::Ok)
        );
        assert_eq!(
            judge_deadline(
                &attempt(Phase::Sending),
                view(None, est, Waiting::Nothing),
                t,
                by
            )
            .0,
            Ending::of(Outcome::Unserved)
        );
    }

    #[test]
    fn phases_follow_the_plan_once_each() {
        let mut plan = Plan::for_tests(
            "127.0.0.1:1".parse().unwrap(),
            Load::Closed { concurrency: 1 },
        );
        plan.payload = Payload::Filler(3);
        plan.answer = Answer::Bytes(2);
        plan.read_timeout = Duration::from_secs(2);
        plan.hold = Some(Duration::from_secs(5));
        let mut a = attempt(Phase::Connecting);
        assert_eq!(
            next_phase(&plan, &a),
            Some((Phase::Sending, plan.read_timeout))
        );
        a.sent = 3;
        assert_eq!(
            next_phase(&plan, &a),
            Some((Phase::Reading, plan.read_timeout))
        );
        a.read_done = true;
        assert_eq!(
            next_phase(&plan, &a),
            Some((Phase::Holding, Duration::from_secs(5)))
        );
        a.phase = Phase::Holding;
        assert_eq!(next_phase(&plan, &a), None);
        plan.hold = None;
        plan.payload = Payload::Filler(0);
        plan.answer = Answer::Ignored;
        assert_eq!(next_phase(&plan, &attempt(Phase::Connecting)), None);
    }
}
