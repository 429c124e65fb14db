//! Writes HealthProbe status back to the API server with server-side apply.
//!
//! Each resolved model is compared with the status the API server holds (as the
//! watch saw it); only differences are written. The content is a pure function
//! of the model, so replicas write the same thing and server-side apply turns
//! the repeat into a no-op: no flapping and no write loop.
//!
//! A write's echo comes back through the watch some time after the write. Until it
//! does, the status just written is the baseline, not the older one the watch still
//! shows: otherwise every model change in between (the echo of another probe's write is
//! one) writes the same probe again. A real API server showed this: two replicas wrote
//! two probes five times.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::kubernetes::crd::{HealthProbe as KubeHealthProbe, HealthProbeStatus};
use crate::kubernetes::metrics::KubeMetrics;
use crate::kubernetes::probe_conditions;
use crate::model::ObjectKey;
use crate::pipeline::{VerdictReceiver, verdicts_changed};
use crate::shutdown::{self, Shutdown};

pub const FIELD_MANAGER: &str = "edgexds";
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a write's echo may take before the watch's view is trusted again.
const ECHO_WAIT: Duration = Duration::from_secs(5);

/// The statuses the API server holds, as the watch saw them, by probe.
pub type ProbeStatuses = Arc<BTreeMap<ObjectKey, Arc<HealthProbeStatus>>>;

/// `verdicts` (with HDS) count into each probe's healthy and unhealthy endpoints.
pub async fn run(
    client: Client,
    mut models: crate::pipeline::ModelReceiver,
    mut verdicts: Option<VerdictReceiver>,
    mut current: watch::Receiver<ProbeStatuses>,
    metrics: KubeMetrics,
    mut shutdown: Shutdown,
) {
    let resource = ApiResource::erase::<KubeHealthProbe>(&());
    let mut retry = false;
    let mut awaiting_echo: BTreeMap<ObjectKey, (Arc<HealthProbeStatus>, Instant)> = BTreeMap::new();
    loop {
        tokio::select! {
            changed = models.changed() => if changed.is_err() { return },
            // Someone else changed a status (another replica, a person): compare again.
            changed = current.changed() => if changed.is_err() { return },
            changed = verdicts_changed(&mut verdicts) => if changed.is_err() { verdicts = None },
            () = tokio::time::sleep(RETRY_AFTER), if retry => {}
            () = shutdown::requested(&mut shutdown) => return,
        }
        let Some(model) = models.borrow_and_update().clone() else { continue };
        let probes = match verdicts.as_mut() {
            Some(verdicts) => model.probe_statuses(&verdicts.borrow_and_update()),
            None => model.probes.clone(),
        };
        retry = false;
        let now = crate::timestamp::rfc3339(std::time::SystemTime::now());
        let held = current.borrow_and_update().clone();
        awaiting_echo.retain(|key, (written, at)| at.elapsed() < ECHO_WAIT && held.get(key) != Some(written));
        for (key, probe) in &probes {
            let baseline = awaiting_echo.get(key).map(|(written, _)| written).or(held.get(key));
            let Some(desired) = probe_conditions::desired(probe, baseline.map(|s| &**s), &now) else { continue };
            match write(&client, &resource, key, &desired).await {
                Ok(()) => {
                    awaiting_echo.insert(key.clone(), (Arc::new(desired), Instant::now()));
                    metrics.status_write("written");
                    debug!(probe = %key, "status written");
                }
                // Deleted meanwhile: nothing to report on.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(error) => {
                    metrics.status_write("failed");
                    warn!(probe = %key, %error, "cannot write status; will retry");
                    retry = true;
                }
            }
        }
    }
}

async fn write(
    client: &Client,
    resource: &ApiResource,
    key: &ObjectKey,
    status: &HealthProbeStatus,
) -> kube::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &key.namespace, resource);
    let patch = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "status": status,
    });
    api.patch_status(&key.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}
