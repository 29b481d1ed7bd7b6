//! The kubelet's Events (core/v1), so `kubectl describe pod` and `kubectl get events` tell
//! what happened to a Pod: `Pulled`, `Created`, `Started`, `Killing`, `Unhealthy`, `BackOff`,
//! `FailedMount`, `FailedCreatePodSandBox`, with `source: {component: kubelet, host: <node>}`
//! and the Pod as `involvedObject`.
//!
//! As client-go's event correlator: the same reason and message for the same object bump
//! `count` and `lastTimestamp` of the Event already posted, instead of a new one; and one
//! that repeats within a few seconds is not posted again at all (the spam filter), so a
//! crash-looping Pod makes one `BackOff` Event with a growing count.
//!
//! Events are written by one task, one at a time, as client-go's broadcaster does: a burst of
//! pod starts queues its Events behind the status updates instead of racing them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::Api;
use serde_json::json;

use super::writes::Collection;

/// A repeat within this long is not posted.
const SPAM_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Recorder {
    writes: tokio::sync::mpsc::UnboundedSender<Write>,
    host: String,
    seen: Arc<Mutex<HashMap<EventKey, Posted>>>,
}

/// (pod uid, reason, message): what makes two Events one.
type EventKey = (String, String, String);
/// (Event name, count, last posted in Unix ms).
type Posted = (String, i32, u64);

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// One Event to write: a new one, or a count bump of one already written.
struct Write {
    namespace: String,
    name: String,
    event: serde_json::Value,
    count: i32,
    time: String,
}

impl Recorder {
    pub fn new(client: kube::Client, host: &str) -> Recorder {
        let (writes, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(write_events(client, queue));
        Recorder {
            writes,
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
        let _ = self.writes.send(Write {
            namespace,
            name: event_name,
            event,
            count,
            time,
        });
    }

    /// Forget the Events of a Pod that is gone.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.retain(|(pod, _, _), _| pod != uid);
        }
    }
}

/// The writer: Events in the order recorded, one request at a time.
async fn write_events(
    client: kube::Client,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Write>,
) {
    while let Some(write) = queue.recv().await {
        let api = Collection::of(Api::<Event>::namespaced(client.clone(), &write.namespace));
        let result = if write.count == 1 {
            api.create(&write.event).await
        } else {
            let patch = json!({ "count": write.count, "lastTimestamp": write.time });
            api.merge(&write.name, &patch).await
        };
        if let Err(e) = result {
            tracing::debug!("posting event {}: {e}", write.name);
        }
    }
}

/// `spec.containers{name}`, the field path of a container's Events.
pub fn container_path(name: &str) -> Option<String> {
    Some(format!("spec.containers{{{name}}}"))
}
