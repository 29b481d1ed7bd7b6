//! Objects in the store: keys, the JSON codec, conditional writes and paged lists.
//!
//! Keys are `<prefix>/<resource>/<namespace>/<name>` (cluster-scoped:
//! `<prefix>/<resource>/<name>`), values are the object's JSON without
//! `metadata.resourceVersion`: that field is the key's etcd `mod_revision`, filled in on every
//! read, as kube-apiserver does. Key order is applied when writing JSON (`json.rs`).
//!
//! Lists read one consistent revision; `limit`/`continue` page through it with a continue
//! token in kube-apiserver's own shape (base64 of `{"v","rv","start"}`), and selectors are
//! applied while paging so a page holds up to `limit` matching items.

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::backend::{Backend, BackendError, Cas, Created, Kv};
use crate::error::AppError;
use crate::registry::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};

#[derive(Clone)]
pub struct Store {
    pub backend: Backend,
    /// Shared: a Store is cloned with `AppState`, several times per request.
    prefix: std::sync::Arc<str>,
    latest: Latest,
}

/// How many keys `Latest` keeps before it starts over.
const LATEST_KEYS: usize = 16384;

/// The newest version of each key this server has written or read (None: deleted, at that
/// revision), so a write and admission need not read etcd first, as kube-apiserver reads
/// them from its watch cache. A kept version older than etcd's fails the write's
/// compare-and-swap, which hands back the current one. Every object write goes through
/// this server, so a kept version is only ever behind while a write of it is in flight;
/// a deletion is kept too, so a read that was in flight across it cannot bring the object
/// back.
#[derive(Clone, Default)]
struct Latest(std::sync::Arc<std::sync::Mutex<KeptVersions>>);

/// Key → (revision, the object then; None: deleted at that revision).
type KeptVersions = std::collections::HashMap<String, (i64, Option<Kv>)>;

impl Latest {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeptVersions> {
        // Poisoned only if a holder panicked; every entry is still a version that existed.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> Option<Kv> {
        self.lock().get(key).and_then(|(_, kv)| kv.clone())
    }

    /// `key` was at `revision` (None: deleted then); kept unless a newer version is.
    fn record(&self, key: &str, revision: i64, kv: Option<Kv>) {
        let mut latest = self.lock();
        if latest.get(key).is_some_and(|(kept, _)| *kept >= revision) {
            return;
        }
        if latest.len() >= LATEST_KEYS {
            latest.clear();
        }
        latest.insert(key.to_string(), (revision, kv));
    }

    fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    /// What a compare-and-swap on `key` tells about it.
    fn record_cas(&self, key: &str, cas: &Result<Cas, BackendError>) {
        match cas {
            // Written: the caller records what.
            Ok(Cas::Done(_)) => {}
            Ok(Cas::Failed(Some(kv))) => self.record(key, kv.mod_revision, Some(kv.clone())),
            // Gone at a revision not known, or the outcome is not known.
            Ok(Cas::Failed(None)) | Err(_) => self.forget(key),
        }
    }
}

/// What a list asks for.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: i64,
    pub continue_token: Option<String>,
}

/// One page of a list: objects, or whatever `Store::list_with` made of them.
#[derive(Debug, Clone)]
pub struct ListPage<T = Value> {
    pub items: Vec<T>,
    pub revision: i64,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

/// `metadata.<field>` as a string, "" if absent.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata`, created if missing.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        // Unreachable: set to an object just above.
        _ => unreachable!("metadata was set to an object"),
    }
}

impl Store {
    pub fn new(backend: Backend, prefix: &str) -> Self {
        Store {
            backend,
            prefix: prefix.trim_end_matches('/').into(),
            latest: Latest::default(),
        }
    }

    pub fn key(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) -> String {
        match ns.filter(|_| r.namespaced) {
            Some(ns) => format!("{}/{}/{}/{}", self.prefix, r.key_name, ns, name),
            None => format!("{}/{}/{}", self.prefix, r.key_name, name),
        }
    }

    /// The key prefix of a collection: one namespace, or all.
    pub fn collection(&self, r: &ResourceInfo, ns: Option<&str>) -> String {
        match ns.filter(|_| r.namespaced) {
            Some(ns) => format!("{}/{}/{}/", self.prefix, r.key_name, ns),
            None => format!("{}/{}/", self.prefix, r.key_name),
        }
    }

    /// Decode a stored value and stamp its resourceVersion.
    pub fn decode(&self, kv: &Kv) -> Result<Value, AppError> {
        let mut v: Value = serde_json::from_slice(&kv.value).map_err(|e| {
            AppError::Internal(format!("stored object {} is not JSON: {e}", kv.key))
        })?;
        meta_mut(&mut v).insert(
            "resourceVersion".into(),
            Value::String(kv.mod_revision.to_string()),
        );
        Ok(v)
    }

    /// A stored value as `r`'s version serves it (`conversion.rs`), its resourceVersion
    /// stamped.
    pub fn decode_as(&self, r: &ResourceInfo, kv: &Kv) -> Result<Value, AppError> {
        let mut v = self.decode(kv)?;
        crate::conversion::to_served(r, &mut v);
        Ok(v)
    }

    /// What an object written through `r`'s version is stored as.
    fn encode_as(r: &ResourceInfo, obj: &Value) -> Vec<u8> {
        if !crate::conversion::reshapes(r) {
            return Self::encode(obj);
        }
        let mut stored = obj.clone();
        crate::conversion::to_stored(r, &mut stored);
        Self::encode(&stored)
    }

    /// The stored form: no resourceVersion, `kind` first.
    pub fn encode(obj: &Value) -> Vec<u8> {
        if obj.get("metadata").is_some_and(Value::is_object) {
            return crate::json::to_vec_without_resource_version(obj);
        }
        // No metadata (or not an object): stored with an empty one, as `meta_mut` makes it.
        let mut v = obj.clone();
        meta_mut(&mut v).remove("resourceVersion");
        crate::json::to_vec(&v)
    }

    pub async fn get(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<(Value, Kv)>, AppError> {
        match self.backend.get(&self.key(r, ns, name)).await? {
            Some(kv) => {
                self.latest
                    .record(&kv.key, kv.mod_revision, Some(kv.clone()));
                Ok(Some((self.decode_as(r, &kv)?, kv)))
            }
            None => Ok(None),
        }
    }

    /// The newest version this server knows of, else etcd's (`Latest`): for writes, whose
    /// compare-and-swap catches a version that is behind, and for admission checks.
    pub async fn get_latest(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<(Value, Kv)>, AppError> {
        match self.latest.get(&self.key(r, ns, name)) {
            Some(kv) => Ok(Some((self.decode_as(r, &kv)?, kv))),
            None => self.get(r, ns, name).await,
        }
    }

    /// Drop the kept version of an object: the next `get_latest` reads etcd.
    pub fn forget(&self, r: &ResourceInfo, ns: Option<&str>, name: &str) {
        self.latest.forget(&self.key(r, ns, name));
    }

    /// Store a new object; AlreadyExists if the key is taken, NotFound if its namespace
    /// does not exist (checked in the same etcd transaction as the write). Returns the object
    /// with its resourceVersion and what etcd now holds for it.
    pub async fn create(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        mut obj: Value,
    ) -> Result<(Value, Kv), AppError> {
        let name = meta_str(&obj, "name").to_string();
        let key = self.key(r, ns, &name);
        let value = Self::encode_as(r, &obj);
        let stored = value.clone();
        let created = match ns.filter(|_| r.namespaced) {
            Some(ns) => {
                let parent = format!("{}/namespaces/{ns}", self.prefix);
                match self.backend.create_in(&key, value, &parent).await? {
                    Created::NoParent => {
                        return Err(AppError::not_found("", "namespaces", ns));
                    }
                    other => other,
                }
            }
            None => match self.backend.create(&key, value).await? {
                Cas::Done(rev) => Created::Done(rev),
                Cas::Failed(_) => Created::Exists,
            },
        };
        match created {
            Created::Done(rev) => {
                let kv = Kv {
                    key: key.clone(),
                    value: stored,
                    mod_revision: rev,
                };
                self.latest.record(&key, rev, Some(kv.clone()));
                meta_mut(&mut obj).insert("resourceVersion".into(), rev.to_string().into());
                Ok((obj, kv))
            }
            _ => Err(AppError::AlreadyExists(crate::error::target(
                r.group, r.plural, &name,
            ))),
        }
    }

    /// Replace an object if it is still at `expected`; Conflict otherwise.
    pub async fn update(
        &self,
        r: &ResourceInfo,
        obj: Value,
        current: &Kv,
    ) -> Result<Value, AppError> {
        self.update_stored(r, obj, current)
            .await
            .map(|(obj, _)| obj)
    }

    /// `update`, also returning what etcd now holds for the object.
    pub async fn update_stored(
        &self,
        r: &ResourceInfo,
        mut obj: Value,
        current: &Kv,
    ) -> Result<(Value, Kv), AppError> {
        let name = meta_str(&obj, "name").to_string();
        let bytes = Self::encode_as(r, &obj);
        if bytes == current.value {
            // Nothing changed: no write, no new revision, no watch event.
            return Ok((self.decode_as(r, current)?, current.clone()));
        }
        let result = self
            .backend
            .update(&current.key, bytes.clone(), current.mod_revision)
            .await;
        self.latest.record_cas(&current.key, &result);
        match result? {
            Cas::Done(rev) => {
                let kv = Kv {
                    key: current.key.clone(),
                    value: bytes,
                    mod_revision: rev,
                };
                self.latest.record(&current.key, rev, Some(kv.clone()));
                meta_mut(&mut obj).insert("resourceVersion".into(), rev.to_string().into());
                Ok((obj, kv))
            }
            Cas::Failed(None) => Err(AppError::not_found(r.group, r.plural, &name)),
            Cas::Failed(Some(_)) => Err(AppError::conflict_modified(r.group, r.plural, &name)),
        }
    }

    /// Remove an object if it is still at `current`.
    pub async fn delete(
        &self,
        r: &ResourceInfo,
        obj: &Value,
        current: &Kv,
    ) -> Result<(), AppError> {
        let name = meta_str(obj, "name");
        let result = self
            .backend
            .delete(&current.key, current.mod_revision)
            .await;
        self.latest.record_cas(&current.key, &result);
        match result? {
            Cas::Done(rev) => {
                self.latest.record(&current.key, rev, None);
                Ok(())
            }
            Cas::Failed(None) => Err(AppError::not_found(r.group, r.plural, name)),
            Cas::Failed(Some(_)) => Err(AppError::conflict_modified(r.group, r.plural, name)),
        }
    }

    /// One page of a collection.
    pub async fn list(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        q: &ListQuery,
    ) -> Result<ListPage, AppError> {
        self.list_with(r, ns, q, |kv| {
            let obj = self.decode_as(r, kv)?;
            Ok((q.labels.matches(&obj) && q.fields.matches(&obj)).then_some(obj))
        })
        .await
    }

    /// One page of a collection, each stored object turned into an item by `item` (None:
    /// the selectors do not match it), so a caller can skip parsing (`rawlist.rs`).
    pub async fn list_with<T>(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        q: &ListQuery,
        mut item: impl FnMut(&Kv) -> Result<Option<T>, AppError>,
    ) -> Result<ListPage<T>, AppError> {
        let prefix = self.collection(r, ns);
        let (mut start, mut revision) = match &q.continue_token {
            Some(t) => {
                let (rv, start) = decode_continue(t)?;
                (format!("{prefix}{start}"), Some(rv))
            }
            None => (String::new(), None),
        };
        let mut items = Vec::new();
        loop {
            let want = if q.limit > 0 {
                q.limit - items.len() as i64
            } else {
                0
            };
            let page = match self.backend.list(&prefix, &start, revision, want).await {
                Err(BackendError::Compacted { .. }) if q.continue_token.is_some() => {
                    return Err(AppError::Gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.".into()));
                }
                other => other?,
            };
            revision = Some(page.revision);
            let last_key = page.items.last().map(|kv| kv.key.clone());
            for kv in &page.items {
                if let Some(it) = item(kv)? {
                    items.push(it);
                }
            }
            let full = q.limit > 0 && items.len() as i64 >= q.limit;
            match last_key {
                Some(last) if page.remaining > 0 => {
                    // Resume just after the last key read.
                    start = format!("{last}\u{0}");
                    if full {
                        let token = encode_continue(page.revision, &start[prefix.len()..]);
                        let remaining =
                            (q.labels.is_empty() && q.fields.is_empty()).then_some(page.remaining);
                        return Ok(ListPage {
                            items,
                            revision: page.revision,
                            continue_token: Some(token),
                            remaining,
                        });
                    }
                }
                _ => {
                    return Ok(ListPage {
                        items,
                        revision: page.revision,
                        continue_token: None,
                        remaining: None,
                    })
                }
            }
        }
    }
}

fn encode_continue(rv: i64, start: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(t: &str) -> Result<(i64, String), AppError> {
    let bad = || AppError::BadRequest(format!("continue key is not valid: {t}"));
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(t))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rv, start.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::registry::find;

    #[test]
    fn latest_keeps_the_newest_version_and_deletions() {
        let latest = Latest::default();
        let kv = |rev: i64| Kv {
            key: "/k".into(),
            value: rev.to_string().into_bytes(),
            mod_revision: rev,
        };
        latest.record("/k", 5, Some(kv(5)));
        latest.record("/k", 3, Some(kv(3)));
        assert_eq!(latest.get("/k"), Some(kv(5)));
        latest.record("/k", 7, None);
        // A read that started before the deletion does not bring the object back.
        latest.record("/k", 5, Some(kv(5)));
        assert_eq!(latest.get("/k"), None);
        latest.record("/k", 9, Some(kv(9)));
        assert_eq!(latest.get("/k"), Some(kv(9)));
        latest.record_cas("/k", &Ok(Cas::Failed(None)));
        assert_eq!(latest.get("/k"), None);
    }

    #[tokio::test]
    async fn a_write_from_a_version_that_is_behind_conflicts_and_learns_the_current_one() {
        let store = Store::new(Backend::Memory(MemoryBackend::default()), "/registry");
        let nsr = find("", "v1", "namespaces").expect("ns");
        let ns = json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "d"}});
        let (created, _) = store.create(nsr, None, ns).await.expect("namespace");
        let (_, first) = store
            .get_latest(nsr, None, "d")
            .await
            .expect("get")
            .expect("kept");
        assert_eq!(
            meta_str(&created, "resourceVersion"),
            first.mod_revision.to_string()
        );
        let mut labelled = created.clone();
        labelled["metadata"]["labels"] = json!({"a": "1"});
        store
            .update(nsr, labelled.clone(), &first)
            .await
            .expect("update");
        labelled["metadata"]["labels"] = json!({"a": "2"});
        assert!(matches!(
            store.update(nsr, labelled, &first).await,
            Err(AppError::Conflict(..))
        ));
        let (now, kv) = store
            .get_latest(nsr, None, "d")
            .await
            .expect("get")
            .expect("kept");
        assert_eq!(now["metadata"]["labels"]["a"], "1");
        assert_eq!(kv.mod_revision, first.mod_revision + 1);
    }

    #[tokio::test]
    async fn paged_list_with_selector() {
        let store = Store::new(Backend::Memory(MemoryBackend::default()), "/registry");
        let cm = find("", "v1", "configmaps").expect("cm");
        let nsr = find("", "v1", "namespaces").expect("ns");
        let ns = json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "d"}});
        store.create(nsr, None, ns).await.expect("namespace");
        let orphan = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "x", "namespace": "nope"}});
        assert!(matches!(
            store.create(cm, Some("nope"), orphan).await,
            Err(AppError::NotFound(_))
        ));
        for i in 0..5 {
            let obj = json!({"kind": "ConfigMap", "apiVersion": "v1",
                "metadata": {"name": format!("c{i}"), "namespace": "d",
                             "labels": {"even": (i % 2 == 0).to_string()}}});
            store.create(cm, Some("d"), obj).await.expect("create");
        }
        let q = ListQuery {
            limit: 2,
            ..Default::default()
        };
        let p1 = store.list(cm, Some("d"), &q).await.expect("p1");
        assert_eq!(p1.items.len(), 2);
        assert_eq!(p1.remaining, Some(3));
        let q2 = ListQuery {
            continue_token: p1.continue_token.clone(),
            ..q.clone()
        };
        let p2 = store.list(cm, Some("d"), &q2).await.expect("p2");
        assert_eq!(meta_str(&p2.items[0], "name"), "c2");
        let q3 = ListQuery {
            labels: LabelSelector::parse("even=true").expect("sel"),
            ..Default::default()
        };
        let all = store.list(cm, None, &q3).await.expect("all");
        assert_eq!(all.items.len(), 3);
        assert_eq!(all.revision, 6);
    }
}
