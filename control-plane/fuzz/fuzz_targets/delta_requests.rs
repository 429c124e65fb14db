//! Delta request handling on one stream's state: any sequence of requests is answered,
//! refused with a status, or ignored, and responses never name a resource twice.
#![no_main]

use std::sync::OnceLock;

use edgexds::cache::{ResourceType, Snapshot};
use edgexds::xds::{DeltaRequest, StreamKind, StreamState};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn snapshots() -> &'static (Snapshot, Snapshot) {
    static SNAPSHOTS: OnceLock<(Snapshot, Snapshot)> = OnceLock::new();
    SNAPSHOTS.get_or_init(|| {
        let items = |n: usize| {
            (0..n).flat_map(|i| {
                [
                    (ResourceType::Cluster, format!("c{i}"), vec![i as u8; 8]),
                    (ResourceType::ClusterLoadAssignment, format!("c{i}"), vec![i as u8; 16]),
                ]
            })
        };
        let first = Snapshot::new(None, items(4));
        let second = Snapshot::new(Some(&first), items(3));
        (first, second)
    })
}

fuzz_target!(|data: &[u8]| {
    let (first, second) = snapshots();
    let kind = match data.first() {
        Some(b) if b % 3 == 1 => StreamKind::Single(ResourceType::Cluster),
        Some(b) if b % 3 == 2 => StreamKind::Single(ResourceType::ClusterLoadAssignment),
        _ => StreamKind::Aggregated,
    };
    let mut state = StreamState::new(kind, edgexds::port::Limits::default());
    // Length-prefixed requests: one byte of length, then the encoded request.
    let mut rest = data.get(1..).unwrap_or_default();
    let mut round = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let (message, next) = tail.split_at(usize::from(len).min(tail.len()));
        rest = next;
        // Decoded as the server decodes a request body.
        let Ok(request) = DeltaRequest::decode(message) else { continue };
        let snapshot = if round % 2 == 0 { first } else { second };
        // Versions a request lists are checked against a snapshot being served.
        if state.handle_request(request, Some(snapshot)).is_err() {
            return;
        }
        state.snapshot_changed(snapshot);
        while let Some(outgoing) = state.next_response(snapshot) {
            assert!(outgoing.response.message_len() > 0);
        }
        round += 1;
    }
});
