//! OpenAPI v2 (`/openapi/v2`) and v3 (`/openapi/v3`, one document per group/version) with
//! the schemas of the served types.
//!
//! kubectl reads them for `explain`, for the patch merge keys of the strategic merge
//! patches `apply` and `edit` compute (`x-kubernetes-patch-merge-key`/`-strategy`), and to
//! see that the server validates fields: when the PATCH operation of a kind lists the
//! `fieldValidation` parameter, kubectl leaves validation to the server.
//!
//! The schemas are Kubernetes 1.32's own definitions (`data/k8s-1.32-definitions.json`, see
//! `data/gen-definitions.py`), embedded in the binary and parsed once. The v3 documents are
//! built from them: references point at `#/components/schemas/`, and a reference with a
//! description is wrapped in `allOf` as kube-apiserver writes it. Each group/version's
//! document holds the schemas its kinds reach and an operation per verb for each resource.
//! Custom resources add their CRD's schema (`crd::openapi_schemas`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::error::AppError;
use crate::registry::ResourceInfo;
use crate::rest::json_response;
use crate::AppState;

const DEFINITIONS: &str = include_str!("../data/k8s-1.32-definitions.json");

/// Every built-in definition, by name (`io.k8s.api.core.v1.Pod`).
pub fn definitions() -> &'static Map<String, Value> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFS.get_or_init(|| serde_json::from_str(DEFINITIONS).unwrap_or_default())
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The definition a kind's objects follow, found by its GVK tag.
pub fn definition_of(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    definitions().iter().find_map(|(name, def)| {
        let gvks = def.get("x-kubernetes-group-version-kind")?.as_array()?;
        gvks.iter()
            .any(|g| {
                g.get("group").and_then(Value::as_str) == Some(group)
                    && g.get("version").and_then(Value::as_str) == Some(version)
                    && g.get("kind").and_then(Value::as_str) == Some(kind)
            })
            .then_some(name.as_str())
    })
}

/// The definitions reachable from `roots` through `$ref`s.
fn closure(roots: impl IntoIterator<Item = String>, defs: &Map<String, Value>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.into_iter().collect();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(def) = defs.get(&name) {
            collect_refs(def, &mut todo);
        }
    }
    seen
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                if let Some(name) = r.rsplit('/').next() {
                    out.push(name.to_string());
                }
            }
            m.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// Keywords whose value maps names to schemas.
const NAMED_SCHEMAS: &[&str] = &["properties", "patternProperties", "definitions"];

/// A v2 schema in v3 form: `#/components/schemas/` references, `allOf` around a reference
/// that has siblings.
pub fn to_v3(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            let mut reference = None;
            for (k, x) in m {
                if let (true, Value::Object(named)) = (NAMED_SCHEMAS.contains(&k.as_str()), x) {
                    // Keys here are names (a property may be called `$ref`), not keywords.
                    let named = named.iter().map(|(n, s)| (n.clone(), to_v3(s))).collect();
                    out.insert(k.clone(), Value::Object(named));
                } else if k == "$ref" && x.is_string() {
                    let r = x.as_str().unwrap_or("");
                    reference = Some(json!(r.replace("#/definitions/", "#/components/schemas/")));
                } else {
                    out.insert(k.clone(), to_v3(x));
                }
            }
            match reference {
                Some(r) if out.is_empty() => json!({"$ref": r}),
                Some(r) => {
                    out.insert("allOf".into(), json!([{"$ref": r}]));
                    Value::Object(out)
                }
                None => Value::Object(out),
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(to_v3).collect()),
        other => other.clone(),
    }
}

/// Every served group/version, core first.
fn group_versions(state: &AppState) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in state.listed_resources() {
        let gv = (r.group.to_string(), r.version.to_string());
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out.sort_by_key(|(g, _)| !g.is_empty());
    out
}

/// A stable hash of what the documents depend on, so clients re-fetch when CRDs change.
fn hash(state: &AppState) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for r in state.resources() {
        (r.group, r.version, r.plural).hash(&mut h);
    }
    state.custom.generation().hash(&mut h);
    format!("{:016X}", h.finish())
}

/// `GET /openapi/v3`: where each group/version's document is.
pub async fn index(State(state): State<AppState>) -> Response {
    let mut paths = Map::new();
    let h = hash(&state);
    for (g, v) in group_versions(&state) {
        let p = gv_path(&g, &v);
        let url = format!("/openapi/v3/{p}?hash={h}");
        paths.insert(p, json!({"serverRelativeURL": url}));
    }
    json_response(StatusCode::OK, json!({"paths": paths}))
}

/// A string parameter; v2 gives its type inline, v3 in a schema.
fn param(name: &str, location: &str, v3: bool) -> Value {
    if v3 {
        json!({"name": name, "in": location, "schema": {"type": "string", "uniqueItems": true}})
    } else {
        json!({"name": name, "in": location, "type": "string", "uniqueItems": true})
    }
}

/// The operations of one resource, as kube-apiserver names them.
fn operations(r: &ResourceInfo, schema_ref: &Value, v3: bool) -> Vec<(String, Value)> {
    let base = gv_path(r.group, r.version);
    let ns = if r.namespaced {
        "namespaces/{namespace}/"
    } else {
        ""
    };
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let ns_kind = if r.namespaced { "Namespaced" } else { "" };
    let write_params = vec![
        param("dryRun", "query", v3),
        param("fieldManager", "query", v3),
        param("fieldValidation", "query", v3),
    ];
    let response = |code: &str| {
        if v3 {
            json!({code: {"description": "OK", "content": {"application/json": {"schema": schema_ref}}}})
        } else {
            json!({code: {"description": "OK", "schema": schema_ref}})
        }
    };
    let op = |verb: &str, action: &str, id: String, params: Vec<Value>, code: &str| {
        (
            verb.to_string(),
            json!({"operationId": id, "parameters": params, "responses": response(code),
                   "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk}),
        )
    };
    let k = &r.kind;
    let item = vec![
        op("get", "get", format!("read{ns_kind}{k}"), vec![], "200"),
        op(
            "put",
            "put",
            format!("replace{ns_kind}{k}"),
            write_params.clone(),
            "200",
        ),
        op(
            "patch",
            "patch",
            format!("patch{ns_kind}{k}"),
            [write_params.clone(), vec![param("force", "query", v3)]].concat(),
            "200",
        ),
        op(
            "delete",
            "delete",
            format!("delete{ns_kind}{k}"),
            vec![],
            "200",
        ),
    ];
    let collection = vec![
        op("get", "list", format!("list{ns_kind}{k}"), vec![], "200"),
        op(
            "post",
            "post",
            format!("create{ns_kind}{k}"),
            write_params,
            "201",
        ),
    ];
    let plural = &r.plural;
    let collection_path = format!("/{base}/{ns}{plural}");
    if crate::registry::CREATE_ONLY.contains(r) {
        let create = collection.into_iter().filter(|(verb, _)| verb == "post");
        return vec![(collection_path, Value::Object(create.collect()))];
    }
    if crate::registry::READ_ONLY.contains(r) {
        let get = item.into_iter().filter(|(verb, _)| verb == "get");
        let list = collection.into_iter().filter(|(verb, _)| verb == "get");
        return vec![
            (
                format!("/{base}/{ns}{plural}/{{name}}"),
                Value::Object(get.collect()),
            ),
            (collection_path, Value::Object(list.collect())),
        ];
    }
    vec![
        (
            format!("/{base}/{ns}{plural}/{{name}}"),
            Value::Object(item.into_iter().collect()),
        ),
        (
            collection_path,
            Value::Object(collection.into_iter().collect()),
        ),
    ]
}

/// Schemas (v2 form) of one group/version: built-ins by GVK tag, custom resources from
/// their CRDs; plus the name each served resource's schema has.
fn schemas_of(
    state: &AppState,
    group: &str,
    version: &str,
) -> (Map<String, Value>, BTreeMap<String, String>) {
    let defs = definitions();
    let mut out = Map::new();
    let mut names = BTreeMap::new();
    let mut roots = vec![
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions".to_string(),
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status".to_string(),
    ];
    for r in state.listed_resources() {
        if r.group != group || r.version != version {
            continue;
        }
        if let Some(name) = definition_of(group, version, r.kind) {
            roots.push(name.to_string());
            if let Some(list) = definition_of(group, version, &format!("{}List", r.kind)) {
                roots.push(list.to_string());
            }
            names.insert(r.plural.to_string(), name.to_string());
        }
    }
    let custom = crate::crd::openapi_schemas(state, group, version);
    roots.extend(
        custom
            .iter()
            .map(|_| "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".to_string()),
    );
    for name in closure(roots, defs) {
        if let Some(d) = defs.get(&name) {
            out.insert(name, d.clone());
        }
    }
    for (plural, name, schema) in custom {
        out.insert(name.clone(), schema);
        names.insert(plural, name);
    }
    (out, names)
}

fn schema_ref(names: &BTreeMap<String, String>, r: &ResourceInfo, v3: bool) -> Value {
    let prefix = if v3 {
        "#/components/schemas/"
    } else {
        "#/definitions/"
    };
    match names.get(r.plural) {
        Some(n) => json!({"$ref": format!("{prefix}{n}")}),
        None => json!({"type": "object"}),
    }
}

/// `GET /openapi/v3/<api/v1 | apis/<group>/<version>>`.
pub async fn group_version(
    State(state): State<AppState>,
    Path(rest): Path<String>,
) -> Result<Response, AppError> {
    let (g, v) = group_versions(&state)
        .into_iter()
        .find(|(g, v)| gv_path(g, v) == rest)
        .ok_or(AppError::NoRoute)?;
    let (schemas, names) = schemas_of(&state, &g, &v);
    let mut paths = Map::new();
    for r in state
        .listed_resources()
        .iter()
        .filter(|r| r.group == g && r.version == v)
    {
        let sref = schema_ref(&names, r, true);
        for (p, ops) in operations(r, &sref, true) {
            paths.insert(p, ops);
        }
    }
    let schemas: Map<String, Value> = schemas.iter().map(|(k, s)| (k.clone(), to_v3(s))).collect();
    let doc = json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas}
    });
    let mut resp = json_response(StatusCode::OK, doc);
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, immutable"),
    );
    Ok(resp)
}

/// `GET /openapi/v2`: one swagger document for everything, as JSON or in the protobuf
/// form client-go asks for (`openapi_pb.rs`).
pub async fn v2(State(state): State<AppState>, h: HeaderMap) -> Result<Response, AppError> {
    let accepted: Vec<String> = h
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .collect();
    let protobuf = accepted.iter().any(|t| {
        t.starts_with(crate::openapi_pb::MEDIA_TYPE)
            || t.starts_with(crate::openapi_pb::MEDIA_TYPE_ASKED)
    });
    let json = accepted.is_empty()
        || accepted
            .iter()
            .any(|t| t.is_empty() || t.starts_with("application/json") || t.starts_with("*/*"));
    if !protobuf && !json {
        return Err(AppError::NotAcceptable(format!(
            "application/json, {}",
            crate::openapi_pb::MEDIA_TYPE
        )));
    }
    let mut definitions = definitions().clone();
    let mut paths = Map::new();
    for (g, v) in group_versions(&state) {
        let (schemas, names) = schemas_of(&state, &g, &v);
        definitions.extend(schemas);
        for r in state
            .listed_resources()
            .iter()
            .filter(|r| r.group == g && r.version == v)
        {
            let sref = schema_ref(&names, r, false);
            for (p, ops) in operations(r, &sref, false) {
                paths.insert(p, ops);
            }
        }
    }
    let doc = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "definitions": definitions,
    });
    if !protobuf {
        return Ok(json_response(StatusCode::OK, doc));
    }
    let mut resp = (StatusCode::OK, crate::openapi_pb::encode(&doc)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::openapi_pb::MEDIA_TYPE),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_the_real_ones() {
        let d = definitions();
        let containers = d
            .get("io.k8s.api.core.v1.PodSpec")
            .and_then(|p| p.pointer("/properties/containers"))
            .expect("PodSpec.containers");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(
            definition_of("apps", "v1", "Deployment"),
            Some("io.k8s.api.apps.v1.Deployment")
        );
    }

    #[test]
    fn v3_wraps_described_references() {
        let v = to_v3(&json!({"$ref": "#/definitions/X", "description": "d"}));
        assert_eq!(
            v,
            json!({"description": "d", "allOf": [{"$ref": "#/components/schemas/X"}]})
        );
        assert_eq!(
            to_v3(&json!({"$ref": "#/definitions/X"})),
            json!({"$ref": "#/components/schemas/X"})
        );
        let named = json!({"properties": {"$ref": {"type": "string"}}});
        assert_eq!(to_v3(&named), named);
    }
}
