//! The API server as part of a lab: started by `up` on each control-plane node, reached by
//! the real kubectl through the lab's kubeconfig, persisted in the cluster's etcd, restarted
//! by the supervisor without losing anything.

mod common;

use std::time::Duration;

use common::*;

const SMALL: &str = "clusters:\n  - name: c0\n    workers: 1\n  - name: c1\n    workers: 1\n";

#[test]
fn kubectl_reaches_each_cluster_and_objects_live_in_etcd() {
    let lab = Lab::up("api", Some(SMALL));
    let path = ok(lab.run(&["kubeconfig"]));
    assert_eq!(path.trim(), format!("/tmp/knetsim/{}/kubeconfig", lab.name));

    let version = ok(lab.kubectl("c0", &["version"]));
    assert!(version.contains("Server Version: v1.32"), "{version}");
    let namespaces = ok(lab.kubectl("c1", &["get", "namespaces", "-o", "name"]));
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            namespaces.contains(&format!("namespace/{ns}")),
            "{namespaces}"
        );
    }
    let kubernetes = ok(lab.kubectl(
        "c0",
        &[
            "get",
            "service",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    ));
    assert_eq!(kubernetes, "10.96.0.1");

    // The control plane's parts are healthy, as `kubectl get cs` probes them.
    let statuses = ok(lab.kubectl("c0", &["get", "cs", "--no-headers"]));
    let healthy: Vec<String> = statuses
        .lines()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        healthy,
        [
            "scheduler Healthy ok",
            "controller-manager Healthy ok",
            "etcd-0 Healthy ok"
        ],
        "{statuses}"
    );

    // A TokenReview tells who a service-account token the server issued stands for.
    // (The ServiceAccount controller makes `default` soon after the namespace exists.)
    let mut token = String::new();
    let issued = eventually(Duration::from_secs(20), || {
        let out = lab.kubectl("c0", &["create", "token", "default"]);
        token = stdout(&out);
        out.status.success()
    });
    assert!(issued, "no token for the default service account");
    let review = format!(
        r#"{{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","spec":{{"token":"{}"}}}}"#,
        token.trim()
    );
    let manifest = write_temp(&format!("{}-tokenreview.json", lab.name), &review);
    let path = manifest.to_str().expect("utf-8 temp path");
    let answer = ok(lab.kubectl(
        "c0",
        &[
            "create",
            "--raw",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            "-f",
            path,
        ],
    ));
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("a TokenReview");
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    assert_eq!(
        answer["status"]["user"]["username"], "system:serviceaccount:default:default",
        "{answer}"
    );

    // An object is a JSON value under /registry in that cluster's etcd, and only there.
    ok(lab.kubectl(
        "c0",
        &[
            "create",
            "configmap",
            "greeting",
            "--from-literal=hello=world",
        ],
    ));
    let stored = ok(lab.run(&[
        "etcdctl",
        "c0",
        "--",
        "get",
        "/registry/configmaps/default/greeting",
        "--print-value-only",
    ]));
    assert!(
        stored.contains(r#""kind":"ConfigMap""#) && stored.contains(r#""hello":"world""#),
        "{stored}"
    );
    let other = lab.kubectl("c1", &["get", "configmap", "greeting"]);
    assert!(String::from_utf8_lossy(&other.stderr).contains(r#"configmaps "greeting" not found"#));

    // The user's kubeconfig got one context per cluster, the first selected.
    let user = std::fs::read_to_string(user_kubeconfig(&lab.name)).unwrap();
    assert!(
        user.contains(&format!("current-context: knetsim-{}-c0", lab.name)),
        "{user}"
    );
    assert!(user.contains(&format!("knetsim-{}-c1", lab.name)), "{user}");

    // Without a client certificate: 401, as a real API server answers.
    let port = user_port(&lab);
    let anonymous = std::process::Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("https://127.0.0.1:{port}/api"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");

    // Killed, restarted by the supervisor, nothing lost.
    lab.kill_process("apiserver", "c0", "cp");
    let back = eventually(Duration::from_secs(20), || {
        lab.kubectl(
            "c0",
            &[
                "get",
                "configmap",
                "greeting",
                "-o",
                "jsonpath={.data.hello}",
            ],
        )
        .stdout
            == b"world"
    });
    assert!(back, "the API server did not come back with the configmap");

    let name = lab.name.clone();
    drop(lab);
    // The kubeconfig held only this lab's entries, so it went with them.
    assert!(
        !user_kubeconfig(&name).exists(),
        "down left the user's kubeconfig behind"
    );
}

/// The loopback port of c0's API server, from the lab's kubeconfig.
fn user_port(lab: &Lab) -> String {
    let kubeconfig =
        std::fs::read_to_string(format!("/tmp/knetsim/{}/kubeconfig", lab.name)).unwrap();
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
        .expect("a server line")
        .trim()
        .to_string()
}
