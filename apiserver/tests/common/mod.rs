//! Test harness: a real etcd and our API server on loopback, and the real kubectl.
//!
//! Each `Cluster` owns a temp dir, an etcd on random free 127.0.0.1 ports (killed by a
//! Drop guard, also when the test panics), a server thread with its own runtime bound to
//! 127.0.0.1:0, and a kubeconfig with an admin client certificate. Nothing leaves loopback.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use apiserver::{kubeconfig, pki, Config, TlsFiles};

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A throwaway etcd; killed on drop.
pub struct Etcd {
    child: Child,
    pub endpoint: String,
    dir: PathBuf,
    ports: (u16, u16),
}

impl Etcd {
    pub fn start(dir: &std::path::Path) -> Etcd {
        let ports = (free_port(), free_port());
        Etcd {
            child: spawn_etcd(dir, ports),
            endpoint: format!("http://127.0.0.1:{}", ports.0),
            dir: dir.to_path_buf(),
            ports,
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start a stopped etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_etcd(&self.dir, self.ports);
    }

    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(args)
            .output()
            .expect("etcdctl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Run etcd on `(client, peer)` ports with its data and log in `dir`; wait until it listens.
fn spawn_etcd(dir: &std::path::Path, (client, peer): (u16, u16)) -> Child {
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))
        .expect("etcd log");
    let mut child = Command::new("etcd")
        .args(["--name", "t", "--data-dir"])
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("t={peer_url}")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd not found: apt install etcd-server");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", client)).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("etcd did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One API server on its own thread and runtime; stopped (gracefully: watches end,
/// connections drain) on drop.
pub struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Serve on `listener` over the etcd at `etcd`, with the certificates in `dir`.
    pub fn spawn(dir: &Path, etcd: &str, listener: TcpListener) -> ServerThread {
        let p = |f: &str| dir.join(f);
        let addr = listener.local_addr().expect("addr");
        let mut cfg = Config::new(
            vec![etcd.to_string()],
            TlsFiles {
                cert: p("apiserver.crt"),
                key: p("apiserver.key"),
                client_ca: p("ca.crt"),
            },
        );
        cfg.listeners.push(listener);
        cfg.advertise_address = Some(addr);
        cfg.bookmark_interval = Duration::from_millis(300);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let r = rt.block_on(apiserver::run(cfg, async move {
                let _ = stopped.await;
            }));
            if let Err(e) = r {
                eprintln!("apiserver failed: {e:#}");
            }
        });
        ServerThread {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// etcd + API server + kubeconfig.
pub struct Cluster {
    pub server: String,
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub ca: pki::CertPair,
    api: Option<ServerThread>,
    pub etcd: Etcd,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let etcd = Etcd::start(dir.path());
        let ca = pki::generate_ca("knetsim-test-ca").expect("ca");
        let sans = ["127.0.0.1", "kubernetes.default.svc"];
        let srv = pki::server_cert(&ca, "kube-apiserver", &sans).expect("server cert");
        let admin = pki::client_cert(&ca, "admin", &["system:masters"]).expect("client cert");
        let p = |f: &str| dir.path().join(f);
        std::fs::write(p("ca.crt"), &ca.cert_pem).expect("ca.crt");
        srv.write(&p("apiserver.crt"), &p("apiserver.key"))
            .expect("server files");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = format!("https://{addr}");
        let kc = kubeconfig::render(
            &[kubeconfig::Entry {
                name: "test".into(),
                server: server.clone(),
                ca_pem: ca.cert_pem.clone(),
                client_cert_pem: admin.cert_pem.clone(),
                client_key_pem: admin.key_pem.clone(),
                namespace: None,
            }],
            None,
        );
        std::fs::write(p("kubeconfig"), kc).expect("kubeconfig");
        let api = ServerThread::spawn(dir.path(), &etcd.endpoint, listener);
        let cluster = Cluster {
            server,
            addr,
            kubeconfig: p("kubeconfig"),
            ca,
            api: Some(api),
            etcd,
            dir,
        };
        cluster.wait_ready();
        cluster
    }

    /// Stop the API server (its watches end, its port closes); etcd keeps running.
    pub fn stop_server(&mut self) {
        self.api = None;
    }

    /// Start the API server again, on the same address.
    pub fn start_server(&mut self) {
        let listener = TcpListener::bind(self.addr).expect("binding the server's address again");
        self.api = Some(ServerThread::spawn(
            self.dir.path(),
            &self.etcd.endpoint,
            listener,
        ));
        self.wait_ready();
    }

    /// Another API server over the same etcd, on a port of its own: `(its URL, it)`.
    pub fn second_server(&self) -> (String, ServerThread) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        let api = ServerThread::spawn(self.dir.path(), &self.etcd.endpoint, listener);
        (url, api)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.kubectl(&["get", "--raw", "/readyz"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "apiserver not ready: {}",
                text(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args);
        c
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("kubectl not found")
    }

    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        if let Some(mut s) = child.stdin.take() {
            s.write_all(input.as_bytes()).expect("stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Run kubectl and return stdout, failing the test with stderr if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Run kubectl expecting failure; return stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail: {}",
            text(&out.stdout)
        );
        text(&out.stderr)
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Lines of a child's stdout, read on a thread so the test can time out.
pub fn lines(out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Whether a line containing `needle` arrives within 15 s; every line read goes to `seen`.
pub fn wait_for(
    rx: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    seen: &mut Vec<String>,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(needle);
                seen.push(l);
                if hit {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}
