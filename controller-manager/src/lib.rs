//! The controller-manager (`knetsim controller-manager --lab L --cluster c0 …`): one process on
//! the control-plane node running every controller that keeps a cluster at its desired state,
//! as kube-controller-manager (plus kube-scheduler) does.
//!
//! Each controller is one module and reads like kube-rs's `configmapgen_controller`: an
//! `Error` enum naming the failed step, a `Context`, a level-based `reconcile`, an
//! `error_policy`, and a `run` that wires a `kube::runtime::Controller`. The periodic ones
//! (garbage collection, node lifecycle) are a loop over the informers' stores instead.
//!
//! All controllers share one watch per resource type ([`informers`]), as client-go's shared
//! informers do: the API server sends every Pod change once, and every controller reads the
//! same cache. `/healthz` on `127.0.0.1:10257` (kube-controller-manager's port) answers `ok`
//! once every cache has synced.
//!
//! Writes are plain create, replace and merge patches rather than server-side apply: our API
//! server approximates apply without field ownership, so a field a controller stops setting
//! would never be removed.

pub mod claims;
pub mod daemonset;
pub mod deployment;
pub mod endpointslice;
pub mod events;
pub mod expectations;
pub mod garbage_collector;
pub mod informers;
pub mod job;
pub mod namespace;
pub mod node_lifecycle;
pub mod pod_gc;
pub mod pods;
pub mod replicaset;
pub mod root_ca_publisher;
pub mod scheduler;
pub mod serviceaccount;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::FutureExt;

/// kube-controller-manager's secure port; here it serves plain `/healthz` on loopback.
pub const HEALTHZ_PORT: u16 = 10257;

/// The flags of `knetsim controller-manager`, kube-controller-manager's where they exist.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The cluster this process belongs to (names the process in `ps`).
    #[arg(long)]
    pub cluster: String,
    #[arg(long, default_value = "/etc/kubernetes/controller-manager.conf")]
    pub kubeconfig: PathBuf,
    /// How long a node's Lease may go unrenewed before the node is marked NotReady
    /// (kube-controller-manager's default is 40 s; the lab is impatient).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// How long pods stay on a NotReady node before they are evicted (deleted), so their
    /// controllers re-create them elsewhere (real clusters wait 300 s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub pod_eviction_timeout: Duration,
    /// How long EndpointSlice updates of one Service are gathered before they are written,
    /// as kube-controller-manager's flag (whose default, 0, writes every change at once).
    /// The first change after a quiet spell is written at once; `0s` turns batching off.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub endpointslice_updates_batch_period: Duration,
    #[arg(long, default_value_t = HEALTHZ_PORT)]
    pub healthz_port: u16,
    /// The cluster's CA (PEM), published to every namespace as `kube-root-ca.crt`; without
    /// it nothing is published.
    #[arg(long)]
    pub root_ca_file: Option<PathBuf>,
}

/// `20s`, `500ms`, `2m` or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration; write e.g. 20s, 500ms or 2m");
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(bad()),
    }
}

pub async fn run(
    args: Args,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let synced = Arc::new(AtomicBool::new(false));
    let healthz = tokio::spawn(serve_healthz(args.healthz_port, synced.clone()));
    let result = tokio::select! {
        result = serve(args, synced) => result,
        _ = shutdown => {
            tracing::info!("shutting down");
            Ok(())
        }
    };
    healthz.abort();
    result
}

async fn serve(args: Args, synced: Arc<AtomicBool>) -> anyhow::Result<()> {
    let client = connect(&args).await?;
    let root_ca = match &args.root_ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the root CA {}", path.display()))?,
        ),
        None => None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    let informers = informers::Informers::new(&client);
    // Controllers subscribe before the watches start, so none misses the first list, and run
    // once every cache is complete, so none acts on half a picture.
    let controllers = vec![
        scheduler::run(client.clone(), &informers).boxed(),
        replicaset::run(client.clone(), &informers).boxed(),
        endpointslice::run(
            client.clone(),
            &informers,
            args.endpointslice_updates_batch_period,
        )
        .boxed(),
        deployment::run(client.clone(), &informers).boxed(),
        daemonset::run(client.clone(), &informers).boxed(),
        job::run(client.clone(), &informers).boxed(),
        serviceaccount::run(client.clone(), &informers).boxed(),
        namespace::run(client.clone(), &informers).boxed(),
        garbage_collector::run(client.clone(), &informers).boxed(),
        pod_gc::run(client.clone(), &informers).boxed(),
        node_lifecycle::run(
            client.clone(),
            &informers,
            node_lifecycle::Timing {
                grace_period: args.node_monitor_grace_period,
                eviction_timeout: args.pod_eviction_timeout,
            },
        )
        .boxed(),
    ];
    let mut controllers = controllers;
    if let Some(ca_pem) = root_ca {
        controllers.push(root_ca_publisher::run(client.clone(), &informers, ca_pem).boxed());
    }
    informers.start(&mut tasks);
    informers.wait_until_synced().await?;
    for controller in controllers {
        tasks.spawn(controller);
    }
    synced.store(true, Ordering::SeqCst);
    tracing::info!("caches synced; controllers running");
    match tasks.join_next().await {
        Some(Ok(())) => anyhow::bail!("a controller stopped unexpectedly"),
        Some(Err(e)) => anyhow::bail!("a controller panicked: {e}"),
        None => Ok(()),
    }
}

async fn connect(args: &Args) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("loading {}", args.kubeconfig.display()))?;
    kube::Client::try_from(config).context("creating the API client")
}

/// `GET /healthz` → `ok` once the caches have synced, 503 before; anything else 404.
async fn serve_healthz(port: u16, synced: Arc<AtomicBool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = match tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("cannot listen on 127.0.0.1:{port} ({e}); no healthz");
            return;
        }
    };
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let synced = synced.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let n = stream.read(&mut request).await.unwrap_or(0);
            let healthz = request[..n].starts_with(b"GET /healthz ");
            let response: &[u8] = match (healthz, synced.load(Ordering::SeqCst)) {
                (true, true) => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                (true, false) => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 17\r\nConnection: close\r\n\r\ncaches not synced",
                _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            };
            let _ = stream.write_all(response).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
    }
}
