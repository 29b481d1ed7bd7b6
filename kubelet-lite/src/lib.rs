//! kubelet-lite: the per-node agent. It will register the Node and run the pods bound to it;
//! today it has the two layers below the kubelet logic:
//!
//! * [`cni`]: calling CNI plugins the way libcni does (configuration lists, `prevResult`
//!   chaining, the result cache DEL needs, idempotent DEL);
//! * [`runtime`]: a CRI-shaped runtime (`RunPodSandbox`, `StopPodSandbox`, …) whose pod
//!   sandboxes are named network namespaces held by a `pause` process.
//!
//! `knetsim crictl <node> …` drives the runtime on a node by hand, as `crictl` does on a real
//! one. The watch of Pods bound to the node, the Node object and pod status come with the API
//! server (issue 5 builds on issue 4).

pub mod agnhost;
pub mod cni;
pub mod crictl;
pub mod kubelet;
pub mod mount_points;
pub mod pause;
pub mod runtime;
pub mod shim;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
