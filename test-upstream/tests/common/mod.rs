//! A tiny hyper client for the fault tests: one connection, HTTP/1.1 or h2c,
//! reporting at which stage a request failed, when each body frame arrived
//! and the trailers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// Bound on every network wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// Both protocols, for tests that run over each.
pub const VERSIONS: [Version; 2] = [Version::HTTP_11, Version::HTTP_2];

/// Runs `f` with the [`WAIT`] bound.
pub async fn timed<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

/// A received response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
    /// Number of data frames received.
    pub data_frames: usize,
    /// From sending the request to the response headers.
    pub to_headers: Duration,
    /// From the response headers to the end of the body.
    pub body_time: Duration,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("json body ({e}): {:?}", self.body))
    }
}

/// Where a request failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Failed {
    /// No response headers (connection closed / stream reset).
    BeforeHeaders(String),
    /// Headers arrived with this status, then the body failed.
    InBody(u16, String),
}

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

/// One client connection.
pub struct Client {
    version: Version,
    sender: Sender,
}

impl Client {
    /// Connects to `addr` speaking `version` (HTTP/1.1 or h2c prior knowledge).
    pub async fn connect(addr: SocketAddr, version: Version) -> Client {
        let io = TokioIo::new(timed(TcpStream::connect(addr)).await.expect("connect"));
        let sender = if version == Version::HTTP_2 {
            let (send, conn) = timed(http2::handshake(TokioExecutor::new(), io))
                .await
                .expect("h2 handshake");
            tokio::spawn(conn);
            Sender::H2(send)
        } else {
            let (send, conn) = timed(http1::handshake(io)).await.expect("h1 handshake");
            tokio::spawn(conn);
            Sender::H1(send)
        };
        Client { version, sender }
    }

    /// `GET /p` with `headers`, bounded by [`WAIT`].
    pub async fn get(&mut self, headers: &[(&str, &str)]) -> Result<Reply, Failed> {
        timed(self.get_unbounded(headers)).await
    }

    /// `GET /p` with `headers`, no time bound (callers add their own).
    pub async fn get_unbounded(&mut self, headers: &[(&str, &str)]) -> Result<Reply, Failed> {
        let mut b = Request::get("http://svc.test/p").version(self.version);
        if self.version != Version::HTTP_2 {
            b = b.header("host", "svc.test");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Empty::new()).expect("request");
        let start = Instant::now();
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                s.ready()
                    .await
                    .map_err(|e| Failed::BeforeHeaders(e.to_string()))?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready()
                    .await
                    .map_err(|e| Failed::BeforeHeaders(e.to_string()))?;
                s.send_request(req).await
            }
        }
        .map_err(|e| Failed::BeforeHeaders(format!("{e:?}")))?;
        let to_headers = start.elapsed();
        let headers_at = Instant::now();
        let (parts, mut body) = resp.into_parts();
        let status = parts.status.as_u16();
        let mut data = BytesMut::new();
        let mut trailers = None;
        let mut data_frames = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failed::InBody(status, format!("{e:?}")))?;
            match frame.into_data() {
                Ok(d) => {
                    data_frames += 1;
                    data.extend_from_slice(&d);
                }
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        Ok(Reply {
            status,
            headers: parts.headers,
            body: data.freeze(),
            trailers,
            data_frames,
            to_headers,
            body_time: headers_at.elapsed(),
        })
    }
}

/// One request on a fresh connection.
pub async fn get(
    addr: SocketAddr,
    version: Version,
    headers: &[(&str, &str)],
) -> Result<Reply, Failed> {
    Client::connect(addr, version).await.get(headers).await
}

/// A unique test id per (test, protocol).
pub fn id(test: &str, version: Version) -> String {
    format!("{test}-{version:?}")
}
