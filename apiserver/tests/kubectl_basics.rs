//! The real kubectl against a real etcd: discovery, namespaces, create/get/label/delete,
//! and the error statuses kubectl prints.

mod common;

use common::Cluster;

#[test]
fn version_and_api_resources() {
    let c = Cluster::start();
    let v = c.ok(&["version"]);
    assert!(v.contains("Server Version: v1.32.0"), "{v}");
    let r = c.ok(&["api-resources"]);
    let line = r
        .lines()
        .find(|l| l.starts_with("deployments"))
        .unwrap_or_default();
    assert!(
        line.contains("deploy") && line.contains("apps/v1") && line.contains("Deployment"),
        "{r}"
    );
    assert!(
        r.lines()
            .any(|l| l.starts_with("pods ") && l.contains(" po ")),
        "{r}"
    );
    let ns = c.ok(&["get", "namespaces"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(n), "{ns}");
    }
    let svc = c.ok(&["get", "svc", "kubernetes"]);
    assert!(
        svc.contains("10.96.0.1") && svc.contains("443/TCP"),
        "{svc}"
    );
}

#[test]
fn no_client_certificate_is_unauthorized() {
    let c = Cluster::start();
    let anon = c.dir.path().join("anon-kubeconfig");
    let ca = base64_std(&c.ca.cert_pem);
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster: {{server: '{}', certificate-authority-data: {ca}}}\ncontexts:\n- name: t\n  context: {{cluster: t, user: t}}\ncurrent-context: t\nusers:\n- name: t\n  user: {{token: not-a-valid-token}}\n",
        c.server
    );
    std::fs::write(&anon, yaml).expect("anon kubeconfig");
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&anon)
        .arg("--cache-dir")
        .arg(c.dir.path().join("anon-cache"))
        .args(["get", "pods"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("kubectl");
    let err = common::text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("error: You must be logged in to the server"),
        "{err}"
    );
}

fn base64_std(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `--validate` sends `fieldValidation`: strict (kubectl's default) refuses an unknown
/// field, warn drops it with a warning, false (Ignore) drops it silently.
#[test]
fn unknown_fields_follow_field_validation() {
    let c = Cluster::start();
    let manifest = |name: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, colour: red}}\ndata: {{a: b}}\nbogus: 1\n"
        )
    };
    let strict = c.kubectl_stdin(&["create", "-f", "-"], &manifest("strict"));
    let refused = common::text(&strict.stderr);
    assert!(
        refused.starts_with("Error from server (BadRequest): error when creating \"STDIN\": ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: ")
            && refused.contains("unknown field \"bogus\"")
            && refused.contains("unknown field \"metadata.colour\""),
        "{refused}"
    );
    assert!(c.fails(&["get", "cm", "strict"]).contains("NotFound"));

    let warned = c.kubectl_stdin(
        &["create", "--validate=warn", "-f", "-"],
        &manifest("warned"),
    );
    assert!(warned.status.success());
    let stderr = common::text(&warned.stderr);
    assert!(
        stderr.contains("Warning: unknown field \"bogus\"")
            && stderr.contains("Warning: unknown field \"metadata.colour\""),
        "{stderr}"
    );
    let ignored = c.kubectl_stdin(
        &["create", "--validate=false", "-f", "-"],
        &manifest("ignored"),
    );
    assert!(ignored.status.success() && ignored.stderr.is_empty());
    for name in ["warned", "ignored"] {
        let stored = c.ok(&["get", "cm", name, "-o", "json"]);
        assert!(
            !stored.contains("bogus")
                && !stored.contains("colour")
                && stored.contains("\"a\": \"b\""),
            "{stored}"
        );
    }
}
