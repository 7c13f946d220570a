//! The HTTP/1.1 codec against a scripted peer over an in-memory pipe.

use super::{Connection, Error, Unfold, unfold_obs_fold};
use crate::proxy::body::{self, BoxError, ProxyBody};
use bytes::Bytes;
use bytes::BytesMut;
use http::{Method, Request, StatusCode};
use http_body::Frame;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const DEADLINE: Duration = Duration::from_secs(5);

fn pipe() -> (Connection<DuplexStream>, DuplexStream) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    (Connection::new(client), server)
}

/// A request to `payments` with `body`.
fn request(method: Method, path: &str, body: ProxyBody) -> Request<ProxyBody> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "payments")
        .body(body)
        .expect("request")
}

fn get(path: &str) -> Request<ProxyBody> {
    request(Method::GET, path, body::empty())
}

/// Reads from the peer side until `want` bytes arrived (or the deadline).
async fn read_exactly(server: &mut DuplexStream, want: usize) -> String {
    let mut buf = vec![0u8; want];
    tokio::time::timeout(DEADLINE, server.read_exact(&mut buf))
        .await
        .expect("request within the deadline")
        .expect("read");
    String::from_utf8(buf).expect("utf-8")
}

/// The request line and headers of `get("/")`.
const GET_ROOT: &str = "GET / HTTP/1.1\r\nhost: payments\r\n\r\n";

/// A peer that reads one request, checks it is `expected` (head and body as on the wire), and
/// answers `response`; the task returns the stream, still open.
fn answer(
    mut server: DuplexStream,
    expected: &'static str,
    response: &'static [u8],
) -> tokio::task::JoinHandle<DuplexStream> {
    tokio::spawn(async move {
        assert_eq!(read_exactly(&mut server, expected.len()).await, expected);
        server.write_all(response).await.expect("write");
        server
    })
}

/// Reads the whole response body of `exchange` from `conn`: data, and trailers if any.
async fn read_body(
    conn: &mut Connection<DuplexStream>,
    exchange: &mut super::Exchange,
) -> Result<(Vec<u8>, Option<http::HeaderMap>), Error> {
    let mut data = Vec::new();
    let mut trailers = None;
    loop {
        let frame = tokio::time::timeout(
            DEADLINE,
            std::future::poll_fn(|cx| conn.poll_body(exchange, cx)),
        )
        .await
        .expect("body within the deadline");
        match frame {
            None => return Ok((data, trailers)),
            Some(Err(e)) => return Err(e),
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            },
        }
    }
}

#[tokio::test]
async fn get_without_body_then_reuse() {
    let (mut conn, server) = pipe();
    let peer = answer(
        server,
        "GET /pay?x=1 HTTP/1.1\r\nhost: payments\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
    );
    let (head, mut ex) = conn.send(get("/pay?x=1")).await.expect("response");
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["x-a"], "1");
    assert_eq!(ex.size_hint().exact(), Some(5));
    let (data, _) = read_body(&mut conn, &mut ex).await.expect("body");
    assert_eq!(data, b"hello");
    assert!(ex.is_end());
    assert!(conn.is_reusable_after(&ex));
    let server = peer.await.expect("peer");

    // The same connection carries a second request.
    assert!(conn.is_reusable_now(std::task::Waker::noop()));
    let peer = answer(
        server,
        "GET /two HTTP/1.1\r\nhost: payments\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    );
    let (head, ex) = conn.send(get("/two")).await.expect("second response");
    assert_eq!(head.status, StatusCode::NO_CONTENT);
    assert!(ex.is_end(), "204 has no body");
    assert!(conn.is_reusable_after(&ex));
    drop(peer.await.expect("peer"));
    // The upstream went away while the connection was idle: not reusable.
    tokio::task::yield_now().await;
    assert!(!conn.is_reusable_now(std::task::Waker::noop()));
    assert!(conn.peer_closed());
}

#[tokio::test]
async fn chunked_response_split_across_reads_with_trailers() {
    let (mut conn, mut server) = pipe();
    let peer = tokio::spawn(async move {
        read_exactly(&mut server, GET_ROOT.len()).await;
        for part in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r"[..],
            b"\nhel",
            b"lo\r\n6;ext=1\r\n world\r\n0\r\n",
            b"grpc-status: 0\r\n\r\n",
        ] {
            server.write_all(part).await.expect("write");
            server.flush().await.expect("flush");
            tokio::task::yield_now().await;
        }
        server
    });
    let (head, mut ex) = conn.send(get("/")).await.expect("response");
    assert_eq!(head.headers["transfer-encoding"], "chunked");
    let (data, trailers) = read_body(&mut conn, &mut ex).await.expect("body");
    assert_eq!(data, b"hello world");
    assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
    assert!(conn.is_reusable_after(&ex));
    drop(peer.await.expect("peer"));
}

#[tokio::test]
async fn body_of_known_length_gets_content_length() {
    let (mut conn, server) = pipe();
    let peer = answer(
        server,
        "POST /p HTTP/1.1\r\nhost: payments\r\ncontent-length: 4\r\n\r\nabcd",
        b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
    );
    let req = request(Method::POST, "/p", body::full("abcd"));
    let (head, ex) = conn.send(req).await.expect("response");
    assert_eq!(head.status, StatusCode::CREATED);
    assert!(conn.is_reusable_after(&ex));
    drop(peer.await.expect("peer"));
}

/// A body of unknown length, delivered in pieces.
fn streamed(parts: &[&'static str]) -> ProxyBody {
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
        .iter()
        .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
        .collect();
    body::boxed(http_body_util::StreamBody::new(futures::stream::iter(
        frames,
    )))
}

#[tokio::test]
async fn body_of_unknown_length_is_sent_chunked() {
    let (mut conn, server) = pipe();
    let peer = answer(
        server,
        "PUT /p HTTP/1.1\r\nhost: payments\r\ntransfer-encoding: chunked\r\n\r\n\
         3\r\nabc\r\na\r\n0123456789\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    );
    let req = request(Method::PUT, "/p", streamed(&["abc", "0123456789"]));
    let (_, mut ex) = conn.send(req).await.expect("response");
    assert_eq!(read_body(&mut conn, &mut ex).await.expect("body").0, b"ok");
    assert!(conn.is_reusable_after(&ex));
    drop(peer.await.expect("peer"));
}

#[tokio::test]
async fn interim_100_continue_is_skipped() {
    let (mut conn, server) = pipe();
    let peer = answer(
        server,
        GET_ROOT,
        b"HTTP/1.1 100 Continue\r\n\r\n\
          HTTP/1.1 503 Service Unavailable\r\ncontent-length: 3\r\n\r\nbad",
    );
    let (head, mut ex) = conn.send(get("/")).await.expect("response");
    assert_eq!(head.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(read_body(&mut conn, &mut ex).await.expect("body").0, b"bad");
    drop(peer.await.expect("peer"));
}

#[tokio::test]
async fn body_until_close_ends_the_connection() {
    let (mut conn, server) = pipe();
    let peer = answer(server, GET_ROOT, b"HTTP/1.1 200 OK\r\n\r\nuntil the end");
    let (_, mut ex) = conn.send(get("/")).await.expect("response");
    // Dropping the peer closes the stream: the body's end.
    drop(peer.await.expect("peer"));
    let (data, _) = read_body(&mut conn, &mut ex).await.expect("body");
    assert_eq!(data, b"until the end");
    assert!(ex.is_end());
    assert!(!conn.is_reusable_after(&ex));
}

#[tokio::test]
async fn connection_close_and_http10_are_not_reused() {
    for (response, reusable) in [
        (
            &b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n"[..],
            false,
        ),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: upgrade, keep-alive\r\ncontent-length: 0\r\n\r\n",
            true,
        ),
    ] {
        let (mut conn, server) = pipe();
        let peer = answer(server, GET_ROOT, response);
        let (head, ex) = conn.send(get("/")).await.expect("response");
        assert!(ex.is_end());
        // Downstream, the proxy answers in its own HTTP/1.1, as Envoy does.
        assert_eq!(head.version, http::Version::HTTP_11);
        assert_eq!(
            conn.is_reusable_after(&ex),
            reusable,
            "{}",
            String::from_utf8_lossy(response)
        );
        drop(peer.await.expect("peer"));
    }
}

#[tokio::test]
async fn head_response_has_no_body_whatever_its_length() {
    let (mut conn, server) = pipe();
    let peer = answer(
        server,
        "HEAD / HTTP/1.1\r\nhost: payments\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n",
    );
    let mut req = get("/");
    *req.method_mut() = Method::HEAD;
    let (head, ex) = conn.send(req).await.expect("response");
    assert_eq!(head.headers["content-length"], "1234");
    assert!(ex.is_end());
    assert!(conn.is_reusable_after(&ex));
    drop(peer.await.expect("peer"));
}

/// Sends a GET and answers it with `response`, then closes the peer.
async fn exchange_with(response: &'static [u8]) -> Result<Vec<u8>, Error> {
    let (mut conn, server) = pipe();
    let peer = answer(server, GET_ROOT, response);
    // The peer closes once it has answered.
    let closed = tokio::spawn(async move { drop(peer.await.expect("peer")) });
    let sent = tokio::time::timeout(DEADLINE, conn.send(get("/")))
        .await
        .expect("an answer or an error within the deadline");
    closed.await.expect("peer closed");
    let (_, mut ex) = sent?;
    read_body(&mut conn, &mut ex).await.map(|(d, _)| d)
}

#[tokio::test]
async fn broken_responses_are_errors_that_say_why() {
    let cases: [(&[u8], &str); 12] = [
        (
            b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
            "204 with a content-length",
        ),
        (
            b"HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n",
            "204 with a content-length or transfer-encoding",
        ),
        (b"", "closed before"),
        // Envoy's codec refuses what RFC 9112 would still read: both framings, or a coding
        // other than exactly `chunked`.
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "both content-length and transfer-encoding",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "transfer-encoding other than chunked",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            "transfer-encoding other than chunked",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-le",
            "connection closed inside the response head",
        ),
        (b"SMTP ready\r\n\r\n", "malformed response head"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabc",
            "conflicting content-length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            "invalid content-length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
            "closed before",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "invalid chunk size",
        ),
    ];
    for (response, why) in cases {
        let err = exchange_with(response)
            .await
            .expect_err(&String::from_utf8_lossy(response));
        assert!(err.to_string().contains(why), "{err} (wanted {why})");
        assert!(err.is_remote(), "{err}");
    }
}

#[tokio::test]
async fn response_heads_over_the_limits_are_refused() {
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=super::MAX_HEADERS {
        many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let err = exchange_with(Box::leak(many.into_boxed_slice()))
        .await
        .expect_err("too many headers");
    assert!(
        err.to_string().contains("too many response headers"),
        "{err}"
    );

    let mut huge = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    huge.resize(huge.len() + super::MAX_HEAD_BYTES, b'a');
    let err = exchange_with(Box::leak(huge.into_boxed_slice()))
        .await
        .expect_err("head too large");
    assert!(err.to_string().contains("response head too large"), "{err}");
}

#[tokio::test]
async fn request_body_keeps_streaming_after_an_early_response() {
    let (mut conn, mut server) = pipe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
    let body = body::boxed(http_body_util::StreamBody::new(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    let req = request(Method::POST, "/echo", body);
    let head_len =
        "POST /echo HTTP/1.1\r\nhost: payments\r\ntransfer-encoding: chunked\r\n\r\n".len();
    let peer = tokio::spawn(async move {
        read_exactly(&mut server, head_len).await;
        // Answers before the request body is complete, then echoes what comes.
        server
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .expect("write");
        let chunk = read_exactly(&mut server, "4\r\nping\r\n".len()).await;
        assert_eq!(chunk, "4\r\nping\r\n");
        server
            .write_all(b"4\r\npong\r\n0\r\n\r\n")
            .await
            .expect("write");
        read_exactly(&mut server, "0\r\n\r\n".len()).await
    });
    let (head, mut ex) = conn.send(req).await.expect("early response");
    assert_eq!(head.status, StatusCode::OK);
    tx.send(Ok(Frame::data(Bytes::from_static(b"ping"))))
        .await
        .expect("send");
    let frame = tokio::time::timeout(
        DEADLINE,
        std::future::poll_fn(|cx| conn.poll_body(&mut ex, cx)),
    )
    .await
    .expect("echo within the deadline")
    .expect("a frame")
    .expect("data");
    assert_eq!(frame.into_data().expect("data"), "pong");
    drop(tx);
    let (rest, _) = read_body(&mut conn, &mut ex).await.expect("rest");
    assert!(rest.is_empty());
    assert_eq!(peer.await.expect("peer"), "0\r\n\r\n");
}

#[tokio::test]
async fn a_failing_request_body_fails_the_exchange() {
    let (mut conn, mut server) = pipe();
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(b"abc"))),
        Err("downstream reset".into()),
    ];
    let req = request(
        Method::POST,
        "/",
        body::boxed(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        ))),
    );
    let peer = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, server.read_to_end(&mut sink)).await;
    });
    let err = conn.send(req).await.expect_err("body error");
    assert!(matches!(err, Error::Body(_)), "{err}");
    assert!(!err.is_remote());
    drop(conn);
    peer.await.expect("peer");
}

#[test]
fn folded_header_lines_unfolded_as_envoy_does() {
    let unfold = |input: &[u8]| {
        let mut buf = BytesMut::from(input);
        let result = unfold_obs_fold(&mut buf);
        (result, String::from_utf8_lossy(&buf).into_owned())
    };
    // The CRLF goes, the whitespace stays; the rest of the buffer is kept.
    assert_eq!(
        unfold(b"GET / HTTP/1.1\r\nx-a: 1\r\n 2\r\n\t3\r\nx-b: 4\r\n\r\nNEXT"),
        (
            Unfold::Unfolded,
            "GET / HTTP/1.1\r\nx-a: 1 2\t3\r\nx-b: 4\r\n\r\nNEXT".to_owned()
        )
    );
    // Whitespace right after the start line is not a fold.
    assert_eq!(
        unfold(b"GET / HTTP/1.1\r\n x-a: 1\r\n\r\n").0,
        Unfold::NotFolded
    );
    assert_eq!(
        unfold(b"GET / HTTP/1.1\r\nx-a: 1\r\n 2\r\n").0,
        Unfold::Incomplete
    );
    assert_eq!(
        unfold(b"GET / HTTP/1.1\r\nx a: 1\r\n\r\n").0,
        Unfold::NotFolded
    );
}
