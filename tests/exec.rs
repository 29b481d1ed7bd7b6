//! `kubectl exec`, `exec -it`, `attach` and `port-forward` through the API server to the
//! kubelet of the pod's node, with the real kubectl 1.32 (WebSocket v5 for exec and attach,
//! SPDY/3.1 when WebSockets are turned off, and SPDY/3.1 after its WebSocket attempt for
//! port-forward), the official Python client (v4
//! channels, WebSocket port-forward) and kube-rs (`Api::exec`). There is no scheduler yet:
//! the pods name their node.

mod common;

use std::io::{BufRead, Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const TWO_WORKERS: &str = "clusters:\n  - name: c0\n    workers: 2\n";

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: server}
spec:
  nodeName: c0-w1
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: ["netexec", "--http-port=8080"]
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
    workingDir: /tmp
    env: [{name: GREETING, value: hello-from-env}]
---
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  nodeName: c0-w1
  restartPolicy: Never
  containers:
  - name: echo
    image: busybox
    command: ["sh", "-c", "while read line; do echo \"got $line\"; done; echo bye"]
    stdin: true
    stdinOnce: true
---
apiVersion: v1
kind: Pod
metadata: {name: terminal}
spec:
  nodeName: c0-w2
  restartPolicy: Never
  containers:
  - name: sh
    image: busybox
    command: ["sh"]
    stdin: true
    tty: true
"#;

fn kubeconfig(lab: &Lab) -> String {
    format!("/tmp/knetsim/{}/kubeconfig", lab.name)
}

fn kubectl_cmd(lab: &Lab) -> Command {
    let mut command = Command::new("kubectl");
    command
        .arg(format!("--kubeconfig={}", kubeconfig(lab)))
        .arg("--context=c0");
    command
}

/// kubectl with `input` on its stdin, given a minute at most.
fn kubectl_with_input(lab: &Lab, args: &[&str], input: &[u8]) -> Output {
    let mut child = kubectl_cmd(lab)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        for line in input.split_inclusive(|b| *b == b'\n') {
            let _ = stdin.write_all(line);
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let output = wait_with_timeout(child, Duration::from_secs(60));
    let _ = writer.join();
    output
}

fn wait_with_timeout(mut child: std::process::Child, timeout: Duration) -> Output {
    let ended = eventually(timeout, || matches!(child.try_wait(), Ok(Some(_))));
    if !ended {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("kubectl ends");
    assert!(ended, "timed out: {}", stderr(&output));
    output
}

fn pod_ip(lab: &Lab, pod: &str) -> String {
    stdout(&lab.kubectl("c0", &["get", "pod", pod, "-o", "jsonpath={.status.podIP}"]))
}

fn start_pods(tag: &str) -> Lab {
    let lab = Lab::up(tag, Some(TWO_WORKERS));
    let manifest = write_temp(&format!("{}-exec.yaml", lab.name), PODS);
    let applied = eventually(Duration::from_secs(20), || {
        lab.kubectl("c0", &["apply", "-f", manifest.to_str().unwrap()])
            .status
            .success()
    });
    assert!(applied, "the pods could not be created");
    for pod in ["server", "client", "talker", "terminal"] {
        let running = eventually(Duration::from_secs(30), || {
            stdout(&lab.kubectl("c0", &["get", "pod", pod, "-o", "jsonpath={.status.phase}"]))
                == "Running"
        });
        assert!(running, "{pod} is not Running");
    }
    lab
}

#[test]
fn kubectl_exec_attach_and_port_forward() {
    let lab = start_pods("exec");
    let server_ip = pod_ip(&lab, "server");

    // exec across nodes: ping's exit code 0 comes back as kubectl's.
    let ping = lab.kubectl(
        "c0",
        &["exec", "client", "--", "ping", "-c1", "-W2", &server_ip],
    );
    assert!(ping.status.success(), "{}", stderr(&ping));
    assert!(stdout(&ping).contains("1 received"), "{}", stdout(&ping));

    // A non-zero exit code, with stdout and stderr kept apart.
    let failed = lab.kubectl(
        "c0",
        &[
            "exec",
            "client",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(failed.status.code(), Some(3), "{}", stderr(&failed));
    assert_eq!(stdout(&failed), "out\n");
    let errors = stderr(&failed);
    assert!(errors.contains("err\n"), "{errors}");
    assert!(
        errors.contains("command terminated with exit code 3"),
        "{errors}"
    );

    // The container's view: its hostname, environment, working directory and files (the
    // pod's own resolv.conf lives in the container's mount namespace).
    let view = ok(lab.kubectl(
        "c0",
        &[
            "exec",
            "client",
            "--",
            "sh",
            "-c",
            "hostname; echo $GREETING; pwd",
        ],
    ));
    assert_eq!(view, "client\nhello-from-env\n/tmp\n");
    let resolv = ok(lab.kubectl("c0", &["exec", "client", "--", "cat", "/etc/resolv.conf"]));
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");

    // stdin, closed by kubectl at its end (v5's close signal), ends `cat`.
    let cat = kubectl_with_input(
        &lab,
        &["exec", "-i", "client", "--", "cat"],
        b"hello\nworld\n",
    );
    assert!(cat.status.success(), "{}", stderr(&cat));
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "hello\nworld\n");

    // kubectl cp is tar over exec's stdin: a megabyte arrives intact.
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let local = write_temp(&format!("{}-payload.bin", lab.name), "");
    std::fs::write(&local, &payload).expect("payload written");
    ok(lab.kubectl(
        "c0",
        &["cp", local.to_str().unwrap(), "client:/tmp/payload.bin"],
    ));
    let copied = lab.kubectl("c0", &["exec", "client", "--", "cat", "/tmp/payload.bin"]);
    assert!(copied.status.success(), "{}", stderr(&copied));
    assert_eq!(copied.stdout.len(), payload.len());
    assert!(
        copied.stdout == payload,
        "the copy differs from the original"
    );

    // A tty, driven through `script`: a terminal, its size from kubectl's resize channel,
    // and the shell's exit code.
    let (code, screen) = in_terminal(&lab, "exec -it client -- sh");
    assert_eq!(code, Some(5), "{screen}");
    assert!(screen.contains("/dev/pts/"), "{screen}");
    assert!(screen.contains("\n33 111\n"), "{screen}");
    assert!(screen.contains("\n42\n"), "{screen}");

    // attach -it to a container that has a tty of its own (its shell's prompt and echo).
    let (code, screen) = in_terminal(&lab, "attach -it terminal");
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("\n33 111\n"), "{screen}");
    assert!(screen.contains("\n42\n"), "{screen}");
    let log = stdout(&lab.kubectl("c0", &["logs", "terminal"]));
    assert!(log.contains("echo $((6*7))"), "{log}");

    // attach: the running container's own stdin and stdout; with stdinOnce its stdin closes
    // when kubectl's ends, the container ends, and so does kubectl attach.
    let attach = kubectl_with_input(&lab, &["attach", "-i", "talker"], b"one\ntwo\n");
    assert!(attach.status.success(), "{}", stderr(&attach));
    let said = String::from_utf8_lossy(&attach.stdout);
    assert!(said.contains("got one\ngot two\nbye\n"), "{said}");

    // port-forward: a local port of the root namespace (loopback) to the pod's 8080, over
    // kubectl's default (SPDY tunnelled in WebSocket) and over a plain SPDY upgrade.
    for websockets in ["true", "false"] {
        let (hostname, echoed) = port_forward(&lab, websockets);
        assert_eq!(
            hostname, "server",
            "KUBECTL_PORT_FORWARD_WEBSOCKETS={websockets}"
        );
        assert_eq!(
            echoed, "forwarded",
            "KUBECTL_PORT_FORWARD_WEBSOCKETS={websockets}"
        );
    }

    // client-go's SPDY executor, as kubectl uses it with WebSockets turned off.
    let spdy = kubectl_cmd(&lab)
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .args(["exec", "-i", "client", "--", "sh", "-c", "cat; exit 2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut spdy = spdy;
    let _ = spdy.stdin.take().expect("stdin").write_all(b"over spdy\n");
    let spdy = wait_with_timeout(spdy, Duration::from_secs(60));
    assert_eq!(spdy.status.code(), Some(2), "{}", stderr(&spdy));
    assert_eq!(stdout(&spdy), "over spdy\n");

    // Errors come back as kubectl prints them.
    let wrong = lab.kubectl("c0", &["exec", "client", "-c", "nope", "--", "true"]);
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("container nope is not valid for pod client"),
        "{}",
        stderr(&wrong)
    );
    let missing = lab.kubectl("c0", &["exec", "client", "--", "no-such-command"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no-such-command"),
        "{}",
        stderr(&missing)
    );
}

/// `kubectl <args>` in a 33x111 terminal made by `script` (util-linux), typing a few
/// commands and then `exit 5`: the exit code and what the terminal showed.
fn in_terminal(lab: &Lab, args: &str) -> (Option<i32>, String) {
    let terminal = format!(
        "stty rows 33 cols 111; kubectl --kubeconfig={} --context=c0 {args}",
        kubeconfig(lab)
    );
    let mut child = Command::new("script")
        .args(["-qec", &terminal, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let mut input = child.stdin.take().expect("stdin");
    let typing = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        let _ = input.write_all(b"tty; stty size; echo $((6*7))\n");
        std::thread::sleep(Duration::from_secs(1));
        let _ = input.write_all(b"exit 5\n");
        std::thread::sleep(Duration::from_secs(1));
    });
    let output = wait_with_timeout(child, Duration::from_secs(60));
    let _ = typing.join();
    let screen = String::from_utf8_lossy(&output.stdout).replace('\r', "");
    (output.status.code(), screen)
}

/// `kubectl port-forward pod/server :8080`, then GET /hostname and /echo through it.
fn port_forward(lab: &Lab, websockets: &str) -> (String, String) {
    let mut forward = kubectl_cmd(lab)
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets)
        .args(["port-forward", "pod/server", ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward runs");
    let mut lines = std::io::BufReader::new(forward.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let port = first
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split_whitespace().next())
        .map(String::from);
    let Some(port) = port else {
        let _ = forward.kill();
        let mut errors = String::new();
        let _ = forward
            .stderr
            .take()
            .map(|mut e| e.read_to_string(&mut errors));
        panic!("port-forward did not start: {first} {errors}");
    };
    let curl = |path: &str| {
        stdout(
            &Command::new("curl")
                .args(["-s", "-m", "5", &format!("http://127.0.0.1:{port}{path}")])
                .output()
                .expect("curl runs"),
        )
    };
    let answers = (curl("/hostname"), curl("/echo?msg=forwarded"));
    let _ = forward.kill();
    let _ = forward.wait();
    answers
}

#[test]
fn python_client_exec_and_port_forward() {
    let python = python_with_client();
    let lab = start_pods("execpy");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/exec_client.py");
    let run = Command::new(&python)
        .args([script, &kubeconfig(&lab), "c0"])
        .output()
        .expect("python runs");
    let printed = stdout(&run);
    assert!(run.status.success(), "{printed}\n{}", stderr(&run));
    assert!(printed.contains("returncode=7"), "{printed}");
    assert!(printed.trim_end().ends_with("ok"), "{printed}");
}

#[test]
fn kube_rs_exec_with_stdin_and_exit_code() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, AttachParams};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let lab = start_pods("execkube");
    let path = kubeconfig(&lab);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let (output, status) = runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("the lab's kubeconfig");
        let options = kube::config::KubeConfigOptions {
            context: Some("c0".into()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .expect("a client config for c0");
        let client = kube::Client::try_from(config).expect("a client");
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let params = AttachParams::default().stdin(true).stderr(false);
        let mut process = pods
            .exec(
                "client",
                [
                    "sh",
                    "-c",
                    "echo from-kube-rs; read line; echo \"got $line\"; exit 4",
                ],
                &params,
            )
            .await
            .expect("exec starts");
        let mut stdin = process.stdin().expect("stdin");
        stdin.write_all(b"typed\n").await.expect("stdin is written");
        let mut stdout = process.stdout().expect("stdout");
        let status = process.take_status().expect("a status channel");
        let mut output = String::new();
        tokio::time::timeout(Duration::from_secs(30), stdout.read_to_string(&mut output))
            .await
            .expect("the command ends")
            .expect("stdout is read");
        let status = tokio::time::timeout(Duration::from_secs(30), status)
            .await
            .expect("a status arrives");
        (output, status)
    });
    assert_eq!(output, "from-kube-rs\ngot typed\n");
    let status = status.expect("the error channel's Status");
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let cause = &status.details.expect("details").causes.expect("causes")[0];
    assert_eq!(cause.reason.as_deref(), Some("ExitCode"));
    assert_eq!(cause.message.as_deref(), Some("4"));
}
