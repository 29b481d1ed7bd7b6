//! DNS for the cluster domain over Services and EndpointSlices, deployed behind the kube-dns
//! Service — CoreDNS's `kubernetes` plugin, on hickory-dns.
//!
//! Data flows one way: two watches (`watch.rs`) keep an index of Services and EndpointSlices
//! in memory; each question is answered from it (`records.rs`, pure) by hickory's server
//! (`server.rs`). Nothing is polled and nothing is forwarded: names outside the cluster zone
//! are refused, since a lab has no upstream resolver.
//!
//! Like CoreDNS it serves DNS on port 53 (UDP and TCP), liveness on `:8080/health` and
//! readiness on `:8181/ready` (ready once both watches have listed everything). Inside a pod it
//! reaches the API server as any in-cluster client does: the `kubernetes` Service and the
//! pod's service-account token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::http::StatusCode;
use axum::routing::get;

/// The DNS message types, for clients such as `knetsim bench dns`.
pub use hickory_server::proto;

pub mod records;
pub mod server;
pub mod watch;

/// How to run one DNS server.
#[derive(Debug, Clone)]
pub struct Config {
    /// A kubeconfig; None: in-cluster (service-account token, `KUBERNETES_SERVICE_HOST`).
    pub kubeconfig: Option<PathBuf>,
    /// The cluster domain (`cluster.local`).
    pub zone: String,
    /// TTL of answers and of cached misses, seconds.
    pub ttl: u32,
    /// Where to answer DNS (UDP and TCP).
    pub dns: SocketAddr,
    /// Liveness (`/health`) and readiness (`/ready`) endpoints.
    pub health: SocketAddr,
    pub ready: SocketAddr,
    /// How long to keep answering after being told to stop, while not ready, so the
    /// endpoint leaves kube-proxy's rules before the server goes (CoreDNS's `lameduck`).
    pub lameduck: Duration,
}

async fn client(config: &Config) -> anyhow::Result<kube::Client> {
    let client_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster().context(
            "no --kubeconfig and not in a pod (no service-account token or KUBERNETES_SERVICE_HOST)",
        )?,
    };
    kube::Client::try_from(client_config).context("creating the API client")
}

/// A tiny HTTP endpoint answering `path` with 200 while `ok()` holds, else 503.
async fn probe_endpoint(
    addr: SocketAddr,
    path: &'static str,
    ok: impl Fn() -> bool + Clone + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        path,
        get(move || {
            let ok = ok.clone();
            async move {
                if ok() {
                    (StatusCode::OK, "OK")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    axum::serve(listener, app).await.context("serving probes")
}

/// Serve DNS until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let zone = records::Zone::new(&config.zone, config.ttl).map_err(anyhow::Error::msg)?;
    let client = client(&config).await?;
    let index = Arc::new(RwLock::new(records::Index::default()));
    let synced: Arc<AtomicUsize> = watch::start(client, index.clone());

    let stopping = Arc::new(AtomicBool::new(false));
    tokio::spawn(probe_endpoint(config.health, "/health", || true));
    let leaving = stopping.clone();
    let ready =
        move || synced.load(Ordering::SeqCst) >= watch::WATCHES && !leaving.load(Ordering::SeqCst);
    tokio::spawn(probe_endpoint(config.ready, "/ready", ready));

    let udp = tokio::net::UdpSocket::bind(config.dns)
        .await
        .with_context(|| format!("cannot listen on {} (UDP)", config.dns))?;
    let tcp = tokio::net::TcpListener::bind(config.dns)
        .await
        .with_context(|| format!("cannot listen on {} (TCP)", config.dns))?;
    let mut dns = hickory_server::Server::new(server::ClusterDns { zone, index });
    dns.register_socket(udp);
    dns.register_listener(tcp, Duration::from_secs(5), 65535);
    tracing::info!(dns = %config.dns, zone = %config.zone, "serving the cluster zone");
    let stop = dns.shutdown_token().clone();
    let lameduck = config.lameduck;
    tokio::spawn(async move {
        shutdown.await;
        stopping.store(true, Ordering::SeqCst);
        tracing::info!(
            ?lameduck,
            "stopping: not ready, still answering for the lame-duck period"
        );
        tokio::time::sleep(lameduck).await;
        stop.cancel();
    });
    dns.block_until_done()
        .await
        .context("the DNS server stopped")?;
    tracing::info!("stopped");
    Ok(())
}
