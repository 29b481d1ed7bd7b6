//! The lab's state tree: `/tmp/knetsim/<lab>/`, a tmpfs that `up` mounts (see
//! `kernel::mounts`). Everything a lab writes is under it, so `down` removes the lab by
//! unmounting the UTS files and the tmpfs and removing one directory.
//!
//! ```text
//! /tmp/knetsim/<lab>/
//!   lab.json            the plan (names, addresses) every command reads
//!   topology.yaml       the topology the lab was made from
//!   supervisor.pid      the supervisor's pid
//!   status.json         the supervisor's view of its processes, rewritten on every change
//!   logs/               supervisor.log and <cluster>-<node>-<process>.log
//!   ns/<cluster>-<node>.uts   the node's UTS namespace (bind mount)
//!   nodes/<cluster>-<node>/   the node's own /run/flannel, /etc/cni/net.d, /var/lib/cni,
//!                       /var/lib/kubelet (pods' volumes), /var/log/pods
//!   <cluster>/etcd/     etcd's data
//!   pki/                the lab's CA, API server and client certificates
//!   kubeconfig          one context per cluster
//! ```

use std::path::PathBuf;

/// Parent of every lab's state tree.
pub const STATE_ROOT: &str = "/tmp/knetsim";

#[derive(Debug, Clone)]
pub struct LabPaths {
    pub root: PathBuf,
}

impl LabPaths {
    pub fn new(lab: &str) -> Self {
        LabPaths {
            root: PathBuf::from(STATE_ROOT).join(lab),
        }
    }
    pub fn plan(&self) -> PathBuf {
        self.root.join("lab.json")
    }
    pub fn topology(&self) -> PathBuf {
        self.root.join("topology.yaml")
    }
    pub fn supervisor_pid(&self) -> PathBuf {
        self.root.join("supervisor.pid")
    }
    pub fn status(&self) -> PathBuf {
        self.root.join("status.json")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.logs().join("supervisor.log")
    }
    pub fn process_log(&self, cluster: &str, node: &str, process: &str) -> PathBuf {
        self.logs().join(format!("{cluster}-{node}-{process}.log"))
    }
    pub fn uts_dir(&self) -> PathBuf {
        self.root.join("ns")
    }
    pub fn uts(&self, cluster: &str, node: &str) -> PathBuf {
        self.uts_dir().join(format!("{cluster}-{node}.uts"))
    }
    /// The node's private copy of the machine's directories (see `network::NODE_DIRS`).
    pub fn node_root(&self, cluster: &str, node: &str) -> PathBuf {
        self.root.join("nodes").join(format!("{cluster}-{node}"))
    }
    /// Where `path`, as the node sees it, lives on the machine.
    pub fn node_path(&self, cluster: &str, node: &str, path: &str) -> PathBuf {
        self.node_root(cluster, node)
            .join(path.trim_start_matches('/'))
    }
    /// The lab's CA and the certificates issued from it.
    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }
    /// The lab's kubeconfig: one context per cluster, named after it.
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }
    pub fn flannel_config(&self) -> PathBuf {
        self.root.join("flannel-network-config.json")
    }
    pub fn etcd_data(&self, cluster: &str) -> PathBuf {
        self.root.join(cluster).join("etcd")
    }
}
