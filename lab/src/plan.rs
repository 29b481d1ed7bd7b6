//! From a topology and a lab name to every concrete name and address of the lab.
//!
//! The plan is pure data, computed once by `up` and saved as `lab.json` in the lab's state tree;
//! the supervisor, `status`, `exec` and `down` read it back, so no two places derive a
//! namespace name or an address on their own.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::paths::LabPaths;
use crate::topology::{ServiceProxyMode, Topology};

/// The lab used when none is named.
pub const DEFAULT_LAB: &str = "knetsim";
/// Longest lab name; it prefixes every namespace name of the lab.
pub const MAX_LAB_NAME: usize = 20;
/// etcd's client port on each control-plane node.
pub const ETCD_CLIENT_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;

/// Lab names are lowercase letters and digits: no `-`, so `<lab>-` prefixes never collide
/// (lab `a` cannot own the namespaces of lab `a-c0`).
pub fn check_lab_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_LAB_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid lab name: use 1 to {MAX_LAB_NAME} lowercase letters and digits, starting with a letter"
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabPlan {
    pub lab: String,
    /// The namespace that routes between the clusters' node networks.
    pub fabric_netns: String,
    pub clusters: Vec<ClusterPlan>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPlan {
    pub name: String,
    pub node_network: Ipv4Net,
    /// The fabric's address on this node network: every node's next hop to other clusters.
    pub gateway: Ipv4Addr,
    /// The bridge in the fabric namespace that is this node network's switch.
    pub fabric_bridge: String,
    pub pod_network: Ipv4Net,
    pub service_network: Ipv4Net,
    pub nodes: Vec<NodePlan>,
    /// The port of `127.0.0.1` in the machine's own namespace where kubectl reaches this
    /// cluster's API server; chosen free by `up` (0 until then).
    #[serde(default)]
    pub api_port: u16,
    /// Whether the cluster's kubeproxy-lites follow the API or keep their first rules.
    #[serde(default)]
    pub service_proxy: ServiceProxyMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePlan {
    pub cluster: String,
    /// `cp`, `w1`, `w2`, …
    pub name: String,
    pub role: Role,
    /// `<cluster>-<node>`: the node's hostname (and later its Node object's name).
    pub hostname: String,
    pub netns: String,
    /// Address of `eth0` on the cluster's node network.
    pub address: Ipv4Addr,
    /// The fabric end of this node's veth (the node end is `eth0`).
    pub fabric_port: String,
}

impl NodePlan {
    /// Node `name` of `cluster` in `lab`: every name derives from these, in one place.
    pub fn new(lab: &str, cluster: &str, name: &str, role: Role, address: Ipv4Addr) -> NodePlan {
        NodePlan {
            hostname: format!("{cluster}-{name}"),
            netns: format!("{lab}-{cluster}-{name}"),
            fabric_port: format!("{cluster}-{name}"),
            cluster: cluster.to_string(),
            name: name.to_string(),
            role,
            address,
        }
    }

    /// `c0/w1`: how the CLI names a node.
    pub fn id(&self) -> String {
        format!("{}/{}", self.cluster, self.name)
    }
}

/// A long-running process of the lab, as the supervisor starts it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    /// What it is, e.g. `etcd`; unique per node.
    pub name: String,
    pub cluster: String,
    pub node: String,
    pub program: Program,
    pub args: Vec<String>,
    pub ready: Readiness,
    /// A port of `127.0.0.1` in the machine's own namespace that the supervisor binds and
    /// hands over (as `--listener-fd=N`): how kubectl outside the lab reaches a server inside.
    pub root_listener: Option<u16>,
    /// A shared library to load into it before its own (`LD_PRELOAD`), if installed.
    pub preload: Option<kernel::binaries::Requirement>,
}

/// What a process runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Program {
    /// A program from a Debian package, found on PATH when started.
    External(kernel::binaries::Requirement),
    /// knetsim itself in another role (`knetsim flannel …`).
    Knetsim,
    /// One of knetsim's programs of its own, installed next to `knetsim`
    /// (`kernel::binaries::KUBELET`): node agents as Kubernetes ships them.
    Sibling(&'static str),
}

impl ProcessSpec {
    /// `c0/cp/etcd`: unique in the lab.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.cluster, self.node, self.name)
    }
}

/// How the supervisor knows a started process is ready, probed from inside its node.
#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    /// `GET http://127.0.0.1:<port><path>` answers 200 with a body containing `body_contains`.
    HttpGet {
        port: u16,
        path: String,
        body_contains: String,
    },
    /// A TCP connection to `127.0.0.1:<port>` is accepted.
    TcpConnect(u16),
    /// The process has written the file (as seen from the root namespace) since it started,
    /// e.g. flannel's `subnet.env`: an old copy from before a restart does not count.
    FileWritten(PathBuf),
}

impl LabPlan {
    /// Lay out a lab. The topology must have passed [`Topology::parse`].
    pub fn new(lab: &str, topology: &Topology) -> LabPlan {
        let clusters = topology
            .clusters
            .iter()
            .enumerate()
            .map(|(index, cluster)| {
                let node_network = topology
                    .node_network(index)
                    .expect("checked by Topology::parse");
                let host = |n: u32| Ipv4Addr::from(u32::from(node_network.network()) + n);
                let node = |name: String, role: Role, address: Ipv4Addr| {
                    NodePlan::new(lab, &cluster.name, &name, role, address)
                };
                let mut nodes = vec![node("cp".into(), Role::ControlPlane, host(2))];
                nodes.extend(
                    (1..=cluster.workers)
                        .map(|i| node(format!("w{i}"), Role::Worker, host(10 + i))),
                );
                ClusterPlan {
                    name: cluster.name.clone(),
                    node_network,
                    gateway: host(1),
                    fabric_bridge: format!("br-{}", cluster.name),
                    pod_network: cluster.pod_network.0,
                    service_network: cluster.service_network.0,
                    nodes,
                    api_port: 0,
                    service_proxy: cluster.service_proxy,
                }
            })
            .collect();
        LabPlan {
            lab: lab.to_string(),
            fabric_netns: format!("{lab}-fabric"),
            clusters,
        }
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodePlan> {
        self.clusters.iter().flat_map(|c| c.nodes.iter())
    }

    /// Every namespace of the lab, the fabric first.
    pub fn netns_names(&self) -> Vec<String> {
        std::iter::once(self.fabric_netns.clone())
            .chain(self.nodes().map(|n| n.netns.clone()))
            .collect()
    }

    pub fn cluster(&self, name: &str) -> Option<&ClusterPlan> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The node `c0/w1` names, or an error listing the nodes there are.
    pub fn node(&self, id: &str) -> Result<&NodePlan, String> {
        self.nodes().find(|n| n.id() == id).ok_or_else(|| {
            let known: Vec<String> = self.nodes().map(NodePlan::id).collect();
            format!(
                "lab {} has no node `{id}`; nodes are: {}",
                self.lab,
                known.join(" ")
            )
        })
    }

    /// The processes the supervisor keeps running, in start order: per cluster its etcd,
    /// then a flannel daemon on every node.
    pub fn processes(&self, paths: &LabPaths) -> Vec<ProcessSpec> {
        let mut processes = Vec::new();
        for cluster in &self.clusters {
            processes.push(etcd(cluster, paths.etcd_data(&cluster.name)));
            processes.push(apiserver(&self.lab, cluster, paths));
            processes.push(controller_manager(&self.lab, cluster, paths));
            for node in &cluster.nodes {
                processes.push(flannel(&self.lab, cluster, node, paths));
                processes.push(kubelet(&self.lab, cluster, node));
                processes.push(kube_proxy(&self.lab, cluster, node));
            }
        }
        processes
    }
}

impl ClusterPlan {
    pub fn control_plane(&self) -> &NodePlan {
        self.nodes
            .iter()
            .find(|n| n.role == Role::ControlPlane)
            .expect("every cluster plan has a control-plane node")
    }
}

/// One single-member etcd per cluster on its control-plane node: clients on the node address
/// (for agents on workers) and on the node's loopback; peers on loopback only.
fn etcd(cluster: &ClusterPlan, data_dir: PathBuf) -> ProcessSpec {
    let cp = cluster.control_plane();
    let client = |host: &str| format!("http://{host}:{ETCD_CLIENT_PORT}");
    let peer = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
    ProcessSpec {
        name: "etcd".into(),
        cluster: cluster.name.clone(),
        node: cp.name.clone(),
        program: Program::External(kernel::binaries::ETCD),
        args: vec![
            format!("--name={}", cluster.name),
            format!("--data-dir={}", data_dir.display()),
            format!(
                "--listen-client-urls={},{}",
                client("127.0.0.1"),
                client(&cp.address.to_string())
            ),
            format!(
                "--advertise-client-urls={}",
                client(&cp.address.to_string())
            ),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster={}={peer}", cluster.name),
            "--initial-cluster-state=new".into(),
            "--logger=zap".into(),
            "--log-outputs=stderr".into(),
        ],
        ready: Readiness::HttpGet {
            port: ETCD_CLIENT_PORT,
            path: "/health".into(),
            body_contains: "\"health\":\"true\"".into(),
        },
        root_listener: None,
        preload: None,
    }
}

/// The API server's port on the control-plane node, as kube-apiserver's.
pub const API_SECURE_PORT: u16 = 6443;

/// The API server of a cluster, on its control-plane node, with kube-apiserver's flags.
fn apiserver(lab: &str, cluster: &ClusterPlan, paths: &LabPaths) -> ProcessSpec {
    let cp = cluster.control_plane();
    let pki = |file: &str| paths.pki().join(file).display().to_string();
    ProcessSpec {
        name: "apiserver".into(),
        cluster: cluster.name.clone(),
        node: cp.name.clone(),
        program: Program::Knetsim,
        args: vec![
            "apiserver".into(),
            format!("--lab={lab}"),
            format!("--cluster={}", cluster.name),
            format!("--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}"),
            format!("--bind-address={}", cp.address),
            format!("--secure-port={API_SECURE_PORT}"),
            format!("--advertise-address={}", cp.address),
            format!("--service-cluster-ip-range={}", cluster.service_network),
            format!(
                "--tls-cert-file={}",
                pki(&format!("{}-apiserver.crt", cluster.name))
            ),
            format!(
                "--tls-private-key-file={}",
                pki(&format!("{}-apiserver.key", cluster.name))
            ),
            format!("--client-ca-file={}", pki("ca.crt")),
            format!(
                "--kubelet-client-certificate={}",
                pki("apiserver-kubelet-client.crt")
            ),
            format!(
                "--kubelet-client-key={}",
                pki("apiserver-kubelet-client.key")
            ),
            format!("--kubelet-certificate-authority={}", pki("ca.crt")),
            format!("--service-account-key-file={}", pki("sa.pub")),
            format!("--service-account-signing-key-file={}", pki("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        ],
        ready: Readiness::TcpConnect(API_SECURE_PORT),
        root_listener: Some(cluster.api_port),
        preload: None,
    }
}

/// Where a node's kubelet finds its kubeconfig (written by `up`, in the node's own
/// `/var/lib/kubelet`).
pub const KUBELET_KUBECONFIG: &str = "/var/lib/kubelet/kubeconfig";
/// kubeproxy-lite's kubeconfig on every node, where kubeadm's kube-proxy keeps it.
pub const KUBE_PROXY_KUBECONFIG: &str = "/var/lib/kube-proxy/kubeconfig.conf";
/// The controller-manager's kubeconfig on the control-plane node, as kubeadm writes it.
pub const CONTROLLER_MANAGER_KUBECONFIG: &str = "/etc/kubernetes/controller-manager.conf";
/// The kubelet's serving certificate and the CA it trusts, in the node's own directory.
pub const KUBELET_PKI: &str = "/var/lib/kubelet/pki";
/// The real kubelet's healthz port.
pub const KUBELET_HEALTHZ_PORT: u16 = 10248;
/// kube-controller-manager's port; knetsim's serves plain `/healthz` there on loopback.
pub const CONTROLLER_MANAGER_HEALTHZ_PORT: u16 = 10257;

/// The controllers (and scheduler) of a cluster, on its control-plane node.
fn controller_manager(lab: &str, cluster: &ClusterPlan, paths: &LabPaths) -> ProcessSpec {
    ProcessSpec {
        name: "controller-manager".into(),
        cluster: cluster.name.clone(),
        node: cluster.control_plane().name.clone(),
        program: Program::Knetsim,
        args: vec![
            "controller-manager".into(),
            format!("--lab={lab}"),
            format!("--cluster={}", cluster.name),
            format!("--kubeconfig={CONTROLLER_MANAGER_KUBECONFIG}"),
            format!("--root-ca-file={}", paths.pki().join("ca.crt").display()),
        ],
        ready: Readiness::HttpGet {
            port: CONTROLLER_MANAGER_HEALTHZ_PORT,
            path: "/healthz".into(),
            body_contains: "ok".into(),
        },
        root_listener: None,
        preload: None,
    }
}

/// The cluster DNS Service's IP: the service network's tenth address (`10.96.0.10`), as
/// kubeadm picks it for `kube-dns`.
pub fn cluster_dns_ip(cluster: &ClusterPlan) -> std::net::Ipv4Addr {
    let base = u32::from(cluster.service_network.network());
    std::net::Ipv4Addr::from(base + 10)
}

/// The kubelet of every node (the control plane's registers tainted `NoSchedule`).
fn kubelet(lab: &str, cluster: &ClusterPlan, node: &NodePlan) -> ProcessSpec {
    let mut args = vec![
        format!("--lab={lab}"),
        format!("--cluster={}", cluster.name),
        format!("--node={}", node.name),
        format!("--kubeconfig={KUBELET_KUBECONFIG}"),
        format!("--hostname-override={}", node.hostname),
        format!("--node-ip={}", node.address),
        format!("--tls-cert-file={KUBELET_PKI}/kubelet.crt"),
        format!("--tls-private-key-file={KUBELET_PKI}/kubelet.key"),
        format!("--client-ca-file={KUBELET_PKI}/ca.crt"),
        format!("--cluster-dns={}", cluster_dns_ip(cluster)),
        "--cluster-domain=cluster.local".into(),
    ];
    if node.role == Role::ControlPlane {
        args.push("--register-with-control-plane-taint".into());
    }
    ProcessSpec {
        name: "kubelet".into(),
        cluster: cluster.name.clone(),
        node: node.name.clone(),
        program: Program::Sibling(kernel::binaries::KUBELET),
        args,
        ready: Readiness::HttpGet {
            port: KUBELET_HEALTHZ_PORT,
            path: "/healthz".into(),
            body_contains: "ok".into(),
        },
        root_listener: None,
        preload: None,
    }
}

/// kube-proxy's healthz port, on the node's loopback.
pub const KUBE_PROXY_HEALTHZ_PORT: u16 = 10256;

/// kubeproxy-lite on every node (the control plane too: host-network clients there use
/// Services as well), with kube-proxy's flags. Ready once its first sync is in the kernel.
fn kube_proxy(lab: &str, cluster: &ClusterPlan, node: &NodePlan) -> ProcessSpec {
    let mut args = vec![
        "kubeproxy-lite".into(),
        format!("--lab={lab}"),
        format!("--cluster={}", cluster.name),
        format!("--node={}", node.name),
        format!("--kubeconfig={KUBE_PROXY_KUBECONFIG}"),
        format!("--hostname-override={}", node.hostname),
        format!("--node-ip={}", node.address),
        format!("--cluster-cidr={}", cluster.pod_network),
        format!("--service-cluster-ip-range={}", cluster.service_network),
    ];
    if cluster.service_proxy == ServiceProxyMode::Static {
        args.push("--static".into());
    }
    ProcessSpec {
        name: "kubeproxy-lite".into(),
        cluster: cluster.name.clone(),
        node: node.name.clone(),
        program: Program::Knetsim,
        args,
        ready: Readiness::HttpGet {
            port: KUBE_PROXY_HEALTHZ_PORT,
            path: "/healthz".into(),
            body_contains: "lastUpdated\":\"2".into(),
        },
        root_listener: None,
        // libnftables parses a full sync's transaction (9 MB of JSON with 1,000 Services ×
        // 10 endpoints) into a tree of small objects and frees it: with mimalloc instead of
        // glibc's malloc that sync takes ~15 % less (`knetsim bench services`).
        preload: Some(kernel::binaries::MIMALLOC),
    }
}

/// Where flanneld keeps `subnet.env`; each node sees its own (see `network::NODE_DIRS`).
pub const FLANNEL_SUBNET_FILE: &str = "/run/flannel/subnet.env";

/// flannel on every node (the control plane too, as a DaemonSet would), with flanneld's flags.
fn flannel(lab: &str, cluster: &ClusterPlan, node: &NodePlan, paths: &LabPaths) -> ProcessSpec {
    let etcd = cluster.control_plane().address;
    ProcessSpec {
        name: "flannel".into(),
        cluster: cluster.name.clone(),
        node: node.name.clone(),
        program: Program::Knetsim,
        args: vec![
            "flannel".into(),
            format!("--lab={lab}"),
            format!("--cluster={}", cluster.name),
            format!("--node={}", node.name),
            format!("--etcd-endpoints=http://{etcd}:{ETCD_CLIENT_PORT}"),
            "--iface=eth0".into(),
            "--ip-masq".into(),
            format!("--subnet-file={FLANNEL_SUBNET_FILE}"),
        ],
        root_listener: None,
        preload: None,
        ready: Readiness::FileWritten(paths.node_path(
            &node.cluster,
            &node.name,
            FLANNEL_SUBNET_FILE,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{DEFAULT, DEFAULT_NAME};

    fn default_plan() -> LabPlan {
        LabPlan::new("lab", &Topology::parse(DEFAULT_NAME, DEFAULT).unwrap())
    }

    #[test]
    fn default_lab_has_the_architecture_address_plan() {
        let plan = default_plan();
        assert_eq!(plan.fabric_netns, "lab-fabric");
        let c1 = plan.cluster("c1").unwrap();
        assert_eq!(c1.gateway.to_string(), "172.20.1.1");
        let addresses: Vec<String> = c1
            .nodes
            .iter()
            .map(|n| format!("{} {}", n.id(), n.address))
            .collect();
        assert_eq!(
            addresses,
            [
                "c1/cp 172.20.1.2",
                "c1/w1 172.20.1.11",
                "c1/w2 172.20.1.12",
                "c1/w3 172.20.1.13"
            ]
        );
        let w2 = plan.node("c0/w2").unwrap();
        assert_eq!(
            (w2.netns.as_str(), w2.hostname.as_str()),
            ("lab-c0-w2", "c0-w2")
        );
        assert_eq!(plan.netns_names().len(), 9);
    }

    #[test]
    fn unknown_node_lists_the_known_ones() {
        let err = default_plan().node("c0/w9").unwrap_err();
        assert!(err.contains("c0/w3 c1/cp"), "{err}");
    }

    #[test]
    fn interface_names_fit_the_kernel_limit() {
        let text = "clusters:\n  - name: abcdefgh\n    workers: 240\n";
        let plan = LabPlan::new("x", &Topology::parse("t", text).unwrap());
        for node in plan.nodes() {
            assert!(node.fabric_port.len() <= 15, "{}", node.fabric_port);
        }
        assert!(plan.clusters[0].fabric_bridge.len() <= 15);
    }

    #[test]
    fn lab_names_cannot_collide_by_prefix() {
        assert!(check_lab_name("knetsim").is_ok());
        assert!(check_lab_name("lab2").is_ok());
        for bad in ["", "a-b", "Lab", "2lab", "a/b", "abcdefghijklmnopqrstu"] {
            assert!(check_lab_name(bad).is_err(), "{bad}");
        }
    }

    fn by_id_args(processes: &[ProcessSpec], id: &str) -> Vec<String> {
        processes
            .iter()
            .find(|p| p.id() == id)
            .map(|p| p.args.clone())
            .unwrap_or_default()
    }

    #[test]
    fn control_plane_processes_and_flannel_on_every_node() {
        let mut plan = default_plan();
        plan.clusters[1].api_port = 41000;
        let paths = LabPaths::new("lab");
        let processes = plan.processes(&paths);
        let ids: Vec<String> = processes.iter().map(ProcessSpec::id).collect();
        assert_eq!(
            ids[..5],
            [
                "c0/cp/etcd",
                "c0/cp/apiserver",
                "c0/cp/controller-manager",
                "c0/cp/flannel",
                "c0/cp/kubelet"
            ]
        );
        assert_eq!(ids.iter().filter(|id| id.ends_with("/flannel")).count(), 8);
        assert_eq!(ids.iter().filter(|id| id.ends_with("/kubelet")).count(), 8);
        assert_eq!(
            ids.iter()
                .filter(|id| id.ends_with("/kubeproxy-lite"))
                .count(),
            8
        );
        assert!(by_id_args(&processes, "c0/w2/kubeproxy-lite")
            .contains(&"--cluster-cidr=10.244.0.0/16".to_string()));
        assert!(by_id_args(&processes, "c0/w2/kubeproxy-lite")
            .contains(&"--service-cluster-ip-range=10.96.0.0/16".to_string()));
        assert!(!by_id_args(&processes, "c0/w2/kubeproxy-lite").contains(&"--static".to_string()));
        // mimalloc goes into the proxies only.
        let preloading: Vec<String> = processes
            .iter()
            .filter(|p| p.preload.is_some())
            .map(ProcessSpec::id)
            .collect();
        assert!(preloading.iter().all(|id| id.ends_with("/kubeproxy-lite")));
        assert_eq!(preloading.len(), 8);
        plan.clusters[0].service_proxy = ServiceProxyMode::Static;
        let frozen = plan.processes(&paths);
        assert!(by_id_args(&frozen, "c0/w2/kubeproxy-lite").contains(&"--static".to_string()));
        assert!(!by_id_args(&frozen, "c1/w2/kubeproxy-lite").contains(&"--static".to_string()));
        // Only the proxies' command lines change: the supervisor restarts them and no other.
        let changed: Vec<String> = frozen
            .iter()
            .filter(|spec| !processes.contains(spec))
            .map(ProcessSpec::id)
            .collect();
        assert_eq!(
            changed,
            [
                "c0/cp/kubeproxy-lite",
                "c0/w1/kubeproxy-lite",
                "c0/w2/kubeproxy-lite",
                "c0/w3/kubeproxy-lite"
            ]
        );
        assert!(by_id_args(&processes, "c0/cp/kubelet")
            .contains(&"--register-with-control-plane-taint".to_string()));
        assert!(!by_id_args(&processes, "c0/w1/kubelet")
            .contains(&"--register-with-control-plane-taint".to_string()));
        let by_id = |id: &str| processes.iter().find(|p| p.id() == id).unwrap();
        let etcd = by_id("c1/cp/etcd");
        assert!(etcd
            .args
            .contains(&"--advertise-client-urls=http://172.20.1.2:2379".to_string()));
        let apiserver = by_id("c1/cp/apiserver");
        assert!(apiserver
            .args
            .contains(&"--bind-address=172.20.1.2".to_string()));
        assert_eq!(apiserver.root_listener, Some(41000));
        assert_eq!(apiserver.ready, Readiness::TcpConnect(API_SECURE_PORT));
        let flannel = by_id("c1/w2/flannel");
        assert!(flannel
            .args
            .contains(&"--etcd-endpoints=http://172.20.1.2:2379".to_string()));
        assert_eq!(
            flannel.ready,
            Readiness::FileWritten("/tmp/knetsim/lab/nodes/c1-w2/run/flannel/subnet.env".into())
        );
    }
}
