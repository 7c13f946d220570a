//! CSDS (`envoy.service.status.v3.ClientStatusDiscoveryService`): each connected client's
//! config status, from the same registry as `/clients`.
//!
//! One `ClientConfig` per xDS stream (a node with per-type streams appears once per stream, as
//! in `/clients`), and one `GenericXdsConfig` per resource the stream was sent, plus one per
//! name the client asked for that does not exist. Status per resource, from its type's last
//! response on that stream:
//!
//! | the last response of the type was | `config_status` | `client_status` |
//! |---|---|---|
//! | ACKed | SYNCED | ACKED |
//! | NACKed | ERROR (with `error_state`) | NACKED |
//! | not answered yet | STALE | ACKED if an earlier one was, else REQUESTED |
//! | a name asked for that does not exist | NOT_SENT | DOES_NOT_EXIST |
//!
//! Secrets are listed without their contents (they hold private keys), whatever
//! `exclude_resource_contents` says.

use super::XdsServer;
use super::registry::{ClientStatus, Registry, TypeStatus};
use legate_proto::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use legate_proto::pb::envoy::config::core::v3::Node;
use legate_proto::pb::envoy::service::status::v3::client_status_discovery_service_server::{
    ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
};
use legate_proto::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
    client_config::GenericXdsConfig,
};
use legate_proto::pb::envoy::r#type::matcher::v3::{
    NodeMatcher, StringMatcher, string_matcher::MatchPattern,
};
use legate_proto::type_url;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The CSDS service over `server`'s registry.
pub fn service(server: XdsServer) -> ClientStatusDiscoveryServiceServer<XdsServer> {
    ClientStatusDiscoveryServiceServer::new(server)
}

#[tonic::async_trait]
impl ClientStatusDiscoveryService for XdsServer {
    type StreamClientStatusStream = ReceiverStream<Result<ClientStatusResponse, Status>>;

    async fn stream_client_status(
        &self,
        req: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<Self::StreamClientStatusStream>, Status> {
        let mut requests = req.into_inner();
        let registry = self.registry.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(next) = requests.next().await {
                let answer = match next {
                    Ok(r) => client_status(&registry, &r),
                    Err(status) => Err(status),
                };
                let stop = answer.is_err();
                if tx.send(answer).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch_client_status(
        &self,
        req: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        client_status(&self.registry, req.get_ref()).map(Response::new)
    }
}

/// The status of every client that `req.node_matchers` selects (all when there are none).
pub fn client_status(
    registry: &Registry,
    req: &ClientStatusRequest,
) -> Result<ClientStatusResponse, Status> {
    for m in &req.node_matchers {
        check_matcher(m)?;
    }
    let config = registry
        .snapshot()
        .iter()
        .filter(|c| c.node.is_some())
        .filter(|c| req.node_matchers.is_empty() || req.node_matchers.iter().any(|m| matches(m, c)))
        .map(|c| client_config(c, req.exclude_resource_contents))
        .collect();
    Ok(ClientStatusResponse { config })
}

fn check_matcher(m: &NodeMatcher) -> Result<(), Status> {
    if !m.node_metadatas.is_empty() {
        return Err(Status::unimplemented(
            "CSDS node_matchers: node_metadatas is not supported; match on node_id",
        ));
    }
    match m.node_id.as_ref().and_then(|s| s.match_pattern.as_ref()) {
        None
        | Some(
            MatchPattern::Exact(_)
            | MatchPattern::Prefix(_)
            | MatchPattern::Suffix(_)
            | MatchPattern::Contains(_),
        ) => Ok(()),
        Some(_) => Err(Status::unimplemented(
            "CSDS node_matchers: node_id supports exact, prefix, suffix and contains",
        )),
    }
}

fn matches(m: &NodeMatcher, c: &ClientStatus) -> bool {
    m.node_id
        .as_ref()
        .is_none_or(|s| string_matches(s, &c.node_id))
}

fn string_matches(m: &StringMatcher, value: &str) -> bool {
    let (value, fold) = if m.ignore_case {
        (value.to_lowercase(), true)
    } else {
        (value.to_string(), false)
    };
    let norm = |p: &str| {
        if fold {
            p.to_lowercase()
        } else {
            p.to_string()
        }
    };
    match &m.match_pattern {
        Some(MatchPattern::Exact(p)) => value == norm(p),
        Some(MatchPattern::Prefix(p)) => value.starts_with(&norm(p)),
        Some(MatchPattern::Suffix(p)) => value.ends_with(&norm(p)),
        Some(MatchPattern::Contains(p)) => value.contains(&norm(p)),
        _ => false,
    }
}

fn client_config(c: &ClientStatus, exclude_contents: bool) -> ClientConfig {
    let node = c.node.clone().unwrap_or_else(|| Node {
        id: c.node_id.clone(),
        cluster: c.node_cluster.clone(),
        ..Default::default()
    });
    let mut generic_xds_configs = Vec::new();
    for (t, ts) in &c.types {
        let (config_status, client_status) = type_status(ts);
        let error_state = (config_status == ConfigStatus::Error).then(|| UpdateFailureState {
            details: ts.last_nack.clone().unwrap_or_default(),
            version_info: ts.nacked_version.clone().unwrap_or_default(),
            ..Default::default()
        });
        let with_contents = !exclude_contents && t != type_url::SECRET;
        for (name, r) in &ts.resources {
            generic_xds_configs.push(GenericXdsConfig {
                type_url: t.clone(),
                name: name.clone(),
                version_info: ts.sent_version.clone(),
                xds_config: with_contents.then(|| r.any.clone()),
                config_status: config_status as i32,
                client_status: client_status as i32,
                error_state: error_state.clone(),
                ..Default::default()
            });
        }
        for name in ts
            .subscribed
            .iter()
            .filter(|n| *n != "*" && !ts.resources.contains_key(*n))
        {
            generic_xds_configs.push(GenericXdsConfig {
                type_url: t.clone(),
                name: name.clone(),
                config_status: ConfigStatus::NotSent as i32,
                client_status: ClientResourceStatus::DoesNotExist as i32,
                ..Default::default()
            });
        }
    }
    ClientConfig {
        node: Some(node),
        generic_xds_configs,
        ..Default::default()
    }
}

/// The status of a type's last response on one stream.
fn type_status(ts: &TypeStatus) -> (ConfigStatus, ClientResourceStatus) {
    if ts.sent_version.is_empty() {
        (ConfigStatus::NotSent, ClientResourceStatus::Requested)
    } else if ts.nacked_version.as_deref() == Some(ts.sent_version.as_str()) {
        (ConfigStatus::Error, ClientResourceStatus::Nacked)
    } else if ts.acked_version == ts.sent_version {
        (ConfigStatus::Synced, ClientResourceStatus::Acked)
    } else if ts.acks > 0 {
        (ConfigStatus::Stale, ClientResourceStatus::Acked)
    } else {
        (ConfigStatus::Stale, ClientResourceStatus::Requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(sent: &str, acked: &str, nacked: Option<&str>, acks: u64) -> TypeStatus {
        TypeStatus {
            sent_version: sent.into(),
            acked_version: acked.into(),
            nacked_version: nacked.map(Into::into),
            acks,
            ..Default::default()
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(
            type_status(&ts("a", "a", None, 1)),
            (ConfigStatus::Synced, ClientResourceStatus::Acked)
        );
        assert_eq!(
            type_status(&ts("b", "a", Some("b"), 1)),
            (ConfigStatus::Error, ClientResourceStatus::Nacked)
        );
        assert_eq!(
            type_status(&ts("c", "a", Some("b"), 1)),
            (ConfigStatus::Stale, ClientResourceStatus::Acked)
        );
        assert_eq!(
            type_status(&ts("a", "", None, 0)),
            (ConfigStatus::Stale, ClientResourceStatus::Requested)
        );
        assert_eq!(
            type_status(&ts("", "", None, 0)),
            (ConfigStatus::NotSent, ClientResourceStatus::Requested)
        );
    }

    #[test]
    fn node_id_matchers() {
        let m = |p: MatchPattern, ignore_case: bool| StringMatcher {
            match_pattern: Some(p),
            ignore_case,
        };
        assert!(string_matches(
            &m(MatchPattern::Exact("a-1".into()), false),
            "a-1"
        ));
        assert!(!string_matches(
            &m(MatchPattern::Exact("A-1".into()), false),
            "a-1"
        ));
        assert!(string_matches(
            &m(MatchPattern::Exact("A-1".into()), true),
            "a-1"
        ));
        assert!(string_matches(
            &m(MatchPattern::Prefix("chk".into()), false),
            "chk-9"
        ));
        assert!(string_matches(
            &m(MatchPattern::Suffix("-9".into()), false),
            "chk-9"
        ));
        assert!(string_matches(
            &m(MatchPattern::Contains("k-".into()), false),
            "chk-9"
        ));
    }
}
