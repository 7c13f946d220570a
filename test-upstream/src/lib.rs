//! A small HTTP/1.1 + h2c upstream server for Legate's tests and demo.
//!
//! Every request is answered by a [`Behaviour`]; the default one ([`Echo`])
//! replies `200` with an `x-upstream-instance: <name>` header and a JSON body
//! describing the request as received:
//!
//! ```json
//! {"instance": "a", "method": "GET", "path": "/x?y=1", "host": "svc",
//!  "version": "HTTP/1.1", "headers": {"user-agent": "…"}}
//! ```
//!
//! A request header `x-fault-status: <code>` makes [`Echo`] answer with that
//! status instead (same body).
//!
//! The listener auto-detects HTTP/1.1 and HTTP/2 with prior knowledge (h2c).

mod behaviour;
mod request;
mod server;

pub use behaviour::{Action, Behaviour, Echo, FAULT_STATUS_HEADER};
pub use request::RequestInfo;
pub use server::{INSTANCE_HEADER, Upstream};
