//! Server-side printing: `meta.k8s.io/v1 Table` for `kubectl get`, and the metadata-only
//! `PartialObjectMetadata` form that garbage collectors and metadata watchers ask for.
//!
//! kubectl asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints
//! whatever columns come back, so the columns a learner sees are decided here. They follow
//! kube-apiserver's printers (`pkg/printers/internalversion`): priority-1 columns appear with
//! `-o wide`. Each row carries the object's metadata (PartialObjectMetadata) so kubectl can
//! add the NAMESPACE column with `-A`.

use axum::http::{header, HeaderMap};
use serde_json::{json, Value};

use crate::registry::ResourceInfo;

/// Does the client want a Table?
pub fn wants_table(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=Table"))
}

/// Does the client want metadata only (`as=PartialObjectMetadata[List]`)?
pub fn wants_metadata(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=PartialObjectMetadata"))
}

/// An object's `meta.k8s.io/v1 PartialObjectMetadata`.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
           "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// `?includeObject=`: None, Object or (default) PartialObjectMetadata.
pub fn include_object(q: &std::collections::HashMap<String, String>) -> Option<&'static str> {
    match q.get("includeObject").map(String::as_str) {
        Some("None") => None,
        Some("Object") => Some("Object"),
        _ => Some("PartialObjectMetadata"),
    }
}

/// How long ago, the way `kubectl` shows ages (`k8s.io/apimachinery/pkg/util/duration`).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h) = (s / 60, s / 3600);
    let d = h / 24;
    let y = d / 365;
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 && s % 60 != 0 => format!("{m}m{}s", s % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 && m % 60 != 0 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 && h % 24 != 0 => format!("{d}d{}h", h % 24),
        _ if h < 24 * 365 * 2 => format!("{d}d"),
        _ if h < 24 * 365 * 8 && d % 365 != 0 => format!("{y}y{}d", d % 365),
        _ => format!("{y}y"),
    }
}

/// A Table of `objs`; `include` is the row object form (see `include_object`).
pub fn to_table(
    info: &ResourceInfo,
    objs: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
    include: Option<&str>,
) -> Value {
    if let Some(custom) = info.custom.filter(|c| !c.columns.is_empty()) {
        let defs = crate::crd::column_definitions(custom);
        return table_of(
            defs,
            objs,
            |o| crate::crd::cells(custom, o),
            resource_version,
            continue_token,
            include,
        );
    }
    let (cols, row) = crate::printers::printer(info);
    let defs: Vec<Value> = cols
        .iter()
        .map(|(name, ty, prio)| {
            let format = if *name == "Name" { "name" } else { "" };
            let desc = if *name == "Name" {
                "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
            } else {
                ""
            };
            json!({"name": name, "type": ty, "format": format, "description": desc, "priority": prio})
        })
        .collect();
    table_of(defs, objs, row, resource_version, continue_token, include)
}

fn table_of(
    defs: Vec<Value>,
    objs: &[Value],
    row: impl Fn(&Value) -> Vec<Value>,
    resource_version: &str,
    continue_token: Option<&str>,
    include: Option<&str>,
) -> Value {
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut r = json!({"cells": row(o)});
            match include {
                Some("Object") => r["object"] = o.clone(),
                Some(_) => r["object"] = partial_metadata(o),
                None => {}
            }
            r
        })
        .collect();
    let mut meta = json!({"resourceVersion": resource_version});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
           "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(3 * 86400), "3d");
    }

    #[test]
    fn service_columns() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.1.2",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}], "selector": {"app": "web"}}});
        let t = to_table(
            find("", "v1", "services").expect("svc"),
            &[svc],
            "7",
            None,
            None,
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web",
                "NodePort",
                "10.96.1.2",
                "<none>",
                "80:30080/TCP",
                "<unknown>",
                "app=web"
            ])
        );
        assert_eq!(t["columnDefinitions"][6]["priority"], json!(1));
    }
}
