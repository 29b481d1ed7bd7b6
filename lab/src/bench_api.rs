//! `knetsim bench api`: the API server's latency and throughput, measured as a client sees
//! them, against the Kubernetes API SLOs (single-object calls p99 under 1 s, lists under
//! 5 s) with knetsim's own goals ten times tighter, printed side by side:
//!
//! - create, get, update (merge patch) of Pods: throughput and p50/p99 per call, 16
//!   requests in flight as a controller's client would send them, over connections opened
//!   before timing (the SLI is measured at the server); list of the 1,000 Pods,
//!   one at a time, timed to the last byte of the body;
//! - the real `kubectl get pods` on 1,000 pods, wall-clock (process start included);
//! - watch delivery: 50 watchers of one ConfigMap collection, the time from sending an
//!   update to each watcher receiving its event.
//!
//! Runs on a lab of its own (one cluster, one worker), once its own pods (the cluster DNS)
//! are Ready: starting them takes much of the machine's CPU just after `up`. The Pods are
//! bound to a Node object the bench makes and no kubelet runs, so nothing runs them and no
//! scheduler moves them: only the API is measured. The Node has no status and no Lease, so the node lifecycle
//! controller leaves it alone, and it exists, so pod GC does not delete its Pods as orphans.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::WatchParams;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent};

const TOPOLOGY: &str = "clusters:\n  - name: c0\n    workers: 1\n";
const CONCURRENCY: usize = 16;
const PODS: usize = 1000;
const LISTS: usize = 20;
const KUBECTL_RUNS: usize = 5;
const WATCHERS: usize = 50;
const WATCH_UPDATES: usize = 100;
/// The Node the bench's Pods are bound to; no kubelet runs it.
const NODE: &str = "bench-no-kubelet";

/// Latencies of one kind of call.
pub struct Calls {
    pub name: &'static str,
    pub count: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    /// knetsim's goal for p99.
    pub goal: Duration,
}

impl Calls {
    fn percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1]
    }
}

pub struct ApiBench {
    pub calls: Vec<Calls>,
}

pub fn bench_api() -> anyhow::Result<ApiBench> {
    crate::bench::on_own_lab("benchapi", TOPOLOGY, |lab| async move { run(&lab).await })
}

async fn run(lab: &str) -> anyhow::Result<ApiBench> {
    let paths = crate::paths::LabPaths::new(lab);
    let kubeconfig = kube::config::Kubeconfig::read_from(paths.kubeconfig())?;
    let options = kube::config::KubeConfigOptions {
        context: Some("c0".into()),
        ..Default::default()
    };
    let client =
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    // Measure the settled cluster, not its boot: the DNS pods start just after `up`.
    eprintln!("  waiting for the kube-system pods …");
    crate::bench::wait_for_system_pods(&client).await?;
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}))?;
    nodes
        .create(&PostParams::default(), &node)
        .await
        .context("creating the bench's Node")?;
    let mut calls = Vec::new();
    let ms = Duration::from_millis;
    // Open the client's connections before timing, as a controller's client holds them:
    // Kubernetes' latency SLI is measured at the server, without TCP and TLS set-up, and
    // the later phases reuse these connections too.
    timed("warm-up", 4 * CONCURRENCY, ms(10), |_| {
        let nodes = nodes.clone();
        async move {
            nodes.get(NODE).await?;
            Ok(())
        }
    })
    .await?;

    eprintln!("  create {PODS} pods …");
    calls.push(
        timed("create", PODS, ms(10), |i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("bench-{i}"), "labels": {"bench": "api"}},
                    "spec": {"nodeName": NODE,
                             "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]},
                }))?;
                pods.create(&PostParams::default(), &pod)
                    .await
                    .with_context(|| format!("creating bench-{i}"))?;
                Ok(())
            }
        })
        .await?,
    );
    eprintln!("  get, update, list …");
    calls.push(
        timed("get", PODS, ms(10), |i| {
            let pods = pods.clone();
            async move {
                pods.get(&format!("bench-{}", (i * 7919) % PODS)).await?;
                Ok(())
            }
        })
        .await?,
    );
    calls.push(
        timed("update", PODS, ms(10), |i| {
            let pods = pods.clone();
            async move {
                let patch = serde_json::json!({"metadata": {"labels": {"round": i.to_string()}}});
                pods.patch(
                    &format!("bench-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
                Ok(())
            }
        })
        .await?,
    );
    let mut list = Calls {
        name: "list 1,000 pods",
        count: LISTS,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        goal: ms(100),
    };
    let started = Instant::now();
    for _ in 0..LISTS {
        // The raw body: what the server takes, not how fast the client parses it.
        let request =
            http::Request::get("/api/v1/namespaces/default/pods?labelSelector=bench%3Dapi")
                .body(Vec::new())?;
        let at = Instant::now();
        let body = client.request_text(request).await?;
        list.latencies.push(at.elapsed());
        let items = body.matches(&format!("\"nodeName\":\"{NODE}\"")).count();
        anyhow::ensure!(items == PODS, "listed {items} pods, not {PODS}");
    }
    list.elapsed = started.elapsed();
    calls.push(list);

    eprintln!("  kubectl get pods …");
    calls.push(kubectl_get_pods(&paths)?);
    eprintln!("  {WATCHERS} watchers …");
    calls.push(watch_delivery(&configmaps).await?);

    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("bench=api"),
    )
    .await?;
    nodes.delete(NODE, &DeleteParams::default()).await?;
    Ok(ApiBench { calls })
}

/// `count` calls of `call(i)`, CONCURRENCY at a time, each one timed.
async fn timed<F, Fut>(
    name: &'static str,
    count: usize,
    goal: Duration,
    call: F,
) -> anyhow::Result<Calls>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let latencies = futures_util::stream::iter(0..count)
        .map(|i| {
            let fut = call(i);
            async move {
                let at = Instant::now();
                fut.await?;
                Ok::<_, anyhow::Error>(at.elapsed())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Calls {
        name,
        count,
        elapsed: started.elapsed(),
        latencies,
        goal,
    })
}

fn kubectl_get_pods(paths: &crate::paths::LabPaths) -> anyhow::Result<Calls> {
    let cache = std::env::temp_dir().join(format!("knetsim-bench-api-{}", std::process::id()));
    let mut latencies = Vec::new();
    let started = Instant::now();
    // One warm-up run fills kubectl's discovery cache, as a user's first command does.
    for run in 0..=KUBECTL_RUNS {
        let at = Instant::now();
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(paths.kubeconfig())
            .arg("--cache-dir")
            .arg(&cache)
            .args(["--context", "c0", "get", "pods", "-n", "default"])
            .output()
            .context("running kubectl (is it installed?)")?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl get pods failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = out.stdout.iter().filter(|b| **b == b'\n').count();
        anyhow::ensure!(
            lines > PODS,
            "kubectl printed {lines} lines for {PODS} pods"
        );
        if run > 0 {
            latencies.push(at.elapsed());
        }
    }
    let _ = std::fs::remove_dir_all(&cache);
    Ok(Calls {
        name: "kubectl get pods (1,000)",
        count: KUBECTL_RUNS,
        elapsed: started.elapsed(),
        latencies,
        goal: Duration::from_millis(500),
    })
}

/// 50 watchers; each update's delivery time to each of them.
async fn watch_delivery(configmaps: &Api<ConfigMap>) -> anyhow::Result<Calls> {
    let name = "bench-watch";
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"round": "0"}}))?;
    let created = configmaps.create(&PostParams::default(), &cm).await?;
    let start_rv = created.metadata.resource_version.unwrap_or_default();
    // round → when it was sent; filled before each update goes out.
    let sent: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let mut tasks = Vec::new();
    for _ in 0..WATCHERS {
        let (api, sent, tx, rv) = (
            configmaps.clone(),
            sent.clone(),
            tx.clone(),
            start_rv.clone(),
        );
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(120);
        let mut stream = api.watch(&params, &rv).await?.boxed();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                // Bookmarks (and anything else) are not deliveries.
                let WatchEvent::Modified(cm) = event else {
                    continue;
                };
                let round = cm
                    .data
                    .and_then(|d| d.get("round").cloned())
                    .unwrap_or_default();
                let at = sent.lock().ok().and_then(|s| s.get(&round).copied());
                if let Some(at) = at {
                    let _ = tx.send(at.elapsed());
                }
            }
        }));
    }
    drop(tx);
    let started = Instant::now();
    let mut latencies = Vec::new();
    for round in 1..=WATCH_UPDATES {
        let key = round.to_string();
        if let Ok(mut s) = sent.lock() {
            s.insert(key.clone(), Instant::now());
        }
        let patch = serde_json::json!({"data": {"round": key}});
        configmaps
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        // Wait for this round to reach every watcher before the next one.
        let deadline = Instant::now() + Duration::from_secs(10);
        while latencies.len() < round * WATCHERS {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(d)) => latencies.push(d),
                _ => anyhow::bail!(
                    "round {round}: only {} of {} watch events arrived",
                    latencies.len(),
                    round * WATCHERS
                ),
            }
        }
    }
    let elapsed = started.elapsed();
    for t in tasks {
        t.abort();
    }
    configmaps.delete(name, &DeleteParams::default()).await?;
    Ok(Calls {
        name: "watch delivery (50 watchers)",
        count: latencies.len(),
        elapsed,
        latencies,
        goal: Duration::from_millis(20),
    })
}

impl ApiBench {
    pub fn report(&self) -> String {
        let mut out = format!(
            "knetsim bench api: one API server over etcd, {CONCURRENCY} requests in flight\n"
        );
        out += "  CALL                           N      RATE          P50        P99        GOAL P99   \n";
        for c in &self.calls {
            let rate = c.count as f64 / c.elapsed.as_secs_f64().max(1e-9);
            let p99 = c.percentile(0.99);
            out += &format!(
                "  {:<30} {:<6} {:<13} {:<10} {:<10} {:<10} {}\n",
                c.name,
                c.count,
                format!("{rate:.0}/s"),
                format!("{:.1} ms", c.percentile(0.50).as_secs_f64() * 1e3),
                format!("{:.1} ms", p99.as_secs_f64() * 1e3),
                format!("{} ms", c.goal.as_millis()),
                if p99 <= c.goal { "met" } else { "MISSED" },
            );
        }
        out
    }
}
