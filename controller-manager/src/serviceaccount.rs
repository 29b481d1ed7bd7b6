//! The ServiceAccount controller: a `default` ServiceAccount in every namespace, as soon as
//! the namespace exists (and again if someone deletes it).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;

use crate::informers::Informers;

pub const DEFAULT: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the default ServiceAccount in {0} failed: {1}")]
    ServiceAccountCreationFailed(String, #[source] kube::Error),
}

pub struct Context {
    client: kube::Client,
    service_accounts: Store<ServiceAccount>,
}

/// Subscribe now; the returned future runs the controller once the caches have synced.
pub fn run(
    client: kube::Client,
    informers: &Informers,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let changes = informers.namespaces.subscribe();
    let sa_changes = informers.service_accounts.subscribe();
    let store = informers.namespaces.store.clone();
    let ctx = Arc::new(Context {
        client,
        service_accounts: informers.service_accounts.store.clone(),
    });
    async move {
        Controller::for_stream(changes, store)
            .watches_stream(sa_changes, |sa: ServiceAccount| {
                let ns = sa.namespace().filter(|_| sa.name_any() == DEFAULT);
                ns.map(|ns| ObjectRef::<Namespace>::new(&ns))
            })
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {})
            .await;
    }
}

#[tracing::instrument(skip_all, fields(namespace = %ns.name_any()))]
async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = ns.name_any();
    let terminating = ns.metadata.deletion_timestamp.is_some();
    let exists = ctx
        .service_accounts
        .get(&ObjectRef::new(DEFAULT).within(&name))
        .is_some();
    if terminating || exists {
        return Ok(Action::await_change());
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    let mut sa = ServiceAccount::default();
    sa.metadata.name = Some(DEFAULT.into());
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => tracing::info!("created the default ServiceAccount"),
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(Error::ServiceAccountCreationFailed(name, e)),
    }
    Ok(Action::await_change())
}

fn error_policy(_ns: Arc<Namespace>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("{error}");
    Action::requeue(Duration::from_secs(2))
}
