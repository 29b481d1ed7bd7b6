//! kube-rs against our server: a `watcher` sees every create, update and delete made
//! through typed `Api` calls (including server-side apply), as controllers will; and a
//! `Controller` with a finalizer, beside a plain watcher, keeps seeing every change across
//! an API server restart and across a 410 Gone (etcd compacted past the version they hold
//! while they were cut off), after which both relist.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Config};
use serde_json::json;

async fn client(c: &common::Cluster) -> Client {
    client_at(c, None).await
}

/// A client with the cluster's credentials, for another server URL if `url` is given.
async fn client_at(c: &common::Cluster, url: Option<&str>) -> Client {
    let kc = Kubeconfig::read_from(&c.kubeconfig).expect("kubeconfig");
    let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    if let Some(url) = url {
        cfg.cluster_url = url.parse().expect("server URL");
    }
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

const FINALIZER: &str = "knetsim.test/controller";
const LABELS: &str = "app=controlled";

/// What the controller's reconcile reports to the test.
struct Ctx {
    api: Api<ConfigMap>,
    seen: tokio::sync::mpsc::UnboundedSender<String>,
}

fn value(cm: &ConfigMap) -> String {
    cm.data
        .as_ref()
        .and_then(|d| d.get("v").cloned())
        .unwrap_or_default()
}

fn name(cm: &ConfigMap) -> String {
    cm.metadata.name.clone().unwrap_or_default()
}

/// Level-based, as a real controller: the finalizer splits apply and cleanup, so a delete
/// is seen (as Cleanup) even when it happened while the controller was cut off.
async fn reconcile(
    cm: Arc<ConfigMap>,
    ctx: Arc<Ctx>,
) -> Result<Action, finalizer::Error<Infallible>> {
    finalizer(&ctx.api, FINALIZER, cm, |event| async {
        let line = match event {
            finalizer::Event::Apply(cm) => format!("apply {} {}", name(&cm), value(&cm)),
            finalizer::Event::Cleanup(cm) => format!("cleanup {}", name(&cm)),
        };
        let _ = ctx.seen.send(line);
        Ok(Action::await_change())
    })
    .await
}

fn error_policy(
    _cm: Arc<ConfigMap>,
    _error: &finalizer::Error<Infallible>,
    _ctx: Arc<Ctx>,
) -> Action {
    Action::requeue(Duration::from_millis(200))
}

/// Lines from a task, read until one equals `want` at or after `log[since]`; everything
/// read is kept in `log`. Returns where it was found.
async fn expect(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    log: &mut Vec<String>,
    since: usize,
    who: &str,
    want: &str,
) -> usize {
    if let Some(at) = log.iter().skip(since).position(|l| l == want) {
        return since + at;
    }
    let found = tokio::time::timeout(Duration::from_secs(40), async {
        while let Some(line) = rx.recv().await {
            let hit = line == want;
            log.push(line);
            if hit {
                return Some(log.len() - 1);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    match found {
        Some(at) => at,
        None => panic!("{who} never saw {want:?} after line {since}; it saw {log:#?}"),
    }
}

async fn create(api: &Api<ConfigMap>, name: &str, v: &str) -> ConfigMap {
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "controlled"}}, "data": {"v": v}
    }))
    .expect("configmap");
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create")
}

async fn set(api: &Api<ConfigMap>, name: &str, v: &str) -> ConfigMap {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": v}})),
    )
    .await
    .expect("patch")
}

/// Until `name` is gone (its finalizer removed by the controller).
async fn wait_gone(api: &Api<ConfigMap>, name: &str) {
    let gone = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if api.get_opt(name).await.expect("get").is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "{name} was never deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_and_watcher_survive_restart_and_410() {
    let mut c = common::Cluster::start();
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");

    let (ctrl_tx, mut ctrl_rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(Ctx {
        api: api.clone(),
        seen: ctrl_tx,
    });
    let controller = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default().labels(LABELS))
            .run(reconcile, error_policy, ctx)
            .for_each(|result| {
                if let Err(e) = result {
                    // Shown when the test fails: what the controller ran into.
                    eprintln!("controller: {e:?}");
                }
                futures_util::future::ready(())
            }),
    );

    let (watch_tx, mut watch_rx) = tokio::sync::mpsc::unbounded_channel();
    let watch_api = api.clone();
    let plain = tokio::spawn(async move {
        let mut events = watcher::watcher(watch_api, watcher::Config::default().labels(LABELS))
            .default_backoff()
            .boxed();
        while let Some(e) = events.next().await {
            let line = match e {
                Ok(Event::Init) => "init".to_string(),
                Ok(Event::InitApply(cm)) => format!("initapply {} {}", name(&cm), value(&cm)),
                Ok(Event::InitDone) => "initdone".to_string(),
                Ok(Event::Apply(cm)) => format!("apply {} {}", name(&cm), value(&cm)),
                Ok(Event::Delete(cm)) => format!("delete {}", name(&cm)),
                Err(watcher::Error::WatchError(status)) => format!("error {}", status.code),
                Err(_) => "error".to_string(),
            };
            if watch_tx.send(line).is_err() {
                return;
            }
        }
    });
    let (mut ctrl_log, mut watch_log) = (Vec::new(), Vec::new());
    // Each phase looks only at what its own steps caused: lines from `*_mark` on.
    let (mut c_mark, mut w_mark) = (0, 0);
    expect(&mut watch_rx, &mut watch_log, w_mark, "watcher", "initdone").await;

    // Create and update: the controller adds its finalizer, then sees each version.
    w_mark = watch_log.len();
    create(&api, "a", "1").await;
    expect(
        &mut ctrl_rx,
        &mut ctrl_log,
        c_mark,
        "controller",
        "apply a 1",
    )
    .await;
    expect(
        &mut watch_rx,
        &mut watch_log,
        w_mark,
        "watcher",
        "apply a 1",
    )
    .await;
    set(&api, "a", "2").await;
    expect(
        &mut ctrl_rx,
        &mut ctrl_log,
        c_mark,
        "controller",
        "apply a 2",
    )
    .await;
    expect(
        &mut watch_rx,
        &mut watch_log,
        w_mark,
        "watcher",
        "apply a 2",
    )
    .await;

    // The API server restarts: both reconnect and go on from where they were.
    (c_mark, w_mark) = (ctrl_log.len(), watch_log.len());
    c.stop_server();
    c.start_server();
    set(&api, "a", "3").await;
    create(&api, "b", "1").await;
    expect(
        &mut ctrl_rx,
        &mut ctrl_log,
        c_mark,
        "controller",
        "apply a 3",
    )
    .await;
    expect(
        &mut ctrl_rx,
        &mut ctrl_log,
        c_mark,
        "controller",
        "apply b 1",
    )
    .await;
    expect(
        &mut watch_rx,
        &mut watch_log,
        w_mark,
        "watcher",
        "apply a 3",
    )
    .await;
    api.delete("b", &DeleteParams::default())
        .await
        .expect("delete b");
    expect(
        &mut ctrl_rx,
        &mut ctrl_log,
        c_mark,
        "controller",
        "cleanup b",
    )
    .await;
    expect(&mut watch_rx, &mut watch_log, w_mark, "watcher", "delete b").await;
    wait_gone(&api, "b").await;
    let inits = watch_log.iter().filter(|l| *l == "init").count();
    assert_eq!(inits, 1, "a restart alone needs no relist: {watch_log:#?}");

    // 410: while they are cut off from their server, another server changes objects and
    // etcd is compacted past every version they hold; their server comes back. `e` carries
    // a second finalizer, held by the test, so it is still there (being deleted) when the
    // watcher relists, whichever of the two reconnects first.
    let held: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "e", "labels": {"app": "controlled"}, "finalizers": ["knetsim.test/hold"]},
        "data": {"v": "1"}
    }))
    .expect("configmap");
    api.create(&PostParams::default(), &held)
        .await
        .expect("create e");
    expect(
        &mut ctrl_rx,
        &mut ctrl_log,
        c_mark,
        "controller",
        "apply e 1",
    )
    .await;
    expect(
        &mut watch_rx,
        &mut watch_log,
        w_mark,
        "watcher",
        "apply e 1",
    )
    .await;
    (c_mark, w_mark) = (ctrl_log.len(), watch_log.len());
    c.stop_server();
    let (url, other_server) = c.second_server();
    let other: Api<ConfigMap> = Api::namespaced(client_at(&c, Some(&url)).await, "default");
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while other.get_opt("a").await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(ready.await.is_ok(), "the second server never answered");
    set(&other, "a", "4").await;
    other
        .delete("e", &DeleteParams::default())
        .await
        .expect("delete e");
    let f = create(&other, "f", "1").await;
    let revision = f.metadata.resource_version.expect("resourceVersion");
    let compacted = c.etcd.etcdctl(&["compact", &revision]);
    assert!(compacted.contains("compacted revision"), "{compacted}");
    drop(other_server);
    c.start_server();

    let gone = expect(
        &mut watch_rx,
        &mut watch_log,
        w_mark,
        "watcher",
        "error 410",
    )
    .await;
    let relisted = expect(&mut watch_rx, &mut watch_log, gone, "watcher", "initdone").await;
    expect(
        &mut ctrl_rx,
        &mut ctrl_log,
        c_mark,
        "controller",
        "apply a 4",
    )
    .await;
    expect(
        &mut ctrl_rx,
        &mut ctrl_log,
        c_mark,
        "controller",
        "cleanup e",
    )
    .await;
    expect(
        &mut ctrl_rx,
        &mut ctrl_log,
        c_mark,
        "controller",
        "apply f 1",
    )
    .await;
    let e = api
        .get("e")
        .await
        .expect("e is held by the test's finalizer");
    assert!(e.metadata.deletion_timestamp.is_some());
    assert_eq!(
        e.metadata.finalizers.as_deref(),
        Some(&["knetsim.test/hold".to_string()][..]),
        "the controller's cleanup removed its own finalizer only"
    );
    api.patch(
        "e",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("releasing e");
    wait_gone(&api, "e").await;
    expect(
        &mut watch_rx,
        &mut watch_log,
        relisted,
        "watcher",
        "delete e",
    )
    .await;
    let relist: Vec<&String> = watch_log
        .iter()
        .skip_while(|l| *l != "error 410")
        .take_while(|l| *l != "initdone")
        .filter(|l| l.starts_with("init"))
        .collect();
    assert_eq!(
        relist,
        ["init", "initapply a 4", "initapply e 1", "initapply f 1"],
        "{watch_log:#?}"
    );

    controller.abort();
    plain.abort();
}
