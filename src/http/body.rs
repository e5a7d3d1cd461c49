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
//! `ResponseBody` is what hyper sends: the handler's body plus whatever must live
//! until the answer has been sent (limiter permits, the connection's count of
//! requests in progress).
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
    type Error = std::convert::Infallible;

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
