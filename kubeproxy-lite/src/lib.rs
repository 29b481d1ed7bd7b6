//! kubeproxy-lite: Services and EndpointSlices to one nftables table per node, in atomic
//! transactions — kube-proxy's nftables mode, small enough to read.
//!
//! `knetsim kubeproxy-lite --lab L --cluster c0 --node w1 …` runs one per node, inside the
//! node's namespaces (the supervisor starts it there), so `nft list table ip kube-proxy` on
//! the node shows its work. Follow the data:
//!
//! 1. [`run`] watches Services and EndpointSlices (kube-rs watchers) and hands every event to
//!    the [`proxier`], which only records it and marks the Service dirty.
//! 2. A sync loop waits for both watches to have listed everything, then syncs; after that it
//!    syncs when something changed, at most once per `min_sync_period` (kube-proxy's
//!    `--config.minSyncPeriod`), so a burst of events becomes one transaction.
//! 3. A sync [`render`]s the dirty Services (pure functions), diffs them against what was last
//!    written, and sends the difference as one `nft -j -f -` transaction ([`transaction`],
//!    [`nft`]).
//! 4. [`server`] answers `/healthz` (127.0.0.1:10256) once the first sync is in, and `/metrics`.
//!
//! `--static` renders once from the state at start-up and then stops following the API: the
//! predecessor's behaviour, kept for teaching (a deleted pod breaks a static virtual IP while
//! the dynamic mode heals).

pub mod conntrack;
pub mod expr;
pub mod names;
pub mod nft;
pub mod proxier;
pub mod render;
pub mod server;
pub mod skeleton;
pub mod transaction;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{watcher, WatchStreamExt};

use crate::proxier::{Proxier, TableCheck};
use crate::render::NodeContext;

/// kube-proxy's flags, the ones knetsim uses.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: PathBuf,
    /// The Node's name (`--hostname-override`): endpoints there are local.
    pub hostname: String,
    /// Where NodePorts answer.
    pub node_ips: Vec<Ipv4Addr>,
    /// The pod network: traffic to a ClusterIP from outside it is masqueraded.
    pub cluster_cidr: ipnet::Ipv4Net,
    /// The Service address ranges (`--service-cluster-ip-range`, as the API server's):
    /// unallocated ClusterIPs there are dropped. Empty: no such rule.
    pub service_cidrs: Vec<ipnet::Ipv4Net>,
    /// Wait this long after a change before syncing, to batch a burst of changes.
    pub min_sync_period: Duration,
    /// Retry a failed sync after this long (it will be a full one).
    pub retry_period: Duration,
    /// How often the table's chain and set names are compared with what was written, to
    /// repair a table changed by hand (see `Proxier::check_table`).
    pub table_check_period: Duration,
    /// A full sync at least this often (kube-proxy's hourly full resync in nftables mode).
    pub full_sync_period: Duration,
    /// Render once at start-up and never update.
    pub static_mode: bool,
    pub healthz_address: SocketAddr,
    pub metrics_address: SocketAddr,
}

impl Config {
    pub fn new(
        kubeconfig: PathBuf,
        hostname: String,
        node_ips: Vec<Ipv4Addr>,
        cluster_cidr: ipnet::Ipv4Net,
    ) -> Config {
        Config {
            kubeconfig,
            hostname,
            node_ips,
            cluster_cidr,
            service_cidrs: Vec::new(),
            min_sync_period: Duration::from_millis(1),
            retry_period: Duration::from_secs(1),
            table_check_period: Duration::from_secs(10),
            full_sync_period: Duration::from_secs(3600),
            static_mode: false,
            healthz_address: (Ipv4Addr::LOCALHOST, server::HEALTHZ_PORT).into(),
            metrics_address: (Ipv4Addr::LOCALHOST, server::METRICS_PORT).into(),
        }
    }
}

/// Shared between the watch tasks and the sync loop.
struct Shared {
    /// The kernel, also here for the cache warm-up after a sync (outside the proxier's lock).
    nft: Arc<dyn nft::Nft>,
    proxier: Mutex<Proxier>,
    changed: tokio::sync::Notify,
    services_synced: std::sync::atomic::AtomicBool,
    slices_synced: std::sync::atomic::AtomicBool,
    conntrack: Mutex<conntrack::StaleUdpCleaner>,
}

pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let status = Arc::new(Mutex::new(server::Status::default()));
    let servers = [
        tokio::spawn(server::serve(config.healthz_address, status.clone())),
        tokio::spawn(server::serve(config.metrics_address, status.clone())),
    ];
    let result = tokio::select! {
        result = serve(config, status) => result,
        _ = shutdown => {
            // The rules stay: established connections and new ones keep working while no
            // proxy runs, and the next start takes the table over.
            tracing::info!("shutting down; the kube-proxy table stays in place");
            Ok(())
        }
    };
    for server in servers {
        server.abort();
    }
    result
}

async fn connect(config: &Config) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&config.kubeconfig)
        .with_context(|| format!("reading {}", config.kubeconfig.display()))?;
    let client_config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("loading {}", config.kubeconfig.display()))?;
    kube::Client::try_from(client_config).context("creating the API client")
}

async fn serve(config: Config, status: Arc<Mutex<server::Status>>) -> anyhow::Result<()> {
    let client = connect(&config).await?;
    let node = NodeContext {
        hostname: config.hostname.clone(),
        cluster_cidr: config.cluster_cidr,
        node_ips: config.node_ips.clone(),
        service_cidrs: config.service_cidrs.clone(),
    };
    let nft = nft::kernel(&config.node_ips);
    let shared = Arc::new(Shared {
        nft: nft.clone(),
        proxier: Mutex::new(Proxier::new(node, nft).with_static_mode(config.static_mode)),
        changed: tokio::sync::Notify::new(),
        services_synced: false.into(),
        slices_synced: false.into(),
        conntrack: Mutex::new(conntrack::StaleUdpCleaner::default()),
    });
    let watches = [
        tokio::spawn(watch_services(
            kube::Api::all(client.clone()),
            shared.clone(),
        )),
        tokio::spawn(watch_slices(kube::Api::all(client), shared.clone())),
    ];
    let result = sync_loop(&config, &shared, &status).await;
    for watch in watches {
        watch.abort();
    }
    result
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Proxier> {
    shared.proxier.lock().unwrap_or_else(|p| p.into_inner())
}

/// Services: every event recorded, a re-list replacing the lot (deletions missed while the
/// watch was down are found that way).
async fn watch_services(api: kube::Api<Service>, shared: Arc<Shared>) {
    let mut listing: Vec<Service> = Vec::new();
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(service)) => lock(&shared).on_service_update(service),
            Ok(watcher::Event::Delete(service)) => lock(&shared).on_service_delete(&service),
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(service)) => listing.push(service),
            Ok(watcher::Event::InitDone) => {
                lock(&shared).replace_services(std::mem::take(&mut listing));
                shared
                    .services_synced
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Err(e) => {
                tracing::warn!("service watch: {e}");
                continue;
            }
        }
        shared.changed.notify_one();
    }
}

async fn watch_slices(api: kube::Api<EndpointSlice>, shared: Arc<Shared>) {
    let mut listing: Vec<EndpointSlice> = Vec::new();
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(slice)) => lock(&shared).on_slice_update(slice),
            Ok(watcher::Event::Delete(slice)) => lock(&shared).on_slice_delete(&slice),
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(slice)) => listing.push(slice),
            Ok(watcher::Event::InitDone) => {
                lock(&shared).replace_slices(std::mem::take(&mut listing));
                shared
                    .slices_synced
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Err(e) => {
                tracing::warn!("endpointslice watch: {e}");
                continue;
            }
        }
        shared.changed.notify_one();
    }
}

/// Waits for changes and syncs, no more often than `min_sync_period`; retries failures.
/// Every `table_check_period` the table is checked for changes made by hand.
async fn sync_loop(
    config: &Config,
    shared: &Arc<Shared>,
    status: &Arc<Mutex<server::Status>>,
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let mut logged_waiting = false;
    let mut checks = tokio::time::interval(config.table_check_period);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checks.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = shared.changed.notified() => {}
            _ = checks.tick() => {
                let worker = shared.clone();
                let period = config.full_sync_period;
                let checked = tokio::task::spawn_blocking(move || {
                    let step = lock(&worker).start_table_check(period);
                    match step {
                        TableCheck::Nothing => Ok::<_, proxier::Error>(None),
                        TableCheck::FullSyncDue(why) => Ok(Some(why)),
                        TableCheck::ListChains { syncs } => {
                            // Listed without the proxier's lock: a sync need not wait for it.
                            let listed = proxier::list_unless_verified(&*worker.nft, |g| {
                                lock(&worker).is_verified_at(g)
                            })?;
                            Ok(listed.and_then(|listed| {
                                lock(&worker).compare_table(
                                    syncs,
                                    &listed.chains,
                                    listed.listed_at,
                                )
                            }))
                        }
                    }
                })
                .await
                .context("the table check panicked")?;
                match checked {
                    Ok(None) => continue,
                    Ok(Some(why)) => tracing::info!("full sync: {why}"),
                    Err(e) => tracing::warn!("checking the table: {:#}", anyhow::Error::new(e)),
                }
            }
        }
        if !(shared.services_synced.load(Ordering::SeqCst)
            && shared.slices_synced.load(Ordering::SeqCst))
        {
            if !logged_waiting {
                tracing::info!("not syncing until Services and EndpointSlices have been listed");
                logged_waiting = true;
            }
            continue;
        }
        tokio::time::sleep(config.min_sync_period).await;
        let worker = shared.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut proxier = lock(&worker);
            if !proxier.has_pending_changes() {
                return None;
            }
            let result = proxier.sync_proxy_rules();
            if matches!(&result, Ok(report) if report.kind == proxier::SyncKind::Full) {
                proxier::release_free_memory();
            }
            Some((
                result,
                proxier.chain_count(),
                proxier.rule_count(),
                proxier.is_frozen(),
            ))
        })
        .await
        .context("the sync task panicked")?;
        match outcome {
            None => {}
            Some((Ok(report), chains, rules, frozen)) => {
                if report.commands > 0 {
                    tracing::info!(
                        kind = %report.kind,
                        services = report.changed_services,
                        commands = report.commands,
                        chains,
                        rules,
                        elapsed = ?report.elapsed,
                        "synced proxy rules"
                    );
                } else {
                    tracing::debug!(elapsed = ?report.elapsed, "nothing to change");
                }
                status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(&report, chains, rules);
                if let Some(serving) = report.udp_serving {
                    let node_ips = config.node_ips.clone();
                    let worker = shared.clone();
                    let cleaned = tokio::task::spawn_blocking(move || {
                        worker
                            .conntrack
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .clean(&serving, &node_ips)
                    })
                    .await
                    .context("the conntrack clean-up panicked")?;
                    match cleaned {
                        Ok(0) => {}
                        Ok(deleted) => {
                            tracing::info!(deleted, "deleted stale UDP conntrack entries")
                        }
                        Err(e) => tracing::warn!("deleting stale UDP conntrack entries: {e}"),
                    }
                }
                if frozen {
                    tracing::info!("--static: rules rendered once; no longer following the API");
                } else if report.commands > 0 {
                    let nft = shared.nft.clone();
                    let warmed = tokio::task::spawn_blocking(move || {
                        let started = std::time::Instant::now();
                        nft.warm_cache().map(|()| started.elapsed())
                    })
                    .await
                    .context("the cache warm-up panicked")?;
                    match warmed {
                        Ok(elapsed) => tracing::debug!(?elapsed, "nft cache warmed"),
                        Err(e) => {
                            tracing::warn!("warming nft's cache: {:#}", anyhow::Error::new(e))
                        }
                    }
                }
            }
            Some((Err(e), ..)) => {
                tracing::error!(
                    "sync failed, retrying in {:?} with a full sync: {:#}",
                    config.retry_period,
                    anyhow::Error::new(e)
                );
                status.lock().unwrap_or_else(|p| p.into_inner()).failures += 1;
                tokio::time::sleep(config.retry_period).await;
                shared.changed.notify_one();
            }
        }
    }
}
