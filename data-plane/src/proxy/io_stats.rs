//! Byte counters of connections, as Envoy keeps them: `downstream_cx_rx_bytes_total` and
//! `downstream_cx_tx_bytes_total` per connection manager, `upstream_cx_rx_bytes_total` and
//! `upstream_cx_tx_bytes_total` per cluster. Like Envoy's, they count what the connection
//! reads and writes above TLS (plaintext), when it is read or written.

use crate::stats::Counter;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The two byte counters of one side of a connection.
#[derive(Debug, Clone)]
pub struct ByteCounters {
    /// Bytes read (`*_cx_rx_bytes_total`).
    pub rx: Counter,
    /// Bytes written (`*_cx_tx_bytes_total`).
    pub tx: Counter,
}

/// An IO that counts what is read and written through it.
#[derive(Debug)]
pub struct Counted<T> {
    inner: T,
    bytes: ByteCounters,
}

impl<T> Counted<T> {
    /// Counts `inner`'s traffic into `bytes`.
    pub fn new(inner: T, bytes: ByteCounters) -> Self {
        Counted { inner, bytes }
    }

    /// The IO it wraps.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.bytes.rx.add((buf.filled().len() - before) as u64);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.bytes.tx.add(n as u64);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            this.bytes.tx.add(n as u64);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_what_goes_through_both_ways() {
        let bytes = ByteCounters {
            rx: Counter::default(),
            tx: Counter::default(),
        };
        let (a, mut b) = tokio::io::duplex(64);
        let mut counted = Counted::new(a, bytes.clone());
        counted.write_all(b"hello").await.expect("write");
        let mut got = [0u8; 5];
        b.read_exact(&mut got).await.expect("read");
        b.write_all(b"hi there").await.expect("write back");
        let mut back = [0u8; 8];
        counted.read_exact(&mut back).await.expect("read back");
        assert_eq!((bytes.tx.value(), bytes.rx.value()), (5, 8));
    }
}
