//! `flood --embedded`: a synack greeting server in this process, the target of a flood.

use synack::Server;
use tokio::io::AsyncWriteExt;

/// The embedded server's listen backlog unless `--server-backlog` says otherwise.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// Its worker threads unless `--server-workers` says otherwise.
pub const DEFAULT_WORKERS: usize = 1;

/// The greeting the embedded server writes (18 bytes).
pub const GREETING: &[u8] = b"hello from synack\n";

/// Starts a greeting server on 127.0.0.1 (a free port), accepting on an acceptor thread or in
/// its workers, writing the probe header if asked.
pub fn start(
    backlog: u32,
    workers: usize,
    max_connections: usize,
    accept_in_workers: bool,
    probe: bool,
) -> Result<Server, synack::Error> {
    Server::builder()
        .bind("127.0.0.1:0")?
        .accept_in_workers(accept_in_workers)
        .probe(probe)
        .backlog(backlog)
        .workers(workers)
        .max_connections(max_connections)
        .serve(|mut conn: synack::Connection| async move {
            conn.write_all(GREETING).await?;
            conn.shutdown().await
        })
}

/// A few lines on what the server saw.
pub fn summary(server: &Server) -> String {
    let s = server.stats();
    let l = &server.listeners()[0];
    format!(
        "embedded synack server {}: backlog asked {} effective {}, {} workers ({} alive), max {} connections\n  \
         accepted {}  completed {}  rejected {}  lost {}  accept errors {}  dispatch p50 {} us p99 {} us  \
         accept batch mean {:.1}\n",
        l.local_addr,
        l.requested_backlog,
        l.effective_backlog
            .map_or_else(|| "unknown".into(), |b| b.to_string()),
        s.open_per_worker.len(),
        s.workers_alive.iter().filter(|a| **a).count(),
        s.max_connections,
        s.accepted,
        s.completed,
        s.rejected,
        s.lost,
        s.accept_errors.total(),
        s.dispatch_latency_us.value_at_quantile(0.5),
        s.dispatch_latency_us.value_at_quantile(0.99),
        s.accept_batch.mean(),
    )
}
