//! A container's environment, made as the kubelet's `makeEnvironmentVariables` makes it:
//!
//! 1. the service variables of every Service in the Pod's namespace with a cluster IP (when
//!    `enableServiceLinks` is not false), and always those of `kubernetes` in `default`:
//!    `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT[_<PORT NAME>]` and the Docker-link
//!    variables `<NAME>_PORT`, `<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`;
//! 2. `envFrom` (ConfigMaps and Secrets, with `prefix`), not expanded;
//! 3. `env` in order, `value` with `$(VAR)` expanded against what is defined so far and the
//!    service variables (`$$` escapes, unknown references stay as written), `valueFrom`
//!    (`configMapKeyRef`, `secretKeyRef`, `fieldRef`, `resourceFieldRef`);
//! 4. service variables the Pod did not set itself.
//!
//! `command` and `args` are then expanded against the result, as Kubernetes does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, Service};

use super::downward;
use super::volumes::Resolve;
use super::watched::Watched;

/// The service environment variables the Pod's containers get, by name.
pub fn service_env(
    pod: &Pod,
    services: &[std::sync::Arc<Watched<Service>>],
) -> BTreeMap<String, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    // The master service first; the Pod's own namespace may override a same-named one.
    for service in services {
        let (Some(name), Some(ns)) = (&service.metadata.name, &service.metadata.namespace) else {
            continue;
        };
        let ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
        if ip.is_none_or(|ip| ip.is_empty() || ip == "None") {
            continue;
        }
        if ns == "default" && name == "kubernetes" && !chosen.contains_key(name) {
            chosen.insert(name.clone(), service);
        }
        if links && ns == namespace {
            chosen.insert(name.clone(), service);
        }
    }
    let mut env = BTreeMap::new();
    for (name, service) in chosen {
        let spec = service.spec.as_ref();
        let ip = spec.and_then(|s| s.cluster_ip.clone()).unwrap_or_default();
        let prefix = name.to_uppercase().replace('-', "_");
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
        env.insert(format!("{prefix}_SERVICE_HOST"), ip.clone());
        for (index, port) in ports.iter().enumerate() {
            if index == 0 {
                env.insert(format!("{prefix}_SERVICE_PORT"), port.port.to_string());
            }
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                let port_name = port_name.to_uppercase().replace('-', "_");
                env.insert(
                    format!("{prefix}_SERVICE_PORT_{port_name}"),
                    port.port.to_string(),
                );
            }
        }
        for (index, port) in ports.iter().enumerate() {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let url = format!("{}://{ip}:{}", protocol.to_lowercase(), port.port);
            if index == 0 {
                env.insert(format!("{prefix}_PORT"), url.clone());
            }
            let base = format!("{prefix}_PORT_{}_{}", port.port, protocol.to_uppercase());
            env.insert(format!("{base}_PROTO"), protocol.to_lowercase());
            env.insert(format!("{base}_PORT"), port.port.to_string());
            env.insert(format!("{base}_ADDR"), ip.clone());
            env.insert(base, url);
        }
    }
    env
}

/// `$(VAR)` expansion as Kubernetes' `expansion.Expand`: `$$` is a literal `$`, a reference
/// to an unknown variable is left as written.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(end) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + end];
                        match lookup(name) {
                            Some(value) => out += &value,
                            None => out += &input[i..i + 3 + end],
                        }
                        i += 3 + end;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = input[i..].chars().next().unwrap_or('$');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The container's environment, in the order it is defined; the error is the kubelet's
/// `CreateContainerConfigError` message.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    service_env: &BTreeMap<String, String>,
    resolve: &Resolve<'_>,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(source) = &from.config_map_ref {
            match resolve.objects.config_map(namespace, &source.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if source.optional.unwrap_or(false) => {}
                None => return Err(format!("configmap {:?} not found", source.name)),
            }
        }
        if let Some(source) = &from.secret_ref {
            match resolve.objects.secret(namespace, &source.name) {
                Some(secret) => {
                    for (k, v) in secret.data.iter().flatten() {
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
                None if source.optional.unwrap_or(false) => {}
                None => return Err(format!("secret {:?} not found", source.name)),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(value) = &var.value {
            let defined = env.clone();
            expand(value, &|name| {
                defined
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .or_else(|| service_env.get(name).cloned())
            })
        } else if let Some(from) = &var.value_from {
            if let Some(key) = &from.config_map_key_ref {
                let value = resolve
                    .objects
                    .config_map(namespace, &key.name)
                    .map(|cm| cm.data.as_ref().and_then(|d| d.get(&key.key)).cloned());
                match value {
                    Some(Some(v)) => v,
                    _ if key.optional.unwrap_or(false) => continue,
                    Some(None) => {
                        return Err(format!(
                            "couldn't find key {} in ConfigMap {namespace}/{}",
                            key.key, key.name
                        ))
                    }
                    None => return Err(format!("configmap {:?} not found", key.name)),
                }
            } else if let Some(key) = &from.secret_key_ref {
                let value = resolve.objects.secret(namespace, &key.name).map(|s| {
                    s.data
                        .as_ref()
                        .and_then(|d| d.get(&key.key))
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                });
                match value {
                    Some(Some(v)) => v,
                    _ if key.optional.unwrap_or(false) => continue,
                    Some(None) => {
                        return Err(format!(
                            "couldn't find key {} in Secret {namespace}/{}",
                            key.key, key.name
                        ))
                    }
                    None => return Err(format!("secret {:?} not found", key.name)),
                }
            } else if let Some(field) = &from.field_ref {
                downward::field(pod, &field.field_path, &resolve.at)
                    .ok_or_else(|| format!("unsupported fieldPath {:?}", field.field_path))?
            } else if let Some(resource) = &from.resource_field_ref {
                let target = match resource.container_name.as_deref() {
                    Some(name) if !name.is_empty() => pod
                        .spec
                        .iter()
                        .flat_map(|s| s.containers.iter())
                        .find(|c| c.name == name)
                        .unwrap_or(container),
                    _ => container,
                };
                downward::resource(
                    target,
                    &resource.resource,
                    resource.divisor.as_ref(),
                    resolve.node_cpus,
                    resolve.node_memory,
                )
                .ok_or_else(|| format!("unsupported resource {:?}", resource.resource))?
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut env, var.name.clone(), value);
    }
    for (name, value) in service_env {
        if !env.iter().any(|(n, _)| n == name) {
            env.push((name.clone(), value.clone()));
        }
    }
    Ok(env)
}

/// `command` and `args` with `$(VAR)` expanded against the container's environment.
pub fn expand_all(words: &[String], env: &[(String, String)]) -> Vec<String> {
    words
        .iter()
        .map(|w| {
            expand(w, &|name| {
                env.iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes() {
        let lookup = |name: &str| match name {
            "A" => Some("x".to_string()),
            _ => None,
        };
        assert_eq!(
            expand("$(A)-$(B)-$$(A)-$-$(A", &lookup),
            "x-$(B)-$(A)-$-$(A"
        );
    }

    #[test]
    fn services_give_docker_link_variables() {
        let service = |ns: &str, name: &str, ip: &str| -> std::sync::Arc<Watched<Service>> {
            std::sync::Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}
                }))
                .unwrap(),
            )
        };
        let services = vec![
            service("default", "kubernetes", "10.96.0.1"),
            service("shop", "my-web", "10.96.5.5"),
            service("other", "elsewhere", "10.96.5.6"),
            service("shop", "headless", "None"),
        ];
        let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": {"containers": []}})).unwrap();
        let env = service_env(&pod, &services);
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(env["MY_WEB_SERVICE_HOST"], "10.96.5.5");
        assert_eq!(env["MY_WEB_SERVICE_PORT"], "80");
        assert_eq!(env["MY_WEB_SERVICE_PORT_HTTP"], "80");
        assert_eq!(env["MY_WEB_PORT"], "tcp://10.96.5.5:80");
        assert_eq!(env["MY_WEB_PORT_53_UDP"], "udp://10.96.5.5:53");
        assert_eq!(env["MY_WEB_PORT_53_UDP_PROTO"], "udp");
        assert_eq!(env["MY_WEB_PORT_80_TCP_ADDR"], "10.96.5.5");
        assert!(!env
            .keys()
            .any(|k| k.starts_with("ELSEWHERE") || k.starts_with("HEADLESS")));
        let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": {"containers": [], "enableServiceLinks": false}})).unwrap();
        let env = service_env(&pod, &services);
        assert!(
            env.contains_key("KUBERNETES_SERVICE_PORT") && !env.contains_key("MY_WEB_SERVICE_HOST")
        );
    }
}
