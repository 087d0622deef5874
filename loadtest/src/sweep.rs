//! `synack-load sweep`: one bounded open-loop flood per offered rate, each judged (see
//! [`crate::judge`]), and the saturation point: the first step where the queue overflows
//! (the listener's drops, SYN retransmissions, timeouts, unserved or refused connections, bad
//! responses) or the connect p99 leaves the sub-millisecond band.

use std::time::Duration;

use crate::flood::{self, Output};
use crate::judge::step;
use crate::plan::{Load, Plan};
use crate::report::sweep::Step;

/// How steps run: the plan each starts from, its bursts, length and listener watch, the p99
/// that counts as saturated, and how many times a step the generator did not deliver is run
/// again (a shared host's stall often passes; only a delivered run judges the server).
///
/// ```no_run
/// use std::time::Duration;
/// use synack_load::plan::{Load, PlanBuilder};
/// use synack_load::sweep::Steps;
///
/// let base = PlanBuilder::new("127.0.0.1:8080", Load::Closed { concurrency: 1 }, Duration::from_secs(1))
///     .build()?;
/// let steps = Steps { base: &base, burst: 0, duration: Duration::from_secs(2), watch: None,
///                     p99_limit: Duration::from_millis(1), retries: 2 };
/// let (step, reruns) = steps.run(1000.0, |_, _| {})?;
/// println!("{:?} after {reruns} reruns", step.verdict);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Steps<'a> {
    /// The plan each step starts from (its load and duration are the step's).
    pub base: &'a Plan,
    /// Attempts started at once every second, besides the rate.
    pub burst: u64,
    /// Each step's length.
    pub duration: Duration,
    /// Sample the listener through inet_diag at this interval.
    pub watch: Option<Duration>,
    /// Connect p99 at or above this counts as saturated.
    pub p99_limit: Duration,
    /// How many times a generator-bound or host-bound step is run again.
    pub retries: u32,
}

impl Steps<'_> {
    /// One open-loop run at `rate` (plus the bursts).
    ///
    /// # Errors
    ///
    /// The flood's: the generator's own sockets, the watch.
    pub fn once(&self, rate: f64) -> std::io::Result<Step> {
        let mut plan = self.base.clone();
        plan.load = Load::Open {
            from: rate,
            to: rate,
            burst: self.burst,
        };
        plan.duration = self.duration;
        let out = Output {
            hlog: None,
            live: false,
            watch: self.watch,
        };
        let rep = flood::flood(&plan, &out)?;
        Ok(step(rep, rate, self.burst, self.p99_limit))
    }

    /// The step at `rate`, run again while it judged nothing of the server (the generator did
    /// not deliver it, or the host ran out of CPU), up to
    /// [`Steps::retries`] times; `each` sees every run with its number (0 first). Returns the
    /// last run and how many reruns it took.
    ///
    /// # Errors
    ///
    /// As [`Steps::once`].
    pub fn run(&self, rate: f64, mut each: impl FnMut(&Step, u32)) -> std::io::Result<(Step, u32)> {
        let mut tries = 0;
        loop {
            let st = self.once(rate)?;
            each(&st, tries);
            if st.verdict.judged_server() || tries == self.retries {
                return Ok((st, tries));
            }
            tries += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}
