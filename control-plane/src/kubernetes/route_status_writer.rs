//! Writes the `status.parents` entries of HTTPRoutes and GRPCRoutes for their Service parents
//! with server-side apply, as HealthProbe status is written: only what differs from what the
//! API server holds, the same from every replica.
//!
//! The list is shared with other controllers and atomic, so each write carries the whole list
//! ([`route_conditions::desired`]) and the resourceVersion it was built from: the API server
//! refuses it (409) if anyone wrote meanwhile, and the next watch event brings the list to
//! build from again. Until a write's echo arrives, the route is not written again from the
//! view the write replaced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::kubernetes::gateway;
use crate::kubernetes::metrics::KubeMetrics;
use crate::kubernetes::route_conditions::{self, HeldRouteStatus};
use crate::kubernetes::status_writer::FIELD_MANAGER;
use crate::model::{ObjectKind, RouteId, SourceState, route_status};
use crate::pipeline::StateReceiver;
use crate::shutdown::{self, Shutdown};

/// The route statuses the API server holds, as the watch saw them.
pub type RouteStatuses = Arc<BTreeMap<RouteId, Arc<HeldRouteStatus>>>;

const RETRY_AFTER: Duration = Duration::from_secs(5);
const ECHO_WAIT: Duration = Duration::from_secs(5);

pub async fn run(
    client: Client,
    mut states: StateReceiver,
    mut held: watch::Receiver<RouteStatuses>,
    metrics: KubeMetrics,
    mut shutdown: Shutdown,
) {
    let mut retry = false;
    // The resourceVersion each write was built from, while its echo is awaited.
    let mut awaiting_echo: BTreeMap<RouteId, (Option<String>, Instant)> = BTreeMap::new();
    let mut last: Option<(Arc<SourceState>, RouteStatuses)> = None;
    loop {
        tokio::select! {
            changed = states.changed() => if changed.is_err() { return },
            changed = held.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RETRY_AFTER), if retry => {}
            () = shutdown::requested(&mut shutdown) => return,
        }
        let Some(state) = states.borrow_and_update().clone() else { continue };
        let routes_held = held.borrow_and_update().clone();
        // Endpoints change far more often than routes and Services, and status reads neither.
        let same_inputs = last.as_ref().is_some_and(|(state_then, held_then)| {
            state_then.routes.ptr_eq(&state.routes)
                && state_then.services.ptr_eq(&state.services)
                && Arc::ptr_eq(held_then, &routes_held)
        });
        if same_inputs && !retry && awaiting_echo.is_empty() {
            continue;
        }
        last = Some((state.clone(), routes_held.clone()));
        retry = false;
        let now = crate::timestamp::rfc3339(std::time::SystemTime::now());
        awaiting_echo.retain(|id, (based_on, at)| {
            at.elapsed() < ECHO_WAIT && routes_held.get(id).map(|h| &h.resource_version) == Some(based_on)
        });
        for (id, route_held) in routes_held.iter() {
            if awaiting_echo.contains_key(id) {
                continue;
            }
            let route = state.routes.get(id);
            let statuses = route.map(|r| route_status(r, &state.services)).unwrap_or_default();
            let generation = route.and_then(|r| r.generation).or(route_held.generation);
            let Some(parents) = route_conditions::desired(&statuses, generation, route_held, &now) else { continue };
            match write(&client, id, route_held.resource_version.as_deref(), parents).await {
                Ok(()) => {
                    awaiting_echo.insert(id.clone(), (route_held.resource_version.clone(), Instant::now()));
                    metrics.route_status_write("written");
                    debug!(route = %id.1, "route status written");
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                // Written by someone else meanwhile: the watch brings the new list to build from.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    metrics.route_status_write("conflict");
                    debug!(route = %id.1, "route changed while its status was written; will build again");
                    retry = true;
                }
                Err(error) => {
                    metrics.route_status_write("failed");
                    warn!(route = %id.1, %error, "cannot write route status; will retry");
                    retry = true;
                }
            }
        }
    }
}

async fn write(
    client: &Client,
    (kind, key): &RouteId,
    resource_version: Option<&str>,
    parents: Vec<serde_json::Value>,
) -> kube::Result<()> {
    let kind = ObjectKind::from(*kind).name();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(gateway::GROUP, "v1", kind));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &key.namespace, &resource);
    let patch = json!({
        "apiVersion": resource.api_version,
        "kind": kind,
        "metadata": { "name": &*key.name, "namespace": &*key.namespace, "resourceVersion": resource_version },
        "status": { "parents": parents },
    });
    api.patch_status(&key.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}
