//! Sources of Kubernetes objects. Each keeps a [`SourceState`] up to date and
//! publishes it whole; `None` until its first full state is loaded.

mod file_events;
pub mod kube_store;
pub mod kubernetes;
pub mod manifest_dir;
pub mod manifests;

use std::sync::Arc;

use tokio::sync::watch;

use crate::model::SourceState;

pub type StateSender = watch::Sender<Option<Arc<SourceState>>>;
pub type StateReceiver = watch::Receiver<Option<Arc<SourceState>>>;
