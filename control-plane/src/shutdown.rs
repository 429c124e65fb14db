//! The shutdown signal every task watches, and the handle of a running subsystem.

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub type Shutdown = watch::Receiver<bool>;

/// A running subsystem: it ends on shutdown, or early with the error that stopped it.
pub type Task = JoinHandle<crate::Result<()>>;

/// Resolves once shutdown is requested (or its sender is gone).
pub async fn requested(shutdown: &mut Shutdown) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
