//! The etcd implementation of the store (`backend.rs`), over the `etcd-client` crate.
//!
//! Every conditional write is one etcd `Txn`: create compares `version == 0`, update and
//! delete compare `mod_revision == expected`; the else-branch reads the key back so the
//! caller can tell "gone" from "changed". Watches run in a task that owns the etcd watch
//! stream, asks for progress notifications on a timer (bookmarks) and ends when the
//! receiver is dropped.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, KeyValue, KvClient, Txn,
    TxnOp, TxnOpResponse, WatchClient, WatchOptions,
};
use tokio::sync::mpsc;

use crate::backend::{prefix_end, BackendError, Cas, Change, Created, Kv, Page};

/// The KV and watch clients only: a request clones one of them, not the whole `Client`
/// (eight gRPC clients), which showed up in profiles of `knetsim bench api`.
#[derive(Clone)]
pub struct EtcdBackend {
    kv: KvClient,
    watch: WatchClient,
}

fn kv(k: &KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(k.key()).into_owned(),
        value: k.value().to_vec(),
        mod_revision: k.mod_revision(),
    }
}

impl EtcdBackend {
    pub async fn connect(endpoints: &[String]) -> Result<Self, BackendError> {
        let client = Client::connect(endpoints, None)
            .await
            .map_err(BackendError::Etcd)?;
        Ok(EtcdBackend {
            kv: client.kv_client(),
            watch: client.watch_client(),
        })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Kv>, BackendError> {
        let mut c = self.kv.clone();
        let resp = c.get(key, None).await.map_err(BackendError::Etcd)?;
        Ok(resp.kvs().first().map(kv))
    }

    pub async fn list(
        &self,
        prefix: &str,
        start: &str,
        revision: Option<i64>,
        limit: i64,
    ) -> Result<Page, BackendError> {
        let mut c = self.kv.clone();
        let from = if start.is_empty() { prefix } else { start };
        let mut opts = GetOptions::new().with_range(prefix_end(prefix));
        if let Some(r) = revision {
            opts = opts.with_revision(r);
        }
        if limit > 0 {
            opts = opts.with_limit(limit);
        }
        let resp = match c.get(from, Some(opts)).await {
            Ok(r) => r,
            Err(e) => {
                // etcd answers a read at a compacted revision with OutOfRange.
                if let (Some(r), true) = (revision, e.to_string().contains("compacted")) {
                    return Err(BackendError::Compacted {
                        requested: r,
                        compacted: r,
                    });
                }
                return Err(BackendError::Etcd(e));
            }
        };
        let header_rev = resp
            .header()
            .map(|h| h.revision())
            .ok_or(BackendError::Malformed("range response without header"))?;
        let items: Vec<Kv> = resp.kvs().iter().map(kv).collect();
        let remaining = (resp.count() - items.len() as i64).max(0);
        Ok(Page {
            items,
            revision: revision.unwrap_or(header_rev),
            remaining,
        })
    }

    async fn txn(&self, key: &str, compare: Compare, op: TxnOp) -> Result<Cas, BackendError> {
        let mut c = self.kv.clone();
        let txn = Txn::new()
            .when([compare])
            .and_then([op])
            .or_else([TxnOp::get(key, None)]);
        let resp = c.txn(txn).await.map_err(BackendError::Etcd)?;
        if resp.succeeded() {
            let rev = resp
                .header()
                .map(|h| h.revision())
                .ok_or(BackendError::Malformed("txn response without header"))?;
            return Ok(Cas::Done(rev));
        }
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g.kvs().first().map(kv)),
            _ => None,
        });
        Ok(Cas::Failed(current.flatten()))
    }

    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<Cas, BackendError> {
        let cmp = Compare::version(key, CompareOp::Equal, 0);
        self.txn(key, cmp, TxnOp::put(key, value, None)).await
    }

    /// Put `key` if it is absent and `parent` exists; else tell which failed.
    pub async fn create_in(
        &self,
        key: &str,
        value: Vec<u8>,
        parent: &str,
    ) -> Result<Created, BackendError> {
        let mut c = self.kv.clone();
        let txn = Txn::new()
            .when([
                Compare::version(key, CompareOp::Equal, 0),
                Compare::version(parent, CompareOp::Greater, 0),
            ])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, Some(GetOptions::new().with_count_only()))]);
        let resp = c.txn(txn).await.map_err(BackendError::Etcd)?;
        if resp.succeeded() {
            let rev = resp
                .header()
                .map(|h| h.revision())
                .ok_or(BackendError::Malformed("txn response without header"))?;
            return Ok(Created::Done(rev));
        }
        let exists = resp.op_responses().into_iter().any(|r| match r {
            TxnOpResponse::Get(g) => g.count() > 0,
            _ => false,
        });
        Ok(if exists {
            Created::Exists
        } else {
            Created::NoParent
        })
    }

    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
    ) -> Result<Cas, BackendError> {
        let cmp = Compare::mod_revision(key, CompareOp::Equal, expected);
        self.txn(key, cmp, TxnOp::put(key, value, None)).await
    }

    pub async fn delete(&self, key: &str, expected: i64) -> Result<Cas, BackendError> {
        let cmp = Compare::mod_revision(key, CompareOp::Equal, expected);
        let op = TxnOp::delete(key, Some(DeleteOptions::new()));
        self.txn(key, cmp, op).await
    }

    pub async fn watch(
        &self,
        prefix: &str,
        start: i64,
        progress: Option<Duration>,
    ) -> Result<mpsc::Receiver<Result<Change, BackendError>>, BackendError> {
        let mut c = self.watch.clone();
        let mut opts = WatchOptions::new()
            .with_range(prefix_end(prefix))
            .with_prev_key()
            .with_progress_notify();
        if start > 0 {
            opts = opts.with_start_revision(start);
        }
        let stream = c
            .watch(prefix, Some(opts))
            .await
            .map_err(BackendError::Etcd)?;
        let (mut requests, mut responses) = stream.split();
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            let period = progress.unwrap_or(Duration::from_secs(3600));
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tokio::select! {
                    msg = responses.message() => {
                        let resp = match msg {
                            Ok(Some(r)) => r,
                            Ok(None) => return,
                            Err(e) => {
                                let _ = tx.send(Err(BackendError::Etcd(e))).await;
                                return;
                            }
                        };
                        if resp.compact_revision() > 0 {
                            let _ = tx.send(Err(BackendError::Compacted {
                                requested: start,
                                compacted: resp.compact_revision(),
                            })).await;
                            return;
                        }
                        if resp.canceled() {
                            return;
                        }
                        if resp.events().is_empty() && !resp.created() {
                            if let Some(h) = resp.header() {
                                if tx.send(Ok(Change::Progress { revision: h.revision() })).await.is_err() {
                                    return;
                                }
                            }
                        }
                        for ev in resp.events() {
                            let change = match (ev.event_type(), ev.kv(), ev.prev_kv()) {
                                (EventType::Put, Some(k), prev) => Change::Put { kv: kv(k), prev: prev.map(kv) },
                                (EventType::Delete, Some(k), Some(prev)) => Change::Delete {
                                    prev: kv(prev),
                                    revision: k.mod_revision(),
                                },
                                // A delete without its previous value cannot be rendered.
                                _ => continue,
                            };
                            if tx.send(Ok(change)).await.is_err() {
                                return;
                            }
                        }
                    }
                    _ = ticker.tick(), if progress.is_some() => {
                        if requests.request_progress().await.is_err() {
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(rx)
    }
}
