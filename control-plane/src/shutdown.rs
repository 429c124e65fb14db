//! The shutdown signal every task watches.

use tokio::sync::watch;

pub type Shutdown = watch::Receiver<bool>;

/// Resolves once shutdown is requested (or its sender is gone).
pub async fn requested(shutdown: &mut Shutdown) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
