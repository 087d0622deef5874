//! Descriptors that cross `exec`: a command started with some of this process's descriptors
//! open at numbers of its choosing (a listener handoff, a simulated socket activation), and
//! the receiving side, which takes each inherited descriptor once.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Starts `cmd` with each `(source, target)` of `fds` open in the child at `target` (and not
/// close-on-exec there); every other descriptor of this process stays closed-on-exec as usual.
/// The sources stay open here. Targets must be distinct and above 2 (0-2 are stdio).
///
/// ```
/// use std::os::fd::AsRawFd;
///
/// # fn main() -> std::io::Result<()> {
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let mut cmd = std::process::Command::new("sh");
/// // The child sees the listener as its descriptor 3.
/// cmd.args(["-c", "test -S /proc/self/fd/3 || test -e /dev/fd/3"]);
/// let mut child = synack_sys::inherit::spawn_with_fds(&mut cmd, &[(listener.as_raw_fd(), 3)])?;
/// assert!(child.wait()?.success());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// `InvalidInput` for a target below 3 or given twice; otherwise the spawn's own error (no
/// such program, a descriptor that cannot be duplicated).
pub fn spawn_with_fds(cmd: &mut Command, fds: &[(RawFd, RawFd)]) -> io::Result<Child> {
    let mut targets = HashSet::new();
    for &(_, t) in fds {
        if t < 3 || !targets.insert(t) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor target {t}: targets must be distinct and above 2"),
            ));
        }
    }
    // Everything the closure needs is made here: between fork and exec nothing may allocate.
    let pairs: Vec<(RawFd, RawFd)> = fds.to_vec();
    let mut temps: Vec<RawFd> = vec![-1; pairs.len()];
    let above = pairs.iter().map(|&(_, t)| t).max().unwrap_or(2) + 1;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: fcntl and dup2 are system calls, and the closure
    // only writes into `temps`, allocated above with its final length.
    unsafe {
        cmd.pre_exec(move || {
            // First every source to a number above every target, so that placing one
            // cannot overwrite a source still to be placed; then each to its target (dup2
            // leaves the new descriptor open across exec).
            for (i, &(src, _)) in pairs.iter().enumerate() {
                let t = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, above);
                if t < 0 {
                    return Err(io::Error::last_os_error());
                }
                temps[i] = t;
            }
            for (i, &(_, target)) in pairs.iter().enumerate() {
                if libc::dup2(temps[i], target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Descriptors already taken by [`take`] in this process.
static TAKEN: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);

/// Takes ownership of descriptor `fd`, inherited across `exec` as the environment describes
/// (`LISTEN_FDS`, a handoff's description), and marks it close-on-exec so that it does not
/// leak into this process's own children. Each descriptor can be taken once per process: a
/// second call for the same number fails, so two owners can never close it twice.
///
/// ```
/// // No process inherits descriptor 999 here.
/// assert!(synack_sys::inherit::take(999).is_err());
/// ```
///
/// # Errors
///
/// `EBADF` when `fd` is not open (or negative), `AlreadyExists` when it was taken before.
pub fn take(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    if taken.contains(&fd) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("inherited descriptor {fd} was taken already"),
        ));
    }
    // SAFETY: fcntl on a plain integer; an fd that is not open gives EBADF, changes nothing.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; setting FD_CLOEXEC on an open descriptor.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    taken.insert(fd);
    // SAFETY: the descriptor is open (F_GETFD succeeded), was inherited across exec as the
    // caller's environment describes, and is taken at most once in this process (`TAKEN`),
    // so this is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pipe, both ends close-on-exec: `(read, write)`.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let (r, w) = synack_sys::inherit::pipe()?;
/// synack_sys::inherit::write_all(&w, b"ready\n")?;
/// drop(w);
/// let mut buf = [0u8; 16];
/// let n = synack_sys::inherit::read_timeout(&r, &mut buf, std::time::Duration::from_secs(5))?;
/// assert_eq!(n, Some(6));
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// `pipe2(2)`'s error (`EMFILE` when descriptors ran out).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    #[cfg(target_os = "linux")]
    // SAFETY: `fds` is a valid, writable array of two ints for the call.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above; FD_CLOEXEC is set on both ends just after.
    let r = unsafe {
        let r = libc::pipe(fds.as_mut_ptr());
        if r == 0 {
            libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC);
            libc::fcntl(fds[1], libc::F_SETFD, libc::FD_CLOEXEC);
        }
        r
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads what is available on `fd` into `buf`, waiting at most `timeout` for it: `Some(0)` at
/// end of file, `None` when the time ran out with nothing to read.
///
/// # Errors
///
/// `poll(2)`'s or `read(2)`'s error (an interrupted call is retried).
pub fn read_timeout(
    fd: &impl AsRawFd,
    buf: &mut [u8],
    timeout: Duration,
) -> io::Result<Option<usize>> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            continue;
        }
        // SAFETY: `buf` is valid and writable for `buf.len()` bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(Some(n as usize));
    }
}

/// Writes all of `data` to `fd` (a pipe end), retrying interrupted and partial writes.
///
/// # Errors
///
/// `write(2)`'s error (`EPIPE` when the reader is gone).
pub fn write_all(fd: &impl AsRawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: `data` is valid for reads of `data.len()` bytes.
        let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// This process's parent, as `getppid(2)` says.
///
/// ```
/// assert!(synack_sys::inherit::parent_pid() > 0);
/// ```
pub fn parent_pid() -> u32 {
    // SAFETY: getppid takes nothing and cannot fail.
    let p = unsafe { libc::getppid() };
    u32::try_from(p).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked() {
        let mut cmd = Command::new("true");
        assert!(spawn_with_fds(&mut cmd, &[(0, 2)]).is_err());
        assert!(spawn_with_fds(&mut cmd, &[(0, 3), (1, 3)]).is_err());
    }

    #[test]
    fn swapped_descriptors_land_where_asked() {
        // Two pipes placed at each other's numbers in the child: the first pass moves them out
        // of the way, so neither is lost.
        let (r1, w1) = pipe().unwrap();
        let (r2, w2) = pipe().unwrap();
        let a = w1.as_raw_fd();
        let b = w2.as_raw_fd();
        let mut cmd = Command::new("sh");
        // Through /proc (dash's `>&N` takes one digit; the numbers here may have two).
        cmd.args([
            "-c",
            &format!("echo one > /proc/self/fd/{b} && echo two > /proc/self/fd/{a}"),
        ]);
        let mut child = spawn_with_fds(&mut cmd, &[(a, b), (b, a)]).unwrap();
        assert!(child.wait().unwrap().success());
        drop((w1, w2));
        let mut buf = [0u8; 8];
        let n = read_timeout(&r1, &mut buf, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"one\n");
        let n = read_timeout(&r2, &mut buf, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"two\n");
    }

    #[test]
    fn a_descriptor_is_taken_once() {
        let (r, _w) = pipe().unwrap();
        let raw = r.as_raw_fd();
        std::mem::forget(r);
        let owned = take(raw).unwrap();
        assert!(take(raw).is_err());
        drop(owned);
    }
}
