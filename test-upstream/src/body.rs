//! A response body that can be slow, carry trailers, or abort.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// How long an aborting body waits before failing, so the response headers
/// (and any chunks) reach the wire first: hyper flushes while the body is
/// pending, and h2 would drop still-queued frames of a reset stream.
const ABORT_FLUSH: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abort {
    No,
    Armed,
    Flushing,
    Done,
}

/// Sends `chunks` with `interval` between them, then either the trailers or
/// (if aborting) an error.
pub(crate) struct ScriptedBody {
    chunks: VecDeque<Bytes>,
    interval: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    trailers: Option<HeaderMap>,
    abort: Abort,
}

impl ScriptedBody {
    /// `body` split into `chunks` pieces (at most one per byte) sent
    /// `interval` apart.
    pub(crate) fn new(body: Bytes, chunks: u32, interval: Duration) -> ScriptedBody {
        ScriptedBody {
            chunks: split(body, chunks),
            interval,
            sleep: None,
            trailers: None,
            abort: Abort::No,
        }
    }

    /// Sends these trailers after the data.
    pub(crate) fn with_trailers(mut self, trailers: HeaderMap) -> Self {
        self.trailers = Some(trailers);
        self
    }

    /// Drops the last chunk and the trailers, and fails the body instead.
    pub(crate) fn aborting(mut self) -> Self {
        self.chunks.pop_back();
        self.trailers = None;
        self.abort = Abort::Armed;
        self
    }
}

/// Splits `body` into `n` nearly equal non-empty pieces (fewer if it is
/// shorter than `n` bytes; none if it is empty).
fn split(body: Bytes, n: u32) -> VecDeque<Bytes> {
    let len = body.len();
    let n = usize::try_from(n)
        .unwrap_or(usize::MAX)
        .clamp(1, len.max(1));
    if len == 0 {
        return VecDeque::new();
    }
    (0..n)
        .map(|i| body.slice(len * i / n..len * (i + 1) / n))
        .collect()
}

impl Body for ScriptedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            if let Some(chunk) = this.chunks.pop_front() {
                if !this.chunks.is_empty() && !this.interval.is_zero() {
                    this.sleep = Some(Box::pin(tokio::time::sleep(this.interval)));
                }
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            match this.abort {
                Abort::Armed => {
                    this.abort = Abort::Flushing;
                    this.sleep = Some(Box::pin(tokio::time::sleep(ABORT_FLUSH)));
                    continue;
                }
                Abort::Flushing => {
                    this.abort = Abort::Done;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "x-fault-reset: after-headers",
                    ))));
                }
                Abort::No | Abort::Done => {}
            }
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && self.trailers.is_none()
            && matches!(self.abort, Abort::No | Abort::Done)
    }

    fn size_hint(&self) -> SizeHint {
        // Never exact: HTTP/1.1 then uses chunked encoding, which is what lets
        // trailers through and makes an abort visible to the client.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_evenly_and_never_empty() {
        let parts = |s: &'static str, n| {
            split(Bytes::from_static(s.as_bytes()), n)
                .into_iter()
                .map(|b| String::from_utf8(b.to_vec()).expect("utf8"))
                .collect::<Vec<_>>()
        };
        assert_eq!(parts("abcdef", 3), ["ab", "cd", "ef"]);
        assert_eq!(parts("abcde", 2), ["ab", "cde"]);
        assert_eq!(parts("ab", 5), ["a", "b"]);
        assert_eq!(parts("abc", 0), ["abc"]);
        assert!(parts("", 3).is_empty());
    }
}
