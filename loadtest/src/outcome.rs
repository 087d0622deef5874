//! How an attempt ended, classified the way the kernel reports it.

use serde::{Deserialize, Serialize};

/// The class of an attempt's ending.
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
    /// Established, but no first byte came within `--read-timeout`: the server never accepted
    /// it (with syncookies, a client whose final ACK was dropped by a full accept queue believes
    /// it is connected), or it accepted and never answered.
    Unserved,
    /// Any other error (the errno is reported).
    Other,
}

impl Outcome {
    /// Every class, in report order.
    pub const ALL: [Outcome; 9] = [
        Outcome::Ok,
        Outcome::Refused,
        Outcome::Timeout,
        Outcome::Unreachable,
        Outcome::Reset,
        Outcome::PortsExhausted,
        Outcome::FdLimit,
        Outcome::Unserved,
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
                "the SYN was never answered: the accept queue is full (SYNs dropped), a firewall drops them, or the host is wrong"
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
            Outcome::Other => "another error (see the errno list)",
        }
    }

    pub(crate) fn slot(self) -> usize {
        self as usize
    }
}
