//! The names inside the `kube-proxy` table, as kube-proxy's nftables mode spells them, so a
//! learner can put `nft list table ip kube-proxy` from a lab node beside one from a real node.
//!
//! The table is ours alone, so fixed names carry no prefix. Per-service and per-endpoint
//! names are a prefix, an 8-character hash of the path, and the path itself:
//! `service-ULMVA6XW-ns1/svc1/tcp/p80`, `endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80`.
//! The `/` never appears in a fixed name, which is how stale dynamic chains are found by
//! listing the table.

use std::net::Ipv4Addr;

pub const TABLE: &str = "kube-proxy";

pub const SERVICES_CHAIN: &str = "services";
pub const SERVICE_IPS_MAP: &str = "service-ips";
pub const SERVICE_NODEPORTS_MAP: &str = "service-nodeports";
pub const NODEPORT_IPS_SET: &str = "nodeport-ips";
pub const CLUSTER_IPS_SET: &str = "cluster-ips";

pub const ENDPOINTS_CHECK_CHAIN: &str = "endpoints-check";
pub const NO_ENDPOINT_SERVICES_MAP: &str = "no-endpoint-services";
pub const NO_ENDPOINT_NODEPORTS_MAP: &str = "no-endpoint-nodeports";
pub const REJECT_CHAIN: &str = "reject-chain";
pub const CLUSTER_IPS_CHECK_CHAIN: &str = "cluster-ips-check";

pub const MARK_MASQ_CHAIN: &str = "mark-for-masquerade";
pub const MASQUERADING_CHAIN: &str = "masquerading";
/// kube-proxy's default masquerade bit (`--masquerade-bit=14`).
pub const MASQUERADE_MARK: u32 = 1 << 14;

/// nftables' longest object name (NFT_NAME_MAXLEN less the terminating NUL).
const NAME_LENGTH_MAX: usize = 255;
/// Room kept for the longest prefix (`endpoint-`, `affinity-`…).
const PREFIX_LENGTH_MAX: usize = 16;

/// A Service's port as kube-proxy names it: `namespace/name` plus the port's name (which may
/// be empty when the Service has one unnamed port) and its protocol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    pub port: String,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The Kubernetes spelling (`TCP`, the default) to ours; None for an unknown protocol.
    pub fn parse(kubernetes: Option<&str>) -> Option<Protocol> {
        match kubernetes.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// nftables' (and kube-proxy's chain names') spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl std::fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

impl ServicePortName {
    /// `ns/name/proto/port`: the path every per-service name is made of.
    fn path(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.protocol.as_str(),
            self.port
        )
    }

    /// The chain holding the endpoints for `Cluster` traffic policy.
    pub fn cluster_chain(&self) -> String {
        format!("service-{}", hash_and_truncate(&self.path()))
    }

    /// The chain holding this node's endpoints, for `Local` traffic policy.
    pub fn local_chain(&self) -> String {
        format!("local-{}", hash_and_truncate(&self.path()))
    }

    /// The chain NodePort and external-IP traffic enters first.
    pub fn external_chain(&self) -> String {
        format!("external-{}", hash_and_truncate(&self.path()))
    }

    fn endpoint_path(&self, ip: Ipv4Addr, port: u16) -> String {
        format!("{}__{ip}/{port}", self.path())
    }

    /// The chain that DNATs to one endpoint.
    pub fn endpoint_chain(&self, ip: Ipv4Addr, port: u16) -> String {
        format!(
            "endpoint-{}",
            hash_and_truncate(&self.endpoint_path(ip, port))
        )
    }

    /// The set of client addresses pinned to one endpoint (`sessionAffinity: ClientIP`).
    pub fn affinity_set(&self, ip: Ipv4Addr, port: u16) -> String {
        format!(
            "affinity-{}",
            hash_and_truncate(&self.endpoint_path(ip, port))
        )
    }
}

/// The first 8 characters of the base32 SHA-256 of `name`, a `-`, then `name`, cut to fit:
/// unique even when truncated, and endpoints of one service that differ in one digit look
/// different at a glance.
fn hash_and_truncate(name: &str) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let encoded = data_encoding::BASE32.encode(hash.as_ref());
    let mut full = format!("{}-{name}", &encoded[..8]);
    let max = NAME_LENGTH_MAX - PREFIX_LENGTH_MAX;
    if full.len() > max {
        full.truncate(max - 3);
        full.push_str("...");
    }
    full
}

/// Chains made per service or endpoint (found by listing, to delete the stale ones).
pub fn is_service_chain(name: &str) -> bool {
    name.contains('/')
}

/// Per-endpoint chains: they hold no anonymous sets (see `transaction::full_sync`).
pub fn is_endpoint_chain(name: &str) -> bool {
    name.starts_with("endpoint-")
}

/// The table's verdict maps (the other named sets are plain sets).
pub fn is_map(name: &str) -> bool {
    [
        SERVICE_IPS_MAP,
        SERVICE_NODEPORTS_MAP,
        NO_ENDPOINT_SERVICES_MAP,
        NO_ENDPOINT_NODEPORTS_MAP,
    ]
    .contains(&name)
}

pub fn is_affinity_set(name: &str) -> bool {
    name.starts_with("affinity-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc_port() -> ServicePortName {
        ServicePortName {
            namespace: "ns1".into(),
            name: "svc1".into(),
            port: "p80".into(),
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn names_match_kube_proxy() {
        // The hashes kube-proxy's own tests expect for these paths (proxier_test.go).
        assert_eq!(
            svc_port().cluster_chain(),
            "service-ULMVA6XW-ns1/svc1/tcp/p80"
        );
        assert_eq!(
            svc_port().endpoint_chain("10.180.0.1".parse().unwrap(), 80),
            "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
        );
        assert!(is_service_chain(&svc_port().external_chain()));
        assert!(!is_service_chain(SERVICES_CHAIN));
    }

    #[test]
    fn long_names_are_cut_to_the_kernel_limit() {
        let long = ServicePortName {
            namespace: "n".repeat(63),
            name: "s".repeat(63),
            port: "p".repeat(63),
            protocol: Protocol::Sctp,
        };
        let chain = long.endpoint_chain("10.0.0.1".parse().unwrap(), 65535);
        assert!(chain.len() <= NAME_LENGTH_MAX, "{}", chain.len());
    }
}
