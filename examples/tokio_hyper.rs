//! The baseline for `examples/hyper.rs`: the same hyper service on a plain tokio accept loop
//! (no backlog control, no connection limit), for side-by-side `wrk` runs.
//!
//! ```text
//! cargo run --release --features hyper --example tokio_hyper -- --addr 127.0.0.1:8082 --workers 1
//! ```

use std::convert::Infallible;
use std::time::Duration;

use clap::Parser;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The same hyper service on tokio alone.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8082")]
    addr: String,
    /// Runtime worker threads (1 = a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

async fn handle(req: Request<Incoming>) -> Result<Response<String>, Infallible> {
    if req.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        return Ok(Response::new("slept 100 ms\n".to_string()));
    }
    Ok(Response::new("hello from synack\n".to_string()))
}

fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let rt = if cli.workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.workers)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&cli.addr).await?;
        println!("tokio_hyper listening on {}", listener.local_addr()?);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((s, _)) = accepted else { continue };
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(s), service_fn(handle))
                            .await;
                    });
                }
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    })
}
