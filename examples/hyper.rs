//! A hyper 1.x service on synack: HTTP/1.1 and HTTP/2, keep-alive, graceful shutdown that lets
//! in-flight requests finish. `GET /` answers at once; `GET /slow?ms=N` waits N ms first.
//!
//! ```text
//! cargo run --release --features hyper --example hyper -- --addr 127.0.0.1:8080
//! wrk -t2 -c64 -d10s http://127.0.0.1:8080/
//! ```

mod common;

use std::convert::Infallible;
use std::time::Duration;

use clap::Parser;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};

/// A hyper service served by synack.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    server: common::ServerFlags,
}

/// The service: shared by the tokio baseline (`examples/tokio_hyper.rs`).
pub async fn handle(req: Request<Incoming>) -> Result<Response<String>, Infallible> {
    if req.uri().path() == "/slow" {
        let ms = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(Response::new(format!("slept {ms} ms\n")));
    }
    Ok(Response::new("hello from synack\n".to_string()))
}

fn main() {
    let cli = Cli::parse();
    common::init_tracing();
    if let Err(e) = run(cli) {
        eprintln!("hyper: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<(), synack::Error> {
    let server = cli
        .server
        .builder()?
        .serve(|conn| synack::http::serve(conn, service_fn(handle)))?;
    common::print_listeners("hyper", &server);
    common::run(server, &cli.server)
}
