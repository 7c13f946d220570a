use super::*;
use crate::proxy::body;
use http::HeaderValue;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// A server-side connection and the client's end of it.
async fn pair() -> (Conn, TcpStream) {
    pair_with(crate::config::ConnectionLimits::default()).await
}

/// Like [`pair`], under the connection manager's `limits`.
async fn pair_with(limits: crate::config::ConnectionLimits) -> (Conn, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (server, _) = accepted.expect("accept");
    let bytes = ByteCounters {
        rx: crate::stats::Counter::detached(),
        tx: crate::stats::Counter::detached(),
    };
    let stats = crate::proxy::conn_limits::ConnStats::new(&crate::stats::Store::new(), "t");
    let life = ConnLife::new(limits, stats, tokio::time::Instant::now());
    (Conn::new(server, bytes, life), client.expect("connect"))
}

async fn parsed(bytes: &[u8]) -> (Result<Option<Head>, Rejection>, BytesMut) {
    let (mut conn, _client) = pair().await;
    conn.read.extend_from_slice(bytes);
    let head = conn.parse_head();
    (head, conn.read.clone())
}

async fn refused(bytes: &[u8]) -> Rejection {
    match parsed(bytes).await.0 {
        Err(r) => r,
        Ok(_) => panic!("{:?} was accepted", String::from_utf8_lossy(bytes)),
    }
}

#[tokio::test]
async fn a_request_head_is_parsed_and_what_follows_stays_buffered() {
    let (head, rest) =
        parsed(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next").await;
    let head = head.expect("valid").expect("complete");
    assert_eq!(head.parts.method, Method::GET);
    assert_eq!(head.parts.uri, "/a?b=1");
    assert_eq!(head.parts.version, Version::HTTP_11);
    assert_eq!(head.parts.headers["host"], "x");
    let twos: Vec<_> = head.parts.headers.get_all("x-two").iter().collect();
    assert_eq!(twos, ["1", "2"]);
    assert!(head.framing.is_none() && !head.close && !head.expect_continue);
    assert_eq!(&rest[..], b"GET /next");
}

#[tokio::test]
async fn an_incomplete_head_waits_for_more() {
    let (head, rest) = parsed(b"GET /a HTTP/1.1\r\nHost: x\r\n").await;
    assert!(matches!(head, Ok(None)));
    assert_eq!(rest.len(), 26);
}

#[tokio::test]
async fn body_framing_keep_alive_and_expect_are_read_from_the_head() {
    let (head, _) = parsed(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nabc").await;
    let head = head.expect("valid").expect("complete");
    assert!(matches!(head.framing, Some(Framing::Length(3))));
    assert!(head.close && head.expect_continue);
    let (head, _) =
        parsed(b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").await;
    assert!(matches!(
        head.expect("valid").expect("complete").framing,
        Some(Framing::Chunked)
    ));
    let (head, _) = parsed(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await;
    assert!(head.expect("valid").expect("complete").framing.is_none());
    let (head, _) = parsed(b"GET /a HTTP/1.0\r\n\r\n").await;
    let head = head.expect("valid").expect("complete");
    assert_eq!(head.parts.version, Version::HTTP_10);
    assert!(head.close, "HTTP/1.0 closes unless keep-alive");
}

#[tokio::test]
async fn malformed_requests_are_refused_as_envoy_refuses_them() {
    assert_eq!(refused(b"HELLO\r\n\r\n").await, Rejection::Malformed);
    assert_eq!(
        refused(b"GE T /a HTTP/1.1\r\nHost: x\r\n\r\n").await,
        Rejection::Malformed
    );
    assert_eq!(
        refused(b"GET /a HTTP/9.9\r\nHost: x\r\n\r\n").await,
        Rejection::Http10
    );
    assert_eq!(
        refused(b"GET /a\r\n\r\n").await,
        Rejection::Http10,
        "HTTP/0.9"
    );
    assert_eq!(
        refused(b"GET /a HTTP/1.1\r\nx-a : 1\r\n\r\n").await,
        Rejection::Malformed
    );
    assert_eq!(
        refused(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").await,
        Rejection::Malformed
    );
    assert_eq!(
        refused(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n").await,
        Rejection::Malformed
    );
    assert_eq!(
        refused(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n")
            .await,
        Rejection::Malformed
    );
    assert_eq!(
        refused(b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n").await,
        Rejection::Malformed
    );
    assert_eq!(
        refused(b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n").await,
        Rejection::Fragment
    );
}

#[tokio::test]
async fn the_head_limit_is_60_kib_and_100_headers() {
    // `GET /a HTTP/1.1\r\n` (17) + `host: x\r\n` (9) + `x-big: …\r\n` (9 + n) + `\r\n` (2).
    let head = |n: usize| {
        format!(
            "GET /a HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(n)
        )
    };
    let fits = 61_440 - 37;
    assert_eq!(head(fits).len(), 61_440);
    assert!(matches!(parsed(head(fits).as_bytes()).await.0, Ok(Some(_))));
    assert_eq!(
        refused(head(fits + 1).as_bytes()).await,
        Rejection::HeadTooLarge
    );
    // Incomplete, but already over the limit.
    let partial = head(70_000);
    assert_eq!(
        refused(&partial.as_bytes()[..65_000]).await,
        Rejection::HeadTooLarge
    );
    let many = |n: usize| {
        let mut h = String::from("GET /a HTTP/1.1\r\n");
        for i in 0..n {
            h.push_str(&format!("x-h{i}: 1\r\n"));
        }
        h + "\r\n"
    };
    assert!(matches!(parsed(many(100).as_bytes()).await.0, Ok(Some(_))));
    assert_eq!(
        refused(many(101).as_bytes()).await,
        Rejection::TooManyHeaders
    );
}

async fn written(resp: Response<ProxyBody>, head_request: bool, close: bool) -> String {
    let (mut conn, mut client) = pair().await;
    conn.write_response(resp, head_request, close, false)
        .await
        .expect("written");
    drop(conn);
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.expect("read");
    String::from_utf8(out).expect("utf-8")
}

#[tokio::test]
async fn responses_are_framed_by_length_or_chunked() {
    let text = written(Response::new(body::full("hello")), false, false).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\r\ncontent-length: 5\r\n"), "{text}");
    assert!(text.contains("\r\ndate: "), "{text}");
    assert!(!text.contains("connection"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");

    let stream = futures::stream::iter([
        Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"ab"))),
        Ok(Frame::data(Bytes::from_static(b"cde"))),
    ]);
    let chunked = body::boxed(http_body_util::StreamBody::new(stream));
    let text = written(Response::new(chunked), false, true).await;
    assert!(
        text.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
        "{text}"
    );
}

#[tokio::test]
async fn bodyless_responses_keep_their_headers_and_send_no_body() {
    let mut head = Response::new(body::empty());
    head.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
    let text = written(head, true, false).await;
    assert!(text.contains("\r\ncontent-length: 42\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "{text}");

    let mut no_content = Response::new(body::empty());
    *no_content.status_mut() = http::StatusCode::NO_CONTENT;
    no_content
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    let text = written(no_content, false, false).await;
    assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"), "{text}");
    assert!(
        !text.contains("content-length") && !text.contains("transfer-encoding"),
        "{text}"
    );

    let mut odd = Response::new(body::empty());
    *odd.status_mut() = http::StatusCode::from_u16(299).expect("valid code");
    let text = written(odd, false, false).await;
    assert!(text.starts_with("HTTP/1.1 299 Unknown\r\n"), "{text}");
}

#[tokio::test]
async fn a_request_body_reaches_the_router_frame_by_frame() {
    let (mut conn, _client) = pair().await;
    conn.read
        .extend_from_slice(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET /next");
    let (tx, rx) = mpsc::channel(1);
    let mut feeder = Feeder {
        tx: PollSender::new(tx),
        decoder: Decoder::Chunked(ChunkState::Size),
    };
    let mut body = RequestBody {
        rx: Some(rx),
        remaining: None,
    };
    let feeding = async move {
        poll_fn(|cx| match feeder.poll_feed(cx, &mut conn) {
            Poll::Ready(Feed::Done) => Poll::Ready(()),
            Poll::Ready(_) => panic!("feeding failed"),
            Poll::Pending => Poll::Pending,
        })
        .await;
        // Done: the body ends when the feeder goes (as in `Conn::exchange`).
        drop(feeder);
        conn
    };
    let reading = async {
        let mut got = Vec::new();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            got.extend_from_slice(&frame.expect("frame").into_data().expect("data"));
        }
        got
    };
    let (conn, got) = tokio::join!(feeding, reading);
    assert_eq!(got, b"abcde");
    assert_eq!(&conn.read[..], b"GET /next");
}

#[tokio::test]
async fn repeated_inline_headers_become_one_line_as_in_envoy() {
    let (head, _) = parsed(
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\nx-custom: a\r\nX-Forwarded-For: 5.6.7.8\r\nx-forwarded-for: 9.9.9.9\r\nX-Custom: b\r\n\r\n",
    )
    .await;
    let headers = head.expect("valid").expect("complete").parts.headers;
    let xff: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(xff, ["1.2.3.4,5.6.7.8,9.9.9.9"]);
    let custom: Vec<_> = headers.get_all("x-custom").iter().collect();
    assert_eq!(custom, ["a", "b"], "other headers keep their lines");
}

#[tokio::test]
async fn a_body_shorter_than_its_length_is_sent_then_the_connection_closes() {
    let (mut conn, mut client) = pair().await;
    let stream =
        futures::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"abc")))]);
    let mut resp = Response::new(body::boxed(http_body_util::StreamBody::new(stream)));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
    let result = conn.write_response(resp, false, false, false).await;
    assert_eq!(result, Err(BODY_FAILED));
    drop(conn);
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8(out).expect("utf-8");
    assert!(text.contains("\r\ncontent-length: 10\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nabc"), "{text}");
}

#[tokio::test]
async fn a_short_body_fails_even_when_its_bytes_wait_for_the_client() {
    // 8 MiB does not fit in the socket buffers: the write waits for the client to read, and the
    // response must still end as failed (closing the connection), not as complete.
    let (mut conn, mut client) = pair().await;
    let part = Bytes::from(vec![b'x'; 8 * 1024 * 1024]);
    let stream = futures::stream::iter([Ok::<_, BoxError>(Frame::data(part))]);
    let mut resp = Response::new(body::boxed(http_body_util::StreamBody::new(stream)));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("16777216"));
    let writing = async move {
        let result = conn.write_response(resp, false, false, false).await;
        drop(conn);
        result
    };
    let reading = async {
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.expect("read");
        out.len()
    };
    let (result, received) = tokio::join!(writing, reading);
    assert_eq!(result, Err(BODY_FAILED));
    assert!(received > 8 * 1024 * 1024, "head and the 8 MiB: {received}");
}

async fn parsed_under(
    limits: crate::config::ConnectionLimits,
    bytes: &[u8],
) -> Result<Option<Head>, Rejection> {
    let (mut conn, _client) = pair_with(limits).await;
    conn.read.extend_from_slice(bytes);
    conn.parse_head()
}

#[tokio::test]
async fn max_headers_count_counts_every_header_line_host_included() {
    let limits = crate::config::ConnectionLimits {
        max_headers: 3,
        ..Default::default()
    };
    let four = b"GET / HTTP/1.1\r\nhost: a\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
    let three = b"GET / HTTP/1.1\r\nhost: a\r\na: 1\r\nb: 2\r\n\r\n";
    assert_eq!(
        parsed_under(limits, four).await.err(),
        Some(Rejection::TooManyHeaders)
    );
    assert!(matches!(parsed_under(limits, three).await, Ok(Some(_))));
    let mut many = b"GET / HTTP/1.1\r\nhost: a\r\n".to_vec();
    for i in 0..150 {
        many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let raised = crate::config::ConnectionLimits {
        max_headers: 200,
        ..Default::default()
    };
    let head = parsed_under(raised, &many).await;
    assert!(
        matches!(&head, Ok(Some(h)) if h.parts.headers.len() == 151),
        "151 headers under a limit of 200"
    );
    assert_eq!(
        parsed_under(Default::default(), &many).await.err(),
        Some(Rejection::TooManyHeaders),
        "over the default 100"
    );
}

#[tokio::test]
async fn headers_with_underscores_are_refused_or_dropped_as_configured() {
    use crate::config::UnderscoresAction;
    let req = b"GET / HTTP/1.1\r\nhost: a\r\nmy_header: 1\r\nok-header: 2\r\n\r\n";
    let under = |underscores| crate::config::ConnectionLimits {
        underscores,
        ..Default::default()
    };
    assert_eq!(
        parsed_under(under(UnderscoresAction::RejectRequest), req)
            .await
            .err(),
        Some(Rejection::Underscore)
    );
    let Ok(Some(head)) = parsed_under(under(UnderscoresAction::DropHeader), req).await else {
        panic!("dropped, not refused");
    };
    assert_eq!(head.dropped, 1);
    assert!(head.parts.headers.get("my_header").is_none());
    assert_eq!(head.parts.headers["ok-header"], "2");
    let Ok(Some(head)) = parsed_under(under(UnderscoresAction::Allow), req).await else {
        panic!("allowed");
    };
    assert_eq!(head.parts.headers["my_header"], "1");
}
