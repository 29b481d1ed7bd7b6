//! Pods bound to this node → the runtime, and the runtime → Pod status. Level-based, like
//! the real kubelet's sync loop: every watch event (and a 1 s tick) compares every Pod with
//! what the runtime has and fixes the difference, so nothing depends on seeing each event.
//!
//! Each Pod's turn runs in a worker of its own (one at a time per Pod, as the kubelet's pod
//! workers): a Pod that takes 30 s to stop holds up no other. Sandbox set-ups, which fork a
//! chain of CNI plugins, are limited to a few at once.
//!
//! Per Pod: a sandbox; per container, the newest runtime container of that name is the
//! current attempt (older exited ones give `restartCount` and `lastState`). A container that
//! exited is started again by `restartPolicy` after Kubernetes' back-off (10 s doubling to
//! 5 min: `CrashLoopBackOff`). A Pod being deleted has its containers stopped within its grace
//! period and its sandbox removed; then the kubelet deletes it for good (grace 0), which is
//! when it leaves the API, as on a real cluster.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::{json, Value};

use super::events::{self, Recorder};
use super::objects::Objects;
use super::probes::Prober;
use super::{env, images, pod_files, volumes, Config};
use crate::runtime::{
    ContainerConfig, ContainerState, ContainerStatus, PodSandbox, PodSandboxConfig, SandboxState,
    POD_UID_LABEL,
};

const TICK: Duration = Duration::from_secs(1);
const BACKOFF_START: u64 = 10_000;
const BACKOFF_MAX: u64 = 300_000;
/// Pod sandboxes set up at once on this node: each forks a chain of CNI plugins, and a small
/// machine gains nothing from more.
const PARALLEL_STARTS: usize = 8;

/// What was last posted per Pod UID, shared by the pod workers.
type Posted = Arc<std::sync::Mutex<HashMap<String, Value>>>;

pub async fn sync_loop(client: kube::Client, config: Config) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::all(client.clone());
    let (store, writer) = reflector::store();
    let selector = format!("spec.nodeName={}", config.node_name);
    let stream = reflector(
        writer,
        watcher(pods.clone(), watcher::Config::default().fields(&selector)),
    )
    .default_backoff()
    .applied_objects();
    let changed = Arc::new(tokio::sync::Notify::new());
    let notifier = changed.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!("pod watch: {e}");
            }
            notifier.notify_one();
        }
    });
    store.wait_until_ready().await?;
    let objects = Objects::start(client.clone()).await?;
    let posted = Posted::default();
    let recorder = Recorder::new(client.clone(), &config.node_name);
    let prober = Prober::new(config.runtime.clone(), recorder.clone(), changed.clone());
    let starts = Arc::new(tokio::sync::Semaphore::new(PARALLEL_STARTS));
    // One worker per Pod at a time, as the kubelet's pod workers: pods start in parallel,
    // and a Pod being stopped slowly holds up no other.
    let mut workers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let desired: Vec<Arc<Pod>> = store.state();
        let shared = Shared {
            posted: posted.clone(),
            starts: starts.clone(),
            objects: objects.clone(),
            recorder: recorder.clone(),
            prober: prober.clone(),
        };
        if let Err(e) = sync_once(&client, &config, &desired, &shared, &mut workers) {
            tracing::warn!("sync: {e:#}");
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// What every pod worker shares.
#[derive(Clone)]
struct Shared {
    posted: Posted,
    starts: Arc<tokio::sync::Semaphore>,
    objects: Arc<Objects>,
    recorder: Recorder,
    prober: Arc<Prober>,
}

fn sync_once(
    client: &kube::Client,
    config: &Config,
    desired: &[Arc<Pod>],
    shared: &Shared,
    workers: &mut HashMap<String, tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    workers.retain(|_, worker| !worker.is_finished());
    let runtime = &config.runtime;
    let sandboxes = Arc::new(blocking(|| runtime.list_pod_sandboxes()));
    let containers = Arc::new(blocking(|| runtime.list_containers()));
    shared
        .prober
        .retain(&containers.iter().map(|c| c.container.id.clone()).collect());
    for pod in desired {
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        if workers.contains_key(&uid) {
            continue; // its worker is still busy; the next round sees the result
        }
        let worker = sync_pod(
            client.clone(),
            config.clone(),
            pod.clone(),
            sandboxes.clone(),
            containers.clone(),
            shared.clone(),
        );
        workers.insert(uid, tokio::spawn(worker));
    }
    // The kubelet's sandboxes of Pods that are gone (deleted while it was down).
    for sandbox in sandboxes.iter() {
        let uid = sandbox.config.uid.as_str();
        let ours = sandbox.config.labels.contains_key(POD_UID_LABEL);
        let wanted = desired
            .iter()
            .any(|p| p.metadata.uid.as_deref() == Some(uid));
        if ours && !wanted && !workers.contains_key(uid) {
            let id = sandbox.id.clone();
            blocking(|| runtime.remove_pod_sandbox(&id))?;
            remove_pod_dir(config, uid);
            shared.objects.forget(uid);
            shared.recorder.forget(uid);
            shared.posted.lock().map(|mut p| p.remove(uid)).ok();
            tracing::info!(pod = %format!("{}/{}", sandbox.config.namespace, sandbox.config.name), "removed sandbox of a pod that no longer exists");
        }
    }
    Ok(())
}

/// One Pod's turn: teardown if it is being deleted, else sandbox, containers and status.
async fn sync_pod(
    client: kube::Client,
    config: Config,
    pod: Arc<Pod>,
    sandboxes: Arc<Vec<PodSandbox>>,
    containers: Arc<Vec<ContainerStatus>>,
    shared: Shared,
) {
    let posted = &shared.posted;
    let (Some(uid), Some(name), Some(namespace)) = (
        pod.metadata.uid.clone(),
        pod.metadata.name.clone(),
        pod.metadata.namespace.clone(),
    ) else {
        return;
    };
    let runtime = &config.runtime;
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let sandbox = sandboxes.iter().find(|s| s.config.uid == uid);
    if pod.metadata.deletion_timestamp.is_some() {
        if let Some(sandbox) = sandbox {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .unwrap_or(30)
                .clamp(0, 300) as u64;
            let id = sandbox.id.clone();
            for c in containers.iter().filter(|c| c.container.sandbox_id == id) {
                if c.state == ContainerState::Running {
                    let name = &c.container.config.name;
                    shared.recorder.pod_event(
                        &pod,
                        events::container_path(name),
                        events::NORMAL,
                        "Killing",
                        format!("Stopping container {name}"),
                    );
                }
            }
            let stopped = blocking(|| -> anyhow::Result<()> {
                for c in containers.iter().filter(|c| c.container.sandbox_id == id) {
                    runtime.stop_container(&c.container.id, Duration::from_secs(grace))?;
                }
                runtime.remove_pod_sandbox(&id)?;
                Ok(())
            });
            if let Err(e) = stopped {
                tracing::warn!(pod = %format!("{namespace}/{name}"), "stopping: {e:#}");
                return;
            }
            tracing::info!(pod = %format!("{namespace}/{name}"), "stopped and removed");
        }
        remove_pod_dir(&config, &uid);
        shared.objects.forget(&uid);
        shared.recorder.forget(&uid);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(e) = api.delete(&name, &params).await {
            tracing::debug!("final delete of {namespace}/{name}: {e}");
        }
        posted.lock().map(|mut p| p.remove(&uid)).ok();
        return;
    }
    let sandbox = match sandbox {
        Some(s) => s.clone(),
        None => {
            let Ok(_permit) = shared.starts.acquire().await else {
                return;
            };
            let sandbox_config = PodSandboxConfig {
                name: name.clone(),
                namespace: namespace.clone(),
                uid: uid.clone(),
                hostname: pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.hostname.clone())
                    .unwrap_or_else(|| name.clone()),
                port_mappings: Vec::new(),
                labels: [(POD_UID_LABEL.to_string(), uid.clone())].into(),
            };
            match blocking(|| runtime.run_pod_sandbox(sandbox_config)) {
                Ok(sandbox) => {
                    tracing::info!(pod = %format!("{namespace}/{name}"), ip = ?sandbox.ip, "sandbox ready");
                    sandbox
                }
                Err(e) => {
                    let message = format!("{:#}", anyhow::Error::new(e));
                    tracing::warn!(pod = %format!("{namespace}/{name}"), "sandbox failed: {message}");
                    shared.recorder.pod_event(
                        &pod,
                        None,
                        events::WARNING,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {message}"),
                    );
                    let status = json!({ "status": { "phase": "Pending", "conditions": [
                        { "type": "PodScheduled", "status": "True" },
                        { "type": "Ready", "status": "False", "reason": "FailedCreatePodSandBox", "message": message } ] } });
                    post(&api, &name, &uid, status, posted).await;
                    return;
                }
            }
        }
    };
    // This pod's containers, refreshed: the snapshot may be a moment old.
    let mut mine: Vec<ContainerStatus> = containers
        .iter()
        .filter(|c| c.container.sandbox_id == sandbox.id)
        .filter_map(|c| runtime.container_status(&c.container.id).ok())
        .collect();
    let mut waiting: HashMap<String, (String, String)> = HashMap::new();
    // The Pod's files and volumes, refreshed on every sync (ConfigMap and Secret updates).
    let prepared = prepare_pod(&pod, &sandbox, &config, &shared.objects).await;
    for spec in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let attempts = mine
            .iter()
            .filter(|c| c.container.config.name == spec.name)
            .count();
        let latest = mine
            .iter()
            .rev()
            .find(|c| c.container.config.name == spec.name)
            .cloned();
        let start = match &latest {
            None => true,
            Some(c) if c.state == ContainerState::Exited => {
                let restart = should_restart(&pod, c, attempts);
                if !restart
                    && restarts_under(policy_of(&pod), c.exit.as_ref().map_or(0, |e| e.exit_code))
                {
                    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                    shared.recorder.pod_event(
                        &pod,
                        events::container_path(&spec.name),
                        events::WARNING,
                        "BackOff",
                        format!("Back-off restarting failed container {} in pod {name}_{namespace}({uid})", spec.name),
                    );
                }
                restart
            }
            Some(c) if c.state == ContainerState::Created => {
                // Left over from an interrupted start: replace it.
                let id = c.container.id.clone();
                let _ = blocking(|| runtime.remove_container(&id));
                mine.retain(|m| m.container.id != id);
                true
            }
            Some(_) => false,
        };
        if !start {
            continue;
        }
        let prepared = match &prepared {
            Ok(prepared) => prepared,
            Err(message) => {
                shared.recorder.pod_event(
                    &pod,
                    None,
                    events::WARNING,
                    "FailedMount",
                    message.clone(),
                );
                waiting.insert(
                    spec.name.clone(),
                    ("ContainerCreating".into(), message.clone()),
                );
                continue;
            }
        };
        let resolve = volumes::Resolve {
            objects: &shared.objects,
            at: prepared.at.clone(),
            node_cpus: node_cpus(),
            node_memory: node_memory(),
        };
        let made =
            env::container_env(&pod, spec, &prepared.service_env, &resolve).and_then(|env| {
                let mut mounts = prepared.pod_mounts.clone();
                let mut volume_mounts = volumes::container_mounts(&pod, spec, &prepared.volumes)?;
                volume_mounts.sort_by_key(|m| m.container_path.components().count());
                mounts.extend(volume_mounts);
                Ok((env, mounts))
            });
        let (env, mounts) = match made {
            Ok(made) => made,
            Err(message) => {
                shared.recorder.pod_event(
                    &pod,
                    events::container_path(&spec.name),
                    events::WARNING,
                    "Failed",
                    format!("Error: {message}"),
                );
                waiting.insert(
                    spec.name.clone(),
                    ("CreateContainerConfigError".into(), message),
                );
                continue;
            }
        };
        let argv = images::resolve(
            spec.image.as_deref().unwrap_or_default(),
            &env::expand_all(spec.command.as_deref().unwrap_or_default(), &env),
            &env::expand_all(spec.args.as_deref().unwrap_or_default(), &env),
            &runtime.exe.display().to_string(),
        );
        let argv = match argv {
            Ok(argv) => argv,
            Err(message) => {
                waiting.insert(spec.name.clone(), ("InvalidImageName".into(), message));
                continue;
            }
        };
        let container_config = ContainerConfig {
            name: spec.name.clone(),
            argv,
            env,
            working_dir: spec.working_dir.as_ref().map(Into::into),
            stdin: spec.stdin.unwrap_or(false),
            stdin_once: spec.stdin_once.unwrap_or(false),
            tty: spec.tty.unwrap_or(false),
            mounts,
            log_path: format!(
                "/var/log/pods/{namespace}_{name}_{uid}/{}/{attempts}.log",
                spec.name
            )
            .into(),
        };
        let result = blocking(|| {
            let created = runtime.create_container(&sandbox.id, container_config)?;
            match runtime.start_container(&created.id) {
                Ok(()) => runtime.container_status(&created.id),
                Err(e) => {
                    // Not left as a container that never ran: the next sync tries afresh.
                    let _ = runtime.remove_container(&created.id);
                    Err(e)
                }
            }
        });
        let image = spec.image.clone().unwrap_or_default();
        let container_path = events::container_path(&spec.name);
        match result {
            Ok(started) => {
                let recorder = &shared.recorder;
                recorder.pod_event(
                    &pod,
                    container_path.clone(),
                    events::NORMAL,
                    "Pulled",
                    format!("Container image {image:?} already present on machine"),
                );
                recorder.pod_event(
                    &pod,
                    container_path.clone(),
                    events::NORMAL,
                    "Created",
                    format!("Created container: {}", spec.name),
                );
                recorder.pod_event(
                    &pod,
                    container_path,
                    events::NORMAL,
                    "Started",
                    format!("Started container {}", spec.name),
                );
                mine.push(started)
            }
            Err(e) => {
                let message = format!("{:#}", anyhow::Error::new(e));
                shared.recorder.pod_event(
                    &pod,
                    container_path,
                    events::WARNING,
                    "Failed",
                    format!("Error: {message}"),
                );
                waiting.insert(spec.name.clone(), ("RunContainerError".into(), message));
            }
        }
    }
    // Probes of the running containers (new ones get their workers here).
    for spec in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        if let Some(c) = mine
            .iter()
            .rev()
            .find(|c| c.container.config.name == spec.name)
            .filter(|c| c.state == ContainerState::Running)
        {
            shared.prober.ensure(
                &pod,
                spec,
                &c.container.id,
                c.started_at.unwrap_or(0),
                sandbox.ip.clone(),
            );
        }
    }
    let status = pod_status(&pod, &sandbox, &mine, &waiting, &config, &shared.prober);
    post(&api, &name, &uid, status, posted).await;
}

fn policy_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// What every container of a Pod is made from, prepared once per sync.
struct Prepared {
    /// `/etc/resolv.conf`, `/etc/hosts`, `/etc/hostname`.
    pod_mounts: Vec<crate::runtime::Mount>,
    volumes: HashMap<String, std::path::PathBuf>,
    service_env: std::collections::BTreeMap<String, String>,
    at: super::downward::Runtime,
}

/// The Pod's directory: `/var/lib/kubelet/pods/<uid>`.
fn pod_dir(config: &Config, uid: &str) -> std::path::PathBuf {
    config.root_dir.join("pods").join(uid)
}

fn remove_pod_dir(config: &Config, uid: &str) {
    let dir = pod_dir(config, uid);
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!("removing {}: {e}", dir.display());
        }
    }
}

/// Write the Pod's files and set up its volumes; the error is why containers wait.
async fn prepare_pod(
    pod: &Pod,
    sandbox: &PodSandbox,
    config: &Config,
    objects: &Objects,
) -> Result<Prepared, String> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let dir = pod_dir(config, uid);
    let at = super::downward::Runtime {
        pod_ip: sandbox.ip.clone(),
        host_ip: config.node_ip.to_string(),
    };
    let pod_mounts = blocking(|| {
        pod_files::write(
            &dir,
            pod,
            sandbox.ip.as_deref(),
            &config.dns,
            &config.node_name,
        )
    })
    .map_err(|e| format!("writing the pod's files in {}: {e}", dir.display()))?;
    let resolve = volumes::Resolve {
        objects,
        at: at.clone(),
        node_cpus: node_cpus(),
        node_memory: node_memory(),
    };
    let volumes = volumes::set_up(pod, &dir, &resolve).await?;
    let service_env = env::service_env(pod, &objects.services.state());
    Ok(Prepared {
        pod_mounts,
        volumes,
        service_env,
        at,
    })
}

fn node_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// The node's memory in bytes, from `/proc/meminfo`.
fn node_memory() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib * 1024.0)
}

/// `restartPolicy` and the back-off: restart now?
fn should_restart(pod: &Pod, latest: &ContainerStatus, attempts: usize) -> bool {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let code = latest.exit.as_ref().map_or(0, |e| e.exit_code);
    let finished = latest.exit.as_ref().map_or(0, |e| e.finished_at);
    restarts_under(policy, code) && crate::now_ms() >= finished + backoff_ms(attempts)
}

/// Kubernetes' container restart back-off: 10 s, doubling, at most 5 min.
fn backoff_ms(attempts: usize) -> u64 {
    let doublings = attempts.saturating_sub(1).min(10) as u32;
    (BACKOFF_START << doublings).min(BACKOFF_MAX)
}

/// The Pod's status as the kubelet reports it.
fn pod_status(
    pod: &Pod,
    sandbox: &PodSandbox,
    containers: &[ContainerStatus],
    waiting: &HashMap<String, (String, String)>,
    config: &Config,
    prober: &Prober,
) -> Value {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let mut statuses = Vec::new();
    let (mut running, mut succeeded, mut failed, mut total) = (0, 0, 0, 0);
    let mut unready = Vec::new();
    for spec in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        total += 1;
        let attempts: Vec<&ContainerStatus> = containers
            .iter()
            .filter(|c| {
                c.container.sandbox_id == sandbox.id && c.container.config.name == spec.name
            })
            .collect();
        let latest = attempts.last();
        let restart_count = attempts.len().saturating_sub(1);
        let state = match (latest, waiting.get(&spec.name)) {
            (_, Some((reason, message))) => {
                json!({ "waiting": { "reason": reason, "message": message } })
            }
            (Some(c), _) if c.state == ContainerState::Running => {
                running += 1;
                json!({ "running": { "startedAt": ms_rfc3339(c.started_at.unwrap_or(0)) } })
            }
            (Some(c), _) if c.state == ContainerState::Exited => {
                let code = c.exit.as_ref().map_or(0, |e| e.exit_code);
                let restarting = restarts_under(policy, code);
                if code == 0 {
                    succeeded += 1
                } else {
                    failed += 1
                }
                if restarting {
                    json!({ "waiting": { "reason": "CrashLoopBackOff", "message": format!("back-off restarting failed container {}", spec.name) } })
                } else {
                    terminated(c)
                }
            }
            _ => json!({ "waiting": { "reason": "ContainerCreating" } }),
        };
        // The attempt before the one `state` shows as terminated, or the last that ended.
        let shown_terminated = state.get("terminated").is_some();
        let last_state = attempts
            .iter()
            .rev()
            .filter(|c| c.state == ContainerState::Exited)
            .nth(usize::from(shown_terminated))
            .map(|c| terminated(c))
            .unwrap_or_else(|| json!({}));
        let is_running = state.get("running").is_some();
        let id = latest.map(|c| c.container.id.as_str()).unwrap_or_default();
        let ready = is_running && prober.ready(spec, id);
        if !ready {
            unready.push(spec.name.clone());
        }
        statuses.push(json!({
            "name": spec.name,
            "image": spec.image,
            "imageID": "",
            "containerID": latest.map(|c| format!("cri-lite://{}", c.container.id)),
            "ready": ready,
            "started": is_running && prober.started(spec, id),
            "restartCount": restart_count,
            "state": state,
            "lastState": last_state,
        }));
    }
    let all_ready = total > 0 && unready.is_empty();
    // As the kubelet's getPhase: all ended → by restart policy; any running → Running.
    let phase = if running > 0 {
        "Running"
    } else if total > 0 && succeeded + failed == total {
        match (policy, failed) {
            ("Always", _) | ("OnFailure", 1..) => "Running",
            (_, 0) => "Succeeded",
            _ => "Failed",
        }
    } else {
        "Pending"
    };
    let ready_condition = |kind: &str| {
        if all_ready {
            json!({ "type": kind, "status": "True" })
        } else {
            json!({ "type": kind, "status": "False", "reason": "ContainersNotReady",
                "message": format!("containers with unready status: [{}]", unready.join(" ")) })
        }
    };
    let started = ms_rfc3339(sandbox.created_at);
    let ip = sandbox
        .ip
        .clone()
        .filter(|_| sandbox.state == SandboxState::Ready);
    json!({ "status": {
        "phase": phase,
        "hostIP": config.node_ip.to_string(),
        "hostIPs": [{ "ip": config.node_ip.to_string() }],
        "podIP": ip,
        "podIPs": ip.iter().map(|ip| json!({ "ip": ip })).collect::<Vec<_>>(),
        "startTime": started,
        "conditions": [
            { "type": "PodReadyToStartContainers", "status": "True" },
            { "type": "Initialized", "status": "True" },
            ready_condition("Ready"),
            ready_condition("ContainersReady"),
            { "type": "PodScheduled", "status": "True" },
        ],
        "containerStatuses": statuses,
    }})
}

/// Whether `restartPolicy` restarts a container that exited with `code`.
fn restarts_under(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

fn terminated(c: &ContainerStatus) -> Value {
    let exit = c.exit.clone().unwrap_or(crate::runtime::ExitRecord {
        exit_code: 0,
        signal: None,
        finished_at: 0,
    });
    json!({ "terminated": {
        "exitCode": exit.exit_code,
        "reason": if exit.exit_code == 0 { "Completed" } else { "Error" },
        "startedAt": ms_rfc3339(c.started_at.unwrap_or(0)),
        "finishedAt": ms_rfc3339(exit.finished_at),
        "containerID": format!("cri-lite://{}", c.container.id),
    }})
}

/// Patch the status if it differs from what was last posted for this Pod.
async fn post(api: &Api<Pod>, name: &str, uid: &str, status: Value, posted: &Posted) {
    if posted
        .lock()
        .map(|p| p.get(uid) == Some(&status))
        .unwrap_or(false)
    {
        return;
    }
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        Ok(_) => {
            if let Ok(mut p) = posted.lock() {
                p.insert(uid.to_string(), status);
            }
        }
        Err(e) => tracing::warn!(pod = name, "posting status: {e}"),
    }
}

/// Runtime calls fork and wait: keep them off the async workers' hot path.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Kubernetes' `metav1.Time`: seconds, UTC.
fn ms_rfc3339(ms: u64) -> String {
    crate::shim::rfc3339(ms / 1000, 0)[..19].to_string() + "Z"
}
