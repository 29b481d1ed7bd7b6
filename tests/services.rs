//! Services through kubeproxy-lite, driven with the real kubectl: a ClusterIP Service in
//! front of three agnhost pods on three workers, reached from a pod on another node, from
//! nodes, through NodePorts and from one of its own pods (hairpin); a Service with no
//! endpoints rejected at once; ClientIP affinity; a Deployment scaled to one and back; an
//! endpoint leaving, and a UDP flow to it moved to a live one; kubeproxy-lite killed and restarted under an open connection; a table
//! deleted by hand and repaired. `--static` is in `services_static.rs`.
//!
//! The Services' EndpointSlices are the controller-manager's, from their selectors; an
//! endpoint leaves when its pod is deleted.

mod common;
mod services_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use services_support::*;

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
    args: ["netexec", "--http-port=8080", "--udp-port=8081"]
"#
        );
    }
    // A Deployment of three, scaled to one and back by the test.
    yaml += r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {name: scaled}
spec:
  replicas: 3
  selector: {matchLabels: {app: scaled}}
  template:
    metadata: {labels: {app: scaled}}
    spec:
      containers:
      - name: netexec
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: ["netexec", "--http-port=8080"]
"#;
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
metadata: {name: scaled}
spec:
  selector: {app: scaled}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: nothing}
spec:
  selector: {app: nothing}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-udp}
spec:
  selector: {app: web}
  ports: [{name: echo, port: 5353, targetPort: 8081, protocol: UDP}]
"#;

/// The ready addresses in `service`'s EndpointSlices.
fn ready_endpoints(lab: &Lab, service: &str) -> Vec<String> {
    let out = stdout(&lab.kubectl(
        "c0",
        &[
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={service}"),
            "-o",
            "jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]} {end}",
        ],
    ));
    let mut addresses: Vec<String> = out.split_whitespace().map(String::from).collect();
    addresses.sort();
    addresses
}

/// The endpoint addresses `service`'s chains DNAT to in the control-plane node's table.
fn programmed_endpoints(lab: &Lab, service: &str) -> Vec<String> {
    let table = stdout(&lab.exec("c0/cp", &["nft", "list", "table", "ip", "kube-proxy"]));
    let marker = format!("default/{service}/tcp/http__");
    let mut addresses: Vec<String> = table
        .lines()
        .filter_map(|line| line.split(&marker).nth(1))
        .filter(|rest| rest.trim_end().ends_with('{'))
        .filter_map(|rest| rest.split('/').next().map(String::from))
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The Deployment `scaled` (3 replicas) goes to 1 and back to 3 while a client in a pod sends
/// a request on a new connection every 10 ms. Once the node's rules have dropped a pod, no
/// request started after that reaches it; back at 3, all three share the load again.
fn scale_to_one_and_back(lab: &Lab) {
    let service_ip = get(lab, "svc", "scaled", "{.spec.clusterIP}");
    let url = format!("http://{service_ip}");
    let settled = |count: usize| {
        eventually(Duration::from_secs(60), || {
            let ready = ready_endpoints(lab, "scaled");
            ready.len() == count && programmed_endpoints(lab, "scaled") == ready
        })
    };
    assert!(
        settled(3),
        "slice {:?}, rules {:?}",
        ready_endpoints(lab, "scaled"),
        programmed_endpoints(lab, "scaled")
    );
    let shares = |when: &str| {
        let seen = hostnames(lab, "cp", "client", &url, 150);
        assert_eq!(seen.len(), 3, "{when}: {seen:?}");
        for (pod, n) in &seen {
            assert!(*n >= 30, "{when}: {pod} got {n} of 150: {seen:?}");
        }
    };
    shares("3 replicas");

    let stop = format!("/tmp/{}-scaled-stop", lab.name);
    let script = format!(
        "python3 -c '
import http.client, os, time
while not os.path.exists(\"{stop}\"):
    t = time.time()
    try:
        c = http.client.HTTPConnection(\"{service_ip}\", 80, timeout=1)
        c.request(\"GET\", \"/hostname\"); r = c.getresponse().read().decode(); c.close()
    except Exception as e:
        r = \"error:\" + type(e).__name__
    print(\"%.6f %s\" % (t, r), flush=True)
    time.sleep(0.01)
'"
    );
    let netns = format!("{}-c0-cp-default-client", lab.name);
    let requests = Command::new("ip")
        .args(["netns", "exec", &netns, "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    std::thread::sleep(Duration::from_millis(500));
    let before: BTreeMap<String, String> = pod_addresses(lab);
    let scaled_at = now();
    ok(lab.kubectl("c0", &["scale", "deployment/scaled", "--replicas=1"]));
    let (mut slice_at, mut rules_at) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && (slice_at.is_none() || rules_at.is_none()) {
        if slice_at.is_none() && ready_endpoints(lab, "scaled").len() == 1 {
            slice_at = Some(now());
        }
        if rules_at.is_none() && programmed_endpoints(lab, "scaled").len() == 1 {
            rules_at = Some(now());
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&stop, "").expect("the stop file");
    let output = requests.wait_with_output().expect("the request loop ends");
    let _ = std::fs::remove_file(&stop);
    let (Some(slice_at), Some(rules_at)) = (slice_at, rules_at) else {
        panic!("the slice or the rules never got down to one endpoint");
    };
    let kept = programmed_endpoints(lab, "scaled");
    let kept_pod = before
        .iter()
        .find(|(_, ip)| kept.contains(ip))
        .map(|(pod, _)| pod.clone())
        .expect("the pod left is one of the three");
    let lines = String::from_utf8_lossy(&output.stdout).into_owned();
    let parsed: Vec<(f64, &str)> = lines
        .lines()
        .filter_map(|line| {
            let (t, answer) = line.split_once(' ')?;
            Some((t.parse().ok()?, answer))
        })
        .collect();
    let late: Vec<&(f64, &str)> = parsed
        .iter()
        .filter(|(t, answer)| *t > rules_at && *answer != kept_pod)
        .collect();
    let errors = parsed
        .iter()
        .filter(|(_, a)| a.starts_with("error"))
        .count();
    eprintln!(
        "scaled 3 → 1: slice seen at +{:.0} ms, rules at +{:.0} ms (polled with kubectl and nft); {} requests, {errors} failed, {} after the rules changed",
        (slice_at - scaled_at) * 1e3,
        (rules_at - scaled_at) * 1e3,
        parsed.len(),
        parsed.iter().filter(|(t, _)| *t > rules_at).count(),
    );
    assert!(parsed.len() > 20, "{lines}");
    assert!(
        late.is_empty(),
        "requests after the rules changed went elsewhere than {kept_pod}: {late:?}"
    );

    ok(lab.kubectl("c0", &["scale", "deployment/scaled", "--replicas=3"]));
    assert!(
        settled(3),
        "slice {:?}, rules {:?}",
        ready_endpoints(lab, "scaled"),
        programmed_endpoints(lab, "scaled")
    );
    shares("back to 3 replicas");
}

/// Pod name → address for the Deployment `scaled`.
fn pod_addresses(lab: &Lab) -> BTreeMap<String, String> {
    let out = stdout(&lab.kubectl(
        "c0",
        &[
            "get",
            "pods",
            "-l",
            "app=scaled",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.podIP} {end}",
        ],
    ));
    out.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(pod, ip)| (pod.to_string(), ip.to_string()))
        .collect()
}

/// A script in the client pod that prints a line, waits for `/tmp/<lab>-<go>` to exist,
/// then prints another: it holds a connection or socket across what the test does between.
struct HeldClient {
    child: std::process::Child,
    output: std::io::BufReader<std::process::ChildStdout>,
    go_file: String,
}

impl HeldClient {
    /// Starts `script` and returns its first line.
    fn start(lab: &Lab, script: &str, go: &str) -> (HeldClient, String) {
        let netns = format!("{}-c0-cp-default-client", lab.name);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &netns, "sh", "-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut held = HeldClient {
            child,
            output: std::io::BufReader::new(stdout),
            go_file: format!("/tmp/{}-{go}", lab.name),
        };
        let first = held.line();
        (held, first)
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.output, &mut line).expect("the script's output");
        line
    }

    /// Lets the script go on and returns its next line.
    fn resume(mut self) -> String {
        std::fs::write(&self.go_file, "").expect("writing the go file");
        let line = self.line();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.go_file);
        line
    }
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
    eprintln!(
        "no endpoints: connection refused (TCP reset) after {:.1} ms",
        seconds * 1e3
    );
    assert!(seconds < 0.1, "rejected in {seconds} s, want < 0.1 s");

    // An address of the service range that no Service has: dropped on the client's node
    // before conntrack confirms the flow, so no un-NATed entry is left for a later
    // connection that reuses the source port once a Service gets the address.
    let unallocated = "10.96.255.254";
    let service_ips = stdout(&lab.kubectl(
        "c0",
        &[
            "get",
            "svc",
            "-A",
            "-o",
            "jsonpath={.items[*].spec.clusterIP}",
        ],
    ));
    assert!(!service_ips.contains(unallocated), "{service_ips}");
    let out = in_pod(
        &lab,
        "cp",
        "client",
        &format!("curl -s -m 1 http://{unallocated}/; echo \" $?\""),
    );
    assert_eq!(stdout(&out).trim(), "28", "curl should time out (exit 28)");
    let conntrack = stdout(&lab.exec("c0/cp", &["cat", "/proc/net/nf_conntrack"]));
    assert!(
        !conntrack.contains(&format!("dst={unallocated} ")),
        "a flow to an unallocated ClusterIP was confirmed:\n{conntrack}"
    );

    // ClientIP affinity: one client, one pod.
    let sticky = get(&lab, "svc", "web-sticky", "{.spec.clusterIP}");
    let pinned = hostnames(&lab, "cp", "client", &format!("http://{sticky}"), 50);
    assert_eq!(
        pinned.len(),
        1,
        "affinity should pin to one pod: {pinned:?}"
    );

    scale_to_one_and_back(&lab);

    // A UDP client keeps one socket whose flow was NATed to web-3 (new sockets until one
    // lands there), across web-3's deletion below.
    let udp_ip = get(&lab, "svc", "web-udp", "{.spec.clusterIP}");
    let udp_script = format!(
        "python3 -c '
import os, socket, time
for attempt in range(60):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(b\"hostname\", (\"{udp_ip}\", 5353))
    name = s.recv(100).decode()
    if name == \"web-3\":
        break
    s.close()
print(\"pinned\", name, flush=True)
while not os.path.exists(\"/tmp/{lab}-udp-go\"): time.sleep(0.05)
s.settimeout(0.5)
start = time.time()
while time.time() - start < 10:
    s.sendto(b\"hostname\", (\"{udp_ip}\", 5353))
    try:
        name = s.recv(100).decode()
        break
    except socket.timeout:
        name = \"timeout\"
print(\"after\", name, round(time.time() - start, 2), flush=True)
'",
        lab = lab.name
    );
    let (udp_client, pinned) = HeldClient::start(&lab, &udp_script, "udp-go");
    assert_eq!(pinned.trim(), "pinned web-3", "no UDP flow reached web-3");

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
    // The UDP flow to web-3 was deleted from the client node's conntrack table with web-3's
    // rules, so the same socket's next datagram is NATed afresh, to a live pod.
    let healed = udp_client.resume();
    let answer = healed.split_whitespace().nth(1).unwrap_or("");
    assert!(
        answer.starts_with("web-") && answer != "web-3",
        "the UDP socket pinned to web-3 is still pinned: {healed:?}"
    );
    eprintln!("UDP socket pinned to web-3, after its deletion: {healed}");

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
    let (held, first) = HeldClient::start(&lab, &script, "go");
    assert!(first.starts_with("first web-"), "{first:?}");
    let (index, old_pid) = lab.kill_process("kubeproxy-lite", "c0", "cp");
    let restarted = eventually(Duration::from_secs(20), || {
        let status = lab.status_json();
        let process = &status["processes"][index];
        process["pid"].as_i64().is_some_and(|pid| pid != old_pid) && process["state"] == "ready"
    });
    assert!(restarted, "{:#}", lab.status_json()["processes"][index]);
    let second = held.resume();
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

    // Someone deletes c0-w2's table by hand: kubeproxy-lite's periodic check (every 10 s)
    // notices and a full sync puts it back.
    ok(lab.exec("c0/w2", &["nft", "delete", "table", "ip", "kube-proxy"]));
    let deleted_at = Instant::now();
    let repaired = eventually(Duration::from_secs(30), || {
        let table = stdout(&lab.exec("c0/w2", &["nft", "list", "table", "ip", "kube-proxy"]));
        table.contains(&format!("dnat to {}:8080", ips[0]))
    });
    assert!(repaired, "c0-w2's table was not put back");
    eprintln!(
        "table deleted by hand: back after {:?}",
        deleted_at.elapsed()
    );
    let from_w2 = stdout(&lab.exec(
        "c0/w2",
        &["curl", "-s", "-m", "2", &format!("{url}/hostname")],
    ));
    assert!(from_w2.starts_with("web-"), "from node c0-w2: {from_w2:?}");

    let name = lab.name.clone();
    drop(lab);
    assert_eq!(residue(&name), Vec::<String>::new());
}
