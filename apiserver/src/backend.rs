//! The key-value layer under the API: a real etcd in production, an in-memory store in
//! unit tests.
//!
//! Both speak etcd's model — one global revision, `mod_revision` per key, compare-and-swap
//! on `mod_revision`, watches that replay history from a start revision and fail with
//! "compacted" when that history is gone — so the object layer above (`storage.rs`) is the
//! same code either way. Dispatch is a plain `enum` (no trait objects needed for two cases).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use crate::etcd::EtcdBackend;

/// One stored key.
#[derive(Debug, Clone, PartialEq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// One page of a range read, at a single revision.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Kv>,
    /// The store revision the page was read at (the list's resourceVersion).
    pub revision: i64,
    /// Keys left after this page.
    pub remaining: i64,
}

/// The result of a compare-and-swap.
#[derive(Debug, Clone, PartialEq)]
pub enum Cas {
    /// Written; the revision of the write.
    Done(i64),
    /// The precondition failed; what is there now (None: the key is gone).
    Failed(Option<Kv>),
}

/// The outcome of `Backend::create_in`.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// Written; the revision of the write.
    Done(i64),
    /// The key is taken.
    Exists,
    /// The parent key does not exist.
    NoParent,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put {
        kv: Kv,
        prev: Option<Kv>,
    },
    Delete {
        prev: Kv,
        revision: i64,
    },
    /// Everything up to `revision` has been delivered (etcd progress notify).
    Progress {
        revision: i64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("etcd request failed: {0}")]
    Etcd(#[source] etcd_client::Error),
    #[error("revision {requested} has been compacted (oldest available {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("etcd returned a malformed response: {0}")]
    Malformed(&'static str),
}

/// The store behind the API server.
#[derive(Clone)]
pub enum Backend {
    // Shared: the enum is cloned with `AppState`, several times per request, and cloning the
    // etcd client itself (two gRPC clients) was 5% of the server's CPU under `bench api`.
    Etcd(Arc<EtcdBackend>),
    Memory(MemoryBackend),
}

/// The smallest key strictly greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Backend {
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, BackendError> {
        match self {
            Backend::Etcd(e) => e.get(key).await,
            Backend::Memory(m) => Ok(m.get(key)),
        }
    }

    /// Keys in `[start, end of prefix)`, at `revision` (None: now), at most `limit` (0: all).
    pub async fn list(
        &self,
        prefix: &str,
        start: &str,
        revision: Option<i64>,
        limit: i64,
    ) -> Result<Page, BackendError> {
        match self {
            Backend::Etcd(e) => e.list(prefix, start, revision, limit).await,
            Backend::Memory(m) => m.list(prefix, start, revision, limit),
        }
    }

    /// Create `key` only if absent.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<Cas, BackendError> {
        match self {
            Backend::Etcd(e) => e.create(key, value).await,
            Backend::Memory(m) => Ok(m.cas(key, Some(value), 0)),
        }
    }

    /// Create `key` only if absent and `parent` (an object's namespace) exists, in one
    /// transaction: no separate read of the namespace, and no window between the two.
    pub async fn create_in(
        &self,
        key: &str,
        value: Vec<u8>,
        parent: &str,
    ) -> Result<Created, BackendError> {
        match self {
            Backend::Etcd(e) => e.create_in(key, value, parent).await,
            Backend::Memory(m) => {
                if m.get(parent).is_none() {
                    return Ok(Created::NoParent);
                }
                Ok(match m.cas(key, Some(value), 0) {
                    Cas::Done(rev) => Created::Done(rev),
                    Cas::Failed(_) => Created::Exists,
                })
            }
        }
    }

    /// Replace `key` only if its mod_revision is still `expected`.
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
    ) -> Result<Cas, BackendError> {
        match self {
            Backend::Etcd(e) => e.update(key, value, expected).await,
            Backend::Memory(m) => Ok(m.cas(key, Some(value), expected)),
        }
    }

    /// Delete `key` only if its mod_revision is still `expected`.
    pub async fn delete(&self, key: &str, expected: i64) -> Result<Cas, BackendError> {
        match self {
            Backend::Etcd(e) => e.delete(key, expected).await,
            Backend::Memory(m) => Ok(m.cas(key, None, expected)),
        }
    }

    /// Stream changes under `prefix` from `start` (inclusive). The receiver gets
    /// `Err(Compacted)` and then ends when that history is gone. With `progress`, a
    /// `Change::Progress` arrives at that interval.
    pub async fn watch(
        &self,
        prefix: &str,
        start: i64,
        progress: Option<Duration>,
    ) -> Result<mpsc::Receiver<Result<Change, BackendError>>, BackendError> {
        match self {
            Backend::Etcd(e) => e.watch(prefix, start, progress).await,
            Backend::Memory(m) => Ok(m.watch(prefix, start, progress)),
        }
    }
}

/// An etcd-shaped store in memory, for tests.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Default)]
struct MemoryInner {
    revision: i64,
    compacted: i64,
    keys: BTreeMap<String, Kv>,
    history: Vec<(i64, Change)>,
    live: Option<broadcast::Sender<(i64, Change)>>,
}

impl MemoryBackend {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A poisoned lock only means a test panicked; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> Option<Kv> {
        self.lock().keys.get(key).cloned()
    }

    fn list(
        &self,
        prefix: &str,
        start: &str,
        revision: Option<i64>,
        limit: i64,
    ) -> Result<Page, BackendError> {
        let inner = self.lock();
        if let Some(r) = revision {
            if r < inner.compacted {
                return Err(BackendError::Compacted {
                    requested: r,
                    compacted: inner.compacted,
                });
            }
        }
        // Past revisions are not kept as snapshots; tests only page at the current one.
        let from = if start.is_empty() { prefix } else { start };
        let all: Vec<Kv> = inner
            .keys
            .range(from.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        let take = if limit > 0 { limit as usize } else { all.len() };
        let remaining = all.len().saturating_sub(take) as i64;
        Ok(Page {
            items: all.into_iter().take(take).collect(),
            revision: revision.unwrap_or(inner.revision),
            remaining,
        })
    }

    /// `expected` 0 means "must not exist"; `value` None means delete.
    fn cas(&self, key: &str, value: Option<Vec<u8>>, expected: i64) -> Cas {
        let mut inner = self.lock();
        let current = inner.keys.get(key).cloned();
        let matches = match &current {
            None => expected == 0 && value.is_some(),
            Some(kv) => kv.mod_revision == expected,
        };
        if !matches {
            return Cas::Failed(current);
        }
        inner.revision += 1;
        let revision = inner.revision;
        let change = match value {
            Some(value) => {
                let kv = Kv {
                    key: key.to_string(),
                    value,
                    mod_revision: revision,
                };
                inner.keys.insert(key.to_string(), kv.clone());
                Change::Put { kv, prev: current }
            }
            None => {
                inner.keys.remove(key);
                match current {
                    Some(prev) => Change::Delete { prev, revision },
                    None => return Cas::Failed(None),
                }
            }
        };
        inner.history.push((revision, change.clone()));
        if let Some(live) = &inner.live {
            let _ = live.send((revision, change));
        }
        Cas::Done(revision)
    }

    /// Forget history before `revision`, as `etcdctl compact` does.
    pub fn compact(&self, revision: i64) {
        let mut inner = self.lock();
        inner.compacted = revision;
        inner.history.retain(|(r, _)| *r >= revision);
    }

    fn watch(
        &self,
        prefix: &str,
        start: i64,
        progress: Option<Duration>,
    ) -> mpsc::Receiver<Result<Change, BackendError>> {
        let (tx, rx) = mpsc::channel(1024);
        let mut inner = self.lock();
        if start > 0 && start < inner.compacted {
            let _ = tx.try_send(Err(BackendError::Compacted {
                requested: start,
                compacted: inner.compacted,
            }));
            return rx;
        }
        let backlog: Vec<Change> = inner
            .history
            .iter()
            .filter(|(r, c)| *r >= start && change_key(c).starts_with(prefix))
            .map(|(_, c)| c.clone())
            .collect();
        let mut live = inner
            .live
            .get_or_insert_with(|| broadcast::channel(4096).0)
            .subscribe();
        let mut last = inner.revision;
        drop(inner);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            for c in backlog {
                if tx.send(Ok(c)).await.is_err() {
                    return;
                }
            }
            let period = progress.unwrap_or(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    msg = live.recv() => match msg {
                        Ok((rev, c)) => {
                            last = rev;
                            if change_key(&c).starts_with(&prefix) && tx.send(Ok(c)).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    },
                    _ = tokio::time::sleep(period), if progress.is_some() => {
                        if tx.send(Ok(Change::Progress { revision: last })).await.is_err() {
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        rx
    }
}

/// The key a change is about ("" for a progress notification).
pub(crate) fn change_key(c: &Change) -> &str {
    match c {
        Change::Put { kv, .. } => &kv.key,
        Change::Delete { prev, .. } => &prev.key,
        Change::Progress { .. } => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_cas_and_watch() {
        let b = Backend::Memory(MemoryBackend::default());
        assert_eq!(
            b.create("/a/1", b"x".to_vec()).await.ok(),
            Some(Cas::Done(1))
        );
        assert!(matches!(
            b.create("/a/1", b"y".to_vec()).await,
            Ok(Cas::Failed(Some(_)))
        ));
        assert!(matches!(
            b.update("/a/1", b"y".to_vec(), 7).await,
            Ok(Cas::Failed(Some(_)))
        ));
        assert_eq!(
            b.update("/a/1", b"y".to_vec(), 1).await.ok(),
            Some(Cas::Done(2))
        );
        let mut rx = b.watch("/a/", 2, None).await.expect("watch");
        match rx.recv().await {
            Some(Ok(Change::Put { kv, .. })) => assert_eq!(kv.value, b"y"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(b.delete("/a/1", 2).await.ok(), Some(Cas::Done(3)));
        assert!(matches!(
            rx.recv().await,
            Some(Ok(Change::Delete { revision: 3, .. }))
        ));
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
    }
}
