//! `knetsim bench pods`: pod start latency, as Kubernetes' pod startup SLI measures it — from
//! the Pod's creation to its being Running with an IP — for batches of pods spread over the
//! workers, plus the create rate and the kubelets' resident memory.
//!
//! Runs on a lab of its own (one cluster, three workers). Pods name their node (there is no
//! scheduler yet), round-robin over the workers, and run `sleep` (image `busybox`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;

use crate::bench::median;

const TOPOLOGY: &str = "clusters:\n  - name: c0\n    workers: 3\n";
/// Creations in flight at once, as a controller's client would send them.
const CONCURRENCY: usize = 16;
const BATCH_TIMEOUT: Duration = Duration::from_secs(300);

pub struct BatchResult {
    pub pods: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub create_rate: f64,
    pub all_running: Duration,
    pub kubelet_rss_kib: Vec<u64>,
}

pub fn bench_pods(counts: &[usize]) -> anyhow::Result<Vec<BatchResult>> {
    crate::bench::on_own_lab("benchpods", TOPOLOGY, |lab| async move {
        run_batches(&lab, counts).await
    })
}

async fn run_batches(lab: &str, counts: &[usize]) -> anyhow::Result<Vec<BatchResult>> {
    let paths = crate::paths::LabPaths::new(lab);
    let kubeconfig = kube::config::Kubeconfig::read_from(paths.kubeconfig())?;
    let options = kube::config::KubeConfigOptions {
        context: Some("c0".into()),
        ..Default::default()
    };
    let client =
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?)?;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut results = Vec::new();
    for &count in counts {
        eprintln!("  {count} pods …");
        results.push(batch(&pods, count, &paths).await?);
        delete_all(&pods).await?;
    }
    Ok(results)
}

async fn batch(
    pods: &Api<Pod>,
    count: usize,
    paths: &crate::paths::LabPaths,
) -> anyhow::Result<BatchResult> {
    // Watch first, so no transition is missed.
    let running: std::sync::Arc<tokio::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let seen = running.clone();
    let watch = pods.clone();
    let watcher_task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(
            watch,
            watcher::Config::default().labels("bench=pods")
        ));
        while let Some(event) = stream.next().await {
            let objects = match event {
                Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod)) => vec![pod],
                _ => continue,
            };
            for pod in objects {
                let status = pod.status.as_ref();
                let is_running = status.and_then(|s| s.phase.as_deref()) == Some("Running")
                    && status.and_then(|s| s.pod_ip.as_ref()).is_some();
                if let (true, Some(name)) = (is_running, pod.metadata.name) {
                    seen.lock().await.entry(name).or_insert_with(Instant::now);
                }
            }
        }
    });
    let workers = ["c0-w1", "c0-w2", "c0-w3"];
    let started = Instant::now();
    let created: HashMap<String, Instant> = futures_util::stream::iter(0..count)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let name = format!("bench-{i}");
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": { "name": name, "labels": { "bench": "pods" } },
                    "spec": {
                        "nodeName": workers[i % workers.len()],
                        "containers": [{ "name": "c", "image": "busybox", "command": ["sleep", "3600"] }],
                    },
                }))?;
                let at = Instant::now();
                pods.create(&PostParams::default(), &pod).await.with_context(|| format!("creating {name}"))?;
                Ok::<_, anyhow::Error>((name, at))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let create_rate = count as f64 / started.elapsed().as_secs_f64();
    let deadline = Instant::now() + BATCH_TIMEOUT;
    loop {
        if running.lock().await.len() >= count {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "only {} of {count} pods were Running after {BATCH_TIMEOUT:?}",
                running.lock().await.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_running = started.elapsed();
    watcher_task.abort();
    let running = running.lock().await;
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(name, at)| Some(running.get(name)?.saturating_duration_since(*at)))
        .collect();
    latencies.sort();
    let percentile = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    Ok(BatchResult {
        pods: count,
        p50: percentile(0.50),
        p99: percentile(0.99),
        max: *latencies.last().unwrap_or(&Duration::ZERO),
        create_rate,
        all_running,
        kubelet_rss_kib: kubelet_rss(paths),
    })
}

fn kubelet_rss(paths: &crate::paths::LabPaths) -> Vec<u64> {
    crate::status::SupervisorStatus::read(&paths.status())
        .map(|s| {
            s.processes
                .iter()
                .filter(|p| p.name == "kubelet")
                .filter_map(|p| kernel::procs::rss_kib(p.pid? as i32))
                .collect()
        })
        .unwrap_or_default()
}

async fn delete_all(pods: &Api<Pod>) -> anyhow::Result<()> {
    let selector = ListParams::default().labels("bench=pods");
    pods.delete_collection(&DeleteParams::default(), &selector)
        .await?;
    let deadline = Instant::now() + BATCH_TIMEOUT;
    while !pods.list(&selector).await?.items.is_empty() {
        if Instant::now() > deadline {
            anyhow::bail!("bench pods were not all deleted after {BATCH_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

pub fn report(results: &[BatchResult]) -> String {
    let mut out = String::from(
        "knetsim bench pods: creation → Running with an IP, 3 workers, sleep containers\n",
    );
    out += "  PODS   P50        P99        MAX        ALL RUNNING   CREATE RATE   KUBELET RSS (median)\n";
    for r in results {
        out += &format!(
            "  {:<6} {:<10} {:<10} {:<10} {:<13} {:<13} {:.1} MiB\n",
            r.pods,
            format!("{} ms", r.p50.as_millis()),
            format!("{} ms", r.p99.as_millis()),
            format!("{} ms", r.max.as_millis()),
            format!("{:.2} s", r.all_running.as_secs_f64()),
            format!("{:.0} pods/s", r.create_rate),
            median(&r.kubelet_rss_kib).unwrap_or(0) as f64 / 1024.0,
        );
    }
    out
}
