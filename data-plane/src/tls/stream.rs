//! An established upstream TLS connection that counts TLS errors after the handshake as
//! Envoy's `ssl.connection_error` does: once a handshake completed, a TLS-level failure on the
//! connection (an alert from the peer, such as TLS 1.3's `certificate_required` sent after the
//! client considered the handshake done, or a record that does not decrypt) is a connection
//! error. Plain transport errors (a reset, an EOF without `close_notify`) are not.

use crate::stats::Counter;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TLS connection to an upstream.
#[derive(Debug)]
pub struct TlsStream {
    inner: tokio_rustls::client::TlsStream<TcpStream>,
    /// `ssl.connection_error` of the cluster (none for connections without stats).
    connection_error: Option<Counter>,
    /// Counted once per connection.
    counted: bool,
}

impl TlsStream {
    /// Wraps an established connection.
    pub(super) fn new(
        inner: tokio_rustls::client::TlsStream<TcpStream>,
        connection_error: Option<Counter>,
    ) -> Self {
        TlsStream {
            inner,
            connection_error,
            counted: false,
        }
    }

    /// The TCP stream and the TLS session (negotiated ALPN, version, peer certificates).
    pub fn get_ref(&self) -> (&TcpStream, &rustls::ClientConnection) {
        self.inner.get_ref()
    }

    /// Counts the first TLS-level error of the connection.
    fn note<T>(&mut self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &result
            && !self.counted
            && is_tls_error(e)
            && let Some(counter) = &self.connection_error
        {
            self.counted = true;
            counter.inc();
        }
        result
    }
}

/// True for errors of the TLS layer (rustls reports them as an `io::Error` wrapping a
/// `rustls::Error`).
fn is_tls_error(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.note(result)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note(result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.note(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.note(result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.note(result)
    }
}
