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
