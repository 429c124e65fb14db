//! Listeners: one outbound HTTP listener for sidecars, and an api_listener per name a
//! proxyless gRPC client may dial (`xds:///svc.ns:port`), each taking its routes over RDS.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::accesslog::v3::access_log_filter::FilterSpecifier;
use envoy_types::pb::envoy::config::accesslog::v3::comparison_filter::Op;
use envoy_types::pb::envoy::config::accesslog::v3::{AccessLogFilter, ComparisonFilter, StatusCodeFilter};
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::substitution_format_string::Format;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, Http2ProtocolOptions, RuntimeUInt32,
    SocketAddress, SubstitutionFormatString, address,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
    RouteSpecifier, UpgradeConfig,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, LocalReplyConfig, Rds, ResponseMapper,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Name;

/// The sidecar listener's name, and the name of its RouteConfiguration.
pub const OUTBOUND: &str = "outbound";

/// The sidecar's outbound listener: plain HTTP on `address` (absolute-form requests too, so
/// `HTTP_PROXY` works), routed by Host over RDS route [`OUTBOUND`]. A host no Service claims
/// gets a 404 whose body names it.
///
/// It is also the proxy `HTTPS_PROXY` and `grpc_proxy` name: a CONNECT (HTTP/1.1, or HTTP/2
/// with `allow_connect`) is routed by its `host:port` like any request, and the route
/// tunnels it as TCP to the port's cluster, so TLS and any TCP protocol pass through it.
/// WebSocket upgrades pass too.
pub fn outbound_listener(address: SocketAddr) -> Listener {
    let mut manager = connection_manager(OUTBOUND);
    manager.stat_prefix = OUTBOUND.to_owned();
    manager.upgrade_configs = ["CONNECT", "websocket"]
        .map(|upgrade_type| UpgradeConfig { upgrade_type: upgrade_type.into(), ..Default::default() })
        .to_vec();
    manager.http2_protocol_options = Some(Http2ProtocolOptions { allow_connect: true, ..Default::default() });
    manager.local_reply_config = Some(LocalReplyConfig {
        mappers: vec![ResponseMapper {
            filter: Some(AccessLogFilter {
                filter_specifier: Some(FilterSpecifier::StatusCodeFilter(StatusCodeFilter {
                    comparison: Some(ComparisonFilter {
                        op: Op::Eq as i32,
                        value: Some(RuntimeUInt32 {
                            default_value: 404,
                            runtime_key: "edgexds.no_route_status".into(),
                        }),
                    }),
                })),
            }),
            body_format_override: Some(SubstitutionFormatString {
                format: Some(Format::TextFormatSource(DataSource {
                    specifier: Some(Specifier::InlineString(
                        "edgexds: no Service answers to host %REQ(:AUTHORITY)%\n".into(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    Listener {
        name: OUTBOUND.to_owned(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: address.ip().to_string(),
                port_specifier: Some(PortSpecifier::PortValue(u32::from(address.port()))),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&manager))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// What a proxyless gRPC client asks for by name: an api_listener whose routes come over
/// RDS under the same name (gRFC A27), the router filter last (A39).
pub fn grpc_listener(name: &str) -> Listener {
    Listener {
        name: name.to_owned(),
        api_listener: Some(ApiListener { api_listener: Some(any(&connection_manager(name))) }),
        ..Default::default()
    }
}

fn connection_manager(route_config_name: &str) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: route_config_name.to_owned(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ConfigSource {
                resource_api_version: ApiVersion::V3 as i32,
                config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
                ..Default::default()
            }),
            route_config_name: route_config_name.to_owned(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(ConfigType::TypedConfig(any(&Router::default()))),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn any<M: Name>(message: &M) -> Any {
    Any { type_url: M::type_url(), value: message.encode_to_vec() }
}
