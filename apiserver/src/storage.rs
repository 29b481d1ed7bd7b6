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
    prefix: String,
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
            prefix: prefix.trim_end_matches('/').to_string(),
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

    /// The stored form: no resourceVersion, `kind` first.
    pub fn encode(obj: &Value) -> Vec<u8> {
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
            Some(kv) => Ok(Some((self.decode(&kv)?, kv))),
            None => Ok(None),
        }
    }

    /// Store a new object; AlreadyExists if the key is taken, NotFound if its namespace
    /// does not exist (checked in the same etcd transaction as the write).
    pub async fn create(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        mut obj: Value,
    ) -> Result<Value, AppError> {
        let name = meta_str(&obj, "name").to_string();
        let key = self.key(r, ns, &name);
        let value = Self::encode(&obj);
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
                meta_mut(&mut obj).insert("resourceVersion".into(), rev.to_string().into());
                Ok(obj)
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
        mut obj: Value,
        current: &Kv,
    ) -> Result<Value, AppError> {
        let name = meta_str(&obj, "name").to_string();
        let bytes = Self::encode(&obj);
        if bytes == current.value {
            // Nothing changed: no write, no new revision, no watch event.
            return self.decode(current);
        }
        match self
            .backend
            .update(&current.key, bytes, current.mod_revision)
            .await?
        {
            Cas::Done(rev) => {
                meta_mut(&mut obj).insert("resourceVersion".into(), rev.to_string().into());
                Ok(obj)
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
        match self
            .backend
            .delete(&current.key, current.mod_revision)
            .await?
        {
            Cas::Done(_) => Ok(()),
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
            let obj = self.decode(kv)?;
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
