//! The API objects a Pod's containers are made from besides the Pod: ConfigMaps and Secrets
//! (volumes, `env`, `envFrom`) and Services (the service environment variables), each kept in
//! a reflector store fed by one watch, as the kubelet's watch-based managers do, so a sync
//! reads memory and a changed ConfigMap reaches its volumes within a sync. The ConfigMap and
//! Secret watches start with the first Pod that uses one: a node of plain pods holds none.
//!
//! Service-account tokens come from the TokenRequest API and are cached per Pod volume until
//! 80 % of their life has passed, as the kubelet's token manager does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, reflector, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};

use super::watched::Watched;

pub struct Objects {
    pub client: kube::Client,
    config: tokio::sync::OnceCell<ConfigStores>,
    pub services: Store<Watched<Service>>,
    tokens: Mutex<HashMap<TokenKey, CachedToken>>,
    /// Token requests that failed: not asked again before this Unix millisecond.
    failed: Mutex<HashMap<TokenKey, u64>>,
}

/// The ConfigMap and Secret stores, made with the first Pod that uses one.
type ConfigStores = (Store<Watched<ConfigMap>>, Store<Watched<Secret>>);

/// How long a failed TokenRequest is not repeated.
const TOKEN_RETRY_MS: u64 = 30_000;

/// (pod uid, volume, path).
type TokenKey = (String, String, String);
/// (token, refresh after this Unix millisecond).
type CachedToken = (String, u64);

fn reflect<K>(api: Api<Watched<K>>) -> Store<Watched<K>>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::debug!("watch: {e}");
            }
        }
    });
    store
}

impl Objects {
    /// Start the watches; returns once each has listed once.
    pub async fn start(client: kube::Client) -> anyhow::Result<Arc<Objects>> {
        let objects = Objects {
            config: tokio::sync::OnceCell::new(),
            services: reflect(Api::all(client.clone())),
            client,
            tokens: Mutex::default(),
            failed: Mutex::default(),
        };
        objects.services.wait_until_ready().await?;
        Ok(Arc::new(objects))
    }

    /// Start the ConfigMap and Secret watches (once) and wait for their first list.
    pub async fn ensure_config(&self) -> Result<(), String> {
        self.config
            .get_or_try_init(|| async {
                let config_maps = reflect(Api::<Watched<ConfigMap>>::all(self.client.clone()));
                let secrets = reflect(Api::<Watched<Secret>>::all(self.client.clone()));
                let ready = |e: reflector::store::WriterDropped| e.to_string();
                config_maps.wait_until_ready().await.map_err(ready)?;
                secrets.wait_until_ready().await.map_err(ready)?;
                Ok::<_, String>((config_maps, secrets))
            })
            .await
            .map(drop)
    }

    /// A ConfigMap, once [`ensure_config`](Self::ensure_config) has run.
    pub fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<Watched<ConfigMap>>> {
        let (config_maps, _) = self.config.get()?;
        config_maps.get(&ObjectRef::new(name).within(namespace))
    }

    /// A Secret, once [`ensure_config`](Self::ensure_config) has run.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Watched<Secret>>> {
        let (_, secrets) = self.config.get()?;
        secrets.get(&ObjectRef::new(name).within(namespace))
    }

    /// A token for `service_account`, bound to the Pod, from the TokenRequest API (cached).
    pub async fn service_account_token(
        &self,
        pod: &k8s_openapi::api::core::v1::Pod,
        volume: &str,
        path: &str,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<String, String> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let key = (uid.clone(), volume.to_string(), path.to_string());
        let now = crate::now_ms();
        if let Some((token, refresh_at)) =
            self.tokens.lock().ok().and_then(|t| t.get(&key).cloned())
        {
            if now < refresh_at {
                return Ok(token);
            }
        }
        if let Some(retry_at) = self.failed.lock().ok().and_then(|f| f.get(&key).copied()) {
            if now < retry_at {
                return Err("the last TokenRequest failed; retrying later".into());
            }
        }
        let result = self.request_token(pod, audience, expiration_seconds).await;
        match &result {
            Ok(token) => {
                let refresh_at = now + (expiration_seconds.max(600) as u64) * 800;
                if let Ok(mut tokens) = self.tokens.lock() {
                    tokens.insert(key.clone(), (token.clone(), refresh_at));
                }
                if let Ok(mut failed) = self.failed.lock() {
                    failed.remove(&key);
                }
            }
            Err(e) => {
                tracing::warn!(pod = ?pod.metadata.name, "no service-account token for volume {volume}: {e}");
                if let Ok(mut failed) = self.failed.lock() {
                    failed.insert(key, now + TOKEN_RETRY_MS);
                }
            }
        }
        result
    }

    async fn request_token(
        &self,
        pod: &k8s_openapi::api::core::v1::Pod,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<String, String> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let request: TokenRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
                "expirationSeconds": expiration_seconds,
                "boundObjectRef": { "kind": "Pod", "apiVersion": "v1",
                    "name": pod.metadata.name, "uid": uid },
            }
        }))
        .map_err(|e| e.to_string())?;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);

        let response: TokenRequest = api
            .create_subresource("token", &account, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                format!("requesting a token for service account {namespace}/{account}: {e}")
            })?;
        let token = response
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("the TokenRequest for {namespace}/{account} gave no token"))?;
        Ok(token)
    }

    /// Forget the tokens of a Pod that is gone.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.retain(|(pod, _, _), _| pod != uid);
        }
        if let Ok(mut failed) = self.failed.lock() {
            failed.retain(|(pod, _, _), _| pod != uid);
        }
    }
}
