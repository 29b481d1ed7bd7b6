//! `kubeproxy-lite --static`, the predecessor's behaviour kept for teaching, beside the normal
//! mode: rules rendered once at start-up keep a deleted pod's DNAT, so its virtual IP breaks
//! for the clients behind them, while the dynamic rules of the node heal.
//!
//! The first test runs kubeproxy-lite normally on every node and a static one, started by the
//! test, in the network namespace of one client pod, whose own traffic it then DNATs before
//! the packets leave the pod: both behaviours side by side. The second uses the lab-level
//! switch a class uses (`serviceProxy: static` in the topology, `knetsim service-proxy`).

mod common;
mod services_support;

use std::process::Command;
use std::time::Duration;

use common::*;
use services_support::*;

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

/// Two agnhost pods behind `web`, one per worker, and a client on the control-plane node.
const WEB_PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web-a, labels: {app: web}}
spec:
  nodeName: c0-w1
  containers: [{name: netexec, image: "registry.k8s.io/e2e-test-images/agnhost:2.53", args: ["netexec", "--http-port=8080"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, labels: {app: web}}
spec:
  nodeName: c0-w2
  containers: [{name: netexec, image: "registry.k8s.io/e2e-test-images/agnhost:2.53", args: ["netexec", "--http-port=8080"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: c0-cp
  containers: [{name: shell, image: busybox, command: ["sleep", "3600"]}]
"#;

const TWO_WORKERS: &str = "clusters:\n  - name: c0\n    workers: 2\n";

/// A `knetsim kubeproxy-lite --static` the test runs in a pod's network namespace, so that
/// pod's own traffic to a ClusterIP is DNATed by static rules before it leaves the pod.
/// Killed when dropped, also when the test fails.
struct StaticProxy(std::process::Child);

impl Drop for StaticProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--static` (the predecessor's rules, rendered once): a pod deleted after start-up keeps its
/// DNAT, so some requests from a client behind the static rules fail, while a client behind
/// the node's normal kubeproxy-lite only ever reaches the pod that is left.
#[test]
fn a_deleted_pod_breaks_a_static_virtual_ip_while_the_dynamic_one_heals() {
    let lab = Lab::up("svcstatic", Some(TWO_WORKERS));
    let manifest = format!(
        r#"{WEB_PODS}---
apiVersion: v1
kind: Pod
metadata: {{name: frozen}}
spec:
  nodeName: c0-cp
  containers: [{{name: shell, image: busybox, command: ["sleep", "3600"]}}]
---
{WEB}"#
    );
    lab.apply("static", &manifest);
    let ip_a = wait_running(&lab, "web-a");
    let ip_b = wait_running(&lab, "web-b");
    wait_running(&lab, "client");
    let frozen_ip = wait_running(&lab, "frozen");
    let url = format!("http://{}", get(&lab, "svc", "web", "{.spec.clusterIP}"));
    let node_table = || stdout(&lab.exec("c0/cp", &["nft", "list", "table", "ip", "kube-proxy"]));
    let both = |table: &str| {
        table.contains(&format!("dnat to {ip_a}:8080"))
            && table.contains(&format!("dnat to {ip_b}:8080"))
    };
    assert!(
        eventually(Duration::from_secs(10), || both(&node_table())),
        "{}",
        node_table()
    );

    // The static proxy, with kube-proxy's identity, in the pod `frozen`.
    let netns = format!("{}-c0-cp-default-frozen", lab.name);
    let kubeconfig = format!(
        "/tmp/knetsim/{}/nodes/c0-cp/var/lib/kube-proxy/kubeconfig.conf",
        lab.name
    );
    let log_path = std::env::temp_dir().join(format!("{}-static-proxy.log", lab.name));
    let log = std::fs::File::create(&log_path).expect("a log file");
    let _static_proxy = StaticProxy(
        Command::new("ip")
            .args(["netns", "exec", &netns, env!("CARGO_BIN_EXE_knetsim")])
            .args([
                "kubeproxy-lite",
                "--lab",
                &lab.name,
                "--cluster=c0",
                "--node=frozen",
            ])
            .args(["--kubeconfig", &kubeconfig, "--hostname-override=frozen"])
            .args([
                "--node-ip",
                &frozen_ip,
                "--cluster-cidr=10.244.0.0/16",
                "--static",
            ])
            .stdout(log.try_clone().expect("the log again"))
            .stderr(log)
            .spawn()
            .expect("knetsim kubeproxy-lite runs"),
    );
    let frozen_table = || {
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "nft",
                "list",
                "table",
                "ip",
                "kube-proxy",
            ])
            .output()
            .expect("nft runs");
        stdout(&output)
    };
    let frozen_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(20), || both(&frozen_table())
            && frozen_log().contains("no longer following the API")),
        "the static proxy did not program its table: {}\n{}",
        frozen_table(),
        frozen_log()
    );
    // Both clients reach both pods through their rules.
    for pod in ["client", "frozen"] {
        let seen = hostnames(&lab, "cp", pod, &url, 30);
        assert_eq!(seen.values().sum::<usize>(), 30, "{pod}: {seen:?}");
        assert!(
            seen.contains_key("web-a") && seen.contains_key("web-b"),
            "{pod}: {seen:?}"
        );
    }

    // web-b goes. The node's rules drop it; the static ones keep it.
    ok(lab.kubectl("c0", &["delete", "pod", "web-b"]));
    assert!(
        eventually(Duration::from_secs(10), || !node_table()
            .contains(&format!("dnat to {ip_b}:8080"))),
        "{}",
        node_table()
    );
    let healed = hostnames(&lab, "cp", "client", &url, 30);
    assert_eq!(healed.get("web-a"), Some(&30), "dynamic: {healed:?}");

    let table = frozen_table();
    assert!(both(&table), "the static table changed: {table}");
    assert!(table.contains("numgen random mod 2"), "{table}");
    let script = format!("for i in $(seq 20); do curl -s -m 1 {url}/hostname; echo \" $?\"; done");
    let out = stdout(&in_pod(&lab, "cp", "frozen", &script));
    let answered = out.lines().filter(|l| l.starts_with("web-a ")).count();
    let failed = out.lines().filter(|l| !l.starts_with("web-")).count();
    eprintln!(
        "static: {answered} of 20 answered by web-a, {failed} failed (to web-b's old address)"
    );
    assert!(!out.contains("web-b"), "{out}");
    assert_eq!(answered + failed, 20, "{out}");
    assert!(
        failed > 0 && answered > 0,
        "some requests must break: {out}"
    );

    drop(_static_proxy);
    let name = lab.name.clone();
    drop(lab);
    assert_eq!(residue(&name), Vec::<String>::new());
}

const STATIC_CLUSTER: &str = "clusters:\n  - name: c0\n    workers: 2\n    serviceProxy: static\n";

/// The lab-level switch a class uses: a cluster brought up with `serviceProxy: static` keeps a
/// deleted pod in its rules, so its virtual IP breaks; `knetsim service-proxy c0 dynamic`
/// restarts the proxies following the API, and the virtual IP heals.
#[test]
fn a_static_cluster_breaks_on_a_deleted_pod_and_heals_when_switched_to_dynamic() {
    let lab = Lab::up("svcswitch", Some(STATIC_CLUSTER));
    lab.apply("pods", WEB_PODS);
    let ip_a = wait_running(&lab, "web-a");
    let ip_b = wait_running(&lab, "web-b");
    wait_running(&lab, "client");
    // The proxies rendered once at start-up, before the Service existed, and ignore it.
    lab.apply("web", WEB);
    std::thread::sleep(Duration::from_secs(1));
    let node_table = || stdout(&lab.exec("c0/cp", &["nft", "list", "table", "ip", "kube-proxy"]));
    assert!(
        !node_table().contains(&format!("dnat to {ip_a}:8080")),
        "a static proxy followed a Service created after it started: {}",
        node_table()
    );
    // A class freezes the rules once it has deployed: dynamic picks the Service up, and the
    // switch back to static renders the state of that moment, both pods.
    ok(lab.run(&["service-proxy", "c0", "dynamic"]));
    let switched = ok(lab.run(&["service-proxy", "c0", "static"]));
    assert!(
        switched.contains("from dynamic to static") && switched.contains("c0/cp/kubeproxy-lite"),
        "{switched}"
    );
    let both = |table: &str| {
        table.contains(&format!("dnat to {ip_a}:8080"))
            && table.contains(&format!("dnat to {ip_b}:8080"))
    };
    assert!(both(&node_table()), "{}", node_table());
    let url = format!("http://{}", get(&lab, "svc", "web", "{.spec.clusterIP}"));

    // web-b goes; the static rules keep its DNAT and some requests break.
    ok(lab.kubectl("c0", &["delete", "pod", "web-b"]));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        both(&node_table()),
        "the static table changed: {}",
        node_table()
    );
    let script = format!("for i in $(seq 20); do curl -s -m 1 {url}/hostname; echo \" $?\"; done");
    let out = stdout(&in_pod(&lab, "cp", "client", &script));
    let failed = out.lines().filter(|l| !l.starts_with("web-a ")).count();
    assert!(failed > 0 && failed < 20, "some requests must break: {out}");

    // Dynamic again: the proxies' first sync drops web-b and every request reaches web-a.
    let switched = ok(lab.run(&["service-proxy", "c0", "dynamic"]));
    assert!(switched.contains("from static to dynamic"), "{switched}");
    let table = node_table();
    assert!(
        table.contains(&format!("dnat to {ip_a}:8080"))
            && !table.contains(&format!("dnat to {ip_b}:8080")),
        "{table}"
    );
    let healed = hostnames(&lab, "cp", "client", &url, 30);
    assert_eq!(healed.get("web-a"), Some(&30), "dynamic: {healed:?}");
    let again = ok(lab.run(&["service-proxy", "c0", "dynamic"]));
    assert!(again.contains("already dynamic"), "{again}");
    let unknown = lab.run(&["service-proxy", "c9", "static"]);
    assert!(
        !unknown.status.success() && stderr(&unknown).contains("no cluster `c9`"),
        "{}",
        stderr(&unknown)
    );

    let name = lab.name.clone();
    drop(lab);
    assert_eq!(residue(&name), Vec::<String>::new());
}
