//! A Pod's volumes, in its directory as the kubelet keeps them:
//! `/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~<plugin>/<volume>/`.
//!
//! * `emptyDir`: a directory that lives as long as the Pod;
//! * `configMap`, `secret`, `downwardAPI`, `projected`: files written by the
//!   [`atomic_writer`](super::atomic_writer), rewritten on every sync so a changed ConfigMap or
//!   Secret shows up in running containers (not through a `subPath`, as in Kubernetes);
//!   `items`, `defaultMode`, per-item `mode` and `optional` as the API defines them;
//!   `projected` also takes `serviceAccountToken` from the TokenRequest API;
//! * `hostPath`: the node's own path (`DirectoryOrCreate`/`FileOrCreate` make it).
//!
//! [`container_mounts`] turns a container's `volumeMounts` into the runtime's bind mounts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use super::atomic_writer::{self, File, Payload};
use super::downward;
use super::objects::Objects;
use crate::runtime::Mount;

const DEFAULT_MODE: i32 = 0o644;

/// What a volume's files resolve against besides the Pod.
pub struct Resolve<'a> {
    pub objects: &'a Objects,
    pub at: downward::Runtime,
    pub node_cpus: f64,
    pub node_memory: f64,
}

/// Set up (or refresh) every volume of the Pod; the host path of each by name. The error is
/// the kubelet's `FailedMount` message.
pub async fn set_up(
    pod: &Pod,
    pod_dir: &Path,
    resolve: &Resolve<'_>,
) -> Result<HashMap<String, PathBuf>, String> {
    let mut paths = HashMap::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = set_up_volume(pod, pod_dir, volume, resolve)
            .await
            .map_err(|e| {
                format!(
                    "MountVolume.SetUp failed for volume {:?} : {e}",
                    volume.name
                )
            })?;
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

fn plugin_dir(pod_dir: &Path, plugin: &str, name: &str) -> PathBuf {
    pod_dir
        .join("volumes")
        .join(format!("kubernetes.io~{plugin}"))
        .join(name)
}

async fn set_up_volume(
    pod: &Pod,
    pod_dir: &Path,
    volume: &Volume,
    resolve: &Resolve<'_>,
) -> Result<PathBuf, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let io = |e: std::io::Error| e.to_string();
    if volume.empty_dir.is_some() {
        let dir = plugin_dir(pod_dir, "empty-dir", &volume.name);
        std::fs::create_dir_all(&dir).map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
        return Ok(dir);
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        match host.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => std::fs::create_dir_all(&path).map_err(io)?,
            "FileOrCreate" => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io)?;
            }
            "Directory" if !path.is_dir() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a directory",
                    host.path
                ))
            }
            "File" if !path.is_file() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a file",
                    host.path
                ))
            }
            _ => {}
        }
        return Ok(path);
    }
    let (plugin, payload) = if let Some(source) = &volume.config_map {
        let payload = config_map_payload(
            resolve.objects,
            namespace,
            &source.name,
            source.items.as_deref(),
            source.optional.unwrap_or(false),
            source.default_mode.unwrap_or(DEFAULT_MODE),
        )?;
        ("configmap", payload)
    } else if let Some(source) = &volume.secret {
        let payload = secret_payload(
            resolve.objects,
            namespace,
            source.secret_name.as_deref().unwrap_or_default(),
            source.items.as_deref(),
            source.optional.unwrap_or(false),
            source.default_mode.unwrap_or(DEFAULT_MODE),
        )?;
        ("secret", payload)
    } else if let Some(source) = &volume.downward_api {
        let payload = downward_payload(
            pod,
            source.items.as_deref().unwrap_or_default(),
            source.default_mode.unwrap_or(DEFAULT_MODE),
            resolve,
        )?;
        ("downward-api", payload)
    } else if let Some(source) = &volume.projected {
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        let mut payload = Payload::new();
        for projection in source.sources.iter().flatten() {
            if let Some(c) = &projection.config_map {
                payload.extend(config_map_payload(
                    resolve.objects,
                    namespace,
                    &c.name,
                    c.items.as_deref(),
                    c.optional.unwrap_or(false),
                    mode,
                )?);
            }
            if let Some(s) = &projection.secret {
                payload.extend(secret_payload(
                    resolve.objects,
                    namespace,
                    &s.name,
                    s.items.as_deref(),
                    s.optional.unwrap_or(false),
                    mode,
                )?);
            }
            if let Some(d) = &projection.downward_api {
                payload.extend(downward_payload(
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    mode,
                    resolve,
                )?);
            }
            if let Some(t) = &projection.service_account_token {
                let token = resolve
                    .objects
                    .service_account_token(
                        pod,
                        &volume.name,
                        &t.path,
                        t.audience.as_deref(),
                        t.expiration_seconds.unwrap_or(3600),
                    )
                    .await?;
                payload.insert(t.path.clone(), file(token.into_bytes(), mode));
            }
        }
        ("projected", payload)
    } else {
        return Err("knetsim does not support this volume type (only emptyDir, configMap, secret, downwardAPI, projected and hostPath)".into());
    };
    let dir = plugin_dir(pod_dir, plugin, &volume.name);
    atomic_writer::write(&dir, &payload).map_err(|e| format!("writing {}: {e}", dir.display()))?;
    Ok(dir)
}

fn file(data: Vec<u8>, mode: i32) -> File {
    File {
        data,
        mode: (mode & 0o7777) as u32,
    }
}

/// The files of `data` (all keys, or the `items`), with their modes.
fn keyed_payload(
    kind: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default_mode: i32,
) -> Result<Payload, String> {
    let Some(data) = data else {
        return if optional {
            Ok(Payload::new())
        } else {
            Err(format!("{kind} {name:?} not found"))
        };
    };
    let mut payload = Payload::new();
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                match data.get(&item.key) {
                    Some(bytes) => {
                        payload.insert(
                            item.path.clone(),
                            file(bytes.clone(), item.mode.unwrap_or(default_mode)),
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "{kind} references non-existent config key: {}",
                            item.key
                        ))
                    }
                }
            }
        }
        _ => {
            for (key, bytes) in data {
                payload.insert(key, file(bytes, default_mode));
            }
        }
    }
    Ok(payload)
}

fn config_map_payload(
    objects: &Objects,
    namespace: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
    mode: i32,
) -> Result<Payload, String> {
    let data = objects.config_map(namespace, name).map(|cm| {
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        data.extend(
            cm.binary_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone())),
        );
        data
    });
    keyed_payload("configmap", data, name, items, optional, mode)
}

fn secret_payload(
    objects: &Objects,
    namespace: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
    mode: i32,
) -> Result<Payload, String> {
    let data = objects.secret(namespace, name).map(|secret| {
        let mut data: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        data.extend(
            secret
                .string_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
        );
        data
    });
    keyed_payload("secret", data, name, items, optional, mode)
}

fn downward_payload(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
    resolve: &Resolve<'_>,
) -> Result<Payload, String> {
    let mut payload = Payload::new();
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            downward::field(pod, &field.field_path, &resolve.at)
                .ok_or_else(|| format!("unsupported fieldPath {:?}", field.field_path))?
        } else if let Some(resource) = &item.resource_field_ref {
            let container = pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .find(|c| Some(&c.name) == resource.container_name.as_ref())
                .ok_or_else(|| {
                    format!(
                        "no container {:?} for resourceFieldRef",
                        resource.container_name
                    )
                })?;
            downward::resource(
                container,
                &resource.resource,
                resource.divisor.as_ref(),
                resolve.node_cpus,
                resolve.node_memory,
            )
            .ok_or_else(|| format!("unsupported resource {:?}", resource.resource))?
        } else {
            continue;
        };
        payload.insert(
            item.path.clone(),
            file(value.into_bytes(), item.mode.unwrap_or(default_mode)),
        );
    }
    Ok(payload)
}

/// A container's `volumeMounts` as bind mounts: `subPath` selects a file or directory of the
/// volume (made if missing, as the kubelet does for directories), `readOnly` as given;
/// configMap, secret, downwardAPI and projected volumes are always read-only.
pub fn container_mounts(
    pod: &Pod,
    container: &Container,
    volumes: &HashMap<String, PathBuf>,
) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let source = volumes
            .get(&mount.name)
            .ok_or_else(|| format!("volumeMount {:?} names no volume of the pod", mount.name))?;
        let volume = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .find(|v| v.name == mount.name);
        let always_readonly = volume.is_some_and(|v| {
            v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some()
        });
        let host_path = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                if Path::new(sub).is_absolute() || sub.split('/').any(|c| c == "..") {
                    return Err(format!(
                        "subPath {sub:?} must be a relative path within the volume"
                    ));
                }
                let path = source.join(sub);
                if !path.exists() {
                    std::fs::create_dir_all(&path)
                        .map_err(|e| format!("creating subPath {}: {e}", path.display()))?;
                }
                path
            }
            None => source.clone(),
        };
        mounts.push(Mount {
            host_path,
            container_path: PathBuf::from(&mount.mount_path),
            readonly: mount.read_only.unwrap_or(false) || always_readonly,
        });
    }
    Ok(mounts)
}
