//! kube-rs against our server: a `watcher` sees every create, update and delete made
//! through typed `Api` calls (including server-side apply), as controllers will.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config};
use serde_json::json;

async fn client(c: &common::Cluster) -> Client {
    let kc = Kubeconfig::read_from(&c.kubeconfig).expect("kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(cfg).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_create_update_delete() {
    let c = common::Cluster::start();
    let client = client(&c).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut events = watcher::watcher(
        api.clone(),
        watcher::Config::default().labels("app=kube-rs"),
    )
    .boxed();

    // The initial list ends with InitDone before anything exists.
    let init = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.next().await {
            if matches!(e, Ok(Event::InitDone)) {
                return true;
            }
        }
        false
    });
    assert!(
        init.await.unwrap_or(false),
        "watcher never finished its initial list"
    );

    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "k", "labels": {"app": "kube-rs"}}, "data": {"a": "1"}
    }))
    .expect("configmap");
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "k", "labels": {"app": "kube-rs"}}, "data": {"a": "2"}});
    api.patch(
        "k",
        &PatchParams::apply("knetsim-test").force(),
        &Patch::Apply(&applied),
    )
    .await
    .expect("server-side apply");
    let listed = api
        .list(&ListParams::default().labels("app=kube-rs"))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
    api.delete("k", &DeleteParams::default())
        .await
        .expect("delete");

    let mut seen = Vec::new();
    let collected = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.next().await {
            match e {
                Ok(Event::Apply(cm)) => seen.push(format!(
                    "apply {}",
                    cm.data
                        .unwrap_or_default()
                        .get("a")
                        .cloned()
                        .unwrap_or_default()
                )),
                Ok(Event::Delete(_)) => {
                    seen.push("delete".to_string());
                    return;
                }
                Ok(_) => {}
                Err(e) => panic!("watch error: {e}"),
            }
        }
    });
    let _ = collected.await;
    assert_eq!(seen, ["apply 1", "apply 2", "delete"]);
}
