//! A minimal HTTP/1.1 client: one fresh connection per request.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Overall deadline of one request (connect, send, read the whole body).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A fully read response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body, decoded as UTF-8 (lossily).
    pub body: String,
}

impl HttpResponse {
    /// The body parsed as JSON; panics (showing the body) if it isn't JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {}, body:\n{}",
                self.status, self.body
            )
        })
    }

    /// A header value as a string, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `GET http://addr/path` over HTTP/1.1, with the `Host` header set to `host`
/// (default: `addr`). Times out after [`HTTP_TIMEOUT`].
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    host: Option<&str>,
) -> io::Result<HttpResponse> {
    http_get_with_headers(addr, path, host, &[]).await
}

/// [`http_get`] with extra request headers.
pub async fn http_get_with_headers(
    addr: SocketAddr,
    path: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
) -> io::Result<HttpResponse> {
    let mut req = Request::get(path);
    if let Some(host) = host {
        req = req.header(HOST, host);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Bytes::new()).map_err(io::Error::other)?;
    http_send(addr, req).await
}

/// Sends `req` over a new HTTP/1.1 connection to `addr` and reads the whole
/// response. The request URI should be in origin form (`/path?query`); a
/// missing `Host` header is set to `addr`. Times out after [`HTTP_TIMEOUT`].
pub async fn http_send(addr: SocketAddr, req: Request<Bytes>) -> io::Result<HttpResponse> {
    match tokio::time::timeout(HTTP_TIMEOUT, send(addr, req)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("HTTP request to {addr} timed out after {HTTP_TIMEOUT:?}"),
        )),
    }
}

async fn send(addr: SocketAddr, req: Request<Bytes>) -> io::Result<HttpResponse> {
    let (mut parts, body) = req.into_parts();
    if !parts.headers.contains_key(HOST) {
        let host = HeaderValue::from_str(&addr.to_string()).map_err(io::Error::other)?;
        parts.headers.insert(HOST, host);
    }
    let req = Request::from_parts(parts, Full::new(body));

    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    let driver = tokio::spawn(conn);
    let result = async {
        let resp = sender.send_request(req).await.map_err(io::Error::other)?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use legate_test_upstream::Upstream;

    #[tokio::test]
    async fn get_reaches_upstream() {
        let up = Upstream::start("client-test").await.expect("upstream");
        let r = http_get(up.addr, "/a?b=c", Some("svc.test"))
            .await
            .expect("request");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-upstream-instance"), Some("client-test"));
        let json = r.json();
        assert_eq!(json["path"], "/a?b=c");
        assert_eq!(json["host"], "svc.test");

        let r = http_get_with_headers(up.addr, "/", None, &[("x-fault-status", "503")])
            .await
            .expect("request");
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["host"], up.addr.to_string());
    }

    #[tokio::test]
    async fn connection_refused_is_an_error() {
        let up = Upstream::start("gone").await.expect("upstream");
        let addr = up.addr;
        up.stop().await;
        let err = http_get(addr, "/", None).await.expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
