//! JSON views for operators: connected proxies, served resources, the resolved model, HDS.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::envoy::config::core::v3::health_check::HealthChecker;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, route, route_action};
use envoy_types::pb::google::protobuf::Duration;
use prost::Message;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use crate::cache::ResourceType;
use crate::model::{CheckKind, CheckVerdicts, ProbePolicy, ResolvedPort};
use crate::translate::ClusterLoadAssignment;

type Reply = Result<Json<Value>, (StatusCode, String)>;

pub async fn proxies(State(state): State<AdminState>) -> Json<Vec<crate::xds::ProxyReport>> {
    Json(state.proxies.report().await)
}

#[derive(Deserialize)]
pub struct ResourceQuery {
    r#type: String,
    name: Option<String>,
}

/// One resource as JSON with its version, or every name and version of a type.
pub async fn resources(State(state): State<AdminState>, Query(query): Query<ResourceQuery>) -> Reply {
    let ty = match query.r#type.as_str() {
        "cds" | "clusters" => ResourceType::Cluster,
        "eds" | "endpoints" => ResourceType::ClusterLoadAssignment,
        "lds" | "listeners" => ResourceType::Listener,
        "rds" | "routes" => ResourceType::RouteConfiguration,
        other => return Err((StatusCode::BAD_REQUEST, format!("unknown type {other:?}: use cds, eds, lds or rds\n"))),
    };
    let snapshot = state.cache.current().ok_or((StatusCode::SERVICE_UNAVAILABLE, "no snapshot yet\n".into()))?;
    let resources = snapshot.resources(ty);
    let Some(name) = query.name else {
        let list: Vec<Value> = resources.iter().map(|(n, r)| json!({"name": &**n, "version": r.version})).collect();
        return Ok(Json(json!({"type": ty.type_url(), "version": snapshot.version(ty), "resources": list})));
    };
    let resource =
        resources.get(name.as_str()).ok_or((StatusCode::NOT_FOUND, format!("no {ty} resource {name:?}\n")))?;
    let body = match ty {
        ResourceType::Cluster => Cluster::decode(resource.body.as_slice()).map(|c| cluster_json(&c)),
        ResourceType::ClusterLoadAssignment => {
            ClusterLoadAssignment::decode(resource.body.as_slice()).map(|c| serde_json::to_value(c).unwrap_or_default())
        }
        ResourceType::Listener => Listener::decode(resource.body.as_slice()).map(|l| listener_json(&l)),
        ResourceType::RouteConfiguration => {
            RouteConfiguration::decode(resource.body.as_slice()).map(|r| routes_json(&r))
        }
    }
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot decode {name}: {e}\n")))?;
    Ok(Json(json!({"type": ty.type_url(), "name": name, "version": resource.version, "resource": body})))
}

/// The fields edgexds sets on a Listener.
fn listener_json(listener: &Listener) -> Value {
    let address = listener.address.as_ref().and_then(|a| match &a.address {
        Some(address::Address::SocketAddress(s)) => Some(match s.port_specifier {
            Some(PortSpecifier::PortValue(port)) => format!("{}:{port}", s.address),
            _ => s.address.clone(),
        }),
        _ => None,
    });
    json!({"name": listener.name, "address": address, "api_listener": listener.api_listener.is_some()})
}

/// Each virtual host's domains and the cluster it routes to.
fn routes_json(routes: &RouteConfiguration) -> Value {
    let hosts: Vec<Value> = routes
        .virtual_hosts
        .iter()
        .map(|host| {
            let clusters: Vec<&str> = host
                .routes
                .iter()
                .filter_map(|r| match &r.action {
                    Some(route::Action::Route(action)) => match &action.cluster_specifier {
                        Some(route_action::ClusterSpecifier::Cluster(cluster)) => Some(cluster.as_str()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            json!({"name": host.name, "domains": host.domains, "clusters": clusters})
        })
        .collect();
    json!({"name": routes.name, "virtual_hosts": hosts})
}

fn millis(duration: &Option<Duration>) -> Value {
    duration.as_ref().map_or(Value::Null, |d| json!(d.seconds * 1000 + i64::from(d.nanos) / 1_000_000))
}

/// The fields edgexds sets on a Cluster.
fn cluster_json(cluster: &Cluster) -> Value {
    let checks: Vec<Value> = cluster
        .health_checks
        .iter()
        .map(|hc| {
            let kind = match &hc.health_checker {
                Some(HealthChecker::HttpHealthCheck(h)) => json!({"http": {"path": h.path, "host": h.host}}),
                Some(HealthChecker::TcpHealthCheck(_)) => json!({"tcp": {}}),
                Some(HealthChecker::GrpcHealthCheck(g)) => json!({"grpc": {"service_name": g.service_name}}),
                _ => Value::Null,
            };
            json!({
                "interval_ms": millis(&hc.interval),
                "no_traffic_interval_ms": millis(&hc.no_traffic_interval),
                "timeout_ms": millis(&hc.timeout),
                "unhealthy_threshold": hc.unhealthy_threshold.as_ref().map(|v| v.value),
                "healthy_threshold": hc.healthy_threshold.as_ref().map(|v| v.value),
                "checker": kind,
            })
        })
        .collect();
    json!({
        "name": cluster.name,
        "type": "EDS",
        "eds_service_name": cluster.eds_cluster_config.as_ref().map(|e| e.service_name.clone()),
        "ignore_health_on_host_removal": cluster.ignore_health_on_host_removal,
        "http2": !cluster.typed_extension_protocol_options.is_empty(),
        "health_checks": checks,
    })
}

fn policy_json(policy: &ProbePolicy) -> Value {
    json!({
        "interval_ms": policy.interval_ms,
        "timeout_ms": policy.timeout_ms,
        "failure_threshold": policy.failure_threshold,
        "success_threshold": policy.success_threshold,
    })
}

fn port_json(port: &ResolvedPort, verdicts: &CheckVerdicts) -> Value {
    let probe = port.probe.as_ref().map(|c| {
        let check = match &c.probe.check {
            CheckKind::Http { path, host } => json!({"http": {"path": path, "host": host}}),
            CheckKind::Tcp => json!({"tcp": {}}),
            CheckKind::Grpc { service_name } => json!({"grpc": {"service_name": service_name}}),
        };
        json!({"name": c.probe.key.to_string(), "check": check, "base": policy_json(&c.probe.base)})
    });
    let endpoints: Vec<Value> = port
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "address": e.address, "port": e.port, "health": format!("{:?}", e.health),
                "zone": e.zone, "node": e.node_name, "pod": e.pod_name,
                "probe": e.probe.as_ref().map(policy_json),
                "failing_active_check": verdicts.is_failing(&port.cluster_name, std::net::SocketAddr::new(e.address, e.port)),
            })
        })
        .collect();
    json!({"cluster": port.cluster_name, "port": port.port.port, "probe": probe, "endpoints": endpoints})
}

/// The translated input: services with their ports and endpoints, probes with their effective values.
pub async fn model(State(state): State<AdminState>) -> Reply {
    let model = state.models.borrow().clone().ok_or((StatusCode::SERVICE_UNAVAILABLE, "no model yet\n".into()))?;
    let verdicts = state.hds.as_ref().map(|hub| hub.verdicts().borrow().clone()).unwrap_or_default();
    let services: Vec<Value> = model
        .services
        .values()
        .map(|s| {
            let ports: Vec<Value> = s.ports.iter().map(|p| port_json(p, &verdicts)).collect();
            json!({"service": s.key.to_string(), "ports": ports})
        })
        .collect();
    let probes: Vec<Value> = model
        .probe_statuses(&verdicts)
        .iter()
        .map(|(key, p)| {
            json!({
                "probe": key.to_string(),
                "accepted": p.accepted.as_ref().err().map_or_else(|| json!(true), |e| json!(e)),
                "resolved": match &p.resolved_refs { Some(Ok(())) => json!(true), Some(Err(e)) => json!(e.message), None => Value::Null },
                "conflicted": p.conflicted,
                "matched_endpoints": p.matched_endpoints,
                "healthy_endpoints": p.healthy_endpoints,
                "unhealthy_endpoints": p.unhealthy_endpoints,
            })
        })
        .collect();
    let ignored: Vec<Value> =
        model.diagnostics.iter().map(|d| json!({"object": d.object, "reason": d.message})).collect();
    Ok(Json(json!({"services": services, "probes": probes, "ignored": ignored})))
}

/// HDS: checkers, and per endpoint its checkers, their last reports and the verdict.
pub async fn hds(State(state): State<AdminState>) -> Result<Json<crate::hds::HubView>, (StatusCode, String)> {
    let hub = state.hds.ok_or((
        StatusCode::NOT_FOUND,
        "HDS is off: start edgexds with --active-health-checks hds or both\n".to_owned(),
    ))?;
    Ok(Json(hub.view(std::time::Instant::now())))
}
