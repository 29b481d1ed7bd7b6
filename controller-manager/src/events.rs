//! Core/v1 Events, as `kubectl describe` and `kubectl get events` show them.
//!
//! kube-runtime's `Recorder` writes `events.k8s.io/v1`, which our API server does not serve;
//! this writes the older `v1` Event kubectl reads. Events are best effort: a failed write is
//! logged and never holds up a reconcile, so each is sent on its own task.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    /// `default-scheduler`, `replicaset-controller`…: the SOURCE column.
    component: &'static str,
}

impl Recorder {
    pub fn new(client: kube::Client, component: &'static str) -> Self {
        Recorder { client, component }
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
