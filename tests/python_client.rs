//! The official Kubernetes Python client (`kubernetes` 32.x from PyPI) against the real
//! `knetsim apiserver` binary over a real etcd, both on 127.0.0.1 of the test's own
//! namespace: no lab, no network namespaces. `tests/python/api_client.py` does the
//! talking; this test starts the server and checks every line the script prints.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::python_with_client;

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// etcd and the API server, killed and their directory removed when dropped (also when the
/// test panics).
struct Server {
    dir: PathBuf,
    children: Vec<Child>,
    kubeconfig: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_listening(port: u16, what: &str, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Server {
    fn start() -> Server {
        let dir =
            std::env::temp_dir().join(format!("knetsim-python-client-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test directory");
        let mut server = Server {
            dir: dir.clone(),
            children: Vec::new(),
            kubeconfig: dir.join("kubeconfig"),
        };
        let p = |f: &str| dir.join(f);

        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let etcd_log = p("etcd.log");
        let mut etcd = Command::new("etcd")
            .args(["--name", "py", "--data-dir"])
            .arg(p("etcd"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("py={peer_url}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&etcd_log).expect("etcd log"))
            .spawn()
            .expect("etcd not found: apt-get install etcd-server");
        wait_listening(client, "etcd", &mut etcd, &etcd_log);
        server.children.push(etcd);

        let ca = apiserver::pki::generate_ca("knetsim-python-test-ca").expect("CA");
        let cert = apiserver::pki::server_cert(&ca, "kube-apiserver", &["127.0.0.1"])
            .expect("server certificate");
        let admin = apiserver::pki::client_cert(&ca, "python-admin", &["system:masters"])
            .expect("client certificate");
        std::fs::write(p("ca.crt"), &ca.cert_pem).expect("ca.crt");
        cert.write(&p("apiserver.crt"), &p("apiserver.key"))
            .expect("server certificate files");
        let port = free_port();
        let kubeconfig = apiserver::kubeconfig::render(
            &[apiserver::kubeconfig::Entry {
                name: "py".into(),
                server: format!("https://127.0.0.1:{port}"),
                ca_pem: ca.cert_pem.clone(),
                client_cert_pem: admin.cert_pem.clone(),
                client_key_pem: admin.key_pem.clone(),
                namespace: None,
            }],
            None,
        );
        std::fs::write(&server.kubeconfig, kubeconfig).expect("kubeconfig");

        let api_log = p("apiserver.log");
        let mut api = Command::new(env!("CARGO_BIN_EXE_knetsim"))
            .args(["apiserver", "--lab", "pyclient", "--cluster", "py"])
            .arg(format!("--etcd-servers={client_url}"))
            .args([
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &port.to_string(),
            ])
            .arg("--tls-cert-file")
            .arg(p("apiserver.crt"))
            .arg("--tls-private-key-file")
            .arg(p("apiserver.key"))
            .arg("--client-ca-file")
            .arg(p("ca.crt"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&api_log).expect("apiserver log"))
            .spawn()
            .expect("knetsim binary");
        wait_listening(port, "knetsim apiserver", &mut api, &api_log);
        server.children.push(api);
        server
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

#[test]
fn official_python_client_crud_patch_apply_list_watch_and_errors() {
    let python = python_with_client();
    let server = Server::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/api_client.py");
    let mut child = Command::new(&python)
        .arg(script)
        .arg(&server.kubeconfig)
        .arg("python-e2e")
        .env("HOME", &server.dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the Python client");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("the script's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "api_client.py failed ({}):\n{stdout}\n{stderr}\napiserver log:\n{}",
        out.status,
        server.log("apiserver.log")
    );
    let checks: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .map(|l| l.split(':').next().unwrap_or(l))
        .collect();
    assert_eq!(
        checks,
        [
            "create namespace",
            "create configmaps",
            "409 AlreadyExists",
            "404 NotFound",
            "409 Conflict on a stale resourceVersion",
            "422 Invalid with causes",
            "strategic merge patch",
            "json patch",
            "server-side apply creates",
            "server-side apply conflict",
            "server-side apply force",
            "list by label selector",
            "watch",
            "delete namespace",
        ],
        "{stdout}"
    );
    assert!(
        stdout.contains("ok strategic merge patch: [('a', 'a:1'), ('b', 'b:2')]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok watch: ADDED MODIFIED DELETED"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            r#"ok server-side apply conflict: Apply failed with 1 conflict: conflict with "alpha": .data.owner"#
        ),
        "{stdout}"
    );
}
