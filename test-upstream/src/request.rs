//! What the upstream saw of one request.

use std::collections::BTreeMap;

use http::request::Parts;

/// Request header naming the id attempts are counted by; preferred over
/// [`REQUEST_ID_HEADER`].
pub const TEST_ID_HEADER: &str = "x-test-id";

/// Request header set by Envoy and legate-proxy and kept across retries; the
/// attempt id when [`TEST_ID_HEADER`] is absent.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The parts of a received request that behaviours look at and that the echo
/// body reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// Request method, e.g. `GET`.
    pub method: String,
    /// Path and query exactly as received (`/` if the request had none).
    pub path: String,
    /// The `Host` header, or else the URI authority (`:authority` for h2).
    pub host: String,
    /// Protocol version as hyper reports it, e.g. `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Headers by lowercase name; repeated headers are joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// 1-based sequence number of this request on this upstream.
    pub seq: u64,
    /// The id attempts are counted by: the `x-test-id` header if present and
    /// non-empty, else `x-request-id` (which Envoy and legate-proxy set and
    /// keep across retries), else `None`.
    pub request_id: Option<String>,
    /// 1-based attempt number of this request id in the upstream's
    /// [`AttemptLog`](crate::AttemptLog) (per instance by default, across
    /// instances when they share a log). Always `1` for requests without an
    /// id. [`RequestInfo::from_parts`] sets `1`; the server fills in the real
    /// number before calling [`Behaviour::decide`](crate::Behaviour::decide).
    pub attempt: u32,
}

impl RequestInfo {
    /// Extracts the request description from hyper request parts.
    pub fn from_parts(parts: &Parts, seq: u64) -> RequestInfo {
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in &parts.headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        let host = headers
            .get("host")
            .cloned()
            .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()))
            .unwrap_or_default();
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
        let request_id = [TEST_ID_HEADER, REQUEST_ID_HEADER]
            .iter()
            .filter_map(|name| headers.get(*name))
            .find(|v| !v.is_empty())
            .cloned();
        RequestInfo {
            method: parts.method.as_str().to_owned(),
            path,
            host,
            version: format!("{:?}", parts.version),
            headers,
            seq,
            request_id,
            attempt: 1,
        }
    }

    /// The value of a header (by lowercase name), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The JSON echo body for this request as served by `instance`.
    pub fn echo_json(&self, instance: &str) -> serde_json::Value {
        serde_json::json!({
            "instance": instance,
            "method": self.method,
            "path": self.path,
            "host": self.host,
            "version": self.version,
            "headers": self.headers,
            "attempt": self.attempt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_repeated_headers_and_prefers_host_header() {
        let req = http::Request::builder()
            .uri("http://authority.example/a/b?c=d")
            .header("Host", "host.example")
            .header("X-Multi", "1")
            .header("x-multi", "2")
            .body(())
            .expect("request");
        let (parts, ()) = req.into_parts();
        let info = RequestInfo::from_parts(&parts, 7);
        assert_eq!(info.path, "/a/b?c=d");
        assert_eq!(info.host, "host.example");
        assert_eq!(info.header("x-multi"), Some("1, 2"));
        assert_eq!(info.seq, 7);
        let json = info.echo_json("i");
        assert_eq!(json["instance"], "i");
        assert_eq!(json["headers"]["x-multi"], "1, 2");
        assert_eq!(json["attempt"], 1);
        assert_eq!(info.request_id, None);
    }

    #[test]
    fn prefers_test_id_over_request_id() {
        let parts = |headers: &[(&str, &str)]| {
            let mut b = http::Request::builder().uri("/");
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).expect("request").into_parts().0
        };
        let id = |h: &[(&str, &str)]| RequestInfo::from_parts(&parts(h), 1).request_id;
        assert_eq!(id(&[("x-request-id", "r")]).as_deref(), Some("r"));
        assert_eq!(
            id(&[("x-request-id", "r"), ("x-test-id", "t")]).as_deref(),
            Some("t")
        );
        assert_eq!(
            id(&[("x-request-id", "r"), ("x-test-id", "")]).as_deref(),
            Some("r")
        );
        assert_eq!(id(&[]), None);
    }

    #[test]
    fn falls_back_to_authority() {
        let req = http::Request::builder()
            .uri("http://authority.example/")
            .body(())
            .expect("request");
        let (parts, ()) = req.into_parts();
        assert_eq!(RequestInfo::from_parts(&parts, 1).host, "authority.example");
    }
}
