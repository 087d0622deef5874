//! What an acceptor does when `accept()` or the poll fails: per-connection errors are counted
//! and skipped; resource exhaustion takes the listener out of the poll for a back-off that
//! doubles from `backoff_min` to `backoff_max` (reset by the next successful accept), or,
//! under [`FdExhaustionPolicy::Shed`], spends a reserved descriptor to reset waiting clients.

use std::fs::File;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::entry::Entry;
use super::{AcceptConfig, FdExhaustionPolicy};
use crate::listener;
use crate::stats::{AcceptErrorKind, AcceptorStats};
use crate::sys;
use crate::throttle::RateLimited;

/// An acceptor's error handling: the back-off bounds, the shedding policy and its reserved
/// descriptor, and the rate-limited warning.
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    fd_exhaustion: FdExhaustionPolicy,
    reserve: Option<File>,
    log: RateLimited,
}

impl Backoff {
    /// Takes the reserve descriptor now under [`FdExhaustionPolicy::Shed`].
    pub fn new(cfg: &AcceptConfig) -> Self {
        let reserve = match cfg.fd_exhaustion {
            FdExhaustionPolicy::Shed => open_reserve(),
            FdExhaustionPolicy::Backoff => None,
        };
        Backoff {
            min: cfg.backoff_min,
            max: cfg.backoff_max,
            fd_exhaustion: cfg.fd_exhaustion,
            reserve,
            log: RateLimited::default(),
        }
    }

    /// A successful accept on `e`: its next back-off starts from the minimum again.
    #[inline]
    pub fn reset(&self, e: &mut Entry) {
        e.backoff = self.min;
    }

    /// A listener the driver could not (de)register: retried after its back-off.
    pub fn registration_failed(e: &mut Entry, err: &io::Error) {
        tracing::error!(target: "synack::acceptor", addr = %e.addr, error = %err,
            "cannot (de)register listener with the poll; retrying after back-off");
        e.backoff_until = Some(Instant::now() + e.backoff);
    }

    /// Handles a failed `accept()` on `e`; true when the burst may go on.
    pub fn accept_error(&mut self, e: &mut Entry, stats: &AcceptorStats, err: io::Error) -> bool {
        let errno = err.raw_os_error().unwrap_or(0);
        let kind = AcceptErrorKind::from_errno(errno);
        stats.error(kind);
        if !kind.is_resource_exhaustion() && kind != AcceptErrorKind::Other {
            tracing::debug!(target: "synack::acceptor", addr = %e.addr, error = %err, "accept error on one connection; going on");
            return true;
        }
        let fd_limit = matches!(
            kind,
            AcceptErrorKind::ProcessFdLimit | AcceptErrorKind::SystemFdLimit
        );
        if fd_limit && self.fd_exhaustion == FdExhaustionPolicy::Shed && self.shed(e, stats) {
            return false;
        }
        let delay = e.backoff;
        e.backoff_until = Some(Instant::now() + delay);
        e.backoff = (delay * 2).min(self.max);
        e.ready = false;
        let addr = e.addr;
        if let Some(held) = self.log.allow(Instant::now()) {
            tracing::warn!(target: "synack::acceptor", addr = %addr, error = %err, kind = kind.name(),
                backoff_ms = delay.as_millis() as u64, held_back = held,
                "accept failed; not accepting on this listener for the back-off");
        }
        false
    }

    /// Spends the reserved descriptor to reset the connections waiting on `e`. False when
    /// there was no reserve to spend.
    fn shed(&mut self, e: &mut Entry, stats: &AcceptorStats) -> bool {
        // A reserve lost to a race earlier is taken back first, if descriptors allow.
        let Some(reserve) = self.reserve.take().or_else(open_reserve) else {
            return false;
        };
        drop(reserve);
        let mut shed = 0u64;
        loop {
            match sys::accept(&e.sock) {
                Ok((stream, _)) => {
                    stats.shed.fetch_add(1, Relaxed);
                    listener::close_with_reset(stream);
                    shed += 1;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    e.ready = false;
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.reserve = open_reserve();
        let addr = e.addr;
        if let Some(held) = self.log.allow(Instant::now()) {
            tracing::warn!(target: "synack::acceptor", addr = %addr, shed, held_back = held,
                reserve_restored = self.reserve.is_some(),
                "out of file descriptors; reset waiting connections with RST");
        }
        self.reserve.is_some() || shed > 0
    }
}

/// The descriptor kept in reserve for shedding.
fn open_reserve() -> Option<File> {
    match File::open("/dev/null") {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(target: "synack::acceptor", error = %e, "cannot open the reserve descriptor for shedding");
            None
        }
    }
}
