//! The topology file: which clusters a lab has, their address plan and their workers.
//!
//! Parsing is strict (unknown fields are errors: a typo must not silently give a default) and
//! every error names the file, the line and the field. serde_yaml reports the position of
//! type errors itself; the checks that span several fields (overlaps, capacity) find the line
//! of the field they blame with [`locate`], a small scan of the block-style YAML this file uses.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The default topology, built into the binary so `knetsim up` works from any directory.
pub const DEFAULT: &str = include_str!("../../conf/topology.yaml");
pub const DEFAULT_NAME: &str = "built-in conf/topology.yaml";

/// Workers a cluster may have: host numbers .11 to .250 of a /24.
pub const MAX_WORKERS: u32 = 240;
/// Longest cluster name: it is part of interface names, which the kernel caps at 15 bytes.
pub const MAX_CLUSTER_NAME: usize = 8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub clusters: Vec<Cluster>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cluster {
    pub name: String,
    pub node_network: Option<Cidr>,
    #[serde(default = "default_pod_network")]
    pub pod_network: Cidr,
    #[serde(default = "default_service_network")]
    pub service_network: Cidr,
    #[serde(default = "default_workers")]
    pub workers: u32,
    /// How every node's kubeproxy-lite follows Services: `dynamic` (kube-proxy's behaviour)
    /// or `static` (rules rendered once at start-up, the predecessor's behaviour).
    #[serde(default)]
    pub service_proxy: ServiceProxyMode,
}

/// kubeproxy-lite's mode for a whole cluster (`serviceProxy:` in the topology,
/// `knetsim service-proxy` on a running lab).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceProxyMode {
    /// Rules follow Services and EndpointSlices as they change.
    #[default]
    Dynamic,
    /// Rules are rendered once from the state at start-up and never updated, so a deleted
    /// pod keeps its DNAT and breaks its virtual IP.
    Static,
}

impl ServiceProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceProxyMode::Dynamic => "dynamic",
            ServiceProxyMode::Static => "static",
        }
    }
}

impl FromStr for ServiceProxyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dynamic" => Ok(ServiceProxyMode::Dynamic),
            "static" => Ok(ServiceProxyMode::Static),
            _ => Err(format!(
                "`{s}` is not a service proxy mode: use `dynamic` (rules follow the API) or `static` (rendered once at start-up)"
            )),
        }
    }
}

fn default_pod_network() -> Cidr {
    Cidr(Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).expect("valid prefix"))
}
fn default_service_network() -> Cidr {
    Cidr(Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 16).expect("valid prefix"))
}
fn default_workers() -> u32 {
    3
}

/// The node network of the cluster at `index` when the file gives none: 172.20.<index>.0/24.
pub fn default_node_network(index: usize) -> Option<Ipv4Net> {
    let third = u8::try_from(index).ok()?;
    Ipv4Net::new(Ipv4Addr::new(172, 20, third, 0), 24).ok()
}

/// An IPv4 network in CIDR notation whose address has no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Cidr(pub Ipv4Net);

/// By hand rather than `try_from = "String"`, so the error is raised while the scalar is read
/// and serde_yaml reports its path and line, not the enclosing mapping's.
impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Cidr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IPv4 network in CIDR form like 172.20.0.0/24")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Cidr, E> {
                s.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let net: Ipv4Net = s
            .parse()
            .map_err(|_| format!("`{s}` is not an IPv4 network in CIDR form like 172.20.0.0/24"))?;
        if net.network() != net.addr() {
            return Err(format!(
                "`{s}` has host bits set; the network is {}",
                net.trunc()
            ));
        }
        Ok(Cidr(net))
    }
}
impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.0.to_string()
    }
}
impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A topology error: where, which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct TopologyError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl Topology {
    /// Parse and check a topology. `file` only names the source in errors.
    pub fn parse(file: &str, text: &str) -> Result<Topology, TopologyError> {
        let topology: Topology = serde_yaml::from_str(text).map_err(|e| {
            let message = e.to_string();
            // serde_yaml appends " at line L column C"; we print the line up front instead.
            let message = match message.rfind(" at line ") {
                Some(at) if e.location().is_some() => message[..at].to_string(),
                _ => message,
            };
            TopologyError {
                file: file.to_string(),
                line: e.location().map(|l| l.line()),
                message,
            }
        })?;
        topology.check().map_err(|(path, message)| TopologyError {
            file: file.to_string(),
            line: locate(text, &path),
            message: format!("{}: {message}", path.display()),
        })?;
        Ok(topology)
    }

    /// The checks serde cannot make, each blaming one field.
    fn check(&self) -> Result<(), (FieldPath, String)> {
        if self.clusters.is_empty() {
            return Err((
                FieldPath::top("clusters"),
                "a lab needs at least one cluster".into(),
            ));
        }
        let mut node_networks: Vec<(usize, Ipv4Net)> = Vec::new();
        for (index, cluster) in self.clusters.iter().enumerate() {
            let at = |field: &'static str| FieldPath::cluster(index, field);
            check_name(&cluster.name).map_err(|m| (at("name"), m))?;
            if let Some(first) = self.clusters[..index]
                .iter()
                .position(|c| c.name == cluster.name)
            {
                return Err((
                    at("name"),
                    format!(
                        "cluster `{}` is already defined as clusters[{first}]",
                        cluster.name
                    ),
                ));
            }
            if cluster.workers > MAX_WORKERS {
                return Err((
                    at("workers"),
                    format!(
                        "{} workers requested; at most {MAX_WORKERS}",
                        cluster.workers
                    ),
                ));
            }
            let node_network = match cluster.node_network {
                Some(Cidr(net)) => net,
                None => default_node_network(index).ok_or_else(|| {
                    (
                        at("nodeNetwork"),
                        "no default beyond 256 clusters; set one".to_string(),
                    )
                })?,
            };
            for (field, net) in [
                ("nodeNetwork", node_network),
                ("podNetwork", cluster.pod_network.0),
                ("serviceNetwork", cluster.service_network.0),
            ] {
                if !net.addr().is_private() {
                    return Err((
                        at(field),
                        format!("{net} is not a private network (10/8, 172.16/12, 192.168/16)"),
                    ));
                }
            }
            let hosts_needed = 10 + cluster.workers;
            if node_network.prefix_len() > 28 || hosts_needed >= host_count(node_network) {
                return Err((
                    at("nodeNetwork"),
                    format!(
                        "{node_network} is too small for a gateway, a control plane and {} workers (addresses .1 to .{hosts_needed})",
                        cluster.workers
                    ),
                ));
            }
            let pods = cluster.pod_network.0;
            let nodes = u64::from(cluster.workers) + 1;
            if pods.prefix_len() > 24 || (1u64 << (24 - pods.prefix_len())) < nodes {
                return Err((
                    at("podNetwork"),
                    format!("{pods} does not hold one /24 for each of the {nodes} nodes"),
                ));
            }
            let services = cluster.service_network.0;
            if services.prefix_len() > 28 {
                return Err((
                    at("serviceNetwork"),
                    format!("{services} is too small: kube-dns needs address .10"),
                ));
            }
            if overlaps(pods, services) {
                return Err((
                    at("serviceNetwork"),
                    format!("{services} overlaps podNetwork {pods}"),
                ));
            }
            for (other, other_net) in &node_networks {
                if overlaps(node_network, *other_net) {
                    return Err((
                        at("nodeNetwork"),
                        format!(
                            "{node_network} overlaps clusters[{other}].nodeNetwork {other_net}"
                        ),
                    ));
                }
            }
            node_networks.push((index, node_network));
        }
        // Nodes route to every cluster's node network, so none may hide in a pod or service range.
        for (index, cluster) in self.clusters.iter().enumerate() {
            for (field, net) in [
                ("podNetwork", cluster.pod_network.0),
                ("serviceNetwork", cluster.service_network.0),
            ] {
                if let Some((other, node_net)) =
                    node_networks.iter().find(|(_, n)| overlaps(*n, net))
                {
                    return Err((
                        FieldPath::cluster(index, field),
                        format!("{net} overlaps clusters[{other}].nodeNetwork {node_net}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The node network of the cluster at `index`, defaulted as [`check`] allowed.
    pub fn node_network(&self, index: usize) -> Option<Ipv4Net> {
        match self.clusters.get(index)?.node_network {
            Some(Cidr(net)) => Some(net),
            None => default_node_network(index),
        }
    }
}

fn host_count(net: Ipv4Net) -> u32 {
    1u32.checked_shl(32 - u32::from(net.prefix_len()))
        .unwrap_or(u32::MAX)
        - 1
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Cluster names become parts of namespace, host and interface names.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_CLUSTER_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid cluster name: use 1 to {MAX_CLUSTER_NAME} lowercase letters and digits, starting with a letter"
        ))
    }
}

/// A field a check blames: `clusters[i].field`, or a top-level key.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPath {
    cluster: Option<usize>,
    field: &'static str,
}

impl FieldPath {
    fn top(field: &'static str) -> Self {
        FieldPath {
            cluster: None,
            field,
        }
    }
    fn cluster(index: usize, field: &'static str) -> Self {
        FieldPath {
            cluster: Some(index),
            field,
        }
    }
    fn display(&self) -> String {
        match self.cluster {
            Some(i) => format!("clusters[{i}].{}", self.field),
            None => self.field.to_string(),
        }
    }
}

/// The 1-based line of `path` in block-style YAML: the `field:` key inside the n-th `- `
/// item under `clusters:`, else that item's first line. `None` when the text is laid out
/// differently (flow style); the error still names the field.
fn locate(text: &str, path: &FieldPath) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let key_line = |from: usize, to: usize, key: &str| {
        (from..to).find(|&i| {
            let t = lines[i].trim_start().trim_start_matches("- ");
            t.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
    };
    let clusters = key_line(0, lines.len(), "clusters")?;
    let Some(index) = path.cluster else {
        return Some(clusters + 1);
    };
    let items: Vec<usize> = (clusters + 1..lines.len())
        .filter(|&i| lines[i].trim_start().starts_with("- ") || lines[i].trim() == "-")
        .collect();
    let start = *items.get(index)?;
    let end = items.get(index + 1).copied().unwrap_or(lines.len());
    Some(key_line(start, end, path.field).unwrap_or(start) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Topology, TopologyError> {
        Topology::parse("t.yaml", text)
    }

    #[test]
    fn default_topology_is_valid() {
        let t = Topology::parse(DEFAULT_NAME, DEFAULT).unwrap();
        assert_eq!(t.clusters.len(), 2);
        assert_eq!(t.clusters[1].workers, 3);
        assert_eq!(t.node_network(1).unwrap().to_string(), "172.20.1.0/24");
    }

    #[test]
    fn defaults_fill_missing_fields() {
        let t = parse("clusters:\n  - name: a\n  - name: b\n    workers: 50\n").unwrap();
        assert_eq!(t.node_network(1).unwrap().to_string(), "172.20.1.0/24");
        assert_eq!(t.clusters[0].pod_network.to_string(), "10.244.0.0/16");
        assert_eq!(t.clusters[0].workers, 3);
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let err = parse("clusters:\n  - name: c0\n    nodeNetwrk: 172.20.0.0/24\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(
            err.to_string().contains("unknown field `nodeNetwrk`"),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("t.yaml:3: clusters[0]"),
            "{err}"
        );
    }

    #[test]
    fn bad_cidr_names_line() {
        let err = parse("clusters:\n  - name: c0\n    podNetwork: 10.244.0.0/33\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("not an IPv4 network"), "{err}");
        let err = parse("clusters:\n  - name: c0\n    podNetwork: 10.244.0.1/16\n").unwrap_err();
        assert!(err.message.contains("host bits"), "{err}");
    }

    #[test]
    fn service_proxy_mode_defaults_to_dynamic_and_rejects_others() {
        let t = parse("clusters:\n  - name: a\n  - name: b\n    serviceProxy: static\n").unwrap();
        assert_eq!(t.clusters[0].service_proxy, ServiceProxyMode::Dynamic);
        assert_eq!(t.clusters[1].service_proxy, ServiceProxyMode::Static);
        let err = parse("clusters:\n  - name: c0\n    serviceProxy: frozen\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("unknown variant `frozen`"), "{err}");
        assert_eq!("static".parse(), Ok(ServiceProxyMode::Static));
        let err = "Static".parse::<ServiceProxyMode>().unwrap_err();
        assert!(err.contains("use `dynamic`"), "{err}");
    }

    #[test]
    fn wrong_type_names_line() {
        let err = parse("clusters:\n  - name: c0\n    workers: many\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("workers"), "{err}");
    }

    #[test]
    fn semantic_errors_name_line_and_field() {
        let text = "clusters:\n  - name: c0\n    nodeNetwork: 172.20.0.0/24\n  - name: c1\n    workers: 2\n    nodeNetwork: 172.20.0.0/25\n";
        let err = parse(text).unwrap_err();
        assert_eq!(err.line, Some(6), "{err}");
        assert!(
            err.message.starts_with(
                "clusters[1].nodeNetwork: 172.20.0.0/25 overlaps clusters[0].nodeNetwork"
            ),
            "{err}"
        );

        let err = parse("clusters:\n  - name: c0\n  - name: c0\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("already defined"), "{err}");

        let err = parse("clusters:\n  - name: C-0\n").unwrap_err();
        assert!(err.message.contains("not a valid cluster name"), "{err}");

        let err = parse("clusters:\n  - name: c0\n    nodeNetwork: 8.8.8.0/24\n").unwrap_err();
        assert!(err.message.contains("not a private network"), "{err}");
        assert_eq!(err.line, Some(3));

        let err =
            parse("clusters:\n  - name: c0\n    nodeNetwork: 172.20.0.0/28\n    workers: 5\n")
                .unwrap_err();
        assert!(err.message.contains("too small"), "{err}");

        let err = parse("clusters:\n  - name: c0\n    workers: 300\n").unwrap_err();
        assert!(err.message.contains("at most 240"), "{err}");

        let err =
            parse("clusters:\n  - name: c0\n    serviceNetwork: 10.244.0.0/20\n").unwrap_err();
        assert!(err.message.contains("overlaps podNetwork"), "{err}");

        let err = parse("clusters: []\n").unwrap_err();
        assert!(err.message.contains("at least one cluster"), "{err}");
        assert_eq!(err.line, Some(1));
    }

    #[test]
    fn malformed_yaml_is_an_error_not_a_panic() {
        for text in [
            "",
            "clusters: [",
            "\t- x",
            "clusters:\n  - name: [1, 2]\n",
            "42",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
