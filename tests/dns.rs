//! End-to-end: the cluster DNS add-on, as a pod sees it. Names of Services resolve through
//! `10.96.0.10` (kube-proxy's rules to the `coredns` pods), headless Services follow their
//! ready pods, SRV records name the ports, missing names are NXDOMAIN, and one DNS pod going
//! away does not stop resolution.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, stdout, write_temp, Lab};

const TOPOLOGY: &str = "clusters:\n  - name: c0\n    workers: 2\n";

const APPS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: ["netexec", "--http-port=8080"]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-headless}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers:
  - {name: c, image: busybox, command: ["sleep", "3600"]}
"#;

fn in_client(lab: &Lab, command: &[&str]) -> std::process::Output {
    let mut args = vec!["exec", "client", "--"];
    args.extend_from_slice(command);
    lab.kubectl("c0", &args)
}

/// The addresses `getent hosts NAME` prints in the client pod, sorted.
fn resolve(lab: &Lab, name: &str) -> Vec<String> {
    let out = in_client(lab, &["getent", "ahostsv4", name]);
    let mut ips: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn jsonpath(lab: &Lab, args: &[&str]) -> String {
    stdout(&lab.kubectl("c0", args)).trim().to_string()
}

fn ready_pod_ips(lab: &Lab) -> Vec<String> {
    let json = stdout(&lab.kubectl("c0", &["get", "pods", "-l", "app=web", "-o", "json"]));
    let list: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    let ready = |pod: &serde_json::Value| {
        pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    };
    let mut ips: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pod| ready(pod) && pod["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|pod| pod["status"]["podIP"].as_str().map(str::to_string))
        .collect();
    ips.sort();
    ips
}

#[test]
fn services_resolve_by_name_from_pods() {
    let lab = Lab::up("dns", Some(TOPOLOGY));
    let manifest = write_temp(&format!("{}-apps.yaml", lab.name), APPS);
    let applied = lab.kubectl("c0", &["apply", "-f", manifest.to_str().expect("utf-8")]);
    assert!(applied.status.success(), "{applied:?}");
    let available = lab.kubectl(
        "c0",
        &["rollout", "status", "deployment/web", "--timeout=90s"],
    );
    assert!(available.status.success(), "{available:?}");
    let dns_ready = lab.kubectl(
        "c0",
        &[
            "-n",
            "kube-system",
            "rollout",
            "status",
            "deployment/coredns",
            "--timeout=90s",
        ],
    );
    assert!(dns_ready.status.success(), "{dns_ready:?}");
    let client_ready = lab.kubectl(
        "c0",
        &[
            "wait",
            "--for=condition=Ready",
            "pod/client",
            "--timeout=60s",
        ],
    );
    assert!(client_ready.status.success(), "{client_ready:?}");

    // The pod's resolver is the cluster DNS, as the kubelet writes it.
    let resolv = stdout(&in_client(&lab, &["cat", "/etc/resolv.conf"]));
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );

    // Short, namespaced and full names all give the ClusterIP (the search path at work).
    let cluster_ip = jsonpath(
        &lab,
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
    );
    for name in ["web", "web.default", "web.default.svc.cluster.local"] {
        let mut ips = Vec::new();
        let resolved = eventually(Duration::from_secs(20), || {
            ips = resolve(&lab, name);
            ips == std::slice::from_ref(&cluster_ip)
        });
        assert!(resolved, "{name} resolved to {ips:?}, not {cluster_ip}");
    }
    let page = in_client(
        &lab,
        &["curl", "-s", "--max-time", "5", "http://web/hostname"],
    );
    assert!(page.status.success(), "{page:?}");
    assert!(stdout(&page).starts_with("web-"), "{page:?}");

    // A headless Service answers with its ready pods, and follows scaling.
    let mut seen = Vec::new();
    let follows = eventually(Duration::from_secs(20), || {
        seen = resolve(&lab, "web-headless");
        seen == ready_pod_ips(&lab) && seen.len() == 2
    });
    assert!(follows, "web-headless resolved to {seen:?}");
    let scaled = lab.kubectl("c0", &["scale", "deployment/web", "--replicas=3"]);
    assert!(scaled.status.success(), "{scaled:?}");
    let follows = eventually(Duration::from_secs(60), || {
        seen = resolve(&lab, "web-headless");
        seen == ready_pod_ips(&lab) && seen.len() == 3
    });
    assert!(
        follows,
        "after scaling to 3, web-headless resolved to {seen:?}"
    );

    // SRV names the port, asked with dig through the service IP.
    let srv = in_client(
        &lab,
        &[
            "dig",
            "+short",
            "_http._tcp.web.default.svc.cluster.local",
            "SRV",
        ],
    );
    assert_eq!(
        stdout(&srv).trim(),
        "0 100 80 web.default.svc.cluster.local.",
        "{srv:?}"
    );

    // A missing name is NXDOMAIN, at once.
    let started = Instant::now();
    let missing = in_client(
        &lab,
        &[
            "dig",
            "+tries=1",
            "+time=2",
            "nope.default.svc.cluster.local",
        ],
    );
    let took = started.elapsed();
    assert!(stdout(&missing).contains("status: NXDOMAIN"), "{missing:?}");
    eprintln!("NXDOMAIN answered in {took:?} (kubectl exec included)");
    // Names outside the cluster are not forwarded anywhere.
    let outside = in_client(&lab, &["dig", "+tries=1", "+time=2", "example.org"]);
    assert!(stdout(&outside).contains("status: REFUSED"), "{outside:?}");

    // One DNS pod gone: names still resolve (through the other, while it is replaced).
    let dns_pods = jsonpath(
        &lab,
        &[
            "-n",
            "kube-system",
            "get",
            "pods",
            "-l",
            "k8s-app=kube-dns",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    let deleted = lab.kubectl(
        "c0",
        &[
            "-n",
            "kube-system",
            "delete",
            "pod",
            &dns_pods,
            "--wait=false",
        ],
    );
    assert!(deleted.status.success(), "{deleted:?}");
    for _ in 0..10 {
        let ips = resolve(&lab, "web");
        assert_eq!(
            ips,
            std::slice::from_ref(&cluster_ip),
            "resolution failed with a DNS pod gone"
        );
    }
}
