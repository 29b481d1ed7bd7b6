//! The kubelet's Events (core/v1), so `kubectl describe pod` and `kubectl get events` tell
//! what happened to a Pod: `Pulled`, `Created`, `Started`, `Killing`, `Unhealthy`, `BackOff`,
//! `FailedMount`, `FailedCreatePodSandBox`, with `source: {component: kubelet, host: <node>}`
//! and the Pod as `involvedObject`.
//!
//! As client-go's event correlator: the same reason and message for the same object bump
//! `count` and `lastTimestamp` of the Event already posted, instead of a new one; and one
//! that repeats within a few seconds is not posted again at all (the spam filter), so a
//! crash-looping Pod makes one `BackOff` Event with a growing count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// A repeat within this long is not posted.
const SPAM_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    host: String,
    seen: Arc<Mutex<HashMap<EventKey, Posted>>>,
}

/// (pod uid, reason, message): what makes two Events one.
type EventKey = (String, String, String);
/// (Event name, count, last posted in Unix ms).
type Posted = (String, i32, u64);

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

impl Recorder {
    pub fn new(client: kube::Client, host: &str) -> Recorder {
        Recorder {
            client,
            host: host.to_string(),
            seen: Arc::default(),
        }
    }

    /// Record an Event about `pod` (posted in the background; failures are logged).
    /// `field_path` names the container (`spec.containers{app}`), as the kubelet does.
    pub fn pod_event(
        &self,
        pod: &Pod,
        field_path: Option<String>,
        kind: &str,
        reason: &str,
        message: String,
    ) {
        let (Some(name), Some(namespace), Some(uid)) = (
            pod.metadata.name.clone(),
            pod.metadata.namespace.clone(),
            pod.metadata.uid.clone(),
        ) else {
            return;
        };
        let now = crate::now_ms();
        let key = (uid.clone(), reason.to_string(), message.clone());
        let (event_name, count) = {
            let Ok(mut seen) = self.seen.lock() else {
                return;
            };
            match seen.get_mut(&key) {
                Some((_, _, last)) if now < *last + SPAM_INTERVAL.as_millis() as u64 => return,
                Some((event_name, count, last)) => {
                    *count += 1;
                    *last = now;
                    (event_name.clone(), *count)
                }
                None => {
                    let event_name =
                        format!("{name}.{:x}{:04x}", now * 1_000_000, seen.len() % 0xffff);
                    seen.insert(key, (event_name.clone(), 1, now));
                    (event_name, 1)
                }
            }
        };
        let time = crate::shim::now_rfc3339()[..19].to_string() + "Z";
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": { "name": event_name, "namespace": namespace },
            "involvedObject": {
                "kind": "Pod", "apiVersion": "v1", "namespace": namespace, "name": name,
                "uid": uid, "resourceVersion": pod.metadata.resource_version, "fieldPath": field_path,
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": { "component": "kubelet", "host": self.host },
            "firstTimestamp": time,
            "lastTimestamp": time,
            "count": count,
            "reportingComponent": "kubelet",
            "reportingInstance": self.host,
        });
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            let result = if count == 1 {
                match serde_json::from_value::<Event>(event) {
                    Ok(event) => api.create(&PostParams::default(), &event).await.map(drop),
                    Err(e) => {
                        tracing::warn!("building an event: {e}");
                        return;
                    }
                }
            } else {
                let patch = json!({ "count": count, "lastTimestamp": time });
                api.patch(&event_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(drop)
            };
            if let Err(e) = result {
                tracing::debug!("posting event {event_name}: {e}");
            }
        });
    }

    /// Forget the Events of a Pod that is gone.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.retain(|(pod, _, _), _| pod != uid);
        }
    }
}

/// `spec.containers{name}`, the field path of a container's Events.
pub fn container_path(name: &str) -> Option<String> {
    Some(format!("spec.containers{{{name}}}"))
}
