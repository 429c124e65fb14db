//! The xDS port and what every service on it shares: connections and their limits, TLS and
//! authentication (from [`crate::auth`]), the request layer that bounds every request body,
//! and the one definition of every per-client [`Limit`]. The services behind it (xDS, CSDS,
//! HDS, gRPC health) see only requests that passed all of this.
//!
//! Imports: auth.

pub mod budget;
pub mod client_faults;
pub mod connections;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod node_facts;
pub mod request_layer;
pub mod stream_body;

pub use budget::ByteBudget;
pub use limits::{Limit, Limits, Refusal, kept_node, truncate};
pub use metrics::{LimitHits, PortMetrics};
pub use request_layer::RequestLimits;
