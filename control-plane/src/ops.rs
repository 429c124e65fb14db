//! Operating edgexds: the admin and debug servers, the metrics registry, logging, and the
//! proxy-status view.
//!
//! Imports: xds (the proxies' views), hds (its view), pipeline (the models).

pub mod admin;
pub mod metrics;
pub mod process_metrics;
pub mod proxy_status;
pub mod telemetry;
