//! An axum Router on synack: keep your router, gain synack's backlog, connection limit and
//! statistics (`GET /stats` shows them).
//!
//! ```text
//! cargo run --release --features axum --example axum -- --addr 127.0.0.1:8081
//! curl http://127.0.0.1:8081/ ; curl http://127.0.0.1:8081/stats
//! ```

#[allow(dead_code)]
mod common;

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use clap::Parser;

/// An axum router served by synack.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    server: common::ServerFlags,
}

#[derive(serde::Deserialize)]
struct Slow {
    ms: Option<u64>,
}

fn main() {
    let cli = Cli::parse();
    common::init_tracing();
    if let Err(e) = run(cli) {
        eprintln!("axum: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<(), synack::Error> {
    // The router reads the server's statistics once it exists (a weak handle: the server owns
    // the router).
    let stats: Arc<OnceLock<Weak<synack::Server>>> = Arc::new(OnceLock::new());
    let for_route = stats.clone();
    let router = Router::new()
        .route("/", get(|| async { "hello from axum on synack\n" }))
        .route(
            "/slow",
            get(|Query(q): Query<Slow>| async move {
                let ms = q.ms.unwrap_or(100);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                format!("slept {ms} ms\n")
            }),
        )
        .route(
            "/stats",
            get(move || {
                let s = for_route.get().and_then(Weak::upgrade).map(|s| s.stats());
                async move {
                    match s {
                        Some(s) => format!(
                            "accepted {} open {} rejected {} dispatch p99 {} us\n",
                            s.accepted,
                            s.open,
                            s.rejected,
                            s.dispatch_latency_us.value_at_quantile(0.99)
                        ),
                        None => "starting\n".into(),
                    }
                }
            }),
        );
    let server = cli
        .server
        .builder()?
        .serve(move |conn| synack::http::serve_router(conn, router.clone()))?;
    common::print_listeners("axum", &server);
    let server = Arc::new(server);
    let _ = stats.set(Arc::downgrade(&server));
    // Wait for Ctrl-C, then shut down (the router's clone of the handle goes with it).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(synack::Error::Signal)?;
    rt.block_on(synack::shutdown_signal())?;
    match Arc::try_unwrap(server) {
        Ok(server) => {
            let report = server.shutdown_blocking(cli.server.grace());
            println!("stopped: {report:?}");
        }
        Err(_) => eprintln!("axum: a /stats request holds the server; stopping without a drain"),
    }
    Ok(())
}
