//! The lab's wiring: namespaces, hostnames, the fabric, node links, routes and sysctls.
//!
//! ```text
//!   <lab>-fabric                                  <lab>-c0-w1
//!   ┌──────────────────────────────┐              ┌────────────────────────┐
//!   │ br-c0 172.20.0.1/24          │  veth pair   │ eth0 172.20.0.11/24    │
//!   │   ├─ c0-cp  c0-w1 … ─────────┼──────────────┼─ route 172.20.1.0/24   │
//!   │ br-c1 172.20.1.1/24          │              │     via 172.20.0.1     │
//!   │   └─ c1-cp  c1-w1 …          │              └────────────────────────┘
//!   └──────────────────────────────┘
//! ```
//!
//! Each cluster's node network is a bridge in the fabric namespace (its switch), and the
//! fabric routes between those bridges (the WAN). Veths are created with one end already in
//! the node's namespace, so nothing ever appears in the machine's root namespace. Nodes get
//! routes to the other clusters' node networks only: no default route, nothing can leave.

use std::path::{Path, PathBuf};

use kernel::sysctl::Setting;

use crate::paths::LabPaths;
use crate::plan::{ClusterPlan, LabPlan, NodePlan};

/// What every node needs: forwarding (it routes for its pods), bridged pod traffic seen by
/// nftables (kube-proxy's DNAT of replies on the same bridge), and loose reverse-path
/// filtering (VXLAN and DNAT make asymmetric paths normal).
const NODE_SYSCTLS: &[Setting] = &[
    Setting {
        key: "net.ipv4.ip_forward",
        value: "1",
        required: true,
    },
    Setting {
        key: "net.ipv4.conf.all.rp_filter",
        value: "0",
        required: true,
    },
    Setting {
        key: "net.bridge.bridge-nf-call-iptables",
        value: "1",
        required: false,
    },
];

const FABRIC_SYSCTLS: &[Setting] = &[Setting {
    key: "net.ipv4.ip_forward",
    value: "1",
    required: true,
}];

/// Directories every node has its own copy of, as separate machines would: each process on a
/// node sees `<state>/nodes/<cluster>-<node>/<dir>` bind-mounted here, in its own mount
/// namespace. So `knetsim exec c0/w1 -- cat /run/flannel/subnet.env` shows that node's file,
/// and real tools keep their real default paths.
pub const NODE_DIRS: &[&str] = &[
    "/run/flannel",
    "/etc/cni/net.d",
    "/opt/cni/bin",
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/lib/kube-proxy",
    "/etc/kubernetes",
];

/// The node's CNI network, as kube-flannel installs it.
pub const FLANNEL_CONFLIST: &str = include_str!("../../conf/10-flannel.conflist");
/// Where Debian's containernetworking-plugins puts the plugins.
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";
/// The plugins a node's `/opt/cni/bin` offers: Debian's, plus knetsim's `flannel`.
const CNI_PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

/// Create each node's private directories, and the (empty) mount points on the machine;
/// install the CNI network and plugins on every node, as a flannel DaemonSet would.
/// `flannel_cni` is knetsim's flannel CNI plugin (`knetsim-flannel-cni`).
pub fn prepare_node_dirs(
    plan: &LabPlan,
    paths: &LabPaths,
    flannel_cni: &Path,
) -> std::io::Result<()> {
    for dir in NODE_DIRS {
        std::fs::create_dir_all(dir)?;
    }
    for node in plan.nodes() {
        prepare_node_dir(paths, node, flannel_cni)?;
    }
    Ok(())
}

/// One node's private directories, CNI network and plugins.
pub fn prepare_node_dir(
    paths: &LabPaths,
    node: &NodePlan,
    flannel_cni: &Path,
) -> std::io::Result<()> {
    for (source, _) in node_binds(paths, node) {
        std::fs::create_dir_all(source)?;
    }
    let bin = paths.node_path(&node.cluster, &node.name, "/opt/cni/bin");
    for plugin in CNI_PLUGINS {
        std::os::unix::fs::symlink(Path::new(DEBIAN_CNI_DIR).join(plugin), bin.join(plugin))?;
    }
    std::os::unix::fs::symlink(flannel_cni, bin.join("flannel"))?;
    let conf = paths.node_path(
        &node.cluster,
        &node.name,
        "/etc/cni/net.d/10-flannel.conflist",
    );
    std::fs::write(conf, FLANNEL_CONFLIST)?;
    Ok(())
}

/// `(node's directory, where the node sees it)` for every entry of [`NODE_DIRS`].
pub fn node_binds(paths: &LabPaths, node: &NodePlan) -> Vec<(PathBuf, PathBuf)> {
    NODE_DIRS
        .iter()
        .map(|dir| {
            (
                paths.node_path(&node.cluster, &node.name, dir),
                PathBuf::from(dir),
            )
        })
        .collect()
}

/// Everything a process needs to run on `node`: its network and UTS namespaces and its
/// private directories. Used by the supervisor, `knetsim exec` and `up` alike.
pub fn enter_node(paths: &LabPaths, node: &NodePlan) -> kernel::Result<kernel::netns::Enter> {
    kernel::netns::Enter::open(&node.netns, Some(&paths.uts(&node.cluster, &node.name)))?
        .with_binds(&node_binds(paths, node))
}

/// Create every namespace of the lab.
pub fn create_namespaces(plan: &LabPlan) -> kernel::Result<usize> {
    let names = plan.netns_names();
    kernel::netns::ensure_added(&names)?;
    Ok(names.len())
}

/// Give every node its own UTS namespace and hostname.
pub fn set_hostnames(plan: &LabPlan, paths: &LabPaths) -> kernel::Result<()> {
    std::fs::create_dir_all(paths.uts_dir()).map_err(|source| kernel::Error::Io {
        action: "create",
        path: paths.uts_dir(),
        source,
    })?;
    for node in plan.nodes() {
        kernel::uts::ensure_created(&paths.uts(&node.cluster, &node.name), &node.hostname)?;
    }
    Ok(())
}

/// The fabric's bridges and gateway addresses, and one veth per node into it.
pub fn wire_fabric(plan: &LabPlan) -> kernel::Result<()> {
    kernel::ip::batch(Some(&plan.fabric_netns), &fabric_commands(plan))?;
    kernel::sysctl::set_in(&plan.fabric_netns, FABRIC_SYSCTLS)?;
    Ok(())
}

/// Address, routes and sysctls on every node. Returns the optional sysctls the kernel lacks.
pub fn configure_nodes(plan: &LabPlan) -> kernel::Result<Vec<&'static str>> {
    let mut absent = Vec::new();
    for cluster in &plan.clusters {
        for node in &cluster.nodes {
            for key in configure_node(plan, cluster, node)? {
                if !absent.contains(&key) {
                    absent.push(key);
                }
            }
        }
    }
    Ok(absent)
}

/// Address, routes and sysctls on one node. Returns the optional sysctls the kernel lacks.
pub fn configure_node(
    plan: &LabPlan,
    cluster: &ClusterPlan,
    node: &NodePlan,
) -> kernel::Result<Vec<&'static str>> {
    kernel::ip::batch(Some(&node.netns), &node_commands(plan, cluster, node))?;
    kernel::sysctl::set_in(&node.netns, NODE_SYSCTLS)
}

/// Plug one more node into its cluster's bridge in the fabric (the node's namespace must
/// exist): a veth whose `eth0` end is created inside the node.
pub fn wire_node(plan: &LabPlan, cluster: &ClusterPlan, node: &NodePlan) -> kernel::Result<()> {
    kernel::ip::batch(
        Some(&plan.fabric_netns),
        &fabric_port_commands(cluster, node),
    )
}

fn fabric_commands(plan: &LabPlan) -> Vec<String> {
    let mut lines = vec!["link set lo up".to_string()];
    for cluster in &plan.clusters {
        let bridge = &cluster.fabric_bridge;
        lines.push(format!("link add {bridge} type bridge"));
        lines.push(format!(
            "addr add {}/{} dev {bridge}",
            cluster.gateway,
            cluster.node_network.prefix_len()
        ));
        lines.push(format!("link set {bridge} up"));
        for node in &cluster.nodes {
            lines.extend(fabric_port_commands(cluster, node));
        }
    }
    lines
}

fn fabric_port_commands(cluster: &ClusterPlan, node: &NodePlan) -> Vec<String> {
    vec![
        format!(
            "link add {} type veth peer name eth0 netns {}",
            node.fabric_port, node.netns
        ),
        format!(
            "link set {} master {} up",
            node.fabric_port, cluster.fabric_bridge
        ),
    ]
}

fn node_commands(plan: &LabPlan, cluster: &ClusterPlan, node: &NodePlan) -> Vec<String> {
    let mut lines = vec![
        "link set lo up".to_string(),
        format!(
            "addr add {}/{} dev eth0",
            node.address,
            cluster.node_network.prefix_len()
        ),
        "link set eth0 up".to_string(),
    ];
    for other in plan.clusters.iter().filter(|c| c.name != cluster.name) {
        lines.push(format!(
            "route add {} via {}",
            other.node_network, cluster.gateway
        ));
    }
    // Where a real node's default route would send it: a host process connecting to a
    // ClusterIP needs a route before the output hook's DNAT picks the endpoint. Nothing
    // leaves this way: DNAT or kube-proxy's reject catches every packet to a Service.
    lines.push(format!(
        "route add {} via {}",
        cluster.service_network, cluster.gateway
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Topology, DEFAULT, DEFAULT_NAME};

    fn plan() -> LabPlan {
        LabPlan::new("lab", &Topology::parse(DEFAULT_NAME, DEFAULT).unwrap())
    }

    #[test]
    fn fabric_has_a_bridge_per_cluster_and_a_port_per_node() {
        let lines = fabric_commands(&plan());
        assert_eq!(
            lines[1..4],
            [
                "link add br-c0 type bridge",
                "addr add 172.20.0.1/24 dev br-c0",
                "link set br-c0 up",
            ]
        );
        assert!(
            lines.contains(&"link add c1-w3 type veth peer name eth0 netns lab-c1-w3".to_string())
        );
        assert!(lines.contains(&"link set c1-w3 master br-c1 up".to_string()));
    }

    #[test]
    fn nodes_route_to_other_clusters_only_never_by_default() {
        let plan = plan();
        let c0 = &plan.clusters[0];
        let lines = node_commands(&plan, c0, &c0.nodes[1]);
        assert_eq!(
            lines,
            [
                "link set lo up",
                "addr add 172.20.0.11/24 dev eth0",
                "link set eth0 up",
                "route add 172.20.1.0/24 via 172.20.0.1",
                "route add 10.96.0.0/16 via 172.20.0.1",
            ]
        );
        assert!(!lines.iter().any(|l| l.contains("default")));
    }
}
