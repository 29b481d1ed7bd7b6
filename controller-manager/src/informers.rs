//! Shared informers, as client-go has them: one watch per resource type for the whole
//! process, one reflector cache every controller reads, and a fan-out of every changed or
//! deleted object to the controllers that want to be triggered by it.
//!
//! kube-rs's `Controller::owns`/`watches` would open a watch per controller and per kind; with
//! ten controllers that is ten watches of every Pod. Here each kind is watched once, and a
//! controller gets its triggers with [`Informer::subscribe`] (for `Controller::for_stream`,
//! `owns_stream` and `watches_stream`). Subscribers are taken before [`Informers::start`], so
//! none misses the initial list.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

/// Changes kept for a subscriber that is behind; past that it misses triggers (logged) and
/// relies on its periodic requeue.
const FANOUT_BUFFER: usize = 8192;

/// One watched kind: its cache and the fan-out of its changes.
pub struct Informer<K: Resource<DynamicType = ()> + Clone + 'static> {
    pub store: Store<K>,
    /// `Arc`s, so the buffer costs a pointer per slot whatever the object's size.
    changes: broadcast::Sender<Arc<K>>,
    watch: Mutex<Option<BoxFuture<'static, ()>>>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn new(api: Api<K>) -> Self {
        let (store, writer) = reflector::store();
        let (changes, _) = broadcast::channel(FANOUT_BUFFER);
        let sender = changes.clone();
        let watch = async move {
            let stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .reflect(writer)
                .touched_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                match item {
                    // No subscriber is not an error: the cache is still kept.
                    Ok(object) => drop(sender.send(Arc::new(object))),
                    Err(e) => tracing::warn!(kind = %K::kind(&()), "watch failed, retrying: {e}"),
                }
            }
        };
        Informer {
            store,
            changes,
            watch: Mutex::new(Some(watch.boxed())),
        }
    }

    /// Every object of this kind that is added, changed or deleted from now on.
    pub fn subscribe(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        self.subscribe_where(|_| true)
    }

    /// The changed objects that `wanted` picks. Each subscriber gets its own copy of an
    /// object, which for Pods was the largest share of this process's CPU under a burst of
    /// creates: a controller that reacts to few of them says which, and is not sent the rest.
    pub fn subscribe_where(
        &self,
        wanted: impl Fn(&K) -> bool + Send + 'static,
    ) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let state = (self.changes.subscribe(), wanted);
        futures_util::stream::unfold(state, |(mut receiver, wanted)| async move {
            loop {
                match receiver.recv().await {
                    Ok(object) if wanted(&object) => {
                        return Some((Ok(K::clone(&object)), (receiver, wanted)))
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(kind = %K::kind(&()), missed, "a controller fell behind")
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    fn start(&self, tasks: &mut tokio::task::JoinSet<()>) {
        let watch = self.watch.lock().map(|mut w| w.take());
        if let Ok(Some(watch)) = watch {
            tasks.spawn(watch);
        }
    }
}

/// For `owns_stream` subscriptions: objects with an owner of kind `owner_kind`, the only
/// ones `owns_stream` maps to a parent.
pub fn owned_by<K: Resource>(owner_kind: &'static str) -> impl Fn(&K) -> bool + Send + 'static {
    move |object| {
        object
            .meta()
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == owner_kind)
    }
}

/// The kinds the controllers read, each watched once (cluster-wide).
pub struct Informers {
    pub pods: Informer<Pod>,
    pub nodes: Informer<Node>,
    pub leases: Informer<Lease>,
    pub namespaces: Informer<Namespace>,
    pub service_accounts: Informer<ServiceAccount>,
    pub services: Informer<Service>,
    pub endpoints: Informer<Endpoints>,
    pub endpoint_slices: Informer<EndpointSlice>,
    pub replica_sets: Informer<ReplicaSet>,
    pub deployments: Informer<Deployment>,
    pub daemon_sets: Informer<DaemonSet>,
    pub jobs: Informer<Job>,
}

impl Informers {
    pub fn new(client: &kube::Client) -> Self {
        Informers {
            pods: Informer::new(Api::all(client.clone())),
            nodes: Informer::new(Api::all(client.clone())),
            leases: Informer::new(Api::namespaced(client.clone(), "kube-node-lease")),
            namespaces: Informer::new(Api::all(client.clone())),
            service_accounts: Informer::new(Api::all(client.clone())),
            services: Informer::new(Api::all(client.clone())),
            endpoints: Informer::new(Api::all(client.clone())),
            endpoint_slices: Informer::new(Api::all(client.clone())),
            replica_sets: Informer::new(Api::all(client.clone())),
            deployments: Informer::new(Api::all(client.clone())),
            daemon_sets: Informer::new(Api::all(client.clone())),
            jobs: Informer::new(Api::all(client.clone())),
        }
    }

    /// Start every watch (after the controllers have subscribed).
    pub fn start(&self, tasks: &mut tokio::task::JoinSet<()>) {
        self.pods.start(tasks);
        self.nodes.start(tasks);
        self.leases.start(tasks);
        self.namespaces.start(tasks);
        self.service_accounts.start(tasks);
        self.services.start(tasks);
        self.endpoints.start(tasks);
        self.endpoint_slices.start(tasks);
        self.replica_sets.start(tasks);
        self.deployments.start(tasks);
        self.daemon_sets.start(tasks);
        self.jobs.start(tasks);
    }

    /// Wait until every cache holds its first complete list.
    pub async fn wait_until_synced(&self) -> anyhow::Result<()> {
        let failed = |kind: &str| format!("the {kind} watch stopped before its first list");
        use anyhow::Context as _;
        self.pods
            .store
            .wait_until_ready()
            .await
            .with_context(|| failed("Pod"))?;
        self.nodes
            .store
            .wait_until_ready()
            .await
            .with_context(|| failed("Node"))?;
        self.leases
            .store
            .wait_until_ready()
            .await
            .with_context(|| failed("Lease"))?;
        self.namespaces
            .store
            .wait_until_ready()
            .await
            .with_context(|| failed("Namespace"))?;
        self.service_accounts
            .store
            .wait_until_ready()
            .await
            .with_context(|| failed("ServiceAccount"))?;
        self.services
            .store
            .wait_until_ready()
            .await
            .with_context(|| failed("Service"))?;
        self.endpoints
            .store
            .wait_until_ready()
            .await
            .with_context(|| failed("Endpoints"))?;
        self.endpoint_slices
            .store
            .wait_until_ready()
            .await
            .with_context(|| failed("EndpointSlice"))?;
        self.replica_sets
            .store
            .wait_until_ready()
            .await
            .with_context(|| failed("ReplicaSet"))?;
        self.deployments
            .store
            .wait_until_ready()
            .await
            .with_context(|| failed("Deployment"))?;
        self.daemon_sets
            .store
            .wait_until_ready()
            .await
            .with_context(|| failed("DaemonSet"))?;
        self.jobs
            .store
            .wait_until_ready()
            .await
            .with_context(|| failed("Job"))?;
        Ok(())
    }
}
