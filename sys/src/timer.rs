//! A timer with nanosecond resolution that a poll set can wait on: Linux's `timerfd` on
//! `CLOCK_MONOTONIC`. `epoll_wait` itself waits in whole milliseconds, so a loop that must
//! act at a given microsecond registers this timer with its poll set and arms it for that
//! instant, instead of spinning through the last millisecond.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// A one-shot timer on the monotonic clock, readable (for a poll set) once it fires.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// use std::time::{Duration, Instant};
/// use synack_sys::timer::PollTimer;
///
/// let mut t = PollTimer::new()?;
/// let at = Instant::now() + Duration::from_millis(2);
/// t.arm_at(at)?;
/// // Registered with a poll set (mio's `SourceFd(&t.as_raw_fd())`), it wakes the poll at `at`.
/// std::thread::sleep(Duration::from_millis(3));
/// assert!(t.fired()?);
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct PollTimer {
    fd: OwnedFd,
    /// `CLOCK_MONOTONIC` (ns) at `base`: `Instant` is that clock on Linux, so an `Instant`
    /// maps onto it by its distance from `base`.
    base_ns: u64,
    base: Instant,
    armed: Option<Instant>,
}

impl PollTimer {
    /// A disarmed timer (non-blocking, close-on-exec).
    ///
    /// # Errors
    ///
    /// What `timerfd_create` says; `Unsupported` off Linux.
    pub fn new() -> io::Result<Self> {
        let fd = crate::imp::timerfd_create()?;
        // The two readings are taken back to back: they differ by the tens of nanoseconds
        // between them.
        let base = Instant::now();
        let base_ns = crate::monotonic_ns();
        Ok(PollTimer {
            fd,
            base_ns,
            base,
            armed: None,
        })
    }

    /// Arms the timer to fire at `at` (at once if `at` has passed). Arming it again for the
    /// instant it is already armed for makes no system call.
    ///
    /// # Errors
    ///
    /// What `timerfd_settime` says.
    pub fn arm_at(&mut self, at: Instant) -> io::Result<()> {
        if self.armed == Some(at) {
            return Ok(());
        }
        let ns = match at.checked_duration_since(self.base) {
            Some(d) => self.base_ns + d.as_nanos() as u64,
            None => self
                .base_ns
                .saturating_sub(self.base.duration_since(at).as_nanos() as u64),
        };
        // 0 would disarm it: the earliest instant there is will do.
        crate::imp::timerfd_set_abs(&self.fd, ns.max(1))?;
        self.armed = Some(at);
        Ok(())
    }

    /// Whether it fired since it was last armed, and if so, disarms it (reads its count).
    ///
    /// # Errors
    ///
    /// What `read` says, but `EAGAIN` (not fired: `false`).
    pub fn fired(&mut self) -> io::Result<bool> {
        let fired = crate::imp::timerfd_read(&self.fd)?;
        if fired {
            self.armed = None;
        }
        Ok(fired)
    }

    /// Forgets the instant armed for: the next [`arm_at`](Self::arm_at) sets the timer even
    /// for the same instant. For a loop that saw the timer's event (edge-triggered) without
    /// reading it.
    pub fn expired(&mut self) {
        self.armed = None;
    }
}

impl AsRawFd for PollTimer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
