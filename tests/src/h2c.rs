//! A minimal HTTP/2 client with prior knowledge (h2c): one fresh connection per
//! request, keeping the response trailers (which gRPC needs).

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::http::HTTP_TIMEOUT;

/// A fully read HTTP/2 response.
#[derive(Debug, Clone)]
pub struct H2Response {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
    /// Trailers, if the response had any.
    pub trailers: Option<HeaderMap>,
}

impl H2Response {
    /// A header value as a string, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A trailer value as a string, if present and valid UTF-8.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .as_ref()?
            .get(name)
            .and_then(|v| v.to_str().ok())
    }

    /// The gRPC status: `grpc-status` from the trailers, else from the headers
    /// (a trailers-only response).
    pub fn grpc_status(&self) -> Option<u32> {
        self.trailer("grpc-status")
            .or_else(|| self.header("grpc-status"))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Sends `req` over a new h2c (prior knowledge) connection to `addr` and reads
/// the whole response, trailers included. A request URI in origin form
/// (`/path`) gets `http://<addr>` prepended. Times out after [`HTTP_TIMEOUT`].
pub async fn h2c_send(addr: SocketAddr, req: Request<Bytes>) -> io::Result<H2Response> {
    match tokio::time::timeout(HTTP_TIMEOUT, send(addr, req)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("h2c request to {addr} timed out after {HTTP_TIMEOUT:?}"),
        )),
    }
}

async fn send(addr: SocketAddr, req: Request<Bytes>) -> io::Result<H2Response> {
    let (mut parts, body) = req.into_parts();
    if parts.uri.scheme().is_none() {
        let pq = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        parts.uri = format!("http://{addr}{pq}")
            .parse()
            .map_err(io::Error::other)?;
    }
    parts.version = http::Version::HTTP_2;
    let req = Request::from_parts(parts, Full::new(body));

    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
    let driver = tokio::spawn(conn);
    let result = async {
        let resp = sender.send_request(req).await.map_err(io::Error::other)?;
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.map_err(io::Error::other)?;
        let trailers = collected.trailers().cloned();
        Ok(H2Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        })
    }
    .await;
    driver.abort();
    result
}

/// One length-prefixed, uncompressed gRPC message.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut buf = Vec::with_capacity(5 + message.len());
    buf.push(0);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(message);
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use legate_test_upstream::Upstream;

    #[tokio::test]
    async fn grpc_status_in_trailers_and_headers() {
        let up = Upstream::start("h2c-test").await.expect("upstream");
        let req = |in_headers: bool| {
            let mut b = Request::post("/svc.Method")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("x-fault-grpc-status", "14");
            if in_headers {
                b = b.header("x-fault-grpc-status-in-headers", "1");
            }
            b.body(grpc_frame(b"")).expect("request")
        };
        let r = h2c_send(up.addr, req(false)).await.expect("h2c");
        assert_eq!(r.status, 200);
        assert_eq!(r.trailer("grpc-status"), Some("14"));
        assert_eq!(r.grpc_status(), Some(14));
        let r = h2c_send(up.addr, req(true)).await.expect("h2c");
        assert_eq!(r.header("grpc-status"), Some("14"));
        assert_eq!(r.grpc_status(), Some(14));
        assert_eq!(up.stats().http2_requests, 2);
    }
}
