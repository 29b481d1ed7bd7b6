//! In-process tests of the whole HTTP application (`app(state).oneshot(req)`) over the
//! in-memory store: status codes and Status bodies, CRUD semantics, tables, watches,
//! discovery and Service allocation.

use axum::body::{to_bytes, Body};
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::tls::UserInfo;
use crate::{app, AppState};

pub(crate) async fn setup() -> Router {
    let state = AppState::in_memory();
    state.bootstrap(None).await.expect("bootstrap");
    app(state)
}

pub(crate) fn request(method: Method, uri: &str, body: Option<&Value>) -> Request<Body> {
    let mut r = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header(
            header::CONTENT_TYPE,
            if method == Method::PATCH {
                "application/merge-patch+json"
            } else {
                "application/json"
            },
        )
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .expect("request");
    r.extensions_mut().insert(UserInfo {
        name: "admin".into(),
        groups: vec!["system:masters".into()],
    });
    r
}

pub(crate) async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let body = to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub(crate) async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (s, b) = send(app, request(method, uri, body.as_ref())).await;
    (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

/// A GET asking for a Table, as `kubectl get` asks.
pub(crate) fn table_request(uri: &str) -> Request<Body> {
    let mut req = request(Method::GET, uri, None);
    req.headers_mut().insert(
        header::ACCEPT,
        header::HeaderValue::from_static(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        ),
    );
    req
}

/// The events of a watch that ends by itself (`timeoutSeconds`), parsed.
pub(crate) async fn watch_events(app: &Router, uri: &str) -> Vec<Value> {
    let (s, body) = send(app, request(Method::GET, uri, None)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": "web"}}, "data": {"k": "v"}})
}

#[tokio::test]
async fn anonymous_is_401() {
    let app = setup().await;
    let req = Request::builder()
        .uri("/api/v1/pods")
        .body(Body::empty())
        .expect("req");
    let (s, b) = send(&app, req).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b, "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n");
}

#[tokio::test]
async fn crud_with_conflicts_and_errors() {
    let app = setup().await;
    let (s, b) = send(
        &app,
        request(
            Method::POST,
            "/api/v1/namespaces/nope/configmaps",
            Some(&cm("a")),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b, "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"namespaces \\\"nope\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"nope\",\"kind\":\"namespaces\"},\"code\":404}\n");

    let (s, created) = call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(cm("a")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, raw) = send(
        &app,
        request(Method::GET, "/api/v1/namespaces/default/configmaps/a", None),
    )
    .await;
    assert!(
        raw.starts_with("{\"kind\":\"ConfigMap\",\"apiVersion\":\"v1\",\"metadata\""),
        "{raw}"
    );
    assert_eq!(created["metadata"]["generation"], json!(1));
    assert_eq!(created["metadata"]["uid"].as_str().map(str::len), Some(36));

    let (s, b) = call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(cm("a")),
    )
    .await;
    assert_eq!(
        (s, b["reason"].clone()),
        (StatusCode::CONFLICT, json!("AlreadyExists"))
    );

    let mut update = created.clone();
    update["data"]["k"] = json!("w");
    let (s, updated) = call(
        &app,
        Method::PUT,
        "/api/v1/namespaces/default/configmaps/a",
        Some(update.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    let (s, b) = call(
        &app,
        Method::PUT,
        "/api/v1/namespaces/default/configmaps/a",
        Some(update),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b["message"], json!("Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"));

    let (s, b) = call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(cm("Bad_Name")),
    )
    .await;
    assert_eq!(
        (s, b["reason"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("Invalid"))
    );
    assert_eq!(b["details"]["causes"][0]["field"], json!("metadata.name"));

    let mut other_ns = cm("b");
    other_ns["metadata"]["namespace"] = json!("kube-system");
    let (s, b) = call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(other_ns),
    )
    .await;
    assert_eq!(
        (s, b["reason"].clone()),
        (StatusCode::BAD_REQUEST, json!("BadRequest"))
    );

    let mut bad = request(Method::POST, "/api/v1/namespaces/default/configmaps", None);
    *bad.body_mut() = Body::from("{not json");
    let (s, b) = send(&app, bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    let mut big = request(Method::POST, "/api/v1/namespaces/default/configmaps", None);
    *big.body_mut() = Body::from(vec![b' '; crate::rest::MAX_BODY + 1]);
    let (s, b) = send(&app, big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");

    let (s, b) = call(
        &app,
        Method::DELETE,
        "/api/v1/namespaces/default/configmaps/a",
        None,
    )
    .await;
    assert_eq!(
        (s, b["metadata"]["name"].clone()),
        (StatusCode::OK, json!("a"))
    );
    let (s, b) = call(
        &app,
        Method::GET,
        "/api/v1/namespaces/default/configmaps/a",
        None,
    )
    .await;
    assert_eq!(
        (s, b["message"].clone()),
        (StatusCode::NOT_FOUND, json!("configmaps \"a\" not found"))
    );
}

#[tokio::test]
async fn finalizers_hold_deletion() {
    let app = setup().await;
    let mut obj = cm("held");
    obj["metadata"]["finalizers"] = json!(["example.com/hold"]);
    call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(obj),
    )
    .await;
    let (s, b) = call(
        &app,
        Method::DELETE,
        "/api/v1/namespaces/default/configmaps/held",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(b["metadata"]["deletionTimestamp"].is_string(), "{b}");
    // Being deleted, it is still listed (kube-rs watchers relist it after a 410).
    let (s, list) = call(
        &app,
        Method::GET,
        "/api/v1/namespaces/default/configmaps?labelSelector=app%3Dweb&limit=500&resourceVersion=0",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"][0]["metadata"]["name"], "held", "{list}");
    let (s, _) = call(
        &app,
        Method::PATCH,
        "/api/v1/namespaces/default/configmaps/held",
        Some(json!({"metadata": {"finalizers": null}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &app,
        Method::GET,
        "/api/v1/namespaces/default/configmaps/held",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn lists_tables_and_selectors() {
    let app = setup().await;
    for n in ["a", "b", "c"] {
        call(
            &app,
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(cm(n)),
        )
        .await;
    }
    let (_, l) = call(
        &app,
        Method::GET,
        "/api/v1/configmaps?labelSelector=app%3Dweb&fieldSelector=metadata.name!%3Db",
        None,
    )
    .await;
    assert_eq!(l["kind"], json!("ConfigMapList"));
    let names: Vec<&str> = l["items"]
        .as_array()
        .map(|i| {
            i.iter()
                .filter_map(|o| o["metadata"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, ["a", "c"]);
    let (_, p) = call(
        &app,
        Method::GET,
        "/api/v1/namespaces/default/configmaps?limit=2",
        None,
    )
    .await;
    assert_eq!(p["items"].as_array().map(Vec::len), Some(2));
    assert!(p["metadata"]["continue"].is_string());

    let (_, t) = send(&app, table_request("/api/v1/namespaces/default/services")).await;
    let t: Value = serde_json::from_str(&t).expect("table");
    assert_eq!(t["kind"], json!("Table"));
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .map(|c| c.iter().filter_map(|d| d["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        cols,
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
            "Selector"
        ]
    );
    assert_eq!(t["rows"][0]["cells"][2], json!("10.96.0.1"));
}

#[tokio::test]
async fn watch_streams_events_after_version() {
    let app = setup().await;
    let (_, a) = call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(cm("a")),
    )
    .await;
    call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(cm("b")),
    )
    .await;
    let rv = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let uri = format!(
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=1"
    );
    let events = watch_events(&app, &uri).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], json!("ADDED"));
    assert_eq!(events[0]["object"]["metadata"]["name"], json!("b"));
}

#[tokio::test]
async fn watch_bookmarks_and_initial_events() {
    let mut state = AppState::in_memory();
    state.bookmark_interval = std::time::Duration::from_millis(100);
    state.bootstrap(None).await.expect("bootstrap");
    let app = app(state);
    let uri = "/api/v1/namespaces?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1";
    let events = watch_events(&app, uri).await;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        &types[..5],
        ["ADDED", "ADDED", "ADDED", "ADDED", "BOOKMARK"],
        "{events:?}"
    );
    assert_eq!(
        events[4]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        json!("true")
    );
    assert!(types.len() > 6, "periodic bookmarks: {types:?}");
}

#[tokio::test]
async fn discovery_and_services() {
    let app = setup().await;
    let (_, v) = call(&app, Method::GET, "/version", None).await;
    assert_eq!(
        (v["major"].clone(), v["minor"].clone()),
        (json!("1"), json!("32"))
    );
    let (_, r) = call(&app, Method::GET, "/api/v1", None).await;
    let pods = r["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|x| x["name"] == json!("pods")).cloned())
        .unwrap_or_default();
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["categories"], json!(["all"]));
    let (_, g) = call(&app, Method::GET, "/apis/apps/v1", None).await;
    assert!(g["resources"]
        .as_array()
        .is_some_and(|rs| rs.iter().any(|x| x["name"] == json!("deployments/scale"))));

    let svc = |name: &str, ip: Option<&str>| {
        let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}});
        if let Some(ip) = ip {
            s["spec"]["clusterIP"] = json!(ip);
        }
        s
    };
    let (s, b) = call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/services",
        Some(svc("dup", Some("10.96.0.1"))),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(
        b["message"]
            .as_str()
            .is_some_and(|m| m.contains("provided IP is already allocated")),
        "{b}"
    );
    let (_, h) = call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/services",
        Some(svc("headless", Some("None"))),
    )
    .await;
    assert_eq!(h["spec"]["clusterIP"], json!("None"));
    let (_, w) = call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/services",
        Some(svc("web", None)),
    )
    .await;
    assert_eq!(w["spec"]["ports"][0]["targetPort"], json!(80));
    assert!(w["spec"]["clusterIP"]
        .as_str()
        .is_some_and(|ip| ip.starts_with("10.96.")));
}

#[tokio::test]
async fn dry_run_and_delete_preconditions() {
    let app = setup().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    let (s, _) = call(
        &app,
        Method::POST,
        &format!("{cms}?dryRun=All"),
        Some(cm("dry")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = call(&app, Method::GET, &format!("{cms}/dry"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    call(&app, Method::POST, cms, Some(cm("p"))).await;
    let patch = json!({"data": {"k": "changed"}});
    let (_, b) = call(
        &app,
        Method::PATCH,
        &format!("{cms}/p?dryRun=All"),
        Some(patch),
    )
    .await;
    assert_eq!(b["data"]["k"], json!("changed"));
    let (_, b) = call(&app, Method::GET, &format!("{cms}/p"), None).await;
    assert_eq!(b["data"]["k"], json!("v"));

    let wrong =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "wrong"}});
    let (s, b) = call(&app, Method::DELETE, &format!("{cms}/p"), Some(wrong)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, _) = call(&app, Method::DELETE, &format!("{cms}/p?dryRun=All"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, Method::GET, &format!("{cms}/p"), None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn apply_metadata_only_and_delete_collection() {
    let app = setup().await;
    let apply = |yaml: &str| {
        let mut r = request(
            Method::PATCH,
            "/api/v1/namespaces/default/configmaps/ssa?fieldManager=t&force=true",
            None,
        );
        *r.body_mut() = Body::from(yaml.to_string());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/apply-patch+yaml".parse().expect("hv"),
        );
        r
    };
    let (s, b) = send(&app, apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  labels: {app: web}\ndata:\n  a: '1'\n")).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = send(
        &app,
        apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  labels: {app: web}\ndata:\n  b: '2'\n"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let b: Value = serde_json::from_str(&b).expect("json");
    // The same manager dropped `a` from its configuration: it goes.
    assert_eq!(b["data"], json!({"b": "2"}));
    assert_eq!(b["metadata"]["managedFields"][0]["manager"], json!("t"));

    let mut req = request(Method::GET, "/api/v1/namespaces/default/configmaps", None);
    req.headers_mut().insert(
        header::ACCEPT,
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
            .parse()
            .expect("hv"),
    );
    let (_, l) = send(&app, req).await;
    let l: Value = serde_json::from_str(&l).expect("json");
    assert_eq!(l["kind"], json!("PartialObjectMetadataList"));
    assert_eq!(l["items"][0]["kind"], json!("PartialObjectMetadata"));
    assert!(l["items"][0].get("data").is_none());

    call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(json!({"metadata": {"name": "other"}})),
    )
    .await;
    let (s, d) = call(
        &app,
        Method::DELETE,
        "/api/v1/namespaces/default/configmaps?labelSelector=app%3Dweb",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d["items"].as_array().map(Vec::len), Some(1), "{d}");
    let (s, _) = call(
        &app,
        Method::GET,
        "/api/v1/namespaces/default/configmaps/ssa",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(
        &app,
        Method::GET,
        "/api/v1/namespaces/default/configmaps/other",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

/// TokenRequest signs a token bound to a pod; the token authenticates as the service account
/// until the pod is gone; pods get the API access volume and need their service account.
#[tokio::test]
async fn service_account_tokens_and_admission() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = crate::pki::generate_signing_key().expect("key");
    std::fs::write(dir.path().join("sa.key"), private).expect("write");
    std::fs::write(dir.path().join("sa.pub"), public).expect("write");
    let mut state = AppState::in_memory();
    state.tokens = Some(std::sync::Arc::new(
        crate::serviceaccount::Tokens::load(&crate::serviceaccount::TokenFiles {
            signing_key: dir.path().join("sa.key"),
            public_keys: vec![dir.path().join("sa.pub")],
            issuer: "https://kubernetes.default.svc.cluster.local".into(),
            audiences: Vec::new(),
        })
        .expect("load"),
    ));
    state.bootstrap(None).await.expect("bootstrap");
    let app = app(state);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                     "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let (s, b) = call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/pods",
        Some(pod.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["message"], "pods \"p\" is forbidden: error looking up service account default/default: serviceaccount \"default\" not found");
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
    let (s, _) = call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/serviceaccounts",
        Some(sa),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, created) = call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/pods",
        Some(pod),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["spec"]["serviceAccountName"], "default");
    let mount = &created["spec"]["containers"][0]["volumeMounts"][0];
    assert_eq!(
        mount["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    assert_eq!(created["spec"]["volumes"][0]["name"], mount["name"]);

    let uid = created["metadata"]["uid"].clone();
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": uid}}});
    let token_uri = "/api/v1/namespaces/default/serviceaccounts/default/token";
    let (s, answer) = call(&app, Method::POST, token_uri, Some(request.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["kind"], "TokenRequest");
    assert_eq!(answer["spec"]["expirationSeconds"], 3600);
    let token = answer["status"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    let (s, _) = call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/serviceaccounts/nobody/token",
        Some(request),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let short = json!({"spec": {"expirationSeconds": 60}});
    let (s, b) = call(&app, Method::POST, token_uri, Some(short)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");

    let with_token = |token: &str| {
        Request::builder()
            .uri("/api/v1/namespaces/default/configmaps")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("req")
    };
    let (s, b) = send(&app, with_token(&token)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = send(&app, with_token(&format!("{token}x"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Deleting the pod (grace 0) invalidates the token bound to it.
    let (s, _) = call(
        &app,
        Method::DELETE,
        "/api/v1/namespaces/default/pods/p?gracePeriodSeconds=0",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = send(&app, with_token(&token)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn crd_versions_share_storage_and_status_subresource() {
    let app = setup().await;
    let version = |name: &str, storage: bool| {
        json!({"name": name, "served": true, "storage": storage, "subresources": {"status": {}},
               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                   "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                   "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}}}})
    };
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Cluster",
                 "names": {"plural": "gadgets", "kind": "Gadget"},
                 "versions": [version("v1", true), version("v2", false)]}});
    let (s, b) = call(
        &app,
        Method::POST,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        Some(crd),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(
        b.pointer("/status/acceptedNames/listKind"),
        Some(&json!("GadgetList"))
    );
    let g = json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"},
                   "spec": {"any": {"thing": 1}}, "status": {"phase": "ignored"}});
    let (s, b) = call(&app, Method::POST, "/apis/example.com/v1/gadgets", Some(g)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert!(
        b.get("status").is_none(),
        "status comes only through /status: {b}"
    );
    let (s, b) = call(&app, Method::GET, "/apis/example.com/v2/gadgets/g", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["apiVersion"], json!("example.com/v2"));
    assert_eq!(b.pointer("/spec/any/thing"), Some(&json!(1)));
    let (s, b) = call(
        &app,
        Method::PATCH,
        "/apis/example.com/v1/gadgets/g/status",
        Some(json!({"status": {"phase": "Ready"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b.pointer("/status/phase"), Some(&json!("Ready")));
    let (s, _) = call(
        &app,
        Method::DELETE,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, Method::GET, "/apis/example.com/v1/gadgets/g", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// An update or patch naming another uid is for an object since deleted and re-created: 422
/// with `metadata.uid` immutable, and nothing changes (controllers' adoption patches rely on
/// it).
#[tokio::test]
async fn a_write_naming_another_uid_is_refused() {
    let app = setup().await;
    let (_, created) = call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(cm("a")),
    )
    .await;
    let uri = "/api/v1/namespaces/default/configmaps/a";
    let patch =
        json!({"metadata": {"uid": "0f0f0f0f-0000-0000-0000-000000000000", "labels": {"x": "y"}}});
    let (s, b) = call(&app, Method::PATCH, uri, Some(patch)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(
        b["message"],
        json!("ConfigMap \"a\" is invalid: metadata.uid: Invalid value: \"0f0f0f0f-0000-0000-0000-000000000000\": field is immutable")
    );
    let mut replaced = created.clone();
    replaced["metadata"]["uid"] = json!("0f0f0f0f-0000-0000-0000-000000000000");
    let (s, _) = call(&app, Method::PUT, uri, Some(replaced)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, now) = call(&app, Method::GET, uri, None).await;
    assert_eq!(now["metadata"]["uid"], created["metadata"]["uid"]);
    assert!(now["metadata"]["labels"].get("x").is_none(), "{now}");
    // Its own uid is fine.
    let same = json!({"metadata": {"uid": created["metadata"]["uid"], "labels": {"x": "y"}}});
    let (s, b) = call(&app, Method::PATCH, uri, Some(same)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

/// ObjectMeta's lists and maps are `omitempty`: removing the last label or owner reference
/// leaves no empty `labels: {}` / `ownerReferences: []` behind, as kube-apiserver stores it.
#[tokio::test]
async fn empty_metadata_lists_and_maps_are_omitted() {
    let app = setup().await;
    let mut object = cm("a");
    object["metadata"]["ownerReferences"] = json!([]);
    object["metadata"]["annotations"] = json!({});
    let (s, created) = call(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(object),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert!(
        created["metadata"].get("ownerReferences").is_none(),
        "{created}"
    );
    assert!(
        created["metadata"].get("annotations").is_none(),
        "{created}"
    );
    let uri = "/api/v1/namespaces/default/configmaps/a";
    let (s, patched) = call(
        &app,
        Method::PATCH,
        uri,
        Some(json!({"metadata": {"labels": {"app": null}}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    assert!(patched["metadata"].get("labels").is_none(), "{patched}");
}
