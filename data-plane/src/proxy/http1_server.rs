//! The downstream HTTP/1.1 connection, served in its own task: read a request head, hand the
//! request to the router, write the response, and again while the connection stays open.
//!
//! hyper's server did this before. It reads request bodies and writes responses through a
//! general dispatcher; here the task that owns the socket parses with `httparse` (hyper's own
//! parser) into one buffer, builds the request's header map from slices of that buffer, and
//! writes each response head and its body's first frames with one `write`. What it gains
//! besides instructions (BENCHMARKS.md, "Instructions per request"): requests that Envoy's
//! codec refuses are refused as Envoy refuses them, with its status, body, `server` header and
//! stats, where hyper answered with a bare status before the request existed.
//!
//! # What the codec accepts, and Envoy's answer to the rest
//!
//! | request | answer (all close the connection) |
//! |---|---|
//! | malformed request line or header (a space before `:`, a bad token, …) | 400 `Bad Request` |
//! | a version other than HTTP/1.x (`HTTP/9.9`), or none (HTTP/0.9) | 426 `Upgrade Required` |
//! | a head over `max_request_headers_kb` (60 KiB), or more than `max_headers_count` (100) headers | 431 `Request Header Fields Too Large` |
//! | a header name with `_` under `headers_with_underscores_action: REJECT_REQUEST` | 400 `Bad Request` (with `DROP_HEADER` the header is dropped) |
//! | `content-length` with `transfer-encoding`, a `transfer-encoding` other than `chunked`, an invalid or conflicting `content-length` | 400 `Bad Request` |
//! | a `#fragment` in the target | 400, empty body (`downstream_rq_failed_path_normalization`) |
//!
//! These, like the connection manager's own checks (`admission`), go through the router's
//! accounting ([`router::refused`]) so that they count as requests, as in Envoy. A folded header
//! line (obs-fold) is unfolded as Envoy unfolds it (`http1::unfold_obs_fold`).
//!
//! # Connection handling
//! - Keep-alive unless the request says `connection: close` (the response then says so too) or
//!   the response carries `connection: close` (the connection manager's refusals).
//! - A request body is read by this task and handed to the router's body through a one-slot
//!   channel, as the router asks for it (backpressure), also while a response that came
//!   before the body's end (an early response) is written. A response whose head goes out
//!   before the request body was read to its end says `connection: close` and closes the
//!   connection (Envoy does the same: an HTTP/1.1 connection cannot skip the rest of a body of
//!   unknown length).
//! - A repeated header that Envoy keeps inline (`headers::JOINED_WHEN_REPEATED`: `host`,
//!   `x-forwarded-for`, `user-agent`, …) becomes one line, its values joined with `,`, as Envoy
//!   forwards it; other repeated headers keep their lines.
//! - A request head that arrives in parts is under the connection manager's stream timeouts
//!   from its first part (`stream_timeout`): when one runs out first, Envoy's 408
//!   (`stream timeout`, `request timeout` or `request header timeout`) closes the connection.
//! - `expect: 100-continue` is answered with `100 Continue` at once (Envoy's default,
//!   `proxy_100_continue: false`).
//! - While the router works, and while the response body is awaited, the socket is watched: the
//!   client closing it (or half-closing it) drops the request (and with it the upstream
//!   exchange), which counts as `downstream_rq_rx_reset`, as in Envoy. The request stays in
//!   flight (`router::InFlight`) until its response has been written in full; a response body
//!   that fails midway resets it (`downstream_rq_tx_reset`) and closes the connection. Pipelined
//!   requests are read ahead (up to one head's limit) and answered in order.
//! - Responses: `HTTP/1.1` status line with the reason phrase (`Unknown` for a code without
//!   one, as Envoy); a `content-length` when the body's size is known, else chunked; no body for
//!   `HEAD`, 1xx, 204 and 304; a `date` header unless the response has one. Trailers are not
//!   sent (Envoy's HTTP/1.1 codec does not send them by default).
//! - The connection manager's connection limits (`conn_limits`): between requests the idle
//!   timeout and `max_connection_duration` run (a connection that never sent a byte closes at
//!   once; one that did drains: each response says `connection: close`, and the connection
//!   closes at the end of `drain_timeout`); the request that reaches
//!   `max_requests_per_connection` is the connection's last.
//! - After a response that closes the connection: `shutdown` (FIN), then whatever the client
//!   still sends is read and dropped for up to 1 s (Envoy's `delayed_close_timeout`), so that a
//!   close with unread bytes does not turn into a reset that could destroy the response.

use super::admission::Rejection;
use super::body::{BoxError, DownstreamBody, ProxyBody};
use super::conn_limits::ConnLife;
use super::headers;
use super::http1::{
    self, ChunkState, Decoder, Framing, FramingHeaders, HeaderSpan, MAX_HEADERS, Unfold,
    write_header,
};
use super::io_stats::ByteCounters;
use super::listener::ListenerCtx;
use super::router;
use super::stream_timeout::{StreamLimits, StreamTimer, earliest};
use crate::config::UnderscoresAction;
use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response, Uri, Version, header};
use http_body::{Body, Frame, SizeHint};
use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// Spare room made in the read buffer before each read.
const READ_RESERVE: usize = 8 * 1024;
/// A response body's frames are gathered into one write up to this many bytes.
const WRITE_BATCH: usize = 64 * 1024;
/// Headers the router may add to a request on its way upstream.
const ROUTER_HEADERS: usize = 6;
/// How long a closing connection keeps reading (and dropping) what the client still sends
/// (Envoy's default `delayed_close_timeout`).
const DELAYED_CLOSE: Duration = Duration::from_secs(1);

/// Serves HTTP/1.1 requests on `io` until either side closes the connection (or one of the
/// connection manager's limits, `life`, closes it), and counts how it ended as Envoy does (`downstream_cx_destroy_local`, `_remote`, `_active_rq`, …).
pub async fn serve(io: TcpStream, ctx: Arc<ListenerCtx>, bytes: ByteCounters, life: ConnLife) {
    let mut conn = Conn::new(io, bytes, life);
    let end = conn.run(&ctx).await;
    let lingered = match end {
        End::Local { .. } => conn.close().await,
        End::Remote { .. } => true,
    };
    let state = ctx.state.load();
    let stats = &state.stats;
    match end {
        End::Remote { active } => {
            stats.cx_destroy_remote.inc();
            if active {
                stats.cx_destroy_active_rq.inc();
                stats.cx_destroy_remote_active_rq.inc();
            }
        }
        End::Local { active } => {
            stats.cx_destroy_local.inc();
            if active {
                stats.cx_destroy_active_rq.inc();
                stats.cx_destroy_local_active_rq.inc();
            }
        }
    }
    if !lingered {
        stats.cx_delayed_close_timeout.inc();
    }
}

/// How a connection's life ends; `active`: with a request not yet answered in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed it, or the socket failed.
    Remote { active: bool },
    /// The proxy closes it: after a response that ends the connection, or because the
    /// response's body failed midway.
    Local { active: bool },
}

/// The client went away while a request was in flight.
const CLIENT_GONE: End = End::Remote { active: true };
/// The response body failed (the upstream went away, or it broke its framing) after the
/// response head was sent: the proxy resets the request and closes the connection.
const BODY_FAILED: End = End::Local { active: true };

/// One downstream connection.
struct Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed.
    read: BytesMut,
    /// Bytes to write; `written` of them are written.
    write: Vec<u8>,
    written: usize,
    /// Header positions of the head being parsed (kept to reuse the memory).
    spans: Vec<HeaderSpan>,
    /// `downstream_cx_rx_bytes_total` and `_tx_bytes_total`.
    bytes: ByteCounters,
    /// The stream timer of a request head arriving in parts (made for such a head only).
    head_timer: Option<(Pin<Box<tokio::time::Sleep>>, StreamTimer)>,
    /// The connection manager's limits on this connection (idle timeout, drain, …).
    life: ConnLife,
}

/// What the wait for the next request head ended with.
// Not boxed: a box would cost an allocation per request; the head is moved once.
#[allow(clippy::large_enum_variant)]
enum Next {
    /// A request head.
    Head(Head),
    /// The client closed the connection (between requests, or inside a head: Envoy answers
    /// neither).
    ClientClosed,
    /// A connection limit closes the connection (see `conn_limits`).
    Close,
}

/// A parsed request head.
struct Head {
    parts: http::request::Parts,
    /// How its body is framed (`None`: no body).
    framing: Option<Framing>,
    /// The client asked for the connection to close after the response.
    close: bool,
    /// `expect: 100-continue`.
    expect_continue: bool,
    /// Headers dropped for an underscore in their name (`headers_with_underscores_action:
    /// DROP_HEADER`).
    dropped: u64,
}

/// Where the request body's reading stands once the response is ready.
#[derive(Debug, PartialEq, Eq)]
enum BodyRead {
    /// Read to its end (or there was none).
    Complete,
    /// Not read to its end: the connection cannot carry another request.
    Incomplete,
}

impl Conn {
    fn new(io: TcpStream, bytes: ByteCounters, life: ConnLife) -> Self {
        Conn {
            life,
            bytes,
            io,
            read: BytesMut::with_capacity(READ_RESERVE),
            write: Vec::with_capacity(1024),
            written: 0,
            spans: Vec::new(),
            head_timer: None,
        }
    }

    async fn run(&mut self, ctx: &Arc<ListenerCtx>) -> End {
        loop {
            let head = match poll_fn(|cx| self.poll_head(cx, ctx)).await {
                Ok(Next::Head(head)) => head,
                Ok(Next::ClientClosed) => return End::Remote { active: false },
                Ok(Next::Close) => return End::Local { active: false },
                Err(rejection) => {
                    let (resp, in_flight) = router::refused(ctx.clone(), rejection).await;
                    return match self.write_response(resp, false, true, false).await {
                        Ok(()) => {
                            in_flight.complete();
                            End::Local { active: false }
                        }
                        Err(end) => end,
                    };
                }
            };
            if let Err(end) = self.exchange(ctx, head).await {
                return end;
            }
        }
    }

    /// One request and its response: `Ok` when the connection may carry another.
    async fn exchange(&mut self, ctx: &Arc<ListenerCtx>, head: Head) -> Result<(), End> {
        let Head {
            parts,
            framing,
            close,
            expect_continue,
            dropped: _,
        } = head;
        let head_request = parts.method == Method::HEAD;
        // The request that reaches `max_requests_per_connection` is the connection's last.
        let last = self.life.request_started();
        let (body, mut feeder) = match framing {
            None => (RequestBody::empty(), None),
            Some(framing) => {
                let (tx, rx) = mpsc::channel(1);
                let (remaining, decoder) = match framing {
                    Framing::Length(n) => (Some(n), Decoder::Length(n)),
                    Framing::Chunked => (None, Decoder::Chunked(ChunkState::Size)),
                };
                let body = RequestBody {
                    rx: Some(rx),
                    remaining,
                };
                let feeder = Feeder {
                    tx: PollSender::new(tx),
                    decoder,
                };
                (body, Some(feeder))
            }
        };
        if expect_continue && feeder.is_some() {
            self.write
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            poll_fn(|cx| self.poll_flush(cx)).await?;
            // Envoy counts its 100 Continue as a (1xx) response.
            let state = ctx.state.load();
            state.stats.count_response(100);
        }
        let req = Request::from_parts(parts, DownstreamBody::H1(body));
        let mut response = pin!(router::handle(ctx.clone(), req));
        let mut body_read = if feeder.is_some() {
            BodyRead::Incomplete
        } else {
            BodyRead::Complete
        };
        let (mut resp, in_flight) = poll_fn(|cx| {
            if let Poll::Ready(answer) = response.as_mut().poll(cx) {
                return Poll::Ready(Ok(answer));
            }
            if let Some(f) = feeder.as_mut() {
                match ready!(f.poll_feed(cx, self)) {
                    Feed::Done => {
                        feeder = None;
                        body_read = BodyRead::Complete;
                    }
                    // The router dropped the body: nothing reads the rest of it.
                    Feed::Abandoned => {
                        feeder = None;
                        return Poll::Pending;
                    }
                    Feed::Failed => return Poll::Ready(Err(CLIENT_GONE)),
                }
            }
            if body_read == BodyRead::Complete {
                // Watch for the client going away; read ahead what it pipelines.
                while self.read.len() < self.life.limits().max_request_headers_bytes {
                    match ready!(self.poll_fill(cx)) {
                        Ok(0) | Err(_) => return Poll::Ready(Err(CLIENT_GONE)),
                        Ok(_) => {}
                    }
                }
            }
            Poll::Pending
        })
        .await?;
        // A response before the end of its request (an early response): the request body keeps
        // going upstream while the response is written, as in Envoy; the connection closes
        // after it all the same (its head says so, as Envoy's does).
        let mut close = close || last || body_read == BodyRead::Incomplete;
        close |= headers::connection_names(resp.headers(), "close");
        if !close && self.life.draining() {
            // Envoy's draining connection manager: `connection: close` on each response; the
            // connection itself closes once the drain is over (the client usually first).
            if self.life.drain_over(tokio::time::Instant::now()) {
                close = true;
            } else {
                resp.headers_mut()
                    .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
            }
        }
        let watch = body_read == BodyRead::Complete;
        if body_read == BodyRead::Incomplete {
            // Envoy counts it when it sends the response head.
            let state = ctx.state.load();
            state.stats.rq_response_before_rq_complete.inc();
        }
        let upload = Upload {
            feeder: &mut feeder,
            read: &mut body_read,
        };
        let written = self
            .write_response_feeding(resp, head_request, close, watch, Some(upload))
            .await;
        // A body the router never finished leaves the connection out of step.
        drop(feeder);
        match written {
            Ok(()) => {
                if body_read == BodyRead::Incomplete {
                    // Envoy resets a stream whose response ended before its request did.
                    ctx.state.load().stats.rq_rx_reset.inc();
                }
                let ended = in_flight.complete();
                self.life.idle_from(ended);
            }
            // As Envoy: the stream is reset, then the connection closed (with no stream left).
            Err(BODY_FAILED) => {
                in_flight.reset_locally();
                return Err(End::Local { active: false });
            }
            // Dropping the request counts the reset.
            Err(end) => return Err(end),
        }
        if close {
            return Err(End::Local { active: false });
        }
        Ok(())
    }

    /// Parses the next request head once it is complete. A head that arrives in parts is under
    /// the stream timeouts from its first part, as Envoy's stream starts with the head's first
    /// byte (the head's later parts do not restart them); while nothing has arrived, the
    /// connection's limits run (`conn_limits`).
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        ctx: &ListenerCtx,
    ) -> Poll<Result<Next, Rejection>> {
        loop {
            if !self.read.is_empty() {
                if let Some(head) = self.parse_head()? {
                    self.head_timer = None;
                    if head.dropped > 0 {
                        let state = ctx.state.load();
                        state.stats.codec[0].dropped.add(head.dropped);
                    }
                    return Poll::Ready(Ok(Next::Head(head)));
                }
                if self.head_timer.is_none() {
                    let limits = StreamLimits::of(&ctx.state.load().config);
                    let now = tokio::time::Instant::now();
                    let after = |d: Option<std::time::Duration>| d.map(|d| now + d);
                    let first = earliest([
                        (after(limits.headers), StreamTimer::Headers),
                        (after(limits.request), StreamTimer::Request),
                        (after(limits.idle), StreamTimer::Idle),
                        (after(limits.max_duration), StreamTimer::MaxDuration),
                    ]);
                    if let Some((at, timer)) = first {
                        self.head_timer = Some((Box::pin(tokio::time::sleep_until(at)), timer));
                    }
                }
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Ok(Next::ClientClosed)),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => {
                    if self.read.is_empty() {
                        while let Poll::Ready(event) = self.life.poll_idle(cx) {
                            if self.life.fired(event, tokio::time::Instant::now()) {
                                return Poll::Ready(Ok(Next::Close));
                            }
                        }
                    }
                    if let Some((sleep, timer)) = self.head_timer.as_mut()
                        && sleep.as_mut().poll(cx).is_ready()
                    {
                        let timer = *timer;
                        self.head_timer = None;
                        return Poll::Ready(Err(Rejection::Timeout(timer)));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn parse_head(&mut self) -> Result<Option<Head>, Rejection> {
        let limits = *self.life.limits();
        let max_headers = limits.max_headers as usize;
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        // More than the default `max_headers_count` allowed: room for them on the heap.
        let mut more = Vec::new();
        let storage: &mut [MaybeUninit<httparse::Header<'_>>] = if max_headers > MAX_HEADERS {
            more.resize_with(max_headers, MaybeUninit::uninit);
            &mut more
        } else {
            &mut headers
        };
        let mut req = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut req, &self.read, storage);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial)
                if self.read.len() <= limits.max_request_headers_bytes =>
            {
                return Ok(None);
            }
            Ok(httparse::Status::Partial) => return Err(Rejection::HeadTooLarge),
            Err(httparse::Error::TooManyHeaders) => return Err(Rejection::TooManyHeaders),
            Err(httparse::Error::Version | httparse::Error::Token) => {
                return Err(line_rejection(&self.read));
            }
            // Possibly a folded header line, which Envoy unfolds.
            Err(httparse::Error::HeaderName) => {
                return match http1::unfold_obs_fold(&mut self.read) {
                    Unfold::Unfolded => self.parse_head(),
                    Unfold::Incomplete if self.read.len() <= limits.max_request_headers_bytes => {
                        Ok(None)
                    }
                    Unfold::Incomplete => Err(Rejection::HeadTooLarge),
                    Unfold::NotFolded => Err(Rejection::Malformed),
                };
            }
            Err(_) => return Err(Rejection::Malformed),
        };
        if len > limits.max_request_headers_bytes {
            return Err(Rejection::HeadTooLarge);
        }
        if req.headers.len() > max_headers {
            return Err(Rejection::TooManyHeaders);
        }
        let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
            .map_err(|_| Rejection::Malformed)?;
        let version = if req.version == Some(1) {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        let target = req.path.unwrap_or("");
        if target.contains('#') {
            return Err(Rejection::Fragment);
        }
        let base = self.read.as_ptr() as usize;
        let target_span = {
            let start = target.as_ptr() as usize - base;
            (start, start + target.len())
        };
        self.spans.clear();
        let mut framing = FramingHeaders::default();
        let mut expect_continue = false;
        let mut dropped = 0;
        for h in req.headers.iter() {
            if limits.underscores != UnderscoresAction::Allow && h.name.contains('_') {
                if limits.underscores == UnderscoresAction::RejectRequest {
                    return Err(Rejection::Underscore);
                }
                dropped += 1;
                continue;
            }
            framing.add(h.name, h.value);
            if h.name.len() == 6
                && h.name.eq_ignore_ascii_case("expect")
                && h.value.eq_ignore_ascii_case(b"100-continue")
            {
                expect_continue = true;
            }
            self.spans.push(HeaderSpan::of(h, base));
        }
        let body_framing =
            http1::request_body_framing(&framing).map_err(|_| Rejection::Malformed)?;
        let head = self.read.split_to(len).freeze();
        let uri = Uri::from_maybe_shared(head.slice(target_span.0..target_span.1))
            .map_err(|_| Rejection::Malformed)?;
        let (mut map, repeated) =
            http1::header_map(&head, &self.spans, ROUTER_HEADERS).ok_or(Rejection::Malformed)?;
        if repeated {
            headers::join_inline_repeated(&mut map).map_err(|_| Rejection::Malformed)?;
        }
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = method;
        parts.uri = uri;
        parts.version = version;
        parts.headers = map;
        Ok(Some(Head {
            parts,
            framing: body_framing,
            close: !framing.keep_alive(version),
            expect_continue,
            dropped,
        }))
    }

    /// Writes `resp` (the head, then its body as it comes); `close` adds `connection: close`
    /// unless the response has a `connection` header. `Err` when the client is gone or the
    /// body failed: the connection is done. `watch`: while the body is awaited, watch the
    /// socket for the client going away (and read ahead what it pipelines); only when the
    /// request has been read in full, as the rest of its body would be taken for a next request.
    async fn write_response(
        &mut self,
        resp: Response<ProxyBody>,
        head_request: bool,
        close: bool,
        watch: bool,
    ) -> Result<(), End> {
        self.write_response_feeding(resp, head_request, close, watch, None)
            .await
    }

    /// Like [`Conn::write_response`], also reading the rest of the request body (`upload`)
    /// while the response body waits.
    async fn write_response_feeding(
        &mut self,
        resp: Response<ProxyBody>,
        head_request: bool,
        close: bool,
        mut watch: bool,
        mut upload: Option<Upload<'_>>,
    ) -> Result<(), End> {
        let (parts, body) = resp.into_parts();
        let status = parts.status;
        // A 1xx or 204 has no body and, as from Envoy, no `content-length` (a 304 and a
        // response to HEAD keep theirs: it describes the resource).
        let never_body = status.is_informational() || status == http::StatusCode::NO_CONTENT;
        let bodyless = head_request || never_body || status == http::StatusCode::NOT_MODIFIED;
        let out = &mut self.write;
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut length = None;
        let mut has_date = false;
        let mut has_connection = false;
        for (name, value) in &parts.headers {
            if *name == header::CONTENT_LENGTH {
                if never_body {
                    continue;
                }
                length = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
            } else if *name == header::DATE {
                has_date = true;
            } else if *name == header::CONNECTION {
                has_connection = true;
            }
            write_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
        let framing = if bodyless {
            None
        } else if let Some(n) = length {
            Some(Framing::Length(n))
        } else if let Some(n) = body.size_hint().exact() {
            out.extend_from_slice(b"content-length: ");
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{n}\r\n");
            Some(Framing::Length(n))
        } else {
            write_header(out, b"transfer-encoding", b"chunked");
            Some(Framing::Chunked)
        };
        if !has_date {
            write_date(out);
        }
        if close && !has_connection {
            write_header(out, b"connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
        let Some(mut framing) = framing else {
            return poll_fn(|cx| self.poll_flush(cx)).await;
        };
        let mut body = pin!(body);
        // `ended`: nothing more to take from the body; `failed`: it broke its framing or failed,
        // so what was written is all the client gets and the connection closes after it.
        let mut ended = false;
        let mut failed = false;
        poll_fn(|cx| {
            loop {
                let mut waiting = false;
                if !ended {
                    match body.as_mut().poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            let encoded = match frame.into_data() {
                                Ok(data) => {
                                    http1::encode_data(&mut self.write, &mut framing, &data)
                                }
                                Err(_trailers) => Ok(()),
                            };
                            if encoded.is_err() {
                                // Longer than its content-length.
                                (ended, failed) = (true, true);
                            } else if self.write.len() - self.written < WRITE_BATCH {
                                continue;
                            }
                        }
                        Poll::Ready(None) => {
                            ended = true;
                            match framing {
                                Framing::Length(0) => {}
                                // Shorter than its content-length.
                                Framing::Length(_) => failed = true,
                                Framing::Chunked => self.write.extend_from_slice(b"0\r\n\r\n"),
                            }
                        }
                        // The upstream failed mid-body: the client gets what arrived, then the
                        // close (a short body, as from Envoy).
                        Poll::Ready(Some(Err(_))) => (ended, failed) = (true, true),
                        Poll::Pending => waiting = true,
                    }
                }
                ready!(self.poll_flush(cx))?;
                if ended {
                    return Poll::Ready(if failed { Err(BODY_FAILED) } else { Ok(()) });
                }
                if waiting
                    && let Some(up) = upload.as_mut()
                    && let Some(feeder) = up.feeder.as_mut()
                {
                    match feeder.poll_feed(cx, self) {
                        Poll::Ready(Feed::Done) => {
                            *up.feeder = None;
                            *up.read = BodyRead::Complete;
                            watch = true;
                            continue;
                        }
                        Poll::Ready(Feed::Abandoned) => *up.feeder = None,
                        Poll::Ready(Feed::Failed) => return Poll::Ready(Err(CLIENT_GONE)),
                        Poll::Pending => {}
                    }
                }
                if waiting {
                    // A client that leaves mid-body ends the request at once, and the upstream
                    // exchange with it (Envoy resets both streams), rather than when the
                    // upstream next sends.
                    while watch && self.read.len() < self.life.limits().max_request_headers_bytes {
                        match ready!(self.poll_fill(cx)) {
                            Ok(0) | Err(_) => return Poll::Ready(Err(CLIENT_GONE)),
                            Ok(_) => {}
                        }
                    }
                    return Poll::Pending;
                }
            }
        })
        .await
    }

    /// Writes everything buffered.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), End>> {
        while self.written < self.write.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.write[self.written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(CLIENT_GONE)),
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    self.bytes.tx.add(n as u64);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        self.write.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads more bytes into the buffer: `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_RESERVE / 2 {
            self.read.reserve(READ_RESERVE);
        }
        let filled = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read);
        if let Poll::Ready(Ok(n)) = filled {
            self.bytes.rx.add(n as u64);
        }
        filled
    }

    /// Ends a connection the proxy closes: FIN, then read and drop what the client still sends
    /// until it closes too, for at most [`DELAYED_CLOSE`]; false when that time ran out.
    async fn close(&mut self) -> bool {
        let _ = poll_fn(|cx| Pin::new(&mut self.io).poll_shutdown(cx)).await;
        let drain = async {
            loop {
                self.read.clear();
                match poll_fn(|cx| self.poll_fill(cx)).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(DELAYED_CLOSE, drain).await.is_ok()
    }
}

/// What Envoy answers to a request line httparse rejects: 426 when it names another version
/// (`GET /a HTTP/9.9`) or none (`GET /a`, HTTP/0.9), as for HTTP/1.0; 400 otherwise.
fn line_rejection(buf: &[u8]) -> Rejection {
    let end = buf
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(buf.len());
    let mut parts = buf[..end].split(|b| *b == b' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_method), Some(_target), None, _) => Rejection::Http10,
        (Some(_method), Some(_target), Some(version), None) => match version {
            [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
                if major.is_ascii_digit() && minor.is_ascii_digit() =>
            {
                Rejection::Http10
            }
            _ => Rejection::Malformed,
        },
        _ => Rejection::Malformed,
    }
}

/// Writes `date: <IMF-fixdate>`, formatted once a second per thread.
fn write_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        write_header(out, b"date", text.as_bytes());
    });
}

/// A request body still being read while its response is written.
struct Upload<'a> {
    feeder: &'a mut Option<Feeder>,
    read: &'a mut BodyRead,
}

/// Reads a request body from the connection into the router's [`RequestBody`].
struct Feeder {
    tx: PollSender<Result<Frame<Bytes>, BoxError>>,
    decoder: Decoder,
}

/// How feeding a request body ended.
enum Feed {
    /// Read to its end.
    Done,
    /// The router dropped the body before its end.
    Abandoned,
    /// The client closed the connection inside the body, or the chunked framing was broken.
    Failed,
}

impl Feeder {
    fn poll_feed(&mut self, cx: &mut Context<'_>, conn: &mut Conn) -> Poll<Feed> {
        loop {
            if ready!(self.tx.poll_reserve(cx)).is_err() {
                return Poll::Ready(Feed::Abandoned);
            }
            let frame = loop {
                match self.decoder.decode(&mut conn.read) {
                    Ok(Some(frame)) => break frame,
                    Ok(None) if self.decoder.is_end() => return Poll::Ready(Feed::Done),
                    Ok(None) => {}
                    Err(e) => {
                        let _ = self.tx.send_item(Err(Box::new(e)));
                        return Poll::Ready(Feed::Failed);
                    }
                }
                match ready!(conn.poll_fill(cx)) {
                    Ok(0) => {
                        let _ = self.tx.send_item(Err(
                            "the client closed the connection inside the request body".into(),
                        ));
                        return Poll::Ready(Feed::Failed);
                    }
                    Err(e) => {
                        let _ = self.tx.send_item(Err(Box::new(e)));
                        return Poll::Ready(Feed::Failed);
                    }
                    Ok(_) => {}
                }
            };
            let _ = self.tx.send_item(Ok(frame));
            if self.decoder.is_end() {
                return Poll::Ready(Feed::Done);
            }
        }
    }
}

/// A downstream HTTP/1.1 request body: the frames the connection's task reads for it.
#[derive(Debug)]
pub struct RequestBody {
    /// `None`: the body has ended (or there was none).
    rx: Option<mpsc::Receiver<Result<Frame<Bytes>, BoxError>>>,
    /// Bytes still due under a `content-length`.
    remaining: Option<u64>,
}

impl RequestBody {
    /// No body.
    pub fn empty() -> Self {
        RequestBody {
            rx: None,
            remaining: Some(0),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(rx.poll_recv(cx)) {
            Some(Ok(frame)) => {
                if let (Some(data), Some(left)) = (frame.data_ref(), self.remaining.as_mut()) {
                    *left = left.saturating_sub(data.remaining() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                self.rx = None;
                Poll::Ready(Some(Err(e)))
            }
            None => {
                self.rx = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rx.is_none() || self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
