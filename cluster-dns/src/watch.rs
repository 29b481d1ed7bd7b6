//! Services and EndpointSlices into the index, from two watches (list, then watch; relist
//! after a 410 or a lost connection), so answers follow the API within one event.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use kube::{Api, Client, ResourceExt as _};

use crate::records::{Endpoint, Index, Port, ServiceEntry, ServiceKind, SliceEntry};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What DNS knows of a Service; None for one that has no name to answer with yet.
pub fn service_entry(svc: &Service) -> Option<ServiceEntry> {
    let spec = svc.spec.as_ref()?;
    let kind = match (spec.type_.as_deref(), spec.cluster_ip.as_deref()) {
        (Some("ExternalName"), _) => ServiceKind::ExternalName(spec.external_name.clone()?),
        (_, Some("None")) => ServiceKind::Headless,
        (_, Some(ip)) => ServiceKind::ClusterIp(ip.parse::<Ipv4Addr>().ok()?),
        (_, None) => return None,
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p.name.clone().unwrap_or_default(),
                port: u16::try_from(p.port).ok()?,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
            })
        })
        .collect();
    Some(ServiceEntry {
        kind,
        ports,
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
    })
}

/// What DNS knows of an EndpointSlice; None for slices of no service or not IPv4.
pub fn slice_entry(slice: &EndpointSlice) -> Option<SliceEntry> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?.clone();
    if slice.address_type != "IPv4" {
        return None;
    }
    let endpoints = slice
        .endpoints
        .iter()
        .filter_map(|e| {
            Some(Endpoint {
                ip: e.addresses.first()?.parse().ok()?,
                hostname: e.hostname.clone(),
                // The API's rule: an unknown readiness counts as ready.
                ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
            })
        })
        .collect();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p.name.clone().unwrap_or_default(),
                port: u16::try_from(p.port?).ok()?,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
            })
        })
        .collect();
    Some(SliceEntry {
        service,
        endpoints,
        ports,
    })
}

fn key<K: kube::Resource>(obj: &K) -> (String, String) {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Keep one map of the index in step with one watch; counts itself in `synced` after its
/// first complete list.
async fn follow<K, V>(
    api: Api<K>,
    index: Arc<RwLock<Index>>,
    synced: Arc<AtomicUsize>,
    entry: fn(&K) -> Option<V>,
    map: fn(&mut Index) -> &mut std::collections::HashMap<(String, String), V>,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
    V: Send,
{
    let mut listed_once = false;
    let mut relist: Option<std::collections::HashMap<(String, String), V>> = None;
    let mut events = kube::runtime::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(error) => {
                tracing::warn!(%error, "watch failed; retrying");
                continue;
            }
        };
        let Ok(mut index) = index.write() else {
            tracing::error!("the DNS index is poisoned; stopping the watch");
            return;
        };
        match event {
            Event::Init => relist = Some(Default::default()),
            Event::InitApply(obj) => {
                if let (Some(fresh), Some(v)) = (relist.as_mut(), entry(&obj)) {
                    fresh.insert(key(&obj), v);
                }
            }
            Event::InitDone => {
                if let Some(fresh) = relist.take() {
                    *map(&mut index) = fresh;
                }
                if !listed_once {
                    listed_once = true;
                    synced.fetch_add(1, Ordering::SeqCst);
                }
            }
            Event::Apply(obj) => match entry(&obj) {
                Some(v) => {
                    map(&mut index).insert(key(&obj), v);
                }
                None => {
                    map(&mut index).remove(&key(&obj));
                }
            },
            Event::Delete(obj) => {
                map(&mut index).remove(&key(&obj));
            }
        }
    }
}

/// How many watches there are; the server is ready when all have listed once.
pub const WATCHES: usize = 2;

/// Start both watches; the counter reaches [`WATCHES`] once both have listed everything.
pub fn start(client: Client, index: Arc<RwLock<Index>>) -> Arc<AtomicUsize> {
    let synced = Arc::new(AtomicUsize::new(0));
    tokio::spawn(follow(
        Api::<Service>::all(client.clone()),
        index.clone(),
        synced.clone(),
        service_entry,
        |i| &mut i.services,
    ));
    tokio::spawn(follow(
        Api::<EndpointSlice>::all(client),
        index,
        synced.clone(),
        slice_entry,
        |i| &mut i.slices,
    ));
    synced
}
