//! The cluster-administration resources a fresh 1.32 cluster serves beside the workloads
//! (storage, admission, API priority and fairness, certificates, runtime classes): listed by
//! `kubectl api-resources`, stored like every other object, printed with kube's columns.

mod common;

use common::{text, Cluster};

/// The lines of a table with runs of spaces made one.
fn rows(table: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

const OBJECTS: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: sandboxed}
handler: runsc
---
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata: {name: alice}
spec:
  signerName: kubernetes.io/kube-apiserver-client
  expirationSeconds: 86400
  usages: [client auth]
  request: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KTUlJQ1ZqQ0NBVDRDQVFBd0VURVBNQTBHQTFVRUF3d0dZVzVuWld4aE1JSUJJakFOQmdrcWhraUc5dzBCQVFFRgpBQU9DQVE4QU1JSUJDZ0tDQVFFQTByczhJTHRHdTYxakx2dHhWTTJSVlRWMDNHWlJTWWw0dWluVWo4RElaWjBOCnR2MUZtRVFSd3VoaUZsOFEzcWl0Qm0wMUFSMkNJVXBGd2ZzSjZ4MXF3ckJzVkhZbGlBNVhwRVpZM3ExcGswSDQKM3Z3aGJlK1o2MVNrVHF5SVBYUUwrTUM5T1Nsbm5aUjlHaGcrR1NMZjhoYzN6Y0RrUm9ESzJiMHN1RktIdWtKNwozbFlROU5HWGIwUmJjdElpdEJxMmFWMnl2MWRpRnNaNGc2NWxTMEhRakVMRzdPbExyMi9rSm5yenlmOEttUURuCnBUT3BHdzRoVnRWVm1reWhvNWxNYXhEM1NVQXlnUnV6dW5VNGJXNGVXL2U1MXRKdWNyWHVMMXJPdjNsUlV6YlUKMWVaM3JGM1lxZFdrSFl2aDc2S2JCcXRVY0Y0eUFNRFlvSnRjUU1SYjlRSURBUUFCb0FBd0RRWUpLb1pJaHZjTgpBUUVMQlFBRGdnRUJBQ3g0eHdpMWhQcW5Hc2FHMmJHR2xYb1JiTWJ3VXhJcUw0S1VkQXE4TGxXQmwzeVQ2WmxMCmtWM1E9Ci0tLS0tRU5EIENFUlRJRklDQVRFIFJFUVVFU1QtLS0tLQo=
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {name: batch}
spec:
  priorityLevelConfiguration: {name: workload-low}
  matchingPrecedence: 1000
  distinguisherMethod: {type: ByUser}
"#;

#[test]
fn admin_resources_are_listed_stored_and_printed_with_their_columns() {
    let c = Cluster::start();
    let resources = c.ok(&["api-resources"]);
    for name in [
        "bindings",
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
        "apiservices",
        "certificatesigningrequests",
        "flowschemas",
        "prioritylevelconfigurations",
        "runtimeclasses",
        "csidrivers",
        "csinodes",
        "csistoragecapacities",
        "volumeattachments",
    ] {
        assert!(
            resources
                .lines()
                .any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing from: {resources}"
        );
    }

    let created = c.kubectl_stdin(&["create", "-f", "-"], OBJECTS);
    assert!(created.status.success(), "{}", text(&created.stderr));

    let classes = rows(&c.ok(&["get", "sc"]));
    assert_eq!(
        classes[0],
        "NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE"
    );
    assert!(
        classes[1].starts_with(
            "local (default) rancher.io/local-path Delete WaitForFirstConsumer false "
        ),
        "{classes:?}"
    );
    let runtime = c.ok(&["get", "runtimeclass", "sandboxed", "--no-headers"]);
    assert!(
        rows(&runtime)[0].starts_with("sandboxed runsc "),
        "{runtime}"
    );
    let flows = c.ok(&["get", "flowschemas"]);
    assert!(
        rows(&flows)[0]
            == "NAME PRIORITYLEVEL MATCHINGPRECEDENCE DISTINGUISHERMETHOD AGE MISSINGPL"
            && rows(&flows)[1].starts_with("batch workload-low 1000 ByUser "),
        "{flows}"
    );

    // A CSR goes from Pending to Approved through its approval subresource, as
    // `kubectl certificate approve` does it.
    let pending = c.ok(&["get", "csr", "alice", "--no-headers"]);
    assert!(
        rows(&pending)[0].ends_with("kubernetes.io/kube-apiserver-client admin 24h Pending"),
        "{pending}"
    );
    c.ok(&["certificate", "approve", "alice"]);
    let approved = c.ok(&["get", "csr", "alice", "--no-headers"]);
    assert!(rows(&approved)[0].ends_with(" 24h Approved"), "{approved}");
    let spec = c.ok(&["get", "csr", "alice", "-o", "jsonpath={.spec.signerName}"]);
    assert_eq!(spec, "kubernetes.io/kube-apiserver-client");
}

/// `kubectl get cs`: probed when asked, with kube's deprecation warning. This harness runs
/// no controller-manager, so its probe fails as kube's does.
#[test]
fn component_statuses_are_probed_when_asked() {
    let c = Cluster::start();
    let out = c.kubectl(&["get", "componentstatuses"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Warning: v1 ComponentStatus is deprecated in v1.19+"),
        "{}",
        text(&out.stderr)
    );
    let table = rows(&text(&out.stdout));
    assert_eq!(table[0], "NAME STATUS MESSAGE ERROR");
    assert!(
        table.contains(&"etcd-0 Healthy ok".to_string()),
        "{table:?}"
    );
    assert!(
        table.iter().any(|l| l
            .starts_with("controller-manager Unhealthy Get \"http://127.0.0.1:10257/healthz\"")),
        "{table:?}"
    );
    let missing = c.kubectl(&["get", "cs", "kube-proxy"]);
    assert!(
        text(&missing.stderr)
            .contains("Error from server (NotFound): componentstatuses \"kube-proxy\" not found"),
        "{}",
        text(&missing.stderr)
    );
}

const NEW_EVENT: &str = r#"
apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: w1.probe}
eventTime: "2026-11-24T08:00:00.000000Z"
regarding: {kind: Node, name: w1}
note: disk is slow
reportingController: example.com/prober
reportingInstance: prober-1
action: Probe
reason: SlowDisk
type: Warning
"#;

/// Events are one collection served in two shapes: core `v1` and `events.k8s.io/v1`.
#[test]
fn events_are_served_in_both_group_versions() {
    let c = Cluster::start();
    let resources = rows(&c.ok(&["api-resources", "--api-group=events.k8s.io"]));
    assert_eq!(resources[1], "events ev events.k8s.io/v1 true Event");

    let created = c.kubectl_stdin(&["create", "-f", "-"], NEW_EVENT);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let core = rows(&c.ok(&["get", "events"]));
    assert_eq!(core[0], "LAST SEEN TYPE REASON OBJECT MESSAGE");
    assert!(
        core[1].ends_with(" Warning SlowDisk node/w1 disk is slow"),
        "{core:?}"
    );
    let message = c.ok(&["get", "events", "w1.probe", "-o", "jsonpath={.message}"]);
    assert_eq!(message, "disk is slow");
    let note = c.ok(&[
        "get",
        "events.events.k8s.io",
        "-o",
        "jsonpath={.items[*].note} {.items[*].regarding.name}",
    ]);
    assert_eq!(note, "disk is slow w1");

    let invalid = NEW_EVENT
        .replace("w1.probe", "bad")
        .replace("reason: SlowDisk\n", "");
    let refused = c.kubectl_stdin(&["create", "-f", "-"], &invalid);
    assert!(
        text(&refused.stderr).contains("reason: Required value"),
        "{}",
        text(&refused.stderr)
    );
    assert!(c.fails(&["get", "events", "bad"]).contains("NotFound"));

    let explained = c.ok(&[
        "explain",
        "events.regarding",
        "--api-version=events.k8s.io/v1",
    ]);
    assert!(
        explained.contains("GROUP:      events.k8s.io"),
        "{explained}"
    );
}
