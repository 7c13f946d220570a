//! What the upstream saw of one request.

use std::collections::BTreeMap;

use http::request::Parts;

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
        RequestInfo {
            method: parts.method.as_str().to_owned(),
            path,
            host,
            version: format!("{:?}", parts.version),
            headers,
            seq,
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
