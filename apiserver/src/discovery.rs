//! Discovery: `/version`, `/api`, `/apis`, `/apis/<group>` and each group/version's
//! resource list, all generated from the resource table in `registry.rs` and the custom
//! resources of CRDs (`crd.rs`).
//!
//! `/version` reports 1.32: the kubectl on these machines picks its release from it.
//! kubectl 1.32 first asks `/api` and `/apis` for aggregated discovery
//! (`Accept: …;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`): we answer that with
//! the whole `apidiscovery.k8s.io/v2` list in one response, so kubectl needs no per-group
//! requests. Clients that do not ask for it (kube-rs) get the legacy documents.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
    ServerAddressByClientCIDR,
};
use k8s_openapi::apimachinery::pkg::version::Info;
use serde_json::{json, Value};

use crate::error::AppError;
use crate::registry::{self, ResourceInfo};
use crate::rest::json_response;
use crate::AppState;

fn to_json<T: serde::Serialize>(v: &T) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
    )
}

pub async fn version() -> Response {
    to_json(&Info {
        major: "1".into(),
        minor: "32".into(),
        git_version: "v1.32.0".into(),
        git_commit: "knetsim".into(),
        git_tree_state: "clean".into(),
        build_date: "2024-12-11T00:00:00Z".into(),
        go_version: "go1.23.3".into(),
        compiler: "gc".into(),
        platform: "linux/amd64".into(),
    })
}

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn wants_aggregated(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.replace(' ', "");
            t.contains("as=APIGroupDiscoveryList") && t.contains("v=v2") && !t.contains("v=v2beta1")
        })
}

fn verbs_json(verbs: &[&str]) -> Value {
    json!(verbs)
}

fn verbs_of(r: &ResourceInfo) -> &'static [&'static str] {
    if registry::CREATE_ONLY.contains(r) {
        &["create"]
    } else if registry::READ_ONLY.contains(r) {
        &["get", "list"]
    } else {
        VERBS
    }
}

/// One `APIResourceDiscovery` of the v2 aggregated document.
fn resource_discovery(r: &ResourceInfo) -> Value {
    let kind = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .filter(|s| crate::rest::SERVED_SUBRESOURCES.contains(s))
        .map(|s| {
            let (group, version, k, verbs) = subresource_meta(r, s);
            json!({"subresource": s, "responseKind": {"group": group, "version": version, "kind": k}, "verbs": verbs})
        })
        .collect();
    let mut d = json!({
        "resource": r.plural,
        "responseKind": kind,
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": verbs_json(verbs_of(r)),
    });
    if !r.short_names.is_empty() {
        d["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        d["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        d["subresources"] = json!(subresources);
    }
    d
}

/// The aggregated discovery list for the core group (`/api`) or the named groups (`/apis`).
fn aggregated(state: &AppState, core: bool) -> Response {
    let all = state.listed_resources();
    let groups: Vec<(&str, Vec<&str>)> = if core {
        vec![("", vec!["v1"])]
    } else {
        registry::groups_of(&all)
    };
    let items: Vec<Value> = groups
        .iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| {
                    let rs: Vec<Value> = all
                        .iter()
                        .filter(|r| r.group == *g && r.version == *v)
                        .map(|r| resource_discovery(r))
                        .collect();
                    json!({"version": v, "resources": rs, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    let body = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
                      "metadata": {}, "items": items});
    let mut resp = json_response(StatusCode::OK, body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(AGGREGATED));
    resp
}

pub async fn api_versions(State(state): State<AppState>, h: HeaderMap) -> Response {
    if wants_aggregated(&h) {
        return aggregated(&state, true);
    }
    to_json(&APIVersions {
        versions: vec!["v1".into()],
        server_address_by_client_cidrs: state
            .advertise
            .iter()
            .map(|a| ServerAddressByClientCIDR {
                client_cidr: "0.0.0.0/0".into(),
                server_address: a.clone(),
            })
            .collect(),
    })
}

fn group_doc(name: &str, versions: &[&str]) -> APIGroup {
    let gv = |v: &&str| GroupVersionForDiscovery {
        group_version: format!("{name}/{v}"),
        version: v.to_string(),
    };
    APIGroup {
        name: name.into(),
        versions: versions.iter().map(gv).collect(),
        preferred_version: versions.first().map(gv),
        server_address_by_client_cidrs: None,
    }
}

pub async fn api_groups(State(state): State<AppState>, h: HeaderMap) -> Response {
    if wants_aggregated(&h) {
        return aggregated(&state, false);
    }
    to_json(&APIGroupList {
        groups: registry::groups_of(&state.listed_resources())
            .iter()
            .map(|(g, vs)| group_doc(g, vs))
            .collect(),
    })
}

pub async fn api_group(
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Response, AppError> {
    let groups = registry::groups_of(&state.listed_resources());
    let (g, vs) = groups
        .iter()
        .find(|(g, _)| *g == group)
        .ok_or(AppError::NoRoute)?;
    Ok(to_json(&group_doc(g, vs)))
}

/// Group, version, kind and verbs of a subresource.
fn subresource_meta(
    r: &ResourceInfo,
    sub: &str,
) -> (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
) {
    match sub {
        "scale" => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        "binding" => ("", "v1", "Binding", &["create"]),
        "exec" => ("", "v1", "PodExecOptions", &["create", "get"]),
        "attach" => ("", "v1", "PodAttachOptions", &["create", "get"]),
        "portforward" => ("", "v1", "PodPortForwardOptions", &["create", "get"]),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest", &["create"]),
        _ => (r.group, r.version, r.kind, &["get", "patch", "update"]),
    }
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resources(r: &ResourceInfo) -> Vec<APIResource> {
    let strings = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let non_empty = |xs: &[&str]| (!xs.is_empty()).then(|| strings(xs));
    let mut out = vec![APIResource {
        name: r.plural.into(),
        singular_name: r.singular.into(),
        namespaced: r.namespaced,
        kind: r.kind.into(),
        verbs: strings(verbs_of(r)),
        short_names: non_empty(r.short_names),
        categories: non_empty(r.categories),
        ..Default::default()
    }];
    for sub in r
        .subresources
        .iter()
        .filter(|s| crate::rest::SERVED_SUBRESOURCES.contains(s))
    {
        let (group, version, kind, verbs) = subresource_meta(r, sub);
        out.push(APIResource {
            name: format!("{}/{sub}", r.plural),
            singular_name: String::new(),
            namespaced: r.namespaced,
            kind: kind.into(),
            group: (group != r.group).then(|| group.to_string()),
            version: (version != r.version).then(|| version.to_string()),
            verbs: strings(verbs),
            ..Default::default()
        });
    }
    out
}

fn resource_list(state: &AppState, group: &str, version: &str) -> Result<Response, AppError> {
    let list: Vec<APIResource> = state
        .listed_resources()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(resources)
        .collect();
    if list.is_empty() {
        return Err(AppError::NoRoute);
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(to_json(&APIResourceList {
        group_version,
        resources: list,
    }))
}

pub async fn core_resources(State(state): State<AppState>) -> Result<Response, AppError> {
    resource_list(&state, "", "v1")
}

pub async fn group_resources(
    State(state): State<AppState>,
    Path((group, version)): Path<(String, String)>,
) -> Result<Response, AppError> {
    resource_list(&state, &group, &version)
}
