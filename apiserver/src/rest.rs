//! The generic REST handler: every resource of `registry.rs` is routed here, and reads
//! (get, list, and the response formats) are answered here; writes are in `write.rs`,
//! watches in `watch.rs`.
//!
//! The path is parsed by hand (`/api/v1/namespaces/<ns>/<resource>/<name>/<sub>` and its
//! variants) because the same shape serves every resource and `namespaces/<ns>/status`
//! must be told apart from `namespaces/<ns>/<resource>`. Bodies are read whole, up to
//! kube-apiserver's 3 MiB limit.

use std::collections::HashMap;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::backend::Kv;
use crate::error::AppError;
use crate::registry::{self, ResourceInfo};
use crate::selector::{FieldSelector, LabelSelector};
use crate::storage::{meta_str, ListQuery};
use crate::{table, watch, write, AppState};

/// Subresources this handler serves (the registry also names ones still to come).
pub const SERVED_SUBRESOURCES: &[&str] = &[
    "status",
    "approval",
    "scale",
    "binding",
    "log",
    "finalize",
    "exec",
    "attach",
    "portforward",
    "token",
];

/// kube-apiserver's limit on request bodies.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// A request's target, parsed from its path.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
    /// `?dryRun=All`: validate and answer, but write nothing.
    pub dry_run: bool,
    /// Who writes (`?fieldManager=`, else the User-Agent): owner of the fields it sets.
    pub field_manager: String,
    /// `?force=true`: server-side apply takes fields other managers own.
    pub force: bool,
    /// Who sends the request (None in-process, before authentication).
    pub user: Option<crate::tls::UserInfo>,
    /// `?fieldValidation=`: what an unknown field in the body makes of the request.
    pub field_validation: crate::fields::FieldValidation,
}

/// `/api/v1/...` or `/apis/<group>/<version>/...` to a Target, among the built-ins.
pub fn parse_path(path: &str) -> Result<Target, AppError> {
    parse_path_with(path, registry::find)
}

/// `parse_path` with the resources `find` knows (built-in and custom).
pub fn parse_path_with(
    path: &str,
    find: impl Fn(&str, &str, &str) -> Option<&'static ResourceInfo>,
) -> Result<Target, AppError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(AppError::NoRoute),
    };
    let s = |x: &&str| Some(x.to_string());
    let is_ns_sub = |x: &str| matches!(x, "status" | "finalize");
    let (ns, plural, name, sub) = match rest {
        ["namespaces", n, r] if !is_ns_sub(r) => (s(n), *r, None, None),
        ["namespaces", n, r, name] => (s(n), *r, s(name), None),
        ["namespaces", n, r, name, sub] => (s(n), *r, s(name), s(sub)),
        [r] => (None, *r, None, None),
        [r, name] => (None, *r, s(name), None),
        [r, name, sub] => (None, *r, s(name), s(sub)),
        _ => return Err(AppError::NoRoute),
    };
    let info = find(group, version, plural).ok_or(AppError::NoRoute)?;
    let wrong_scope = if info.namespaced {
        ns.is_none() && name.is_some()
    } else {
        ns.is_some()
    };
    if wrong_scope {
        return Err(AppError::NoRoute);
    }
    if let Some(sub) = &sub {
        if !info.subresources.contains(&sub.as_str())
            || !SERVED_SUBRESOURCES.contains(&sub.as_str())
        {
            return Err(AppError::NoRoute);
        }
    }
    Ok(Target {
        info,
        namespace: ns,
        name,
        sub,
        dry_run: false,
        field_manager: String::new(),
        force: false,
        user: None,
        field_validation: Default::default(),
    })
}

/// An object as an item of a typed list, which carries no kind/apiVersion on the wire.
pub fn as_list_item(mut obj: Value) -> Value {
    if let Value::Object(fields) = &mut obj {
        fields.remove("kind");
        fields.remove("apiVersion");
    }
    obj
}

/// A JSON response, keys in Kubernetes order (`kind`, `apiVersion`, `metadata` first).
pub fn json_response(code: StatusCode, v: Value) -> Response {
    let mut body = crate::json::to_vec(&v);
    body.push(b'\n');
    json_body_response(code, body)
}

/// JSON text (with its final newline) as a response.
fn json_body_response(code: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (code, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// An object just written, as JSON. The body is spliced from the bytes stored in etcd
/// (`rawlist::object`, as watch events are) when those are the object's own form: writing
/// the parsed object again was about a tenth of a create's CPU in the server. The parsed
/// object is written when the stored form differs (`conversion::reshapes`), nothing was
/// stored (dry run), or the splice does not understand the bytes.
pub fn written_response(
    code: StatusCode,
    info: &ResourceInfo,
    (obj, stored): (Value, Option<Kv>),
) -> Response {
    let spliced = stored
        .as_ref()
        .filter(|_| !crate::conversion::reshapes(info))
        .and_then(|kv| crate::rawlist::object(&kv.value, kv.mod_revision));
    let Some(mut body) = spliced else {
        return json_response(code, obj);
    };
    body.push(b'\n');
    json_body_response(code, body)
}

/// Parse a JSON or YAML body into an object.
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, AppError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let v: Value = if ct.starts_with("application/vnd.kubernetes.protobuf") {
        crate::protobuf::decode(body)?
    } else if ct.contains("yaml") {
        serde_yaml::from_slice(body)
            .map_err(|e| AppError::BadRequest(format!("error decoding YAML: {e}")))?
    } else if ct.contains("json") || ct.is_empty() {
        serde_json::from_slice(body)
            .map_err(|e| AppError::BadRequest(format!("error decoding JSON: {e}")))?
    } else {
        return Err(AppError::UnsupportedMediaType(
            "application/json, application/yaml, application/vnd.kubernetes.protobuf".into(),
        ));
    };
    if !v.is_object() {
        return Err(AppError::BadRequest(
            "Object 'Kind' is missing in the request body".into(),
        ));
    }
    Ok(v)
}

fn dry_run(q: &HashMap<String, String>) -> bool {
    q.get("dryRun").is_some_and(|v| v == "All")
}

/// The entry point for every resource path.
pub async fn handle(State(state): State<AppState>, req: Request) -> Result<Response, AppError> {
    crate::warning::collect(handle_request(state, req)).await
}

async fn handle_request(state: AppState, req: Request) -> Result<Response, AppError> {
    let (mut parts, body) = req.into_parts();
    let mut t = parse_path_with(parts.uri.path(), |g, v, p| state.find(g, v, p))?;
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .map_err(|e| AppError::BadRequest(e.to_string()))?;
    t.dry_run = dry_run(&query);
    t.force = query_bool(&query, "force");
    t.user = parts.extensions.remove::<crate::tls::UserInfo>();
    t.field_validation =
        crate::fields::FieldValidation::parse(query.get("fieldValidation").map(String::as_str))?;
    t.field_manager = crate::managed::manager_of(
        query.get("fieldManager").map(String::as_str),
        parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    );
    if matches!(t.sub.as_deref(), Some("exec" | "attach" | "portforward")) {
        return crate::streaming::proxy(&state, &t, parts, &query).await;
    }
    let body = read_body(body).await?;
    let h = &parts.headers;
    let ns = t.namespace.as_deref();
    match (&parts.method, t.name.as_deref()) {
        (&Method::POST, Some(name)) if t.sub.as_deref() == Some("binding") => {
            write::bind(&state, &t, name, h, &body).await
        }
        (_, Some(_)) if t.sub.as_deref() == Some("binding") => Err(AppError::MethodNotAllowed),
        (&Method::POST, Some(name)) if t.sub.as_deref() == Some("token") => {
            crate::serviceaccount::create_token(&state, &t, name, h, &body).await
        }
        (_, Some(_)) if t.sub.as_deref() == Some("token") => Err(AppError::MethodNotAllowed),
        (&Method::GET, Some(name)) if t.sub.as_deref() == Some("log") => {
            crate::logs::pod_log(&state, &t, name, &query).await
        }
        (_, Some(_)) if t.sub.as_deref() == Some("log") => Err(AppError::MethodNotAllowed),
        (&Method::GET, None) if is_watch(&query) => watch::serve(state, t, query, h).await,
        (&Method::GET, None) => list(&state, &t, &query, h).await,
        (&Method::GET, Some(name)) => {
            let (obj, _) = get_existing(&state, &t, name).await?;
            if t.sub.as_deref() == Some("scale") {
                return Ok(json_response(
                    StatusCode::OK,
                    crate::crd::to_scale(t.info, &obj),
                ));
            }
            Ok(render(t.info, obj, h, &query))
        }
        (&Method::POST, None) => write::create(&state, &t, ns, h, &body).await,
        (&Method::PUT, Some(name)) => write::update(&state, &t, name, h, &body).await,
        (&Method::PATCH, Some(name)) => write::patch_object(&state, &t, name, h, &body).await,
        (&Method::DELETE, Some(name)) => write::delete(&state, &t, name, h, &body).await,
        (&Method::DELETE, None) => write::delete_collection(&state, &t, &query, h).await,
        _ => Err(AppError::MethodNotAllowed),
    }
}

async fn read_body(body: Body) -> Result<Bytes, AppError> {
    to_bytes(body, MAX_BODY).await.map_err(|e| {
        if e.to_string().contains("length limit") {
            AppError::TooLarge(MAX_BODY)
        } else {
            AppError::BadRequest(format!("error reading the request body: {e}"))
        }
    })
}

fn is_watch(q: &HashMap<String, String>) -> bool {
    query_bool(q, "watch")
}

/// A boolean query parameter, read as Go's `strconv.ParseBool` reads it: the official
/// Python client sends `watch=True`, client-go `watch=true`, curl users `watch=1`.
pub fn query_bool(q: &HashMap<String, String>, key: &str) -> bool {
    matches!(
        q.get(key).map(String::as_str),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

/// One object as JSON, or as a one-row Table when the client asks for one.
fn render(info: &ResourceInfo, obj: Value, h: &HeaderMap, q: &HashMap<String, String>) -> Response {
    if table::wants_table(h) {
        let rv = meta_str(&obj, "resourceVersion").to_string();
        let t = table::to_table(info, &[obj], &rv, None, table::include_object(q));
        return json_response(StatusCode::OK, t);
    }
    if table::wants_metadata(h) {
        return json_response(StatusCode::OK, table::partial_metadata(&obj));
    }
    json_response(StatusCode::OK, obj)
}

pub(crate) async fn get_existing(
    state: &AppState,
    t: &Target,
    name: &str,
) -> Result<(Value, Kv), AppError> {
    state
        .store
        .get(t.info, t.namespace.as_deref(), name)
        .await?
        .ok_or_else(|| AppError::not_found(t.info.group, t.info.plural, name))
}

/// Parse the list options shared by list and watch.
pub fn list_query(q: &HashMap<String, String>) -> Result<ListQuery, AppError> {
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    Ok(ListQuery {
        labels: LabelSelector::parse(get("labelSelector")).map_err(AppError::BadRequest)?,
        fields: FieldSelector::parse(get("fieldSelector")).map_err(AppError::BadRequest)?,
        limit: get("limit").parse().unwrap_or(0),
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
    })
}

async fn list(
    state: &AppState,
    t: &Target,
    q: &HashMap<String, String>,
    h: &HeaderMap,
) -> Result<Response, AppError> {
    let lq = list_query(q)?;
    let spliceable = !crate::conversion::reshapes(t.info);
    if spliceable && !table::wants_table(h) && !table::wants_metadata(h) && lq.fields.is_empty() {
        return list_spliced(state, t, &lq).await;
    }
    let page = state
        .store
        .list(t.info, t.namespace.as_deref(), &lq)
        .await?;
    let rv = page.revision.to_string();
    if table::wants_table(h) {
        let tbl = table::to_table(
            t.info,
            &page.items,
            &rv,
            page.continue_token.as_deref(),
            table::include_object(q),
        );
        return Ok(json_response(StatusCode::OK, tbl));
    }
    let meta = list_meta(&page);
    if table::wants_metadata(h) {
        let items: Vec<Value> = page.items.iter().map(table::partial_metadata).collect();
        return Ok(json_response(
            StatusCode::OK,
            json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
        ));
    }
    let items: Vec<Value> = page.items.into_iter().map(as_list_item).collect();
    Ok(json_response(
        StatusCode::OK,
        json!({"kind": t.info.list_kind(), "apiVersion": t.info.api_version(), "metadata": meta, "items": items}),
    ))
}

/// The list's `metadata`: resourceVersion, and where paging goes on.
fn list_meta<T>(page: &crate::storage::ListPage<T>) -> Value {
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(n) = page.remaining {
        meta["remainingItemCount"] = json!(n);
    }
    meta
}

/// A plain JSON list, its items spliced from the stored bytes (`rawlist.rs`): the same
/// bytes as parsing and writing each object, without the cost. An object the splicer does
/// not understand is parsed instead.
async fn list_spliced(state: &AppState, t: &Target, lq: &ListQuery) -> Result<Response, AppError> {
    let store = &state.store;
    let page = store
        .list_with(t.info, t.namespace.as_deref(), lq, |kv| {
            let mut item = Vec::with_capacity(kv.value.len() + 32);
            match crate::rawlist::list_item(&kv.value, kv.mod_revision, &lq.labels, &mut item) {
                Ok(true) => Ok(Some(item)),
                Ok(false) => Ok(None),
                Err(()) => {
                    let mut obj = store.decode(kv)?;
                    if !lq.labels.matches(&obj) {
                        return Ok(None);
                    }
                    obj = as_list_item(obj);
                    Ok(Some(crate::json::to_vec(&obj)))
                }
            }
        })
        .await?;
    let head = json!({"kind": t.info.list_kind(), "apiVersion": t.info.api_version(), "metadata": list_meta(&page)});
    let mut body = crate::json::to_vec(&head);
    // `{"kind":…,"metadata":{…}}` → `{"kind":…,"metadata":{…},"items":[…]}` + newline.
    body.pop();
    let size: usize = page.items.iter().map(|i| i.len() + 1).sum();
    body.reserve(size + 16);
    body.extend_from_slice(b",\"items\":[");
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}\n");
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(resp: Response) -> String {
        let bytes = to_bytes(resp.into_body(), MAX_BODY).await.expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn a_written_object_is_answered_as_json_response_writes_it() {
        let pods = registry::find("", "v1", "pods").expect("pods");
        let obj = json!({"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "p", "namespace": "d", "uid": "u", "resourceVersion": "7",
                "labels": {"a": "b"}, "managedFields": [{"manager": "m"}]},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let kv = Kv {
            key: "/registry/pods/d/p".into(),
            value: crate::storage::Store::encode(&obj),
            mod_revision: 7,
        };
        let want = body_of(json_response(StatusCode::CREATED, obj.clone())).await;
        let spliced = written_response(StatusCode::CREATED, pods, (obj.clone(), Some(kv)));
        assert_eq!(spliced.status(), StatusCode::CREATED);
        assert_eq!(body_of(spliced).await, want);
        // Nothing stored (a dry run): the object itself is written.
        let dry = written_response(StatusCode::CREATED, pods, (obj, None));
        assert_eq!(body_of(dry).await, want);
    }

    #[test]
    fn paths() {
        let t = parse_path("/api/v1/namespaces/d/pods/p/status").expect("pod status");
        assert_eq!(t.info.plural, "pods");
        assert_eq!(t.namespace.as_deref(), Some("d"));
        assert_eq!(t.sub.as_deref(), Some("status"));
        let t = parse_path("/api/v1/namespaces/d/status").expect("ns status");
        assert_eq!(t.info.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("d"));
        let t = parse_path("/apis/apps/v1/deployments").expect("all deploys");
        assert!(t.namespace.is_none() && t.name.is_none());
        assert!(parse_path("/api/v1/nodes/n/exec").is_err());
        assert!(parse_path("/apis/apps/v1/namespaces/d/nope").is_err());
    }

    #[test]
    fn booleans_as_go_parses_them() {
        for (v, want) in [
            ("true", true),
            ("True", true),
            ("1", true),
            ("t", true),
            ("false", false),
            ("False", false),
            ("yes", false),
        ] {
            let q = HashMap::from([("watch".to_string(), v.to_string())]);
            assert_eq!(query_bool(&q, "watch"), want, "{v}");
        }
        assert!(!query_bool(&HashMap::new(), "watch"));
    }
}
