//! Pod garbage collection, as kube-controller-manager's PodGC: pods bound to a node that no
//! longer exists (`kubectl delete node`, `knetsim node remove`) are deleted at once
//! (`gracePeriodSeconds: 0`: no kubelet is left to stop them), so their ReplicaSets,
//! Jobs and DaemonSets see them gone and act.
//!
//! A pod is only orphaned after its node has been missing from the cache for a short
//! quarantine (a pod bound just now may arrive before its brand-new Node does), and the node's
//! absence is confirmed with a GET first, as Kubernetes does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use crate::events::Recorder;
use crate::informers::Informers;

/// How often the caches are looked at.
const PERIOD: Duration = Duration::from_secs(1);
/// How long a node must be missing before its pods count as orphaned (Kubernetes: 40 s).
const QUARANTINE: Duration = Duration::from_secs(2);

struct Collector {
    client: kube::Client,
    nodes: Store<Node>,
    pods: Store<Pod>,
    recorder: Recorder,
    /// Nodes seen missing, and since when.
    missing: HashMap<String, Instant>,
}

pub fn run(
    client: kube::Client,
    informers: &Informers,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let mut collector = Collector {
        recorder: Recorder::new(client.clone(), "pod-garbage-collector"),
        client,
        nodes: informers.nodes.store.clone(),
        pods: informers.pods.store.clone(),
        missing: HashMap::new(),
    };
    async move {
        loop {
            collector.collect().await;
            tokio::time::sleep(PERIOD).await;
        }
    }
}

/// The nodes pods are bound to that the node cache does not have.
pub fn missing_nodes(pods: &[std::sync::Arc<Pod>], exists: impl Fn(&str) -> bool) -> Vec<String> {
    let mut missing: Vec<String> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .filter(|node| !exists(node))
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

impl Collector {
    async fn collect(&mut self) {
        let pods = self.pods.state();
        let nodes = &self.nodes;
        let now_missing = missing_nodes(&pods, |n| nodes.get(&ObjectRef::new(n)).is_some());
        self.missing.retain(|node, _| now_missing.contains(node));
        for node in now_missing {
            let since = *self
                .missing
                .entry(node.clone())
                .or_insert_with(Instant::now);
            if since.elapsed() < QUARANTINE {
                continue;
            }
            match Api::<Node>::all(self.client.clone()).get_opt(&node).await {
                Ok(None) => {}
                Ok(Some(_)) => continue, // the cache is behind: the node exists
                Err(e) => {
                    tracing::warn!(node, "pod GC: cannot confirm the node is gone: {e}");
                    continue;
                }
            }
            for pod in pods
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node))
            {
                if let Err(e) = self.delete(pod, &node).await {
                    tracing::warn!(pod = %pod.name_any(), node, "pod GC: {e}");
                }
            }
        }
    }

    async fn delete(&self, pod: &Pod, node: &str) -> Result<(), kube::Error> {
        let namespace = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        match api
            .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
        tracing::info!(pod = %pod.name_any(), namespace, node, "deleted a pod whose node is gone");
        self.recorder.warning(
            pod.object_ref(&()),
            "NodeNotFound",
            format!("Node {node} is gone; the pod is deleted"),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn pod(node: Option<&str>) -> Arc<Pod> {
        Arc::new(Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: node.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn only_bound_pods_of_unknown_nodes_are_orphans() {
        let pods = [
            pod(Some("c0-w1")),
            pod(Some("c0-w3")),
            pod(Some("c0-w3")),
            pod(None),
        ];
        assert_eq!(missing_nodes(&pods, |n| n == "c0-w1"), ["c0-w3"]);
        assert!(missing_nodes(&pods, |_| true).is_empty());
    }
}
