//! The Job controller: runs pods until `completions` of them have succeeded, at most
//! `parallelism` at a time, and gives up when more than `backoffLimit` have failed.
//!
//! Pods are counted by phase: `Succeeded` and `Failed` ones are kept (as Kubernetes keeps
//! them, for their logs) and counted; active ones are topped up. The Job ends with a
//! `Complete` or `Failed` (`BackoffLimitExceeded`) condition, which `kubectl wait
//! --for=condition=complete` waits on. After a failure the next pod waits 10 s, doubling
//! with each further failure since the last success (up to 10 min), as the Job controller's
//! pod failure back-off does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::events::Recorder;
use crate::expectations::Expectations;
use crate::informers::Informers;
use crate::pods::{
    controlled_by, is_active, is_ready, owner_reference, phase, pod_from_template, random_suffix,
};

pub use crate::pods::PodOwnerError as Error;

pub struct Context {
    client: kube::Client,
    pods: Store<Pod>,
    expectations: Expectations,
    recorder: Recorder,
}

/// Subscribe now; the returned future runs the controller once the caches have synced.
pub fn run(
    client: kube::Client,
    informers: &Informers,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let changes = informers.jobs.subscribe();
    let pod_changes = informers
        .pods
        .subscribe_where(crate::informers::owned_by("Job"));
    let store = informers.jobs.store.clone();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), "job-controller"),
        client,
        pods: informers.pods.store.clone(),
        expectations: Expectations::default(),
    });
    async move {
        Controller::for_stream(changes, store)
            .owns_stream(pod_changes)
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {})
            .await;
    }
}

fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

#[tracing::instrument(skip_all, fields(job = %job.name_any()))]
async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    if finished(&job) || job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = job
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let uid = job.uid().ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let key = format!("{namespace}/{}", job.name_any());
    let spec = job.spec.clone().unwrap_or_default();
    let completions = spec.completions.unwrap_or(1).max(0);
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6).max(0);
    let owned: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(&namespace) && controlled_by(&p.metadata, &uid)
        })
        .collect();
    let seen: HashMap<String, bool> = owned.iter().map(|p| (p.name_any(), is_active(p))).collect();
    let in_flight = ctx
        .expectations
        .in_flight(&key, |name| seen.get(name).copied());
    let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| is_active(p)).collect();
    let succeeded = owned.iter().filter(|p| phase(p) == "Succeeded").count() as i32;
    let failed = owned.iter().filter(|p| phase(p) == "Failed").count() as i32;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);

    let mut retry_after = None;
    let outcome = if failed > backoff_limit {
        Some((
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else if succeeded >= completions {
        Some(("Complete", "", ""))
    } else {
        None
    };
    if outcome.is_some() {
        for pod in &active {
            match pods.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Error::PodDeletionFailed(pod.name_any(), e)),
            }
        }
    } else if let Some(wait) = backoff_remaining(&owned, jiff::Timestamp::now()) {
        tracing::info!(
            wait_ms = wait.as_millis() as u64,
            "backing off after a pod failure"
        );
        retry_after = Some(wait);
    } else {
        let want = parallelism.min(completions - succeeded).max(0) as usize;
        let have = active.len() + in_flight.creating;
        let template = spec.template.clone();
        let owner = owner_reference(job.as_ref());
        let labels = [
            ("batch.kubernetes.io/controller-uid", uid.clone()),
            ("batch.kubernetes.io/job-name", job.name_any()),
            ("controller-uid", uid.clone()),
            ("job-name", job.name_any()),
        ];
        for _ in have..want {
            let name = format!("{}-{}", job.name_any(), random_suffix());
            let pod =
                pod_from_template(&template, name.clone(), &namespace, owner.clone(), &labels);
            ctx.expectations.creating(&key, &name);
            if let Err(e) = pods.create(&PostParams::default(), &pod).await {
                ctx.expectations.forget(&key, &name);
                ctx.recorder.warning(
                    job.object_ref(&()),
                    "FailedCreate",
                    format!("Error creating: {e}"),
                );
                return Err(Error::PodCreationFailed(name, e));
            }
            ctx.recorder.normal(
                job.object_ref(&()),
                "SuccessfulCreate",
                format!("Created pod: {name}"),
            );
        }
    }

    let previous = job.status.clone().unwrap_or_default();
    let now = crate::pods::now();
    let mut conditions = previous.conditions.clone().unwrap_or_default();
    let mut completion_time = previous.completion_time.clone();
    if let Some((type_, reason, message)) = outcome {
        let condition = |t: &str| JobCondition {
            type_: t.into(),
            status: "True".into(),
            reason: (!reason.is_empty()).then(|| reason.to_string()),
            message: (!message.is_empty()).then(|| message.to_string()),
            last_probe_time: Some(now.clone()),
            last_transition_time: Some(now.clone()),
        };
        // As Kubernetes 1.31+ does: the terminal condition follows its "target" condition.
        let target = if type_ == "Complete" {
            "SuccessCriteriaMet"
        } else {
            "FailureTarget"
        };
        conditions.push(condition(target));
        conditions.push(condition(type_));
        if type_ == "Complete" {
            completion_time = Some(now.clone());
        }
        tracing::info!(outcome = type_, succeeded, failed, "job finished");
        let event = if type_ == "Complete" {
            "Completed"
        } else {
            "BackoffLimitExceeded"
        };
        ctx.recorder.normal(
            job.object_ref(&()),
            event,
            format!("Job {}", type_.to_lowercase()),
        );
    }
    let finished_now = outcome.is_some();
    let status = JobStatus {
        active: Some(if finished_now { 0 } else { active.len() as i32 }),
        ready: Some(if finished_now {
            0
        } else {
            active.iter().filter(|p| is_ready(p)).count() as i32
        }),
        succeeded: Some(succeeded),
        failed: Some(failed),
        start_time: previous.start_time.clone().or(Some(now)),
        completion_time,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating: Some(0),
        ..Default::default()
    };
    if job.status.as_ref() != Some(&status) {
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
        api.patch_status(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .map_err(|e| Error::StatusUpdateFailed(job.name_any(), e))?;
    }
    Ok(Action::requeue(
        retry_after.unwrap_or(Duration::from_secs(300)),
    ))
}

/// The Job controller's first delay after a failed pod (`DefaultJobPodFailureBackOff`).
const FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// Its longest (`MaxJobPodFailureBackOff`).
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(600);

/// How long new pods must still wait after the latest failure: 10 s after the first failure
/// since the last success, doubling for each further one. `None` once it has passed.
pub fn backoff_remaining(pods: &[Arc<Pod>], now: jiff::Timestamp) -> Option<Duration> {
    let finished = |phase_wanted: &str| -> Vec<jiff::Timestamp> {
        pods.iter()
            .filter(|p| phase(p) == phase_wanted)
            .filter_map(|p| finish_time(p))
            .collect()
    };
    let last_success = finished("Succeeded").into_iter().max();
    let failures: Vec<jiff::Timestamp> = finished("Failed")
        .into_iter()
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    let last_failure = failures.iter().max()?;
    let doublings = (failures.len() - 1).min(16) as u32;
    let delay = FAILURE_BACKOFF
        .saturating_mul(2u32.pow(doublings))
        .min(MAX_FAILURE_BACKOFF);
    let elapsed = now.duration_since(*last_failure);
    let elapsed = Duration::try_from(elapsed).unwrap_or_default();
    delay.checked_sub(elapsed).filter(|d| !d.is_zero())
}

/// When a finished pod's last container ended (the kubelet's `finishedAt`), else when its
/// Ready condition last changed.
fn finish_time(pod: &Pod) -> Option<jiff::Timestamp> {
    let status = pod.status.as_ref()?;
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    terminated.or_else(|| {
        status
            .conditions
            .iter()
            .flatten()
            .filter_map(|c| c.last_transition_time.as_ref())
            .map(|t| t.0)
            .max()
    })
}

fn error_policy(_job: Arc<Job>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("{error}");
    Action::requeue(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn finished(phase: &str, at: jiff::Timestamp) -> Arc<Pod> {
        Arc::new(Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            finished_at: Some(Time(at)),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn back_off_doubles_per_failure_since_the_last_success() {
        let t0 = jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_secs(1_000_000);
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        assert_eq!(backoff_remaining(&[], at(0)), None);
        let one = [finished("Failed", at(0))];
        assert_eq!(backoff_remaining(&one, at(4)), Some(Duration::from_secs(6)));
        assert_eq!(backoff_remaining(&one, at(10)), None);
        let two = [finished("Failed", at(0)), finished("Failed", at(15))];
        assert_eq!(
            backoff_remaining(&two, at(20)),
            Some(Duration::from_secs(15))
        );
        // A success since resets the count: one failure after it, 10 s.
        let reset = [
            finished("Failed", at(0)),
            finished("Failed", at(15)),
            finished("Succeeded", at(30)),
            finished("Failed", at(40)),
        ];
        assert_eq!(
            backoff_remaining(&reset, at(41)),
            Some(Duration::from_secs(9))
        );
        // Capped at 10 minutes.
        let many: Vec<Arc<Pod>> = (0..12).map(|i| finished("Failed", at(i))).collect();
        assert_eq!(
            backoff_remaining(&many, at(11)),
            Some(Duration::from_secs(600))
        );
    }
}
