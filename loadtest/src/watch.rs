//! `--watch-listener`: the target listener's accept queue, read from the kernel through
//! `NETLINK_SOCK_DIAG` (inet_diag, what `ss -lnt` uses), for any server on this host.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use synack_sys::diag::{Diag, ListenerSample};

/// The most samples kept.
pub const MAX_SAMPLES: usize = 100_000;

/// One reading of the listener's queue.
///
/// ```
/// use synack_load::report::charts::queue_over_time;
/// use synack_load::watch::QueuePoint;
///
/// let at = |t_ms, len| QueuePoint { t_ms, len, backlog: 16 };
/// let points = [at(0.0, 0), at(10.0, 9), at(20.0, 17), at(30.0, 4)];
/// // Linux drops at `len > backlog` (a queue holds backlog + 1): at 20 ms it was full.
/// assert_eq!(points.iter().filter(|p| p.len > p.backlog).count(), 1);
/// let svg = queue_over_time("accept-queue depth", &points)?;
/// assert!(svg.contains("effective backlog"));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QueuePoint {
    /// Milliseconds since the watch started.
    pub t_ms: f64,
    /// Connections waiting in the accept queue (summed over every socket on the port).
    pub len: u32,
    /// The effective backlog (summed likewise).
    pub backlog: u32,
}

/// What the watch saw over a run.
///
/// ```
/// use synack_load::watch::QueueWatch;
///
/// // `listener_queue` of a `flood --watch-listener --json` report, its series left out.
/// let json = r#"{"sockets": 1, "effective_backlog": 128, "peak": 129, "samples": 300,
///     "full_samples": 4, "interval_ms": 10.0, "series": [], "drops": 57}"#;
/// let q: QueueWatch = serde_json::from_str(json)?;
/// // The listener itself dropped SYNs or final ACKs while its queue was full.
/// assert!(q.peak > q.effective_backlog && q.drops == Some(57));
/// // Where the kernel does not report the listener's drops, `drops` is absent: none.
/// let json = json.replace(r#", "drops": 57"#, "");
/// assert_eq!(serde_json::from_str::<QueueWatch>(&json)?.drops, None);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueWatch {
    /// The listening sockets found on the target's port (several with SO_REUSEPORT).
    pub sockets: usize,
    /// The effective backlog (the last reading).
    pub effective_backlog: u32,
    /// The deepest queue seen.
    pub peak: u32,
    /// Readings taken.
    pub samples: usize,
    /// Readings with the queue full: past the effective backlog (Linux drops at
    /// `len > backlog`).
    pub full_samples: usize,
    /// Sampling interval, milliseconds.
    pub interval_ms: f64,
    /// The readings, oldest first.
    pub series: Vec<QueuePoint>,
    /// SYNs and final ACKs this listener dropped over the watch (its `sk_drops`, which the
    /// kernel bumps on every listen overflow): this listener's own count, unlike the host-wide
    /// `TcpExt.ListenOverflows`. `None` where the kernel does not report it.
    #[serde(default)]
    pub drops: Option<u64>,
}

/// Whether `ip` is an address of this host (the only place its listeners can be read, and
/// the only addresses a connection can come from): loopback or an interface's address.
pub fn is_local(ip: IpAddr) -> bool {
    synack_sys::is_local_address(ip)
}

/// A running watch.
///
/// ```no_run
/// use std::time::Duration;
/// use synack_load::watch::Watcher;
///
/// let watch = Watcher::start("127.0.0.1:7878".parse().unwrap(), Duration::from_millis(10))?;
/// std::thread::sleep(Duration::from_millis(500)); // a flood runs meanwhile
/// let q = watch.finish()?;
/// println!("peak {} of {} ({} samples full)", q.peak, q.effective_backlog, q.full_samples);
/// assert_eq!(q.interval_ms, 10.0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<QueueWatch>>,
}

impl Watcher {
    /// Checks the target is on this host and has a listener, then samples it every `interval`.
    ///
    /// ```
    /// use std::io::ErrorKind;
    /// use std::time::Duration;
    /// use synack_load::watch::Watcher;
    ///
    /// // 192.0.2.1 (TEST-NET-1) is not an address of this host: its listeners cannot be read.
    /// let elsewhere = "192.0.2.1:80".parse().unwrap();
    /// let Err(e) = Watcher::start(elsewhere, Duration::from_millis(10)) else {
    ///     panic!("a watch of another host's listener");
    /// };
    /// assert_eq!(e.kind(), ErrorKind::InvalidInput);
    /// ```
    pub fn start(target: SocketAddr, interval: Duration) -> io::Result<Self> {
        if !is_local(target.ip()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--watch-listener: {} is not an address of this host; a listener's queue can only be read on its own host",
                    target.ip()
                ),
            ));
        }
        let mut diag = Diag::new()?;
        let first = diag.listener_queue(target)?;
        let n = first.sockets;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("--watch-listener: no TCP listener on {target} in this network namespace"),
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("synack-load-watch".into())
            .spawn(move || {
                let start = Instant::now();
                let mut w = QueueWatch {
                    sockets: n,
                    effective_backlog: 0,
                    peak: 0,
                    samples: 0,
                    full_samples: 0,
                    interval_ms: interval.as_secs_f64() * 1e3,
                    series: Vec::new(),
                    drops: None,
                };
                let mut next = start;
                let mut last_drops = first.socket_drops.clone();
                if first.drops.is_some() {
                    w.drops = Some(0);
                }
                let mut stopping = false;
                loop {
                    // One last sample after the stop, so drops up to the end are counted.
                    if stop2.load(Relaxed) {
                        stopping = true;
                    }
                    let ListenerSample {
                        sockets: n,
                        len,
                        backlog,
                        drops,
                        socket_drops,
                    } = diag.listener_queue(target)?;
                    if n > 0 {
                        w.sockets = n;
                        w.effective_backlog = backlog;
                        w.peak = w.peak.max(len);
                        w.samples += 1;
                        // Linux drops at `len > backlog` (sk_acceptq_is_full): a queue holds
                        // backlog + 1 before it is full.
                        if len > backlog {
                            w.full_samples += 1;
                        }
                        // Per socket, from one reading to the next: a socket that comes starts
                        // at its count then, one that goes takes nothing from the others.
                        if drops.is_some() {
                            let grew: u64 = socket_drops
                                .iter()
                                .map(|(inode, d)| {
                                    last_drops
                                        .iter()
                                        .find(|(i, _)| i == inode)
                                        .map_or(0, |(_, before)| d.saturating_sub(*before))
                                })
                                .sum();
                            w.drops = Some(w.drops.unwrap_or(0) + grew);
                        }
                        last_drops = socket_drops;
                        if w.series.len() < MAX_SAMPLES {
                            w.series.push(QueuePoint {
                                t_ms: start.elapsed().as_secs_f64() * 1e3,
                                len,
                                backlog,
                            });
                        }
                    }
                    if stopping {
                        break;
                    }
                    next += interval;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                Ok(w)
            })?;
        Ok(Watcher { stop, thread })
    }

    /// Stops sampling and returns what was seen.
    pub fn finish(self) -> io::Result<QueueWatch> {
        self.stop.store(true, Relaxed);
        self.thread
            .join()
            .map_err(|_| io::Error::other("the listener watch thread panicked"))?
    }
}
