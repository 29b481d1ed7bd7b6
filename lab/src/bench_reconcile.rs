//! `knetsim bench reconcile`: how fast the controllers bring a Deployment from 0 to N
//! replicas — per pod, from the scale request to bound (scheduler), Running with an IP
//! (kubelet), and ready in the Service's EndpointSlices (EndpointSlice controller) — plus the
//! controller-manager's CPU time and memory over the run, every component's CPU time, and
//! how busy the whole machine was (the run is CPU-bound on a small machine).
//!
//! Runs on a lab of its own (one cluster, three workers), with agnhost `netexec` pods.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};

const TOPOLOGY: &str = "clusters:\n  - name: c0\n    workers: 3\n";
const TIMEOUT: Duration = Duration::from_secs(300);

pub struct ReconcileResult {
    pub replicas: usize,
    /// Pods created by the ReplicaSet (seen by a watch).
    pub created: Stage,
    /// p50, p99, and when the last pod got there, for each stage.
    pub bound: Stage,
    pub running: Stage,
    pub in_endpoints: Stage,
    pub cpu: Duration,
    /// Every lab component's CPU time over the same run (summed over its nodes), for
    /// comparison; the kubelets' includes the CNI plugins they ran and waited for.
    pub components_cpu: Vec<(&'static str, Duration)>,
    /// CPU time the whole machine was busy from the scale request to the last pod in
    /// endpoints, and that span: busy close to cores × span means the run was CPU-bound.
    pub machine_busy: Option<Duration>,
    pub span: Duration,
    /// etcd revisions over the run: every write any component made (pods, bindings, status
    /// updates, events, slices, leases).
    pub writes: Option<u64>,
    pub rss_kib: u64,
    /// The machine's 1-minute load average when the scale request was sent: the figures
    /// above depend on it (other work on the machine shares its cores).
    pub load_average: Option<f64>,
}

pub struct Stage {
    pub p50: Duration,
    pub p99: Duration,
    pub all: Duration,
}

pub fn bench_reconcile(replicas: usize) -> anyhow::Result<ReconcileResult> {
    crate::bench::on_own_lab("benchrec", TOPOLOGY, |lab| async move {
        run(&lab, replicas).await
    })
}

fn manifest(replicas: usize) -> anyhow::Result<(Deployment, Service)> {
    let deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bench"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{
                    "name": "netexec", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                    "args": ["netexec", "--http-port=8080"],
                }]},
            },
        },
    }))?;
    let service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "bench"},
        "spec": {"selector": {"app": "bench"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))?;
    Ok((deployment, service))
}

/// When each pod reached each stage, by pod name (slices name pods in `targetRef`).
#[derive(Default)]
struct Seen {
    created: HashMap<String, Instant>,
    bound: HashMap<String, Instant>,
    running: HashMap<String, Instant>,
    in_endpoints: HashMap<String, Instant>,
}

async fn run(lab: &str, replicas: usize) -> anyhow::Result<ReconcileResult> {
    let paths = crate::paths::LabPaths::new(lab);
    let kubeconfig = kube::config::Kubeconfig::read_from(paths.kubeconfig())?;
    let options = kube::config::KubeConfigOptions {
        context: Some("c0".into()),
        ..Default::default()
    };
    let client =
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?)?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let (deployment, service) = manifest(0)?;
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &service)
        .await?;
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;

    let seen: std::sync::Arc<std::sync::Mutex<Seen>> = Default::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pod_seen = seen.clone();
    let pod_watch = tokio::spawn(async move {
        let config = watcher::Config::default().labels("app=bench");
        let mut stream = std::pin::pin!(watcher(pods, config).default_backoff());
        while let Some(event) = stream.next().await {
            let (Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod))) = event
            else {
                continue;
            };
            let now = Instant::now();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let mut seen = pod_seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.created.entry(name.clone()).or_insert(now);
            if pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some()
            {
                seen.bound.entry(name.clone()).or_insert(now);
            }
            let status = pod.status.as_ref();
            let has_ip = status.and_then(|s| s.pod_ip.as_ref()).is_some();
            if has_ip && status.and_then(|s| s.phase.as_deref()) == Some("Running") {
                seen.running.entry(name).or_insert(now);
            }
        }
    });
    let slice_seen = seen.clone();
    let slice_watch = tokio::spawn(async move {
        let config = watcher::Config::default().labels("kubernetes.io/service-name=bench");
        let mut stream = std::pin::pin!(watcher(slices, config).default_backoff());
        while let Some(event) = stream.next().await {
            let (Ok(watcher::Event::Apply(slice)) | Ok(watcher::Event::InitApply(slice))) = event
            else {
                continue;
            };
            let now = Instant::now();
            let mut seen = slice_seen.lock().unwrap_or_else(|e| e.into_inner());
            for endpoint in slice.endpoints {
                let ready = endpoint.conditions.and_then(|c| c.ready) == Some(true);
                let pod = endpoint.target_ref.and_then(|r| r.name);
                if let (true, Some(pod)) = (ready, pod) {
                    seen.in_endpoints.entry(pod).or_insert(now);
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let pid = crate::bench::process_pids(&paths, "controller-manager")
        .first()
        .copied();
    let cpu_before = pid.and_then(crate::bench::cpu_time).unwrap_or_default();
    let components_before: Vec<Duration> = COMPONENTS
        .iter()
        .map(|name| crate::bench::cpu_of(&paths, name))
        .collect();
    let busy_before = machine_busy();
    let revision_before = revision(&client).await;
    let load_average = load_average();
    let started = Instant::now();
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    deployments
        .patch("bench", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    loop {
        let done = seen
            .lock()
            .map(|s| s.in_endpoints.len() >= replicas)
            .unwrap_or(false);
        if done {
            break;
        }
        if started.elapsed() > TIMEOUT {
            let s = seen.lock().unwrap_or_else(|e| e.into_inner());
            anyhow::bail!(
                "after {TIMEOUT:?}: {} bound, {} running, {} in endpoints of {replicas}",
                s.bound.len(),
                s.running.len(),
                s.in_endpoints.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let span = started.elapsed();
    let writes = revision_before
        .zip(revision(&client).await)
        .map(|(before, after)| after.saturating_sub(before));
    let machine_busy = busy_before
        .zip(machine_busy())
        .map(|(before, after)| after.saturating_sub(before));
    let cpu = pid
        .and_then(crate::bench::cpu_time)
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    let components_cpu = COMPONENTS
        .iter()
        .zip(components_before)
        .map(|(name, before)| {
            (
                *name,
                crate::bench::cpu_of(&paths, name).saturating_sub(before),
            )
        })
        .collect();
    let rss_kib = pid.and_then(kernel::procs::rss_kib).unwrap_or(0);
    pod_watch.abort();
    slice_watch.abort();
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let stage = |times: &HashMap<String, Instant>| {
        let mut latencies: Vec<Duration> = times
            .values()
            .map(|t| t.saturating_duration_since(started))
            .collect();
        latencies.sort();
        let at = |p: f64| {
            let n = latencies.len();
            latencies
                .get(((n as f64 * p).ceil() as usize).clamp(1, n.max(1)) - 1)
                .copied()
                .unwrap_or_default()
        };
        Stage {
            p50: at(0.5),
            p99: at(0.99),
            all: latencies.last().copied().unwrap_or_default(),
        }
    };
    Ok(ReconcileResult {
        replicas,
        created: stage(&seen.created),
        bound: stage(&seen.bound),
        running: stage(&seen.running),
        in_endpoints: stage(&seen.in_endpoints),
        cpu,
        components_cpu,
        machine_busy,
        span,
        writes,
        rss_kib,
        load_average,
    })
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The cluster's etcd revision now: a list's resourceVersion (with `limit=1`, cheap).
async fn revision(client: &kube::Client) -> Option<u64> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let list = namespaces
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .ok()?;
    list.metadata.resource_version?.parse().ok()
}

/// The supervised processes whose CPU time the report compares.
const COMPONENTS: [&str; 6] = [
    "etcd",
    "apiserver",
    "controller-manager",
    "kubelet",
    "kubeproxy-lite",
    "flannel",
];

/// How long all CPUs together have been busy since boot (everything but idle and iowait in
/// `/proc/stat`'s first line), in the kernel's clock ticks turned into time.
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Some(Duration::from_millis(
        busy * 1000 / crate::bench::clock_ticks(),
    ))
}

pub fn report(r: &ReconcileResult) -> String {
    let ms = |d: Duration| format!("{} ms", d.as_millis());
    let mut out = format!(
        "knetsim bench reconcile: Deployment scaled 0 → {} (3 workers, agnhost netexec), from the scale request\n",
        r.replicas
    );
    out += "  STAGE               P50        P99        ALL\n";
    for (name, s) in [
        ("created", &r.created),
        ("bound", &r.bound),
        ("Running with IP", &r.running),
        ("ready in endpoints", &r.in_endpoints),
    ] {
        out += &format!(
            "  {:<19} {:<10} {:<10} {}\n",
            name,
            ms(s.p50),
            ms(s.p99),
            ms(s.all)
        );
    }
    out += &format!(
        "  controller-manager: {} CPU time, {:.1} MiB RSS\n",
        ms(r.cpu),
        r.rss_kib as f64 / 1024.0
    );
    let components: Vec<String> = r
        .components_cpu
        .iter()
        .map(|(name, cpu)| format!("{name} {}", ms(*cpu)))
        .collect();
    out += &format!(
        "  CPU time of the lab's processes (all nodes): {}\n",
        components.join(", ")
    );
    if let Some(writes) = r.writes {
        out += &format!(
            "  writes to etcd during the run: {writes} ({:.1} per pod)\n",
            writes as f64 / r.replicas.max(1) as f64
        );
    }
    if let Some(busy) = r.machine_busy {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let ours: Duration = r.components_cpu.iter().map(|(_, cpu)| *cpu).sum();
        out += &format!(
            "  the machine was busy {} of {} CPU time in those {} ({:.0} %); the rest of the busy time ({}) is pods, shims, the kernel, this bench and anything else running\n",
            ms(busy),
            ms(r.span * cores as u32),
            ms(r.span),
            100.0 * busy.as_secs_f64() / (r.span.as_secs_f64() * cores as f64).max(f64::EPSILON),
            ms(busy.saturating_sub(ours))
        );
    }
    if let Some(load) = r.load_average {
        out += &format!(
            "  machine load average at the start: {load:.2} on {} CPUs\n",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
    out
}
