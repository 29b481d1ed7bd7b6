//! Pods bound to this node → the runtime, and the runtime → Pod status. Level-based, like
//! the real kubelet's sync loop: a watch event syncs its Pod, and a 1 s tick relists the
//! runtime and compares every Pod with what the runtime has and fixes the difference, so
//! nothing depends on seeing each event ([`pod_cache`](super::pod_cache)).
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
//!
//! Before its containers start, each sync prepares what they are made from
//! ([`pod_setup`](super::pod_setup): `/etc` files, volumes, environment); running containers
//! get their probe workers ([`probes`](super::probes)); what happens is told in Events
//! ([`events`](super::events)) and the status ([`status`](super::status)).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::{json, Value};

use super::events::{self, Recorder};
use super::objects::Objects;
use super::pod_cache::{PodRuntime, RuntimeView, Triggers, FULL_RESYNC};
use super::pod_setup::{
    check_adopted, effective_ip, has_updating_volumes, host_ports, is_host_network, node_cpus,
    node_memory, pod_dir, policy_of, prefetch_tokens, prepare_pod, remove_pod_dir,
};
use super::probes::Prober;
use super::status::{ms_rfc3339, pod_status, restarts_under, stamp_transitions};
use super::watched::Watched;
use super::writes::Collection;
use super::{env, image_files, images, pod_files, volumes, Config};
use crate::runtime::{
    ContainerConfig, ContainerState, ContainerStatus, PodSandboxConfig, POD_UID_LABEL,
};

const TICK: Duration = Duration::from_secs(1);
const BACKOFF_START: u64 = 10_000;
const BACKOFF_MAX: u64 = 300_000;
/// Pod sandboxes set up at once on this node, per core: each forks a chain of CNI plugins
/// (CPU-bound work, and host-local allocates under a lock per network), so more at once only
/// makes every one of them slower, and the first Pods of a burst later.
const PARALLEL_STARTS_PER_CORE: usize = 2;

/// What was last posted per Pod UID, shared by the pod workers: the status as compact JSON
/// (a fifth of its size as a `Value` of maps, which the kubelet kept for every Pod).
type Posted = Arc<std::sync::Mutex<HashMap<String, String>>>;

pub async fn sync_loop(client: kube::Client, config: Config) -> anyhow::Result<()> {
    let pods: Api<Watched<Pod>> = Api::all(client.clone());
    let (store, writer) = reflector::store();
    let selector = format!("spec.nodeName={}", config.node_name);
    // The cache keeps every Pod of the node, as little of each as the kubelet reads.
    let stream = reflector(
        writer,
        watcher(pods.clone(), watcher::Config::default().fields(&selector))
            .modify(|pod| keep_what_the_kubelet_reads(&mut pod.0)),
    )
    .default_backoff()
    .applied_objects();
    let triggers = Arc::new(Triggers::default());
    let notifier = triggers.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(pod) => match pod.metadata.uid.as_deref() {
                    Some(uid) => notifier.pod_changed(uid),
                    None => notifier.resync_all(),
                },
                Err(e) => {
                    tracing::warn!("pod watch: {e}");
                    notifier.resync_all();
                }
            }
        }
    });
    store.wait_until_ready().await?;
    let objects = Objects::start(client.clone()).await?;
    let recorder = Recorder::new(client.clone(), &config.node_name);
    let shared = Shared {
        posted: Posted::default(),
        starts: Arc::new(tokio::sync::Semaphore::new(
            PARALLEL_STARTS_PER_CORE * node_cpus().max(1.0) as usize,
        )),
        objects,
        prober: Prober::new(config.runtime.clone(), recorder.clone(), triggers.clone()),
        recorder,
        view: Arc::new(RuntimeView::default()),
        triggers: triggers.clone(),
    };
    check_adopted(&config, &store.state(), &shared.recorder);
    // The relist of the runtime and the sync of every Pod, once a second whatever the events.
    let mut relist = tokio::time::interval(TICK);
    relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = Round::Everything;
    let mut last_full = Instant::now();
    let mut last_trim = Instant::now();
    loop {
        let (all, dirty) = triggers.take();
        if all || last_full.elapsed() >= FULL_RESYNC {
            round = Round::Everything;
        }
        if round == Round::Everything {
            last_full = Instant::now();
        }
        let desired: Vec<Arc<Watched<Pod>>> = store.state();
        if let Err(e) = sync_once(&client, &config, &desired, &shared, round, dirty) {
            tracing::warn!("sync: {e:#}");
        }
        // What the round and its Pod workers freed goes back to the kernel once they are
        // done, at most once a tick: a full sync spawns a worker per Pod and a relist reads
        // every container's state, and the pages they used stayed resident until the next
        // full sync, which trimmed before its workers had run.
        if !triggers.any_busy() && last_trim.elapsed() >= TICK {
            crate::release_free_memory();
            last_trim = Instant::now();
        }
        round = tokio::select! {
            _ = triggers.woken() => Round::Dirty,
            _ = relist.tick() => Round::Relist,
        };
    }
}

/// Drops the parts of a watched Pod the kubelet never reads: its managedFields (a third of a
/// Pod as the API server returns it), for field managers; and of its status all but the
/// conditions (whose transition times the kubelet carries over): the rest, its container
/// statuses above all, is what the kubelet itself reports, from the runtime.
fn keep_what_the_kubelet_reads(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    if let Some(status) = pod.status.as_mut() {
        *status = PodStatus {
            conditions: status.conditions.take(),
            ..PodStatus::default()
        };
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
    view: Arc<RuntimeView>,
    triggers: Arc<Triggers>,
}

/// What a round of the sync loop covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// The Pods whose objects changed.
    Dirty,
    /// Relist the runtime; sync the dirty Pods, those whose runtime state changed and those
    /// not settled; remove the sandboxes of Pods that are gone.
    Relist,
    /// A relist, and every Pod.
    Everything,
}

/// One round of the sync loop.
fn sync_once(
    client: &kube::Client,
    config: &Config,
    desired: &[Arc<Watched<Pod>>],
    shared: &Shared,
    round: Round,
    dirty: HashMap<String, Instant>,
) -> anyhow::Result<()> {
    let runtime = &config.runtime;
    let (sandboxes, changed) = if round == Round::Dirty {
        (Vec::new(), HashSet::new())
    } else {
        let listed_at = Instant::now();
        let sandboxes = blocking(|| runtime.list_pod_sandboxes());
        let containers = blocking(|| runtime.list_container_summaries());
        shared
            .prober
            .retain(&containers.iter().map(|c| c.container.id.clone()).collect());
        let changed = shared.view.relisted(listed_at, &sandboxes, &containers);
        (sandboxes, changed)
    };
    for pod in desired {
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        let changed_at = dirty.get(&uid).copied();
        let wanted = match round {
            Round::Everything => true,
            Round::Relist => {
                changed_at.is_some()
                    || changed.contains(&uid)
                    || shared.triggers.is_unsettled(&uid)
                    || pod.metadata.deletion_timestamp.is_some()
            }
            Round::Dirty => changed_at.is_some(),
        };
        if !wanted {
            continue;
        }
        // One worker per Pod at a time, as the kubelet's pod workers: pods start in
        // parallel, and a Pod being stopped slowly holds up no other.
        if !shared.triggers.begin(&uid) {
            // Its worker is still busy: a change goes after it, when it is done.
            if let Some(at) = changed_at {
                shared.triggers.requeue(uid, at);
            }
            continue;
        }
        let worker = sync_pod(
            client.clone(),
            config.clone(),
            pod.clone(),
            shared.view.get(&uid),
            changed_at,
            shared.clone(),
        );
        let done = shared.triggers.worker_guard(uid);
        tokio::spawn(async move {
            let _done = done;
            worker.await;
        });
    }
    // The kubelet's sandboxes of Pods that are gone (deleted while it was down).
    for sandbox in sandboxes.iter() {
        let uid = sandbox.config.uid.as_str();
        let ours = sandbox.config.labels.contains_key(POD_UID_LABEL);
        let wanted = desired
            .iter()
            .any(|p| p.metadata.uid.as_deref() == Some(uid));
        if ours && !wanted && !shared.triggers.is_busy(uid) {
            let id = sandbox.id.clone();
            blocking(|| runtime.remove_pod_sandbox(&id))?;
            remove_pod_dir(config, uid);
            shared.view.remove(uid);
            shared.objects.forget(uid);
            shared.recorder.forget(uid);
            shared.posted.lock().map(|mut p| p.remove(uid)).ok();
            shared.triggers.set_settled(uid, true);
            tracing::info!(pod = %format!("{}/{}", sandbox.config.namespace, sandbox.config.name), "removed sandbox of a pod that no longer exists");
        }
    }
    Ok(())
}

/// One Pod's turn: teardown if it is being deleted, else sandbox, containers and status.
async fn sync_pod(
    client: kube::Client,
    config: Config,
    pod: Arc<Watched<Pod>>,
    part: PodRuntime,
    changed_at: Option<Instant>,
    shared: Shared,
) {
    let began = Instant::now();
    let posted = &shared.posted;
    let (Some(uid), Some(name), Some(namespace)) = (
        pod.metadata.uid.clone(),
        pod.metadata.name.clone(),
        pod.metadata.namespace.clone(),
    ) else {
        return;
    };
    let runtime = &config.runtime;
    let api = Collection::of(Api::<Pod>::namespaced(client, &namespace));
    let containers = &part.containers;
    let sandbox = part.sandbox.as_ref();
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
        shared.view.remove(&uid);
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
        shared.triggers.set_settled(&uid, true);
        return;
    }
    // Where a new Pod's start went, for the log (`knetsim logs <node> kubelet`).
    let mut start: Option<StartTimes> = None;
    let sandbox = match sandbox {
        Some(s) => s.clone(),
        None => {
            let Ok(_permit) = shared.starts.acquire().await else {
                return;
            };
            let waited = began.elapsed();
            let tokens = prefetch_tokens(pod.clone(), shared.objects.clone());
            let sandbox_config = PodSandboxConfig {
                name: name.clone(),
                namespace: namespace.clone(),
                uid: uid.clone(),
                hostname: pod_files::hostname(&pod, &config.node_name),
                port_mappings: host_ports(&pod),
                labels: [(POD_UID_LABEL.to_string(), uid.clone())].into(),
                host_network: is_host_network(&pod),
            };
            let made = blocking(|| runtime.run_pod_sandbox(sandbox_config));
            if let Some(tokens) = tokens {
                let _ = tokens.await;
            }
            match made {
                Ok(sandbox) => {
                    tracing::info!(pod = %format!("{namespace}/{name}"), ip = ?sandbox.ip, "sandbox ready");
                    shared.view.set(&uid, sandbox.clone(), &[]);
                    start = Some(StartTimes {
                        queued: changed_at.map(|at| began.saturating_duration_since(at)),
                        waited,
                        sandbox: began.elapsed() - waited,
                        ..StartTimes::default()
                    });
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
                    shared.triggers.set_settled(&uid, false);
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
    // The Pod's files and volumes: made before a container starts, and refreshed on every
    // sync when a volume follows API objects (ConfigMap and Secret updates).
    let mut prepared = None;
    if has_updating_volumes(&pod) {
        // Boxed: its future (token and config watches' requests) would make every Pod
        // worker as large as itself.
        prepared = Some(Box::pin(prepare_pod(&pod, &sandbox, &config, &shared.objects)).await);
    }
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
        if prepared.is_none() {
            prepared = Some(Box::pin(prepare_pod(&pod, &sandbox, &config, &shared.objects)).await);
        }
        let Some(current) = prepared.as_ref() else {
            continue;
        };
        let prepared = match current {
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
                let repository = images::repository(spec.image.as_deref().unwrap_or_default());
                if image_files::has_files(repository) {
                    let dir = pod_dir(&config, &uid).join("images").join(&spec.name);
                    let files = image_files::prepare(repository, &dir).map_err(|e| {
                        format!(
                            "making the files of image {repository} in {}: {e}",
                            dir.display()
                        )
                    })?;
                    mounts.extend(files);
                }
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
            &runtime.programs,
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
                effective_ip(&sandbox, &config),
            );
        }
    }
    if let Some(start) = start.as_mut() {
        start.containers = began.elapsed() - start.waited - start.sandbox;
    }
    shared.view.set(&uid, sandbox.clone(), &mine);
    let settled = waiting.is_empty()
        && pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .all(|spec| {
                mine.iter()
                    .rev()
                    .find(|c| c.container.config.name == spec.name)
                    .is_some_and(|c| c.state == ContainerState::Running)
            });
    let mut status = pod_status(&pod, &sandbox, &mine, &waiting, &config, &shared.prober);
    // Transitions count from what this kubelet last reported, else (after a restart) from
    // what the API server holds.
    let reported = posted
        .lock()
        .ok()
        .and_then(|p| serde_json::from_str::<Value>(p.get(&uid)?).ok())
        .and_then(|mut s| s.pointer_mut("/status/conditions").map(Value::take));
    let held = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| serde_json::to_value(c).ok());
    stamp_transitions(
        &mut status,
        reported.as_ref().or(held.as_ref()),
        &ms_rfc3339(crate::now_ms()),
    );
    let posting = Instant::now();
    let posted_ok = post(&api, &name, &uid, status, posted).await;
    // A status the API server did not take is tried again at the next relist.
    shared.triggers.set_settled(&uid, settled && posted_ok);
    if let Some(start) = start {
        let ms = |d: Duration| d.as_millis() as u64;
        tracing::info!(
            pod = %format!("{namespace}/{name}"),
            queued_ms = start.queued.map(ms),
            waited_ms = ms(start.waited),
            sandbox_ms = ms(start.sandbox),
            containers_ms = ms(start.containers),
            status_ms = ms(posting.elapsed()),
            total_ms = ms(changed_at.map_or(began.elapsed(), |at| at.elapsed())),
            "pod started"
        );
    }
}

/// A new Pod's start, step by step: from its watch event to its worker (`queued`), waiting
/// for a sandbox slot, the sandbox (netns, pause, CNI), files, volumes and containers.
#[derive(Default)]
struct StartTimes {
    queued: Option<Duration>,
    waited: Duration,
    sandbox: Duration,
    containers: Duration,
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

/// Patch the status if it differs from what was last posted for this Pod; false if the API
/// server did not take it.
async fn post(api: &Collection, name: &str, uid: &str, status: Value, posted: &Posted) -> bool {
    // Equal statuses serialize alike: serde_json's maps keep their keys sorted.
    let compact = status.to_string();
    if posted
        .lock()
        .map(|p| p.get(uid) == Some(&compact))
        .unwrap_or(false)
    {
        return true;
    }
    match api.merge_status(name, &status).await {
        Ok(_) => {
            if let Ok(mut p) = posted.lock() {
                p.insert(uid.to_string(), compact);
            }
            true
        }
        Err(e) => {
            tracing::warn!(pod = name, "posting status: {e}");
            false
        }
    }
}

/// Runtime calls fork and wait: keep them off the async workers' hot path.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_pod_keeps_its_spec_and_status_conditions_only() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "p", "uid": "u1", "labels": { "app": "web" },
                "managedFields": [{ "manager": "kubectl", "operation": "Apply" }] },
            "spec": { "nodeName": "c0-w1", "containers": [{ "name": "c", "image": "busybox" }] },
            "status": { "phase": "Running", "podIP": "10.244.1.2",
                "conditions": [{ "type": "Ready", "status": "True",
                    "lastTransitionTime": "2026-01-01T00:00:00Z" }],
                "containerStatuses": [{ "name": "c", "image": "busybox", "imageID": "",
                    "ready": true, "restartCount": 0 }] },
        }))
        .unwrap();
        let spec = pod.spec.clone();
        let conditions = pod.status.as_ref().and_then(|s| s.conditions.clone());
        keep_what_the_kubelet_reads(&mut pod);
        assert!(pod.metadata.managed_fields.unwrap_or_default().is_empty());
        assert_eq!(pod.metadata.labels.unwrap()["app"], "web");
        assert_eq!(pod.spec, spec);
        let status = pod.status.unwrap();
        assert_eq!(status.conditions, conditions);
        assert_eq!(status.conditions.map(|c| c.len()), Some(1));
        assert!(status.container_statuses.is_none() && status.pod_ip.is_none());
        assert!(status.phase.is_none());
    }
}
