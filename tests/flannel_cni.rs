//! The `flannel` CNI plugin, called exactly as a runtime calls it (environment, config on
//! stdin) on a lab node, delegating to Debian's real `bridge` and `host-local` plugins.

mod common;

use common::*;

const SMALL: &str = "clusters:\n  - name: c0\n    workers: 1\n";

/// A CNI plugin directory: our `flannel` (a link to knetsim) beside the real plugins.
fn plugin_dir() -> String {
    let dir = write_temp("cni-bin/.keep", "")
        .parent()
        .unwrap()
        .to_path_buf();
    for (name, target) in [
        ("flannel", KNETSIM),
        ("bridge", "/usr/lib/cni/bridge"),
        ("host-local", "/usr/lib/cni/host-local"),
    ] {
        let link = dir.join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(target, &link).unwrap();
        }
    }
    dir.display().to_string()
}

fn cni(lab: &Lab, command: &str, container: &str, netns: &str) -> std::process::Output {
    let dir = plugin_dir();
    let conf =
        r#"{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true}}"#;
    let script = format!(
        "echo '{conf}' | CNI_COMMAND={command} CNI_CONTAINERID={container} CNI_NETNS=/run/netns/{netns} CNI_IFNAME=eth0 CNI_PATH={dir} {dir}/flannel"
    );
    lab.exec("c0/w1", &["sh", "-c", &script])
}

#[test]
fn add_wires_a_pod_reachable_across_nodes_and_del_removes_it() {
    let lab = Lab::up("cni", Some(SMALL));
    // A pod sandbox: a network namespace named after the lab, so `down` removes it even if
    // this test fails half-way.
    let pod = format!("{}-pod1", lab.name);
    ok(std::process::Command::new("ip")
        .args(["netns", "add", &pod])
        .output()
        .unwrap());

    let result: serde_json::Value =
        serde_json::from_str(&ok(cni(&lab, "ADD", "pod1", &pod))).expect("CNI result JSON");
    let address = result["ips"][0]["address"]
        .as_str()
        .expect("an IP")
        .to_string();
    let ip = address.split('/').next().unwrap().to_string();
    let subnet_env = ok(lab.exec("c0/w1", &["cat", "/run/flannel/subnet.env"]));
    let node_prefix = subnet_env
        .lines()
        .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
        .and_then(|s| s.rsplit_once('.'))
        .map(|(prefix, _)| prefix.to_string())
        .unwrap();
    assert!(
        ip.starts_with(&format!("{node_prefix}.")),
        "{ip} not in {node_prefix}.0/24"
    );

    // The pod has the address on eth0; its node and the other node reach it (VXLAN).
    let pod_addr = ok(std::process::Command::new("ip")
        .args(["-n", &pod, "-o", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap());
    assert!(pod_addr.contains(&address), "{pod_addr}");
    ok(lab.exec("c0/w1", &["ping", "-c1", "-W2", &ip]));
    // The other node learns the route from the lease watch.
    let reached = eventually(std::time::Duration::from_secs(10), || {
        lab.exec("c0/cp", &["ping", "-c1", "-W1", &ip])
            .status
            .success()
    });
    assert!(reached, "c0/cp cannot reach the pod at {ip}");

    // What DEL needs was saved, and host-local holds the lease.
    ok(lab.exec("c0/w1", &["test", "-f", "/var/lib/cni/flannel/pod1"]));
    ok(lab.exec(
        "c0/w1",
        &["test", "-f", &format!("/var/lib/cni/networks/cbr0/{ip}")],
    ));

    ok(cni(&lab, "DEL", "pod1", &pod));
    let links = ok(std::process::Command::new("ip")
        .args(["-n", &pod, "-o", "link"])
        .output()
        .unwrap());
    assert!(!links.contains("eth0"), "{links}");
    assert!(!lab
        .exec(
            "c0/w1",
            &["test", "-e", &format!("/var/lib/cni/networks/cbr0/{ip}")]
        )
        .status
        .success());
    // DEL again: nothing left to do, still success.
    ok(cni(&lab, "DEL", "pod1", &pod));
}

#[test]
fn errors_are_cni_error_json() {
    let lab = Lab::up("cnierr", Some(SMALL));
    let output = cni(&lab, "ADD", "pod2", "no-such-netns");
    assert_eq!(output.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&output.stdout).expect("CNI error JSON");
    assert_eq!(error["cniVersion"], "1.0.0");
    assert!(error["code"].as_u64().is_some(), "{error}");
    assert!(
        error["msg"].as_str().unwrap().starts_with("bridge:"),
        "{error}"
    );
}
