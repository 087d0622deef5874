//! sweep, tune and the HTML report, against real servers on loopback.

use std::path::Path;
use std::time::Duration;

use synack_load::report::sweep::SweepReport;
use synack_load::report::tune::TuneReport;
use tokio::io::AsyncWriteExt;

mod common;
use common::{bin, serial, tmp};

fn run(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Parses a page as XML (the report is written as XHTML) and counts its <svg> charts.
fn parse_html(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut svgs = 0;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e)) if e.name().into_inner() == "svg" => svgs += 1,
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("{} does not parse: {e}", path.display()),
        }
    }
    svgs
}

fn server(backlog: u32, max: usize, service: Duration) -> synack::Server {
    synack::Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .backlog(backlog)
        .max_connections(max)
        .workers(1)
        .serve(move |mut c: synack::Connection| async move {
            if !service.is_zero() {
                tokio::time::sleep(service).await;
            }
            c.write_all(b"hi").await
        })
        .unwrap()
}

#[test]
fn sweep_names_the_saturation_point_of_a_slow_server_and_none_for_a_fast_one() {
    let _turn = serial();
    let fast = server(1024, 8192, Duration::ZERO);
    let json = tmp("fast.json");
    let text = run(&[
        "sweep",
        &fast.local_addr().to_string(),
        "--rates",
        "100,200",
        "--step-duration",
        "1s",
        "--settle",
        "100ms",
        "--p99-limit",
        "500ms",
        // The listener's own drop count, not the host-wide counter another test may move.
        "--watch-listener",
        // A shared, busy machine: this is about the server, not the generator's jitter.
        "--lag-limit",
        "200ms",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    let rep: SweepReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(rep.steps.len(), 2);
    assert!(
        rep.steps.iter().all(|s| s.listener_drops == Some(0)),
        "{text}"
    );
    assert_eq!(rep.saturation_rate, None, "{text}");
    assert_eq!(rep.last_good_rate, Some(200.0));
    assert!(text.contains("no saturation up to"), "{text}");
    drop(fast);

    // Backlog 8, one connection at a time, 20 ms each: about 50 accepts a second.
    let slow = server(8, 1, Duration::from_millis(20));
    let json = tmp("slow.json");
    let report = tmp("slow-report");
    let text = run(&[
        "sweep",
        &slow.local_addr().to_string(),
        "--rates",
        "10,400",
        "--step-duration",
        "1s",
        "--settle",
        "100ms",
        "--p99-limit",
        "500ms",
        "--connect-timeout",
        "500ms",
        "--watch-listener",
        "--lag-limit",
        "200ms",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    let rep: SweepReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(rep.saturation_rate, Some(400.0), "{text}");
    assert_eq!(rep.last_good_rate, Some(10.0), "{text}");
    assert!(!rep.saturation_reasons.is_empty());
    assert!(text.contains("saturation point: 400/s"), "{text}");
    let sat = &rep.steps[1];
    assert!(sat.peak_queue.unwrap() >= 8, "{sat:?}");
    // The listener itself counted the drops.
    assert!(sat.listener_drops.unwrap() > 0, "{sat:?}");
    assert_eq!(sat.effective_backlog, Some(8));
    assert!(parse_html(&report.join("report.html")) >= 2);
}

#[test]
fn tune_with_a_tiny_configuration_recommends_a_backlog_and_writes_a_report() {
    let _turn = serial();
    let json = tmp("tune.json");
    let report = tmp("tune-report");
    let text = run(&[
        "tune",
        "--backlogs",
        "4,512",
        "--load",
        "0.5",
        "--burst",
        "60",
        "--max-connections",
        "2",
        "--service-time",
        "5ms",
        "--service-dist",
        "fixed",
        "--step-duration",
        "1s",
        "--lag-limit",
        "200ms",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    let rep: TuneReport = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(rep.backlogs.len(), 2);
    // Bursts of 60 cannot fit a queue of 5: backlog 4 drops; 512 absorbs them.
    assert_eq!(rep.backlogs[0].max_clean_rate, None, "{text}");
    assert!(rep.backlogs[0].past_it.is_some());
    assert_eq!(rep.recommended_backlog, Some(512), "{text}");
    assert!(text.contains("recommended backlog: 512"), "{text}");
    assert!(parse_html(&report.join("report.html")) >= 2);
}

#[test]
fn flood_report_is_self_contained_xhtml() {
    let s = server(64, 8192, Duration::ZERO);
    let report = tmp("flood-report");
    run(&[
        "flood",
        &s.local_addr().to_string(),
        "--rate",
        "500",
        "--duration",
        "500ms",
        "--read",
        "2",
        "--watch-listener",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
    ]);
    let page = report.join("report.html");
    assert!(parse_html(&page) >= 2);
    let text = std::fs::read_to_string(&page).unwrap();
    // Nothing fetched at view time: no attribute or style points off the page (the SVG
    // namespace URIs are names, not fetches).
    for fetch in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "src='http",
        "href='http",
    ] {
        assert!(!text.contains(fetch), "{fetch}");
    }
    assert!(!text.contains("<script"));
}
