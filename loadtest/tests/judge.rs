//! The judge's rules replayed on recorded flood reports (`fixtures/judge/*.json`), one per
//! case of issue 26: each fixture's first note says how it was recorded and what was set.

use std::time::Duration;

use synack_load::judge::{delivery, verdict};
use synack_load::report::FloodReport;
use synack_load::report::sweep::Verdict;

fn fixture(name: &str) -> FloodReport {
    let path = format!("{}/tests/fixtures/judge/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn recorded_reports_get_the_verdict_their_evidence_supports() {
    let limit = Duration::from_millis(1);
    // (fixture, delivered, verdict, a reason that must be given)
    let cases: [(&str, bool, Verdict, Option<&str>); 6] = [
        // Bursts on loopback: connect time is each attempt's own, not its batch's.
        ("burst-connect.json", true, Verdict::Clean, None),
        // An idle generator with bursts: delivered, judged.
        ("idle-generator-bursts.json", true, Verdict::Clean, None),
        // From-schedule latency over the limit with connect under it: the generator's lag.
        ("fast-server-from-schedule.json", true, Verdict::Clean, None),
        // The listener's own drops at arrivals started faster than served: saturated, with
        // how late the starts were.
        (
            "jvm-drops-lagging.json",
            false,
            Verdict::Saturated,
            Some("56856 SYNs/ACKs dropped by the listener"),
        ),
        // Late starts with every CPU busy and neither side at its limit: the host.
        ("host-bound.json", false, Verdict::HostBound, Some("--cpus")),
        // Half-open connections are the server side's failure to complete, said as such.
        (
            "half-open.json",
            true,
            Verdict::Saturated,
            Some("2 half-open"),
        ),
    ];
    for (name, delivered, want, reason) in cases {
        let rep = fixture(name);
        assert_eq!(
            delivery(&rep).is_empty(),
            delivered,
            "{name}: {:?}",
            delivery(&rep)
        );
        let (v, why) = verdict(&rep, limit);
        assert_eq!(v, want, "{name}: {why:?}");
        if let Some(r) = reason {
            assert!(why.iter().any(|w| w.contains(r)), "{name}: {why:?}");
        }
    }
    // The lagging JVM case says how late the starts were.
    let (_, why) = verdict(&fixture("jvm-drops-lagging.json"), limit);
    assert!(
        why.iter().any(|w| w.contains("start lag p99 7411 us")),
        "{why:?}"
    );
}
