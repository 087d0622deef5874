//! The probe header: with [`ServerBuilder::probe`](crate::ServerBuilder::probe) on, the server
//! writes 24 bytes on every connection before its handler runs, so a client on the same host
//! (`synack-load flood --probe`) can split each connection's life at the server's `accept()`.
//! Never on a public listener: the header gives every client the host's `CLOCK_MONOTONIC`
//! (its uptime) and the server's timing.
//!
//! | bytes | content |
//! |---|---|
//! | 0..6 | magic `SYNACK` (ASCII) |
//! | 6..8 | version, big-endian `u16` (1) |
//! | 8..16 | `CLOCK_MONOTONIC` nanoseconds when `accept()` returned, big-endian `u64` |
//! | 16..24 | `CLOCK_MONOTONIC` nanoseconds when the handler started (its first poll), big-endian `u64` |
//!
//! `CLOCK_MONOTONIC` is one clock for every process on a host, so the client can compare these
//! with its own connect and first-byte times.

use std::time::Instant;

/// The magic tag that opens the header.
pub const MAGIC: [u8; 6] = *b"SYNACK";
/// The header's version.
pub const VERSION: u16 = 1;
/// The header's length in bytes.
pub const LEN: usize = 24;

/// A decoded probe header.
/// # Examples
///
/// ```
/// use synack::probe::{LEN, ProbeHeader};
///
/// let h = ProbeHeader { accept_ns: 1_000, dispatch_ns: 1_250 };
/// let wire: [u8; LEN] = h.encode();
/// assert_eq!(&wire[..6], b"SYNACK");
/// assert_eq!(ProbeHeader::decode(&wire), Some(h));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeHeader {
    /// `CLOCK_MONOTONIC` ns when `accept()` returned the connection.
    pub accept_ns: u64,
    /// `CLOCK_MONOTONIC` ns when its handler started on a worker (its first poll).
    pub dispatch_ns: u64,
}

impl ProbeHeader {
    /// The 24 bytes on the wire.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..6].copy_from_slice(&MAGIC);
        b[6..8].copy_from_slice(&VERSION.to_be_bytes());
        b[8..16].copy_from_slice(&self.accept_ns.to_be_bytes());
        b[16..24].copy_from_slice(&self.dispatch_ns.to_be_bytes());
        b
    }

    /// Decodes a header; `None` when the magic or version does not match.
    pub fn decode(b: &[u8; LEN]) -> Option<Self> {
        if b[..6] != MAGIC || u16::from_be_bytes([b[6], b[7]]) != VERSION {
            return None;
        }
        Some(ProbeHeader {
            accept_ns: u64::from_be_bytes(b[8..16].try_into().ok()?),
            dispatch_ns: u64::from_be_bytes(b[16..24].try_into().ok()?),
        })
    }
}

/// Maps [`Instant`]s to `CLOCK_MONOTONIC` nanoseconds (Rust's `Instant` is that clock on Linux),
/// from one reading of both taken together.
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use synack::probe::MonoClock;
///
/// let clock = MonoClock::new();
/// let now = Instant::now();
/// let later = now + Duration::from_millis(3);
/// assert_eq!(clock.ns(later) - clock.ns(now), 3_000_000);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MonoClock {
    base: Instant,
    base_ns: u64,
}

impl Default for MonoClock {
    fn default() -> Self {
        Self::new()
    }
}

impl MonoClock {
    /// Reads both clocks now.
    pub fn new() -> Self {
        let base = Instant::now();
        let base_ns = crate::sys::monotonic_ns();
        MonoClock { base, base_ns }
    }

    /// `CLOCK_MONOTONIC` nanoseconds at `t`.
    pub fn ns(&self, t: Instant) -> u64 {
        if t >= self.base {
            self.base_ns + (t - self.base).as_nanos() as u64
        } else {
            self.base_ns
                .saturating_sub((self.base - t).as_nanos() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_other_bytes() {
        let h = ProbeHeader {
            accept_ns: 123_456_789,
            dispatch_ns: 123_999_999,
        };
        assert_eq!(ProbeHeader::decode(&h.encode()), Some(h));
        let mut junk = *b"HTTP/1.1 200 OK\r\nContent";
        assert_eq!(ProbeHeader::decode(&junk), None);
        junk[..6].copy_from_slice(&MAGIC);
        assert_eq!(ProbeHeader::decode(&junk), None, "wrong version");
    }

    #[test]
    fn mono_clock_follows_the_system_clock() {
        let c = MonoClock::new();
        let before = crate::sys::monotonic_ns();
        let mapped = c.ns(Instant::now());
        let after = crate::sys::monotonic_ns();
        assert!(mapped + 1_000_000 >= before && mapped <= after + 1_000_000);
    }
}
