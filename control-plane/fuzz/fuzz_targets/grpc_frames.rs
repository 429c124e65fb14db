//! gRPC frame decoding of delta requests read through the port's request layer: any body,
//! in any chunking, ends in messages or a status, and gives its share of the
//! pending-request budget back.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use bytes::Bytes;
use edgexds::port::{Limit, Limits, PortMetrics, RequestLimits};
use edgexds::xds::grpc::decode_requests;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, body)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let chunks: Vec<Result<Bytes, std::convert::Infallible>> =
        body.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let limits = Limits::default().with(Limit::RequestBytes, 1 << 16).with(Limit::PendingRequestBytes, 1 << 16);
    runtime().block_on(async {
        let layer = Arc::new(RequestLimits::new(limits, PortMetrics::default()));
        let body = layer.wrap(Body::from_stream(futures::stream::iter(chunks)));
        let messages = decode_requests::<DeltaDiscoveryRequest>(Body::new(body));
        let _: Vec<_> = messages.collect().await;
        assert_eq!(layer.available(), layer.limit(), "every held byte is given back");
    });
});
