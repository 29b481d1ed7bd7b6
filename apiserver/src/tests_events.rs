//! In-process tests of Events served in both group versions from one storage: core `v1`
//! and `events.k8s.io/v1` (`events.rs`).

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::tests::{call, send, setup, table_request, watch_events};

const CORE: &str = "/api/v1/namespaces/default/events";
const EVENTS_V1: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

fn core_event(name: &str, pod: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
           "involvedObject": {"kind": "Pod", "name": pod, "namespace": "default"},
           "reason": "Started", "message": format!("Started container of {pod}"),
           "type": "Normal", "source": {"component": "kubelet", "host": "w1"}, "count": 1})
}

fn new_event(name: &str) -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": name},
           "eventTime": "2026-11-24T08:00:00.000000Z",
           "regarding": {"kind": "Node", "name": "w1"}, "note": "probed",
           "reportingController": "example.com/prober", "reportingInstance": "prober-1",
           "action": "Probe", "reason": "Probed", "type": "Normal"})
}

#[tokio::test]
async fn one_event_two_shapes() {
    let app = setup().await;
    let (s, _) = call(&app, Method::POST, CORE, Some(core_event("web.1", "web"))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, e) = call(&app, Method::GET, &format!("{EVENTS_V1}/web.1"), None).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["apiVersion"], json!("events.k8s.io/v1"));
    assert_eq!(e["regarding"]["name"], json!("web"));
    assert_eq!(e["note"], json!("Started container of web"));
    assert_eq!(e["deprecatedSource"]["component"], json!("kubelet"));

    let (s, created) = call(&app, Method::POST, EVENTS_V1, Some(new_event("w1.probe"))).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["note"],
        json!("probed"),
        "answered in the shape sent"
    );
    let (_, core) = call(&app, Method::GET, &format!("{CORE}/w1.probe"), None).await;
    assert_eq!(core["apiVersion"], json!("v1"));
    assert_eq!(core["message"], json!("probed"));
    assert_eq!(core["reportingComponent"], json!("example.com/prober"));

    let (_, list) = call(&app, Method::GET, EVENTS_V1, None).await;
    let notes: Vec<&str> = list["items"]
        .as_array()
        .map(|i| i.iter().filter_map(|e| e["note"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        notes,
        ["probed", "Started container of web"],
        "in key order"
    );
    assert_eq!(list["kind"], json!("EventList"));

    let (s, patched) = call(
        &app,
        Method::PATCH,
        &format!("{EVENTS_V1}/web.1"),
        Some(json!({"note": "changed"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    let (_, core) = call(&app, Method::GET, &format!("{CORE}/web.1"), None).await;
    assert_eq!(core["message"], json!("changed"));
    assert!(
        core.get("note").is_none(),
        "stored in the core shape: {core}"
    );
}

/// Read and put back unchanged through the version it was written with: no write, the same
/// resourceVersion, also for Events created without the structs Go always writes (`source`,
/// `regarding`). (Through the other version the writer's managedFields entry changes
/// version, which is a change, as in kube.)
#[tokio::test]
async fn an_unchanged_event_put_back_through_its_version_is_not_written() {
    let app = setup().await;
    let mut bare = core_event("bare.1", "web");
    if let Some(fields) = bare.as_object_mut() {
        fields.remove("source");
    }
    let (s, _) = call(&app, Method::POST, CORE, Some(bare)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = call(&app, Method::POST, EVENTS_V1, Some(new_event("w1.probe"))).await;
    assert_eq!(s, StatusCode::CREATED);
    for (name, base) in [("bare.1", CORE), ("w1.probe", EVENTS_V1)] {
        let url = format!("{base}/{name}");
        let (_, read) = call(&app, Method::GET, &url, None).await;
        let (s, written) = call(&app, Method::PUT, &url, Some(read.clone())).await;
        assert_eq!(s, StatusCode::OK, "{written}");
        assert_eq!(
            written["metadata"]["resourceVersion"], read["metadata"]["resourceVersion"],
            "{name} through {base}: {read} / {written}"
        );
    }
}

#[tokio::test]
async fn a_new_event_without_its_required_fields_is_invalid() {
    let app = setup().await;
    let mut e = new_event("bad");
    if let Some(fields) = e.as_object_mut() {
        fields.remove("eventTime");
        fields.remove("action");
    }
    let (s, status) = call(&app, Method::POST, EVENTS_V1, Some(e)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["eventTime", "action"]);
    let (s, _) = call(&app, Method::GET, &format!("{CORE}/bad"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing stored");
}

#[tokio::test]
async fn watch_and_table_read_the_new_shape() {
    let app = setup().await;
    let (_, first) = call(&app, Method::POST, CORE, Some(core_event("a.1", "a"))).await;
    call(&app, Method::POST, CORE, Some(core_event("b.1", "b"))).await;
    call(&app, Method::POST, CORE, Some(core_event("a.2", "a"))).await;
    let rv = first["metadata"]["resourceVersion"].as_str().unwrap_or("");
    let uri = format!(
        "{EVENTS_V1}?watch=1&resourceVersion={rv}&timeoutSeconds=1&fieldSelector=regarding.name%3Da"
    );
    let events = watch_events(&app, &uri).await;
    assert_eq!(
        events.len(),
        1,
        "only a.2 is after {rv} and regards a: {events:?}"
    );
    assert_eq!(events[0]["object"]["metadata"]["name"], json!("a.2"));
    assert_eq!(events[0]["object"]["apiVersion"], json!("events.k8s.io/v1"));
    assert_eq!(events[0]["object"]["note"], json!("Started container of a"));

    let (_, table) = send(&app, table_request(EVENTS_V1)).await;
    let table: Value = serde_json::from_str(&table).expect("a Table");
    assert_eq!(
        table["rows"][0]["cells"].as_array().map(|c| &c[1..]),
        Some(
            &[
                json!("Normal"),
                json!("Started"),
                json!("pod/a"),
                json!("Started container of a")
            ][..]
        )
    );
}
