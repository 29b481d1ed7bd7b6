//! Node lifecycle: notices a node whose kubelet has gone silent, marks it and its pods not
//! ready, and after a timeout evicts the pods so their controllers re-create them elsewhere.
//!
//! The kubelet renews its Lease in `kube-node-lease` every 10 s. A loop over the caches,
//! once a second, looks at each Lease's `renewTime`:
//! - older than `--node-monitor-grace-period`: the node's `Ready` condition becomes
//!   `Unknown` (`NodeStatusUnknown`), it gets the `node.kubernetes.io/unreachable` taints
//!   (so nothing new is scheduled there), and its pods' `Ready` condition becomes `False`
//!   (so they leave the EndpointSlices);
//! - still silent `--pod-eviction-timeout` later: its pods are deleted. They stay
//!   Terminating (no kubelet is there to finish), but their ReplicaSets no longer count
//!   them and create replacements on other nodes. DaemonSet pods stay, as in Kubernetes.
//! - renewed again: the taints go; the kubelet reports `Ready` itself.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::events::Recorder;
use crate::informers::Informers;

pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const MONITOR_PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub grace_period: Duration,
    pub eviction_timeout: Duration,
}

struct Monitor {
    client: kube::Client,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    timing: Timing,
    recorder: Recorder,
}

pub fn run(
    client: kube::Client,
    informers: &Informers,
    timing: Timing,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let monitor = Monitor {
        recorder: Recorder::new(client.clone(), "node-controller"),
        client,
        nodes: informers.nodes.store.clone(),
        leases: informers.leases.store.clone(),
        pods: informers.pods.store.clone(),
        timing,
    };
    async move {
        loop {
            for node in monitor.nodes.state() {
                if let Err(e) = monitor.check(&node).await {
                    tracing::warn!(node = %node.name_any(), "node lifecycle: {e}");
                }
            }
            tokio::time::sleep(MONITOR_PERIOD).await;
        }
    }
}

fn millis_since(t: jiff::Timestamp) -> i64 {
    jiff::Timestamp::now().as_millisecond() - t.as_millisecond()
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

impl Monitor {
    /// When the kubelet last showed life: its Lease, else its Ready heartbeat.
    fn last_heartbeat(&self, node: &Node) -> Option<jiff::Timestamp> {
        let lease = self
            .leases
            .get(&ObjectRef::new(&node.name_any()).within(LEASE_NAMESPACE));
        let renewed = lease.and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
        renewed.or_else(|| {
            ready_condition(node)?
                .last_heartbeat_time
                .as_ref()
                .map(|t| t.0)
        })
    }

    fn pods_on(&self, node: &str) -> Vec<std::sync::Arc<Pod>> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .collect()
    }

    async fn check(&self, node: &Node) -> Result<(), kube::Error> {
        let Some(heartbeat) = self.last_heartbeat(node) else {
            return Ok(());
        };
        let silent = millis_since(heartbeat) > self.timing.grace_period.as_millis() as i64;
        let tainted = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == UNREACHABLE_TAINT));
        if !silent {
            if tainted {
                self.set_unreachable_taints(node, false).await?;
                tracing::info!(node = %node.name_any(), "kubelet is back; unreachable taints removed");
            }
            return Ok(());
        }
        let ready = ready_condition(node);
        if ready.map(|c| c.status.as_str()) != Some("Unknown") {
            self.mark_unknown(node).await?;
            return Ok(());
        }
        if !tainted {
            self.set_unreachable_taints(node, true).await?;
        }
        let since = ready
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0)
            .unwrap_or(heartbeat);
        let evict = millis_since(since) > self.timing.eviction_timeout.as_millis() as i64;
        for pod in self.pods_on(&node.name_any()) {
            if pod.metadata.deletion_timestamp.is_some() || is_daemon_pod(&pod) {
                continue;
            }
            if evict {
                self.evict(&pod, node).await?;
            } else if crate::pods::is_ready(&pod) {
                self.mark_pod_not_ready(&pod).await?;
            }
        }
        Ok(())
    }

    async fn mark_unknown(&self, node: &Node) -> Result<(), kube::Error> {
        let now = crate::pods::now();
        let mut conditions: Vec<NodeCondition> = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions.retain(|c| c.type_ != "Ready");
        conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some("NodeStatusUnknown".into()),
            message: Some("Kubelet stopped posting node status.".into()),
            last_transition_time: Some(now.clone()),
            last_heartbeat_time: ready_condition(node).and_then(|c| c.last_heartbeat_time.clone()),
        });
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"status": {"conditions": conditions}});
        api.patch_status(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        tracing::info!(node = %node.name_any(), "lease not renewed; node is NotReady");
        self.recorder.normal(
            node.object_ref(&()),
            "NodeNotReady",
            format!("Node {} status is now: NodeNotReady", node.name_any()),
        );
        Ok(())
    }

    async fn set_unreachable_taints(&self, node: &Node, on: bool) -> Result<(), kube::Error> {
        let mut taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        taints.retain(|t| t.key != UNREACHABLE_TAINT);
        if on {
            for effect in ["NoSchedule", "NoExecute"] {
                taints.push(Taint {
                    key: UNREACHABLE_TAINT.into(),
                    effect: effect.into(),
                    time_added: Some(crate::pods::now()),
                    value: None,
                });
            }
        }
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"spec": {"taints": taints}});
        api.patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    async fn mark_pod_not_ready(&self, pod: &Pod) -> Result<(), kube::Error> {
        let mut conditions: Vec<PodCondition> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        for c in conditions
            .iter_mut()
            .filter(|c| c.type_ == "Ready" || c.type_ == "ContainersReady")
        {
            c.status = "False".into();
            c.reason = Some("NodeNotReady".into());
            c.last_transition_time = Some(crate::pods::now());
        }
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"status": {"conditions": conditions}});
        ignore_not_found(
            api.patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map(drop),
        )?;
        tracing::info!(pod = %pod.name_any(), "marked not ready: its node is not ready");
        Ok(())
    }

    async fn evict(&self, pod: &Pod, node: &Node) -> Result<(), kube::Error> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        ignore_not_found(
            api.delete(&pod.name_any(), &DeleteParams::default())
                .await
                .map(drop),
        )?;
        tracing::info!(pod = %pod.name_any(), node = %node.name_any(), "evicted from an unreachable node");
        self.recorder.normal(
            pod.object_ref(&()),
            "TaintManagerEviction",
            format!(
                "Marking for deletion Pod {}/{}",
                pod.namespace().unwrap_or_default(),
                pod.name_any()
            ),
        );
        Ok(())
    }
}

fn is_daemon_pod(pod: &Pod) -> bool {
    crate::pods::controller_of(&pod.metadata).is_some_and(|o| o.kind == "DaemonSet")
}

fn ignore_not_found(result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other,
    }
}
