//! Statistics through the `metrics` facade (feature `metrics`), and a Prometheus endpoint
//! (feature `prometheus`).
//!
//! With [`ServerBuilder::metrics`](crate::ServerBuilder::metrics), a thread publishes a
//! snapshot every interval and each worker records dispatch latency as it happens. Install a
//! recorder (for example [`install_prometheus`]) before `serve()`: handles registered before a
//! recorder exists stay silent.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `synack_connections_accepted_total` | counter | | accepted and handed to a worker |
//! | `synack_connections_rejected_total` | counter | | reset at the connection limit (`Reject`) |
//! | `synack_connections_shed_total` | counter | | reset when descriptors ran out (`Shed`) |
//! | `synack_connections_completed_total` | counter | | handlers that returned or panicked |
//! | `synack_connections_aborted_total` | counter | | handlers cancelled (at shutdown, or with a worker that died) |
//! | `synack_connections_lost_total` | counter | | accepted, then closed unserved: their worker had died |
//! | `synack_handler_panics_total` | counter | | handlers that panicked |
//! | `synack_handler_errors_total` | counter | | handlers that returned an error |
//! | `synack_fin_with_data_total` | counter | | connections whose FIN left with their handler's last writes |
//! | `synack_held_pushed_total` | counter | | writes held for the FIN, pushed on their own |
//! | `synack_limit_reached_total` | counter | | times accepting stopped at the connection limit |
//! | `synack_accept_errors_total` | counter | `kind` | failed `accept()` calls by kind (`process_fd_limit`, ...) |
//! | `synack_connections_open` | gauge | | connections open now |
//! | `synack_connections_max` | gauge | | the connection limit |
//! | `synack_workers_alive` | gauge | | worker threads alive (see [`Stats::workers_alive`](crate::Stats::workers_alive)) |
//! | `synack_acceptors_alive` | gauge | | acceptors alive |
//! | `synack_accept_queue_depth` | gauge | `listener`, `index` | connections waiting in the kernel accept queue |
//! | `synack_listen_backlog_effective` | gauge | `listener`, `index` | the backlog the kernel granted |
//! | `synack_dispatch_latency_seconds` | histogram | | `accept()` to handler start |
//! | `synack_tls_handshakes_total` | counter | | TLS handshakes done (feature `tls`) |
//! | `synack_tls_resumed_total` | counter | | of those, resumed |
//! | `synack_tls_failed_total` | counter | `kind` | failed handshakes: `timeout`, `protocol`, `certificate`, `io` |
//! | `synack_tls_handshakes_in_progress` | gauge | | handshakes under way (capped by `max_handshakes`) |
//! | `synack_tls_handshake_seconds` | histogram | | TLS handshake latency, recorded as each ends |
//! | `synack_handoffs_total` | counter | `result` | handoffs this process asked for: `ok` (it winds down), `failed` (it serves on) |
//! | `synack_handoff_duration_seconds` | histogram | | the old process's request to its last handler done |
//! | `synack_handoff_generation` | gauge | | in a process a handoff started: how many handoffs led to it |
//! | `synack_handoff_ready_seconds` | gauge | | in that process: the old process's request to its ready |

use std::sync::{Arc, Weak};
use std::time::Duration;

use socket2::Socket;

use crate::listener::ListenerInfo;
use crate::periodic::Periodic;
use crate::shared::Shared;
use crate::stats::AcceptErrorKind;
use crate::sys;

/// The dispatch-latency histogram's name.
pub const DISPATCH_LATENCY: &str = "synack_dispatch_latency_seconds";

/// The publisher thread; it publishes once more when stopped. It holds the listeners weakly:
/// a graceful shutdown closes them as soon as the acceptors are done, while the publisher runs
/// on through the grace period.
#[derive(Debug)]
pub(crate) struct Publisher {
    periodic: Periodic,
    shared: Arc<Shared>,
    listeners: Arc<[(ListenerInfo, Weak<Socket>)]>,
}

impl Publisher {
    pub fn spawn(
        shared: Arc<Shared>,
        listeners: Vec<(ListenerInfo, Arc<Socket>)>,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let listeners: Arc<[_]> = listeners
            .into_iter()
            .map(|(info, sock)| (info, Arc::downgrade(&sock)))
            .collect();
        publish(&shared, &listeners);
        let (s, l) = (shared.clone(), listeners.clone());
        let periodic = Periodic::spawn("synack-metrics", interval, move || publish(&s, &l))?;
        Ok(Publisher {
            periodic,
            shared,
            listeners,
        })
    }

    pub fn stop(&mut self) {
        self.periodic.stop();
        publish(&self.shared, &self.listeners);
    }
}

fn publish(shared: &Shared, listeners: &[(ListenerInfo, Weak<Socket>)]) {
    let s = shared.merged_stats();
    metrics::counter!("synack_connections_accepted_total").absolute(s.accepted);
    metrics::counter!("synack_connections_rejected_total").absolute(s.rejected);
    metrics::counter!("synack_connections_shed_total").absolute(s.shed);
    metrics::counter!("synack_connections_completed_total").absolute(s.completed);
    metrics::counter!("synack_connections_aborted_total").absolute(s.aborted);
    metrics::counter!("synack_connections_lost_total").absolute(s.lost);
    metrics::counter!("synack_handler_panics_total").absolute(s.handler_panics);
    metrics::counter!("synack_handler_errors_total").absolute(s.handler_errors);
    metrics::counter!("synack_fin_with_data_total").absolute(s.fin_with_data);
    metrics::counter!("synack_held_pushed_total").absolute(s.held_pushed);
    metrics::counter!("synack_limit_reached_total").absolute(s.limit_reached);
    for kind in AcceptErrorKind::ALL {
        metrics::counter!("synack_accept_errors_total", "kind" => kind.name())
            .absolute(s.accept_errors.get(kind));
    }
    metrics::gauge!("synack_connections_open").set(s.open as f64);
    metrics::gauge!("synack_connections_max").set(shared.limit.max() as f64);
    if let Some(h) = &shared.handshakes {
        metrics::counter!("synack_tls_handshakes_total").absolute(s.tls.handshakes);
        metrics::counter!("synack_tls_resumed_total").absolute(s.tls.resumed);
        let f = s.tls.failed;
        for (kind, n) in [
            ("timeout", f.timeout),
            ("protocol", f.protocol),
            ("certificate", f.certificate),
            ("io", f.io),
        ] {
            metrics::counter!("synack_tls_failed_total", "kind" => kind).absolute(n);
        }
        metrics::gauge!("synack_tls_handshakes_in_progress").set(h.count() as f64);
    }
    let alive = |v: &[bool]| v.iter().filter(|a| **a).count() as f64;
    metrics::gauge!("synack_workers_alive").set(alive(&s.workers_alive));
    metrics::gauge!("synack_acceptors_alive").set(alive(&s.acceptors_alive));
    for (info, sock) in listeners {
        let labels = [
            ("listener", info.local_addr.to_string()),
            ("index", info.index.to_string()),
        ];
        // A listener already closed (by a shutdown) is left out.
        let Some(sock) = sock.upgrade() else {
            continue;
        };
        if let Ok(Some(q)) = sys::listen_queue(&*sock) {
            metrics::gauge!("synack_accept_queue_depth", &labels).set(q.len as f64);
            metrics::gauge!("synack_listen_backlog_effective", &labels).set(q.max as f64);
        } else if let Some(b) = info.effective_backlog {
            metrics::gauge!("synack_listen_backlog_effective", &labels).set(b as f64);
        }
    }
}

/// Installs a Prometheus recorder as the global `metrics` recorder, serving the text format
/// at `http://ADDR/metrics` (any path answers) from a thread of its own. Call it before
/// `serve()`. Bind it to loopback unless the scraper is elsewhere.
#[cfg(feature = "prometheus")]
/// # Errors
///
/// [`Error::Start`](crate::Error::Start) when the endpoint cannot be bound or a recorder is
/// already installed.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
///
/// # fn main() -> Result<(), synack::Error> {
/// synack::metrics::install_prometheus("127.0.0.1:9100".parse().unwrap())?;
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .metrics(Duration::from_secs(1))
///     .serve(|_conn: synack::Connection| async {})?;
/// # drop(server);
/// # Ok(())
/// # }
/// ```
pub fn install_prometheus(addr: std::net::SocketAddr) -> Result<(), crate::Error> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let buckets = [
        1e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3, 10e-3, 50e-3, 0.1,
        0.5, 1.0,
    ];
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Full(DISPATCH_LATENCY.into()), &buckets)
        .and_then(|b| b.install())
        .map_err(|e| crate::Error::Start {
            what: format!("the Prometheus endpoint on {addr}"),
            source: std::io::Error::other(e.to_string()),
        })
}
