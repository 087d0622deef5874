//! The human-readable end-of-run table.

use std::fmt::Write;

use super::{FloodReport, Latency, fmt_rate as rate};
use crate::outcome::Outcome;

/// Renders a report as the table printed at the end of a flood.
pub fn render(r: &FloodReport) -> String {
    let mut s = String::new();
    let load = match (r.rate_from, r.rate_to, r.concurrency) {
        (Some(a), Some(b), _) if (a - b).abs() < f64::EPSILON && r.burst > 0 => {
            format!(
                "open loop, {} plus bursts of {} each second",
                rate(a),
                r.burst
            )
        }
        (Some(a), Some(b), _) if (a - b).abs() < f64::EPSILON => format!("open loop, {}", rate(a)),
        (Some(a), Some(b), _) => format!("open loop, ramp {} -> {}", rate(a), rate(b)),
        (_, _, Some(c)) => format!("closed loop, {c} in flight"),
        _ => "?".into(),
    };
    let close = match (r.close.as_str(), r.reuse_sockets) {
        ("rst", true) => "RST closes, sockets reused",
        ("rst", false) => "RST closes, a new socket each",
        _ => "FIN closes",
    };
    let _ = writeln!(
        s,
        "synack-load flood {} ({}): {load}, {} threads, {close}, {:.2} s",
        r.target, r.resolved, r.threads, r.elapsed_s
    );
    let x = &r.exchange;
    let sent = match (&x.http_request, x.payload.as_str()) {
        (Some(line), _) => format!("each sent {line} ({} bytes)", x.payload_bytes),
        (None, _) if x.payload_bytes == 0 => String::new(),
        (None, "bytes") => format!("each sent {} bytes of text", x.payload_bytes),
        (None, _) => format!("each sent {} filler bytes", x.payload_bytes),
    };
    let read = match (x.answer.as_str(), x.read_bytes) {
        ("http", _) => "read the response to its end".to_string(),
        ("bytes", Some(n)) => format!("read {n} bytes or to the close"),
        _ => String::new(),
    };
    let expect = x
        .expect
        .as_ref()
        .map(|e| format!("answers must start with \"{e}\""));
    let parts: Vec<String> = [Some(sent), Some(read), expect]
        .into_iter()
        .flatten()
        .filter(|p| !p.is_empty())
        .collect();
    if !parts.is_empty() {
        let _ = writeln!(s, "  connections: {}", parts.join(", "));
    }
    let _ = writeln!(
        s,
        "  attempts {}   established {}   ok {}",
        r.attempts,
        r.established,
        r.outcome(Outcome::Ok)
    );
    match r.offered_rate {
        Some(o) => {
            let _ = writeln!(
                s,
                "  rate: offered {}   achieved {}",
                rate(o),
                rate(r.achieved_rate)
            );
        }
        None => {
            let _ = writeln!(s, "  rate: achieved {}", rate(r.achieved_rate));
        }
    }
    let g = &r.generator;
    let busy: Vec<String> = g
        .thread_busy
        .iter()
        .map(|b| format!("{:.0}%", b * 100.0))
        .collect();
    let _ = writeln!(
        s,
        "  generator: {}   started {}/s{}   in flight peak {} of {}{}{}",
        if g.delivered {
            "delivered the load asked"
        } else {
            "GENERATOR-BOUND (did not deliver the load asked)"
        },
        rate(g.started_rate).trim_end_matches("/s"),
        g.start_lag_p99_us
            .map_or_else(String::new, |l| format!("   start lag p99 {l} us")),
        g.peak_in_flight,
        g.max_in_flight,
        g.fd_limit
            .map_or_else(String::new, |f| format!(" (open-file limit {f})")),
        if busy.is_empty() {
            String::new()
        } else {
            format!("   threads busy {}", busy.join(" "))
        }
    );
    if let Some(w) = g.cpu_wait.filter(|w| *w >= 0.001) {
        let _ = writeln!(
            s,
            "    waited for a CPU: {:.1}% of the run at most per thread (run queue, schedstat): others held its CPU meanwhile",
            w * 100.0
        );
    }
    for reason in &g.reasons {
        let _ = writeln!(s, "    - {reason}");
    }
    if let Some(d) = g.arrivals_displaced {
        let _ = writeln!(
            s,
            "    arrivals: {:.2}% of steady starts outside their scheduled 10 ms window{}",
            d * 100.0,
            if g.behind_burst > 0 {
                format!(
                    "; {} steady starts due during a burst, timed from its last start (burst spread {} us)",
                    g.behind_burst, g.burst_spread_us
                )
            } else {
                String::new()
            }
        );
    }
    if let Some(h) = &r.host {
        let _ = writeln!(s, "  CPU: {}", h.summary());
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  latency (us)      {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "p50", "p90", "p99", "p99.9", "max", "count"
    );
    for l in Latency::ALL {
        let label = l.label();
        if let Some(p) = r.latency(l) {
            let _ = writeln!(
                s,
                "  {label:<17} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                p.p50, p.p90, p.p99, p.p999, p.max, p.count
            );
        }
    }
    let _ = writeln!(s);
    let retrans: Vec<String> = r
        .syn_retransmits
        .iter()
        .filter(|b| b.connections > 0)
        .map(|b| {
            format!(
                "{}{}: {}",
                b.retransmits,
                if b.or_more { "+" } else { "" },
                b.connections
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "  SYN retransmits per connection: {}{}",
        if retrans.is_empty() {
            "none measured".to_string()
        } else {
            retrans.join("   ")
        },
        if r.syn_retransmits_unknown > 0 {
            format!(
                "   unknown (TCP_INFO failed): {}",
                r.syn_retransmits_unknown
            )
        } else {
            String::new()
        }
    );
    if let Some(a) = &r.agent {
        let _ = writeln!(
            s,
            "  agent {} of {} (run {}): its part of the schedule; first attempt {} after its time",
            a.index,
            a.count,
            a.run_id,
            a.start_lateness_us
                .map_or_else(|| "never started".to_string(), |us| format!("{us} us"))
        );
    }
    if let Some(t) = &r.tls {
        let _ = writeln!(
            s,
            "  TLS (server name {}, ALPN {}, resumption {}, versions {}): {} handshakes: {} full, {} resumed by the server ({} offered resumption)",
            t.sni,
            if t.alpn.is_empty() {
                "none".to_string()
            } else {
                t.alpn.join(",")
            },
            t.resumption,
            t.versions,
            t.handshakes,
            t.full,
            t.resumed,
            t.offered_resumption
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "  outcomes ([gen]: the generator's, not the server's)");
    for o in Outcome::ALL {
        let n = r.outcome(o);
        if n > 0 || o == Outcome::Ok {
            let _ = writeln!(
                s,
                "    {:<16} {:>9} {:>5} {}",
                o.name(),
                n,
                if o.is_generators() { "[gen]" } else { "" },
                o.meaning()
            );
        }
    }
    for (msg, n) in &r.other_errors {
        let _ = writeln!(s, "      other: {msg}: {n}");
    }
    for u in &r.unexpected {
        let _ = writeln!(s, "      bad_response: {}: {}", u.why, u.count);
    }
    for (kind, n) in r.tls.iter().flat_map(|t| &t.failures) {
        let _ = writeln!(s, "      tls_failed: {kind}: {n}");
    }
    let kept: u64 = r.unexpected.iter().map(|u| u.count).sum();
    if r.outcome(Outcome::BadResponse) > kept {
        let _ = writeln!(
            s,
            "      bad_response: {} more, of other kinds (only 5 kinds are kept)",
            r.outcome(Outcome::BadResponse) - kept
        );
    }
    if !r.http_statuses.is_empty() {
        let codes: Vec<String> = r
            .http_statuses
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "  HTTP responses by status (every response whose head came): {}",
            codes.join("   ")
        );
    }
    if let Some(q) = &r.listener_queue {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "  listener accept queue (inet_diag, {} socket{}, every {:.0} ms): effective backlog {}, peak {}, full in {} of {} samples, {}",
            q.sockets,
            if q.sockets == 1 { "" } else { "s" },
            q.interval_ms,
            q.effective_backlog,
            q.peak,
            q.full_samples,
            q.samples,
            q.drops.map_or_else(
                || "its drops unknown".to_string(),
                |d| format!("{d} SYNs/ACKs dropped by this listener (its sk_drops)")
            )
        );
    }
    if let Some(k) = &r.kernel {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "  kernel counters, change over the run (host-wide: every socket in this network namespace)"
        );
        for (name, d) in &k.counters {
            let _ = writeln!(s, "    {name:<28} {d:>+9}");
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s);
        for n in &r.notes {
            let _ = writeln!(s, "  note: {n}");
        }
    }
    s
}
