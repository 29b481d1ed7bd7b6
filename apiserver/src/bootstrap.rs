//! The objects every cluster starts with: the `default`, `kube-system`, `kube-public` and
//! `kube-node-lease` namespaces, and the `kubernetes` Service at the first address of the
//! service network with (when the advertise address is known) its Endpoints and
//! EndpointSlice. Idempotent: existing objects are left alone, endpoints are refreshed.

use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::error::AppError;
use crate::objects::prepare_create;
use crate::registry::find;
use crate::AppState;

async fn ensure(
    state: &AppState,
    group: &str,
    plural: &str,
    ns: Option<&str>,
    mut obj: Value,
    refresh: bool,
) -> Result<(), AppError> {
    let r = find(group, "v1", plural).ok_or(AppError::NoRoute)?;
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if let Some((current, kv)) = state.store.get(r, ns, &name).await? {
        if refresh {
            let new = crate::objects::prepare_update(r, &current, obj, None);
            state.store.update(r, new, &kv).await?;
        }
        return Ok(());
    }
    prepare_create(r, &mut obj)?;
    if plural == "services" {
        state.alloc.allocate(None, &mut obj).await?;
    }
    match state.store.create(r, ns, obj).await {
        Ok(_) | Err(AppError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

pub async fn run(state: &AppState, advertise: Option<SocketAddr>) -> Result<(), AppError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns}});
        ensure(state, "", "namespaces", None, obj, false).await?;
    }
    let ip = state
        .alloc
        .cidr
        .hosts()
        .next()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let svc = json!({"kind": "Service", "apiVersion": "v1",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}});
    ensure(state, "", "services", Some("default"), svc, false).await?;
    let Some(addr) = advertise else {
        return Ok(());
    };
    let (host, port) = (addr.ip().to_string(), addr.port());
    let ep = json!({"kind": "Endpoints", "apiVersion": "v1",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": host}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]});
    ensure(state, "", "endpoints", Some("default"), ep, true).await?;
    let slice = json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [host], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]});
    ensure(
        state,
        "discovery.k8s.io",
        "endpointslices",
        Some("default"),
        slice,
        true,
    )
    .await
}
