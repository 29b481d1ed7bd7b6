//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Every write records which manager set which fields, in kube-apiserver's `FieldsV1`
//! form (`{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{}}}}}`):
//! a create gives the creator every field; an update gives the updater the fields whose
//! values it changed and takes them from the others. Server-side apply
//! (`application/apply-patch+yaml`) gives the applier exactly the fields of its applied
//! configuration: a field another manager owns with a different value is a 409
//! `FieldManagerConflict` naming that manager, unless `force=true` moves it; fields the
//! applier owned before and leaves out now are removed, unless someone else owns them too.
//!
//! Lists follow the same rules as strategic merge patch (`patch::merge_key`): lists with a
//! merge key are owned item by item (`k:{…}`), `finalizers` value by value (`v:…`), other
//! lists as a whole. System metadata (name, uid, resourceVersion, …) and `status` on the
//! main resource belong to no one.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::error::{AppError, FieldError, Target};

/// A field path in FieldsV1 keys: `["f:spec", "f:containers", "k:{\"name\":\"a\"}", "f:image"]`.
type FieldPath = Vec<String>;

const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// Stands for a list item's `.` among an object's leaves.
static ITEM: Value = Value::Null;

/// Every owned leaf of an object, with its value (`Null` for a list item's `.`).
/// The values are borrowed: every write computes this for its old and new object, and
/// copying each leaf's value was a good part of a create's CPU.
fn leaves<'a>(obj: &'a Value, sub: Option<&str>) -> BTreeMap<FieldPath, &'a Value> {
    let mut out = BTreeMap::new();
    let Value::Object(m) = obj else {
        return out;
    };
    let mut path = FieldPath::new();
    for (k, v) in m {
        let keep = match (k.as_str(), sub) {
            ("apiVersion" | "kind", _) => false,
            ("status", Some("status" | "approval")) => true,
            ("status", _) => false,
            (_, Some("status" | "approval")) => false,
            _ => true,
        };
        if !keep {
            continue;
        }
        if k == "metadata" {
            if let Value::Object(meta) = v {
                path.push("f:metadata".into());
                for (mk, mv) in meta
                    .iter()
                    .filter(|(mk, _)| !SYSTEM_METADATA.contains(&mk.as_str()))
                {
                    walk(mk, mv, &mut path, &mut out);
                }
                path.pop();
            }
            continue;
        }
        walk(k, v, &mut path, &mut out);
    }
    out
}

/// The leaves under `field` (value `v`) into `out`; `path` leads to `field`'s parent and is
/// left as it was found (one path is grown and shrunk, copied only for each leaf).
fn walk<'a>(
    field: &str,
    v: &'a Value,
    path: &mut FieldPath,
    out: &mut BTreeMap<FieldPath, &'a Value>,
) {
    path.push(format!("f:{field}"));
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                walk(k, x, path, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let key = || {
                crate::patch::merge_key(field, items)
                    .filter(|k| items.iter().all(|i| i.get(*k).is_some()))
            };
            if field == "finalizers" {
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p, item);
                }
            } else if let Some(key) = key() {
                for item in items {
                    let id = crate::patch::item_identity(field, key, item)
                        .unwrap_or_else(|| json!({ key: Value::Null }));
                    path.push(format!("k:{id}"));
                    let mut dot = path.clone();
                    dot.push(".".into());
                    out.insert(dot, &ITEM);
                    if let Value::Object(m) = item {
                        for (k, x) in m {
                            walk(k, x, path, out);
                        }
                    }
                    path.pop();
                }
            } else {
                out.insert(path.clone(), v);
            }
        }
        _ => {
            out.insert(path.clone(), v);
        }
    }
    path.pop();
}

/// Paths as a FieldsV1 object.
fn to_fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            // Paths share their leading segments: copy a segment only where it is new.
            if !cur.contains_key(seg) {
                cur.insert(seg.clone(), json!({}));
            }
            match cur.get_mut(seg) {
                Some(Value::Object(m)) => cur = m,
                _ => break,
            }
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    let Value::Object(m) = v else {
        return;
    };
    if m.is_empty() && !prefix.is_empty() {
        out.insert(prefix.clone());
        return;
    }
    for (k, x) in m {
        prefix.push(k.clone());
        from_fields_v1(x, prefix, out);
        prefix.pop();
    }
}

/// One `managedFields` entry, with its fields as paths.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: Option<String>,
    time: String,
    fields: BTreeSet<FieldPath>,
}

impl Entry {
    /// The manager as a conflict names it (apimachinery's `printManager` of the manager
    /// identifier, which carries no time, and no apiVersion for appliers).
    fn describe(&self) -> String {
        let mut who = format!("{:?}", self.manager);
        if let Some(sub) = self.subresource.as_deref().filter(|s| !s.is_empty()) {
            who += &format!(" with subresource {sub:?}");
        }
        if self.operation == "Update" {
            who += &format!(" using {}", self.api_version);
        }
        who
    }

    fn same_owner(&self, manager: &str, operation: &str, sub: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.as_deref() == sub
    }

    fn to_json(&self) -> Value {
        let mut e = json!({"manager": self.manager, "operation": self.operation,
            "apiVersion": self.api_version, "time": self.time, "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(&self.fields)});
        if let Some(s) = &self.subresource {
            e["subresource"] = json!(s);
        }
        e
    }
}

fn entries(obj: &Value) -> Vec<Entry> {
    let Some(Value::Array(list)) = obj.pointer("/metadata/managedFields") else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let mut fields = BTreeSet::new();
            if let Some(f) = e.get("fieldsV1") {
                from_fields_v1(f, &mut Vec::new(), &mut fields);
            }
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(String::from),
                time: s("time"),
                fields,
            }
        })
        .collect()
}

fn store(obj: &mut Value, list: Vec<Entry>) {
    let list: Vec<Value> = list
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(Entry::to_json)
        .collect();
    let meta = crate::storage::meta_mut(obj);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Give `manager` the fields in `paths`, taking them from every other entry.
fn take(
    list: &mut Vec<Entry>,
    paths: BTreeSet<FieldPath>,
    manager: &str,
    operation: &str,
    api_version: &str,
    sub: Option<&str>,
) {
    for e in list.iter_mut() {
        if !e.same_owner(manager, operation, sub) {
            e.fields.retain(|p| !paths.contains(p));
        }
    }
    let time = crate::objects::now();
    match list
        .iter_mut()
        .find(|e| e.same_owner(manager, operation, sub))
    {
        Some(e) => {
            e.fields.extend(paths);
            e.time = time;
            e.api_version = api_version.to_string();
        }
        None if !paths.is_empty() => list.push(Entry {
            manager: manager.into(),
            operation: operation.into(),
            api_version: api_version.into(),
            subresource: sub.map(String::from),
            time,
            fields: paths,
        }),
        None => {}
    }
}

/// Record a write (create: `old` None) by `manager` with operation Update.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, sub: Option<&str>) {
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut list = old.map(entries).unwrap_or_default();
    let before = old.map(|o| leaves(o, sub)).unwrap_or_default();
    let (mut changed, mut unchanged) = (BTreeSet::new(), BTreeSet::new());
    for (path, value) in leaves(new, sub) {
        if before.get(&path) == Some(&value) {
            unchanged.insert(path);
        } else {
            changed.insert(path);
        }
    }
    // Fields that are gone are owned by no one.
    for e in list.iter_mut() {
        e.fields
            .retain(|p| changed.contains(p) || unchanged.contains(p));
    }
    take(&mut list, changed, manager, "Update", &api_version, sub);
    store(new, list);
}

/// `.spec.containers[name="web"].image`, as kube-apiserver shows a field in a conflict.
fn display(path: &FieldPath) -> String {
    let mut s = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).unwrap_or(Value::Null);
            let parts: Vec<String> = key
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = seg.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

/// Remove the field at `path` (a list item's `.` removes the item).
fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if last == "." {
        if let Some((item, list)) = parents.split_last() {
            if let (Some(Value::Array(items)), Some(k)) =
                (at_mut(obj, list), item.strip_prefix("k:"))
            {
                let key: Value = serde_json::from_str(k).unwrap_or(Value::Null);
                items.retain(|i| !matches_key(i, &key));
            }
        }
        return;
    }
    match (at_mut(obj, parents), last.split_once(':')) {
        (Some(Value::Object(m)), Some(("f", f))) => {
            m.remove(f);
        }
        (Some(Value::Array(items)), Some(("v", v))) => {
            let v: Value = serde_json::from_str(v).unwrap_or(Value::Null);
            items.retain(|i| *i != v);
        }
        _ => {}
    }
}

fn matches_key(item: &Value, key: &Value) -> bool {
    // A port without a protocol is TCP, as `patch::item_identity` keys it.
    let tcp = Value::String("TCP".into());
    key.as_object().is_some_and(|k| {
        k.iter().all(|(f, v)| {
            let have = item.get(f).or((f == "protocol").then_some(&tcp));
            have == Some(v)
        })
    })
}

fn at_mut<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for seg in path {
        cur = match seg.split_once(':') {
            Some(("f", f)) => cur.get_mut(f)?,
            Some(("k", k)) => {
                let key: Value = serde_json::from_str(k).ok()?;
                cur.as_array_mut()?
                    .iter_mut()
                    .find(|i| matches_key(i, &key))?
            }
            _ => return None,
        };
    }
    Some(cur)
}

/// Server-side apply of `applied` by `manager` onto `live` (None: create). The result
/// carries its new managedFields.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    sub: Option<&str>,
    target: Target,
) -> Result<Value, AppError> {
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut list = live.map(entries).unwrap_or_default();
    let wanted = leaves(applied, sub);
    let current = live.map(|l| leaves(l, sub)).unwrap_or_default();
    let mut conflicts: Vec<(String, FieldPath)> = Vec::new();
    for e in list.iter().filter(|e| !e.same_owner(manager, "Apply", sub)) {
        for (p, v) in &wanted {
            if p.last().map(String::as_str) == Some(".") || !e.fields.contains(p) {
                continue;
            }
            if current.get(p) != Some(v) {
                conflicts.push((e.describe(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(target, &conflicts));
    }
    let base = live.cloned().unwrap_or(json!({}));
    let mut merged = crate::patch::apply(
        crate::patch::PatchKind::Apply,
        &base,
        &serde_json::to_vec(applied).unwrap_or_default(),
    )?;
    let new_set: BTreeSet<FieldPath> = wanted.keys().cloned().collect();
    let before: BTreeSet<FieldPath> = list
        .iter()
        .find(|e| e.same_owner(manager, "Apply", sub))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: BTreeSet<&FieldPath> = list
        .iter()
        .filter(|e| !e.same_owner(manager, "Apply", sub))
        .flat_map(|e| e.fields.iter())
        .collect();
    // Dropped from the applied configuration and owned by no one else: removed. Deepest
    // paths first, so a list item goes after its fields.
    let mut dropped: Vec<&FieldPath> = before
        .iter()
        .filter(|p| !new_set.contains(*p) && !others.contains(p))
        .collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove_at(&mut merged, p);
    }
    if force {
        let moved: BTreeSet<FieldPath> = conflicts.into_iter().map(|(_, p)| p).collect();
        for e in list.iter_mut() {
            if !e.same_owner(manager, "Apply", sub) {
                e.fields.retain(|p| !moved.contains(p));
            }
        }
    }
    list.retain(|e| !e.same_owner(manager, "Apply", sub));
    list.push(Entry {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version,
        subresource: sub.map(String::from),
        time: crate::objects::now(),
        fields: new_set,
    });
    store(&mut merged, list);
    Ok(merged)
}

fn conflict_error(target: Target, conflicts: &[(String, FieldPath)]) -> AppError {
    let causes: Vec<FieldError> = conflicts
        .iter()
        .map(|(who, p)| FieldError {
            field: display(p),
            reason: "FieldManagerConflict",
            message: format!("conflict with {who}"),
        })
        .collect();
    let message = match causes.as_slice() {
        [one] => format!(
            "Apply failed with 1 conflict: {}: {}",
            one.message, one.field
        ),
        many => {
            let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for c in many {
                by_manager.entry(&c.message).or_default().push(&c.field);
            }
            let parts: Vec<String> = by_manager
                .iter()
                .map(|(m, fs)| {
                    let m = m.replacen("conflict with", "conflicts with", 1);
                    format!("{m}:\n- {}", fs.join("\n- "))
                })
                .collect();
            format!(
                "Apply failed with {} conflicts: {}",
                many.len(),
                parts.join("\n")
            )
        }
    };
    AppError::ApplyConflict(target, message, causes)
}

/// Who is writing: `?fieldManager=`, else the client's User-Agent up to its first `/`.
pub fn manager_of(query: Option<&str>, user_agent: Option<&str>) -> String {
    match query.filter(|q| !q.is_empty()) {
        Some(q) => q.to_string(),
        None => user_agent
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Target {
        crate::error::target("apps", "deployments", "web")
    }

    #[test]
    fn create_update_and_apply_track_owners() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"a": "1"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}});
        record_update(None, &mut d, "kubectl-create", None);
        let fields = &d["metadata"]["managedFields"][0]["fieldsV1"];
        assert_eq!(fields["f:spec"]["f:replicas"], json!({}));
        assert_eq!(
            fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["."],
            json!({})
        );
        assert_eq!(fields["f:metadata"]["f:labels"]["f:a"], json!({}));

        // Applying the same value shares the field; a different one conflicts.
        let same = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 1}});
        let shared = apply(Some(&d), &same, "kubectl", false, None, t()).expect("no conflict");
        let other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        match apply(Some(&shared), &other, "kubectl", false, None, t()) {
            Err(AppError::ApplyConflict(_, msg, causes)) => {
                assert_eq!(msg, "Apply failed with 1 conflict: conflict with \"kubectl-create\" using apps/v1: .spec.replicas");
                assert_eq!(causes[0].reason, "FieldManagerConflict");
            }
            other => panic!("expected a conflict: {other:?}"),
        }
        // An applier is named without its apiVersion.
        let mine = apply(Some(&shared), &other, "kubectl", true, None, t()).expect("forced");
        match apply(Some(&mine), &same, "other", false, None, t()) {
            Err(AppError::ApplyConflict(_, msg, _)) => assert_eq!(
                msg,
                "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"
            ),
            other => panic!("expected a conflict: {other:?}"),
        }
        let forced = apply(Some(&shared), &other, "kubectl", true, None, t()).expect("forced");
        assert_eq!(forced["spec"]["replicas"], 3);
        let creator = forced["metadata"]["managedFields"]
            .as_array()
            .expect("entries")
            .iter()
            .find(|e| e["manager"] == "kubectl-create")
            .cloned()
            .expect("creator");
        assert!(
            creator["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
            "{creator}"
        );
    }

    #[test]
    fn apply_removes_what_the_applier_dropped() {
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let live = apply(None, &first, "me", false, None, t()).expect("create");
        let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let out = apply(Some(&live), &second, "me", false, None, t()).expect("apply");
        assert_eq!(out["data"], json!({"a": "1"}));
        assert_eq!(
            display(&vec![
                "f:spec".into(),
                "f:containers".into(),
                "k:{\"name\":\"web\"}".into(),
                "f:image".into()
            ]),
            ".spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn service_ports_are_keyed_by_port_and_protocol() {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns"},
            "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                               {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}});
        let live = apply(None, &svc, "me", false, None, t()).expect("create");
        assert_eq!(
            live["spec"]["ports"].as_array().map(Vec::len),
            Some(2),
            "{live}"
        );
        let fields = &live["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:ports"];
        assert!(
            fields.get("k:{\"port\":53,\"protocol\":\"UDP\"}").is_some(),
            "{fields}"
        );
        // Applying again with only the TCP port removes the UDP one.
        let mut tcp_only = svc.clone();
        tcp_only["spec"]["ports"] = json!([{"name": "dns-tcp", "port": 53, "protocol": "TCP"}]);
        let out = apply(Some(&live), &tcp_only, "me", false, None, t()).expect("apply");
        assert_eq!(out["spec"]["ports"], tcp_only["spec"]["ports"]);
    }
}
