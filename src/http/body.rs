//! Request and response bodies as the server hands them to handlers and to hyper.
//!
//! `RequestBody` is the request body every handler reads: hyper's body with a
//! deadline for the whole body (`limits.body_timeout_secs`), so a client that
//! trickles its body cannot hold a request open; and when a handler answers without
//! reading the body (an early refusal: 401, 403, 405, 429…), the unread rest is
//! handed back to the server, which drains a bounded amount of it before sending the
//! answer. Over HTTP/2 a request stream whose body is dropped unread is reset with
//! CANCEL before the answer goes out, and clients then discard the answer; over
//! HTTP/1.1 the unread bytes would end keep-alive.
//!
//! `Body` is what a handler answers with: bytes in hand, or chunks that another
//! thread produces while hyper sends them (a large group's representation), so an
//! answer of any size holds only a few chunks in memory. `ResponseBody` is what
//! hyper sends: the handler's body plus whatever must live until the answer has been
//! sent (limiter permits, the connection's count of requests in progress).
//!
//! Knows hyper's body traits; nothing of routes or SCIM.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The whole body did not arrive within `limits.body_timeout_secs`.
    #[error("the request body did not arrive in time")]
    TimedOut,
    #[error("the request body could not be read: {0}")]
    Transport(#[from] hyper::Error),
}

/// Where a body that a handler dropped unread is left for the server.
pub(crate) type Leftover = Arc<Mutex<Option<Incoming>>>;

/// A request body with a deadline; see the module documentation.
pub(crate) struct RequestBody {
    inner: Option<Incoming>,
    deadline: Pin<Box<Sleep>>,
    leftover: Leftover,
}

impl RequestBody {
    /// `timeout` counts from now (the request's admission).
    pub(crate) fn new(inner: Incoming, timeout: Duration, leftover: Leftover) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            deadline: Box::pin(tokio::time::sleep_until(Instant::now() + timeout)),
            leftover,
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::from)));
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                // A late body is not handed back for draining: it would only be
                // waited for again.
                this.inner = None;
                Poll::Ready(Some(Err(BodyError::TimedOut)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            if !inner.is_end_stream() {
                if let Ok(mut slot) = self.leftover.lock() {
                    *slot = Some(inner);
                }
            }
        }
    }
}

/// Reads and discards up to `max_bytes` of `body` within `time`. Returns the body if
/// it did not end by then (the caller keeps it alive until the answer is sent, so
/// HTTP/2 resets the stream with NO_ERROR after the answer rather than CANCEL before).
pub(crate) async fn drain(
    mut body: Incoming,
    max_bytes: usize,
    time: Duration,
) -> Option<Incoming> {
    let mut seen = 0usize;
    let read = async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        seen += d.len();
                    }
                    if seen > max_bytes {
                        return false;
                    }
                }
                Err(_) => return true,
            }
        }
        true
    };
    match tokio::time::timeout(time, read).await {
        Ok(true) => None,
        _ => Some(body),
    }
}

/// Lives inside a response body until hyper has sent it (or given up on it).
pub(crate) type Keepalive = Box<dyn Send>;

/// A response body the server abandoned part-way (its producer failed after the
/// status line was sent): hyper then ends the connection without the body's proper
/// end, so the client sees an incomplete answer, never a truncated one that parses.
#[derive(Debug, thiserror::Error)]
#[error("the response body could not be completed: {0}")]
pub struct Abandoned(pub String);

/// Chunks of a body made elsewhere, in order; an `Err` (why, for the log) abandons
/// the answer.
pub(crate) type Chunks = tokio::sync::mpsc::Receiver<Result<Bytes, String>>;

/// A handler's response body; see the module documentation.
pub struct Body {
    kind: Kind,
    _keep: Option<Keepalive>,
}

enum Kind {
    Full(Option<Bytes>),
    Chunks(Chunks),
}

impl Body {
    /// A body whose bytes are all known.
    pub fn new(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            _keep: None,
        }
    }

    /// A body sent as its chunks arrive; it ends when the sender is dropped.
    pub fn chunks(rx: Chunks) -> Body {
        Body {
            kind: Kind::Chunks(rx),
            _keep: None,
        }
    }

    /// Keeps `keep` (a limiter permit) until this body has been sent or dropped.
    pub fn keeping(mut self, keep: Keepalive) -> Body {
        self._keep = Some(keep);
        self
    }
}

impl Default for Body {
    fn default() -> Body {
        Body::new(Bytes::new())
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = Abandoned;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Abandoned>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Chunks(rx) => rx.poll_recv(cx).map(|c| {
                c.map(|c| {
                    c.map(Frame::data).map_err(|why| {
                        tracing::error!(error = %why, "a streamed answer was abandoned");
                        Abandoned(why)
                    })
                })
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Chunks(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Chunks(_) => SizeHint::default(),
        }
    }
}

/// The body hyper sends: the handler's body plus what must outlive the handler.
pub(crate) struct ResponseBody {
    inner: super::Body,
    _keep: Vec<Keepalive>,
}

impl ResponseBody {
    pub(crate) fn new(inner: super::Body, keep: Vec<Keepalive>) -> ResponseBody {
        ResponseBody { inner, _keep: keep }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = Abandoned;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
