//! Services and EndpointSlices to the rules one Service puts in the `kube-proxy` table: pure
//! functions, no kernel, so every case is a unit test.
//!
//! The shape is kube-proxy's (pkg/proxy/nftables/proxier.go):
//!
//! ```text
//! services:       ip daddr . meta l4proto . th dport vmap @service-ips
//!                 ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
//! service-ips:    10.96.0.10 . tcp . 80 : goto service-HASH-ns/svc/tcp/http
//! service-…:      ip daddr 10.96.0.10 tcp dport 80 ip saddr != <cluster CIDR> jump mark-for-masquerade
//!                 numgen random mod 3 vmap { 0 : goto endpoint-…, 1 : …, 2 : … }
//! endpoint-…:     ip saddr 10.244.1.2 jump mark-for-masquerade      (hairpin)
//!                 meta l4proto tcp counter dnat to 10.244.1.2:8080
//! ```
//!
//! A Service with no usable endpoints gets no DNAT at all: its address goes into
//! `no-endpoint-services` (`goto reject-chain`), checked on new connections in the filter
//! hooks, so a client gets a TCP reset or ICMP unreachable at once instead of a timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nftables::expr::{FibFlag, MetaKey};

use crate::conntrack::UdpFrontend;
use crate::expr::{self, Rule};
use crate::names::{self, Protocol, ServicePortName};

/// What the rules depend on besides the API objects: this node.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// The Node's name: endpoints with this `nodeName` are local.
    pub hostname: String,
    /// Pod addresses; traffic from elsewhere to a ClusterIP is masqueraded (kube-proxy's
    /// `--cluster-cidr` local-traffic detector).
    pub cluster_cidr: ipnet::Ipv4Net,
    /// The addresses NodePorts answer on (`nodeport-ips`).
    pub node_ips: Vec<Ipv4Addr>,
    /// The ranges ClusterIPs are allocated from: traffic to an address there that no
    /// Service has (yet) is dropped (kube-proxy learns them from ServiceCIDR objects).
    pub service_cidrs: Vec<ipnet::Ipv4Net>,
}

/// A key in one of the table's sets or maps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Addr(Ipv4Addr),
    AddrProtoPort(Ipv4Addr, Protocol, u16),
    ProtoPort(Protocol, u16),
}

/// The value of a verdict-map element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Goto(String),
    Drop,
}

/// Everything one Service contributes to the table. Two renderings compare equal exactly
/// when nothing of the Service needs to change in the kernel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceRules {
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<String, Vec<Rule>>,
    /// Affinity set name → its element timeout in seconds.
    pub affinity_sets: BTreeMap<String, u32>,
    /// `(set or map, key)` → value (None for plain sets).
    pub elements: BTreeMap<(&'static str, Key), Option<Verdict>>,
    /// Each UDP address and NodePort of the Service → its serving endpoints' addresses: a
    /// UDP flow there answered by any other address is stale (see [`crate::conntrack`]).
    pub udp_serving: crate::conntrack::UdpServing,
}

/// One endpoint a service port can send to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Endpoint {
    ip: Ipv4Addr,
    port: u16,
    local: bool,
}

/// The ports of a Service kube-proxy handles: none for headless, ExternalName or non-IPv4
/// Services.
fn cluster_ip(service: &Service) -> Option<Ipv4Addr> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.cluster_ip.as_deref()?.parse().ok()
}

/// The ready endpoints of one service port, and those serving while terminating.
fn ready_and_terminating(
    port_name: &str,
    protocol: Protocol,
    slices: &[&EndpointSlice],
    hostname: &str,
) -> (BTreeSet<Endpoint>, BTreeSet<Endpoint>) {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        }) else {
            continue;
        };
        let Some(port) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            // Unset conditions mean "unknown", which kube-proxy treats as ready.
            let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let local = endpoint.node_name.as_deref() == Some(hostname);
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<Ipv4Addr>() else {
                    continue;
                };
                let endpoint = Endpoint { ip, port, local };
                if is_ready {
                    ready.insert(endpoint);
                } else if serving && is_terminating {
                    terminating.insert(endpoint);
                }
            }
        }
    }
    (ready, terminating)
}

/// The rules of one Service (all its ports) for this node.
pub fn render_service(
    service: &Service,
    slices: &[&EndpointSlice],
    node: &NodeContext,
) -> ServiceRules {
    let mut rules = ServiceRules::default();
    let Some(cluster_ip) = cluster_ip(service) else {
        return rules;
    };
    let Some(spec) = service.spec.as_ref() else {
        return rules;
    };
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let name = service.metadata.name.clone().unwrap_or_default();
    let external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(10_800)
    });
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    for port in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
            continue;
        };
        let Ok(service_port) = u16::try_from(port.port) else {
            continue;
        };
        let port_name = ServicePortName {
            namespace: namespace.clone(),
            name: name.clone(),
            port: port.name.clone().unwrap_or_default(),
            protocol,
        };
        let port_info = PortInfo {
            name: port_name,
            cluster_ip,
            port: service_port,
            node_port: port.node_port.and_then(|p| u16::try_from(p).ok()),
            external_ips: &external_ips,
            affinity_timeout,
            internal_local,
            external_local,
        };
        let (ready, terminating) =
            ready_and_terminating(&port_info.name.port, protocol, slices, &node.hostname);
        if protocol == Protocol::Udp {
            // Every serving endpoint, terminating ones too: a flow to one is not stale yet.
            let serving: BTreeSet<Ipv4Addr> =
                ready.iter().chain(&terminating).map(|e| e.ip).collect();
            let frontends = std::iter::once(cluster_ip)
                .chain(external_ips.iter().copied())
                .map(|ip| UdpFrontend::Address(ip, service_port))
                .chain(port_info.node_port.map(UdpFrontend::NodePort));
            for frontend in frontends {
                rules.udp_serving.insert(frontend, serving.clone());
            }
        }
        // The ready endpoints, or, when none is ready, those still serving while terminating
        // (as kube-proxy falls back).
        let all: Vec<Endpoint> = if ready.is_empty() { terminating } else { ready }
            .into_iter()
            .collect();
        render_port(&mut rules, &port_info, &all, node);
    }
    rules
}

struct PortInfo<'a> {
    name: ServicePortName,
    cluster_ip: Ipv4Addr,
    port: u16,
    node_port: Option<u16>,
    external_ips: &'a [Ipv4Addr],
    affinity_timeout: Option<u32>,
    internal_local: bool,
    external_local: bool,
}

impl PortInfo<'_> {
    fn externally_accessible(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }
}

fn render_port(rules: &mut ServiceRules, svc: &PortInfo, all: &[Endpoint], node: &NodeContext) {
    let protocol = svc.name.protocol;
    let local: Vec<Endpoint> = all.iter().filter(|e| e.local).cloned().collect();
    let has_endpoints = !all.is_empty();
    let has_internal = has_endpoints && (!svc.internal_local || !local.is_empty());
    let has_external = has_endpoints && (!svc.external_local || !local.is_empty());
    let cluster_chain = svc.name.cluster_chain();
    let local_chain = svc.name.local_chain();
    let external_chain = svc.name.external_chain();
    let internal_chain = if svc.internal_local {
        &local_chain
    } else {
        &cluster_chain
    };
    let external_policy_chain = if svc.external_local {
        &local_chain
    } else {
        &cluster_chain
    };
    let uses_cluster_chain =
        has_endpoints && (!svc.internal_local || (svc.externally_accessible()));
    let uses_local_chain = !local.is_empty()
        && (svc.internal_local || (svc.external_local && svc.externally_accessible()));
    let uses_external_chain = has_endpoints && svc.externally_accessible();
    let mut element = |map: &'static str, key: Key, verdict: Option<Verdict>| {
        rules.elements.insert((map, key), verdict);
    };
    element(names::CLUSTER_IPS_SET, Key::Addr(svc.cluster_ip), None);

    // What a packet to each of the Service's addresses does.
    let reject = Verdict::Goto(names::REJECT_CHAIN.into());
    let cluster_ip_key = Key::AddrProtoPort(svc.cluster_ip, protocol, svc.port);
    if has_internal {
        element(
            names::SERVICE_IPS_MAP,
            cluster_ip_key,
            Some(Verdict::Goto(internal_chain.clone())),
        );
    } else {
        let verdict = if has_endpoints {
            Verdict::Drop
        } else {
            reject.clone()
        };
        element(
            names::NO_ENDPOINT_SERVICES_MAP,
            cluster_ip_key,
            Some(verdict),
        );
    }
    let external_filter = if has_endpoints {
        Verdict::Drop
    } else {
        reject.clone()
    };
    for ip in svc.external_ips {
        let key = Key::AddrProtoPort(*ip, protocol, svc.port);
        if has_endpoints {
            element(
                names::SERVICE_IPS_MAP,
                key.clone(),
                Some(Verdict::Goto(external_chain.clone())),
            );
        }
        if !has_external {
            element(
                names::NO_ENDPOINT_SERVICES_MAP,
                key,
                Some(external_filter.clone()),
            );
        }
    }
    if let Some(node_port) = svc.node_port {
        let key = Key::ProtoPort(protocol, node_port);
        if has_endpoints {
            element(
                names::SERVICE_NODEPORTS_MAP,
                key.clone(),
                Some(Verdict::Goto(external_chain.clone())),
            );
        }
        if !has_external {
            element(names::NO_ENDPOINT_NODEPORTS_MAP, key, Some(external_filter));
        }
    }

    // Traffic to the ClusterIP from outside the pod network (the node itself, another node)
    // is masqueraded, so replies come back through this node to be un-DNATed.
    if has_internal {
        rules
            .chains
            .entry(internal_chain.clone())
            .or_default()
            .push(vec![
                expr::eq(
                    expr::payload("ip", "daddr"),
                    expr::string(svc.cluster_ip.to_string()),
                ),
                expr::eq(
                    expr::payload(protocol.as_str(), "dport"),
                    nftables::expr::Expression::Number(u32::from(svc.port)),
                ),
                expr::ne(
                    expr::payload("ip", "saddr"),
                    expr::prefix(node.cluster_cidr),
                ),
                expr::jump(names::MARK_MASQ_CHAIN),
            ]);
    }
    if uses_external_chain {
        let chain = rules.chains.entry(external_chain.clone()).or_default();
        if !svc.external_local {
            // The endpoint may be on another node: masquerade so the reply comes back here.
            chain.push(vec![expr::jump(names::MARK_MASQ_CHAIN)]);
        } else {
            // Pods and the node itself are not "external": they use Cluster policy, keeping
            // the client's address only for traffic from outside.
            chain.push(vec![
                expr::eq(
                    expr::payload("ip", "saddr"),
                    expr::prefix(node.cluster_cidr),
                ),
                expr::goto(&cluster_chain),
            ]);
            chain.push(vec![
                expr::fib_type_local(FibFlag::Saddr),
                expr::jump(names::MARK_MASQ_CHAIN),
            ]);
            chain.push(vec![
                expr::fib_type_local(FibFlag::Saddr),
                expr::goto(&cluster_chain),
            ]);
        }
        if has_external {
            chain.push(vec![expr::goto(external_policy_chain)]);
        }
    }

    if let Some(timeout) = svc.affinity_timeout {
        for endpoint in all {
            rules
                .affinity_sets
                .insert(svc.name.affinity_set(endpoint.ip, endpoint.port), timeout);
        }
    }
    if uses_cluster_chain {
        write_service_to_endpoints(rules, svc, &cluster_chain, all);
    }
    if uses_local_chain {
        write_service_to_endpoints(rules, svc, &local_chain, &local);
    }
    for endpoint in all {
        let chain = svc.name.endpoint_chain(endpoint.ip, endpoint.port);
        let mut endpoint_rules = vec![vec![
            // Hairpin: a pod reaching itself through its Service.
            expr::eq(
                expr::payload("ip", "saddr"),
                expr::string(endpoint.ip.to_string()),
            ),
            expr::jump(names::MARK_MASQ_CHAIN),
        ]];
        if svc.affinity_timeout.is_some() {
            endpoint_rules.push(vec![expr::update_set_with_saddr(
                &svc.name.affinity_set(endpoint.ip, endpoint.port),
            )]);
        }
        endpoint_rules.push(vec![
            expr::eq(
                expr::meta(MetaKey::L4proto),
                expr::string(protocol.as_str()),
            ),
            expr::counter(),
            expr::dnat(endpoint.ip, endpoint.port),
        ]);
        rules.chains.insert(chain, endpoint_rules);
    }
}

/// Affinity first (a client seen recently goes back to its endpoint), then a random pick.
fn write_service_to_endpoints(
    rules: &mut ServiceRules,
    svc: &PortInfo,
    chain: &str,
    endpoints: &[Endpoint],
) {
    let targets: Vec<String> = endpoints
        .iter()
        .map(|e| svc.name.endpoint_chain(e.ip, e.port))
        .collect();
    let chain_rules = rules.chains.entry(chain.to_string()).or_default();
    if svc.affinity_timeout.is_some() {
        for endpoint in endpoints {
            chain_rules.push(vec![
                expr::eq(
                    expr::payload("ip", "saddr"),
                    expr::set_ref(&svc.name.affinity_set(endpoint.ip, endpoint.port)),
                ),
                expr::goto(&svc.name.endpoint_chain(endpoint.ip, endpoint.port)),
            ]);
        }
    }
    chain_rules.push(vec![expr::numgen_vmap(&targets)]);
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;

/// Fixed objects for the tests of this crate (kube-proxy's tests open the same way).
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn node() -> NodeContext {
        NodeContext {
            hostname: "c0-w1".into(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            node_ips: vec!["172.20.0.11".parse().unwrap()],
            service_cidrs: vec!["10.96.0.0/16".parse().unwrap()],
        }
    }

    /// A ClusterIP Service (NodePort when a port has one) with `(name, port, nodePort)`s.
    pub fn service(name: &str, cluster_ip: &str, ports: &[(&str, i32, Option<i32>)]) -> Service {
        let node_port = ports.iter().any(|p| p.2.is_some());
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "type": if node_port { "NodePort" } else { "ClusterIP" },
                "clusterIP": cluster_ip,
                "ports": ports.iter().map(|(n, p, np)| serde_json::json!({
                    "name": n, "port": p, "protocol": "TCP", "nodePort": np
                })).collect::<Vec<_>>(),
            }
        }))
        .unwrap()
    }

    /// An EndpointSlice of Service `service` with ready endpoints on nodes w1, w2, w3….
    pub fn slice(service: &str, port_name: &str, port: i32, ips: &[&str]) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{service}-abc"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": ips.iter().enumerate().map(|(i, ip)| serde_json::json!({
                "addresses": [ip], "conditions": {"ready": true}, "nodeName": format!("c0-w{}", i + 1)
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    /// A Service and slice whose one port is SCTP (`sctp` in the maps' keys and the DNAT match).
    pub fn sctp_service_and_slice() -> (Service, EndpointSlice) {
        let service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "assoc", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.30", "ports": [
                {"name": "s", "port": 80, "protocol": "SCTP", "nodePort": 30132}]},
        }))
        .unwrap();
        let slice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "assoc-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "assoc"}},
            "addressType": "IPv4",
            "ports": [{"name": "s", "port": 8080, "protocol": "SCTP"},
                      {"name": "s", "port": 9090, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.1.2"], "conditions": {"ready": true}}],
        }))
        .unwrap();
        (service, slice)
    }
}
