//! The listener, the connection loop and the [`Upstream`] handle.

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::behaviour::{Action, Behaviour, Echo};
use crate::request::RequestInfo;

/// Response header naming the instance that served the request.
pub const INSTANCE_HEADER: &str = "x-upstream-instance";

/// Response body type; boxed so later actions can stream or fail mid-body.
type Body = BoxBody<Bytes, io::Error>;

/// State shared by all connections of one upstream.
struct Shared {
    name: String,
    behaviour: Arc<dyn Behaviour>,
    requests: AtomicU64,
}

/// A running upstream server. Dropping it (or calling [`Upstream::shutdown`])
/// stops the accept loop, closes the listener and aborts open connections.
pub struct Upstream {
    /// The bound listener address.
    pub addr: SocketAddr,
    /// Instance name, reported in `x-upstream-instance` and the JSON body.
    pub name: String,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .field("requests", &self.requests())
            .finish()
    }
}

impl Upstream {
    /// Binds `127.0.0.1:0` and serves with the [`Echo`] behaviour in a tokio task.
    pub async fn start(name: &str) -> io::Result<Upstream> {
        Self::start_on(name, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Binds `addr` and serves with the [`Echo`] behaviour in a tokio task.
    pub async fn start_on(name: &str, addr: SocketAddr) -> io::Result<Upstream> {
        Self::start_with(name, addr, Arc::new(Echo)).await
    }

    /// Binds `addr` and serves with the given behaviour in a tokio task.
    pub async fn start_with(
        name: &str,
        addr: SocketAddr,
        behaviour: Arc<dyn Behaviour>,
    ) -> io::Result<Upstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            behaviour,
            requests: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Upstream {
            addr,
            name: name.to_owned(),
            shared,
            task: Some(task),
        })
    }

    /// Number of requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Stops serving. The listener is closed as soon as the runtime processes
    /// the cancellation; use [`Upstream::stop`] to wait for that.
    pub fn shutdown(self) {
        drop(self);
    }

    /// Stops serving and waits until the listener is closed.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // The result is always "cancelled" (or a panic we cannot act on).
            let _ = task.await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Accepts connections until cancelled. Connection tasks live in a `JoinSet`
/// owned by this future, so cancelling it aborts them too.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    conns.spawn(serve_connection(stream, shared.clone()));
                }
                // Transient errors (e.g. EMFILE, ECONNABORTED): keep going, but
                // don't spin.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Serves one connection, auto-detecting HTTP/1.1 or h2c.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
    });
    // Connection errors (client resets, protocol errors) only affect this
    // connection; there is nobody to report them to.
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Answers one request according to the behaviour.
async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let seq = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let (parts, body) = req.into_parts();
    // Drain the request body so HTTP/1.1 connections can be reused; a broken
    // body doesn't change the answer.
    let _ = body.collect().await;
    let info = RequestInfo::from_parts(&parts, seq);
    match shared.behaviour.decide(&info) {
        Action::Respond { status } => {
            let body = info.echo_json(&shared.name).to_string();
            let mut resp = Response::new(full(body));
            *resp.status_mut() = status;
            let headers = resp.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Ok(v) = HeaderValue::from_str(&shared.name) {
                headers.insert(INSTANCE_HEADER, v);
            }
            resp
        }
    }
}

fn full(body: String) -> Body {
    Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed()
}
