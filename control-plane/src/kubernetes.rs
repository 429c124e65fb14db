//! Everything that speaks to the Kubernetes API: the HealthProbe CRD, conversion of API
//! objects into the model, the watches and their store, probe status conditions, and
//! the status writer.

pub mod convert;
pub mod crd;
pub mod metrics;
pub mod probe_conditions;
pub mod probe_spec;
pub mod status_writer;
pub mod store;
pub mod watch;
