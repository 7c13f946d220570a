//! Redaction of private material in `/config_dump`, as Envoy's `MessageUtil::redact` does for
//! fields marked `sensitive`: inside them every string becomes `[redacted]` and every bytes
//! field the bytes of `[redacted]` (base64 `W3JlZGFjdGVkXQ==` in JSON); other scalars are
//! dropped. So `private_key: {filename: /k.pem}` shows as `{filename: "[redacted]"}` and
//! `private_key: {inline_bytes: …}` as `{inline_bytes: "W3JlZGFjdGVkXQ=="}`.

use serde_json::Value;

/// `[redacted]`.
pub const REDACTED: &str = "[redacted]";
/// The bytes of `[redacted]`, base64-encoded (how a redacted bytes field shows in JSON).
pub const REDACTED_BYTES: &str = "W3JlZGFjdGVkXQ==";

/// The sensitive fields of the TLS protos (`TlsCertificate.private_key`, `.password`,
/// `.pkcs12`; `TlsSessionTicketKeys.keys`; `GenericSecret.secret`, `.secrets`).
fn sensitive(parent: Option<&str>, key: &str) -> bool {
    match key {
        "private_key" | "password" | "pkcs12" => true,
        "privateKey" => true,
        "keys" => matches!(parent, Some("session_ticket_keys" | "sessionTicketKeys")),
        "secret" | "secrets" => matches!(parent, Some("generic_secret" | "genericSecret")),
        _ => false,
    }
}

/// Redacts every sensitive field in `value` (a config dump, or any Envoy JSON), in place.
pub fn redact_json(value: &mut Value) {
    walk(value, None);
}

fn walk(value: &mut Value, parent: Option<&str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if sensitive(parent, key) {
                    scrub(v, Some(key));
                } else {
                    walk(v, Some(key));
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                walk(v, parent);
            }
        }
        _ => {}
    }
}

/// Everything under a sensitive field.
fn scrub(value: &mut Value, key: Option<&str>) {
    match value {
        Value::String(s) => {
            let bytes = matches!(key, Some("inline_bytes" | "inlineBytes"));
            *s = if bytes { REDACTED_BYTES } else { REDACTED }.to_string();
        }
        Value::Object(map) => {
            map.retain(|_, v| !matches!(v, Value::Number(_) | Value::Bool(_)));
            for (k, v) in map.iter_mut() {
                scrub(v, Some(k));
            }
        }
        Value::Array(items) => {
            for v in items {
                scrub(v, key);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_redacted_like_envoy() {
        let mut v = json!({"configs": [{
            "dynamic_active_secrets": [{"name": "a/cert", "secret": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": "a/cert",
                "tls_certificate": {
                    "certificate_chain": {"inline_bytes": "Q0VSVA=="},
                    "private_key": {"inline_bytes": "S0VZ"}
                }
            }}],
            "static_clusters": [{"cluster": {"transport_socket": {"typed_config": {"common_tls_context": {
                "tls_certificates": [{
                    "certificate_chain": {"filename": "/c.pem"},
                    "private_key": {"filename": "/k.pem"},
                    "password": {"inline_string": "hunter2"}
                }]
            }}}}}],
            "session_ticket_keys": {"keys": [{"inline_bytes": "AAAA"}]}
        }]});
        redact_json(&mut v);
        let s = v.to_string();
        assert!(
            !s.contains("S0VZ")
                && !s.contains("/k.pem")
                && !s.contains("hunter2")
                && !s.contains("AAAA"),
            "{s}"
        );
        assert!(
            s.contains("Q0VSVA==") && s.contains("/c.pem"),
            "certificates stay: {s}"
        );
        let secret = &v["configs"][0]["dynamic_active_secrets"][0]["secret"]["tls_certificate"];
        assert_eq!(
            secret["private_key"],
            json!({"inline_bytes": REDACTED_BYTES})
        );
        let cert = &v["configs"][0]["static_clusters"][0]["cluster"]["transport_socket"]["typed_config"]
            ["common_tls_context"]["tls_certificates"][0];
        assert_eq!(cert["private_key"], json!({"filename": REDACTED}));
        assert_eq!(cert["password"], json!({"inline_string": REDACTED}));
    }
}
