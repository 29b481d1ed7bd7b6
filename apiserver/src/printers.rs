//! The columns `kubectl get` prints, per resource: one row renderer each.
//!
//! These follow kube-apiserver's printers (`pkg/printers/internalversion/printers.go`):
//! the same column names, the same `<none>`/`<pending>` placeholders, and priority-1
//! columns for `-o wide`. Resources without a printer get NAME and AGE, as custom
//! resources without printer columns do.

use serde_json::{json, Value};

use crate::registry::ResourceInfo;
use crate::storage::meta_str;
use crate::table::human_duration;

pub(crate) fn age(obj: &Value) -> String {
    let ts = meta_str(obj, "creationTimestamp");
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

pub(crate) fn s<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn n(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

pub(crate) fn or_none(v: String) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v
    }
}

pub(crate) fn items<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

pub(crate) fn selector(map: Option<&Value>) -> String {
    let pairs = map.and_then(Value::as_object).map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(",")
    });
    or_none(pairs.unwrap_or_default())
}

pub(crate) fn containers_and_images(obj: &Value, pointer: &str) -> (String, String) {
    let cs = items(obj, pointer);
    let join = |f: &str| cs.iter().map(|c| s(c, f)).collect::<Vec<_>>().join(",");
    (or_none(join("/name")), or_none(join("/image")))
}

/// `(name, type, priority)` per column and the cells of one row.
pub type Columns = &'static [(&'static str, &'static str, u8)];
/// The cells of one object's row.
pub type Row = fn(&Value) -> Vec<Value>;

fn pod_row(o: &Value) -> Vec<Value> {
    let statuses = items(o, "/status/containerStatuses");
    let total = items(o, "/spec/containers").len();
    let ready = statuses
        .iter()
        .filter(|c| c["ready"] == json!(true))
        .count();
    let restarts: i64 = statuses.iter().map(|c| n(c, "/restartCount")).sum();
    let mut status = s(o, "/status/reason").to_string();
    if status.is_empty() {
        status = s(o, "/status/phase").to_string();
    }
    // As kubectl's printer: the last container with a waiting or terminated reason names
    // the status; a pod whose containers completed but one still runs is Running.
    let mut has_running = false;
    for c in statuses.iter().rev() {
        let waiting = s(c, "/state/waiting/reason");
        let terminated = s(c, "/state/terminated/reason");
        if !waiting.is_empty() {
            status = waiting.to_string();
        } else if !terminated.is_empty() {
            status = terminated.to_string();
        } else if c.pointer("/state/terminated").is_some() {
            let signal = n(c, "/state/terminated/signal");
            status = if signal != 0 {
                format!("Signal:{signal}")
            } else {
                format!("ExitCode:{}", n(c, "/state/terminated/exitCode"))
            };
        } else if c["ready"] == json!(true) && c.pointer("/state/running").is_some() {
            has_running = true;
        }
    }
    if status == "Completed" && has_running {
        let ready_condition = items(o, "/status/conditions")
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        status = if ready_condition {
            "Running"
        } else {
            "NotReady"
        }
        .to_string();
    }
    if !meta_str(o, "deletionTimestamp").is_empty() {
        status = "Terminating".into();
    }
    vec![
        json!(meta_str(o, "name")),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
        json!(age(o)),
        json!(or_none(s(o, "/status/podIP").into())),
        json!(or_none(s(o, "/spec/nodeName").into())),
        json!(or_none(s(o, "/status/nominatedNodeName").into())),
        json!("<none>"),
    ]
}

fn service_row(o: &Value) -> Vec<Value> {
    let ty = s(o, "/spec/type");
    let ports: Vec<String> = items(o, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) => format!("{}:{np}/{proto}", n(p, "/port")),
                None => format!("{}/{proto}", n(p, "/port")),
            }
        })
        .collect();
    let mut external: Vec<String> = items(o, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if ty == "LoadBalancer" {
        let lb: Vec<String> = items(o, "/status/loadBalancer/ingress")
            .iter()
            .map(|i| s(i, "/ip").to_string())
            .collect();
        external.extend(lb);
        if external.is_empty() {
            external.push("<pending>".into());
        }
    }
    if ty == "ExternalName" {
        external.push(s(o, "/spec/externalName").into());
    }
    vec![
        json!(meta_str(o, "name")),
        json!(ty),
        json!(or_none(s(o, "/spec/clusterIP").into())),
        json!(or_none(external.join(","))),
        json!(or_none(ports.join(","))),
        json!(age(o)),
        json!(selector(o.pointer("/spec/selector"))),
    ]
}

fn node_row(o: &Value) -> Vec<Value> {
    let ready = items(o, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == "Ready")
        // As kube-apiserver prints it: any Ready status but True (False, Unknown) is NotReady.
        .map(|c| match s(c, "/status") {
            "True" => "Ready",
            _ => "NotReady",
        })
        .unwrap_or("Unknown");
    let mut status = ready.to_string();
    if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<&str> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .collect()
        })
        .unwrap_or_default();
    let addr = |t: &str| {
        items(o, "/status/addresses")
            .iter()
            .find(|a| s(a, "/type") == t)
            .map(|a| s(a, "/address").to_string())
            .unwrap_or_default()
    };
    vec![
        json!(meta_str(o, "name")),
        json!(status),
        json!(or_none(roles.join(","))),
        json!(age(o)),
        json!(s(o, "/status/nodeInfo/kubeletVersion")),
        json!(or_none(addr("InternalIP"))),
        json!(or_none(addr("ExternalIP"))),
        json!(or_none(s(o, "/status/nodeInfo/osImage").into())),
        json!(or_none(s(o, "/status/nodeInfo/kernelVersion").into())),
        json!(or_none(
            s(o, "/status/nodeInfo/containerRuntimeVersion").into()
        )),
    ]
}

fn endpoints_row(o: &Value) -> Vec<Value> {
    let mut eps = Vec::new();
    for subset in items(o, "/subsets") {
        for a in items(subset, "/addresses") {
            for p in items(subset, "/ports") {
                eps.push(format!("{}:{}", s(a, "/ip"), n(p, "/port")));
            }
        }
    }
    let shown = if eps.len() > 3 {
        format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
    } else {
        eps.join(",")
    };
    vec![
        json!(meta_str(o, "name")),
        json!(or_none(shown)),
        json!(age(o)),
    ]
}

fn ingress_row(o: &Value) -> Vec<Value> {
    let hosts: Vec<&str> = items(o, "/spec/rules")
        .iter()
        .map(|r| s(r, "/host"))
        .filter(|h| !h.is_empty())
        .collect();
    let address: Vec<&str> = items(o, "/status/loadBalancer/ingress")
        .iter()
        .map(|i| {
            if s(i, "/ip").is_empty() {
                s(i, "/hostname")
            } else {
                s(i, "/ip")
            }
        })
        .collect();
    let ports = if items(o, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        json!(meta_str(o, "name")),
        json!(or_none(s(o, "/spec/ingressClassName").into())),
        json!(if hosts.is_empty() {
            "*".to_string()
        } else {
            hosts.join(",")
        }),
        json!(address.join(",")),
        json!(ports),
        json!(age(o)),
    ]
}

/// At most three entries, then "+ N more...", as kubectl abbreviates endpoints.
fn first_three(all: Vec<String>) -> String {
    if all.len() > 3 {
        format!("{} + {} more...", all[..3].join(","), all.len() - 3)
    } else {
        or_none(all.join(","))
    }
}

fn endpointslice_row(o: &Value) -> Vec<Value> {
    let ports: Vec<String> = items(o, "/ports")
        .iter()
        .map(|p| {
            p.get("port")
                .and_then(Value::as_i64)
                .map_or("<unset>".into(), |p| p.to_string())
        })
        .collect();
    let addrs: Vec<String> = items(o, "/endpoints")
        .iter()
        .flat_map(|e| {
            items(e, "/addresses")
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    let ports = if ports.is_empty() {
        "<unset>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        json!(meta_str(o, "name")),
        json!(s(o, "/addressType")),
        json!(ports),
        json!(first_three(addrs)),
        json!(age(o)),
    ]
}

fn event_row(o: &Value) -> Vec<Value> {
    let last = [
        s(o, "/lastTimestamp"),
        s(o, "/eventTime"),
        meta_str(o, "creationTimestamp"),
    ]
    .into_iter()
    .find(|t| !t.is_empty())
    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    .map_or("<unknown>".into(), |t| {
        human_duration(jiff::Timestamp::now().as_second() - t.as_second())
    });
    let object = format!(
        "{}/{}",
        s(o, "/involvedObject/kind").to_lowercase(),
        s(o, "/involvedObject/name")
    );
    vec![
        json!(last),
        json!(s(o, "/type")),
        json!(s(o, "/reason")),
        json!(object),
        json!(s(o, "/message")),
    ]
}

fn job_row(o: &Value) -> Vec<Value> {
    let condition = |t: &str| {
        items(o, "/status/conditions")
            .iter()
            .any(|c| s(c, "/type") == t && s(c, "/status") == "True")
    };
    let status = if condition("Complete") {
        "Complete"
    } else if condition("Failed") {
        "Failed"
    } else if o.pointer("/spec/suspend") == Some(&json!(true)) {
        "Suspended"
    } else {
        "Running"
    };
    let completions = o
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let seconds = |p: &str| {
        s(o, p)
            .parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_second())
    };
    let duration = match (
        seconds("/status/startTime"),
        seconds("/status/completionTime"),
    ) {
        (Some(a), Some(b)) => human_duration(b - a),
        (Some(a), None) => human_duration(jiff::Timestamp::now().as_second() - a),
        _ => String::new(),
    };
    let (c, i) = containers_and_images(o, "/spec/template/spec/containers");
    vec![
        json!(meta_str(o, "name")),
        json!(status),
        json!(format!("{}/{completions}", n(o, "/status/succeeded"))),
        json!(duration),
        json!(age(o)),
        json!(c),
        json!(i),
        json!(selector(o.pointer("/spec/selector/matchLabels"))),
    ]
}

fn data_count(o: &Value) -> i64 {
    ["data", "binaryData"]
        .iter()
        .filter_map(|k| o.get(*k).and_then(Value::as_object))
        .map(|m| m.len() as i64)
        .sum()
}

fn deployment_row(o: &Value) -> Vec<Value> {
    let (c, i) = containers_and_images(o, "/spec/template/spec/containers");
    vec![
        json!(meta_str(o, "name")),
        json!(format!(
            "{}/{}",
            n(o, "/status/readyReplicas"),
            n(o, "/spec/replicas")
        )),
        json!(n(o, "/status/updatedReplicas")),
        json!(n(o, "/status/availableReplicas")),
        json!(age(o)),
        json!(c),
        json!(i),
        json!(selector(o.pointer("/spec/selector/matchLabels"))),
    ]
}

fn replicaset_row(o: &Value) -> Vec<Value> {
    let (c, i) = containers_and_images(o, "/spec/template/spec/containers");
    vec![
        json!(meta_str(o, "name")),
        json!(n(o, "/spec/replicas")),
        json!(n(o, "/status/replicas")),
        json!(n(o, "/status/readyReplicas")),
        json!(age(o)),
        json!(c),
        json!(i),
        json!(selector(o.pointer("/spec/selector/matchLabels"))),
    ]
}

fn daemonset_row(o: &Value) -> Vec<Value> {
    let (c, i) = containers_and_images(o, "/spec/template/spec/containers");
    vec![
        json!(meta_str(o, "name")),
        json!(n(o, "/status/desiredNumberScheduled")),
        json!(n(o, "/status/currentNumberScheduled")),
        json!(n(o, "/status/numberReady")),
        json!(n(o, "/status/updatedNumberScheduled")),
        json!(n(o, "/status/numberAvailable")),
        json!(selector(o.pointer("/spec/template/spec/nodeSelector"))),
        json!(age(o)),
        json!(c),
        json!(i),
        json!(selector(o.pointer("/spec/selector/matchLabels"))),
    ]
}

fn statefulset_row(o: &Value) -> Vec<Value> {
    let (c, i) = containers_and_images(o, "/spec/template/spec/containers");
    let ready = format!(
        "{}/{}",
        n(o, "/status/readyReplicas"),
        n(o, "/spec/replicas")
    );
    vec![
        json!(meta_str(o, "name")),
        json!(ready),
        json!(age(o)),
        json!(c),
        json!(i),
    ]
}

fn name_age(o: &Value) -> Vec<Value> {
    vec![json!(meta_str(o, "name")), json!(age(o))]
}

/// Column types, short so the table below keeps one resource per line. Each column is
/// `(name, type, priority)`; priority 1 shows only with `-o wide`.
pub(crate) const S: &str = "string";
pub(crate) const I: &str = "integer";

const EVENT_COLUMNS: Columns = &[
    ("Last Seen", S, 0),
    ("Type", S, 0),
    ("Reason", S, 0),
    ("Object", S, 0),
    ("Message", S, 0),
];

/// Columns and row renderer for a resource.
#[rustfmt::skip]
pub fn printer(info: &ResourceInfo) -> (Columns, Row) {
    match (info.group, info.plural) {
        ("", "pods") => (&[("Name", S, 0), ("Ready", S, 0), ("Status", S, 0), ("Restarts", I, 0), ("Age", S, 0), ("IP", S, 1), ("Node", S, 1), ("Nominated Node", S, 1), ("Readiness Gates", S, 1)], pod_row),
        ("", "services") => (&[("Name", S, 0), ("Type", S, 0), ("Cluster-IP", S, 0), ("External-IP", S, 0), ("Port(s)", S, 0), ("Age", S, 0), ("Selector", S, 1)], service_row),
        ("", "nodes") => (&[("Name", S, 0), ("Status", S, 0), ("Roles", S, 0), ("Age", S, 0), ("Version", S, 0), ("Internal-IP", S, 1), ("External-IP", S, 1), ("OS-Image", S, 1), ("Kernel-Version", S, 1), ("Container-Runtime", S, 1)], node_row),
        ("", "namespaces") => (&[("Name", S, 0), ("Status", S, 0), ("Age", S, 0)], |o| vec![json!(meta_str(o, "name")), json!(s(o, "/status/phase")), json!(age(o))]),
        ("", "endpoints") => (&[("Name", S, 0), ("Endpoints", S, 0), ("Age", S, 0)], endpoints_row),
        ("", "configmaps") => (&[("Name", S, 0), ("Data", I, 0), ("Age", S, 0)], |o| vec![json!(meta_str(o, "name")), json!(data_count(o)), json!(age(o))]),
        ("", "secrets") => (&[("Name", S, 0), ("Type", S, 0), ("Data", I, 0), ("Age", S, 0)], |o| vec![json!(meta_str(o, "name")), json!(s(o, "/type")), json!(data_count(o)), json!(age(o))]),
        ("", "events") => (EVENT_COLUMNS, event_row),
        // The same Events in their newer shape: printed from the core one, as kube does.
        ("events.k8s.io", "events") => (EVENT_COLUMNS, |o| {
            let mut core = o.clone();
            crate::events::to_core(&mut core);
            event_row(&core)
        }),
        ("", "serviceaccounts") => (&[("Name", S, 0), ("Secrets", I, 0), ("Age", S, 0)], |o| vec![json!(meta_str(o, "name")), json!(items(o, "/secrets").len()), json!(age(o))]),
        ("apps", "deployments") => (&[("Name", S, 0), ("Ready", S, 0), ("Up-to-date", I, 0), ("Available", I, 0), ("Age", S, 0), ("Containers", S, 1), ("Images", S, 1), ("Selector", S, 1)], deployment_row),
        ("apps", "replicasets") => (&[("Name", S, 0), ("Desired", I, 0), ("Current", I, 0), ("Ready", I, 0), ("Age", S, 0), ("Containers", S, 1), ("Images", S, 1), ("Selector", S, 1)], replicaset_row),
        ("apps", "daemonsets") => (&[("Name", S, 0), ("Desired", I, 0), ("Current", I, 0), ("Ready", I, 0), ("Up-to-date", I, 0), ("Available", I, 0), ("Node Selector", S, 0), ("Age", S, 0), ("Containers", S, 1), ("Images", S, 1), ("Selector", S, 1)], daemonset_row),
        ("apps", "statefulsets") => (&[("Name", S, 0), ("Ready", S, 0), ("Age", S, 0), ("Containers", S, 1), ("Images", S, 1)], statefulset_row),
        ("batch", "jobs") => (&[("Name", S, 0), ("Status", S, 0), ("Completions", S, 0), ("Duration", S, 0), ("Age", S, 0), ("Containers", S, 1), ("Images", S, 1), ("Selector", S, 1)], job_row),
        ("apiextensions.k8s.io", "customresourcedefinitions") => (&[("Name", S, 0), ("Created At", "date", 0)], |o| vec![json!(meta_str(o, "name")), json!(meta_str(o, "creationTimestamp"))]),
        ("coordination.k8s.io", "leases") => (&[("Name", S, 0), ("Holder", S, 0), ("Age", S, 0)], |o| vec![json!(meta_str(o, "name")), json!(s(o, "/spec/holderIdentity")), json!(age(o))]),
        ("discovery.k8s.io", "endpointslices") => (&[("Name", S, 0), ("AddressType", S, 0), ("Ports", S, 0), ("Endpoints", S, 0), ("Age", S, 0)], endpointslice_row),
        ("networking.k8s.io", "ingresses") => (&[("Name", S, 0), ("Class", S, 0), ("Hosts", S, 0), ("Address", S, 0), ("Ports", S, 0), ("Age", S, 0)], ingress_row),
        ("networking.k8s.io", "ingressclasses") => (&[("Name", S, 0), ("Controller", S, 0), ("Parameters", S, 0), ("Age", S, 0)], |o| vec![json!(meta_str(o, "name")), json!(s(o, "/spec/controller")), json!("<none>"), json!(age(o))]),
        ("networking.k8s.io", "networkpolicies") => (&[("Name", S, 0), ("Pod-Selector", S, 0), ("Age", S, 0)], |o| vec![json!(meta_str(o, "name")), json!(selector(o.pointer("/spec/podSelector/matchLabels"))), json!(age(o))]),
        (group, plural) => crate::printers_workloads::printer(group, plural)
            .or_else(|| crate::printers_admin::printer(group, plural))
            .unwrap_or((&[("Name", S, 0), ("Age", S, 0)], name_age)),
    }
}

/// The cells `get` prints for `o`, a `plural` of `group`: for the printers' tests.
#[cfg(test)]
pub(crate) fn row(group: &str, plural: &str, o: Value) -> Vec<Value> {
    let r = crate::registry::RESOURCES
        .iter()
        .chain(crate::registry::READ_ONLY)
        .find(|r| r.group == group && r.plural == plural)
        .expect("a built-in resource");
    (printer(r).1)(&o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress_and_slices() {
        let ing = json!({"metadata": {"name": "web"}, "spec": {"ingressClassName": "nginx", "rules": [{"host": "a.example"}]},
                         "status": {"loadBalancer": {"ingress": [{"ip": "172.20.0.11"}]}}});
        let cells = row("networking.k8s.io", "ingresses", ing);
        assert_eq!(
            cells[..5],
            [
                json!("web"),
                json!("nginx"),
                json!("a.example"),
                json!("172.20.0.11"),
                json!("80")
            ]
        );
        let slice = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4", "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["10.244.1.2"]}, {"addresses": ["10.244.1.3"]}, {"addresses": ["10.244.2.2"]}, {"addresses": ["10.244.2.3"]}]});
        let cells = row("discovery.k8s.io", "endpointslices", slice);
        assert_eq!(
            cells[3],
            json!("10.244.1.2,10.244.1.3,10.244.2.2 + 1 more...")
        );
    }

    #[test]
    fn pod_status_column_reads_like_kubectl() {
        let pod = |phase: &str, state: Value, ready: bool| {
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]},
                   "status": {"phase": phase, "containerStatuses": [{"name": "c", "ready": ready, "restartCount": 0, "state": state}]}})
        };
        let status = |o: &Value| pod_row(o)[2].clone();
        assert_eq!(
            status(&pod(
                "Succeeded",
                json!({"terminated": {"reason": "Completed", "exitCode": 0}}),
                false
            )),
            json!("Completed")
        );
        assert_eq!(
            status(&pod(
                "Running",
                json!({"waiting": {"reason": "CrashLoopBackOff"}}),
                false
            )),
            json!("CrashLoopBackOff")
        );
        assert_eq!(
            status(&pod(
                "Failed",
                json!({"terminated": {"exitCode": 3}}),
                false
            )),
            json!("ExitCode:3")
        );
        assert_eq!(
            status(&pod("Running", json!({"running": {}}), true)),
            json!("Running")
        );
    }
}
