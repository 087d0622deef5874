//! `diagnose --serve ADDR`: the listeners and the kernel's classified counters as Prometheus
//! metrics, through the `metrics` facade and `metrics-exporter-prometheus` (as the library
//! publishes its own). The endpoint is served here, so that a queue's peak is the peak since
//! the last scrape.
//!
//! | metric | kind | labels | meaning |
//! |---|---|---|---|
//! | `synack_listener_queue_length` | gauge | address, process | connections waiting to be accepted |
//! | `synack_listener_queue_peak` | gauge | address, process | the deepest queue read since the last scrape |
//! | `synack_listener_backlog` | gauge | address, process | the effective backlog (what the kernel granted) |
//! | `synack_listener_sockets` | gauge | address, process | sockets on the address (SO_REUSEPORT) |
//! | `synack_listener_full_microseconds_total` | counter | address, process | time read full (`len > backlog`): each interval that ended with a full reading, microseconds |
//! | `synack_listener_drops_total` | counter | address, process | SYNs and final ACKs it dropped (its `sk_drops`) |
//! | `synack_kernel_listen_overflows_total` | counter | | `TcpExt.ListenOverflows` (host-wide) |
//! | `synack_kernel_listen_drops_other_total` | counter | | `TcpExt.ListenDrops` less overflows |
//! | `synack_kernel_syn_queue_full_total` | counter | outcome = drop, cookie | `TCPReqQFullDrop`, `TCPReqQFullDoCookies` |
//! | `synack_kernel_syncookies_total` | counter | direction = sent, recv, failed | `Syncookies*` |

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use synack_sys::diag::ListeningSocket;

use crate::error::LoadError;

/// How often the owners of new listeners are looked up (`/proc/*/fd` is a long walk).
const OWNERS_EVERY: Duration = Duration::from_secs(10);

/// The metrics exporter of `diagnose --serve`.
///
/// ```no_run
/// use synack_load::exporter::Exporter;
///
/// let mut x = Exporter::install("127.0.0.1:9464".parse().unwrap())?;
/// let mut diag = synack_sys::diag::Diag::new().unwrap();
/// x.update(&diag.listeners(true).unwrap()); // each interval
/// # Ok::<(), synack_load::error::LoadError>(())
/// ```
pub struct Exporter {
    peaks: Arc<Mutex<BTreeMap<(String, String), u32>>>,
    owners: HashMap<u32, String>,
    owners_at: Option<Instant>,
    counters_at: Option<Instant>,
    last: Option<Instant>,
}

impl Exporter {
    /// Installs the recorder and serves `GET /metrics` (any path) on `addr` from a thread of
    /// its own.
    ///
    /// # Errors
    ///
    /// [`LoadError::Usage`] when `addr` cannot be bound (in use, not this host's);
    /// [`LoadError::Run`] when a recorder is installed already.
    pub fn install(addr: SocketAddr) -> Result<Self, LoadError> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            LoadError::Usage(format!(
                "--serve {addr}: cannot listen there ({e}); give a free address of this host, such as 127.0.0.1:9464"
            ))
        })?;
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| LoadError::Run(format!("the Prometheus recorder: {e}")))?;
        let peaks: Arc<Mutex<BTreeMap<(String, String), u32>>> = Arc::default();
        let serving = peaks.clone();
        std::thread::Builder::new()
            .name("synack-load-exporter".into())
            .spawn(move || serve(&listener, &handle, &serving))
            .map_err(|e| LoadError::Run(format!("the exporter thread: {e}")))?;
        Ok(Exporter {
            peaks,
            owners: HashMap::new(),
            owners_at: None,
            counters_at: None,
            last: None,
        })
    }

    /// Publishes one reading of the listeners (and, once a second, the kernel's counters).
    pub fn update(&mut self, sockets: &[ListeningSocket]) {
        let now = Instant::now();
        let since = self.last.map_or(Duration::ZERO, |l| now - l);
        self.last = Some(now);
        if self.owners_at.is_none_or(|t| now - t >= OWNERS_EVERY)
            || sockets.iter().any(|s| !self.owners.contains_key(&s.inode))
                && self
                    .owners_at
                    .is_none_or(|t| now - t >= Duration::from_secs(1))
        {
            self.refresh_owners(sockets);
            self.owners_at = Some(now);
        }
        let mut groups: BTreeMap<SocketAddr, Vec<&ListeningSocket>> = BTreeMap::new();
        for s in sockets {
            groups.entry(s.local).or_default().push(s);
        }
        let mut peaks = self.peaks.lock().unwrap_or_else(|p| p.into_inner());
        for (addr, members) in &groups {
            let address = addr.to_string();
            let process = members
                .iter()
                .find_map(|m| self.owners.get(&m.inode).cloned())
                .unwrap_or_default();
            let labels = [("address", address.clone()), ("process", process.clone())];
            let len: u32 = members.iter().map(|m| m.len).sum();
            let backlog: u32 = members.iter().map(|m| m.backlog).sum();
            gauge!("synack_listener_queue_length", &labels).set(f64::from(len));
            gauge!("synack_listener_backlog", &labels).set(f64::from(backlog));
            gauge!("synack_listener_sockets", &labels).set(members.len() as f64);
            let peak = peaks.entry((address, process)).or_insert(0);
            *peak = (*peak).max(len);
            if members.iter().any(|m| m.len > m.backlog) {
                counter!("synack_listener_full_microseconds_total", &labels)
                    .increment(since.as_micros() as u64);
            }
            let drops: Option<u64> = members.iter().map(|m| m.drops).sum();
            if let Some(d) = drops {
                counter!("synack_listener_drops_total", &labels).absolute(d);
            }
        }
        drop(peaks);
        if self
            .counters_at
            .is_none_or(|t| now - t >= Duration::from_secs(1))
        {
            self.counters_at = Some(now);
            if let Ok(Some(c)) = synack_sys::tcp_counters() {
                publish_counters(&c);
            }
        }
    }

    fn refresh_owners(&mut self, sockets: &[ListeningSocket]) {
        let inodes: HashSet<u32> = sockets.iter().map(|s| s.inode).collect();
        if let Ok(o) = synack_sys::host::socket_owners(&inodes) {
            self.owners = o
                .by_inode
                .into_iter()
                .filter_map(|(i, p)| {
                    let names: Vec<String> = p
                        .iter()
                        .map(|o| format!("{}/{}", o.command, o.pid))
                        .collect();
                    (!names.is_empty()).then(|| (i, names.join(",")))
                })
                .collect();
        }
    }
}

fn publish_counters(c: &BTreeMap<String, u64>) {
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    let overflows = get("TcpExt.ListenOverflows");
    counter!("synack_kernel_listen_overflows_total").absolute(overflows);
    counter!("synack_kernel_listen_drops_other_total")
        .absolute(get("TcpExt.ListenDrops").saturating_sub(overflows));
    counter!("synack_kernel_syn_queue_full_total", "outcome" => "drop")
        .absolute(get("TcpExt.TCPReqQFullDrop"));
    counter!("synack_kernel_syn_queue_full_total", "outcome" => "cookie")
        .absolute(get("TcpExt.TCPReqQFullDoCookies"));
    for (dir, k) in [
        ("sent", "TcpExt.SyncookiesSent"),
        ("recv", "TcpExt.SyncookiesRecv"),
        ("failed", "TcpExt.SyncookiesFailed"),
    ] {
        counter!("synack_kernel_syncookies_total", "direction" => dir).absolute(get(k));
    }
}

/// Answers every request with the metrics (HTTP/1.0, then close); each scrape sets the peak
/// gauges from the peaks since the last one, then starts them afresh.
fn serve(
    listener: &TcpListener,
    handle: &PrometheusHandle,
    peaks: &Mutex<BTreeMap<(String, String), u32>>,
) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
        // The request head (to its empty line, at most 8 KiB); its contents do not matter.
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        {
            let mut p = peaks.lock().unwrap_or_else(|p| p.into_inner());
            for ((address, process), peak) in p.iter_mut() {
                gauge!("synack_listener_queue_peak", "address" => address.clone(), "process" => process.clone())
                    .set(f64::from(*peak));
                *peak = 0;
            }
        }
        let body = handle.render();
        let _ = write!(
            conn,
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
