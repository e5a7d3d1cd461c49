//! The accept loop: a bounded number of concurrent connections (a semaphore permit
//! per connection), TLS handshakes with a deadline, HTTP/1.1 and HTTP/2 via hyper,
//! backoff on transient accept errors, and graceful shutdown that lets in-flight
//! requests finish within a bound.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::{route, AppState, ConnInfo, Listener};

/// How long in-flight requests get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves connections from `listener` until `shutdown` resolves, then drains.
pub async fn run(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    run_listener(state, listener, tls, shutdown, Listener::Main).await
}

/// `run` for a listener of the given kind (the separate admin listener).
pub async fn run_listener(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    kind: Listener,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(state.app.config.limits.max_connections));
    let handshake_timeout = state.app.config.limits.handshake_timeout;
    let mut backoff = Duration::from_millis(5);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => { backoff = Duration::from_millis(5); x }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let info = ConnInfo {
            peer,
            listener: kind,
        };
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        // A TLS-ALPN-01 validation carries no HTTP (RFC 8737 §3).
                        Ok(Ok(s)) if crate::tls::is_acme_validation(s.get_ref().1) => {}
                        Ok(Ok(s)) => serve(state, s, watcher, handshake_timeout, info).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
                None => serve(state, stream, watcher, handshake_timeout, info).await,
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("in-flight requests did not finish in {DRAIN_TIMEOUT:?}; closing"),
    }
}

async fn serve<IO>(
    state: Arc<AppState>,
    io: IO,
    watcher: hyper_util::server::graceful::Watcher,
    header_timeout: Duration,
    info: ConnInfo,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(info);
        let state = state.clone();
        async move { Ok::<_, Infallible>(route(state, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
