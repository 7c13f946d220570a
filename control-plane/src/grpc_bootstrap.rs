//! `legate-cp bootstrap grpc`: the `GRPC_XDS_BOOTSTRAP` file of a proxyless gRPC application.
//!
//! The node carries `metadata.LEGATE_FLAVOR: grpc`, so the control plane serves it the gRPC
//! flavour whatever its user agent. `node.cluster` is the ambassador whose services the
//! application may call (as for Envoy); `node.id` gets a unique suffix.
//!
//! With `--cert-dir DIR`, the file also declares the `file_watcher` certificate provider
//! `default` over `DIR/<node>.pem`, `DIR/<node>.key` and `DIR/ca.pem` (the layout of
//! `legate-cp certs init --service <node>`). The gRPC flavour's TLS clusters name it (gRFC A29,
//! `translate/grpc/tls.rs`): one instance, the application's own identity and trust, for
//! every TLS service it calls.
//!
//! With `--xds-tls-ca` (and `--xds-tls-cert`/`--xds-tls-key` for mTLS), the xDS server entry's
//! `channel_creds` is `[{"type": "tls", "config": {...}}]` (gRFC A65) instead of `insecure`,
//! for a control plane serving xDS over TLS (`serve --xds-tls-cert ...`). No `insecure`
//! fallback follows it: a client that lacks `tls` fails rather than talk in plaintext.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The certificate provider instance name the bootstrap declares.
pub const CERTIFICATE_PROVIDER: &str = "default";

/// How often gRPC's `file_watcher` re-reads the certificate files.
pub const REFRESH_INTERVAL: &str = "60s";

/// Options of `bootstrap grpc`.
#[derive(Clone, Debug)]
pub struct GrpcBootstrap {
    /// Ambassador name: becomes `node.cluster`, and the prefix of `node.id`.
    pub node: String,
    /// A unique suffix for `node.id`.
    pub id_suffix: String,
    /// The control plane's xDS address as a gRPC target (`host:port`).
    pub xds: String,
    /// Where the application's certificate, key and CA are (see the module docs).
    pub cert_dir: Option<PathBuf>,
    /// TLS towards the control plane (absolute paths); `None` is plaintext.
    pub xds_tls: Option<XdsChannelTls>,
}

/// The files of the `tls` channel credentials towards the control plane (gRFC A65).
#[derive(Clone, Debug)]
pub struct XdsChannelTls {
    /// CA that verifies the control plane's certificate (`ca_certificate_file`).
    pub ca: PathBuf,
    /// Client certificate and key for mTLS (`certificate_file`, `private_key_file`).
    pub client: Option<(PathBuf, PathBuf)>,
}

impl XdsChannelTls {
    /// The `channel_creds` entry.
    fn channel_creds(&self) -> Value {
        let path = |p: &Path| absolute(p).display().to_string();
        let mut config = json!({"ca_certificate_file": path(&self.ca)});
        if let Some((cert, key)) = &self.client {
            config["certificate_file"] = json!(path(cert));
            config["private_key_file"] = json!(path(key));
        }
        config["refresh_interval"] = json!(REFRESH_INTERVAL);
        json!({"type": "tls", "config": config})
    }
}

impl GrpcBootstrap {
    /// The bootstrap JSON.
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "xds_servers": [{
                "server_uri": self.xds,
                "channel_creds": [self.xds_tls.as_ref().map_or_else(
                    || json!({"type": "insecure"}),
                    XdsChannelTls::channel_creds,
                )],
                "server_features": ["xds_v3"],
            }],
            "node": {
                "id": format!("{}-{}", self.node, self.id_suffix),
                "cluster": self.node,
                "metadata": {
                    crate::server::stream::FLAVOR_METADATA_KEY: crate::cache::Flavor::Grpc.as_str(),
                },
                "locality": {},
            },
        });
        if let Some(dir) = &self.cert_dir {
            let file = |name: &str| absolute(&dir.join(name)).display().to_string();
            out["certificate_providers"] = json!({
                CERTIFICATE_PROVIDER: {
                    "plugin_name": "file_watcher",
                    "config": {
                        "certificate_file": file(&format!("{}.pem", self.node)),
                        "private_key_file": file(&format!("{}.key", self.node)),
                        "ca_certificate_file": file("ca.pem"),
                        "refresh_interval": REFRESH_INTERVAL,
                    },
                },
            });
        }
        out
    }
}

/// `path` made absolute against the current directory (gRPC resolves it against the
/// application's, which may differ); unchanged if the current directory is unknown.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap(cert_dir: Option<&str>) -> Value {
        GrpcBootstrap {
            node: "checkout".into(),
            id_suffix: "0000abcd".into(),
            xds: "127.0.0.1:18000".into(),
            cert_dir: cert_dir.map(PathBuf::from),
            xds_tls: None,
        }
        .to_json()
    }

    #[test]
    fn insecure_bootstrap() {
        assert_eq!(
            bootstrap(None),
            json!({
                "xds_servers": [{
                    "server_uri": "127.0.0.1:18000",
                    "channel_creds": [{"type": "insecure"}],
                    "server_features": ["xds_v3"],
                }],
                "node": {
                    "id": "checkout-0000abcd",
                    "cluster": "checkout",
                    "metadata": {"LEGATE_FLAVOR": "grpc"},
                    "locality": {},
                },
            })
        );
    }

    #[test]
    fn cert_dir_declares_a_file_watcher_provider() {
        let b = bootstrap(Some("/etc/legate/certs"));
        assert_eq!(
            b["certificate_providers"],
            json!({"default": {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": "/etc/legate/certs/checkout.pem",
                    "private_key_file": "/etc/legate/certs/checkout.key",
                    "ca_certificate_file": "/etc/legate/certs/ca.pem",
                    "refresh_interval": "60s",
                },
            }})
        );
        let relative = bootstrap(Some("certs"));
        let cert = relative["certificate_providers"]["default"]["config"]["certificate_file"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(Path::new(&cert).is_absolute(), "{cert}");
    }

    #[test]
    fn xds_tls_becomes_tls_channel_creds() {
        let with = |client: bool| {
            GrpcBootstrap {
                node: "checkout".into(),
                id_suffix: "0000abcd".into(),
                xds: "127.0.0.1:18000".into(),
                cert_dir: None,
                xds_tls: Some(XdsChannelTls {
                    ca: "/etc/legate/certs/ca.pem".into(),
                    client: client.then(|| {
                        (
                            "/etc/legate/certs/checkout.pem".into(),
                            "/etc/legate/certs/checkout.key".into(),
                        )
                    }),
                }),
            }
            .to_json()["xds_servers"][0]["channel_creds"]
                .clone()
        };
        assert_eq!(
            with(true),
            json!([{"type": "tls", "config": {
                "ca_certificate_file": "/etc/legate/certs/ca.pem",
                "certificate_file": "/etc/legate/certs/checkout.pem",
                "private_key_file": "/etc/legate/certs/checkout.key",
                "refresh_interval": "60s",
            }}])
        );
        assert_eq!(
            with(false),
            json!([{"type": "tls", "config": {
                "ca_certificate_file": "/etc/legate/certs/ca.pem",
                "refresh_interval": "60s",
            }}]),
            "TLS without a client certificate"
        );
    }
}
