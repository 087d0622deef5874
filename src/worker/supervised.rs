//! One connection's task on its worker: the handler started, run to its end with its panics
//! caught, and how it ended counted (completed, aborted, panicked, failed).

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::Instant;

use super::Ctx;
use crate::connection::{ConnInfo, Connection, PollScope};
use crate::dispatch::Accepted;
use crate::listener;
use crate::probe::ProbeHeader;
use crate::shared::HandshakePermit;
use crate::stats::WorkerStats;
use crate::threads::{forget_panic, panic_message};

/// What a handler's future may return: `()`, or any `Result` whose error is counted in
/// [`Stats::handler_errors`](crate::Stats::handler_errors) and logged at debug level.
/// # Examples
///
/// ```
/// # fn main() -> Result<(), synack::Error> {
/// // A handler may return (), or a Result whose error is counted in Stats::handler_errors.
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .serve(|conn: synack::Connection| async move {
///         if conn.peer_addr().ip().is_loopback() {
///             Ok(())
///         } else {
///             Err(format!("{} is not local", conn.peer_addr()))
///         }
///     })?;
/// # drop(server);
/// # Ok(())
/// # }
/// ```
pub trait HandlerOutput {
    /// The error, if the handler failed.
    fn error(&self) -> Option<&dyn fmt::Display>;
}

impl HandlerOutput for () {
    fn error(&self) -> Option<&dyn fmt::Display> {
        None
    }
}

impl<T, E: fmt::Display> HandlerOutput for Result<T, E> {
    fn error(&self) -> Option<&dyn fmt::Display> {
        self.as_ref().err().map(|e| e as &dyn fmt::Display)
    }
}

/// Counts a handler as aborted unless it ran to the end. It is made before the task is
/// spawned, so a task cancelled before its first poll counts too.
struct AbortGuard<H> {
    ctx: Rc<Ctx<H>>,
    done: bool,
}

impl<H> AbortGuard<H> {
    fn stats(&self) -> &WorkerStats {
        &self.ctx.shared.workers[self.ctx.index].stats
    }
}

impl<H> Drop for AbortGuard<H> {
    fn drop(&mut self) {
        if !self.done {
            self.stats().aborted.fetch_add(1, Relaxed);
        }
    }
}

/// Sets a connection up for its handler. The setup is synchronous, so that nothing of it (the
/// accepted-socket record, the addresses) lives on in the task's state: the task holds the
/// connection, then the handler's future in its place, the span and a few pointers. The
/// handler is started at the task's first poll, which is also when dispatch latency is taken:
/// `accept()` to the handler's start, whatever queue (the acceptor's channel, the worker's
/// run queue) lies between.
pub(super) fn serve_one<H, Fut>(
    acc: Accepted,
    ctx: Rc<Ctx<H>>,
) -> impl Future<Output = ()> + 'static
where
    H: Fn(Connection) -> Fut + Send + Sync + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    // First, so that a connection lost to a panic from here on (its worker dying) is counted.
    let guard = AbortGuard { ctx, done: false };
    let ctx = &guard.ctx;
    listener::configure_accepted(&acc.stream, &ctx.opts);
    let local_addr = match acc.local {
        Some(a) => a,
        None => acc.stream.local_addr().unwrap_or(acc.peer),
    };
    let info = ConnInfo {
        id: acc.id,
        peer_addr: acc.peer,
        local_addr,
        listener: acc.listener,
        acceptor: acc.acceptor,
        worker: ctx.index,
        accepted_at: acc.accepted_at,
        // Set when the handler starts.
        dispatched_at: acc.accepted_at,
        tls: None,
    };
    // One span per connection around its handler; nothing is built when debug is off.
    let span = tracing::debug_span!(target: "synack::conn", "conn", id = info.id,
        peer = %info.peer_addr, listener = info.listener, worker = info.worker);
    Supervised {
        stage: Stage::Waiting {
            conn: Some(Connection::new(acc.stream, info, acc.slot)),
            permit: acc.handshake,
        },
        span,
        guard,
    }
}

pin_project_lite::pin_project! {
    /// Where a connection's task is.
    #[project = StageProj]
    enum Stage<Fut> {
        /// Set up, its handler not started yet.
        Waiting { conn: Option<Connection>, permit: Option<HandshakePermit> },
        /// Its TLS handshake (with its place in the cap, given back when it ends): the
        /// connection, or `None` when it failed (counted).
        Handshaking { fut: Pin<Box<dyn Future<Output = Option<Connection>>>> },
        /// The handler's future.
        Running { #[pin] fut: Fut },
        /// Ended (only seen if polled again).
        Ended,
    }
}

pin_project_lite::pin_project! {
    /// A connection's handler run to its end, its panics caught and how it ended counted. A
    /// plain struct rather than an `async fn`, so the handler's future is stored once in the
    /// task, in the place the connection waited in.
    struct Supervised<H, Fut> {
        #[pin]
        stage: Stage<Fut>,
        span: tracing::Span,
        guard: AbortGuard<H>,
    }

    impl<H, Fut> PinnedDrop for Supervised<H, Fut> {
        /// A handler cancelled before its end (at the end of a shutdown's grace, or with its
        /// worker): its future is dropped here, a panic of its `Drop` caught and counted. The
        /// guard, dropped after, counts it as aborted.
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if matches!(this.stage.as_ref().get_ref(), Stage::Ended) {
                return;
            }
            if let Err(panic) =
                std::panic::catch_unwind(AssertUnwindSafe(|| this.stage.set(Stage::Ended)))
            {
                this.guard.stats().panics.fetch_add(1, Relaxed);
                let span = &*this.span;
                let logged = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    tracing::warn!(target: "synack::conn", parent: span, panic = %panic_message(&*panic),
                        "handler's future panicked when cancelled; connection closed, worker continues");
                }));
                forget_panic(panic);
                if let Err(p) = logged {
                    forget_panic(p);
                }
            }
        }
    }
}

/// Starts the handler on `conn`: records the dispatch, writes the probe header, calls the
/// handler inside the span, its panic (or one of a tracing layer) caught.
fn start<H, Fut>(
    mut conn: Connection,
    ctx: &Ctx<H>,
    span: &tracing::Span,
) -> std::thread::Result<Fut>
where
    H: Fn(Connection) -> Fut,
{
    std::panic::catch_unwind(AssertUnwindSafe(move || {
        let stats = &ctx.shared.workers[ctx.index].stats;
        let dispatched_at = Instant::now();
        let accepted_at = conn.info().accepted_at;
        conn.set_dispatched_at(dispatched_at);
        let waited = dispatched_at.saturating_duration_since(accepted_at);
        stats.record_dispatch(waited);
        ctx.hook.record(waited);
        tracing::debug!(target: "synack::conn", parent: span, "connection dispatched");
        if let Some(clock) = ctx.shared.probe {
            let header = ProbeHeader {
                accept_ns: clock.ns(accepted_at),
                dispatch_ns: clock.ns(dispatched_at),
            };
            // 24 bytes into a fresh socket's empty send buffer: written at once.
            if let Err(e) = conn.write_now(&header.encode()) {
                tracing::debug!(target: "synack::conn", parent: span, error = %e, "cannot write the probe header");
            }
        }
        span.in_scope(|| (ctx.handler)(conn))
    }))
}

impl<H, Fut> Future for Supervised<H, Fut>
where
    H: Fn(Connection) -> Fut + 'static,
    Fut: Future,
    Fut::Output: HandlerOutput,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let mut this = self.project();
        // The handler's poll, with its writes held for the FIN (`fin_with_data`); when it
        // ends, the scope also covers the drop of its future, which may close the connection.
        let mut scope = None;
        let outcome = loop {
            match this.stage.as_mut().project() {
                StageProj::Waiting { conn, permit } => {
                    let Some(conn) = conn.take() else {
                        break Err(Box::new("connection lost before its handler started") as _);
                    };
                    let permit = permit.take();
                    #[cfg(feature = "tls")]
                    if let Some(tls) = &this.guard.ctx.tls {
                        let fut = handshake(
                            conn,
                            tls.clone(),
                            permit,
                            this.guard.ctx.clone(),
                            this.span.clone(),
                        );
                        this.stage.set(Stage::Handshaking { fut: Box::pin(fut) });
                        continue;
                    }
                    drop(permit);
                    match start(conn, &this.guard.ctx, this.span) {
                        Ok(fut) => this.stage.set(Stage::Running { fut }),
                        Err(panic) => break Err(panic),
                    }
                }
                StageProj::Handshaking { fut } => {
                    match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(Some(conn))) => {
                            match start(conn, &this.guard.ctx, this.span) {
                                Ok(fut) => this.stage.set(Stage::Running { fut }),
                                Err(panic) => break Err(panic),
                            }
                        }
                        Ok(Poll::Ready(None)) => {
                            // The handshake failed (counted by kind): the connection's task
                            // ends here, its slot freed, without a handler.
                            this.stage.set(Stage::Ended);
                            this.guard.done = true;
                            this.guard.stats().completed.fetch_add(1, Relaxed);
                            return Poll::Ready(());
                        }
                        Err(panic) => break Err(panic),
                    }
                }
                StageProj::Running { fut } => {
                    let span = &*this.span;
                    let ctx = &this.guard.ctx;
                    let stats = &ctx.shared.workers[ctx.index].stats;
                    scope = PollScope::open(ctx.fin_with_data, stats);
                    match std::panic::catch_unwind(AssertUnwindSafe(|| {
                        let _entered = span.enter();
                        fut.poll(cx)
                    })) {
                        Ok(Poll::Pending) => {
                            // Ends the holding: what the poll wrote leaves now.
                            drop(scope);
                            return Poll::Pending;
                        }
                        Ok(Poll::Ready(out)) => break Ok(out),
                        Err(panic) => break Err(panic),
                    }
                }
                StageProj::Ended => return Poll::Ready(()),
            }
        };
        // The handler's future goes first, with the connection if the handler still held it,
        // so that a handler counted as done has closed its connection and freed its slot. Its
        // `Drop` is the handler's code: a panic there is caught too.
        let dropped = std::panic::catch_unwind(AssertUnwindSafe(|| this.stage.set(Stage::Ended)));
        drop(scope);
        let panicked = outcome.is_err() || dropped.is_err();
        this.guard.done = true;
        let span = &*this.span;
        let stats = this.guard.stats();
        // What is left runs the handler's code as well (its error's `Display`, its output's
        // `Drop`) and the tracing layers: caught, so that nothing of it can end the worker.
        let reported = std::panic::catch_unwind(AssertUnwindSafe(|| {
            match outcome {
                Ok(out) => {
                    if let Some(e) = out.error() {
                        stats.handler_errors.fetch_add(1, Relaxed);
                        tracing::debug!(target: "synack::conn", parent: span, error = %e, "handler returned an error");
                    }
                }
                Err(panic) => {
                    tracing::warn!(target: "synack::conn", parent: span, panic = %panic_message(&*panic),
                        "handler panicked; connection closed, worker continues");
                }
            }
            if let Err(panic) = dropped {
                tracing::warn!(target: "synack::conn", parent: span, panic = %panic_message(&*panic),
                    "handler's future panicked when dropped; connection closed, worker continues");
            }
            tracing::debug!(target: "synack::conn", parent: span, "connection done");
        }));
        if panicked || reported.is_err() {
            stats.panics.fetch_add(1, Relaxed);
        }
        stats.completed.fetch_add(1, Relaxed);
        if let Err(panic) = reported {
            forget_panic(panic);
        }
        Poll::Ready(())
    }
}

/// A connection's TLS handshake on its worker, bounded by its timeout: the connection with the
/// TLS stream in it, or `None` when the handshake failed (counted by kind, logged at debug).
/// Its place in the handshake cap is given back when it ends.
#[cfg(feature = "tls")]
async fn handshake<H>(
    mut conn: Connection,
    tls: crate::tls::TlsSettings,
    permit: Option<HandshakePermit>,
    ctx: Rc<Ctx<H>>,
    span: tracing::Span,
) -> Option<Connection> {
    use crate::stats::TlsFailure as Failure;
    use crate::tls::{TlsInfo, failure_kind};
    let stats = &ctx.shared.workers[ctx.index].stats;
    let started = Instant::now();
    let tcp = match conn.take_tcp() {
        Ok(t) => t,
        Err(e) => {
            stats.tls_failure(Failure::Io);
            tracing::debug!(target: "synack::conn", parent: &span, error = %e, "cannot register the connection for its TLS handshake");
            return None;
        }
    };
    let timeout = tls.timeout;
    let result =
        tokio::time::timeout(timeout, crate::tls::TlsStream::accept(tcp, tls.config)).await;
    drop(permit);
    let failure = match result {
        Ok(Ok(tls)) => {
            let took = started.elapsed();
            let server = tls.get_ref().1;
            let resumed = server.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            let info = TlsInfo {
                version: match server.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                    Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                    _ => "unknown",
                },
                alpn: server.alpn_protocol().map(<[u8]>::to_vec),
                sni: server.server_name().map(str::to_string),
                resumed,
                handshake: took,
            };
            stats.tls_done.fetch_add(1, Relaxed);
            if resumed {
                stats.tls_resumed.fetch_add(1, Relaxed);
            }
            if let Ok(mut h) = stats.tls_handshake_us.lock() {
                h.saturating_record((took.as_micros() as u64).max(1));
            }
            #[cfg(feature = "metrics")]
            metrics::histogram!("synack_tls_handshake_seconds").record(took.as_secs_f64());
            conn.set_tls(tls, info);
            return Some(conn);
        }
        Ok(Err(e)) => {
            let kind = failure_kind(&e);
            tracing::debug!(target: "synack::conn", parent: &span, error = %e, kind = ?kind, "TLS handshake failed");
            kind
        }
        Err(_) => {
            tracing::debug!(target: "synack::conn", parent: &span, timeout_ms = timeout.as_millis() as u64, "TLS handshake timed out; closed");
            Failure::Timeout
        }
    };
    stats.tls_failure(failure);
    None
}
