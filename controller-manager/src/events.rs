//! Core/v1 Events, as `kubectl describe` and `kubectl get events` show them.
//!
//! kube-runtime's `Recorder` writes `events.k8s.io/v1`, which our API server does not serve;
//! this writes the older `v1` Event kubectl reads. Events are best effort: a failed write is
//! logged and never holds up a reconcile, so each is sent on its own task.
//!
//! As client-go's `EventSourceObjectSpamFilter`, each (component, object) pair has a token
//! bucket of [`SPAM_BURST`] events refilled at one per [`SPAM_REFILL`]: a ReplicaSet scaled
//! to 200 records its first 25 `SuccessfulCreate`s, not 200 writes competing with the pod
//! creations themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

/// Events one object may get at once from one component (client-go: 25).
pub const SPAM_BURST: f64 = 25.0;
/// How long it takes to earn one more (client-go: one per 5 minutes).
pub const SPAM_REFILL: Duration = Duration::from_secs(300);
/// Buckets untouched this long are full again and dropped.
const BUCKET_IDLE: Duration = Duration::from_secs(25 * 300);

/// A token bucket per object.
#[derive(Default)]
struct SpamFilter {
    buckets: HashMap<String, (f64, Instant)>,
}

impl SpamFilter {
    /// Take a token for `object`; false if it has none left.
    fn allow(&mut self, object: &str, now: Instant) -> bool {
        if self.buckets.len() > 4096 {
            self.buckets
                .retain(|_, (_, at)| now.duration_since(*at) < BUCKET_IDLE);
        }
        let (tokens, at) = self
            .buckets
            .entry(object.to_string())
            .or_insert((SPAM_BURST, now));
        let earned = now.duration_since(*at).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        *tokens = (*tokens + earned).min(SPAM_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    /// `default-scheduler`, `replicaset-controller`…: the SOURCE column.
    component: &'static str,
    spam: Arc<Mutex<SpamFilter>>,
}

impl Recorder {
    pub fn new(client: kube::Client, component: &'static str) -> Self {
        Recorder {
            client,
            component,
            spam: Arc::default(),
        }
    }

    pub fn normal(&self, regarding: ObjectReference, reason: &str, message: String) {
        self.publish(regarding, "Normal", reason, message)
    }

    pub fn warning(&self, regarding: ObjectReference, reason: &str, message: String) {
        self.publish(regarding, "Warning", reason, message)
    }

    fn publish(&self, regarding: ObjectReference, type_: &str, reason: &str, message: String) {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let object = format!(
            "{}/{}/{}/{}",
            regarding.kind.as_deref().unwrap_or(""),
            namespace,
            regarding.name.as_deref().unwrap_or(""),
            regarding.uid.as_deref().unwrap_or("")
        );
        let allowed = self
            .spam
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(&object, Instant::now());
        if !allowed {
            tracing::debug!(object, reason, "event dropped by the spam filter");
            return;
        }
        let now = crate::pods::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or("unknown"),
                    jiff::Timestamp::now().as_nanosecond()
                )),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: regarding,
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(type_.to_string()),
            source: Some(EventSource {
                component: Some(self.component.to_string()),
                host: None,
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now.clone()),
            event_time: Some(MicroTime(now.0)),
            count: Some(1),
            reporting_component: Some(self.component.to_string()),
            reporting_instance: Some(self.component.to_string()),
            action: None,
            related: None,
            series: None,
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            if let Err(e) = events.create(&PostParams::default(), &event).await {
                tracing::debug!("could not record an event: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_gets_a_burst_then_one_event_per_refill() {
        let mut filter = SpamFilter::default();
        let start = Instant::now();
        let allowed = (0..30).filter(|_| filter.allow("rs/a", start)).count();
        assert_eq!(allowed, 25);
        // Another object has its own bucket.
        assert!(filter.allow("rs/b", start));
        assert!(!filter.allow("rs/a", start + SPAM_REFILL / 2));
        assert!(filter.allow("rs/a", start + SPAM_REFILL + SPAM_REFILL / 2));
    }
}
