//! `?watch=true`: a stream of newline-delimited `{"type","object"}` events.
//!
//! A watch is a subscription to the resource's shared etcd watch (`shared_watch.rs`) from
//! `resourceVersion + 1`, so clients see exactly the events after the version they hold.
//! `resourceVersion` unset or `0` (and `sendInitialEvents=true`) first replays the current
//! objects as ADDED, as kube-apiserver does. Selectors are applied to both the new and the
//! previous value, so an object that stops matching arrives as DELETED and one that starts
//! matching as ADDED. A version older than etcd's compaction is a 410 `Expired`, sent as an
//! `ERROR` event of a 200 stream (also when it is seen before the stream starts), as
//! kube-apiserver sends it. Bookmarks come from
//! etcd progress notifications, so a bookmark never claims an event not yet sent.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::backend::{BackendError, Change};
use crate::error::AppError;
use crate::registry::ResourceInfo;
use crate::rest::{list_query, Target};
use crate::shared_watch::Event;
use crate::storage::{ListQuery, Store};
use crate::{table, AppState};

struct Encoder {
    info: &'static ResourceInfo,
    store: Store,
    query: ListQuery,
    table: bool,
    /// Metadata-only watches (`as=PartialObjectMetadata`).
    metadata_only: bool,
    /// Table watches send the column definitions once, in the first event.
    sent_columns: bool,
    bookmarks: bool,
}

impl Encoder {
    fn matches(&self, obj: &Value) -> bool {
        self.query.labels.matches(obj) && self.query.fields.matches(obj)
    }

    fn event(&mut self, kind: &str, mut obj: Value) -> Bytes {
        if kind != "ERROR" && kind != "BOOKMARK" {
            crate::crd::as_version(self.info, &mut obj);
        }
        let obj = if self.table && kind != "BOOKMARK" && kind != "ERROR" {
            let rv = crate::storage::meta_str(&obj, "resourceVersion").to_string();
            let mut t =
                table::to_table(self.info, &[obj], &rv, None, Some("PartialObjectMetadata"));
            if self.sent_columns {
                t["columnDefinitions"] = Value::Null;
            }
            self.sent_columns = true;
            t
        } else if self.metadata_only && kind != "ERROR" {
            table::partial_metadata(&obj)
        } else {
            obj
        };
        // `type` before `object`, as the Go encoder writes a WatchEvent.
        let mut line = format!("{{\"type\":\"{kind}\",\"object\":").into_bytes();
        if kind == "ERROR" {
            line.extend(crate::json::status_to_vec(&obj));
        } else {
            line.extend(crate::json::to_vec(&obj));
        }
        line.extend_from_slice(b"}\n");
        Bytes::from(line)
    }

    /// The event (if any) a store change becomes for this watch; the objects are decoded
    /// once for all watches, and copied only for a watch that sends them.
    fn change(&mut self, e: &Event) -> Result<Option<Bytes>, AppError> {
        let Some(decoded) = e.decoded(&self.store)? else {
            return Ok(match e.change {
                Change::Progress { revision } if self.bookmarks => {
                    Some(self.bookmark(revision, false))
                }
                _ => None,
            });
        };
        let cur = &decoded.current;
        let kind = match &e.change {
            Change::Put { .. } => {
                let was = decoded.previous.as_ref().map(|p| self.matches(p));
                match (was, self.matches(cur)) {
                    (None | Some(false), true) => "ADDED",
                    (Some(true), true) => "MODIFIED",
                    (Some(true), false) => "DELETED",
                    _ => return Ok(None),
                }
            }
            _ if self.matches(cur) => "DELETED",
            _ => return Ok(None),
        };
        Ok(Some(self.event(kind, cur.clone())))
    }

    fn bookmark(&mut self, revision: i64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": meta});
        self.event("BOOKMARK", obj)
    }
}

fn gone(requested: &str) -> AppError {
    AppError::Gone(format!("too old resource version: {requested}"))
}

pub async fn serve(
    state: AppState,
    t: Target,
    q: HashMap<String, String>,
    h: &HeaderMap,
) -> Result<Response, AppError> {
    let mut query = list_query(&q)?;
    query.limit = 0;
    query.continue_token = None;
    let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let send_initial = crate::rest::query_bool(&q, "sendInitialEvents");
    let bookmarks = crate::rest::query_bool(&q, "allowWatchBookmarks");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let ns = t.namespace.as_deref();
    let prefix = state.store.collection(t.info, ns);
    let mut enc = Encoder {
        info: t.info,
        store: state.store.clone(),
        query,
        table: table::wants_table(h),
        metadata_only: table::wants_metadata(h),
        sent_columns: false,
        bookmarks,
    };
    let mut initial = Vec::new();
    let start = if rv.is_empty() || rv == "0" || send_initial {
        let page = state.store.list(t.info, ns, &enc.query).await?;
        for obj in page.items {
            initial.push(enc.event("ADDED", obj));
        }
        if send_initial && bookmarks {
            initial.push(enc.bookmark(page.revision, true));
        }
        page.revision + 1
    } else {
        let n: i64 = rv
            .parse()
            .map_err(|_| AppError::BadRequest(format!("invalid resource version: {rv}")))?;
        // Reading at the requested revision tells a compacted one before the stream starts.
        match state.store.backend.list(&prefix, "", Some(n), 1).await {
            // As kube-apiserver's cacher does (`newErrWatcher`): a 200 whose one event is
            // the 410 — clients (client-go, kube-rs) relist on that event, while a kube-rs
            // watcher that gets an HTTP 410 instead retries the same version for ever.
            Err(BackendError::Compacted { .. }) => {
                let status = serde_json::to_value(gone(rv).status()).unwrap_or_default();
                return Ok(stream_response(Body::from(enc.event("ERROR", status))));
            }
            _ => n + 1,
        }
    };
    let mut changes = state
        .watches
        .watch(
            &state.store.backend,
            &state.store.collection(t.info, None),
            &prefix,
            start,
            state.bookmark_interval,
            bookmarks,
        )
        .await?;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let requested = rv.to_string();
    let mut stopping = state.stopping.subscribe();
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(365 * 86400)));
        tokio::pin!(deadline);
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = stopping.wait_for(|s| *s) => return,
            };
            let line = match change {
                None => return,
                Some(Ok(e)) => match enc.change(&e) {
                    Ok(Some(l)) => l,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "watch: cannot render stored object");
                        continue;
                    }
                },
                Some(Err(BackendError::Compacted { .. })) => {
                    let status =
                        serde_json::to_value(gone(&requested).status()).unwrap_or_default();
                    let _ = tx.send(enc.event("ERROR", status)).await;
                    return;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watch: store stream ended");
                    return;
                }
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok(stream_response(Body::from_stream(body)))
}

fn stream_response(body: Body) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
