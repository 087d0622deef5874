//! Past the generator's own capacity: the open-loop section.

use std::time::Duration;

use synack_load::engine;
use synack_load::plan::Load;

use crate::harness::{ChildServer, median, plan};

/// Past the generator's capacity: one thread, against the floor server. Each round measures
/// the closed-loop capacity C (64 in flight), then offers 1.5 C and 3 C open loop; the achieved
/// rate is a ratio of that round's C (goal: at least 0.9x), every outcome that is not `ok`
/// is listed with the kernel's evidence (goal: none the kernel did not cause), and a 10k/s
/// run gives the start-lag p99 (goal: under 50 us). Medians over rounds.
pub fn open_loop(cpus: usize, seconds: u64, runs: usize) {
    use synack_load::outcome::Outcome;
    use synack_load::report::{FloodReport, HostFacts, Latency, kernel_snapshot};
    println!(
        "
open loop past capacity: one generator thread on CPU 1, the floor server on CPU 0, {seconds} s each; \
         C = that round's closed-loop rate (64 in flight)"
    );
    let server = ChildServer::start("floor", cpus);
    let addr = server.addr;
    let flood = |load: Load| -> FloodReport {
        let p = plan(addr, load, Duration::from_secs(seconds), None);
        let before = kernel_snapshot();
        let run = engine::run(&p, |_, _, _| {}).unwrap();
        let after = kernel_snapshot();
        std::thread::sleep(Duration::from_millis(500));
        FloodReport::build(&p, &run, &HostFacts::read(), before, after, Vec::new())
    };
    let open = |rate: f64| Load::Open {
        from: rate,
        to: rate,
        burst: 0,
    };
    let mut caps = Vec::new();
    let mut ratios: [Vec<f64>; 2] = [vec![], vec![]];
    let mut lag = Vec::new();
    let mut not_ok: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut overflows, mut retransmitted, mut late) = (0i64, 0u64, 0u64);
    for _ in 0..runs {
        let closed = flood(Load::Closed { concurrency: 64 });
        let c = closed.achieved_rate;
        caps.push(c);
        for (k, mult) in [1.5, 3.0].into_iter().enumerate() {
            let r = flood(open(c * mult));
            ratios[k].push(r.achieved_rate / c);
            for o in Outcome::ALL {
                if o != Outcome::Ok && o != Outcome::NotStarted && r.outcome(o) > 0 {
                    *not_ok.entry(o.name().to_string()).or_default() += r.outcome(o);
                }
            }
            overflows += r.kernel_delta("TcpExt.ListenOverflows").unwrap_or(0);
            retransmitted += r.timeouts_retransmitted;
            late += r.generator.late;
        }
        let r = flood(open(10_000.0));
        lag.push(r.latency(Latency::StartLag).map_or(0.0, |p| p.p99 as f64));
    }
    drop(server);
    println!("closed loop C                 {:>8.0} conn/s", median(caps));
    for (k, mult) in ["1.5", "3"].iter().enumerate() {
        println!(
            "offered {mult:>3} C, achieved    {:>8.2}x C   (goal >= 0.9x)",
            median(ratios[k].clone())
        );
    }
    let listed: Vec<String> = not_ok.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "outcomes besides ok and not_started, all rounds: {}   (kernel: {overflows:+} ListenOverflows host-wide, {retransmitted} timeouts with a retransmitted SYN; late is the generator's: {late})",
        if listed.is_empty() {
            "none".to_string()
        } else {
            listed.join(", ")
        }
    );
    println!(
        "start lag p99 at 10k/s         {:>8.0} us   (goal < 50 us)",
        median(lag)
    );
}
