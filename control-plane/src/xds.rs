//! xDS over gRPC, delta and state of the world: the per-stream protocol state machine, the
//! streams and their framing, the send budget, CSDS, and the view of connected proxies. It
//! reads snapshots through `cache::SnapshotSource`.
//!
//! Imports: port (the limits it enforces and counts), auth (who a stream's client is).

mod budget;
mod csds;
mod delta_request;
mod delta_response;
pub mod grpc;
mod kind;
pub mod metrics;
pub mod proxies;
mod response_wire;
mod service;
mod sotw_response;
mod stream;
mod stream_state;
mod subscription;
pub mod view;

pub use budget::{MAX_RESPONSE_BYTES, SEND_BUDGET_BYTES, SendBudget};
pub use csds::ClientStatus;
pub use delta_request::DeltaRequest;
pub use kind::{Flavour, StreamKind};
pub use metrics::XdsMetrics;
pub use proxies::{ProxyRegistry, ProxyReport, SyncState};
pub use response_wire::EncodedResponse;
pub use service::XdsServer;
pub use stream::{StreamEnv, XdsRequest, run_stream};
pub use stream_state::{Answer, Outgoing, StreamState};
