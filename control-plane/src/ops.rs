//! Operating edgexds: the admin server, the metrics registry, logging, the command
//! line, and the proxy-status view.

pub mod admin;
pub mod cli;
pub mod metrics;
pub mod proxy_status;
pub mod telemetry;
