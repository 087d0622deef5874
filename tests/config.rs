//! ServerConfig from TOML: every knob, unknown keys and bad values refused by key.

mod common;

use std::time::Duration;

use synack::{Error, ServerConfig};

#[test]
fn the_commented_example_file_parses_and_serves() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/synack.toml");
    let cfg = ServerConfig::from_file(path).unwrap();
    assert_eq!(cfg.backlog, Some(1024));
    assert_eq!(
        cfg.accept_backoff.as_ref().unwrap().max,
        Duration::from_secs(1)
    );
    // Serve on a free port instead of the file's 7878.
    let mut cfg = cfg;
    cfg.bind = vec!["127.0.0.1:0".into()];
    let server = cfg.builder().unwrap().workers(1).serve(common::hi).unwrap();
    assert_eq!(server.listeners()[0].effective_backlog, Some(1024));
    assert_eq!(common::fetch(server.local_addr()), "hi");
}

#[test]
fn every_knob_reaches_the_server() {
    let cfg = ServerConfig::from_toml_str(
        r#"
        bind = ["127.0.0.1:0"]
        backlog = 77
        max_connections = 3
        workers = 2
        acceptors = 1
        nodelay = false
        defer_accept = "2s"
        fastopen = 8
        keepalive = { idle = "30s", retries = 4 }
        overload_policy = "reject"
        fd_exhaustion_policy = "shed"
        accept_batch = 16
        accept_backoff = { min = "10ms", max = "2s" }
        probe = true
        queue_sampling = "5ms"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.overload_policy, Some(synack::OverloadPolicy::Reject));
    assert_eq!(
        cfg.fd_exhaustion_policy,
        Some(synack::FdExhaustionPolicy::Shed)
    );
    let server = cfg.builder().unwrap().serve(common::hi).unwrap();
    assert_eq!(server.listeners()[0].requested_backlog, 77);
    let s = server.stats();
    assert_eq!(s.max_connections, 3);
    assert_eq!(s.open_per_worker.len(), 2);
    let fd = server.listener_fd(0).unwrap();
    assert_eq!(synack::sys::fastopen(&fd).unwrap(), 8);
    assert!(synack::sys::defer_accept(&fd).unwrap() >= 2);
}

fn refused(toml: &str) -> String {
    match ServerConfig::from_toml_str(toml) {
        Err(e @ Error::Config { .. }) => e.to_string(),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let e = refused("bakclog = 5");
    assert!(e.contains("bakclog"), "{e}");
    let e = refused("keepalive = { idle = \"60s\", intervall = \"1s\" }");
    assert!(e.contains("keepalive") && e.contains("intervall"), "{e}");
    let e = refused("backlog = 0");
    assert!(
        e.contains("key `backlog`") && e.contains("between 1 and"),
        "{e}"
    );
    let e = refused("backlog = -3");
    assert!(e.contains("backlog"), "{e}");
    let e = refused("overload_policy = \"drop\"");
    assert!(e.contains("overload_policy") && e.contains("queue"), "{e}");
    let e = refused("queue_sampling = \"soon\"");
    assert!(e.contains("queue_sampling"), "{e}");
    let e = refused("workers = 0");
    assert!(e.contains("key `workers`"), "{e}");
    let e = refused("accept_backoff = { min = \"2s\", max = \"1s\" }");
    assert!(e.contains("accept_backoff"), "{e}");
    let e = refused("bind = [\"no-such-host.invalid:80\"]");
    assert!(
        e.contains("key `bind`") && e.contains("no-such-host.invalid"),
        "{e}"
    );
    let e = refused("defer_accept = \"500ms\"");
    assert!(
        e.contains("key `defer_accept`") && e.contains("500ms") && e.contains("at least 1 s"),
        "{e}"
    );
    let e = refused("keepalive = { idle = \"200ms\" }");
    assert!(
        e.contains("key `keepalive.idle`") && e.contains("200ms") && e.contains("at least 1 s"),
        "{e}"
    );
    let e = refused("keepalive = { idle = \"60s\", interval = \"0s\" }");
    assert!(e.contains("key `keepalive.interval`"), "{e}");
    let e = refused("keepalive = { idle = \"60s\", retries = 0 }");
    assert!(e.contains("key `keepalive.retries`"), "{e}");
    let e = refused("backlog = ");
    assert!(e.contains("<string>"), "{e}");
    let err = ServerConfig::from_file("/nonexistent/synack.toml").unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/synack.toml"),
        "{err}"
    );
}

#[test]
fn sub_second_defer_accept_and_keepalive_are_refused_by_the_builder() {
    let b = || synack::Server::builder().bind("127.0.0.1:0").unwrap();
    let e = b()
        .defer_accept(Duration::from_millis(999))
        .check()
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidConfig { name: "defer_accept", value, .. } if value == "999ms"),
        "{e}"
    );
    let e = b()
        .keepalive(synack::Keepalive::after(Duration::from_millis(10)))
        .check()
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::InvalidConfig {
                name: "keepalive.idle",
                ..
            }
        ),
        "{e}"
    );
    // Whole seconds are taken.
    b().defer_accept(Duration::from_secs(1)).check().unwrap();
    b().keepalive(synack::Keepalive::after(Duration::from_secs(1)))
        .check()
        .unwrap();
}
