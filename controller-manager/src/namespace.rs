//! The namespace controller: empties a namespace being deleted, then releases it.
//!
//! `kubectl delete namespace` leaves the namespace `Terminating`, held by its `kubernetes`
//! finalizer (`spec.finalizers`). This deletes every namespaced resource in it — the kinds
//! come from discovery, as in kube-controller-manager, so new kinds need no code here —
//! and checks again until nothing is left (pods take their grace period), then removes the
//! finalizer through `namespaces/<name>/finalize`, and the API server deletes the namespace.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{Discovery, Scope};
use kube::runtime::controller::{Action, Controller};
use kube::ResourceExt;

use crate::informers::Informers;

pub const FINALIZER: &str = "kubernetes";
/// How often a Terminating namespace is looked at again while content remains.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("discovering the API's resources failed: {0}")]
    DiscoveryFailed(#[source] kube::Error),
    #[error("deleting the {0} in namespace {1} failed: {2}")]
    ContentDeletionFailed(String, String, #[source] kube::Error),
    #[error("finalizing namespace {0} failed: {1}")]
    FinalizeFailed(String, #[source] kube::Error),
}

pub struct Context {
    client: kube::Client,
}

/// Subscribe now; the returned future runs the controller once the caches have synced.
pub fn run(
    client: kube::Client,
    informers: &Informers,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let changes = informers.namespaces.subscribe();
    let store = informers.namespaces.store.clone();
    let ctx = Arc::new(Context { client });
    async move {
        Controller::for_stream(changes, store)
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {})
            .await;
    }
}

#[tracing::instrument(skip_all, fields(namespace = %ns.name_any()))]
async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let held = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER));
    if ns.metadata.deletion_timestamp.is_none() || !held {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let remaining = delete_content(&name, &ctx).await?;
    if remaining > 0 {
        tracing::info!(remaining, "namespace still has content");
        return Ok(Action::requeue(RECHECK));
    }
    let mut finalized = Namespace::clone(&ns);
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers = Some(
            spec.finalizers
                .iter()
                .flatten()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect(),
        );
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api
        .replace_subresource::<Namespace>("finalize", &name, &PostParams::default(), &finalized)
        .await
    {
        Ok(_) => tracing::info!("namespace is empty; finalized"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(Error::FinalizeFailed(name, e)),
    }
    Ok(Action::await_change())
}

/// Delete every namespaced object in `namespace`; how many were still there.
async fn delete_content(namespace: &str, ctx: &Context) -> Result<usize, Error> {
    let discovery = Discovery::new(ctx.client.clone())
        .run()
        .await
        .map_err(Error::DiscoveryFailed)?;
    let mut remaining = 0;
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            let deletable =
                caps.supports_operation("deletecollection") && caps.supports_operation("list");
            if caps.scope != Scope::Namespaced || !deletable {
                continue;
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(ctx.client.clone(), namespace, &resource);
            let fail =
                |e| Error::ContentDeletionFailed(resource.plural.clone(), namespace.to_string(), e);
            let left = api
                .list(&ListParams::default())
                .await
                .map_err(fail)?
                .items
                .len();
            if left == 0 {
                continue;
            }
            remaining += left;
            api.delete_collection(&DeleteParams::background(), &ListParams::default())
                .await
                .map_err(fail)?;
        }
    }
    Ok(remaining)
}

fn error_policy(_ns: Arc<Namespace>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("{error}");
    Action::requeue(Duration::from_secs(2))
}
