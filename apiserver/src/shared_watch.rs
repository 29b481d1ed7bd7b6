//! One store watch per resource, shared by every HTTP watch of it, as kube-apiserver's
//! cacher keeps one etcd watch per resource and fans its events out.
//!
//! Without it every watcher (controller-manager informers, each kubelet, each kube-proxy,
//! DNS, …) had an etcd watch of its own: etcd read each event's previous value and sent it
//! once per watcher, and under a burst of writes that work competed with the writes.
//!
//! A resource's shared watch starts at the start revision of its first HTTP watch and keeps
//! the last `BUFFER` changes, so a later watch whose start revision the buffer still covers
//! gets its backlog from memory and then the live changes; the buffer is copied and the
//! subscription taken under one lock the pump also holds while it appends and sends, so no
//! change is missed or sent twice. A watch from further back than the buffer reaches (rare:
//! clients watch from the version of a recent list) gets a store watch of its own, which is
//! also what tells a compacted version (410). A subscriber that falls more than `BUFFER`
//! changes behind is ended, and its client watches again from its last version, as
//! kube-apiserver ends a watcher too slow for its cacher. When the store watch fails (etcd
//! restarts), every subscriber ends and the next watch starts a new shared one.
//!
//! Each change is decoded once, by the first watcher that needs it (`Event::decoded`), and
//! the others match their selectors against that: a kubelet's watch of its node's Pods no
//! longer parses every Pod of the cluster. Plain JSON watches need not parse it at all: they
//! read what their selectors ask for from the stored bytes, and send the object spliced
//! from them once for all (`Event::object_json`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::{broadcast, mpsc};

use serde_json::Value;

use crate::backend::{change_key, Backend, BackendError, Change};
use crate::error::AppError;
use crate::storage::{meta_mut, Store};

/// Changes kept per resource for watches that start a little in the past, and the most a
/// subscriber may fall behind.
const BUFFER: usize = 8192;

/// A subscriber's end of a shared watch.
type Subscription = broadcast::Receiver<Message>;

/// What a watch receives: a change, or the store's error.
pub type Received = Result<Arc<Event>, BackendError>;

/// What the pump sends its subscribers.
#[derive(Debug, Clone)]
enum Message {
    Change(Arc<Event>),
    /// The store watch's start revision has been compacted.
    Compacted {
        requested: i64,
        compacted: i64,
    },
}

/// One change, shared by every watcher that gets it.
#[derive(Debug)]
pub struct Event {
    pub change: Change,
    decoded: OnceLock<Result<Decoded, String>>,
    /// The object as a plain JSON watch sends it (`Event::object_json`).
    object_json: OnceLock<Option<Bytes>>,
}

/// A change's objects, resourceVersion stamped.
#[derive(Debug)]
pub struct Decoded {
    /// The object now; for a deletion, the object as it was, at the deletion's revision.
    pub current: Value,
    /// The object before a put (None: it is new).
    pub previous: Option<Value>,
}

impl Event {
    pub fn new(change: Change) -> Self {
        Event {
            change,
            decoded: OnceLock::new(),
            object_json: OnceLock::new(),
        }
    }

    /// The change's object (for a deletion, the object as it was, at the deletion's
    /// revision) as JSON, written once from the stored bytes with its resourceVersion set,
    /// for every plain JSON watch that sends it; None for a progress notification, or a
    /// stored value the splicer does not understand (then the watch writes `decoded`).
    pub fn object_json(&self) -> Option<&Bytes> {
        self.object_json
            .get_or_init(|| {
                let (stored, revision) = match &self.change {
                    Change::Put { kv, .. } => (&kv.value, kv.mod_revision),
                    Change::Delete { prev, revision } => (&prev.value, *revision),
                    Change::Progress { .. } => return None,
                };
                crate::rawlist::object(stored, revision).map(Bytes::from)
            })
            .as_ref()
    }

    /// The change's objects, decoded by the first caller; None for a progress notification.
    pub fn decoded(&self, store: &Store) -> Result<Option<&Decoded>, AppError> {
        if matches!(self.change, Change::Progress { .. }) {
            return Ok(None);
        }
        let decoded = self.decoded.get_or_init(|| {
            let decode = |kv| store.decode(kv).map_err(|e| e.to_string());
            match &self.change {
                Change::Put { kv, prev } => Ok(Decoded {
                    current: decode(kv)?,
                    previous: prev.as_ref().map(decode).transpose()?,
                }),
                Change::Delete { prev, revision } => {
                    let mut current = decode(prev)?;
                    meta_mut(&mut current)
                        .insert("resourceVersion".into(), revision.to_string().into());
                    Ok(Decoded {
                        current,
                        previous: None,
                    })
                }
                Change::Progress { .. } => Err("a progress notification has no object".into()),
            }
        });
        decoded
            .as_ref()
            .map(Some)
            .map_err(|e| AppError::Internal(e.clone()))
    }
}

/// The shared watches, one per resource key prefix; cheap to clone.
#[derive(Clone, Default)]
pub struct SharedWatches {
    resources: Arc<tokio::sync::Mutex<HashMap<String, Arc<Shared>>>>,
}

struct Shared {
    buffer: Mutex<Buffer>,
    sender: broadcast::Sender<Message>,
}

struct Buffer {
    changes: VecDeque<Arc<Event>>,
    /// Every change at or after this revision is in `changes` or still to come.
    complete_from: i64,
    ended: bool,
}

/// The revision a change is at (a progress notification: the revision it vouches for).
fn revision_of(c: &Change) -> i64 {
    match c {
        Change::Put { kv, .. } => kv.mod_revision,
        Change::Delete { revision, .. } => *revision,
        Change::Progress { revision } => *revision,
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        // A poisoned lock means a pump panicked mid-append; the buffer is still consistent.
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SharedWatches {
    /// Changes under `prefix` (within the resource's `resource_prefix`) from revision `start`,
    /// with a `Change::Progress` at the shared watch's `progress` interval when
    /// `bookmarks`; the same contract as `Backend::watch`.
    pub async fn watch(
        &self,
        backend: &Backend,
        resource_prefix: &str,
        prefix: &str,
        start: i64,
        progress: Duration,
        bookmarks: bool,
    ) -> Result<mpsc::Receiver<Received>, BackendError> {
        let shared = {
            let mut resources = self.resources.lock().await;
            let live = resources
                .get(resource_prefix)
                .filter(|s| !s.lock().ended)
                .cloned();
            match live {
                Some(s) => s,
                None => {
                    let s = self
                        .start(backend, resource_prefix, start, progress)
                        .await?;
                    resources.insert(resource_prefix.to_string(), s.clone());
                    s
                }
            }
        };
        let (tx, rx) = mpsc::channel(1024);
        let Some((backlog, receiver)) = subscribe(&shared, start) else {
            // Older than what is kept: a store watch of its own.
            let own = backend
                .watch(prefix, start, bookmarks.then_some(progress))
                .await?;
            tokio::spawn(wrap(own, tx));
            return Ok(rx);
        };
        let prefix = prefix.to_string();
        tokio::spawn(forward(backlog, receiver, tx, prefix, start, bookmarks));
        Ok(rx)
    }

    /// A store watch of the whole resource from `start`, and the task that pumps it.
    async fn start(
        &self,
        backend: &Backend,
        resource_prefix: &str,
        start: i64,
        progress: Duration,
    ) -> Result<Arc<Shared>, BackendError> {
        let changes = backend
            .watch(resource_prefix, start, Some(progress))
            .await?;
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Buffer {
                changes: VecDeque::new(),
                complete_from: start,
                ended: false,
            }),
            sender: broadcast::channel(BUFFER).0,
        });
        tokio::spawn(pump(
            changes,
            shared.clone(),
            self.resources.clone(),
            resource_prefix.to_string(),
        ));
        Ok(shared)
    }
}

/// The kept changes and a subscription to the ones to come, taken together; None if the
/// changes from `start` on are no longer all kept.
fn subscribe(shared: &Shared, start: i64) -> Option<(Vec<Arc<Event>>, Subscription)> {
    let buffer = shared.lock();
    if buffer.complete_from > start || buffer.ended {
        return None;
    }
    let backlog = buffer.changes.iter().cloned().collect();
    Some((backlog, shared.sender.subscribe()))
}

/// Move the store's changes into the buffer and out to the subscribers, until the store
/// watch ends; then end the subscribers and forget this shared watch.
async fn pump(
    mut changes: mpsc::Receiver<Result<Change, BackendError>>,
    shared: Arc<Shared>,
    resources: Arc<tokio::sync::Mutex<HashMap<String, Arc<Shared>>>>,
    resource_prefix: String,
) {
    loop {
        let message = match changes.recv().await {
            Some(Ok(change)) => Message::Change(Arc::new(Event::new(change))),
            Some(Err(BackendError::Compacted {
                requested,
                compacted,
            })) => Message::Compacted {
                requested,
                compacted,
            },
            Some(Err(e)) => {
                tracing::warn!(resource = %resource_prefix, error = %e, "shared watch: store watch failed; its watches end and clients watch again");
                break;
            }
            None => break,
        };
        let mut buffer = shared.lock();
        match &message {
            Message::Change(event) if matches!(event.change, Change::Progress { .. }) => {}
            Message::Change(event) => {
                buffer.changes.push_back(event.clone());
                if buffer.changes.len() > BUFFER {
                    if let Some(oldest) = buffer.changes.pop_front() {
                        buffer.complete_from = revision_of(&oldest.change) + 1;
                    }
                }
            }
            Message::Compacted { .. } => buffer.ended = true,
        }
        // No subscriber is not an error: the buffer is kept for the next one.
        let _ = shared.sender.send(message);
        if buffer.ended {
            break;
        }
    }
    shared.lock().ended = true;
    let mut resources = resources.lock().await;
    if resources
        .get(&resource_prefix)
        .is_some_and(|s| Arc::ptr_eq(s, &shared))
    {
        resources.remove(&resource_prefix);
    }
    // Dropping `shared` here (and the last sender with it) ends every subscriber.
}

/// One subscriber: its backlog, then the live changes, under its own `prefix` and from its
/// own `start`.
async fn forward(
    backlog: Vec<Arc<Event>>,
    mut receiver: Subscription,
    tx: mpsc::Sender<Received>,
    prefix: String,
    start: i64,
    bookmarks: bool,
) {
    let wanted = |message: &Message| -> Option<Received> {
        match message {
            Message::Change(event) => {
                let wanted = match &event.change {
                    // A bookmark never claims less than the client already has.
                    Change::Progress { revision } => bookmarks && *revision + 1 >= start,
                    c => revision_of(c) >= start && change_key(c).starts_with(&prefix),
                };
                wanted.then(|| Ok(event.clone()))
            }
            Message::Compacted {
                requested,
                compacted,
            } => Some(Err(BackendError::Compacted {
                requested: *requested,
                compacted: *compacted,
            })),
        }
    };
    for event in backlog {
        if let Some(item) = wanted(&Message::Change(event)) {
            if tx.send(item).await.is_err() {
                return;
            }
        }
    }
    loop {
        let message = tokio::select! {
            m = receiver.recv() => m,
            _ = tx.closed() => return,
        };
        match message {
            Ok(message) => {
                if let Some(item) = wanted(&message) {
                    let end = item.is_err();
                    if tx.send(item).await.is_err() || end {
                        return;
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::info!(
                    prefix,
                    missed,
                    "shared watch: a watcher fell behind; it is ended and its client watches again"
                );
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A store watch of its own, passed on as shared events.
async fn wrap(mut own: mpsc::Receiver<Result<Change, BackendError>>, tx: mpsc::Sender<Received>) {
    loop {
        let item = tokio::select! {
            item = own.recv() => item,
            _ = tx.closed() => return,
        };
        let Some(item) = item else { return };
        if tx
            .send(item.map(|c| Arc::new(Event::new(c))))
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    /// A watch without bookmarks from `start` of `prefix`, in resource `/r/`.
    async fn watch(
        shared: &SharedWatches,
        backend: &Backend,
        prefix: &str,
        start: i64,
    ) -> mpsc::Receiver<Received> {
        let hour = Duration::from_secs(3600);
        shared
            .watch(backend, "/r/", prefix, start, hour, false)
            .await
            .expect("watch")
    }

    async fn next_key(rx: &mut mpsc::Receiver<Received>) -> String {
        match rx.recv().await {
            Some(Ok(e)) => change_key(&e.change).to_string(),
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn watchers_share_one_store_watch_and_keep_their_own_start_and_prefix() {
        let backend = Backend::Memory(MemoryBackend::default());
        let shared = SharedWatches::default();
        backend.create("/r/a/1", b"{}".to_vec()).await.expect("put");
        let mut all = watch(&shared, &backend, "/r/", 1).await;
        assert_eq!(next_key(&mut all).await, "/r/a/1");
        backend.create("/r/b/2", b"{}".to_vec()).await.expect("put");
        assert_eq!(next_key(&mut all).await, "/r/b/2");
        // Starts after the first change, in namespace a: from the buffer, then live.
        let mut in_a = watch(&shared, &backend, "/r/a/", 2).await;
        backend.create("/r/a/3", b"{}".to_vec()).await.expect("put");
        assert_eq!(next_key(&mut in_a).await, "/r/a/3");
        assert_eq!(next_key(&mut all).await, "/r/a/3");
        assert_eq!(shared.resources.lock().await.len(), 1);
    }

    #[tokio::test]
    async fn a_watch_from_before_the_shared_one_gets_its_own() {
        let backend = Backend::Memory(MemoryBackend::default());
        let shared = SharedWatches::default();
        backend.create("/r/1", b"{}".to_vec()).await.expect("put");
        backend.create("/r/2", b"{}".to_vec()).await.expect("put");
        let mut late = watch(&shared, &backend, "/r/", 2).await;
        assert_eq!(next_key(&mut late).await, "/r/2");
        let mut early = watch(&shared, &backend, "/r/", 1).await;
        assert_eq!(next_key(&mut early).await, "/r/1");
        assert_eq!(next_key(&mut early).await, "/r/2");
    }

    #[test]
    fn an_event_is_decoded_once_and_a_deletion_is_at_its_revision() {
        let store = Store::new(Backend::Memory(MemoryBackend::default()), "/registry");
        let kv = crate::backend::Kv {
            key: "/registry/configmaps/d/c".into(),
            value: br#"{"kind":"ConfigMap","metadata":{"name":"c"}}"#.to_vec(),
            mod_revision: 4,
        };
        let deleted = Event::new(Change::Delete {
            prev: kv,
            revision: 9,
        });
        let first = deleted
            .decoded(&store)
            .expect("decodes")
            .expect("an object");
        let again = deleted
            .decoded(&store)
            .expect("decodes")
            .expect("an object");
        assert!(std::ptr::eq(first, again));
        assert_eq!(first.current["metadata"]["resourceVersion"], "9");
        let progress = Event::new(Change::Progress { revision: 9 });
        assert!(progress.decoded(&store).expect("no error").is_none());
    }
}
