//! Talks to a real `Upstream` over TCP with HTTP/1.1 and h2c.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use legate_test_upstream::Upstream;
use tokio::net::TcpStream;

struct Resp {
    status: u16,
    instance: Option<String>,
    json: serde_json::Value,
}

async fn get(addr: SocketAddr, version: Version, req: Request<Empty<Bytes>>) -> Resp {
    let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
    let resp = if version == Version::HTTP_2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        send.send_request(req).await.expect("h2 request")
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        send.send_request(req).await.expect("h1 request")
    };
    let status = resp.status().as_u16();
    let instance = resp
        .headers()
        .get("x-upstream-instance")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&body).expect("json body");
    Resp {
        status,
        instance,
        json,
    }
}

async fn timed<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out")
}

#[tokio::test]
async fn http1_echo() {
    let up = Upstream::start("one").await.expect("start");
    let req = Request::get("/some/path?q=1")
        .header("host", "svc.example:8080")
        .header("X-Custom", "Value")
        .body(Empty::new())
        .expect("request");
    let r = timed(get(up.addr, Version::HTTP_11, req)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.instance.as_deref(), Some("one"));
    assert_eq!(r.json["instance"], "one");
    assert_eq!(r.json["method"], "GET");
    assert_eq!(r.json["path"], "/some/path?q=1");
    assert_eq!(r.json["host"], "svc.example:8080");
    assert_eq!(r.json["version"], "HTTP/1.1");
    assert_eq!(r.json["headers"]["x-custom"], "Value");
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn h2c_echo() {
    let up = Upstream::start("two").await.expect("start");
    let req = Request::post("http://svc.example/h2?x=y")
        .version(Version::HTTP_2)
        .header("x-custom", "h2")
        .body(Empty::new())
        .expect("request");
    let r = timed(get(up.addr, Version::HTTP_2, req)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.instance.as_deref(), Some("two"));
    assert_eq!(r.json["method"], "POST");
    assert_eq!(r.json["path"], "/h2?x=y");
    assert_eq!(r.json["host"], "svc.example");
    assert_eq!(r.json["version"], "HTTP/2.0");
    assert_eq!(r.json["headers"]["x-custom"], "h2");
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn fault_status_header() {
    let up = Upstream::start("faulty").await.expect("start");
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let req = Request::get("http://svc/f")
            .version(version)
            .header("host", "svc")
            .header("x-fault-status", "503")
            .body(Empty::new())
            .expect("request");
        let req = if version == Version::HTTP_2 {
            // h2 forbids a Host header next to :authority in hyper's client.
            let (mut parts, body) = req.into_parts();
            parts.headers.remove("host");
            Request::from_parts(parts, body)
        } else {
            req
        };
        let r = timed(get(up.addr, version, req)).await;
        assert_eq!(r.status, 503, "{version:?}");
        assert_eq!(r.instance.as_deref(), Some("faulty"));
        assert_eq!(r.json["instance"], "faulty");
        assert_eq!(r.json["path"], "/f");
    }
    assert_eq!(up.requests(), 2);
}

#[tokio::test]
async fn stop_closes_listener() {
    let up = Upstream::start("gone").await.expect("start");
    let addr = up.addr;
    up.stop().await;
    let err = TcpStream::connect(addr).await.expect_err("listener closed");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn start_on_given_addr() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let up = Upstream::start_on("fixed", addr).await.expect("start");
    assert_eq!(up.addr, addr);
    up.shutdown();
}
