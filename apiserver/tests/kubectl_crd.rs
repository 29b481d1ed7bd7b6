//! CustomResourceDefinitions through the real kubectl: a CRD is applied and established,
//! its resource is served, validated against the schema (422 naming the field), pruned,
//! printed with its printer columns, watched, scaled, explained, and removed with the CRD.

mod common;

use std::process::Stdio;

use common::{lines, text, wait_for, Cluster};

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.size
        statusReplicasPath: .status.size
    additionalPrinterColumns:
    - name: Size
      type: integer
      jsonPath: .spec.size
    - name: Color
      type: string
      jsonPath: .spec.color
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the widget should look like.
            required: [size]
            properties:
              size:
                type: integer
                minimum: 1
                description: How many parts the widget has.
              color:
                type: string
                enum: [red, blue]
                default: red
          status:
            type: object
            properties:
              size: {type: integer}
"#;

fn widget(name: &str, spec: &str) -> String {
    format!("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\n  namespace: default\nspec: {spec}\n")
}

#[test]
fn custom_resources_from_a_crd() {
    let c = Cluster::start();
    let applied = c.kubectl_stdin(&["apply", "-f", "-"], CRD);
    assert_eq!(
        text(&applied.stdout).trim(),
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com created",
        "{}",
        text(&applied.stderr)
    );
    let est = c.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=10s",
    ]);
    assert!(est.contains("condition met"), "{est}");
    let crds = c.ok(&["get", "crd"]);
    assert!(
        crds.starts_with("NAME") && crds.contains("CREATED AT"),
        "{crds}"
    );
    assert!(crds.contains("widgets.example.com"), "{crds}");
    let res = c.ok(&["api-resources", "--api-group=example.com"]);
    assert!(
        res.lines().any(|l| l.starts_with("widgets")
            && l.contains(" wd ")
            && l.contains("example.com/v1")
            && l.contains("Widget")),
        "{res}"
    );

    let created = c.kubectl_stdin(&["apply", "-f", "-"], &widget("small", "{size: 2}"));
    assert_eq!(
        text(&created.stdout).trim(),
        "widget.example.com/small created",
        "{}",
        text(&created.stderr)
    );
    let again = c.kubectl_stdin(&["apply", "-f", "-"], &widget("small", "{size: 2}"));
    assert_eq!(
        text(&again.stdout).trim(),
        "widget.example.com/small unchanged",
        "{}",
        text(&again.stderr)
    );
    let table = c.ok(&["get", "widgets"]);
    let mut rows = table.lines();
    let header: Vec<&str> = rows.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "COLOR", "AGE"], "{table}");
    let row: Vec<&str> = rows.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(&row[..3], ["small", "2", "red"], "defaulted color: {table}");

    let bad = c.kubectl_stdin(
        &["apply", "-f", "-"],
        &widget("bad", "{size: 0, color: pink}"),
    );
    let err = text(&bad.stderr);
    assert!(!bad.status.success());
    assert!(err.contains("The Widget \"bad\" is invalid"), "{err}");
    assert!(
        err.contains(
            "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"
        ),
        "{err}"
    );
    assert!(
        err.contains("spec.color: Unsupported value: \"pink\""),
        "{err}"
    );
    let wrong_type = c.kubectl_stdin(&["apply", "-f", "-"], &widget("typed", "{size: many}"));
    assert!(
        text(&wrong_type.stderr).contains("spec.size in body must be of type integer"),
        "{}",
        text(&wrong_type.stderr)
    );

    let strict = c.kubectl_stdin(
        &["apply", "-f", "-"],
        &widget("extra", "{size: 1, bogus: true}"),
    );
    let err = text(&strict.stderr);
    assert!(
        err.contains("strict decoding error: unknown field \"spec.bogus\""),
        "{err}"
    );
    let pruned = c.kubectl_stdin(
        &["apply", "--validate=false", "-f", "-"],
        &widget("extra", "{size: 1, bogus: true}"),
    );
    assert!(pruned.status.success(), "{}", text(&pruned.stderr));
    let json = c.ok(&["get", "widget", "extra", "-o", "jsonpath={.spec}"]);
    assert!(
        !json.contains("bogus") && json.contains("\"size\":1"),
        "{json}"
    );

    let mut watch = c
        .kubectl_cmd(&["get", "widgets", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let rx = lines(watch.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    assert!(wait_for(&rx, "small", &mut seen), "{seen:?}");
    assert_eq!(
        c.ok(&["scale", "widget", "small", "--replicas=7"]).trim(),
        "widget.example.com/small scaled"
    );
    assert!(
        wait_for(&rx, "7", &mut seen),
        "watch saw the change: {seen:?}"
    );
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(
        c.ok(&["get", "wd", "small", "-o", "jsonpath={.spec.size}"]),
        "7"
    );

    let explain = c.ok(&["explain", "widget.spec"]);
    assert!(
        explain.contains("What the widget should look like."),
        "{explain}"
    );
    assert!(explain.contains("size\t<integer> -required-"), "{explain}");

    assert_eq!(
        c.ok(&["delete", "crd", "widgets.example.com"]).trim(),
        "customresourcedefinition.apiextensions.k8s.io \"widgets.example.com\" deleted"
    );
    let keys = c
        .etcd
        .etcdctl(&["get", "--prefix", "--keys-only", "/registry/example.com/"]);
    assert!(keys.trim().is_empty(), "objects left: {keys}");
    let gone = c.fails(&["get", "widgets.example.com"]);
    assert!(
        gone.contains("the server doesn't have a resource type"),
        "{gone}"
    );
}
