//! A learner's session with the real kubectl: apply twice, get in every format, label,
//! patch three ways, stale update, invalid name, delete.

mod common;

use common::{text, Cluster};

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
"#;

#[test]
fn apply_get_label_patch_delete() {
    let c = Cluster::start();
    assert_eq!(
        c.ok(&["create", "namespace", "demo"]).trim(),
        "namespace/demo created"
    );

    let first = c.kubectl_stdin(&["apply", "-f", "-"], MANIFEST);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let out = text(&first.stdout);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(out.contains("service/web created"), "{out}");
    let second = c.kubectl_stdin(&["apply", "-f", "-"], MANIFEST);
    let out = text(&second.stdout);
    assert!(
        out.contains("deployment.apps/web unchanged"),
        "{out}{}",
        text(&second.stderr)
    );
    assert!(out.contains("service/web unchanged"), "{out}");

    let changed = MANIFEST.replace("replicas: 2", "replicas: 3");
    let third = c.kubectl_stdin(&["apply", "-f", "-"], &changed);
    let out = text(&third.stdout);
    assert!(
        out.contains("deployment.apps/web configured"),
        "{out}{}",
        text(&third.stderr)
    );

    let yaml = c.ok(&["-n", "demo", "get", "deployment", "web", "-o", "yaml"]);
    assert!(
        yaml.starts_with("apiVersion: apps/v1\nkind: Deployment\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("replicas: 3") && yaml.contains("generation: 2"),
        "{yaml}"
    );
    assert!(
        yaml.contains("kubectl.kubernetes.io/last-applied-configuration"),
        "{yaml}"
    );

    let svc = c.ok(&["-n", "demo", "get", "svc", "web", "-o", "wide"]);
    let row = svc.lines().nth(1).unwrap_or_default();
    assert!(svc.starts_with("NAME"), "{svc}");
    assert!(
        row.contains("NodePort") && row.contains("80:3") && row.contains("app=web"),
        "{svc}"
    );

    let pods = c.kubectl(&["-n", "demo", "get", "pods"]);
    assert!(
        text(&pods.stderr).contains("No resources found in demo namespace."),
        "{}",
        text(&pods.stderr)
    );

    assert_eq!(
        c.ok(&["-n", "demo", "label", "deploy", "web", "tier=frontend"])
            .trim(),
        "deployment.apps/web labeled"
    );
    let sel = c.ok(&[
        "-n",
        "demo",
        "get",
        "deploy",
        "-l",
        "tier=frontend",
        "-o",
        "name",
    ]);
    assert_eq!(sel.trim(), "deployment.apps/web");
    let none = c.kubectl(&[
        "-n",
        "demo",
        "get",
        "deploy",
        "-l",
        "tier=backend",
        "-o",
        "name",
    ]);
    assert!(text(&none.stdout).trim().is_empty());

    c.ok(&[
        "-n",
        "demo",
        "patch",
        "deploy",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":4}}"#,
    ]);
    c.ok(&["-n", "demo", "patch", "deploy", "web", "--type", "json", "-p", r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"nginx:1.27"}]"#]);
    let out = c.ok(&[
        "-n",
        "demo",
        "patch",
        "deploy",
        "web",
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox"}]}}}}"#,
    ]);
    assert_eq!(out.trim(), "deployment.apps/web patched");
    let images = c.ok(&[
        "-n",
        "demo",
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[*].image}",
    ]);
    assert_eq!(images, "4 nginx:1.27 busybox");

    // A stale resourceVersion is a 409, with kubectl's wording.
    let stale = c.ok(&["-n", "demo", "get", "deploy", "web", "-o", "json"]);
    c.ok(&["-n", "demo", "scale", "--replicas=5", "deploy/web"])
        .to_string();
    let stale = stale.replace("\"replicas\": 4", "\"replicas\": 6");
    let replaced = c.kubectl_stdin(&["replace", "-f", "-"], &stale);
    let err = text(&replaced.stderr);
    assert!(!replaced.status.success());
    assert!(
        err.contains("Error from server (Conflict)")
            && err.contains("the object has been modified"),
        "{err}"
    );

    let bad = c.fails(&["create", "configmap", "Bad_Name"]);
    assert!(bad.contains("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{bad}");
    let bad_apply = c.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad.Name\n",
    );
    let err = text(&bad_apply.stderr);
    assert!(
        err.contains(
            "The ConfigMap \"Bad.Name\" is invalid: metadata.name: Invalid value: \"Bad.Name\""
        ),
        "{err}"
    );
    let missing = c.fails(&["-n", "nowhere", "create", "configmap", "x"]);
    assert!(
        missing.contains("namespaces \"nowhere\" not found"),
        "{missing}"
    );
    let gone = c.fails(&["-n", "demo", "get", "deploy", "nope"]);
    assert!(
        gone.contains("Error from server (NotFound): deployments.apps \"nope\" not found"),
        "{gone}"
    );

    assert_eq!(
        c.ok(&["-n", "demo", "annotate", "deploy", "web", "note=hello"])
            .trim(),
        "deployment.apps/web annotated"
    );
    let editor = c.dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/note: hello/note: edited/' \"$1\"\n",
    )
    .expect("editor");
    let chmod = std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .expect("chmod");
    assert!(chmod.success());
    let edited = c
        .kubectl_cmd(&["-n", "demo", "edit", "deploy", "web"])
        .env("EDITOR", &editor)
        .output()
        .expect("edit");
    assert_eq!(
        text(&edited.stdout).trim(),
        "deployment.apps/web edited",
        "{}",
        text(&edited.stderr)
    );
    let note = c.ok(&[
        "-n",
        "demo",
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.annotations.note}",
    ]);
    assert_eq!(note, "edited");

    let ssa = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: demo\ndata:\n  level: debug\n";
    let applied = c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], ssa);
    assert_eq!(
        text(&applied.stdout).trim(),
        "configmap/settings serverside-applied",
        "{}",
        text(&applied.stderr)
    );
    let all = c.ok(&["-n", "demo", "get", "all"]);
    assert!(
        all.contains("service/web") && all.contains("deployment.apps/web"),
        "{all}"
    );

    assert_eq!(
        c.ok(&["-n", "demo", "delete", "svc", "web"]).trim(),
        "service \"web\" deleted"
    );
    let keys = c
        .etcd
        .etcdctl(&["get", "--prefix", "--keys-only", "/registry/"]);
    assert!(keys.contains("/registry/deployments/demo/web"), "{keys}");
    assert!(!keys.contains("/registry/services/demo/web"), "{keys}");
    assert!(
        !keys.contains("/registry/ranges/servicenodeports/"),
        "node port released: {keys}"
    );
}
