//! xDS over gRPC, delta and state of the world: the per-stream protocol state machine, the
//! streams and their framing, the send budget, CSDS, and the view of connected proxies. It
//! reads snapshots through `cache::SnapshotSource`.
//!
//! Imports: port (the limits it enforces and counts), auth (who a stream's client is).

mod budget;
mod csds;
pub mod grpc;
mod kind;
pub mod metrics;
pub mod proxies;
mod response_wire;
mod service;
mod stream;
mod stream_state;
mod subscription;

pub use budget::{SEND_BUDGET_BYTES, SendBudget};
pub use csds::ClientStatus;
pub use kind::{Flavour, StreamKind};
pub use metrics::XdsMetrics;
pub use proxies::{ProxyRegistry, ProxyReport, SyncState};
pub use response_wire::EncodedResponse;
pub use service::XdsServer;
pub use stream::{StreamEnv, XdsRequest, run_stream};
pub use stream_state::{Answer, MAX_RESPONSE_BYTES, Outgoing, StreamState};
pub use subscription::{Changes, Subscription, SubscriptionRequest};
