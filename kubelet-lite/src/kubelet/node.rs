//! The Node object and its heartbeat.
//!
//! Registration creates the Node (or takes over an existing one of the same name, as a
//! restarted kubelet does) with its labels, `podCIDR` and, for a control-plane node, the
//! `NoSchedule` taint; then writes its status: addresses, capacity and the `Ready` condition.
//! The heartbeat renews the node's Lease every 10 s (what node lifecycle watches) and
//! refreshes the status every 40 s.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use serde_json::json;

use super::writes::Collection;
use super::Config;

const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_DURATION_SECONDS: i32 = 40;
const LEASE_RENEW: Duration = Duration::from_secs(10);
const STATUS_REFRESH: Duration = Duration::from_secs(40);

pub async fn register(
    client: &kube::Client,
    config: &Config,
    pod_cidr: &ipnet::Ipv4Net,
) -> anyhow::Result<()> {
    let nodes = Collection::of(Api::<Node>::all(client.clone()));
    let mut labels = json!({
        "kubernetes.io/hostname": config.node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
    });
    let mut taints = json!([]);
    if config.control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
        taints = json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
    }
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": config.node_name, "labels": labels },
        "spec": { "podCIDR": pod_cidr.to_string(), "podCIDRs": [pod_cidr.to_string()], "taints": taints },
    });
    loop {
        match nodes.exists(&config.node_name).await {
            Ok(true) => {
                let patch = json!({ "metadata": { "labels": labels }, "spec": { "podCIDR": pod_cidr.to_string(), "podCIDRs": [pod_cidr.to_string()], "taints": taints } });
                nodes.merge(&config.node_name, &patch).await?;
                break;
            }
            Ok(false) => {
                nodes.create(&node).await?;
                break;
            }
            Err(e) => {
                tracing::info!("API server not reachable yet: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    post_status(client, config).await?;
    renew_lease(client, config).await
}

/// Addresses, capacity, node info and a `Ready` condition with a fresh heartbeat.
async fn post_status(client: &kube::Client, config: &Config) -> anyhow::Result<()> {
    let nodes = Collection::of(Api::<Node>::all(client.clone()));
    let now = now_rfc3339();
    let machine = super::machine::machine();
    let resources = json!({
        "cpu": machine.cpus.to_string(),
        "memory": format!("{}Ki", machine.memory_bytes / 1024),
        "pods": "110",
    });
    let status = json!({
        "status": {
            "addresses": [
                { "type": "InternalIP", "address": config.node_ip.to_string() },
                { "type": "Hostname", "address": config.node_name },
            ],
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet-lite is posting ready status",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
            "daemonEndpoints": { "kubeletEndpoint": { "Port": 10250 } },
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": kernel_release(), "osImage": "knetsim emulated node",
                "containerRuntimeVersion": "cri-lite://0.1.0", "kubeletVersion": "v1.32.0",
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": std::env::consts::ARCH.replace("x86_64", "amd64"),
            },
        }
    });
    nodes.merge_status(&config.node_name, &status).await?;
    Ok(())
}

async fn renew_lease(client: &kube::Client, config: &Config) -> anyhow::Result<()> {
    let leases = Collection::of(Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE));
    let now = now_rfc3339_micro();
    if leases.exists(&config.node_name).await? {
        let patch = json!({ "spec": { "renewTime": now, "holderIdentity": config.node_name } });
        leases.merge(&config.node_name, &patch).await?;
    } else {
        leases
            .create(&json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": { "name": config.node_name, "namespace": LEASE_NAMESPACE },
                "spec": { "holderIdentity": config.node_name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now },
            }))
            .await?;
    }
    Ok(())
}

/// Renew the Lease every 10 s and the status every 40 s, logging (not dying on) failures.
pub async fn heartbeat(client: kube::Client, config: Config) {
    let mut lease = tokio::time::interval(LEASE_RENEW);
    let mut status = tokio::time::interval(STATUS_REFRESH);
    loop {
        tokio::select! {
            _ = lease.tick() => {
                if let Err(e) = renew_lease(&client, &config).await {
                    tracing::warn!("renewing the node lease: {e:#}");
                }
            }
            _ = status.tick() => {
                if let Err(e) = post_status(&client, &config).await {
                    tracing::warn!("posting node status: {e:#}");
                }
            }
        }
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn now_rfc3339() -> String {
    // Kubernetes' metav1.Time has second precision.
    let full = crate::shim::now_rfc3339();
    format!("{}Z", &full[..19])
}

fn now_rfc3339_micro() -> String {
    let full = crate::shim::now_rfc3339();
    format!("{}Z", &full[..26])
}
