//! What happened to each pod and when, as the test kubelet saw it: tests check requests
//! against it (a request may land only on a pod that was ready then) and wait on it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodEvent {
    /// Its processes started at this address.
    Started(std::net::Ipv4Addr),
    /// Its Ready condition was written: true or false.
    Ready(bool),
    /// Its deletion was seen: it is terminating.
    Terminating,
    /// Its processes got SIGTERM (after any preStop sleep).
    SigTerm,
    /// Its processes are gone.
    Exited,
    /// It was removed from the API server, and its namespace deleted.
    Removed,
}

#[derive(Clone)]
pub struct Timeline {
    events: Arc<Mutex<Vec<(Instant, String, PodEvent)>>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self { events: Arc::default(), changed: Arc::new(watch::Sender::new(0)) }
    }
}

impl Timeline {
    /// Records `event` of pod `namespace/name`.
    pub fn record(&self, pod: &str, event: PodEvent) {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), pod.to_owned(), event));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Every event of pod `namespace/name`, oldest first.
    pub fn events(&self, pod: &str) -> Vec<(Instant, PodEvent)> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.iter().filter(|(_, p, _)| p == pod).map(|(at, _, e)| (*at, e.clone())).collect()
    }

    /// Pods of `namespace` with events, by name.
    pub fn pods(&self, namespace: &str) -> Vec<String> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let mut pods: Vec<String> =
            events.iter().filter_map(|(_, p, _)| p.strip_prefix(&format!("{namespace}/")).map(str::to_owned)).collect();
        pods.sort();
        pods.dedup();
        pods
    }

    /// Whether the pod was written Ready at `at` and its processes had not exited.
    pub fn ready_at(&self, pod: &str, at: Instant) -> bool {
        let mut ready = false;
        for (when, event) in self.events(pod) {
            if when > at {
                break;
            }
            match event {
                PodEvent::Ready(now) => ready = now,
                PodEvent::Exited | PodEvent::Removed => ready = false,
                _ => {}
            }
        }
        ready
    }

    /// When the pod's first event matching `what` happened.
    pub fn first(&self, pod: &str, what: impl Fn(&PodEvent) -> bool) -> Option<Instant> {
        self.events(pod).into_iter().find(|(_, e)| what(e)).map(|(at, _)| at)
    }

    /// Waits until `done` holds of the timeline, at most `limit`.
    pub async fn wait_until(&self, limit: Duration, what: &str, done: impl Fn(&Timeline) -> bool) {
        let mut changed = self.changed.subscribe();
        let waited = tokio::time::timeout(limit, async {
            while !done(self) {
                if changed.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out after {limit:?} waiting until {what}");
    }
}
