//! An upstream that records every request it receives, body included.
//!
//! `legate_test_upstream` drains request bodies without reporting them; this
//! one keeps them, so a test can check that a retried request carried the same
//! body on every attempt. It answers the Nth request with the Nth status of a
//! script (the last one repeats), with an empty body; or, started with
//! [`Recorder::echo`], with `200` and the request's body.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// One request as the [`Recorder`] received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Request method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// The whole request body.
    pub body: Bytes,
    /// When the request headers arrived.
    pub at: Instant,
}

#[derive(Debug)]
struct Shared {
    statuses: Vec<StatusCode>,
    /// Answer with the request's body.
    echo: bool,
    requests: Mutex<Vec<Recorded>>,
}

/// A running recording upstream (HTTP/1.1 and h2c), stopped on drop.
#[derive(Debug)]
pub struct Recorder {
    /// The bound address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Binds `127.0.0.1:0` and answers the Nth request with `statuses[N-1]`
    /// (the last status repeats; `200` if the list is empty).
    pub async fn start(statuses: &[u16]) -> io::Result<Recorder> {
        Recorder::with(statuses, false).await
    }

    /// Binds `127.0.0.1:0` and answers every request with `200` and the body it received.
    pub async fn echo() -> io::Result<Recorder> {
        Recorder::with(&[], true).await
    }

    async fn with(statuses: &[u16], echo: bool) -> io::Result<Recorder> {
        let statuses = statuses
            .iter()
            .map(|s| StatusCode::from_u16(*s).map_err(io::Error::other))
            .collect::<io::Result<Vec<_>>>()?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            statuses,
            echo,
            requests: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Recorder { addr, shared, task })
    }

    /// Everything received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let n = {
        let mut requests = shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        requests.push(Recorded {
            method: parts.method,
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
            headers: parts.headers,
            body: body.clone(),
            at,
        });
        requests.len()
    };
    let status = shared
        .statuses
        .get(n - 1)
        .or(shared.statuses.last())
        .copied()
        .unwrap_or(StatusCode::OK);
    let mut resp = Response::new(Full::new(if shared.echo { body } else { Bytes::new() }));
    *resp.status_mut() = status;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_send;

    #[tokio::test]
    async fn records_bodies_and_follows_the_script() {
        let rec = Recorder::start(&[503, 200]).await.expect("recorder");
        let post = |body: &'static str| {
            Request::post("/x")
                .body(Bytes::from_static(body.as_bytes()))
                .expect("request")
        };
        assert_eq!(
            http_send(rec.addr, post("one")).await.expect("1").status,
            503
        );
        assert_eq!(
            http_send(rec.addr, post("two")).await.expect("2").status,
            200
        );
        assert_eq!(http_send(rec.addr, post("")).await.expect("3").status, 200);
        let got = rec.requests();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].body, "one");
        assert_eq!(got[1].body, "two");
        assert_eq!(got[0].method, Method::POST);
        assert_eq!(got[0].path, "/x");
    }
}
