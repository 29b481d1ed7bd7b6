//! The DaemonSet controller: one pod on every node the pod template fits (taints tolerated,
//! `nodeSelector` and node affinity matched), following nodes as they come and go, and a
//! rolling update (one node at a time) when the template changes.
//!
//! As in Kubernetes since 1.12, pods are not placed by this controller: each is created with
//! a required node affinity to its node (`metadata.name`), and the scheduler binds it. They
//! tolerate the `not-ready`/`unreachable` taints, so a failing node keeps its daemons. The
//! template's revision is the `controller-revision-hash` label on each pod, and each template
//! is kept as a ControllerRevision (`<daemonset>-<hash>`, its `data` the patch that restores
//! it), numbered 1, 2, … as Kubernetes does: `kubectl rollout history ds` lists them and
//! `kubectl rollout undo ds` applies one. Going back to an old template renumbers its
//! revision as the newest; more than `revisionHistoryLimit` (10) old ones are deleted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, PodTemplateSpec, Toleration,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::events::Recorder;
use crate::expectations::Expectations;
use crate::informers::Informers;
use crate::pods::{
    controlled_by, is_active, is_ready, owner_reference, pod_from_template, random_suffix,
    template_hash,
};

pub const REVISION_LABEL: &str = "controller-revision-hash";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing object key {0}")]
    MissingObjectKey(&'static str),
    #[error("creating a daemon pod for node {0} failed: {1}")]
    PodCreationFailed(String, #[source] kube::Error),
    #[error("deleting daemon pod {0} failed: {1}")]
    PodDeletionFailed(String, #[source] kube::Error),
    #[error("updating the status of {0} failed: {1}")]
    StatusUpdateFailed(String, #[source] kube::Error),
    #[error("keeping the ControllerRevisions of {0} failed: {1}")]
    HistoryFailed(String, #[source] kube::Error),
}

pub struct Context {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// Creations by node name, deletions by pod name.
    expectations: Expectations,
    recorder: Recorder,
}

/// Subscribe now; the returned future runs the controller once the caches have synced.
pub fn run(
    client: kube::Client,
    informers: &Informers,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let changes = informers.daemon_sets.subscribe();
    let pod_changes = informers
        .pods
        .subscribe_where(crate::informers::owned_by("DaemonSet"));
    let node_changes = informers.nodes.subscribe();
    let store = informers.daemon_sets.store.clone();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), "daemonset-controller"),
        client,
        pods: informers.pods.store.clone(),
        nodes: informers.nodes.store.clone(),
        expectations: Expectations::default(),
    });
    async move {
        let all = store.clone();
        Controller::for_stream(changes, store)
            .owns_stream(pod_changes)
            // A node added, removed or relabelled may change where daemons belong.
            .watches_stream(node_changes, move |_: Node| {
                all.state()
                    .iter()
                    .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                    .collect::<Vec<_>>()
            })
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {})
            .await;
    }
}

/// The tolerations Kubernetes adds to every daemon pod.
fn daemon_tolerations() -> Vec<Toleration> {
    let toleration = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration(crate::node_lifecycle::UNREACHABLE_TAINT, "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// The template as this controller creates pods from it: with the daemon tolerations.
fn daemon_template(ds: &DaemonSet) -> PodTemplateSpec {
    let mut template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let spec = template.spec.get_or_insert_with(PodSpec::default);
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .extend(daemon_tolerations());
    template
}

/// The node a daemon pod is for: where it is bound, else its affinity's target.
fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(node);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

fn pinned_to(mut template: PodTemplateSpec, node: &str) -> PodTemplateSpec {
    let spec = template.spec.get_or_insert_with(PodSpec::default);
    spec.affinity = Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_fields: Some(vec![NodeSelectorRequirement {
                        key: "metadata.name".into(),
                        operator: "In".into(),
                        values: Some(vec![node.into()]),
                    }]),
                    match_expressions: None,
                }],
            }),
            ..Default::default()
        }),
        ..spec.affinity.clone().unwrap_or_default()
    });
    template
}

#[tracing::instrument(skip_all, fields(daemonset = %ds.name_any()))]
async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = ds
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let uid = ds.uid().ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let key = format!("{namespace}/{}", ds.name_any());
    let deleting_key = format!("{key}/deleting");
    let template = daemon_template(&ds);
    let hash = template_hash(&template, 0);
    if ds.metadata.deletion_timestamp.is_none() {
        sync_history(&ds, &namespace, &uid, &hash, &ctx).await?;
    }
    let template_spec = template.spec.clone().unwrap_or_default();
    let eligible: Vec<String> = ctx
        .nodes
        .state()
        .iter()
        .filter(|n| crate::scheduler::check_node(&template_spec, n, false).is_ok())
        .map(|n| n.name_any())
        .collect();
    let owned: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(&namespace) && controlled_by(&p.metadata, &uid)
        })
        .filter(|p| is_active(p))
        .collect();
    let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for pod in &owned {
        if let Some(node) = node_of(pod) {
            by_node.entry(node).or_default().push(pod.clone());
        }
    }
    // Resolve creations the cache now shows (keyed by node).
    ctx.expectations
        .in_flight(&key, |node| by_node.get(node).map(|_| true));
    let names: HashMap<String, bool> = owned.iter().map(|p| (p.name_any(), true)).collect();
    let deleting = ctx
        .expectations
        .in_flight(&deleting_key, |name| names.get(name).copied())
        .deleting;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut to_delete: Vec<String> = Vec::new();
    // Nodes that should not run it: delete what is there.
    for (node, on_node) in &by_node {
        if !eligible.contains(node) {
            to_delete.extend(on_node.iter().map(|p| p.name_any()));
        } else if on_node.len() > 1 {
            to_delete.extend(on_node.iter().skip(1).map(|p| p.name_any()));
        }
    }
    // Rolling update: replace one outdated pod at a time, while all others are ready.
    let unavailable = owned.iter().filter(|p| !is_ready(p)).count();
    let outdated = owned.iter().find(|p| {
        p.labels().get(REVISION_LABEL) != Some(&hash) && !deleting.contains(&p.name_any())
    });
    if let (Some(pod), 0) = (outdated, unavailable) {
        to_delete.push(pod.name_any());
    }
    for name in to_delete.into_iter().filter(|n| !deleting.contains(n)) {
        ctx.expectations.deleting(&deleting_key, &name);
        match pods.delete(&name, &DeleteParams::default()).await {
            Ok(_) => ctx.recorder.normal(
                ds.object_ref(&()),
                "SuccessfulDelete",
                format!("Deleted pod: {name}"),
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                ctx.expectations.forget(&deleting_key, &name);
                return Err(Error::PodDeletionFailed(name, e));
            }
        }
    }
    // Eligible nodes without a pod (or one in flight): create one.
    let owner = owner_reference(ds.as_ref());
    for node in eligible.iter().filter(|n| !by_node.contains_key(*n)) {
        if ctx.expectations.is_creating(&key, node) {
            continue;
        }
        let name = format!("{}-{}", ds.name_any(), random_suffix());
        let pod = pod_from_template(
            &pinned_to(template.clone(), node),
            name.clone(),
            &namespace,
            owner.clone(),
            &[(REVISION_LABEL, hash.clone())],
        );
        ctx.expectations.creating(&key, node);
        if let Err(e) = pods.create(&PostParams::default(), &pod).await {
            ctx.expectations.forget(&key, node);
            return Err(Error::PodCreationFailed(node.clone(), e));
        }
        ctx.recorder.normal(
            ds.object_ref(&()),
            "SuccessfulCreate",
            format!("Created pod: {name}"),
        );
    }
    update_status(&ds, &namespace, &eligible, &by_node, &hash, &ctx).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn update_status(
    ds: &DaemonSet,
    namespace: &str,
    eligible: &[String],
    by_node: &HashMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    ctx: &Context,
) -> Result<(), Error> {
    let scheduled: Vec<&Arc<Pod>> = eligible
        .iter()
        .filter_map(|n| by_node.get(n)?.first())
        .collect();
    let ready = scheduled.iter().filter(|p| is_ready(p)).count() as i32;
    let updated = scheduled
        .iter()
        .filter(|p| p.labels().get(REVISION_LABEL).map(String::as_str) == Some(hash))
        .count() as i32;
    let misscheduled = by_node.keys().filter(|n| !eligible.contains(n)).count() as i32;
    let desired = eligible.len() as i32;
    let status = DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: scheduled.len() as i32,
        number_misscheduled: misscheduled,
        number_ready: ready,
        number_available: Some(ready),
        number_unavailable: Some((desired - ready).max(0)),
        updated_number_scheduled: Some(updated),
        observed_generation: ds.metadata.generation,
        collision_count: None,
        conditions: None,
    };
    if ds.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch_status(
        &ds.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(|e| Error::StatusUpdateFailed(ds.name_any(), e))?;
    Ok(())
}

/// The patch that puts `ds`'s template back, as kubectl's `getDaemonSetPatch` makes it.
pub fn revision_data(ds: &DaemonSet) -> serde_json::Value {
    let mut template = ds
        .spec
        .as_ref()
        .and_then(|s| serde_json::to_value(&s.template).ok())
        .unwrap_or_else(|| json!({}));
    if let Some(map) = template.as_object_mut() {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// Keep a ControllerRevision for the current template, numbered after the others (an old
/// one that is current again is renumbered), and at most `revisionHistoryLimit` old ones.
async fn sync_history(
    ds: &DaemonSet,
    namespace: &str,
    uid: &str,
    hash: &str,
    ctx: &Context,
) -> Result<(), Error> {
    let fail = |e| Error::HistoryFailed(ds.name_any(), e);
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = ds
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let mut revisions: Vec<ControllerRevision> = api
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map_err(fail)?
        .items
        .into_iter()
        .filter(|r| controlled_by(&r.metadata, uid))
        .collect();
    revisions.sort_by_key(|r| r.revision);
    let name = format!("{}-{hash}", ds.name_any());
    let newest = revisions.last().map_or(0, |r| r.revision);
    match revisions.iter().find(|r| r.name_any() == name) {
        Some(current) if current.revision == newest => {}
        Some(_) => {
            let patch = json!({"revision": newest + 1});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(fail)?;
        }
        None => {
            let mut labels = ds
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone())
                .unwrap_or_default();
            labels.insert(REVISION_LABEL.into(), hash.to_string());
            let revision = ControllerRevision {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.to_string()),
                    labels: Some(labels),
                    owner_references: Some(vec![owner_reference(ds)]),
                    ..Default::default()
                },
                data: Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(
                    revision_data(ds),
                )),
                revision: newest + 1,
            };
            match api.create(&PostParams::default(), &revision).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(fail(e)),
            }
        }
    }
    let limit = ds
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let old: Vec<&ControllerRevision> = revisions.iter().filter(|r| r.name_any() != name).collect();
    let used: Vec<String> = ctx
        .pods
        .state()
        .iter()
        .filter(|p| controlled_by(&p.metadata, uid))
        .filter_map(|p| p.labels().get(REVISION_LABEL).cloned())
        .collect();
    for stale in old.iter().take(old.len().saturating_sub(limit)) {
        let stale_hash = stale
            .labels()
            .get(REVISION_LABEL)
            .cloned()
            .unwrap_or_default();
        if used.contains(&stale_hash) {
            continue;
        }
        match api
            .delete(&stale.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(())
}

fn error_policy(_ds: Arc<DaemonSet>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("{error}");
    Action::requeue(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_pod_names_its_node() {
        let template = pinned_to(PodTemplateSpec::default(), "c0-w1");
        let pod = Pod {
            spec: template.spec,
            ..Default::default()
        };
        assert_eq!(node_of(&pod), Some("c0-w1".into()));
        let node = |name: &str| {
            let mut n = Node::default();
            n.metadata.name = Some(name.into());
            n
        };
        let spec = pod.spec.clone().unwrap_or_default();
        assert!(crate::scheduler::check_node(&spec, &node("c0-w1"), false).is_ok());
        assert!(crate::scheduler::check_node(&spec, &node("c0-w2"), false).is_err());
    }
}
