//! The request path: listener → route → cluster → load balancer → pool → upstream.

pub mod admission;
pub mod body;
pub mod conn_limits;
pub mod h2_server;
pub mod headers;
pub mod http1;
pub mod http1_server;
pub mod internal;
pub mod io_stats;
pub mod listener;
pub mod local_reply;
pub mod pool;
pub mod replay;
pub mod router;
pub mod stream_timeout;
pub mod workers;
