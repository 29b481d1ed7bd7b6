//! ClusterIP and NodePort allocation for Services.
//!
//! Each allocated address or port is its own etcd key
//! (`<prefix>/ranges/serviceips/<ip>`, `<prefix>/ranges/servicenodeports/<port>`) created
//! with a create-if-absent transaction, so two API servers — or two requests racing — can
//! never hand out the same one, and a restart loses nothing. Release deletes the key.
//!
//! Like kube-apiserver since 1.27, dynamic ClusterIPs come from the upper part of the
//! range first, leaving the lowest addresses (`.1` for `kubernetes`, `.10` for `kube-dns`)
//! to services that ask for them by address.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use crate::backend::{Backend, Cas};
use crate::error::{target, AppError, FieldError};
use crate::storage::meta_str;

#[derive(Clone)]
pub struct Allocator {
    backend: Backend,
    /// Shared: the Allocator is cloned with `AppState`, several times per request.
    prefix: std::sync::Arc<str>,
    pub cidr: Ipv4Net,
    pub node_ports: RangeInclusive<u16>,
}

/// What one request allocated, so a failed write can give it back.
#[derive(Debug, Default)]
pub struct Allocated {
    pub ips: Vec<Ipv4Addr>,
    pub ports: Vec<u16>,
}

fn invalid(svc: &Value, field: String, value: String, msg: String) -> AppError {
    AppError::Invalid(
        target("", "Service", meta_str(svc, "name")),
        vec![FieldError {
            field,
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {value}: {msg}"),
        }],
    )
}

fn wants_node_ports(svc: &Value) -> bool {
    matches!(
        svc.pointer("/spec/type").and_then(Value::as_str),
        Some("NodePort" | "LoadBalancer")
    )
}

impl Allocator {
    pub fn new(
        backend: Backend,
        prefix: &str,
        cidr: Ipv4Net,
        node_ports: RangeInclusive<u16>,
    ) -> Self {
        Allocator {
            backend,
            prefix: prefix.trim_end_matches('/').into(),
            cidr,
            node_ports,
        }
    }

    fn ip_key(&self, ip: Ipv4Addr) -> String {
        format!("{}/ranges/serviceips/{ip}", self.prefix)
    }

    fn port_key(&self, port: u16) -> String {
        format!("{}/ranges/servicenodeports/{port}", self.prefix)
    }

    async fn claim(&self, key: &str, owner: &str) -> Result<bool, AppError> {
        Ok(matches!(
            self.backend.create(key, owner.as_bytes().to_vec()).await?,
            Cas::Done(_)
        ))
    }

    async fn release(&self, key: &str) {
        if let Ok(Some(kv)) = self.backend.get(key).await {
            // Losing this race only means someone else already released it.
            let _ = self.backend.delete(key, kv.mod_revision).await;
        }
    }

    /// Claim a ClusterIP: the requested one, or a free one.
    async fn allocate_ip(
        &self,
        svc: &Value,
        owner: &str,
        requested: Option<&str>,
    ) -> Result<Ipv4Addr, AppError> {
        let field = "spec.clusterIPs".to_string();
        if let Some(req) = requested {
            let shown = format!("[]string{{\"{req}\"}}");
            let ip: Ipv4Addr = req.parse().map_err(|_| {
                invalid(
                    svc,
                    field.clone(),
                    shown.clone(),
                    "must be a valid IP address".into(),
                )
            })?;
            if !self.cidr.contains(&ip) || ip == self.cidr.network() || ip == self.cidr.broadcast()
            {
                let msg = format!("failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}", self.cidr);
                return Err(invalid(svc, field, shown, msg));
            }
            if !self.claim(&self.ip_key(ip), owner).await? {
                let msg = format!("failed to allocate IP {ip}: provided IP is already allocated");
                return Err(invalid(svc, field, shown, msg));
            }
            return Ok(ip);
        }
        let base = u64::from(u32::from(self.cidr.network()));
        let size = 1u64 << (32 - u32::from(self.cidr.prefix_len()));
        let usable = size.saturating_sub(2);
        // Static band: the lowest min(max(16, size/16), 256) addresses.
        let static_band = (size / 16).clamp(16, 256).min(usable / 2);
        let dynamic = usable - static_band;
        let start = (uuid::Uuid::new_v4().as_u128() as u64) % dynamic.max(1);
        let order = (0..dynamic)
            .map(|i| static_band + 1 + (start + i) % dynamic)
            .chain(1..=static_band);
        for offset in order {
            let ip = Ipv4Addr::from(u32::try_from(base + offset).unwrap_or(u32::MAX));
            if self.claim(&self.ip_key(ip), owner).await? {
                return Ok(ip);
            }
        }
        Err(AppError::Internal(format!(
            "failed to allocate a serviceIP: range {} is full",
            self.cidr
        )))
    }

    async fn allocate_port(
        &self,
        svc: &Value,
        idx: usize,
        owner: &str,
        requested: Option<u16>,
    ) -> Result<u16, AppError> {
        let field = format!("spec.ports[{idx}].nodePort");
        if let Some(p) = requested {
            if !self.node_ports.contains(&p) {
                let msg = format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    self.node_ports.start(),
                    self.node_ports.end()
                );
                return Err(invalid(svc, field, p.to_string(), msg));
            }
            if !self.claim(&self.port_key(p), owner).await? {
                return Err(invalid(
                    svc,
                    field,
                    p.to_string(),
                    "provided port is already allocated".into(),
                ));
            }
            return Ok(p);
        }
        let (lo, hi) = (*self.node_ports.start(), *self.node_ports.end());
        let n = u32::from(hi - lo) + 1;
        let start = (uuid::Uuid::new_v4().as_u128() as u32) % n;
        for i in 0..n {
            let p = lo + ((start + i) % n) as u16;
            if self.claim(&self.port_key(p), owner).await? {
                return Ok(p);
            }
        }
        Err(AppError::Internal("range of NodePorts is full".into()))
    }

    /// Allocate for a Service being created, or — with `old` — updated. On error, whatever
    /// this call claimed is released again.
    pub async fn allocate(
        &self,
        old: Option<&Value>,
        svc: &mut Value,
    ) -> Result<Allocated, AppError> {
        let mut got = Allocated::default();
        match self.allocate_inner(old, svc, &mut got).await {
            Ok(()) => Ok(got),
            Err(e) => {
                self.rollback(&got).await;
                Err(e)
            }
        }
    }

    async fn allocate_inner(
        &self,
        old: Option<&Value>,
        svc: &mut Value,
        got: &mut Allocated,
    ) -> Result<(), AppError> {
        let owner = format!("{}/{}", meta_str(svc, "namespace"), meta_str(svc, "name"));
        let old_ip = old
            .and_then(|o| o.pointer("/spec/clusterIP"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let requested = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let ty = svc
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        let ip = match (old_ip, requested) {
            // ClusterIP is immutable: an update keeps it.
            (Some(o), _) if !o.is_empty() => o,
            (_, _) if ty == "ExternalName" => String::new(),
            (_, Some(r)) if r == "None" => r,
            (_, r) => {
                let ip = self.allocate_ip(svc, &owner, r.as_deref()).await?;
                got.ips.push(ip);
                ip.to_string()
            }
        };
        if !ip.is_empty() {
            svc["spec"]["clusterIP"] = json!(ip);
            svc["spec"]["clusterIPs"] = json!([ip]);
            if ip != "None" {
                svc["spec"]["ipFamilies"] = json!(["IPv4"]);
                svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
            }
        }
        if !wants_node_ports(svc) {
            // A ClusterIP Service has no node ports; old ones are released by the caller.
            if let Some(Value::Array(ports)) = svc.pointer_mut("/spec/ports") {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    p.remove("nodePort");
                }
            }
            return Ok(());
        }
        let old_ports: Vec<u16> = old
            .filter(|o| wants_node_ports(o))
            .map(node_ports_of)
            .unwrap_or_default();
        let n = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for idx in 0..n {
            let current = svc["spec"]["ports"][idx]
                .get("nodePort")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok());
            let port = match current {
                Some(p) if old_ports.contains(&p) => p,
                requested => {
                    let p = self.allocate_port(svc, idx, &owner, requested).await?;
                    got.ports.push(p);
                    p
                }
            };
            svc["spec"]["ports"][idx]["nodePort"] = json!(port);
        }
        if svc.pointer("/spec/externalTrafficPolicy").is_none() {
            svc["spec"]["externalTrafficPolicy"] = json!("Cluster");
        }
        Ok(())
    }

    pub async fn rollback(&self, got: &Allocated) {
        for ip in &got.ips {
            self.release(&self.ip_key(*ip)).await;
        }
        for p in &got.ports {
            self.release(&self.port_key(*p)).await;
        }
    }

    /// Give back what `old` held and `new` (None: deleted) no longer does.
    pub async fn release_unused(&self, old: &Value, new: Option<&Value>) {
        let ip_of = |v: &Value| {
            v.pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if let Some(ip) = ip_of(old).and_then(|s| s.parse::<Ipv4Addr>().ok()) {
            if new.and_then(ip_of) != Some(ip.to_string()) {
                self.release(&self.ip_key(ip)).await;
            }
        }
        let keep: Vec<u16> = new
            .filter(|n| wants_node_ports(n))
            .map(node_ports_of)
            .unwrap_or_default();
        for p in node_ports_of(old) {
            if !keep.contains(&p) {
                self.release(&self.port_key(p)).await;
            }
        }
    }
}

fn node_ports_of(svc: &Value) -> Vec<u16> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
                .filter_map(|p| u16::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    fn alloc() -> Allocator {
        let cidr: Ipv4Net = "10.96.0.0/16".parse().expect("cidr");
        Allocator::new(
            Backend::Memory(MemoryBackend::default()),
            "/registry",
            cidr,
            30000..=32767,
        )
    }

    #[tokio::test]
    async fn cluster_ips_are_unique_and_released() {
        let a = alloc();
        let mut s1 = json!({"metadata": {"name": "a", "namespace": "d"}, "spec": {"clusterIP": "10.96.0.1"}});
        a.allocate(None, &mut s1).await.expect("s1");
        let mut s2 = s1.clone();
        s2["metadata"]["name"] = json!("b");
        assert!(matches!(
            a.allocate(None, &mut s2).await,
            Err(AppError::Invalid(..))
        ));
        let mut s3 = json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        a.allocate(None, &mut s3).await.expect("s3");
        let ip = s3["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            ip.starts_with("10.96.") && !ip.starts_with("10.96.0."),
            "{ip}"
        );
        let np = s3["spec"]["ports"][0]["nodePort"].as_u64().unwrap_or(0);
        assert!((30000..=32767).contains(&np));
        let mut headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}});
        a.allocate(None, &mut headless).await.expect("headless");
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        a.release_unused(&s1, None).await;
        let mut again = json!({"metadata": {"name": "b"}, "spec": {"clusterIP": "10.96.0.1"}});
        a.allocate(None, &mut again)
            .await
            .expect("released ip is free again");
    }
}
