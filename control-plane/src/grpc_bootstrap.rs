//! `legate-cp bootstrap grpc`: the `GRPC_XDS_BOOTSTRAP` file of a proxyless gRPC application.
//!
//! The node carries `metadata.LEGATE_FLAVOR: grpc`, so the control plane serves it the gRPC
//! flavour whatever its user agent. `node.cluster` is the ambassador whose services the
//! application may call (as for Envoy); `node.id` gets a unique suffix.
//!
//! With `--cert-dir DIR`, the file also declares the `file_watcher` certificate provider
//! `default` over `DIR/<node>.pem`, `DIR/<node>.key` and `DIR/ca.pem` (the layout of
//! `legate-cp certs init --service <node>`), which gRFC A29 security refers to by name.

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
}

impl GrpcBootstrap {
    /// The bootstrap JSON.
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "xds_servers": [{
                "server_uri": self.xds,
                "channel_creds": [{"type": "insecure"}],
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
}
