//! The statistics through the `metrics` facade, scraped from the Prometheus endpoint and parsed
//! as the text format. Its own test binary: it installs the global recorder.
#![cfg(feature = "prometheus")]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{fetch, hi, wait_for};
use synack::Server;

/// Parses the Prometheus text format into `name{labels}` -> value.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        out.insert(key.to_string(), value);
    }
    out
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    resp.split_once("\r\n\r\n").unwrap().1.to_string()
}

#[test]
fn prometheus_endpoint_exports_the_documented_names() {
    let metrics_addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    synack::metrics::install_prometheus(metrics_addr).unwrap();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .backlog(99)
        .workers(1)
        .metrics(Duration::from_millis(20))
        .serve(hi)
        .unwrap();
    for _ in 0..3 {
        assert_eq!(fetch(server.local_addr()), "hi");
    }
    let mut samples = HashMap::new();
    wait_for("the exporter to show 3 completed connections", || {
        samples = parse(&scrape(metrics_addr));
        samples.get("synack_connections_completed_total") == Some(&3.0)
    });
    assert_eq!(samples["synack_connections_accepted_total"], 3.0);
    assert_eq!(samples["synack_connections_open"], 0.0);
    assert_eq!(samples["synack_connections_max"], 8192.0);
    assert_eq!(samples["synack_dispatch_latency_seconds_count"], 3.0);
    assert_eq!(
        samples["synack_accept_errors_total{kind=\"process_fd_limit\"}"],
        0.0
    );
    let listener = format!("listener=\"{}\",index=\"0\"", server.local_addr());
    assert_eq!(
        samples[&format!("synack_listen_backlog_effective{{{listener}}}")],
        99.0
    );
    assert_eq!(
        samples[&format!("synack_accept_queue_depth{{{listener}}}")],
        0.0
    );
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("synack_dispatch_latency_seconds_bucket{le="))
    );
}
