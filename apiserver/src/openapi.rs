//! A minimal OpenAPI v3 index: enough for kubectl to see that the server validates fields.
//!
//! Before `apply`, `create -f`, `replace` and `edit`, kubectl checks whether the PATCH
//! operation of the object's kind lists the `fieldValidation` query parameter in the
//! server's OpenAPI v3 document; if it does, kubectl skips client-side schema validation and
//! sends `fieldValidation=Strict`. Without any OpenAPI document kubectl refuses to apply
//! ("failed to download openapi"). So `/openapi/v3` lists every group/version and each
//! group/version document holds one PATCH operation per resource, tagged with its
//! `x-kubernetes-group-version-kind`. Schemas (for `kubectl explain`) are not served yet;
//! kubectl then computes strategic merge patches from its built-in types, as for any
//! server whose schema it cannot read.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::error::AppError;
use crate::registry::{self, ResourceInfo};
use crate::rest::json_response;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out = vec![("", "v1")];
    for (g, vs) in registry::groups() {
        out.extend(vs.into_iter().map(|v| (g, v)));
    }
    out
}

/// `GET /openapi/v3`: where each group/version's document is.
pub async fn index() -> Response {
    let mut paths = Map::new();
    for (g, v) in group_versions() {
        let p = gv_path(g, v);
        let url = format!("/openapi/v3/{p}?hash=knetsim-v1");
        paths.insert(p, json!({"serverRelativeURL": url}));
    }
    json_response(StatusCode::OK, json!({"paths": paths}))
}

fn item_path(r: &ResourceInfo) -> String {
    let base = gv_path(r.group, r.version);
    if r.namespaced {
        format!("/{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
    } else {
        format!("/{base}/{}/{{name}}", r.plural)
    }
}

/// `GET /openapi/v3/<api/v1 | apis/<group>/<version>>`.
pub async fn group_version(Path(rest): Path<String>) -> Result<Response, AppError> {
    let (g, v) = group_versions()
        .into_iter()
        .find(|(g, v)| gv_path(g, v) == rest)
        .ok_or(AppError::NoRoute)?;
    let mut paths = Map::new();
    for r in registry::in_group_version(g, v) {
        let op = json!({
            "description": format!("partially update the specified {}", r.kind),
            "operationId": format!("patch{}", r.kind),
            "parameters": [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}}
            ],
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind}
        });
        paths.insert(item_path(r), json!({"patch": op}));
    }
    let doc = json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": Value::Object(paths),
        "components": {}
    });
    Ok(json_response(StatusCode::OK, doc))
}
