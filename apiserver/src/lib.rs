//! Kubernetes REST API persisted to the cluster's etcd, served to kubectl and kube-rs.
//!
//! The crate is a library: `run(config, shutdown)` is what `knetsim apiserver` calls, and
//! `app(state)` is the axum `Router` that tests drive in-process with `oneshot`. The layers,
//! top to bottom:
//!
//! - `tls`: HTTPS, client-certificate users, 401 for anonymous requests; `auth`: who am I
//!   (SelfSubjectReview) and may I (SelfSubjectAccessReview, answered as AlwaysAllow);
//! - `discovery`, `openapi`: `/version`, `/api`, `/apis` (legacy and aggregated), resource
//!   lists and the OpenAPI v2 and v3 documents — all from the `registry` table;
//! - `logs`, `streaming`: `pods/log`, and `pods/exec|attach|portforward` proxied to kubelets;
//! - `rest` (reads), `write` (writes), `watch`, `patch`, `table` + `printers`: one generic
//!   handler for every resource; `protobuf` decodes the bodies kubectl's typed commands send;
//! - `objects`, `services`: what happens to an object on create/update (metadata, defaults,
//!   validation, ClusterIP/NodePort allocation); `managed`: field managers and server-side
//!   apply; `crd` + `crd_schema`: CustomResourceDefinitions and their custom objects;
//! - `storage` over `backend` (`etcd`, or in memory for unit tests): JSON objects under
//!   `/registry/...`, `resourceVersion` = etcd `mod_revision`.
//!
//! Errors are `error::AppError`, rendered as `metav1.Status` exactly as Kubernetes writes it.
//! `pki` and `kubeconfig` make a lab's certificates and kubeconfig files.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use ipnet::Ipv4Net;

pub mod auth;
pub mod backend;
mod bootstrap;
mod componentstatus;
mod conversion;
pub mod crd;
mod crd_schema;
pub mod discovery;
pub mod error;
pub mod etcd;
mod events;
pub mod fields;
mod json;
pub mod kubeconfig;
pub mod logs;
pub mod managed;
pub mod objects;
pub mod openapi;
mod openapi_pb;
pub mod patch;
pub mod pki;
pub mod printers;
pub mod printers_admin;
pub mod printers_workloads;
mod protobuf;
mod rawlist;
pub mod registry;
pub mod rest;
pub mod selector;
pub mod serviceaccount;
pub mod services;
pub mod shared_watch;
pub mod storage;
pub mod streaming;
pub mod table;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_events;
#[cfg(test)]
mod tests_pods;
pub mod tls;
mod warning;
pub mod watch;
mod write;

pub use backend::{Backend, MemoryBackend};
pub use tls::{TlsFiles, UserInfo};

use services::Allocator;
use storage::Store;

/// How to run one API server.
#[derive(Debug)]
pub struct Config {
    /// `http://127.0.0.1:2379`, …
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of every object (`/registry`).
    pub etcd_prefix: String,
    /// Addresses to bind and serve HTTPS on.
    pub listen: Vec<SocketAddr>,
    /// Sockets bound by the caller (e.g. in another network namespace), served as well.
    pub listeners: Vec<std::net::TcpListener>,
    pub tls: TlsFiles,
    /// Service network; `.1` is the `kubernetes` Service.
    pub service_cidr: Ipv4Net,
    pub node_port_range: RangeInclusive<u16>,
    /// Address and port other components reach this server at: the endpoints of the
    /// `kubernetes` Service and discovery's `serverAddressByClientCIDRs`. None: no endpoints.
    pub advertise_address: Option<SocketAddr>,
    /// How long to keep retrying etcd at start.
    pub etcd_connect_timeout: Duration,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Credentials for kubelets, which `pods/log` is proxied to.
    pub kubelet_client: Option<logs::KubeletClientFiles>,
    /// Service-account token keys; none: no TokenRequest, no bearer tokens, no token mounts.
    pub service_accounts: Option<serviceaccount::TokenFiles>,
}

impl Config {
    /// Kubernetes' defaults: `/registry`, 10.96.0.0/16, NodePorts 30000–32767.
    pub fn new(etcd_endpoints: Vec<String>, tls: TlsFiles) -> Self {
        Config {
            etcd_endpoints,
            etcd_prefix: "/registry".into(),
            listen: Vec::new(),
            listeners: Vec::new(),
            tls,
            service_cidr: Ipv4Net::new(std::net::Ipv4Addr::new(10, 96, 0, 0), 16)
                .unwrap_or_default(),
            node_port_range: 30000..=32767,
            advertise_address: None,
            etcd_connect_timeout: Duration::from_secs(30),
            bookmark_interval: Duration::from_secs(5),
            kubelet_client: None,
            service_accounts: None,
        }
    }
}

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub alloc: Allocator,
    /// `host:port` strings for discovery's serverAddressByClientCIDRs (shared: the state is
    /// cloned several times per request).
    pub advertise: std::sync::Arc<[String]>,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Set to true at shutdown so long-running watches end and graceful shutdown completes.
    pub stopping: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    /// How to reach kubelets (pods/log); none: those requests fail with a clear message.
    pub kubelet: Option<logs::KubeletClient>,
    /// Custom resources served from CustomResourceDefinitions (`crd.rs`).
    pub custom: crd::CustomResources,
    /// Issues and checks service-account tokens, when the server has a signing key.
    pub tokens: Option<std::sync::Arc<serviceaccount::Tokens>>,
    /// One store watch per resource, shared by its HTTP watches.
    pub watches: shared_watch::SharedWatches,
}

impl AppState {
    pub fn new(
        backend: Backend,
        prefix: &str,
        service_cidr: Ipv4Net,
        node_ports: RangeInclusive<u16>,
    ) -> Self {
        AppState {
            store: Store::new(backend.clone(), prefix),
            alloc: Allocator::new(backend, prefix, service_cidr, node_ports),
            advertise: std::sync::Arc::new([]),
            bookmark_interval: Duration::from_secs(5),
            stopping: std::sync::Arc::new(tokio::sync::watch::channel(false).0),
            kubelet: None,
            custom: crd::CustomResources::default(),
            tokens: None,
            watches: shared_watch::SharedWatches::default(),
        }
    }

    /// A state over an empty in-memory store with the default networks, for tests.
    pub fn in_memory() -> Self {
        let cfg = Config::new(
            Vec::new(),
            TlsFiles {
                cert: Default::default(),
                key: Default::default(),
                client_ca: Default::default(),
            },
        );
        AppState::new(
            Backend::Memory(MemoryBackend::default()),
            &cfg.etcd_prefix,
            cfg.service_cidr,
            cfg.node_port_range,
        )
    }

    /// Every served resource: the built-ins, then custom resources.
    pub fn resources(&self) -> Vec<&'static registry::ResourceInfo> {
        let mut all: Vec<_> = registry::RESOURCES.iter().collect();
        all.extend(self.custom.list().iter().copied());
        all
    }

    /// The stored resources, the create-only ones (reviews, bindings) and the read-only
    /// ones (component statuses): what discovery and the OpenAPI documents list.
    pub fn listed_resources(&self) -> Vec<&'static registry::ResourceInfo> {
        let mut all = self.resources();
        all.extend(registry::CREATE_ONLY.iter());
        all.extend(registry::READ_ONLY.iter());
        all
    }

    /// The served resource `plural` of `group/version`.
    pub fn find(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<&'static registry::ResourceInfo> {
        registry::find(group, version, plural).or_else(|| {
            self.custom
                .list()
                .iter()
                .copied()
                .find(|r| r.group == group && r.version == version && r.plural == plural)
        })
    }

    /// Create the namespaces and the `kubernetes` Service every cluster starts with.
    pub async fn bootstrap(&self, advertise: Option<SocketAddr>) -> Result<(), error::AppError> {
        bootstrap::run(self, advertise).await
    }
}

/// The HTTP application: discovery routes, then every resource path.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::api_versions))
        .route("/apis", get(discovery::api_groups))
        .route("/api/v1", get(discovery::core_resources))
        .route("/apis/{group}", get(discovery::api_group))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .route(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            axum::routing::post(auth::self_subject_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            axum::routing::post(auth::self_subject_access_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            axum::routing::post(auth::self_subject_rules_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            axum::routing::post(auth::subject_access_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/namespaces/{namespace}/localsubjectaccessreviews",
            axum::routing::post(auth::local_subject_access_review),
        )
        .route("/api/v1/componentstatuses", get(componentstatus::list))
        .route(
            "/api/v1/componentstatuses/{name}",
            get(componentstatus::get),
        )
        .route(
            "/api/v1/namespaces/{namespace}/bindings",
            axum::routing::post(write::create_binding),
        )
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            axum::routing::post(auth::token_review),
        )
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::index))
        .route("/openapi/v3/{*gv}", get(openapi::group_version))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .fallback(rest::handle)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            tls::require_user,
        ))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// One debug line per request; server faults are logged where they become a Status.
async fn log_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(%method, %uri, status = resp.status().as_u16(), elapsed = ?started.elapsed(), "request");
    resp
}

async fn connect_etcd(cfg: &Config) -> anyhow::Result<etcd::EtcdBackend> {
    let deadline = tokio::time::Instant::now() + cfg.etcd_connect_timeout;
    loop {
        match etcd::EtcdBackend::connect(&cfg.etcd_endpoints).await {
            Ok(b) => return Ok(b),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "etcd not reachable yet, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot reach etcd at {}", cfg.etcd_endpoints.join(","))
                })
            }
        }
    }
}

/// Serve the API until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = tls::server_config(&config.tls).context("loading TLS certificates")?;
    let backend = Backend::Etcd(std::sync::Arc::new(connect_etcd(&config).await?));
    let mut state = AppState::new(
        backend,
        &config.etcd_prefix,
        config.service_cidr,
        config.node_port_range.clone(),
    );
    state.bookmark_interval = config.bookmark_interval;
    if let Some(files) = &config.kubelet_client {
        state.kubelet = Some(
            logs::KubeletClient::new(files).context("loading the kubelet client credentials")?,
        );
    }
    if let Some(files) = &config.service_accounts {
        state.tokens = Some(std::sync::Arc::new(
            serviceaccount::Tokens::load(files).context("loading the service-account keys")?,
        ));
    }
    state.advertise = config
        .advertise_address
        .iter()
        .map(|a| a.to_string())
        .collect();
    fields::compile_schemas();
    // Bootstrap retries: etcd may still be electing a leader right after start.
    let mut tries = 0;
    while let Err(e) = state.bootstrap(config.advertise_address).await {
        tries += 1;
        if tries > 50 {
            anyhow::bail!("bootstrapping the API objects failed: {e}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    crd::reload(&state)
        .await
        .map_err(|e| anyhow::anyhow!("loading CustomResourceDefinitions: {e}"))?;
    let mut sockets = Vec::new();
    for addr in &config.listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        sockets.push(l);
    }
    for l in config.listeners {
        l.set_nonblocking(true)
            .context("preparing a passed-in listener")?;
        sockets
            .push(tokio::net::TcpListener::from_std(l).context("adopting a passed-in listener")?);
    }
    if sockets.is_empty() {
        anyhow::bail!("no address to listen on: set Config.listen or Config.listeners");
    }
    let stop_tx = state.stopping.clone();
    let stop_rx = stop_tx.subscribe();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: ending watches, draining connections");
        let _ = stop_tx.send(true);
    });
    let mut servers = tokio::task::JoinSet::new();
    for sock in sockets {
        let addr = sock.local_addr().ok();
        tracing::info!(?addr, "serving the Kubernetes API over HTTPS");
        let listener = tls::TlsListener::new(sock, tls.clone()).context("starting TLS listener")?;
        let svc = app(state.clone()).into_make_service_with_connect_info::<tls::Peer>();
        let mut stop = stop_rx.clone();
        servers.spawn(async move {
            axum::serve(listener, svc)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        });
    }
    while let Some(r) = servers.join_next().await {
        r.context("server task panicked")?
            .context("serving HTTPS")?;
    }
    Ok(())
}
