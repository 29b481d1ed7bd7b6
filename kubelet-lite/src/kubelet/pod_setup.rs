//! What a Pod's containers are made from besides their own spec, prepared on every sync:
//! the Pod's directory (`/var/lib/kubelet/pods/<uid>/`) with its `/etc` files and volumes,
//! the service environment, its IP (the node's for `hostNetwork`) and `hostPort`s; and the
//! CNI CHECK of the sandboxes a restarted kubelet adopts.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::events::{self, Recorder};
use super::objects::Objects;
use super::pods::blocking;
use super::watched::Watched;
use super::{env, pod_files, volumes, Config};
use crate::runtime::{PodSandbox, POD_UID_LABEL};

pub(super) fn is_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The Pod's IP: its sandbox's from CNI, or the node's for a `hostNetwork` Pod.
pub(super) fn effective_ip(sandbox: &PodSandbox, config: &Config) -> Option<String> {
    if sandbox.config.host_network {
        return Some(config.node_ip.to_string());
    }
    sandbox.ip.clone()
}

/// The containers' `hostPort`s, for the CNI `portmap` plugin (`portMappings` capability).
pub(super) fn host_ports(pod: &Pod) -> Vec<crate::runtime::PortMapping> {
    let host_network = is_host_network(pod);
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|_| !host_network)
        .filter_map(|p| {
            let host_port = u16::try_from(p.host_port?).ok().filter(|p| *p > 0)?;
            Some(crate::runtime::PortMapping {
                host_port,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: p
                    .protocol
                    .clone()
                    .unwrap_or_else(|| "TCP".into())
                    .to_lowercase(),
            })
        })
        .collect()
}

pub(super) fn policy_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// What every container of a Pod is made from, prepared once per sync.
pub(super) struct Prepared {
    /// `/etc/resolv.conf`, `/etc/hosts`, `/etc/hostname`.
    pub(super) pod_mounts: Vec<crate::runtime::Mount>,
    pub(super) volumes: HashMap<String, std::path::PathBuf>,
    pub(super) service_env: std::collections::BTreeMap<String, String>,
    pub(super) at: super::downward::Runtime,
}

/// The Pod's directory: `/var/lib/kubelet/pods/<uid>`.
pub(super) fn pod_dir(config: &Config, uid: &str) -> std::path::PathBuf {
    config.root_dir.join("pods").join(uid)
}

pub(super) fn remove_pod_dir(config: &Config, uid: &str) {
    let dir = pod_dir(config, uid);
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!("removing {}: {e}", dir.display());
        }
    }
}

/// Write the Pod's files and set up its volumes; the error is why containers wait.
pub(super) async fn prepare_pod(
    pod: &Pod,
    sandbox: &PodSandbox,
    config: &Config,
    objects: &Objects,
) -> Result<Prepared, String> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let dir = pod_dir(config, uid);
    let at = super::downward::Runtime {
        pod_ip: effective_ip(sandbox, config),
        host_ip: config.node_ip.to_string(),
    };
    let pod_mounts = blocking(|| {
        pod_files::write(
            &dir,
            pod,
            effective_ip(sandbox, config).as_deref(),
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
    if uses_config(pod) {
        objects
            .ensure_config()
            .await
            .map_err(|e| format!("watching ConfigMaps and Secrets: {e}"))?;
    }
    let volumes = volumes::set_up(pod, &dir, &resolve).await?;
    let service_env = env::service_env(pod, &objects.services.state());
    Ok(Prepared {
        pod_mounts,
        volumes,
        service_env,
        at,
    })
}

/// Ask for the Pod's service-account tokens (projected volumes) while its sandbox is being
/// made, as the kubelet mounts volumes before it creates the sandbox: the TokenRequest round
/// trips then cost a new Pod nothing, and [`prepare_pod`] finds the tokens cached.
pub(super) fn prefetch_tokens(
    pod: Arc<Watched<Pod>>,
    objects: Arc<Objects>,
) -> Option<tokio::task::JoinHandle<()>> {
    let wanted: Vec<(String, String, Option<String>, i64)> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| Some((v.name.clone(), v.projected.as_ref()?)))
        .flat_map(|(volume, projected)| {
            projected
                .sources
                .iter()
                .flatten()
                .filter_map(|source| source.service_account_token.as_ref())
                .map(move |t| {
                    (
                        volume.clone(),
                        t.path.clone(),
                        t.audience.clone(),
                        t.expiration_seconds.unwrap_or(3600),
                    )
                })
        })
        .collect();
    if wanted.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        for (volume, path, audience, expiration) in wanted {
            // A failure is remembered by `objects` and reported when the volume is set up.
            let _ = objects
                .service_account_token(&pod, &volume, &path, audience.as_deref(), expiration)
                .await;
        }
    }))
}

/// Whether a volume of the Pod follows API objects and is rewritten on every sync.
pub(super) fn has_updating_volumes(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| {
            v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some()
        })
}

/// Whether the Pod reads a ConfigMap or Secret (volumes, `env`, `envFrom`).
fn uses_config(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let volumes = spec.volumes.iter().flatten().any(|v| {
        v.config_map.is_some()
            || v.secret.is_some()
            || v.projected.as_ref().is_some_and(|p| {
                p.sources
                    .iter()
                    .flatten()
                    .any(|s| s.config_map.is_some() || s.secret.is_some())
            })
    });
    let env = spec.containers.iter().any(|c| {
        c.env_from.as_ref().is_some_and(|e| !e.is_empty())
            || c.env.iter().flatten().any(|e| {
                e.value_from
                    .as_ref()
                    .is_some_and(|f| f.config_map_key_ref.is_some() || f.secret_key_ref.is_some())
            })
    });
    volumes || env
}

pub(super) fn node_cpus() -> f64 {
    super::machine::machine().cpus as f64
}

/// The node's memory in bytes.
pub(super) fn node_memory() -> f64 {
    super::machine::machine().memory_bytes as f64
}

/// CNI CHECK of every sandbox this kubelet finds at start (a restarted kubelet adopting its
/// pods): a network that is no longer what ADD made is reported on the Pod as a Warning
/// Event and in the log. The pod keeps running: CHECK is a diagnosis, not a reason to kill.
pub(super) fn check_adopted(config: &Config, pods: &[Arc<Watched<Pod>>], recorder: &Recorder) {
    let runtime = &config.runtime;
    for sandbox in blocking(|| runtime.list_pod_sandboxes()) {
        if !sandbox.config.labels.contains_key(POD_UID_LABEL) {
            continue;
        }
        let pod_name = format!("{}/{}", sandbox.config.namespace, sandbox.config.name);
        match blocking(|| runtime.check_pod_sandbox_network(&sandbox.id)) {
            Ok(()) => tracing::info!(pod = %pod_name, "adopted; CNI CHECK passed"),
            Err(e) => {
                let message = format!("{:#}", anyhow::Error::new(e));
                if message.contains("GW:<nil>} not found in routing table") {
                    // The bridge plugin before 1.3 (Debian 12 has 1.1.1) fails CHECK on any
                    // route without a gateway, as flannel's `{"dst": <network>}` is:
                    // containernetworking/plugins#886. Not a broken network.
                    tracing::info!(pod = %pod_name, "adopted; CNI CHECK passed but for the bridge plugin's false alarm about a route without a gateway (containernetworking/plugins#886, fixed in 1.3): {message}");
                    continue;
                }
                tracing::warn!(pod = %pod_name, "adopted; CNI CHECK failed: {message}");
                if let Some(pod) = pods
                    .iter()
                    .find(|p| p.metadata.uid.as_deref() == Some(sandbox.config.uid.as_str()))
                {
                    recorder.pod_event(
                        pod,
                        None,
                        events::WARNING,
                        "FailedCNICheck",
                        format!("The pod's network failed CNI CHECK: {message}"),
                    );
                }
            }
        }
    }
}
