//! CRI-lite: a container runtime shaped like the Kubernetes CRI `RuntimeService`, so the
//! kubelet logic above it never touches namespaces itself.
//!
//! A **pod sandbox** is what the CRI calls it on a real node:
//!
//! * a named network namespace, `<node netns>-<namespace>-<pod>` (so `ip netns list` says
//!   which pod it is), wired by the node's CNI network (`/etc/cni/net.d`, plugins from
//!   `/opt/cni/bin`), with `lo` set up by the runtime itself as it starts the pause process
//!   there (what the `loopback` plugin does, without an exec per pod);
//! * a **pause** process (`knetsim-pause …`) that lives in that network namespace and holds
//!   the pod's own UTS (hostname = pod name) and IPC namespaces, as the `pause` container
//!   does. Containers join its namespaces, so they share localhost and hostname.
//!
//! **Exec** runs a command in a running container's namespaces, with pipes or a pty (`exec`).
//!
//! A **container** is a process that joins those namespaces, parented by a shim (see
//! `container` and `crate::shim`).
//!
//! State lives in `<state>/sandboxes/<id>/sandbox.json` and `<state>/containers/<id>/`,
//! written after every change, so a restarted kubelet finds its pods and containers again:
//! nothing is kept only in memory.

mod container;
mod exec;
mod sandbox;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cni::{Cni, CniError};

#[cfg(test)]
pub(crate) use container::example_container;
pub(crate) use container::read_container;
pub use container::{
    Container, ContainerConfig, ContainerState, ContainerStatus, ExitRecord, Mount,
};
pub use exec::{ExecProcess, ExecRequest, Terminal};
pub use sandbox::PortMapping;

/// Where a node's runtime keeps things, and what it calls.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// `<dir>/sandboxes/<id>/`.
    pub state_dir: PathBuf,
    /// The node's network namespace name; pod namespaces are named after it.
    pub netns_prefix: String,
    pub cni: Cni,
    pub cni_conf_dir: PathBuf,
    /// The programs the runtime starts (pause, shim) and the images' own.
    pub programs: Programs,
    /// `--lab` of the pause processes, so `down` and `ps` find them.
    pub lab: String,
}

/// knetsim's programs that the runtime and the image catalogue run: each its own executable,
/// as a real node has `pause`, a shim and the image's program, so a pod start never maps the
/// whole `knetsim` binary.
#[derive(Debug, Clone)]
pub struct Programs {
    /// `knetsim` itself: the coredns image runs `knetsim cluster-dns`.
    pub knetsim: PathBuf,
    /// `knetsim-pause`, the sandbox's infra process.
    pub pause: PathBuf,
    /// `knetsim-shim`, the parent of each container process.
    pub shim: PathBuf,
    /// `knetsim-agnhost`, the agnhost image's `/agnhost`.
    pub agnhost: PathBuf,
}

impl Programs {
    /// The programs installed next to the running executable, or which one is missing.
    pub fn installed() -> kernel::Result<Programs> {
        use kernel::binaries::{sibling, AGNHOST, KNETSIM, PAUSE, SHIM};
        Ok(Programs {
            knetsim: sibling(KNETSIM)?,
            pause: sibling(PAUSE)?,
            shim: sibling(SHIM)?,
            agnhost: sibling(AGNHOST)?,
        })
    }
}

/// What RunPodSandbox is given (the CRI's `PodSandboxConfig`, the parts knetsim uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSandboxConfig {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub hostname: String,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// The CRI's sandbox labels; the kubelet marks its own with `io.kubernetes.pod.uid`, and
    /// only those are its to clean up (a sandbox made with `crictl runp` is left alone).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The CRI's `NamespaceMode.NODE` for the network: the sandbox is the node's own network
    /// (and UTS) namespace, with no CNI; it is never deleted with the sandbox.
    #[serde(default)]
    pub host_network: bool,
}

/// The label that marks a sandbox as the kubelet's, for the Pod of that UID.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    #[serde(rename = "SANDBOX_READY")]
    Ready,
    #[serde(rename = "SANDBOX_NOTREADY")]
    NotReady,
}

/// A sandbox as stored and reported (the CRI's `PodSandboxStatus`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSandbox {
    pub id: String,
    pub config: PodSandboxConfig,
    pub state: SandboxState,
    /// `/run/netns/<name>`.
    pub netns: String,
    pub pause_pid: Option<u32>,
    /// The pod IP from the CNI result.
    pub ip: Option<String>,
    /// Unix milliseconds.
    pub created_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("pod sandbox {0} not found")]
    NotFound(String),
    #[error(
        "a network namespace named {0} already exists (a pod of that name was not cleaned up?)"
    )]
    NetnsExists(String),
    #[error("invalid pod: {0}")]
    Invalid(String),
    #[error("setting up the pod network")]
    Network(#[source] CniError),
    #[error("checking the pod network")]
    NetworkCheck(#[source] CniError),
    #[error("tearing down the pod network")]
    NetworkTeardown(#[source] CniError),
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    #[error("starting the pause process")]
    Pause(#[source] std::io::Error),
    #[error("running the container shim")]
    Shim(#[source] std::io::Error),
    #[error("{action} {path}")]
    State {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A fresh runtime ID: 16 hex digits from the kernel's random UUIDs.
fn new_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|uuid| uuid.trim().replace('-', "")[..16].to_string())
        .unwrap_or_else(|_| format!("{:016x}", crate::now_ms()))
}
