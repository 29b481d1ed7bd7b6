//! What a Pod's containers see, set up by the kubelet: their own `/etc/resolv.conf`,
//! `/etc/hosts` and `/etc/hostname`; volumes (configMap, secret, downwardAPI, emptyDir) at
//! their mount paths, with ConfigMap updates showing up; the environment (`env`, `envFrom`,
//! `$(VAR)` expansion, the service variables). Driven with the real kubectl; files are read
//! inside the container with `knetsim crictl exec`.

mod common;

use std::time::Duration;

use common::*;

const ONE_WORKER: &str = "clusters:\n  - name: c0\n    workers: 1\n";

const WEB: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data: {greeting: hello, app.conf: "listen 80;\n"}
---
apiVersion: v1
kind: Secret
metadata: {name: web-secret}
data: {password: czNjcmV0}
---
apiVersion: v1
kind: Service
metadata: {name: my-web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web, tier: front}}
spec:
  nodeName: c0-w1
  hostAliases: [{ip: 10.1.2.3, hostnames: [foo.local, bar.local]}]
  dnsConfig: {options: [{name: edns0}]}
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "env; echo 'ARGS $(MESSAGE)'; sleep 3600"]
    resources: {limits: {cpu: 500m}}
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: web-config, key: greeting}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: web-secret, key: password}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: MESSAGE, value: "$(GREETING) from $(POD_IP) $$(KEPT) $(UNKNOWN)"}
    envFrom: [{prefix: CFG_, configMapRef: {name: web-config}}]
    volumeMounts:
    - {name: config, mountPath: /etc/knetsim-e2e/config}
    - {name: config, mountPath: /etc/knetsim-e2e/app.conf, subPath: app.conf}
    - {name: secret, mountPath: /etc/knetsim-e2e/secret}
    - {name: info, mountPath: /etc/knetsim-e2e/podinfo}
    - {name: scratch, mountPath: /var/knetsim-e2e-cache}
    - {name: api, mountPath: /var/run/secrets/kubernetes.io/serviceaccount}
  - name: writer
    image: busybox
    command: ["sh", "-c", "echo shared > /srv/knetsim-e2e/x; pwd > /srv/knetsim-e2e/wd; echo from-pod > /mnt/knetsim-host/x; sleep 3600"]
    workingDir: /opt/knetsim-e2e-work
    volumeMounts:
    - {name: scratch, mountPath: /srv/knetsim-e2e}
    - {name: host, mountPath: /mnt/knetsim-host}
  volumes:
  - {name: config, configMap: {name: web-config}}
  - {name: secret, secret: {secretName: web-secret, defaultMode: 0400}}
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: cpu, resourceFieldRef: {containerName: app, resource: limits.cpu, divisor: 1m}}
  - {name: scratch, emptyDir: {}}
  - {name: host, hostPath: {path: /var/lib/kubelet/knetsim-e2e-host, type: DirectoryOrCreate}}
  - name: api
    projected:
      sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3607}
      - configMap: {name: web-config, items: [{key: greeting, path: greeting.txt}]}
      - downwardAPI: {items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}
"#;

fn jsonpath(lab: &Lab, pod: &str, path: &str) -> String {
    lab.pod_jsonpath(pod, path)
}

fn wait_running(lab: &Lab, pod: &str) {
    lab.wait_pod_running(pod, Duration::from_secs(30));
}

/// The runtime ID of `container` of `pod`.
fn container_id(lab: &Lab, pod: &str, container: &str) -> String {
    let id = jsonpath(
        lab,
        pod,
        &format!("{{.status.containerStatuses[?(@.name==\"{container}\")].containerID}}"),
    );
    id.trim_start_matches("cri-lite://").to_string()
}

/// Run `command` inside the container; its stdout (stderr too on failure).
fn in_container(lab: &Lab, node: &str, id: &str, command: &[&str]) -> Result<String, String> {
    let mut args = vec!["crictl", node, "exec", id, "--"];
    args.extend_from_slice(command);
    let output = lab.run(&args);
    if output.status.success() {
        Ok(stdout(&output))
    } else {
        Err(format!("{}{}", stdout(&output), stderr(&output)))
    }
}

#[test]
fn pods_see_their_own_dns_hosts_volumes_and_environment() {
    let lab = Lab::up("podfeat", Some(ONE_WORKER));
    let manifest = write_temp(&format!("{}-web.yaml", lab.name), WEB);
    ok(lab.kubectl("c0", &["apply", "-f", manifest.to_str().unwrap()]));
    wait_running(&lab, "web");
    let pod_ip = jsonpath(&lab, "web", "{.status.podIP}");
    let uid = jsonpath(&lab, "web", "{.metadata.uid}");
    let app = container_id(&lab, "web", "app");
    let read = |path: &str| in_container(&lab, "c0/w1", &app, &["cat", path]);

    // DNS as the kubelet sets it for ClusterFirst, with the Pod's dnsConfig merged in.
    let resolv = read("/etc/resolv.conf").unwrap();
    assert!(
        resolv.starts_with("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("\nnameserver 10.96.0.10\n"), "{resolv}");
    assert!(resolv.ends_with("options ndots:5 edns0\n"), "{resolv}");
    let hosts = read("/etc/hosts").unwrap();
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file."),
        "{hosts}"
    );
    assert!(hosts.contains(&format!("\n{pod_ip}\tweb\n")), "{hosts}");
    assert!(
        hosts.contains("10.1.2.3\tfoo.local\tbar.local\n"),
        "{hosts}"
    );
    assert_eq!(read("/etc/hostname").unwrap(), "web\n");
    // The files live in the Pod's directory, as on a real node; the machine's are untouched.
    let pod_dir = format!(
        "/tmp/knetsim/{}/nodes/c0-w1/var/lib/kubelet/pods/{uid}",
        lab.name
    );
    assert!(path_exists(&format!("{pod_dir}/etc-hosts")), "{pod_dir}");
    assert_ne!(std::fs::read_to_string("/etc/hosts").unwrap(), hosts);

    // Volumes at their mount paths; none of the mount points appear on the machine.
    assert_eq!(read("/etc/knetsim-e2e/config/greeting").unwrap(), "hello");
    assert_eq!(read("/etc/knetsim-e2e/app.conf").unwrap(), "listen 80;\n");
    assert_eq!(read("/etc/knetsim-e2e/secret/password").unwrap(), "s3cret");
    let mode = in_container(
        &lab,
        "c0/w1",
        &app,
        &["stat", "-L", "-c", "%a", "/etc/knetsim-e2e/secret/password"],
    );
    assert_eq!(mode.unwrap().trim(), "400");
    let labels = read("/etc/knetsim-e2e/podinfo/labels").unwrap();
    assert_eq!(labels, "app=\"web\"\ntier=\"front\"");
    assert_eq!(read("/etc/knetsim-e2e/podinfo/cpu").unwrap(), "500");
    assert!(
        in_container(
            &lab,
            "c0/w1",
            &app,
            &["touch", "/etc/knetsim-e2e/config/new"]
        )
        .is_err(),
        "a configMap volume must be read-only"
    );
    assert!(!path_exists("/etc/knetsim-e2e"));
    assert!(!path_exists("/var/knetsim-e2e-cache"));
    assert!(path_exists(&format!(
        "{pod_dir}/volumes/kubernetes.io~configmap/config/..data"
    )));
    // A projected volume at the service-account path; the token comes from the TokenRequest
    // API when the API server serves it (`kubectl create token` tells).
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert_eq!(read(&format!("{sa}/greeting.txt")).unwrap(), "hello");
    assert_eq!(read(&format!("{sa}/namespace")).unwrap(), "default");
    if lab
        .kubectl("c0", &["create", "token", "default"])
        .status
        .success()
    {
        let has_token = eventually(Duration::from_secs(5), || {
            read(&format!("{sa}/token")).is_ok_and(|t| t.split('.').count() == 3)
        });
        assert!(has_token, "{:?}", read(&format!("{sa}/token")));
    } else {
        assert!(read(&format!("{sa}/token")).is_err());
    }
    // emptyDir is shared by the Pod's containers.
    let shared = eventually(Duration::from_secs(5), || {
        read("/var/knetsim-e2e-cache/x").as_deref() == Ok("shared\n")
    });
    assert!(shared, "{:?}", read("/var/knetsim-e2e-cache/x"));
    // A workingDir the machine lacks is made for the container, not on the machine.
    assert_eq!(
        read("/var/knetsim-e2e-cache/wd").unwrap(),
        "/opt/knetsim-e2e-work\n"
    );
    assert!(!path_exists("/opt/knetsim-e2e-work"));
    // hostPath is the node's own path (its /var/lib/kubelet is the node's private one).
    let host_file = format!(
        "/tmp/knetsim/{}/nodes/c0-w1/var/lib/kubelet/knetsim-e2e-host/x",
        lab.name
    );
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "from-pod\n");

    // The environment: valueFrom, envFrom with its prefix, $(VAR) expansion in env and
    // args, and the service variables.
    let log = eventually(Duration::from_secs(5), || {
        stdout(&lab.kubectl("c0", &["logs", "web", "-c", "app"])).contains("ARGS ")
    });
    assert!(log);
    let env = stdout(&lab.kubectl("c0", &["logs", "web", "-c", "app"]));
    for line in [
        "GREETING=hello".to_string(),
        "PASSWORD=s3cret".to_string(),
        format!("POD_IP={pod_ip}"),
        "NODE=c0-w1".to_string(),
        format!("MESSAGE=hello from {pod_ip} $(KEPT) $(UNKNOWN)"),
        "CFG_greeting=hello".to_string(),
        "KUBERNETES_SERVICE_HOST=10.96.0.1".to_string(),
        "KUBERNETES_SERVICE_PORT=443".to_string(),
        "MY_WEB_SERVICE_PORT=80".to_string(),
        "MY_WEB_SERVICE_PORT_HTTP=80".to_string(),
        format!("ARGS hello from {pod_ip} $(KEPT) $(UNKNOWN)"),
    ] {
        assert!(env.lines().any(|l| l == line), "no {line:?} in:\n{env}");
    }
    let service_ip = stdout(&lab.kubectl(
        "c0",
        &["get", "svc", "my-web", "-o", "jsonpath={.spec.clusterIP}"],
    ));
    assert!(
        env.contains(&format!("MY_WEB_PORT_80_TCP=tcp://{service_ip}:80\n")),
        "{env}"
    );

    // A ConfigMap update reaches the volume (not the subPath file, as in Kubernetes).
    ok(lab.kubectl(
        "c0",
        &[
            "patch",
            "configmap",
            "web-config",
            "-p",
            r#"{"data":{"greeting":"updated","app.conf":"listen 81;\n"}}"#,
        ],
    ));
    let updated = eventually(Duration::from_secs(15), || {
        read("/etc/knetsim-e2e/config/greeting").as_deref() == Ok("updated")
    });
    assert!(updated, "{:?}", read("/etc/knetsim-e2e/config/greeting"));
    assert_eq!(read("/etc/knetsim-e2e/app.conf").unwrap(), "listen 80;\n");

    // Deleting the Pod removes its directory.
    ok(lab.kubectl("c0", &["delete", "pod", "web", "--grace-period=1"]));
    assert!(
        eventually(Duration::from_secs(10), || !path_exists(&pod_dir)),
        "{pod_dir} left behind"
    );
}

const PROBED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  nodeName: c0-w1
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: python
    command: ["python3", "-m", "http.server", "8080", "--directory", "/srv/knetsim-www"]
    ports: [{name: http, containerPort: 8080}]
    startupProbe: {tcpSocket: {port: http}, periodSeconds: 1, failureThreshold: 30}
    readinessProbe: {httpGet: {path: /ready, port: 8080}, periodSeconds: 1, failureThreshold: 1}
    volumeMounts: [{name: www, mountPath: /srv/knetsim-www}]
  - name: worker
    image: busybox
    command: ["sh", "-c", "touch /srv/knetsim-www/alive; sleep 3600"]
    livenessProbe: {exec: {command: [test, -e, /srv/knetsim-www/alive]}, periodSeconds: 1, failureThreshold: 2}
    volumeMounts: [{name: www, mountPath: /srv/knetsim-www}]
  - name: tls
    image: python
    workingDir: /srv/knetsim-tls
    command: ["sh", "-c"]
    args:
    - |
      openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=probe -keyout key.pem -out cert.pem -days 1 2>/dev/null
      exec python3 -c '
      import http.server, ssl
      server = http.server.HTTPServer(("", 8443), http.server.SimpleHTTPRequestHandler)
      context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
      context.load_cert_chain("cert.pem", "key.pem")
      server.socket = context.wrap_socket(server.socket, server_side=True)
      server.serve_forever()'
    readinessProbe: {httpGet: {scheme: HTTPS, path: /cert.pem, port: 8443}, periodSeconds: 1}
    volumeMounts: [{name: tls, mountPath: /srv/knetsim-tls}]
  volumes: [{name: www, emptyDir: {}}, {name: tls, emptyDir: {}}]
---
apiVersion: v1
kind: Pod
metadata: {name: unmountable}
spec:
  nodeName: c0-w1
  containers: [{name: c, image: busybox, command: [sleep, "600"], volumeMounts: [{name: cfg, mountPath: /etc/knetsim-cfg}]}]
  volumes: [{name: cfg, configMap: {name: does-not-exist}}]
"#;

#[test]
fn probes_drive_readiness_and_restarts_and_events_show_in_describe() {
    let lab = Lab::up("podprobe", Some(ONE_WORKER));
    let manifest = write_temp(&format!("{}-probed.yaml", lab.name), PROBED);
    ok(lab.kubectl("c0", &["apply", "-f", manifest.to_str().unwrap()]));
    wait_running(&lab, "probed");
    let status = |field: &str, container: &str| {
        jsonpath(
            &lab,
            "probed",
            &format!("{{.status.containerStatuses[?(@.name==\"{container}\")].{field}}}"),
        )
    };
    let condition = |kind: &str| {
        jsonpath(
            &lab,
            "probed",
            &format!("{{.status.conditions[?(@.type==\"{kind}\")].status}}"),
        )
    };
    // Started (the TCP startup probe passed) but not ready: /ready is a 404.
    let started = eventually(Duration::from_secs(20), || {
        status("started", "web") == "true"
    });
    assert!(
        started,
        "{}",
        stdout(&lab.kubectl("c0", &["get", "pod", "probed", "-o", "yaml"]))
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status("ready", "web"), "false");
    assert_eq!(status("ready", "worker"), "true");
    assert_eq!(condition("Ready"), "False");
    assert_eq!(condition("ContainersReady"), "False");

    // The readiness probe passes once /ready exists, and fails again when it goes.
    let web = container_id(&lab, "probed", "web");
    in_container(&lab, "c0/w1", &web, &["touch", "/srv/knetsim-www/ready"]).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || condition("Ready") == "True"),
        "{}",
        stdout(&lab.kubectl("c0", &["get", "pod", "probed", "-o", "yaml"]))
    );
    assert_eq!(status("ready", "web"), "true");
    // An HTTPS probe, which does not verify the server's (self-signed) certificate.
    assert_eq!(status("ready", "tls"), "true");
    in_container(&lab, "c0/w1", &web, &["rm", "/srv/knetsim-www/ready"]).unwrap();
    assert!(eventually(Duration::from_secs(10), || condition("Ready") == "False"));

    // The liveness probe fails when its file goes: the worker is killed and restarted.
    let worker = container_id(&lab, "probed", "worker");
    in_container(&lab, "c0/w1", &worker, &["rm", "/srv/knetsim-www/alive"]).unwrap();
    let restarted = eventually(Duration::from_secs(30), || {
        status("restartCount", "worker") == "1"
            && !status("state.running.startedAt", "worker").is_empty()
    });
    assert!(
        restarted,
        "{}",
        stdout(&lab.kubectl("c0", &["get", "pod", "probed", "-o", "yaml"]))
    );
    // Killed by its SIGTERM (143): what the shell does with it, no PID namespace here.
    assert_eq!(status("lastState.terminated.exitCode", "worker"), "143");
    assert_eq!(status("lastState.terminated.reason", "worker"), "Error");

    // kubectl describe shows the kubelet's Events.
    let described = ok(lab.kubectl("c0", &["describe", "pod", "probed"]));
    for expected in [
        "Container image \"python\" already present on machine",
        "Created container: web",
        "Started container worker",
        "Readiness probe failed: HTTP probe failed with statuscode: 404",
        "Liveness probe failed",
        "Container worker failed liveness probe, will be restarted",
        "kubelet",
    ] {
        assert!(
            described.contains(expected),
            "no {expected:?} in:\n{described}"
        );
    }
    let unmountable = eventually(Duration::from_secs(10), || {
        stdout(&lab.kubectl("c0", &["describe", "pod", "unmountable"])).contains(
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"does-not-exist\" not found",
        )
    });
    assert!(
        unmountable,
        "{}",
        stdout(&lab.kubectl("c0", &["describe", "pod", "unmountable"]))
    );
    let events = ok(lab.kubectl(
        "c0",
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=probed",
        ],
    ));
    assert!(events.contains("Unhealthy"), "{events}");
}

const NGINX_AND_HOST_NETWORK: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  nodeName: c0-w1
  containers:
  - name: nginx
    image: nginx:1.27
    ports: [{containerPort: 80, hostPort: 8088}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: custom-site}
data:
  default.conf: |
    server {
        listen 8080;
        location / { return 200 "custom site\n"; }
    }
---
apiVersion: v1
kind: Pod
metadata: {name: custom}
spec:
  nodeName: c0-w1
  containers:
  - name: nginx
    image: docker.io/library/nginx:latest
    volumeMounts: [{name: site, mountPath: /etc/nginx/conf.d}]
  volumes: [{name: site, configMap: {name: custom-site}}]
---
apiVersion: v1
kind: Pod
metadata: {name: agent}
spec:
  nodeName: c0-w1
  hostNetwork: true
  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
"#;

#[test]
fn nginx_host_ports_and_host_network_pods() {
    let lab = Lab::up("podhost", Some(ONE_WORKER));
    let manifest = write_temp(&format!("{}-nginx.yaml", lab.name), NGINX_AND_HOST_NETWORK);
    ok(lab.kubectl("c0", &["apply", "-f", manifest.to_str().unwrap()]));
    for pod in ["web", "custom", "agent"] {
        wait_running(&lab, pod);
    }
    // From another node: the pod IP, and the hostPort on the node's IP (CNI portmap).
    let cp = format!("{}-c0-cp", lab.name);
    let curl = |url: &str| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &cp, "curl", "-s", "-m", "2", url])
            .output()
            .unwrap();
        stdout(&out)
    };
    let web_ip = jsonpath(&lab, "web", "{.status.podIP}");
    let welcome = eventually(Duration::from_secs(10), || {
        curl(&format!("http://{web_ip}/")).contains("Welcome to nginx!")
    });
    assert!(welcome, "{}", curl(&format!("http://{web_ip}/")));
    let via_host_port = curl("http://172.20.0.11:8088/");
    assert!(
        via_host_port.contains("Welcome to nginx!"),
        "{via_host_port:?}"
    );
    // nginx logs to stdout, as the image does.
    let logged = eventually(Duration::from_secs(5), || {
        stdout(&lab.kubectl("c0", &["logs", "web"])).contains("\"GET / HTTP/1.1\" 200")
    });
    assert!(logged, "{}", stdout(&lab.kubectl("c0", &["logs", "web"])));
    // A config from a ConfigMap at /etc/nginx/conf.d replaces the default site.
    let custom_ip = jsonpath(&lab, "custom", "{.status.podIP}");
    let custom = eventually(Duration::from_secs(10), || {
        curl(&format!("http://{custom_ip}:8080/")) == "custom site\n"
    });
    assert!(custom, "{:?}", curl(&format!("http://{custom_ip}:8080/")));

    // A hostNetwork pod is on the node's network, with the node's IP and hostname.
    assert_eq!(jsonpath(&lab, "agent", "{.status.podIP}"), "172.20.0.11");
    let agent = container_id(&lab, "agent", "c");
    let addresses = in_container(&lab, "c0/w1", &agent, &["ip", "-o", "-4", "addr"]).unwrap();
    assert!(addresses.contains("172.20.0.11/24"), "{addresses}");
    assert_eq!(
        in_container(&lab, "c0/w1", &agent, &["hostname"]).unwrap(),
        "c0-w1\n"
    );
    // Deleting it leaves the node's namespace alone.
    ok(lab.kubectl("c0", &["delete", "pod", "agent", "--grace-period=1"]));
    assert!(path_exists(&format!("/run/netns/{}-c0-w1", lab.name)));
    assert!(curl(&format!("http://{web_ip}/")).contains("Welcome"));
}

#[test]
fn a_restarted_kubelet_checks_the_networks_of_the_pods_it_adopts() {
    let lab = Lab::up("podcheck", Some(ONE_WORKER));
    let manifest = write_temp(
        &format!("{}-check.yaml", lab.name),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: healthy}\nspec:\n  nodeName: c0-w1\n  containers: [{name: c, image: busybox, command: [sleep, '3600']}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: broken}\nspec:\n  nodeName: c0-w1\n  containers: [{name: c, image: busybox, command: [sleep, '3600']}]\n",
    );
    ok(lab.kubectl("c0", &["apply", "-f", manifest.to_str().unwrap()]));
    wait_running(&lab, "healthy");
    wait_running(&lab, "broken");
    // Break one pod's network behind the kubelet's back, then restart the kubelet.
    let broken_ns = format!("{}-c0-w1-default-broken", lab.name);
    let deleted = std::process::Command::new("ip")
        .args(["-n", &broken_ns, "link", "del", "eth0"])
        .status()
        .unwrap();
    assert!(deleted.success());
    let (index, old_pid) = lab.kill_process("kubelet", "c0", "w1");
    let restarted = eventually(Duration::from_secs(20), || {
        lab.status_json()["processes"][index]["pid"]
            .as_i64()
            .is_some_and(|pid| pid != old_pid)
    });
    assert!(restarted);
    let warned = eventually(Duration::from_secs(20), || {
        stdout(&lab.kubectl("c0", &["describe", "pod", "broken"])).contains("FailedCNICheck")
    });
    assert!(
        warned,
        "{}",
        stdout(&lab.kubectl("c0", &["describe", "pod", "broken"]))
    );
    let log = std::fs::read_to_string(format!("/tmp/knetsim/{}/logs/c0-w1-kubelet.log", lab.name))
        .unwrap_or_default();
    assert!(log.contains("adopted; CNI CHECK passed"), "{log}");
    let described = stdout(&lab.kubectl("c0", &["describe", "pod", "broken"]));
    assert!(
        described.contains("Interface name eth0 not found"),
        "{described}"
    );
    assert!(!stdout(&lab.kubectl("c0", &["describe", "pod", "healthy"])).contains("FailedCNICheck"));
    // Both keep running: CHECK diagnoses, it does not kill.
    assert_eq!(jsonpath(&lab, "healthy", "{.status.phase}"), "Running");

    // Without the node's CNI network, a new pod's sandbox fails: an Event says why, and the
    // pod starts once the network is back.
    let conflist = format!(
        "/tmp/knetsim/{}/nodes/c0-w1/etc/cni/net.d/10-flannel.conflist",
        lab.name
    );
    let aside = format!("{conflist}.aside");
    std::fs::rename(&conflist, &aside).unwrap();
    let nonet = write_temp(
        &format!("{}-nonet.yaml", lab.name),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: nonet}\nspec:\n  nodeName: c0-w1\n  containers: [{name: c, image: busybox, command: [sleep, '3600']}]\n",
    );
    ok(lab.kubectl("c0", &["apply", "-f", nonet.to_str().unwrap()]));
    let failed = eventually(Duration::from_secs(20), || {
        stdout(&lab.kubectl("c0", &["describe", "pod", "nonet"])).contains("FailedCreatePodSandBox")
    });
    let described = stdout(&lab.kubectl("c0", &["describe", "pod", "nonet"]));
    assert!(failed, "{described}");
    assert!(
        described.contains("Failed to create pod sandbox"),
        "{described}"
    );
    std::fs::rename(&aside, &conflist).unwrap();
    wait_running(&lab, "nonet");
}
