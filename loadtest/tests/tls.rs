//! The generator's TLS against real servers on 127.0.0.1: a synack TLS server (what it did,
//! from its statistics, against what the generator reports) and nginx with OpenSSL, started by
//! the test with its own configuration and certificate (resumption off: its log shows no
//! reused session; on: it shows them, as many as the generator counted).

mod common;

use std::sync::Arc;

use common::real::Nginx;
use common::{flood, serial, skip_or_fail, tmp};
use synack_load::report::FloodReport;
use tokio::io::AsyncWriteExt;

/// A self-signed certificate for `localhost`: (certificate PEM path, key PEM path, DER pair).
fn cert(name: &str) -> (std::path::PathBuf, std::path::PathBuf, rustls::ServerConfig) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = tmp(&format!("{name}-cert.pem"));
    let key_path = tmp(&format!("{name}-key.pem"));
    std::fs::write(&cert_path, c.cert.pem()).unwrap();
    std::fs::write(&key_path, c.signing_key.serialize_pem()).unwrap();
    let config = synack::tls::server_config(&cert_path, &key_path, &[b"http/1.1"]).unwrap();
    (cert_path, key_path, config)
}

fn synack_tls(config: rustls::ServerConfig) -> synack::Server {
    synack::Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .tls(Arc::new(config))
        .serve(|mut c: synack::Connection| async move {
            c.write_all(b"hi").await?;
            c.shutdown().await
        })
        .unwrap()
}

fn tls_of(rep: &FloodReport) -> &synack_load::report::TlsReport {
    rep.tls.as_ref().expect("a --tls run reports its TLS")
}

#[test]
fn against_synack_the_resumed_handshakes_are_what_the_server_did() {
    let _g = serial();
    let (cert_path, _, config) = cert("synack");
    let server = synack_tls(config);
    let addr = server.local_addr().to_string();
    let base = [
        "--tls",
        "--cacert",
        cert_path.to_str().unwrap(),
        "--sni",
        "localhost",
        "--expect",
        "hi",
        "--connections",
        "300",
        "--concurrency",
        "4",
        "--threads",
        "1",
    ];
    // Off: every handshake full, on both sides.
    let (_, rep) = flood(
        &addr,
        &[&base[..], &["--tls-resumption", "off"]].concat(),
        "tls-off",
    );
    let t = tls_of(&rep);
    assert_eq!(rep.outcomes["ok"], 300, "{:?}", rep.outcomes);
    assert_eq!((t.full, t.resumed, t.offered_resumption), (300, 0, 0));
    let s = server.stats().tls;
    assert_eq!((s.handshakes, s.resumed), (300, 0));
    assert!(rep.latency_us.contains_key("tls_handshake"));
    // On: resumed whenever a session is at hand; the generator's count is the server's.
    let (_, rep) = flood(
        &addr,
        &[&base[..], &["--tls-resumption", "on"]].concat(),
        "tls-on",
    );
    let t = tls_of(&rep);
    assert_eq!(rep.outcomes["ok"], 300, "{:?}", rep.outcomes);
    let s = server.stats().tls;
    assert!(t.resumed > 0, "{t:?}");
    assert_eq!(s.resumed, t.resumed, "server {s:?} against generator {t:?}");
    assert_eq!(s.handshakes, 600);
    // A share: half the attempts offer it, evenly; no more than those resume.
    let (_, rep) = flood(
        &addr,
        &[&base[..], &["--tls-resumption", "0.5"]].concat(),
        "tls-half",
    );
    let t = tls_of(&rep);
    assert_eq!(t.offered_resumption, 150, "{t:?}");
    assert!(t.resumed <= 150 && t.resumed > 0, "{t:?}");
    // A client that trusts another CA: every attempt tls_failed, its kind tallied.
    let (other, _, _) = cert("other");
    let (_, rep) = flood(
        &addr,
        &[
            "--tls",
            "--cacert",
            other.to_str().unwrap(),
            "--sni",
            "localhost",
            "--connections",
            "20",
            "--concurrency",
            "2",
            "--threads",
            "1",
        ],
        "tls-wrong-ca",
    );
    assert_eq!(rep.outcomes["tls_failed"], 20, "{:?}", rep.outcomes);
    assert_eq!(tls_of(&rep).failures.values().sum::<u64>(), 20);
    assert_eq!(
        server
            .shutdown_blocking(std::time::Duration::from_secs(5))
            .unaccounted,
        0
    );
}

#[test]
fn against_nginx_resumption_off_shows_no_reused_session_and_on_shows_them() {
    let _g = serial();
    let (cert_path, key_path, _) = cert("nginx");
    let Some(nginx) = Nginx::start_tls(
        511,
        r#"location = /health { return 200 "ok\n"; }"#,
        &cert_path,
        &key_path,
    ) else {
        skip_or_fail(
            "against_nginx_resumption_off_shows_no_reused_session_and_on_shows_them",
            "nginx is not installed",
        );
        return;
    };
    let addr = nginx.addr.to_string();
    let base = [
        "--tls",
        "--insecure",
        "--alpn",
        "http/1.1",
        "--http",
        "GET /health",
        "--expect",
        "HTTP/1.1 200",
        "--connections",
        "200",
        "--concurrency",
        "4",
        "--threads",
        "1",
    ];
    let (_, off) = flood(
        &addr,
        &[&base[..], &["--tls-resumption", "off"]].concat(),
        "nginx-tls-off",
    );
    assert_eq!(off.outcomes["ok"], 200, "{:?}", off.outcomes);
    let (_, on) = flood(
        &addr,
        &[&base[..], &["--tls-resumption", "on"]].concat(),
        "nginx-tls-on",
    );
    assert_eq!(on.outcomes["ok"], 200, "{:?}", on.outcomes);
    let log = nginx.tls_log();
    assert_eq!(log.len(), 400, "one line per request");
    let (first, second) = log.split_at(200);
    assert!(
        first.iter().all(|(reused, _)| !reused),
        "resumption off: none reused"
    );
    let reused = second.iter().filter(|(r, _)| *r).count() as u64;
    assert!(reused > 0, "resumption on: nginx reused sessions");
    assert_eq!(
        reused,
        tls_of(&on).resumed,
        "nginx's count is the generator's"
    );
    assert_eq!(tls_of(&off).resumed, 0);
    nginx.stop();
}

#[test]
fn bad_tls_input_gets_one_clear_line() {
    let _g = serial();
    // An unreadable --cacert: a usage error naming the file, exit 2.
    let out = common::bin()
        .args([
            "flood",
            "127.0.0.1:9",
            "--tls",
            "--cacert",
            "/nonexistent/ca.pem",
            "--connections",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // --tls-resumption on without reading the answer: refused, not a silent full handshake.
    let out = common::bin()
        .args([
            "flood",
            "127.0.0.1:9",
            "--tls",
            "--insecure",
            "--tls-resumption",
            "on",
            "--connections",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-resumption"));
    let (cert_path, _, config) = cert("bad-input");
    let server = synack_tls(config);
    let addr = server.local_addr().to_string();
    // A self-signed certificate without --cacert or --insecure: refused, and the report says
    // what to give.
    let (out, rep) = flood(
        &addr,
        &[
            "--tls",
            "--connections",
            "5",
            "--concurrency",
            "1",
            "--threads",
            "1",
        ],
        "tls-no-ca",
    );
    assert_eq!(rep.outcomes["tls_failed"], 5, "{:?}", rep.outcomes);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        rep.notes
            .iter()
            .any(|n| n.contains("--insecure") && n.contains("--cacert")),
        "{:?}",
        rep.notes
    );
    let _ = text;
    // The wrong name: the certificate is for localhost.
    let (_, rep) = flood(
        &addr,
        &[
            "--tls",
            "--cacert",
            cert_path.to_str().unwrap(),
            "--sni",
            "wrong.example",
            "--connections",
            "5",
            "--concurrency",
            "1",
            "--threads",
            "1",
        ],
        "tls-wrong-sni",
    );
    assert_eq!(rep.outcomes["tls_failed"], 5, "{:?}", rep.outcomes);
    let kinds: Vec<&String> = tls_of(&rep).failures.keys().collect();
    assert!(
        kinds.iter().any(|k| k.contains("NotValidForName")),
        "{kinds:?}"
    );
    assert!(
        rep.notes.iter().any(|n| n.contains("--sni")),
        "{:?}",
        rep.notes
    );
    drop(server);
}

#[test]
fn the_probe_works_over_tls() {
    let _g = serial();
    let (cert_path, _, config) = cert("probe");
    let server = synack::Server::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .workers(1)
        .probe(true)
        .tls(Arc::new(config))
        .serve(|mut c: synack::Connection| async move {
            c.write_all(b"hi").await?;
            c.shutdown().await
        })
        .unwrap();
    let (_, rep) = flood(
        &server.local_addr().to_string(),
        &[
            "--tls",
            "--cacert",
            cert_path.to_str().unwrap(),
            "--sni",
            "localhost",
            "--probe",
            "--expect",
            "hi",
            "--connections",
            "50",
            "--concurrency",
            "2",
            "--threads",
            "1",
        ],
        "tls-probe",
    );
    assert_eq!(rep.outcomes["ok"], 50, "{:?}", rep.outcomes);
    for k in ["queue_wait", "dispatch", "tls_handshake"] {
        assert!(
            rep.latency_us.contains_key(k),
            "{k}: {:?}",
            rep.latency_us.keys()
        );
    }
    drop(server);
}

/// A rustls server on one thread for `n` connections, blocking, each read bounded: it answers
/// each with a small HTTP response and counts the connections whose request was already there
/// when the read that ended its handshake returned (the client sent its last flight and the
/// request in one write).
fn counting_server(
    config: rustls::ServerConfig,
    n: usize,
) -> (String, std::thread::JoinHandle<usize>) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = Arc::new(config);
    let server = std::thread::spawn(move || {
        let mut together = 0;
        for _ in 0..n {
            let (mut tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut tls = rustls::ServerConnection::new(config.clone()).unwrap();
            let served = (|| -> std::io::Result<()> {
                while tls.is_handshaking() {
                    while tls.wants_write() {
                        tls.write_tls(&mut tcp)?;
                    }
                    if tls.read_tls(&mut tcp)? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    tls.process_new_packets().map_err(std::io::Error::other)?;
                }
                let mut request = [0u8; 512];
                if matches!(tls.reader().read(&mut request), Ok(n) if n > 0) {
                    together += 1;
                }
                tls.writer().write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
                )?;
                tls.send_close_notify();
                while tls.wants_write() {
                    tls.write_tls(&mut tcp)?;
                }
                Ok(())
            })();
            served.unwrap();
        }
        together
    });
    (addr, server)
}

/// The client's last handshake flight and its request leave in one write. Sent apart, the
/// request (a second small write) waited on Nagle's algorithm for the server's delayed ACK
/// wherever the server had nothing to send in between: after TLS 1.2's resumed handshake,
/// 40 ms a connection. Counted by the server as connections whose request came with the
/// handshake's end: every TLS 1.3 one, and every resumed TLS 1.2 one (in a full TLS 1.2
/// handshake the server speaks last).
#[test]
fn the_handshakes_last_flight_and_the_request_leave_together() {
    let _g = serial();
    let (cert_path, _, config) = cert("together");
    let n = 20;
    for (versions, resumption) in [("--tls13-only", "off"), ("--tls12", "on")] {
        let (addr, server) = counting_server(config.clone(), n);
        let (_, rep) = flood(
            &addr,
            &[
                "--tls",
                versions,
                "--tls-resumption",
                resumption,
                "--cacert",
                cert_path.to_str().unwrap(),
                "--sni",
                "localhost",
                "--http",
                "GET /",
                "--connections",
                &n.to_string(),
                "--concurrency",
                "1",
                "--threads",
                "1",
            ],
            &format!("together{versions}"),
        );
        let together = server.join().unwrap();
        assert_eq!(
            rep.outcomes["ok"], n as u64,
            "{versions}: {:?}",
            rep.outcomes
        );
        let t = tls_of(&rep);
        let expected = if versions == "--tls12" {
            assert!(t.resumed > 0, "{versions}: nothing resumed: {t:?}");
            t.resumed
        } else {
            n as u64
        };
        assert_eq!(together as u64, expected, "{versions}: {t:?}");
    }
}
