//! A named thread that runs a task on an interval until stopped (the queue sampler and the
//! metrics publisher).

use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

/// The running thread; stopping (or dropping) it ends the loop and joins it.
#[derive(Debug)]
pub(crate) struct Periodic {
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Periodic {
    /// Runs `tick` every `interval` on a thread called `name`.
    pub fn spawn(
        name: &str,
        interval: Duration,
        mut tick: impl FnMut() + Send + 'static,
    ) -> std::io::Result<Self> {
        let (stop, rx) = channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                    tick();
                }
            })?;
        Ok(Periodic {
            stop,
            thread: Some(thread),
        })
    }

    /// Ends the loop and waits for the thread.
    pub fn stop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        self.stop();
    }
}
