//! What a stream shows of itself to operators (`/debug/proxies`, `proxy-status`, CSDS),
//! without anyone reaching into its state: after each response and each answer it
//! publishes a small [`StreamView`] (node, versions sent and acknowledged, the last NACK),
//! and what it holds, name by name, it lists on its own task when asked.
//!
//! The names a proxy holds are not kept in the view: a copy at rest would cost about 32 kB
//! per Envoy on 1,000 Services (32 MB at 1,000 Envoys), and recomputing it after every
//! response would cost a walk of everything held per response. Asked, a stream answers
//! between two of its own steps, so no lock is shared with it and no stream waits on an
//! operator.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::{mpsc, oneshot, watch};

use super::StreamKind;
use super::kind::Flavour;
use crate::auth::Identity;
use crate::cache::ResourceType;

/// How long an operator's question waits for a stream's answer. A stream answers between
/// two of its own steps, which take microseconds; one that does not is reported without it.
pub const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// A response the client has been sent, by nonce.
#[derive(Clone, Debug)]
pub struct Sent {
    pub nonce: String,
    /// The type version of the snapshot the response was built from.
    pub version: String,
    pub at: std::time::Instant,
    pub wall: SystemTime,
}

#[derive(Clone, Debug)]
pub struct Nack {
    pub nonce: String,
    pub version: String,
    pub message: String,
    pub wall: SystemTime,
}

/// One type as a stream last published it.
#[derive(Clone, Debug, Default)]
pub struct TypeView {
    pub wildcard: bool,
    /// Names subscribed by name.
    pub names: usize,
    pub sent: Option<Arc<Sent>>,
    pub acked: Option<Arc<Sent>>,
    pub last_nack: Option<Arc<Nack>>,
}

impl TypeView {
    /// A response is outstanding: sent, neither ACKed nor NACKed yet.
    pub fn pending(&self) -> Option<&Sent> {
        let answered = |nonce: &str| {
            self.acked.as_ref().is_some_and(|a| a.nonce == nonce)
                || self.last_nack.as_ref().is_some_and(|n| n.nonce == nonce)
        };
        self.sent.as_deref().filter(|s| !answered(&s.nonce))
    }

    /// The latest response was rejected.
    pub fn nacked(&self) -> bool {
        matches!((&self.sent, &self.last_nack), (Some(s), Some(n)) if s.nonce == n.nonce)
    }
}

/// A stream as it last published itself.
#[derive(Clone, Debug)]
pub struct StreamView {
    pub kind: StreamKind,
    pub flavour: Flavour,
    /// The node of its first request, as kept; `None` before it.
    pub node: Option<Arc<Node>>,
    pub identity: Option<Identity>,
    pub connected_at: SystemTime,
    pub types: [Option<TypeView>; ResourceType::COUNT],
    /// Requests handled, and responses sent, since the stream opened.
    pub requests: u64,
    pub responses: u64,
    /// Something is still to be looked at or sent; `false` once the stream is idle.
    pub busy: bool,
    /// Where the client is, and who said so.
    pub place: crate::model::ResolvedPlace,
}

impl StreamView {
    pub fn node_id(&self) -> &str {
        self.node.as_ref().map_or("", |n| n.id.as_str())
    }

    pub fn type_view(&self, ty: ResourceType) -> Option<&TypeView> {
        self.types[ty.index()].as_ref()
    }
}

/// What a stream's client holds, per type: each name with the version hash it holds.
pub type Holdings = [Option<Vec<(Arc<str>, u64)>>; ResourceType::COUNT];

/// An operator's question to one stream: what its client holds.
pub type Question = oneshot::Sender<Holdings>;

/// The registry's side of one stream: its view, and a way to ask it what it holds.
#[derive(Clone)]
pub struct StreamHandle {
    view: watch::Receiver<Arc<StreamView>>,
    questions: mpsc::Sender<Question>,
}

impl StreamHandle {
    /// A handle, and the stream's side: where it publishes, and where questions arrive.
    /// A few questions wait at a time; more are not answered rather than queued.
    pub fn new(first: StreamView) -> (Self, watch::Sender<Arc<StreamView>>, mpsc::Receiver<Question>) {
        let (publish, view) = watch::channel(Arc::new(first));
        let (questions, asked) = mpsc::channel(4);
        (Self { view, questions }, publish, asked)
    }

    pub fn view(&self) -> Arc<StreamView> {
        self.view.borrow().clone()
    }

    /// What the stream's client holds, if the stream answers within [`ANSWER_WAIT`].
    pub async fn holdings(&self) -> Option<Holdings> {
        let (reply, answer) = oneshot::channel();
        self.questions.try_send(reply).ok()?;
        tokio::time::timeout(ANSWER_WAIT, answer).await.ok()?.ok()
    }
}
