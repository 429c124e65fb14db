//! HDS report handling: any report from a connected checker is recorded or ignored, and
//! the hub's view stays consistent.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use edgexds::hds::{HdsConfig, HdsHub};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::health::v3::EndpointHealthResponse;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn hub() -> &'static Arc<HdsHub> {
    static HUB: OnceLock<Arc<HdsHub>> = OnceLock::new();
    HUB.get_or_init(|| HdsHub::new(HdsConfig::default(), Default::default()))
}

fuzz_target!(|data: &[u8]| {
    let Ok(report) = EndpointHealthResponse::decode(data) else { return };
    let hub = hub();
    let now = Instant::now();
    let (id, _schedule) = hub.connect(&Node { id: "fuzz".into(), ..Default::default() }, true, true, now);
    hub.record(id, &report, now);
    let _ = hub.view(now);
    hub.disconnect(id, now);
});
