//! The ReplicaSet controller: keeps `spec.replicas` pods running for every ReplicaSet, and
//! reports how many there are, are ready and available (ready for `minReadySeconds`).
//!
//! Pods belong to a ReplicaSet by their controller owner reference; orphans its selector
//! matches are adopted and its pods relabelled out of it released ([`claims`]). Creation starts slow
//! (one request, then a window that doubles with each round of successes) so a template the
//! API server rejects costs one request, not hundreds; deletion removes the least useful pods first (unscheduled, pending, not ready,
//! youngest). [`Expectations`] remember what is in flight until the cache shows it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::claims;
use crate::events::Recorder;
use crate::expectations::Expectations;
use crate::informers::Informers;
use crate::pods::{is_active, is_ready, owner_reference, pod_from_template, random_suffix};

pub use crate::pods::PodOwnerError as Error;

pub struct Context {
    pub client: kube::Client,
    pub pods: Store<Pod>,
    pub expectations: Expectations,
    pub recorder: Recorder,
    /// Per ReplicaSet, when each of its Ready pods (by uid) was first seen Ready: for
    /// `minReadySeconds` where the kubelet gives no `lastTransitionTime`.
    pub ready_seen: std::sync::Mutex<HashMap<String, HashMap<String, jiff::Timestamp>>>,
}

/// Subscribe now; the returned future runs the controller once the caches have synced.
pub fn run(
    client: kube::Client,
    informers: &Informers,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let changes = informers.replica_sets.subscribe();
    let pod_changes = informers
        .pods
        .subscribe_where(crate::informers::owned_by("ReplicaSet"));
    // `claims::selecting` maps only pods without a controller.
    let orphan_changes = informers
        .pods
        .subscribe_where(|pod: &Pod| crate::pods::controller_of(pod.meta()).is_none());
    let store = informers.replica_sets.store.clone();
    let selecting = store.clone();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), "replicaset-controller"),
        client,
        pods: informers.pods.store.clone(),
        expectations: Expectations::default(),
        ready_seen: Default::default(),
    });
    async move {
        Controller::for_stream(changes, store)
            .owns_stream(pod_changes)
            .watches_stream(orphan_changes, move |pod| {
                claims::selecting(&selecting, |rs| rs.spec.as_ref().map(|s| &s.selector), &pod)
            })
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {})
            .await;
    }
}

#[tracing::instrument(skip_all, fields(rs = %rs.name_any()))]
async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = rs
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    // Owner references (and so every claim) name the uid.
    rs.uid().ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let key = format!("{namespace}/{}", rs.name_any());
    let owned = claim_pods(&rs, &namespace, &ctx).await?;
    let activity: HashMap<String, bool> =
        owned.iter().map(|p| (p.name_any(), is_active(p))).collect();
    let in_flight = ctx
        .expectations
        .in_flight(&key, |name| activity.get(name).copied());
    let active: Vec<&Arc<Pod>> = owned
        .iter()
        .filter(|p| is_active(p) && !in_flight.deleting.contains(&p.name_any()))
        .collect();
    let have = active.len() + in_flight.creating;
    let want = rs
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0) as usize;
    if rs.metadata.deletion_timestamp.is_none() {
        if want > have {
            create_pods(&rs, &namespace, &key, want - have, &ctx).await?;
        } else if want < have && in_flight.creating == 0 {
            delete_pods(&rs, &namespace, &key, active.clone(), have - want, &ctx).await?;
        }
    }
    let next = update_status(&rs, &namespace, &owned, &ctx).await?;
    Ok(Action::requeue(next))
}

/// The pods this ReplicaSet owns after adopting its orphans and releasing the pods its
/// selector no longer matches.
async fn claim_pods(
    rs: &ReplicaSet,
    namespace: &str,
    ctx: &Context,
) -> Result<Vec<Arc<Pod>>, Error> {
    let selector = rs
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    let in_namespace = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace));
    Ok(claims::claim(&ctx.client, rs, &selector, in_namespace).await?)
}

fn error_policy(_rs: Arc<ReplicaSet>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("{error}");
    Action::requeue(Duration::from_secs(2))
}

/// Most creations one sync sends (kube-controller-manager's `burstReplicas`); the rest
/// wait for the next sync.
pub const BURST_REPLICAS: usize = 500;
/// Most creation requests in flight at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// Create `count` pods; stop sending at the first failure.
///
/// Slow start, so a template the API server rejects costs one request, not hundreds. Where
/// Kubernetes sends batches of 1, 2, 4, … each after the whole previous batch has returned,
/// this works as TCP's slow start: one request in flight at first and one more allowed for
/// each success, so the window still doubles every round trip (up to [`MAX_IN_FLIGHT`]) but
/// never waits for a batch's slowest request.
async fn create_pods(
    rs: &ReplicaSet,
    namespace: &str,
    key: &str,
    count: usize,
    ctx: &Context,
) -> Result<(), Error> {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let owner = owner_reference(rs);
    let count = count.min(BURST_REPLICAS);
    tracing::info!(count, "creating pods");
    let create = |name: String| {
        let pod = pod_from_template(&template, name.clone(), namespace, owner.clone(), &[]);
        ctx.expectations.creating(key, &name);
        let pods = pods.clone();
        async move {
            match pods.create(&PostParams::default(), &pod).await {
                Ok(_) => Ok(name),
                Err(e) => {
                    ctx.expectations.forget(key, &name);
                    Err(Error::PodCreationFailed(name, e))
                }
            }
        }
    };
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    let mut sent = 0;
    // How many may be in flight: 1 at first, one more for every success (1, 2, 4, … as the
    // successes of each window come back), up to MAX_IN_FLIGHT.
    let mut window = 1;
    let mut failure = None;
    while sent < count || !in_flight.is_empty() {
        while failure.is_none() && sent < count && in_flight.len() < window {
            in_flight.push(create(format!("{}-{}", rs.name_any(), random_suffix())));
            sent += 1;
        }
        let Some(result) = in_flight.next().await else {
            break;
        };
        match result {
            Ok(name) => {
                window = (window + 1).min(MAX_IN_FLIGHT);
                ctx.recorder.normal(
                    rs.object_ref(&()),
                    "SuccessfulCreate",
                    format!("Created pod: {name}"),
                );
            }
            Err(e) => {
                ctx.recorder.warning(
                    rs.object_ref(&()),
                    "FailedCreate",
                    format!("Error creating: {e}"),
                );
                // Stop sending; let those in flight finish (their expectations settle).
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Delete the `count` least useful of `active`.
async fn delete_pods(
    rs: &ReplicaSet,
    namespace: &str,
    key: &str,
    mut active: Vec<&Arc<Pod>>,
    count: usize,
    ctx: &Context,
) -> Result<(), Error> {
    active.sort_by_key(|p| deletion_rank(p));
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    tracing::info!(count, "deleting pods");
    let deletions = active.iter().take(count).map(|p| {
        let name = p.name_any();
        ctx.expectations.deleting(key, &name);
        let pods = pods.clone();
        async move {
            match pods.delete(&name, &DeleteParams::default()).await {
                Ok(_) => Ok(name),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(name),
                Err(e) => {
                    ctx.expectations.forget(key, &name);
                    Err(Error::PodDeletionFailed(name, e))
                }
            }
        }
    });
    for result in futures_util::future::join_all(deletions).await {
        let name = result?;
        ctx.recorder.normal(
            rs.object_ref(&()),
            "SuccessfulDelete",
            format!("Deleted pod: {name}"),
        );
    }
    Ok(())
}

/// Lower goes first: unscheduled, then pending, then not ready, then the youngest.
pub fn deletion_rank(pod: &Pod) -> (bool, bool, bool, std::cmp::Reverse<i64>) {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some();
    let running = crate::pods::phase(pod) == "Running";
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (
        scheduled,
        running,
        is_ready(pod),
        std::cmp::Reverse(created),
    )
}

/// Write the status; returns when to look again (a pod becoming available).
async fn update_status(
    rs: &ReplicaSet,
    namespace: &str,
    owned: &[Arc<Pod>],
    ctx: &Context,
) -> Result<Duration, Error> {
    let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| is_active(p)).collect();
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|p| crate::pods::map_selects(&template_labels, p.labels()))
        .count();
    let ready = active.iter().filter(|p| is_ready(p)).count() as i32;
    // Available: Ready for `minReadySeconds`; look again when the next one will be.
    let min_ready = Duration::from_secs(
        rs.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
            .max(0) as u64,
    );
    let now = jiff::Timestamp::now();
    let mut next = Duration::from_secs(300);
    let mut available = 0;
    let seen: HashMap<String, jiff::Timestamp> = {
        let mut all = ctx.ready_seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = format!("{namespace}/{}", rs.name_any());
        let before = all.remove(&key).unwrap_or_default();
        let now_ready: HashMap<String, jiff::Timestamp> = active
            .iter()
            .filter(|p| is_ready(p))
            .filter_map(|p| p.uid())
            .map(|uid| {
                let at = before.get(&uid).copied().unwrap_or(now);
                (uid, at)
            })
            .collect();
        if !now_ready.is_empty() {
            all.insert(key, now_ready.clone());
        }
        now_ready
    };
    for pod in &active {
        let first_seen = pod.uid().and_then(|u| seen.get(&u).copied()).unwrap_or(now);
        match crate::pods::available_at(pod, min_ready, first_seen, now) {
            Ok(()) => available += 1,
            Err(Some(left)) => next = next.min(left + Duration::from_millis(50)),
            Err(None) => {}
        }
    }
    let status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(fully_labeled as i32),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        observed_generation: rs.metadata.generation,
        conditions: None,
    };
    if rs.status.as_ref() == Some(&status) {
        return Ok(next);
    }
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch_status(
        &rs.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(|e| Error::StatusUpdateFailed(rs.name_any(), e))?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unscheduled_pods_go_first() {
        let bound = Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: Some("w1".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pending = Pod::default();
        assert!(deletion_rank(&pending) < deletion_rank(&bound));
    }
}
