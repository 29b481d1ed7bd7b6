//! Shared by the Services tests (`services.rs`, `services_static.rs`): kubectl jsonpath,
//! waiting for pods, and requests from inside a pod's network namespace.

#![allow(dead_code)] // each test file uses its own part of this module

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

pub fn get(lab: &Lab, kind: &str, name: &str, path: &str) -> String {
    stdout(&lab.kubectl(
        "c0",
        &["get", kind, name, "-o", &format!("jsonpath={path}")],
    ))
}

pub fn wait_running(lab: &Lab, pod: &str) -> String {
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

pub fn in_pod(lab: &Lab, node: &str, pod: &str, script: &str) -> std::process::Output {
    let netns = format!("{}-c0-{node}-default-{pod}", lab.name);
    Command::new("ip")
        .args(["netns", "exec", &netns, "sh", "-c", script])
        .output()
        .expect("ip netns exec runs")
}

/// `count` requests for `/hostname` to `url`, each on a new connection: answer → how often.
pub fn hostnames(
    lab: &Lab,
    node: &str,
    pod: &str,
    url: &str,
    count: usize,
) -> BTreeMap<String, usize> {
    let script = format!("for i in $(seq {count}); do curl -s -m 2 {url}/hostname; echo; done");
    let out = stdout(&in_pod(lab, node, pod, &script));
    let mut seen = BTreeMap::new();
    for line in out.lines() {
        *seen.entry(line.to_string()).or_insert(0) += 1;
    }
    seen
}
