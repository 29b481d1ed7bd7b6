//! Table columns of the workload resources `printers.rs` leaves out (CronJobs,
//! ReplicationControllers, PodTemplates, PodDisruptionBudgets, HorizontalPodAutoscalers,
//! ControllerRevisions), as kube-apiserver 1.32's printers write them.

use serde_json::{json, Value};

use crate::printers::{
    age, containers_and_images, items, n, or_none, s, selector, Columns, Row, I, S,
};
use crate::storage::meta_str;

/// Columns and row renderer for the resources of this module, None for the others.
#[rustfmt::skip]
pub fn printer(group: &str, plural: &str) -> Option<(Columns, Row)> {
    Some(match (group, plural) {
        ("", "podtemplates") => (&[("Name", S, 0), ("Containers", S, 0), ("Images", S, 0), ("Pod Labels", S, 0)], pod_template_row),
        ("", "replicationcontrollers") => (&[("Name", S, 0), ("Desired", I, 0), ("Current", I, 0), ("Ready", I, 0), ("Age", S, 0), ("Containers", S, 1), ("Images", S, 1), ("Selector", S, 1)], replication_controller_row),
        ("apps", "controllerrevisions") => (&[("Name", S, 0), ("Controller", S, 0), ("Revision", I, 0), ("Age", S, 0)], controller_revision_row),
        ("autoscaling", "horizontalpodautoscalers") => (&[("Name", S, 0), ("Reference", S, 0), ("Targets", S, 0), ("MinPods", S, 0), ("MaxPods", I, 0), ("Replicas", I, 0), ("Age", S, 0)], hpa_row),
        ("batch", "cronjobs") => (&[("Name", S, 0), ("Schedule", S, 0), ("Timezone", S, 0), ("Suspend", "boolean", 0), ("Active", I, 0), ("Last Schedule", S, 0), ("Age", S, 0), ("Containers", S, 1), ("Images", S, 1), ("Selector", S, 1)], cronjob_row),
        ("policy", "poddisruptionbudgets") => (&[("Name", S, 0), ("Min Available", S, 0), ("Max Unavailable", S, 0), ("Allowed Disruptions", I, 0), ("Age", S, 0)], pdb_row),
        _ => return None,
    })
}

/// An int-or-string field as kubectl shows it, `N/A` when unset.
fn int_or_string(o: &Value, pointer: &str) -> String {
    match o.pointer(pointer) {
        Some(Value::Number(v)) => v.to_string(),
        Some(Value::String(v)) => v.clone(),
        _ => "N/A".into(),
    }
}

/// `k=v,…` of a map, sorted, `<none>` when empty.
fn labels(o: &Value, pointer: &str) -> String {
    selector(o.pointer(pointer))
}

fn pod_template_row(o: &Value) -> Vec<Value> {
    let (c, i) = containers_and_images(o, "/template/spec/containers");
    vec![
        json!(meta_str(o, "name")),
        json!(c),
        json!(i),
        json!(labels(o, "/template/metadata/labels")),
    ]
}

fn replication_controller_row(o: &Value) -> Vec<Value> {
    let (c, i) = containers_and_images(o, "/spec/template/spec/containers");
    vec![
        json!(meta_str(o, "name")),
        json!(o
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)),
        json!(n(o, "/status/replicas")),
        json!(n(o, "/status/readyReplicas")),
        json!(age(o)),
        json!(c),
        json!(i),
        json!(labels(o, "/spec/selector")),
    ]
}

/// `daemonset.apps/fluentd`: the controller owner, its kind lowercased and its group.
fn controller_revision_row(o: &Value) -> Vec<Value> {
    let controller = items(o, "/metadata/ownerReferences")
        .iter()
        .find(|r| r.get("controller") == Some(&json!(true)))
        .map_or("<none>".into(), |owner| {
            let group = s(owner, "/apiVersion")
                .split_once('/')
                .map_or("", |(g, _)| g);
            let kind = s(owner, "/kind").to_lowercase();
            let kind = if group.is_empty() {
                kind
            } else {
                format!("{kind}.{group}")
            };
            format!("{kind}/{}", s(owner, "/name"))
        });
    vec![
        json!(meta_str(o, "name")),
        json!(controller),
        json!(n(o, "/revision")),
        json!(age(o)),
    ]
}

/// `cpu: 12%/50%`: each metric's current value (`<unknown>` before the first reading)
/// over its target.
fn hpa_targets(o: &Value) -> String {
    let specs = items(o, "/spec/metrics");
    if specs.is_empty() {
        return "<none>".into();
    }
    let current = items(o, "/status/currentMetrics");
    let targets: Vec<String> = specs
        .iter()
        .map(|spec| {
            let kind = s(spec, "/type");
            let field = match kind {
                "Resource" => "resource",
                "ContainerResource" => "containerResource",
                "Pods" => "pods",
                "Object" => "object",
                _ => "external",
            };
            let name = match kind {
                "Resource" | "ContainerResource" => s(spec, &format!("/{field}/name")).to_string(),
                _ => s(spec, &format!("/{field}/metric/name")).to_string(),
            };
            let reading = current.iter().find(|m| {
                s(m, "/type") == kind
                    && (s(m, &format!("/{field}/name")) == name
                        || s(m, &format!("/{field}/metric/name")) == name)
            });
            let target = spec
                .pointer(&format!("/{field}/target"))
                .cloned()
                .unwrap_or(Value::Null);
            let (now, want) =
                if let Some(pct) = target.get("averageUtilization").and_then(Value::as_i64) {
                    let now = reading
                        .and_then(|m| m.pointer(&format!("/{field}/current/averageUtilization")))
                        .and_then(Value::as_i64)
                        .map_or("<unknown>".into(), |v| format!("{v}%"));
                    (now, format!("{pct}%"))
                } else {
                    let key = if target.get("averageValue").is_some() {
                        "averageValue"
                    } else {
                        "value"
                    };
                    let now = reading
                        .and_then(|m| m.pointer(&format!("/{field}/current/{key}")))
                        .and_then(Value::as_str)
                        .map_or("<unknown>".into(), String::from);
                    (
                        now,
                        target
                            .get(key)
                            .and_then(Value::as_str)
                            .unwrap_or("<unset>")
                            .to_string(),
                    )
                };
            if matches!(kind, "Resource" | "ContainerResource") {
                format!("{name}: {now}/{want}")
            } else {
                format!("{now}/{want}")
            }
        })
        .collect();
    targets.join(", ")
}

fn hpa_row(o: &Value) -> Vec<Value> {
    vec![
        json!(meta_str(o, "name")),
        json!(format!(
            "{}/{}",
            s(o, "/spec/scaleTargetRef/kind"),
            s(o, "/spec/scaleTargetRef/name")
        )),
        json!(hpa_targets(o)),
        json!(o
            .pointer("/spec/minReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .to_string()),
        json!(n(o, "/spec/maxReplicas")),
        json!(n(o, "/status/currentReplicas")),
        json!(age(o)),
    ]
}

fn cronjob_row(o: &Value) -> Vec<Value> {
    let (c, i) = containers_and_images(o, "/spec/jobTemplate/spec/template/spec/containers");
    let last = s(o, "/status/lastScheduleTime");
    let last = match last.parse::<jiff::Timestamp>() {
        Ok(t) => crate::table::human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        Err(_) => "<none>".into(),
    };
    let suspend = match o.pointer("/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    vec![
        json!(meta_str(o, "name")),
        json!(s(o, "/spec/schedule")),
        json!(or_none(s(o, "/spec/timeZone").to_string())),
        json!(suspend),
        json!(items(o, "/status/active").len()),
        json!(last),
        json!(age(o)),
        json!(c),
        json!(i),
        json!(selector(
            o.pointer("/spec/jobTemplate/spec/selector/matchLabels")
        )),
    ]
}

fn pdb_row(o: &Value) -> Vec<Value> {
    vec![
        json!(meta_str(o, "name")),
        json!(int_or_string(o, "/spec/minAvailable")),
        json!(int_or_string(o, "/spec/maxUnavailable")),
        json!(n(o, "/status/disruptionsAllowed")),
        json!(age(o)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printers::row;

    #[test]
    fn cronjobs_show_schedule_and_last_run() {
        let cj = json!({"metadata": {"name": "backup"}, "spec": {"schedule": "*/5 * * * *", "suspend": false,
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}}});
        let cells = row("batch", "cronjobs", cj);
        assert_eq!(
            cells[..6],
            [
                json!("backup"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(0),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn hpas_show_reference_and_targets() {
        let hpa = json!({"metadata": {"name": "web"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]},
            "status": {"currentReplicas": 2}});
        let cells = row("autoscaling", "horizontalpodautoscalers", hpa);
        assert_eq!(
            cells[..6],
            [
                json!("web"),
                json!("Deployment/web"),
                json!("cpu: <unknown>/50%"),
                json!("1"),
                json!(5),
                json!(2)
            ]
        );
    }

    #[test]
    fn revisions_name_their_controller_and_budgets_their_bounds() {
        let rev = json!({"metadata": {"name": "agent-5d8", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "controller": true}]}, "revision": 3});
        assert_eq!(
            row("apps", "controllerrevisions", rev)[1..3],
            [json!("daemonset.apps/agent"), json!(3)]
        );
        let pdb = json!({"metadata": {"name": "web"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            row("policy", "poddisruptionbudgets", pdb)[1..4],
            [json!("50%"), json!("N/A"), json!(1)]
        );
    }
}

#[cfg(test)]
mod coverage {
    /// Every built-in resource has the columns kube prints for it: none falls back to the
    /// NAME and AGE of a type without a printer.
    #[test]
    fn every_built_in_resource_has_its_own_columns() {
        let plain: Vec<&str> = crate::registry::RESOURCES
            .iter()
            .filter(|r| {
                crate::printers::printer(r).0
                    == [
                        ("Name", crate::printers::S, 0),
                        ("Age", crate::printers::S, 0),
                    ]
            })
            .map(|r| r.plural)
            .collect();
        assert_eq!(plain, Vec::<&str>::new());
    }
}
