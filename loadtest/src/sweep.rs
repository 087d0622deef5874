//! `synack-load sweep`: one bounded open-loop flood per offered rate, each judged (see
//! [`crate::report::sweep`]), and the saturation point: the first step where the queue
//! overflows (listen overflows, SYN retransmissions, timeouts, unserved or refused
//! connections, bad responses) or the p99 of connect, or of latency from the schedule, leaves
//! the sub-millisecond band.

use std::time::Duration;

use crate::flood::{self, Output};
use crate::plan::{Load, Plan};
use crate::report::sweep::{Step, step};

/// Runs one open-loop step at `rate` (plus `burst` each second) from a base plan.
pub fn run_step(
    base: &Plan,
    rate: f64,
    burst: u64,
    duration: Duration,
    watch: Option<Duration>,
    p99_limit: Duration,
) -> std::io::Result<Step> {
    let mut plan = base.clone();
    plan.load = Load::Open {
        from: rate,
        to: rate,
        burst,
    };
    plan.duration = duration;
    let out = Output {
        hlog: None,
        live: false,
        watch,
    };
    let rep = flood::flood(&plan, &out)?;
    Ok(step(rep, rate, burst, p99_limit))
}
