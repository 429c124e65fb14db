//! edgexds: a lightweight Envoy delta-xDS control plane for Kubernetes edge clusters.
//!
//! Data flows one way: a source ([`manifests`] or [`kubernetes`]) fills a
//! [`model::SourceState`]; [`model::resolve`] turns it into a [`model::Model`];
//! [`translate`] turns that into Envoy resources; [`cache`] versions them; and
//! [`xds`] streams them to Envoys over delta and state-of-the-world xDS, behind the
//! [`port`] that bounds and authenticates (with [`auth`]) every client. [`hds`] runs
//! active checks, [`ops`] serves the admin port, metrics, logs and proxy-status, and
//! [`serve`] wires everything together. The core (`model`, `translate`, `cache`) imports nothing
//! from the edges; a test keeps it so.
#![forbid(unsafe_code)]

// The core.
pub mod cache;
pub mod model;
pub mod translate;

// The edges.
pub mod auth;
pub mod hds;
pub mod inject;
pub mod kubernetes;
pub mod manifests;
pub mod ops;
pub mod port;
pub mod xds;

// Wiring and shared plumbing.
pub mod error;
pub mod histograms;
pub mod lock;
pub mod pipeline;
pub mod serve;
pub mod shutdown;
pub mod timestamp;

#[cfg(test)]
mod layout_tests;

/// Cases a property test runs: `default`, or `PROPTEST_CASES` when set (for long runs).
#[cfg(test)]
pub(crate) fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Our own extension messages, compiled from `proto/`.
pub mod api {
    pub mod v1alpha1 {
        include!(concat!(env!("OUT_DIR"), "/edgexds.v1alpha1.rs"));
    }
}

pub use error::{Error, Result};
