//! edgexds: a lightweight Envoy delta-xDS control plane for Kubernetes edge clusters.
//!
//! Data flows one way: a source (manifests directory or Kubernetes) fills a
//! [`model::SourceState`]; [`model::resolve`] turns it into a [`model::Model`];
//! [`translate`] turns that into Envoy resources; [`cache`] versions them; and
//! [`xds`] streams them to Envoys over delta xDS.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cache;
pub mod cli;
pub mod convert;
pub mod crd;
pub mod error;
pub mod hds;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod proxy_status;
pub mod serve;
pub mod shutdown;
pub mod source;
pub mod status;
pub mod status_writer;
pub mod sync;
pub mod telemetry;
pub mod timestamp;
pub mod translate;
pub mod xds;

/// Our own extension messages, compiled from `proto/`.
pub mod api {
    pub mod v1alpha1 {
        include!(concat!(env!("OUT_DIR"), "/edgexds.v1alpha1.rs"));
    }
}

pub use error::{Error, Result};
