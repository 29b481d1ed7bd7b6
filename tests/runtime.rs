//! The CRI-shaped runtime on lab nodes, driven with `knetsim crictl` as crictl drives a real
//! node: pod sandboxes get a named netns, a pause process and an address from flannel's
//! subnet via the real CNI plugins, and pods on different nodes reach each other over VXLAN.

mod common;

use std::time::Duration;

use common::*;

const TWO_WORKERS: &str = "clusters:\n  - name: c0\n    workers: 2\n";

fn runp(lab: &Lab, node: &str, name: &str) -> (String, String) {
    let id = ok(lab.run(&["crictl", node, "runp", "--name", name]))
        .trim()
        .to_string();
    let status: serde_json::Value =
        serde_json::from_str(&ok(lab.run(&["crictl", node, "inspectp", &id])))
            .expect("inspectp JSON");
    assert_eq!(status["state"], "SANDBOX_READY", "{status}");
    let ip = status["ip"].as_str().expect("a pod IP").to_string();
    (id, ip)
}

fn in_pod(lab: &Lab, node: &str, pod: &str, command: &[&str]) -> std::process::Output {
    let netns = format!("{}-{}-default-{pod}", lab.name, node.replace('/', "-"));
    std::process::Command::new("ip")
        .args(["netns", "exec", &netns])
        .args(command)
        .output()
        .expect("ip netns exec runs")
}

#[test]
fn pods_on_different_nodes_reach_each_other_over_vxlan() {
    let lab = Lab::up_bare("runtime", Some(TWO_WORKERS));
    let (a_id, a_ip) = runp(&lab, "c0/w1", "a");
    let (b_id, b_ip) = runp(&lab, "c0/w2", "b");
    let subnet = |node: &str| {
        ok(lab.exec(node, &["cat", "/run/flannel/subnet.env"]))
            .lines()
            .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
            .and_then(|s| s.rsplit_once('.'))
            .map(|(prefix, _)| format!("{prefix}."))
            .unwrap()
    };
    assert!(a_ip.starts_with(&subnet("c0/w1")), "{a_ip}");
    assert!(b_ip.starts_with(&subnet("c0/w2")), "{b_ip}");

    // The sandbox is visible to the machine's tools and named after its pod.
    let namespaces = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        namespaces.contains(&format!("{}-c0-w1-default-a", lab.name)),
        "{namespaces}"
    );

    // Pod to pod across nodes; the packets cross the node network as VXLAN (UDP 8472).
    let capture = std::process::Command::new(KNETSIM)
        .args([
            "exec", "--lab", &lab.name, "c0/w2", "--", "timeout", "10", "tcpdump", "-c1", "-ni",
            "eth0", "udp", "port", "8472",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let reached = eventually(Duration::from_secs(10), || {
        in_pod(&lab, "c0/w1", "a", &["ping", "-c1", "-W1", &b_ip])
            .status
            .success()
    });
    assert!(reached, "pod a cannot reach pod b at {b_ip}");
    ok(in_pod(&lab, "c0/w1", "a", &["ping", "-c2", "-W2", &b_ip]));
    ok(in_pod(&lab, "c0/w2", "b", &["ping", "-c1", "-W2", &a_ip]));
    let captured =
        String::from_utf8_lossy(&capture.wait_with_output().unwrap().stdout).into_owned();
    assert!(
        captured.contains("UDP") || captured.contains(".8472"),
        "no VXLAN packet seen: {captured}"
    );

    // The pod's hostname is its name, held by its pause process.
    let pause = ok(std::process::Command::new("pgrep")
        .args(["-f", &format!("pause --lab {} --pod default/a", lab.name)])
        .output()
        .unwrap());
    let uts = format!("--uts=/proc/{}/ns/uts", pause.trim());
    assert_eq!(
        ok(std::process::Command::new("nsenter")
            .args([uts.as_str(), "hostname"])
            .output()
            .unwrap())
        .trim(),
        "a"
    );

    // Removing a sandbox releases its namespace, its veth and its address.
    ok(lab.run(&["crictl", "c0/w1", "rmp", &a_id]));
    ok(lab.run(&["crictl", "c0/w1", "rmp", &a_id])); // idempotent
    assert!(!path_exists(&format!(
        "/run/netns/{}-c0-w1-default-a",
        lab.name
    )));
    let leases = ok(lab.exec("c0/w1", &["ls", "/var/lib/cni/networks/cbr0"]));
    assert!(!leases.contains(&a_ip), "{leases}");
    let veths = ok(lab.exec("c0/w1", &["ip", "-o", "link", "show", "master", "cni0"]));
    assert!(veths.trim().is_empty(), "{veths}");
    assert!(pgrep_none(&format!(
        "pause --lab {} --pod default/a",
        lab.name
    )));

    // `down` with a pod still running removes it too.
    let _ = b_id;
    let name = lab.name.clone();
    drop(lab);
    assert_eq!(residue(&name), Vec::<String>::new());
}

#[test]
fn containers_share_their_pod_and_their_exit_is_recorded() {
    let lab = Lab::up_bare("containers", Some(TWO_WORKERS));
    let (pod, ip) = runp(&lab, "c0/w1", "web");
    let server = ok(lab.run(&[
        "crictl",
        "c0/w1",
        "create",
        &pod,
        "--name",
        "server",
        "--",
        "sh",
        "-c",
        "echo started on $(hostname); exec python3 -m http.server 8080",
    ]));
    let server = server.trim().to_string();
    ok(lab.run(&["crictl", "c0/w1", "start", &server]));

    // Served from the pod's address, reachable from another node once it listens.
    let served = eventually(Duration::from_secs(10), || {
        let out = lab.exec(
            "c0/w2",
            &[
                "curl",
                "-s",
                "-m",
                "2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{ip}:8080/"),
            ],
        );
        stdout(&out) == "200"
    });
    assert!(served, "the container's server at {ip}:8080 did not answer");

    // A second container shares the pod's network (localhost) and hostname.
    let out = lab.run(&[
        "crictl",
        "c0/w1",
        "exec",
        &server,
        "--",
        "sh",
        "-c",
        "hostname; curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/",
    ]);
    assert_eq!(stdout(&out), "web\n200");
    // Exec returns the command's exit code.
    assert_eq!(
        lab.run(&["crictl", "c0/w1", "exec", &server, "--", "sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3)
    );

    // The CRI log, as kubectl logs reads it on a real node.
    let log = ok(lab.run(&["crictl", "c0/w1", "logs", &server]));
    let first = log.lines().next().unwrap_or_default();
    assert!(first.ends_with(" stdout F started on web"), "{log}");

    // Stop: SIGTERM, recorded as 128 + 15.
    ok(lab.run(&["crictl", "c0/w1", "stop", &server]));
    let status: serde_json::Value =
        serde_json::from_str(&ok(lab.run(&["crictl", "c0/w1", "inspect", &server]))).unwrap();
    assert_eq!(status["state"], "CONTAINER_EXITED", "{status}");
    assert_eq!(status["exit"]["exitCode"], 143, "{status}");

    // A command that does not exist fails to start, with the reason.
    let bad = ok(lab.run(&[
        "crictl",
        "c0/w1",
        "create",
        &pod,
        "--name",
        "bad",
        "--",
        "/nonexistent/program",
    ]));
    let out = lab.run(&["crictl", "c0/w1", "start", bad.trim()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("did not start") && stderr(&out).contains("/nonexistent/program"),
        "{}",
        stderr(&out)
    );

    // A container still running when the sandbox is removed is stopped with it.
    let sleeper = ok(lab.run(&[
        "crictl", "c0/w1", "create", &pod, "--name", "sleeper", "--", "sleep", "600",
    ]));
    ok(lab.run(&["crictl", "c0/w1", "start", sleeper.trim()]));
    ok(lab.run(&["crictl", "c0/w1", "rmp", &pod]));
    assert!(
        ok(lab.run(&["crictl", "c0/w1", "ps"])).lines().count() == 1,
        "containers left"
    );
    assert!(pgrep_none(&format!("shim --lab {}", lab.name)));
}

#[test]
fn bad_pods_get_clear_errors_and_leave_nothing() {
    let lab = Lab::up_bare("runtimebad", Some(TWO_WORKERS));
    let output = lab.run(&["crictl", "c0/w1", "runp", "--name", "Bad_Name"]);
    assert!(
        stderr(&output).contains("is not a DNS label"),
        "{}",
        stderr(&output)
    );
    runp(&lab, "c0/w1", "dup");
    let output = lab.run(&["crictl", "c0/w1", "runp", "--name", "dup"]);
    assert!(
        stderr(&output).contains("already exists"),
        "{}",
        stderr(&output)
    );
    let output = lab.run(&["crictl", "c0/w1", "inspectp", "nosuch"]);
    assert!(
        stderr(&output).contains("pod sandbox nosuch not found"),
        "{}",
        stderr(&output)
    );
}

fn pgrep_none(pattern: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .map(|o| o.stdout.is_empty())
        .unwrap_or(true)
}
