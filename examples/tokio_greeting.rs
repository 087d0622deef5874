//! The baseline synack is measured against: a plain tokio accept loop that spawns a task per
//! connection, writes the same greeting and closes. No backlog control, no connection limit.
//!
//! ```text
//! cargo run --release --example tokio_greeting -- --addr 127.0.0.1:7880 --workers 1
//! ```

use clap::Parser;
use tokio::io::AsyncWriteExt;

/// A plain tokio greeting server (the comparison baseline).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7880")]
    addr: String,
    /// Runtime worker threads (1 = a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// The greeting written on every connection.
    #[arg(long, default_value = "hello from tokio\n")]
    greeting: String,
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
    let greeting: &'static [u8] = Box::leak(cli.greeting.into_bytes().into_boxed_slice());
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&cli.addr).await?;
        println!("tokio_greeting listening on {}", listener.local_addr()?);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (mut s, _) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            eprintln!("accept: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            continue;
                        }
                    };
                    tokio::spawn(async move {
                        let _ = s.write_all(greeting).await;
                        let _ = s.shutdown().await;
                    });
                }
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    })
}
