//! Accept-queue sampling: a thread that reads each listener's `TCP_INFO` on an interval and
//! keeps the current and peak depth, the time spent full, and a bounded series.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::periodic::Periodic;
use crate::sys;

/// The most samples kept per listener (the oldest are dropped first).
pub const MAX_SAMPLES: usize = 100_000;

/// One reading of a listener's accept queue.
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tokio::io::AsyncWriteExt;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .queue_sampling(Duration::from_millis(5))
///     .serve(|mut conn: synack::Connection| async move { conn.write_all(b"hi\n").await })?;
/// let deepest = server.queue_samples(0).iter().map(|s| s.len).max();
/// println!("deepest accept queue seen: {deepest:?}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSample {
    /// Since the server started.
    pub at: Duration,
    /// Connections waiting in the accept queue.
    pub len: u32,
    /// The effective backlog.
    pub max: u32,
}

/// What the sampler knows of one listener.
#[derive(Debug, Default)]
pub(crate) struct QueueGauge {
    pub peak: AtomicU32,
    pub full_ns: AtomicU64,
    pub samples: AtomicU64,
    pub series: Mutex<VecDeque<QueueSample>>,
}

/// The running sampler thread.
pub(crate) type Sampler = Periodic;

/// Starts sampling `sockets` into `gauges` (same order) every `interval`.
pub(crate) fn spawn(
    sockets: Vec<Arc<Socket>>,
    gauges: Arc<[QueueGauge]>,
    interval: Duration,
    start: Instant,
) -> std::io::Result<Sampler> {
    Periodic::spawn("synack-sampler", interval, move || {
        let now = Instant::now();
        for (sock, g) in sockets.iter().zip(gauges.iter()) {
            let Ok(Some(q)) = sys::listen_queue(&**sock) else {
                continue;
            };
            g.samples.fetch_add(1, Relaxed);
            g.peak.fetch_max(q.len, Relaxed);
            // Linux refuses a connection at `len > backlog` (sk_acceptq_is_full): a queue
            // holds backlog + 1 before it is full.
            if q.len > q.max {
                g.full_ns.fetch_add(interval.as_nanos() as u64, Relaxed);
            }
            if let Ok(mut s) = g.series.lock() {
                if s.len() == MAX_SAMPLES {
                    s.pop_front();
                }
                s.push_back(QueueSample {
                    at: now.saturating_duration_since(start),
                    len: q.len,
                    max: q.max,
                });
            }
        }
    })
}
