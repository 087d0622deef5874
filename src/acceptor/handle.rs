//! The server's end of an acceptor: its orders, and how the server learns it has exited.

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

use super::{AcceptorExit, Control};

/// The server's end of an acceptor.
#[derive(Debug)]
pub(crate) struct AcceptorHandle {
    pub ctrl: Sender<Control>,
    pub done: Option<AcceptorDone>,
}

/// How the server learns that an acceptor has exited.
#[derive(Debug)]
pub(crate) enum AcceptorDone {
    /// A dedicated thread: joined.
    Thread(JoinHandle<AcceptorExit>),
    /// A task on a worker: it reports on this channel (closed unreported if its worker died).
    /// In a mutex only so that the server stays `Sync`.
    Task(Mutex<Receiver<AcceptorExit>>),
}

impl AcceptorDone {
    /// Waits until the acceptor has exited; logs one that died instead.
    pub fn wait(self) {
        match self {
            AcceptorDone::Thread(t) => match t.join() {
                Ok(AcceptorExit) => {}
                Err(_) => {
                    tracing::error!(target: "synack::server", "an acceptor thread panicked")
                }
            },
            AcceptorDone::Task(rx) => match rx
                .into_inner()
                .map_err(drop)
                .and_then(|rx| rx.recv().map_err(drop))
            {
                Ok(AcceptorExit) => {}
                Err(_) => {
                    tracing::error!(target: "synack::server", "an accept task ended without reporting (its worker is gone)")
                }
            },
        }
    }
}
