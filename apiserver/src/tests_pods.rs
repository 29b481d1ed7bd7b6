//! In-process tests of the Pod lifecycle the scheduler and kubelets rely on: binding to a
//! node, and graceful deletion of a bound Pod.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::tests::{call, setup};

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

#[tokio::test]
async fn binding_then_graceful_delete() {
    let app = setup().await;
    let pods = "/api/v1/namespaces/default/pods";
    let (s, _) = call(&app, Method::POST, pods, Some(pod("p"))).await;
    assert_eq!(s, StatusCode::CREATED);
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
                         "target": {"apiVersion": "v1", "kind": "Node", "name": "w1"}});
    let (s, b) = call(
        &app,
        Method::POST,
        &format!("{pods}/p/binding"),
        Some(binding.clone()),
    )
    .await;
    assert_eq!(
        (s, b["status"].clone()),
        (StatusCode::CREATED, json!("Success")),
        "{b}"
    );
    let (s, b) = call(
        &app,
        Method::POST,
        &format!("{pods}/p/binding"),
        Some(binding),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(
        b["message"],
        json!(
            "Operation cannot be fulfilled on pods \"p\": pod p is already assigned to node \"w1\""
        )
    );

    // Bound: the first delete only marks it, for the kubelet to finish.
    let (s, b) = call(&app, Method::DELETE, &format!("{pods}/p"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["metadata"]["deletionGracePeriodSeconds"], json!(30));
    let (_, b) = call(&app, Method::GET, &format!("{pods}/p"), None).await;
    assert_eq!(b["spec"]["nodeName"], json!("w1"));
    assert!(b["metadata"]["deletionTimestamp"].is_string());
    let now = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0});
    let (s, _) = call(&app, Method::DELETE, &format!("{pods}/p"), Some(now)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, Method::GET, &format!("{pods}/p"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Not bound: deleted at once.
    call(&app, Method::POST, pods, Some(pod("q"))).await;
    call(&app, Method::DELETE, &format!("{pods}/q"), None).await;
    let (s, _) = call(&app, Method::GET, &format!("{pods}/q"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// `bindings`, the older form of the binding subresource: the Binding's name is the pod's.
#[tokio::test]
async fn a_binding_posted_to_bindings_binds_the_pod_it_names() {
    let app = setup().await;
    let pods = "/api/v1/namespaces/default/pods";
    let bindings = "/api/v1/namespaces/default/bindings";
    let (s, _) = call(&app, Method::POST, pods, Some(pod("q"))).await;
    assert_eq!(s, StatusCode::CREATED);
    let binding = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "w2"}})
    };
    let (s, b) = call(&app, Method::POST, bindings, Some(binding("q"))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (_, b) = call(&app, Method::GET, &format!("{pods}/q"), None).await;
    assert_eq!(b["spec"]["nodeName"], json!("w2"));
    let (s, b) = call(&app, Method::POST, bindings, Some(binding("missing"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    let (s, b) = call(&app, Method::POST, bindings, Some(binding(""))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
}
