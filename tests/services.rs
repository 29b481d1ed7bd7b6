//! Services through kubeproxy-lite, driven with the real kubectl: a ClusterIP Service in
//! front of three agnhost pods on three workers, reached from a pod on another node, from
//! nodes, through NodePorts and from one of its own pods (hairpin); a Service with no
//! endpoints rejected at once; ClientIP affinity; an endpoint leaving; kubeproxy-lite killed
//! and restarted under an open connection.
//!
//! The Services' EndpointSlices are the controller-manager's, from their selectors; an
//! endpoint leaves when its pod is deleted.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const THREE_WORKERS: &str = "clusters:\n  - name: c0\n    workers: 3\n";
const SERVERS: [(&str, &str); 3] = [("web-1", "c0-w1"), ("web-2", "c0-w2"), ("web-3", "c0-w3")];

fn pods_manifest() -> String {
    let mut yaml = String::new();
    for (name, node) in SERVERS {
        yaml += &format!(
            r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  nodeName: {node}
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: ["netexec", "--http-port=8080"]
"#
        );
    }
    // The client runs on the control-plane node: a node none of the servers is on.
    yaml += r#"---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: c0-cp
  containers:
  - name: shell
    image: busybox
    command: ["sleep", "3600"]
"#;
    yaml
}

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-nodeport}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: nothing}
spec:
  selector: {app: nothing}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

fn get(lab: &Lab, kind: &str, name: &str, path: &str) -> String {
    stdout(&lab.kubectl(
        "c0",
        &["get", kind, name, "-o", &format!("jsonpath={path}")],
    ))
}

fn wait_running(lab: &Lab, pod: &str) -> String {
    let running = eventually(Duration::from_secs(30), || {
        get(lab, "pod", pod, "{.status.phase}") == "Running"
            && !get(lab, "pod", pod, "{.status.podIP}").is_empty()
    });
    assert!(
        running,
        "{pod} is not Running: {}",
        stdout(&lab.kubectl("c0", &["get", "pod", pod, "-o", "yaml"]))
    );
    get(lab, "pod", pod, "{.status.podIP}")
}

fn in_pod(lab: &Lab, node: &str, pod: &str, script: &str) -> std::process::Output {
    let netns = format!("{}-c0-{node}-default-{pod}", lab.name);
    Command::new("ip")
        .args(["netns", "exec", &netns, "sh", "-c", script])
        .output()
        .expect("ip netns exec runs")
}

/// `count` requests for `/hostname` to `url`, each on a new connection: answer → how often.
fn hostnames(lab: &Lab, node: &str, pod: &str, url: &str, count: usize) -> BTreeMap<String, usize> {
    let script = format!("for i in $(seq {count}); do curl -s -m 2 {url}/hostname; echo; done");
    let out = stdout(&in_pod(lab, node, pod, &script));
    let mut seen = BTreeMap::new();
    for line in out.lines() {
        *seen.entry(line.to_string()).or_insert(0) += 1;
    }
    seen
}

#[test]
fn services_load_balance_reject_pin_and_survive_a_proxy_restart() {
    let lab = Lab::up("svc", Some(THREE_WORKERS));
    let manifest = write_temp(&format!("{}-pods.yaml", lab.name), &pods_manifest());
    ok(lab.kubectl("c0", &["apply", "-f", manifest.to_str().unwrap()]));
    let services = write_temp(&format!("{}-services.yaml", lab.name), SERVICES);
    ok(lab.kubectl("c0", &["apply", "-f", services.to_str().unwrap()]));
    let ips: Vec<String> = SERVERS
        .iter()
        .map(|(pod, _)| wait_running(&lab, pod))
        .collect();
    wait_running(&lab, "client");
    let cluster_ip = get(&lab, "svc", "web", "{.spec.clusterIP}");
    let url = format!("http://{cluster_ip}");

    // The rules appear in every node's table (the client's node is c0-cp).
    let programmed = eventually(Duration::from_secs(10), || {
        let table = stdout(&lab.exec("c0/cp", &["nft", "list", "table", "ip", "kube-proxy"]));
        ips.iter()
            .all(|ip| table.contains(&format!("dnat to {ip}:8080")))
    });
    let table = stdout(&lab.exec("c0/cp", &["nft", "list", "table", "ip", "kube-proxy"]));
    assert!(programmed, "{table}");
    assert!(table.contains("numgen random mod 3 vmap"), "{table}");

    // 300 requests from a pod on another node reach all three pods, each at least 20%.
    let seen = hostnames(&lab, "cp", "client", &url, 300);
    for (pod, _) in SERVERS {
        let n = seen.get(pod).copied().unwrap_or(0);
        assert!(n >= 60, "{pod} got {n} of 300: {seen:?}");
    }

    // From a node itself (the output hook), and from a pod to its own Service (hairpin).
    let from_node = stdout(&lab.exec(
        "c0/w1",
        &["curl", "-s", "-m", "2", &format!("{url}/hostname")],
    ));
    assert!(
        from_node.starts_with("web-"),
        "from node c0-w1: {from_node:?}"
    );
    let hairpin = hostnames(&lab, "w1", "web-1", &url, 30);
    assert_eq!(
        hairpin.values().sum::<usize>(),
        30,
        "every request answered: {hairpin:?}"
    );
    assert!(hairpin.keys().all(|h| h.starts_with("web-")), "{hairpin:?}");
    // About a third of them came back to web-1 itself: out and in through the same bridge
    // port (the bridge plugin's hairpinMode), masqueraded so the reply returns via the node.
    assert!(
        hairpin.contains_key("web-1"),
        "web-1 never reached itself: {hairpin:?}"
    );

    // The NodePort answers on every node's address, asked from another node.
    let node_port = get(&lab, "svc", "web-nodeport", "{.spec.ports[0].nodePort}");
    for (target, from) in [
        ("172.20.0.2", "c0/w1"),
        ("172.20.0.11", "c0/w2"),
        ("172.20.0.12", "c0/w3"),
        ("172.20.0.13", "c0/cp"),
    ] {
        let answer = stdout(&lab.exec(
            from,
            &[
                "curl",
                "-s",
                "-m",
                "2",
                &format!("http://{target}:{node_port}/hostname"),
            ],
        ));
        assert!(
            answer.starts_with("web-"),
            "NodePort {target}:{node_port} from {from}: {answer:?}"
        );
    }

    // No endpoints: refused at once, not a timeout.
    let nothing = get(&lab, "svc", "nothing", "{.spec.clusterIP}");
    let out = in_pod(
        &lab,
        "cp",
        "client",
        &format!("curl -s -m 2 -o /dev/null -w '%{{time_total}}' http://{nothing}/; echo \" $?\""),
    );
    let text = stdout(&out);
    let mut parts = text.split_whitespace();
    let seconds: f64 = parts
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(f64::MAX);
    let code = parts.next().unwrap_or("");
    assert_eq!(code, "7", "curl should be refused (exit 7): {text}");
    assert!(seconds < 0.1, "rejected in {seconds} s, want < 0.1 s");

    // ClientIP affinity: one client, one pod.
    let sticky = get(&lab, "svc", "web-sticky", "{.spec.clusterIP}");
    let pinned = hostnames(&lab, "cp", "client", &format!("http://{sticky}"), 50);
    assert_eq!(
        pinned.len(),
        1,
        "affinity should pin to one pod: {pinned:?}"
    );

    // web-3 is deleted, so it leaves the slice: its rules go, and no request reaches it
    // afterwards.
    ok(lab.kubectl("c0", &["delete", "pod", "web-3", "--wait=false"]));
    let left = Instant::now();
    let gone = eventually(Duration::from_secs(10), || {
        let table = stdout(&lab.exec("c0/cp", &["nft", "list", "table", "ip", "kube-proxy"]));
        !table.contains(&format!("default/web/tcp/http__{}/8080", ips[2]))
    });
    assert!(
        gone,
        "web-3's chain is still there after {:?}",
        left.elapsed()
    );
    let after = hostnames(&lab, "cp", "client", &url, 100);
    assert!(
        !after.contains_key("web-3"),
        "a request reached the gone endpoint: {after:?}"
    );
    assert_eq!(after.values().sum::<usize>(), 100, "{after:?}");

    // kubeproxy-lite is SIGKILLed under an open connection; the supervisor restarts it. The
    // connection and the rules survive.
    let script = format!(
        "python3 -c '
import http.client, os, sys, time
c = http.client.HTTPConnection(\"{cluster_ip}\", 80, timeout=5)
c.request(\"GET\", \"/hostname\"); first = c.getresponse().read().decode()
port = c.sock.getsockname()[1]
print(\"first\", first, port, flush=True)
while not os.path.exists(\"/tmp/{lab}-go\"): time.sleep(0.05)
c.request(\"GET\", \"/hostname\"); second = c.getresponse().read().decode()
print(\"second\", second, c.sock.getsockname()[1], flush=True)
'",
        lab = lab.name
    );
    let netns = format!("{}-c0-cp-default-client", lab.name);
    let mut held = Command::new("ip")
        .args(["netns", "exec", &netns, "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut reader = std::io::BufReader::new(held.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).unwrap();
    assert!(first.starts_with("first web-"), "{first:?}");
    let (index, old_pid) = lab.kill_process("kubeproxy-lite", "c0", "cp");
    let restarted = eventually(Duration::from_secs(20), || {
        let status = lab.status_json();
        let process = &status["processes"][index];
        process["pid"].as_i64().is_some_and(|pid| pid != old_pid) && process["state"] == "ready"
    });
    assert!(restarted, "{:#}", lab.status_json()["processes"][index]);
    std::fs::write(format!("/tmp/{}-go", lab.name), "").unwrap();
    let mut second = String::new();
    std::io::BufRead::read_line(&mut reader, &mut second).unwrap();
    let _ = held.wait();
    let _ = std::fs::remove_file(format!("/tmp/{}-go", lab.name));
    let first_port = first.split_whitespace().nth(2).unwrap_or("?");
    assert!(
        second.starts_with("second web-"),
        "the held connection broke: {second:?}"
    );
    assert_eq!(
        second.split_whitespace().nth(2),
        Some(first_port),
        "same connection: {first} / {second}"
    );
    let after_restart = hostnames(&lab, "cp", "client", &url, 30);
    assert_eq!(
        after_restart.values().sum::<usize>(),
        30,
        "{after_restart:?}"
    );
    assert!(!after_restart.contains_key("web-3"), "{after_restart:?}");

    let name = lab.name.clone();
    drop(lab);
    assert_eq!(residue(&name), Vec::<String>::new());
}
