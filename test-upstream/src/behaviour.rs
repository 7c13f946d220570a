//! How the upstream answers requests.
//!
//! A [`Behaviour`] looks at a [`RequestInfo`] and returns an [`Action`]; the
//! server carries the action out. [`Echo`] (and [`FaultConfig`], which adds
//! per-instance defaults) builds a [`Plan`] from the `x-fault-*` request
//! headers; see the crate docs for the header reference.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use crate::fault::FaultConfig;
use crate::request::RequestInfo;

/// Request header: answer with this status (`x-fault-status: 503`).
pub const FAULT_STATUS_HEADER: &str = "x-fault-status";
/// Request header: per-attempt statuses (`x-fault-sequence: 503,503,200`);
/// attempt N gets the Nth entry, the last one repeats.
pub const FAULT_SEQUENCE_HEADER: &str = "x-fault-sequence";
/// Request header: wait this many milliseconds before the response headers.
pub const FAULT_DELAY_HEADER: &str = "x-fault-delay-ms";
/// Request header: per-attempt delays in milliseconds (`2000,0`).
pub const FAULT_DELAY_SEQUENCE_HEADER: &str = "x-fault-delay-sequence";
/// Request header: `before-headers`, `after-headers` or `none`.
pub const FAULT_RESET_HEADER: &str = "x-fault-reset";
/// Request header: per-attempt resets (`before-headers,none`).
pub const FAULT_RESET_SEQUENCE_HEADER: &str = "x-fault-reset-sequence";
/// Request header: milliseconds between body chunks (slow body).
pub const FAULT_BODY_DELAY_HEADER: &str = "x-fault-body-delay-ms";
/// Request header: number of body chunks (slow body).
pub const FAULT_BODY_CHUNKS_HEADER: &str = "x-fault-body-chunks";
/// Request header: answer as gRPC with this `grpc-status`.
pub const FAULT_GRPC_STATUS_HEADER: &str = "x-fault-grpc-status";
/// Request header: per-attempt gRPC statuses (`14,0`).
pub const FAULT_GRPC_STATUS_SEQUENCE_HEADER: &str = "x-fault-grpc-status-sequence";
/// Request header: `1` (or `true`) sends the gRPC status as a trailers-only
/// response (in the headers) instead of in trailers.
pub const FAULT_GRPC_IN_HEADERS_HEADER: &str = "x-fault-grpc-status-in-headers";

/// Number of chunks of a slow body when only [`FAULT_BODY_DELAY_HEADER`] is given.
pub const DEFAULT_SLOW_BODY_CHUNKS: u32 = 2;
/// Upper bound on [`SlowBody::chunks`] taken from a header.
pub const MAX_SLOW_BODY_CHUNKS: u32 = 10_000;

/// What the server should do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Answer with this status, the `x-upstream-instance` header and the JSON
    /// echo body. Same as `Action::Plan(Plan::new(status))`.
    Respond {
        /// Response status.
        status: StatusCode,
    },
    /// Carry out a (possibly faulty) plan.
    Plan(Plan),
}

/// How to answer one request: the JSON echo body (or a gRPC response) with
/// optional delay, reset and slow-body faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// HTTP status (ignored for gRPC responses, which are always `200`).
    pub status: StatusCode,
    /// Wait this long before sending the response headers (or resetting).
    pub delay: Duration,
    /// Reset instead of (or in the middle of) answering.
    pub reset: Option<ResetKind>,
    /// Send the body in chunks with pauses.
    pub slow_body: Option<SlowBody>,
    /// Answer as gRPC.
    pub grpc: Option<GrpcFault>,
}

impl Plan {
    /// A plain, immediate answer with `status` and the JSON echo body.
    pub fn new(status: StatusCode) -> Plan {
        Plan {
            status,
            delay: Duration::ZERO,
            reset: None,
            slow_body: None,
            grpc: None,
        }
    }
}

impl Default for Plan {
    fn default() -> Self {
        Plan::new(StatusCode::OK)
    }
}

/// How a response is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResetKind {
    /// No response at all: HTTP/1.1 closes the connection, HTTP/2 resets the
    /// stream (`RST_STREAM` `INTERNAL_ERROR`).
    BeforeHeaders,
    /// Response headers are sent, then the body is aborted (HTTP/1.1: the
    /// connection is closed mid-body; HTTP/2: `RST_STREAM`). With a
    /// [`SlowBody`], all chunks but the last are sent first; otherwise no body
    /// bytes are.
    AfterHeaders,
}

impl ResetKind {
    /// The header spelling: `before-headers` or `after-headers`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetKind::BeforeHeaders => "before-headers",
            ResetKind::AfterHeaders => "after-headers",
        }
    }
}

/// A body sent as `chunks` pieces with `interval` between consecutive pieces
/// (so it takes at least `(chunks - 1) * interval` after the headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowBody {
    /// Number of pieces (at least 1; capped at the body length in bytes).
    pub chunks: u32,
    /// Pause between consecutive pieces.
    pub interval: Duration,
}

/// A gRPC answer: HTTP `200`, `content-type: application/grpc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcFault {
    /// The `grpc-status` code. For `0` the body carries one gRPC message (the
    /// JSON echo, length-prefixed); otherwise the body is empty and a
    /// `grpc-message` is sent as well.
    pub status: u32,
    /// Trailers-only response: `grpc-status` in the headers, no body, no
    /// trailers.
    pub in_headers: bool,
}

/// Decides how to answer each request. Implementations must be cheap and
/// non-blocking; anything slow belongs in an [`Action`].
pub trait Behaviour: Send + Sync + 'static {
    /// Chooses the action for one request.
    fn decide(&self, req: &RequestInfo) -> Action;

    /// Fast mode: if this returns a body, the server answers every request
    /// `200` with exactly that body and `content-type: text/plain`, without
    /// calling [`Behaviour::decide`] or logging attempts. Read once when the
    /// server starts.
    fn static_body(&self) -> Option<Bytes> {
        None
    }
}

/// The default behaviour: `200` with the JSON echo body, unless `x-fault-*`
/// request headers script something else. Same as
/// [`FaultConfig::default()`](FaultConfig).
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Behaviour for Echo {
    fn decide(&self, req: &RequestInfo) -> Action {
        Action::Plan(header_plan(req, &FaultConfig::DEFAULT))
    }
}

/// Builds the plan for `req` from its fault headers, falling back to the
/// instance defaults in `config` (its `static_body` is not looked at here).
///
/// For each aspect the `-sequence` header wins over the single-value header,
/// which wins over the instance default. Malformed headers are ignored.
pub(crate) fn header_plan(req: &RequestInfo, config: &FaultConfig) -> Plan {
    let attempt = req.attempt;
    let status = sequence(req, FAULT_SEQUENCE_HEADER, attempt, parse_status)
        .or_else(|| single(req, FAULT_STATUS_HEADER, parse_status))
        .unwrap_or_else(|| {
            if config.fails(req.seq) {
                config.fail_status
            } else {
                StatusCode::OK
            }
        });
    let delay = sequence(req, FAULT_DELAY_SEQUENCE_HEADER, attempt, parse_millis)
        .or_else(|| single(req, FAULT_DELAY_HEADER, parse_millis))
        .unwrap_or(config.delay);
    let reset = sequence(req, FAULT_RESET_SEQUENCE_HEADER, attempt, parse_reset)
        .or_else(|| single(req, FAULT_RESET_HEADER, parse_reset))
        .flatten();
    let body_delay = single(req, FAULT_BODY_DELAY_HEADER, parse_millis);
    let body_chunks = single(req, FAULT_BODY_CHUNKS_HEADER, |v| {
        v.parse::<u32>().ok().filter(|n| *n >= 1)
    });
    let slow_body = match (body_delay, body_chunks) {
        (None, None) => None,
        (interval, chunks) => Some(SlowBody {
            chunks: chunks
                .unwrap_or(DEFAULT_SLOW_BODY_CHUNKS)
                .min(MAX_SLOW_BODY_CHUNKS),
            interval: interval.unwrap_or(Duration::ZERO),
        }),
    };
    let grpc_status = sequence(req, FAULT_GRPC_STATUS_SEQUENCE_HEADER, attempt, parse_grpc)
        .or_else(|| single(req, FAULT_GRPC_STATUS_HEADER, parse_grpc));
    let grpc = grpc_status.map(|status| GrpcFault {
        status,
        in_headers: req
            .header(FAULT_GRPC_IN_HEADERS_HEADER)
            .is_some_and(|v| matches!(v.trim(), "1" | "true")),
    });
    Plan {
        status,
        delay,
        reset,
        slow_body,
        grpc,
    }
}

/// Parses a single-value header.
fn single<T>(req: &RequestInfo, name: &str, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
    req.header(name).and_then(|v| parse(v.trim()))
}

/// Picks the entry for `attempt` (1-based; the last entry repeats) from a
/// comma-separated header. The whole header is ignored if any entry is bad.
fn sequence<T: Clone>(
    req: &RequestInfo,
    name: &str,
    attempt: u32,
    parse: impl Fn(&str) -> Option<T>,
) -> Option<T> {
    let values = parse_sequence(req.header(name)?, parse)?;
    let index = usize::try_from(attempt.saturating_sub(1))
        .unwrap_or(usize::MAX)
        .min(values.len() - 1);
    values.get(index).cloned()
}

/// Parses `a,b,c` into a non-empty list.
fn parse_sequence<T>(value: &str, parse: impl Fn(&str) -> Option<T>) -> Option<Vec<T>> {
    let values = value
        .split(',')
        .map(|v| parse(v.trim()))
        .collect::<Option<Vec<T>>>()?;
    (!values.is_empty()).then_some(values)
}

fn parse_status(v: &str) -> Option<StatusCode> {
    v.parse::<u16>()
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
}

fn parse_millis(v: &str) -> Option<Duration> {
    v.parse::<u64>().ok().map(Duration::from_millis)
}

fn parse_grpc(v: &str) -> Option<u32> {
    v.parse::<u32>().ok()
}

/// `Some(None)` for `none`, so a sequence can say "no reset on this attempt".
fn parse_reset(v: &str) -> Option<Option<ResetKind>> {
    match v.to_ascii_lowercase().as_str() {
        "before-headers" => Some(Some(ResetKind::BeforeHeaders)),
        "after-headers" => Some(Some(ResetKind::AfterHeaders)),
        "none" => Some(None),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(headers: &[(&str, &str)], attempt: u32) -> RequestInfo {
        let mut b = http::Request::builder().uri("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (parts, ()) = b.body(()).expect("request").into_parts();
        let mut info = RequestInfo::from_parts(&parts, 1);
        info.attempt = attempt;
        info
    }

    fn plan(headers: &[(&str, &str)], attempt: u32) -> Plan {
        match Echo.decide(&info(headers, attempt)) {
            Action::Plan(p) => p,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn echo_statuses() {
        assert_eq!(plan(&[], 1), Plan::new(StatusCode::OK));
        assert_eq!(
            plan(&[(FAULT_STATUS_HEADER, "503")], 1),
            Plan::new(StatusCode::SERVICE_UNAVAILABLE)
        );
        // Garbage is ignored rather than turned into an error.
        assert_eq!(plan(&[(FAULT_STATUS_HEADER, "nope")], 1).status, 200);
        assert_eq!(plan(&[(FAULT_STATUS_HEADER, "42")], 1).status, 200);
    }

    #[test]
    fn status_sequence_by_attempt() {
        let h = [(FAULT_SEQUENCE_HEADER, "503, 502,200")];
        let statuses: Vec<u16> = (1..=5).map(|a| plan(&h, a).status.as_u16()).collect();
        assert_eq!(statuses, [503, 502, 200, 200, 200]);
        // The sequence wins over the single value.
        let h = [(FAULT_SEQUENCE_HEADER, "500"), (FAULT_STATUS_HEADER, "404")];
        assert_eq!(plan(&h, 1).status, 500);
        // A bad entry disables the whole sequence.
        let h = [
            (FAULT_SEQUENCE_HEADER, "503,x"),
            (FAULT_STATUS_HEADER, "404"),
        ];
        assert_eq!(plan(&h, 1).status, 404);
    }

    #[test]
    fn delays_resets_and_slow_body() {
        let p = plan(&[(FAULT_DELAY_HEADER, "300")], 1);
        assert_eq!(p.delay, Duration::from_millis(300));
        let h = [(FAULT_DELAY_SEQUENCE_HEADER, "2000,0")];
        assert_eq!(plan(&h, 1).delay, Duration::from_secs(2));
        assert_eq!(plan(&h, 2).delay, Duration::ZERO);

        let h = [(FAULT_RESET_HEADER, "after-headers")];
        assert_eq!(plan(&h, 1).reset, Some(ResetKind::AfterHeaders));
        let h = [(FAULT_RESET_SEQUENCE_HEADER, "Before-Headers,none")];
        assert_eq!(plan(&h, 1).reset, Some(ResetKind::BeforeHeaders));
        assert_eq!(plan(&h, 2).reset, None);
        assert_eq!(plan(&[(FAULT_RESET_HEADER, "bogus")], 1).reset, None);

        let h = [
            (FAULT_BODY_DELAY_HEADER, "50"),
            (FAULT_BODY_CHUNKS_HEADER, "4"),
        ];
        assert_eq!(
            plan(&h, 1).slow_body,
            Some(SlowBody {
                chunks: 4,
                interval: Duration::from_millis(50)
            })
        );
        let h = [(FAULT_BODY_DELAY_HEADER, "50")];
        assert_eq!(
            plan(&h, 1).slow_body.map(|s| s.chunks),
            Some(DEFAULT_SLOW_BODY_CHUNKS)
        );
        assert_eq!(plan(&[(FAULT_BODY_CHUNKS_HEADER, "0")], 1).slow_body, None);
    }

    #[test]
    fn grpc_statuses() {
        assert_eq!(plan(&[], 1).grpc, None);
        let h = [(FAULT_GRPC_STATUS_HEADER, "14")];
        assert_eq!(
            plan(&h, 1).grpc,
            Some(GrpcFault {
                status: 14,
                in_headers: false
            })
        );
        let h = [
            (FAULT_GRPC_STATUS_SEQUENCE_HEADER, "14,0"),
            (FAULT_GRPC_IN_HEADERS_HEADER, "1"),
        ];
        assert_eq!(
            plan(&h, 1).grpc,
            Some(GrpcFault {
                status: 14,
                in_headers: true
            })
        );
        assert_eq!(plan(&h, 2).grpc.map(|g| g.status), Some(0));
    }
}
