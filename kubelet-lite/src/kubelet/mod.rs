//! The kubelet (`knetsim kubelet --lab L --cluster c0 --node w1 …`), one per node, inside the
//! node's namespaces.
//!
//! 1. Waits for flannel's `subnet.env` (the node's pod CIDR), then registers its Node
//!    ([`node`]) and keeps it alive with a Lease in `kube-node-lease`.
//! 2. Watches the Pods bound to it (`spec.nodeName`) and, level-based, makes the runtime match
//!    them ([`pods`]): a sandbox and containers per Pod, restarts by `restartPolicy`, teardown
//!    and the final delete when a Pod is deleted; then posts each Pod's status.
//! 3. Serves `/healthz` on `127.0.0.1:10248`, as the real kubelet, once the Node is registered,
//!    and container logs, exec, attach and port-forward over HTTPS on `<node IP>:10250` for
//!    the API server ([`server`]).

mod api_client;
mod atomic_writer;
mod attach;
pub mod channels;
mod downward;
mod env;
mod events;
mod http;
mod http1_client;
mod image_files;
mod images;
mod machine;
mod node;
mod objects;
mod pod_cache;
pub mod pod_files;
mod pod_setup;
mod pods;
mod portforward;
mod probes;
pub mod server;
pub mod spdy;
mod status;
mod stream;
mod stream_spdy;
mod volumes;
mod watched;
mod writes;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::Runtime;

/// The kubelet's flags, the ones knetsim uses.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: PathBuf,
    /// The Node's name (`c0-w1`).
    pub node_name: String,
    pub node_ip: std::net::Ipv4Addr,
    /// Register with the control-plane taint and role label.
    pub control_plane: bool,
    /// flannel's `subnet.env`: the node's pod CIDR comes from it.
    pub subnet_file: PathBuf,
    pub runtime: Runtime,
    /// The HTTPS server for container logs; none: not served.
    pub tls: Option<server::TlsFiles>,
    /// `--root-dir`: the Pods' directories are `<root>/pods/<uid>/`.
    pub root_dir: PathBuf,
    /// `--cluster-dns`, `--cluster-domain`, `--resolv-conf`.
    pub dns: pod_files::DnsSettings,
}

/// The kubelet's tokio runtime: one async worker thread, which is plenty for a node's pods
/// (the work is forking plugins and processes, done on blocking threads), and at most
/// [`BLOCKING_THREADS`] blocking threads that go away after a second idle instead of ten,
/// so a burst of pod starts does not leave its threads' stacks and buffers resident.
pub fn tokio_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_keep_alive(Duration::from_secs(1))
        .enable_all()
        .build()
}

/// The kubelet's blocking threads at most. Every Pod worker of a sync round blocks a thread
/// while it writes the Pod's files or runs the runtime (`block_in_place`), so a round over
/// all Pods ran one thread per Pod up to the limit: with 32, each thread's stack (about
/// 100 KiB touched) and its malloc arena's share stayed resident: about 4 MiB at 167 Pods.
/// Sandbox starts are fewer at once anyway (`PARALLEL_STARTS_PER_CORE`).
const BLOCKING_THREADS: usize = 8;

/// The real kubelet's healthz port.
pub const HEALTHZ_PORT: u16 = 10248;

pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let registered = Arc::new(AtomicBool::new(false));
    let healthz = tokio::spawn(serve_healthz(registered.clone()));
    tokio::select! {
        result = serve(config, registered) => {
            healthz.abort();
            result
        }
        _ = shutdown => {
            // Pods keep running: a restarted kubelet adopts them, as a real one does.
            tracing::info!("shutting down; pods keep running");
            healthz.abort();
            Ok(())
        }
    }
}

async fn serve(config: Config, registered: Arc<AtomicBool>) -> anyhow::Result<()> {
    let client = connect(&config).await?;
    let pod_cidr = wait_for_pod_cidr(&config).await?;
    node::register(&client, &config, &pod_cidr).await?;
    registered.store(true, Ordering::SeqCst);
    tracing::info!(node = %config.node_name, %pod_cidr, "node registered");
    let heartbeat = tokio::spawn(node::heartbeat(client.clone(), config.clone()));
    let logs = config.tls.clone().map(|tls| {
        let (address, runtime) = (config.node_ip, config.runtime.clone());
        tokio::spawn(async move {
            if let Err(e) = server::serve(address, tls, runtime).await {
                tracing::error!("the log server stopped: {e:#}");
            }
        })
    });
    let result = pods::sync_loop(client, config).await;
    heartbeat.abort();
    if let Some(logs) = logs {
        logs.abort();
    }
    result
}

/// API requests the kubelet has waiting for their response at once. kube-rs speaks HTTP/1.1
/// (the real kubelet multiplexes one HTTP/2 connection), so each request in flight holds a
/// connection of its own, and the pool keeps every connection a burst opened, with its TLS
/// state and buffers (~40 KiB each), for 90 s: a burst of pod starts, whose workers each post
/// a status, left the kubelet with one connection per pod. A few at once keep the API server
/// just as busy. A watch holds its permit only until its response headers arrive.
const API_REQUESTS_IN_FLIGHT: usize = 4;

async fn connect(config: &Config) -> anyhow::Result<kube::Client> {
    api_client::connect(&config.kubeconfig, API_REQUESTS_IN_FLIGHT).await
}

/// The node's pod CIDR from flannel's `subnet.env`, waiting until flannel has a lease.
async fn wait_for_pod_cidr(config: &Config) -> anyhow::Result<ipnet::Ipv4Net> {
    let mut logged = false;
    loop {
        if let Ok(text) = std::fs::read_to_string(&config.subnet_file) {
            let env = flannel::network::SubnetEnv::parse(&text)?;
            return Ok(env.subnet.trunc());
        }
        if !logged {
            tracing::info!(
                "waiting for {} (flannel's lease)",
                config.subnet_file.display()
            );
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /healthz` → `ok` once registered, 503 before; anything else 404.
async fn serve_healthz(registered: Arc<AtomicBool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(listener) =
        tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, HEALTHZ_PORT)).await
    else {
        tracing::warn!("cannot listen on 127.0.0.1:{HEALTHZ_PORT}; no healthz");
        return;
    };
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let registered = registered.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let n = stream.read(&mut request).await.unwrap_or(0);
            let healthz = request[..n].starts_with(b"GET /healthz ");
            let response: &[u8] = match (healthz, registered.load(Ordering::SeqCst)) {
                (true, true) => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                (true, false) => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 14\r\nConnection: close\r\n\r\nnot registered",
                _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            };
            let _ = stream.write_all(response).await;
        });
    }
}
