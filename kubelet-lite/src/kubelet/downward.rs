//! The downward API: a Pod's own fields (`fieldRef`) and its containers' resources
//! (`resourceFieldRef`), as environment variables and as files of `downwardAPI` volumes.
//!
//! A limit a container does not set is reported as the node's allocatable; a request it does
//! not make is its limit (as the API server defaults it), else 0.

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// What the Pod's fields resolve against besides the Pod itself.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    pub pod_ip: Option<String>,
    pub host_ip: String,
}

/// A `fieldRef.fieldPath`'s value; none for an unsupported path.
pub fn field(pod: &Pod, path: &str, at: &Runtime) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(String::from)
    };
    if let Some(key) = keyed("metadata.labels['") {
        return Some(meta.labels.as_ref()?.get(&key).cloned().unwrap_or_default());
    }
    if let Some(key) = keyed("metadata.annotations['") {
        return Some(
            meta.annotations
                .as_ref()?
                .get(&key)
                .cloned()
                .unwrap_or_default(),
        );
    }
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => key_values(meta.labels.as_ref()),
        "metadata.annotations" => key_values(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => at.host_ip.clone(),
        "status.podIP" | "status.podIPs" => at.pod_ip.clone().unwrap_or_default(),
        _ => return None,
    })
}

/// `key="value"` lines, sorted, as the downward API writes labels and annotations.
fn key_values(map: Option<&std::collections::BTreeMap<String, String>>) -> String {
    map.iter()
        .flat_map(|m| m.iter())
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect::<String>()
        .trim_end_matches('\n')
        .to_string()
}

/// A `resourceFieldRef` (`limits.cpu`, `requests.memory`, …) of `container`, divided by
/// `divisor` and rounded up, as Kubernetes reports it.
pub fn resource(
    container: &Container,
    resource: &str,
    divisor: Option<&Quantity>,
    node_cpus: f64,
    node_memory: f64,
) -> Option<String> {
    let resources = container.resources.clone().unwrap_or_default();
    let (kind, name) = resource.split_once('.')?;
    let limit = resources
        .limits
        .as_ref()
        .and_then(|l| l.get(name))
        .and_then(|q| parse_quantity(&q.0));
    let request = resources
        .requests
        .as_ref()
        .and_then(|r| r.get(name))
        .and_then(|q| parse_quantity(&q.0));
    let allocatable = match name {
        "cpu" => node_cpus,
        "memory" => node_memory,
        "ephemeral-storage" => 0.0,
        _ => return None,
    };
    let value = match kind {
        "limits" => limit.unwrap_or(allocatable),
        "requests" => request.or(limit).unwrap_or(0.0),
        _ => return None,
    };
    let divisor = divisor
        .and_then(|d| parse_quantity(&d.0))
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Some(format!(
        "{}",
        (value / divisor - 1e-9).ceil().max(0.0) as u64
    ))
}

/// A Kubernetes quantity (`500m`, `1.5`, `64Mi`, `1G`) as a number.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        s if s.starts_with('e') || s.starts_with('E') => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_resources_resolve_as_the_downward_api_does() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "labels": {"app": "web", "tier": "front"}},
            "spec": {"nodeName": "c0-w1", "serviceAccountName": "default", "containers": [
                {"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}]}
        }))
        .unwrap();
        let at = Runtime {
            pod_ip: Some("10.244.1.5".into()),
            host_ip: "172.20.0.11".into(),
        };
        assert_eq!(
            field(&pod, "metadata.labels", &at).unwrap(),
            "app=\"web\"\ntier=\"front\""
        );
        assert_eq!(field(&pod, "metadata.labels['app']", &at).unwrap(), "web");
        assert_eq!(field(&pod, "status.podIP", &at).unwrap(), "10.244.1.5");
        assert_eq!(field(&pod, "spec.nodeName", &at).unwrap(), "c0-w1");
        assert_eq!(field(&pod, "metadata.bogus", &at), None);
        let c = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(resource(c, "limits.cpu", None, 2.0, 1e9).unwrap(), "1");
        assert_eq!(
            resource(c, "limits.cpu", Some(&Quantity("1m".into())), 2.0, 1e9).unwrap(),
            "500"
        );
        assert_eq!(
            resource(c, "limits.memory", Some(&Quantity("1Mi".into())), 2.0, 1e9).unwrap(),
            "64"
        );
        assert_eq!(
            resource(c, "requests.memory", None, 2.0, 1e9).unwrap(),
            "67108864"
        );
        assert_eq!(
            parse_quantity("1.5Gi"),
            Some(1.5 * 1024.0 * 1024.0 * 1024.0)
        );
    }
}
