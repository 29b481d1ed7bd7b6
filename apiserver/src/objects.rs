//! What the server does to an object on create and update, independent of HTTP: naming,
//! system metadata, validation of names, the defaults kubectl users see, status
//! subresource rules and generation.
//!
//! This is kube-apiserver's "strategy" layer (`PrepareForCreate`, `PrepareForUpdate`,
//! `Validate`), kept to the parts that are visible to users and controllers. Everything is
//! a pure function of JSON values so it is tested without a store.

use serde_json::{json, Value};

use crate::error::{target, AppError, FieldError};
use crate::registry::{NameRule, ResourceInfo};
use crate::storage::{meta_mut, meta_str};

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const LABEL1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// The RFC 3339 timestamp Kubernetes writes (seconds, UTC).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `now()` plus `secs` seconds: a Pod's deletionTimestamp is when its grace period ends.
pub fn now_plus(secs: i64) -> String {
    let t = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn is_label(s: &str, first_alpha: bool) -> bool {
    let b = s.as_bytes();
    let ok_char = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    !b.is_empty()
        && b.iter().all(ok_char)
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && (!first_alpha || b[0].is_ascii_lowercase())
}

/// Why `name` is not a valid name under `rule`; empty when it is.
pub fn name_errors(rule: NameRule, name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let (max, valid, msg) = match rule {
        NameRule::Subdomain => (
            253,
            name.split('.').all(|l| is_label(l, false)),
            SUBDOMAIN_MSG,
        ),
        NameRule::Label => (63, is_label(name, false), LABEL_MSG),
        NameRule::Label1035 => (63, is_label(name, true), LABEL1035_MSG),
        NameRule::PathSegment => (
            usize::MAX,
            !(name == "." || name == ".." || name.contains('/') || name.contains('%')),
            "may not be '.' or '..' and may not contain '/' or '%'",
        ),
    };
    if name.len() > max {
        errs.push(format!("must be no more than {max} characters"));
    }
    if !valid {
        errs.push(msg.to_string());
    }
    errs
}

/// 5 characters from the alphabet Kubernetes uses for `generateName` (no vowels).
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Check kind/apiVersion of a body against the URL's resource, filling them if absent.
pub fn check_type(r: &ResourceInfo, obj: &mut Value) -> Result<(), AppError> {
    if !obj.is_object() {
        return Err(AppError::BadRequest(
            "the body of the request must be a JSON or YAML object".into(),
        ));
    }
    let api_version = r.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != api_version => {
            return Err(AppError::BadRequest(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )))
        }
        Some(_) => {}
        None => obj["apiVersion"] = api_version.into(),
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k != r.kind => {
            return Err(AppError::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                r.kind
            )))
        }
        Some(_) => {}
        None => obj["kind"] = r.kind.into(),
    }
    Ok(())
}

/// Make the object's namespace agree with the URL's.
pub fn check_namespace(
    r: &ResourceInfo,
    ns: Option<&str>,
    obj: &mut Value,
) -> Result<(), AppError> {
    let meta = meta_mut(obj);
    if !r.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let Some(ns) = ns else {
        return Err(AppError::BadRequest(
            "the namespace of the provided object is required for this request".into(),
        ));
    };
    match meta.get("namespace").and_then(Value::as_str) {
        Some(x) if !x.is_empty() && x != ns => Err(AppError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        )),
        _ => {
            meta.insert("namespace".into(), ns.into());
            Ok(())
        }
    }
}

/// Name, system metadata and defaults for a new object (`PrepareForCreate` + `Validate`).
pub fn prepare_create(r: &ResourceInfo, obj: &mut Value) -> Result<(), AppError> {
    let meta = meta_mut(obj);
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        if let Some(prefix) = meta.get("generateName").and_then(Value::as_str) {
            if !prefix.is_empty() {
                name = format!("{prefix}{}", random_suffix());
                meta.insert("name".into(), name.clone().into());
            }
        }
    }
    if name.is_empty() {
        return Err(AppError::Invalid(
            target(r.group, r.kind, ""),
            vec![FieldError {
                field: "metadata.name".into(),
                reason: "FieldValueRequired",
                message: "Required value: name or generateName is required".into(),
            }],
        ));
    }
    let causes: Vec<FieldError> = name_errors(r.name_rule, &name)
        .into_iter()
        .map(|m| FieldError {
            field: "metadata.name".into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: \"{name}\": {m}"),
        })
        .collect();
    if !causes.is_empty() {
        return Err(AppError::Invalid(target(r.group, r.kind, &name), causes));
    }
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    ] {
        meta.remove(k);
    }
    meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
    meta.insert("creationTimestamp".into(), now().into());
    meta.insert("generation".into(), 1.into());
    drop_empty_metadata(meta);
    apply_defaults(r, obj, &name);
    if (r.group, r.kind) == ("batch", "Job") {
        generate_job_selector(r, obj, &name)?;
    }
    Ok(())
}

/// A Job's selector and pod labels, as kube's Job strategy generates them on create unless
/// `spec.manualSelector` is true: the Job's uid selects its pods, and the pods also carry
/// the Job's name (with the legacy label names beside the `batch.kubernetes.io/` ones).
fn generate_job_selector(r: &ResourceInfo, obj: &mut Value, name: &str) -> Result<(), AppError> {
    if obj.pointer("/spec/manualSelector") == Some(&json!(true)) {
        return Ok(());
    }
    if let Some(selector) = obj.pointer("/spec/selector").filter(|s| !s.is_null()) {
        return Err(AppError::Invalid(
            target(r.group, r.kind, name),
            vec![FieldError {
                field: "spec.selector".into(),
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {selector}: `selector` not auto-generated"),
            }],
        ));
    }
    let uid = meta_str(obj, "uid").to_string();
    default(obj, "/spec/template", json!({}));
    default(obj, "/spec/template/metadata", json!({}));
    default(obj, "/spec/template/metadata/labels", json!({}));
    if let Some(Value::Object(labels)) = obj.pointer_mut("/spec/template/metadata/labels") {
        for (key, value) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name.to_string()),
            ("controller-uid", &uid),
            ("job-name", &name.to_string()),
        ] {
            labels.insert(key.into(), json!(value));
        }
    }
    obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    Ok(())
}

/// ObjectMeta's lists and maps are `omitempty` in Go: kube-apiserver stores and returns no
/// `ownerReferences: []` (left by a patch that deleted the last one) or `labels: {}`.
fn drop_empty_metadata(meta: &mut serde_json::Map<String, Value>) {
    for key in [
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    ] {
        let empty = match meta.get(key) {
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Null) => true,
            _ => false,
        };
        if empty {
            meta.remove(key);
        }
    }
}

fn default(obj: &mut Value, pointer: &str, value: Value) {
    let Some((parent, key)) = pointer.rsplit_once('/') else {
        return;
    };
    let target = if parent.is_empty() {
        Some(obj)
    } else {
        obj.pointer_mut(parent)
    };
    if let Some(Value::Object(m)) = target {
        m.entry(key.to_string()).or_insert(value);
    }
}

/// The defaults a real cluster fills in and that users look at.
fn apply_defaults(r: &ResourceInfo, obj: &mut Value, name: &str) {
    match (r.group, r.kind) {
        ("", "Namespace") => {
            default(obj, "/metadata/labels", json!({}));
            if let Some(Value::Object(l)) = obj.pointer_mut("/metadata/labels") {
                l.insert("kubernetes.io/metadata.name".into(), name.into());
            }
            // The namespace controller empties a deleted namespace, then removes this.
            default(obj, "/spec", json!({}));
            default(obj, "/spec/finalizers", json!(["kubernetes"]));
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "Pod") => {
            default(obj, "/spec", json!({}));
            default(obj, "/spec/restartPolicy", "Always".into());
            default(obj, "/spec/dnsPolicy", "ClusterFirst".into());
            default(obj, "/spec/schedulerName", "default-scheduler".into());
            default(obj, "/spec/terminationGracePeriodSeconds", 30.into());
            obj["status"] = json!({"phase": "Pending"});
        }
        ("", "Service") => {
            default(obj, "/spec", json!({}));
            default(obj, "/spec/type", "ClusterIP".into());
            default(obj, "/spec/sessionAffinity", "None".into());
            default(obj, "/spec/internalTrafficPolicy", "Cluster".into());
            if let Some(Value::Array(ports)) = obj.pointer_mut("/spec/ports") {
                for p in ports.iter_mut().filter(|p| p.is_object()) {
                    default(p, "/protocol", "TCP".into());
                    if let Some(port) = p.get("port").cloned() {
                        default(p, "/targetPort", port);
                    }
                }
            }
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("apps", "Deployment") => {
            default(obj, "/spec", json!({}));
            default(obj, "/spec/replicas", 1.into());
            default(obj, "/spec/revisionHistoryLimit", 10.into());
            default(obj, "/spec/progressDeadlineSeconds", 600.into());
            // Field by field: typed clients send an empty `strategy: {}`.
            default(obj, "/spec/strategy", json!({}));
            default(obj, "/spec/strategy/type", "RollingUpdate".into());
            if obj.pointer("/spec/strategy/type") == Some(&json!("RollingUpdate")) {
                default(obj, "/spec/strategy/rollingUpdate", json!({}));
                default(
                    obj,
                    "/spec/strategy/rollingUpdate/maxUnavailable",
                    "25%".into(),
                );
                default(obj, "/spec/strategy/rollingUpdate/maxSurge", "25%".into());
            }
            obj["status"] = json!({});
        }
        ("apps", "ReplicaSet") => {
            default(obj, "/spec", json!({}));
            default(obj, "/spec/replicas", 1.into());
            obj["status"] = json!({"replicas": 0});
        }
        ("apps", "StatefulSet") => {
            default(obj, "/spec", json!({}));
            default(obj, "/spec/replicas", 1.into());
            default(obj, "/spec/podManagementPolicy", "OrderedReady".into());
            default(obj, "/spec/revisionHistoryLimit", 10.into());
            default(
                obj,
                "/spec/updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            default(
                obj,
                "/spec/persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            obj["status"] = json!({"replicas": 0, "availableReplicas": 0});
        }
        ("apps", "DaemonSet") => {
            default(obj, "/spec", json!({}));
            default(obj, "/spec/revisionHistoryLimit", 10.into());
            default(
                obj,
                "/spec/updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            obj["status"] = json!({});
        }
        ("batch", "Job") => {
            default(obj, "/spec", json!({}));
            let counts = ["completions", "parallelism"].map(|f| obj["spec"].get(f).is_some());
            if counts == [false, false] {
                default(obj, "/spec/completions", 1.into());
            }
            default(obj, "/spec/parallelism", 1.into());
            default(obj, "/spec/backoffLimit", 6.into());
            default(obj, "/spec/completionMode", "NonIndexed".into());
            default(obj, "/spec/suspend", false.into());
            let replacement = match obj.pointer("/spec/podFailurePolicy") {
                Some(_) => "Failed",
                None => "TerminatingOrFailed",
            };
            default(obj, "/spec/podReplacementPolicy", replacement.into());
            obj["status"] = json!({});
        }
        ("batch", "CronJob") => {
            default(obj, "/spec", json!({}));
            default(obj, "/spec/concurrencyPolicy", "Allow".into());
            default(obj, "/spec/suspend", false.into());
            default(obj, "/spec/successfulJobsHistoryLimit", 3.into());
            default(obj, "/spec/failedJobsHistoryLimit", 1.into());
            obj["status"] = json!({});
        }
        ("networking.k8s.io", "Ingress") => obj["status"] = json!({"loadBalancer": {}}),
        ("", "Event") => {
            for field in crate::events::ALWAYS_STORED_STRUCTS {
                default(obj, &format!("/{field}"), json!({}));
            }
        }
        _ => {}
    }
}

/// Whether `a` and `b` differ outside metadata and status: what `generation` counts changes
/// of. Compared in place: copying both objects to compare them was a visible share of an
/// update's CPU.
fn spec_differs(a: &Value, b: &Value) -> bool {
    let (Value::Object(a), Value::Object(b)) = (a, b) else {
        return a != b;
    };
    let counted = |(k, _): &(&String, &Value)| k.as_str() != "metadata" && k.as_str() != "status";
    !a.iter().filter(counted).eq(b.iter().filter(counted))
}

/// `metadata.uid` cannot change (`ValidateObjectMetaUpdate`): an update or patch naming
/// another uid was meant for an object since deleted and re-created under the same name, which
/// is why controllers put the uid in their adoption patches.
pub fn check_uid_unchanged(r: &ResourceInfo, current: &Value, new: &Value) -> Result<(), AppError> {
    let uid = meta_str(new, "uid");
    if uid.is_empty() || uid == meta_str(current, "uid") {
        return Ok(());
    }
    Err(AppError::Invalid(
        target(r.group, r.kind, meta_str(current, "name")),
        vec![FieldError {
            field: "metadata.uid".into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: \"{uid}\": field is immutable"),
        }],
    ))
}

/// Merge an update into the current object (`PrepareForUpdate`): system metadata is kept,
/// status changes only through `/status`, and `generation` counts spec changes.
pub fn prepare_update(r: &ResourceInfo, current: &Value, new: Value, sub: Option<&str>) -> Value {
    let mut out = if sub == Some("finalize") {
        // `namespaces/<name>/finalize` changes the namespace's spec.finalizers only.
        let mut out = current.clone();
        out["spec"]["finalizers"] = new
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or(json!([]));
        out
    } else if matches!(sub, Some("status" | "approval")) {
        // A CertificateSigningRequest's approval is a condition in its status.
        let mut out = current.clone();
        out["status"] = new.get("status").cloned().unwrap_or(json!({}));
        out
    } else {
        let mut out = new;
        if r.has_status() {
            match current.get("status") {
                Some(s) => out["status"] = s.clone(),
                None => {
                    if let Value::Object(m) = &mut out {
                        m.remove("status");
                    }
                }
            }
        }
        out
    };
    let cur_meta = current.get("metadata").cloned().unwrap_or(json!({}));
    let meta = meta_mut(&mut out);
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match cur_meta.get(k) {
            Some(v) => meta.insert(k.into(), v.clone()),
            None => meta.remove(k),
        };
    }
    meta.remove("managedFields");
    drop_empty_metadata(meta);
    if spec_differs(current, &out) {
        let g = meta_generation(current) + 1;
        meta_mut(&mut out).insert("generation".into(), g.into());
    }
    out
}

fn meta_generation(v: &Value) -> i64 {
    v.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// True when an object marked for deletion has no finalizers left and must go.
pub fn ready_to_delete(obj: &Value) -> bool {
    !meta_str(obj, "deletionTimestamp").is_empty()
        && !has_finalizers(obj)
        && !has_namespace_finalizers(obj)
}

/// A Namespace's `spec.finalizers` (`kubernetes`): held until the namespace is empty.
pub fn has_namespace_finalizers(obj: &Value) -> bool {
    obj.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
        && obj.get("kind").and_then(Value::as_str) == Some("Namespace")
}

pub fn has_finalizers(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// The `autoscaling/v1 Scale` view of a scalable object.
pub fn to_scale(obj: &Value) -> Value {
    let mut meta = serde_json::Map::new();
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = obj.pointer(&format!("/metadata/{k}")) {
            meta.insert(k.into(), v.clone());
        }
    }
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .or_else(|| obj.pointer("/spec/selector"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta,
           "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
           "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector}})
}

/// Apply a Scale's `spec.replicas` to the object it scales.
pub fn from_scale(current: &Value, scale: &Value) -> Result<Value, AppError> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            AppError::BadRequest("spec.replicas must be a non-negative integer".into())
        })?;
    let mut out = current.clone();
    out["spec"]["replicas"] = json!(replicas);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;

    #[test]
    fn names() {
        assert!(name_errors(NameRule::Subdomain, "a.b-c").is_empty());
        assert_eq!(name_errors(NameRule::Subdomain, "Bad_Name").len(), 1);
        assert!(!name_errors(NameRule::Label, "a.b").is_empty());
        assert!(!name_errors(NameRule::Label1035, "1abc").is_empty());
        assert_eq!(name_errors(NameRule::Label, &"a".repeat(64)).len(), 1);
        assert!(name_errors(NameRule::PathSegment, "system:node").is_empty());
        assert!(!name_errors(NameRule::PathSegment, "a/b").is_empty());
    }

    #[test]
    fn create_and_update() {
        let r = find("apps", "v1", "deployments").expect("deploy");
        let mut o = json!({"metadata": {"generateName": "web-"}, "spec": {"template": {}}});
        prepare_create(r, &mut o).expect("create");
        assert!(meta_str(&o, "name").starts_with("web-"));
        assert_eq!(meta_str(&o, "name").len(), 9);
        assert_eq!(o.pointer("/spec/replicas"), Some(&json!(1)));
        let mut new = o.clone();
        new["status"] = json!({"replicas": 9});
        let same = prepare_update(r, &o, new.clone(), None);
        assert_eq!(same.pointer("/metadata/generation"), Some(&json!(1)));
        assert_eq!(same.get("status"), Some(&json!({})));
        new["spec"]["replicas"] = json!(3);
        let up = prepare_update(r, &o, new.clone(), None);
        assert_eq!(up.pointer("/metadata/generation"), Some(&json!(2)));
        let st = prepare_update(r, &o, new, Some("status"));
        assert_eq!(st.pointer("/status/replicas"), Some(&json!(9)));
        assert_eq!(st.pointer("/spec/replicas"), Some(&json!(1)));
    }

    #[test]
    fn a_job_gets_its_selector_and_pod_labels_from_its_uid() {
        let r = find("batch", "v1", "jobs").expect("jobs");
        let mut job = json!({"metadata": {"name": "pi"}, "spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "pi", "image": "busybox"}]}}}});
        prepare_create(r, &mut job).expect("create");
        let uid = meta_str(&job, "uid").to_string();
        assert_eq!(
            job["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        );
        let labels = &job["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["batch.kubernetes.io/job-name"], json!("pi"));
        assert_eq!(labels["controller-uid"], json!(uid));
        for (field, value) in [
            ("completions", json!(1)),
            ("parallelism", json!(1)),
            ("backoffLimit", json!(6)),
            ("completionMode", json!("NonIndexed")),
            ("podReplacementPolicy", json!("TerminatingOrFailed")),
        ] {
            assert_eq!(job["spec"][field], value, "{field}");
        }

        let mut chosen =
            json!({"metadata": {"name": "x"}, "spec": {"selector": {"matchLabels": {"a": "b"}}}});
        let Err(AppError::Invalid(_, causes)) = prepare_create(r, &mut chosen) else {
            panic!("a selector without manualSelector is refused");
        };
        assert_eq!(causes[0].field, "spec.selector");
        let mut manual = json!({"metadata": {"name": "x"},
            "spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}}});
        prepare_create(r, &mut manual).expect("manual selectors are the user's");
        assert_eq!(manual["spec"]["selector"]["matchLabels"], json!({"a": "b"}));
    }

    #[test]
    fn namespaces_are_held_by_their_finalizer() {
        let r = find("", "v1", "namespaces").expect("ns");
        let mut ns = json!({"kind": "Namespace", "metadata": {"name": "team"}});
        prepare_create(r, &mut ns).expect("create");
        assert_eq!(ns.pointer("/spec/finalizers"), Some(&json!(["kubernetes"])));
        ns["metadata"]["deletionTimestamp"] = json!(now());
        assert!(!ready_to_delete(&ns));
        let finalized = prepare_update(
            r,
            &ns,
            json!({"spec": {"finalizers": []}}),
            Some("finalize"),
        );
        assert!(ready_to_delete(&finalized));
        assert_eq!(finalized.pointer("/metadata/name"), Some(&json!("team")));
    }

    #[test]
    fn invalid_name_is_422() {
        let r = find("", "v1", "configmaps").expect("cm");
        let mut o = json!({"metadata": {"name": "Bad_Name"}});
        match prepare_create(r, &mut o) {
            Err(AppError::Invalid(t, c)) => {
                assert_eq!(t.kind, "ConfigMap");
                assert_eq!(c[0].field, "metadata.name");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
