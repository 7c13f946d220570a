//! How the upstream answers requests.
//!
//! A [`Behaviour`] looks at a [`RequestInfo`] and returns an [`Action`]; the
//! server carries the action out. Scripted faults (status sequences, delays,
//! resets, slow bodies, gRPC statuses, per-request-id attempt counting) are
//! meant to be added as new `Action` variants and new `Behaviour`
//! implementations.

use http::StatusCode;

use crate::request::RequestInfo;

/// Request header that makes [`Echo`] answer with the given status code.
pub const FAULT_STATUS_HEADER: &str = "x-fault-status";

/// What the server should do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Answer with this status, the `x-upstream-instance` header and the JSON
    /// echo body.
    Respond {
        /// Response status.
        status: StatusCode,
    },
}

/// Decides how to answer each request. Implementations must be cheap and
/// non-blocking; anything slow belongs in an [`Action`].
pub trait Behaviour: Send + Sync + 'static {
    /// Chooses the action for one request.
    fn decide(&self, req: &RequestInfo) -> Action;
}

/// The default behaviour: `200`, unless the request carries a valid
/// `x-fault-status` header, in which case that status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Behaviour for Echo {
    fn decide(&self, req: &RequestInfo) -> Action {
        let status = req
            .header(FAULT_STATUS_HEADER)
            .and_then(|v| v.trim().parse::<u16>().ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or(StatusCode::OK);
        Action::Respond { status }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(fault: Option<&str>) -> RequestInfo {
        let mut b = http::Request::builder().uri("/");
        if let Some(f) = fault {
            b = b.header(FAULT_STATUS_HEADER, f);
        }
        let (parts, ()) = b.body(()).expect("request").into_parts();
        RequestInfo::from_parts(&parts, 1)
    }

    #[test]
    fn echo_statuses() {
        assert_eq!(
            Echo.decide(&info(None)),
            Action::Respond {
                status: StatusCode::OK
            }
        );
        assert_eq!(
            Echo.decide(&info(Some("503"))),
            Action::Respond {
                status: StatusCode::SERVICE_UNAVAILABLE
            }
        );
        // Garbage is ignored rather than turned into an error.
        assert_eq!(
            Echo.decide(&info(Some("nope"))),
            Action::Respond {
                status: StatusCode::OK
            }
        );
        assert_eq!(
            Echo.decide(&info(Some("42"))),
            Action::Respond {
                status: StatusCode::OK
            }
        );
    }
}
