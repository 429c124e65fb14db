//! Delta xDS over gRPC: the per-stream protocol state machine, the tonic
//! services, and the views of connected proxies (debug endpoint and CSDS).

mod budget;
mod csds;
pub mod grpc;
pub mod limits;
pub mod listener;
pub mod proxies;
mod response_wire;
mod service;
mod stream;
mod stream_state;
mod subscription;

use std::sync::Arc;

pub use budget::{SEND_BUDGET_BYTES, SendBudget};
pub use csds::ClientStatus;
pub use limits::XdsLimits;
pub use proxies::{ProxyRegistry, ProxyReport, SyncState};
pub use response_wire::EncodedResponse;
pub use service::XdsServer;
pub use stream::{StreamKind, run_stream};
pub use stream_state::{MAX_RESPONSE_BYTES, StreamState, kept_node};
pub use subscription::{Changes, Subscription, SubscriptionRequest};

use crate::ops::metrics::Metrics;

/// What streams report into: metrics and the registry of connected proxies.
#[derive(Default)]
pub struct Observer {
    pub metrics: Arc<Metrics>,
    pub proxies: Arc<ProxyRegistry>,
}
