//! One connection's deadlines, measured on what the connection does rather than on
//! wall time per request:
//! - first request: a connection that has not started a request within
//!   `limits.handshake_timeout_secs` of being accepted is closed (HTTP/1.1 header
//!   reads after that are bounded by hyper's header timeout);
//! - idle: a connection with no request in progress for `limits.idle_timeout_secs`
//!   is closed; while the listener is out of connection slots, after `PRESSURE_IDLE`;
//! - write progress: while the connection has bytes it cannot hand to the socket (the
//!   peer does not read), it must still move `limits.min_send_rate` bytes per second,
//!   averaged over `limits.write_timeout_secs`, or it is closed. A large answer to a
//!   slow but reading client goes through however long it takes.
//!
//! `Watched` wraps the TCP stream (below TLS) to see reads and writes; `Watch` is the
//! shared record; `Checker` decides once a second. A connection closed for a deadline
//! is reset at once (SO_LINGER 0, no kernel buffers kept); any other close shuts the
//! write side and reads and discards what the peer still sends for a moment
//! ("lingering close"), so an answer sent before the request was read completely
//! (413, 414, 431) is not destroyed by a TCP reset.
//!
//! Knows TCP and time; nothing of HTTP messages or routes.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Idle time allowed while the listener has no free connection slot.
pub(crate) const PRESSURE_IDLE: Duration = Duration::from_secs(1);
/// How long and how much a closing connection keeps reading what the peer sends.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// The deadlines of one connection (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub first_request: Duration,
    pub idle: Duration,
    pub write_timeout: Duration,
    /// Bytes per second a blocked writer must still move.
    pub min_send_rate: u64,
}

/// Why a connection was closed by the server: a closed set, used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    FirstRequest,
    Idle,
    Pressure,
    WriteStall,
}

impl Verdict {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verdict::FirstRequest => "first_request_timeout",
            Verdict::Idle => "idle_timeout",
            Verdict::Pressure => "idle_under_pressure",
            Verdict::WriteStall => "write_stall",
        }
    }
}

/// What a connection has done, shared by its stream, its requests and its checker.
pub(crate) struct Watch {
    born: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds since `born` of the last request start or end.
    last_edge_ms: AtomicU64,
    written: AtomicU64,
    write_blocked: AtomicBool,
    blocked_events: AtomicU64,
    /// Set when a deadline closed the connection: drop it without lingering.
    killed: AtomicBool,
}

impl Watch {
    pub(crate) fn new() -> Arc<Watch> {
        Arc::new(Watch {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_edge_ms: AtomicU64::new(0),
            written: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            blocked_events: AtomicU64::new(0),
            killed: AtomicBool::new(false),
        })
    }

    fn mark_edge(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.last_edge_ms.store(ms, Ordering::Relaxed);
    }

    /// A request started; it is in progress until the returned value is dropped
    /// (which the server does when its answer has been sent).
    pub(crate) fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.mark_edge();
        InFlight(self.clone())
    }

    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
    }
}

/// A request in progress on a connection.
pub(crate) struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.mark_edge();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decides, once a second, whether a connection has missed a deadline.
pub(crate) struct Checker {
    limits: ConnLimits,
    episode: Option<Instant>,
    last_events: u64,
    samples: VecDeque<(Instant, u64)>,
}

impl Checker {
    pub(crate) fn new(limits: ConnLimits) -> Checker {
        Checker {
            limits,
            episode: None,
            last_events: 0,
            samples: VecDeque::new(),
        }
    }

    pub(crate) fn check(&mut self, w: &Watch, now: Instant, pressure: bool) -> Option<Verdict> {
        let l = self.limits;
        let written = w.written.load(Ordering::Relaxed);
        let events = w.blocked_events.load(Ordering::Relaxed);
        let blocked = w.write_blocked.load(Ordering::Relaxed) || events != self.last_events;
        self.last_events = events;
        self.samples.push_back((now, written));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > l.write_timeout)
        {
            self.samples.pop_front();
        }
        if blocked {
            let start = *self.episode.get_or_insert(now);
            if now.saturating_duration_since(start) >= l.write_timeout {
                let (since, then) = self.samples.front().copied().unwrap_or((now, written));
                let secs = now.saturating_duration_since(since).as_secs_f64().max(1.0);
                let moved = written.saturating_sub(then) as f64;
                if moved < l.min_send_rate as f64 * secs {
                    return Some(Verdict::WriteStall);
                }
            }
        } else {
            self.episode = None;
        }
        if w.in_flight.load(Ordering::Relaxed) == 0 {
            let age = now.saturating_duration_since(w.born);
            if w.requests.load(Ordering::Relaxed) == 0 && age >= l.first_request {
                return Some(Verdict::FirstRequest);
            }
            let edge = w.born + Duration::from_millis(w.last_edge_ms.load(Ordering::Relaxed));
            let idle = now.saturating_duration_since(edge);
            if idle >= l.idle {
                return Some(Verdict::Idle);
            }
            if pressure && idle >= PRESSURE_IDLE {
                return Some(Verdict::Pressure);
            }
        }
        None
    }
}

/// The TCP stream of a connection, reporting its writes to the `Watch`.
pub(crate) struct Watched {
    io: Option<TcpStream>,
    watch: Arc<Watch>,
}

impl Watched {
    pub(crate) fn new(io: TcpStream, watch: Arc<Watch>) -> Watched {
        Watched {
            io: Some(io),
            watch,
        }
    }

    fn io(&mut self) -> io::Result<&mut TcpStream> {
        self.io
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Watched {
    fn note(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Pending => {
                self.watch.write_blocked.store(true, Ordering::Relaxed);
                self.watch.blocked_events.fetch_add(1, Ordering::Relaxed);
            }
            Poll::Ready(Ok(n)) => {
                self.watch.written.fetch_add(*n as u64, Ordering::Relaxed);
                self.watch.write_blocked.store(false, Ordering::Relaxed);
            }
            Poll::Ready(Err(_)) => {}
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = match self.io() {
            Ok(io) => Pin::new(io).poll_write(cx, buf),
            Err(e) => return Poll::Ready(Err(e)),
        };
        self.note(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = match self.io() {
            Ok(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Err(e) => return Poll::Ready(Err(e)),
        };
        self.note(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let Some(io) = self.io.take() else { return };
        if self.watch.killed.load(Ordering::Relaxed) {
            // A reset frees the kernel's send buffer at once.
            // SO_LINGER 0 does not block on drop (tokio deprecates only the blocking use).
            #[allow(deprecated)]
            let _ = io.set_linger(Some(Duration::ZERO));
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(linger(io));
        }
    }
}

/// Shuts the write side, then reads and discards what the peer still sends (bounded
/// in time and bytes) before the socket is closed.
async fn linger(mut io: TcpStream) {
    let _ = io.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 8192];
        let mut seen = 0usize;
        while seen < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnLimits {
        ConnLimits {
            first_request: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            min_send_rate: 1024,
        }
    }

    #[test]
    fn a_connection_without_a_request_is_closed_after_the_first_request_deadline() {
        let w = Watch::new();
        let mut c = Checker::new(limits());
        assert_eq!(c.check(&w, w.born + Duration::from_secs(9), false), None);
        assert_eq!(
            c.check(&w, w.born + Duration::from_secs(10), false),
            Some(Verdict::FirstRequest)
        );
    }

    #[test]
    fn idle_counts_from_the_last_request_and_never_during_one() {
        let w = Watch::new();
        let mut c = Checker::new(limits());
        let r = w.request_started();
        assert_eq!(c.check(&w, w.born + Duration::from_secs(600), false), None);
        drop(r);
        let end = w.born + Duration::from_millis(w.last_edge_ms.load(Ordering::Relaxed));
        assert_eq!(c.check(&w, end + Duration::from_secs(59), false), None);
        assert_eq!(
            c.check(&w, end + Duration::from_secs(60), false),
            Some(Verdict::Idle)
        );
        // Under pressure a second of idleness is enough.
        assert_eq!(
            c.check(&w, end + Duration::from_secs(2), true),
            Some(Verdict::Pressure)
        );
    }

    #[test]
    fn a_slow_reader_that_makes_progress_is_kept_and_a_stalled_one_is_closed() {
        let w = Watch::new();
        let _r = w.request_started();
        let mut c = Checker::new(limits());
        w.write_blocked.store(true, Ordering::Relaxed);
        // 2 KB/s while blocked, for five minutes: slow but moving.
        for s in 0..300u64 {
            w.written.fetch_add(2048, Ordering::Relaxed);
            assert_eq!(
                c.check(&w, w.born + Duration::from_secs(s), false),
                None,
                "second {s}"
            );
        }
        // Then nothing moves: closed once a whole window passes without progress.
        let mut closed_at = None;
        for s in 300..400u64 {
            if c.check(&w, w.born + Duration::from_secs(s), false) == Some(Verdict::WriteStall) {
                closed_at = Some(s);
                break;
            }
        }
        let at = closed_at.expect("a stalled writer is closed");
        assert!((310..=331).contains(&at), "closed at {at}");
    }

    #[test]
    fn a_writer_that_is_not_blocked_is_never_a_stall() {
        let w = Watch::new();
        let _r = w.request_started();
        let mut c = Checker::new(limits());
        for s in 0..120u64 {
            assert_eq!(c.check(&w, w.born + Duration::from_secs(s), false), None);
        }
    }
}
