//! An acceptor run as a task on a worker's own runtime (the
//! [`accept_in_workers`](crate::ServerBuilder::accept_in_workers) mode).
//!
//! The listeners are registered with the worker's tokio reactor; the task waits for any of
//! them to be readable, for an order or a freed slot (a [`Notify`]), or for a back-off or drain
//! deadline, then runs the same [`AcceptCore`] turn as a dedicated acceptor thread. What it
//! accepts is started by the worker's dispatch at once, on the same thread, before the next
//! accept: a connection reaches its handler without a channel, a wakeup or a context switch.
//! After a full batch it yields, so the worker's other handlers and its reactor get a turn
//! before it accepts more.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::task::Poll;

use socket2::Socket;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use super::core::{AcceptCore, Next};
use super::{AcceptorExit, Control};
use crate::dispatch::Dispatch;

/// An acceptor a worker runs as a task of its own.
pub(crate) struct AcceptTask {
    pub core: AcceptCore,
    pub ctrl: Receiver<Control>,
    pub notify: Arc<Notify>,
    /// Where the task reports how it ended.
    pub done: std::sync::mpsc::Sender<AcceptorExit>,
}

/// Runs the accept loop until it is stopped; returns what it left in the kernel queues.
pub(crate) async fn run(
    mut core: AcceptCore,
    ctrl: Receiver<Control>,
    notify: Arc<Notify>,
    mut dispatch: impl Dispatch,
) -> AcceptorExit {
    tracing::debug!(target: "synack::acceptor", acceptor = core.id, listeners = core.entries.len(),
        "accept task started on its worker");
    // Registered with the reactor once, kept for the task's life; `Entry::registered` says
    // whether the task is watching it now.
    let mut fds: Vec<Option<AsyncFd<Arc<Socket>>>> = core.entries.iter().map(|_| None).collect();
    // One waiter kept registered across waits, renewed only once it fires (registering and
    // removing a waiter each time would take the Notify's lock twice per wait).
    let mut notified = pin!(notify.notified());
    loop {
        if let Some(exit) = core.begin_turn(&ctrl) {
            return exit;
        }
        // The reactor registration is made once and kept; stopping to watch a listener is
        // just not polling it.
        core.sync_watch(|i, e, on| {
            if on && fds[i].is_none() {
                fds[i] = Some(crate::sys::register_listener(e.sock.clone())?);
            }
            Ok(())
        });
        let until = match core.finish_turn(&mut dispatch) {
            Next::Exit(exit) => return exit,
            Next::Again => {
                tokio::task::yield_now().await;
                continue;
            }
            Next::Wait(until) => until,
        };
        let mut sleep = pin!(until.map(|t| tokio::time::sleep_until(t.into())));
        poll_fn(|cx| {
            let mut woke = false;
            if notified.as_mut().poll(cx).is_ready() {
                notified.set(notify.notified());
                woke = true;
            }
            if let Some(s) = sleep.as_mut().as_pin_mut() {
                woke |= s.poll(cx).is_ready();
            }
            for (i, fd) in fds.iter().enumerate() {
                let e = &mut core.entries[i];
                let Some(fd) = fd else { continue };
                if !e.registered || e.ready || e.backoff_until.is_some() {
                    continue;
                }
                match fd.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => {
                        // Cleared before accepting: a connection arriving after the clear
                        // sets readiness again; one before it is taken by the accepts to come.
                        guard.clear_ready();
                        e.ready = true;
                        woke = true;
                    }
                    Poll::Ready(Err(err)) => {
                        core.registration_failed(i, &err);
                        woke = true;
                    }
                    Poll::Pending => {}
                }
            }
            if woke { Poll::Ready(()) } else { Poll::Pending }
        })
        .await;
    }
}
