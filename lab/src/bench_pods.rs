//! `knetsim bench pods`: pod start latency, as Kubernetes' pod startup SLI measures it — from
//! the Pod's creation to its being Running with an IP — for batches of pods spread over the
//! workers, plus the create rate, the node agents' resident memory, and what is left behind.
//!
//! Runs on a lab of its own (one cluster, three workers, the cluster DNS addon). Pods name
//! their node, round-robin over the workers, and run `sleep` (image `busybox`): each is a real
//! sandbox (netns, pause process, CNI `loopback`, `flannel` → `bridge` + `host-local`,
//! `portmap`) and a real container process under its shim.
//!
//! Each batch size runs twice, as Kubernetes' SLO is stated for pods created at a given
//! throughput (its density tests create them at a set rate), not for a burst:
//!
//! * **burst**: all creations at once, 16 in flight, as a controller's client sends them;
//!   what a burst reaches is bounded by the machine's cores, since every pod start forks
//!   about ten processes (plugins, pause, shim);
//! * **paced**: creations at a fixed rate (`--rate`, pods/s), each timed on its own.
//!
//! After each batch the pods are deleted and the bench counts what they left on the nodes:
//! pod network namespaces, veths, host-local IP leases, pause and shim processes. Anything
//! above what was there before the first batch is a leak, and fails the bench.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;

use crate::bench::median;

const TOPOLOGY: &str = "clusters:\n  - name: c0\n    workers: 3\n";
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
/// Creations in flight at once in a burst, as a controller's client would send them.
const CONCURRENCY: usize = 16;
const BATCH_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Burst,
    /// Creations per second.
    Paced(f64),
}

pub struct BatchResult {
    pub pods: usize,
    pub mode: Mode,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub create_rate: f64,
    pub all_running: Duration,
    /// Memory per node agent (one value per worker) while the pods run.
    pub memory: Vec<(&'static str, Vec<Memory>)>,
    /// What the batch left on the nodes once its pods were deleted, above the baseline.
    pub left: Residue,
    /// Pods created (and deleted) so far in the run.
    pub created_so_far: usize,
    /// Where the kubelets' time went, from their logs: (step, median, p99) in ms.
    pub steps: Vec<(String, u64, u64)>,
}

/// What pods leave on the workers: counted over all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Residue {
    pub netns: usize,
    pub veths: usize,
    pub leases: usize,
    pub processes: usize,
}

impl Residue {
    fn minus(self, baseline: Residue) -> Residue {
        Residue {
            netns: self.netns.saturating_sub(baseline.netns),
            veths: self.veths.saturating_sub(baseline.veths),
            leases: self.leases.saturating_sub(baseline.leases),
            processes: self.processes.saturating_sub(baseline.processes),
        }
    }
}

pub fn bench_pods(counts: &[usize], rate: f64) -> anyhow::Result<Vec<BatchResult>> {
    if !(rate > 0.0 && rate.is_finite()) {
        anyhow::bail!("--rate must be a positive number of pods per second, not {rate}");
    }
    crate::bench::on_own_lab("benchpods", TOPOLOGY, |lab| async move {
        run_batches(&lab, counts, rate).await
    })
}

async fn run_batches(lab: &str, counts: &[usize], rate: f64) -> anyhow::Result<Vec<BatchResult>> {
    let paths = crate::paths::LabPaths::new(lab);
    let kubeconfig = kube::config::Kubeconfig::read_from(paths.kubeconfig())?;
    let options = kube::config::KubeConfigOptions {
        context: Some("c0".into()),
        ..Default::default()
    };
    let client =
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?)?;
    // What the lab's own pods hold on the workers is then part of the baseline.
    crate::bench::wait_for_system_pods(&client).await?;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let baseline = residue(lab, &paths);
    let mut results = Vec::new();
    let mut created = 0;
    for &count in counts {
        for mode in [Mode::Burst, Mode::Paced(rate)] {
            eprintln!("  {count} pods, {} …", mode_name(mode));
            let mut result = batch(&pods, count, mode, &paths).await?;
            delete_all(&pods).await?;
            created += count;
            result.created_so_far = created;
            result.left = residue(lab, &paths).minus(baseline);
            let left = result.left;
            results.push(result);
            if left != Residue::default() {
                eprint!("{}", report(&results));
                anyhow::bail!("deleted pods left {left:?} on the workers");
            }
        }
    }
    Ok(results)
}

fn mode_name(mode: Mode) -> String {
    match mode {
        Mode::Burst => "burst".into(),
        Mode::Paced(rate) => format!("paced {rate} pods/s"),
    }
}

async fn batch(
    pods: &Api<Pod>,
    count: usize,
    mode: Mode,
    paths: &crate::paths::LabPaths,
) -> anyhow::Result<BatchResult> {
    // Watch first, so no transition is missed.
    let running: Arc<tokio::sync::Mutex<HashMap<String, Instant>>> = Default::default();
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
    let log_starts = kubelet_logs(paths);
    let started = Instant::now();
    let create = |i: usize| {
        let pods = pods.clone();
        async move {
            let name = format!("bench-{i}");
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": name, "labels": { "bench": "pods" } },
                "spec": {
                    "nodeName": format!("c0-{}", WORKERS[i % WORKERS.len()]),
                    "containers": [{ "name": "c", "image": "busybox", "command": ["sleep", "3600"] }],
                },
            }))?;
            let at = Instant::now();
            pods.create(&PostParams::default(), &pod)
                .await
                .with_context(|| format!("creating {name}"))?;
            Ok::<_, anyhow::Error>((name, at))
        }
    };
    let created: Vec<anyhow::Result<(String, Instant)>> = match mode {
        Mode::Burst => {
            futures_util::stream::iter(0..count)
                .map(create)
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await
        }
        Mode::Paced(rate) => {
            // Each creation at its own time, whether or not the ones before have returned.
            let mut handles = Vec::with_capacity(count);
            for i in 0..count {
                tokio::time::sleep_until(
                    (started + Duration::from_secs_f64(i as f64 / rate)).into(),
                )
                .await;
                handles.push(tokio::spawn(create(i)));
            }
            let mut done = Vec::with_capacity(count);
            for handle in handles {
                done.push(handle.await.context("a creation task failed")?);
            }
            done
        }
    };
    let created: HashMap<String, Instant> = created.into_iter().collect::<Result<_, _>>()?;
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
        mode,
        p50: percentile(0.50),
        p99: percentile(0.99),
        max: *latencies.last().unwrap_or(&Duration::ZERO),
        create_rate,
        all_running,
        memory: ["kubelet", "flannel", "kubeproxy-lite"]
            .into_iter()
            .map(|agent| (agent, agent_memory(paths, agent)))
            .collect(),
        left: Residue::default(),
        created_so_far: 0,
        steps: kubelet_steps(&log_starts),
    })
}

/// Each worker's kubelet log and its length now, so a batch reads only its own lines.
fn kubelet_logs(paths: &crate::paths::LabPaths) -> Vec<(std::path::PathBuf, u64)> {
    WORKERS
        .iter()
        .map(|worker| {
            let log = paths.process_log("c0", worker, "kubelet");
            let len = std::fs::metadata(&log).map_or(0, |m| m.len());
            (log, len)
        })
        .collect()
}

/// The kubelets' own timings of this batch's pod starts (their `pod started` and `sandbox
/// network set up` log lines): from the watch event to the worker, waiting for a sandbox
/// slot, the sandbox with each CNI plugin, files and containers, the status patch.
fn kubelet_steps(logs: &[(std::path::PathBuf, u64)]) -> Vec<(String, u64, u64)> {
    use std::io::{Read, Seek};
    let mut values: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    let mut order: Vec<String> = Vec::new();
    let mut add = |key: String, value: u64| {
        if !order.contains(&key) {
            order.push(key.clone());
        }
        values.entry(key).or_default().push(value);
    };
    for (log, from) in logs {
        let mut text = String::new();
        let Ok(mut file) = std::fs::File::open(log) else {
            continue;
        };
        if file.seek(std::io::SeekFrom::Start(*from)).is_err()
            || file.read_to_string(&mut text).is_err()
        {
            continue;
        }
        for line in text.lines() {
            if line.contains(" pod started ") && line.contains(" pod=default/bench-") {
                for field in line.split_whitespace() {
                    if let Some((key, value)) = field.split_once("_ms=") {
                        if let Ok(ms) = value.parse() {
                            add(key.to_string(), ms);
                        }
                    }
                }
            } else if let Some(plugins) = line
                .contains(" sandbox network set up ")
                .then(|| line.split_once("cni_plugins=").map(|(_, p)| p))
                .flatten()
            {
                for field in line.split_whitespace() {
                    if let Some((key, value)) = field.split_once("_ms=") {
                        if let (Ok(ms), true) = (value.parse(), key != "cni") {
                            add(format!("sandbox: {key}"), ms);
                        }
                    }
                }
                for plugin in plugins.split(", ") {
                    let mut words = plugin.split_whitespace();
                    if let (Some(name), Some(Ok(ms))) = (words.next(), words.next().map(str::parse))
                    {
                        add(format!("sandbox: CNI {name}"), ms);
                    }
                }
            }
        }
    }
    order
        .into_iter()
        .filter_map(|key| {
            let mut v = values.remove(&key)?;
            v.sort();
            let p99 = v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1];
            Some((key, v[v.len() / 2], p99))
        })
        .collect()
}

/// A process's memory in KiB: resident (`VmRSS`), of which private (`RssAnon`: its heap,
/// stacks) and file-backed (`RssFile`: mostly the knetsim executable's pages, shared with
/// every other knetsim process), and its proportional share (`Pss`, shared pages divided
/// among the processes that map them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Memory {
    pub rss: u64,
    pub anon: u64,
    pub file: u64,
    pub pss: u64,
}

fn memory_of(pid: i32) -> Option<Memory> {
    let field = |text: &str, name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(Memory {
        rss: field(&status, "VmRSS:")?,
        anon: field(&status, "RssAnon:")?,
        file: field(&status, "RssFile:")?,
        pss: field(&rollup, "Pss:")?,
    })
}

/// The memory of each worker's `agent` process.
fn agent_memory(paths: &crate::paths::LabPaths, agent: &str) -> Vec<Memory> {
    crate::status::SupervisorStatus::read(&paths.status())
        .map(|s| {
            s.processes
                .iter()
                .filter(|p| p.name == agent && p.node != "cp")
                .filter_map(|p| memory_of(p.pid? as i32))
                .collect()
        })
        .unwrap_or_default()
}

/// What pods have on the workers now: bench pod namespaces, veths in the workers' namespaces,
/// host-local leases, and the lab's pause and shim processes.
fn residue(lab: &str, paths: &crate::paths::LabPaths) -> Residue {
    let mut found = Residue::default();
    for worker in WORKERS {
        let node = format!("{lab}-c0-{worker}");
        found.netns += kernel::netns::list()
            .iter()
            .filter(|n| n.starts_with(&format!("{node}-default-bench-")))
            .count();
        found.veths += kernel::ip::query(Some(&node), &["link", "show", "type", "veth"])
            .ok()
            .and_then(|links| links.as_array().map(Vec::len))
            .unwrap_or(0);
        let leases = paths.node_path("c0", worker, "/var/lib/cni/networks/cbr0");
        found.leases += std::fs::read_dir(leases)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                    .count()
            })
            .unwrap_or(0);
    }
    found.processes = kernel::procs::matching_cmdline(|argv| {
        use kernel::binaries::{PAUSE, SHIM};
        let program = argv
            .first()
            .and_then(|p| std::path::Path::new(p).file_name()?.to_str());
        // `knetsim-pause …`, or `knetsim pause …` as older builds ran them.
        let role = argv.get(1).map(String::as_str);
        (matches!(program, Some(PAUSE | SHIM)) || matches!(role, Some("pause" | "shim")))
            && argv.windows(2).any(|w| w[0] == "--lab" && w[1] == lab)
    })
    .len();
    found
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
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = format!(
        "knetsim bench pods: creation → Running with an IP, 3 workers, sleep containers, {cores} cores\n"
    );
    out +=
        "  PODS   MODE               CREATE RATE    P50        P99        MAX        ALL RUNNING\n";
    for r in results {
        out += &format!(
            "  {:<6} {:<18} {:<14} {:<10} {:<10} {:<10} {:.2} s\n",
            r.pods,
            mode_name(r.mode),
            format!("{:.1} pods/s", r.create_rate),
            format!("{} ms", r.p50.as_millis()),
            format!("{} ms", r.p99.as_millis()),
            format!("{} ms", r.max.as_millis()),
            r.all_running.as_secs_f64(),
        );
    }
    out += "  memory per node agent while the pods ran, MiB, median of the workers: RSS (private + knetsim executable pages shared with every knetsim process), PSS\n";
    for r in results {
        let agents: Vec<String> = r
            .memory
            .iter()
            .filter_map(|(agent, values)| {
                let m = median(values)?;
                let mib = |kib: u64| kib as f64 / 1024.0;
                Some(format!(
                    "{agent} {:.1} ({:.1} + {:.1}), PSS {:.1}",
                    mib(m.rss),
                    mib(m.anon),
                    mib(m.file),
                    mib(m.pss)
                ))
            })
            .collect();
        out += &format!(
            "  {:<6} {:<18} {}\n",
            r.pods,
            mode_name(r.mode),
            agents.join(" · ")
        );
    }
    out += "  where the kubelets' time went (their logs; median/p99 ms): from the watch event to the pod's worker (queued), waiting for a sandbox slot, the sandbox (netns, pause, each CNI plugin; flannel includes bridge and host-local), files, volumes and containers, the status patch, and in all\n";
    for r in results {
        let steps: Vec<String> = r
            .steps
            .iter()
            .map(|(step, p50, p99)| format!("{step} {p50}/{p99}"))
            .collect();
        out += &format!(
            "  {:<6} {:<18} {}\n",
            r.pods,
            mode_name(r.mode),
            steps.join(" · ")
        );
    }
    if let Some(last) = results.last() {
        let left: Vec<String> = results
            .iter()
            .map(|r| {
                let l = r.left;
                format!(
                    "{} netns, {} veths, {} IP leases, {} processes",
                    l.netns, l.veths, l.leases, l.processes
                )
            })
            .collect();
        out += &format!(
            "  left behind after each batch was deleted ({} pods created and deleted in all): {}\n",
            last.created_so_far,
            left.join(" | ")
        );
    }
    out
}
