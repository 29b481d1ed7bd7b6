//! The root CA publisher: a `kube-root-ca.crt` ConfigMap in every namespace holding the
//! cluster's CA, as kube-controller-manager publishes it. Pods read it through the
//! `kube-api-access-*` volume the API server mounts, to trust the API server they reach at
//! the `kubernetes` Service.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::informers::Informers;

pub const NAME: &str = "kube-root-ca.crt";
const KEY: &str = "ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {NAME} in {0} failed: {1}")]
    Read(String, #[source] kube::Error),
    #[error("writing {NAME} in {0} failed: {1}")]
    Write(String, #[source] kube::Error),
}

pub struct Context {
    client: kube::Client,
    ca_pem: String,
}

/// Subscribe now; the returned future runs the controller once the caches have synced.
pub fn run(
    client: kube::Client,
    informers: &Informers,
    ca_pem: String,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let changes = informers.namespaces.subscribe();
    let store = informers.namespaces.store.clone();
    let config_maps: Api<ConfigMap> = Api::all(client.clone());
    let ctx = Arc::new(Context { client, ca_pem });
    async move {
        Controller::for_stream(changes, store)
            .watches(
                config_maps,
                watcher::Config::default().fields(&format!("metadata.name={NAME}")),
                |cm: ConfigMap| cm.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
            )
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {})
            .await;
    }
}

fn desired(ca_pem: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(NAME.into());
    cm.metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.io/description".to_string(),
        DESCRIPTION.to_string(),
    )]));
    cm.data = Some(BTreeMap::from([(KEY.to_string(), ca_pem.to_string())]));
    cm
}

#[tracing::instrument(skip_all, fields(namespace = %ns.name_any()))]
async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = ns.name_any();
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let current = api
        .get_opt(NAME)
        .await
        .map_err(|e| Error::Read(name.clone(), e))?;
    match current {
        None => match api
            .create(&PostParams::default(), &desired(&ctx.ca_pem))
            .await
        {
            Ok(_) => tracing::info!("published the root CA"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::Write(name, e)),
        },
        Some(mut cm) => {
            let has = cm.data.as_ref().and_then(|d| d.get(KEY));
            if has != Some(&ctx.ca_pem) {
                cm.data
                    .get_or_insert_with(Default::default)
                    .insert(KEY.into(), ctx.ca_pem.clone());
                api.replace(NAME, &PostParams::default(), &cm)
                    .await
                    .map_err(|e| Error::Write(name, e))?;
                tracing::info!("restored the root CA");
            }
        }
    }
    Ok(Action::await_change())
}

fn error_policy(_ns: Arc<Namespace>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("{error}");
    Action::requeue(Duration::from_secs(2))
}
