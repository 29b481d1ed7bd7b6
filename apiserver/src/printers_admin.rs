//! Table columns of the cluster-administration resources (volumes and storage, quotas,
//! admission, API priority and fairness, certificates, RBAC, scheduling), as kube-apiserver
//! 1.32's printers write them; `printers.rs` and `printers_workloads.rs` have the others.

use serde_json::{json, Value};

use crate::printers::{age, items, n, or_none, s, Columns, Row, I, S};
use crate::storage::meta_str;
use crate::table::human_duration;

const B: &str = "boolean";

/// Columns and row renderer for the resources of this module, None for the others.
#[rustfmt::skip]
pub fn printer(group: &str, plural: &str) -> Option<(Columns, Row)> {
    Some(match (group, plural) {
        ("", "persistentvolumes") => (&[("Name", S, 0), ("Capacity", S, 0), ("Access Modes", S, 0), ("Reclaim Policy", S, 0), ("Status", S, 0), ("Claim", S, 0), ("StorageClass", S, 0), ("VolumeAttributesClass", S, 0), ("Reason", S, 0), ("Age", S, 0), ("VolumeMode", S, 1)], persistent_volume_row),
        ("", "persistentvolumeclaims") => (&[("Name", S, 0), ("Status", S, 0), ("Volume", S, 0), ("Capacity", S, 0), ("Access Modes", S, 0), ("StorageClass", S, 0), ("VolumeAttributesClass", S, 0), ("Age", S, 0), ("VolumeMode", S, 1)], claim_row),
        ("", "componentstatuses") => (&[("Name", S, 0), ("Status", S, 0), ("Message", S, 0), ("Error", S, 0)], component_status_row),
        ("", "resourcequotas") => (&[("Name", S, 0), ("Age", S, 0), ("Request", S, 0), ("Limit", S, 0)], resource_quota_row),
        ("", "limitranges") => (&[("Name", S, 0), ("Created At", "date", 0)], |o| vec![json!(meta_str(o, "name")), json!(meta_str(o, "creationTimestamp"))]),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations" | "validatingwebhookconfigurations") => (&[("Name", S, 0), ("Webhooks", I, 0), ("Age", S, 0)], |o| vec![json!(meta_str(o, "name")), json!(items(o, "/webhooks").len()), json!(age(o))]),
        ("admissionregistration.k8s.io", "validatingadmissionpolicies") => (&[("Name", S, 0), ("Validations", I, 0), ("ParamKind", S, 0), ("Age", S, 0)], admission_policy_row),
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings") => (&[("Name", S, 0), ("PolicyName", S, 0), ("ParamRef", S, 0), ("Age", S, 0)], policy_binding_row),
        ("apiregistration.k8s.io", "apiservices") => (&[("Name", S, 0), ("Service", S, 0), ("Available", S, 0), ("Age", S, 0)], apiservice_row),
        ("certificates.k8s.io", "certificatesigningrequests") => (&[("Name", S, 0), ("Age", S, 0), ("SignerName", S, 0), ("Requestor", S, 0), ("RequestedDuration", S, 0), ("Condition", S, 0)], csr_row),
        ("flowcontrol.apiserver.k8s.io", "flowschemas") => (&[("Name", S, 0), ("PriorityLevel", S, 0), ("MatchingPrecedence", S, 0), ("DistinguisherMethod", S, 0), ("Age", S, 0), ("MissingPL", S, 0)], flowschema_row),
        ("flowcontrol.apiserver.k8s.io", "prioritylevelconfigurations") => (&[("Name", S, 0), ("Type", S, 0), ("NominalConcurrencyShares", S, 0), ("Queues", S, 0), ("HandSize", S, 0), ("QueueLengthLimit", S, 0), ("Age", S, 0)], priority_level_row),
        ("node.k8s.io", "runtimeclasses") => (&[("Name", S, 0), ("Handler", S, 0), ("Age", S, 0)], |o| vec![json!(meta_str(o, "name")), json!(s(o, "/handler")), json!(age(o))]),
        ("rbac.authorization.k8s.io", "roles" | "clusterroles") => (&[("Name", S, 0), ("Created At", "date", 0)], |o| vec![json!(meta_str(o, "name")), json!(meta_str(o, "creationTimestamp"))]),
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => (&[("Name", S, 0), ("Role", S, 0), ("Age", S, 0), ("Users", S, 1), ("Groups", S, 1), ("ServiceAccounts", S, 1)], role_binding_row),
        ("scheduling.k8s.io", "priorityclasses") => (&[("Name", S, 0), ("Value", I, 0), ("Global-Default", B, 0), ("Age", S, 0), ("PreemptionPolicy", S, 0)], priority_class_row),
        ("storage.k8s.io", "csidrivers") => (&[("Name", S, 0), ("AttachRequired", B, 0), ("PodInfoOnMount", B, 0), ("StorageCapacity", B, 0), ("TokenRequests", S, 0), ("RequiresRepublish", B, 0), ("Modes", S, 0), ("Age", S, 0)], csi_driver_row),
        ("storage.k8s.io", "csinodes") => (&[("Name", S, 0), ("Drivers", I, 0), ("Age", S, 0)], |o| vec![json!(meta_str(o, "name")), json!(items(o, "/spec/drivers").len()), json!(age(o))]),
        ("storage.k8s.io", "csistoragecapacities") => (&[("Name", S, 0), ("StorageClassName", S, 0), ("Capacity", S, 0)], |o| vec![json!(meta_str(o, "name")), json!(s(o, "/storageClassName")), json!(or_none(s(o, "/capacity").to_string()))]),
        ("storage.k8s.io", "storageclasses") => (&[("Name", S, 0), ("Provisioner", S, 0), ("ReclaimPolicy", S, 0), ("VolumeBindingMode", S, 0), ("AllowVolumeExpansion", S, 0), ("Age", S, 0)], storage_class_row),
        ("storage.k8s.io", "volumeattachments") => (&[("Name", S, 0), ("Attacher", S, 0), ("PV", S, 0), ("Node", S, 0), ("Attached", B, 0), ("Age", S, 0)], volume_attachment_row),
        _ => return None,
    })
}

fn component_status_row(o: &Value) -> Vec<Value> {
    let healthy = items(o, "/conditions")
        .iter()
        .find(|c| s(c, "/type") == "Healthy");
    let status = match healthy.map(|c| s(c, "/status")) {
        Some("True") => "Healthy",
        Some(_) => "Unhealthy",
        None => "Unknown",
    };
    vec![
        json!(meta_str(o, "name")),
        json!(status),
        json!(healthy.map_or("", |c| s(c, "/message"))),
        json!(healthy.map_or("", |c| s(c, "/error"))),
    ]
}

/// `RWO,ROX`: access modes as kubectl abbreviates them.
fn access_modes(o: &Value, pointer: &str) -> String {
    let modes: Vec<&str> = items(o, pointer)
        .iter()
        .filter_map(Value::as_str)
        .map(|mode| match mode {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect();
    modes.join(",")
}

fn unset_if_empty(v: &str) -> String {
    if v.is_empty() {
        "<unset>".into()
    } else {
        v.to_string()
    }
}

fn persistent_volume_row(o: &Value) -> Vec<Value> {
    let claim = match o.pointer("/spec/claimRef") {
        Some(c) => format!("{}/{}", s(c, "/namespace"), s(c, "/name")),
        None => String::new(),
    };
    vec![
        json!(meta_str(o, "name")),
        json!(s(o, "/spec/capacity/storage")),
        json!(access_modes(o, "/spec/accessModes")),
        json!(o
            .pointer("/spec/persistentVolumeReclaimPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Retain")),
        json!(s(o, "/status/phase")),
        json!(claim),
        json!(s(o, "/spec/storageClassName")),
        json!(unset_if_empty(s(o, "/spec/volumeAttributesClassName"))),
        json!(s(o, "/status/reason")),
        json!(age(o)),
        json!(o
            .pointer("/spec/volumeMode")
            .and_then(Value::as_str)
            .unwrap_or("Filesystem")),
    ]
}

/// A claim shows its capacity and access modes once it is bound.
fn claim_row(o: &Value) -> Vec<Value> {
    let phase = s(o, "/status/phase");
    let bound = phase == "Bound";
    vec![
        json!(meta_str(o, "name")),
        json!(phase),
        json!(s(o, "/spec/volumeName")),
        json!(if bound {
            s(o, "/status/capacity/storage")
        } else {
            ""
        }),
        json!(if bound {
            access_modes(o, "/status/accessModes")
        } else {
            String::new()
        }),
        json!(s(o, "/spec/storageClassName")),
        json!(unset_if_empty(s(o, "/spec/volumeAttributesClassName"))),
        json!(age(o)),
        json!(o
            .pointer("/spec/volumeMode")
            .and_then(Value::as_str)
            .unwrap_or("Filesystem")),
    ]
}

/// `pods: 1/10, requests.cpu: 0/1`: used over hard, `limits.*` in a column of their own.
fn resource_quota_row(o: &Value) -> Vec<Value> {
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    if let Some(hard) = o.pointer("/status/hard").and_then(Value::as_object) {
        let mut names: Vec<&String> = hard.keys().collect();
        names.sort();
        for name in names {
            let used = o
                .pointer(&format!(
                    "/status/used/{}",
                    name.replace('~', "~0").replace('/', "~1")
                ))
                .and_then(Value::as_str)
                .unwrap_or("0");
            let entry = format!("{name}: {used}/{}", hard[name].as_str().unwrap_or(""));
            if name.starts_with("limits.") {
                limits.push(entry);
            } else {
                requests.push(entry);
            }
        }
    }
    vec![
        json!(meta_str(o, "name")),
        json!(age(o)),
        json!(requests.join(", ")),
        json!(limits.join(", ")),
    ]
}

fn flag(o: &Value, pointer: &str, default: bool) -> Value {
    json!(o
        .pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or(default))
}

fn admission_policy_row(o: &Value) -> Vec<Value> {
    let param_kind = match o.pointer("/spec/paramKind") {
        Some(kind) => format!("{}/{}", s(kind, "/apiVersion"), s(kind, "/kind")),
        None => "<unset>".into(),
    };
    vec![
        json!(meta_str(o, "name")),
        json!(items(o, "/spec/validations").len()),
        json!(param_kind),
        json!(age(o)),
    ]
}

fn policy_binding_row(o: &Value) -> Vec<Value> {
    let param_ref = match o.pointer("/spec/paramRef") {
        Some(p) if !s(p, "/namespace").is_empty() => {
            format!("{}/{}", s(p, "/namespace"), s(p, "/name"))
        }
        Some(p) if !s(p, "/name").is_empty() => s(p, "/name").to_string(),
        _ => "<unset>".into(),
    };
    vec![
        json!(meta_str(o, "name")),
        json!(s(o, "/spec/policyName")),
        json!(param_ref),
        json!(age(o)),
    ]
}

/// `Local` for groups the server itself serves; `False (Reason)` for an unavailable one.
fn apiservice_row(o: &Value) -> Vec<Value> {
    let service = match o.pointer("/spec/service") {
        Some(svc) => format!("{}/{}", s(svc, "/namespace"), s(svc, "/name")),
        None => "Local".into(),
    };
    let available = items(o, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == "Available")
        .map_or("Unknown".into(), |c| match s(c, "/status") {
            "True" => "True".to_string(),
            status => format!("{status} ({})", s(c, "/reason")),
        });
    vec![
        json!(meta_str(o, "name")),
        json!(service),
        json!(available),
        json!(age(o)),
    ]
}

fn csr_row(o: &Value) -> Vec<Value> {
    let duration = o
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .map_or("<none>".into(), human_duration);
    let conditions: Vec<&str> = items(o, "/status/conditions")
        .iter()
        .map(|c| s(c, "/type"))
        .collect();
    let mut condition = if conditions.is_empty() {
        "Pending".to_string()
    } else {
        conditions.join(",")
    };
    if o.pointer("/status/certificate").is_some() {
        condition.push_str(",Issued");
    }
    vec![
        json!(meta_str(o, "name")),
        json!(age(o)),
        json!(s(o, "/spec/signerName")),
        json!(s(o, "/spec/username")),
        json!(duration),
        json!(condition),
    ]
}

fn flowschema_row(o: &Value) -> Vec<Value> {
    let method = o
        .pointer("/spec/distinguisherMethod/type")
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let missing = items(o, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == "Dangling")
        .map_or("?", |c| s(c, "/status"));
    vec![
        json!(meta_str(o, "name")),
        json!(s(o, "/spec/priorityLevelConfiguration/name")),
        json!(n(o, "/spec/matchingPrecedence").to_string()),
        json!(method),
        json!(age(o)),
        json!(missing),
    ]
}

fn priority_level_row(o: &Value) -> Vec<Value> {
    let limited = o.pointer("/spec/limited");
    let shares = limited
        .and_then(|l| l.get("nominalConcurrencyShares"))
        .and_then(Value::as_i64)
        .map_or("<none>".into(), |v| v.to_string());
    let queuing = limited.and_then(|l| l.pointer("/limitResponse/queuing"));
    let queue_field = |field: &str| {
        queuing
            .and_then(|q| q.get(field))
            .and_then(Value::as_i64)
            .map_or("<none>".into(), |v| v.to_string())
    };
    vec![
        json!(meta_str(o, "name")),
        json!(s(o, "/spec/type")),
        json!(shares),
        json!(queue_field("queues")),
        json!(queue_field("handSize")),
        json!(queue_field("queueLengthLimit")),
        json!(age(o)),
    ]
}

fn role_binding_row(o: &Value) -> Vec<Value> {
    let subjects = items(o, "/subjects");
    let of_kind = |kind: &str| {
        let names: Vec<String> = subjects
            .iter()
            .filter(|subject| s(subject, "/kind") == kind)
            .map(|subject| match (kind, s(subject, "/namespace")) {
                ("ServiceAccount", ns) => format!("{ns}/{}", s(subject, "/name")),
                _ => s(subject, "/name").to_string(),
            })
            .collect();
        names.join(", ")
    };
    vec![
        json!(meta_str(o, "name")),
        json!(format!(
            "{}/{}",
            s(o, "/roleRef/kind"),
            s(o, "/roleRef/name")
        )),
        json!(age(o)),
        json!(of_kind("User")),
        json!(of_kind("Group")),
        json!(of_kind("ServiceAccount")),
    ]
}

fn priority_class_row(o: &Value) -> Vec<Value> {
    vec![
        json!(meta_str(o, "name")),
        json!(n(o, "/value")),
        flag(o, "/globalDefault", false),
        json!(age(o)),
        json!(o
            .pointer("/preemptionPolicy")
            .and_then(Value::as_str)
            .unwrap_or("PreemptLowerPriority")),
    ]
}

fn csi_driver_row(o: &Value) -> Vec<Value> {
    let tokens: Vec<&str> = items(o, "/spec/tokenRequests")
        .iter()
        .map(|t| s(t, "/audience"))
        .collect();
    let modes: Vec<&str> = items(o, "/spec/volumeLifecycleModes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    vec![
        json!(meta_str(o, "name")),
        flag(o, "/spec/attachRequired", true),
        flag(o, "/spec/podInfoOnMount", false),
        flag(o, "/spec/storageCapacity", false),
        json!(if tokens.is_empty() {
            "<unset>".into()
        } else {
            tokens.join(",")
        }),
        flag(o, "/spec/requiresRepublish", false),
        json!(if modes.is_empty() {
            "Persistent".into()
        } else {
            modes.join(",")
        }),
        json!(age(o)),
    ]
}

/// The default class is marked `(default)` after its name, as kubectl shows it.
fn storage_class_row(o: &Value) -> Vec<Value> {
    let annotations = o.pointer("/metadata/annotations");
    let is_default = [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|key| {
        annotations
            .and_then(|a| a.get(*key))
            .and_then(Value::as_str)
            == Some("true")
    });
    let name = if is_default {
        format!("{} (default)", meta_str(o, "name"))
    } else {
        meta_str(o, "name").to_string()
    };
    vec![
        json!(name),
        json!(s(o, "/provisioner")),
        json!(o
            .pointer("/reclaimPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Delete")),
        json!(o
            .pointer("/volumeBindingMode")
            .and_then(Value::as_str)
            .unwrap_or("Immediate")),
        json!(o
            .pointer("/allowVolumeExpansion")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string()),
        json!(age(o)),
    ]
}

fn volume_attachment_row(o: &Value) -> Vec<Value> {
    vec![
        json!(meta_str(o, "name")),
        json!(s(o, "/spec/attacher")),
        json!(s(o, "/spec/source/persistentVolumeName")),
        json!(s(o, "/spec/nodeName")),
        flag(o, "/status/attached", false),
        json!(age(o)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printers::row;

    #[test]
    fn certificate_signing_requests_show_their_conditions() {
        let csr = json!({"metadata": {"name": "node-csr"}, "spec": {"signerName": "kubernetes.io/kube-apiserver-client", "username": "alice", "expirationSeconds": 86400}});
        let cells = row(
            "certificates.k8s.io",
            "certificatesigningrequests",
            csr.clone(),
        );
        assert_eq!(
            cells[2..],
            [
                json!("kubernetes.io/kube-apiserver-client"),
                json!("alice"),
                json!("24h"),
                json!("Pending")
            ]
        );
        let mut approved = csr;
        approved["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}], "certificate": "Y2VydA=="});
        assert_eq!(
            row(
                "certificates.k8s.io",
                "certificatesigningrequests",
                approved
            )[5],
            json!("Approved,Issued")
        );
    }

    #[test]
    fn storage_classes_mark_the_default_and_show_defaults() {
        let sc = json!({"metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
        let cells = row("storage.k8s.io", "storageclasses", sc);
        assert_eq!(
            cells[..5],
            [
                json!("standard (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!("false")
            ]
        );
    }

    #[test]
    fn bindings_name_their_role_and_subjects() {
        let binding = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "default", "namespace": "web"}]});
        let cells = row("rbac.authorization.k8s.io", "rolebindings", binding);
        assert_eq!(cells[1], json!("ClusterRole/view"));
        assert_eq!(
            cells[3..],
            [json!("alice"), json!(""), json!("web/default")]
        );
    }

    #[test]
    fn apiservices_are_local_or_name_their_service() {
        let local = json!({"metadata": {"name": "v1.apps"}, "spec": {"group": "apps", "version": "v1"},
            "status": {"conditions": [{"type": "Available", "status": "True"}]}});
        assert_eq!(
            row("apiregistration.k8s.io", "apiservices", local)[1..3],
            [json!("Local"), json!("True")]
        );
        let missing = json!({"metadata": {"name": "v1beta1.metrics.k8s.io"}, "spec": {"service": {"namespace": "kube-system", "name": "metrics-server"}},
            "status": {"conditions": [{"type": "Available", "status": "False", "reason": "MissingEndpoints"}]}});
        assert_eq!(
            row("apiregistration.k8s.io", "apiservices", missing)[1..3],
            [
                json!("kube-system/metrics-server"),
                json!("False (MissingEndpoints)")
            ]
        );
    }

    #[test]
    fn volumes_claims_and_quotas_read_like_kubectl() {
        let pv = json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
            "claimRef": {"namespace": "web", "name": "data"}, "storageClassName": "local"}, "status": {"phase": "Bound"}});
        assert_eq!(
            row("", "persistentvolumes", pv)[1..8],
            [
                json!("1Gi"),
                json!("RWO,ROX"),
                json!("Retain"),
                json!("Bound"),
                json!("web/data"),
                json!("local"),
                json!("<unset>")
            ]
        );
        let pending = json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "local"}, "status": {"phase": "Pending"}});
        assert_eq!(
            row("", "persistentvolumeclaims", pending)[1..6],
            [
                json!("Pending"),
                json!(""),
                json!(""),
                json!(""),
                json!("local")
            ]
        );
        let quota = json!({"metadata": {"name": "q"}, "status": {"hard": {"pods": "10", "limits.cpu": "2", "requests.cpu": "1"}, "used": {"pods": "3"}}});
        assert_eq!(
            row("", "resourcequotas", quota)[2..],
            [
                json!("pods: 3/10, requests.cpu: 0/1"),
                json!("limits.cpu: 0/2")
            ]
        );
    }

    #[test]
    fn every_stored_resource_of_these_groups_has_its_columns() {
        for r in crate::registry::RESOURCES.iter().filter(|r| {
            matches!(
                r.group,
                "admissionregistration.k8s.io"
                    | "apiregistration.k8s.io"
                    | "certificates.k8s.io"
                    | "flowcontrol.apiserver.k8s.io"
                    | "node.k8s.io"
                    | "rbac.authorization.k8s.io"
                    | "scheduling.k8s.io"
                    | "storage.k8s.io"
            )
        }) {
            let (columns, render) =
                printer(r.group, r.plural).unwrap_or_else(|| panic!("no columns for {}", r.plural));
            let cells = render(&json!({"metadata": {"name": "x"}}));
            assert_eq!(cells.len(), columns.len(), "{}", r.plural);
        }
    }
}
