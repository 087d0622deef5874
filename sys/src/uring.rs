//! io_uring for accept-heavy work (Linux, feature `uring`): a ring with a multishot accept on a
//! listener, and for each accepted socket a write of a static answer hard-linked to its close,
//! all submitted with one `io_uring_enter` per turn instead of a system call each.
//!
//! [`AcceptRing::new`] refuses where the kernel does (io_uring disabled by
//! `kernel.io_uring_disabled`, or blocked by a container's seccomp profile): the caller falls
//! back to epoll and says so.

use std::io;
use std::os::fd::RawFd;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

/// What a completion was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The multishot accept gave a socket (its descriptor); `rearm` when the kernel ended the
    /// multishot and [`AcceptRing::arm_accept`] must be called again.
    Accepted {
        /// The accepted socket.
        fd: RawFd,
        /// Whether the accept must be armed again.
        rearm: bool,
    },
    /// The accept failed (an errno); `rearm` as above.
    AcceptFailed {
        /// The error.
        errno: i32,
        /// Whether the accept must be armed again.
        rearm: bool,
    },
    /// A write of socket `fd` ended: bytes written, or a negative errno.
    Written {
        /// The socket.
        fd: RawFd,
        /// Bytes written, or `-errno`.
        result: i32,
    },
    /// The close of socket `fd` ended: 0, or a negative errno.
    Closed {
        /// The socket.
        fd: RawFd,
        /// 0 or `-errno`.
        result: i32,
    },
}

const ACCEPT: u64 = 0;
const WRITE: u64 = 1 << 32;
const CLOSE: u64 = 2 << 32;
const KIND: u64 = 0xffff_ffff << 32;

/// A ring accepting on one listener; see the module docs.
///
/// ```no_run
/// use std::os::fd::AsRawFd;
/// use synack_sys::uring::{AcceptRing, Completion};
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let mut ring = AcceptRing::new(listener.as_raw_fd(), 256)?;
/// ring.arm_accept()?;
/// let mut done = Vec::new();
/// ring.submit_and_wait(1, &mut done)?;
/// for c in done.drain(..) {
///     if let Completion::Accepted { fd, .. } = c {
///         ring.write_and_close(fd, b"hello\n")?;
///     }
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct AcceptRing {
    ring: IoUring,
    listener: RawFd,
    /// Accepting into the ring's own table of descriptors (direct descriptors): the socket
    /// never gets a descriptor of the process, and [`Completion::Accepted`] carries its slot.
    direct: bool,
}

impl AcceptRing {
    /// A ring of `entries` for `listener` (a listening socket that outlives the ring).
    /// Single-issuer with deferred task work where the kernel has them (6.1), plain otherwise:
    /// make it on the thread that will submit to it.
    ///
    /// # Errors
    ///
    /// What `io_uring_setup` says: `EPERM` or `ENOSYS` where io_uring is disabled or blocked.
    pub fn new(listener: RawFd, entries: u32) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries)
            .or_else(|_| IoUring::new(entries))?;
        Ok(AcceptRing {
            ring,
            listener,
            direct: false,
        })
    }

    /// As [`new`](Self::new), accepting into a table of `slots` direct descriptors: no
    /// descriptor of the process per connection (nothing but the ring can use the socket, so
    /// this suits only answers written through the ring).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new), and what registering the table says.
    pub fn with_direct_descriptors(listener: RawFd, entries: u32, slots: u32) -> io::Result<Self> {
        let mut r = Self::new(listener, entries)?;
        r.ring.submitter().register_files_sparse(slots)?;
        r.direct = true;
        Ok(r)
    }

    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: every entry pushed here refers only to descriptors and to `'static` buffers
        // (the answer of `write_and_close`), which outlive the operation.
        if unsafe { self.ring.submission().push(&entry) }.is_ok() {
            return Ok(());
        }
        // Full: submit what is queued, then there is room.
        self.ring.submit()?;
        // SAFETY: as above.
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| io::Error::other("the io_uring submission queue stayed full"))
    }

    /// Arms the multishot accept (again, after a completion said `rearm`).
    ///
    /// # Errors
    ///
    /// When it cannot be submitted.
    pub fn arm_accept(&mut self) -> io::Result<()> {
        // A direct descriptor is no process descriptor: close-on-exec means nothing there, and
        // the kernel refuses it (EINVAL).
        let e = opcode::AcceptMulti::new(types::Fd(self.listener))
            .flags(if self.direct { 0 } else { libc::SOCK_CLOEXEC })
            .allocate_file_index(self.direct)
            .build()
            .user_data(ACCEPT);
        self.push(e)
    }

    /// Queues a write of `answer` to `fd`, hard-linked to its close (the close runs even when
    /// the write fails); both complete later as [`Completion::Written`] and
    /// [`Completion::Closed`].
    ///
    /// # Errors
    ///
    /// When they cannot be queued.
    pub fn write_and_close(&mut self, fd: RawFd, answer: &'static [u8]) -> io::Result<()> {
        let len = u32::try_from(answer.len()).map_err(|_| io::Error::other("answer too long"))?;
        let (write, close) = if self.direct {
            let slot = types::Fixed(fd as u32);
            (
                opcode::Send::new(slot, answer.as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build(),
                opcode::Close::new(slot).build(),
            )
        } else {
            (
                opcode::Send::new(types::Fd(fd), answer.as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build(),
                opcode::Close::new(types::Fd(fd)).build(),
            )
        };
        let write = write
            .flags(squeue::Flags::IO_HARDLINK)
            .user_data(WRITE | fd as u32 as u64);
        let close = close.user_data(CLOSE | fd as u32 as u64);
        // Both in the queue together, or the link would join the write to whatever came next.
        let room = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if room < 2 {
            self.ring.submit()?;
        }
        self.push(write)?;
        self.push(close)
    }

    /// Submits what is queued and waits for at least `want` completions, appending every
    /// completion at hand to `out`.
    ///
    /// # Errors
    ///
    /// What `io_uring_enter` says (`EINTR` is retried).
    pub fn submit_and_wait(&mut self, want: usize, out: &mut Vec<Completion>) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => break,
                Err(e) => return Err(e),
            }
        }
        for cqe in self.ring.completion() {
            let data = cqe.user_data();
            let fd = (data & 0xffff_ffff) as u32 as RawFd;
            let result = cqe.result();
            out.push(match data & KIND {
                ACCEPT => {
                    let rearm = !cqueue::more(cqe.flags());
                    if result >= 0 {
                        Completion::Accepted { fd: result, rearm }
                    } else {
                        Completion::AcceptFailed {
                            errno: -result,
                            rearm,
                        }
                    }
                }
                WRITE => Completion::Written { fd, result },
                _ => Completion::Closed { fd, result },
            });
        }
        Ok(())
    }
}
