//! The add-ons `up` installs into every cluster once its API server answers, as kubeadm
//! installs CoreDNS after `init`: the cluster DNS (`conf/addons/cluster-dns.yaml`), a
//! Deployment behind the `kube-dns` Service. They are ordinary objects: the scheduler, the
//! kubelets, kube-proxy and the endpoint controller make them run, as on a real cluster.

use std::net::Ipv4Addr;

use anyhow::Context as _;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;

use serde::Deserialize as _;

use crate::paths::LabPaths;
use crate::plan::LabPlan;

/// The cluster DNS manifest; `CLUSTER_DNS_IP` is filled in per cluster.
pub const CLUSTER_DNS: &str = include_str!("../../conf/addons/cluster-dns.yaml");

/// Field manager of everything `up` applies.
const MANAGER: &str = "knetsim-up";

/// The manifest's objects for one cluster.
pub fn render(template: &str, dns_ip: Ipv4Addr) -> anyhow::Result<Vec<DynamicObject>> {
    let text = template.replace("CLUSTER_DNS_IP", &dns_ip.to_string());
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document).context("reading an add-on")?;
        if value.is_null() {
            continue;
        }
        objects
            .push(serde_yaml::from_value(value).context("an add-on is not a Kubernetes object")?);
    }
    Ok(objects)
}

/// Server-side apply every add-on object into every cluster. Returns how many were applied.
pub async fn install(plan: &LabPlan, paths: &LabPaths) -> anyhow::Result<usize> {
    let mut applied = 0;
    for cluster in &plan.clusters {
        let client = crate::access::cluster_client(paths, &cluster.name).await?;
        for object in render(CLUSTER_DNS, crate::plan::cluster_dns_ip(cluster))? {
            let types = object
                .types
                .as_ref()
                .context("an add-on object has no apiVersion/kind")?;
            let gvk = GroupVersionKind::try_from(types)
                .map_err(|e| anyhow::anyhow!("add-on type {types:?}: {e}"))?;
            let (resource, _) = kube::discovery::pinned_kind(&client, &gvk)
                .await
                .with_context(|| format!("{}: no {} in the API", cluster.name, gvk.kind))?;
            let name = object.metadata.name.clone().unwrap_or_default();
            let api: Api<DynamicObject> = match object.metadata.namespace.as_deref() {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
            .with_context(|| format!("{}: applying {} {name}", cluster.name, gvk.kind))?;
            applied += 1;
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_names_the_cluster_dns_ip() {
        let ip = Ipv4Addr::new(10, 96, 0, 10);
        let objects = render(CLUSTER_DNS, ip).expect("render");
        let kinds: Vec<_> = objects
            .iter()
            .map(|o| o.types.as_ref().map(|t| t.kind.as_str()).unwrap_or(""))
            .collect();
        assert_eq!(kinds, ["ServiceAccount", "Deployment", "Service"]);
        assert_eq!(objects[2].data["spec"]["clusterIP"], "10.96.0.10");
    }
}
