//! The Pod's status as the kubelet reports it: phase, IPs, conditions (`Ready` and
//! `ContainersReady` from the containers' readiness) and a status per container (state,
//! `lastState`, `restartCount`, `ready`, `started`).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::pod_setup::effective_ip;
use super::probes::Prober;
use super::Config;
use crate::runtime::{ContainerState, ContainerStatus, PodSandbox, SandboxState};

/// The Pod's status as the kubelet reports it.
pub(super) fn pod_status(
    pod: &Pod,
    sandbox: &PodSandbox,
    containers: &[ContainerStatus],
    waiting: &HashMap<String, (String, String)>,
    config: &Config,
    prober: &Prober,
) -> Value {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let mut statuses = Vec::new();
    let (mut running, mut succeeded, mut failed, mut total) = (0, 0, 0, 0);
    let mut unready = Vec::new();
    for spec in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        total += 1;
        let attempts: Vec<&ContainerStatus> = containers
            .iter()
            .filter(|c| {
                c.container.sandbox_id == sandbox.id && c.container.config.name == spec.name
            })
            .collect();
        let latest = attempts.last();
        let restart_count = attempts.len().saturating_sub(1);
        let state = match (latest, waiting.get(&spec.name)) {
            (_, Some((reason, message))) => {
                json!({ "waiting": { "reason": reason, "message": message } })
            }
            (Some(c), _) if c.state == ContainerState::Running => {
                running += 1;
                json!({ "running": { "startedAt": ms_rfc3339(c.started_at.unwrap_or(0)) } })
            }
            // Exited, but the shim has not recorded how yet: not finished as far as the
            // API is concerned (a guessed exit code 0 would make a failing Job pod Succeeded).
            (Some(c), _) if c.state == ContainerState::Exited && c.exit.is_none() => {
                running += 1;
                json!({ "running": { "startedAt": ms_rfc3339(c.started_at.unwrap_or(0)) } })
            }
            (Some(c), _) if c.state == ContainerState::Exited => {
                let code = c.exit.as_ref().map_or(0, |e| e.exit_code);
                let restarting = restarts_under(policy, code);
                if code == 0 {
                    succeeded += 1
                } else {
                    failed += 1
                }
                if restarting {
                    json!({ "waiting": { "reason": "CrashLoopBackOff", "message": format!("back-off restarting failed container {}", spec.name) } })
                } else {
                    terminated(c)
                }
            }
            _ => json!({ "waiting": { "reason": "ContainerCreating" } }),
        };
        // The attempt before the one `state` shows as terminated, or the last that ended.
        let shown_terminated = state.get("terminated").is_some();
        let last_state = attempts
            .iter()
            .rev()
            .filter(|c| c.state == ContainerState::Exited)
            .nth(usize::from(shown_terminated))
            .map(|c| terminated(c))
            .unwrap_or_else(|| json!({}));
        let is_running = state.get("running").is_some();
        let id = latest.map(|c| c.container.id.as_str()).unwrap_or_default();
        let ready = is_running && prober.ready(spec, id);
        if !ready {
            unready.push(spec.name.clone());
        }
        statuses.push(json!({
            "name": spec.name,
            "image": spec.image,
            "imageID": "",
            "containerID": latest.map(|c| format!("cri-lite://{}", c.container.id)),
            "ready": ready,
            "started": is_running && prober.started(spec, id),
            "restartCount": restart_count,
            "state": state,
            "lastState": last_state,
        }));
    }
    let all_ready = total > 0 && unready.is_empty();
    // As the kubelet's getPhase: all ended → by restart policy; any running → Running.
    let phase = if running > 0 {
        "Running"
    } else if total > 0 && succeeded + failed == total {
        match (policy, failed) {
            ("Always", _) | ("OnFailure", 1..) => "Running",
            (_, 0) => "Succeeded",
            _ => "Failed",
        }
    } else {
        "Pending"
    };
    let ready_condition = |kind: &str| {
        if all_ready {
            json!({ "type": kind, "status": "True" })
        } else {
            json!({ "type": kind, "status": "False", "reason": "ContainersNotReady",
                "message": format!("containers with unready status: [{}]", unready.join(" ")) })
        }
    };
    let started = ms_rfc3339(sandbox.created_at);
    let ip = effective_ip(sandbox, config).filter(|_| sandbox.state == SandboxState::Ready);
    json!({ "status": {
        "phase": phase,
        "hostIP": config.node_ip.to_string(),
        "hostIPs": [{ "ip": config.node_ip.to_string() }],
        "podIP": ip,
        "podIPs": ip.iter().map(|ip| json!({ "ip": ip })).collect::<Vec<_>>(),
        "startTime": started,
        "conditions": [
            { "type": "PodReadyToStartContainers", "status": "True" },
            { "type": "Initialized", "status": "True" },
            ready_condition("Ready"),
            ready_condition("ContainersReady"),
            { "type": "PodScheduled", "status": "True" },
        ],
        "containerStatuses": statuses,
    }})
}

/// Gives every condition of `status` its `lastTransitionTime`, as the kubelet's status
/// manager does: kept from `previous` (the conditions last reported) while the condition's
/// status stays the same, `now` when it changed or was never reported. Readers rely on it:
/// `kubectl describe`, and a ReplicaSet's `minReadySeconds` counts from Ready's transition.
pub(super) fn stamp_transitions(status: &mut Value, previous: Option<&Value>, now: &str) {
    let Some(conditions) = status
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for condition in conditions {
        let kind = condition.get("type").cloned();
        let same = previous
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("type") == kind.as_ref());
        let kept = same
            .filter(|p| p.get("status") == condition.get("status"))
            .and_then(|p| p.get("lastTransitionTime"))
            .filter(|t| t.is_string())
            .cloned();
        condition["lastProbeTime"] = Value::Null;
        condition["lastTransitionTime"] = kept.unwrap_or_else(|| json!(now));
    }
}

/// Whether `restartPolicy` restarts a container that exited with `code`.
pub(super) fn restarts_under(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

pub(super) fn terminated(c: &ContainerStatus) -> Value {
    let exit = c.exit.clone().unwrap_or(crate::runtime::ExitRecord {
        exit_code: 0,
        signal: None,
        finished_at: 0,
    });
    json!({ "terminated": {
        "exitCode": exit.exit_code,
        "reason": if exit.exit_code == 0 { "Completed" } else { "Error" },
        "startedAt": ms_rfc3339(c.started_at.unwrap_or(0)),
        "finishedAt": ms_rfc3339(exit.finished_at),
        "containerID": format!("cri-lite://{}", c.container.id),
    }})
}

/// Kubernetes' `metav1.Time`: seconds, UTC.
pub(super) fn ms_rfc3339(ms: u64) -> String {
    crate::shim::rfc3339(ms / 1000, 0)[..19].to_string() + "Z"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(status: &Value) -> Vec<(String, String)> {
        status["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["type"].as_str().unwrap_or_default().to_string(),
                    c["lastTransitionTime"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn transitions_are_kept_until_a_condition_changes() {
        let report = |ready: &str| {
            json!({ "status": { "conditions": [
                { "type": "Initialized", "status": "True" },
                { "type": "Ready", "status": ready },
            ]}})
        };
        let mut first = report("False");
        stamp_transitions(&mut first, None, "2026-01-01T00:00:00Z");
        assert_eq!(
            conditions(&first),
            [
                ("Initialized".into(), "2026-01-01T00:00:00Z".into()),
                ("Ready".into(), "2026-01-01T00:00:00Z".into())
            ]
        );
        assert!(first["status"]["conditions"][0]["lastProbeTime"].is_null());

        let mut second = report("True");
        stamp_transitions(
            &mut second,
            Some(&first["status"]["conditions"]),
            "2026-01-01T00:00:05Z",
        );
        assert_eq!(
            conditions(&second),
            [
                ("Initialized".into(), "2026-01-01T00:00:00Z".into()),
                ("Ready".into(), "2026-01-01T00:00:05Z".into())
            ]
        );

        // Nothing changed: the report is the same, so the kubelet sends no patch.
        let mut third = report("True");
        stamp_transitions(
            &mut third,
            Some(&second["status"]["conditions"]),
            "2026-01-01T00:00:09Z",
        );
        assert_eq!(third, second);
    }
}
