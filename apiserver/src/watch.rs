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

use std::borrow::Cow;
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
    /// A decoded object in the form selectors and clients see (`regarding.name` of an
    /// `events.k8s.io` Event); borrowed when that is the stored form.
    fn served<'a>(&self, obj: &'a Value) -> Cow<'a, Value> {
        if !crate::conversion::reshapes(self.info) {
            return Cow::Borrowed(obj);
        }
        let mut obj = obj.clone();
        crate::conversion::to_served(self.info, &mut obj);
        Cow::Owned(obj)
    }

    fn matches(&self, obj: &Value) -> bool {
        self.query.labels.matches(obj) && self.query.fields.matches(obj)
    }

    fn event(&mut self, kind: &str, mut obj: Value) -> Bytes {
        if kind != "ERROR" && kind != "BOOKMARK" {
            crate::conversion::to_served(self.info, &mut obj);
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
        match self.change_from_stored(e) {
            Some(event) => Ok(event),
            None => self.change_decoded(e),
        }
    }

    /// `change` from the decoded objects: what every watch can take.
    fn change_decoded(&mut self, e: &Event) -> Result<Option<Bytes>, AppError> {
        let Some(decoded) = e.decoded(&self.store)? else {
            return Ok(match e.change {
                Change::Progress { revision } if self.bookmarks => {
                    Some(self.bookmark(revision, false))
                }
                _ => None,
            });
        };
        let cur = self.served(&decoded.current);
        let kind = match &e.change {
            Change::Put { .. } => {
                let was = decoded
                    .previous
                    .as_ref()
                    .map(|p| self.matches(&self.served(p)));
                match (was, self.matches(&cur)) {
                    (None | Some(false), true) => "ADDED",
                    (Some(true), true) => "MODIFIED",
                    (Some(true), false) => "DELETED",
                    _ => return Ok(None),
                }
            }
            _ if self.matches(&cur) => "DELETED",
            _ => return Ok(None),
        };
        Ok(Some(self.event(kind, cur.into_owned())))
    }

    /// `change` for a plain JSON watch, from the stored bytes: the selectors read only the
    /// fields they name, and the object is the one `Event::object_json` spliced for every
    /// watch, the same bytes the parsing path writes. None: use the parsing path (another
    /// format, a custom resource's version, or bytes the splicer does not understand).
    fn change_from_stored(&self, e: &Event) -> Option<Option<Bytes>> {
        if self.table
            || self.metadata_only
            || self.info.custom.is_some()
            || crate::conversion::reshapes(self.info)
        {
            return None;
        }
        let kind = match &e.change {
            Change::Put { kv, prev } => {
                let was = match prev {
                    Some(p) => Some(self.matches_stored(&p.value)?),
                    None => None,
                };
                match (was, self.matches_stored(&kv.value)?) {
                    (None | Some(false), true) => "ADDED",
                    (Some(true), true) => "MODIFIED",
                    (Some(true), false) => "DELETED",
                    _ => return Some(None),
                }
            }
            Change::Delete { prev, .. } if self.matches_stored(&prev.value)? => "DELETED",
            Change::Delete { .. } => return Some(None),
            Change::Progress { .. } => return None,
        };
        let object = e.object_json()?;
        let mut line = Vec::with_capacity(object.len() + 40);
        line.extend_from_slice(format!("{{\"type\":\"{kind}\",\"object\":").as_bytes());
        line.extend_from_slice(object);
        line.extend_from_slice(b"}\n");
        Some(Some(Bytes::from(line)))
    }

    /// Whether the stored object matches the selectors, read from its bytes: only the
    /// fields they name are parsed, into an object holding just those. None: not understood,
    /// or a field that is not in the stored bytes as it is in the object (resourceVersion).
    fn matches_stored(&self, stored: &[u8]) -> Option<bool> {
        let (labels, fields) = (&self.query.labels, &self.query.fields);
        if labels.is_empty() && fields.is_empty() {
            return Some(true);
        }
        let mut probe = Value::Object(serde_json::Map::new());
        let mut read = |path: &[&str]| -> Option<()> {
            if let Some(value) = crate::rawlist::value_at(stored, path).ok()? {
                put_at(&mut probe, path, value)?;
            }
            Some(())
        };
        if !labels.is_empty() {
            read(&["metadata", "labels"])?;
        }
        for path in fields.paths() {
            // `field_value` reads a JSON pointer, which unescapes `~`.
            if path == "metadata.resourceVersion" || path.contains('~') {
                return None;
            }
            read(&path.split('.').collect::<Vec<_>>())?;
        }
        Some(labels.matches(&probe) && fields.matches(&probe))
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

/// Set `value` at `path` in `obj`, making the objects on the way. None if something on the way
/// is not an object.
fn put_at(obj: &mut Value, path: &[&str], value: Value) -> Option<()> {
    let (last, parents) = path.split_last()?;
    let mut current = obj;
    for key in parents {
        current = current
            .as_object_mut()?
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
    current.as_object_mut()?.insert(last.to_string(), value);
    Some(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Kv, MemoryBackend};
    use crate::selector::{FieldSelector, LabelSelector};

    fn encoder(labels: &str, fields: &str) -> Encoder {
        Encoder {
            info: crate::registry::find("", "v1", "pods").expect("pods"),
            store: Store::new(
                crate::Backend::Memory(MemoryBackend::default()),
                "/registry",
            ),
            query: ListQuery {
                labels: LabelSelector::parse(labels).expect("labels"),
                fields: FieldSelector::parse(fields).expect("fields"),
                ..Default::default()
            },
            table: false,
            metadata_only: false,
            sent_columns: false,
            bookmarks: false,
        }
    }

    fn kv(obj: Value, revision: i64) -> Kv {
        Kv {
            key: "/registry/pods/d/p".into(),
            value: Store::encode(&obj),
            mod_revision: revision,
        }
    }

    #[test]
    fn events_from_the_stored_bytes_are_the_parsed_ones() {
        let pod = |node: &str, app: &str| {
            json!({"kind": "Pod", "apiVersion": "v1",
                "metadata": {"name": "p", "namespace": "d", "uid": "u", "labels": {"app": app},
                             "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": "Pending"}})
        };
        let changes = [
            Change::Put {
                kv: kv(pod("n1", "web"), 5),
                prev: None,
            },
            Change::Put {
                kv: kv(pod("n1", "db"), 6),
                prev: Some(kv(pod("n1", "web"), 5)),
            },
            Change::Put {
                kv: kv(pod("n2", "web"), 7),
                prev: Some(kv(pod("n1", "web"), 6)),
            },
            Change::Put {
                kv: kv(pod("n1", "web"), 8),
                prev: Some(kv(pod("n2", "web"), 7)),
            },
            Change::Delete {
                prev: kv(pod("n1", "web"), 8),
                revision: 9,
            },
        ];
        let selectors = [
            ("", ""),
            ("app=web", ""),
            ("", "spec.nodeName=n1"),
            ("app in (web,db)", "spec.nodeName!=n2,status.phase=Pending"),
            ("", "metadata.name=p,spec.missing.deeper="),
            ("", "metadata.resourceVersion=8"),
            ("", "spec.containers.name=c"),
        ];
        let mut spliced = 0;
        for (labels, fields) in selectors {
            for change in &changes {
                let event = Event::new(change.clone());
                let mut enc = encoder(labels, fields);
                let parsed = enc.change_decoded(&event).expect("decodes");
                match enc.change_from_stored(&event) {
                    Some(from_stored) => {
                        spliced += 1;
                        assert_eq!(from_stored, parsed, "{labels} {fields} {change:?}");
                    }
                    None => assert!(
                        fields.contains("resourceVersion") || fields.contains("containers"),
                        "{labels} {fields}: not spliced"
                    ),
                }
            }
        }
        assert_eq!(spliced, 5 * 5);
    }
}
