//! The scheduler: puts every Pod that has no `spec.nodeName` on a node, through the
//! `pods/binding` subresource, as kube-scheduler does.
//!
//! One pass per pod: *filter* the nodes (Ready, schedulable, taints tolerated, `nodeSelector`
//! and required node affinity matched), then *score* them: fewest pods of the same owner
//! first (so a ReplicaSet's replicas spread), then fewest pods overall, then by name. The
//! choice is *assumed* before the binding is sent, as kube-scheduler's cache does, so pods
//! reconciled at the same moment spread instead of all picking the emptiest node.
//! Outcomes are `Scheduled` and `FailedScheduling` events on the pod.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Pod, PodSpec, Taint};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::events::Recorder;
use crate::informers::Informers;

pub const SCHEDULER_NAME: &str = "default-scheduler";
/// How long a binding may take before its assumption is dropped.
const ASSUME_TTL: Duration = Duration::from_secs(30);
/// When no node fits, look again this often (node changes also trigger a look).
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding pod {0} to node {1} failed: {2}")]
    BindingFailed(String, String, #[source] kube::Error),
}

struct Assumed {
    node: String,
    owner: Option<String>,
    at: Instant,
}

pub struct Context {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// Pods (`ns/name`) whose binding is in flight, and where they go.
    assumed: Mutex<HashMap<String, Assumed>>,
    /// The last FailedScheduling message per pod, so it is reported once, not every retry.
    last_failure: Mutex<HashMap<String, String>>,
    recorder: Recorder,
}

/// Subscribe now; the returned future runs the controller once the caches have synced.
pub fn run(
    client: kube::Client,
    informers: &Informers,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    // A pod that needs no scheduling reconciles to nothing: it is not sent.
    let pod_changes = informers.pods.subscribe_where(needs_scheduling);
    let node_changes = informers.nodes.subscribe();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), SCHEDULER_NAME),
        client,
        pods: informers.pods.store.clone(),
        nodes: informers.nodes.store.clone(),
        assumed: Mutex::default(),
        last_failure: Mutex::default(),
    });
    async move {
        let pods = ctx.pods.clone();
        Controller::for_stream(pod_changes, ctx.pods.clone())
            // A node that becomes Ready or changes its taints may fit pods that did not fit.
            .watches_stream(node_changes, move |_: Node| unscheduled(&pods))
            .run(reconcile, error_policy, ctx)
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!("scheduling: {e}");
                }
            })
            .await;
    }
}

fn unscheduled(pods: &Store<Pod>) -> Vec<ObjectRef<Pod>> {
    pods.state()
        .iter()
        .filter(|p| needs_scheduling(p))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

fn needs_scheduling(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    pod.metadata.deletion_timestamp.is_none()
        && spec
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("")
            .is_empty()
        && matches!(
            spec.and_then(|s| s.scheduler_name.as_deref()),
            None | Some(SCHEDULER_NAME)
        )
}

#[tracing::instrument(skip_all, fields(pod = %pod.name_any()))]
async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !needs_scheduling(&pod) {
        return Ok(Action::await_change());
    }
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let key = format!("{namespace}/{name}");
    let node = match choose_node(&pod, &key, &ctx) {
        Decision::InFlight => return Ok(Action::await_change()),
        Decision::NoFit(message) => {
            let mut last = ctx.last_failure.lock().unwrap_or_else(|e| e.into_inner());
            if last.get(&key) != Some(&message) {
                tracing::info!(%message, "pod does not fit");
                ctx.recorder
                    .warning(pod.object_ref(&()), "FailedScheduling", message.clone());
                last.insert(key, message);
            }
            return Ok(Action::requeue(RETRY));
        }
        Decision::Node(node) => node,
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let result = pods
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await;
    ctx.last_failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&key);
    match result {
        Ok(_) => {
            tracing::debug!(%node, "bound");
            ctx.recorder.normal(
                pod.object_ref(&()),
                "Scheduled",
                format!("Successfully assigned {key} to {node}"),
            );
            Ok(Action::await_change())
        }
        // Already bound, or being deleted: nothing left to do.
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
            forget(&ctx, &key);
            Ok(Action::await_change())
        }
        Err(e) => {
            forget(&ctx, &key);
            Err(Error::BindingFailed(key, node, e))
        }
    }
}

fn forget(ctx: &Context, key: &str) {
    ctx.assumed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(key);
}

fn error_policy(_pod: Arc<Pod>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("{error}");
    Action::requeue(Duration::from_secs(1))
}

enum Decision {
    Node(String),
    NoFit(String),
    InFlight,
}

/// Filter and score under the assumption lock, and assume the winner.
fn choose_node(pod: &Pod, key: &str, ctx: &Context) -> Decision {
    let mut assumed = ctx.assumed.lock().unwrap_or_else(|e| e.into_inner());
    // An assumption ends when the cache shows the pod bound (or gone), or after its TTL.
    assumed.retain(|key, a| {
        let Some((ns, name)) = key.split_once('/') else {
            return false;
        };
        let still_pending = ctx
            .pods
            .get(&ObjectRef::new(name).within(ns))
            .is_some_and(|p| needs_scheduling(&p));
        still_pending && a.at.elapsed() < ASSUME_TTL
    });
    if assumed.contains_key(key) {
        return Decision::InFlight;
    }
    let owner = crate::pods::controller_of(&pod.metadata).map(|o| o.uid.clone());
    let mut total: HashMap<String, usize> = HashMap::new();
    let mut same_owner: HashMap<String, usize> = HashMap::new();
    let mut count = |node: &str, pod_owner: Option<&str>| {
        *total.entry(node.to_string()).or_default() += 1;
        if owner.is_some() && pod_owner == owner.as_deref() {
            *same_owner.entry(node.to_string()).or_default() += 1;
        }
    };
    for p in ctx.pods.state() {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("");
        if !node.is_empty() && !crate::pods::is_terminal(&p) {
            count(
                node,
                crate::pods::controller_of(&p.metadata).map(|o| o.uid.as_str()),
            );
        }
    }
    for a in assumed.values() {
        count(&a.node, a.owner.as_deref());
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let nodes = ctx.nodes.state();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let best = nodes
        .iter()
        .filter(|node| match check_node(&spec, node, true) {
            Ok(()) => true,
            Err(reason) => {
                *reasons.entry(reason).or_default() += 1;
                false
            }
        })
        .map(|node| node.name_any())
        .min_by_key(|name| {
            let score = (same_owner.get(name).copied(), total.get(name).copied());
            (score.0.unwrap_or(0), score.1.unwrap_or(0), name.clone())
        });
    match best {
        Some(node) => {
            assumed.insert(
                key.to_string(),
                Assumed {
                    node: node.clone(),
                    owner,
                    at: Instant::now(),
                },
            );
            Decision::Node(node)
        }
        None => {
            let why: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            Decision::NoFit(format!(
                "0/{} nodes are available: {}.",
                nodes.len(),
                if why.is_empty() {
                    "no nodes registered".into()
                } else {
                    why.join(", ")
                }
            ))
        }
    }
}

/// Can a pod with this spec run on `node`? The reason is phrased as kube-scheduler's
/// FailedScheduling message phrases it ("node(s) …"). DaemonSets check without readiness.
pub fn check_node(spec: &PodSpec, node: &Node, need_ready: bool) -> Result<(), String> {
    if need_ready && !node_is_ready(node) {
        return Err("node(s) were not ready".into());
    }
    let node_spec = node.spec.clone().unwrap_or_default();
    if need_ready && node_spec.unschedulable == Some(true) {
        return Err("node(s) were unschedulable".into());
    }
    for taint in node_spec.taints.iter().flatten() {
        let blocks = matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute");
        if blocks && !tolerated(spec, taint) {
            return Err(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ));
        }
    }
    let labels = node.labels();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    if !selector_ok || !affinity_matches(spec, node) {
        return Err("node(s) didn't match Pod's node affinity/selector".into());
    }
    Ok(())
}

pub fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn tolerated(spec: &PodSpec, taint: &Taint) -> bool {
    spec.tolerations.iter().flatten().any(|t| {
        let effect = t.effect.as_deref().unwrap_or("");
        let effect_ok = effect.is_empty() || effect == taint.effect;
        let key = t.key.as_deref().unwrap_or("");
        match t.operator.as_deref().unwrap_or("Equal") {
            "Exists" => effect_ok && (key.is_empty() || key == taint.key),
            _ => {
                effect_ok
                    && key == taint.key
                    && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
            }
        }
    })
}

/// `requiredDuringSchedulingIgnoredDuringExecution`: any term matches, each term all of its
/// label expressions and `metadata.name` fields.
fn affinity_matches(spec: &PodSpec, node: &Node) -> bool {
    let Some(required) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    else {
        return true;
    };
    let labels = node.labels();
    let name = node.name_any();
    required.node_selector_terms.iter().any(|term| {
        let labels_ok = term
            .match_expressions
            .iter()
            .flatten()
            .all(|e| requirement_holds(e, labels.get(&e.key).map(String::as_str)));
        let fields_ok = term.match_fields.iter().flatten().all(|e| {
            let value = (e.key == "metadata.name").then_some(name.as_str());
            requirement_holds(e, value)
        });
        labels_ok && fields_ok
    })
}

fn requirement_holds(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(number),
                values.first().and_then(|b| number(b)),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, Toleration};

    fn node(name: &str, ready: bool, taint: Option<&str>) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.labels = Some([("kubernetes.io/hostname".to_string(), name.to_string())].into());
        n.spec = Some(NodeSpec {
            taints: taint.map(|key| {
                vec![Taint {
                    key: key.into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        n.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        n
    }

    #[test]
    fn filters() {
        let spec = PodSpec::default();
        assert!(check_node(&spec, &node("w1", true, None), true).is_ok());
        assert_eq!(
            check_node(&spec, &node("w1", false, None), true),
            Err("node(s) were not ready".into())
        );
        let cp = node("cp", true, Some("node-role.kubernetes.io/control-plane"));
        assert_eq!(
            check_node(&spec, &cp, true),
            Err("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }".into())
        );
        let tolerant = PodSpec {
            tolerations: Some(vec![Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(check_node(&tolerant, &cp, true).is_ok());
        let picky = PodSpec {
            node_selector: Some([("kubernetes.io/hostname".to_string(), "w2".to_string())].into()),
            ..Default::default()
        };
        assert!(check_node(&picky, &node("w1", true, None), true).is_err());
        assert!(check_node(&picky, &node("w2", true, None), true).is_ok());
    }
}
