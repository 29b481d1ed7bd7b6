//! `events.k8s.io/v1` Events: the core `v1` Events in their newer shape.
//!
//! kube-apiserver keeps one collection of Events (`/registry/events/<namespace>/<name>`)
//! and serves it in both group versions, converting field by field
//! (`pkg/apis/events/v1/conversion.go`): `involvedObject` is `regarding`, `message` is
//! `note`, `reportingComponent` is `reportingController`, and `source`, `firstTimestamp`,
//! `lastTimestamp` and `count` are the `deprecated…` fields. knetsim does the same: objects
//! are stored in the core shape, so `kubectl get events` and
//! `kubectl get events.events.k8s.io` list the same Events, and a learner reading etcd sees
//! one shape.
//!
//! Creating an Event through `events.k8s.io/v1` is checked more strictly than through core
//! `v1`, as kube's `ValidateEventCreate` does: it must say when, what happened and who
//! reports it, and leave the deprecated fields unset.

use serde_json::{json, Map, Value};

use crate::error::{AppError, FieldError};
use crate::registry::ResourceInfo;

/// (core `v1` field, `events.k8s.io/v1` field) of every field whose name differs.
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// Fields the Go type writes even when unset: structs as `{}`, times as `null`.
const ALWAYS_WRITTEN_STRUCTS: &[&str] = &["regarding", "deprecatedSource"];
/// The same structs in the core shape, which is stored with them, as Go writes it; so
/// reading an Event in either shape and writing it back unchanged is no change.
pub const ALWAYS_STORED_STRUCTS: &[&str] = &["involvedObject", "source"];
const ALWAYS_WRITTEN_TIMES: &[&str] = &[
    "eventTime",
    "deprecatedFirstTimestamp",
    "deprecatedLastTimestamp",
];

/// kube's limits on `events.k8s.io/v1` fields (`pkg/apis/core/validation/events.go`).
const REPORTING_INSTANCE_MAX: usize = 128;
const ACTION_MAX: usize = 128;
const REASON_MAX: usize = 128;
const NOTE_MAX: usize = 1024;

/// Is this the `events.k8s.io` row, served from the core Events' storage?
pub fn is_events_v1(info: &ResourceInfo) -> bool {
    info.group == "events.k8s.io" && info.kind == "Event" && info.custom.is_none()
}

/// A stored (core `v1`) Event as `events.k8s.io/v1` serves it. An object already in that
/// shape is left as it is.
pub fn to_events_v1(obj: &mut Value) {
    let Value::Object(fields) = obj else { return };
    if fields.get("apiVersion").and_then(Value::as_str) != Some("v1") {
        return;
    }
    fields.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    rename(fields, RENAMED.iter().map(|(core, new)| (*core, *new)));
    for field in ALWAYS_WRITTEN_STRUCTS {
        fields.entry(*field).or_insert_with(|| json!({}));
    }
    for field in ALWAYS_WRITTEN_TIMES {
        fields.entry(*field).or_insert(Value::Null);
    }
}

/// An `events.k8s.io/v1` Event in the core `v1` shape it is stored in. Nulls are dropped:
/// they are what a client read back of fields that were never set.
pub fn to_core(obj: &mut Value) {
    let Value::Object(fields) = obj else { return };
    if fields.get("apiVersion").and_then(Value::as_str) != Some("events.k8s.io/v1") {
        return;
    }
    fields.insert("apiVersion".into(), json!("v1"));
    fields.retain(|_, v| !v.is_null());
    rename(fields, RENAMED.iter().map(|(core, new)| (*new, *core)));
    for field in ALWAYS_STORED_STRUCTS {
        fields.entry(*field).or_insert_with(|| json!({}));
    }
}

fn rename<'a>(fields: &mut Map<String, Value>, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    for (from, to) in pairs {
        if let Some(v) = fields.remove(from) {
            fields.insert(to.to_string(), v);
        }
    }
}

/// The checks kube-apiserver makes of an Event created through `events.k8s.io/v1`, on the
/// object in that shape (the field names in the causes are the ones the client sent).
pub fn validate_create(info: &ResourceInfo, obj: &Value) -> Result<(), AppError> {
    let text = |field: &str| obj.get(field).and_then(Value::as_str).unwrap_or("");
    let set = |field: &str| obj.get(field).is_some_and(|v| !v.is_null());
    let mut causes = Vec::new();
    let mut cause = |field: &str, reason: &'static str, message: String| {
        causes.push(FieldError {
            field: field.into(),
            reason,
            message,
        })
    };
    let required = "Required value";
    if !set("eventTime") {
        cause("eventTime", "FieldValueRequired", required.into());
    }
    for (field, max) in [
        ("reportingController", usize::MAX),
        ("reportingInstance", REPORTING_INSTANCE_MAX),
        ("action", ACTION_MAX),
        ("reason", REASON_MAX),
    ] {
        let value = text(field);
        if value.is_empty() {
            cause(field, "FieldValueRequired", required.into());
        } else if value.len() > max {
            cause(
                field,
                "FieldValueTooLong",
                format!("Too long: may not be more than {max} bytes"),
            );
        }
    }
    if text("note").len() > NOTE_MAX {
        cause(
            "note",
            "FieldValueTooLong",
            format!("Too long: may not be more than {NOTE_MAX} bytes"),
        );
    }
    match text("type") {
        "Normal" | "Warning" => {}
        other => cause(
            "type",
            "FieldValueInvalid",
            format!("Invalid value: \"{other}\": has invalid value: {other}"),
        ),
    }
    for field in [
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
    ] {
        if obj
            .get(field)
            .is_some_and(|v| !v.is_null() && v != &json!(0))
        {
            cause(
                field,
                "FieldValueInvalid",
                "Invalid value: \"\": needs to be unset".into(),
            );
        }
    }
    if obj
        .get("deprecatedSource")
        .and_then(Value::as_object)
        .is_some_and(|s| {
            s.values()
                .any(|v| v.as_str().is_some_and(|v| !v.is_empty()))
        })
    {
        cause(
            "deprecatedSource",
            "FieldValueInvalid",
            "Invalid value: \"\": needs to be unset".into(),
        );
    }
    AppError::invalid_if_any(info.group, info.kind, obj, causes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core_event() -> Value {
        json!({
            "kind": "Event", "apiVersion": "v1",
            "metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Started", "message": "Started container web", "type": "Normal",
            "source": {"component": "kubelet", "host": "w1"},
            "firstTimestamp": "2026-11-24T08:00:00Z", "lastTimestamp": "2026-11-24T08:00:05Z",
            "count": 2, "reportingComponent": "kubelet", "reportingInstance": "w1"
        })
    }

    #[test]
    fn a_core_event_reads_in_the_new_shape_and_converts_back_unchanged() {
        let mut e = core_event();
        to_events_v1(&mut e);
        assert_eq!(e["apiVersion"], json!("events.k8s.io/v1"));
        assert_eq!(e["regarding"]["name"], json!("web"));
        assert_eq!(e["note"], json!("Started container web"));
        assert_eq!(e["reportingController"], json!("kubelet"));
        assert_eq!(e["deprecatedSource"]["host"], json!("w1"));
        assert_eq!(e["deprecatedCount"], json!(2));
        assert_eq!(
            e["eventTime"],
            Value::Null,
            "written as the Go type writes it"
        );
        assert!(e.get("involvedObject").is_none() && e.get("message").is_none());
        let again = e.clone();
        to_events_v1(&mut e);
        assert_eq!(e, again, "converting twice changes nothing");
        to_core(&mut e);
        assert_eq!(e, core_event());
    }

    #[test]
    fn a_new_event_is_stored_in_the_core_shape() {
        let mut e = json!({"kind": "Event", "apiVersion": "events.k8s.io/v1",
            "metadata": {"name": "x"}, "eventTime": "2026-11-24T08:00:00.000000Z",
            "regarding": {"kind": "Node", "name": "w1"}, "note": "hello",
            "reportingController": "example.com/probe", "reportingInstance": "probe-1",
            "action": "Probe", "reason": "Probed", "type": "Normal",
            "deprecatedFirstTimestamp": null});
        let info = crate::registry::find("events.k8s.io", "v1", "events").expect("row");
        assert!(validate_create(info, &e).is_ok());
        to_core(&mut e);
        assert_eq!(e["apiVersion"], json!("v1"));
        assert_eq!(e["involvedObject"]["name"], json!("w1"));
        assert_eq!(e["message"], json!("hello"));
        assert_eq!(e["reportingComponent"], json!("example.com/probe"));
        assert!(e.get("firstTimestamp").is_none(), "nulls are not stored");
        assert_eq!(e["source"], json!({}), "stored as Go writes the struct");

        // Read back in the new shape and written unchanged: the same stored object.
        let stored = e.clone();
        to_events_v1(&mut e);
        to_core(&mut e);
        assert_eq!(e, stored);
    }

    #[test]
    fn an_incomplete_new_event_is_invalid_with_a_cause_per_field() {
        let info = crate::registry::find("events.k8s.io", "v1", "events").expect("row");
        let e = json!({"kind": "Event", "apiVersion": "events.k8s.io/v1",
            "metadata": {"name": "x"}, "type": "Sometimes", "deprecatedCount": 3});
        let Err(AppError::Invalid(_, causes)) = validate_create(info, &e) else {
            panic!("an Event without eventTime is invalid");
        };
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "eventTime",
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
                "type",
                "deprecatedCount"
            ]
        );
    }
}
