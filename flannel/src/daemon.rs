//! The flannel daemon (`knetsim flannel --lab L --cluster c0 --node w1 …`), one per node,
//! running inside the node's namespaces, with flanneld's flags and behaviour in etcd mode:
//!
//! 1. connect to etcd and wait for `<prefix>/config`;
//! 2. take a subnet lease (the one this node already holds, else a free one);
//! 3. set up the backend's local side (`flannel.1`) and write `subnet.env`;
//! 4. program every other node's lease, then follow lease changes with a watch (re-listing
//!    after a compaction), and renew the own lease before it expires.
//!
//! On exit the lease and kernel state stay, as with flanneld: a restarted daemon finds its
//! lease by public IP and keeps the subnet, so pods keep their addresses.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::backend::Backend;
use crate::network::{
    choose_subnet, BackendKind, LeaseAttrs, NetworkConfig, SubnetEnv, VXLAN_OVERHEAD,
};
use crate::registry::{lease_events, LeaseEvent, Registry, LEASE_TTL_SECONDS};
use crate::Error;

/// flanneld's flags, the ones knetsim uses.
#[derive(Debug, Clone)]
pub struct Config {
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: String,
    pub iface: String,
    /// Defaults to the first IPv4 address of `iface`.
    pub public_ip: Option<Ipv4Addr>,
    pub subnet_file: PathBuf,
    pub ip_masq: bool,
    /// Renew the lease this long before it expires.
    pub renew_margin: Duration,
}

const RESYNC_PERIOD: Duration = Duration::from_secs(30);

/// The remote leases programmed into the kernel, by subnet.
type Programmed = BTreeMap<Ipv4Net, LeaseAttrs>;

pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    tokio::select! {
        result = serve(config) => result,
        _ = shutdown => {
            tracing::info!("shutting down; the lease and routes stay for the next start");
            Ok(())
        }
    }
}

async fn serve(config: Config) -> Result<(), Error> {
    let (iface_ip, iface_mtu) = crate::registry::interface_address(&config.iface)?;
    let public_ip = config.public_ip.unwrap_or(iface_ip);
    let mut registry = connect(&config).await;
    let network = wait_for_network_config(&mut registry, &config.etcd_prefix).await?;
    let kind = network.backend_kind();
    let backend = Backend {
        kind,
        iface: config.iface.clone(),
    };
    let mtu = match kind {
        BackendKind::Vxlan { .. } => iface_mtu - VXLAN_OVERHEAD,
        BackendKind::HostGw => iface_mtu,
    };

    let (subnet, attrs) = acquire_lease(&mut registry, &network, &backend, public_ip, mtu).await?;
    tracing::info!(%subnet, backend = kind.type_name(), %public_ip, mtu, "lease acquired");
    let mut subnet_env_written = false;

    let mut programmed = Programmed::new();
    let mut renew_at = tokio::time::Instant::now() + lease_renewal(config.renew_margin);
    // A full re-list now and then retries entries that failed to program.
    let mut resync = tokio::time::interval(RESYNC_PERIOD);
    resync.tick().await;
    // List, then watch from the listed revision: no change between the two is missed, and
    // after any break (stream closed, history compacted) the same pair starts over.
    loop {
        let (leases, listed_at) = registry.leases().await?;
        reconcile(&backend, subnet, &mut programmed, leases);
        if !subnet_env_written {
            // Only now: a pod wired after this can already reach every node known so far.
            write_subnet_env(&config, &network, subnet, mtu)?;
            tracing::info!("wrote {}", config.subnet_file.display());
            subnet_env_written = true;
        }
        let mut stream = registry.watch_leases(listed_at).await?;
        loop {
            tokio::select! {
                message = stream.message() => {
                    let response = match message {
                        Ok(Some(response)) => response,
                        Ok(None) => {
                            tracing::warn!("lease watch closed; re-listing");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!("lease watch failed ({e}); re-listing");
                            break;
                        }
                    };
                    match lease_events(&response) {
                        Ok(events) => {
                            for event in events {
                                apply(&backend, subnet, &attrs, &mut registry, &mut programmed, event).await;
                            }
                        }
                        Err(Error::Compacted(at)) => {
                            tracing::warn!(at, "watch history compacted; re-listing leases");
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                _ = resync.tick() => {
                    let (leases, _) = registry.leases().await?;
                    reconcile(&backend, subnet, &mut programmed, leases);
                }
                _ = tokio::time::sleep_until(renew_at) => {
                    registry.renew_lease(subnet, &attrs).await?;
                    tracing::info!(%subnet, "lease renewed");
                    renew_at = tokio::time::Instant::now() + lease_renewal(config.renew_margin);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn lease_renewal(margin: Duration) -> Duration {
    Duration::from_secs(LEASE_TTL_SECONDS as u64).saturating_sub(margin)
}

/// Connect, retrying: etcd may start after us (the supervisor starts both at once).
async fn connect(config: &Config) -> Registry {
    let mut attempt = 0u32;
    loop {
        match Registry::connect(&config.etcd_endpoints, &config.etcd_prefix).await {
            Ok(registry) => return registry,
            Err(e) => {
                if attempt.is_multiple_of(10) {
                    tracing::warn!(endpoints = ?config.etcd_endpoints, "etcd not reachable yet: {e}");
                }
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

async fn wait_for_network_config(
    registry: &mut Registry,
    prefix: &str,
) -> Result<NetworkConfig, Error> {
    let mut logged = false;
    loop {
        match registry.network_config().await {
            Ok(Some(config)) => return Ok(config),
            Ok(None) if !logged => {
                tracing::info!("waiting for the network config at {prefix}/config");
                logged = true;
            }
            Ok(None) => {}
            Err(Error::Etcd(e)) => tracing::debug!("reading the network config: {e}"),
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// This node's lease, reused if it holds one.
async fn acquire_lease(
    registry: &mut Registry,
    network: &NetworkConfig,
    backend: &Backend,
    public_ip: Ipv4Addr,
    mtu: u32,
) -> Result<(Ipv4Net, LeaseAttrs), Error> {
    let backend_data = backend.ensure_device(public_ip, mtu)?;
    let attrs = LeaseAttrs {
        public_ip,
        public_ipv6: None,
        backend_type: backend.kind.type_name().to_string(),
        backend_data,
    };
    for attempt in 0..10 {
        let (leases, _) = registry.leases().await?;
        let Some((subnet, reused)) = choose_subnet(network, &leases, public_ip, attempt) else {
            return Err(Error::Invalid(format!(
                "no free subnet left in {}",
                network.network
            )));
        };
        if reused {
            registry.renew_lease(subnet, &attrs).await?;
            backend.assign_subnet(subnet)?;
            tracing::info!(%subnet, "reusing this node's existing lease");
            return Ok((subnet, attrs));
        }
        if registry.create_lease(subnet, &attrs).await? {
            backend.assign_subnet(subnet)?;
            return Ok((subnet, attrs));
        }
        tracing::info!(%subnet, "another node took this subnet first; trying again");
    }
    Err(Error::Invalid(
        "could not take a subnet lease after 10 tries".into(),
    ))
}

fn write_subnet_env(
    config: &Config,
    network: &NetworkConfig,
    subnet: Ipv4Net,
    mtu: u32,
) -> Result<(), Error> {
    let gateway = Ipv4Addr::from(u32::from(subnet.network()) + 1);
    let env = SubnetEnv {
        network: network.network,
        subnet: Ipv4Net::new(gateway, subnet.prefix_len())
            .map_err(|e| Error::Invalid(e.to_string()))?,
        mtu,
        ipmasq: config.ip_masq,
    };
    let path = &config.subnet_file;
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("env.tmp");
    std::fs::write(&tmp, env.render()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Make the programmed set equal to `leases` (all but our own).
fn reconcile(
    backend: &Backend,
    own: Ipv4Net,
    programmed: &mut Programmed,
    leases: Vec<(Ipv4Net, LeaseAttrs)>,
) {
    let desired: Programmed = leases
        .into_iter()
        .filter(|(subnet, _)| *subnet != own)
        .collect();
    let stale: Vec<(Ipv4Net, LeaseAttrs)> = programmed
        .iter()
        .filter(|(subnet, attrs)| desired.get(subnet) != Some(attrs))
        .map(|(s, a)| (*s, a.clone()))
        .collect();
    for (subnet, attrs) in stale {
        backend.remove_remote(subnet, &attrs);
        programmed.remove(&subnet);
        tracing::info!(%subnet, node = %attrs.public_ip, "removed route");
    }
    for (subnet, attrs) in desired {
        if programmed.contains_key(&subnet) {
            continue;
        }
        match backend.add_remote(subnet, &attrs) {
            Ok(()) => {
                tracing::info!(%subnet, node = %attrs.public_ip, "added route");
                programmed.insert(subnet, attrs);
            }
            Err(e) => tracing::warn!(%subnet, "cannot reach this subnet: {e}"),
        }
    }
}

async fn apply(
    backend: &Backend,
    own: Ipv4Net,
    own_attrs: &LeaseAttrs,
    registry: &mut Registry,
    programmed: &mut Programmed,
    event: LeaseEvent,
) {
    match event {
        LeaseEvent::Removed(subnet, _) if subnet == own => {
            // Someone deleted our lease (or it expired): take it back, flanneld does the same.
            tracing::warn!(%subnet, "own lease was removed; writing it again");
            if let Err(e) = registry.renew_lease(own, own_attrs).await {
                tracing::error!(%subnet, "could not restore own lease: {e}");
            }
        }
        LeaseEvent::Added(subnet, _) if subnet == own => {}
        LeaseEvent::Added(subnet, attrs) => {
            let mut next: Vec<(Ipv4Net, LeaseAttrs)> = programmed
                .iter()
                .map(|(s, a)| (*s, a.clone()))
                .filter(|(s, _)| *s != subnet)
                .collect();
            next.push((subnet, attrs));
            reconcile(backend, own, programmed, next);
        }
        LeaseEvent::Removed(subnet, _) => {
            let next: Vec<(Ipv4Net, LeaseAttrs)> = programmed
                .iter()
                .map(|(s, a)| (*s, a.clone()))
                .filter(|(s, _)| *s != subnet)
                .collect();
            reconcile(backend, own, programmed, next);
        }
    }
}
