//! The observers of a running server, behind one hook: the accept-queue sampler and, with the
//! `metrics` feature, the metrics publisher and the per-worker dispatch-latency record. The
//! rest of the server knows only [`Observers`] (started, stopped) and [`DispatchHook`] (one
//! call per connection, nothing at all without the feature): no `cfg` in the core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::listener::Listener;
use crate::sampler::{self, QueueGauge, Sampler};
use crate::shared::Shared;

/// What to observe, as validated by the builder.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ObserveSettings {
    /// Sample each listener's accept queue this often.
    pub queue_sampling: Option<Duration>,
    /// Publish through the `metrics` facade this often (always `None` without the feature).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub metrics: Option<Duration>,
}

impl ObserveSettings {
    /// The hook a worker calls on each dispatch (made on the worker, once).
    pub fn dispatch_hook(&self) -> DispatchHook {
        DispatchHook {
            #[cfg(feature = "metrics")]
            hist: self
                .metrics
                .is_some()
                .then(|| metrics::histogram!(crate::metrics::DISPATCH_LATENCY)),
        }
    }
}

/// Called by a worker each time it starts a handler, with the dispatch latency. A zero-sized
/// no-op without the `metrics` feature.
#[derive(Debug, Default)]
pub(crate) struct DispatchHook {
    #[cfg(feature = "metrics")]
    hist: Option<metrics::Histogram>,
}

impl DispatchHook {
    /// A connection waited `waited` from `accept()` to its handler's start.
    #[inline]
    pub fn record(&self, waited: Duration) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.hist {
            h.record(waited.as_secs_f64());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = waited;
    }
}

/// The observer threads of a running server.
#[derive(Debug, Default)]
pub(crate) struct Observers {
    sampler: Option<Sampler>,
    #[cfg(feature = "metrics")]
    publisher: Option<crate::metrics::Publisher>,
}

impl Observers {
    /// Starts what `settings` ask for over `listeners` (the sampler into `gauges`, same
    /// order).
    ///
    /// # Errors
    ///
    /// [`Error::Start`] when a thread cannot be started.
    pub fn start(
        settings: &ObserveSettings,
        shared: &Arc<Shared>,
        listeners: &[Listener],
        gauges: &Arc<[QueueGauge]>,
    ) -> Result<Self, Error> {
        #[cfg(not(feature = "metrics"))]
        let _ = shared;
        let mut observers = Observers::default();
        #[cfg(feature = "metrics")]
        if let Some(interval) = settings.metrics {
            let ls = listeners
                .iter()
                .map(|l| (l.info.clone(), l.sock.clone()))
                .collect();
            let p = crate::metrics::Publisher::spawn(shared.clone(), ls, interval).map_err(
                |source| Error::Start {
                    what: "the metrics publisher thread".into(),
                    source,
                },
            )?;
            observers.publisher = Some(p);
        }
        if let Some(interval) = settings.queue_sampling {
            let socks = listeners.iter().map(|l| l.sock.clone()).collect();
            let sampler = sampler::spawn(socks, gauges.clone(), interval, Instant::now()).map_err(
                |source| Error::Start {
                    what: "the queue sampler thread".into(),
                    source,
                },
            )?;
            observers.sampler = Some(sampler);
        }
        Ok(observers)
    }

    /// Whether the accept queues are being sampled.
    pub fn sampling(&self) -> bool {
        self.sampler.is_some()
    }

    /// Stops sampling (before the listeners close).
    pub fn stop_sampling(&mut self) {
        if let Some(mut s) = self.sampler.take() {
            s.stop();
        }
    }

    /// Stops the rest, once the workers have stopped (the publisher publishes a last time).
    pub fn stop(&mut self) {
        #[cfg(feature = "metrics")]
        if let Some(mut p) = self.publisher.take() {
            p.stop();
        }
    }
}
