//! What the host says about its sockets' owners and its kernel's log: the processes that hold a
//! socket (by its inode, through `/proc/PID/fd`, as `ss -p` does) and the kernel's log lines as
//! they come (`/dev/kmsg`, root only). Reading only.

use std::collections::{BTreeMap, HashSet};
use std::io;

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    /// Its pid.
    pub pid: u32,
    /// Its command (`/proc/PID/comm`).
    pub command: String,
}

/// The owners of some sockets, and whether every process could be looked into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owners {
    /// Socket inode to the processes holding it (several after a fork, or SO_REUSEPORT
    /// sockets passed on).
    pub by_inode: BTreeMap<u32, Vec<Owner>>,
    /// Processes whose descriptors could not be read (another user's, without root): a socket
    /// of theirs shows no owner.
    pub unreadable: usize,
}

/// The processes holding the sockets of `inodes`, from `/proc/*/fd` (Linux; elsewhere
/// `Unsupported`).
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let l = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let mut diag = synack_sys::diag::Diag::new()?;
/// let me = diag.listeners(false)?.into_iter().find(|s| s.local == l.local_addr().unwrap()).unwrap();
/// let owners = synack_sys::host::socket_owners(&[me.inode].into_iter().collect())?;
/// assert_eq!(owners.by_inode[&me.inode][0].pid, std::process::id());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// `/proc` cannot be listed.
pub fn socket_owners(inodes: &HashSet<u32>) -> io::Result<Owners> {
    if !cfg!(target_os = "linux") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "socket owners are read from Linux's /proc",
        ));
    }
    let mut out = Owners::default();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let fds = match std::fs::read_dir(entry.path().join("fd")) {
            Ok(fds) => fds,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                out.unreadable += 1;
                continue;
            }
            // Gone meanwhile, or a kernel thread.
            Err(_) => continue,
        };
        let mut command = None;
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            if !inodes.contains(&inode) {
                continue;
            }
            let command = command
                .get_or_insert_with(|| {
                    std::fs::read_to_string(entry.path().join("comm"))
                        .map(|c| c.trim_end().to_string())
                        .unwrap_or_default()
                })
                .clone();
            let owners = out.by_inode.entry(inode).or_default();
            let owner = Owner { pid, command };
            if !owners.contains(&owner) {
                owners.push(owner);
            }
        }
    }
    Ok(out)
}

/// The kernel's log, read from now on (`/dev/kmsg`, opened non-blocking at its end; root or
/// `CAP_SYSLOG` where `kernel.dmesg_restrict` is set).
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let mut log = synack_sys::host::Kmsg::open()?;
/// for line in log.read_new() {
///     println!("kernel: {line}");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Kmsg {
    file: std::fs::File,
}

impl Kmsg {
    /// Opens the log at its end: only lines logged from now on are read.
    ///
    /// # Errors
    ///
    /// `/dev/kmsg` cannot be opened (no such device off Linux, `EPERM` without the right).
    pub fn open() -> io::Result<Self> {
        use std::io::Seek;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")?;
        file.seek(io::SeekFrom::End(0))?;
        Ok(Kmsg { file })
    }

    /// The messages logged since the last call, their text only (each `/dev/kmsg` record is
    /// `prio,seq,usec,flags;text`).
    pub fn read_new(&mut self) -> Vec<String> {
        use std::io::Read;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            // One record per read; EAGAIN when there is no more.
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    let text = rec.split_once(';').map_or(&*rec, |(_, t)| t);
                    out.push(text.lines().next().unwrap_or("").to_string());
                }
                // EPIPE: records were overwritten before we read them; read on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(_) => break,
            }
        }
        out
    }
}
