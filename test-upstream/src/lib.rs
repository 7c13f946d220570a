//! A small, scriptable HTTP/1.1 + h2c (or, with TLS, h2 and HTTP/1.1 over
//! rustls) upstream (fault injector) for Legate's tests, demo and benchmarks.
//!
//! The listener auto-detects HTTP/1.1 and HTTP/2 with prior knowledge (h2c)
//! on one port. Every request is answered by a [`Behaviour`]; the default one
//! ([`Echo`]) replies `200` with an `x-upstream-instance: <name>` header and a
//! JSON body describing the request as received:
//!
//! ```json
//! {"instance": "a", "method": "GET", "path": "/x?y=1", "host": "svc",
//!  "version": "HTTP/1.1", "headers": {"user-agent": "…"}, "attempt": 1}
//! ```
//!
//! # Attempts
//!
//! A request's id is its `x-test-id` header, else its `x-request-id` (which
//! Envoy and legate-proxy set and keep across retries). Each instance records
//! every request that has an id in an [`AttemptLog`]: which instance got it,
//! when, and what it did ([`Outcome`]). The `attempt` number (in the JSON and
//! in [`RequestInfo::attempt`]) is 1 + the number of earlier attempts of the
//! id **in that log**: by default each instance has its own log, so attempts
//! count per instance; instances started with [`Upstream::start_group`] or
//! given the same log via [`UpstreamBuilder::log`] count across the group, so
//! "fail twice then succeed" holds whichever hosts the retries land on.
//! Requests without an id are always attempt 1 and are not logged.
//!
//! # Fault headers
//!
//! | header | effect |
//! |---|---|
//! | `x-fault-status: 503` | answer with that status (same JSON body) |
//! | `x-fault-sequence: 503,503,200` | attempt N gets the Nth status; the last repeats |
//! | `x-fault-delay-ms: 300` | wait before the response headers |
//! | `x-fault-delay-sequence: 2000,0` | per-attempt delay |
//! | `x-fault-reset: before-headers` | no response: HTTP/1.1 closes the connection, h2 resets the stream |
//! | `x-fault-reset: after-headers` | send the headers, then abort the body |
//! | `x-fault-reset-sequence: before-headers,none` | per-attempt reset |
//! | `x-fault-body-delay-ms: N`, `x-fault-body-chunks: K` | body in K chunks (default 2) with N ms between them |
//! | `x-fault-grpc-status: 14` | HTTP 200, `content-type: application/grpc`, `grpc-status` in trailers |
//! | `x-fault-grpc-status-in-headers: 1` | trailers-only gRPC response (status in the headers) |
//! | `x-fault-grpc-status-sequence: 14,0` | per-attempt gRPC status |
//!
//! For each aspect the `-sequence` header wins over the single-value header,
//! which wins over the instance's [`FaultConfig`]. Malformed headers (or a
//! sequence with any malformed entry) are ignored. A delay applies before a
//! `before-headers` reset too. With `after-headers` and a slow body, all
//! chunks but the last are sent before the abort. A gRPC status `0` carries
//! the JSON echo as one length-prefixed gRPC message; other statuses have an
//! empty body and a `grpc-message`. HTTP/1.1 clients only get trailers if they
//! send `te: trailers`.
//!
//! # Instance defaults and fast mode
//!
//! [`FaultConfig`] (also the `legate-upstream` flags `--fail-rate`,
//! `--fail-status`, `--seed`, `--delay-ms`, `--static-body`) makes an instance
//! flaky or slow without headers, or — with `static_body` — answers every
//! request `200` with a fixed `text/plain` body and nothing else, for
//! benchmarks.
//!
//! # TLS
//!
//! [`UpstreamBuilder::tls`] (flags `--tls-cert`, `--tls-key`, `--client-ca`)
//! terminates TLS with rustls: ALPN `h2` and `http/1.1`, TLS 1.2 and 1.3, and,
//! with a client CA, client certificates from that CA required (a client
//! without one fails the handshake, counted in
//! [`Stats::tls_handshake_errors`]). Every response on a TLS connection
//! carries [`CLIENT_SERIAL_HEADER`] (the serial of the client certificate the
//! connection was made with), [`TLS_VERSION_HEADER`] and [`TLS_ALPN_HEADER`];
//! [`Upstream::client_serials`] counts connections per serial.
//! [`UpstreamBuilder::close_after_response`] (`--close-after-response`)
//! closes each connection after its first response, so that every request
//! is a new connection (and handshake).

mod behaviour;
mod body;
mod fault;
mod log;
mod request;
mod server;
mod tls;

pub use behaviour::{
    Action, Behaviour, DEFAULT_SLOW_BODY_CHUNKS, Echo, FAULT_BODY_CHUNKS_HEADER,
    FAULT_BODY_DELAY_HEADER, FAULT_DELAY_HEADER, FAULT_DELAY_SEQUENCE_HEADER,
    FAULT_GRPC_IN_HEADERS_HEADER, FAULT_GRPC_STATUS_HEADER, FAULT_GRPC_STATUS_SEQUENCE_HEADER,
    FAULT_RESET_HEADER, FAULT_RESET_SEQUENCE_HEADER, FAULT_SEQUENCE_HEADER, FAULT_STATUS_HEADER,
    GrpcFault, MAX_SLOW_BODY_CHUNKS, Plan, ResetKind, SlowBody,
};
pub use fault::FaultConfig;
pub use log::{Attempt, AttemptLog, DEFAULT_LOG_CAPACITY, Outcome};
pub use request::{REQUEST_ID_HEADER, RequestInfo, TEST_ID_HEADER};
pub use server::{INSTANCE_HEADER, Stats, Upstream, UpstreamBuilder, dead_addr};
pub use tls::{
    CLIENT_SERIAL_HEADER, TLS_ALPN_HEADER, TLS_VERSION_HEADER, TlsSettings, certificate_serial,
    pem_file_serial,
};
