//! The accept loop: a bounded number of concurrent connections (a semaphore permit
//! per connection) and per client address, TLS handshakes with a deadline, HTTP/1.1
//! and HTTP/2 via hyper with bounded streams, windows and buffers, the deadlines of
//! `conn`, backoff on transient accept errors, and graceful shutdown that lets
//! in-flight requests finish within a bound. A connection to a TLS listener whose
//! first byte cannot start TLS gets `plain`'s 400 instead of a handshake.
//!
//! Per request it resolves the client address (`trusted_proxies`), gives the handler
//! a `RequestBody` with a deadline, drains what an early refusal left unread, and
//! keeps the request's permits alive until its answer has been sent.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH};
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::body::{self, Keepalive, Leftover, RequestBody, ResponseBody};
use super::conn::{Checker, ConnLimits, Watch, Watched};
use super::plain;
use super::{route, AppState, ConnInfo, Listener, RequestCtx};

/// How long in-flight requests get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an early refusal waits for the unread request body before answering.
const EARLY_REFUSAL_DRAIN: Duration = Duration::from_secs(5);
/// Largest HTTP/1.1 request head (request line + headers), as HTTP/2's header list
/// limit; a longer one is answered 431 (or 414) by hyper.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The kernel's send buffer per connection. Left alone, Linux grows it to 4 MB
/// (tcp_wmem), so a peer that stops reading could park megabytes per connection in
/// the kernel and the server would never see it stall.
const SOCKET_SEND_BUFFER: usize = 256 * 1024;
/// HTTP/2: bytes buffered per stream beyond what the peer's window lets us send.
const H2_SEND_BUFFER: usize = 64 * 1024;
/// HTTP/2: the receive windows we grant (per stream, per connection).
const H2_STREAM_WINDOW: u32 = 256 * 1024;
const H2_CONN_WINDOW: u32 = 1024 * 1024;

/// Serves connections from `listener` until `shutdown` resolves, then drains.
pub(crate) async fn run(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    run_listener(state, listener, tls, shutdown, Listener::Main).await
}

/// Open connections per client address (IPv6 by /64), for the per-address bound.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

struct AddressSlot(Arc<PerAddress>, IpAddr);

impl PerAddress {
    fn take(self: &Arc<Self>, addr: IpAddr, max: usize) -> Option<AddressSlot> {
        let key = crate::limiter::address_key(addr);
        let mut m = self.0.lock().ok()?;
        let n = m.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot(self.clone(), key))
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = (self.0).0.lock() {
            if let Some(n) = m.get_mut(&self.1) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.1);
                }
            }
        }
    }
}

/// `run` for a listener of the given kind (the separate admin listener).
pub(crate) async fn run_listener(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    kind: Listener,
) {
    let graceful = GracefulShutdown::new();
    let limits = state.app.config.limits.clone();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    // Set while every connection slot is taken: idle connections then make room.
    let pressure = Arc::new(AtomicBool::new(false));
    let mut backoff = Duration::from_millis(5);
    tokio::pin!(shutdown);
    loop {
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
        // A proxy's connections carry many clients: only direct peers are bounded.
        let slot = if state.app.config.trusted_proxies.contains(peer.ip()) {
            None
        } else {
            match per_address.take(peer.ip(), limits.max_connections_per_address) {
                Some(s) => Some(s),
                None => {
                    state.metrics.connection_refused("per_address");
                    tracing::debug!(client = %peer.ip(), "too many connections from this address");
                    continue;
                }
            }
        };
        // Every slot taken: while this client waits, idle connections make room.
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                pressure.store(true, Ordering::Relaxed);
                let waited = tokio::select! {
                    p = tokio::time::timeout(limits.handshake_timeout, permits.clone().acquire_owned()) => p,
                    _ = &mut shutdown => break,
                };
                pressure.store(false, Ordering::Relaxed);
                match waited {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => break,
                    Err(_) => {
                        state.metrics.connection_refused("no_free_slot");
                        continue;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SOCKET_SEND_BUFFER);
        let state = state.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let pressure = pressure.clone();
        let info = ConnInfo {
            peer,
            client: peer.ip(),
            listener: kind,
        };
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            let watch = Watch::new();
            match tls {
                Some(acceptor) => {
                    // One deadline for the first byte and the handshake.
                    let deadline = tokio::time::Instant::now() + handshake_timeout;
                    let mut first = [0u8; 1];
                    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
                        Ok(Ok(1..)) if plain::is_tls_start(first[0]) => {}
                        Ok(Ok(1..)) => {
                            state.metrics.connection_refused("plain_http");
                            tracing::debug!(client = %info.client, "plain HTTP on the TLS port: answered 400");
                            if let Ok(local) = stream.local_addr() {
                                let stream = Watched::new(stream, watch);
                                plain::answer(stream, local, deadline).await;
                            }
                            return;
                        }
                        // Closed before sending anything.
                        Ok(_) => return,
                        Err(_) => {
                            watch.kill();
                            drop(Watched::new(stream, watch));
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    }
                    let stream = Watched::new(stream, watch.clone());
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        // A TLS-ALPN-01 validation carries no HTTP (RFC 8737 §3).
                        Ok(Ok(s)) if crate::tls::is_acme_validation(s.get_ref().1) => {}
                        Ok(Ok(s)) => serve(state, s, watcher, watch, pressure, info).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => {
                            watch.kill();
                            tracing::debug!("TLS handshake timed out")
                        }
                    }
                }
                None => {
                    let stream = Watched::new(stream, watch.clone());
                    serve(state, stream, watcher, watch, pressure, info).await
                }
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
    watch: Arc<Watch>,
    pressure: Arc<AtomicBool>,
    info: ConnInfo,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = state.app.config.limits.clone();
    let svc = {
        let state = state.clone();
        let watch = watch.clone();
        service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            let watch = watch.clone();
            async move { Ok::<_, Infallible>(handle(state, watch, info, req).await) }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .max_header_list_size(64 * 1024)
        .max_send_buf_size(H2_SEND_BUFFER)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        // Streams a client opens and resets at once (the "rapid reset" flood), and
        // streams we had to reset for its errors, end the connection past these.
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256));
    let conn = watcher.watch(builder.serve_connection(TokioIo::new(io), svc));
    let conn_limits = ConnLimits {
        first_request: limits.handshake_timeout,
        idle: limits.idle_timeout,
        write_timeout: limits.write_timeout,
        min_send_rate: limits.min_send_rate,
    };
    let deadlines = async {
        let mut checker = Checker::new(conn_limits);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(v) = checker.check(&watch, Instant::now(), pressure.load(Ordering::Relaxed))
            {
                return v;
            }
        }
    };
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(error = %e, "connection ended with an error");
        },
        verdict = deadlines => {
            watch.kill();
            state.metrics.connection_closed(verdict);
            tracing::debug!(client = %info.peer.ip(), reason = verdict.as_str(), "connection closed");
        }
    }
}

/// One request: admission bookkeeping around `route`.
async fn handle(
    state: Arc<AppState>,
    watch: Arc<Watch>,
    info: ConnInfo,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let in_flight = watch.request_started();
    let is_head = req.method() == Method::HEAD;
    let (mut parts, incoming) = req.into_parts();
    let info = ConnInfo {
        client: super::client_address(
            &state.app.config.trusted_proxies,
            info.peer.ip(),
            &parts.headers,
        ),
        ..info
    };
    let ctx = Arc::new(RequestCtx::default());
    parts.extensions.insert(info);
    parts.extensions.insert(ctx.clone());
    let leftover = Leftover::default();
    let body = RequestBody::new(
        incoming,
        state.app.config.limits.body_timeout,
        leftover.clone(),
    );
    let mut response = route(state.clone(), Request::from_parts(parts, body)).await;

    let mut keep: Vec<Keepalive> = vec![Box::new(in_flight), Box::new(ctx)];
    let unread = leftover.lock().ok().and_then(|mut l| l.take());
    if let Some(unread) = unread {
        let bound = state.app.config.limits.max_request_bytes();
        if let Some(still) = body::drain(unread, bound, EARLY_REFUSAL_DRAIN).await {
            keep.push(Box::new(still));
        }
    }
    if state.app.config.hsts() {
        response.headers_mut().insert(
            hyper::header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(super::HSTS),
        );
    }
    if is_head {
        // RFC 9110 §9.3.2: the headers of a GET, no content. hyper leaves this to
        // the service over HTTP/2.
        // A streamed body's length is not known before it is made: no
        // Content-Length then (dropping the body stops its producer).
        if let Some(len) = response.body().size_hint().exact() {
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        *response.body_mut() = super::Body::default();
    }
    response.map(|b| ResponseBody::new(b, keep))
}
