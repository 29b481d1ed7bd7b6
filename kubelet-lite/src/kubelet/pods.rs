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

use super::{images, Config};
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
    let posted = Posted::default();
    let starts = Arc::new(tokio::sync::Semaphore::new(PARALLEL_STARTS));
    // One worker per Pod at a time, as the kubelet's pod workers: pods start in parallel,
    // and a Pod being stopped slowly holds up no other.
    let mut workers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let desired: Vec<Arc<Pod>> = store.state();
        if let Err(e) = sync_once(&client, &config, &desired, &posted, &starts, &mut workers) {
            tracing::warn!("sync: {e:#}");
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

fn sync_once(
    client: &kube::Client,
    config: &Config,
    desired: &[Arc<Pod>],
    posted: &Posted,
    starts: &Arc<tokio::sync::Semaphore>,
    workers: &mut HashMap<String, tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    workers.retain(|_, worker| !worker.is_finished());
    let runtime = &config.runtime;
    let sandboxes = Arc::new(blocking(|| runtime.list_pod_sandboxes()));
    let containers = Arc::new(blocking(|| runtime.list_containers()));
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
            posted.clone(),
            starts.clone(),
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
            posted.lock().map(|mut p| p.remove(uid)).ok();
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
    posted: Posted,
    starts: Arc<tokio::sync::Semaphore>,
) {
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
            let Ok(_permit) = starts.acquire().await else {
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
                    let status = json!({ "status": { "phase": "Pending", "conditions": [
                        { "type": "PodScheduled", "status": "True" },
                        { "type": "Ready", "status": "False", "reason": "FailedCreatePodSandBox", "message": message } ] } });
                    post(&api, &name, &uid, status, &posted).await;
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
            Some(c) if c.state == ContainerState::Exited => should_restart(&pod, c, attempts),
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
        let argv = images::resolve(
            spec.image.as_deref().unwrap_or_default(),
            spec.command.as_deref().unwrap_or_default(),
            spec.args.as_deref().unwrap_or_default(),
            &runtime.exe.display().to_string(),
        );
        let argv = match argv {
            Ok(argv) => argv,
            Err(message) => {
                waiting.insert(spec.name.clone(), ("InvalidImageName".into(), message));
                continue;
            }
        };
        let env = spec
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect();
        let container_config = ContainerConfig {
            name: spec.name.clone(),
            argv,
            env,
            working_dir: spec.working_dir.as_ref().map(Into::into),
            stdin: spec.stdin.unwrap_or(false),
            stdin_once: spec.stdin_once.unwrap_or(false),
            tty: spec.tty.unwrap_or(false),
            mounts: Vec::new(),
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
        match result {
            Ok(started) => mine.push(started),
            Err(e) => {
                let message = format!("{:#}", anyhow::Error::new(e));
                waiting.insert(spec.name.clone(), ("RunContainerError".into(), message));
            }
        }
    }
    let status = pod_status(&pod, &sandbox, &mine, &waiting, &config);
    post(&api, &name, &uid, status, &posted).await;
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
) -> Value {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let mut statuses = Vec::new();
    let (mut running, mut succeeded, mut failed, mut total) = (0, 0, 0, 0);
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
        statuses.push(json!({
            "name": spec.name,
            "image": spec.image,
            "imageID": "",
            "containerID": latest.map(|c| format!("cri-lite://{}", c.container.id)),
            "ready": state.get("running").is_some(),
            "started": state.get("running").is_some(),
            "restartCount": restart_count,
            "state": state,
            "lastState": last_state,
        }));
    }
    let all_running = total > 0 && running == total;
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
    let ready = if all_running { "True" } else { "False" };
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
            { "type": "Ready", "status": ready },
            { "type": "ContainersReady", "status": ready },
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
