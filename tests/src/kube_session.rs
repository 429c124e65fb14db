//! A session against edgexds's Kubernetes source: subscribe like an Envoy, and read
//! responses until one shows what is awaited. Shared by the Kubernetes tests and the
//! slice-to-EDS latency bench.

use std::time::{Duration, Instant};

use crate::xds::{CDS, DeltaClient, EDS};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;

/// An "eventually" bound, not a performance assertion: generous for loaded 2-core CI machines.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn ips(list: &[&str]) -> Vec<std::net::IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

/// Subscribes to all clusters and to the endpoints of `clusters`.
pub async fn subscribe(
    client: &mut DeltaClient,
    clusters: &[&str],
) -> (DeltaDiscoveryResponse, DeltaDiscoveryResponse) {
    client.subscribe(CDS, &[]).await;
    let cds = client.next().await;
    client.ack(&cds).await;
    client.subscribe(EDS, clusters).await;
    let eds = client.next().await;
    client.ack(&eds).await;
    (cds, eds)
}

/// Reads responses (ACKing them) until one satisfies `done`.
pub async fn until(
    client: &mut DeltaClient,
    what: &str,
    mut done: impl FnMut(&DeltaDiscoveryResponse) -> bool,
) -> DeltaDiscoveryResponse {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what}: not within {PATIENCE:?}");
        // Watches back off after an outage (kube-rs: from 0.8 s, doubling), so wait for the whole budget.
        let response = client.next_within(left).await.unwrap_or_else(|status| panic!("{what}: {status}"));
        client.ack(&response).await;
        if done(&response) {
            return response;
        }
    }
}
