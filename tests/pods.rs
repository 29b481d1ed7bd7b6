//! Pods from the API server on lab nodes: the kubelet registers each Node, runs the Pods bound
//! to it (`spec.nodeName`; there is no scheduler yet) through the runtime and the real CNI
//! plugins, reports their status, and removes them when they are deleted. Driven with the
//! real kubectl.

mod common;

use std::time::Duration;

use common::*;

const TWO_WORKERS: &str = "clusters:\n  - name: c0\n    workers: 2\n";

const SERVER_AND_CLIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: server}}
spec:
  nodeName: c0-w1
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: ["netexec", "--http-port=8080", "--udp-port=8081"]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: c0-w2
  containers:
  - name: shell
    image: busybox
    command: ["sleep", "3600"]
"#;

fn jsonpath(lab: &Lab, pod: &str, path: &str) -> String {
    lab.pod_jsonpath(pod, path)
}

fn wait_running(lab: &Lab, pod: &str) {
    lab.wait_pod_running(pod, Duration::from_secs(20));
}

#[test]
fn pods_run_on_their_nodes_and_talk_without_nat() {
    let lab = Lab::up("pods", Some(TWO_WORKERS));
    let nodes = ok(lab.kubectl("c0", &["get", "nodes"]));
    for node in ["c0-cp ", "c0-w1 ", "c0-w2 "] {
        let line = nodes
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("{node} missing:\n{nodes}"));
        assert!(line.contains(" Ready "), "{line}");
    }
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("c0-cp ") && l.contains("control-plane")),
        "{nodes}"
    );

    let manifest = write_temp(&format!("{}-pods.yaml", lab.name), SERVER_AND_CLIENT);
    ok(lab.kubectl("c0", &["apply", "-f", manifest.to_str().unwrap()]));
    wait_running(&lab, "server");
    wait_running(&lab, "client");

    // Each pod has an address from its node's flannel subnet.
    let server_ip = jsonpath(&lab, "server", "{.status.podIP}");
    let client_ip = jsonpath(&lab, "client", "{.status.podIP}");
    let pod_cidr = |node: &str| {
        stdout(&lab.kubectl(
            "c0",
            &["get", "node", node, "-o", "jsonpath={.spec.podCIDR}"],
        ))
    };
    let prefix = |cidr: String| cidr.rsplit_once('.').map(|(p, _)| format!("{p}.")).unwrap();
    assert!(
        server_ip.starts_with(&prefix(pod_cidr("c0-w1"))),
        "{server_ip}"
    );
    assert!(
        client_ip.starts_with(&prefix(pod_cidr("c0-w2"))),
        "{client_ip}"
    );
    assert_eq!(jsonpath(&lab, "server", "{.status.hostIP}"), "172.20.0.11");
    // Conditions carry the time of their last change, as `kubectl describe` shows them.
    let ready_since = jsonpath(
        &lab,
        "server",
        r#"{.status.conditions[?(@.type=="Ready")].lastTransitionTime}"#,
    );
    assert!(
        ready_since.len() == 20 && ready_since.starts_with("20") && ready_since.ends_with('Z'),
        "Ready's lastTransitionTime is {ready_since:?}"
    );

    // The client reaches the server across nodes (agnhost netexec, as in Kubernetes' own
    // network tests), and the server sees the client's own address: pod to pod, no NAT.
    let client_netns = format!("{}-c0-w2-default-client", lab.name);
    let get = |path: &str| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &client_netns, "curl", "-s", "-m", "2"])
            .arg(format!("http://{server_ip}:8080{path}"))
            .output()
            .unwrap();
        stdout(&out)
    };
    let served = eventually(Duration::from_secs(15), || get("/hostname") == "server");
    assert!(
        served,
        "client could not reach the server at {server_ip}:8080"
    );
    let seen = get("/clientip");
    assert!(
        seen.starts_with(&format!("{client_ip}:")),
        "the server saw {seen}, not {client_ip}"
    );
    // kubectl logs, through the API server to the kubelet of the pod's node.
    let log = ok(lab.kubectl("c0", &["logs", "server"]));
    assert!(log.contains("Started HTTP server on port 8080"), "{log}");
    let last = ok(lab.kubectl("c0", &["logs", "server", "--tail=1"]));
    assert_eq!(last.lines().count(), 1, "{last}");
    let wrong = lab.kubectl("c0", &["logs", "server", "-c", "nope"]);
    assert!(
        stderr(&wrong).contains("container nope is not valid for pod server"),
        "{}",
        stderr(&wrong)
    );

    // A killed kubelet is restarted and adopts the running pod: no duplicate, same address.
    let (index, _) = lab.kill_process("kubelet", "c0", "w1");
    let back = eventually(Duration::from_secs(20), || {
        lab.status_json()["processes"][index]["state"] == "ready"
    });
    assert!(back, "kubelet not restarted");
    std::thread::sleep(Duration::from_secs(2));
    // (The node may run other pods too, such as a cluster DNS replica: count this one's.)
    let sandboxes = ok(lab.run(&["crictl", "c0/w1", "pods"]));
    let servers = sandboxes
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "server"))
        .count();
    assert_eq!(servers, 1, "one sandbox, not two: {sandboxes}");
    assert_eq!(jsonpath(&lab, "server", "{.status.podIP}"), server_ip);

    // Deleting pods removes them from the API and their sandbox, veth and address from the node.
    ok(lab.kubectl(
        "c0",
        &[
            "delete",
            "pod",
            "server",
            "client",
            "--wait=true",
            "--timeout=20s",
        ],
    ));
    assert!(!path_exists(&format!(
        "/run/netns/{}-c0-w1-default-server",
        lab.name
    )));
    let sandboxes = ok(lab.run(&["crictl", "c0/w1", "pods"]));
    assert!(
        !sandboxes
            .lines()
            .any(|l| l.split_whitespace().any(|w| w == "default")),
        "{sandboxes}"
    );
    let leases = ok(lab.exec("c0/w1", &["ls", "/var/lib/cni/networks/cbr0"]));
    assert!(!leases.contains(&server_ip), "{leases}");
}

#[test]
fn restart_policies_and_bad_images_show_in_status() {
    let lab = Lab::up("podstatus", Some(TWO_WORKERS));
    let manifest = write_temp(
        &format!("{}-status.yaml", lab.name),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  nodeName: c0-w1
  restartPolicy: OnFailure
  containers: [{name: c, image: busybox, command: ["sh", "-c", "exit 2"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: done}
spec:
  nodeName: c0-w1
  restartPolicy: Never
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: noimage}
spec:
  nodeName: c0-w1
  containers: [{name: c, image: example.com/unknown:v1}]
"#,
    );
    ok(lab.kubectl("c0", &["apply", "-f", manifest.to_str().unwrap()]));
    let settled = eventually(Duration::from_secs(20), || {
        jsonpath(
            &lab,
            "crash",
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "CrashLoopBackOff"
            && jsonpath(&lab, "done", "{.status.phase}") == "Succeeded"
            && jsonpath(
                &lab,
                "noimage",
                "{.status.containerStatuses[0].state.waiting.reason}",
            ) == "InvalidImageName"
    });
    assert!(
        settled,
        "{}",
        stdout(&lab.kubectl("c0", &["get", "pods", "-o", "yaml"]))
    );
    assert_eq!(
        jsonpath(
            &lab,
            "crash",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "2"
    );
    assert_eq!(
        jsonpath(
            &lab,
            "done",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "Completed"
    );
    let message = jsonpath(
        &lab,
        "noimage",
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(message.contains("not in knetsim's catalogue"), "{message}");
    // kubectl prints the container's reason, as on a real cluster.
    let table = ok(lab.kubectl("c0", &["get", "pods"]));
    let row = |pod: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{pod} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row("done").contains(" Completed "), "{table}");
    assert!(row("crash").contains(" CrashLoopBackOff "), "{table}");
    assert!(row("noimage").contains(" InvalidImageName "), "{table}");
}

#[test]
fn a_pod_slow_to_stop_holds_up_no_other() {
    let lab = Lab::up("podslow", Some(TWO_WORKERS));
    let stubborn = write_temp(
        &format!("{}-stubborn.yaml", lab.name),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  nodeName: c0-w1
  terminationGracePeriodSeconds: 20
  containers: [{name: c, image: busybox, command: ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]}]
"#,
    );
    ok(lab.kubectl("c0", &["apply", "-f", stubborn.to_str().unwrap()]));
    wait_running(&lab, "stubborn");
    // Deleting it takes its grace period (the container ignores SIGTERM) …
    ok(lab.kubectl("c0", &["delete", "pod", "stubborn", "--wait=false"]));
    std::thread::sleep(Duration::from_millis(500));
    // … while a new pod on the same node starts at once.
    let started = std::time::Instant::now();
    let quick = write_temp(
        &format!("{}-quick.yaml", lab.name),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: quick}\nspec:\n  nodeName: c0-w1\n  containers: [{name: c, image: busybox, command: [sleep, '600']}]\n",
    );
    ok(lab.kubectl("c0", &["apply", "-f", quick.to_str().unwrap()]));
    wait_running(&lab, "quick");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "quick waited {:?}",
        started.elapsed()
    );
    assert_eq!(
        jsonpath(&lab, "stubborn", "{.metadata.name}"),
        "stubborn",
        "stubborn should still be stopping"
    );
}

/// The crash acceptance of issue 5: SIGKILL the kubelet and flannel of a node while its pod
/// runs. The supervisor restarts both; the pod keeps its sandbox, IP, container and
/// connectivity across nodes, and nothing is made twice (sandbox, pause process, IP lease,
/// veth, flannel subnet lease). A pod started afterwards gets an address of its own.
#[test]
fn a_node_whose_kubelet_and_flannel_are_killed_keeps_its_pods_and_their_network() {
    let lab = Lab::up_bare("podcrash", Some(TWO_WORKERS));
    let manifest = write_temp(&format!("{}-pods.yaml", lab.name), SERVER_AND_CLIENT);
    ok(lab.kubectl("c0", &["apply", "-f", manifest.to_str().unwrap()]));
    wait_running(&lab, "server");
    wait_running(&lab, "client");
    let server_ip = jsonpath(&lab, "server", "{.status.podIP}");
    let client_ip = jsonpath(&lab, "client", "{.status.podIP}");
    let client_netns = format!("{}-c0-w2-default-client", lab.name);
    let server_netns = format!("{}-c0-w1-default-server", lab.name);
    let get = |path: &str| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &client_netns, "curl", "-s", "-m", "2"])
            .arg(format!("http://{server_ip}:8080{path}"))
            .output()
            .unwrap();
        stdout(&out)
    };
    assert!(
        eventually(Duration::from_secs(15), || get("/hostname") == "server"),
        "client could not reach the server at {server_ip}:8080 before the crash"
    );
    let subnet_env = ok(lab.exec("c0/w1", &["cat", "/run/flannel/subnet.env"]));
    let subnet_leases = lab.flannel_lease_keys("c0");
    let lease_dir = format!(
        "/tmp/knetsim/{}/nodes/c0-w1/var/lib/cni/networks/cbr0",
        lab.name
    );
    let ip_leases = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&lease_dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    assert_eq!(ip_leases(), vec![server_ip.clone()]);
    let pause_of = |pod: &str| {
        let pattern = format!("pause --lab {} --pod default/{pod} ", lab.name);
        let out = std::process::Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        stdout(&out).lines().count()
    };
    assert_eq!(pause_of("server"), 1);
    let containers_before = ok(lab.run(&["crictl", "c0/w1", "ps"]));

    // Both node agents die at once.
    let (kubelet, kubelet_pid) = lab.kill_process("kubelet", "c0", "w1");
    let (flannel, flannel_pid) = lab.kill_process("flannel", "c0", "w1");
    let restarted = eventually(Duration::from_secs(30), || {
        let status = lab.status_json();
        [(kubelet, kubelet_pid), (flannel, flannel_pid)]
            .iter()
            .all(|(index, old)| {
                let p = &status["processes"][*index];
                p["state"] == "ready" && p["restarts"] == 1 && p["pid"].as_i64() != Some(*old)
            })
    });
    assert!(
        restarted,
        "kubelet and flannel were not both restarted: {}",
        lab.status_json()
    );
    // The restarted kubelet's first full sync has run (it relists every second).
    std::thread::sleep(Duration::from_secs(3));

    // The pod is the same pod: same IP, same container, never restarted.
    assert_eq!(jsonpath(&lab, "server", "{.status.podIP}"), server_ip);
    assert_eq!(jsonpath(&lab, "server", "{.status.phase}"), "Running");
    assert_eq!(
        jsonpath(
            &lab,
            "server",
            "{.status.containerStatuses[0].restartCount}"
        ),
        "0"
    );
    assert_eq!(ok(lab.run(&["crictl", "c0/w1", "ps"])), containers_before);
    // Nothing twice: one sandbox, one pause process, one IP lease, one veth, the same subnet.
    let sandboxes = ok(lab.run(&["crictl", "c0/w1", "pods"]));
    assert_eq!(
        sandboxes
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == "server"))
            .count(),
        1,
        "{sandboxes}"
    );
    assert_eq!(pause_of("server"), 1);
    assert_eq!(ip_leases(), vec![server_ip.clone()]);
    // The pods' veths are the ports of the node's cni0 bridge.
    let ports = ok(lab.exec("c0/w1", &["ip", "-o", "link", "show", "master", "cni0"]));
    assert_eq!(ports.lines().count(), 1, "{ports}");
    assert_eq!(
        ok(lab.exec("c0/w1", &["cat", "/run/flannel/subnet.env"])),
        subnet_env
    );
    assert_eq!(lab.flannel_lease_keys("c0"), subnet_leases);

    // Connectivity across nodes, both ways, with no NAT.
    assert!(
        eventually(Duration::from_secs(15), || get("/hostname") == "server"),
        "client could not reach the server at {server_ip}:8080 after the crash"
    );
    let seen = get("/clientip");
    assert!(
        seen.starts_with(&format!("{client_ip}:")),
        "the server saw {seen}, not {client_ip}"
    );
    let ping = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &server_netns,
            "ping",
            "-c1",
            "-W2",
            &client_ip,
        ])
        .output()
        .unwrap();
    assert!(ping.status.success(), "server → client: {}", stdout(&ping));

    // A pod started on the node afterwards gets an address of its own and reaches the server.
    let after = write_temp(
        &format!("{}-after.yaml", lab.name),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: after}\nspec:\n  nodeName: c0-w1\n  containers: [{name: c, image: busybox, command: [sleep, '600']}]\n",
    );
    ok(lab.kubectl("c0", &["apply", "-f", after.to_str().unwrap()]));
    wait_running(&lab, "after");
    let after_ip = jsonpath(&lab, "after", "{.status.podIP}");
    assert_ne!(after_ip, server_ip);
    let mut expected = vec![server_ip.clone(), after_ip.clone()];
    expected.sort();
    assert_eq!(ip_leases(), expected);
    let ports = ok(lab.exec("c0/w1", &["ip", "-o", "link", "show", "master", "cni0"]));
    assert_eq!(ports.lines().count(), 2, "{ports}");
    let after_netns = format!("{}-c0-w1-default-after", lab.name);
    let ping = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &after_netns,
            "ping",
            "-c1",
            "-W2",
            &client_ip,
        ])
        .output()
        .unwrap();
    assert!(ping.status.success(), "after → client: {}", stdout(&ping));
}
