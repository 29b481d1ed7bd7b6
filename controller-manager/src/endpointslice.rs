//! The EndpointSlice controller, and the legacy Endpoints controller beside it: for every
//! Service with a selector, the addresses of the pods it selects and whether each is ready.
//!
//! Pods are grouped by the ports their Service's `targetPort`s resolve to (a named
//! `targetPort` may be a different number in each pod), then cut into slices of at most
//! [`MAX_ENDPOINTS_PER_SLICE`]. Each endpoint carries the three conditions kube-proxy reads:
//! `ready` (serving and not terminating, or always with `publishNotReadyAddresses`),
//! `serving`, `terminating`. Slice names are the Service's name and a hash of the port set and
//! chunk, so the same slice is found again without a lookup. Services without a selector are
//! left alone: their endpoints are someone else's (the `kubernetes` Service's are the API
//! server's).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod,
    Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;

use crate::informers::Informers;
use crate::pods::{is_ready, is_terminal, map_selects, owner_reference};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The label the endpoints controller puts on the Endpoints it writes (so the ones left by a
/// deleted Service can be told from hand-written ones).
pub const ENDPOINTS_MANAGED_BY_LABEL: &str = "endpoints.kubernetes.io/managed-by";
pub const ENDPOINTS_MANAGED_BY: &str = "endpoint-controller";

/// Pods by the ports they resolve to (keyed by those ports' JSON).
pub type PortGroups = BTreeMap<String, PortGroup>;
pub type PortGroup = (Vec<EndpointPort>, Vec<Arc<Pod>>);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing object key {0}")]
    MissingObjectKey(&'static str),
    #[error("writing EndpointSlice {0} failed: {1}")]
    SliceWriteFailed(String, #[source] kube::Error),
    #[error("writing Endpoints {0} failed: {1}")]
    EndpointsWriteFailed(String, #[source] kube::Error),
}

pub struct Context {
    client: kube::Client,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    endpoints: Store<Endpoints>,
    /// `--endpointslice-updates-batch-period`: at most one sync per Service this often.
    batch_period: Duration,
    /// When each Service (`ns/name`) was last synced.
    last_sync: Mutex<HashMap<String, Instant>>,
}

/// How long until `key` may be synced again, if it must wait: the first change after a quiet
/// spell is written at once, later ones in the same period together at its end.
fn batch_wait(ctx: &Context, key: &str, now: Instant) -> Option<Duration> {
    if ctx.batch_period.is_zero() {
        return None;
    }
    let mut last = ctx.last_sync.lock().unwrap_or_else(|e| e.into_inner());
    match last.get(key) {
        Some(at) if now.duration_since(*at) < ctx.batch_period => {
            Some(ctx.batch_period - now.duration_since(*at))
        }
        _ => {
            last.insert(key.to_string(), now);
            None
        }
    }
}

/// Subscribe now; the returned future runs the controller once the caches have synced.
pub fn run(
    client: kube::Client,
    informers: &Informers,
    batch_period: Duration,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let changes = informers.services.subscribe();
    let pod_changes = informers.pods.subscribe();
    let slice_changes = informers.endpoint_slices.subscribe();
    let services = informers.services.store.clone();
    let ctx = Arc::new(Context {
        client,
        pods: informers.pods.store.clone(),
        slices: informers.endpoint_slices.store.clone(),
        endpoints: informers.endpoints.store.clone(),
        batch_period,
        last_sync: Mutex::default(),
    });
    async move {
        let selecting = services.clone();
        Controller::for_stream(changes, services)
            .watches_stream(pod_changes, move |pod: Pod| {
                services_selecting(&selecting, &pod)
            })
            .owns_stream(slice_changes)
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {})
            .await;
    }
}

/// The Services in the pod's namespace whose selector matches it.
fn services_selecting(services: &Store<Service>, pod: &Pod) -> Vec<ObjectRef<Service>> {
    let namespace = pod.namespace();
    services
        .state()
        .iter()
        .filter(|s| s.namespace() == namespace)
        .filter(|s| selector(s).is_some_and(|sel| map_selects(sel, pod.labels())))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    service
        .spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

#[tracing::instrument(skip_all, fields(service = %service.name_any()))]
async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(selector) = selector(&service) else {
        return Ok(Action::await_change());
    };
    if service.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = service
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let key = format!("{namespace}/{}", service.name_any());
    if let Some(wait) = batch_wait(&ctx, &key, Instant::now()) {
        return Ok(Action::requeue(wait));
    }
    let mut pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(&namespace))
        .filter(|p| map_selects(selector, p.labels()))
        .filter(|p| !is_terminal(p) && pod_ip(p).is_some())
        .collect();
    pods.sort_by_key(|p| p.name_any());
    let publish_not_ready = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    // Pods grouped by the ports they resolve to.
    let mut groups = PortGroups::new();
    for pod in pods {
        let resolved = resolve_ports(&ports, &pod);
        let key = serde_json::to_string(&resolved).unwrap_or_default();
        groups
            .entry(key)
            .or_insert_with(|| (resolved, Vec::new()))
            .1
            .push(pod);
    }
    sync_slices(&service, &namespace, &groups, publish_not_ready, &ctx).await?;
    sync_endpoints(&service, &namespace, &groups, publish_not_ready, &ctx).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn error_policy(_service: Arc<Service>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("{error}");
    Action::requeue(Duration::from_secs(1))
}

fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()?
        .pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
}

/// The Service's ports as this pod serves them; a named `targetPort` the pod does not
/// declare leaves that port out, as Kubernetes does.
pub fn resolve_ports(ports: &[ServicePort], pod: &Pod) -> Vec<EndpointPort> {
    ports
        .iter()
        .filter_map(|p| {
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let number = match &p.target_port {
                None => p.port,
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(name)) => match name.parse::<i32>() {
                    Ok(n) => n,
                    Err(_) => named_container_port(pod, name, &protocol)?,
                },
            };
            Some(EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(number),
                protocol: Some(protocol),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

fn named_container_port(pod: &Pod, name: &str, protocol: &str) -> Option<i32> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
        .map(|p| p.container_port)
}

fn endpoint(pod: &Pod, publish_not_ready: bool) -> Endpoint {
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let serving = is_ready(pod);
    Endpoint {
        addresses: vec![pod_ip(pod).unwrap_or_default().to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(publish_not_ready || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        target_ref: Some(pod_reference(pod)),
        ..Default::default()
    }
}

fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: Some(pod.name_any()),
        uid: pod.uid(),
        ..Default::default()
    }
}

/// The slice name of chunk `index` of the port group `key`.
fn slice_name(service: &str, key: &str, index: usize) -> String {
    let hash = crate::pods::safe_encode(crate::pods::fnv32a(format!("{key}/{index}").as_bytes()));
    format!("{service}-{hash}")
}

/// What the slices of `service` should be, by name, given the slices it has (`existing`).
///
/// As Kubernetes' reconciler does, an endpoint stays in the slice it is in while that slice
/// exists and has room; new endpoints fill the existing slices of their port group first,
/// then new ones. So a pod that appears or changes rewrites one slice, not every slice
/// after it, and kube-proxy on every node has less to read.
pub fn desired_slices(
    service: &Service,
    groups: &PortGroups,
    publish_not_ready: bool,
    existing: &[Arc<EndpointSlice>],
) -> BTreeMap<String, EndpointSlice> {
    let name = service.name_any();
    let labels = BTreeMap::from([
        (SERVICE_NAME_LABEL.to_string(), name.clone()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
    ]);
    let slice = |slice_name: String, ports: &[EndpointPort], pods: &[&Arc<Pod>]| EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name),
            namespace: service.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner_reference(service)]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: pods
            .iter()
            .map(|p| endpoint(p, publish_not_ready))
            .collect(),
        ports: Some(ports.to_vec()),
    };
    let mut slices = BTreeMap::new();
    // A Service with no pods still has one (empty) slice, as in Kubernetes.
    if groups.is_empty() {
        let slice_name = slice_name(&name, &name, 0);
        slices.insert(slice_name.clone(), slice(slice_name, &[], &[]));
        return slices;
    }
    for (key, (ports, pods)) in groups {
        // Where each pod is now, among this group's slices.
        let mut placed: BTreeMap<String, Vec<&Arc<Pod>>> = BTreeMap::new();
        let mut slice_of: BTreeMap<&str, String> = BTreeMap::new();
        for current in existing
            .iter()
            .filter(|s| s.ports.as_deref().unwrap_or_default() == ports.as_slice())
        {
            let current_name = current.name_any();
            for endpoint in &current.endpoints {
                if let Some(pod) = endpoint.target_ref.as_ref().and_then(|r| r.name.as_deref()) {
                    slice_of.insert(pod, current_name.clone());
                }
            }
            placed.insert(current_name, Vec::new());
        }
        let mut unplaced = Vec::new();
        for pod in pods {
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            match slice_of.get(pod_name).and_then(|n| placed.get_mut(n)) {
                Some(members) if members.len() < MAX_ENDPOINTS_PER_SLICE => members.push(pod),
                _ => unplaced.push(pod),
            }
        }
        let mut unplaced = unplaced.into_iter().peekable();
        for members in placed.values_mut() {
            while members.len() < MAX_ENDPOINTS_PER_SLICE {
                let Some(pod) = unplaced.next() else { break };
                members.push(pod);
            }
        }
        let mut index = 0;
        while unplaced.peek().is_some() {
            let new_name = slice_name(&name, key, index);
            index += 1;
            if placed.contains_key(&new_name) {
                continue;
            }
            let members: Vec<&Arc<Pod>> = unplaced.by_ref().take(MAX_ENDPOINTS_PER_SLICE).collect();
            placed.insert(new_name, members);
        }
        for (slice_name, mut members) in placed {
            if members.is_empty() {
                continue;
            }
            members.sort_by_key(|p| p.metadata.name.clone());
            slices.insert(slice_name.clone(), slice(slice_name, ports, &members));
        }
    }
    slices
}

async fn sync_slices(
    service: &Service,
    namespace: &str,
    groups: &PortGroups,
    publish_not_ready: bool,
    ctx: &Context,
) -> Result<(), Error> {
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), namespace);
    let name = service.name_any();
    let existing: Vec<Arc<EndpointSlice>> = ctx
        .slices
        .state()
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace))
        .filter(|s| s.labels().get(SERVICE_NAME_LABEL) == Some(&name))
        .filter(|s| s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY))
        .collect();
    let desired = desired_slices(service, groups, publish_not_ready, &existing);
    let fail = |slice: &str, e| Error::SliceWriteFailed(format!("{namespace}/{slice}"), e);
    for (slice_name, slice) in &desired {
        match existing.iter().find(|s| &s.name_any() == slice_name) {
            Some(current) if same_slice(current, slice) => {}
            Some(_) => {
                api.replace(slice_name, &PostParams::default(), slice)
                    .await
                    .map_err(|e| fail(slice_name, e))?;
            }
            None => match api.create(&PostParams::default(), slice).await {
                Ok(_) => {}
                // The cache is behind: the next reconcile compares with it.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    api.replace(slice_name, &PostParams::default(), slice)
                        .await
                        .map_err(|e| fail(slice_name, e))?;
                }
                Err(e) => return Err(fail(slice_name, e)),
            },
        }
    }
    for stale in existing
        .iter()
        .filter(|s| !desired.contains_key(&s.name_any()))
    {
        match api
            .delete(&stale.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(fail(&stale.name_any(), e)),
        }
    }
    let ready: usize = desired
        .values()
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .count();
    tracing::debug!(slices = desired.len(), ready, "endpoint slices in sync");
    Ok(())
}

fn same_slice(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    a.endpoints == b.endpoints
        && a.ports == b.ports
        && a.address_type == b.address_type
        && a.metadata.labels == b.metadata.labels
}

/// The legacy `Endpoints`: ready addresses, not-ready ones (terminating pods are left out
/// unless `publishNotReadyAddresses`), one subset per port set.
pub fn desired_endpoints(
    service: &Service,
    groups: &PortGroups,
    publish_not_ready: bool,
) -> Endpoints {
    let subsets: Vec<EndpointSubset> = groups
        .values()
        .filter_map(|(ports, pods)| {
            let address = |p: &Arc<Pod>| EndpointAddress {
                ip: pod_ip(p).unwrap_or_default().to_string(),
                node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                target_ref: Some(pod_reference(p)),
                hostname: None,
            };
            let terminating = |p: &&Arc<Pod>| p.metadata.deletion_timestamp.is_some();
            let ready: Vec<EndpointAddress> = pods
                .iter()
                .filter(|p| publish_not_ready || (is_ready(p) && !terminating(p)))
                .map(address)
                .collect();
            let not_ready: Vec<EndpointAddress> = pods
                .iter()
                .filter(|p| !publish_not_ready && !is_ready(p) && !terminating(p))
                .map(address)
                .collect();
            if ready.is_empty() && not_ready.is_empty() {
                return None;
            }
            Some(EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(
                    ports
                        .iter()
                        .map(|p| CorePort {
                            name: p.name.clone(),
                            port: p.port.unwrap_or_default(),
                            protocol: p.protocol.clone(),
                            app_protocol: p.app_protocol.clone(),
                        })
                        .collect(),
                ),
            })
        })
        .collect();
    Endpoints {
        metadata: ObjectMeta {
            name: Some(service.name_any()),
            namespace: service.namespace(),
            labels: Some(endpoints_labels(service)),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// The Service's labels plus the managed-by label.
fn endpoints_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        ENDPOINTS_MANAGED_BY_LABEL.into(),
        ENDPOINTS_MANAGED_BY.into(),
    );
    labels
}

async fn sync_endpoints(
    service: &Service,
    namespace: &str,
    groups: &PortGroups,
    publish_not_ready: bool,
    ctx: &Context,
) -> Result<(), Error> {
    let desired = desired_endpoints(service, groups, publish_not_ready);
    let name = service.name_any();
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), namespace);
    let current = ctx.endpoints.get(&ObjectRef::new(&name).within(namespace));
    let fail = |e| Error::EndpointsWriteFailed(format!("{namespace}/{name}"), e);
    match current {
        Some(c) if c.subsets == desired.subsets && c.metadata.labels == desired.metadata.labels => {
            Ok(())
        }
        Some(_) => api
            .replace(&name, &PostParams::default(), &desired)
            .await
            .map(drop)
            .map_err(fail),
        None => match api.create(&PostParams::default(), &desired).await {
            Err(kube::Error::Api(s)) if s.code == 409 => api
                .replace(&name, &PostParams::default(), &desired)
                .await
                .map(drop)
                .map_err(fail),
            other => other.map(drop).map_err(fail),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec,
    };

    fn pod(name: &str, ip: &str, ready: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn service(target: IntOrString) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(target),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn named_and_numeric_target_ports() {
        let p = pod("a", "10.244.1.2", true);
        let svc = service(IntOrString::String("http".into()));
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default();
        assert_eq!(resolve_ports(&ports, &p)[0].port, Some(8080));
        let svc = service(IntOrString::Int(9376));
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default();
        assert_eq!(resolve_ports(&ports, &p)[0].port, Some(9376));
        let svc = service(IntOrString::String("nope".into()));
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default();
        assert!(resolve_ports(&ports, &p).is_empty());
    }

    #[test]
    fn ready_and_not_ready_pods() {
        let svc = service(IntOrString::Int(8080));
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default();
        let pods = vec![pod("a", "10.244.1.2", true), pod("b", "10.244.2.2", false)];
        let mut groups = BTreeMap::new();
        groups.insert("k".to_string(), (resolve_ports(&ports, &pods[0]), pods));
        let slices = desired_slices(&svc, &groups, false, &[]);
        assert_eq!(slices.len(), 1);
        let slice = slices.values().next().expect("one slice");
        let ready: Vec<Option<bool>> = slice
            .endpoints
            .iter()
            .map(|e| e.conditions.as_ref().and_then(|c| c.ready))
            .collect();
        assert_eq!(ready, vec![Some(true), Some(false)]);
        assert_eq!(
            slice.labels().get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("web")
        );
        let endpoints = desired_endpoints(&svc, &groups, false);
        let subset = &endpoints.subsets.expect("a subset")[0];
        assert_eq!(subset.addresses.as_ref().map(Vec::len), Some(1));
        assert_eq!(subset.not_ready_addresses.as_ref().map(Vec::len), Some(1));
        let published = desired_slices(&svc, &groups, true, &[]);
        let all_ready = published
            .values()
            .flat_map(|s| &s.endpoints)
            .all(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true));
        assert!(all_ready);
    }

    #[test]
    fn endpoints_stay_in_their_slice_as_pods_come() {
        let svc = service(IntOrString::Int(8080));
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default();
        let group = |names: &[String]| {
            let pods: Vec<Arc<Pod>> = names
                .iter()
                .enumerate()
                .map(|(i, n)| pod(n, &format!("10.244.{}.{}", i / 200, i % 200 + 2), true))
                .collect();
            let mut groups = BTreeMap::new();
            groups.insert("k".to_string(), (resolve_ports(&ports, &pods[0]), pods));
            groups
        };
        let names: Vec<String> = (0..150).map(|i| format!("p{i:03}")).collect();
        let first: Vec<Arc<EndpointSlice>> = desired_slices(&svc, &group(&names), false, &[])
            .into_values()
            .map(Arc::new)
            .collect();
        let sizes: Vec<usize> = first.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 150);
        assert!(sizes.iter().all(|n| *n <= MAX_ENDPOINTS_PER_SLICE));
        // A pod whose name sorts first appears: only the slice with room changes.
        let mut more = names.clone();
        more.push("a-new-one".into());
        let second = desired_slices(&svc, &group(&more), false, &first);
        let changed = first
            .iter()
            .filter(|s| !same_slice(s, &second[&s.name_any()]))
            .count();
        assert_eq!((second.len(), changed), (2, 1));
        assert_eq!(
            second.values().map(|s| s.endpoints.len()).sum::<usize>(),
            151
        );
    }
}
