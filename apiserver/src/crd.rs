//! CustomResourceDefinitions: the resources they define, served by the same generic
//! handler as the built-ins.
//!
//! Each served version of a CRD becomes a `ResourceInfo` row like the built-in ones, with a
//! `Custom` part (the version's schema, printer columns, scale paths). Rows are leaked to
//! `&'static` so a request keeps the row it started with while CRDs change; each CRD
//! version written leaks its rows once (a few hundred bytes), fine at the rate people
//! write CRDs. The table is
//! rebuilt from storage at start and after every CRD write through this server (`reload`).
//!
//! The server also does what kube-apiserver's CRD controllers do, in the write path:
//! defaults and checks a CRD (`prepare`), reports it `NamesAccepted` and `Established`, and
//! deletes every custom resource of a CRD before the CRD itself (`delete_objects`). Custom
//! objects are validated and pruned against their schema in `crd_schema.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::{json, Value};

use crate::error::{target, AppError, FieldError};
use crate::fields::FieldValidation;
use crate::registry::{NameRule, ResourceInfo};
use crate::storage::{meta_str, ListQuery};
use crate::AppState;

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// `subresources.scale` paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// What a CRD says about one version of its resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Custom {
    /// `metadata.name` of the CRD (`widgets.example.com`).
    pub crd: String,
    /// The version's `schema.openAPIV3Schema`.
    pub schema: Option<Value>,
    pub columns: Vec<Column>,
    pub scale: Option<ScalePaths>,
}

/// Rows already made, by (CRD name, resourceVersion).
type BuiltRows = HashMap<(String, String), Vec<&'static ResourceInfo>>;

/// The custom resources currently served; cheap to clone and to read.
#[derive(Clone, Default)]
pub struct CustomResources {
    rows: Arc<RwLock<Arc<Vec<&'static ResourceInfo>>>>,
    /// Bumped on every reload: the OpenAPI documents' hash.
    generation: Arc<AtomicU64>,
    /// Rows by CRD name and resourceVersion, so an unchanged CRD leaks nothing again.
    built: Arc<std::sync::Mutex<BuiltRows>>,
}

impl CustomResources {
    pub fn list(&self) -> Arc<Vec<&'static ResourceInfo>> {
        match self.rows.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    fn set(&self, rows: Vec<&'static ResourceInfo>) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        match self.rows.write() {
            Ok(mut r) => *r = Arc::new(rows),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(rows),
        }
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn leak_list(v: Option<&Value>) -> &'static [&'static str] {
    let items: Vec<&'static str> = v
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(leak).collect())
        .unwrap_or_default();
    Box::leak(items.into_boxed_slice())
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The CRD row of the registry.
pub fn crd_info() -> &'static ResourceInfo {
    crate::registry::find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .unwrap_or(&crate::registry::RESOURCES[0])
}

pub fn is_crd(info: &ResourceInfo) -> bool {
    info.group == "apiextensions.k8s.io" && info.kind == "CustomResourceDefinition"
}

fn columns(version: &Value) -> Vec<Column> {
    let Some(Value::Array(cols)) = version.get("additionalPrinterColumns") else {
        return Vec::new();
    };
    cols.iter()
        .map(|c| Column {
            name: str_at(c, "/name").to_string(),
            type_: str_at(c, "/type").to_string(),
            format: str_at(c, "/format").to_string(),
            description: str_at(c, "/description").to_string(),
            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
            json_path: str_at(c, "/jsonPath").to_string(),
        })
        .collect()
}

/// The rows a CRD serves, one per served version.
pub fn rows_of(crd: &Value) -> Vec<&'static ResourceInfo> {
    let group = str_at(crd, "/spec/group");
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let plural = str_at(&names, "/plural");
    let kind = str_at(&names, "/kind");
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let singular = match str_at(&names, "/singular") {
        "" => kind.to_lowercase(),
        s => s.to_string(),
    };
    let namespaced = str_at(crd, "/spec/scope") != "Cluster";
    let key_name = leak(&format!("{group}/{plural}"));
    let (group, plural, kind, singular) = (leak(group), leak(plural), leak(kind), leak(&singular));
    let short_names = leak_list(names.get("shortNames"));
    let categories = leak_list(names.get("categories"));
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(false))
        .map(|v| {
            let mut subs: Vec<&'static str> = Vec::new();
            if v.pointer("/subresources/status").is_some() {
                subs.push("status");
            }
            let scale = v.pointer("/subresources/scale").map(|s| ScalePaths {
                spec_replicas: str_at(s, "/specReplicasPath").to_string(),
                status_replicas: str_at(s, "/statusReplicasPath").to_string(),
                label_selector: s
                    .get("labelSelectorPath")
                    .and_then(Value::as_str)
                    .map(String::from),
            });
            if scale.is_some() {
                subs.push("scale");
            }
            let custom: &'static Custom = Box::leak(Box::new(Custom {
                crd: meta_str(crd, "name").to_string(),
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                columns: columns(v),
                scale,
            }));
            let row: &'static ResourceInfo = Box::leak(Box::new(ResourceInfo {
                group,
                version: leak(str_at(v, "/name")),
                plural,
                singular,
                kind,
                namespaced,
                short_names,
                categories,
                subresources: Box::leak(subs.into_boxed_slice()),
                name_rule: NameRule::Subdomain,
                key_name,
                custom: Some(custom),
            }));
            row
        })
        .collect()
}

/// Rebuild the table of custom resources from the stored CRDs.
pub async fn reload(state: &AppState) -> Result<(), AppError> {
    let page = state
        .store
        .list(crd_info(), None, &ListQuery::default())
        .await?;
    let mut rows = Vec::new();
    let mut built = match state.custom.built.lock() {
        Ok(b) => b,
        Err(poisoned) => poisoned.into_inner(),
    };
    let mut kept = HashMap::new();
    for crd in &page.items {
        // A CRD being deleted stops being served at once.
        if !meta_str(crd, "deletionTimestamp").is_empty() {
            continue;
        }
        let key = (
            meta_str(crd, "name").to_string(),
            meta_str(crd, "resourceVersion").to_string(),
        );
        let these = built.remove(&key).unwrap_or_else(|| rows_of(crd));
        rows.extend(these.iter().copied());
        kept.insert(key, these);
    }
    *built = kept;
    drop(built);
    tracing::info!(resources = rows.len(), "custom resources reloaded");
    state.custom.set(rows);
    Ok(())
}

fn invalid(crd: &Value, causes: Vec<FieldError>) -> AppError {
    AppError::Invalid(
        target(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            meta_str(crd, "name"),
        ),
        causes,
    )
}

fn required(field: &str) -> FieldError {
    FieldError {
        field: field.into(),
        reason: "FieldValueRequired",
        message: "Required value".into(),
    }
}

/// Defaults, checks and the status of a CRD about to be written (create or update).
pub fn prepare(crd: &mut Value) -> Result<(), AppError> {
    let mut causes = Vec::new();
    let group = str_at(crd, "/spec/group").to_string();
    let plural = str_at(crd, "/spec/names/plural").to_string();
    let kind = str_at(crd, "/spec/names/kind").to_string();
    if group.is_empty() {
        causes.push(required("spec.group"));
    }
    if plural.is_empty() {
        causes.push(required("spec.names.plural"));
    }
    if kind.is_empty() {
        causes.push(required("spec.names.kind"));
    }
    let name = meta_str(crd, "name").to_string();
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(FieldError {
            field: "metadata.name".into(),
            reason: "FieldValueInvalid",
            message: format!(
                "Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
            ),
        });
    }
    if !matches!(str_at(crd, "/spec/scope"), "Namespaced" | "Cluster") {
        causes.push(FieldError {
            field: "spec.scope".into(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: \"{}\": supported values: \"Cluster\", \"Namespaced\"",
                str_at(crd, "/spec/scope")
            ),
        });
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        causes.push(required("spec.versions"));
    }
    let storage: Vec<&str> = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .map(|v| str_at(v, "/name"))
        .collect();
    if !versions.is_empty() && storage.len() != 1 {
        causes.push(FieldError {
            field: "spec.versions".into(),
            reason: "FieldValueInvalid",
            message: "Invalid value: must have exactly one version marked as storage version"
                .into(),
        });
    }
    if !causes.is_empty() {
        return Err(invalid(crd, causes));
    }
    let storage = storage.first().map(|s| s.to_string()).unwrap_or_default();
    if let Some(Value::Object(names)) = crd.pointer_mut("/spec/names") {
        names
            .entry("singular")
            .or_insert_with(|| json!(kind.to_lowercase()));
        names
            .entry("listKind")
            .or_insert_with(|| json!(format!("{kind}List")));
    }
    let accepted = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let now = crate::objects::now();
    let condition = |type_: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": "True", "lastTransitionTime": now,
               "reason": reason, "message": message})
    };
    let mut stored: Vec<Value> = crd
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !stored.contains(&json!(storage)) {
        stored.push(json!(storage));
    }
    crd["status"] = json!({
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": accepted,
        "storedVersions": stored,
    });
    Ok(())
}

/// Delete every object of a CRD's resource (all versions share one key prefix).
pub async fn delete_objects(state: &AppState, crd: &Value) -> Result<(), AppError> {
    let Some(row) = rows_of(crd).into_iter().next() else {
        return Ok(());
    };
    let page = state.store.list(row, None, &ListQuery::default()).await?;
    for obj in page.items {
        let ns = meta_str(&obj, "namespace");
        let ns = (!ns.is_empty()).then_some(ns);
        if let Some((cur, kv)) = state.store.get(row, ns, meta_str(&obj, "name")).await? {
            match state.store.delete(row, &cur, &kv).await {
                Ok(()) | Err(AppError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// A custom object about to be written: validated, pruned and defaulted against the
/// version's schema; the unknown fields pruned are judged by `fieldValidation`.
pub fn check_object(
    info: &ResourceInfo,
    obj: &mut Value,
    field_validation: FieldValidation,
) -> Result<(), AppError> {
    let Some(custom) = info.custom else {
        return Ok(());
    };
    let Some(schema) = &custom.schema else {
        return Ok(());
    };
    let (causes, unknown) = crate::crd_schema::validate(schema, obj);
    field_validation.judge(info, &unknown)?;
    AppError::invalid_if_any(info.group, info.kind, obj, causes)
}

/// Evaluate a printer column's JSONPath (`.spec.x`, `.a[0].b`,
/// `.status.conditions[?(@.type=="Ready")].status`).
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut rest = path.trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if !key.is_empty() {
                cur = cur.get(key)?;
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Ok(i) = inner.parse::<usize>() {
                cur = cur.get(i)?;
            } else if let Some(filter) =
                inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
            {
                let (k, v) = filter.split_once("==")?;
                let want = v.trim().trim_matches(['"', '\'']);
                cur = cur
                    .as_array()?
                    .iter()
                    .find(|x| x.get(k.trim()).and_then(Value::as_str) == Some(want))?;
            } else {
                let key = inner.trim_matches(['"', '\'']);
                cur = cur.get(key)?;
            }
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Column definitions of a custom resource's Table: Name, then its printer columns.
pub fn column_definitions(custom: &Custom) -> Vec<Value> {
    let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    for c in &custom.columns {
        defs.push(json!({"name": c.name, "type": c.type_, "format": c.format,
                         "description": c.description, "priority": c.priority}));
    }
    defs
}

/// One row's cells for a custom resource's Table.
pub fn cells(custom: &Custom, obj: &Value) -> Vec<Value> {
    let mut cells = vec![json!(meta_str(obj, "name"))];
    for c in &custom.columns {
        let v = json_path(obj, &c.json_path).cloned().unwrap_or(Value::Null);
        let cell = match (c.type_.as_str(), &v) {
            (_, Value::Null) => Value::Null,
            ("date", Value::String(t)) => match t.parse::<jiff::Timestamp>() {
                Ok(ts) => json!(crate::table::human_duration(
                    jiff::Timestamp::now().as_second() - ts.as_second()
                )),
                Err(_) => v.clone(),
            },
            ("string", Value::String(_)) => v.clone(),
            ("string", other) => json!(other.to_string()),
            _ => v.clone(),
        };
        cells.push(cell);
    }
    cells
}

fn set_path(obj: &mut Value, path: &str, value: Value) {
    let keys: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    let mut cur = obj;
    for (i, k) in keys.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        if i + 1 == keys.len() {
            cur[*k] = value;
            return;
        }
        cur = &mut cur[*k];
    }
}

/// The `autoscaling/v1 Scale` of a scalable object, built-in or custom.
pub fn to_scale(info: &ResourceInfo, obj: &Value) -> Value {
    let mut scale = crate::objects::to_scale(obj);
    if let Some(paths) = info.custom.and_then(|c| c.scale.as_ref()) {
        let n = |p: &str| json_path(obj, p).cloned().unwrap_or(json!(0));
        scale["spec"]["replicas"] = n(&paths.spec_replicas);
        scale["status"]["replicas"] = n(&paths.status_replicas);
        scale["status"]["selector"] = paths
            .label_selector
            .as_deref()
            .and_then(|p| json_path(obj, p).cloned())
            .unwrap_or(json!(""));
    }
    scale
}

/// Apply a Scale's `spec.replicas` to the object it scales.
pub fn from_scale(info: &ResourceInfo, current: &Value, scale: &Value) -> Result<Value, AppError> {
    match info.custom.and_then(|c| c.scale.as_ref()) {
        Some(paths) => {
            let replicas = scale
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .filter(|r| *r >= 0)
                .ok_or_else(|| {
                    AppError::BadRequest("spec.replicas must be a non-negative integer".into())
                })?;
            let mut out = current.clone();
            set_path(&mut out, &paths.spec_replicas, json!(replicas));
            Ok(out)
        }
        None => crate::objects::from_scale(current, scale),
    }
}

/// OpenAPI schemas (v2 form) of the custom resources of one group/version:
/// `(plural, definition name, schema)`.
pub fn openapi_schemas(
    state: &AppState,
    group: &str,
    version: &str,
) -> Vec<(String, String, Value)> {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    state
        .custom
        .list()
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .filter_map(|r| {
            let custom = r.custom?;
            let mut schema = custom.schema.clone().unwrap_or(json!({"type": "object"}));
            if let Value::Object(m) = &mut schema {
                let props = m.entry("properties").or_insert_with(|| json!({}));
                if let Value::Object(p) = props {
                    p.insert("metadata".into(), json!({
                        "$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                        "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
                    p.entry("apiVersion").or_insert(json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
                    p.entry("kind").or_insert(json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
                }
                m.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([{"group": group, "version": version, "kind": r.kind}]),
                );
            }
            let name = format!("{}.{version}.{}", reversed.join("."), r.kind);
            Some((r.plural.to_string(), name, schema))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widget_crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}},
                    "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                    "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    }

    #[test]
    fn crd_rows_and_status() {
        let mut crd = widget_crd();
        prepare(&mut crd).expect("valid");
        assert_eq!(crd.pointer("/spec/names/singular"), Some(&json!("widget")));
        assert_eq!(
            crd.pointer("/status/conditions/1/type"),
            Some(&json!("Established"))
        );
        let rows = rows_of(&crd);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key_name, "example.com/widgets");
        assert_eq!(rows[0].subresources, &["status", "scale"]);
        let mut bad = widget_crd();
        bad["metadata"]["name"] = json!("nope");
        assert!(matches!(prepare(&mut bad), Err(AppError::Invalid(..))));
    }

    #[test]
    fn json_paths() {
        let o = json!({"spec": {"size": 3}, "status": {"conditions": [
            {"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(json_path(&o, ".spec.size"), Some(&json!(3)));
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(&json!("True"))
        );
        assert_eq!(
            json_path(&o, ".status.conditions[0].type"),
            Some(&json!("Synced"))
        );
        assert_eq!(json_path(&o, ".spec.missing"), None);
    }
}
