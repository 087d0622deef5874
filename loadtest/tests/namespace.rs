//! synack-load against real servers on loopback: in a network namespace the test makes itself
//! (root): an unreachable route.
//! No timed assertions: counts and classes only.

use std::process::Command;

use synack_load::report::FloodReport;

mod common;
use common::{Netns, ip, skip_or_fail, tmp};

/// `synack-load flood 192.0.2.1:80 args...` inside the namespace, which must succeed; its report.
fn flood_in(ns: &Netns, args: &[&str]) -> FloodReport {
    let json = tmp("unreachable.json");
    common::json_run(
        Command::new("ip")
            .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_synack-load")])
            .args([
                "flood",
                "192.0.2.1:80",
                "--quiet",
                "--json",
                json.to_str().unwrap(),
            ])
            .args(args),
        &json,
    )
    .1
}

#[test]
fn an_unreachable_route_in_a_namespace_gives_unreachable() {
    let name = format!("synack-load-test-{}", std::process::id());
    if let Err(why) = ip(&["netns", "add", &name]) {
        return skip_or_fail(
            "an_unreachable_route_in_a_namespace_gives_unreachable",
            &format!("needs root and iproute2 ({why})"),
        );
    }
    let ns = Netns(name);
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]).unwrap();
    // TEST-NET-1, only inside this namespace, routed nowhere: no packet leaves.
    ip(&["-n", &ns.0, "route", "add", "unreachable", "192.0.2.0/24"]).unwrap();
    let rep = flood_in(&ns, &["--connections", "5", "--concurrency", "5"]);
    assert_eq!(rep.outcomes["unreachable"], 5, "{rep:#?}");
    // Without --connections, a closed loop whose every start fails at once still ends at
    // --duration (it used to spin forever), with each attempt classified.
    let rep = flood_in(&ns, &["--duration", "300ms", "--concurrency", "5"]);
    assert!(rep.outcomes["unreachable"] >= 1, "{rep:#?}");
    assert_eq!(rep.outcomes.values().sum::<u64>(), rep.attempts);
    assert_eq!(rep.outcomes["unreachable"], rep.attempts);
}
