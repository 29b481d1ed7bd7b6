//! Controllers end to end, with the real kubectl: the scheduler binds, ReplicaSets and
//! Deployments keep their pods, EndpointSlices follow the ready pods, deletion cascades,
//! namespaces empty, and a node whose kubelet stops has its pods re-created elsewhere.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::Value;

const TWO_WORKERS: &str = "clusters:\n  - name: c0\n    workers: 2\n";

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      # As Kubernetes' own e2e tests run it for traffic that must not drop: ready only once
      # it serves, and serving on for a while after SIGTERM, until its endpoint is gone.
      - name: netexec
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: ["netexec", "--http-port=8080", "--delay-shutdown=5"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#;

fn kubectl_json(lab: &Lab, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = ok(lab.kubectl("c0", &all));
    serde_json::from_str(&out).expect("kubectl prints JSON")
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

/// IPs of the pods labelled `app=<app>` that are Ready and not terminating.
fn ready_pod_ips(lab: &Lab, namespace: &str, app: &str) -> BTreeSet<String> {
    let pods = kubectl_json(
        lab,
        &["-n", namespace, "get", "pods", "-l", &format!("app={app}")],
    );
    items(&pods)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .filter_map(|p| p["status"]["podIP"].as_str().map(String::from))
        .collect()
}

/// Addresses the Service's EndpointSlices mark ready.
fn ready_slice_ips(lab: &Lab, namespace: &str, service: &str) -> BTreeSet<String> {
    let slices = kubectl_json(
        lab,
        &[
            "-n",
            namespace,
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={service}"),
        ],
    );
    items(&slices)
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .filter_map(|e| e["addresses"][0].as_str().map(String::from))
        .collect()
}

/// The slices list exactly the ready pods (allowing the controller a moment to catch up).
#[track_caller]
fn assert_slices_follow_ready_pods(lab: &Lab, expected: usize) {
    let mut last = (BTreeSet::new(), BTreeSet::new());
    let agreed = eventually(Duration::from_secs(30), || {
        last = (
            ready_pod_ips(lab, "default", "web"),
            ready_slice_ips(lab, "default", "web"),
        );
        last.0.len() == expected && last.0 == last.1
    });
    assert!(
        agreed,
        "ready pods {:?} vs ready endpoints {:?} (want {expected})",
        last.0, last.1
    );
}

fn pod_names(lab: &Lab, namespace: &str, selector: &str) -> BTreeSet<String> {
    let pods = kubectl_json(lab, &["-n", namespace, "get", "pods", "-l", selector]);
    items(&pods)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect()
}

fn rollout_status(lab: &Lab) {
    ok(lab.kubectl(
        "c0",
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    ));
}

#[test]
fn deployments_scale_roll_out_and_cascade() {
    let lab = Lab::up("ctrl", Some(TWO_WORKERS));
    let manifest = lab.apply("web", WEB);
    rollout_status(&lab);

    // Scheduled by the scheduler, onto workers only, spread, with events.
    let pods = kubectl_json(&lab, &["get", "pods", "-l", "app=web"]);
    let nodes: Vec<String> = items(&pods)
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert!(
        nodes.iter().all(|n| n == "c0-w1" || n == "c0-w2"),
        "{nodes:?}"
    );
    assert!(
        nodes.contains(&"c0-w1".to_string()) && nodes.contains(&"c0-w2".to_string()),
        "{nodes:?}"
    );
    let events = ok(lab.kubectl("c0", &["get", "events"]));
    assert!(
        events.contains("Scheduled") && events.contains("Successfully assigned default/web-"),
        "{events}"
    );
    assert_slices_follow_ready_pods(&lab, 3);
    // The legacy Endpoints object too.
    let endpoints = ok(lab.kubectl(
        "c0",
        &[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ],
    ));
    assert_eq!(endpoints.split_whitespace().count(), 3, "{endpoints}");
    // Every ready endpoint answers, from a node.
    for ip in ready_slice_ips(&lab, "default", "web") {
        let out = lab.exec(
            "c0/w1",
            &[
                "curl",
                "-s",
                "-m",
                "3",
                &format!("http://{ip}:8080/hostname"),
            ],
        );
        assert!(
            out.status.success() && stdout(&out).starts_with("web-"),
            "{ip}: {}",
            stderr(&out)
        );
    }

    // Scale up and down.
    ok(lab.kubectl("c0", &["scale", "deployment/web", "--replicas=6"]));
    rollout_status(&lab);
    assert_slices_follow_ready_pods(&lab, 6);
    ok(lab.kubectl("c0", &["scale", "deployment/web", "--replicas=2"]));
    rollout_status(&lab);
    assert_slices_follow_ready_pods(&lab, 2);

    // A deleted pod is replaced.
    let before = pod_names(&lab, "default", "app=web");
    let victim = before.iter().next().expect("a pod").clone();
    ok(lab.kubectl("c0", &["delete", "pod", &victim, "--wait=false"]));
    let replaced = eventually(Duration::from_secs(30), || {
        let now = pod_names(&lab, "default", "app=web");
        now.len() == 2 && !now.contains(&victim)
    });
    assert!(
        replaced,
        "{victim} was not replaced: {:?}",
        pod_names(&lab, "default", "app=web")
    );
    assert_slices_follow_ready_pods(&lab, 2);

    // A rolling update keeps at least replicas - maxUnavailable pods ready throughout.
    ok(lab.kubectl("c0", &["scale", "deployment/web", "--replicas=3"]));
    rollout_status(&lab);
    let old_rs = ok(lab.kubectl(
        "c0",
        &[
            "get",
            "rs",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    ));
    ok(lab.kubectl(
        "c0",
        &[
            "set",
            "image",
            "deployment/web",
            "netexec=registry.k8s.io/e2e-test-images/agnhost:2.52",
        ],
    ));
    // Requests to the Service from a node, all through the rollout.
    let cluster_ip = ok(lab.kubectl(
        "c0",
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
    ));
    let stop = write_temp(&format!("{}-traffic", lab.name), "").with_extension("stop");
    let traffic = format!(
        "while [ ! -e {stop} ]; do curl -s -m 2 -o /dev/null -w '%{{http_code}}\\n' http://{cluster_ip}/hostname; sleep 0.05; done",
        stop = stop.display()
    );
    let client = std::process::Command::new(KNETSIM)
        .args([
            "exec", "--lab", &lab.name, "c0/w1", "--", "sh", "-c", &traffic,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("knetsim exec runs");
    let mut fewest_ready = usize::MAX;
    let finished = eventually(Duration::from_secs(60), || {
        fewest_ready = fewest_ready.min(ready_slice_ips(&lab, "default", "web").len());
        let d = kubectl_json(&lab, &["get", "deployment", "web"]);
        d["status"]["updatedReplicas"] == 3
            && d["status"]["availableReplicas"] == 3
            && d["status"]["replicas"] == 3
            && d["status"]["observedGeneration"] == d["metadata"]["generation"]
    });
    // The old pods serve on for their --delay-shutdown after the rollout: keep asking.
    std::thread::sleep(Duration::from_secs(6));
    std::fs::write(&stop, "").expect("stop file");
    let answers = stdout(&client.wait_with_output().expect("the client ends"));
    assert!(finished, "the rolling update did not finish");
    assert!(
        fewest_ready >= 2,
        "only {fewest_ready} ready endpoints during the rollout"
    );
    let codes: Vec<&str> = answers.lines().collect();
    assert!(
        codes.len() >= 20 && codes.iter().all(|code| *code == "200"),
        "requests failed during the rollout: {codes:?}"
    );
    rollout_status(&lab);
    assert_slices_follow_ready_pods(&lab, 3);
    let images = ok(lab.kubectl(
        "c0",
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ],
    ));
    assert!(
        images.split_whitespace().all(|i| i.ends_with(":2.52")),
        "{images}"
    );
    let history = ok(lab.kubectl("c0", &["rollout", "history", "deployment/web"]));
    assert!(
        history.contains("1 ") && history.contains("2 "),
        "{history}"
    );

    // Undo goes back to the first ReplicaSet.
    ok(lab.kubectl("c0", &["rollout", "undo", "deployment/web"]));
    rollout_status(&lab);
    assert_slices_follow_ready_pods(&lab, 3);
    let scaled = ok(lab.kubectl("c0", &["get", "rs", &old_rs, "-o", "jsonpath={.spec.replicas} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}"]));
    assert_eq!(scaled, "3 3", "{old_rs} is back with revision 3");
    let conditions = ok(lab.kubectl(
        "c0",
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.status.conditions[*].reason}",
        ],
    ));
    assert!(
        conditions.contains("MinimumReplicasAvailable")
            && conditions.contains("NewReplicaSetAvailable"),
        "{conditions}"
    );

    // Orphaned with `--cascade=orphan`, the ReplicaSets and pods stay; the Deployment created
    // again adopts them and replaces no pod.
    let before = pod_names(&lab, "default", "app=web");
    ok(lab.kubectl("c0", &["delete", "deployment", "web", "--cascade=orphan"]));
    let owners = |lab: &Lab, kind: &str| -> Vec<String> {
        let list = kubectl_json(lab, &["get", kind, "-l", "app=web"]);
        items(&list)
            .iter()
            .map(|o| {
                o["metadata"]["ownerReferences"][0]["uid"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    let orphaned = eventually(Duration::from_secs(20), || {
        let rs = owners(&lab, "rs");
        !rs.is_empty() && rs.iter().all(String::is_empty)
    });
    assert!(
        orphaned,
        "{}",
        ok(lab.kubectl("c0", &["get", "rs", "-o", "yaml"]))
    );
    assert_eq!(pod_names(&lab, "default", "app=web"), before);
    ok(lab.kubectl(
        "c0",
        &["apply", "-f", manifest.to_str().expect("utf-8 path")],
    ));
    let uid = ok(lab.kubectl(
        "c0",
        &["get", "deployment", "web", "-o", "jsonpath={.metadata.uid}"],
    ));
    let adopted = eventually(Duration::from_secs(20), || {
        owners(&lab, "rs").iter().all(|owner| *owner == uid)
    });
    assert!(
        adopted,
        "{}",
        ok(lab.kubectl("c0", &["get", "rs", "-o", "yaml"]))
    );
    rollout_status(&lab);
    assert_eq!(
        pod_names(&lab, "default", "app=web"),
        before,
        "the adopted ReplicaSet kept its pods"
    );

    // A pod relabelled out of the selector is released and replaced; relabelled back, it is
    // adopted again and the ReplicaSet removes the one pod too many.
    let stray = before.iter().next().expect("a web pod").clone();
    ok(lab.kubectl("c0", &["label", "pod", &stray, "app=stray", "--overwrite"]));
    let released = eventually(Duration::from_secs(20), || {
        let pod = kubectl_json(&lab, &["get", "pod", &stray]);
        let web = pod_names(&lab, "default", "app=web");
        pod["metadata"]["ownerReferences"].is_null() && web.len() == 3 && !web.contains(&stray)
    });
    assert!(
        released,
        "{}",
        ok(lab.kubectl("c0", &["get", "pods", "--show-labels"]))
    );
    assert_slices_follow_ready_pods(&lab, 3);
    ok(lab.kubectl("c0", &["label", "pod", &stray, "app=web", "--overwrite"]));
    let settled = eventually(Duration::from_secs(20), || {
        let pods = owners(&lab, "pods");
        pods.len() == 3 && pods.iter().all(|owner| !owner.is_empty())
    });
    assert!(
        settled,
        "{}",
        ok(lab.kubectl("c0", &["get", "pods", "--show-labels"]))
    );
    assert_slices_follow_ready_pods(&lab, 3);

    // A restart rolls out a new revision.
    ok(lab.kubectl("c0", &["rollout", "restart", "deployment/web"]));
    rollout_status(&lab);
    assert_slices_follow_ready_pods(&lab, 3);

    // Deleting the Deployment removes its ReplicaSets and pods.
    ok(lab.kubectl("c0", &["delete", "deployment", "web"]));
    let gone = eventually(Duration::from_secs(30), || {
        let rs = kubectl_json(&lab, &["get", "rs", "-l", "app=web"]);
        items(&rs).is_empty() && pod_names(&lab, "default", "app=web").is_empty()
    });
    assert!(gone, "{}", ok(lab.kubectl("c0", &["get", "rs,pods"])));
    assert_slices_follow_ready_pods(&lab, 0);
    // Deleting the Service removes its EndpointSlices (owned) and its Endpoints.
    ok(lab.kubectl("c0", &["delete", "service", "web"]));
    let endpoints_gone = eventually(Duration::from_secs(20), || {
        let slices = kubectl_json(
            &lab,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
            ],
        );
        items(&slices).is_empty()
            && !lab
                .kubectl("c0", &["get", "endpoints", "web"])
                .status
                .success()
    });
    assert!(
        endpoints_gone,
        "{}",
        ok(lab.kubectl("c0", &["get", "endpoints,endpointslices"]))
    );
    let kubernetes = ok(lab.kubectl(
        "c0",
        &[
            "get",
            "endpoints",
            "kubernetes",
            "-o",
            "jsonpath={.subsets[0].addresses[0].ip}",
        ],
    ));
    assert_eq!(
        kubernetes, "172.20.0.2",
        "the API server's own Endpoints are left alone"
    );

    // A namespace is emptied, then deleted; new namespaces get a default ServiceAccount.
    ok(lab.kubectl("c0", &["create", "namespace", "team"]));
    let has_sa = eventually(Duration::from_secs(10), || {
        lab.kubectl("c0", &["-n", "team", "get", "serviceaccount", "default"])
            .status
            .success()
    });
    assert!(has_sa, "no default ServiceAccount in team");
    ok(lab.kubectl(
        "c0",
        &[
            "-n",
            "team",
            "apply",
            "-f",
            manifest.to_str().expect("utf-8 path"),
        ],
    ));
    ok(lab.kubectl(
        "c0",
        &[
            "-n",
            "team",
            "rollout",
            "status",
            "deployment/web",
            "--timeout=60s",
        ],
    ));
    ok(lab.kubectl("c0", &["delete", "namespace", "team", "--timeout=60s"]));
    let namespaces = ok(lab.kubectl("c0", &["get", "namespaces"]));
    assert!(!namespaces.contains("team"), "{namespaces}");
    let left = ok(lab.kubectl(
        "c0",
        &[
            "get",
            "pods,rs,deployments,services,endpointslices",
            "-A",
            "--no-headers",
        ],
    ));
    assert!(
        !left.lines().any(|l| l.starts_with("team ")),
        "left in team:\n{left}"
    );
}

#[test]
fn pods_leave_a_node_whose_kubelet_stops() {
    let lab = Lab::up("ctrlnode", Some(TWO_WORKERS));
    lab.apply("web", WEB);
    rollout_status(&lab);
    // Hold the kubelet of w1 (SIGSTOP): the supervisor would restart a killed one.
    let index = lab.process_index("kubelet", "c0", "w1");
    let pid = lab.status_json()["processes"][index]["pid"]
        .as_i64()
        .expect("kubelet runs");
    ok(std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .output()
        .expect("kill runs"));
    let not_ready = eventually(Duration::from_secs(60), || {
        let nodes = stdout(&lab.kubectl("c0", &["get", "nodes", "--no-headers"]));
        nodes
            .lines()
            .any(|l| l.starts_with("c0-w1 ") && l.contains("NotReady"))
    });
    let moved = not_ready
        && eventually(Duration::from_secs(60), || {
            let pods = kubectl_json(&lab, &["get", "pods", "-l", "app=web"]);
            let on_w2 = items(&pods)
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter(|p| p["spec"]["nodeName"] == "c0-w2")
                .count();
            // Bound is not enough: the three must be ready, and in the slice.
            let ready = ready_slice_ips(&lab, "default", "web");
            on_w2 == 3 && ready.len() == 3 && ready_pod_ips(&lab, "default", "web") == ready
        });
    let report = ok(lab.kubectl("c0", &["get", "nodes,pods", "-o", "wide"]));
    ok(std::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .output()
        .expect("kill runs"));
    assert!(not_ready, "c0-w1 never became NotReady:\n{report}");
    assert!(moved, "the pods were not re-created on c0-w2:\n{report}");
    assert_eq!(ready_slice_ips(&lab, "default", "web").len(), 3, "{report}");
}

const DAEMONSET_AND_JOBS: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers:
      - {name: c, image: busybox, command: ["sleep", "3600"]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: three}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox, command: ["sh", "-c", "sleep 1"]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: failing}
spec:
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox, command: ["sh", "-c", "exit 3"]}
"#;

#[test]
fn daemonsets_cover_workers_and_jobs_finish() {
    let lab = Lab::up("ctrljob", Some(TWO_WORKERS));
    lab.apply("ds-jobs", DAEMONSET_AND_JOBS);
    ok(lab.kubectl(
        "c0",
        &["rollout", "status", "daemonset/agent", "--timeout=60s"],
    ));
    let pods = kubectl_json(&lab, &["get", "pods", "-l", "app=agent"]);
    let mut nodes: Vec<String> = items(&pods)
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
        .collect();
    nodes.sort();
    // One per worker, none on the tainted control plane.
    assert_eq!(
        nodes,
        ["c0-w1", "c0-w2"],
        "{}",
        ok(lab.kubectl("c0", &["get", "pods", "-o", "wide"]))
    );

    // A pod whose nodeSelector nothing matches waits, with the scheduler's reasons, until a
    // node is labelled to match.
    lab.apply(
        "picky",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: picky}\nspec:\n  nodeSelector: {disk: ssd}\n  containers:\n  - {name: c, image: busybox, command: [sleep, '3600']}\n",
    );
    let reasons = "0/3 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }.";
    let failed = eventually(Duration::from_secs(20), || {
        stdout(&lab.kubectl(
            "c0",
            &[
                "get",
                "events",
                "--field-selector",
                "reason=FailedScheduling",
            ],
        ))
        .contains(reasons)
    });
    assert!(failed, "{}", ok(lab.kubectl("c0", &["get", "events"])));
    ok(lab.kubectl("c0", &["label", "node", "c0-w2", "disk=ssd"]));
    let placed = eventually(Duration::from_secs(30), || {
        stdout(&lab.kubectl(
            "c0",
            &["get", "pod", "picky", "-o", "jsonpath={.spec.nodeName}"],
        )) == "c0-w2"
    });
    assert!(
        placed,
        "{}",
        ok(lab.kubectl("c0", &["get", "pod", "picky", "-o", "yaml"]))
    );

    // A worker joins the running lab: the DaemonSet follows it, and it leaves again.
    let added = ok(lab.run(&["node", "add", "c0", "w3"]));
    assert!(added.contains("joined"), "{added}");
    let status = ok(lab.run(&["status"]));
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("c0/w3 ") && l.contains("172.20.0.13")),
        "{status}"
    );
    let agents_on = |lab: &Lab| -> Vec<(String, String)> {
        let pods = kubectl_json(lab, &["get", "pods", "-l", "app=agent"]);
        let mut on: Vec<(String, String)> = items(&pods)
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                (
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                    p["status"]["phase"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        on.sort();
        on
    };
    let running = |nodes: &[&str]| -> Vec<(String, String)> {
        nodes
            .iter()
            .map(|n| (n.to_string(), "Running".to_string()))
            .collect()
    };
    let covered = eventually(Duration::from_secs(60), || {
        agents_on(&lab) == running(&["c0-w1", "c0-w2", "c0-w3"])
    });
    assert!(
        covered,
        "no agent Running on the added worker: {:?}\n{}",
        agents_on(&lab),
        ok(lab.kubectl("c0", &["get", "nodes,pods", "-o", "wide"]))
    );
    // The pod on the new node is reachable from a pod on an old one (flannel picked up the
    // new node's lease).
    let pods = kubectl_json(&lab, &["get", "pods", "-l", "app=agent"]);
    let ip_on = |node: &str| {
        items(&pods)
            .iter()
            .find(|p| p["spec"]["nodeName"] == node)
            .and_then(|p| p["status"]["podIP"].as_str().map(String::from))
            .unwrap_or_default()
    };
    let from = items(&pods)
        .iter()
        .find(|p| p["spec"]["nodeName"] == "c0-w1")
        .and_then(|p| p["metadata"]["name"].as_str().map(String::from))
        .expect("an agent on c0-w1");
    ok(lab.kubectl(
        "c0",
        &["exec", &from, "--", "ping", "-c1", "-W2", &ip_on("c0-w3")],
    ));
    let removed = ok(lab.run(&["node", "remove", "c0", "w3"]));
    assert!(removed.contains("left"), "{removed}");
    let gone = eventually(Duration::from_secs(30), || {
        agents_on(&lab) == running(&["c0-w1", "c0-w2"])
            && !stdout(&lab.kubectl("c0", &["get", "nodes", "--no-headers"])).contains("c0-w3")
    });
    assert!(
        gone,
        "the removed worker's pod stayed: {:?}",
        agents_on(&lab)
    );
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{}-c0-w3", lab.name)))
        .collect();
    assert!(
        left.is_empty(),
        "namespaces of the removed worker: {left:?}"
    );
    // Another worker joins and stays: `down` at the end must leave nothing of it either.
    ok(lab.run(&["node", "add", "c0", "w4"]));

    ok(lab.kubectl(
        "c0",
        &[
            "wait",
            "--for=condition=complete",
            "job/three",
            "--timeout=60s",
        ],
    ));
    let three = kubectl_json(&lab, &["get", "job", "three"]);
    assert_eq!(three["status"]["succeeded"], 3, "{three}");
    let pods = items(&kubectl_json(
        &lab,
        &["get", "pods", "-l", "job-name=three"],
    ));
    let succeeded = pods
        .iter()
        .filter(|p| p["status"]["phase"] == "Succeeded")
        .count();
    assert_eq!(succeeded, 3);
    // parallelism 2: the third pod was created only once one of the first two had finished
    // (each runs `sleep 1`, so all three at once would each be created before any finished).
    let mut created: Vec<String> = pods
        .iter()
        .filter_map(|p| {
            p["metadata"]["creationTimestamp"]
                .as_str()
                .map(String::from)
        })
        .collect();
    created.sort();
    let mut finished: Vec<String> = pods
        .iter()
        .filter_map(|p| {
            p["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]
                .as_str()
                .map(String::from)
        })
        .collect();
    finished.sort();
    assert!(
        created.len() == 3 && finished.len() == 3 && created[2] >= finished[0],
        "more than 2 pods of job three ran at once: created {created:?}, finished {finished:?}"
    );

    ok(lab.kubectl(
        "c0",
        &[
            "wait",
            "--for=condition=failed",
            "job/failing",
            "--timeout=60s",
        ],
    ));
    let failing = kubectl_json(&lab, &["get", "job", "failing"]);
    // backoffLimit 2: the first try and two retries.
    assert_eq!(failing["status"]["failed"], 3, "{failing}");
    let reasons = ok(lab.kubectl(
        "c0",
        &[
            "get",
            "job",
            "failing",
            "-o",
            "jsonpath={.status.conditions[*].reason}",
        ],
    ));
    assert!(reasons.contains("BackoffLimitExceeded"), "{reasons}");
    // Each try is a pod of its own that failed with the command's exit code; no fourth.
    let tries = items(&kubectl_json(
        &lab,
        &["get", "pods", "-l", "job-name=failing"],
    ));
    let exit_codes: Vec<i64> = tries
        .iter()
        .filter(|p| p["status"]["phase"] == "Failed")
        .filter_map(|p| {
            p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"].as_i64()
        })
        .collect();
    assert_eq!(exit_codes, [3, 3, 3], "{tries:?}");
    // Each retry waited out the pod failure back-off: 10 s after the first failure, 20 s
    // after the second (timestamps have whole seconds, hence a second of slack).
    let mut runs: Vec<(jiff::Timestamp, jiff::Timestamp)> = tries
        .iter()
        .filter_map(|p| {
            let created = p["metadata"]["creationTimestamp"].as_str()?.parse().ok()?;
            let finished = p["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]
                .as_str()?
                .parse()
                .ok()?;
            Some((created, finished))
        })
        .collect();
    runs.sort();
    let waited: Vec<i64> = runs
        .windows(2)
        .map(|w| w[1].0.duration_since(w[0].1).as_secs())
        .collect();
    assert!(
        waited.len() == 2 && waited[0] >= 9 && waited[1] >= 19,
        "retries did not back off 10 s then 20 s: {runs:?}"
    );

    let agents = eventually(Duration::from_secs(60), || agents_on(&lab).len() == 3);
    assert!(
        agents,
        "no agent on the second added worker: {:?}",
        agents_on(&lab)
    );
    ok(lab.run(&["down"]));
    let left = residue(&lab.name);
    assert!(left.is_empty(), "down left parts of the lab: {left:?}");
}

const STUCK_AND_PAUSED: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck}
spec:
  replicas: 1
  progressDeadlineSeconds: 4
  selector: {matchLabels: {app: stuck}}
  template:
    metadata: {labels: {app: stuck}}
    spec:
      containers:
      - name: c
        image: busybox
        command: ["sleep", "3600"]
        readinessProbe:
          exec: {command: ["false"]}
          periodSeconds: 1
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: held}
spec:
  replicas: 1
  selector: {matchLabels: {app: held}}
  template:
    metadata: {labels: {app: held}}
    spec:
      containers:
      - {name: c, image: busybox, command: ["sleep", "3600"]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: patient}
spec:
  replicas: 1
  minReadySeconds: 8
  selector: {matchLabels: {app: patient}}
  template:
    metadata: {labels: {app: patient}}
    spec:
      containers:
      - {name: c, image: busybox, command: ["sleep", "3600"]}
"#;

#[test]
fn progress_deadlines_and_paused_rollouts() {
    let lab = Lab::up_bare("ctrlprog", Some(TWO_WORKERS));
    lab.apply("stuck", STUCK_AND_PAUSED);
    // minReadySeconds: a Ready pod counts as available only once it has been Ready that long.
    // The moment the ReplicaSet first counts the pod ready (well within the 8 s), it must not
    // count it available yet.
    let mut early = Value::Null;
    let counted_ready = eventually(Duration::from_secs(60), || {
        early = items(&kubectl_json(&lab, &["get", "rs", "-l", "app=patient"]))
            .first()
            .map(|rs| rs["status"].clone())
            .unwrap_or_default();
        early["readyReplicas"] == 1
    });
    assert!(
        counted_ready,
        "{}",
        ok(lab.kubectl("c0", &["get", "rs,pods", "-o", "wide"]))
    );
    assert_ne!(
        early["availableReplicas"], 1,
        "available as soon as ready despite minReadySeconds 8: {early}"
    );
    let available = eventually(Duration::from_secs(30), || {
        let rs = items(&kubectl_json(&lab, &["get", "rs", "-l", "app=patient"]));
        rs[0]["status"]["availableReplicas"] == 1
    });
    assert!(
        available,
        "{}",
        ok(lab.kubectl("c0", &["get", "rs", "-o", "yaml"]))
    );
    ok(lab.kubectl(
        "c0",
        &["rollout", "status", "deployment/held", "--timeout=60s"],
    ));

    // A pod that never becomes ready: after progressDeadlineSeconds without a step the
    // Deployment says so, and `kubectl rollout status` gives up with kubectl's own message.
    let status = lab.kubectl(
        "c0",
        &["rollout", "status", "deployment/stuck", "--timeout=60s"],
    );
    assert!(
        !status.status.success() && stderr(&status).contains("exceeded its progress deadline"),
        "stdout: {}\nstderr: {}",
        stdout(&status),
        stderr(&status)
    );
    let reason = ok(lab.kubectl(
        "c0",
        &[
            "get",
            "deployment",
            "stuck",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Progressing\")].status}/{.status.conditions[?(@.type==\"Progressing\")].reason}",
        ],
    ));
    assert_eq!(reason, "False/ProgressDeadlineExceeded");

    // Paused: a template change makes no new ReplicaSet, scaling still works; resumed, the
    // rollout happens.
    ok(lab.kubectl("c0", &["rollout", "pause", "deployment/held"]));
    ok(lab.kubectl("c0", &["set", "env", "deployment/held", "COLOUR=blue"]));
    ok(lab.kubectl("c0", &["scale", "deployment/held", "--replicas=3"]));
    let scaled = eventually(Duration::from_secs(30), || {
        let pods = kubectl_json(&lab, &["get", "pods", "-l", "app=held"]);
        items(&pods)
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count()
            == 3
    });
    let sets = || {
        items(&kubectl_json(&lab, &["get", "rs", "-l", "app=held"]))
            .iter()
            .filter_map(|rs| rs["metadata"]["name"].as_str().map(String::from))
            .collect::<BTreeSet<String>>()
    };
    assert!(
        scaled,
        "{}",
        ok(lab.kubectl("c0", &["get", "rs,pods", "-o", "wide"]))
    );
    assert_eq!(
        sets().len(),
        1,
        "a paused Deployment rolled out: {:?}",
        sets()
    );
    let paused = ok(lab.kubectl(
        "c0",
        &[
            "get",
            "deployment",
            "held",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}",
        ],
    ));
    assert_eq!(paused, "DeploymentPaused");
    let env = || {
        items(&kubectl_json(&lab, &["get", "pods", "-l", "app=held"]))
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| p["spec"]["containers"][0]["env"][0]["value"] == "blue")
            .count()
    };
    assert_eq!(env(), 0);
    ok(lab.kubectl("c0", &["rollout", "resume", "deployment/held"]));
    ok(lab.kubectl(
        "c0",
        &["rollout", "status", "deployment/held", "--timeout=90s"],
    ));
    assert_eq!(sets().len(), 2, "{:?}", sets());
    let rolled = eventually(Duration::from_secs(30), || env() == 3);
    assert!(
        rolled,
        "{}",
        ok(lab.kubectl("c0", &["get", "pods", "-o", "yaml"]))
    );
}

const AGENT: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers:
      - {name: c, image: busybox, command: ["sleep", "3600"]}
"#;

#[test]
fn daemonset_history_and_undo() {
    let lab = Lab::up_bare("ctrlhist", Some(TWO_WORKERS));
    lab.apply("agent", AGENT);
    let rollout = || {
        ok(lab.kubectl(
            "c0",
            &["rollout", "status", "daemonset/agent", "--timeout=60s"],
        ))
    };
    let revisions = || {
        let history = ok(lab.kubectl("c0", &["rollout", "history", "daemonset/agent"]));
        history
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse::<i64>().ok())
            .collect::<Vec<i64>>()
    };
    rollout();
    ok(lab.kubectl("c0", &["set", "env", "daemonset/agent", "COLOUR=blue"]));
    rollout();
    assert_eq!(revisions(), [1, 2]);
    let colours = || {
        let pods = kubectl_json(&lab, &["get", "pods", "-l", "app=agent"]);
        let mut colours: Vec<String> = items(&pods)
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                p["spec"]["containers"][0]["env"][0]["value"]
                    .as_str()
                    .unwrap_or("none")
                    .to_string()
            })
            .collect();
        colours.sort();
        colours
    };
    assert_eq!(colours(), ["blue", "blue"]);
    // Undo applies revision 1's template again, which becomes revision 3.
    ok(lab.kubectl("c0", &["rollout", "undo", "daemonset/agent"]));
    rollout();
    let back = eventually(Duration::from_secs(30), || colours() == ["none", "none"]);
    assert!(back, "{:?}", colours());
    assert_eq!(revisions(), [2, 3]);
}
