//! kubectl's typed commands, which send protobuf bodies (`create deployment|service|job|
//! cronjob|role|…`, `expose`, `run`), and `explain`, which reads the OpenAPI v3 schemas.

mod common;

use common::Cluster;
use serde_json::Value;

fn json_of(c: &Cluster, args: &[&str]) -> Value {
    let out = c.ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}: {out}"))
}

#[test]
fn typed_create_commands_send_protobuf() {
    let c = Cluster::start();
    assert_eq!(
        c.ok(&[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--replicas=2",
            "--port=80"
        ])
        .trim(),
        "deployment.apps/web created"
    );
    let d = json_of(&c, &["get", "deployment", "web", "-o", "json"]);
    assert_eq!(d["spec"]["replicas"], 2, "{d}");
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web", "{d}");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27", "{d}");
    assert_eq!(container["ports"][0]["containerPort"], 80, "{d}");
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["app"], "web",
        "{d}"
    );
    assert!(d["metadata"].get("generateName").is_none(), "{d}");
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate", "{d}");
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%",
        "{d}"
    );

    assert_eq!(
        c.ok(&["create", "service", "clusterip", "db", "--tcp=5432:5432"])
            .trim(),
        "service/db created"
    );
    let s = json_of(&c, &["get", "service", "db", "-o", "json"]);
    assert_eq!(s["spec"]["type"], "ClusterIP", "{s}");
    assert_eq!(s["spec"]["ports"][0]["port"], 5432, "{s}");
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 5432, "{s}");
    assert!(
        s["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.96.")),
        "{s}"
    );

    assert_eq!(
        c.ok(&[
            "expose",
            "deployment",
            "web",
            "--port=8080",
            "--target-port=80"
        ])
        .trim(),
        "service/web exposed"
    );
    let e = json_of(&c, &["get", "service", "web", "-o", "json"]);
    assert_eq!(e["spec"]["selector"]["app"], "web", "{e}");
    assert_eq!(e["spec"]["ports"][0]["port"], 8080, "{e}");
    assert_eq!(e["spec"]["ports"][0]["targetPort"], 80, "{e}");

    assert_eq!(
        c.ok(&[
            "create",
            "job",
            "once",
            "--image=busybox",
            "--",
            "echo",
            "hi"
        ])
        .trim(),
        "job.batch/once created"
    );
    let j = json_of(&c, &["get", "job", "once", "-o", "json"]);
    let jc = &j["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(jc["command"], serde_json::json!(["echo", "hi"]), "{j}");
    assert_eq!(
        j["spec"]["template"]["spec"]["restartPolicy"], "Never",
        "{j}"
    );

    assert_eq!(
        c.ok(&[
            "create",
            "cronjob",
            "tick",
            "--image=busybox",
            "--schedule=*/5 * * * *"
        ])
        .trim(),
        "cronjob.batch/tick created"
    );
    let cj = json_of(&c, &["get", "cronjob", "tick", "-o", "json"]);
    assert_eq!(cj["spec"]["schedule"], "*/5 * * * *", "{cj}");

    assert_eq!(
        c.ok(&[
            "create",
            "role",
            "reader",
            "--verb=get,list",
            "--resource=pods"
        ])
        .trim(),
        "role.rbac.authorization.k8s.io/reader created"
    );
    let r = json_of(&c, &["get", "role", "reader", "-o", "json"]);
    assert_eq!(
        r["rules"][0]["verbs"],
        serde_json::json!(["get", "list"]),
        "{r}"
    );
    assert_eq!(
        r["rules"][0]["resources"],
        serde_json::json!(["pods"]),
        "{r}"
    );

    assert_eq!(
        c.ok(&[
            "create",
            "rolebinding",
            "read",
            "--role=reader",
            "--user=ann"
        ])
        .trim(),
        "rolebinding.rbac.authorization.k8s.io/read created"
    );
    assert_eq!(
        c.ok(&[
            "run",
            "one",
            "--image=busybox",
            "--restart=Never",
            "--labels=run=one"
        ])
        .trim(),
        "pod/one created"
    );
    let p = json_of(&c, &["get", "pod", "one", "-o", "json"]);
    assert_eq!(p["spec"]["containers"][0]["image"], "busybox", "{p}");
    assert_eq!(p["spec"]["restartPolicy"], "Never", "{p}");
    assert_eq!(
        c.ok(&["create", "quota", "q", "--hard=pods=10"]).trim(),
        "resourcequota/q created"
    );
    let q = json_of(&c, &["get", "quota", "q", "-o", "json"]);
    assert_eq!(q["spec"]["hard"]["pods"], "10", "{q}");
}

#[test]
fn explain_prints_the_schemas() {
    let c = Cluster::start();
    let out = c.ok(&["explain", "pod.spec.containers"]);
    assert!(out.contains("KIND:       Pod"), "{out}");
    assert!(out.contains("FIELD: containers <[]Container>"), "{out}");
    assert!(
        out.contains("A single application container that you want to run within a pod."),
        "{out}"
    );
    assert!(out.contains("image\t<string>"), "{out}");
    let out = c.ok(&["explain", "deployment.spec.strategy"]);
    assert!(out.contains("GROUP:      apps"), "{out}");
    assert!(
        out.contains("FIELD: strategy <DeploymentStrategy>"),
        "{out}"
    );
    assert!(
        out.contains("rollingUpdate\t<RollingUpdateDeployment>"),
        "{out}"
    );
    let v2 = c.ok(&["get", "--raw", "/openapi/v2"]);
    let doc: Value = serde_json::from_str(&v2).expect("v2 is JSON");
    assert_eq!(doc["swagger"], "2.0");
    assert!(doc["definitions"]["io.k8s.api.core.v1.Pod"].is_object());
}
