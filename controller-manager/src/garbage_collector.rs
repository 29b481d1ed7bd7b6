//! The garbage collector: deletes what has lost its owner, and carries out foreground and
//! orphan deletion, by `metadata.ownerReferences`.
//!
//! A periodic sweep over the informers' caches (the watch caches are the dependency graph):
//! - **Background**: a dependent whose owners are all gone (confirmed with a live GET, since a
//!   cache may lag) is deleted; one that keeps some owners loses the references to the others.
//! - **Foreground** (`foregroundDeletion` finalizer on the owner): its dependents are deleted
//!   (foreground too, so a Deployment waits for its pods through its ReplicaSets); when none
//!   is left the finalizer is removed and the API server deletes the owner.
//! - **Orphan** (`orphan` finalizer): the dependents lose their reference to the owner, then
//!   the finalizer is removed.
//!
//! Owners and dependents are the kinds the controllers here create: Deployments own
//! ReplicaSets; ReplicaSets, DaemonSets and Jobs own Pods; Services own EndpointSlices.
//! Legacy Endpoints have no owner reference: those the endpoints controller wrote (its
//! managed-by label) go when their Service is gone, as kube-controller-manager does.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;
use serde_json::json;

use crate::informers::Informers;

const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// An object as the collector sees it: which kind, where, its metadata.
struct Node {
    resource: ApiResource,
    meta: ObjectMeta,
}

pub struct GarbageCollector {
    client: kube::Client,
    pods: Store<Pod>,
    replica_sets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    daemon_sets: Store<DaemonSet>,
    jobs: Store<Job>,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    endpoints: Store<Endpoints>,
}

pub fn run(
    client: kube::Client,
    informers: &Informers,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let gc = GarbageCollector {
        client,
        pods: informers.pods.store.clone(),
        replica_sets: informers.replica_sets.store.clone(),
        deployments: informers.deployments.store.clone(),
        daemon_sets: informers.daemon_sets.store.clone(),
        jobs: informers.jobs.store.clone(),
        services: informers.services.store.clone(),
        endpoint_slices: informers.endpoint_slices.store.clone(),
        endpoints: informers.endpoints.store.clone(),
    };
    async move {
        loop {
            gc.sweep().await;
            tokio::time::sleep(SWEEP_INTERVAL).await;
        }
    }
}

/// The objects in `store` whose metadata is `wanted`. The test runs on the cached objects and
/// only those kept are copied: a sweep with nothing to do copies nothing. (Copying every
/// object's metadata twice a second was most of an idle controller-manager's CPU with a
/// thousand Services.)
fn nodes_where<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
    wanted: &impl Fn(&ObjectMeta) -> bool,
) -> Vec<Node> {
    store
        .state()
        .iter()
        .filter(|o| wanted(o.meta()))
        .map(|o| Node {
            resource: ApiResource::erase::<K>(&()),
            meta: o.meta().clone(),
        })
        .collect()
}

fn present<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
    ns: &str,
    owner: &OwnerReference,
) -> bool {
    store
        .get(&ObjectRef::new(&owner.name).within(ns))
        .is_some_and(|o| o.meta().uid.as_deref() == Some(owner.uid.as_str()))
}

impl GarbageCollector {
    fn dependents(&self, wanted: &impl Fn(&ObjectMeta) -> bool) -> Vec<Node> {
        let mut all = nodes_where(&self.pods, wanted);
        all.extend(nodes_where(&self.replica_sets, wanted));
        all.extend(nodes_where(&self.endpoint_slices, wanted));
        all
    }

    fn owners(&self, wanted: &impl Fn(&ObjectMeta) -> bool) -> Vec<Node> {
        let mut all = nodes_where(&self.deployments, wanted);
        all.extend(nodes_where(&self.replica_sets, wanted));
        all.extend(nodes_where(&self.daemon_sets, wanted));
        all.extend(nodes_where(&self.jobs, wanted));
        all.extend(nodes_where(&self.services, wanted));
        all
    }

    /// Some owner of the object is missing from our caches: a candidate for background
    /// deletion, once [`Self::confirmed_absent`] agrees.
    fn lost_an_owner(&self, meta: &ObjectMeta) -> bool {
        let ns = meta.namespace.as_deref().unwrap_or_default();
        meta.owner_references
            .iter()
            .flatten()
            .any(|owner| self.cached(ns, owner) == Some(false))
    }

    /// Is the owner in our caches? `None` for kinds we do not watch (left alone).
    fn cached(&self, ns: &str, owner: &OwnerReference) -> Option<bool> {
        Some(match (owner.api_version.as_str(), owner.kind.as_str()) {
            ("apps/v1", "Deployment") => present(&self.deployments, ns, owner),
            ("apps/v1", "ReplicaSet") => present(&self.replica_sets, ns, owner),
            ("apps/v1", "DaemonSet") => present(&self.daemon_sets, ns, owner),
            ("batch/v1", "Job") => present(&self.jobs, ns, owner),
            ("v1", "Service") => present(&self.services, ns, owner),
            _ => return None,
        })
    }

    fn api(&self, resource: &ApiResource, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, resource)
    }

    /// The owner is really gone: not found, or replaced by a new object of the same name.
    async fn confirmed_absent(&self, ns: &str, owner: &OwnerReference) -> bool {
        let (group, version) = match owner.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", owner.api_version.as_str()),
        };
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &owner.kind);
        let plural = format!("{}s", owner.kind.to_lowercase());
        let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
        match self.api(&resource, ns).get_opt(&owner.name).await {
            Ok(Some(o)) => o.metadata.uid.as_deref() != Some(owner.uid.as_str()),
            Ok(None) => true,
            Err(e) => {
                tracing::debug!("cannot confirm {} {ns}/{}: {e}", owner.kind, owner.name);
                false
            }
        }
    }

    /// Endpoints written for a Service that no longer exists.
    async fn collect_endpoints(&self) -> Result<(), kube::Error> {
        use crate::endpointslice::{ENDPOINTS_MANAGED_BY, ENDPOINTS_MANAGED_BY_LABEL};
        for endpoints in self.endpoints.state() {
            let managed = endpoints
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(ENDPOINTS_MANAGED_BY_LABEL));
            if managed.map(String::as_str) != Some(ENDPOINTS_MANAGED_BY) {
                continue;
            }
            let ns = endpoints.metadata.namespace.clone().unwrap_or_default();
            let name = endpoints.metadata.name.clone().unwrap_or_default();
            if self
                .services
                .get(&ObjectRef::new(&name).within(&ns))
                .is_some()
            {
                continue;
            }
            let services: Api<Service> = Api::namespaced(self.client.clone(), &ns);
            if services.get_opt(&name).await?.is_none() {
                tracing::info!(%ns, %name, "deleting Endpoints: their Service is gone");
                let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &ns);
                ignore_not_found(
                    api.delete(&name, &DeleteParams::background())
                        .await
                        .map(drop),
                )?;
            }
        }
        Ok(())
    }

    async fn sweep(&self) {
        if let Err(e) = self.collect_endpoints().await {
            tracing::warn!("collecting Endpoints failed: {e}");
        }
        let orphaned =
            |meta: &ObjectMeta| meta.deletion_timestamp.is_none() && self.lost_an_owner(meta);
        for dependent in self.dependents(&orphaned) {
            if let Err(e) = self.collect(&dependent).await {
                tracing::warn!(kind = %dependent.resource.kind, name = %dependent.meta.name.as_deref().unwrap_or(""), "garbage collection failed: {e}");
            }
        }
        for owner in self.owners(&|meta| meta.deletion_timestamp.is_some()) {
            if let Err(e) = self.finalize(&owner).await {
                tracing::warn!(kind = %owner.resource.kind, name = %owner.meta.name.as_deref().unwrap_or(""), "finishing a cascading deletion failed: {e}");
            }
        }
    }

    /// Background deletion of a dependent whose owners are gone.
    async fn collect(&self, dependent: &Node) -> Result<(), kube::Error> {
        let refs = dependent.meta.owner_references.clone().unwrap_or_default();
        let ns = dependent.meta.namespace.clone().unwrap_or_default();
        if refs.is_empty() || dependent.meta.deletion_timestamp.is_some() {
            return Ok(());
        }
        let mut gone = Vec::new();
        for owner in &refs {
            if self.cached(&ns, owner) == Some(false) && self.confirmed_absent(&ns, owner).await {
                gone.push(owner.uid.clone());
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        let name = dependent.meta.name.clone().unwrap_or_default();
        let api = self.api(&dependent.resource, &ns);
        if gone.len() == refs.len() {
            tracing::info!(kind = %dependent.resource.kind, %ns, %name, "deleting: its owner is gone");
            return ignore_not_found(
                api.delete(&name, &DeleteParams::background())
                    .await
                    .map(drop),
            );
        }
        let kept: Vec<&OwnerReference> = refs.iter().filter(|o| !gone.contains(&o.uid)).collect();
        let patch = json!({"metadata": {"ownerReferences": kept}});
        ignore_not_found(
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop),
        )
    }

    /// Foreground and orphan deletion of an owner marked for deletion.
    async fn finalize(&self, owner: &Node) -> Result<(), kube::Error> {
        let finalizers = owner.meta.finalizers.clone().unwrap_or_default();
        let ns = owner.meta.namespace.clone().unwrap_or_default();
        let uid = owner.meta.uid.clone().unwrap_or_default();
        let dependents = self.dependents(&|d| {
            d.namespace.as_deref() == Some(&ns)
                && d.owner_references.iter().flatten().any(|o| o.uid == uid)
        });
        for finalizer in [ORPHAN, FOREGROUND] {
            if !finalizers.iter().any(|f| f == finalizer) {
                continue;
            }
            for d in &dependents {
                let name = d.meta.name.clone().unwrap_or_default();
                let api = self.api(&d.resource, &ns);
                if finalizer == ORPHAN {
                    let kept: Vec<&OwnerReference> = d
                        .meta
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|o| o.uid != uid)
                        .collect();
                    let patch = json!({"metadata": {"ownerReferences": kept}});
                    ignore_not_found(
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .map(drop),
                    )?;
                } else if d.meta.deletion_timestamp.is_none() {
                    ignore_not_found(
                        api.delete(&name, &DeleteParams::foreground())
                            .await
                            .map(drop),
                    )?;
                }
            }
            if finalizer == ORPHAN || dependents.is_empty() {
                let remaining: Vec<&String> =
                    finalizers.iter().filter(|f| *f != finalizer).collect();
                let patch = json!({"metadata": {"finalizers": remaining}});
                let name = owner.meta.name.clone().unwrap_or_default();
                tracing::info!(kind = %owner.resource.kind, %ns, %name, finalizer, "dependents handled; removing the finalizer");
                let api = self.api(&owner.resource, &ns);
                ignore_not_found(
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(drop),
                )?;
            }
            // One finalizer per sweep: the owner's next version carries the rest.
            break;
        }
        Ok(())
    }
}

fn ignore_not_found(result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::{reflector, watcher};

    fn service(name: &str, deleting: bool) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_the_wanted_objects_are_copied_out_of_the_cache() {
        let (store, mut writer) = reflector::store::<Service>();
        for (name, deleting) in [("kept", false), ("going", true), ("also-kept", false)] {
            writer.apply_watcher_event(&watcher::Event::Apply(service(name, deleting)));
        }
        let marked = nodes_where(&store, &|meta| meta.deletion_timestamp.is_some());
        let names: Vec<_> = marked.iter().map(|n| n.meta.name.as_deref()).collect();
        assert_eq!(names, [Some("going")]);
        assert_eq!(marked[0].resource.kind, "Service");
        assert_eq!(nodes_where(&store, &|_| true).len(), 3);
    }
}
