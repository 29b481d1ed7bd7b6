//! `kubectl auth whoami` and `kubectl auth can-i` against the server: the user and groups of
//! the client certificate, and the answers of a cluster that authorizes everything
//! (`--authorization-mode=AlwaysAllow`), as kubectl prints them.

mod common;

use common::{text, Cluster};

/// The lines of a table with runs of spaces made one.
fn rows(table: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn whoami_and_can_i() {
    let c = Cluster::start();

    // Discovery lists the reviews with the one verb they have.
    let resources = c.ok(&["api-resources", "-o", "wide"]);
    for (name, group, kind) in [
        (
            "selfsubjectreviews",
            "authentication.k8s.io/v1",
            "SelfSubjectReview",
        ),
        (
            "selfsubjectaccessreviews",
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
        ),
        (
            "selfsubjectrulesreviews",
            "authorization.k8s.io/v1",
            "SelfSubjectRulesReview",
        ),
    ] {
        let row = resources
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_default();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            [name, group, "false", kind, "create"],
            "{resources}"
        );
    }

    // The harness's kubeconfig holds a certificate for CN=admin, O=system:masters.
    let who = c.ok(&["auth", "whoami"]);
    assert_eq!(
        rows(&who),
        [
            "ATTRIBUTE VALUE",
            "Username admin",
            "Groups [system:masters system:authenticated]",
        ],
        "{who}"
    );
    let json = c.ok(&["auth", "whoami", "-o", "json"]);
    let review: serde_json::Value = serde_json::from_str(&json).expect("whoami -o json");
    assert_eq!(review["kind"], "SelfSubjectReview", "{json}");
    assert_eq!(review["apiVersion"], "authentication.k8s.io/v1", "{json}");
    assert_eq!(review["status"]["userInfo"]["username"], "admin", "{json}");

    for args in [
        &["auth", "can-i", "create", "pods"][..],
        &[
            "auth",
            "can-i",
            "delete",
            "deployments.apps",
            "-n",
            "kube-system",
        ],
        &["auth", "can-i", "*", "*"],
        &["auth", "can-i", "get", "/healthz"],
    ] {
        let out = c.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "yes\n", "kubectl {args:?}");
    }
    let list = c.ok(&["auth", "can-i", "--list"]);
    assert_eq!(
        rows(&list),
        [
            "Resources Non-Resource URLs Resource Names Verbs",
            "*.* [] [] [*]",
            "[*] [] [*]",
        ],
        "{list}"
    );

    // The review itself: echoed with its status, the zero metadata Go writes, nothing stored.
    let raw = c.kubectl_stdin(
        &["create", "--raw", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "-f", "-"],
        r#"{"kind":"SelfSubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"resourceAttributes":{"verb":"list","resource":"secrets"}}}"#,
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&raw.stdout).unwrap_or_else(|_| panic!("{}", text(&raw.stderr)));
    assert_eq!(
        answer,
        serde_json::json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": {"resourceAttributes": {"verb": "list", "resource": "secrets"}},
            "status": {"allowed": true}})
    );
    let bad = c.kubectl_stdin(
        &[
            "create",
            "--raw",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            "-f",
            "-",
        ],
        r#"{"kind":"SelfSubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{}}"#,
    );
    assert!(!bad.status.success());
    let err = text(&bad.stderr);
    assert!(
        err.contains(
            "exactly one of nonResourceAttributes or resourceAttributes must be specified"
        ),
        "{err}"
    );
}
