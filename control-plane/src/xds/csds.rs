//! Client Status Discovery Service: what each connected proxy holds, and whether it took it.

use crate::auth::{Access, Identity};
use std::sync::Arc;

use envoy_types::pb::envoy::admin::v3::UpdateFailureState;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::{
    ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientConfigStatus, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::{Any, Timestamp};
use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};

use super::proxies::ProxyRegistry;
use super::view::{Holdings, StreamHandle, StreamView, TypeView};
use crate::cache::{ResourceType, Snapshot, SnapshotSource, format_version};
use crate::port::{Limit, LimitHits, Limits};

/// Answers CSDS requests from what streams publish and answer, and the current snapshot.
///
/// Each answer can hold every proxy's resources, so answers are bounded twice: few
/// are built at once, and one that would grow past its byte limit is refused with
/// a status that says how to narrow it. No stream's state is touched: each stream lists
/// what it holds on its own task when asked, and the answer is built off the runtime's
/// workers.
#[derive(Clone)]
pub struct ClientStatus {
    proxies: Arc<ProxyRegistry>,
    cache: Arc<dyn SnapshotSource>,
    building: Arc<Semaphore>,
    limits: Limits,
    limit_hits: LimitHits,
    /// Every proxy's state is for administrators only.
    access: Access,
}

impl ClientStatus {
    pub fn new(proxies: Arc<ProxyRegistry>, cache: Arc<dyn SnapshotSource>) -> Self {
        Self {
            proxies,
            cache,
            building: Arc::new(Semaphore::new(Limits::default().usize(Limit::ConcurrentCsds))),
            limits: Limits::default(),
            limit_hits: LimitHits::default(),
            access: Access::default(),
        }
    }

    /// Only `access` may read every proxy's state.
    pub fn with_access(self, access: Access) -> Self {
        Self { access, ..self }
    }

    fn allowed<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let identity = request.extensions().get::<Identity>();
        self.access.check(identity, "read every proxy's state (CSDS)", "--admin-identities")
    }

    pub fn with_limits(self, limits: Limits, limit_hits: LimitHits) -> Self {
        Self { building: Arc::new(Semaphore::new(limits.usize(Limit::ConcurrentCsds))), limits, limit_hits, ..self }
    }

    /// Answers one request if a building slot is free.
    async fn answer(&self, request: &ClientStatusRequest) -> Result<ClientStatusResponse, Status> {
        let Ok(_slot) = self.building.try_acquire() else {
            self.limit_hits.hit(Limit::ConcurrentCsds);
            return Err(self.limits.refusal(Limit::ConcurrentCsds, "").status);
        };
        self.status(request).await
    }

    pub fn server(&self) -> ClientStatusDiscoveryServiceServer<Self> {
        // The port's request layer bounds every message already (--max-request-bytes).
        ClientStatusDiscoveryServiceServer::new(self.clone()).max_decoding_message_size(usize::MAX)
    }

    pub async fn status(&self, request: &ClientStatusRequest) -> Result<ClientStatusResponse, Status> {
        for matcher in &request.node_matchers {
            if !matcher.node_metadatas.is_empty() {
                return Err(Status::unimplemented("node_metadatas matchers are not supported; match on node_id"));
            }
        }
        let chosen: Vec<(StreamHandle, Arc<StreamView>)> = self
            .proxies
            .streams()
            .into_iter()
            .map(|stream| {
                let view = stream.view();
                (stream, view)
            })
            .filter(|(_, view)| {
                request.node_matchers.is_empty() || request.node_matchers.iter().any(|m| matches(m, view.node_id()))
            })
            .collect();
        let held = futures::future::join_all(chosen.iter().map(|(stream, _)| stream.holdings())).await;
        let views: Vec<Arc<StreamView>> = chosen.into_iter().map(|(_, view)| view).collect();
        let answer = Answer {
            views,
            held,
            snapshot: self.cache.current(),
            contents: !request.exclude_resource_contents,
            max_bytes: self.limits.usize(Limit::CsdsResponseBytes),
        };
        // Building copies every body it includes: off the runtime's workers.
        match tokio::task::spawn_blocking(move || answer.build()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(too_large)) => {
                self.limit_hits.hit(Limit::CsdsResponseBytes);
                Err(self.limits.refusal(Limit::CsdsResponseBytes, too_large).status)
            }
            Err(_) => Err(Status::internal("building the CSDS answer failed")),
        }
    }
}

/// What one CSDS answer is built from.
struct Answer {
    views: Vec<Arc<StreamView>>,
    /// What each stream said its client holds; `None` for a stream that did not answer in time.
    held: Vec<Option<Holdings>>,
    snapshot: Option<Arc<Snapshot>>,
    contents: bool,
    max_bytes: usize,
}

impl Answer {
    /// The response, or how large it grew before it passed the limit.
    fn build(self) -> Result<ClientStatusResponse, String> {
        let mut config = Vec::new();
        let mut size = 0;
        for (view, held) in self.views.iter().zip(self.held) {
            let client = client_config(view, held, self.snapshot.as_deref(), self.contents);
            size += client.encoded_len();
            if size > self.max_bytes {
                return Err(format!("{size} bytes and more"));
            }
            config.push(client);
        }
        Ok(ClientStatusResponse { config })
    }
}

fn matches(matcher: &NodeMatcher, node_id: &str) -> bool {
    let Some(StringMatcher { match_pattern: Some(pattern), ignore_case, .. }) = &matcher.node_id else { return true };
    let fold = |s: &str| if *ignore_case { s.to_lowercase() } else { s.to_owned() };
    let node = fold(node_id);
    match pattern {
        MatchPattern::Exact(v) => node == fold(v),
        MatchPattern::Prefix(v) => node.starts_with(&fold(v)),
        MatchPattern::Suffix(v) => node.ends_with(&fold(v)),
        MatchPattern::Contains(v) => node.contains(&fold(v)),
        _ => false,
    }
}

fn timestamp(time: std::time::SystemTime) -> Option<Timestamp> {
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(Timestamp { seconds: since.as_secs() as i64, nanos: since.subsec_nanos() as i32 })
}

fn client_config(
    stream: &StreamView,
    held: Option<Holdings>,
    snapshot: Option<&Snapshot>,
    contents: bool,
) -> ClientConfig {
    let mut generic_xds_configs = Vec::new();
    let mut held = held.unwrap_or_default();
    for ty in ResourceType::ALL {
        let Some(state) = stream.type_view(ty) else { continue };
        let (config_status, client_status) = statuses(state);
        let error_state = state.nacked().then(|| {
            let nack = state.last_nack.as_ref();
            UpdateFailureState {
                details: nack.map(|n| n.message.clone()).unwrap_or_default(),
                version_info: nack.map(|n| n.version.clone()).unwrap_or_default(),
                last_update_attempt: nack.and_then(|n| timestamp(n.wall)),
                ..Default::default()
            }
        });
        let last_updated = state.sent.as_ref().and_then(|s| timestamp(s.wall));
        let mut names = held[ty.index()].take().unwrap_or_default();
        names.sort_unstable();
        for (name, version) in names {
            let body = snapshot
                .and_then(|s| s.resources(ty).get(&*name))
                .filter(|r| contents && r.hash == version)
                .map(|r| Any { type_url: ty.type_url().to_owned(), value: r.body.clone() });
            generic_xds_configs.push(GenericXdsConfig {
                type_url: ty.type_url().to_owned(),
                name: name.to_string(),
                version_info: format_version(version),
                xds_config: body,
                last_updated,
                config_status: config_status as i32,
                client_status: client_status as i32,
                error_state: error_state.clone(),
                is_static_resource: false,
            });
        }
    }
    ClientConfig { node: stream.node.as_deref().cloned(), generic_xds_configs, ..Default::default() }
}

fn statuses(state: &TypeView) -> (ConfigStatus, ClientConfigStatus) {
    if state.nacked() {
        (ConfigStatus::Error, ClientConfigStatus::ClientNacked)
    } else if state.pending().is_some() {
        (ConfigStatus::Stale, ClientConfigStatus::ClientRequested)
    } else {
        (ConfigStatus::Synced, ClientConfigStatus::ClientAcked)
    }
}

#[tonic::async_trait]
impl ClientStatusDiscoveryService for ClientStatus {
    type StreamClientStatusStream = BoxStream<'static, Result<ClientStatusResponse, Status>>;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<Self::StreamClientStatusStream>, Status> {
        self.allowed(&request)?;
        let this = self.clone();
        let answers = request.into_inner().then(move |request| {
            let this = this.clone();
            async move {
                match request {
                    Ok(request) => this.answer(&request).await,
                    Err(status) => Err(status),
                }
            }
        });
        Ok(Response::new(answers.boxed()))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        self.allowed(&request)?;
        self.answer(request.get_ref()).await.map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::SnapshotCache;

    #[tokio::test]
    async fn csds_answers_only_as_many_requests_at_once_as_allowed() {
        let limits = Limits::default().with(Limit::ConcurrentCsds, 1);
        let csds = ClientStatus::new(Arc::default(), Arc::new(SnapshotCache::default()))
            .with_limits(limits, LimitHits::default());
        assert!(csds.answer(&ClientStatusRequest::default()).await.is_ok(), "a free slot answers");
        let _busy = csds.building.try_acquire().expect("the one slot");
        let refused = csds.answer(&ClientStatusRequest::default()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("--max-concurrent-csds"), "{refused}");
    }
}
