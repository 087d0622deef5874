//! HTTP on synack (feature `hyper`): serve a hyper 1.x service, or an axum `Router` (feature
//! `axum`), on each accepted [`Connection`], with graceful shutdown.
//!
//! When the server shuts down, each connection finishes the request in flight and closes
//! (hyper's graceful shutdown); connections drained from the kernel queue during the shutdown
//! get their one request answered with keep-alive off.
//!
//! ```no_run
//! # #[cfg(feature = "hyper")] {
//! use std::convert::Infallible;
//! use hyper::{Request, Response, body::Incoming, service::service_fn};
//!
//! async fn hello(_: Request<Incoming>) -> Result<Response<String>, Infallible> {
//!     Ok(Response::new("hello\n".to_string()))
//! }
//!
//! let server = synack::Server::builder()
//!     .bind("127.0.0.1:8080").unwrap()
//!     .serve(|conn| synack::http::serve(conn, service_fn(hello)))
//!     .unwrap();
//! # let _ = server; }
//! ```

use std::error::Error as StdError;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use crate::connection::Connection;

/// The error type HTTP connections end with.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge) on one connection until the client leaves or
/// the server shuts down.
pub async fn serve<S, B>(conn: Connection, service: S) -> Result<(), BoxError>
where
    S: Service<Request<Incoming>, Response = Response<B>> + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut closing = conn.closing();
    let draining = closing.is_closing();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(!draining);
    // Over TLS, ALPN says which: HTTP/2 for "h2", HTTP/1.1 for "http/1.1"; without it (plain
    // TCP, or no ALPN) the connection's first bytes do.
    let builder = match conn.info().tls.as_ref().and_then(|t| t.alpn.as_deref()) {
        Some(b"h2") => builder.http2_only(),
        Some(b"http/1.1") => builder.http1_only(),
        _ => builder,
    };
    let served = builder.serve_connection(TokioIo::new(conn), service);
    let mut served = std::pin::pin!(served);
    tokio::select! {
        r = served.as_mut() => r,
        _ = closing.wait(), if !draining => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    }
}

/// Serves HTTP/1.1 only: the service's futures need not be `Send`.
/// # Examples
///
/// ```
/// use http_body_util::Full;
/// use hyper::body::{Bytes, Incoming};
/// use hyper::{Request, Response};
///
/// async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
///     Ok(Response::new(Full::new(Bytes::from("hello\n"))))
/// }
///
/// # fn main() -> Result<(), synack::Error> {
/// let server = synack::Server::builder()
///     .bind("127.0.0.1:0")?
///     .serve(|conn| synack::http::serve_http1(conn, hyper::service::service_fn(hello)))?;
/// # drop(server);
/// # Ok(())
/// # }
/// ```
pub async fn serve_http1<S, B>(conn: Connection, service: S) -> Result<(), BoxError>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    let mut closing = conn.closing();
    let draining = closing.is_closing();
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(!draining)
        .serve_connection(TokioIo::new(conn), service);
    let mut served = std::pin::pin!(served);
    let r = tokio::select! {
        r = served.as_mut() => r,
        _ = closing.wait(), if !draining => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    r.map_err(Into::into)
}

/// Serves an axum `Router` (a clone per connection) on one connection:
/// `.serve(move |conn| synack::http::serve_router(conn, router.clone()))`.
#[cfg(feature = "axum")]
pub async fn serve_router(conn: Connection, router: axum::Router) -> Result<(), BoxError> {
    serve(conn, hyper_util::service::TowerToHyperService::new(router)).await
}
