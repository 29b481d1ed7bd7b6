//! End-to-end tests of the lab (issue 3): the real binary, real namespaces, real etcd.
//! Each test has a lab of its own, so they run in parallel; each checks that `down` leaves
//! nothing of its lab behind.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

/// One cluster, one worker: enough for tests that are not about the topology.
const SMALL: &str = "clusters:\n  - name: c0\n    workers: 1\n";

#[test]
fn up_down_round_trip_leaves_nothing_behind() {
    require_root();
    let root_before = root_network();
    let lab = Lab::up("roundtrip", None);

    // Nodes reach each other inside a cluster and across clusters, through the fabric.
    ok(lab.exec("c0/w1", &["ping", "-c1", "-W2", "172.20.0.12"]));
    ok(lab.exec("c0/w1", &["ping", "-c1", "-W2", "172.20.1.13"]));
    // Each node has its hostname, its eth0, its /sys, and no route out of the lab.
    assert_eq!(ok(lab.exec("c1/w2", &["hostname"])).trim(), "c1-w2");
    let links = ok(lab.exec("c0/w3", &["ls", "/sys/class/net"]));
    assert_eq!(
        links.split_whitespace().collect::<Vec<_>>(),
        ["eth0", "flannel.1", "lo"]
    );
    let routes = ok(lab.exec("c0/w1", &["ip", "route"]));
    assert!(!routes.contains("default"), "{routes}");
    assert_eq!(
        ok(lab.exec("c0/w1", &["cat", "/proc/sys/net/ipv4/ip_forward"])).trim(),
        "1"
    );
    // Exit codes come back unchanged.
    assert_eq!(
        lab.exec("c0/w1", &["sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    // Each cluster has its own healthy etcd, its data in the lab's tree, a tmpfs.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let tree = format!(" /tmp/knetsim/{} ", lab.name);
    assert!(
        mountinfo
            .lines()
            .any(|l| l.contains(&tree) && l.contains(" - tmpfs ")),
        "no tmpfs at{tree}: {mountinfo}"
    );
    for cluster in ["c0", "c1"] {
        let health = lab.run(&["etcdctl", cluster, "--", "endpoint", "health"]);
        assert!(
            stderr(&health).contains("is healthy") || stdout(&health).contains("is healthy"),
            "{health:?}"
        );
        let data = PathBuf::from(format!("/tmp/knetsim/{}/{cluster}/etcd", lab.name));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o700), "{}", data.display());
    }
    // flannel: one lease per node in each cluster's etcd, a subnet.env per node, and the
    // VXLAN overlay between nodes.
    let leases = lab.flannel_lease_keys("c0");
    assert_eq!(
        leases
            .lines()
            .filter(|l| l.contains("/subnets/10.244."))
            .count(),
        4,
        "{leases}"
    );
    let subnet_env = ok(lab.exec("c0/w2", &["cat", "/run/flannel/subnet.env"]));
    assert!(
        subnet_env.contains("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244."),
        "{subnet_env}"
    );
    let w2_vtep = ok(lab.exec(
        "c0/w2",
        &["ip", "-4", "-o", "addr", "show", "dev", "flannel.1"],
    ));
    let w2_vtep = w2_vtep
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.split('/').next())
        .expect("flannel.1 address")
        .to_string();
    let reached = eventually(Duration::from_secs(10), || {
        lab.exec("c0/w1", &["ping", "-c1", "-W1", &w2_vtep])
            .status
            .success()
    });
    assert!(
        reached,
        "c0/w1 cannot reach c0/w2's VTEP {w2_vtep} over VXLAN"
    );
    let status = ok(lab.run(&["status"]));
    for expected in [
        "c1/w3",
        "172.20.1.13",
        "control-plane",
        "etcd",
        "flannel",
        "ready",
    ] {
        assert!(
            status.contains(expected),
            "status lacks {expected}:\n{status}"
        );
    }
    assert_eq!(root_network(), root_before, "up changed the root namespace");

    let name = lab.name.clone();
    drop(lab);
    assert_eq!(residue(&name), Vec::<String>::new());
    assert_eq!(
        root_network(),
        root_before,
        "down left the root namespace changed"
    );
}

#[test]
fn two_labs_run_side_by_side() {
    let first = Lab::up("twoa", Some(SMALL));
    let second = Lab::up("twob", Some(SMALL));
    for lab in [&first, &second] {
        ok(lab.exec("c0/w1", &["ping", "-c1", "-W2", "172.20.0.2"]));
    }
    let first_name = first.name.clone();
    drop(first);
    assert_eq!(residue(&first_name), Vec::<String>::new());
    // The other lab did not notice.
    ok(second.run(&["etcdctl", "c0", "--", "endpoint", "health"]));
    ok(second.exec("c0/w1", &["ping", "-c1", "-W2", "172.20.0.2"]));
}

#[test]
fn down_works_after_the_supervisor_was_killed() {
    let lab = Lab::up("sigkill", Some(SMALL));
    let supervisor = lab.status_json()["supervisorPid"].as_i64().expect("pid");
    ok(std::process::Command::new("kill")
        .args(["-9", &supervisor.to_string()])
        .output()
        .expect("kill runs"));
    let down = ok(lab.run(&["down"]));
    assert!(down.contains("is down"), "{down}");
    assert_eq!(residue(&lab.name), Vec::<String>::new());
    // And a second time: nothing to do, still success.
    let again = ok(lab.run(&["down"]));
    assert!(again.contains("was not running"), "{again}");
}

#[test]
fn a_crashed_process_is_restarted() {
    let lab = Lab::up("crash", Some(SMALL));
    let (index, pid) = lab.kill_process("etcd", "c0", "cp");
    let restarted = eventually(Duration::from_secs(20), || {
        let p = &lab.status_json()["processes"][index];
        p["restarts"] == 1 && p["state"] == "ready" && p["pid"].as_i64() != Some(pid)
    });
    assert!(restarted, "etcd was not restarted: {}", lab.status_json());
    let log = ok(lab.run(&["logs", "supervisor"]));
    assert!(log.contains("exited (signal: 9 (SIGKILL))"), "{log}");
    assert!(log.contains("restarting in"), "{log}");
    let status = ok(lab.run(&["status"]));
    assert!(status.contains("SIGKILL"), "{status}");
    ok(lab.run(&["etcdctl", "c0", "--", "endpoint", "health"]));
}

#[test]
fn flannel_keeps_its_subnet_across_a_crash() {
    let lab = Lab::up("flannelcrash", Some(SMALL));
    let before = ok(lab.exec("c0/w1", &["cat", "/run/flannel/subnet.env"]));
    let (index, _) = lab.kill_process("flannel", "c0", "w1");
    let restarted = eventually(Duration::from_secs(20), || {
        let p = &lab.status_json()["processes"][index];
        p["restarts"] == 1 && p["state"] == "ready"
    });
    assert!(
        restarted,
        "flannel was not restarted: {}",
        lab.status_json()
    );
    assert_eq!(
        ok(lab.exec("c0/w1", &["cat", "/run/flannel/subnet.env"])),
        before
    );
    let leases = lab.flannel_lease_keys("c0");
    assert_eq!(
        leases.lines().filter(|l| l.contains("/subnets/")).count(),
        2,
        "{leases}"
    );
    let log = ok(lab.run(&["logs", "c0/w1", "flannel"]));
    assert!(log.contains("reusing this node's existing lease"), "{log}");
}

#[test]
fn flannel_host_gw_routes_via_node_addresses() {
    let config = write_temp(
        "host-gw.json",
        r#"{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"host-gw"}}"#,
    );
    require_root();
    let name = lab_name("hostgw");
    let topology = write_temp("hostgw.yaml", "clusters:\n  - name: c0\n    workers: 2\n");
    ok(knetsim(&[
        "up",
        "--lab",
        &name,
        "--config",
        topology.to_str().unwrap(),
        "--flannel-config",
        config.to_str().unwrap(),
    ]));
    let lab = Lab { name };
    // Routes follow the other nodes' leases as the watch delivers them.
    let routed = eventually(Duration::from_secs(10), || {
        let routes = stdout(&lab.exec("c0/w1", &["ip", "route"]));
        ["172.20.0.2", "172.20.0.12"]
            .iter()
            .all(|peer| routes.contains(&format!(" via {peer} dev eth0")))
    });
    assert!(routed, "{}", stdout(&lab.exec("c0/w1", &["ip", "route"])));
    assert!(!lab
        .exec("c0/w1", &["ip", "link", "show", "flannel.1"])
        .status
        .success());
    let lease = ok(lab.run(&[
        "etcdctl",
        "c0",
        "--",
        "get",
        "--prefix",
        "/coreos.com/network/subnets",
    ]));
    assert!(lease.contains(r#""BackendType":"host-gw""#), "{lease}");
}

#[test]
fn up_refuses_a_lab_that_exists_and_down_clears_a_half_made_one() {
    let lab = Lab::up("exists", Some(SMALL));
    let again = lab.run(&["up"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    ok(lab.run(&["etcdctl", "c0", "--", "endpoint", "health"]));
    drop(lab);

    // A half-made lab: a namespace and a tmpfs inside its tree, nothing else (as if `up` was
    // killed early).
    let name = lab_name("halfmade");
    ok(std::process::Command::new("ip")
        .args(["netns", "add", &format!("{name}-c0-w1")])
        .output()
        .expect("ip runs"));
    let etcd_data = format!("/tmp/knetsim/{name}/c0/etcd");
    std::fs::create_dir_all(&etcd_data).expect("etcd data directory");
    ok(std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", &etcd_data])
        .output()
        .expect("mount runs"));
    let up = knetsim(&["up", "--lab", &name]);
    assert!(stderr(&up).contains("already exists"), "{}", stderr(&up));
    ok(knetsim(&["down", "--lab", &name]));
    assert_eq!(residue(&name), Vec::<String>::new());
}

#[test]
fn fifty_workers_come_up_and_down() {
    let topology = "clusters:\n  - name: big\n    workers: 50\n";
    let lab = Lab::up("fifty", Some(topology));
    ok(lab.exec("big/w1", &["ping", "-c1", "-W2", "172.20.0.60"]));
    assert_eq!(ok(lab.exec("big/w50", &["hostname"])).trim(), "big-w50");
    let name = lab.name.clone();
    drop(lab);
    assert_eq!(residue(&name), Vec::<String>::new());
}

#[test]
fn bad_topology_files_name_the_line_and_field() {
    let name = lab_name("badtopo");
    let cases = [
        (
            "clusters:\n  - name: c0\n    wrokers: 2\n",
            ":3:",
            "unknown field `wrokers`",
        ),
        (
            "clusters:\n  - name: c0\n    podNetwork: 10.244.0.0/99\n",
            ":3:",
            "not an IPv4 network",
        ),
        (
            "clusters:\n  - name: c0\n  - name: c1\n    nodeNetwork: 172.20.0.0/24\n",
            ":4:",
            "clusters[1].nodeNetwork: 172.20.0.0/24 overlaps clusters[0].nodeNetwork",
        ),
        (
            "clusters:\n  - name: c0\n    nodeNetwork: 1.2.3.0/24\n",
            ":3:",
            "not a private network",
        ),
        (
            "clusters:\n  - name: Bad_Name\n",
            ":2:",
            "not a valid cluster name",
        ),
        ("clusters: [\n", ":2:", "did not find expected node content"),
    ];
    for (index, (yaml, line, message)) in cases.iter().enumerate() {
        let path = write_temp(&format!("bad{index}.yaml"), yaml);
        let output = knetsim(&["up", "--lab", &name, "--config", path.to_str().unwrap()]);
        let err = stderr(&output);
        assert!(!output.status.success(), "case {index} was accepted");
        assert!(
            err.contains(&format!("{}{line}", path.display())),
            "case {index}: {err}"
        );
        assert!(err.contains(message), "case {index}: {err}");
    }
    let missing = knetsim(&[
        "up",
        "--lab",
        &name,
        "--config",
        "/nonexistent/topology.yaml",
    ]);
    assert!(stderr(&missing).contains("reading topology file /nonexistent/topology.yaml"));
    assert_eq!(residue(&name), Vec::<String>::new());
}

#[test]
fn a_missing_binary_is_named_with_its_package() {
    require_root();
    let name = lab_name("nobinary");
    // A PATH that has iproute2 but no etcd.
    let bin = write_temp("only-ip/.keep", "")
        .parent()
        .unwrap()
        .to_path_buf();
    let ip = bin.join("ip");
    if !ip.exists() {
        std::os::unix::fs::symlink("/usr/sbin/ip", &ip)
            .or_else(|_| std::os::unix::fs::symlink("/sbin/ip", &ip))
            .unwrap();
    }
    let output = std::process::Command::new(KNETSIM)
        .args(["up", "--lab", &name])
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output)
            .contains("`etcd` not found on PATH: install it with `apt-get install etcd-server`"),
        "{}",
        stderr(&output)
    );
    assert_eq!(residue(&name), Vec::<String>::new());
}

#[test]
fn bad_names_and_unknown_nodes_are_clear_errors() {
    let output = knetsim(&["up", "--lab", "Bad-Lab"]);
    assert!(
        stderr(&output).contains("not a valid lab name"),
        "{}",
        stderr(&output)
    );
    let output = knetsim(&["status", "--lab", "neverstarted"]);
    assert!(
        stderr(&output).contains("lab neverstarted is not up"),
        "{}",
        stderr(&output)
    );

    let lab = Lab::up("unknown", Some(SMALL));
    let output = lab.exec("c0/w9", &["true"]);
    assert!(
        stderr(&output).contains("has no node `c0/w9`; nodes are: c0/cp c0/w1"),
        "{}",
        stderr(&output)
    );
    let output = lab.run(&["logs", "c0/cp", "nginx"]);
    assert!(
        stderr(&output).contains(
            "processes with logs there: apiserver controller-manager etcd flannel kubelet"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn up_without_root_says_so() {
    // setpriv (util-linux) drops to nobody for this one command.
    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            KNETSIM,
            "up",
            "--lab",
            "nonroot",
        ])
        .output()
        .expect("setpriv runs");
    assert!(
        stderr(&output).contains("needs root"),
        "{}",
        stderr(&output)
    );
}
