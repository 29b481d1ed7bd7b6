//! The Deployment controller: one ReplicaSet per revision of the pod template, and a rollout
//! from the old ones to the new one (`RollingUpdate` within `maxSurge`/`maxUnavailable`, or
//! `Recreate`), with the bookkeeping `kubectl rollout` reads.
//!
//! - The new ReplicaSet is the one whose template equals the Deployment's (ignoring the
//!   `pod-template-hash` label); it is named `<deployment>-<hash>`.
//! - Revisions are the `deployment.kubernetes.io/revision` annotation: a new ReplicaSet gets
//!   the highest plus one, and so does an old one that becomes new again (`rollout undo`).
//!   `kubectl rollout history` lists them; old ReplicaSets scaled to 0 are kept up to
//!   `revisionHistoryLimit`.
//! - Status (`observedGeneration`, replica counts, `Available` and `Progressing` conditions)
//!   is what `kubectl rollout status` waits on.
//!
//! Each reconcile takes one step, from the ReplicaSets' current status; the ReplicaSets'
//! changes trigger the next.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::claims;
use crate::events::Recorder;
use crate::informers::Informers;
use crate::pods::{owner_reference, scaled_value, template_hash};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing object key {0}")]
    MissingObjectKey(&'static str),
    #[error("creating ReplicaSet {0} failed: {1}")]
    ReplicaSetCreationFailed(String, #[source] kube::Error),
    #[error("scaling ReplicaSet {0} failed: {1}")]
    ReplicaSetScaleFailed(String, #[source] kube::Error),
    #[error("deleting old ReplicaSet {0} failed: {1}")]
    ReplicaSetDeletionFailed(String, #[source] kube::Error),
    #[error("updating Deployment {0} failed: {1}")]
    DeploymentUpdateFailed(String, #[source] kube::Error),
    #[error(transparent)]
    ClaimFailed(#[from] crate::claims::ClaimError),
}

pub struct Context {
    client: kube::Client,
    replica_sets: Store<ReplicaSet>,
    recorder: Recorder,
}

/// Subscribe now; the returned future runs the controller once the caches have synced.
pub fn run(
    client: kube::Client,
    informers: &Informers,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let changes = informers.deployments.subscribe();
    let rs_changes = informers.replica_sets.subscribe();
    let orphan_changes = informers.replica_sets.subscribe();
    let store = informers.deployments.store.clone();
    let selecting = store.clone();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), "deployment-controller"),
        client,
        replica_sets: informers.replica_sets.store.clone(),
    });
    async move {
        Controller::for_stream(changes, store)
            .owns_stream(rs_changes)
            .watches_stream(orphan_changes, move |rs| {
                claims::selecting(&selecting, |d| d.spec.as_ref().map(|s| &s.selector), &rs)
            })
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {})
            .await;
    }
}

fn error_policy(_d: Arc<Deployment>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("{error}");
    Action::requeue(Duration::from_secs(2))
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

/// The template without the `pod-template-hash` label, for comparing revisions.
fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    t
}

/// A template as JSON without empty values: `resources: {}` written back by a client (as
/// `kubectl rollout undo` does) is the same template as none.
fn comparable(template: &PodTemplateSpec) -> serde_json::Value {
    fn prune(v: serde_json::Value) -> Option<serde_json::Value> {
        use serde_json::Value;
        match v {
            Value::Null => None,
            Value::Object(m) => {
                let m: serde_json::Map<String, Value> = m
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, prune(v)?)))
                    .collect();
                (!m.is_empty()).then_some(Value::Object(m))
            }
            Value::Array(a) => {
                let a: Vec<Value> = a.into_iter().filter_map(prune).collect();
                (!a.is_empty()).then_some(Value::Array(a))
            }
            other => Some(other),
        }
    }
    prune(serde_json::to_value(template).unwrap_or_default()).unwrap_or_default()
}

#[tracing::instrument(skip_all, fields(deployment = %d.name_any()))]
async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = d
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    // Owner references (and so every claim) name the uid.
    d.uid().ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let spec = d.spec.clone().ok_or(Error::MissingObjectKey(".spec"))?;
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    // Its ReplicaSets, after adopting orphans its selector matches (left by
    // `kubectl delete deployment --cascade=orphan`) and releasing those it no longer matches.
    let in_namespace = ctx
        .replica_sets
        .state()
        .into_iter()
        .filter(|rs| rs.namespace().as_deref() == Some(&namespace));
    let mut all = claims::claim(&ctx.client, d.as_ref(), &spec.selector, in_namespace).await?;
    all.sort_by_key(|rs| {
        (
            rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            rs.name_any(),
        )
    });
    let template = without_hash(&spec.template);
    let max_revision = all.iter().map(|rs| revision(rs)).max().unwrap_or(0);
    let wanted = comparable(&template);
    let new_rs = all.iter().find(|rs| {
        let t = rs.spec.as_ref().and_then(|s| s.template.as_ref());
        t.map(|t| comparable(&without_hash(t))) == Some(wanted.clone())
    });
    let old: Vec<Arc<ReplicaSet>> = all
        .iter()
        .filter(|rs| Some(rs.name_any()) != new_rs.map(|n| n.name_any()))
        .cloned()
        .collect();
    let desired = spec.replicas.unwrap_or(1).max(0);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let rolling = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let mut surge = scaled_value(rolling.max_surge.as_ref(), desired, true, "25%");
    let mut unavailable = scaled_value(rolling.max_unavailable.as_ref(), desired, false, "25%");
    if recreate {
        (surge, unavailable) = (0, desired);
    } else if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }

    // Paused (`kubectl rollout pause`): no new ReplicaSet and no rollout step, only scaling
    // of the ReplicaSet that has the pods, as Kubernetes' `sync` of a paused Deployment.
    if spec.paused == Some(true) {
        return reconcile_paused(&d, &namespace, &all, new_rs, desired, unavailable, &ctx).await;
    }

    // The new ReplicaSet: reuse (bumping its revision if it was an old one), or create.
    let new_rs: Arc<ReplicaSet> = match new_rs {
        Some(rs) => {
            let rev = revision(rs);
            if rev < max_revision || rev == 0 {
                let bumped = (max_revision + 1).to_string();
                let patch = json!({"metadata": {"annotations": {REVISION: bumped}}});
                let out = rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map_err(|e| Error::ReplicaSetScaleFailed(rs.name_any(), e))?;
                Arc::new(out)
            } else {
                rs.clone()
            }
        }
        None => {
            let old_pods_remain = old.iter().any(|rs| replicas(rs) > 0 || status_of(rs).0 > 0);
            let initial = if recreate {
                if old_pods_remain {
                    0
                } else {
                    desired
                }
            } else {
                let total: i32 = old.iter().map(|rs| replicas(rs)).sum();
                (desired + surge - total).clamp(0, desired)
            };
            let rs = new_replica_set(
                &d,
                &spec.template,
                spec.selector.clone(),
                initial,
                max_revision + 1,
                surge,
            );
            let name = rs.name_any();
            let created = match rs_api.create(&PostParams::default(), &rs).await {
                Ok(created) => created,
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                Err(e) => return Err(Error::ReplicaSetCreationFailed(name, e)),
            };
            tracing::info!(rs = %name, replicas = initial, "created new ReplicaSet");
            if initial > 0 {
                ctx.recorder.normal(
                    d.object_ref(&()),
                    "ScalingReplicaSet",
                    format!("Scaled up replica set {name} from 0 to {initial}"),
                );
            }
            Arc::new(created)
        }
    };

    // One step of the rollout: the replica counts we want now.
    let mut targets: BTreeMap<String, i32> =
        all.iter().map(|rs| (rs.name_any(), replicas(rs))).collect();
    targets.insert(new_rs.name_any(), replicas(&new_rs));
    if recreate {
        step_recreate(&new_rs, &old, desired, &mut targets);
    } else {
        step_rolling(&new_rs, &old, desired, surge, unavailable, &mut targets);
    }
    for rs in std::iter::once(&new_rs).chain(old.iter()) {
        let (from, to) = (replicas(rs), targets[&rs.name_any()]);
        let annotated = rs.annotations().get(DESIRED_REPLICAS) == Some(&desired.to_string());
        if from == to && (annotated || to == 0) {
            continue;
        }
        let patch = json!({
            "metadata": {"annotations": {DESIRED_REPLICAS: desired.to_string(), MAX_REPLICAS: (desired + surge).to_string()}},
            "spec": {"replicas": to},
        });
        rs_api
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| Error::ReplicaSetScaleFailed(rs.name_any(), e))?;
        if from != to {
            let verb = if to > from { "up" } else { "down" };
            tracing::info!(rs = %rs.name_any(), from, to, "scaled");
            ctx.recorder.normal(
                d.object_ref(&()),
                "ScalingReplicaSet",
                format!(
                    "Scaled {verb} replica set {} from {from} to {to}",
                    rs.name_any()
                ),
            );
        }
    }
    cleanup_history(&old, spec.revision_history_limit.unwrap_or(10), &rs_api).await?;
    let next = sync_status(&d, &namespace, &new_rs, &all, desired, unavailable, &ctx).await?;
    Ok(Action::requeue(next))
}

/// A paused Deployment: the ReplicaSet holding its pods (the new one if the template is
/// unchanged, else the newest that has replicas) follows `replicas`; nothing else moves.
async fn reconcile_paused(
    d: &Deployment,
    namespace: &str,
    all: &[Arc<ReplicaSet>],
    new_rs: Option<&Arc<ReplicaSet>>,
    desired: i32,
    unavailable: i32,
    ctx: &Context,
) -> Result<Action, Error> {
    let active: Vec<&Arc<ReplicaSet>> = all.iter().filter(|rs| replicas(rs) > 0).collect();
    let current = match (new_rs, active.as_slice()) {
        (Some(rs), _) => Some(rs.clone()),
        (None, [only]) => Some((*only).clone()),
        (None, []) => all.iter().max_by_key(|rs| revision(rs)).cloned(),
        // Paused mid-rollout: several ReplicaSets have pods; they stay as they are.
        (None, _) => None,
    };
    let Some(current) = current else {
        return Ok(Action::requeue(Duration::from_secs(300)));
    };
    let only_active = active.iter().all(|rs| rs.name_any() == current.name_any());
    if only_active && replicas(&current) != desired {
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
        let patch = json!({
            "metadata": {"annotations": {DESIRED_REPLICAS: desired.to_string()}},
            "spec": {"replicas": desired},
        });
        rs_api
            .patch(
                &current.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| Error::ReplicaSetScaleFailed(current.name_any(), e))?;
        ctx.recorder.normal(
            d.object_ref(&()),
            "ScalingReplicaSet",
            format!(
                "Scaled replica set {} from {} to {desired}",
                current.name_any(),
                replicas(&current)
            ),
        );
    }
    sync_status(d, namespace, &current, all, desired, unavailable, ctx).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn new_replica_set(
    d: &Deployment,
    template: &PodTemplateSpec,
    selector: LabelSelector,
    replicas: i32,
    revision: i64,
    surge: i32,
) -> ReplicaSet {
    let hash = template_hash(
        template,
        d.status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0),
    );
    let mut template = template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let mut selector = selector;
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let mut annotations: BTreeMap<String, String> = d
        .annotations()
        .iter()
        .filter(|(k, _)| k.as_str() == "kubernetes.io/change-cause")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    annotations.insert(REVISION.into(), revision.to_string());
    annotations.insert(DESIRED_REPLICAS.into(), desired.to_string());
    annotations.insert(MAX_REPLICAS.into(), (desired + surge).to_string());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.namespace(),
            labels: meta.labels.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(d)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector,
            template: Some(template),
            min_ready_seconds: d.spec.as_ref().and_then(|s| s.min_ready_seconds),
        }),
        status: None,
    }
}

/// `Recreate`: old ReplicaSets to 0, and only when their pods are gone the new one up.
fn step_recreate(
    new_rs: &ReplicaSet,
    old: &[Arc<ReplicaSet>],
    desired: i32,
    targets: &mut BTreeMap<String, i32>,
) {
    for rs in old {
        targets.insert(rs.name_any(), 0);
    }
    let old_pods = old.iter().map(|rs| status_of(rs).0).sum::<i32>();
    if old_pods == 0 {
        targets.insert(new_rs.name_any(), desired);
    }
}

/// `RollingUpdate`: scale the new ReplicaSet up as far as `maxSurge` allows, and old ones
/// down as far as `maxUnavailable` allows, unhealthy old pods first.
pub fn step_rolling(
    new_rs: &ReplicaSet,
    old: &[Arc<ReplicaSet>],
    desired: i32,
    surge: i32,
    unavailable: i32,
    targets: &mut BTreeMap<String, i32>,
) {
    let new_name = new_rs.name_any();
    let old_total: i32 = old.iter().map(|rs| replicas(rs)).sum();
    let current_new = replicas(new_rs);
    let new_target = if current_new > desired {
        desired
    } else {
        let room = desired + surge - old_total - current_new;
        current_new + room.clamp(0, desired - current_new)
    };
    targets.insert(new_name, new_target);
    let min_available = desired - unavailable;
    let (_, _, new_available) = status_of(new_rs);
    let new_unavailable = (new_target - new_available).max(0);
    let all_total = old_total + new_target;
    // First the old pods that are not available anyway.
    let mut budget = all_total - min_available - new_unavailable;
    for rs in old {
        if budget <= 0 {
            break;
        }
        let unhealthy = replicas(rs) - status_of(rs).2;
        let cut = unhealthy.min(budget).max(0);
        if cut > 0 {
            *targets.entry(rs.name_any()).or_default() -= cut;
            budget -= cut;
        }
    }
    // Then available ones, as long as enough stay available.
    let available: i32 = old
        .iter()
        .map(|rs| status_of(rs).2.min(targets[&rs.name_any()]))
        .sum::<i32>()
        + new_available;
    let mut budget = available - min_available;
    for rs in old {
        if budget <= 0 {
            break;
        }
        let current = targets[&rs.name_any()];
        let cut = current.min(budget);
        targets.insert(rs.name_any(), current - cut);
        budget -= cut;
    }
}

/// Delete the oldest scaled-down ReplicaSets beyond `revisionHistoryLimit`.
async fn cleanup_history(
    old: &[Arc<ReplicaSet>],
    limit: i32,
    api: &Api<ReplicaSet>,
) -> Result<(), Error> {
    let mut idle: Vec<&Arc<ReplicaSet>> = old
        .iter()
        .filter(|rs| {
            replicas(rs) == 0 && status_of(rs).0 == 0 && rs.metadata.deletion_timestamp.is_none()
        })
        .collect();
    let excess = idle.len().saturating_sub(limit.max(0) as usize);
    idle.sort_by_key(|rs| revision(rs));
    for rs in idle.into_iter().take(excess) {
        match api
            .delete(&rs.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {
                tracing::info!(rs = %rs.name_any(), "deleted old ReplicaSet beyond the history limit")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::ReplicaSetDeletionFailed(rs.name_any(), e)),
        }
    }
    Ok(())
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    previous: Option<&DeploymentCondition>,
) -> DeploymentCondition {
    let status = if ok { "True" } else { "False" }.to_string();
    let now = crate::pods::now();
    let unchanged = previous.is_some_and(|p| p.status == status);
    let same_reason = previous.is_some_and(|p| {
        p.reason.as_deref() == Some(reason) && p.message.as_deref() == Some(message.as_str())
    });
    DeploymentCondition {
        type_: type_.into(),
        status,
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: if unchanged {
            previous.and_then(|p| p.last_transition_time.clone())
        } else {
            Some(now.clone())
        },
        last_update_time: if same_reason {
            previous.and_then(|p| p.last_update_time.clone())
        } else {
            Some(now)
        },
    }
}

/// Write the Deployment's status; returns when it should be looked at again (the progress
/// deadline, if one is running).
async fn sync_status(
    d: &Deployment,
    namespace: &str,
    new_rs: &ReplicaSet,
    all: &[Arc<ReplicaSet>],
    desired: i32,
    max_unavailable: i32,
    ctx: &Context,
) -> Result<Duration, Error> {
    let others = all.iter().filter(|rs| rs.name_any() != new_rs.name_any());
    let sets: Vec<&ReplicaSet> = std::iter::once(new_rs)
        .chain(others.map(|rs| rs.as_ref()))
        .collect();
    let total: i32 = sets.iter().map(|rs| status_of(rs).0).sum();
    let ready: i32 = sets.iter().map(|rs| status_of(rs).1).sum();
    let available: i32 = sets.iter().map(|rs| status_of(rs).2).sum();
    let (updated, _, new_available) = status_of(new_rs);
    let previous = d.status.clone().unwrap_or_default();
    let find = |t: &str| {
        previous
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .cloned()
    };
    let is_available = available >= desired - max_unavailable;
    let complete = updated == desired
        && total == desired
        && new_available == desired
        && replicas(new_rs) == desired;
    let name = new_rs.name_any();
    let spec = d.spec.clone().unwrap_or_default();
    let progressing = progressing_condition(
        &ProgressFacts {
            complete,
            paused: spec.paused == Some(true),
            progressed: made_progress(&previous, updated, ready, available, total),
            deadline: spec
                .progress_deadline_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64)),
            rs_name: &name,
        },
        find("Progressing").as_ref(),
        jiff::Timestamp::now(),
    );
    // Look again when the deadline would pass without progress.
    let next = match (
        &progressing.last_update_time,
        spec.progress_deadline_seconds,
    ) {
        (Some(at), Some(deadline)) if !complete && progressing.status == "True" => {
            let due = at.0.as_millisecond() + i64::from(deadline) * 1000;
            let left = due - jiff::Timestamp::now().as_millisecond();
            Duration::from_millis(left.clamp(100, 300_000) as u64)
        }
        _ => Duration::from_secs(300),
    };
    let conditions = vec![
        condition(
            "Available",
            is_available,
            if is_available {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            if is_available {
                "Deployment has minimum availability.".into()
            } else {
                "Deployment does not have minimum availability.".into()
            },
            find("Available").as_ref(),
        ),
        progressing,
    ];
    let status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((desired - available).max(0)),
        conditions: Some(conditions),
        collision_count: previous.collision_count,
    };
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let revision = revision(new_rs).to_string();
    if d.annotations().get(REVISION) != Some(&revision) {
        let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
        api.patch(
            &d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| Error::DeploymentUpdateFailed(d.name_any(), e))?;
    }
    if d.status.as_ref() == Some(&status) {
        return Ok(next);
    }
    api.patch_status(
        &d.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(|e| Error::DeploymentUpdateFailed(d.name_any(), e))?;
    Ok(next)
}

/// Did the rollout move since the last status: more pods updated, ready or available, or
/// fewer old ones (Kubernetes' `DeploymentProgressing`)?
fn made_progress(
    previous: &DeploymentStatus,
    updated: i32,
    ready: i32,
    available: i32,
    total: i32,
) -> bool {
    let old_before = previous.replicas.unwrap_or(0) - previous.updated_replicas.unwrap_or(0);
    updated > previous.updated_replicas.unwrap_or(0)
        || ready > previous.ready_replicas.unwrap_or(0)
        || available > previous.available_replicas.unwrap_or(0)
        || total - updated < old_before
}

/// What the `Progressing` condition is made from.
pub struct ProgressFacts<'a> {
    pub complete: bool,
    pub paused: bool,
    pub progressed: bool,
    /// `progressDeadlineSeconds`.
    pub deadline: Option<Duration>,
    pub rs_name: &'a str,
}

/// The `Progressing` condition, as Kubernetes keeps it: `Unknown` while paused (before
/// anything else), `True` while the rollout moves (`lastUpdateTime` is each step's time), and `False` with
/// `ProgressDeadlineExceeded` once `progressDeadlineSeconds` pass without a step; it stays
/// so until the rollout moves again.
pub fn progressing_condition(
    facts: &ProgressFacts,
    previous: Option<&DeploymentCondition>,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    let name = facts.rs_name;
    let make = |status: &str, reason: &str, message: String, updated: bool| {
        let same_status = previous.is_some_and(|p| p.status == status);
        let same_reason = previous.is_some_and(|p| p.reason.as_deref() == Some(reason));
        let time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now);
        DeploymentCondition {
            type_: "Progressing".into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: match previous {
                Some(p) if same_status => p.last_transition_time.clone(),
                _ => Some(time.clone()),
            },
            last_update_time: match previous {
                Some(p) if same_reason && !updated => p.last_update_time.clone(),
                _ => Some(time),
            },
        }
    };
    if facts.paused {
        return make(
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            false,
        );
    }
    if facts.complete {
        return make(
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{name}\" has successfully progressed."),
            false,
        );
    }
    let timed_out = previous.is_some_and(|p| {
        p.reason.as_deref() == Some("ProgressDeadlineExceeded")
            || (p.reason.as_deref() == Some("ReplicaSetUpdated")
                && facts.deadline.is_some_and(|deadline| {
                    p.last_update_time.as_ref().is_some_and(|at| {
                        now.as_millisecond() - at.0.as_millisecond() > deadline.as_millis() as i64
                    })
                }))
    });
    if timed_out && !facts.progressed {
        return make(
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{name}\" has timed out progressing."),
            false,
        );
    }
    let fresh = previous.is_none_or(|p| p.reason.as_deref() != Some("ReplicaSetUpdated"));
    make(
        "True",
        "ReplicaSetUpdated",
        format!("ReplicaSet \"{name}\" is progressing."),
        facts.progressed || fresh,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetStatus;

    fn rs(name: &str, replicas: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas,
                available_replicas: Some(available),
                ready_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn rolling_update_keeps_enough_available() {
        // 3 replicas, maxSurge 1, maxUnavailable 0: one new pod at a time.
        let new = rs("new", 0, 0);
        let old = vec![Arc::new(rs("old", 3, 3))];
        let mut targets = BTreeMap::from([("new".to_string(), 0), ("old".to_string(), 3)]);
        step_rolling(&new, &old, 3, 1, 0, &mut targets);
        assert_eq!(
            targets,
            BTreeMap::from([("new".to_string(), 1), ("old".to_string(), 3)])
        );
        // The new pod is available: one old one may go, and another new one come.
        let new = rs("new", 1, 1);
        step_rolling(&new, &old, 3, 1, 0, &mut targets);
        assert_eq!(targets["old"], 2);
        assert_eq!(targets["new"], 1);
    }

    #[test]
    fn scaling_without_a_rollout() {
        let new = rs("new", 6, 6);
        let mut targets = BTreeMap::from([("new".to_string(), 6)]);
        step_rolling(&new, &[], 2, 1, 0, &mut targets);
        assert_eq!(targets["new"], 2);
        let new = rs("new", 2, 2);
        step_rolling(&new, &[], 6, 2, 1, &mut targets);
        assert_eq!(targets["new"], 6);
    }

    #[test]
    fn hash_label_is_ignored_when_comparing() {
        let labelled = |pairs: &[(&str, &str)]| PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(
                    pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            }),
            spec: None,
        };
        let plain = labelled(&[("app", "web")]);
        let hashed = labelled(&[("app", "web"), (POD_TEMPLATE_HASH, "abc")]);
        assert_eq!(without_hash(&hashed), plain);
        let mut with_empty = plain.clone();
        with_empty.spec = Some(Default::default());
        assert_eq!(comparable(&with_empty), comparable(&plain));
    }

    #[test]
    fn progress_deadline_passes_without_steps_and_clears_on_one() {
        let facts = |progressed| ProgressFacts {
            complete: false,
            paused: false,
            progressed,
            deadline: Some(Duration::from_secs(10)),
            rs_name: "web-abc",
        };
        let t0 = jiff::Timestamp::from_second(1_000_000).unwrap();
        let later = |s: i64| jiff::Timestamp::from_second(1_000_000 + s).unwrap();
        let started = progressing_condition(&facts(false), None, t0);
        assert_eq!(started.reason.as_deref(), Some("ReplicaSetUpdated"));
        // No step for 5 s: still within the deadline, the update time stays.
        let waiting = progressing_condition(&facts(false), Some(&started), later(5));
        assert_eq!(waiting.last_update_time, started.last_update_time);
        assert_eq!(waiting.status, "True");
        let late = progressing_condition(&facts(false), Some(&waiting), later(11));
        assert_eq!(
            (late.status.as_str(), late.reason.as_deref()),
            ("False", Some("ProgressDeadlineExceeded"))
        );
        let still = progressing_condition(&facts(false), Some(&late), later(20));
        assert_eq!(still.reason.as_deref(), Some("ProgressDeadlineExceeded"));
        let moved = progressing_condition(&facts(true), Some(&still), later(21));
        assert_eq!(
            (moved.status.as_str(), moved.reason.as_deref()),
            ("True", Some("ReplicaSetUpdated"))
        );
        let paused = ProgressFacts {
            paused: true,
            ..facts(false)
        };
        let condition = progressing_condition(&paused, Some(&moved), later(22));
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_deref()),
            ("Unknown", Some("DeploymentPaused"))
        );
    }
}
