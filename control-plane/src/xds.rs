//! Delta xDS over gRPC: the per-stream protocol state machine and the tonic services.

mod service;
mod stream;
mod subscription;

pub use service::XdsServer;
pub use stream::{StreamKind, run_stream};
pub use subscription::{Changes, Subscription, SubscriptionRequest};
