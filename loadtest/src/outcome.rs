//! How an attempt ended, classified the way the kernel reports it.

use serde::{Deserialize, Serialize};

/// The class of an attempt's ending.
///
/// ```
/// use synack_load::outcome::Outcome;
///
/// assert_eq!(Outcome::from_errno(libc::ECONNREFUSED), Outcome::Refused);
/// assert_eq!(Outcome::from_errno(libc::EMFILE).name(), "fd_limit");
/// // The generator's own classes are marked as such, never blamed on the server.
/// assert!(Outcome::NotStarted.is_generators() && !Outcome::Timeout.is_generators());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Connected and did all that was asked.
    Ok,
    /// `ECONNREFUSED`: an RST answered the SYN.
    Refused,
    /// `ETIMEDOUT`, or not established within `--connect-timeout`: the SYN was never answered.
    Timeout,
    /// `EHOSTUNREACH` / `ENETUNREACH`: no route, or an ICMP error came back.
    Unreachable,
    /// `ECONNRESET` / `EPIPE` after the connection was established.
    Reset,
    /// `EADDRNOTAVAIL`: no local port left for this destination.
    PortsExhausted,
    /// `EMFILE` / `ENFILE`: the generator ran out of file descriptors.
    FdLimit,
    /// Established, but no first byte came within `--read-timeout`, and nothing showed that
    /// the server took the connection from its queue.
    Unserved,
    /// Established on the client's side, but the server's half of the handshake never
    /// completed: the final ACK was lost, and the server went on re-sending its SYN-ACK (the
    /// client's `TCP_INFO` counted segments in with no data, or the server's listener still
    /// held it in SYN-RECV). The server never had the connection in its accept queue.
    HalfOpen,
    /// The server took the connection (its probe header came, or it closed the connection)
    /// but no byte of its answer came within `--read-timeout`.
    NoAnswer,
    /// The answer was not what was asked: it did not start with `--expect`, or an HTTP
    /// response was malformed, cut short by a close, or not complete within `--read-timeout`.
    BadResponse,
    /// The TLS handshake failed: an alert from the server, a certificate refused, no common
    /// version or ALPN protocol, or the server closed or stalled during it (the kinds are
    /// tallied in the report).
    TlsFailed,
    /// The generator's own lateness: at the attempt's deadline the kernel had done its part
    /// (the connection was established, or the answer was waiting to be read), but the
    /// generator had not got to it.
    Late,
    /// The schedule asked for the attempt but the generator never started it before the end
    /// of the run (open loop): it could not keep up.
    NotStarted,
    /// Any other error (the errno is reported).
    Other,
}

impl Outcome {
    /// Every class, in report order.
    pub const ALL: [Outcome; 15] = [
        Outcome::Ok,
        Outcome::Refused,
        Outcome::Timeout,
        Outcome::Unreachable,
        Outcome::Reset,
        Outcome::PortsExhausted,
        Outcome::FdLimit,
        Outcome::Unserved,
        Outcome::HalfOpen,
        Outcome::NoAnswer,
        Outcome::BadResponse,
        Outcome::TlsFailed,
        Outcome::Late,
        Outcome::NotStarted,
        Outcome::Other,
    ];

    /// Classifies an errno from `socket`, `bind` or `connect`/`SO_ERROR`.
    pub fn from_errno(errno: i32) -> Outcome {
        match errno {
            libc::ECONNREFUSED => Outcome::Refused,
            libc::ETIMEDOUT => Outcome::Timeout,
            libc::EHOSTUNREACH | libc::ENETUNREACH => Outcome::Unreachable,
            libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED => Outcome::Reset,
            libc::EADDRNOTAVAIL | libc::EADDRINUSE => Outcome::PortsExhausted,
            libc::EMFILE | libc::ENFILE => Outcome::FdLimit,
            _ => Outcome::Other,
        }
    }

    /// The snake_case name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::Unreachable => "unreachable",
            Outcome::Reset => "reset",
            Outcome::PortsExhausted => "ports_exhausted",
            Outcome::FdLimit => "fd_limit",
            Outcome::Unserved => "unserved",
            Outcome::HalfOpen => "half_open",
            Outcome::NoAnswer => "no_answer",
            Outcome::BadResponse => "bad_response",
            Outcome::TlsFailed => "tls_failed",
            Outcome::Late => "late",
            Outcome::NotStarted => "not_started",
            Outcome::Other => "other",
        }
    }

    /// One line on what the class means and where to look.
    pub fn meaning(self) -> &'static str {
        match self {
            Outcome::Ok => "connected and done",
            Outcome::Refused => {
                "an RST answered the SYN: nothing listens on that port, or the server's queue is full with tcp_abort_on_overflow=1"
            }
            Outcome::Timeout => {
                "the SYN went unanswered until --connect-timeout (the kernel still in SYN_SENT at the deadline)"
            }
            Outcome::Unreachable => {
                "no route to the host or network (an ICMP error or a local route)"
            }
            Outcome::Reset => {
                "reset after connecting: the server closed with RST (overload policy, shedding) or crashed"
            }
            Outcome::PortsExhausted => {
                "no local port left for this destination: add source addresses (--source) or close with RST"
            }
            Outcome::FdLimit => "the generator ran out of file descriptors (ulimit -n)",
            Outcome::Unserved => {
                "connected but no first byte within --read-timeout: the server never took it from its queue, or never answered"
            }
            Outcome::HalfOpen => {
                "the client connected but the server's handshake never completed: the final ACK was lost and the server kept re-sending its SYN-ACK (TCP_INFO); the server never had it"
            }
            Outcome::NoAnswer => {
                "the server took it (probe header, or it closed) but sent no answer within --read-timeout"
            }
            Outcome::BadResponse => {
                "the answer was not what was asked: not starting with --expect, or an HTTP response malformed, cut short, or not complete within --read-timeout"
            }
            Outcome::TlsFailed => {
                "the TLS handshake failed: an alert, a certificate refused, no common version or ALPN, or the server closed or stalled during it (kinds tallied)"
            }
            Outcome::Late => {
                "the generator's lateness: the kernel had established it (or the answer waited) but the generator got to it after its deadline"
            }
            Outcome::NotStarted => {
                "the generator's shortfall: scheduled, but never started before the end of the run"
            }
            Outcome::Other => "another error (see the errno list)",
        }
    }

    /// Whether the class describes the generator (its host's limits, its own lateness) rather
    /// than the server.
    pub fn is_generators(self) -> bool {
        matches!(
            self,
            Outcome::FdLimit | Outcome::PortsExhausted | Outcome::Late | Outcome::NotStarted
        )
    }

    pub(crate) fn slot(self) -> usize {
        self as usize
    }
}
