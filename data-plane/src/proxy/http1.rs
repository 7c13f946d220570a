//! The HTTP/1.1 upstream connection, driven by the request's own task.
//!
//! hyper's client runs each connection in a task of its own and hands it every request over a
//! channel, and the response back over another: two task wake-ups and two channel hand-offs
//! per request, which made up a third of legate-proxy's instructions per proxied request
//! (BENCHMARKS.md, "Instructions per request"). Here the task serving the request writes the
//! request and reads the response itself; the response body borrows the connection until its
//! last byte, then the pool takes the connection back. An idle connection is owned by the
//! pool's idle list and read by nobody: [`Connection::is_reusable_now`] looks at it when it
//! goes idle (leaving the pool's watch as its read waker) and when it is taken again.
//!
//! Framing follows RFC 9112 and hyper's client, which this replaces on the HTTP/1.1 path (HTTP/2
//! stays on hyper):
//! - request: an empty body is sent without framing headers (`transfer-encoding` removed); a
//!   body of known length gets `content-length` unless it has one; any other body is sent
//!   chunked (`transfer-encoding: chunked` added unless present).
//! - response: no body for `HEAD`, 1xx, 204 and 304; `transfer-encoding` ending in `chunked`
//!   is chunked; otherwise `content-length` (all values equal); otherwise the body runs to the
//!   end of the connection. Interim 1xx responses (100 Continue) are skipped; 101 is an error
//!   (upgrades are refused at configuration time).
//! - keep-alive: HTTP/1.1 unless `connection: close`; HTTP/1.0 only with
//!   `connection: keep-alive`. A connection is reused only when the request was sent whole, the
//!   response read whole, and nothing more arrived.
//! - The request body keeps streaming while the response arrives (full duplex), as in hyper.
//!
//! Limits: a response head of at most [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`] headers (Envoy's
//! defaults for HTTP/1.1 responses, `max_response_headers_kb` 80 and
//! `max_response_headers_count` 100; checked against Envoy 1.40: a head of 81,910 bytes is
//! forwarded, one of 81,990 is a 502); a chunk-size line of at most [`MAX_CHUNK_LINE`] bytes.
//! Anything over is a protocol error.

use super::body::{BoxError, ProxyBody};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version, header};
use http_body::{Body, Frame, SizeHint};
use std::future::poll_fn;
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite};

/// Most headers a response head (or trailer block) may have.
pub const MAX_HEADERS: usize = 100;
/// Largest response head, in bytes.
pub const MAX_HEAD_BYTES: usize = 80 * 1024;
/// Longest chunk-size line (size, extensions, CRLF).
pub const MAX_CHUNK_LINE: usize = 4096;
/// Spare room made in the read buffer before each read.
const READ_RESERVE: usize = 8 * 1024;

/// Why an exchange on a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the socket failed.
    #[error("upstream connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The upstream closed the connection before the message was complete.
    #[error("upstream connection closed before the message was complete")]
    Closed,
    /// The upstream sent something that is not HTTP/1.1 (or over a limit).
    #[error("upstream protocol error: {0}")]
    Protocol(&'static str),
    /// The request could not be framed (an invalid `content-length`).
    #[error("request framing: {0}")]
    Request(&'static str),
    /// The request body failed (the downstream went away).
    #[error("request body: {0}")]
    Body(BoxError),
}

impl Error {
    /// True when the upstream (or the network) ended the connection, not the proxy.
    pub fn is_remote(&self) -> bool {
        matches!(self, Error::Io(_) | Error::Closed | Error::Protocol(_))
    }
}

/// One HTTP/1.1 client connection over `T`.
#[derive(Debug)]
pub struct Connection<T> {
    io: T,
    /// Bytes read and not yet consumed.
    read: BytesMut,
    /// Bytes to write; `written` of them are written.
    write: Vec<u8>,
    written: usize,
    /// Header name and value positions of the head being parsed (kept to reuse the memory).
    spans: Vec<HeaderSpan>,
    /// The last response allowed another request on the connection.
    keep_alive: bool,
    /// The connection broke (or the upstream closed it): never reused.
    broken: bool,
    /// The upstream closed its side or the socket failed.
    peer_closed: bool,
}

/// Where a header's name and value are in a head: offsets into the read buffer, kept while the
/// head is parsed and turned into a header map over the frozen head ([`header_map`]). Shared by
/// both HTTP/1.1 codecs (this one and `http1_server`).
#[derive(Debug, Clone, Copy)]
pub(super) struct HeaderSpan {
    name: (usize, usize),
    value: (usize, usize),
}

impl HeaderSpan {
    /// Where `h` is in the buffer that starts at `base`.
    pub(super) fn of(h: &httparse::Header<'_>, base: usize) -> Self {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        HeaderSpan {
            name: (name, name + h.name.len()),
            value: (value, value + h.value.len()),
        }
    }
}

/// What [`unfold_obs_fold`] found in a buffer whose head httparse refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unfold {
    /// Folded header lines were joined: parse again.
    Unfolded,
    /// The head is not complete yet: read more first.
    Incomplete,
    /// Nothing to unfold: the head is malformed.
    NotFolded,
}

/// Joins folded header lines (obs-fold, RFC 9112 §5.2) as Envoy 1.40 does: each CRLF followed by
/// a space or tab inside the header section is removed, the whitespace kept
/// (`x-a: 1\r\n 2` → `x-a: 1 2`). A line that starts with whitespace right after the start line
/// is not a fold (Envoy refuses it). Only called after httparse refused a head, on the whole
/// head (so on rare input only).
pub(super) fn unfold_obs_fold(buf: &mut BytesMut) -> Unfold {
    let Some(start_line_end) = find(buf, b"\r\n") else {
        return Unfold::Incomplete;
    };
    let headers_start = start_line_end + 2;
    let Some(end) = find(&buf[start_line_end..], b"\r\n\r\n").map(|i| i + start_line_end) else {
        return Unfold::Incomplete;
    };
    let section = &buf[headers_start..end];
    let folds = section
        .windows(3)
        .enumerate()
        .filter(|(_, w)| w[0] == b'\r' && w[1] == b'\n' && (w[2] == b' ' || w[2] == b'\t'))
        .map(|(i, _)| headers_start + i)
        .collect::<Vec<_>>();
    if folds.is_empty() {
        return Unfold::NotFolded;
    }
    let mut unfolded = BytesMut::with_capacity(buf.len());
    let mut from = 0;
    for at in folds {
        unfolded.extend_from_slice(&buf[from..at]);
        from = at + 2;
    }
    unfolded.extend_from_slice(&buf[from..]);
    *buf = unfolded;
    Unfold::Unfolded
}

/// The header map of a parsed head: names parsed, values sharing `head`'s bytes, with room for
/// `room` more headers (what the router adds: a header map that grows reallocates both of its
/// tables). `None` for a name or value the `http` crate refuses; the `bool` says whether a name
/// came more than once.
pub(super) fn header_map(
    head: &Bytes,
    spans: &[HeaderSpan],
    room: usize,
) -> Option<(HeaderMap, bool)> {
    let mut map = HeaderMap::with_capacity(spans.len() + room);
    let mut repeated = false;
    for s in spans {
        let name = HeaderName::from_bytes(&head[s.name.0..s.name.1]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(s.value.0..s.value.1)).ok()?;
        repeated |= map.append(name, value);
    }
    Some((map, repeated))
}

/// What is left of an exchange once its response head has arrived: the response body to
/// read, and the rest of the request body if it is still being sent.
#[derive(Debug)]
pub struct Exchange {
    decoder: Decoder,
    /// Boxed: a request body can be a response body of another exchange (a type cycle).
    upload: Option<Box<Upload>>,
}

impl Exchange {
    /// The response body has been read to its end.
    pub fn is_end(&self) -> bool {
        self.decoder.is_end()
    }

    /// The response body's size, when known.
    pub fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(n) => SizeHint::with_exact(n),
            Decoder::Chunked(ChunkState::Done) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A request body still being written, with its framing.
#[derive(Debug)]
struct Upload {
    body: ProxyBody,
    framing: Framing,
}

/// How a message body is framed on the wire.
#[derive(Debug, Clone, Copy)]
pub(super) enum Framing {
    /// `content-length`: this many bytes are still due.
    Length(u64),
    Chunked,
}

/// How a message body is delimited, and how far it has been read: the response body here,
/// the request body in `http1_server` (never `Eof` there).
#[derive(Debug)]
pub(super) enum Decoder {
    /// This many bytes are still due (0: the body is complete).
    Length(u64),
    Chunked(ChunkState),
    /// Until the upstream closes the connection; `true` once it has.
    Eof(bool),
}

impl Decoder {
    /// The body has been read to its end.
    pub(super) fn is_end(&self) -> bool {
        matches!(
            self,
            Decoder::Length(0) | Decoder::Chunked(ChunkState::Done) | Decoder::Eof(true)
        )
    }

    /// The next frame from the buffered bytes `read` (consuming what it decodes), or `None`
    /// when more bytes are needed or the body has ended.
    pub(super) fn decode(&mut self, read: &mut BytesMut) -> Result<Option<Frame<Bytes>>, Error> {
        match self {
            Decoder::Length(0) | Decoder::Eof(true) => Ok(None),
            Decoder::Length(left) => {
                if read.is_empty() {
                    return Ok(None);
                }
                let n = (*left).min(read.len() as u64) as usize;
                *left -= n as u64;
                Ok(Some(Frame::data(read.split_to(n).freeze())))
            }
            Decoder::Eof(false) => {
                if read.is_empty() {
                    return Ok(None);
                }
                Ok(Some(Frame::data(read.split().freeze())))
            }
            Decoder::Chunked(state) => decode_chunked(read, state),
        }
    }
}

/// Where a chunked decoder is in the body.
#[derive(Debug, Clone, Copy)]
pub(super) enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk: this many data bytes are due.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: the trailer section.
    Trailers,
    Done,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    /// A connection over a connected (and, for TLS, handshaken) transport.
    pub fn new(io: T) -> Self {
        Connection {
            io,
            read: BytesMut::with_capacity(READ_RESERVE),
            write: Vec::with_capacity(1024),
            written: 0,
            spans: Vec::new(),
            keep_alive: true,
            broken: false,
            peer_closed: false,
        }
    }

    /// The upstream closed the connection (or it failed): a close counted as remote.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Whether an idle connection can carry a request now, looking without waiting: a
    /// connection the upstream has closed (or that received bytes nobody asked for) is not
    /// reusable. When it is, `waker` is woken once the socket becomes readable (the pool's
    /// watch of its idle connections; a no-op waker for a last look). Costs no system call
    /// unless the socket became readable since the last read.
    pub fn is_reusable_now(&mut self, waker: &std::task::Waker) -> bool {
        if self.broken || !self.keep_alive || !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(waker);
        match self.poll_fill(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Ok(_)) => {
                // Unsolicited bytes: the connection is out of step.
                self.broken = true;
                false
            }
            Poll::Ready(Err(_)) => false,
        }
    }

    /// Whether the connection may carry another request after `exchange` ended.
    pub fn is_reusable_after(&self, exchange: &Exchange) -> bool {
        self.keep_alive
            && !self.broken
            && exchange.upload.is_none()
            && exchange.decoder.is_end()
            && self.read.is_empty()
    }

    /// Sends `req` and waits for the response head. The request body is written as it comes
    /// while the response is read; what is left of it keeps being written while the response
    /// body is read ([`Connection::poll_body`]).
    pub async fn send(
        &mut self,
        req: Request<ProxyBody>,
    ) -> Result<(http::response::Parts, Exchange), Error> {
        let (mut parts, body) = req.into_parts();
        self.write.clear();
        self.written = 0;
        let framing = match encode_head(&mut self.write, &mut parts, &body) {
            Ok(f) => f,
            Err(e) => {
                // Nothing was written: the connection is still good.
                self.write.clear();
                return Err(e);
            }
        };
        let head_request = parts.method == Method::HEAD;
        let mut upload = framing.map(|framing| Box::new(Upload { body, framing }));
        let result = poll_fn(|cx| self.poll_response_head(cx, &mut upload, head_request)).await;
        match result {
            Ok((head, decoder)) => Ok((head, Exchange { decoder, upload })),
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    fn poll_response_head(
        &mut self,
        cx: &mut Context<'_>,
        upload: &mut Option<Box<Upload>>,
        head_request: bool,
    ) -> Poll<Result<(http::response::Parts, Decoder), Error>> {
        loop {
            self.poll_write_side(cx, upload)?;
            if !self.read.is_empty()
                && let Some(head) = self.parse_head(head_request)?
            {
                return Poll::Ready(Ok(head));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                // Part of a head, then the close: Envoy's codec calls that a protocol error.
                return Poll::Ready(Err(if self.read.is_empty() {
                    Error::Closed
                } else {
                    Error::Protocol("connection closed inside the response head")
                }));
            }
        }
    }

    /// Reads the next frame of the response body (and keeps writing the request body).
    pub fn poll_body(
        &mut self,
        exchange: &mut Exchange,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if exchange.upload.is_some()
            && let Err(e) = self.poll_write_side(cx, &mut exchange.upload)
        {
            self.broken = true;
            return Poll::Ready(Some(Err(e)));
        }
        match self.poll_decode(&mut exchange.decoder, cx) {
            Poll::Ready(Some(Err(e))) => {
                self.broken = true;
                Poll::Ready(Some(Err(e)))
            }
            other => other,
        }
    }

    fn poll_decode(
        &mut self,
        decoder: &mut Decoder,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            if decoder.is_end() {
                return Poll::Ready(None);
            }
            match decoder.decode(&mut self.read) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                // A chunked body's last chunk and trailer section were consumed.
                Ok(None) if decoder.is_end() => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            if ready!(self.poll_fill(cx))? == 0 {
                if let Decoder::Eof(done) = decoder {
                    *done = true;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(Error::Closed)));
            }
        }
    }

    /// Writes what is buffered, then more of the request body, until the socket or the body
    /// would block (or the body is sent).
    fn poll_write_side(
        &mut self,
        cx: &mut Context<'_>,
        upload: &mut Option<Box<Upload>>,
    ) -> Result<(), Error> {
        loop {
            while self.written < self.write.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.write[self.written..]) {
                    Poll::Ready(Ok(0)) => return Err(self.closed()),
                    Poll::Ready(Ok(n)) => self.written += n,
                    Poll::Ready(Err(e)) => return Err(self.failed(e)),
                    Poll::Pending => return Ok(()),
                }
            }
            if !self.write.is_empty() {
                // TLS buffers records: push them out.
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Err(self.failed(e)),
                    Poll::Pending => return Ok(()),
                }
                self.write.clear();
                self.written = 0;
            }
            let Some(up) = upload else { return Ok(()) };
            match Pin::new(&mut up.body).poll_frame(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Some(Err(e))) => return Err(Error::Body(e)),
                Poll::Ready(Some(Ok(frame))) => {
                    // Request trailers are not forwarded over HTTP/1.1 (as hyper's client).
                    if let Ok(data) = frame.into_data() {
                        encode_data(&mut self.write, &mut up.framing, &data)?;
                    }
                }
                Poll::Ready(None) => {
                    match up.framing {
                        Framing::Length(0) => {}
                        Framing::Length(_) => {
                            return Err(Error::Request("body shorter than its content-length"));
                        }
                        Framing::Chunked => self.write.extend_from_slice(b"0\r\n\r\n"),
                    }
                    *upload = None;
                }
            }
        }
    }

    /// Reads more bytes into the buffer: `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Error>> {
        if self.read.capacity() - self.read.len() < READ_RESERVE / 2 {
            self.read.reserve(READ_RESERVE);
        }
        match ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.read
        )) {
            Ok(0) => {
                self.peer_closed = true;
                self.broken = true;
                Poll::Ready(Ok(0))
            }
            Ok(n) => Poll::Ready(Ok(n)),
            Err(e) => Poll::Ready(Err(self.failed(e))),
        }
    }

    fn failed(&mut self, e: std::io::Error) -> Error {
        self.peer_closed = true;
        self.broken = true;
        Error::Io(e)
    }

    fn closed(&mut self) -> Error {
        self.peer_closed = true;
        self.broken = true;
        Error::Closed
    }

    /// Parses a complete response head from the buffer (skipping interim 1xx responses), or
    /// `None` if more bytes are needed.
    fn parse_head(
        &mut self,
        head_request: bool,
    ) -> Result<Option<(http::response::Parts, Decoder)>, Error> {
        loop {
            let mut headers =
                [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut res,
                &self.read,
                &mut headers,
            );
            let len = match parsed {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if self.read.len() <= MAX_HEAD_BYTES => {
                    return Ok(None);
                }
                Ok(httparse::Status::Partial) => {
                    return Err(Error::Protocol("response head too large"));
                }
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(Error::Protocol("too many response headers"));
                }
                // Possibly a folded header line, which Envoy unfolds.
                Err(httparse::Error::HeaderName) => match unfold_obs_fold(&mut self.read) {
                    Unfold::Unfolded => continue,
                    Unfold::Incomplete if self.read.len() <= MAX_HEAD_BYTES => return Ok(None),
                    Unfold::Incomplete => {
                        return Err(Error::Protocol("response head too large"));
                    }
                    Unfold::NotFolded => {
                        return Err(Error::Protocol("malformed response head"));
                    }
                },
                Err(_) => return Err(Error::Protocol("malformed response head")),
            };
            if len > MAX_HEAD_BYTES {
                return Err(Error::Protocol("response head too large"));
            }
            let code = res.code.unwrap_or(0);
            let version = if res.version == Some(1) {
                Version::HTTP_11
            } else {
                Version::HTTP_10
            };
            let base = self.read.as_ptr() as usize;
            self.spans.clear();
            let mut framing = FramingHeaders::default();
            for h in res.headers.iter() {
                framing.add(h.name, h.value);
                self.spans.push(HeaderSpan::of(h, base));
            }
            let status =
                StatusCode::from_u16(code).map_err(|_| Error::Protocol("invalid status code"))?;
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Error::Protocol("unexpected 101 Switching Protocols"));
            }
            let head = self.read.split_to(len).freeze();
            if status.is_informational() {
                // 100 Continue and other interim responses: the final one follows.
                continue;
            }
            // Room for what the router adds: `x-envoy-upstream-service-time`, `server`.
            let (map, _) = header_map(&head, &self.spans, 2)
                .ok_or(Error::Protocol("invalid header name or value"))?;
            self.keep_alive = framing.keep_alive(version);
            let decoder = framing.decoder(head_request, status)?;
            if matches!(decoder, Decoder::Eof(_)) {
                self.keep_alive = false;
            }
            let (mut parts, ()) = http::Response::new(()).into_parts();
            parts.status = status;
            // The response goes downstream as the proxy's own HTTP/1.1 (or HTTP/2), whatever
            // version the upstream spoke: Envoy answers `HTTP/1.1` to an HTTP/1.0 upstream too.
            parts.version = Version::HTTP_11;
            parts.headers = map;
            return Ok(Some((parts, decoder)));
        }
    }
}

/// Writes the request line and headers; returns the body's framing (`None`: no body).
fn encode_head(
    out: &mut Vec<u8>,
    parts: &mut http::request::Parts,
    body: &ProxyBody,
) -> Result<Option<Framing>, Error> {
    let headers = &mut parts.headers;
    let framing = if body.is_end_stream() {
        headers.remove(header::TRANSFER_ENCODING);
        None
    } else if headers.contains_key(header::TRANSFER_ENCODING) {
        Some(Framing::Chunked)
    } else if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let len = len
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or(Error::Request("invalid content-length"))?;
        Some(Framing::Length(len))
    } else if let Some(len) = body.size_hint().exact() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        Some(Framing::Length(len))
    } else {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        Some(Framing::Chunked)
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers.iter() {
        write_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(framing)
}

/// Writes one `name: value` header line (both codecs write heads this way).
pub(super) fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Frames one chunk of body data.
pub(super) fn encode_data(
    out: &mut Vec<u8>,
    framing: &mut Framing,
    data: &Bytes,
) -> Result<(), Error> {
    if data.is_empty() {
        return Ok(());
    }
    match framing {
        Framing::Length(left) => {
            let n = data.len() as u64;
            if n > *left {
                return Err(Error::Request("body longer than its content-length"));
            }
            *left -= n;
            out.extend_from_slice(data);
        }
        Framing::Chunked => {
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{:x}\r\n", data.len());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
    }
    Ok(())
}

/// What a response's framing headers (`connection`, `transfer-encoding`, `content-length`)
/// say, gathered from the raw head as it is parsed: no header-map lookups.
#[derive(Debug, Default)]
pub(super) struct FramingHeaders {
    close: bool,
    keep_alive: bool,
    /// `transfer-encoding` is present; `Some(true)`: it is exactly `chunked` (the only coding
    /// Envoy's codec accepts).
    chunked: Option<bool>,
    /// The `content-length` (all values equal).
    length: Option<u64>,
    /// A `content-length` value that is not a number, or values that differ.
    bad_length: Option<&'static str>,
}

impl FramingHeaders {
    /// Takes one header line into account.
    pub(super) fn add(&mut self, name: &str, value: &[u8]) {
        match name.len() {
            10 if name.eq_ignore_ascii_case("connection") => {
                for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    self.close |= token.eq_ignore_ascii_case(b"close");
                    self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            14 if name.eq_ignore_ascii_case("content-length") => {
                for part in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    let n = std::str::from_utf8(part)
                        .ok()
                        .filter(|p| !p.starts_with('+'))
                        .and_then(|p| p.parse::<u64>().ok());
                    match (n, self.length) {
                        (None, _) => self.bad_length = Some("invalid content-length"),
                        (Some(n), Some(l)) if n != l => {
                            self.bad_length = Some("conflicting content-length values");
                        }
                        (Some(n), _) => self.length = Some(n),
                    }
                }
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                let chunked = value.trim_ascii().eq_ignore_ascii_case(b"chunked");
                self.chunked = Some(self.chunked.is_none() && chunked);
            }
            _ => {}
        }
    }

    /// Whether the connection stays open after this message.
    pub(super) fn keep_alive(&self, version: Version) -> bool {
        if version == Version::HTTP_11 {
            !self.close
        } else {
            self.keep_alive && !self.close
        }
    }

    /// How the response body is delimited (RFC 9112 section 6.3), with Envoy's stricter rules:
    /// a `transfer-encoding` other than exactly `chunked`, or one together with a
    /// `content-length`, is a protocol error (RFC 9112 would read the body to the end of the
    /// connection, or let `chunked` win), and so is a 204 with a non-zero `content-length` or
    /// any `transfer-encoding` (RFC 9112 would ignore them).
    fn decoder(&self, head_request: bool, status: StatusCode) -> Result<Decoder, Error> {
        // A 204 has no body: Envoy refuses one that announces a length or a coding.
        if status == StatusCode::NO_CONTENT
            && (self.chunked.is_some()
                || self.bad_length.is_some()
                || self.length.is_some_and(|n| n != 0))
        {
            return Err(Error::Protocol(
                "204 with a content-length or transfer-encoding",
            ));
        }
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok(Decoder::Length(0));
        }
        match self.chunked {
            Some(_) if self.length.is_some() || self.bad_length.is_some() => {
                return Err(Error::Protocol("both content-length and transfer-encoding"));
            }
            Some(true) => return Ok(Decoder::Chunked(ChunkState::Size)),
            Some(false) => return Err(Error::Protocol("transfer-encoding other than chunked")),
            None => {}
        }
        if let Some(why) = self.bad_length {
            return Err(Error::Protocol(why));
        }
        Ok(match self.length {
            Some(n) => Decoder::Length(n),
            None => Decoder::Eof(false),
        })
    }
}

/// Advances a chunked decoder over the buffered bytes `read` (consuming what it decodes): a
/// frame, or `None` when more bytes are needed (or the body ended: the state is `Done`). Used
/// for upstream responses and downstream requests alike.
pub(super) fn decode_chunked(
    read: &mut BytesMut,
    state: &mut ChunkState,
) -> Result<Option<Frame<Bytes>>, Error> {
    loop {
        match *state {
            ChunkState::Done => return Ok(None),
            ChunkState::Size => match httparse::parse_chunk_size(read) {
                Ok(httparse::Status::Complete((used, size))) => {
                    read.advance(used);
                    *state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                Ok(httparse::Status::Partial) if read.len() <= MAX_CHUNK_LINE => {
                    return Ok(None);
                }
                _ => return Err(Error::Protocol("invalid chunk size line")),
            },
            ChunkState::Data(left) => {
                if read.is_empty() {
                    return Ok(None);
                }
                let n = left.min(read.len() as u64) as usize;
                *state = if left == n as u64 {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(left - n as u64)
                };
                return Ok(Some(Frame::data(read.split_to(n).freeze())));
            }
            ChunkState::DataEnd => {
                if read.len() < 2 {
                    return Ok(None);
                }
                if &read[..2] != b"\r\n" {
                    return Err(Error::Protocol("chunk data not followed by CRLF"));
                }
                read.advance(2);
                *state = ChunkState::Size;
            }
            ChunkState::Trailers => {
                if read.starts_with(b"\r\n") {
                    read.advance(2);
                    *state = ChunkState::Done;
                    return Ok(None);
                }
                let Some(end) = find(read, b"\r\n\r\n") else {
                    if read.len() > MAX_HEAD_BYTES {
                        return Err(Error::Protocol("trailers too large"));
                    }
                    return Ok(None);
                };
                let block = read.split_to(end + 4).freeze();
                *state = ChunkState::Done;
                return Ok(Some(Frame::trailers(parse_trailers(&block)?)));
            }
        }
    }
}

/// How a request body is delimited (RFC 9112 section 6.3), with the rules of Envoy's codec:
/// a `transfer-encoding` other than exactly `chunked`, one together with a `content-length`, and
/// an invalid or conflicting `content-length` are errors (Envoy answers 400).
pub(super) fn request_body_framing(
    framing: &FramingHeaders,
) -> Result<Option<Framing>, &'static str> {
    match framing.chunked {
        Some(_) if framing.length.is_some() || framing.bad_length.is_some() => {
            Err("both content-length and transfer-encoding")
        }
        Some(true) => Ok(Some(Framing::Chunked)),
        Some(false) => Err("transfer-encoding other than chunked"),
        None => match (framing.bad_length, framing.length) {
            (Some(why), _) => Err(why),
            (None, Some(0) | None) => Ok(None),
            (None, Some(n)) => Ok(Some(Framing::Length(n))),
        },
    }
}

/// Parses a trailer section (ending with an empty line).
fn parse_trailers(block: &Bytes) -> Result<HeaderMap, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let parsed = httparse::parse_headers(block, &mut headers)
        .map_err(|_| Error::Protocol("malformed trailers"))?;
    let httparse::Status::Complete((_, fields)) = parsed else {
        return Err(Error::Protocol("malformed trailers"));
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for h in fields {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| Error::Protocol("invalid trailer name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| Error::Protocol("invalid trailer value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests;
