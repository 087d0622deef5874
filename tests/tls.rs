//! TLS on synack (feature `tls`): a rustls client against the server, over real sockets on
//! 127.0.0.1. The handshake runs on the worker; what it negotiated reaches the handler; a
//! client that never finishes its handshake hits the timeout and is counted; at the handshake
//! cap new connections wait in the kernel's queue; a shutdown during handshakes accounts for
//! every connection.
#![cfg(feature = "tls")]

mod common;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for `localhost`, made for this test.
fn cert() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der = c.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der()));
    (der, key)
}

fn server_config(alpn: &[&[u8]]) -> (rustls::ServerConfig, CertificateDer<'static>) {
    let (der, key) = cert();
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    (cfg, der)
}

fn client(ca: Option<&CertificateDer<'static>>, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        roots.add(ca.clone()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// A builder for a TLS server on 127.0.0.1 with one worker.
fn one_worker(cfg: rustls::ServerConfig) -> synack::ServerBuilder {
    synack::Server::builder()
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap()
        .tls(cfg)
}

/// A TLS server whose handler writes what was negotiated: `version alpn sni resumed`.
fn tls_server(cfg: rustls::ServerConfig, b: synack::ServerBuilder) -> synack::Server {
    b.bind("127.0.0.1:0")
        .unwrap()
        .tls(cfg)
        .serve(|mut conn: synack::Connection| async move {
            let line = match conn.info().tls.as_deref() {
                Some(t) => format!(
                    "{} {} {} {}",
                    t.version,
                    t.alpn_str().unwrap_or("-"),
                    t.sni.as_deref().unwrap_or("-"),
                    t.resumed
                ),
                None => "plain".to_string(),
            };
            conn.write_all(line.as_bytes()).await?;
            conn.shutdown().await
        })
        .unwrap()
}

async fn fetch(
    addr: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> std::io::Result<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await?;
    Ok(out)
}

fn wait(cond: impl FnMut() -> bool) {
    common::wait_for("the server to get there", cond);
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_handler_sees_the_negotiated_version_alpn_and_sni() {
    let (cfg, ca) = server_config(&[b"h2", b"http/1.1"]);
    let server = tls_server(cfg, synack::Server::builder().workers(1));
    let addr = server.local_addr();
    let rt = rt();
    let h2 = rt
        .block_on(fetch(addr, &client(Some(&ca), &[b"h2"])))
        .unwrap();
    assert_eq!(h2, "TLSv1.3 h2 localhost false");
    let h1 = rt
        .block_on(fetch(addr, &client(Some(&ca), &[b"http/1.1"])))
        .unwrap();
    assert_eq!(h1, "TLSv1.3 http/1.1 localhost false");
    let none = rt.block_on(fetch(addr, &client(Some(&ca), &[]))).unwrap();
    assert_eq!(none, "TLSv1.3 - localhost false");
    let s = server.stats();
    assert_eq!(s.tls.handshakes, 3);
    assert_eq!(s.tls.failed.total(), 0);
    assert_eq!(s.tls.handshake_us.len(), 3);
    // A client that trusts no root refuses the certificate (its alert: unknown CA): counted,
    // the server serves on.
    assert!(rt.block_on(fetch(addr, &client(None, &[]))).is_err());
    wait(|| server.stats().tls.failed.total() == 1);
    assert_eq!(
        server.stats().tls.failed.certificate,
        1,
        "{:?}",
        server.stats().tls.failed
    );
    let report = server.shutdown_blocking(Duration::from_secs(5));
    assert_eq!(report.unaccounted, 0);
}

#[test]
fn a_client_that_never_finishes_its_handshake_times_out_and_is_counted() {
    let (cfg, ca) = server_config(&[]);
    let server = tls_server(
        cfg,
        synack::Server::builder()
            .workers(1)
            .handshake_timeout(Duration::from_millis(300)),
    );
    // Connected, then silent: no ClientHello.
    let silent = std::net::TcpStream::connect(server.local_addr()).unwrap();
    wait(|| server.stats().tls.failed.timeout == 1);
    assert_eq!(server.stats().open, 0, "the connection was closed");
    // Half a ClientHello, then silent.
    let mut half = std::net::TcpStream::connect(server.local_addr()).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    wait(|| server.stats().tls.failed.timeout == 2);
    // The server still does handshakes.
    let rt = rt();
    assert!(
        rt.block_on(fetch(server.local_addr(), &client(Some(&ca), &[])))
            .is_ok()
    );
    drop((silent, half));
    let report = server.shutdown_blocking(Duration::from_secs(5));
    assert_eq!(report.unaccounted, 0);
}

#[test]
fn at_the_handshake_cap_new_connections_wait_in_the_kernel_queue() {
    let (cfg, ca) = server_config(&[]);
    let server = tls_server(
        cfg,
        synack::Server::builder()
            .workers(1)
            .max_handshakes(2)
            .handshake_timeout(Duration::from_secs(30)),
    );
    let addr = server.local_addr();
    // Two silent clients take both places; three more wait in the kernel's accept queue.
    let silent: Vec<_> = (0..5)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    wait(|| {
        let s = server.stats();
        s.tls.in_progress == 2 && s.listeners[0].queue_len == Some(3)
    });
    assert_eq!(server.stats().accepted, 2);
    // Each place freed takes the next from the queue: the silent ones leave, and a real
    // client behind them is served.
    drop(silent);
    let rt = rt();
    assert_eq!(
        rt.block_on(fetch(addr, &client(Some(&ca), &[]))).unwrap(),
        "TLSv1.3 - localhost false"
    );
    let report = server.shutdown_blocking(Duration::from_secs(5));
    assert_eq!(report.unaccounted, 0);
}

#[test]
fn a_shutdown_during_handshakes_accounts_for_every_connection() {
    let (cfg, _) = server_config(&[]);
    let server = tls_server(
        cfg,
        synack::Server::builder()
            .workers(1)
            .handshake_timeout(Duration::from_secs(30)),
    );
    let silent: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(server.local_addr()).unwrap())
        .collect();
    wait(|| server.stats().tls.in_progress == 3);
    // Grace runs out with three handshakes unfinished: aborted, and counted.
    let report = server.shutdown_blocking(Duration::from_millis(200));
    assert_eq!(report.aborted, 3, "{report:?}");
    assert_eq!(report.unaccounted, 0, "{report:?}");
    drop(silent);
}

#[test]
fn tls_from_a_config_file_and_bad_certificate_files_named() {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("synack-tls-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    let text = format!(
        "bind = [\"127.0.0.1:0\"]\nworkers = 1\nmax_handshakes = 4\nhandshake_timeout = \"2s\"\n\
         tls = {{ cert = {:?}, key = {:?}, alpn = [\"http/1.1\"] }}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let server = synack::ServerConfig::from_toml_str(&text)
        .unwrap()
        .builder()
        .unwrap()
        .serve(|mut conn: synack::Connection| async move {
            let alpn = conn
                .info()
                .tls
                .as_ref()
                .and_then(|t| t.alpn_str().map(str::to_string));
            conn.write_all(alpn.unwrap_or_default().as_bytes()).await?;
            conn.shutdown().await
        })
        .unwrap();
    let ca = c.cert.der().clone();
    // The helper's config picks AES-128-GCM-SHA256 over a rustls client's first choice
    // (AES-256-GCM-SHA384), in TLS 1.3 and in TLS 1.2.
    for (version, expected) in [
        (
            &rustls::version::TLS13,
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
        ),
        (
            &rustls::version::TLS12,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
    ] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let cfg = rustls::ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let suite = rt().block_on(async {
            let tcp = tokio::net::TcpStream::connect(server.local_addr()).await?;
            let name = ServerName::try_from("localhost").unwrap();
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite()))
        });
        assert_eq!(suite.unwrap(), Some(expected));
    }
    let got = rt()
        .block_on(fetch(
            server.local_addr(),
            &client(Some(&ca), &[b"http/1.1"]),
        ))
        .unwrap();
    assert_eq!(got, "http/1.1");
    drop(server);
    // A certificate file that is not there, and one that holds no certificate: named.
    let err = synack::tls::server_config("/nonexistent/cert.pem", &key, &[]).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    let err = synack::tls::server_config(&key, &key, &[]).unwrap_err();
    assert!(
        err.to_string().contains("key.pem") && err.to_string().contains("no CERTIFICATE"),
        "{err}"
    );
}

/// An echo handler that reads first: what the session queued as its handshake ended (TLS
/// 1.2's last flight, TLS 1.3's tickets) leaves before the handler waits for the request, or
/// with its answer; a client that got the tickets resumes on its next connection.
#[test]
fn a_client_that_speaks_first_is_answered_over_tls_1_2_and_1_3_and_resumes() {
    let (cfg, ca) = server_config(&[]);
    let server = one_worker(cfg)
        .serve(|mut conn: synack::Connection| async move {
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await?;
            if got != b"quiet" {
                conn.write_all(&got).await?;
            }
            conn.shutdown().await
        })
        .unwrap();
    let addr = server.local_addr();
    let connector_for = |versions: &[&'static rustls::SupportedProtocolVersion]| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let cfg = rustls::ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    };
    let exchange = |connector: &tokio_rustls::TlsConnector, say: &'static [u8]| {
        let talk = async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await?;
            tls.write_all(say).await?;
            tls.shutdown().await?;
            let mut back = Vec::new();
            tls.read_to_end(&mut back).await?;
            let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            Ok::<_, std::io::Error>((back, resumed))
        };
        // Bounded: a flight the server kept back would leave both sides waiting.
        rt().block_on(async { tokio::time::timeout(Duration::from_secs(10), talk).await })
            .expect("the exchange finished within 10 s")
            .unwrap()
    };
    for versions in [
        &[&rustls::version::TLS12][..],
        &[&rustls::version::TLS13][..],
    ] {
        let connector = connector_for(versions);
        // Answered: the server's last flight and tickets went out.
        assert_eq!(exchange(&connector, b"hello"), (b"hello".to_vec(), false));
        assert_eq!(exchange(&connector, b"again"), (b"again".to_vec(), true));
        // A handler that only reads (a fresh client): the tickets still reach the client.
        let connector = connector_for(versions);
        assert_eq!(exchange(&connector, b"quiet"), (Vec::new(), false));
        assert_eq!(exchange(&connector, b"quiet"), (Vec::new(), true));
    }
    let s = server.stats();
    assert_eq!(s.tls.handshakes, 8);
    assert_eq!(s.tls.resumed, 4, "{:?}", s.tls);
    assert_eq!(s.tls.failed.total(), 0);
    let report = server.shutdown_blocking(Duration::from_secs(5));
    assert_eq!(report.unaccounted, 0);
}

/// Megabytes each way through the TLS stream: a handler copies back what it reads while the
/// client, still writing, starts reading late. The session's buffer and the sockets' fill, so
/// writes wait for the socket and reads for the peer; every byte comes back, in order.
#[test]
fn megabytes_each_way_come_back_whole() {
    let (cfg, ca) = server_config(&[]);
    let server = one_worker(cfg)
        .serve(|conn: synack::Connection| async move {
            let (mut rd, mut wr) = tokio::io::split(conn);
            tokio::io::copy(&mut rd, &mut wr).await?;
            wr.shutdown().await
        })
        .unwrap();
    let addr = server.local_addr();
    let connector = client(Some(&ca), &[]);
    const LEN: usize = 8 << 20;
    let sent: Vec<u8> = (0..LEN).map(|i| (i * 31 % 251) as u8).collect();
    let back = rt().block_on(async {
        let talk = async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = ServerName::try_from("localhost").unwrap();
            let tls = connector.connect(name, tcp).await?;
            let (mut rd, mut wr) = tokio::io::split(tls);
            let writer = async {
                wr.write_all(&sent).await?;
                wr.shutdown().await
            };
            let mut back = Vec::with_capacity(LEN);
            // The client starts reading late: by then the server's socket and session are
            // full and its writes wait.
            let reader = async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                rd.read_to_end(&mut back).await
            };
            let (w, r) = tokio::join!(writer, reader);
            w?;
            r?;
            Ok::<_, std::io::Error>(back)
        };
        tokio::time::timeout(Duration::from_secs(60), talk).await
    });
    let back = back.expect("the exchange finished within 60 s").unwrap();
    assert_eq!(back.len(), LEN);
    assert!(back == sent, "the bytes came back changed");
    let report = server.shutdown_blocking(Duration::from_secs(5));
    assert_eq!(report.unaccounted, 0);
}
