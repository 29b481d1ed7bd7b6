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

/// `kubectl api-resources -o wide` lists `name group namespaced kind` with the one verb
/// `create`.
fn assert_create_only(resources: &str, row: [&str; 4]) {
    let listed = resources
        .lines()
        .find(|l| l.starts_with(&format!("{} ", row[0])))
        .unwrap_or_default();
    let mut want = row.to_vec();
    want.push("create");
    assert_eq!(
        listed.split_whitespace().collect::<Vec<_>>(),
        want,
        "{resources}"
    );
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
        assert_create_only(&resources, [name, group, "false", kind]);
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

/// The reviews a webhook authorizer or authenticator sends about someone else: listed in
/// discovery, answered as AlwaysAllow and the server's own token authentication answer,
/// with kube's errors for what they must hold.
#[test]
fn reviews_about_other_subjects_and_tokens() {
    let c = Cluster::start();
    let resources = c.ok(&["api-resources", "-o", "wide"]);
    for (name, group, namespaced, kind) in [
        (
            "tokenreviews",
            "authentication.k8s.io/v1",
            "false",
            "TokenReview",
        ),
        (
            "localsubjectaccessreviews",
            "authorization.k8s.io/v1",
            "true",
            "LocalSubjectAccessReview",
        ),
        (
            "subjectaccessreviews",
            "authorization.k8s.io/v1",
            "false",
            "SubjectAccessReview",
        ),
    ] {
        assert_create_only(&resources, [name, group, namespaced, kind]);
    }
    // As a user creates them: kubectl validates each against the OpenAPI v2 schema first.
    let create = |body: &str| {
        let args = ["create", "-n", "web", "-f", "-", "-o", "json"];
        let out = c.kubectl_stdin(&args, body);
        let answer = serde_json::from_slice::<serde_json::Value>(&out.stdout).ok();
        (answer, text(&out.stderr))
    };

    let (answer, err) = create(
        r#"{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"user":"alice","resourceAttributes":{"verb":"get","resource":"pods","namespace":"web"}}}"#,
    );
    assert_eq!(
        answer.map(|a| a["status"].clone()),
        Some(serde_json::json!({"allowed": true})),
        "{err}"
    );
    let (answer, err) = create(
        r#"{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"usr":"alice"}}"#,
    );
    assert!(answer.is_none());
    assert!(
        err.contains(
            r#"unknown field "usr" in io.k8s.api.authorization.v1.SubjectAccessReviewSpec"#
        ),
        "kubectl's own validation, from the protobuf OpenAPI v2 document: {err}"
    );
    let (answer, err) = create(
        r#"{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"resourceAttributes":{"verb":"get","resource":"pods"}}}"#,
    );
    assert!(answer.is_none());
    assert!(
        err.contains("at least one of user or group must be specified"),
        "{err}"
    );

    let (answer, err) = create(
        r#"{"kind":"LocalSubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"groups":["devs"],"resourceAttributes":{"verb":"list","resource":"secrets"}}}"#,
    );
    let answer = answer.unwrap_or_else(|| panic!("{err}"));
    assert_eq!(answer["metadata"]["namespace"], "web");
    assert_eq!(answer["status"]["allowed"], true);
    let (_, err) = create(
        r#"{"kind":"LocalSubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"user":"bob","resourceAttributes":{"verb":"list","resource":"secrets","namespace":"db"}}}"#,
    );
    assert!(
        err.contains("spec.resourceAttributes.namespace must match namespace: web"),
        "{err}"
    );

    // This server signs no service-account tokens: any token is unknown to it.
    let (answer, err) = create(
        r#"{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{"token":"not.a.token"}}"#,
    );
    assert_eq!(
        answer.map(|a| a["status"].clone()),
        Some(serde_json::json!({"user": {}})),
        "{err}"
    );
    let (_, err) =
        create(r#"{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{}}"#);
    assert!(
        err.contains("token is required for TokenReview in authentication"),
        "{err}"
    );
}
